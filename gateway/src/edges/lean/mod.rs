//! The lean HTTP/1.1 path for streams. A stream lives for hours and writes a
//! few bytes now and then; a full hyper connection keeps an 8 KiB read
//! buffer, a write buffer and its dispatcher state for all that time. Here a
//! small front parses the first request head with `httparse`: a plain
//! `GET /v1/stream` goes through the same router (auth, CORS, limits,
//! routing and proxying are unchanged) and its response is written straight
//! to the socket, byte for byte as hyper would write it. Anything else, and
//! anything the front is unsure of, goes to hyper with the bytes already
//! read, so hyper answers it exactly as it always did.

mod front;
mod pump;
mod rewind;
mod wire;

use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::Router;
use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::edges::shared::conn::ConnInfo;
use crate::edges::tcp::{Busy, Conn};

pub use rewind::Rewind;

/// What the front leaves behind.
pub enum Outcome {
    /// The connection is done (client gone, or the server stops).
    Closed,
    /// hyper takes the connection from here, starting with these bytes.
    Hyper(Rewind<TcpStream>),
    /// A response to write on the lean path.
    Respond(Respond),
}

/// What one connection on the lean path shares with the rest of the server.
pub struct Lean<'a> {
    /// The API router.
    pub router: &'a Router,
    /// The connection's edge bookkeeping.
    pub conn: &'a Arc<Conn>,
    /// Put in every request's extensions.
    pub info: ConnInfo,
    /// Largest request head.
    pub max_head: usize,
    /// The server drains or stops: an idle connection closes.
    pub stop: &'a CancellationToken,
}

impl Lean<'_> {
    /// Reads the next request on `tcp` (after the bytes in `buf`) and, if
    /// it is a stream request, routes it.
    pub async fn serve(self, mut tcp: TcpStream, mut buf: BytesMut) -> Outcome {
        let head = tokio::select! {
            h = front::read(&mut tcp, &mut buf, self.max_head) => h,
            _ = self.stop.cancelled() => return Outcome::Closed,
        };
        let mut req = match head {
            front::Head::Stream(req) => req,
            front::Head::Hyper => return Outcome::Hyper(Rewind::new(buf.freeze(), tcp)),
            front::Head::Gone => return Outcome::Closed,
        };
        let busy = self.conn.begin();
        req.extensions_mut().insert(self.info.clone());
        let resp = match self.router.clone().oneshot(*req).await {
            Ok(resp) => resp,
            Err(e) => match e {},
        };
        Outcome::Respond(Respond {
            tcp,
            pump: pump::Pump::new(resp),
            // Nothing is kept while a stream runs unless the client sent more.
            pending: if buf.is_empty() { BytesMut::new() } else { buf },
            max_pending: self.max_head,
            _busy: busy,
        })
    }
}

/// A routed request whose response is being written: all a stream holds
/// for its life. Poll it from a task of its own, so that the stream's task
/// is no larger than this.
pub struct Respond {
    tcp: TcpStream,
    pump: pump::Pump,
    pending: BytesMut,
    max_pending: usize,
    _busy: Busy,
}

impl Respond {
    /// Writes the response; ready with `true` when the connection may carry
    /// another request ([`Respond::into_next`]).
    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let ended =
            ready!(self
                .pump
                .poll_run(cx, &mut self.tcp, &mut self.pending, self.max_pending));
        Poll::Ready(matches!(ended, Ok(pump::Ended::KeepAlive)))
    }

    /// True while it waits for the client to take bytes: the only time a
    /// kill switch matters to it (a stream that can write ends by itself).
    pub fn writing(&self) -> bool {
        self.pump.writing()
    }

    /// The connection and the bytes of its next request, once complete.
    pub fn into_next(self) -> (TcpStream, BytesMut) {
        (self.tcp, self.pending)
    }
}
