//! One matrix over the four ways a client reaches the same gateway — HTTP/1.1
//! and HTTP/2 over TLS, HTTP/3 over QUIC, gRPC over TLS — with auth and the
//! same limits: a 401 without a token, a 403 for another topic, a subscriber
//! that stops reading is cut once its queue is full and resumes with every
//! event once, and a draining gateway serves a stream opened on a fresh
//! connection until its window ends. Each protocol
//! answers in its own form (status, header, gRPC code); the pushgate code
//! inside is the same. The stream metrics carry the protocol's label.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use pushgate_e2e::gateway::{
    hs256_key, mint_token, publish_json, wait_draining, GatewayProcess, PublishOptions,
};
use pushgate_e2e::grpc::{GrpcClient, GrpcStream};
use pushgate_e2e::h3_client::{H3Client, H3Response};
use pushgate_e2e::pki::TestCa;
use pushgate_e2e::sse_client::{Opened, SseClient};
use tonic::Code;

const T: Duration = Duration::from_secs(10);
/// Big events, so a subscriber that stops reading fills its transport's
/// window and then its queue of 8 soon.
const PAYLOAD: usize = 32 * 1024;
/// Bound on the events published while waiting for a cut.
const MAX_EVENTS: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
    H3,
    Grpc,
}

impl Proto {
    const ALL: [Proto; 4] = [Proto::H1, Proto::H2, Proto::H3, Proto::Grpc];

    /// The `protocol` label of its stream metrics.
    fn label(self) -> &'static str {
        match self {
            Proto::H1 => "http1",
            Proto::H2 => "h2",
            Proto::H3 => "h3",
            Proto::Grpc => "grpc",
        }
    }
}

/// How a stream request was answered: the pushgate code, and the
/// protocol's own form of it.
#[derive(Debug, PartialEq)]
struct Refused {
    code: String,
    native: String,
}

enum Answer {
    Open(Sub),
    Refused(Refused),
}

/// An open subscription on any protocol.
enum Sub {
    Sse(Box<SseClient>),
    H3(Box<(H3Response, H3Client)>),
    Grpc(Box<GrpcStream>),
}

impl Sub {
    /// The next published event's data; `None` once the stream ended.
    async fn next(&mut self) -> Result<Option<String>> {
        Ok(match self {
            Sub::Sse(s) => s.next(T).await?.map(|e| e.data),
            Sub::H3(s) => s.0.next(T).await?.map(|e| e.data),
            Sub::Grpc(s) => s.next(T).await?.map(|e| e.data),
        })
    }

    async fn await_id(&mut self) -> Result<()> {
        match self {
            Sub::Sse(s) => s.await_id(T).await.map(drop),
            Sub::H3(s) => s.0.await_id(T).await.map(drop),
            Sub::Grpc(s) => s.await_id(T).await.map(drop),
        }
    }

    /// Goes away as a client does (an HTTP/3 client closes its connection).
    async fn close(self) {
        if let Sub::H3(s) = self {
            s.1.close().await;
        }
    }

    /// What a client resumes from.
    fn last_id(&self) -> String {
        match self {
            Sub::Sse(s) => s.last_event_id().to_owned(),
            Sub::H3(s) => s.0.last_event_id().to_owned(),
            Sub::Grpc(s) => s.last_id.clone(),
        }
    }
}

struct Matrix {
    gw: GatewayProcess,
    ca: TestCa,
    /// May subscribe to and publish on `a/**`.
    token: String,
    /// HTTP/1.1 only: the publisher, never the subscriber's connection
    /// (a slow consumer's cut closes its whole connection).
    publisher: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Matrix {
    fn start() -> Result<Matrix> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new()?;
        let (cert, key) = ca.leaf("matrix")?.write_to(dir.path())?;
        let auth_key = hs256_key(dir.path())?;
        let cfg = dir.path().join("gateway.yaml");
        std::fs::write(
            &cfg,
            // Heartbeats far apart: a stream whose client has gone must end
            // then, not at its next write.
            "delivery:\n  queue_size: 8\n  slow_consumer_grace: 500ms\n  heartbeat: 60s\nlimits:\n  publish_rate: 100000\n",
        )?;
        let paths = [cert, key, auth_key.clone(), cfg].map(|p| p.display().to_string());
        let gw = GatewayProcess::start(&[
            "--tls-cert-file",
            &paths[0],
            "--tls-key-file",
            &paths[1],
            "--auth-key-file",
            &paths[2],
            "--config",
            &paths[3],
            "--http3",
            "true",
            "--grpc",
            "true",
            "--drain-window",
            "4s",
            "--metrics-listen",
            "127.0.0.1:0",
        ])?;
        let token = mint_token(
            &auth_key,
            &[
                "--sub",
                "m",
                "--subscribe",
                "a/**",
                "--publish",
                "a/**",
                "--ttl",
                "10m",
            ],
        )?;
        let publisher = https(&ca, &gw, Proto::H1)?;
        Ok(Matrix {
            gw,
            ca,
            token,
            publisher,
            _dir: dir,
        })
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.gw.addr.port())
    }

    /// A stream request for `topic` over `p`, with or without the token.
    async fn open(
        &self,
        p: Proto,
        topic: &str,
        with_token: bool,
        last_id: Option<&str>,
    ) -> Result<Answer> {
        let bearer = format!("Bearer {}", self.token);
        match p {
            Proto::H1 | Proto::H2 => {
                let client = https(&self.ca, &self.gw, p)?;
                let url = format!("{}/v1/stream?topic={topic}", self.base());
                let headers: Vec<(String, String)> = if with_token {
                    vec![("authorization".into(), bearer)]
                } else {
                    vec![]
                };
                match SseClient::open_with(&client, &url, last_id, &headers).await? {
                    Opened::Refused(status, body) => Ok(Answer::Refused(Refused {
                        code: json_code(&body)?,
                        native: status.as_u16().to_string(),
                    })),
                    Opened::Stream(s) => {
                        let want = match p {
                            Proto::H1 => reqwest::Version::HTTP_11,
                            _ => reqwest::Version::HTTP_2,
                        };
                        assert_eq!(s.version(), want, "{p:?} negotiated through ALPN");
                        Ok(match s.refusal() {
                            Some(r) => Answer::Refused(Refused {
                                code: r.to_owned(),
                                native: "200 retry-only".into(),
                            }),
                            None => Answer::Open(Sub::Sse(s)),
                        })
                    }
                }
            }
            Proto::H3 => {
                let mut h3 = H3Client::connect(self.gw.addr, &self.ca.pem).await?;
                let auth = [("authorization", bearer.as_str())];
                let extra: &[(&str, &str)] = if with_token { &auth } else { &[] };
                let mut r = h3.stream(&format!("topic={topic}"), last_id, extra).await?;
                if r.status != 200 {
                    let body = r.text().await?;
                    return Ok(Answer::Refused(Refused {
                        code: json_code(&body)?,
                        native: r.status.to_string(),
                    }));
                }
                if let Some(v) = r.headers.get("x-pushgate-refused") {
                    return Ok(Answer::Refused(Refused {
                        code: v.to_str()?.to_owned(),
                        native: "200 retry-only".into(),
                    }));
                }
                Ok(Answer::Open(Sub::H3(Box::new((r, h3)))))
            }
            Proto::Grpc => {
                let client = GrpcClient::new_tls(self.gw.addr, &self.ca.pem)?;
                let client = if with_token {
                    client.with_token(&self.token)
                } else {
                    client
                };
                match client.subscribe(&[topic], last_id.unwrap_or("")).await {
                    Ok(s) => Ok(Answer::Open(Sub::Grpc(Box::new(s)))),
                    Err(status) => {
                        if status.code() == Code::Unavailable {
                            assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
                        }
                        Ok(Answer::Refused(Refused {
                            code: status
                                .metadata()
                                .get("pushgate-code")
                                .with_context(|| format!("no pushgate-code: {status:?}"))?
                                .to_str()?
                                .to_owned(),
                            native: format!("{:?}", status.code()),
                        }))
                    }
                }
            }
        }
    }

    async fn refused(&self, p: Proto, topic: &str, with_token: bool) -> Result<Refused> {
        match self.open(p, topic, with_token, None).await? {
            Answer::Refused(r) => Ok(r),
            Answer::Open(_) => bail!("{p:?}: a stream of {topic} opened"),
        }
    }

    async fn subscribe(&self, p: Proto, topic: &str, last_id: Option<&str>) -> Result<Sub> {
        match self.open(p, topic, true, last_id).await? {
            Answer::Open(mut s) => {
                s.await_id().await?;
                Ok(s)
            }
            Answer::Refused(r) => bail!("{p:?}: {topic} refused: {r:?}"),
        }
    }

    async fn publish(&self, topic: &str, data: &str) -> Result<()> {
        let opts = PublishOptions::token(Some(&self.token));
        publish_json(&self.publisher, &self.base(), topic, data, opts).await?;
        Ok(())
    }

    async fn metric(&self, name: &str) -> Result<f64> {
        self.gw.metric(name).await
    }
}

fn https(ca: &TestCa, gw: &GatewayProcess, p: Proto) -> Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes())?)
        .resolve("localhost", gw.addr);
    Ok(match p {
        Proto::H1 => b.http1_only(),
        _ => b,
    }
    .build()?)
}

fn json_code(body: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("not a JSON error: {body}"))?;
    Ok(v["code"].as_str().context("no code")?.to_owned())
}

fn refused(code: &str, native: &str) -> Refused {
    Refused {
        code: code.into(),
        native: native.into(),
    }
}

/// The event `i` of a run: its number first, so order is checkable.
fn event(i: usize) -> String {
    format!("{i:05}{}", "x".repeat(PAYLOAD))
}

/// Reads three events, stops reading while events keep coming until the
/// gateway cuts the subscriber, then reads what reached it and resumes
/// from its last id: every event once, in order. Returns how many events
/// the first stream got.
async fn slow_consumer_is_cut_and_resumes(m: &Matrix, p: Proto) -> Result<usize> {
    let topic = format!("a/slow-{}", p.label());
    let mut sub = m.subscribe(p, &topic, None).await?;
    let open = format!("pushgate_streams{{protocol=\"{}\"}}", p.label());
    assert_eq!(m.metric(&open).await?, 1.0, "{p:?}: its stream is counted");
    let cuts = m.metric("pushgate_slow_consumer_disconnects_total").await?;
    let mut published = 0;
    for _ in 0..3 {
        m.publish(&topic, &event(published)).await?;
        published += 1;
    }
    for i in 0..3 {
        let got = sub.next().await?.context("open")?;
        assert_eq!(&got[..5], format!("{i:05}"), "{p:?}");
    }
    let mut cut = false;
    while published < MAX_EVENTS {
        m.publish(&topic, &event(published)).await?;
        published += 1;
        if published % 25 == 0 && m.metric("pushgate_slow_consumer_disconnects_total").await? > cuts
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "{p:?}: a subscriber that stopped reading was never cut"
    );
    m.publish(&topic, "END").await?;

    let mut next = 3;
    while let Some(got) = sub.next().await? {
        assert_eq!(&got[..5], format!("{next:05}"), "{p:?}: in order, no gaps");
        next += 1;
    }
    let first = next;
    assert!(first < published, "{p:?}: it was cut before the end");
    let mut resumed = m.subscribe(p, &topic, Some(&sub.last_id())).await?;
    while next < published {
        let got = resumed.next().await?.context("resumed stream open")?;
        assert_eq!(
            &got[..5],
            format!("{next:05}"),
            "{p:?}: exactly the missed ones"
        );
        next += 1;
    }
    assert_eq!(resumed.next().await?.as_deref(), Some("END"), "{p:?}");
    sub.close().await;
    resumed.close().await;
    // Nothing outlives its client: not the stream, not a QUIC connection.
    m.gw.wait_metric(&open, 0.0).await?;
    m.gw.wait_metric("pushgate_quic_connections", 0.0).await?;
    Ok(first)
}

#[tokio::test]
async fn the_four_protocols_share_auth_limits_and_resume() -> Result<()> {
    let m = Matrix::start()?;
    let unauthorized = |p| match p {
        Proto::Grpc => refused("unauthorized", "Unauthenticated"),
        _ => refused("unauthorized", "401"),
    };
    let forbidden = |p| match p {
        Proto::Grpc => refused("forbidden", "PermissionDenied"),
        _ => refused("forbidden", "403"),
    };
    for p in Proto::ALL {
        assert_eq!(m.refused(p, "a/1", false).await?, unauthorized(p), "{p:?}");
        assert_eq!(m.refused(p, "b/1", true).await?, forbidden(p), "{p:?}");
    }

    for p in Proto::ALL {
        let opened = format!(
            "pushgate_streams_opened_total{{protocol=\"{}\"}}",
            p.label()
        );
        let before = m.metric(&opened).await?;
        let first = slow_consumer_is_cut_and_resumes(&m, p).await?;
        eprintln!("{p:?}: cut after {first} events reached the client, resumed exactly");
        assert_eq!(m.metric(&opened).await? - before, 2.0, "{p:?}");
        let delivered = format!(
            "pushgate_events_delivered_total{{protocol=\"{}\"}}",
            p.label()
        );
        assert!(m.metric(&delivered).await? > 0.0, "{p:?}");
    }
    assert_eq!(m.metric("pushgate_quic_connections").await?, 0.0);
    assert_eq!(m.metric("pushgate_quic_connection_limit").await?, 20000.0);

    // Draining: a stream request on a fresh connection (each `open` makes
    // one) was sent here although the gateway is unready, so nothing else
    // would take it: every protocol serves it until the window ends.
    m.gw.sigterm();
    let probe = https(&m.ca, &m.gw, Proto::H1)?;
    wait_draining(&probe, &m.base(), T).await?;
    let mut late = Vec::new();
    for p in Proto::ALL {
        late.push((p, m.subscribe(p, "a/1", None).await?));
    }
    // A client of its own: the probe's connection predates the drain.
    let fresh = https(&m.ca, &m.gw, Proto::H1)?;
    let opts = PublishOptions::token(Some(&m.token));
    publish_json(&fresh, &m.base(), "a/1", "late", opts).await?;
    for (p, s) in &mut late {
        assert_eq!(s.next().await?.as_deref(), Some("late"), "{p:?}");
    }
    for (p, mut s) in late {
        // Each ends by the end of the window: a timeout here fails.
        while s.next().await.with_context(|| format!("{p:?}"))?.is_some() {}
    }
    Ok(())
}
