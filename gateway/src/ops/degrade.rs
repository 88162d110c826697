//! Degrade switches at run time: which layers are degraded now, and the
//! `auto` breakers that trip and reset them with hysteresis. The hot paths
//! read one atomic per layer ([`Flags`]); the breaker task measures, and
//! every change is logged and exported (`pushgate_degraded{layer}`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec};

pub use pushgate_contract::degrade::{AutoThresholds, DegradeConfig, Switch, Switches};

use crate::ops::metrics::Metrics;
use crate::routing::Routing;
use crate::store::Store;

/// A layer that can be degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// New streams are refused (open ones stay).
    Connections,
    /// Only `high` events fan out live; the rest reach streams by replay later.
    Events,
    /// Publishes are answered 503; replays come from the hot ring only.
    Storage,
}

impl Layer {
    /// Every layer.
    pub const ALL: [Layer; 3] = [Layer::Connections, Layer::Events, Layer::Storage];

    /// Label value and config key.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Connections => "connections",
            Layer::Events => "events",
            Layer::Storage => "storage",
        }
    }

    fn of(self, s: &Switches) -> Switch {
        match self {
            Layer::Connections => s.connections,
            Layer::Events => s.events,
            Layer::Storage => s.storage,
        }
        .unwrap_or_default()
    }
}

/// Which layers are degraded now.
#[derive(Debug, Default)]
pub struct Flags {
    on: [AtomicBool; 3],
}

impl Flags {
    /// Whether `layer` is degraded.
    pub fn is_on(&self, layer: Layer) -> bool {
        self.on[layer as usize].load(Ordering::Acquire)
    }

    fn set(&self, layer: Layer, on: bool) -> bool {
        self.on[layer as usize].swap(on, Ordering::AcqRel) != on
    }
}

/// One `auto` breaker: it trips when its measure has been over the trip
/// mark for `hold`, and resets when it has been under the (lower) reset
/// mark for `hold`; in between it keeps its state.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    tripped: bool,
    since: Option<Instant>,
}

impl Breaker {
    /// Whether it is tripped.
    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    /// One measurement; returns the new state when it changed.
    pub fn observe(
        &mut self,
        now: Instant,
        over: bool,
        under: bool,
        hold: Duration,
    ) -> Option<bool> {
        let toward_change = if self.tripped { under } else { over };
        if !toward_change {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) < hold {
            return None;
        }
        self.tripped = !self.tripped;
        self.since = None;
        Some(self.tripped)
    }
}

/// Store probe latencies of the last window.
#[derive(Debug, Default)]
struct Samples(VecDeque<(Instant, Duration)>);

impl Samples {
    fn push(&mut self, now: Instant, d: Duration, window: Duration) {
        self.0.push_back((now, d));
        while self
            .0
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
        {
            self.0.pop_front();
        }
    }

    /// The 99th percentile (nearest rank).
    fn p99(&self) -> Duration {
        let mut v: Vec<Duration> = self.0.iter().map(|(_, d)| *d).collect();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_unstable();
        let rank = ((v.len() as f64) * 0.99).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

/// Measures the breakers take, once per probe.
#[derive(Debug, Clone, Copy)]
pub struct Measures {
    /// Open streams / `limits.max_connections`.
    pub connections: f64,
    /// Last event-loop lag sample.
    pub event_loop_lag: Duration,
    /// How long the store took to answer the probe (its timeout if it failed).
    pub store_probe: Duration,
}

/// The degrade state of one gateway.
pub struct Degrade {
    config: DegradeConfig,
    table: Mutex<Switches>,
    state: Mutex<(Vec<Breaker>, Samples)>,
    /// Read by the hot paths.
    pub flags: Arc<Flags>,
    degraded: IntGaugeVec,
    trips: IntCounterVec,
}

impl Degrade {
    /// Switches as configured, every layer not degraded yet.
    pub fn new(
        config: DegradeConfig,
        flags: Arc<Flags>,
        degraded: IntGaugeVec,
        trips: IntCounterVec,
    ) -> Self {
        for l in Layer::ALL {
            degraded.with_label_values(&[l.as_str()]).set(0);
            trips.with_label_values(&[l.as_str()]);
        }
        let d = Degrade {
            config,
            table: Mutex::new(Switches::default()),
            state: Mutex::new((vec![Breaker::default(); 3], Samples::default())),
            flags,
            degraded,
            trips,
        };
        d.recompute();
        d
    }

    /// The `auto` thresholds in force: the table's, else the config's.
    pub fn thresholds(&self) -> AutoThresholds {
        self.switches().auto.unwrap_or(self.config.auto)
    }

    /// The switches in force: the config's, overridden by the watched table.
    pub fn switches(&self) -> Switches {
        let table = *self.table.lock().unwrap_or_else(|p| p.into_inner());
        self.config.switches().overridden_by(&table)
    }

    /// A new watched table's switches; returns the layers that changed.
    pub fn set_table(&self, s: Switches) -> Vec<(Layer, bool)> {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.recompute()
    }

    /// Feeds one round of measures to the breakers; returns the layers
    /// whose degraded state changed.
    pub fn observe(&self, now: Instant, m: Measures) -> Vec<(Layer, bool)> {
        let switches = self.switches();
        let a = switches.auto.unwrap_or(self.config.auto);
        let mut tripped = Vec::new();
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (breakers, samples) = &mut *st;
            samples.push(now, m.store_probe, a.window);
            let p99 = samples.p99();
            let inputs = [
                (
                    m.connections >= a.connections_trip,
                    m.connections < a.connections_reset,
                    Duration::ZERO,
                ),
                (
                    m.event_loop_lag > a.event_loop_lag_trip,
                    m.event_loop_lag < a.event_loop_lag_reset,
                    a.window,
                ),
                (p99 > a.store_p99_trip, p99 < a.store_p99_reset, a.window),
            ];
            for (l, (over, under, hold)) in Layer::ALL.into_iter().zip(inputs) {
                // A layer switched off or on by hand does not run its breaker.
                if l.of(&switches) != Switch::Auto {
                    breakers[l as usize] = Breaker::default();
                    continue;
                }
                if breakers[l as usize].observe(now, over, under, hold) == Some(true) {
                    tripped.push(l);
                }
            }
        }
        for l in tripped {
            self.trips.with_label_values(&[l.as_str()]).inc();
            tracing::warn!(layer = l.as_str(), ?m, "breaker tripped");
        }
        self.recompute()
    }

    fn recompute(&self) -> Vec<(Layer, bool)> {
        let switches = self.switches();
        let breakers = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0.iter().map(Breaker::is_tripped).collect::<Vec<_>>()
        };
        let mut changed = Vec::new();
        for l in Layer::ALL {
            let on = match l.of(&switches) {
                Switch::Off => false,
                Switch::On => true,
                Switch::Auto => breakers[l as usize],
            };
            if self.flags.set(l, on) {
                self.degraded
                    .with_label_values(&[l.as_str()])
                    .set(on as i64);
                tracing::warn!(layer = l.as_str(), degraded = on, "degrade layer changed");
                changed.push((l, on));
            }
        }
        changed
    }
}

/// Called with the layers that changed and whether each is now degraded.
pub type OnChange = Box<dyn Fn(&[(Layer, bool)]) + Send + Sync>;

/// What the breaker task reads and whom it tells, handed in by the
/// gateway's owner: the breakers hold no reference to the engine.
pub struct Inputs {
    /// The switches and breakers.
    pub degrade: Arc<Degrade>,
    /// The routing table, whose `degrade` part sets the switches.
    pub routing: Arc<Routing>,
    /// Probed while the storage layer is `auto`.
    pub store: Arc<dyn Store>,
    /// Connections and event-loop lag.
    pub metrics: Arc<Metrics>,
    /// `limits.max_connections`: the connections layer trips near it.
    pub max_connections: usize,
    /// Acts on layers that changed.
    pub on_change: OnChange,
}

/// Applies the routing table's switches as soon as a new table is
/// installed, and feeds the breakers every probe interval.
pub fn spawn(inputs: Inputs) {
    let n = Arc::new(inputs);
    let i = n.clone();
    tokio::spawn(async move {
        let mut changes = i.routing.changes();
        loop {
            let changed = i.degrade.set_table(i.routing.table().degrade);
            (i.on_change)(&changed);
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(measure(n));
}

async fn measure(i: Arc<Inputs>) {
    let ticker = |every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    };
    let mut every = i.degrade.thresholds().probe_interval;
    let mut tick = ticker(every);
    loop {
        tick.tick().await;
        // The table may bring new marks at any time; they apply from this round.
        let a = i.degrade.thresholds();
        if a.probe_interval != every {
            every = a.probe_interval;
            tick = ticker(every);
        }
        // A store that does not answer within twice the trip mark counts as that slow.
        let limit = a.store_p99_trip * 2;
        let start = Instant::now();
        let store_probe = if i.degrade.switches().storage == Some(Switch::Auto) {
            match tokio::time::timeout(limit, i.store.ping()).await {
                Ok(Ok(())) => start.elapsed(),
                _ => limit,
            }
        } else {
            Duration::ZERO
        };
        let m = Measures {
            connections: i.metrics.connections.get() as f64 / i.max_connections.max(1) as f64,
            event_loop_lag: Duration::from_secs_f64(
                i.metrics.event_loop_lag_seconds.get().max(0.0),
            ),
            store_probe,
        };
        let changes = i.degrade.observe(Instant::now(), m);
        (i.on_change)(&changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_trips_after_its_hold_and_resets_only_below_the_lower_mark() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Breaker::default();
        assert_eq!(b.observe(t0, true, false, s(10)), None);
        assert_eq!(
            b.observe(t0 + s(5), false, false, s(10)),
            None,
            "a dip restarts the hold"
        );
        assert_eq!(b.observe(t0 + s(6), true, false, s(10)), None);
        assert_eq!(b.observe(t0 + s(16), true, false, s(10)), Some(true));
        // Between the marks it stays tripped however long.
        assert_eq!(b.observe(t0 + s(100), false, false, s(10)), None);
        assert!(b.is_tripped());
        assert_eq!(b.observe(t0 + s(101), false, true, s(10)), None);
        assert_eq!(b.observe(t0 + s(111), false, true, s(10)), Some(false));
        let mut now = Breaker::default();
        assert_eq!(
            now.observe(t0, true, false, Duration::ZERO),
            Some(true),
            "no hold: at once"
        );
    }

    #[test]
    fn p99_of_a_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut s = Samples::default();
        for i in 0..100u64 {
            s.push(t0, Duration::from_millis(i), w);
        }
        assert_eq!(s.p99(), Duration::from_millis(98));
        s.push(t0 + Duration::from_secs(11), Duration::from_millis(1), w);
        assert_eq!(
            s.p99(),
            Duration::from_millis(1),
            "old samples leave the window"
        );
    }

    fn degrade(config: DegradeConfig) -> Degrade {
        let g = IntGaugeVec::new(prometheus::Opts::new("d", "d"), &["layer"]).unwrap();
        let c = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["layer"]).unwrap();
        Degrade::new(config, Arc::default(), g, c)
    }

    #[test]
    fn the_table_overrides_the_config_and_auto_follows_the_breaker() {
        let d = degrade(DegradeConfig {
            connections: Switch::Auto,
            ..DegradeConfig::default()
        });
        let calm = Measures {
            connections: 0.5,
            event_loop_lag: Duration::ZERO,
            store_probe: Duration::ZERO,
        };
        let t0 = Instant::now();
        assert!(d.observe(t0, calm).is_empty());
        let full = Measures {
            connections: 0.96,
            ..calm
        };
        assert_eq!(d.observe(t0, full), [(Layer::Connections, true)]);
        assert!(
            d.observe(
                t0,
                Measures {
                    connections: 0.9,
                    ..calm
                }
            )
            .is_empty(),
            "hysteresis"
        );
        assert_eq!(
            d.observe(
                t0,
                Measures {
                    connections: 0.8,
                    ..calm
                }
            ),
            [(Layer::Connections, false)]
        );
        let on = Switches {
            storage: Some(Switch::On),
            connections: Some(Switch::Off),
            ..Switches::default()
        };
        assert_eq!(d.set_table(on), [(Layer::Storage, true)]);
        assert!(d.observe(t0, full).is_empty(), "switched off by the table");
        assert_eq!(d.set_table(Switches::default()), [(Layer::Storage, false)]);
    }

    #[test]
    fn the_tables_marks_replace_the_configured_ones_at_once() {
        let d = degrade(DegradeConfig {
            connections: Switch::Auto,
            ..DegradeConfig::default()
        });
        let at = |share| Measures {
            connections: share,
            event_loop_lag: Duration::ZERO,
            store_probe: Duration::ZERO,
        };
        let t0 = Instant::now();
        assert!(
            d.observe(t0, at(0.6)).is_empty(),
            "under the configured 95 %"
        );
        let low = AutoThresholds {
            connections_trip: 0.5,
            connections_reset: 0.4,
            ..AutoThresholds::default()
        };
        d.set_table(Switches {
            auto: Some(low),
            ..Switches::default()
        });
        assert_eq!(d.thresholds(), low);
        assert_eq!(d.observe(t0, at(0.6)), [(Layer::Connections, true)]);
        // New marks move the reset too: 0.6 is now under a 0.7 reset mark.
        d.set_table(Switches {
            auto: Some(AutoThresholds {
                connections_trip: 0.8,
                connections_reset: 0.7,
                ..low
            }),
            ..Switches::default()
        });
        assert_eq!(d.observe(t0, at(0.6)), [(Layer::Connections, false)]);
        d.set_table(Switches::default());
        assert_eq!(
            d.thresholds(),
            AutoThresholds::default(),
            "back to the config's"
        );
    }
}
