//! HTTP/2 floods against a real gateway process, from raw frames (`h2_raw`):
//! Rapid Reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316),
//! SETTINGS and PING floods (cut by the gateway's budget of control frames
//! per connection, `edges/frame_budget.rs`), and 10,000 streams asked for on one
//! connection. Each attack runs for a few seconds from four connections
//! (reopened whenever the gateway closes one), first at about 10,000 frames
//! per second and then as fast as they go, while a control subscriber
//! follows a topic published at 20 events/s. Every case must leave the
//! control stream with every event exactly once, `/healthz` answering on a
//! fresh connection, the gateway's memory bounded and its descriptors back
//! at baseline. Each case prints what it cost the gateway (CPU seconds, RSS)
//! and the control stream's latency beside its baseline: figures, not
//! assertions, since wall-clock time is not asserted in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::h2_raw::{self, frame, H2Conn};
use pushgate_e2e::sse_client::SseClient;
use pushgate_e2e::wait::wait_until;

use crate::fds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(5);
/// Connections per attack.
const ATTACKERS: usize = 4;
/// Control events per second.
const RATE: u64 = 20;
/// Connections the control-frame budget closed.
const CUT: &str = "pushgate_tcp_connections_closed_total{reason=\"control_flood\"}";
/// Growth of the gateway's RSS during one attack that fails the test.
const MAX_RSS_GROWTH_MIB: f64 = 128.0;

/// CPU seconds used and resident MiB of process `pid`.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (cpu, rss_kib / 1024.0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// One attack: what each connection writes, batch after batch, from a
/// fresh connection whose stream ids start at 1.
#[derive(Clone, Copy, Debug)]
enum Attack {
    RapidReset,
    Continuation,
    Settings,
    Ping,
    ManyStreams,
}

impl Attack {
    /// The next batch of frames; `next_id` is the connection's next stream id.
    fn batch(self, next_id: &mut u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        match self {
            Attack::RapidReset => {
                for _ in 0..200 {
                    let id = *next_id;
                    *next_id += 2;
                    out.extend(frame(
                        h2_raw::HEADERS,
                        h2_raw::END_STREAM | h2_raw::END_HEADERS,
                        id,
                        &h2_raw::get("/v1/stream?topic=rr"),
                    ));
                    out.extend(frame(
                        h2_raw::RST_STREAM,
                        0,
                        id,
                        &h2_raw::CANCEL.to_be_bytes(),
                    ));
                }
            }
            Attack::Continuation => {
                // A header block that never ends: HEADERS without
                // END_HEADERS, then 16 KB CONTINUATIONs, each one valid
                // literal header.
                let mut junk = vec![0x00];
                h2_raw::literal(&mut junk, b"x-junk");
                h2_raw::literal(&mut junk, &[b'a'; 16_000]);
                if *next_id == 1 {
                    out.extend(frame(
                        h2_raw::HEADERS,
                        h2_raw::END_STREAM,
                        *next_id,
                        &h2_raw::get("/healthz"),
                    ));
                }
                for _ in 0..4 {
                    out.extend(frame(h2_raw::CONTINUATION, 0, 1, &junk));
                }
                *next_id += 2;
            }
            Attack::Settings => {
                // SETTINGS_INITIAL_WINDOW_SIZE = 65,535, each to be acknowledged.
                let one = [0x00, 0x04, 0x00, 0x00, 0xff, 0xff];
                for _ in 0..2000 {
                    out.extend(frame(h2_raw::SETTINGS, 0, 0, &one));
                }
            }
            Attack::Ping => {
                for i in 0..2000u64 {
                    out.extend(frame(h2_raw::PING, 0, 0, &i.to_be_bytes()));
                }
            }
            Attack::ManyStreams => {
                // 10,000 streams in all, then nothing more on this connection.
                while *next_id < 20_000 && out.len() < 60_000 {
                    out.extend(frame(
                        h2_raw::HEADERS,
                        h2_raw::END_STREAM | h2_raw::END_HEADERS,
                        *next_id,
                        &h2_raw::get("/v1/stream?topic=many"),
                    ));
                    *next_id += 2;
                }
            }
        }
        out
    }
}

/// What the attackers did and saw.
#[derive(Default)]
struct Report {
    bytes: AtomicU64,
    batches: AtomicU64,
    frames: AtomicU64,
    connections: AtomicU64,
    /// GOAWAY error codes the gateway sent.
    goaways: Mutex<Vec<u32>>,
    /// Response HEADERS and RST_STREAM frames (the many-streams case).
    responses: AtomicU64,
    resets: AtomicU64,
}

/// How fast an attacker sends.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// As fast as the connection takes it.
    Full,
    /// About this many frames per second from all attackers together (the
    /// rate of the first look from outside: 96,400 resets in 10 s).
    Frames(u64),
}

/// The frames in a batch, by walking their headers.
fn frames_in(mut batch: &[u8]) -> u64 {
    let mut n = 0;
    while batch.len() >= 9 {
        let len = u32::from_be_bytes([0, batch[0], batch[1], batch[2]]) as usize;
        batch = &batch[(9 + len).min(batch.len())..];
        n += 1;
    }
    n
}

/// One attacker: connects, floods until `until`, reconnects when the
/// gateway closes the connection. A reader takes what the gateway sends,
/// recording GOAWAYs, answering nothing.
async fn attacker(
    addr: std::net::SocketAddr,
    (attack, pace): (Attack, Pace),
    until: tokio::time::Instant,
    r: Arc<Report>,
) {
    while tokio::time::Instant::now() < until {
        let Ok(conn) = H2Conn::connect(addr).await else {
            continue;
        };
        r.connections.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = conn.tcp.into_split();
        let seen = r.clone();
        let mut reader = tokio::spawn(async move {
            let mut head = [0u8; 9];
            loop {
                if rd.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    return;
                }
                match head[3] {
                    h2_raw::GOAWAY if len >= 8 => seen.goaways.lock().unwrap().push(
                        u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes")),
                    ),
                    h2_raw::HEADERS => {
                        seen.responses.fetch_add(1, Ordering::Relaxed);
                    }
                    h2_raw::RST_STREAM => {
                        seen.resets.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        let mut next_id = 1;
        let mut closed = false;
        loop {
            let batch = attack.batch(&mut next_id);
            if batch.is_empty() {
                // Nothing more to send: hold the connection to the end.
                tokio::time::sleep_until(until).await;
                break;
            }
            let sent = tokio::time::Instant::now();
            match tokio::time::timeout_at(until, wr.write_all(&batch)).await {
                Ok(Ok(())) => {
                    r.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    r.batches.fetch_add(1, Ordering::Relaxed);
                    r.frames.fetch_add(frames_in(&batch), Ordering::Relaxed);
                }
                Ok(Err(_)) => {
                    // The gateway closed it: reconnect.
                    closed = true;
                    break;
                }
                Err(_) => break, // the phase is over
            }
            if let Pace::Frames(per_s) = pace {
                let share = (per_s / ATTACKERS as u64).max(1);
                let due = sent + Duration::from_secs_f64(frames_in(&batch) as f64 / share as f64);
                tokio::time::sleep_until(due.min(until)).await;
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
        }
        drop(wr);
        if closed {
            // Let the reader take the gateway's last frames (its GOAWAY).
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut reader).await;
        }
        reader.abort();
    }
}

/// Publishes `n` control events at `RATE`, each carrying its send time.
async fn control_publisher(base: String, topic: &'static str, n: u64) {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    for i in 0..n {
        tick.tick().await;
        let data = format!("{i} {}", now_us());
        // A publish the flood delays still counts; one that fails is a failure.
        publish(&http, &base, topic, &data)
            .await
            .unwrap_or_else(|e| panic!("control publish {i}: {e:#}"));
    }
}

/// Reads `n` control events; their latencies in ms. Fails on a gap or a duplicate.
async fn control_reader(sub: &mut SseClient, n: u64) -> Vec<f64> {
    let mut lat = Vec::with_capacity(n as usize);
    for want in 0..n {
        let ev = sub
            .next(Duration::from_secs(20))
            .await
            .expect("control event in time")
            .expect("control stream open");
        let (i, sent) = ev.data.split_once(' ').expect("i sent");
        assert_eq!(
            i.parse::<u64>().unwrap(),
            want,
            "control events in order, once"
        );
        lat.push((now_us() - sent.parse::<u64>().unwrap()) as f64 / 1000.0);
    }
    lat
}

/// One phase: the control stream for `ATTACK`, with `attack` or without.
async fn phase(
    gw: &GatewayProcess,
    sub: &mut SseClient,
    attack: Option<(Attack, Pace)>,
) -> Vec<f64> {
    let n = RATE * ATTACK.as_secs();
    let pid = gw.pid().expect("running");
    let fds_before = fds(pid);
    let (cpu0, rss0) = usage(pid);
    let warnings = gw.warnings();
    let until = tokio::time::Instant::now() + ATTACK;
    let report = Arc::new(Report::default());
    let mut attackers = Vec::new();
    if let Some(a) = attack {
        for _ in 0..ATTACKERS {
            attackers.push(tokio::spawn(attacker(gw.addr, a, until, report.clone())));
        }
    }
    let publisher = tokio::spawn(control_publisher(gw.url(""), "control", n));
    let mut rss_peak = rss0;
    let mut lat = {
        let read = control_reader(sub, n);
        tokio::pin!(read);
        let mut probe = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                lat = &mut read => break lat,
                _ = probe.tick() => rss_peak = rss_peak.max(usage(pid).1),
            }
        }
    };
    publisher.await.unwrap();
    for a in attackers {
        a.await.unwrap();
    }
    let (cpu1, rss1) = usage(pid);
    let rss_peak = rss_peak.max(rss1);
    let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
    let name = attack.map_or("baseline".to_owned(), |(a, p)| format!("{a:?} {p:?}"));
    let goaways = report.goaways.lock().unwrap().clone();
    let mut codes = goaways.clone();
    codes.sort_unstable();
    codes.dedup();
    println!(
        "{name}: {} frames, {:.1} MB sent in {} batches over {} connections; GOAWAYs {} (codes {codes:?}); \
         responses {}, resets {}; gateway CPU {:.2} s, RSS {rss0:.1} → peak {rss_peak:.1} → {rss1:.1} MiB; \
         control p50 {p50:.1} ms, p99 {p99:.1} ms; {} warnings logged",
        report.frames.load(Ordering::Relaxed),
        report.bytes.load(Ordering::Relaxed) as f64 / 1e6,
        report.batches.load(Ordering::Relaxed),
        report.connections.load(Ordering::Relaxed),
        goaways.len(),
        report.responses.load(Ordering::Relaxed),
        report.resets.load(Ordering::Relaxed),
        cpu1 - cpu0,
        gw.warnings() - warnings,
    );
    // Log lines are one more thing a flood could multiply.
    let logged = gw.warnings() - warnings;
    assert!(logged <= 10, "{name}: {logged} warnings logged");
    assert!(
        rss_peak - rss0 <= MAX_RSS_GROWTH_MIB,
        "{name}: RSS grew by {:.1} MiB",
        rss_peak - rss0
    );
    // The gateway answers on a fresh connection, and lets go of the attackers'.
    let http = reqwest::Client::new();
    let status = http.get(gw.url("/healthz")).send().await.unwrap().status();
    assert_eq!(status, 200, "{name}: /healthz after the attack");
    wait_until(
        &format!("{name}: descriptors back at baseline"),
        Duration::from_secs(20),
        || async {
            let now = fds(pid);
            if now <= fds_before + 2 {
                Ok(())
            } else {
                Err(format!("{now} descriptors, {fds_before} before"))
            }
        },
    )
    .await
    .unwrap();
    lat
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_floods_leave_the_control_stream_and_the_gateway_whole() {
    let _alone = crate::ALONE.lock().await;
    // The default limits: they are part of the defence.
    let gw = GatewayProcess::start(&[]).unwrap();
    let mut sub = SseClient::connect(
        &reqwest::Client::new(),
        &gw.url("/v1/stream?topic=control"),
        None,
    )
    .await
    .unwrap();
    sub.await_id(Duration::from_secs(10)).await.unwrap();
    phase(&gw, &mut sub, None).await;
    for pace in [Pace::Frames(10_000), Pace::Full] {
        for attack in [
            Attack::RapidReset,
            Attack::Continuation,
            Attack::Settings,
            Attack::Ping,
            Attack::ManyStreams,
        ] {
            let cut = gw.metric(CUT).await.unwrap_or(0.0);
            phase(&gw, &mut sub, Some((attack, pace))).await;
            if matches!(attack, Attack::Settings | Attack::Ping) {
                // Both paces send more than the default budget of 1,000/s per connection.
                let now = gw.metric(CUT).await.unwrap_or(0.0);
                assert!(
                    now > cut,
                    "{attack:?} {pace:?}: no connection cut by the control-frame budget"
                );
            }
        }
    }
}
