//! Today's wire output, pinned per protocol: the same scenario runs once on
//! HTTP/1.1 (plain TCP, the lean stream path), HTTP/2 (h2c, prior
//! knowledge), HTTP/3 (QUIC with TLS) and gRPC (`pushgate.v1.Pushgate`
//! over h2c), each against a fresh gateway, and what the client received is
//! compared with `tests/fixtures/wire/<protocol>.txt`. It exists so that a
//! change in how streams are encoded can show that nothing changed on the
//! wire: a single different byte of a status, header or event fails it.
//! With `PUSHGATE_BLESS_WIRE=1` it writes the fixtures instead of comparing.
//!
//! The scenario, identical on every protocol so the fixtures diff against
//! each other: an event is published on `wire/a` and its id kept; the topic
//! is wiped (new epoch); then `wire/a` gets a plain event, one with
//! `?ttl=1s`, and a typed (`note`) event whose payload has `\r\n` and `\n`
//! breaks, and `wire/b` gets one. Once the TTL has passed, two streams open:
//! "single" (`wire/a`, resumed from the id kept before the wipe: first
//! block, `event: reset`, `event: expired`, replay) and "multi" (`wire/a` and
//! `wire/b` from `earliest`, whose ids are multi-topic cursors). Three live
//! events follow (one typed on each topic with `\r\n`, `\n` and `\r`
//! breaks), each awaited on the streams that carry it; then a heartbeat on
//! every stream; then SIGTERM with a short drain window ends both streams
//! with a `retry:`. gRPC publishes its first live event through `Publish`
//! and records that response too.
//!
//! What is recorded, and how:
//! - HTTP/1.1: every byte read off the socket. The head line by line; the
//!   chunked body chunk by chunk (each body frame is one chunk today). A
//!   chunk is shown as `chunk:` when its size line is exactly its length in
//!   upper-case hex and CRLF follows its data, and otherwise with the raw
//!   framing; its data follows line by line. Then the last chunk and
//!   whatever came until the connection closed.
//! - HTTP/2 and HTTP/3: the status, the headers in the order the client's
//!   header map keeps them (the order they were decoded), and the body bytes
//!   (frame boundaries are not recorded), then how the response ended.
//! - gRPC: the response metadata, every `Event` field by field, then the
//!   final status (code, message, details, trailing metadata such as
//!   `pushgate-code` and `retry-after` when present); the `Publish` response
//!   likewise.
//!
//! Every wire line is written as a quoted string (`\r`, `\n`, `\t`, `\\`,
//! `"` and other control bytes escaped; invalid UTF-8 as `\xNN`), so the
//! fixture is readable text and still byte-exact.
//!
//! Normalised, because it varies by design and nothing else:
//! - the value of `date` headers, as `<date>`;
//! - the digits of `retry:` lines, as `<1000..3000>` (the jittered ±50 % of
//!   the configured 2 s; a value outside that range is kept as it is);
//! - cursor ids (`id:` lines, `Event.id`, `PublishResponse.id`): each
//!   distinct string becomes `<id#N>`, numbered by first appearance in the
//!   file, so which ids are equal stays pinned. Cursors are not decoded;
//! - heartbeats: their number and place depend on timing, so heartbeat
//!   blocks (`:\n\n` alone between blocks, an HTTP/1.1 chunk of their own
//!   today) are removed and the fixture records only that at least one
//!   arrived on each SSE stream. gRPC carries none today; there the test
//!   waits for a heartbeat on an SSE stream opened after the gRPC ones on the
//!   same gateway, so a heartbeat message would have had its time to show.
//!
//! The requests carry a routing cookie, so the gateway issues no (random)
//! routing key, and HTTP/3's `Alt-Svc` advertises a configured port rather
//! than the test's free one.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use bytes::Buf;
use pushgate::edges::grpc::proto::pushgate_client::PushgateClient;
use pushgate::edges::grpc::proto::{Event, PublishRequest, PublishResponse, SubscribeRequest};
use pushgate_e2e::gateway::{config_file, GatewayProcess};
use pushgate_e2e::grpc::GrpcClient;
use pushgate_e2e::pki::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bound of every wait.
const T: Duration = Duration::from_secs(10);
/// A routing key of the client's own: without one the gateway issues a
/// random key in `Set-Cookie`.
const COOKIE: &str = "pushgate_rk=0123456789abcdef0123456789abcdef";
const A: &str = "wire/a";
const B: &str = "wire/b";
/// Short heartbeats so that every stream gets one; a 2 s retry base, whose
/// jitter the normalisation knows; a drain window long enough that each
/// stream's close (at most 90 % into it) comes before the listeners stop.
const CONFIG: &str = "delivery:\n  heartbeat: 200ms\n  retry: 2s\n  drain_window: 2s\n";
/// HTTP/3's `Alt-Svc` names this port instead of the bound one.
const H3_CONFIG: &str = "protocols:\n  http3:\n    advertise_port: 443\n";
/// What a jittered `retry:` may say with that base (±50 %): inside it the
/// digits are masked, outside it they stay and fail the comparison.
const RETRY_RANGE: std::ops::RangeInclusive<u64> = 1000..=3000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
    H3,
    Grpc,
}

impl Proto {
    fn file(self) -> &'static str {
        match self {
            Proto::H1 => "http1.txt",
            Proto::H2 => "http2.txt",
            Proto::H3 => "http3.txt",
            Proto::Grpc => "grpc.txt",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1 on plain TCP (the lean stream path), raw bytes",
            Proto::H2 => "HTTP/2, h2c with prior knowledge",
            Proto::H3 => "HTTP/3 over QUIC with TLS",
            Proto::Grpc => "gRPC pushgate.v1.Pushgate over h2c",
        }
    }
}

/// A gateway for one protocol, and an HTTP/1.1 client for publishing.
struct Setup {
    gw: GatewayProcess,
    base: String,
    http: reqwest::Client,
    ca: Option<TestCa>,
    _config: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start(p: Proto) -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let yaml = match p {
            Proto::H3 => format!("{CONFIG}{H3_CONFIG}"),
            _ => CONFIG.to_owned(),
        };
        let file = config_file(&yaml)?;
        let mut args: Vec<String> = vec!["--config".into(), file.path().display().to_string()];
        let mut ca = None;
        match p {
            Proto::H1 | Proto::H2 => {}
            Proto::Grpc => args.extend(["--grpc".into(), "true".into()]),
            Proto::H3 => {
                let c = TestCa::new()?;
                let (cert, key) = c.leaf("wire")?.write_to(dir.path())?;
                args.extend([
                    "--tls-cert-file".into(),
                    cert.display().to_string(),
                    "--tls-key-file".into(),
                    key.display().to_string(),
                    "--http3".into(),
                    "true".into(),
                ]);
                ca = Some(c);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gw = GatewayProcess::start(&args)?;
        let (base, http) = match &ca {
            Some(c) => (
                format!("https://localhost:{}", gw.addr.port()),
                reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(c.pem.as_bytes())?)
                    .resolve("localhost", gw.addr)
                    .http1_only()
                    .build()?,
            ),
            None => (gw.url(""), reqwest::Client::builder().http1_only().build()?),
        };
        Ok(Setup {
            gw,
            base,
            http,
            ca,
            _config: file,
            _dir: dir,
        })
    }

    /// `POST /v1/topics/{topic}/events{query}`: the 201's JSON.
    async fn publish(&self, topic: &str, query: &str, data: &str) -> Result<serde_json::Value> {
        let r = self
            .http
            .post(format!("{}/v1/topics/{topic}/events{query}", self.base))
            .body(data.to_owned())
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        ensure!(status == 201, "publish to {topic}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// `DELETE /v1/topics/{topic}`: a new epoch.
    async fn wipe(&self, topic: &str) -> Result<()> {
        let r = self
            .http
            .delete(format!("{}/v1/topics/{topic}", self.base))
            .send()
            .await?;
        ensure!(
            r.status() == 200,
            "wipe: {} {}",
            r.status(),
            r.text().await?
        );
        Ok(())
    }

    /// `Publish` over gRPC, with its response metadata.
    async fn grpc_publish(&self, topic: &str, data: &str) -> Result<GrpcPublished> {
        let channel = GrpcClient::new(self.gw.addr)?.channel();
        let resp = PushgateClient::new(channel)
            .publish(PublishRequest {
                topic: topic.into(),
                data: data.into(),
                ..PublishRequest::default()
            })
            .await?;
        Ok(GrpcPublished {
            meta: metadata(resp.metadata()),
            msg: resp.into_inner(),
        })
    }

    /// Opens a stream of `topics` from `last_id` ("" for live only).
    async fn open(&self, p: Proto, topics: &[&str], last_id: &str) -> Result<Sub> {
        let cap: Shared = Arc::default();
        let query = topics
            .iter()
            .map(|t| format!("topic={t}"))
            .collect::<Vec<_>>()
            .join("&");
        let path = format!("/v1/stream?{query}");
        let mut headers = vec![("accept", "text/event-stream"), ("cookie", COOKIE)];
        if !last_id.is_empty() {
            headers.push(("last-event-id", last_id));
        }
        let task = match p {
            Proto::H1 => h1_open(self.gw.addr, &path, &headers, cap.clone()).await?,
            Proto::H2 => h2_open(&self.gw.url(&path), &headers, cap.clone()).await?,
            Proto::H3 => {
                let ca = self.ca.as_ref().context("HTTP/3 runs with TLS")?;
                h3_open(self.gw.addr, &ca.pem, &path, &headers, cap.clone()).await?
            }
            Proto::Grpc => grpc_open(self.gw.addr, topics, last_id, cap.clone()).await?,
        };
        Ok(Sub {
            proto: p,
            cap,
            _task: task,
        })
    }
}

struct GrpcPublished {
    meta: Vec<(String, Vec<u8>)>,
    msg: PublishResponse,
}

/// What a stream's client received so far.
#[derive(Default)]
struct Capture {
    /// HTTP/1.1: every byte read off the socket. HTTP/2, HTTP/3: the body.
    bytes: Vec<u8>,
    /// HTTP/2, HTTP/3: the status; gRPC: nothing.
    status: Option<u16>,
    /// HTTP/2, HTTP/3: the headers; gRPC: the response metadata.
    head: Vec<(String, Vec<u8>)>,
    /// gRPC: the messages.
    events: Vec<Event>,
    /// How it ended (rendered), once it has.
    end: Option<String>,
}

type Shared = Arc<Mutex<Capture>>;

/// An open stream, read by a task of its own into its capture.
struct Sub {
    proto: Proto,
    cap: Shared,
    _task: JoinHandle<()>,
}

impl Sub {
    /// The SSE body so far (HTTP/1.1: de-chunked).
    fn body(&self) -> Vec<u8> {
        let cap = self.cap.lock().unwrap();
        match self.proto {
            Proto::H1 => match split_head(&cap.bytes) {
                Some((_, body)) => chunked(body)
                    .chunks
                    .iter()
                    .flat_map(|c| c.1.iter())
                    .copied()
                    .collect(),
                None => Vec::new(),
            },
            _ => cap.bytes.clone(),
        }
    }

    /// True once an event whose payload has the line `line` arrived.
    fn has(&self, line: &str) -> bool {
        if self.proto == Proto::Grpc {
            let cap = self.cap.lock().unwrap();
            return cap.events.iter().any(|e| e.data.lines().any(|l| l == line));
        }
        let want = format!("data: {line}\n");
        self.body()
            .windows(want.len())
            .any(|w| w == want.as_bytes())
    }

    /// Heartbeat blocks so far.
    fn heartbeats(&self) -> usize {
        match self.proto {
            Proto::Grpc => 0,
            Proto::H1 => {
                let cap = self.cap.lock().unwrap();
                split_head(&cap.bytes).map_or(0, |(_, body)| {
                    chunked(body)
                        .chunks
                        .iter()
                        .filter(|c| c.1 == HEARTBEAT)
                        .count()
                })
            }
            _ => without_heartbeats(&self.body()).1,
        }
    }

    fn ended(&self) -> bool {
        self.cap.lock().unwrap().end.is_some()
    }
}

const HEARTBEAT: &[u8] = b":\n\n";

/// Writes a raw HTTP/1.1 request and reads every byte until the
/// connection closes.
async fn h1_open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    cap: Shared,
) -> Result<JoinHandle<()>> {
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: gw\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(req.as_bytes()).await?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let end = loop {
            match tcp.read(&mut buf).await {
                Ok(0) => break "the connection closed (EOF)".to_owned(),
                Ok(n) => cap.lock().unwrap().bytes.extend_from_slice(&buf[..n]),
                Err(e) => break format!("read error: {:?}", e.kind()),
            }
        };
        cap.lock().unwrap().end = Some(end);
    }))
}

/// A GET over h2c with prior knowledge.
async fn h2_open(url: &str, headers: &[(&str, &str)], cap: Shared) -> Result<JoinHandle<()>> {
    let client = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await?;
    ensure!(
        resp.version() == reqwest::Version::HTTP_2,
        "{:?}",
        resp.version()
    );
    {
        let mut c = cap.lock().unwrap();
        c.status = Some(resp.status().as_u16());
        c.head = header_list(resp.headers());
    }
    Ok(tokio::spawn(async move {
        let _client = client;
        let end = loop {
            match resp.chunk().await {
                Ok(Some(b)) => cap.lock().unwrap().bytes.extend_from_slice(&b),
                Ok(None) => break "the response ended (END_STREAM)".to_owned(),
                Err(e) => break format!("error: {e}"),
            }
        };
        cap.lock().unwrap().end = Some(end);
    }))
}

/// A GET over HTTP/3 on a QUIC connection of its own, trusting `ca_pem`
/// for `localhost`.
async fn h3_open(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
    cap: Shared,
) -> Result<JoinHandle<()>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| anyhow::anyhow!("CA PEM: {e:?}"))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = tokio::time::timeout(T, endpoint.connect(addr, "localhost")?)
        .await
        .context("QUIC handshake timed out")??;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut req = http::Request::builder()
        .method("GET")
        .uri(format!("https://localhost{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut stream = send.send_request(req.body(())?).await?;
    stream.finish().await?;
    let resp = tokio::time::timeout(T, stream.recv_response())
        .await
        .context("no HTTP/3 response head")??;
    {
        let mut c = cap.lock().unwrap();
        c.status = Some(resp.status().as_u16());
        c.head = header_list(resp.headers());
    }
    Ok(tokio::spawn(async move {
        let _keep = (endpoint, conn, send, drive);
        let end = loop {
            match stream.recv_data().await {
                Ok(Some(mut b)) => {
                    let b = b.copy_to_bytes(b.remaining());
                    cap.lock().unwrap().bytes.extend_from_slice(&b);
                }
                Ok(None) => break "the response ended (FIN)".to_owned(),
                Err(e) => break format!("error: {e}"),
            }
        };
        cap.lock().unwrap().end = Some(end);
    }))
}

/// `Subscribe` with the routing cookie as metadata.
async fn grpc_open(
    addr: SocketAddr,
    topics: &[&str],
    last_id: &str,
    cap: Shared,
) -> Result<JoinHandle<()>> {
    let mut req = tonic::Request::new(SubscribeRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        last_event_id: last_id.to_owned(),
        shadow_version: 0,
    });
    req.metadata_mut().insert("cookie", COOKIE.parse()?);
    let channel = GrpcClient::new(addr)?.channel();
    let resp = PushgateClient::new(channel).subscribe(req).await?;
    cap.lock().unwrap().head = metadata(resp.metadata());
    let mut stream = resp.into_inner();
    Ok(tokio::spawn(async move {
        let end = loop {
            match stream.message().await {
                Ok(Some(ev)) => cap.lock().unwrap().events.push(ev),
                Ok(None) => break "the call ended with OK".to_owned(),
                Err(status) => break render_status(&status),
            }
        };
        cap.lock().unwrap().end = Some(end);
    }))
}

fn header_list(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn metadata(m: &tonic::metadata::MetadataMap) -> Vec<(String, Vec<u8>)> {
    header_list(&m.clone().into_headers())
}

fn render_status(s: &tonic::Status) -> String {
    let mut out = format!(
        "status: {:?}, message {}, details {}\n",
        s.code(),
        quote(s.message().as_bytes()),
        quote(s.details())
    );
    let trailing = metadata(s.metadata());
    if trailing.is_empty() {
        out.push_str("-- trailing metadata: none\n");
    } else {
        out.push_str("-- trailing metadata\n");
        for (k, v) in trailing {
            out.push_str(&header_line(&k, &v));
        }
    }
    out
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Polls `cond` until it holds, bounded by [`T`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            bail!("waited {T:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs the scenario on `p` and renders what the clients received.
async fn capture(p: Proto) -> Result<String> {
    let s = Setup::start(p)?;
    let before = s.publish(A, "", "before the wipe").await?;
    let before = before["id"].as_str().context("publish id")?.to_owned();
    s.wipe(A).await?;
    s.publish(A, "", "replayed one").await?;
    let expiring = s.publish(A, "?ttl=1s", "expires unread").await?;
    let expires_at = expiring["expires_at_ms"]
        .as_u64()
        .context("expires_at_ms")?;
    s.publish(
        A,
        "?event=note",
        "replayed note\r\nsecond line\nreplayed third",
    )
    .await?;
    s.publish(B, "", "replayed b ünïcødé").await?;
    wait_until("the TTL to pass", || now_ms() > expires_at).await?;

    let single = s.open(p, &[A], &before).await?;
    let multi = s.open(p, &[A, B], "earliest").await?;
    wait_until("the replays", || {
        single.has("replayed third")
            && multi.has("replayed third")
            && multi.has("replayed b ünïcødé")
    })
    .await?;

    let published = match p {
        Proto::Grpc => Some(s.grpc_publish(A, "live one").await?),
        _ => {
            s.publish(A, "", "live one").await?;
            None
        }
    };
    wait_until("live one", || {
        single.has("live one") && multi.has("live one")
    })
    .await?;
    s.publish(
        B,
        "?event=note",
        "live note\r\nsecond line\nthird line\rlive b fourth",
    )
    .await?;
    wait_until("live b", || multi.has("live b fourth")).await?;
    s.publish(
        A,
        "?event=note",
        "live note on a\r\n\nlive a after an empty line",
    )
    .await?;
    wait_until("live a", || {
        single.has("live a after an empty line") && multi.has("live a after an empty line")
    })
    .await?;

    // gRPC shows no heartbeat: an SSE stream opened after its streams
    // says when theirs were due.
    let clock = match p {
        Proto::Grpc => Some(s.open(Proto::H1, &[A], "").await?),
        _ => None,
    };
    wait_until("a heartbeat on every stream", || {
        let sse = p == Proto::Grpc || (single.heartbeats() > 0 && multi.heartbeats() > 0);
        sse && clock.as_ref().is_none_or(|c| c.heartbeats() > 0)
    })
    .await?;

    s.gw.sigterm();
    wait_until("the drain to end both streams", || {
        single.ended() && multi.ended()
    })
    .await?;

    let mut ids = Ids::default();
    let mut out = format!(
        "# pushgate wire fixture: {}.\n\
         # Written by tests/tests/wire_fixture.rs with PUSHGATE_BLESS_WIRE=1; its doc comment\n\
         # describes the scenario and the normalisation. Wire lines are quoted strings.\n",
        p.title()
    );
    let _ = write!(
        out,
        "\n== stream \"single\": topic {A}, Last-Event-ID {} (the id of a publish before the wipe)\n",
        ids.name(&before)
    );
    render(&single, &mut ids, &mut out)?;
    let _ = write!(
        out,
        "\n== stream \"multi\": topics {A} and {B}, Last-Event-ID \"earliest\"\n"
    );
    render(&multi, &mut ids, &mut out)?;
    if let Some(pb) = published {
        let m = &pb.msg;
        out.push_str("\n== Publish of \"live one\" on wire/a\n-- response metadata\n");
        for (k, v) in &pb.meta {
            out.push_str(&header_line(k, v));
        }
        let _ = writeln!(
            out,
            "PublishResponse {{ id: {}, topic: {}, seq: {}, expires_at_ms: {}, replayed: {} }}",
            ids.name(&m.id),
            quote(m.topic.as_bytes()),
            m.seq,
            m.expires_at_ms,
            m.replayed
        );
    }
    Ok(out)
}

/// Names cursor ids by order of first appearance.
#[derive(Default)]
struct Ids(Vec<String>);

impl Ids {
    fn name(&mut self, id: &str) -> String {
        if id.is_empty() {
            return "\"\"".into();
        }
        let n = match self.0.iter().position(|i| i == id) {
            Some(n) => n,
            None => {
                self.0.push(id.to_owned());
                self.0.len() - 1
            }
        };
        format!("<id#{}>", n + 1)
    }
}

/// Quotes wire bytes: printable UTF-8 as is; `\\`, `"`, `\r`, `\n`, `\t`
/// and other control characters escaped; invalid UTF-8 as `\xNN`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out.push('"');
    out
}

/// A header as a quoted `name: value` line, the `date` value masked.
fn header_line(name: &str, value: &[u8]) -> String {
    format!("{}\n", quote(&normalise_header(name, value)))
}

fn normalise_header(name: &str, value: &[u8]) -> Vec<u8> {
    let value = if name.eq_ignore_ascii_case("date")
        && value.len() == "Wed, 02 Dec 2026 13:50:09 GMT".len()
        && value.ends_with(b" GMT")
    {
        b"<date>".as_slice()
    } else {
        value
    };
    [name.as_bytes(), b": ", value].concat()
}

/// One SSE line (with its line break) as shown: `id:` values named,
/// jittered `retry:` digits masked.
fn sse_line(line: &[u8], ids: &mut Ids) -> String {
    if let Some(id) = line
        .strip_prefix(b"id: ")
        .and_then(|l| l.strip_suffix(b"\n"))
    {
        if let Ok(id) = std::str::from_utf8(id) {
            if !id.is_empty() {
                return format!("\"id: {}\\n\"", ids.name(id));
            }
        }
    }
    if let Some(ms) = line
        .strip_prefix(b"retry: ")
        .and_then(|l| l.strip_suffix(b"\n"))
    {
        let ms = std::str::from_utf8(ms)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if ms.is_some_and(|ms| RETRY_RANGE.contains(&ms)) {
            return format!(
                "\"retry: <{}..{}>\\n\"",
                RETRY_RANGE.start(),
                RETRY_RANGE.end()
            );
        }
    }
    quote(line)
}

/// Splits after each `\n` (the last piece may have none).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|b| *b == b'\n')
}

/// The body without its heartbeat blocks (`:\n` then an empty line, at the
/// start of a block), and how many there were.
fn without_heartbeats(body: &[u8]) -> (Vec<u8>, usize) {
    let ls: Vec<&[u8]> = lines(body).collect();
    let (mut out, mut n, mut i, mut block_start) = (Vec::new(), 0, 0, true);
    while i < ls.len() {
        if block_start && ls[i] == b":\n" && ls.get(i + 1) == Some(&b"\n".as_slice()) {
            n += 1;
            i += 2;
            continue;
        }
        block_start = ls[i] == b"\n";
        out.extend_from_slice(ls[i]);
        i += 1;
    }
    (out, n)
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some(raw.split_at(end))
}

/// A chunked body as parsed so far.
struct Chunked<'a> {
    /// Each chunk's size line (without CRLF) and data.
    chunks: Vec<(&'a [u8], &'a [u8])>,
    /// The last chunk `0\r\n\r\n` arrived; what followed it.
    after_last: Option<&'a [u8]>,
    /// Bytes that are not (yet) a complete chunk, or are not chunked framing.
    rest: &'a [u8],
}

fn chunked(mut body: &[u8]) -> Chunked<'_> {
    let mut chunks = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size_line = &body[..eol];
        let Some(size) = std::str::from_utf8(size_line)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        else {
            break;
        };
        let data_start = eol + 2;
        if size == 0 {
            if body[data_start..].starts_with(b"\r\n") {
                return Chunked {
                    chunks,
                    after_last: Some(&body[data_start + 2..]),
                    rest: &[],
                };
            }
            break;
        }
        let data_end = data_start + size;
        if body.len() < data_end + 2 || &body[data_end..data_end + 2] != b"\r\n" {
            break;
        }
        chunks.push((size_line, &body[data_start..data_end]));
        body = &body[data_end + 2..];
    }
    Chunked {
        chunks,
        after_last: None,
        rest: body,
    }
}

fn heartbeat_note(n: usize) -> &'static str {
    if n > 0 {
        "-- heartbeats: at least one \":\\n\\n\" arrived (removed above: their number and place depend on timing)\n"
    } else {
        "-- heartbeats: none arrived\n"
    }
}

/// Renders one stream's capture.
fn render(sub: &Sub, ids: &mut Ids, out: &mut String) -> Result<()> {
    let cap = sub.cap.lock().unwrap();
    let end = cap.end.clone().context("the stream has not ended")?;
    match sub.proto {
        Proto::H1 => {
            let (head, body) = split_head(&cap.bytes).context("no response head")?;
            out.push_str("-- response head\n");
            for l in head.split_inclusive(|b| *b == b'\n') {
                let shown = match l.strip_suffix(b"\r\n").map(|h| h.splitn(2, |b| *b == b':')) {
                    Some(mut kv) => match (kv.next(), kv.next()) {
                        (Some(k), Some(v)) if v.starts_with(b" ") => {
                            let k = String::from_utf8_lossy(k);
                            [normalise_header(&k, &v[1..]), b"\r\n".to_vec()].concat()
                        }
                        _ => l.to_vec(),
                    },
                    None => l.to_vec(),
                };
                out.push_str(&quote(&shown));
                out.push('\n');
            }
            out.push_str(
                "-- body, chunk by chunk (\"chunk:\" = a size line that is its length in \
                 upper-case hex, CRLF after the data)\n",
            );
            let parsed = chunked(body);
            let mut beats = 0;
            for (size_line, data) in &parsed.chunks {
                if *data == HEARTBEAT {
                    beats += 1;
                    continue;
                }
                if *size_line == format!("{:X}", data.len()).as_bytes() {
                    out.push_str("chunk:\n");
                } else {
                    let _ = writeln!(out, "chunk with size line {}:", quote(size_line));
                }
                for l in lines(data) {
                    let _ = writeln!(out, "  {}", sse_line(l, ids));
                }
            }
            match parsed.after_last {
                Some(after) => {
                    out.push_str("last chunk: \"0\\r\\n\\r\\n\"\n");
                    if !after.is_empty() {
                        let _ = writeln!(out, "after the last chunk: {}", quote(after));
                    }
                }
                None => {
                    let _ = writeln!(out, "no last chunk; unparsed: {}", quote(parsed.rest));
                }
            }
            out.push_str(heartbeat_note(beats));
        }
        Proto::H2 | Proto::H3 => {
            out.push_str("-- response head\n");
            let _ = writeln!(out, "status: {}", cap.status.context("status")?);
            for (k, v) in &cap.head {
                out.push_str(&header_line(k, v));
            }
            out.push_str("-- body\n");
            let (body, beats) = without_heartbeats(&cap.bytes);
            for l in lines(&body) {
                let _ = writeln!(out, "{}", sse_line(l, ids));
            }
            out.push_str(heartbeat_note(beats));
        }
        Proto::Grpc => {
            out.push_str("-- response metadata\n");
            for (k, v) in &cap.head {
                out.push_str(&header_line(k, v));
            }
            out.push_str("-- messages\n");
            for e in &cap.events {
                let _ = writeln!(
                    out,
                    "Event {{ id: {}, topic: {}, seq: {}, event_type: {}, data: {} }}",
                    ids.name(&e.id),
                    quote(e.topic.as_bytes()),
                    e.seq,
                    quote(e.event_type.as_bytes()),
                    quote(e.data.as_bytes())
                );
            }
            out.push_str("-- heartbeats: none (gRPC carries none today)\n");
        }
    }
    let _ = write!(out, "-- end: {end}");
    if !end.ends_with('\n') {
        out.push('\n');
    }
    Ok(())
}

fn fixture(p: Proto) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/wire")
        .join(p.file())
}

/// What every fixture must show, so a broken capture cannot be blessed.
fn sanity(p: Proto, text: &str) -> Result<()> {
    let must: &[&str] = match p {
        Proto::Grpc => &[
            "event_type: \"reset\"",
            "event_type: \"expired\"",
            "event_type: \"note\"",
            "status: Unavailable",
        ],
        _ => &[
            "\"event: reset\\n\"",
            "\"event: expired\\n\"",
            "\"event: note\\n\"",
            "\"retry: <1000..3000>\\n\"",
            "-- heartbeats: at least one",
        ],
    };
    for m in must {
        ensure!(text.contains(m), "{p:?}: the capture lacks {m}:\n{text}");
    }
    Ok(())
}

/// Compares with the fixture, or writes it when `PUSHGATE_BLESS_WIRE=1`.
fn check(p: Proto, got: &str) -> Result<()> {
    sanity(p, got)?;
    let path = fixture(p);
    if std::env::var("PUSHGATE_BLESS_WIRE").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        std::fs::write(&path, got)?;
        println!("PUSHGATE_BLESS_WIRE=1: wrote {}", path.display());
        return Ok(());
    }
    let want = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is missing: write it with PUSHGATE_BLESS_WIRE=1",
            path.display()
        )
    })?;
    if want == got {
        return Ok(());
    }
    let actual = std::env::temp_dir().join(format!("{}.actual", p.file()));
    std::fs::write(&actual, got)?;
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let first = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    bail!(
        "{p:?}: the wire output differs from {} at line {}:\n  fixture: {}\n  now:     {}\n\
         (whole output in {}; PUSHGATE_BLESS_WIRE=1 rewrites the fixture if the change is intended)",
        path.display(),
        first + 1,
        w.get(first).unwrap_or(&"<end of file>"),
        g.get(first).unwrap_or(&"<end of file>"),
        actual.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_wire_is_unchanged() -> Result<()> {
    check(Proto::H1, &capture(Proto::H1).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_wire_is_unchanged() -> Result<()> {
    check(Proto::H2, &capture(Proto::H2).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_wire_is_unchanged() -> Result<()> {
    check(Proto::H3, &capture(Proto::H3).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_wire_is_unchanged() -> Result<()> {
    check(Proto::Grpc, &capture(Proto::Grpc).await?)
}
