//! A gRPC client of a gateway (tonic, HTTP/2 prior knowledge on its API
//! port): subscribe and publish with an optional bearer token, health and
//! reflection; and an outside one, gRPC's Python implementation driven
//! through reflection alone (`tests/grpc-client/`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use pushgate::edges::grpc::proto::pushgate_client::PushgateClient;
use pushgate::edges::grpc::proto::{Event, PublishRequest, PublishResponse, SubscribeRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Status, Streaming};

/// One HTTP/2 connection to a gateway's gRPC services.
#[derive(Clone)]
pub struct GrpcClient {
    channel: Channel,
    token: Option<String>,
}

/// A subscription: its events, and how it ended.
pub struct GrpcStream {
    inner: Streaming<Event>,
    /// The id of the last event or marker received: what to resume from.
    pub last_id: String,
    /// The status it ended with, once it has.
    pub ended: Option<Status>,
}

impl GrpcClient {
    /// Connects (lazily: the first call opens the connection).
    pub fn new(addr: SocketAddr) -> Result<GrpcClient> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(GrpcClient {
            channel,
            token: None,
        })
    }

    /// Connects over TLS (ALPN `h2`) to `addr` as `localhost`, trusting `ca_pem`.
    pub fn new_tls(addr: SocketAddr, ca_pem: &str) -> Result<GrpcClient> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name("localhost");
        // The address itself, verified as `localhost` (the certificate's name).
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(GrpcClient {
            channel,
            token: None,
        })
    }

    /// The same connection, sending `authorization: Bearer {token}`.
    pub fn with_token(&self, token: &str) -> GrpcClient {
        GrpcClient {
            channel: self.channel.clone(),
            token: Some(token.to_owned()),
        }
    }

    /// The underlying channel (for other services' clients).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("token is ASCII"),
            );
        }
        req
    }

    /// `Subscribe`; the error is the call's status.
    pub async fn subscribe(
        &self,
        topics: &[&str],
        last_event_id: &str,
    ) -> Result<GrpcStream, Status> {
        let msg = SubscribeRequest {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            last_event_id: last_event_id.to_owned(),
            shadow_version: 0,
        };
        let inner = PushgateClient::new(self.channel.clone())
            .subscribe(self.request(msg))
            .await?
            .into_inner();
        Ok(GrpcStream {
            inner,
            last_id: last_event_id.to_owned(),
            ended: None,
        })
    }

    /// `Publish` of a plain event.
    pub async fn publish(&self, topic: &str, data: &str) -> Result<PublishResponse, Status> {
        self.publish_with(PublishRequest {
            topic: topic.into(),
            data: data.into(),
            ..PublishRequest::default()
        })
        .await
    }

    /// `Publish` of any request.
    pub async fn publish_with(&self, msg: PublishRequest) -> Result<PublishResponse, Status> {
        Ok(PushgateClient::new(self.channel.clone())
            .publish(self.request(msg))
            .await?
            .into_inner())
    }
}

impl GrpcStream {
    /// The next published event (markers only move `last_id`); `None` once
    /// the stream ended (its status is in `ended`).
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.ended.is_some() {
                return Ok(None);
            }
            let item = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .context("no event within the timeout")?;
            match item {
                Some(Ok(ev)) => {
                    if !ev.id.is_empty() {
                        self.last_id = ev.id.clone();
                    }
                    if !ev.event_type.is_empty() {
                        return Ok(Some(ev));
                    }
                }
                Some(Err(status)) => self.ended = Some(status),
                None => self.ended = Some(Status::ok("")),
            }
        }
    }

    /// Reads `n` events of `message` type, failing on anything else.
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Result<Vec<Event>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(timeout).await? {
                Some(ev) if ev.event_type == "message" => out.push(ev),
                Some(ev) => bail!("unexpected {} event: {}", ev.event_type, ev.data),
                None => bail!(
                    "stream ended after {} of {n} events: {:?}",
                    out.len(),
                    self.ended
                ),
            }
        }
        Ok(out)
    }

    /// Reads until the first id (every stream's first message carries one).
    pub async fn await_id(&mut self, timeout: Duration) -> Result<String> {
        let start = self.last_id.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.last_id == start || self.last_id.is_empty() {
            let item = tokio::time::timeout_at(deadline, self.inner.next())
                .await
                .context("no id within the timeout")?;
            match item {
                Some(Ok(ev)) if ev.event_type.is_empty() => self.last_id = ev.id,
                Some(Ok(ev)) => bail!("an event before the first marker: {ev:?}"),
                Some(Err(s)) => bail!("stream ended before its first id: {s}"),
                None => bail!("stream ended before its first id"),
            }
        }
        Ok(self.last_id.clone())
    }

    /// Waits for the end of the stream, returning its code.
    pub async fn end(&mut self, timeout: Duration) -> Result<Code> {
        while self.next(timeout).await?.is_some() {}
        Ok(self.ended.as_ref().expect("ended").code())
    }
}

/// The Python of the outside client's virtual environment, made (once per
/// machine, pinned packages) by `tests/grpc-client/setup.sh`.
pub fn grpcio_python() -> Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc-client/setup.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
            if !out.status.success() || !python.is_file() {
                return Err(format!(
                    "{} failed ({}): run it and fix the error it prints",
                    script.display(),
                    out.status
                ));
            }
            Ok(python)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// An outside client: gRPC's Python implementation (grpcio) running
/// `tests/grpc-client/subscribe.py`, which knows the API only through the
/// gateway's reflection service, as grpcurl would. Its JSON lines are read
/// back as events. Killed on drop.
pub struct GrpcioSubscriber {
    child: tokio::process::Child,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl GrpcioSubscriber {
    /// Runs `subscribe.py ADDR pushgate.v1.Pushgate/Subscribe {topics, last_event_id}`.
    pub fn subscribe(
        addr: SocketAddr,
        topics: &[&str],
        last_event_id: &str,
    ) -> Result<GrpcioSubscriber> {
        use tokio::io::AsyncBufReadExt;
        let python = grpcio_python()?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc-client/subscribe.py");
        let req = serde_json::json!({ "topics": topics, "last_event_id": last_event_id });
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(addr.to_string())
            .arg("pushgate.v1.Pushgate/Subscribe")
            .arg(req.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("run {} {}", python.display(), script.display()))?;
        let out = child.stdout.take().context("subscribe.py stdout")?;
        Ok(GrpcioSubscriber {
            child,
            out: tokio::io::BufReader::new(out).lines(),
        })
    }

    /// The next message it printed (one JSON object a line); `None` once it exited.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<serde_json::Value>> {
        let line = tokio::time::timeout(timeout, self.out.next_line())
            .await
            .context("subscribe.py printed nothing within the timeout")??;
        match line {
            Some(l) => Ok(Some(
                serde_json::from_str(&l).with_context(|| format!("not JSON: {l}"))?,
            )),
            None => Ok(None),
        }
    }

    /// Waits for it to exit; returns its exit code and what it said on stderr.
    pub async fn exit(mut self, timeout: Duration) -> Result<(Option<i32>, String)> {
        use tokio::io::AsyncReadExt;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            tokio::time::timeout(timeout, e.read_to_string(&mut err))
                .await
                .context("subscribe.py did not close stderr")??;
        }
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("subscribe.py did not exit")??;
        Ok((status.code(), err))
    }
}
