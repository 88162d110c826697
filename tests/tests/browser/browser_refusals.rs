//! Refusals a browser survives. A real `EventSource` in headless Chromium
//! gives up for good on any non-200 answer, so a gateway that turns streams
//! away (accept rate, drain, the connections degrade switch, a client over its
//! stream limit) must do it with a 200 event stream that only
//! says "retry in N ms". The page (`tests/browser/sources.html`) opens plain
//! EventSources with no reopening of its own, from another origin than the
//! gateway's, and reports what each one received.

use std::time::Duration;

use pushgate_e2e::browser::{Browser, Site};
use pushgate_e2e::gateway::{publish, GatewayProcess, OPENED_HTTP1};
use pushgate_e2e::pki::TestCa;

const PAGE: &str = include_str!("../../browser/sources.html");
const T: Duration = Duration::from_secs(60);

/// One source's report: [received, in order, opens, errors, closed for good].
fn sources(s: &serde_json::Value) -> Vec<[u64; 5]> {
    s.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let v: Vec<u64> = r
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap())
                        .collect();
                    [v[0], v[1], v[2], v[3], v[4]]
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_event_sources_over_an_accept_rate_of_five_all_get_every_event_once() {
    // Thirty streams from one page need HTTP/2: over HTTP/1.1 a browser
    // opens at most six connections to one origin. So: HTTPS with ALPN h2.
    let site = Site::serve(PAGE);
    let ca = TestCa::new().unwrap();
    let leaf = ca.leaf("gateway").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write_to(dir.path()).unwrap();
    let g = GatewayProcess::start(&[
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--accept-rate",
        "5",
        "--retry",
        "500ms",
        "--metrics-listen",
        "127.0.0.1:0",
        "--cors-allowed-origins",
        &site.origin(),
    ])
    .unwrap();
    let base = format!("https://localhost:{}", g.addr.port());
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", g.addr)
        .build()
        .unwrap();
    let page = site.url(&format!(
        "sources.html?sources=30&topic=rate&gateway={base}"
    ));
    let browser = Browser::open_with(&page, &["--ignore-certificate-errors"]);
    // 50 events while the sources connect, five of them per second.
    for i in 1..=50 {
        publish(&http, &base, "rate", &format!("e{i}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    browser
        .wait_for("sources.html", "every source has 50 events", T, |s| {
            let v = sources(s);
            v.len() == 30 && v.iter().all(|r| r[0] >= 50)
        })
        .await;
    // A later marker, e51: a late duplicate would arrive before it.
    publish(&http, &base, "rate", "e51").await.unwrap();
    let s = browser
        .wait_for("sources.html", "every source has the marker", T, |s| {
            let v = sources(s);
            v.len() == 30 && v.iter().all(|r| r[0] >= 51)
        })
        .await;
    let v = sources(&s);
    let metrics = reqwest::get(format!("http://{}/metrics", g.metrics_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = pushgate_e2e::gateway::metric_value(
        &metrics,
        "pushgate_streams_rejected_total{reason=\"accept_rate\"}",
    );
    let retried = v.iter().filter(|r| r[2] > 1).count();
    eprintln!("30 sources: {refused} accept-rate refusals, {retried} sources retried: {v:?}");
    assert!(refused >= 25.0, "only 5 fit in the first second: {refused}");
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r[0], 51, "source {i}: every event exactly once ({r:?})");
        assert_eq!(r[1], 1, "source {i}: e1..e51 in order ({r:?})");
        assert_eq!(r[4], 0, "source {i}: the browser never gave up ({r:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sources_that_reconnect_into_a_draining_gateway_are_served_then_resume_on_the_restarted_one(
) {
    let site = Site::serve(PAGE);
    let addr = GatewayProcess::free_addr().unwrap();
    let cors = site.origin();
    let args = [
        "--drain-window",
        "10s",
        "--retry",
        "300ms",
        "--cors-allowed-origins",
        &cors,
    ];
    let mut g = GatewayProcess::start_on("draining", addr, &args).unwrap();
    let base = g.url("");
    // Five sources: within HTTP/1.1's six connections per origin.
    let page = site.url(&format!(
        "sources.html?sources=5&topic=drain&gateway={base}"
    ));
    let browser = Browser::open(&page);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for i in 1..=5 {
        publish(&http, &base, "drain", &format!("e{i}"))
            .await
            .unwrap();
    }
    browser
        .wait_for("sources.html", "5 events everywhere", T, |s| {
            let v = sources(s);
            v.len() == 5 && v.iter().all(|r| r[0] == 5)
        })
        .await;
    // SIGTERM: each stream is closed at a random moment of the 10 s window
    // with a `retry:`, and reconnects (after ~300 ms) into the gateway that
    // is still draining, the only one there: it is served there.
    g.sigterm();
    browser
        .wait_for(
            "sources.html",
            "two sources back in the draining gateway",
            T,
            |s| sources(s).iter().filter(|r| r[2] >= 2).count() >= 2,
        )
        .await;
    publish(&http, &base, "drain", "e6").await.unwrap();
    let s = browser
        .wait_for("sources.html", "e6 from the draining gateway", T, |s| {
            let v = sources(s);
            v.len() == 5 && v.iter().all(|r| r[0] >= 6)
        })
        .await;
    // Only the draining gateway runs until the restart below.
    assert!(
        g.is_running(),
        "the draining gateway left before its window ended"
    );
    let during = sources(&s);
    eprintln!("during the drain: {during:?}");
    g.wait_exit(Duration::from_secs(20)).unwrap();
    g.restart().unwrap();
    for i in 7..=10 {
        publish(&http, &base, "drain", &format!("e{i}"))
            .await
            .unwrap();
    }
    browser
        .wait_for("sources.html", "10 events everywhere", T, |s| {
            let v = sources(s);
            v.len() == 5 && v.iter().all(|r| r[0] >= 10)
        })
        .await;
    // A later marker, e11: a late duplicate would arrive before it.
    publish(&http, &base, "drain", "e11").await.unwrap();
    let s = browser
        .wait_for("sources.html", "the marker everywhere", T, |s| {
            let v = sources(s);
            v.len() == 5 && v.iter().all(|r| r[0] >= 11)
        })
        .await;
    let v = sources(&s);
    eprintln!("after drain and restart: {v:?}");
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r[0], 11, "source {i}: every event exactly once ({r:?})");
        assert_eq!(r[1], 1, "source {i}: in order ({r:?})");
        assert_eq!(r[4], 0, "source {i}: the browser never gave up ({r:?})");
    }
    // A source that reconnected into the draining gateway opened three
    // times: first, into the drain, into the restarted gateway.
    assert!(
        v.iter().filter(|r| r[2] >= 3).count() >= 2,
        "fewer than two sources were served while draining: {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sources_refused_by_the_connections_switch_get_in_once_it_flips_back() {
    let site = Site::serve(PAGE);
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("routing.yaml");
    let write_table = |switch: &str| {
        let tmp = table.with_extension("tmp");
        let text = format!("weight_bp: 0\nsalt: s\ndegrade:\n  connections: {switch}\n");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &table).unwrap();
    };
    write_table("on");
    let cors = site.origin();
    let g = GatewayProcess::start(&[
        "--routing-table-file",
        table.to_str().unwrap(),
        "--retry",
        "300ms",
        "--cors-allowed-origins",
        &cors,
    ])
    .unwrap();
    g.wait_metric("pushgate_degraded{layer=\"connections\"}", 1.0)
        .await
        .unwrap();
    let base = g.url("");
    let page = site.url(&format!(
        "sources.html?sources=5&topic=switch&gateway={base}"
    ));
    let browser = Browser::open(&page);
    // Every source is refused (a 200 that only says when to retry), and retries.
    browser
        .wait_for(
            "sources.html",
            "every source refused and retrying",
            T,
            |s| {
                let v = sources(s);
                v.len() == 5 && v.iter().all(|r| r[2] >= 2)
            },
        )
        .await;
    assert_eq!(g.metric("pushgate_connections").await.unwrap(), 0.0);
    let opened = g.metric(OPENED_HTTP1).await.unwrap();
    write_table("off");
    g.wait_metric(OPENED_HTTP1, opened + 5.0).await.unwrap();
    let http = reqwest::Client::new();
    for i in 1..=5 {
        publish(&http, &base, "switch", &format!("e{i}"))
            .await
            .unwrap();
    }
    let s = browser
        .wait_for("sources.html", "5 events everywhere", T, |s| {
            let v = sources(s);
            v.len() == 5 && v.iter().all(|r| r[0] >= 5)
        })
        .await;
    let v = sources(&s);
    let refused = g
        .metric("pushgate_streams_rejected_total{reason=\"degraded\"}")
        .await
        .unwrap();
    eprintln!("connections switch: {refused} refusals: {v:?}");
    assert!(
        refused >= 10.0,
        "each source was refused at least twice: {refused}"
    );
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r[0], 5, "source {i}: every event exactly once ({r:?})");
        assert_eq!(r[1], 1, "source {i}: in order ({r:?})");
        assert_eq!(r[4], 0, "source {i}: the browser never gave up ({r:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sources_over_their_address_limit_keep_retrying_and_never_give_up() {
    let site = Site::serve(PAGE);
    let g = GatewayProcess::start(&[
        "--max-streams-per-address",
        "2",
        "--retry",
        "300ms",
        "--cors-allowed-origins",
        &site.origin(),
    ])
    .unwrap();
    let base = g.url("");
    let page = site.url(&format!(
        "sources.html?sources=5&topic=per-client&gateway={base}"
    ));
    let browser = Browser::open(&page);
    g.wait_metric(OPENED_HTTP1, 2.0).await.unwrap();
    // Three of the five are refused (a 200 that says when to retry) again
    // and again while the first two hold the address's slots.
    let s = browser
        .wait_for(
            "sources.html",
            "three sources refused and retrying",
            T,
            |s| {
                let v = sources(s);
                v.len() == 5 && v.iter().filter(|r| r[2] >= 3).count() >= 3
            },
        )
        .await;
    let refused = g
        .metric("pushgate_streams_rejected_total{reason=\"address_streams\"}")
        .await
        .unwrap();
    assert_eq!(g.metric("pushgate_connections").await.unwrap(), 2.0);
    assert_eq!(g.metric(OPENED_HTTP1).await.unwrap(), 2.0);
    assert!(
        refused >= 6.0,
        "each of three refused at least twice: {refused}"
    );
    let v = sources(&s);
    eprintln!("address limit: {refused} refusals: {v:?}");
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r[4], 0, "source {i}: the browser never gave up ({r:?})");
    }
}
