//! Commands expire. An event published with a TTL that nobody fetched in
//! time is never replayed; a resuming client is told first how many
//! expired (`event: expired`, counts per topic), and a device's loss
//! counter moves by exactly the events that expired before it acknowledged
//! them — once, however often it resumes, on either store.

use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{config_file, publish_query, redis_pair, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::sse_client::SseEvent;
use pushgate_e2e::wait::elapse;
use reqwest::StatusCode;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const LOSS: &str = "pushgate_messages_expired_unacked_total";

/// A config file with fast trimming, so expired payloads are dropped
/// while the test runs.
fn fast_trim() -> Result<tempfile::NamedTempFile> {
    config_file("retention:\n  trim_interval: 200ms\n")
}

/// What a resume showed: `(type, data)` of each event.
fn shown(events: &[SseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e.event_type.clone(), e.data.clone()))
        .collect()
}

fn expired(topic: &str, count: u64) -> (String, String) {
    let data = json!({ "topics": [{ "topic": topic, "count": count }] });
    ("expired".to_owned(), data.to_string())
}

fn msg(data: &str) -> (String, String) {
    ("message".to_owned(), data.to_owned())
}

async fn ack(client: &reqwest::Client, base: &str, device: &str, id: &str) -> Result<()> {
    let resp = client
        .post(format!("{base}/v1/devices/{device}/ack"))
        .json(&json!({ "id": id }))
        .send()
        .await?;
    if resp.status() != StatusCode::OK {
        bail!("ack answered {}", resp.status());
    }
    Ok(())
}

/// The scenario, with streams on `sub` and publishes and acks on `pubs`.
async fn commands_expire(
    sub: &GatewayProcess,
    pubs: &GatewayProcess,
    topic: &str,
    device: &str,
) -> Result<()> {
    let client = reqwest::Client::new();
    let path = format!("/v1/stream?topic={topic}&device={device}");
    let loss0 = sub.metric(LOSS).await?;

    // Online: a command with a TTL is delivered live at once; the device acks it.
    let mut s = SseClient::connect(&client, &sub.url(&path), None).await?;
    s.await_id(T).await?;
    let first = publish_query(&client, &pubs.url(""), topic, "c1", "ttl=1s&priority=high").await?;
    assert!(first["expires_at_ms"].as_u64().is_some(), "{first}");
    let got = s.until("c1", T).await?;
    assert_eq!(shown(&got), [msg("c1")]);
    ack(&client, &pubs.url(""), device, &got[0].id).await?;
    drop(s);

    // Offline: two commands expire, one event has no TTL, one takes the
    // high tier's default (2 minutes).
    publish_query(&client, &pubs.url(""), topic, "c2", "ttl=1s").await?;
    publish_query(
        &client,
        &pubs.url(""),
        topic,
        "c3",
        "ttl=1000ms&priority=high",
    )
    .await?;
    let plain = publish_query(&client, &pubs.url(""), topic, "p4", "").await?;
    assert!(plain.get("expires_at_ms").is_none(), "{plain}");
    let tier = publish_query(&client, &pubs.url(""), topic, "t5", "priority=high").await?;
    let ttl = tier["expires_at_ms"].as_u64().unwrap() as i64 - now_ms();
    assert!(
        (100_000..=120_000).contains(&ttl),
        "high tier default: {ttl} ms"
    );
    elapse("the 1 s TTLs to run out", Duration::from_millis(2_100)).await;

    // The device comes back without a cursor: told first, then only what is alive.
    let mut s = SseClient::connect(&client, &sub.url(&path), None).await?;
    publish_query(&client, &pubs.url(""), topic, "m1", "").await?;
    let got = s.until("m1", T).await?;
    assert_eq!(
        shown(&got),
        [expired(topic, 2), msg("p4"), msg("t5"), msg("m1")]
    );
    assert_eq!(
        sub.metric(LOSS).await? - loss0,
        2.0,
        "two expired unacknowledged"
    );
    drop(s);

    // Again without acking: told again, but the loss is not counted twice.
    let mut s = SseClient::connect(&client, &sub.url(&path), None).await?;
    publish_query(&client, &pubs.url(""), topic, "m2", "").await?;
    let got = s.until("m2", T).await?;
    assert_eq!(
        shown(&got),
        [
            expired(topic, 2),
            msg("p4"),
            msg("t5"),
            msg("m1"),
            msg("m2")
        ]
    );
    assert_eq!(
        sub.metric(LOSS).await? - loss0,
        2.0,
        "each loss counted once"
    );
    drop(s);

    // A plain subscriber resuming from the first command is told too; it
    // is no device, so the loss counter stays.
    let mut s = SseClient::connect(
        &client,
        &sub.url(&format!("/v1/stream?topic={topic}")),
        Some(&got_id(&first)),
    )
    .await?;
    let got = s.until("m2", T).await?;
    assert_eq!(
        shown(&got),
        [
            expired(topic, 2),
            msg("p4"),
            msg("t5"),
            msg("m1"),
            msg("m2")
        ]
    );
    assert_eq!(sub.metric(LOSS).await? - loss0, 2.0);
    assert!(sub.metric("pushgate_events_expired_total").await? >= 6.0);
    Ok(())
}

fn got_id(reply: &Value) -> String {
    reply["id"].as_str().unwrap().to_owned()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn expired_commands_are_never_replayed_and_counted_once_embedded() -> Result<()> {
    let cfg = fast_trim()?;
    let mut gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()])?;
    commands_expire(&gw, &gw, "dev/t1/cmd", "t1").await?;
    // After kill -9 the ledger still knows what was counted: a fresh
    // process counts nothing again.
    gw.kill9();
    gw.restart()?;
    let client = reqwest::Client::new();
    let mut s = SseClient::connect(
        &client,
        &gw.url("/v1/stream?topic=dev/t1/cmd&device=t1"),
        None,
    )
    .await?;
    let got = s.until("m2", T).await?;
    assert_eq!(got[0].event_type, "expired");
    assert_eq!(
        gw.metric(LOSS).await?,
        0.0,
        "already counted before the restart"
    );
    Ok(())
}

#[tokio::test]
async fn expired_commands_are_never_replayed_and_counted_once_on_redis() -> Result<()> {
    let redis = RedisServer::start()?;
    let cfg = fast_trim()?;
    let (a, b) = redis_pair(&redis, &["--config", cfg.path().to_str().unwrap()])?;
    // Streams on one replica, publishes and acks through the other.
    commands_expire(&b, &a, "dev/t2/cmd", "t2").await?;
    Ok(())
}

#[tokio::test]
async fn ttl_and_priority_are_checked_at_the_edge() -> Result<()> {
    let gw = GatewayProcess::start(&[])?;
    let client = reqwest::Client::new();
    for (q, code) in [
        ("ttl=0s", "bad_ttl"),
        ("ttl=soon", "bad_ttl"),
        ("ttl=400d", "bad_ttl"),
        ("priority=urgent", "bad_priority"),
    ] {
        let resp = client
            .post(gw.url(&format!("/v1/topics/t/events?{q}")))
            .body("x")
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = resp.json().await?;
        assert_eq!(body["code"], code, "{q}: {body}");
    }
    // A batch carries ttl and priority per event.
    let resp = client
        .post(gw.url("/v1/publish"))
        .json(&json!([
            { "topic": "t", "data": "a", "ttl": "90s" },
            { "topic": "t", "data": "b", "priority": "low" },
            { "topic": "t", "data": "c" },
        ]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let acks: Vec<Value> = resp.json().await?;
    let left = |a: &Value| a["expires_at_ms"].as_i64().map(|e| e - now_ms());
    assert!(
        left(&acks[0]).is_some_and(|l| (80_000..=90_000).contains(&l)),
        "{acks:?}"
    );
    assert!(
        left(&acks[1]).is_some_and(|l| l > 6 * 86_400_000),
        "low tier: 7 days"
    );
    assert_eq!(left(&acks[2]), None);
    let resp = client
        .post(gw.url("/v1/publish"))
        .json(&json!([{ "topic": "t", "data": "a", "ttl": "never" }]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    Ok(())
}
