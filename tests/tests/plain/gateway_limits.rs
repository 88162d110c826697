//! Limits answer clearly (413, 400, 503 + Retry-After, 429 + Retry-After, all
//! with the JSON error body; a stream refused for now is a 200 event stream
//! that says when to retry, for clients that ask for `text/event-stream`),
//! and thousands of connect/disconnect cycles leak neither connections nor
//! memory.

use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::wait_until;

async fn json_error(
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    headers
}

/// Opens `url` as an EventSource would; the stream must be a refusal for
/// `reason`: 200, a `retry:`, a comment, no `id:`, then the end.
async fn refused_for_now(c: &reqwest::Client, url: &str, cursor: Option<&str>, reason: &str) {
    let resp = c
        .get(url)
        .header("accept", "text/event-stream")
        .header("last-event-id", cursor.unwrap_or(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pushgate-refused"], reason);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .expect("the refusal ends at once")
        .unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].starts_with("retry: "), "{body:?}");
    assert!(
        lines[1].starts_with(&format!(": refused {reason}")),
        "{body:?}"
    );
    assert!(
        !body.contains("\nid:") && !body.starts_with("id:"),
        "{body:?}"
    );
    assert!(!body.contains("data:"), "{body:?}");
}

async fn refused(c: &reqwest::Client, url: &str) -> (reqwest::StatusCode, String) {
    match SseClient::open(c, url, None).await.unwrap() {
        Opened::Refused(s, b) => (s, b),
        Opened::Stream(_) => panic!("{url} should have been refused"),
    }
}

#[tokio::test]
async fn request_limits_give_clear_errors() {
    let gw = GatewayProcess::start(&["--max-body-bytes", "100", "--max-connections", "3"]).unwrap();
    let c = reqwest::Client::new();
    let resp = c
        .post(gw.url("/v1/topics/t/events"))
        .body("x".repeat(101))
        .send()
        .await
        .unwrap();
    json_error(resp, 413, "body_too_large").await;
    let resp = c
        .post(gw.url("/v1/topics/t/events"))
        .body("x".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "exactly the limit is fine");
    let resp = c
        .post(gw.url("/v1/topics/bad%20topic/events"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(resp, 400, "bad_topic").await;
    let resp = c
        .post(gw.url("/v1/topics/t/events"))
        .body(vec![0xffu8, 0xfe])
        .send()
        .await
        .unwrap();
    json_error(resp, 400, "bad_data").await;
    let resp = c
        .post(gw.url("/v1/topics/t/events?event=reset"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(resp, 400, "bad_event_type").await;
    let resp = c.get(gw.url("/nope")).send().await.unwrap();
    json_error(resp, 404, "not_found").await;
    let many: String = (0..17).map(|i| format!("topic=t{i}&")).collect();
    let (status, body) = refused(&c, &gw.url(&format!("/v1/stream?{many}"))).await;
    assert_eq!(status, 400);
    assert!(body.contains("too_many_topics"));

    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            SseClient::connect(&c, &gw.url("/v1/stream?topic=t"), None)
                .await
                .unwrap(),
        );
    }
    // Not an EventSource (no `Accept: text/event-stream`): the JSON 503.
    let resp = c.get(gw.url("/v1/stream?topic=t")).send().await.unwrap();
    let h = json_error(resp, 503, "overloaded").await;
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(h["x-pushgate-refused"], "max_connections");
    refused_for_now(&c, &gw.url("/v1/stream?topic=t"), None, "max_connections").await;
    drop(open.pop());
    // A refusal for now is a 200 stream too: only one without it counts.
    let s = wait_until(
        "a freed slot to be usable again",
        Duration::from_secs(5),
        || async {
            match SseClient::open(&c, &gw.url("/v1/stream?topic=t"), None)
                .await
                .unwrap()
            {
                Opened::Stream(s) if s.refusal().is_none() => Ok(*s),
                Opened::Stream(s) => Err(format!("refused for now: {:?}", s.refusal())),
                Opened::Refused(status, body) => Err(format!("{status}: {body}")),
            }
        },
    )
    .await
    .unwrap();
    open.push(s);
    assert!(
        gw.metric("pushgate_streams_rejected_total{reason=\"max_connections\"}")
            .await
            .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn rate_limits_answer_429_and_503() {
    let gw = GatewayProcess::start(&["--publish-rate", "5", "--accept-rate", "3"]).unwrap();
    let c = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..8 {
        let resp = c
            .post(gw.url("/v1/topics/r/events"))
            .body(i.to_string())
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 && limited.is_none() {
            limited = Some(json_error(resp, 429, "rate_limited").await);
        }
    }
    assert_eq!(&statuses[..5], [201; 5], "the burst is allowed");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    assert!(
        limited.unwrap()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    let mut outcomes = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..5 {
        match SseClient::open(&c, &gw.url("/v1/stream?topic=r"), None)
            .await
            .unwrap()
        {
            Opened::Stream(s) => match s.refusal() {
                None => {
                    keep.push(*s);
                    outcomes.push("open")
                }
                Some(reason) => {
                    assert_eq!(reason, "accept_rate");
                    outcomes.push("retry later")
                }
            },
            Opened::Refused(s, body) => panic!("{s}: {body}"),
        }
    }
    assert_eq!(&outcomes[..3], ["open"; 3]);
    assert!(outcomes[3..].contains(&"retry later"), "{outcomes:?}");
    let resp = c.get(gw.url("/v1/stream?topic=r")).send().await.unwrap();
    json_error(resp, 503, "accept_rate_limited").await;
}

#[tokio::test]
async fn a_refusal_keeps_the_clients_last_event_id_and_it_resumes_exactly() {
    let gw = GatewayProcess::start(&["--max-connections", "1"]).unwrap();
    let c = reqwest::Client::new();
    let url = gw.url("/v1/stream?topic=keep");
    let mut s = SseClient::connect(&c, &url, None).await.unwrap();
    s.await_id(Duration::from_secs(5)).await.unwrap();
    publish(&c, &gw.url(""), "keep", "k1").await.unwrap();
    assert_eq!(
        s.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "k1"
    );
    let cursor = s.last_event_id().to_owned();
    // The only slot is taken: a reconnect with the cursor is told to retry,
    // without an id that would overwrite the cursor it holds.
    publish(&c, &gw.url(""), "keep", "k2").await.unwrap();
    refused_for_now(&c, &url, Some(&cursor), "max_connections").await;
    let mut again = match SseClient::open(&c, &url, Some(&cursor)).await.unwrap() {
        Opened::Stream(r) => *r,
        Opened::Refused(st, b) => panic!("{st}: {b}"),
    };
    assert!(again.refusal().is_some());
    assert!(
        again.next(Duration::from_secs(5)).await.unwrap().is_none(),
        "it ends"
    );
    assert_eq!(again.last_event_id(), "", "the refusal sets no id");
    assert!(again.retry().is_some(), "but a retry");
    drop(s);
    // Freed: the same cursor resumes with exactly what was missed.
    let mut r = wait_until("the slot to come back", Duration::from_secs(5), || async {
        let r = SseClient::connect(&c, &url, Some(&cursor)).await.unwrap();
        r.refusal().is_none().then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(
        r.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "k2"
    );
    publish(&c, &gw.url(""), "keep", "k3").await.unwrap();
    assert_eq!(
        r.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "k3"
    );
}

#[tokio::test]
async fn connect_disconnect_cycles_leak_nothing() {
    let gw = GatewayProcess::start(&["--accept-rate", "100000"]).unwrap();
    let c = reqwest::Client::new();
    publish(&c, &gw.url(""), "cycle", "history").await.unwrap();
    let cycle = |rounds: usize| {
        let (c, url) = (
            c.clone(),
            gw.url("/v1/stream?topic=cycle&topic=cycle2&last_event_id=earliest"),
        );
        async move {
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let (c, url) = (c.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..rounds {
                        let mut s = SseClient::connect(&c, &url, None).await.unwrap();
                        assert_eq!(
                            s.next(Duration::from_secs(10)).await.unwrap().unwrap().data,
                            "history"
                        );
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    let settle = || gw.wait_metric("pushgate_connections", 0.0);
    cycle(25).await; // 500 cycles of warm-up: pools, caches, allocator arenas
    settle().await.unwrap();
    let heap_before = gw.metric("pushgate_heap_bytes").await.unwrap();
    cycle(150).await; // 3,000 cycles
    settle().await.unwrap();
    let heap_after = gw.metric("pushgate_heap_bytes").await.unwrap();
    assert!(heap_before > 0.0, "heap_bytes is reported");
    let growth = heap_after - heap_before;
    eprintln!(
        "heap before {heap_before} after {heap_after} growth {growth} bytes over 3000 cycles"
    );
    // A leak of even one small allocation per stream would show as >= 3000 × ~100 B.
    assert!(
        growth < 256.0 * 1024.0,
        "heap grew by {growth} bytes over 3000 cycles"
    );
    assert!(
        gw.metric("pushgate_streams_opened_total{protocol=\"http1\"}")
            .await
            .unwrap()
            >= 3500.0
    );
}
