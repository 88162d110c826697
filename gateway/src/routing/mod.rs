//! Canary routing by trace-ID hash. Each pod knows its track and
//! watches the routing table; every new stream is served here if its bucket
//! belongs to this track, else proxied to the other track's Service. When the
//! table changes, only the streams whose bucket moved are closed (jittered
//! `retry:`), and they resume on the other track from the shared store.

pub mod key;
pub mod peer;
pub mod proxy;
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::HeaderMap;
use prometheus::{IntCounter, IntGaugeVec};
use tokio_util::sync::CancellationToken;

pub use peer::{PeerToken, ProxiedFrom, PROXIED_HEADER};
pub use pushgate_contract::routing::{
    bucket, track_of, RouteVersion, RoutingSettings, RoutingTable, Track, BUCKETS, DEFAULT_COOKIE,
    DEFAULT_OVERRIDE_HEADER,
};

/// Where a stream goes. `key` is `None` when a header forced the track
/// (such a stream never moves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve here.
    Local {
        /// The stream's routing key.
        key: Option<String>,
    },
    /// Forward to the other track.
    Proxy {
        /// The stream's routing key.
        key: Option<String>,
    },
}

/// A routing decision, the table it was made with, and the cookie to set.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Where to serve.
    pub decision: Decision,
    /// Version of the table the decision was made with.
    pub version: RouteVersion,
    /// `Set-Cookie` value for an issued key.
    pub set_cookie: Option<String>,
}

/// A stream held by this pod: served here, or forwarded to the other track.
struct Held {
    key: String,
    /// The track that must own `key` for the stream to stay.
    serves: Track,
    moved: CancellationToken,
}

/// The table in force and every stream held under it. One lock for both,
/// so a stream is either registered before a new table is installed (and
/// checked by it) or routed with the new table: none slips between.
struct State {
    table: Arc<RoutingTable>,
    version: RouteVersion,
    held: HashMap<u64, Held>,
}

/// Routing state of one pod.
pub struct Routing {
    /// This pod's track.
    pub track: Track,
    /// The other track's base URL.
    pub peer_url: Option<String>,
    state: Mutex<State>,
    next_id: AtomicU64,
    streams_by_track: IntGaugeVec,
    moved: IntCounter,
    /// Bumped whenever a new table is installed.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Registration of a held stream; dropping it forgets the stream.
pub struct RouteGuard {
    routing: Arc<Routing>,
    id: u64,
    local: bool,
    /// Cancelled when the stream's key no longer belongs to the track serving it.
    pub moved: CancellationToken,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routing.lock().held.remove(&self.id);
        if self.local {
            self.routing
                .streams_by_track
                .with_label_values(&[self.routing.track.as_str()])
                .dec();
        }
    }
}

/// The routing table changed between the decision and the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChanged;

impl Routing {
    /// Routing for a pod of `track`.
    pub fn new(
        settings: &RoutingSettings,
        streams_by_track: IntGaugeVec,
        moved: IntCounter,
    ) -> Arc<Routing> {
        let table = RoutingTable::default();
        Arc::new(Routing {
            track: settings.track,
            peer_url: settings.peer_url.clone(),
            state: Mutex::new(State {
                version: table.version(),
                table: Arc::new(table),
                held: HashMap::new(),
            }),
            next_id: AtomicU64::new(1),
            streams_by_track,
            moved,
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// Sees every table installed from now on (at least the newest).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table in force.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.lock().table.clone()
    }

    /// Version of the table in force.
    pub fn version(&self) -> RouteVersion {
        self.lock().version
    }

    /// Decides where a new stream goes. A stream a verified peer proxied
    /// here (`proxied`) is served here: the peer decided with the same table
    /// (the caller checks the versions), and sending it back would loop.
    pub fn decide(&self, headers: &HeaderMap, client_id: Option<&str>, proxied: bool) -> Routed {
        let (table, version) = {
            let st = self.lock();
            (st.table.clone(), st.version)
        };
        let place = |track: Track, key: Option<String>| {
            if track == self.track || self.peer_url.is_none() || proxied {
                Decision::Local { key }
            } else {
                Decision::Proxy { key }
            }
        };
        let forced = headers
            .get(table.override_header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Track>().ok());
        if let Some(t) = forced {
            return Routed {
                decision: place(t, None),
                version,
                set_cookie: None,
            };
        }
        let k = key::routing_key(headers, &table, client_id);
        let set_cookie =
            (k.source == key::KeySource::Issued).then(|| key::set_cookie(&table, &k.key));
        let track = table.track_of_key(&k.key);
        Routed {
            decision: place(track, Some(k.key)),
            version,
            set_cookie,
        }
    }

    /// Registers a stream held here under the table `version` it was routed
    /// with: served here (`serves` is this pod's track) or forwarded to the
    /// other track. It is closed as soon as a table gives its key to another
    /// track than `serves`. Refused if the table has changed since.
    pub fn register(
        self: &Arc<Self>,
        key: Option<String>,
        serves: Track,
        version: RouteVersion,
    ) -> Result<RouteGuard, RouteChanged> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let moved = CancellationToken::new();
        {
            let mut st = self.lock();
            if st.version != version {
                return Err(RouteChanged);
            }
            if let Some(key) = key {
                if self.peer_url.is_some() && st.table.track_of_key(&key) != serves {
                    return Err(RouteChanged);
                }
                st.held.insert(
                    id,
                    Held {
                        key,
                        serves,
                        moved: moved.clone(),
                    },
                );
            }
        }
        let local = serves == self.track;
        if local {
            self.streams_by_track
                .with_label_values(&[self.track.as_str()])
                .inc();
        }
        Ok(RouteGuard {
            routing: self.clone(),
            id,
            local,
            moved,
        })
    }

    /// Installs a new table and closes every held stream, served here or
    /// forwarded, whose key it gives to another track. Returns how many.
    pub fn apply(&self, table: RoutingTable) -> usize {
        let version = table.version();
        let mut st = self.lock();
        if st.version == version {
            // Same routing; the degrade switches may still have changed.
            if st.table.degrade != table.degrade {
                st.table = Arc::new(table);
                drop(st);
                self.changes.send_modify(|n| *n += 1);
            }
            return 0;
        }
        tracing::info!(
            weight_bp = table.weight_bp,
            version = %version,
            track = self.track.as_str(),
            "routing table changed"
        );
        let mut moved = 0;
        if self.peer_url.is_some() {
            for h in st.held.values() {
                if table.track_of_key(&h.key) != h.serves && !h.moved.is_cancelled() {
                    h.moved.cancel();
                    moved += 1;
                }
            }
        }
        st.table = Arc::new(table);
        st.version = version;
        drop(st);
        self.changes.send_modify(|n| *n += 1);
        self.moved.inc_by(moved as u64);
        moved
    }

    /// Streams held here with a routing key (for tests and debugging).
    pub fn routed_streams(&self) -> usize {
        self.lock().held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounter, IntGaugeVec, Opts};

    fn routing(track: Track, peer: bool) -> Arc<Routing> {
        let settings = RoutingSettings {
            track,
            peer_url: peer.then(|| "http://peer:8080".to_owned()),
            ..RoutingSettings::default()
        };
        Routing::new(
            &settings,
            IntGaugeVec::new(Opts::new("g", "g"), &["track"]).unwrap(),
            IntCounter::new("c", "c").unwrap(),
        )
    }

    fn table(weight_bp: u16) -> RoutingTable {
        RoutingTable {
            weight_bp,
            salt: "s".into(),
            ..RoutingTable::default()
        }
    }

    /// A key whose bucket under [`table`] satisfies `pred`.
    fn key_where(pred: impl Fn(u16) -> bool) -> String {
        (0..)
            .map(|i| format!("key-{i}"))
            .find(|k| pred(bucket("s", k)))
            .unwrap()
    }

    #[test]
    fn a_decision_made_with_an_older_table_cannot_register() {
        let r = routing(Track::Stable, true);
        r.apply(table(0));
        let key = key_where(|_| true);
        let routed = r.decide(&HeaderMap::new(), Some(&key), false);
        assert_eq!(
            routed.decision,
            Decision::Local {
                key: Some(key.clone())
            }
        );
        // The table changes between the decision and the registration.
        r.apply(table(10_000));
        assert!(r
            .register(Some(key.clone()), Track::Stable, routed.version)
            .is_err());
        let routed = r.decide(&HeaderMap::new(), Some(&key), false);
        assert_eq!(routed.decision, Decision::Proxy { key: Some(key) });
        assert!(matches!(
            r.decide(&HeaderMap::new(), Some("k"), true).decision,
            Decision::Local { .. }
        ));
    }

    #[test]
    fn every_held_stream_is_rechecked_forwarded_ones_included() {
        let r = routing(Track::Stable, true);
        r.apply(table(5_000));
        let v = r.version();
        let stays = key_where(|b| b >= 8_000);
        let moves = key_where(|b| (5_000..8_000).contains(&b));
        let forwarded = key_where(|b| b < 5_000);
        let a = r.register(Some(stays), Track::Stable, v).unwrap();
        let b = r.register(Some(moves), Track::Stable, v).unwrap();
        let c = r
            .register(Some(forwarded.clone()), Track::Canary, v)
            .unwrap();
        assert!(
            r.register(Some(forwarded), Track::Stable, v).is_err(),
            "a key of the other track is not served here"
        );
        assert!(
            r.register(None, Track::Stable, RouteVersion(1)).is_err(),
            "an old version never registers"
        );
        // To 80 %: the local stream whose bucket moved closes, nothing else.
        assert_eq!(r.apply(table(8_000)), 1);
        assert!(b.moved.is_cancelled());
        assert!(!a.moved.is_cancelled() && !c.moved.is_cancelled());
        // To 0 %: the forwarded stream's key now belongs here.
        assert_eq!(r.apply(table(0)), 1);
        assert!(c.moved.is_cancelled());
        assert!(!a.moved.is_cancelled());
        drop((a, b, c));
        assert_eq!(r.routed_streams(), 0);
    }

    #[test]
    fn without_a_peer_nothing_is_proxied_or_moved() {
        let r = routing(Track::Stable, false);
        r.apply(table(10_000));
        let routed = r.decide(&HeaderMap::new(), Some("k"), false);
        assert!(matches!(routed.decision, Decision::Local { key: Some(_) }));
        let g = r
            .register(Some("k".into()), Track::Stable, routed.version)
            .unwrap();
        r.apply(table(0));
        assert!(!g.moved.is_cancelled());
    }
}
