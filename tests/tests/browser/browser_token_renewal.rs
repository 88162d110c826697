//! The token-refresh pattern for EventSource pages, in headless Chromium: the
//! page keeps a short-lived token in a cookie it renews before expiry
//! (`tests/browser/renewal.html`). The gateway ends the stream at each
//! token's expiry; the browser's own reconnect carries the renewed cookie
//! and Last-Event-ID, so every event arrives exactly once across expiries.

use std::sync::Arc;
use std::time::Duration;

use pushgate_e2e::browser::{Browser, Reply, Site};
use pushgate_e2e::gateway::{mint_token, publish, GatewayProcess};

const PAGE: &str = include_str!("../../browser/renewal.html");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_with_a_renewed_cookie_gets_every_event_once_across_expiries() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, "renewal-test-secret-of-at-least-32-bytes").unwrap();
    // The page's own backend: a 4 s session token, as a cookie of the page's host.
    let signer = key.clone();
    let site = Site::serve_with(
        PAGE,
        Arc::new(move |path| {
            if !path.starts_with("/token") {
                return None;
            }
            let args = ["--sub", "page", "--subscribe", "renew/**", "--ttl", "4s"];
            let token = mint_token(&signer, &args).ok()?;
            Some(Reply {
                headers: vec![format!(
                    "Set-Cookie: pushgate_token={token}; Path=/; SameSite=Lax"
                )],
                body: "renewed".into(),
            })
        }),
    );
    let gw = GatewayProcess::start(&[
        "--auth-key-file",
        key.to_str().unwrap(),
        "--auth-leeway",
        "0s",
        "--auth-anonymous-publish",
        "renew/**",
        "--cors-allowed-origins",
        &site.origin(),
        "--cors-allow-credentials",
        "true",
        "--retry",
        "300ms",
        "--metrics-listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    let page = site.url(&format!(
        "renewal.html?topic=renew&renew_ms=1500&gateway={}",
        gw.url("")
    ));
    let browser = Browser::open(&page);
    browser
        .wait_for(
            "renewal.html",
            "the stream is open",
            Duration::from_secs(30),
            |s| s["opens"].as_u64() >= Some(1),
        )
        .await;
    // About 12 s of events: three 4 s tokens or more.
    let total = 100;
    let http = reqwest::Client::new();
    for i in 1..=total {
        publish(&http, &gw.url(""), "renew", &format!("e{i}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let s = browser
        .wait_for(
            "renewal.html",
            "every event, after at least two expiries",
            Duration::from_secs(60),
            |s| s["received"].as_u64() >= Some(total) && s["expired"].as_u64() >= Some(2),
        )
        .await;
    assert_eq!(s["received"], total, "exactly once: {s}");
    assert_eq!(s["in_order"], true, "{s}");
    assert_eq!(s["closed"], false, "the EventSource never gave up: {s}");
    assert!(
        s["opens"].as_u64() > Some(2),
        "it reconnected after each expiry: {s}"
    );
    let ended = gw
        .metric("pushgate_streams_ended_by_credential_total{reason=\"token_expired\"}")
        .await
        .unwrap();
    assert!(ended >= 2.0, "{ended}");
}
