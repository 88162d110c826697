//! Accept loops: HTTP/1.1 and h2c on one port (hyper-util's auto builder),
//! each connection admitted and timed by the [`Edge`] and with a kill switch
//! in its requests' extensions. With TLS configured the API port speaks
//! HTTPS instead (ALPN h2 and http/1.1).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::ServiceExt;

use crate::auth::certs::{CertIdentity, PeerCert};
use crate::edges::api::api_router;
use crate::edges::frame_budget::Budgeted;
use crate::edges::http::ops_router;
use crate::edges::http3::Http3;
use crate::edges::lean::{Lean, Outcome, Respond};
use crate::edges::on_wake::OnWake;
use crate::edges::shared::conn::ConnInfo;
use crate::edges::shared::drain::Drain;
use crate::edges::tcp::{Admit, Busy, Closed, Conn, Edge, EdgeConfig, Listener};
use crate::edges::tls::Tls;
use crate::engine::node::Node;

/// How long a connection that finds the cap full while room is being made
/// may wait: the evicted connections' tasks need a moment to be scheduled
/// and close, longer under a flood that keeps every core busy.
const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// Running listeners of one gateway.
pub struct Server {
    /// Bound API address.
    pub api_addr: SocketAddr,
    /// Bound metrics address, if configured.
    pub metrics_addr: Option<SocketAddr>,
    /// Connection bookkeeping of both listeners.
    pub edge: Arc<Edge>,
    /// The HTTP/3 listener, when enabled.
    pub http3: Option<Http3>,
    stop: CancellationToken,
    loops: Vec<JoinHandle<GracefulShutdown>>,
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Serving {
    router: Router,
    edge: Arc<Edge>,
    listener: Listener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cert_identity: CertIdentity,
    /// Plain HTTP/1.1 streams take the lean path.
    lean: bool,
    max_head: usize,
    /// HTTP/2 control frames per second a connection may send.
    max_control_frames: u32,
    stop: CancellationToken,
    /// A connection made before the drain is asked to reconnect on a fresh
    /// one once its current responses end (HTTP/2 GOAWAY, HTTP/1.1 closes),
    /// so that the load balancer can send its client's next request to a
    /// ready replica. `None` on the ops port, which serves no streams.
    drain: Option<Drain>,
}

impl Server {
    /// Binds the configured addresses and starts serving.
    pub async fn start(node: Arc<Node>) -> anyhow::Result<Server> {
        let stop = CancellationToken::new();
        let drain = Drain::new(&node, &stop);
        let cfg = &node.config().edge;
        let nofile = crate::ops::nofile::nofile_limit();
        let edge = Edge::new(cfg, nofile, node.metrics().edge());
        tracing::info!(
            api = edge.cap(Listener::Api),
            ops = edge.cap(Listener::Ops),
            nofile,
            "TCP connection caps"
        );
        if edge.cap(Listener::Api) < node.config().limits.max_connections {
            // The hard limit comes from the runtime's service unit or base
            // spec (`LimitNOFILE=1024` units exist): say so once, loudly.
            tracing::warn!(
                nofile,
                api_cap = edge.cap(Listener::Api),
                max_connections = node.config().limits.max_connections,
                "the open-file limit holds fewer connections than limits.max_connections; \
                 raise RLIMIT_NOFILE in the container runtime"
            );
        }
        let api = bind(node.config().listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", node.config().listen))?;
        let api_addr = api.local_addr()?;
        let tls = match node.config().tls.enabled() {
            true => {
                let tls = Tls::new(&node.config().tls)?;
                tls.spawn_reload(&node.config().tls);
                Some(tls)
            }
            false => None,
        };
        // QUIC binds first: TCP responses advertise its port in `Alt-Svc`.
        let h3 = match (&tls, node.config().protocols.http3.enabled) {
            (Some(tls), true) => Some(Http3::bind(&node, tls.quic.clone(), api_addr)?),
            (None, true) => anyhow::bail!("protocols.http3 needs tls"),
            _ => None,
        };
        let advertised = node.config().protocols.http3.advertise_port;
        let router = api_router(
            node.clone(),
            h3.as_ref().map(|b| advertised.unwrap_or(b.addr.port())),
        );
        let http3 = h3.map(|b| b.serve(router.clone(), stop.clone(), drain.clone()));
        let tls = tls.map(|t| t.acceptor);
        let builder = Arc::new(builder(cfg));
        let serving = |router, listener, tls| Serving {
            router,
            edge: edge.clone(),
            listener,
            builder: builder.clone(),
            tls,
            cert_identity: node.config().auth.certificate_identity,
            lean: cfg.lean_streams && listener == Listener::Api,
            max_head: cfg.max_header_bytes,
            max_control_frames: cfg.max_control_frames_per_s,
            stop: stop.clone(),
            drain: (listener == Listener::Api).then(|| drain.clone()),
        };
        let mut loops = vec![tokio::spawn(serve(
            api,
            serving(router, Listener::Api, tls),
            stop.clone(),
        ))];
        let mut metrics_addr = None;
        if let Some(addr) = node.config().metrics_listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            metrics_addr = Some(l.local_addr()?);
            loops.push(tokio::spawn(serve(
                l,
                serving(ops_router(node.clone()), Listener::Ops, None),
                stop.clone(),
            )));
        }
        Ok(Server {
            api_addr,
            metrics_addr,
            edge,
            http3,
            stop,
            loops,
        })
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then drops the rest.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        if let Some(h3) = self.http3 {
            h3.shutdown(grace).await;
        }
        for l in self.loops {
            if let Ok(graceful) = l.await {
                let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
            }
        }
    }
}

/// HTTP/1.1 and HTTP/2 with the edge's head size limit (hyper answers 431).
fn builder(cfg: &EdgeConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().max_buf_size(cfg.max_header_bytes);
    b.http2()
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    b
}

async fn serve(listener: TcpListener, s: Serving, stop: CancellationToken) -> GracefulShutdown {
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
        let Some(conn) = admit(&s).await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            BytesMut::new(),
            peer,
            conn,
            s.clone(),
            graceful.watcher(),
        ));
    }
}

/// Admits a just-accepted connection: waits (bounded) while evicted ones
/// are still closing; `None` means close it now rather than let it hold a
/// descriptor or wait in the backlog.
async fn admit(s: &Serving) -> Option<Arc<Conn>> {
    let deadline = tokio::time::Instant::now() + ADMIT_WAIT;
    loop {
        match s.edge.admit(s.listener) {
            Admit::Serve(conn) => return Some(conn),
            Admit::Full => return None,
            Admit::Wait if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Admit::Wait => {
                s.edge.count_over_capacity();
                return None;
            }
        }
    }
}

/// Runs one connection until it ends, is killed, or overstays a deadline,
/// starting with the bytes in `pre`. The TLS handshake runs here too, so a
/// silent client cannot stall the accept loop, and it counts against the
/// head deadline. A lean stream continues in a task of its own.
async fn connection(
    tcp: TcpStream,
    pre: BytesMut,
    peer: SocketAddr,
    conn: Arc<Conn>,
    s: Serving,
    watcher: Watcher,
) {
    // A connection made while the gateway drains was sent here by the
    // network: nothing else takes its client, so it is kept until the end.
    let closing = s
        .drain
        .as_ref()
        .and_then(Drain::sends_away)
        .unwrap_or_else(|| s.stop.clone());
    // The hyper and TLS paths are boxed, each in its own statement: a
    // temporary in an `.await` statement keeps its room in this future.
    let run = async {
        match s.tls.clone() {
            None if s.lean => {
                let lean = Lean {
                    router: &s.router,
                    conn: &conn,
                    info: ConnInfo {
                        peer,
                        kill: conn.kill.clone(),
                        cert: None,
                    },
                    max_head: s.max_head,
                    stop: &closing,
                };
                match lean.serve(tcp, pre).await {
                    Outcome::Closed => None,
                    Outcome::Respond(r) => Some((r, watcher)),
                    Outcome::Hyper(io) => {
                        let hyper = Box::pin(drive(io, peer, None, &conn, &s, &closing, watcher));
                        hyper.await;
                        None
                    }
                }
            }
            None => {
                let hyper = Box::pin(drive(tcp, peer, None, &conn, &s, &closing, watcher));
                hyper.await;
                None
            }
            Some(acceptor) => {
                let tls = Box::pin(tls(acceptor, tcp, peer, &conn, &s, &closing, watcher));
                tls.await;
                None
            }
        }
    };
    // The kill switch and the deadlines are polled only when they fire:
    // this task wakes for every delivery of an HTTP/2 stream.
    let ended = OnWake::new(async {
        tokio::select! {
            _ = conn.kill.cancelled() => None,
            why = conn.watchdog() => Some(why),
        }
    });
    let stream = {
        let (mut run, mut ended) = (std::pin::pin!(run), std::pin::pin!(ended));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = run.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            ended.as_mut().poll_woken(cx).map(|why| {
                if let Some(why) = why {
                    tracing::debug!(%peer, reason = ?why, "connection closed by the edge");
                }
                None
            })
        })
        .await
    };
    if let Some((r, watcher)) = stream {
        spawn_stream(r, peer, conn, s, watcher);
    }
}

/// A lean stream's task: a task is as large as the largest state of its
/// future, so a stream that lives for hours gets a hand-written one that
/// holds only what writing it needs. Once the response is complete, the
/// connection goes back to the front for its next request.
fn spawn_stream(r: Respond, peer: SocketAddr, conn: Arc<Conn>, s: Serving, watcher: Watcher) {
    tokio::spawn(StreamTask {
        kill: Box::pin(conn.kill.clone().cancelled_owned()),
        respond: Some(r),
        next: Some((peer, conn, s, watcher)),
    });
}

struct StreamTask {
    respond: Option<Respond>,
    kill: Pin<Box<WaitForCancellationFutureOwned>>,
    next: Option<(SocketAddr, Arc<Conn>, Serving, Watcher)>,
}

impl Future for StreamTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(r) = self.respond.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(keep) = r.poll_run(cx) else {
            // The kill switch cuts a kicked stream whose client stopped
            // reading; one that can write ends by itself. Checked only then:
            // it takes a lock, and this runs on every delivery.
            if r.writing() && self.kill.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            return Poll::Pending;
        };
        let r = self.respond.take().expect("polled above");
        let next = self
            .next
            .take()
            .filter(|(.., s, _)| !s.drain.as_ref().is_some_and(Drain::began));
        if let (true, Some((peer, conn, s, watcher))) = (keep, next) {
            let (tcp, pending) = r.into_next();
            // Boxed as a trait object: connection → stream → connection.
            let next: Pin<Box<dyn Future<Output = ()> + Send>> =
                Box::pin(connection(tcp, pending, peer, conn, s, watcher));
            tokio::spawn(next);
        }
        Poll::Ready(())
    }
}

async fn tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    conn: &Arc<Conn>,
    s: &Serving,
    closing: &CancellationToken,
    watcher: Watcher,
) {
    match acceptor.accept(tcp).await {
        Ok(io) => {
            let cert = io
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| PeerCert::parse(leaf, s.cert_identity))
                .map(Arc::new);
            drive(io, peer, cert, conn, s, closing, watcher).await
        }
        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
    }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    cert: Option<Arc<PeerCert>>,
    conn: &Arc<Conn>,
    s: &Serving,
    closing: &CancellationToken,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = ConnInfo {
        peer,
        kill: conn.kill.clone(),
        cert,
    };
    let io = Budgeted::new(io, s.max_control_frames, conn.clone());
    let (router, c) = (s.router.clone(), conn.clone());
    let svc = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
        let busy = c.begin();
        req.extensions_mut().insert(info.clone());
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await?;
            Ok::<_, Infallible>(resp.map(|inner| Body::new(InFlight { inner, _busy: busy })))
        }
    });
    let served = s
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc))
        .into_owned();
    let served = std::pin::pin!(served);
    let stop_conn = |c: Pin<&mut _>| auto::UpgradeableConnection::graceful_shutdown(c);
    if let Err(e) = graceful(served, closing, watcher, stop_conn).await {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            conn.closed_by_protocol(Closed::HeaderTooLarge);
        }
    }
}

/// Serves `conn` until it ends; once the server stops, `stop_conn` asks it
/// to finish what is in flight and close. `watcher` lives as long as the
/// connection: the server's shutdown waits for every watcher to go. The
/// stop signal is polled only when it fires (see [`OnWake`]), not on every
/// wake-up of the connection.
async fn graceful<C: Future>(
    mut conn: Pin<&mut C>,
    stop: &CancellationToken,
    watcher: Watcher,
    stop_conn: impl Fn(Pin<&mut C>),
) -> C::Output {
    let _watching = watcher;
    let mut stopped = std::pin::pin!(OnWake::new(stop.cancelled()));
    let mut stopping = false;
    std::future::poll_fn(|cx| {
        if !stopping && stopped.as_mut().poll_woken(cx).is_ready() {
            stopping = true;
            stop_conn(conn.as_mut());
        }
        conn.as_mut().poll(cx)
    })
    .await
}

/// A response body that keeps its request "in flight" on the connection
/// until hyper has sent the last byte (a stream stays in flight for life).
struct InFlight {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for InFlight {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
