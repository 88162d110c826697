//! Device shadows: publishers set `desired`, the device reports
//! `reported`, both by JSON merge patch under a version with `If-Match`.
//! A desired change reaches the device's open stream as `event: shadow`,
//! and one made while it was offline comes first when it reconnects. Both
//! stores; on Redis, patches on one replica and streams on another.

use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{config_file, mint_token, publish, redis_pair, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::SseClient;
use reqwest::StatusCode;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn small_limit() -> Result<tempfile::NamedTempFile> {
    config_file("limits:\n  max_shadow_bytes: 1024\n")
}

/// `PATCH` with an optional `If-Match` and token; `(status, body, etag)`.
async fn patch(
    client: &reqwest::Client,
    base: &str,
    device: &str,
    body: impl Into<reqwest::Body>,
    if_match: Option<&str>,
    token: Option<&str>,
) -> Result<(StatusCode, Value, String)> {
    let mut req = client
        .patch(format!("{base}/v1/devices/{device}/shadow"))
        .header("content-type", "application/merge-patch+json")
        .body(body);
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((status, resp.json().await.unwrap_or(Value::Null), etag))
}

async fn get(
    client: &reqwest::Client,
    base: &str,
    device: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Value)> {
    let mut req = client.get(format!("{base}/v1/devices/{device}/shadow"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Versions, metadata, If-Match conflicts (also two at once), limits and
/// malformed patches; patches through `a`, reads through `b`.
async fn documents(a: &GatewayProcess, b: &GatewayProcess, device: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let (pa, pb) = (a.url(""), b.url(""));
    let (status, doc) = get(&client, &pb, device, None).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc,
        json!({"state":{"desired":{},"reported":{}},"metadata":{"desired":{},"reported":{}},"version":0})
    );

    let t0 = now_ms();
    let body = json!({"state":{"desired":{"valve":"open","mode":{"a":1,"b":2}}},"cache_policy":{"valve":{"ttl_sec":60,"priority":"high"}}});
    let (status, doc, etag) = patch(&client, &pa, device, body.to_string(), None, None).await?;
    assert_eq!((status, etag.as_str()), (StatusCode::OK, "\"1\""), "{doc}");
    assert_eq!(doc["version"], 1);
    let stamp = doc["metadata"]["desired"]["valve"]["timestamp"]
        .as_u64()
        .unwrap();
    assert!((t0..=now_ms()).contains(&stamp), "{doc}");
    assert_eq!(
        doc["metadata"]["desired"]["valve"]["cache_policy"],
        json!({"ttl_sec":60,"priority":"high"})
    );
    let body = json!({"state":{"reported":{"mode":{"a":1,"b":2}}}});
    let (status, doc, _) =
        patch(&client, &pa, device, body.to_string(), Some("\"1\""), None).await?;
    assert_eq!(
        (status, doc["version"].clone()),
        (StatusCode::OK, json!(2)),
        "{doc}"
    );
    let body = json!({"state":{"desired":{"mode":{"b":null}}}});
    let (status, doc, _) = patch(&client, &pa, device, body.to_string(), Some("2"), None).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        doc["state"]["desired"],
        json!({"valve":"open","mode":{"a":1}}),
        "merge patch: null removes"
    );
    let (_, seen) = get(&client, &pb, device, None).await?;
    assert_eq!(seen, doc, "the other replica reads the same document");

    // A stale If-Match is 412 with the JSON error body; nothing changed.
    let (status, err, _) = patch(
        &client,
        &pa,
        device,
        r#"{"state":{"desired":{"x":1}}}"#,
        Some("\"2\""),
        None,
    )
    .await?;
    assert_eq!(
        (status, err["code"].clone()),
        (StatusCode::PRECONDITION_FAILED, json!("version_conflict")),
        "{err}"
    );
    // Two patches from the same version at once: one wins, one is 412.
    let mut version = 3;
    for round in 0..20 {
        let tag = format!("\"{version}\"");
        let one = patch(
            &client,
            &pa,
            device,
            json!({"state":{"desired":{"r":round}}}).to_string(),
            Some(&tag),
            None,
        );
        let two = patch(
            &client,
            &pb,
            device,
            json!({"state":{"desired":{"r":-round - 1}}}).to_string(),
            Some(&tag),
            None,
        );
        let (one, two) = tokio::join!(one, two);
        let mut statuses = [one?.0, two?.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            "round {round}"
        );
        version += 1;
    }
    assert_eq!(get(&client, &pb, device, None).await?.1["version"], version);

    // Limits: a patch body, and a document, beyond limits.max_shadow_bytes.
    let big = json!({"state":{"desired":{"blob":"x".repeat(2000)}}}).to_string();
    let (status, _, _) = patch(&client, &pa, device, big, None, None).await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let half = |k: &str| json!({"state":{"reported":{k:"y".repeat(450)}}}).to_string();
    assert_eq!(
        patch(&client, &pa, device, half("p"), None, None).await?.0,
        StatusCode::OK
    );
    let (status, err, _) = patch(&client, &pa, device, half("q"), None, None).await?;
    assert_eq!(
        (status, err["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("shadow_too_large")),
        "{err}"
    );

    // Malformed: 400 with the JSON error body.
    for (body, if_match, code) in [
        ("{not json", None, "bad_patch"),
        (
            r#"{"state":{"desired":{"a":1},"reported":{"b":1}}}"#,
            None,
            "bad_patch",
        ),
        (r#"{"state":{"desired":"on"}}"#, None, "bad_patch"),
        (
            r#"{"state":{"desired":{"a":1}}}"#,
            Some("v7"),
            "bad_if_match",
        ),
    ] {
        let (status, err, _) = patch(&client, &pa, device, body, if_match, None).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(err["code"], code, "{body}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }
    Ok(())
}

async fn open(client: &reqwest::Client, url: &str) -> Result<SseClient> {
    SseClient::connect(client, url, None).await
}

/// `(type, data)` of the next event.
async fn next(s: &mut SseClient) -> Result<(String, Value)> {
    match s.next(T).await? {
        Some(e) => Ok((
            e.event_type,
            serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
        )),
        None => bail!("stream ended"),
    }
}

/// A desired change reaches the open stream; one made while offline comes
/// first on reconnect. Patches and publishes through `a`, streams on `b`.
async fn delivery(a: &GatewayProcess, b: &GatewayProcess, device: &str, topic: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let pa = a.url("");
    let path = format!("/v1/stream?topic={topic}&device={device}");
    let mut s = open(&client, &b.url(&path)).await?;
    s.await_id(T).await?;
    let body = json!({"state":{"desired":{"fan":"on"}}}).to_string();
    assert_eq!(
        patch(&client, &pa, device, body, None, None).await?.0,
        StatusCode::OK
    );
    assert_eq!(
        next(&mut s).await?,
        (
            "shadow".to_owned(),
            json!({"version":1,"delta":{"fan":"on"}})
        )
    );
    // It acks a data event, so it resumes from there later.
    let id = publish(&client, &pa, topic, "e0").await?.id;
    assert_eq!(next(&mut s).await?, ("message".to_owned(), json!("e0")));
    client
        .post(format!("{pa}/v1/devices/{device}/ack"))
        .json(&json!({"id": id}))
        .send()
        .await?
        .error_for_status()?;
    drop(s);

    // Offline: the device reports the fan, a publisher wants a valve, and
    // two events are published.
    let rep = json!({"state":{"reported":{"fan":"on"}}}).to_string();
    assert_eq!(
        patch(&client, &pa, device, rep, None, None).await?.0,
        StatusCode::OK
    );
    let want = json!({"state":{"desired":{"valve":"closed"}}}).to_string();
    let (_, doc, _) = patch(&client, &pa, device, want, None, None).await?;
    assert_eq!(doc["version"], 3);
    for e in ["e1", "e2"] {
        publish(&client, &pa, topic, e).await?;
    }
    let mut s = open(&client, &b.url(&path)).await?;
    assert_eq!(
        next(&mut s).await?,
        (
            "shadow".to_owned(),
            json!({"version":3,"delta":{"valve":"closed"}})
        ),
        "the delta comes first"
    );
    assert_eq!(next(&mut s).await?, ("message".to_owned(), json!("e1")));
    assert_eq!(next(&mut s).await?, ("message".to_owned(), json!("e2")));
    drop(s);

    // A device that says it has version 3 is not told again; once the
    // device reports the valve, nothing is pending.
    let mut s = open(&client, &b.url(&format!("{path}&shadow_version=3"))).await?;
    assert_eq!(next(&mut s).await?, ("message".to_owned(), json!("e1")));
    drop(s);
    let rep = json!({"state":{"reported":{"valve":"closed"}}}).to_string();
    assert_eq!(
        patch(&client, &pa, device, rep, None, None).await?.0,
        StatusCode::OK
    );
    let mut s = open(&client, &b.url(&path)).await?;
    assert_eq!(next(&mut s).await?, ("message".to_owned(), json!("e1")));
    // A plain subscriber of the topic never sees shadow events.
    let mut p = open(
        &client,
        &b.url(&format!("/v1/stream?topic={topic}&last_event_id=earliest")),
    )
    .await?;
    for e in ["e0", "e1", "e2"] {
        assert_eq!(next(&mut p).await?, ("message".to_owned(), json!(e)));
    }
    Ok(())
}

#[tokio::test]
async fn shadows_merge_version_and_refuse_stale_or_oversized_patches_embedded() -> Result<()> {
    let cfg = small_limit()?;
    let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()])?;
    documents(&gw, &gw, "pump-1").await
}

#[tokio::test]
async fn shadows_merge_version_and_refuse_stale_or_oversized_patches_on_redis() -> Result<()> {
    let redis = RedisServer::start()?;
    let cfg = small_limit()?;
    let (a, b) = redis_pair(&redis, &["--config", cfg.path().to_str().unwrap()])?;
    documents(&a, &b, "pump-2").await
}

#[tokio::test]
async fn a_desired_change_made_offline_arrives_first_embedded() -> Result<()> {
    let mut gw = GatewayProcess::start(&[])?;
    delivery(&gw, &gw, "pump-3", "dev/pump-3/cmd").await?;
    // The shadow's reserved topic survives a kill -9 like any other.
    gw.kill9();
    gw.restart()?;
    let client = reqwest::Client::new();
    let want = json!({"state":{"desired":{"led":"red"}}}).to_string();
    let (status, doc, _) = patch(&client, &gw.url(""), "pump-3", want, None, None).await?;
    assert_eq!((status, doc["version"].clone()), (StatusCode::OK, json!(5)));
    let mut s = open(
        &client,
        &gw.url("/v1/stream?topic=dev/pump-3/cmd&device=pump-3"),
    )
    .await?;
    assert_eq!(
        next(&mut s).await?,
        (
            "shadow".to_owned(),
            json!({"version":5,"delta":{"led":"red"}})
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_desired_change_made_offline_arrives_first_on_redis() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, b) = redis_pair(&redis, &[])?;
    delivery(&a, &b, "pump-4", "dev/pump-4/cmd").await
}

#[tokio::test]
async fn the_device_reports_and_publishers_desire() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("secret");
    std::fs::write(&key, "a-test-secret-of-enough-length-for-hs256-0123456789")?;
    let gw = GatewayProcess::start(&["--auth-key-file", key.to_str().unwrap()])?;
    let d1 = mint_token(&key, &["--sub", "d1", "--subscribe", "dev/**"])?;
    let d2 = mint_token(&key, &["--sub", "d2", "--subscribe", "dev/**"])?;
    let publisher = mint_token(&key, &["--sub", "backend", "--publish", "shadows/**"])?;
    let admin = mint_token(&key, &["--sub", "ops", "--admin"])?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let reported = r#"{"state":{"reported":{"fw":"1.2"}}}"#;
    let desired = r#"{"state":{"desired":{"fw":"1.3"}}}"#;
    for (who, body, token, status) in [
        (
            "another device reports",
            reported,
            Some(&d2),
            StatusCode::FORBIDDEN,
        ),
        ("no token", reported, None, StatusCode::UNAUTHORIZED),
        ("the device reports", reported, Some(&d1), StatusCode::OK),
        (
            "the device desires",
            desired,
            Some(&d1),
            StatusCode::FORBIDDEN,
        ),
        (
            "a publisher reports",
            reported,
            Some(&publisher),
            StatusCode::FORBIDDEN,
        ),
        (
            "a publisher desires",
            desired,
            Some(&publisher),
            StatusCode::OK,
        ),
        (
            "an admin reports",
            r#"{"state":{"reported":{"fw":"1.3"}}}"#,
            Some(&admin),
            StatusCode::OK,
        ),
    ] {
        let (got, body, _) =
            patch(&client, &base, "d1", body, None, token.map(String::as_str)).await?;
        assert_eq!(got, status, "{who}: {body}");
    }
    for (who, token, status) in [
        ("the device", Some(&d1), StatusCode::OK),
        ("a publisher", Some(&publisher), StatusCode::OK),
        ("another device", Some(&d2), StatusCode::FORBIDDEN),
        ("no token", None, StatusCode::UNAUTHORIZED),
    ] {
        let (got, doc) = get(&client, &base, "d1", token.map(String::as_str)).await?;
        assert_eq!(got, status, "{who}: {doc}");
    }
    assert_eq!(
        get(&client, &base, "d1", Some(&admin)).await?.1["version"],
        3
    );
    Ok(())
}
