//! Crashes and rolling restarts of the real binary lose and duplicate nothing.

use std::time::Duration;

use pushgate_e2e::gateway::{wait_draining, GatewayProcess, OPENED_HTTP1};
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::subscriber::{
    assert_exactly_once, follow, publish_in_background, publish_reliably,
};

#[tokio::test]
async fn kill_9_loses_no_acknowledged_event() {
    let mut gw = GatewayProcess::start(&[]).unwrap();
    let c = reqwest::Client::new();
    let bases = vec![gw.url("")];
    let n = 400;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, bases) = (c.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                let key = format!("k{i}");
                publish_reliably(
                    &c,
                    &bases,
                    "durable",
                    &format!("e{i:04}"),
                    &key,
                    Duration::from_secs(20),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    gw.kill9();
    gw.restart().unwrap();
    let seen = follow(
        c,
        vec![gw.url("")],
        "/v1/stream?topic=durable".into(),
        Some("earliest".into()),
        n,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut got: Vec<String> = seen.events.iter().map(|e| e.data.clone()).collect();
    got.sort();
    let want: Vec<String> = (0..n).map(|i| format!("e{i:04}")).collect();
    assert_eq!(got, want, "every acknowledged event, exactly once");
}

#[tokio::test]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let mut gw = GatewayProcess::start(&["--drain-window", "3s", "--retry", "200ms"]).unwrap();
    let c = reqwest::Client::new();
    let base = gw.url("");
    let n = 300;
    let subscribers = 20;
    let mut subs = Vec::new();
    for i in 0..subscribers {
        // Half on one topic, half on a multi-topic stream.
        let q = if i % 2 == 0 {
            "/v1/stream?topic=roll"
        } else {
            "/v1/stream?topic=roll&topic=other"
        };
        subs.push(tokio::spawn(follow(
            c.clone(),
            vec![base.clone()],
            q.into(),
            None,
            n,
            Duration::from_secs(60),
        )));
    }
    // Let every subscriber attach before the first publish.
    gw.wait_metric(OPENED_HTTP1, subscribers as f64)
        .await
        .unwrap();
    // The restart comes in the middle of the publishing, which outlasts the
    // drain window: every subscriber needs the restarted gateway.
    let publisher = publish_in_background(
        &c,
        vec![base.clone()],
        "roll",
        ("r", n, Duration::from_millis(20)),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    gw.sigterm();
    // While draining: not ready, but a new stream is served until the window ends.
    wait_draining(&c, &base, Duration::from_secs(10))
        .await
        .unwrap();
    // A fresh connection (a client pool of its own) came here although the
    // gateway is unready: nothing else would take it.
    let fresh = reqwest::Client::new();
    let mut late = match SseClient::open(&fresh, &gw.url("/v1/stream?topic=late"), None).await {
        Ok(Opened::Stream(s)) => s,
        Ok(Opened::Refused(status, body)) => panic!("{status}: {body}"),
        Err(e) => panic!("the draining gateway is gone before its window ended: {e:#}"),
    };
    assert_eq!(late.refusal(), None, "a draining gateway refused a stream");
    late.await_id(Duration::from_secs(5)).await.unwrap();
    publish_reliably(
        &fresh,
        std::slice::from_ref(&base),
        "late",
        "served",
        "late-1",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        late.next(Duration::from_secs(5))
            .await
            .unwrap()
            .map(|e| e.data),
        Some("served".to_owned()),
        "a stream opened during the drain gets what is published"
    );
    // It ends when the window does, with the rest.
    assert!(late.next(Duration::from_secs(10)).await.unwrap().is_none());
    let status = gw.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "drained gateway exits cleanly: {status}");
    gw.restart().unwrap();
    publisher.await.unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("r{i:04}")).collect();
    let mut reconnected = 0;
    for s in subs {
        let seen = s.await.unwrap().unwrap();
        assert_exactly_once(&seen.events, &want);
        assert!(seen.resets.is_empty(), "no history was cut");
        if seen.connections > 1 {
            reconnected += 1;
        }
    }
    assert_eq!(
        reconnected, subscribers,
        "every subscriber went through the restart"
    );
}
