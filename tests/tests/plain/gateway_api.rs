//! The HTTP API and the resume contract, against the real `pushgate` binary.

use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::wait_until;

const T: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn expect_400(gw: &GatewayProcess, path_and_query: &str, cursor: Option<&str>, code: &str) {
    let c = client();
    match SseClient::open(&c, &gw.url(path_and_query), cursor)
        .await
        .unwrap()
    {
        Opened::Refused(status, body) => {
            assert_eq!(status, 400, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], code, "{body}");
            assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()));
        }
        Opened::Stream(_) => panic!("{path_and_query} with {cursor:?} should be refused"),
    }
}

#[tokio::test]
async fn live_events_carry_the_publish_cursor_and_sse_headers() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=news"), None)
        .await
        .unwrap();
    assert_eq!(
        s.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(s.headers()["cache-control"], "no-cache");
    assert_eq!(s.headers()["x-accel-buffering"], "no");
    let p = publish(&c, &gw.url(""), "news", "line1\nline2")
        .await
        .unwrap();
    assert_eq!((p.topic.as_str(), p.seq), ("news", 1));
    let ev = s.next(T).await.unwrap().unwrap();
    assert_eq!(ev.data, "line1\nline2");
    assert_eq!(
        ev.id, p.id,
        "a publish's id is a valid cursor of the single-topic stream"
    );
    assert!(s.retry().is_some(), "retry: is sent at stream start");
    let resp = c
        .post(gw.url("/v1/topics/news/events?event=headline"))
        .body("typed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let ev = s.next(T).await.unwrap().unwrap();
    assert_eq!(
        (ev.event_type.as_str(), ev.data.as_str()),
        ("headline", "typed")
    );
}

#[tokio::test]
async fn streams_work_over_h2c() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut s = SseClient::connect(&h2, &gw.url("/v1/stream?topic=h2"), None)
        .await
        .unwrap();
    assert_eq!(s.version(), reqwest::Version::HTTP_2);
    let p = publish(&h2, &gw.url(""), "h2", "over h2c").await.unwrap();
    let ev = s.next(T).await.unwrap().unwrap();
    assert_eq!(
        (ev.data.as_str(), ev.id.as_str()),
        ("over h2c", p.id.as_str())
    );
}

#[tokio::test]
async fn multi_topic_cursor_resumes_exactly() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let base = gw.url("");
    let url = gw.url("/v1/stream?topic=a&topic=b");
    let mut s = SseClient::connect(&c, &url, None).await.unwrap();
    for (t, d) in [("a", "a1"), ("b", "b1"), ("a", "a2")] {
        publish(&c, &base, t, d).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.next(T).await.unwrap().unwrap().data);
    }
    assert_eq!(got, ["a1", "b1", "a2"]);
    let cursor = s.last_event_id().to_owned();
    drop(s);
    for (t, d) in [("b", "b2"), ("a", "a3"), ("b", "b3")] {
        publish(&c, &base, t, d).await.unwrap();
    }
    // Reordered topics in the URL: positions are matched by topic, not order.
    let url2 = gw.url("/v1/stream?topic=b&topic=a");
    let mut s = SseClient::connect(&c, &url2, Some(&cursor)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.next(T).await.unwrap().unwrap().data);
    }
    got.sort();
    assert_eq!(got, ["a3", "b2", "b3"]);
    publish(&c, &base, "a", "a4").await.unwrap();
    assert_eq!(
        s.next(T).await.unwrap().unwrap().data,
        "a4",
        "live after replay"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next(T))
            .await
            .is_err(),
        "nothing more: no duplicates at the seam"
    );
}

#[tokio::test]
async fn earliest_query_alias_and_header_precedence() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let base = gw.url("");
    let p1 = publish(&c, &base, "h", "1").await.unwrap();
    publish(&c, &base, "h", "2").await.unwrap();
    let mut s = SseClient::connect(
        &c,
        &gw.url("/v1/stream?topic=h&last_event_id=earliest"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "1");
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "2");
    let alias = format!("/v1/stream?topic=h&lastEventId={}", p1.id);
    let mut s = SseClient::connect(&c, &gw.url(&alias), None).await.unwrap();
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "2");
    // Header (earliest) wins over the query (after 1).
    let mut s = SseClient::connect(&c, &gw.url(&alias), Some("earliest"))
        .await
        .unwrap();
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "1");
}

#[tokio::test]
async fn trimmed_history_is_announced_with_reset() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "retention:\n  max_events: 3\n  trim_interval: 100ms\n",
    )
    .unwrap();
    let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()]).unwrap();
    let c = client();
    let base = gw.url("");
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(publish(&c, &base, "trim", &i.to_string()).await.unwrap().id);
    }
    // Trimming runs in the background; wait (bounded) until it has.
    wait_until(
        "retention to trim to 3 events",
        Duration::from_secs(10),
        || async {
            let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=trim"), Some("earliest"))
                .await
                .unwrap();
            let ev = s.next(T).await.unwrap().unwrap();
            if ev.data == "8" {
                Ok(())
            } else {
                Err(format!("first event {}", ev.data))
            }
        },
    )
    .await
    .unwrap();
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=trim"), Some(&ids[1]))
        .await
        .unwrap();
    let reset = s.next(T).await.unwrap().unwrap();
    assert_eq!(reset.event_type, "reset");
    let v: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"topics": [{"topic": "trim", "reason": "trimmed", "missed_from": 3, "missed_to": 7}]})
    );
    for want in ["8", "9", "10"] {
        assert_eq!(s.next(T).await.unwrap().unwrap().data, want);
    }
    assert!(
        gw.metric("pushgate_resume_total{outcome=\"reset\"}")
            .await
            .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn wiped_topic_is_announced_as_epoch_change() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let base = gw.url("");
    let old = publish(&c, &base, "w", "old").await.unwrap();
    let resp = c.delete(gw.url("/v1/topics/w")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    publish(&c, &base, "w", "new").await.unwrap();
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=w"), Some(&old.id))
        .await
        .unwrap();
    let reset = s.next(T).await.unwrap().unwrap();
    assert_eq!(reset.event_type, "reset");
    assert!(
        reset.data.contains("\"reason\":\"epoch_changed\""),
        "{}",
        reset.data
    );
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "new");

    // A live stream sees the wipe as well.
    let mut live = SseClient::connect(&c, &gw.url("/v1/stream?topic=w"), None)
        .await
        .unwrap();
    c.delete(gw.url("/v1/topics/w")).send().await.unwrap();
    publish(&c, &base, "w", "after-live-wipe").await.unwrap();
    let ev = live.next(T).await.unwrap().unwrap();
    assert_eq!(ev.event_type, "reset");
    assert_eq!(live.next(T).await.unwrap().unwrap().data, "after-live-wipe");
}

#[tokio::test]
async fn malformed_forged_and_future_cursors_are_rejected() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let p = publish(&c, &gw.url(""), "cur", "x").await.unwrap();
    let url = "/v1/stream?topic=cur";
    expect_400(&gw, url, Some("not a cursor"), "bad_cursor").await;
    let mut forged: Vec<char> = p.id.chars().collect();
    let last = forged.len() - 6;
    forged[last] = if forged[last] == 'x' { 'y' } else { 'x' };
    let forged: String = forged.into_iter().collect();
    expect_400(&gw, url, Some(&forged), "bad_cursor").await;
    expect_400(
        &gw,
        &format!("{url}&last_event_id=%00%0A"),
        None,
        "bad_cursor",
    )
    .await;
    // A well-formed cursor pointing past the newest event.
    let epoch_of = pushgate::core::cursor::Cursor::decode(&p.id)
        .unwrap()
        .positions[0]
        .at
        .epoch
        .unwrap();
    let topic = pushgate::core::topic::Topic::parse("cur").unwrap();
    let ahead = pushgate::core::cursor::Cursor::single(
        &topic,
        epoch_of,
        pushgate::core::position::Seq::new(99),
        0,
    )
    .encode();
    expect_400(&gw, url, Some(&ahead), "cursor_ahead").await;
    expect_400(&gw, "/v1/stream", None, "missing_topic").await;
}

#[tokio::test]
async fn idempotency_key_makes_a_retry_a_no_op() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let send = || {
        c.post(gw.url("/v1/topics/idem/events"))
            .header("idempotency-key", "order-17")
            .body("once")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(first, again, "the retry returns the first result");
    publish(&c, &gw.url(""), "idem", "next").await.unwrap();
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=idem"), Some("earliest"))
        .await
        .unwrap();
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "once");
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "next");
    // One rule for the header and the batch field: visible ASCII, 1..=200.
    for bad in ["with space", "", &"k".repeat(201)] {
        let header = c
            .post(gw.url("/v1/topics/idem/events"))
            .header("idempotency-key", bad)
            .body("x")
            .send()
            .await
            .unwrap();
        let batch = c
            .post(gw.url("/v1/publish"))
            .json(&serde_json::json!([{"topic": "idem", "data": "x", "idempotency_key": bad}]))
            .send()
            .await
            .unwrap();
        for resp in [header, batch] {
            assert_eq!(resp.status(), 400, "key {bad:?}");
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(v["code"], "bad_idempotency_key");
        }
    }
}

#[tokio::test]
async fn batch_publish_is_atomic_and_ordered() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = client();
    let ok = serde_json::json!([
        {"topic": "x", "data": "x1"},
        {"topic": "y", "data": {"n": 1}, "event": "json"},
        {"topic": "x", "data": "x2"}
    ]);
    let resp = c
        .post(gw.url("/v1/publish"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let acks: Vec<serde_json::Value> = resp.json().await.unwrap();
    let seqs: Vec<(String, u64)> = acks
        .iter()
        .map(|a| {
            (
                a["topic"].as_str().unwrap().to_owned(),
                a["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seqs, [("x".into(), 1), ("y".into(), 1), ("x".into(), 2)]);
    let bad =
        serde_json::json!([{"topic": "x", "data": "x3"}, {"topic": "bad topic", "data": "z"}]);
    let resp = c
        .post(gw.url("/v1/publish"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=x&topic=y"), Some("earliest"))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.next(T).await.unwrap().unwrap().data);
    }
    got.sort();
    assert_eq!(got, ["x1", "x2", "{\"n\":1}"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next(T))
            .await
            .is_err(),
        "the refused batch stored nothing"
    );
}
