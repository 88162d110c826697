//! Token lifetimes on the real binary: a stream ends when its token
//! expires and resumes, with nothing lost or repeated, on a fresh token; keys
//! rotate on disk (A, then A+B, then B) without a restart, selected by
//! `kid`, and removing a key ends the streams it authenticated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{mint_token, publish, GatewayProcess};
use pushgate_e2e::sse_client::SseEvent;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::wait_until;
use reqwest::StatusCode;

const T: Duration = Duration::from_secs(15);

/// A key directory as a Secret volume holds it: one file per `kid`.
struct KeyDir {
    dir: tempfile::TempDir,
}

impl KeyDir {
    fn new() -> Result<KeyDir> {
        Ok(KeyDir {
            dir: tempfile::tempdir()?,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes key `kid` (aside, then renamed in, so no half-written key is read).
    fn add(&self, kid: &str) -> Result<PathBuf> {
        let secret: String = (0..48)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        let tmp = self.path().join(format!(".{kid}.tmp"));
        std::fs::write(&tmp, secret)?;
        let file = self.path().join(kid);
        std::fs::rename(&tmp, &file)?;
        Ok(file)
    }

    fn remove(&self, kid: &str) -> Result<()> {
        Ok(std::fs::remove_file(self.path().join(kid))?)
    }
}

/// A token for `cred/**` signed with `key`, naming `kid` if given.
fn token(key: &Path, kid: Option<&str>, ttl: &str) -> Result<String> {
    let mut args = vec!["--sub", "device-1", "--subscribe", "cred/**", "--ttl", ttl];
    if let Some(kid) = kid {
        args.extend(["--kid", kid]);
    }
    mint_token(key, &args)
}

fn gateway(keys: &KeyDir) -> Result<GatewayProcess> {
    GatewayProcess::start(&[
        "--auth-key-dir",
        keys.path().to_str().unwrap(),
        "--auth-reload-interval",
        "100ms",
        "--auth-leeway",
        "0s",
        "--auth-anonymous-publish",
        "cred/**",
        "--retry",
        "200ms",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
}

async fn open(
    http: &reqwest::Client,
    gw: &GatewayProcess,
    topic: &str,
    token: &str,
    last_event_id: &str,
) -> Result<Opened> {
    SseClient::open_with(
        http,
        &gw.url(&format!("/v1/stream?topic={topic}")),
        Some(last_event_id),
        &[("authorization".into(), format!("Bearer {token}"))],
    )
    .await
}

async fn connect(
    http: &reqwest::Client,
    gw: &GatewayProcess,
    topic: &str,
    token: &str,
    last_event_id: &str,
) -> Result<SseClient> {
    match open(http, gw, topic, token, last_event_id).await? {
        Opened::Stream(s) => Ok(*s),
        Opened::Refused(status, body) => bail!("stream refused: {status} {body}"),
    }
}

async fn status(
    http: &reqwest::Client,
    gw: &GatewayProcess,
    topic: &str,
    token: &str,
) -> Result<StatusCode> {
    Ok(match open(http, gw, topic, token, "earliest").await? {
        Opened::Stream(_) => StatusCode::OK,
        Opened::Refused(s, _) => s,
    })
}

/// What a stream delivered until it ended: the data of its messages, and
/// the gateway event it ended with, if any.
async fn drain(s: &mut SseClient) -> Result<(Vec<String>, Option<SseEvent>)> {
    let mut got = Vec::new();
    while let Some(ev) = s.next(T).await? {
        match ev.event_type.as_str() {
            "message" => got.push(ev.data),
            _ => return Ok((got, Some(ev))),
        }
    }
    Ok((got, None))
}

/// Messages until `n` have arrived in all.
async fn take(s: &mut SseClient, got: &mut Vec<String>, n: usize) -> Result<()> {
    while got.len() < n {
        match s.next(T).await? {
            Some(ev) if ev.event_type == "message" => got.push(ev.data),
            Some(ev) => bail!("unexpected {} event: {}", ev.event_type, ev.data),
            None => bail!("stream ended after {} of {n} events", got.len()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_at_token_expiry_and_resumes_exactly_on_a_fresh_token() -> Result<()> {
    let keys = KeyDir::new()?;
    let key = keys.add("k1")?;
    let gw = gateway(&keys)?;
    let http = reqwest::Client::new();
    let short = token(&key, Some("k1"), "3s")?;
    let mut first = connect(&http, &gw, "cred/expiry", &short, "earliest").await?;
    first.await_id(T).await?;

    // A sequential publisher that outlives the first token.
    let (base, total) = (gw.url(""), 60);
    let publisher = tokio::spawn({
        let http = http.clone();
        async move {
            for i in 1..=total {
                publish(&http, &base, "cred/expiry", &format!("e{i}")).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }
    });

    let (mut got, end) = drain(&mut first).await?;
    let end = end.expect("the stream ends with an event, not a bare close");
    assert_eq!(end.event_type, "expired-token");
    assert_eq!(end.data, r#"{"reason":"token_expired"}"#);
    assert!(first.next(T).await?.is_none(), "and then the stream ends");
    assert!(first.retry().is_some(), "with a retry: hint");
    assert!(
        !got.is_empty() && got.len() < total,
        "the first stream ran until expiry, mid-way: {} events",
        got.len()
    );
    assert_eq!(
        first.last_event_id(),
        end.id,
        "the ending event carries no id of its own"
    );

    assert_eq!(
        status(&http, &gw, "cred/expiry", &short).await?,
        StatusCode::UNAUTHORIZED,
        "the expired token opens nothing"
    );
    let fresh = token(&key, Some("k1"), "10m")?;
    let mut second = connect(&http, &gw, "cred/expiry", &fresh, first.last_event_id()).await?;
    take(&mut second, &mut got, total).await?;
    publisher.await??;
    let want: Vec<String> = (1..=total).map(|i| format!("e{i}")).collect();
    assert_eq!(
        got, want,
        "every event exactly once, in order, across the expiry"
    );
    assert_eq!(
        gw.metric("pushgate_streams_ended_by_credential_total{reason=\"token_expired\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// Polls until a stream with `token` opens (a reload is in flight).
async fn until_accepted(http: &reqwest::Client, gw: &GatewayProcess, token: &str) -> Result<()> {
    wait_until(
        "the new key to be picked up",
        Duration::from_secs(10),
        || async {
            match status(http, gw, "cred/rotation", token).await {
                Ok(StatusCode::OK) => Ok(()),
                Ok(s) => Err(s.to_string()),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await
}

#[tokio::test]
async fn keys_rotate_live_selected_by_kid_and_a_removed_key_ends_its_streams() -> Result<()> {
    let keys = KeyDir::new()?;
    let key_a = keys.add("a")?;
    let gw = gateway(&keys)?;
    let http = reqwest::Client::new();
    let topic = "cred/rotation";
    let token_a = token(&key_a, Some("a"), "10m")?;
    let mut a1 = connect(&http, &gw, topic, &token_a, "earliest").await?;
    publish(&http, &gw.url(""), topic, "r1").await?;
    let mut got_a1 = Vec::new();
    take(&mut a1, &mut got_a1, 1).await?;

    // A+B: both keys' tokens work, each selected by its kid.
    let key_b = keys.add("b")?;
    let token_b = token(&key_b, Some("b"), "10m")?;
    until_accepted(&http, &gw, &token_b).await?;
    let mut a2 = connect(&http, &gw, topic, &token_a, "earliest").await?;
    let mut b1 = connect(&http, &gw, topic, &token_b, "earliest").await?;
    for (what, forged) in [
        (
            "B's signature under A's kid",
            token(&key_b, Some("a"), "10m")?,
        ),
        (
            "no kid while two keys are valid",
            token(&key_a, None, "10m")?,
        ),
        ("a kid that names no key", token(&key_a, Some("c"), "10m")?),
    ] {
        assert_eq!(
            status(&http, &gw, topic, &forged).await?,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    publish(&http, &gw.url(""), topic, "r2").await?;
    let (mut got_a2, mut got_b1) = (Vec::new(), Vec::new());
    take(&mut a1, &mut got_a1, 2).await?;
    take(&mut a2, &mut got_a2, 2).await?;
    take(&mut b1, &mut got_b1, 2).await?;

    // B alone: A's streams end, A's tokens stop working, B's stream goes on.
    keys.remove("a")?;
    for s in [&mut a1, &mut a2] {
        let (rest, end) = drain(s).await?;
        assert!(rest.is_empty(), "nothing was published meanwhile: {rest:?}");
        let end = end.expect("an ending event");
        assert_eq!(end.event_type, "expired-token");
        assert_eq!(end.data, r#"{"reason":"key_removed"}"#);
        assert!(s.next(T).await?.is_none());
    }
    assert_eq!(
        status(&http, &gw, topic, &token_a).await?,
        StatusCode::UNAUTHORIZED
    );
    publish(&http, &gw.url(""), topic, "r3").await?;
    take(&mut b1, &mut got_b1, 3).await?;
    assert_eq!(got_b1, ["r1", "r2", "r3"]);
    assert_eq!(
        status(&http, &gw, topic, &token(&key_b, None, "10m")?).await?,
        StatusCode::OK,
        "with one key left, a token need not name it"
    );
    assert_eq!(
        gw.metric("pushgate_streams_ended_by_credential_total{reason=\"key_removed\"}")
            .await?,
        2.0
    );
    Ok(())
}
