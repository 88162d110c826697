//! Devices resume from what they acknowledged. A device that forgets its
//! Last-Event-ID (firmware without storage) gets exactly the events after
//! its last ack: after a reconnect, after a `kill -9` of the gateway, and on
//! another replica of a Redis-backed fleet. Acks never move back, and only
//! the device itself (or an admin token) may make them.

use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{mint_token, publish_json, redis_pair, GatewayProcess, PublishOptions};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use reqwest::StatusCode;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// Publishes `e{from}` ..= `e{to}` to `topic`; returns their cursors.
async fn publish_range(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    from: usize,
    to: usize,
    token: Option<&str>,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in from..=to {
        let data = format!("e{i}");
        let ack = publish_json(client, base, topic, &data, PublishOptions::token(token)).await?;
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    Ok(ids)
}

fn auth_headers(token: Option<&str>) -> Vec<(String, String)> {
    token
        .map(|t| vec![("authorization".to_owned(), format!("Bearer {t}"))])
        .unwrap_or_default()
}

async fn open(
    client: &reqwest::Client,
    url: &str,
    cursor: Option<&str>,
    token: Option<&str>,
) -> Result<SseClient> {
    match SseClient::open_with(client, url, cursor, &auth_headers(token)).await? {
        Opened::Stream(s) => Ok(*s),
        Opened::Refused(status, body) => bail!("stream refused: {status} {body}"),
    }
}

/// Reads `n` data events; returns their `(data, id)`.
async fn read_n(s: &mut SseClient, n: usize) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    while out.len() < n {
        match s.next(T).await? {
            Some(e) if e.event_type == "message" => out.push((e.data, e.id)),
            Some(e) => bail!("unexpected `{}` event: {}", e.event_type, e.data),
            None => bail!("stream ended after {} events", out.len()),
        }
    }
    Ok(out)
}

/// Opens the device's stream without a cursor, publishes `marker`, and
/// returns every data event up to and including it: what the stream
/// replayed from the acknowledged position, then the live marker.
async fn resume_without_cursor(
    client: &reqwest::Client,
    stream_base: &str,
    publish_base: &str,
    path: &str,
    topic: &str,
    marker: &str,
    token: Option<&str>,
) -> Result<Vec<String>> {
    let mut s = open(client, &format!("{stream_base}{path}"), None, token).await?;
    publish_json(
        client,
        publish_base,
        topic,
        marker,
        PublishOptions::token(token),
    )
    .await?;
    let mut seen = Vec::new();
    for e in s.until(marker, T).await? {
        if e.event_type != "message" {
            bail!("unexpected `{}` event: {}", e.event_type, e.data);
        }
        seen.push(e.data);
    }
    Ok(seen)
}

async fn ack(
    client: &reqwest::Client,
    base: &str,
    device: &str,
    body: String,
    token: Option<&str>,
) -> Result<(StatusCode, Value)> {
    let mut req = client
        .post(format!("{base}/v1/devices/{device}/ack"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.json().await?))
}

fn ack_body(id: &str) -> String {
    json!({ "id": id }).to_string()
}

fn range(from: usize, to: usize) -> Vec<String> {
    (from..=to).map(|i| format!("e{i}")).collect()
}

fn with(mut v: Vec<String>, more: &[&str]) -> Vec<String> {
    v.extend(more.iter().map(|s| s.to_string()));
    v
}

#[tokio::test]
async fn a_device_resumes_from_its_ack_after_a_reconnect_and_a_kill_9() -> Result<()> {
    let mut gw = GatewayProcess::start(&[])?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let (topic, path) = ("dev/d1/cmd", "/v1/stream?topic=dev/d1/cmd&device=d1");
    publish_range(&client, &base, topic, 1, 100, None).await?;

    let mut s = open(&client, &gw.url(path), Some("earliest"), None).await?;
    let got = read_n(&mut s, 100).await?;
    assert_eq!(
        got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        range(1, 100)
    );
    let (status, reply) = ack(&client, &base, "d1", ack_body(&got[59].1), None).await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        reply["id"],
        got[59].1.as_str(),
        "the stored position is event 60"
    );
    drop(s);

    // The device forgot its Last-Event-ID.
    let seen = resume_without_cursor(&client, &base, &base, path, topic, "m1", None).await?;
    assert_eq!(seen, with(range(61, 100), &["m1"]));

    gw.kill9();
    gw.restart()?;
    // Pooled connections died with the process.
    let client = reqwest::Client::new();
    let seen = resume_without_cursor(&client, &base, &base, path, topic, "m2", None).await?;
    assert_eq!(
        seen,
        with(range(61, 100), &["m1", "m2"]),
        "the ack survived kill -9"
    );

    // A stream that sends a cursor is not moved by the ack: the header wins.
    let mut s = open(&client, &gw.url(path), Some(&got[89].1), None).await?;
    let next = read_n(&mut s, 1).await?;
    assert_eq!(next[0].0, "e91");
    assert_eq!(gw.metric("pushgate_device_resumes_total").await?, 1.0);
    Ok(())
}

#[tokio::test]
async fn another_replica_resumes_a_device_from_its_ack_on_redis() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, b) = redis_pair(&redis, &[])?;
    let client = reqwest::Client::new();
    let (topic, path) = ("dev/r1/cmd", "/v1/stream?topic=dev/r1/cmd&device=r1");
    publish_range(&client, &a.url(""), topic, 1, 100, None).await?;

    let mut s = open(&client, &a.url(path), Some("earliest"), None).await?;
    let got = read_n(&mut s, 100).await?;
    let (status, reply) = ack(&client, &a.url(""), "r1", ack_body(&got[59].1), None).await?;
    assert_eq!(status, StatusCode::OK, "{reply}");
    drop(s);

    let seen =
        resume_without_cursor(&client, &b.url(""), &a.url(""), path, topic, "m", None).await?;
    assert_eq!(seen, with(range(61, 100), &["m"]));
    Ok(())
}

#[tokio::test]
async fn acks_never_move_back_and_only_the_device_or_an_admin_may_ack() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("secret");
    std::fs::write(&key, "a-test-secret-of-enough-length-for-hs256-0123456789")?;
    let key_arg = key.to_str().unwrap();
    let gw = GatewayProcess::start(&["--auth-key-file", key_arg])?;
    let grants = ["--subscribe", "dev/**", "--publish", "dev/**"];
    let d1 = mint_token(&key, &[&["--sub", "d1"][..], &grants].concat())?;
    let d2 = mint_token(&key, &[&["--sub", "d2"][..], &grants].concat())?;
    let admin = mint_token(&key, &["--sub", "ops", "--admin"])?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let (topic, path) = ("dev/d1/cmd", "/v1/stream?topic=dev/d1/cmd");
    publish_range(&client, &base, topic, 1, 100, Some(&d1)).await?;
    let mut s = open(&client, &gw.url(path), Some("earliest"), Some(&d1)).await?;
    let got = read_n(&mut s, 100).await?;
    drop(s);
    let id = |n: usize| got[n - 1].1.clone();

    let (status, reply) = ack(&client, &base, "d1", ack_body(&id(60)), Some(&d1)).await?;
    assert_eq!(
        (status, reply["id"].clone()),
        (StatusCode::OK, json!(id(60)))
    );
    let (status, reply) = ack(&client, &base, "d1", ack_body(&id(30)), Some(&d1)).await?;
    assert_eq!(
        (status, reply["id"].clone()),
        (StatusCode::OK, json!(id(60))),
        "an older ack leaves the position where it was"
    );

    let refusals = [
        (
            "another device",
            "d1",
            ack_body(&id(90)),
            Some(&d2),
            403,
            "forbidden",
        ),
        (
            "no token",
            "d1",
            ack_body(&id(90)),
            None,
            401,
            "unauthorized",
        ),
        (
            "not a cursor",
            "d1",
            ack_body("not-a-cursor"),
            Some(&d1),
            400,
            "bad_cursor",
        ),
        (
            "forged cursor",
            "d1",
            ack_body(&forge(&id(90))),
            Some(&d1),
            400,
            "bad_cursor",
        ),
        (
            "wrong shape",
            "d1",
            json!({"cursor": id(90)}).to_string(),
            Some(&d1),
            400,
            "bad_ack",
        ),
        (
            "not JSON",
            "d1",
            "id=1".to_owned(),
            Some(&d1),
            400,
            "bad_ack",
        ),
        (
            "bad device id",
            &"x".repeat(201),
            ack_body(&id(90)),
            Some(&admin),
            400,
            "bad_device",
        ),
    ];
    for (case, device, body, token, want, code) in refusals {
        let (status, reply) = ack(&client, &base, device, body, token.map(String::as_str)).await?;
        assert_eq!(status.as_u16(), want, "{case}: {reply}");
        assert_eq!(reply["code"], code, "{case}");
    }

    let (status, reply) = ack(&client, &base, "d1", ack_body(&id(70)), Some(&admin)).await?;
    assert_eq!(
        (status, reply["id"].clone()),
        (StatusCode::OK, json!(id(70))),
        "an admin may ack"
    );

    // A token cannot open a stream as another device.
    let other = SseClient::open_with(
        &client,
        &gw.url(&format!("{path}&device=d2")),
        None,
        &auth_headers(Some(&d1)),
    )
    .await?;
    assert!(matches!(other, Opened::Refused(StatusCode::FORBIDDEN, _)));

    // Nothing refused moved it: the device resumes after 70.
    let seen = resume_without_cursor(&client, &base, &base, path, topic, "m", Some(&d1)).await?;
    assert_eq!(seen, with(range(71, 100), &["m"]));
    assert_eq!(gw.metric("pushgate_device_acks_total").await?, 3.0);
    Ok(())
}

/// The same cursor with one payload character changed: it still decodes as
/// base64url, but its checksum no longer matches.
fn forge(id: &str) -> String {
    let mut bytes = id.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn unacknowledged_events_and_recovery_time_are_measured() -> Result<()> {
    // Fast heartbeats: a stream re-reads its device's acks at each one.
    let gw = GatewayProcess::start(&["--heartbeat", "200ms"])?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let (topic, path) = ("dev/g1/cmd", "/v1/stream?topic=dev/g1/cmd&device=g1");
    let mut s = open(&client, &gw.url(path), None, None).await?;
    s.await_id(T).await?;
    publish_range(&client, &base, topic, 1, 5, None).await?;
    let got = read_n(&mut s, 5).await?;
    assert_eq!(gw.metric("pushgate_device_unacked_events").await?, 5.0);
    assert_eq!(
        gw.metric("pushgate_device_events_delivered_total").await?,
        5.0
    );
    ack(&client, &base, "g1", ack_body(&got[2].1), None).await?;
    // The stream picks up the ack.
    gw.wait_metric("pushgate_device_unacked_events", 2.0)
        .await?;
    drop(s);
    // A closed stream owes nothing.
    gw.wait_metric("pushgate_device_unacked_events", 0.0)
        .await?;
    assert_eq!(
        gw.metric("pushgate_conn_recovery_seconds_count").await?,
        0.0
    );
    let seen = resume_without_cursor(&client, &base, &base, path, topic, "m", None).await?;
    assert_eq!(seen, with(range(4, 5), &["m"]));
    assert_eq!(
        gw.metric("pushgate_conn_recovery_seconds_count").await?,
        1.0,
        "close → resume of the same device"
    );
    // A plain stream is no device: it moves none of them.
    let mut p = open(
        &client,
        &gw.url("/v1/stream?topic=dev/g1/cmd"),
        Some("earliest"),
        None,
    )
    .await?;
    read_n(&mut p, 6).await?;
    assert_eq!(
        gw.metric("pushgate_device_events_delivered_total").await?,
        8.0
    );
    Ok(())
}
