//! Canary routing by trace-ID hash (DESIGN 3.3). Each pod knows its track and
//! watches the routing table; every new stream is served here if its bucket
//! belongs to this track, else proxied to the other track's Service. When the
//! table changes, only the streams whose bucket moved are closed (jittered
//! `retry:`), and they resume on the other track from the shared store.

pub mod bucket;
pub mod key;
pub mod proxy;
pub mod source;
pub mod table;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use prometheus::{IntCounter, IntGaugeVec};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use bucket::Track;
pub use table::RoutingTable;

/// Header set on proxied requests: the receiving pod serves them itself.
pub const PROXIED_HEADER: &str = "x-pushgate-proxied";

/// How this pod takes part in routing (config key `routing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSettings {
    /// This pod's track.
    pub track: Track,
    /// Base URL of the other track's Service (`http://name-canary:8080`);
    /// without it every stream is served here.
    pub peer_url: Option<String>,
    /// Routing table file, re-read when it changes (outside Kubernetes).
    pub table_file: Option<PathBuf>,
    /// `namespace/name` of the routing-table ConfigMap to watch through the
    /// Kubernetes API (in-cluster credentials or `KUBECONFIG`).
    pub configmap: Option<String>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            track: Track::Stable,
            peer_url: None,
            table_file: None,
            configmap: None,
        }
    }
}

/// Where a stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve here; `key` is `None` when a header forced the track (never moved).
    Local {
        /// The stream's routing key.
        key: Option<String>,
    },
    /// Forward to the other track.
    Proxy,
}

/// A routing decision plus the cookie to set, if a key was issued.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Where to serve.
    pub decision: Decision,
    /// `Set-Cookie` value for an issued key.
    pub set_cookie: Option<String>,
}

/// Routing state of one pod.
pub struct Routing {
    /// This pod's track.
    pub track: Track,
    /// The other track's base URL.
    pub peer_url: Option<String>,
    table: watch::Sender<RoutingTable>,
    streams: Mutex<HashMap<u64, (String, CancellationToken)>>,
    next_id: AtomicU64,
    streams_by_track: IntGaugeVec,
    moved: IntCounter,
}

/// Registration of a routed stream; dropping it forgets the stream.
pub struct RouteGuard {
    routing: Arc<Routing>,
    id: u64,
    /// Cancelled when the stream's bucket moves to the other track.
    pub moved: CancellationToken,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routing
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.routing
            .streams_by_track
            .with_label_values(&[self.routing.track.as_str()])
            .dec();
    }
}

impl Routing {
    /// Routing for a pod of `track`.
    pub fn new(
        settings: &RoutingSettings,
        streams_by_track: IntGaugeVec,
        moved: IntCounter,
    ) -> Arc<Routing> {
        Arc::new(Routing {
            track: settings.track,
            peer_url: settings.peer_url.clone(),
            table: watch::channel(RoutingTable::default()).0,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            streams_by_track,
            moved,
        })
    }

    /// The table in force.
    pub fn table(&self) -> RoutingTable {
        self.table.borrow().clone()
    }

    /// Decides where a new stream goes.
    pub fn decide(&self, headers: &HeaderMap, client_id: Option<&str>) -> Routed {
        let table = self.table();
        let forced = headers
            .get(table.override_header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Track>().ok());
        if let Some(t) = forced {
            let decision = if t == self.track
                || self.peer_url.is_none()
                || headers.contains_key(PROXIED_HEADER)
            {
                Decision::Local { key: None }
            } else {
                Decision::Proxy
            };
            return Routed {
                decision,
                set_cookie: None,
            };
        }
        let k = key::routing_key(headers, &table, client_id);
        let set_cookie =
            (k.source == key::KeySource::Issued).then(|| key::set_cookie(&table, &k.key));
        let b = bucket::bucket(&table.salt, &k.key);
        let decision = if table.track_of(b) == self.track
            || self.peer_url.is_none()
            || headers.contains_key(PROXIED_HEADER)
        {
            Decision::Local { key: Some(k.key) }
        } else {
            Decision::Proxy
        };
        Routed {
            decision,
            set_cookie,
        }
    }

    /// Registers a stream served here. Streams with a key are closed when its
    /// bucket moves. A stream proxied here that this pod's (newer) table gives
    /// to the other track is closed at once, so the two tables converge.
    pub fn register(self: &Arc<Self>, key: Option<String>, proxied: bool) -> RouteGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let moved = CancellationToken::new();
        if let (Some(k), true) = (&key, proxied) {
            let table = self.table();
            if table.track_of(bucket::bucket(&table.salt, k)) != self.track {
                moved.cancel();
            }
        }
        if let Some(k) = key {
            self.streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, (k, moved.clone()));
        }
        self.streams_by_track
            .with_label_values(&[self.track.as_str()])
            .inc();
        RouteGuard {
            routing: self.clone(),
            id,
            moved,
        }
    }

    /// Installs a new table; closes the local streams whose bucket now
    /// belongs to the other track. Returns how many were closed.
    pub fn apply(&self, table: RoutingTable) -> usize {
        if *self.table.borrow() == table {
            return 0;
        }
        tracing::info!(
            weight_bp = table.weight_bp,
            track = self.track.as_str(),
            "routing table changed"
        );
        self.table.send_replace(table.clone());
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = 0;
        for (key, token) in streams.values() {
            let b = bucket::bucket(&table.salt, key);
            if table.track_of(b) != self.track && !token.is_cancelled() {
                token.cancel();
                moved += 1;
            }
        }
        self.moved.inc_by(moved as u64);
        moved
    }

    /// Streams served here with a bucket (for tests and debugging).
    pub fn routed_streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
