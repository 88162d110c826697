//! Connections: URL templates, SSE streams over HTTP/1.1 (hand-written
//! request, in-place chunked decoding) and HTTP/2, each in the clear or
//! over TLS (`https://`, trusting `--ca-file`), and keep-alive publishers.
//! Only loopback targets are accepted (or a benchmark's own namespaces).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::parse::Dechunker;

/// A URL template such as `http://127.0.0.1:8080/v1/stream?topic={topic}`.
#[derive(Debug, Clone)]
pub struct Template {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path and query with `{topic}` placeholders.
    pub path: String,
    /// `https://`: TLS, verified against the `--ca-file` roots.
    pub tls: bool,
}

impl Template {
    /// Parses an `http://` or `https://` URL template; refuses anything
    /// but loopback.
    pub fn parse(url: &str) -> anyhow::Result<Template> {
        let (tls, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (
                false,
                url.strip_prefix("http://")
                    .context("only http:// and https:// URLs (the protocol is --proto)")?,
            ),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = match authority.parse() {
            Ok(a) => a,
            Err(_) => {
                let (h, p) = authority.rsplit_once(':').context("URL needs host:port")?;
                let ip: IpAddr = if h == "localhost" {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    h.trim_matches(['[', ']'])
                        .parse()
                        .context("host must be an IP literal")?
                };
                SocketAddr::new(ip, p.parse().context("bad port")?)
            }
        };
        if !addr.ip().is_loopback() && !NETNS_TARGETS.load(Ordering::Relaxed) {
            bail!("refusing non-loopback target {addr}: load goes to this machine only");
        }
        Ok(Template {
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
            tls,
        })
    }

    /// The name the server's certificate is checked against: the host
    /// without its port (an IP literal is checked as an IP address).
    pub fn server_name(&self) -> anyhow::Result<rustls::pki_types::ServerName<'static>> {
        let host = match self.host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => self.host.as_str(),
        };
        let host = host.trim_matches(['[', ']']).to_owned();
        rustls::pki_types::ServerName::try_from(host).context("not a server name")
    }

    /// The path with `{topic}` (and `{i}`) filled in.
    pub fn path_for(&self, topic: &str, i: usize) -> String {
        self.path
            .replace("{topic}", topic)
            .replace("{i}", &i.to_string())
    }
}

static NETNS_TARGETS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Allows non-loopback targets, but only when this process runs in a
/// network namespace a benchmark made with `ip netns add` (one named under
/// /run/netns), never in the host's.
pub fn allow_netns_targets() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net")?;
    let named = std::fs::read_dir("/run/netns")
        .context("no /run/netns: --netns-target needs a namespace made by `ip netns add`")?
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.dev() == own.dev() && m.ino() == own.ino());
    if !named {
        bail!("--netns-target is only allowed inside a namespace made by `ip netns add`");
    }
    NETNS_TARGETS.store(true, Ordering::Relaxed);
    Ok(())
}

/// Source addresses to spread client sockets over (127.0.0.x): many
/// connections and quick reruns do not run out of ephemeral ports.
static NEXT_SRC: AtomicUsize = AtomicUsize::new(0);
const SOURCES: usize = 8;

/// Connects to `addr`, from one of several loopback source addresses when `addr` is IPv4 loopback.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match addr {
        SocketAddr::V4(a) if a.ip().is_loopback() => {
            let s = TcpSocket::new_v4()?;
            let i = NEXT_SRC.fetch_add(1, Ordering::Relaxed) % SOURCES;
            s.bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)),
                0,
            ))?;
            s
        }
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();

/// Trusts the CA certificates in `pem` (a file) for `https://` targets and QUIC.
pub fn trust_ca(pem: &std::path::Path) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pem)
        .with_context(|| format!("read {}", pem.display()))?
    {
        roots.add(cert.map_err(|e| anyhow::anyhow!("{}: {e:?}", pem.display()))?)?;
    }
    ROOTS
        .set(Arc::new(roots))
        .map_err(|_| anyhow::anyhow!("--ca-file given twice"))
}

/// A TLS client configuration offering `alpn`, trusting the `--ca-file` roots.
pub fn tls_config(alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let roots = ROOTS
        .get()
        .context("an https:// target needs --ca-file")?
        .clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// A byte stream to a server: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to the template's server, through TLS offering `alpn` when
/// it is `https://`.
pub async fn dial(t: &Template, alpn: &[u8]) -> anyhow::Result<Box<dyn Io>> {
    let tcp = connect(t.addr).await?;
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let cfg = tls_config(&[alpn])?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(t.server_name()?, tcp)
        .await?;
    Ok(Box::new(tls))
}

/// Which HTTP version a stream uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Proto {
    /// HTTP/1.1, one connection per stream (TLS for an `https://` URL).
    H1,
    /// HTTP/2 with prior knowledge (cleartext).
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN (`https://` URLs).
    H2,
    /// HTTP/3 over QUIC (`https://` URLs; UDP to the same address).
    H3,
    /// gRPC `pushgate.v1.Pushgate/Subscribe` over TLS (`https://` URLs;
    /// the template's `topic` query parameter names the topic).
    Grpc,
}

/// How a stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server ended the body or closed the connection.
    Closed,
    /// The run asked it to stop.
    Stopped,
    /// A non-200 answer.
    Status(u16),
}

/// The parsed head of an HTTP/1.1 response.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub body: BodyKind,
    /// Bytes of the head.
    pub len: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Body framing of an HTTP/1.1 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Chunked,
    Length(usize),
    UntilClose,
}

/// Parses a response head if `buf` holds all of it.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let mut body = if status == 204 || status == 304 {
        BodyKind::Length(0)
    } else {
        BodyKind::UntilClose
    };
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                body = BodyKind::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") && body != BodyKind::Chunked {
            let n = std::str::from_utf8(h.value)?.trim().parse()?;
            body = BodyKind::Length(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head {
        status,
        body,
        len,
        close,
    }))
}

/// Read buffer per stream: small, since idle mode holds thousands of them.
const READ_BUF: usize = 4096;

/// Opens one SSE stream over HTTP/1.1 and feeds decoded body bytes to
/// `on_data` until it ends. `opened` runs once the 200 head arrived.
pub async fn stream_h1(
    t: &Template,
    path: &str,
    last_id: &[u8],
    stop: &CancellationToken,
    opened: &mut (dyn FnMut() + Send),
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> anyhow::Result<StreamEnd> {
    let mut sock = tokio::select! {
        _ = stop.cancelled() => return Ok(StreamEnd::Stopped),
        s = dial(t, b"http/1.1") => s?,
    };
    let mut req = Vec::with_capacity(256);
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(t.host.as_bytes());
    req.extend_from_slice(b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n");
    if !last_id.is_empty() {
        req.extend_from_slice(b"Last-Event-ID: ");
        req.extend_from_slice(last_id);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    sock.write_all(&req).await?;
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let head = loop {
        if filled == buf.len() {
            bail!("response head larger than {READ_BUF} bytes");
        }
        let n = tokio::select! {
            _ = &mut cancelled => return Ok(StreamEnd::Stopped),
            n = sock.read(&mut buf[filled..]) => n?,
        };
        if n == 0 {
            return Ok(StreamEnd::Closed);
        }
        filled += n;
        if let Some(h) = parse_head(&buf[..filled])? {
            break h;
        }
    };
    if head.status != 200 {
        return Ok(StreamEnd::Status(head.status));
    }
    opened();
    let mut dechunk = Dechunker::new();
    let mut rest = head.body;
    let mut feed = |bytes: &[u8]| -> anyhow::Result<bool> {
        match &mut rest {
            BodyKind::Chunked => {
                dechunk
                    .feed(bytes, &mut *on_data)
                    .map_err(|e| anyhow::anyhow!(e.0))?;
                Ok(dechunk.is_done())
            }
            BodyKind::Length(left) => {
                let n = bytes.len().min(*left);
                on_data(&bytes[..n]);
                *left -= n;
                Ok(*left == 0)
            }
            BodyKind::UntilClose => {
                on_data(bytes);
                Ok(false)
            }
        }
    };
    if feed(&buf[head.len..filled])? {
        return Ok(StreamEnd::Closed);
    }
    loop {
        let n = tokio::select! {
            biased;
            n = sock.read(&mut buf) => n?,
            _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        };
        if n == 0 || feed(&buf[..n])? {
            return Ok(StreamEnd::Closed);
        }
    }
}

/// Opens one SSE stream over h2c on `conn` (or a new connection).
pub async fn stream_h2(
    t: &Template,
    conn: Option<h2::client::SendRequest<bytes::Bytes>>,
    path: &str,
    last_id: &[u8],
    stop: &CancellationToken,
    opened: &mut (dyn FnMut() + Send),
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> anyhow::Result<StreamEnd> {
    let send = match conn {
        Some(c) => c,
        None => h2_connect(t).await?,
    };
    let mut send = send.ready().await?;
    let scheme = if t.tls { "https" } else { "http" };
    let mut req = http::Request::get(format!("{scheme}://{}{}", t.host, path))
        .header("accept", "text/event-stream");
    if !last_id.is_empty() {
        req = req.header("last-event-id", last_id);
    }
    let (resp, _) = send.send_request(req.body(())?, true)?;
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let resp = tokio::select! {
        _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        r = resp => r?,
    };
    if resp.status() != 200 {
        return Ok(StreamEnd::Status(resp.status().as_u16()));
    }
    opened();
    let mut body = resp.into_body();
    loop {
        let chunk = tokio::select! {
            biased;
            c = body.data() => c,
            _ = &mut cancelled => return Ok(StreamEnd::Stopped),
        };
        match chunk {
            None => return Ok(StreamEnd::Closed),
            Some(Err(e)) if e.is_reset() || e.is_go_away() || e.is_io() => {
                return Ok(StreamEnd::Closed)
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                on_data(&data);
            }
        }
    }
}

/// A new HTTP/2 connection (prior knowledge in the clear, ALPN `h2` over
/// TLS); its driver runs as a task.
pub async fn h2_connect(t: &Template) -> anyhow::Result<h2::client::SendRequest<bytes::Bytes>> {
    let tcp = dial(t, b"h2").await?;
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A keep-alive HTTP/1.1 connection for publishing.
pub struct Publisher {
    t: Template,
    sock: Option<Box<dyn Io>>,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl Publisher {
    /// A publisher that connects on first use.
    pub fn new(t: Template) -> Self {
        Publisher {
            t,
            sock: None,
            req: Vec::with_capacity(512),
            buf: vec![0; 16 * 1024],
        }
    }

    /// POSTs `body` to `path` and returns the status and response body.
    /// On any error the connection is dropped (the next call reconnects);
    /// nothing is retried, so an unanswered publish is never sent twice.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let r = self.post_once(path, content_type, body).await;
        if r.is_err() {
            self.sock = None;
        }
        r
    }

    async fn post_once(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.sock.is_none() {
            self.sock = Some(dial(&self.t, b"http/1.1").await?);
        }
        let sock = self.sock.as_mut().expect("just connected");
        use std::io::Write;
        self.req.clear();
        write!(
            self.req,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.t.host,
            body.len()
        )?;
        self.req.extend_from_slice(body);
        sock.write_all(&self.req).await?;
        let mut filled = 0;
        let head = loop {
            if filled == self.buf.len() {
                self.buf.resize(filled * 2, 0);
            }
            let n = sock.read(&mut self.buf[filled..]).await?;
            if n == 0 {
                bail!("connection closed before the response");
            }
            filled += n;
            if let Some(h) = parse_head(&self.buf[..filled])? {
                break h;
            }
        };
        let mut out = Vec::new();
        let mut dechunk = Dechunker::new();
        let mut pos = head.len;
        loop {
            let chunk = &self.buf[pos..filled];
            let done = match head.body {
                BodyKind::Length(n) => {
                    out.extend_from_slice(&chunk[..chunk.len().min(n - out.len())]);
                    out.len() == n
                }
                BodyKind::Chunked => {
                    dechunk
                        .feed(chunk, |b| out.extend_from_slice(b))
                        .map_err(|e| anyhow::anyhow!(e.0))?;
                    dechunk.is_done()
                }
                BodyKind::UntilClose => false,
            };
            if done {
                break;
            }
            let n = sock.read(&mut self.buf).await?;
            if n == 0 {
                if head.body == BodyKind::UntilClose {
                    self.sock = None;
                    return Ok((head.status, out));
                }
                bail!("connection closed inside the response body");
            }
            pos = 0;
            filled = n;
        }
        if head.close {
            self.sock = None;
        }
        Ok((head.status, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_topics_and_refuse_remote_hosts() {
        let t = Template::parse("http://127.0.0.1:8080/v1/stream?topic={topic}").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path_for("a/b", 0), "/v1/stream?topic=a/b");
        let t = Template::parse("http://[::1]:9/sub/{topic}").unwrap();
        assert!(t.addr.is_ipv6());
        assert!(Template::parse("http://localhost:81/x").is_ok());
        assert!(Template::parse("http://10.0.0.1:80/").is_err());
        assert!(Template::parse("http://example.com:80/").is_err());
        assert!(Template::parse("ftp://127.0.0.1:80/").is_err());
        let t = Template::parse("https://127.0.0.1:8443/v1/stream").unwrap();
        assert!(t.tls);
        assert_eq!(
            t.server_name().unwrap(),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap()
        );
        assert!(Template::parse("https://10.0.0.1:80/").is_err());
    }

    #[test]
    fn parses_response_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.body, h.len, h.close),
            (200, BodyKind::Chunked, 47, false)
        );
        let h =
            parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            (h.status, h.body, h.close),
            (201, BodyKind::Length(12), true)
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n")
            .unwrap()
            .is_none());
    }
}
