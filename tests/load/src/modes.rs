//! The four load modes. Each returns one JSON object (printed as one line).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::summary::{self, Summary};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::{self, Proto, Publisher, StreamEnd, Template};
use crate::parse::{parse_payload, write_payload, SseItem, SseReader};
use crate::stats::{self, latency, new_histogram, record, Seen};

/// Microseconds since the tool started: the clock both send and receive
/// timestamps come from (publisher and subscribers share the process).
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Where streams go and how they are opened.
#[derive(Clone)]
pub struct SubTarget {
    /// Stream URL template.
    pub url: Template,
    /// HTTP version.
    pub proto: Proto,
    /// h2c streams multiplexed on one connection.
    pub streams_per_conn: usize,
    /// Ceiling on the server's `retry:` hint (ms) before reconnecting.
    pub max_retry_ms: u64,
}

/// Counters all subscribers of a run share.
#[derive(Default)]
pub struct Shared {
    /// Streams whose 200 head arrived (first time only).
    pub ready: AtomicUsize,
    /// Distinct (subscriber, seq) deliveries.
    pub unique: AtomicU64,
    /// Subscribers that reached their target count.
    pub done: AtomicUsize,
}

/// One subscriber's record of a run.
pub struct Sub {
    /// Index (picks topic and h2 connection).
    pub idx: usize,
    /// Topic name.
    pub topic: String,
    reader: SseReader,
    /// Sequence numbers received.
    pub seen: Seen,
    /// Per-event publish→deliver latency.
    pub lat: Histogram<u64>,
    /// Connect→200 head, first connection.
    pub open_us: Option<u64>,
    retry_ms: u64,
    /// Times the stream was opened again after it ended.
    pub reconnects: u64,
    /// Non-200 answers and connection errors.
    pub failures: u64,
    /// Distinct events after which the subscriber counts as done (0: never).
    pub target: u64,
    /// When it got there.
    pub done_at_us: Option<u64>,
    record_latency: bool,
}

impl Sub {
    /// A fresh subscriber on `topic`.
    pub fn new(idx: usize, topic: String, record_latency: bool) -> Sub {
        Sub {
            idx,
            topic,
            reader: SseReader::new(),
            seen: Seen::default(),
            lat: new_histogram(),
            open_us: None,
            retry_ms: 1000,
            reconnects: 0,
            failures: 0,
            target: 0,
            done_at_us: None,
            record_latency,
        }
    }
}

/// h2c connections shared by groups of streams.
pub struct H2Pool {
    groups: Vec<tokio::sync::Mutex<Option<h2::client::SendRequest<bytes::Bytes>>>>,
}

impl H2Pool {
    fn new(n: usize) -> Arc<H2Pool> {
        Arc::new(H2Pool {
            groups: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
        })
    }

    async fn get(
        &self,
        t: &Template,
        g: usize,
    ) -> anyhow::Result<h2::client::SendRequest<bytes::Bytes>> {
        let mut slot = self.groups[g % self.groups.len()].lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = net::h2_connect(t).await?;
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn forget(&self, g: usize) {
        *self.groups[g % self.groups.len()].lock().await = None;
    }
}

/// Runs one subscriber until `stop`: reconnects with `Last-Event-ID` after
/// the server's retry hint (capped) whenever the stream ends, as EventSource does.
pub async fn run_sub(
    mut sub: Sub,
    target: Arc<SubTarget>,
    pool: Option<Arc<H2Pool>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    gate: Option<Arc<Semaphore>>,
) -> Sub {
    let path = target.url.path_for(&sub.topic, sub.idx);
    let topic = sub.topic.clone();
    let mut first = true;
    loop {
        let mut permit = match &gate {
            Some(g) if first => g.clone().acquire_owned().await.ok(),
            _ => None,
        };
        let started = now_us();
        let last_id = sub.reader.last_id().to_vec();
        let group = sub.idx / target.streams_per_conn.max(1);
        let Sub {
            reader,
            seen,
            lat,
            open_us,
            retry_ms,
            target: want,
            done_at_us,
            record_latency,
            ..
        } = &mut sub;
        let mut opened = || {
            // Ramp-up concurrency counts connections being opened, not open ones.
            permit.take();
            if open_us.is_none() {
                *open_us = Some(now_us() - started);
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
        };
        let mut on_data = |bytes: &[u8]| {
            reader.feed(bytes, |item| match item {
                SseItem::Event(data) => {
                    if let Some((seq, ts)) = parse_payload(data) {
                        if seen.insert(seq) {
                            shared.unique.fetch_add(1, Ordering::Relaxed);
                            if *record_latency {
                                record(lat, now_us().saturating_sub(ts));
                            }
                            if *want > 0 && seen.unique == *want && done_at_us.is_none() {
                                *done_at_us = Some(now_us());
                                shared.done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                SseItem::Retry(ms) => *retry_ms = ms,
            })
        };
        let end = match (target.proto, &pool) {
            (Proto::H2c | Proto::H2, Some(pool)) => {
                let g = group;
                match pool.get(&target.url, g).await {
                    Ok(conn) => {
                        let r = net::stream_h2(
                            &target.url,
                            Some(conn),
                            &path,
                            &last_id,
                            &stop,
                            &mut opened,
                            &mut on_data,
                        )
                        .await;
                        if r.is_err() {
                            pool.forget(g).await;
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            (Proto::H3, _) => {
                crate::quic::stream_h3(
                    &target.url,
                    &path,
                    &last_id,
                    &stop,
                    &mut opened,
                    &mut on_data,
                )
                .await
            }
            (Proto::Grpc, _) => {
                crate::grpc::stream_grpc(
                    &target.url,
                    &topic,
                    &last_id,
                    &stop,
                    &mut opened,
                    &mut on_data,
                )
                .await
            }
            _ => {
                net::stream_h1(
                    &target.url,
                    &path,
                    &last_id,
                    &stop,
                    &mut opened,
                    &mut on_data,
                )
                .await
            }
        };
        first = false;
        sub.reader.reset_stream();
        match end {
            Ok(StreamEnd::Stopped) => return sub,
            Ok(StreamEnd::Closed) => {}
            Ok(StreamEnd::Status(_)) | Err(_) => sub.failures += 1,
        }
        if stop.is_cancelled() {
            return sub;
        }
        sub.reconnects += 1;
        let wait = sub.retry_ms.min(target.max_retry_ms).max(50);
        tokio::select! {
            _ = stop.cancelled() => return sub,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

/// Starts `subs` with at most `concurrency` connections being opened at once.
pub fn spawn_subs(
    subs: Vec<Sub>,
    target: &Arc<SubTarget>,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    concurrency: usize,
) -> Vec<JoinHandle<Sub>> {
    let pool = matches!(target.proto, Proto::H2c | Proto::H2)
        .then(|| H2Pool::new(subs.len().div_ceil(target.streams_per_conn.max(1)).max(1)));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    subs.into_iter()
        .map(|s| {
            tokio::spawn(run_sub(
                s,
                target.clone(),
                pool.clone(),
                shared.clone(),
                stop.clone(),
                Some(gate.clone()),
            ))
        })
        .collect()
}

/// Waits until `cond` holds or `timeout` passes; true if it held.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Samples the servers' memory every 200 ms and keeps the peak.
fn mem_sampler(pids: Vec<u32>, stop: CancellationToken) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(stats::total_mem(&pids));
            tokio::select! {
                _ = stop.cancelled() => return peak,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

fn own_cpu() -> f64 {
    stats::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Raises this process's open-file soft limit to its hard limit; returns the limit.
pub fn raise_nofile() -> u64 {
    let _ = pushgate::ops::nofile::raise_nofile_limit();
    pushgate::ops::nofile::nofile_limit()
}

/// Refuses socket counts that would come near the per-process file limit.
pub fn check_sockets(n: usize) -> anyhow::Result<()> {
    let limit = raise_nofile() as usize;
    let cap = (limit.saturating_sub(2000)).min(18_000);
    if n > cap {
        bail!("{n} sockets asked for; this process stays below {cap} (open-file limit {limit})");
    }
    Ok(())
}

/// `idle`: open N streams over T topics, hold, report memory per stream and open times.
pub struct IdleArgs {
    pub label: String,
    pub target: Arc<SubTarget>,
    pub streams: usize,
    pub topics: usize,
    pub hold: Duration,
    pub pids: Vec<u32>,
    pub concurrency: usize,
}

pub async fn idle(a: IdleArgs) -> anyhow::Result<Summary> {
    check_sockets(a.streams)?;
    let mem0 = stats::total_mem(&a.pids);
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let subs = (0..a.streams)
        .map(|i| Sub::new(i, format!("idle-{}", i % a.topics.max(1)), false))
        .collect();
    let t0 = Instant::now();
    let handles = spawn_subs(subs, &a.target, &shared, &stop, a.concurrency);
    let all = wait_for(Duration::from_secs(120), || {
        shared.ready.load(Ordering::Relaxed) >= a.streams
    })
    .await;
    let open_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(a.hold).await;
    let mem1 = stats::total_mem(&a.pids);
    let opened = shared.ready.load(Ordering::Relaxed);
    stop.cancel();
    let mut open_h = new_histogram();
    let mut failures = 0;
    for h in handles {
        let s = h.await?;
        if let Some(us) = s.open_us {
            record(&mut open_h, us);
        }
        failures += s.failures;
    }
    let per = mem1.saturating_sub(mem0) as f64 / opened.max(1) as f64;
    Ok(Summary::Idle(summary::Idle {
        label: a.label,
        proto: a.target.proto,
        streams: a.streams,
        opened,
        all_opened: all,
        topics: a.topics,
        open_seconds: open_s,
        open_latency: latency(&open_h),
        failures,
        server_mem_before: mem0,
        server_mem_after: mem1,
        bytes_per_stream: per,
    }))
}

/// `fanout`: N subscribers on one topic, a publisher at a fixed rate.
pub struct FanoutArgs {
    pub label: String,
    pub target: Arc<SubTarget>,
    pub publish: Template,
    pub topic: String,
    pub subscribers: usize,
    pub rate: f64,
    pub duration: Duration,
    pub size: usize,
    pub publishers: usize,
    pub drain: Duration,
    pub pids: Vec<u32>,
    pub concurrency: usize,
}

#[derive(Default)]
struct PubStats {
    acked: Seen,
    errors: u64,
    lat: Option<Histogram<u64>>,
}

pub async fn fanout(a: FanoutArgs) -> anyhow::Result<Summary> {
    let conns = if matches!(a.target.proto, Proto::H2c | Proto::H2) {
        a.subscribers.div_ceil(a.target.streams_per_conn.max(1))
    } else {
        a.subscribers
    };
    check_sockets(conns + a.publishers)?;
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let subs = (0..a.subscribers)
        .map(|i| Sub::new(i, a.topic.clone(), true))
        .collect();
    let handles = spawn_subs(subs, &a.target, &shared, &stop, a.concurrency);
    if !wait_for(Duration::from_secs(120), || {
        shared.ready.load(Ordering::Relaxed) >= a.subscribers
    })
    .await
    {
        stop.cancel();
        bail!(
            "only {} of {} subscribers connected",
            shared.ready.load(Ordering::Relaxed),
            a.subscribers
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sampler_stop = CancellationToken::new();
    let sampler = mem_sampler(a.pids.clone(), sampler_stop.clone());
    let (mem0, cpu0, own0) = (
        stats::total_mem(&a.pids),
        stats::total_cpu(&a.pids),
        own_cpu(),
    );
    let t0 = Instant::now();

    // Ticks hand (seq, send time) to a few keep-alive publishers, so one slow
    // acknowledgement (a group commit) does not hold back the rate.
    let (tx, rx) = tokio::sync::mpsc::channel::<(u64, u64)>(100_000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let pstats = Arc::new(Mutex::new(PubStats {
        lat: Some(new_histogram()),
        ..Default::default()
    }));
    let path = a.publish.path_for(&a.topic, 0);
    let workers: Vec<_> = (0..a.publishers.max(1))
        .map(|_| {
            let (rx, pstats, path) = (rx.clone(), pstats.clone(), path.clone());
            let mut p = Publisher::new(a.publish.clone());
            let size = a.size;
            tokio::spawn(async move {
                let mut body = Vec::new();
                loop {
                    let Some((seq, _)) = rx.lock().await.recv().await else {
                        return;
                    };
                    let sent = now_us();
                    write_payload(&mut body, seq, sent, size);
                    let r = p.post(&path, "text/plain", &body).await;
                    let mut s = pstats.lock().unwrap();
                    match r {
                        Ok((code, _)) if (200..300).contains(&code) => {
                            s.acked.insert(seq);
                            record(s.lat.as_mut().unwrap(), now_us() - sent);
                        }
                        _ => s.errors += 1,
                    }
                }
            })
        })
        .collect();
    let total = (a.rate * a.duration.as_secs_f64()).round() as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut backlog_max = 0;
    for seq in 1..=total {
        tick.tick().await;
        tx.send((seq, now_us())).await?;
        backlog_max = backlog_max.max(tx.max_capacity() - tx.capacity());
    }
    drop(tx);
    for w in workers {
        w.await?;
    }
    let publish_s = t0.elapsed().as_secs_f64();
    let acked = pstats.lock().unwrap().acked.unique;
    let expected = acked * a.subscribers as u64;
    wait_for(a.drain, || {
        shared.unique.load(Ordering::Relaxed) >= expected
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, own1, mem1) = (
        stats::total_cpu(&a.pids),
        own_cpu(),
        stats::total_mem(&a.pids),
    );
    sampler_stop.cancel();
    let mem_peak = sampler.await?;
    stop.cancel();

    let ps = std::mem::take(&mut *pstats.lock().unwrap());
    let mut lat = new_histogram();
    let mut open = new_histogram();
    let (mut delivered, mut dups, mut lost, mut reconnects, mut failures) = (0, 0, 0, 0, 0);
    for h in handles {
        let s = h.await?;
        lat.add(&s.lat)?;
        if let Some(us) = s.open_us {
            record(&mut open, us);
        }
        delivered += s.seen.unique + s.seen.dups;
        dups += s.seen.dups;
        reconnects += s.reconnects;
        failures += s.failures;
        lost += (1..=total)
            .filter(|q| ps.acked.contains(*q) && !s.seen.contains(*q))
            .count() as u64;
    }
    let server_cpu = cpu1 - cpu0;
    Ok(Summary::Fanout(summary::Fanout {
        label: a.label,
        proto: a.target.proto,
        subscribers: a.subscribers,
        rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
        published: total,
        acked,
        publish_errors: ps.errors,
        publish_backlog_max: backlog_max,
        publish_seconds: publish_s,
        publish_latency: latency(ps.lat.as_ref().unwrap()),
        expected,
        delivered,
        lost,
        dups,
        deliveries_per_s: delivered as f64 / elapsed,
        latency: latency(&lat),
        server_cpu_s: server_cpu,
        server_cpu_us_per_delivery: if delivered > 0 {
            server_cpu * 1e6 / delivered as f64
        } else {
            0.0
        },
        client_cpu_s: own1 - own0,
        server_mem_start: mem0,
        server_mem_peak: mem_peak,
        server_mem_end: mem1,
        reconnects,
        stream_failures: failures,
        open_latency: Some(Box::new(latency(&open))),
    }))
}

/// What a publish worker sends each time.
pub enum PublishBody {
    /// One event per request to a topic URL.
    Single { url: Template },
    /// A JSON array of `batch` events per request (pushgate's `/v1/publish`).
    Batch { url: Template, batch: usize },
    /// Device acknowledgements (pushgate's `/v1/devices/{topic}/ack`, one
    /// device per publisher) of cursors published first through `pub_url`,
    /// each ack one event further than the last.
    Ack { url: Template, pub_url: Template },
}

/// Events published per device before the acks start: the acks walk through
/// them, so each one moves the device's position (until they wrap around).
const ACK_SEED_EVENTS: usize = 1000;

/// Publishes `n` events to `topic` and returns the ack bodies of their cursors.
async fn ack_bodies(
    pub_url: &Template,
    topic: &str,
    c: usize,
    n: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut p = Publisher::new(pub_url.clone());
    let path = pub_url.path_for(topic, c);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (code, body) = p.post(&path, "text/plain", b"x").await?;
        anyhow::ensure!((200..300).contains(&code), "seed publish answered {code}");
        let v: Value = serde_json::from_slice(&body)?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("publish answer without id"))?;
        out.push(serde_json::to_vec(&json!({ "id": id }))?);
    }
    Ok(out)
}

/// `publish`: C concurrent publishers for a while; events/s acknowledged.
pub struct PublishArgs {
    pub label: String,
    pub body: PublishBody,
    pub concurrency: usize,
    pub topics: usize,
    pub duration: Duration,
    pub size: usize,
    pub pids: Vec<u32>,
}

pub async fn publish(a: PublishArgs) -> anyhow::Result<Summary> {
    check_sockets(a.concurrency)?;
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(new_histogram()));
    let batch = match a.body {
        PublishBody::Single { .. } | PublishBody::Ack { .. } => 1,
        PublishBody::Batch { batch, .. } => batch,
    };
    let mut preps = Vec::new();
    for c in 0..a.concurrency.max(1) {
        let topics = a.topics.max(1);
        let mut payload = Vec::new();
        write_payload(&mut payload, c as u64, 0, a.size);
        let payload = String::from_utf8(payload)?;
        let (url, path, ctype, bodies) = match &a.body {
            PublishBody::Single { url } => (
                url.clone(),
                url.path_for(&format!("bench-{}", c % topics), c),
                "text/plain",
                vec![payload.into_bytes()],
            ),
            PublishBody::Ack { url, pub_url } => (
                url.clone(),
                url.path_for(&format!("bench-dev-{c}"), c),
                "application/json",
                ack_bodies(pub_url, &format!("bench-acks-{c}"), c, ACK_SEED_EVENTS).await?,
            ),
            PublishBody::Batch { url, batch } => {
                let items: Vec<Value> = (0..*batch)
                    .map(|i| json!({"topic": format!("bench-{}", (c + i) % topics), "data": payload}))
                    .collect();
                (
                    url.clone(),
                    url.path_for("", c),
                    "application/json",
                    vec![serde_json::to_vec(&items)?],
                )
            }
        };
        preps.push((url, path, ctype, bodies));
    }
    // Measured from here: the acks' seed publishes are not part of it.
    let deadline = Instant::now() + a.duration;
    let (cpu0, own0) = (stats::total_cpu(&a.pids), own_cpu());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (url, path, ctype, bodies) in preps {
        let (acked, errors, lat) = (acked.clone(), errors.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Publisher::new(url);
            let mut local = new_histogram();
            let mut k = 0;
            while Instant::now() < deadline {
                let t = now_us();
                let body = &bodies[k % bodies.len()];
                k += 1;
                match p.post(&path, ctype, body).await {
                    Ok((code, _)) if (200..300).contains(&code) => {
                        acked.fetch_add(batch as u64, Ordering::Relaxed);
                        record(&mut local, now_us() - t);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            lat.lock().unwrap().add(&local).ok();
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, own1) = (stats::total_cpu(&a.pids), own_cpu());
    let n = acked.load(Ordering::Relaxed);
    let lat = lat.lock().unwrap();
    Ok(Summary::Publish(summary::Publish {
        label: a.label,
        concurrency: a.concurrency,
        batch,
        topics: a.topics,
        duration_s: elapsed,
        acked_events: n,
        events_per_s: n as f64 / elapsed,
        requests_per_s: lat.len() as f64 / elapsed,
        errors: errors.load(Ordering::Relaxed),
        request_latency: latency(&lat),
        server_cpu_s: cpu1 - cpu0,
        server_cpu_us_per_event: if n > 0 {
            (cpu1 - cpu0) * 1e6 / n as f64
        } else {
            0.0
        },
        client_cpu_s: own1 - own0,
    }))
}

/// `storm`: N streams drop at once, M events per topic are published, all
/// reconnect at once with `Last-Event-ID`; time until every one has caught up.
pub struct StormArgs {
    pub label: String,
    pub target: Arc<SubTarget>,
    pub publish: Template,
    pub streams: usize,
    pub topics: usize,
    pub missed: u64,
    pub publishers: usize,
    pub timeout: Duration,
    pub concurrency: usize,
    pub pids: Vec<u32>,
}

async fn publish_round(
    publish: &Template,
    topics: usize,
    seqs: std::ops::RangeInclusive<u64>,
    publishers: usize,
) -> anyhow::Result<u64> {
    let errors = Arc::new(AtomicU64::new(0));
    let workers = publishers.clamp(1, topics);
    // One topic's events go through one worker in order, so the payload seq
    // is also the order the server stored them in.
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (errors, publish, seqs) = (errors.clone(), publish.clone(), seqs.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Publisher::new(publish.clone());
            let mut body = Vec::new();
            for seq in seqs {
                for t in (w..topics).step_by(workers) {
                    write_payload(&mut body, seq, now_us(), 32);
                    let path = publish.path_for(&format!("storm-{t}"), t);
                    match p.post(&path, "text/plain", &body).await {
                        Ok((c, _)) if (200..300).contains(&c) => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(errors.load(Ordering::Relaxed))
}

pub async fn storm(a: StormArgs) -> anyhow::Result<Summary> {
    check_sockets(a.streams + a.publishers)?;
    let topics = a.topics.max(1);
    let topic_of = |i: usize| format!("storm-{}", i % topics);
    // Phase 1: everyone connected and holding an id for event 1.
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let mut subs: Vec<Sub> = (0..a.streams)
        .map(|i| Sub::new(i, topic_of(i), false))
        .collect();
    for s in &mut subs {
        s.target = 1;
    }
    let handles = spawn_subs(subs, &a.target, &shared, &stop, a.concurrency);
    if !wait_for(Duration::from_secs(120), || {
        shared.ready.load(Ordering::Relaxed) >= a.streams
    })
    .await
    {
        stop.cancel();
        bail!(
            "only {} of {} streams opened",
            shared.ready.load(Ordering::Relaxed),
            a.streams
        );
    }
    let mut pub_errors = publish_round(&a.publish, topics, 1..=1, a.publishers).await?;
    let base_ok = wait_for(Duration::from_secs(30), || {
        shared.done.load(Ordering::Relaxed) >= a.streams
    })
    .await;
    // Phase 2: all drop at once; M events per topic are published meanwhile.
    stop.cancel();
    let mut subs = Vec::with_capacity(a.streams);
    for h in handles {
        subs.push(h.await?);
    }
    pub_errors += publish_round(&a.publish, topics, 2..=a.missed + 1, a.publishers).await?;
    // Phase 3: all reconnect at once with their Last-Event-ID.
    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    for s in &mut subs {
        s.target = a.missed + 1;
        s.done_at_us = None;
        s.open_us = None;
    }
    let cpu0 = stats::total_cpu(&a.pids);
    let t0 = now_us();
    let handles = spawn_subs(subs, &a.target, &shared, &stop, a.concurrency);
    let all = wait_for(a.timeout, || {
        shared.done.load(Ordering::Relaxed) >= a.streams
    })
    .await;
    let took = (now_us() - t0) as f64 / 1e6;
    // Anything late (duplicates) would show up shortly after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu1 = stats::total_cpu(&a.pids);
    stop.cancel();
    let mut resume = new_histogram();
    let (mut lost, mut dups, mut failures, mut reconnects, mut done_last) = (0, 0, 0, 0, 0);
    for h in handles {
        let s = h.await?;
        lost += s.seen.missing(1, a.missed + 1);
        dups += s.seen.dups;
        failures += s.failures;
        reconnects += s.reconnects;
        if let Some(d) = s.done_at_us {
            record(&mut resume, d - t0);
            done_last = done_last.max(d - t0);
        }
    }
    Ok(Summary::Storm(summary::Storm {
        label: a.label,
        proto: a.target.proto,
        streams: a.streams,
        topics,
        missed: a.missed,
        base_delivered: base_ok,
        all_resumed: all,
        resumed: shared.done.load(Ordering::Relaxed),
        seconds_to_all_resumed: if all { done_last as f64 / 1e6 } else { took },
        resume_latency: latency(&resume),
        expected: a.streams as u64 * a.missed,
        lost,
        dups,
        publish_errors: pub_errors,
        stream_failures: failures,
        reconnects,
        server_cpu_s: cpu1 - cpu0,
    }))
}
