//! Admission of new streams: the stream limit and the accept rate. A
//! draining gateway still admits (see `stream::drain_end`). Every refusal
//! here is transient: the client is told when to come back. How it is
//! told depends on the client and is decided at the HTTP edge
//! (`http::refusal`), never here.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;

use crate::core::limits::{ClientKey, Held};
use crate::core::protocol::Protocol;
use crate::engine::node::Node;
use crate::ops::metrics::LimitLayer;

/// Why a new stream was turned away for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// `limits.max_connections` streams are open.
    MaxConnections,
    /// More new streams per second than `limits.accept_rate`.
    AcceptRate,
    /// The identity holds `limits.max_streams_per_identity` streams here.
    IdentityStreams,
    /// The client address holds `limits.max_streams_per_address` streams here.
    AddressStreams,
    /// The store did not answer.
    Store,
    /// The other canary track could not be reached.
    PeerUnreachable,
    /// The routing table changed while the stream was being routed, or the
    /// pod that proxied it routed with another table than this one.
    RouteChanged,
    /// A request claimed to be proxied by a peer without the peers' secret.
    ProxyUnauthenticated,
    /// The connections layer is degraded, or the storage layer is and the
    /// stream needs the store.
    Degraded,
}

impl RefuseReason {
    /// Label of `streams_rejected_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            RefuseReason::MaxConnections => "max_connections",
            RefuseReason::AcceptRate => "accept_rate",
            RefuseReason::IdentityStreams => "identity_streams",
            RefuseReason::AddressStreams => "address_streams",
            RefuseReason::Store => "store",
            RefuseReason::PeerUnreachable => "peer_unreachable",
            RefuseReason::RouteChanged => "route_changed",
            RefuseReason::ProxyUnauthenticated => "proxy_unauthenticated",
            RefuseReason::Degraded => "degraded",
        }
    }

    /// The limit layer that refused, for the limits among the reasons.
    fn layer(self) -> Option<LimitLayer> {
        match self {
            RefuseReason::MaxConnections | RefuseReason::AcceptRate => Some(LimitLayer::Streams),
            RefuseReason::IdentityStreams => Some(LimitLayer::IdentityStreams),
            RefuseReason::AddressStreams => Some(LimitLayer::AddressStreams),
            _ => None,
        }
    }

    fn message(self) -> &'static str {
        match self {
            RefuseReason::MaxConnections => "too many open streams",
            RefuseReason::AcceptRate => "too many new streams per second",
            RefuseReason::IdentityStreams => {
                "this credential holds as many open streams as it may; close one first"
            }
            RefuseReason::AddressStreams => {
                "this address holds as many open streams as it may without a credential"
            }
            RefuseReason::Store => "store is unreachable",
            RefuseReason::PeerUnreachable => "the track serving this stream is unreachable",
            RefuseReason::RouteChanged => "routing is changing; reconnect",
            RefuseReason::ProxyUnauthenticated => "proxied request without a valid peer token",
            RefuseReason::Degraded => "the gateway is degraded and takes no new streams for now",
        }
    }
}

/// A transient refusal of a new stream, already counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefuseReason,
    /// For people.
    pub message: String,
    /// When to come back; the `retry:` or `Retry-After` sent is derived from it.
    pub retry_after: Duration,
}

impl Refusal {
    /// `Retry-After` seconds: the wait rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl Node {
    /// Counts a refusal in `streams_rejected_total{reason}` (and a limit's
    /// in `limit_refusals_total{layer}`) and builds it.
    pub fn refuse(&self, reason: RefuseReason) -> Refusal {
        self.metrics
            .streams_rejected_total
            .with_label_values(&[reason.label()])
            .inc();
        if let Some(layer) = reason.layer() {
            self.metrics.refused(layer).inc();
        }
        Refusal {
            reason,
            message: reason.message().to_owned(),
            retry_after: self.config.delivery.retry,
        }
    }
}

/// One slot of `max_connections`, held for the life of a stream (served
/// here or forwarded to the other track); it keeps the `connections` gauge
/// and its protocol's `streams` gauge.
pub struct StreamSlot {
    node: Arc<Node>,
    protocol: Protocol,
    open: IntGauge,
    /// The stream's place in its client's allowance, given back with it.
    _client: Option<Held<ClientKey>>,
}

impl StreamSlot {
    /// The protocol the stream arrived over.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.node.metrics.connections.dec();
        self.open.dec();
    }
}

/// Admits a new stream of `client` (`None`: a stream another track
/// proxied, whose client that track counted), or says why not now:
/// the client's own allowance, then a slot, then an accept-rate token.
pub fn admit(
    node: &Arc<Node>,
    protocol: Protocol,
    client: Option<ClientKey>,
) -> Result<StreamSlot, Refusal> {
    if node
        .degrade
        .flags
        .is_on(crate::ops::degrade::Layer::Connections)
    {
        return Err(node.refuse(RefuseReason::Degraded));
    }
    let held = match client {
        Some(key) => {
            let (slots, reason) = match key {
                ClientKey::Identity(_) => (&node.identity_streams, RefuseReason::IdentityStreams),
                ClientKey::Address(_) => (&node.address_streams, RefuseReason::AddressStreams),
            };
            match slots {
                Some(slots) => Some(slots.try_hold(key).ok_or_else(|| node.refuse(reason))?),
                None => None,
            }
        }
        None => None,
    };
    let gauge = &node.metrics.connections;
    gauge.inc();
    let open = node.metrics.streams.with_label_values(&[protocol.as_str()]);
    open.inc();
    let slot = StreamSlot {
        node: node.clone(),
        protocol,
        open,
        _client: held,
    };
    if gauge.get() as usize > node.config.limits.max_connections {
        return Err(node.refuse(RefuseReason::MaxConnections));
    }
    if node.accept_rate.try_take().is_err() {
        return Err(node.refuse(RefuseReason::AcceptRate));
    }
    Ok(slot)
}
