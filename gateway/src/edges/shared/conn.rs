//! What every edge knows of the connection a request arrived on, and the
//! one path every edge serves streams at.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::certs::PeerCert;

/// Facts about the TCP connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Cancelling it closes the connection.
    pub kill: CancellationToken,
    /// The client certificate verified in the TLS handshake, if any.
    pub cert: Option<Arc<PeerCert>>,
}

/// The path of the stream endpoint (HTTP/1.1, HTTP/2 and HTTP/3; the other
/// canary track is asked for gRPC streams there too).
pub const STREAM_PATH: &str = "/v1/stream";
