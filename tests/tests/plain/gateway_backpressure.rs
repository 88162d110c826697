//! A subscriber that stops reading is disconnected once its queue is full;
//! the others are unaffected, and it loses nothing when it resumes.

use std::time::Duration;

use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::sse_client::SseClient;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn slow_consumer_is_disconnected_and_resumes_without_loss() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "delivery:\n  queue_size: 8\n  slow_consumer_grace: 500ms\nlimits:\n  publish_rate: 100000\n",
    )
    .unwrap();
    let gw = GatewayProcess::start(&["--config", cfg.path().to_str().unwrap()]).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    let max_events = 1500;
    let mut fast_stream = SseClient::connect(&c, &gw.url("/v1/stream?topic=firehose"), None)
        .await
        .unwrap();
    let fast = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(ev) = fast_stream.next(Duration::from_secs(60)).await.unwrap() {
            if ev.data == "END" {
                return got;
            }
            got.push(ev.data[..5].to_owned());
        }
        panic!(
            "the fast subscriber's stream ended after {} events",
            got.len()
        );
    });
    let mut slow = SseClient::connect(&c, &gw.url("/v1/stream?topic=firehose"), None)
        .await
        .unwrap();
    gw.wait_metric("pushgate_connections", 2.0).await.unwrap();
    let payload = "x".repeat(32 * 1024);
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(
            publish(&c, &base, "firehose", &format!("{i:05}{payload}"))
                .await
                .unwrap(),
        );
    }
    for i in 0..3 {
        let ev = slow.next(T).await.unwrap().unwrap();
        assert!(ev.data.starts_with(&format!("{i:05}")));
    }
    // Now the slow one stops reading; keep publishing until the gateway gives up on it.
    let mut max_lag = 0.0f64;
    let mut kicked = false;
    for i in 3..max_events {
        published.push(
            publish(&c, &base, "firehose", &format!("{i:05}{payload}"))
                .await
                .unwrap(),
        );
        if i % 25 == 0 {
            max_lag = max_lag.max(gw.metric("pushgate_subscriber_lag_events").await.unwrap());
            if gw
                .metric("pushgate_slow_consumer_disconnects_total")
                .await
                .unwrap()
                >= 1.0
            {
                kicked = true;
                break;
            }
        }
    }
    assert!(kicked, "a reader that stopped was never disconnected");
    assert!(
        max_lag > 0.0,
        "queued-but-unwritten events showed in subscriber_lag_events"
    );
    let n = published.len();
    // The others are unaffected: the fast subscriber got every event on its first connection.
    let want: Vec<String> = (0..n).map(|i| format!("{i:05}")).collect();
    publish(&c, &base, "firehose", "END").await.unwrap();
    let fast_got = tokio::time::timeout(Duration::from_secs(60), fast)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fast_got, want,
        "the fast subscriber got everything on one connection"
    );

    // The slow one now reads what was buffered, then sees its stream end.
    let mut got = 3;
    while let Some(ev) = slow.next(Duration::from_secs(20)).await.unwrap() {
        assert!(ev.data.starts_with(&want[got]), "in order, no gaps");
        got += 1;
    }
    assert!(got < n, "it was cut off before the end");
    let cursor = slow.last_event_id().to_owned();
    let mut resumed = SseClient::connect(&c, &gw.url("/v1/stream?topic=firehose"), Some(&cursor))
        .await
        .unwrap();
    for w in want[got..].iter().chain([&"END".to_owned()]) {
        let ev = resumed.next(T).await.unwrap().unwrap();
        assert!(
            ev.data.starts_with(w.as_str()),
            "resume delivers exactly the missed events"
        );
    }
    // Nothing after END: the next thing on the stream is a later marker.
    publish(&c, &base, "firehose", "MARK").await.unwrap();
    assert_eq!(resumed.next(T).await.unwrap().unwrap().data, "MARK");
    drop(resumed);
    drop(slow);
    gw.wait_metric("pushgate_subscriber_lag_events", 0.0)
        .await
        .unwrap();
}
