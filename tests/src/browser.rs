//! A real browser: Debian's headless Chromium (installed with apt-get when
//! missing, as `.ci/run` does), one process group per [`Browser`], killed on
//! drop. A page reports its state through its document title, which the
//! DevTools HTTP endpoint (`/json/list`) exposes; [`Site`] serves test pages
//! from another loopback origin than the gateway's.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's Chromium, installed with apt-get when missing.
pub fn chromium() -> PathBuf {
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
pub fn base_flags(profile: &Path) -> Vec<String> {
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

/// A Chromium process group with one page open.
pub struct Browser {
    child: Child,
    devtools: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens `url` in a fresh profile.
    pub fn open(url: &str) -> Browser {
        Self::open_with(url, &[])
    }

    /// Opens `url` with extra command-line flags (e.g. `--ignore-certificate-errors`).
    pub fn open_with(url: &str, flags: &[&str]) -> Browser {
        Self::launch(url, flags, false)
    }

    /// Opens `url` with QUIC forced on for `origin` (`host:port`) and a
    /// server certificate trusted by its public key hash (the base64 SHA-256
    /// of its SubjectPublicKeyInfo), as Chromium requires for QUIC to a
    /// certificate no system root signed. `localhost` resolves to
    /// 127.0.0.1 only: Chromium tries `::1` first, where nothing listens.
    pub fn open_quic(url: &str, origin: &str, spki_sha256: &str) -> Browser {
        let force = format!("--origin-to-force-quic-on={origin}");
        let trust = format!("--ignore-certificate-errors-spki-list={spki_sha256}");
        let resolve = "--host-resolver-rules=MAP localhost 127.0.0.1";
        Self::launch(url, &["--enable-quic", &force, &trust, resolve], true)
    }

    fn launch(url: &str, flags: &[&str], quic: bool) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let devtools = crate::controlplane::free_port();
        let base: Vec<String> = base_flags(profile.path())
            .into_iter()
            .filter(|f| !(quic && f == "--disable-quic"))
            .collect();
        let child = Command::new(chromium())
            .args(base)
            .args(flags)
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

    /// The JSON in the title of the page whose URL contains `url_part`.
    pub async fn page_state(&self, url_part: &str) -> Option<serde_json::Value> {
        let list: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{}/json/list", self.devtools))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
        let title = list.as_array()?.iter().find(|t| {
            t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(url_part))
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
    pub async fn wait_for(
        &self,
        url_part: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let last = std::cell::RefCell::new(None);
        let r = crate::wait::wait_until(what, timeout, || async {
            match self.page_state(url_part).await {
                Some(s) if done(&s) => Some(s),
                Some(s) => {
                    *last.borrow_mut() = Some(s);
                    None
                }
                None => None,
            }
        })
        .await;
        r.unwrap_or_else(|e| panic!("page never reached: {e}; last state {:?}", last.borrow()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this harness created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// An answer of a [`Site`] route other than the page.
pub struct Reply {
    /// Extra header lines, e.g. `Set-Cookie: a=b; Path=/`.
    pub headers: Vec<String>,
    /// Body (`text/plain`).
    pub body: String,
}

/// A route of a [`Site`]: the reply for a request path, or `None` for the page.
pub type Route = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// A static web server on loopback serving one HTML page at every path
/// (its own origin, so pages reach the gateway cross-origin, as in life),
/// and optionally answering some paths itself.
pub struct Site {
    /// Its address.
    pub addr: SocketAddr,
}

impl Site {
    /// Serves `html` until the process ends.
    pub fn serve(html: &'static str) -> Site {
        Self::serve_with(html, Arc::new(|_| None))
    }

    /// Serves `html`, except where `route` answers a path.
    pub fn serve_with(html: &'static str, route: Route) -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let route = route.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    line.clear();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let (kind, headers, body) = match route(&path) {
                        Some(r) => ("text/plain", r.headers, r.body),
                        None => ("text/html; charset=utf-8", Vec::new(), html.to_owned()),
                    };
                    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\n{extra}\
                         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Site { addr }
    }

    /// `http://ADDR/{path_and_query}`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!(
            "http://{}/{}",
            self.addr,
            path_and_query.trim_start_matches('/')
        )
    }

    /// The origin, for the gateway's `--cors-allowed-origins`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}
