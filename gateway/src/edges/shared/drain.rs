//! The drain as the listeners see it. Whether it began is read from the
//! node, so it is true as soon as readiness falls: a connection accepted
//! after that is never mistaken for one from before the drain. The token
//! fires a moment later (or when the server stops) and sends the
//! connections from before the drain away.

use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::node::Node;

/// The drain, shared by the listeners of one server.
#[derive(Clone)]
pub struct Drain {
    began: watch::Receiver<Option<Instant>>,
    fired: CancellationToken,
}

impl Drain {
    /// Watches `node`'s drain; the token is a child of `stop`, so stopping
    /// sends every connection away too.
    pub fn new(node: &Node, stop: &CancellationToken) -> Drain {
        let drain = Drain {
            began: node.drain_signal(),
            fired: stop.child_token(),
        };
        let (mut began, fired) = (drain.began.clone(), drain.fired.clone());
        tokio::spawn(async move {
            tokio::select! {
                started = began.wait_for(Option::is_some) => {
                    if started.is_ok() {
                        fired.cancel();
                    }
                }
                _ = fired.cancelled() => {}
            }
        });
        drain
    }

    /// True once the gateway drains.
    pub fn began(&self) -> bool {
        self.began.borrow().is_some()
    }

    /// For a connection just accepted: the token that sends it away, or
    /// `None` when it came during the drain (the network sent it here, so
    /// nothing else would take it).
    pub fn sends_away(&self) -> Option<CancellationToken> {
        (!self.began()).then(|| self.fired.clone())
    }
}
