//! Accept loops: HTTP/1.1 and h2c on one port (hyper-util's auto builder),
//! each connection with a kill switch in its requests' extensions. With TLS
//! configured the API port speaks HTTPS instead (ALPN h2 and http/1.1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::http::{api_router, ops_router, ConnInfo};
use crate::node::Node;
use crate::tls::Tls;

/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Running listeners of one gateway.
pub struct Server {
    /// Bound API address.
    pub api_addr: SocketAddr,
    /// Bound metrics address, if configured.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    loops: Vec<JoinHandle<GracefulShutdown>>,
}

impl Server {
    /// Binds the configured addresses and starts serving.
    pub async fn start(node: Arc<Node>) -> anyhow::Result<Server> {
        let stop = CancellationToken::new();
        let api = bind(node.config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", node.config.listen))?;
        let api_addr = api.local_addr()?;
        let tls = match node.config.tls.enabled() {
            true => {
                let tls = Tls::new(&node.config.tls)?;
                tls.spawn_reload(&node.config.tls, stop.clone());
                Some(tls.acceptor)
            }
            false => None,
        };
        let mut loops = vec![tokio::spawn(serve(
            api,
            api_router(node.clone()),
            stop.clone(),
            tls,
        ))];
        let mut metrics_addr = None;
        if let Some(addr) = node.config.metrics_listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            metrics_addr = Some(l.local_addr()?);
            loops.push(tokio::spawn(serve(
                l,
                ops_router(node.clone()),
                stop.clone(),
                None,
            )));
        }
        Ok(Server {
            api_addr,
            metrics_addr,
            stop,
            loops,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then drops the rest.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        for l in self.loops {
            if let Ok(graceful) = l.await {
                let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
            }
        }
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return graceful,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let kill = CancellationToken::new();
        let info = ConnInfo {
            peer,
            kill: kill.clone(),
        };
        let svc = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
        let Some(tls) = tls.clone() else {
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(svc))
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                tokio::select! {
                    _ = conn => {}
                    _ = kill.cancelled() => {}
                }
            });
            continue;
        };
        let watcher = graceful.watcher();
        // The handshake runs in the connection's own task so that a slow or
        // silent client cannot stall the accept loop.
        tokio::spawn(async move {
            let io = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc))
                .into_owned();
            let conn = watcher.watch(conn);
            tokio::select! {
                _ = conn => {}
                _ = kill.cancelled() => {}
            }
        });
    }
}

/// Binds with a deep accept backlog: with the default 128, a reconnect storm
/// overflows the SYN queue and clients wait out a 1 s SYN retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}
