//! Hostile connections against a real gateway process: three client
//! processes (`pushgate-flood`, each under its own open-file limit) open
//! 27,000 connections that send nothing or half a request head, more than
//! the gateway's own 20,000 descriptors. Meanwhile a real subscriber opens,
//! receives events, drops and resumes exactly, and `/healthz` answers 200 on
//! both ports on fresh connections throughout; the gateway never runs out
//! of descriptors, and afterwards its descriptor count is back at baseline.
//! Plus the small edge rules one by one: 431 for a huge head, deadlines for
//! half-sent heads and idle keep-alive, none for a quiet stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushgate_e2e::gateway::{metric_value, publish, GatewayProcess};
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::wait::{elapse, wait_until};

use crate::fds;

/// One flood process; killed on drop.
struct Flood(Child);

impl Flood {
    fn start(addr: std::net::SocketAddr, count: usize, mode: &str) -> Flood {
        let child = Command::new(env!("CARGO_BIN_EXE_pushgate-flood"))
            .args(["--addr", &addr.to_string(), "--count", &count.to_string()])
            .args(["--mode", mode, "--hold", "120"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pushgate-flood");
        Flood(child)
    }

    /// The next JSON line it prints.
    fn line(&mut self) -> serde_json::Value {
        let out = self.0.stdout.as_mut().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("flood output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Closes its stdin (it lets go of every connection) and reads its report.
    fn stop(mut self) -> serde_json::Value {
        drop(self.0.stdin.take());
        let report = self.line();
        let _ = self.0.wait();
        report
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on a fresh connection with a hard deadline; the status code.
fn probe(addr: std::net::SocketAddr, path: &str) -> Result<u16, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_half_sent_connections_never_starves_streams_or_probes() {
    let _alone = crate::ALONE.lock().await;
    let g =
        GatewayProcess::start(&["--metrics-listen", "127.0.0.1:0", "--retry", "200ms"]).unwrap();
    let pid = g.pid().unwrap();
    let (api, ops) = (g.addr, g.metrics_addr.unwrap());
    let base = g.url("");
    // No pooled idle connections: the gateway may close idle ones to make room.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let m = g.metrics().await.unwrap();
    let cap = metric_value(&m, "pushgate_tcp_connection_limit{listener=\"api\"}") as usize;
    assert!(
        cap > 0 && cap < 20_000,
        "cap {cap} below the open-file limit"
    );
    publish(&http, &base, "edge", "e0").await.unwrap();
    // The publish's connection is gone (no pooling) before the baseline.
    wait_until(
        "no open API connections",
        Duration::from_secs(10),
        || async {
            let open = g
                .metric("pushgate_tcp_connections{listener=\"api\"}")
                .await
                .map_err(|e| format!("{e:#}"))?;
            if open == 0.0 {
                Ok(())
            } else {
                Err(format!("{open} open"))
            }
        },
    )
    .await
    .unwrap();
    let baseline = fds(pid);

    // Probes on fresh connections, every 100 ms, on both ports.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, failures, probes) = (stop.clone(), failures.clone(), probes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for addr in [api, ops] {
                    probes.fetch_add(1, Ordering::Relaxed);
                    match probe(addr, "/healthz") {
                        Ok(200) => {}
                        other => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("probe of {addr} failed: {other:?}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // A real subscriber, from the start of history.
    let url = g.url("/v1/stream?topic=edge&last_event_id=earliest");
    let mut sub = SseClient::connect(&http, &url, None).await.unwrap();
    assert_eq!(
        sub.next(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
            .data,
        "e0"
    );

    let floods = [
        Flood::start(api, 9_000, "idle"),
        Flood::start(api, 9_000, "half"),
        Flood::start(api, 9_000, "mixed"),
    ];
    // Publish and read while they connect.
    let mut want = vec!["e0".to_owned()];
    let mut got = vec!["e0".to_owned()];
    let mut peak = 0;
    for i in 1..=20 {
        let d = format!("e{i}");
        publish(&http, &base, "edge", &d).await.unwrap();
        want.push(d);
        got.push(
            sub.next(Duration::from_secs(10))
                .await
                .unwrap()
                .unwrap()
                .data,
        );
        peak = peak.max(fds(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reports = Vec::new();
    let mut floods = floods;
    for f in &mut floods {
        let r = tokio::task::block_in_place(|| f.line());
        reports.push(r);
    }
    let during = fds(pid);
    peak = peak.max(during);
    let opened: u64 = reports.iter().map(|r| r["opened"].as_u64().unwrap()).sum();
    // Drop the stream and resume by cursor while the flood is still held.
    let cursor = sub.last_event_id().to_owned();
    drop(sub);
    for i in 21..=30 {
        let d = format!("e{i}");
        publish(&http, &base, "edge", &d).await.unwrap();
        want.push(d);
    }
    let mut sub = SseClient::connect(&http, &g.url("/v1/stream?topic=edge"), Some(&cursor))
        .await
        .unwrap();
    while got.len() < want.len() {
        got.push(
            sub.next(Duration::from_secs(10))
                .await
                .unwrap()
                .unwrap()
                .data,
        );
        peak = peak.max(fds(pid));
    }
    assert_eq!(got, want, "every event once, across the resume");
    let m = g.metrics().await.unwrap();
    let closed = |r: &str| {
        metric_value(
            &m,
            &format!("pushgate_tcp_connections_closed_total{{reason=\"{r}\"}}"),
        )
    };
    let (evicted, refused) = (closed("evicted"), closed("over_capacity"));
    // Held until the head deadline reaps them (the clients do not let go).
    wait_until(
        "the flood's connections to be reaped",
        Duration::from_secs(60),
        || async {
            let m = g.metrics().await.unwrap();
            match metric_value(&m, "pushgate_tcp_connections{listener=\"api\"}") {
                open if open <= 5.0 => Ok(()),
                open => Err(format!("still {open} connections open")),
            }
        },
    )
    .await
    .unwrap();
    let m = g.metrics().await.unwrap();
    let timed_out = metric_value(
        &m,
        "pushgate_tcp_connections_closed_total{reason=\"header_timeout\"}",
    );
    let mut by_server = 0;
    for f in floods {
        by_server += tokio::task::block_in_place(|| f.stop())["closed_by_server"]
            .as_u64()
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    drop(sub);
    // Checked (with the numbers) below if it does not come back.
    let _ = wait_until(
        "descriptors back at baseline",
        Duration::from_secs(30),
        || async { fds(pid) <= baseline + 2 },
    )
    .await;
    let after = fds(pid);
    eprintln!(
        "fds: baseline {baseline}, during {during}, peak {peak}, after {after}; cap {cap}; \
         opened {opened}/27000; closed by the gateway: {by_server} (evicted {evicted}, \
         over capacity {refused}, head timeout {timed_out}); probes {} with {} failures",
        probes.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a /healthz probe failed"
    );
    assert!(
        probes.load(Ordering::Relaxed) > 20,
        "the probes ran throughout"
    );
    assert!(
        peak < 20_000,
        "the gateway reached its open-file limit: {peak}"
    );
    assert!(
        opened as usize > cap,
        "the flood ({opened}) must exceed the cap ({cap}) to test it"
    );
    assert!(
        evicted + refused > 0.0,
        "at the cap something must give way"
    );
    assert!(timed_out > 0.0, "the head deadline reaped the silent ones");
    assert!(
        after <= baseline + 2,
        "descriptors: baseline {baseline}, after {after}"
    );
}

/// Raw HTTP/1.1 exchange on one connection: writes `req`, returns what came back
/// until the server closed or `wait` passed.
fn exchange(addr: std::net::SocketAddr, req: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_are_bounded_in_size_and_time_streams_are_not() {
    let g = GatewayProcess::start(&[
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "2s",
        "--heartbeat",
        "30s",
    ])
    .unwrap();
    let addr = g.addr;
    let (big, small) = tokio::task::block_in_place(|| {
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200 * 1024)
        );
        let big = exchange(addr, huge.as_bytes(), Duration::from_secs(5));
        let fits = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(8 * 1024)
        );
        (big, exchange(addr, fits.as_bytes(), Duration::from_secs(5)))
    });
    assert!(
        big.0.starts_with("HTTP/1.1 431"),
        "{:?}",
        &big.0[..big.0.len().min(80)]
    );
    assert!(small.0.starts_with("HTTP/1.1 200"), "{}", small.0);

    let (half, idle) = tokio::task::block_in_place(|| {
        let t = Instant::now();
        let (_, closed) = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(10),
        );
        let half = (closed, t.elapsed());
        let t = Instant::now();
        let (text, closed) = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(10),
        );
        (half, (text, closed, t.elapsed()))
    });
    assert!(half.0, "a half-sent head is closed by the gateway");
    assert!(
        idle.0.starts_with("HTTP/1.1 200") && idle.1,
        "answered, then closed when idle"
    );
    eprintln!(
        "half-sent head closed after {:?}, idle keep-alive after {:?}",
        half.1, idle.2
    );

    // A stream with nothing to say for longer than both deadlines stays open.
    let http = reqwest::Client::new();
    let mut s = SseClient::connect(&http, &g.url("/v1/stream?topic=quiet"), None)
        .await
        .unwrap();
    s.await_id(Duration::from_secs(5)).await.unwrap();
    elapse(
        "longer than the head and idle deadlines",
        Duration::from_secs(4),
    )
    .await;
    publish(&http, &g.url(""), "quiet", "still here")
        .await
        .unwrap();
    assert_eq!(
        s.next(Duration::from_secs(5)).await.unwrap().unwrap().data,
        "still here"
    );

    let m = g.metrics().await.unwrap();
    for reason in ["header_too_large", "header_timeout", "idle_timeout"] {
        let n = metric_value(
            &m,
            &format!("pushgate_tcp_connections_closed_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "{reason} counted: {n}");
    }
}
