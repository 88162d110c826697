//! Degrade switches: three layers (connections, events, storage), each
//! `off`, `on` or `auto`, plus the `auto` thresholds with their hysteresis.
//! All of them are set in the gateway config and overridden for every pod
//! at once by the watched routing table (`degrade:`), without a restart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One layer's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Never degraded.
    #[default]
    Off,
    /// Degraded now.
    On,
    /// Degraded while its breaker is tripped.
    Auto,
}

impl Switch {
    /// As written in config, tables and the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Switch::Off => "off",
            Switch::On => "on",
            Switch::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Switch::Off),
            "on" => Ok(Switch::On),
            "auto" => Ok(Switch::Auto),
            other => Err(format!("{other:?} is not one of: off, on, auto")),
        }
    }
}

/// The three switches and the `auto` marks; in the routing table an absent
/// one leaves the pod's configured value.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Switches {
    /// Refuse new streams (open ones stay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Switch>,
    /// Live fan-out for `high` priority only; the rest is replayed after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Switch>,
    /// Publishes answered 503, replays from the hot ring only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Switch>,
    /// The `auto` breakers' marks, replacing the configured ones whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoThresholds>,
}

impl Switches {
    /// True when no switch is set.
    pub fn is_empty(&self) -> bool {
        *self == Switches::default()
    }

    /// `self`, with the switches `over` sets replacing them.
    pub fn overridden_by(&self, over: &Switches) -> Switches {
        Switches {
            connections: over.connections.or(self.connections),
            events: over.events.or(self.events),
            storage: over.storage.or(self.storage),
            auto: over.auto.or(self.auto),
        }
    }
}

/// The config section `degrade`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DegradeConfig {
    /// Refuse new streams.
    pub connections: Switch,
    /// High-priority live fan-out only.
    pub events: Switch,
    /// Ring-only replays, publishes 503.
    pub storage: Switch,
    /// When `auto` trips and resets.
    pub auto: AutoThresholds,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        DegradeConfig {
            connections: Switch::Off,
            events: Switch::Off,
            storage: Switch::Off,
            auto: AutoThresholds::default(),
        }
    }
}

impl DegradeConfig {
    /// The configured switches and marks, all set.
    pub fn switches(&self) -> Switches {
        Switches {
            connections: Some(self.connections),
            events: Some(self.events),
            storage: Some(self.storage),
            auto: Some(self.auto),
        }
    }
}

/// Trip and reset marks of the `auto` breakers: a breaker trips when its
/// measure is over the trip mark (for `window`, except connections: at
/// once) and resets when it has stayed under the lower reset mark as long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoThresholds {
    /// Open streams as a share of `limits.max_connections` that trips.
    pub connections_trip: f64,
    /// Share below which it resets.
    pub connections_reset: f64,
    /// Event-loop lag that trips the events layer.
    #[serde(with = "humantime_serde")]
    pub event_loop_lag_trip: Duration,
    /// Lag below which it resets.
    #[serde(with = "humantime_serde")]
    pub event_loop_lag_reset: Duration,
    /// Store probe p99 that trips the storage layer.
    #[serde(with = "humantime_serde")]
    pub store_p99_trip: Duration,
    /// Probe p99 below which it resets.
    #[serde(with = "humantime_serde")]
    pub store_p99_reset: Duration,
    /// How long lag or store latency must hold before a trip or a reset.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often the breakers measure (and the store is probed).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
}

impl Default for AutoThresholds {
    fn default() -> Self {
        AutoThresholds {
            connections_trip: 0.95,
            connections_reset: 0.85,
            event_loop_lag_trip: Duration::from_millis(250),
            event_loop_lag_reset: Duration::from_millis(50),
            store_p99_trip: Duration::from_millis(800),
            store_p99_reset: Duration::from_millis(200),
            window: Duration::from_secs(10),
            probe_interval: Duration::from_millis(250),
        }
    }
}

impl AutoThresholds {
    /// Rejects marks that cannot work (a reset mark above its trip mark).
    pub fn validate(&self) -> Result<(), String> {
        let share = |v: f64| v > 0.0 && v <= 1.0;
        if !share(self.connections_trip)
            || !share(self.connections_reset)
            || self.connections_reset >= self.connections_trip
        {
            return Err("connections_reset < connections_trip, both in (0, 1]".into());
        }
        if self.event_loop_lag_reset >= self.event_loop_lag_trip
            || self.store_p99_reset >= self.store_p99_trip
        {
            return Err("every reset mark must be below its trip mark".into());
        }
        if self.probe_interval.is_zero() || self.window < self.probe_interval {
            return Err("probe_interval must be positive and at most window".into());
        }
        Ok(())
    }
}
