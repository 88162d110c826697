//! Limits answer clearly (413, 400, 503 + Retry-After, 429 + Retry-After, all
//! with the JSON error body), and thousands of connect/disconnect cycles leak
//! neither connections nor memory.

use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::sse_client::{Opened, SseClient};

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
    let resp = c.get(gw.url("/v1/stream?topic=t")).send().await.unwrap();
    let h = json_error(resp, 503, "overloaded").await;
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    drop(open.pop());
    let mut reopened = false;
    for _ in 0..100 {
        if let Opened::Stream(s) = SseClient::open(&c, &gw.url("/v1/stream?topic=t"), None)
            .await
            .unwrap()
        {
            open.push(*s);
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reopened, "a freed slot is usable again");
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
            Opened::Stream(s) => {
                keep.push(*s);
                outcomes.push(200)
            }
            Opened::Refused(s, body) => {
                assert!(body.contains("accept_rate_limited"), "{body}");
                outcomes.push(s.as_u16())
            }
        }
    }
    assert_eq!(&outcomes[..3], [200; 3]);
    assert!(outcomes[3..].contains(&503), "{outcomes:?}");
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
    let settle = || async {
        for _ in 0..300 {
            if gw.metric("pushgate_connections").await.unwrap() == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connections gauge did not return to 0");
    };
    cycle(25).await; // 500 cycles of warm-up: pools, caches, allocator arenas
    settle().await;
    let heap_before = gw.metric("pushgate_heap_bytes").await.unwrap();
    cycle(150).await; // 3,000 cycles
    settle().await;
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
    assert!(gw.metric("pushgate_streams_opened_total").await.unwrap() >= 3500.0);
}
