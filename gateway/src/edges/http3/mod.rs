//! HTTP/3: the API router served over QUIC (quinn + h3), with the TCP
//! listener's certificate and client verification. Bounded like TCP: a
//! cap on connections (refused in the handshake beyond it), a handshake
//! and request-head deadline, an idle timeout, a cap on concurrent
//! requests per connection and on header size.

mod request;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::{IntCounterVec, IntGauge};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::certs::{CertIdentity, PeerCert};
use crate::edges::shared::conn::ConnInfo;
use crate::edges::shared::drain::Drain;
use crate::engine::node::Node;

/// What every connection of the listener shares.
#[derive(Clone)]
struct Serving {
    router: Router,
    /// Handshake plus first request head, as TCP's header read timeout.
    head_timeout: Duration,
    max_header_bytes: u64,
    cert_identity: CertIdentity,
    /// `quic_connections`: the open count the cap is checked against.
    open: IntGauge,
    closed: IntCounterVec,
    max_connections: usize,
    /// A connection made before the drain gets a GOAWAY when it begins, so
    /// its client's next request goes out on a fresh connection; `None`
    /// until serving.
    drain: Option<Drain>,
}

/// The running QUIC listener.
pub struct Http3 {
    /// Bound UDP address.
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
}

/// A bound QUIC endpoint not yet serving (its port goes into `Alt-Svc`).
pub struct Bound {
    /// Bound UDP address.
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    serving: Serving,
}

impl Bound {
    /// Serves `router` until `stop`; connections open when `drain` fires
    /// are sent away (GOAWAY) once their requests end.
    pub fn serve(self, router: Router, stop: CancellationToken, drain: Drain) -> Http3 {
        let serving = Serving {
            router,
            drain: Some(drain),
            ..self.serving
        };
        tracing::info!(addr = %self.addr, max_connections = serving.max_connections, "HTTP/3 listening");
        let accept = tokio::spawn(accept_loop(self.endpoint.clone(), serving, stop));
        Http3 {
            addr: self.addr,
            endpoint: self.endpoint,
            accept,
        }
    }
}

impl Http3 {
    /// Binds `protocols.http3.listen` (default: `api_addr`, on UDP).
    pub fn bind(
        node: &Arc<Node>,
        tls: Arc<rustls::ServerConfig>,
        api_addr: SocketAddr,
    ) -> anyhow::Result<Bound> {
        let cfg = &node.config().protocols.http3;
        let edge = &node.config().edge;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| anyhow::anyhow!("TLS config unusable for QUIC: {e}"))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                edge.idle_timeout
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("edge.idle_timeout is too long for QUIC"))?,
            ))
            .max_concurrent_bidi_streams(cfg.max_streams_per_connection.into())
            .send_window(cfg.send_window_bytes)
            // The client's control stream and its two QPACK streams.
            .max_concurrent_uni_streams(3u8.into());
        server.transport_config(Arc::new(transport));
        let addr = cfg.listen.unwrap_or(api_addr);
        node.metrics()
            .quic_connection_limit
            .set(cfg.max_connections as i64);
        let (socket, granted) = socket::bind(addr, cfg.recv_buffer_bytes, cfg.send_buffer_bytes)
            .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
        report_buffers(node, granted);
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
        Ok(Bound {
            addr: endpoint.local_addr()?,
            endpoint,
            serving: Serving {
                router: Router::new(),
                head_timeout: edge.header_read_timeout,
                max_header_bytes: edge.max_header_bytes as u64,
                cert_identity: node.config().auth.certificate_identity,
                open: node.metrics().quic_connections.clone(),
                closed: node.metrics().quic_connections_closed_total.clone(),
                max_connections: cfg.max_connections,
                drain: None,
            },
        })
    }

    /// Stops accepting, closes what is left after `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.accept.abort();
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
        self.endpoint.close(0u32.into(), b"shutting down");
    }
}

/// Exports the QUIC socket's buffer sizes, and warns when the kernel
/// granted less than the configuration asks for.
fn report_buffers(node: &Node, granted: socket::Granted) {
    let cfg = &node.config().protocols.http3;
    let gauge = &node.metrics().quic_socket_buffer_bytes;
    gauge.with_label_values(&["recv"]).set(granted.recv as i64);
    gauge.with_label_values(&["send"]).set(granted.send as i64);
    for (what, got, asked, sysctl) in [
        (
            "receive",
            granted.recv,
            cfg.recv_buffer_bytes,
            "net.core.rmem_max",
        ),
        (
            "send",
            granted.send,
            cfg.send_buffer_bytes,
            "net.core.wmem_max",
        ),
    ] {
        if !socket::holds(got, asked) {
            tracing::warn!(
                asked,
                granted = got,
                "the kernel granted the QUIC socket a smaller {what} buffer than asked for: \
                 datagrams may be dropped under fan-out; raise {sysctl} or run with CAP_NET_ADMIN"
            );
        }
    }
}

/// One open connection's place under the cap.
struct Slot(IntGauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Serving {
    fn closed(&self, reason: &str) {
        self.closed.with_label_values(&[reason]).inc();
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, s: Serving, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => return,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
        };
        // Only this task admits, so the check and the increment cannot race.
        if s.open.get() as usize >= s.max_connections {
            // A CONNECTION_REFUSED in the handshake: the client retries
            // later or falls back to TCP.
            s.closed("full");
            incoming.refuse();
            continue;
        }
        s.open.inc();
        let slot = Slot(s.open.clone());
        tokio::spawn(connection(incoming, s.clone(), slot));
    }
}

async fn connection(incoming: quinn::Incoming, s: Serving, _slot: Slot) {
    let peer = incoming.remote_address();
    let conn = match tokio::time::timeout(s.head_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            s.closed("handshake_failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake timed out");
            s.closed("handshake_timeout");
            return;
        }
    };
    let cert = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| {
            chain
                .first()
                .and_then(|leaf| PeerCert::parse(leaf, s.cert_identity))
        })
        .map(Arc::new);
    let kill = CancellationToken::new();
    let info = ConnInfo {
        peer,
        kill: kill.clone(),
        cert,
    };
    let mut builder = h3::server::builder();
    builder.max_field_section_size(s.max_header_bytes);
    let h3 = builder.build::<_, bytes::Bytes>(h3_quinn::Connection::new(conn.clone()));
    let mut h3 = match tokio::time::timeout(s.head_timeout, h3).await {
        Ok(Ok(h3)) => h3,
        _ => {
            s.closed("handshake_timeout");
            conn.close(0u32.into(), b"");
            return;
        }
    };
    // A connection made during the drain was sent here by the network: kept.
    let mut going = s.drain.as_ref().and_then(Drain::sends_away);
    loop {
        let resolver = tokio::select! {
            // A slow consumer's kill switch ends the whole connection, as on TCP.
            _ = kill.cancelled() => {
                s.closed("slow_consumer");
                break;
            }
            _ = async { going.as_ref().expect("guarded").cancelled().await }, if going.is_some() => {
                going = None;
                // No request after the last one accepted; those go on.
                if let Err(e) = h3.shutdown(0).await {
                    tracing::debug!(%peer, error = %e, "HTTP/3 GOAWAY not sent");
                }
                continue;
            }
            r = h3.accept() => match r {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
        };
        let (router, info, head_timeout) = (s.router.clone(), info.clone(), s.head_timeout);
        let quic = conn.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(head_timeout, resolver.resolve_request()).await {
                Ok(Ok((req, stream))) => request::serve(router, info, req, stream, quic).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "bad HTTP/3 request"),
                Err(_) => tracing::debug!(%peer, "HTTP/3 request head timed out"),
            }
        });
    }
    conn.close(0u32.into(), b"");
}
