//! A real browser: headless Chromium opens the example page
//! (`examples/web/index.html`, served by `pushgate --demo-page true` at
//! `/demo/`), shows events published meanwhile, reconnects by itself when the
//! gateway restarts on the same port and data directory, and ends with every
//! event exactly once. The page's state is read back from its title through
//! the DevTools HTTP endpoint (`/json/list`).

use pushgate_e2e::gateway::{publish, GatewayProcess};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's Chromium, installed with apt-get when missing (as `.ci/run` does).
fn chromium() -> PathBuf {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("{CHROMIUM} missing: apt-get install -y chromium");
        let ok = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok && Path::new(CHROMIUM).exists(),
            "could not install chromium; run `apt-get install -y chromium`"
        );
    }
    PathBuf::from(CHROMIUM)
}

/// Flags for headless Chromium on a machine with no outside network.
fn base_flags(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A Chromium process group, killed on drop.
struct Browser {
    child: Child,
    devtools: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let devtools = pushgate_e2e::controlplane::free_port();
        let child = Command::new(chromium())
            .args(base_flags(profile.path()))
            .arg(format!("--remote-debugging-port={devtools}"))
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--window-size=1100,800")
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromium");
        Browser {
            child,
            devtools,
            _profile: profile,
        }
    }

    /// The page's report: its title, a JSON summary (`?report`).
    async fn page_state(&self) -> Option<serde_json::Value> {
        let list: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{}/json/list", self.devtools))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        let title = list.as_array()?.iter().find(|t| {
            t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains("/demo/"))
        })?["title"]
            .as_str()?
            .to_owned();
        // /json/list HTML-escapes titles.
        let title = title
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        serde_json::from_str(&title).ok()
    }

    /// Polls the page until `done` holds, bounded; returns the last state.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.page_state().await {
                if done(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("page never reached: {what}; last state {last:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

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
        .wait_for("the EventSource is open", T, |s| s["state"] == "open")
        .await;
    let http = reqwest::Client::new();
    let mut want = Vec::new();
    for i in 1..=5 {
        let d = format!("event-{i}");
        publish(&http, &base, "browser/test", &d).await.unwrap();
        want.push(d);
    }
    let s = browser
        .wait_for("5 live events", T, |s| data(s).len() >= 5)
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
        .wait_for("10 events after the restart", T, |s| data(s).len() >= 10)
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
        .wait_for("the live event after the resume", T, |s| {
            data(s).len() >= 11
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = browser.page_state().await.expect("page state");
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
