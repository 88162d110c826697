//! Degrade switches on real gateways: the storage breaker trips on a
//! stalled Redis (publishes 503, open streams stay, readiness stays) and
//! after recovery every acknowledged event arrives once; the events layer
//! lets only `high` events fan out live and replays the rest when it
//! recovers; the connections breaker trips at 95 % of `max_connections`
//! and resets below its hysteresis mark, refusing EventSource-safely.

use std::time::Duration;

use anyhow::{bail, Result};
use pushgate_e2e::gateway::{config_file, publish_raw, GatewayProcess, PublishOptions};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::{holds_for, wait_until};
use reqwest::StatusCode;
use serde_json::Value;

const T: Duration = Duration::from_secs(15);

/// Publishes; `Ok(true)` when acknowledged, `Ok(false)` for a 503.
async fn publish(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    data: &str,
    q: &str,
) -> Result<bool> {
    let opts = PublishOptions {
        query: q,
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    match publish_raw(client, base, topic, data, opts).await? {
        (StatusCode::CREATED, _) => Ok(true),
        (StatusCode::SERVICE_UNAVAILABLE, _) => Ok(false),
        (s, body) => bail!("publish answered {s}: {body}"),
    }
}

/// Reads data events until `marker`; returns them.
async fn until(s: &mut SseClient, marker: &str) -> Result<Vec<String>> {
    Ok(s.until(marker, T)
        .await?
        .into_iter()
        .filter(|e| e.event_type == "message")
        .map(|e| e.data)
        .collect())
}

#[tokio::test]
async fn a_stalled_store_trips_the_storage_breaker_and_loses_nothing() -> Result<()> {
    let redis = RedisServer::start()?;
    let cfg = config_file(
        "degrade:\n  storage: auto\n  auto:\n    store_p99_trip: 300ms\n    store_p99_reset: 100ms\n    window: 1s\n    probe_interval: 100ms\n\
         redis:\n  command_timeout: 1s\ndelivery:\n  heartbeat: 200ms\n",
    )?;
    let prefix = format!("dg{:x}", rand::random::<u32>());
    let gw = GatewayProcess::start(&[
        "--store",
        &redis.url(),
        "--redis-key-prefix",
        &prefix,
        "--config",
        cfg.path().to_str().unwrap(),
    ])?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let mut acked = Vec::new();
    for i in 0..5 {
        let data = format!("a{i}");
        assert!(publish(&client, &base, "dg/t", &data, "").await?);
        acked.push(data);
    }
    let mut s =
        SseClient::connect(&client, &gw.url("/v1/stream?topic=dg/t"), Some("earliest")).await?;
    assert_eq!(until(&mut s, "a4").await?, acked);

    redis.pause();
    gw.wait_metric("pushgate_degraded{layer=\"storage\"}", 1.0)
        .await?;
    assert_eq!(
        gw.metric("pushgate_breaker_trips_total{layer=\"storage\"}")
            .await?,
        1.0
    );
    // Publishes are refused at once, never acknowledged and then lost.
    for i in 0..3 {
        assert!(
            !publish(&client, &base, "dg/t", &format!("x{i}"), "").await?,
            "a publish was acknowledged while degraded"
        );
    }
    let ready = client.get(gw.url("/readyz")).send().await?;
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "readiness stays: open streams are kept"
    );
    // The open stream stays connected (its heartbeats keep coming).
    for _ in 0..3 {
        match tokio::time::timeout(T, s.next(Duration::from_millis(700))).await {
            Ok(Err(_)) | Err(_) => {}
            Ok(Ok(None)) => bail!("the open stream was closed while degraded"),
            Ok(Ok(Some(e))) => bail!("unexpected event while degraded: {e:?}"),
        }
    }

    redis.unpause();
    gw.wait_metric("pushgate_degraded{layer=\"storage\"}", 0.0)
        .await?;
    for i in 5..10 {
        let data = format!("a{i}");
        // The first publishes after a stall may still meet a reconnecting client.
        wait_until(
            &format!("{data} to be acknowledged after recovery"),
            Duration::from_secs(5),
            || async {
                match publish(&client, &base, "dg/t", &data, "").await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("503".to_owned()),
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .await?;
        acked.push(data);
    }
    let mut seen = until(&mut s, "a9").await?;
    seen.splice(0..0, acked[..5].iter().cloned());
    assert_eq!(seen, acked, "every acknowledged event, once, in order");
    // A late subscriber replays the same history: nothing refused was stored.
    let mut late =
        SseClient::connect(&client, &gw.url("/v1/stream?topic=dg/t"), Some("earliest")).await?;
    assert_eq!(until(&mut late, "a9").await?, acked);
    Ok(())
}

/// Writes a routing table file with the given degrade switches.
fn table(path: &std::path::Path, degrade: &str) -> Result<()> {
    // Written aside and renamed in, so a reader never sees half a table.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("weight_bp: 0\nsalt: s\ndegrade:\n{degrade}"))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test]
async fn with_the_events_layer_degraded_only_high_events_fan_out_live() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tpath = dir.path().join("routing.yaml");
    table(&tpath, "  events: on\n")?;
    let gw = GatewayProcess::start(&["--routing-table-file", tpath.to_str().unwrap()])?;
    gw.wait_metric("pushgate_degraded{layer=\"events\"}", 1.0)
        .await?;
    let client = reqwest::Client::new();
    let base = gw.url("");
    let mut s = SseClient::connect(
        &client,
        &gw.url("/v1/stream?topic=dg/telemetry&topic=dg/alerts"),
        None,
    )
    .await?;
    s.await_id(T).await?;
    for i in 0..5 {
        assert!(publish(&client, &base, "dg/telemetry", &format!("n{i}"), "").await?);
    }
    assert!(publish(&client, &base, "dg/alerts", "stop", "?priority=high").await?);
    // The high event, published last, arrives first: the normal ones were held.
    assert_eq!(until(&mut s, "stop").await?, ["stop"]);
    assert!(publish(&client, &base, "dg/telemetry", "n5", "?priority=low").await?);
    assert!(publish(&client, &base, "dg/alerts", "go", "?priority=high").await?);
    assert_eq!(until(&mut s, "go").await?, ["go"]);

    // Recovery: the file flips the layer off and the held events follow, once, in order.
    table(&tpath, "  events: off\n")?;
    gw.wait_metric("pushgate_degraded{layer=\"events\"}", 0.0)
        .await?;
    let got = until(&mut s, "n5").await?;
    assert_eq!(got, ["n0", "n1", "n2", "n3", "n4", "n5"]);
    assert!(publish(&client, &base, "dg/telemetry", "n6", "").await?);
    assert_eq!(
        until(&mut s, "n6").await?,
        ["n6"],
        "live again, nothing twice"
    );
    Ok(())
}

#[tokio::test]
async fn the_connections_breaker_trips_at_95_percent_and_resets_below_85() -> Result<()> {
    let cfg = config_file(
        "degrade:\n  connections: auto\n  auto:\n    probe_interval: 50ms\n    window: 1s\nlimits:\n  max_connections: 20\ndelivery:\n  heartbeat: 100ms\n",
    )?;
    let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()])?;
    let client = reqwest::Client::new();
    let url = gw.url("/v1/stream?topic=dg/c");
    let mut streams = Vec::new();
    for _ in 0..18 {
        let mut s = SseClient::connect(&client, &url, None).await?;
        s.await_id(T).await?;
        streams.push(s);
    }
    assert_eq!(
        gw.metric("pushgate_degraded{layer=\"connections\"}")
            .await?,
        0.0,
        "18/20 is below 95 %"
    );
    let mut s = SseClient::connect(&client, &url, None).await?;
    s.await_id(T).await?;
    streams.push(s);
    gw.wait_metric("pushgate_degraded{layer=\"connections\"}", 1.0)
        .await?;
    // Refused the EventSource way: a 200 stream that says when to retry.
    match SseClient::open(&client, &url, None).await? {
        Opened::Stream(s) => assert_eq!(s.refusal(), Some("degraded")),
        Opened::Refused(status, body) => bail!("an EventSource got {status}: {body}"),
    }
    let plain = client.get(&url).header("accept", "*/*").send().await?;
    assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = plain.json().await?;
    assert_eq!(body["code"], "degraded");
    // 17 open (85 %) is still above the reset mark; 16 is below it.
    streams.truncate(17);
    // Nothing marks "did not reset": watch several probe intervals (50 ms).
    holds_for(
        "hysteresis: tripped at 17/20",
        Duration::from_millis(300),
        || async {
            let v = gw
                .metric("pushgate_degraded{layer=\"connections\"}")
                .await
                .map_err(|e| format!("{e:#}"))?;
            if v == 1.0 {
                Ok(())
            } else {
                Err(format!("degraded = {v}"))
            }
        },
    )
    .await?;
    streams.truncate(16);
    gw.wait_metric("pushgate_degraded{layer=\"connections\"}", 0.0)
        .await?;
    let mut back = SseClient::connect(&client, &url, None).await?;
    assert_eq!(back.refusal(), None);
    back.await_id(T).await?;
    assert_eq!(
        gw.metric("pushgate_breaker_trips_total{layer=\"connections\"}")
            .await?,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_subscriber_on_a_keep_latest_topic_gets_the_newest_and_a_skipped_count() -> Result<()>
{
    slow_and_fast_subscribers("keep-latest").await
}

#[tokio::test]
async fn a_slow_subscriber_on_a_drop_oldest_topic_is_told_of_every_drop() -> Result<()> {
    slow_and_fast_subscribers("drop-oldest").await
}

/// A slow and a fast subscriber of one topic under `policy`: the fast one
/// gets everything; the slow one gets events in order, ending with the
/// newest, and every event it did not get was announced as skipped.
async fn slow_and_fast_subscribers(policy: &str) -> Result<()> {
    let cfg = config_file(&format!(
        "delivery:\n  queue_size: 4\n  backpressure:\n    - pattern: \"bp/**\"\n      policy: {policy}\n"
    ))?;
    let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()])?;
    let client = reqwest::Client::new();
    let url = gw.url("/v1/stream?topic=bp/gauges");
    let mut slow = SseClient::connect(&client, &url, None).await?;
    slow.await_id(T).await?;
    let mut fast = SseClient::connect(&client, &url, None).await?;
    fast.await_id(T).await?;
    const N: usize = 300;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < N {
            match fast.next(T).await {
                Ok(Some(e)) if e.event_type == "message" => {
                    got.push(e.data[..e.data.find(' ').unwrap()].to_owned())
                }
                Ok(Some(e)) => panic!("the fast subscriber was told {}: {}", e.event_type, e.data),
                other => panic!("fast subscriber: {other:?}"),
            }
        }
        got
    });
    // Big events, so the slow subscriber's socket fills and its queue with it.
    let pad = "x".repeat(60_000);
    for i in 0..N {
        assert!(
            publish(
                &client,
                &gw.url(""),
                "bp/gauges",
                &format!("g{i} {pad}"),
                ""
            )
            .await?
        );
    }
    let all: Vec<String> = (0..N).map(|i| format!("g{i}")).collect();
    assert_eq!(reader.await?, all, "a fast subscriber gets everything");

    // The slow one reads now: events in order, gaps announced, the newest last.
    let (mut delivered, mut skipped) = (Vec::new(), 0u64);
    while delivered.last() != Some(&all[N - 1]) {
        match slow.next(T).await? {
            Some(e) if e.event_type == "message" => {
                delivered.push(e.data[..e.data.find(' ').unwrap()].to_owned())
            }
            Some(e) if e.event_type == "skipped" => {
                let v: Value = serde_json::from_str(&e.data)?;
                assert_eq!(v["topics"][0]["topic"], "bp/gauges");
                skipped += v["topics"][0]["count"].as_u64().unwrap();
            }
            other => bail!("slow subscriber: {other:?}"),
        }
    }
    assert!(
        skipped > 0,
        "the slow subscriber skipped nothing: make the events bigger"
    );
    assert_eq!(
        delivered.len() as u64 + skipped,
        N as u64,
        "every event delivered or announced"
    );
    let index = |d: &String| all.iter().position(|a| a == d).unwrap();
    assert!(
        delivered.windows(2).all(|w| index(&w[0]) < index(&w[1])),
        "in order, none twice"
    );
    assert_eq!(
        gw.metric(&format!(
            "pushgate_events_skipped_total{{policy=\"{policy}\"}}"
        ))
        .await?,
        skipped as f64
    );
    assert_eq!(
        gw.metric("pushgate_slow_consumer_disconnects_total")
            .await?,
        0.0,
        "nobody was cut"
    );
    Ok(())
}
