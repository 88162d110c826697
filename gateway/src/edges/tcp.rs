//! The TCP edge: every accepted connection is bounded in time and in number,
//! so that idle or half-sent connections from anyone cannot exhaust file
//! descriptors or starve real streams.
//!
//! - A new connection must bring a complete request head within
//!   `header_read_timeout`; one with no request in flight (HTTP/1.1
//!   keep-alive, HTTP/2 without streams) is closed after `idle_timeout`.
//!   A connection with a request in flight (a stream) has no deadline.
//! - Each listener has a cap on open connections, below the open-file limit
//!   with a reserve for everything else (store, peers, the metrics port).
//!   At the cap, the connection idle the longest is closed to make room, the
//!   way nginx reuses idle keep-alive connections: an attacker holding idle
//!   sockets only ever displaces its own kind, never a stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use pushgate_contract::config::{EdgeConfig, MIN_HEADER_BYTES};

/// Which port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// API and streams.
    Api,
    /// Metrics and health.
    Ops,
}

impl Listener {
    fn index(self) -> usize {
        self as usize
    }

    /// Label value of the connection metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Ops => "ops",
        }
    }
}

/// Why the edge closed a connection (label of `tcp_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request head in time.
    HeaderTimeout,
    /// No request in flight for too long.
    IdleTimeout,
    /// Closed to make room at the cap.
    Evicted,
    /// At the cap with nothing to evict: closed right after accept.
    OverCapacity,
    /// The request head was too large (hyper answered 431).
    HeaderTooLarge,
    /// More HTTP/2 control frames than `edge.max_control_frames_per_s`.
    ControlFlood,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::OverCapacity => "over_capacity",
            Closed::HeaderTooLarge => "header_too_large",
            Closed::ControlFlood => "control_flood",
        }
    }
}

/// Metrics of the edge.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// Open connections per listener (`tcp_connections{listener}`).
    pub open: [IntGauge; 2],
    /// The cap per listener (`tcp_connection_limit{listener}`).
    pub cap: [IntGauge; 2],
    /// Connections closed by the edge (`tcp_connections_closed_total{reason}`).
    pub closed: IntCounterVec,
    /// Connections refused at the cap (`limit_refusals_total{layer="tcp"}`).
    pub refused: IntCounter,
}

struct Budget {
    open: AtomicUsize,
    cap: usize,
    /// Evicted connections still closing: their descriptors are not free yet.
    closing: AtomicUsize,
    /// How many may be closing at once (half the reserve: they overshoot the cap).
    slack: usize,
    /// Connections without a request in flight, oldest idle first.
    idle: Mutex<BTreeMap<u64, Weak<Conn>>>,
}

/// What to do with a just-accepted connection.
pub enum Admit {
    /// Serve it.
    Serve(Arc<Conn>),
    /// At the cap, and room is being made: try again in a moment.
    Wait,
    /// At the cap with nothing idle to close: drop it now.
    Full,
}

/// Connection bookkeeping shared by the accept loops.
pub struct Edge {
    header_timeout: Duration,
    idle_timeout: Duration,
    budgets: [Budget; 2],
    seq: AtomicU64,
    metrics: EdgeMetrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Edge {
    /// The edge for `cfg` under the open-file limit `nofile`.
    pub fn new(cfg: &EdgeConfig, nofile: u64, metrics: EdgeMetrics) -> Arc<Edge> {
        let caps = [cfg.api_cap(nofile), cfg.max_ops_connections];
        for (i, c) in caps.iter().enumerate() {
            metrics.cap[i].set(*c as i64);
        }
        let budget = |cap| Budget {
            open: AtomicUsize::new(0),
            cap,
            closing: AtomicUsize::new(0),
            slack: (cfg.fd_reserve / 2).max(1),
            idle: Mutex::new(BTreeMap::new()),
        };
        Arc::new(Edge {
            header_timeout: cfg.header_read_timeout,
            idle_timeout: cfg.idle_timeout,
            budgets: [budget(caps[0]), budget(caps[1])],
            seq: AtomicU64::new(0),
            metrics,
        })
    }

    /// The cap of `l`.
    pub fn cap(&self, l: Listener) -> usize {
        self.budgets[l.index()].cap
    }

    fn count(&self, why: Closed) {
        self.metrics.closed.with_label_values(&[why.as_str()]).inc();
    }

    /// Takes a just-accepted connection on `l`. At the cap the connection
    /// idle the longest is told to close to make room; while too many are
    /// still closing the caller should wait a moment and ask again.
    pub fn admit(self: &Arc<Self>, l: Listener) -> Admit {
        let b = &self.budgets[l.index()];
        let open = b.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > b.cap {
            loop {
                if b.closing.load(Ordering::Acquire) >= b.slack {
                    b.open.fetch_sub(1, Ordering::AcqRel);
                    return Admit::Wait;
                }
                let Some((_, victim)) = lock(&b.idle).pop_first() else {
                    b.open.fetch_sub(1, Ordering::AcqRel);
                    self.count(Closed::OverCapacity);
                    self.metrics.refused.inc();
                    return Admit::Full;
                };
                // A stale entry (its connection is gone already) frees nothing.
                if let Some(v) = victim.upgrade() {
                    if !v.evicted.swap(true, Ordering::AcqRel) {
                        b.closing.fetch_add(1, Ordering::AcqRel);
                        v.kill.cancel();
                        self.count(Closed::Evicted);
                        break;
                    }
                }
            }
        }
        self.metrics.open[l.index()].inc();
        let conn = Arc::new(Conn {
            edge: self.clone(),
            listener: l,
            kill: CancellationToken::new(),
            evicted: AtomicBool::new(false),
            state: Mutex::new(ConnState {
                inflight: 0,
                since: Instant::now(),
                served: false,
                key: None,
            }),
            wake: Notify::new(),
        });
        conn.go_idle(&mut lock(&conn.state));
        Admit::Serve(conn)
    }

    /// Counts a connection dropped because the cap stayed full.
    pub fn count_over_capacity(&self) {
        self.count(Closed::OverCapacity);
    }
}

struct ConnState {
    inflight: usize,
    /// When `inflight` last became 0.
    since: Instant,
    /// A request completed on this connection before.
    served: bool,
    /// Its entry among the idle connections, while idle.
    key: Option<u64>,
}

/// One accepted connection. Dropping it gives its place back.
pub struct Conn {
    edge: Arc<Edge>,
    listener: Listener,
    /// Cancelling it closes the connection.
    pub kill: CancellationToken,
    /// Closed to make room: its place is given back once it is gone.
    evicted: AtomicBool,
    state: Mutex<ConnState>,
    wake: Notify,
}

impl Conn {
    fn budget(&self) -> &Budget {
        &self.edge.budgets[self.listener.index()]
    }

    fn go_idle(self: &Arc<Self>, st: &mut ConnState) {
        let key = self.edge.seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.budget().idle).insert(key, Arc::downgrade(self));
        st.key = Some(key);
        st.since = Instant::now();
    }

    /// Marks a request in flight until the returned guard is dropped (hold
    /// it until the response body has been sent).
    pub fn begin(self: &Arc<Self>) -> Busy {
        let mut st = lock(&self.state);
        st.inflight += 1;
        if let Some(key) = st.key.take() {
            lock(&self.budget().idle).remove(&key);
        }
        drop(st);
        self.wake.notify_one();
        Busy(self.clone())
    }

    /// Resolves when the connection has overstayed a deadline, with the
    /// reason; never while a request is in flight.
    pub async fn watchdog(&self) -> Closed {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some((at, _)) = self.deadline() else {
                notified.await;
                continue;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {
                    // A request may have come and gone meanwhile: look again.
                    if let Some((at, why)) = self.deadline() {
                        if at <= Instant::now() {
                            self.edge.count(why);
                            return why;
                        }
                    }
                }
                _ = notified => {}
            }
        }
    }

    fn deadline(&self) -> Option<(Instant, Closed)> {
        let st = lock(&self.state);
        (st.inflight == 0).then(|| {
            if st.served {
                (st.since + self.edge.idle_timeout, Closed::IdleTimeout)
            } else {
                (st.since + self.edge.header_timeout, Closed::HeaderTimeout)
            }
        })
    }

    /// Counts a close decided by hyper (e.g. a head over the size limit).
    pub fn closed_by_protocol(&self, why: Closed) {
        self.edge.count(why);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let key = lock(&self.state).key.take();
        let b = self.budget();
        if let Some(key) = key {
            lock(&b.idle).remove(&key);
        }
        if self.evicted.load(Ordering::Acquire) {
            b.closing.fetch_sub(1, Ordering::AcqRel);
        }
        b.open.fetch_sub(1, Ordering::AcqRel);
        self.edge.metrics.open[self.listener.index()].dec();
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let conn = &self.0;
        let mut st = lock(&conn.state);
        st.inflight -= 1;
        if st.inflight == 0 {
            st.served = true;
            conn.go_idle(&mut st);
        }
        drop(st);
        conn.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn edge(cfg: &EdgeConfig, nofile: u64) -> Arc<Edge> {
        let g = |n: &str| IntGauge::new(n, n).unwrap();
        Edge::new(
            cfg,
            nofile,
            EdgeMetrics {
                open: [g("a"), g("b")],
                cap: [g("c"), g("d")],
                closed: IntCounterVec::new(Opts::new("e", "e"), &["reason"]).unwrap(),
                refused: IntCounter::new("f", "f").unwrap(),
            },
        )
    }

    #[test]
    fn cap_leaves_the_reserve() {
        let cfg = EdgeConfig::default();
        assert_eq!(cfg.api_cap(20_000), 19_488);
        let capped = EdgeConfig {
            max_tcp_connections: 100,
            ..EdgeConfig::default()
        };
        assert_eq!(capped.api_cap(20_000), 100);
        assert_eq!(capped.api_cap(300), 1, "never more than the budget");
        assert!(EdgeConfig {
            max_header_bytes: 100,
            ..EdgeConfig::default()
        }
        .validate()
        .is_err());
        cfg.validate().unwrap();
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_goes_and_busy_ones_stay() {
        let cfg = EdgeConfig {
            max_tcp_connections: 2,
            ..EdgeConfig::default()
        };
        let e = edge(&cfg, 20_000);
        let serve = |a: Admit| match a {
            Admit::Serve(c) => c,
            _ => panic!("not admitted"),
        };
        let busy = serve(e.admit(Listener::Api));
        let _req = busy.begin();
        let idle = serve(e.admit(Listener::Api));
        let newer = serve(e.admit(Listener::Api));
        assert!(idle.kill.is_cancelled(), "the idle one makes room");
        assert!(!busy.kill.is_cancelled());
        let _r2 = newer.begin();
        // Everything busy: nothing to evict, the newcomer is turned away.
        assert!(matches!(e.admit(Listener::Api), Admit::Full));
        drop(idle);
        // The ops port has its own budget.
        assert!(matches!(e.admit(Listener::Ops), Admit::Serve(_)));
    }

    #[tokio::test]
    async fn while_evicted_ones_are_closing_newcomers_wait() {
        let cfg = EdgeConfig {
            max_tcp_connections: 1,
            fd_reserve: 4,
            max_ops_connections: 1,
            ..EdgeConfig::default()
        };
        let e = edge(&cfg, 20_000);
        let mut held = Vec::new();
        // Slack 2: two evictions may be in flight, the third must wait.
        for _ in 0..3 {
            match e.admit(Listener::Api) {
                Admit::Serve(c) => held.push(c),
                _ => panic!("admitted while room can be made"),
            }
        }
        assert!(matches!(e.admit(Listener::Api), Admit::Wait));
        // The evicted ones finish closing: room again.
        held.drain(..2);
        assert!(matches!(e.admit(Listener::Api), Admit::Serve(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_apply_only_without_a_request_in_flight() {
        let cfg = EdgeConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..EdgeConfig::default()
        };
        let e = edge(&cfg, 20_000);
        let admit = || match e.admit(Listener::Api) {
            Admit::Serve(c) => c,
            _ => panic!("not admitted"),
        };
        let c = admit();
        let t0 = Instant::now();
        assert_eq!(c.watchdog().await, Closed::HeaderTimeout);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));

        let c = admit();
        let req = c.begin();
        let wd = {
            let c = c.clone();
            tokio::spawn(async move { c.watchdog().await })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!wd.is_finished(), "a request in flight has no deadline");
        let t1 = Instant::now();
        drop(req);
        assert_eq!(wd.await.unwrap(), Closed::IdleTimeout);
        assert_eq!(t1.elapsed(), Duration::from_secs(60));
    }
}
