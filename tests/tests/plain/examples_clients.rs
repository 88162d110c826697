//! The client examples against a real `pushgate`: the curl scripts
//! (`examples/curl/`) and the Rust examples (`examples/rust/`, built as
//! examples of this crate) publish, subscribe, survive a gateway restart and
//! print every event exactly once; the device example does so keeping no
//! state of its own.

use pushgate_e2e::cluster::repo;
use pushgate_e2e::gateway::{GatewayProcess, OPENED_HTTP1};
use pushgate_e2e::process::run_ok;
use pushgate_e2e::wait::{elapse_blocking, wait_until_blocking};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A client process in its own process group (scripts spawn curl), whose
/// stdout lines arrive on a channel; the whole group is killed on drop.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn spawn(cmd: &mut Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("spawn client");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Client { child, lines }
    }

    /// The data of the next `n` events (`<id> <data>` lines), bounded.
    fn data(&self, n: usize, timeout: Duration) -> Vec<String> {
        self.lines(n, timeout)
            .into_iter()
            .map(|l| l.split_once(' ').map(|(_, d)| d.to_owned()).unwrap_or(l))
            .collect()
    }

    /// The next `n` lines as printed, bounded.
    fn lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!(
                    "only {} of {n} lines within {timeout:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got
    }

    /// Nothing more arrives for `quiet`.
    /// After the process exited: its output ends (the end of the pipe is
    /// the marker) with nothing left unread.
    fn no_more_output(&self) {
        match self.lines.recv_timeout(T) {
            Ok(l) => panic!("unexpected extra output: {l}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("its output did not end within {T:?}"),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn publish_sh(g: &GatewayProcess, topic: &str, data: &[&str]) {
    let out = run_ok(
        Command::new("sh")
            .arg(repo().join("examples/curl/publish.sh"))
            .arg(topic)
            .args(data)
            .env("GATEWAY", g.url("")),
    );
    let acks = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        acks.lines().filter(|l| l.contains("\"seq\"")).count(),
        data.len(),
        "{acks}"
    );
}

const T: Duration = Duration::from_secs(15);

#[test]
fn curl_scripts_publish_and_resume_across_a_restart() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is required"
    );
    let mut g = GatewayProcess::start(&["--retry", "200ms"]).unwrap();
    // The example page is off unless asked for (`--demo-page true`).
    let demo = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &g.url("/demo/"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&demo.stdout), "404");
    publish_sh(&g, "news", &["one", "two"]);
    let dir = tempfile::tempdir().unwrap();
    let sub = Client::spawn(
        Command::new("sh")
            .arg(repo().join("examples/curl/subscribe.sh"))
            .args(["news", "earliest"])
            .env("GATEWAY", g.url(""))
            .env("CURSOR_FILE", dir.path().join("cursor"))
            .env("RETRY_SECONDS", "0.2"),
    );
    assert_eq!(sub.data(2, T), ["one", "two"]);
    publish_sh(&g, "news", &["three"]);
    assert_eq!(sub.data(1, T), ["three"]);
    g.restart().unwrap();
    publish_sh(&g, "news", &["four", "five"]);
    assert_eq!(sub.data(2, T), ["four", "five"]);
    // Nothing else came before a later marker: no event twice.
    publish_sh(&g, "news", &["marker"]);
    assert_eq!(sub.data(1, T), ["marker"]);
}

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: build it with `cargo build -p pushgate-e2e --examples` (cargo test --workspace does)",
        p.display()
    );
    p
}

/// Publishes `data` to `topic` with the publisher example.
fn publish(g: &GatewayProcess, topic: &str, data: &[&str]) {
    run_ok(
        Command::new(example("publisher"))
            .arg(g.url(""))
            .arg(topic)
            .args(data),
    );
}

/// Waits until the gateway's metric `name` reaches `want`, bounded.
fn wait_metric(g: &GatewayProcess, name: &str, want: f64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_until_blocking(
        &format!("{name} to reach {want}"),
        Duration::from_secs(5),
        || match rt.block_on(g.metric(name)) {
            Ok(v) if v >= want => Ok(()),
            Ok(v) => Err(format!("{name} = {v}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )
    .unwrap();
}

/// One HTTP request from a synchronous test: status and JSON body.
fn call(
    method: reqwest::Method,
    url: &str,
    body: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .request(method, url)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or_default())
    })
}

#[test]
fn the_device_example_keeps_no_state_and_misses_nothing_while_off() {
    let g = GatewayProcess::start(&["--retry", "200ms"]).unwrap();
    let device = || {
        let mut cmd = Command::new(example("device"));
        cmd.args([&g.url(""), "pump-7", "devices/pump-7"]);
        cmd
    };
    let first = Client::spawn(&mut device());
    wait_metric(&g, OPENED_HTTP1, 1.0);
    publish(&g, "devices/pump-7", &["start", "rpm=900"]);
    assert_eq!(first.data(2, T), ["start", "rpm=900"]);
    wait_metric(&g, "pushgate_device_acks_total", 2.0);
    // Power loss: the device keeps nothing, not even its last event id.
    drop(first);
    publish(&g, "devices/pump-7", &["rpm=1200", "stop"]);
    // Meanwhile its operator wants another speed, and a one-second
    // command comes and goes.
    let shadow = g.url("/v1/devices/pump-7/shadow");
    let want = r#"{"state":{"desired":{"rpm":1500}}}"#;
    assert!(call(reqwest::Method::PATCH, &shadow, want).0.is_success());
    let command = g.url("/v1/topics/devices/pump-7/events?ttl=1s");
    assert!(call(reqwest::Method::POST, &command, "purge")
        .0
        .is_success());
    elapse_blocking(
        "the 1 s TTL of the command to run out",
        Duration::from_millis(1_500),
    );
    let mut second = Client::spawn(device().args(["--max", "2"]));
    assert_eq!(
        second.lines(4, T),
        [
            r#"[shadow] {"delta":{"rpm":1500},"version":1}"#,
            r#"[expired] {"topics":[{"count":1,"topic":"devices/pump-7"}]}"#,
            "rpm=1200",
            "stop"
        ]
    );
    let reported = || call(reqwest::Method::GET, &shadow, "").1["state"]["reported"].clone();
    wait_until_blocking("the device to report its shadow", T, || {
        let r = reported();
        if r == serde_json::json!({"rpm":1500}) {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .unwrap();
    let status = second.child.wait().unwrap();
    assert!(status.success(), "device exited with {status}");
    second.no_more_output();
}

#[test]
fn rust_examples_publish_and_resume_across_a_restart() {
    let mut g = GatewayProcess::start(&["--retry", "200ms"]).unwrap();
    let publish = |g: &GatewayProcess, data: &[&str]| publish(g, "sensors/1", data);
    publish(&g, &["a", "b"]);
    let sub = Client::spawn(Command::new(example("subscriber")).args([
        &g.url(""),
        "sensors/1",
        "earliest",
        "--max",
        "5",
    ]));
    assert_eq!(sub.data(2, T), ["a", "b"]);
    g.restart().unwrap();
    publish(&g, &["c", "d", "e"]);
    assert_eq!(sub.data(3, T), ["c", "d", "e"]);
    let mut child = sub;
    // --max 5: the subscriber exits by itself, successfully.
    let s = wait_until_blocking("the subscriber to exit after 5 events", T, || {
        child.child.try_wait().unwrap()
    })
    .unwrap();
    assert!(s.success(), "subscriber exited with {s}");
    child.no_more_output();
}
