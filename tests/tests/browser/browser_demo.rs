//! A real browser: headless Chromium opens the example page
//! (`examples/web/index.html`, served by `pushgate --demo-page true` at
//! `/demo/`), shows events published meanwhile, reconnects by itself when the
//! gateway restarts on the same port and data directory, and ends with every
//! event exactly once. The page's state is read back from its title through
//! the DevTools HTTP endpoint (`/json/list`).

use pushgate_e2e::browser::{base_flags, chromium, Browser};
use pushgate_e2e::gateway::{publish, GatewayProcess};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The page's report: its title, a JSON summary (`?report`).
const PAGE: &str = "/demo/";

fn data(s: &serde_json::Value) -> Vec<String> {
    s["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn browser_page_reconnects_after_restart_and_shows_every_event_once() {
    let mut g = GatewayProcess::start(&["--demo-page", "true", "--retry", "300ms"]).unwrap();
    let base = g.url("");
    let page = reqwest::get(g.url("/demo/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("new EventSource("));

    let browser = Browser::open(&g.url("/demo/?topic=browser/test&report=1"));
    browser
        .wait_for(PAGE, "the EventSource is open", T, |s| s["state"] == "open")
        .await;
    let http = reqwest::Client::new();
    let mut want = Vec::new();
    for i in 1..=5 {
        let d = format!("event-{i}");
        publish(&http, &base, "browser/test", &d).await.unwrap();
        want.push(d);
    }
    let s = browser
        .wait_for(PAGE, "5 live events", T, |s| data(s).len() >= 5)
        .await;
    assert_eq!(data(&s), want);
    assert_eq!(s["opens"], 1);

    // Restart: same port, same data directory. The page is not told anything.
    g.restart().unwrap();
    // A fresh client: the pooled connection died with the old process.
    let http = reqwest::Client::new();
    for i in 6..=10 {
        let d = format!("event-{i}");
        publish(&http, &base, "browser/test", &d).await.unwrap();
        want.push(d);
    }
    let s = browser
        .wait_for(PAGE, "10 events after the restart", T, |s| {
            data(s).len() >= 10
        })
        .await;
    assert!(
        s["opens"].as_u64().unwrap_or(0) >= 2,
        "the page did not reconnect: {s}"
    );
    // Live again after the resume, then nothing twice.
    publish(&http, &base, "browser/test", "event-11")
        .await
        .unwrap();
    want.push("event-11".into());
    browser
        .wait_for(PAGE, "the live event after the resume", T, |s| {
            data(s).len() >= 11
        })
        .await;
    // A later marker: a late duplicate would arrive before it.
    publish(&http, &base, "browser/test", "event-12")
        .await
        .unwrap();
    want.push("event-12".into());
    let s = browser
        .wait_for(PAGE, "the marker", T, |s| {
            data(s).last().map(String::as_str) == Some("event-12")
        })
        .await;
    assert_eq!(data(&s), want, "not every event exactly once: {s}");
    assert_eq!(s["state"], "open");
}

#[test]
fn screenshot_of_the_example_page() {
    // What a user sees: history replayed from `earliest` plus live counters.
    let g = GatewayProcess::start(&["--demo-page", "true"]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        for d in [
            "door/front opened",
            "temperature 21.5 °C",
            "door/front closed",
            "motion hallway",
        ] {
            publish(&http, &g.url(""), "home", d).await.unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("browser-demo.png");
    let out = Command::new(chromium())
        .args(base_flags(&dir.path().join("profile")))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,560")
        .arg("--hide-scrollbars")
        .arg("--timeout=3000")
        .arg(g.url("/demo/?topic=home&last_event_id=earliest"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 10_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    // `PUSHGATE_UPDATE_SCREENSHOT=1` refreshes the copy kept in docs/.
    if std::env::var_os("PUSHGATE_UPDATE_SCREENSHOT").is_some() {
        let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/browser-demo.png");
        std::fs::copy(&shot, keep).unwrap();
    }
}
