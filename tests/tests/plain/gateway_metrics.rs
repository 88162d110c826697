//! Every documented metric moves when it should, read from `/metrics` of
//! the real binary before and after the action.

use std::time::Duration;

use pushgate_e2e::gateway::{metric_value, publish, GatewayProcess};
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::wait::wait_until;

const T: Duration = Duration::from_secs(10);
const H1_OPEN: &str = "pushgate_streams{protocol=\"http1\"}";
const H1_DELIVERED: &str = "pushgate_events_delivered_total{protocol=\"http1\"}";

struct Delta {
    before: String,
}

impl Delta {
    async fn take(gw: &GatewayProcess) -> Delta {
        Delta {
            before: gw.metrics().await.unwrap(),
        }
    }
    async fn of(&self, gw: &GatewayProcess, name: &str) -> f64 {
        metric_value(&gw.metrics().await.unwrap(), name) - metric_value(&self.before, name)
    }
}

#[tokio::test]
async fn stream_publish_and_resume_metrics_move() {
    let gw = GatewayProcess::start(&["--metrics-listen", "127.0.0.1:0"]).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");

    let d = Delta::take(&gw).await;
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=m"), None)
        .await
        .unwrap();
    gw.wait_metric("pushgate_connections", 1.0).await.unwrap();
    assert_eq!(gw.metric(H1_OPEN).await.unwrap(), 1.0);
    assert_eq!(
        d.of(&gw, "pushgate_streams_opened_total{protocol=\"http1\"}")
            .await,
        1.0
    );

    let d = Delta::take(&gw).await;
    let p = publish(&c, &base, "m", "one").await.unwrap();
    s.next(T).await.unwrap().unwrap();
    assert_eq!(d.of(&gw, "pushgate_events_published_total").await, 1.0);
    assert_eq!(
        d.of(&gw, "pushgate_publish_duration_seconds_count").await,
        1.0
    );
    assert!(d.of(&gw, "pushgate_publish_duration_seconds_sum").await > 0.0);
    assert_eq!(d.of(&gw, H1_DELIVERED).await, 1.0);
    assert_eq!(d.of(&gw, "pushgate_events_replayed_total").await, 0.0);
    drop(s);
    gw.wait_metric("pushgate_connections", 0.0).await.unwrap();
    assert_eq!(gw.metric(H1_OPEN).await.unwrap(), 0.0);

    publish(&c, &base, "m", "two").await.unwrap();
    let d = Delta::take(&gw).await;
    let mut r = SseClient::connect(&c, &gw.url("/v1/stream?topic=m"), Some(&p.id))
        .await
        .unwrap();
    assert_eq!(r.next(T).await.unwrap().unwrap().data, "two");
    assert_eq!(
        d.of(&gw, "pushgate_resume_total{outcome=\"exact\"}").await,
        1.0
    );
    assert_eq!(d.of(&gw, "pushgate_reconnect_gap_seconds_count").await, 1.0);
    assert_eq!(d.of(&gw, "pushgate_events_replayed_total").await, 1.0);
    assert_eq!(d.of(&gw, H1_DELIVERED).await, 1.0);

    drop(r);
    c.delete(gw.url("/v1/topics/m")).send().await.unwrap();
    let d = Delta::take(&gw).await;
    let mut r = SseClient::connect(&c, &gw.url("/v1/stream?topic=m"), Some(&p.id))
        .await
        .unwrap();
    assert_eq!(r.next(T).await.unwrap().unwrap().event_type, "reset");
    assert_eq!(
        d.of(&gw, "pushgate_resume_total{outcome=\"reset\"}").await,
        1.0
    );

    // Runtime and heap gauges are live samples.
    drop(r);
    gw.wait_metric("pushgate_connections", 0.0).await.unwrap();
    let lags = std::cell::RefCell::new(Vec::new());
    let _ = wait_until(
        "the lag probe to sample again",
        Duration::from_secs(6),
        || async {
            let lag = gw.metric("pushgate_event_loop_lag_seconds").await.unwrap();
            let mut lags = lags.borrow_mut();
            lags.push(lag);
            lags.iter().any(|l| *l != lags[0])
        },
    )
    .await;
    let lags = lags.into_inner();
    assert!(lags.iter().all(|l| (0.0..1.0).contains(l)), "{lags:?}");
    assert!(
        lags.iter().any(|l| *l != lags[0]),
        "the lag probe keeps sampling: {lags:?}"
    );
    let heap1 = gw.metric("pushgate_heap_bytes").await.unwrap();
    let mut many = Vec::new();
    for i in 0..200 {
        many.push(
            SseClient::connect(&c, &gw.url(&format!("/v1/stream?topic=h{i}")), None)
                .await
                .unwrap(),
        );
    }
    let heap2 = gw.metric("pushgate_heap_bytes").await.unwrap();
    assert!(
        heap2 > heap1,
        "200 more streams use more heap ({heap1} -> {heap2})"
    );

    // The separate metrics port serves the same registry and health.
    let ops = format!("http://{}", gw.metrics_addr.expect("metrics port"));
    let text = c
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric_value(&text, "pushgate_connections"), 200.0);
    assert_eq!(
        c.get(format!("{ops}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{ops}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn store_errors_are_counted_and_answered_with_503() {
    let gw = GatewayProcess::start(&[]).unwrap();
    let c = reqwest::Client::new();
    publish(&c, &gw.url(""), "s", "before").await.unwrap();
    // Another process holding SQLite's write lock: the gateway's group commit
    // times out, a real store failure.
    let db = rusqlite::Connection::open(gw.data_dir().join("pushgate.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let d = Delta::take(&gw).await;
    let resp = c
        .post(gw.url("/v1/topics/s/events"))
        .body("during")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "store_unavailable");
    assert!(d.of(&gw, "pushgate_store_errors_total").await >= 1.0);
    db.execute_batch("ROLLBACK").unwrap();
    publish(&c, &gw.url(""), "s", "after").await.unwrap();
    let mut s = SseClient::connect(&c, &gw.url("/v1/stream?topic=s"), Some("earliest"))
        .await
        .unwrap();
    assert_eq!(s.next(T).await.unwrap().unwrap().data, "before");
    assert_eq!(
        s.next(T).await.unwrap().unwrap().data,
        "after",
        "the refused publish was not stored"
    );
}
