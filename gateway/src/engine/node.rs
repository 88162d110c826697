//! The gateway node: owns the store, the hub, metrics, limits and the drain
//! state, and runs their background tasks. HTTP handlers only talk to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;

use crate::config::{Config, StoreKind};
use crate::core::limits::{ClientKey, KeyedRateLimit, KeyedSlots, RateLimit};
use crate::core::position::Epoch;
use crate::core::topic::Topic;
use crate::engine::fanout::Hub;
use crate::ops::metrics::{LimitLayer, Metrics};
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::RedisStore;
use crate::store::{Ack, NewEvent, Store, StoreError, StoreOptions};

/// A `retry:` value in ms: `base` jittered ±50 %, so that clients told to
/// come back at the same moment spread out instead of returning together.
pub fn jitter_ms(base: Duration) -> u64 {
    let base = base.as_millis().max(2) as u64;
    rand::rng().random_range(base / 2..=base + base / 2)
}

/// The configured backpressure rules, their patterns parsed.
/// A cap of `max` per key, or none for 0.
fn slots(max: usize) -> Option<Arc<KeyedSlots<ClientKey>>> {
    (max > 0).then(|| KeyedSlots::new(max))
}

fn backpressure_rules(
    rules: &[crate::config::BackpressureRule],
) -> anyhow::Result<
    Vec<(
        crate::auth::pattern::TopicPattern,
        crate::config::Backpressure,
    )>,
> {
    rules
        .iter()
        .map(|r| {
            let p = crate::auth::pattern::TopicPattern::parse(&r.pattern).map_err(|e| {
                anyhow::anyhow!("delivery.backpressure pattern {:?}: {e}", r.pattern)
            })?;
            Ok((p, r.policy))
        })
        .collect()
}

/// Why the pod should get no new clients now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// It is shutting down.
    Draining,
    /// Its store does not answer.
    StoreUnreachable,
}

/// One running gateway.
pub struct Node {
    /// Effective configuration.
    pub(super) config: Config,
    /// Durable history and the live feed.
    pub(super) store: Arc<dyn Store>,
    /// Local fan-out.
    pub(super) hub: Arc<Hub>,
    /// Metrics registry.
    pub(super) metrics: Arc<Metrics>,
    /// New streams per second.
    pub(super) accept_rate: RateLimit,
    /// Events per second per publisher.
    pub(super) publish_rate: KeyedRateLimit<ClientKey>,
    /// Open streams per identity (`None`: no limit).
    pub(super) identity_streams: Option<Arc<KeyedSlots<ClientKey>>>,
    /// Open streams per client address without a credential (`None`: no limit).
    pub(super) address_streams: Option<Arc<KeyedSlots<ClientKey>>>,
    draining: watch::Sender<Option<Instant>>,
    store_ok: AtomicBool,
    /// Token checks (open when not configured).
    pub(super) auth: crate::auth::Auth,
    /// Canary routing state of this pod.
    pub(super) routing: Arc<crate::routing::Routing>,
    /// Forwarder to the other track, when a peer is configured.
    pub(super) proxy: Option<crate::routing::proxy::Proxy>,
    /// When devices' streams closed here (their recovery time starts).
    pub(super) recovery: Arc<crate::engine::ledger::Recovery>,
    /// Which layers are degraded, and their breakers.
    pub(super) degrade: Arc<crate::ops::degrade::Degrade>,
}

impl Node {
    /// Opens the configured store and starts the background tasks. Call inside a tokio runtime.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Node>> {
        let metrics = Metrics::new();
        let auth = crate::auth::Auth::from_config(&config.auth)?;
        auth.spawn_reload();
        let flags = Arc::new(crate::ops::degrade::Flags::default());
        let hub = Hub::new(
            config.retention.hot_cache_events,
            config.delivery.queue_size,
            config.delivery.slow_consumer_grace,
            metrics.clone(),
            flags.clone(),
            backpressure_rules(&config.delivery.backpressure)?,
        );
        let degrade = Arc::new(crate::ops::degrade::Degrade::new(
            config.degrade.clone(),
            flags,
            metrics.degraded.clone(),
            metrics.breaker_trips_total.clone(),
        ));
        let sink_hub = hub.clone();
        let opts = StoreOptions {
            retention: config.retention.clone(),
            sink: Arc::new(move |e| sink_hub.dispatch(e)),
        };
        let store: Arc<dyn Store> = match &config.store {
            StoreKind::Embedded => {
                Arc::new(EmbeddedStore::open(&config.data_dir, config.fsync, opts)?)
            }
            StoreKind::Redis(url) => Arc::new(RedisStore::open(url, &config.redis, opts)?),
        };
        let routing = crate::routing::Routing::new(
            &config.routing,
            metrics.streams_by_track.clone(),
            metrics.streams_moved_total.clone(),
        );
        let proxy = match (&config.routing.peer_url, &config.routing.peer_token_file) {
            (Some(peer), Some(token)) => Some(crate::routing::proxy::Proxy::new(
                peer,
                config.routing.track,
                crate::routing::PeerToken::watch(token.clone())?,
                metrics.proxied_streams.clone(),
            )),
            _ => None,
        };
        if let Some(path) = &config.routing.table_file {
            crate::routing::source::watch_file(routing.clone(), path.clone()).await?;
        }
        if let Some(cm) = &config.routing.configmap {
            crate::routing::source::watch_configmap(routing.clone(), cm).await?;
        }
        let node = Arc::new(Node {
            routing,
            proxy,
            recovery: Default::default(),
            degrade,
            accept_rate: RateLimit::new(config.limits.accept_rate),
            publish_rate: KeyedRateLimit::new(config.limits.publish_rate),
            identity_streams: slots(config.limits.max_streams_per_identity),
            address_streams: slots(config.limits.max_streams_per_address),
            config,
            store,
            hub,
            metrics,
            draining: watch::channel(None).0,
            store_ok: AtomicBool::new(true),
            auth,
        });
        node.spawn_background();
        let hub = node.hub.clone();
        crate::ops::degrade::spawn(crate::ops::degrade::Inputs {
            degrade: node.degrade.clone(),
            routing: node.routing.clone(),
            store: node.store.clone(),
            metrics: node.metrics.clone(),
            max_connections: node.config.limits.max_connections,
            // A recovered events layer releases what it held back.
            on_change: Box::new(move |changes| {
                if changes.contains(&(crate::ops::degrade::Layer::Events, false)) {
                    let topics = hub.release_held();
                    tracing::info!(topics, "events layer recovered; held events released");
                }
            }),
        });
        Ok(node)
    }

    fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let trim_every = self.config.retention.trim_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_trim = Instant::now();
            loop {
                tick.tick().await;
                let Some(node) = weak.upgrade() else { return };
                let ok = node.store.ping().await.is_ok();
                if node.store_ok.swap(ok, Ordering::Relaxed) != ok {
                    tracing::warn!(reachable = ok, "store reachability changed");
                }
                if !ok {
                    node.metrics.store_errors_total.inc();
                }
                if last_trim.elapsed() >= trim_every {
                    last_trim = Instant::now();
                    match node.store.trim().await {
                        Ok(n) if n > 0 => tracing::debug!(removed = n, "retention trim"),
                        Ok(_) => {}
                        Err(e) => {
                            node.metrics.store_errors_total.inc();
                            tracing::warn!(error = %e, "retention trim failed");
                        }
                    }
                    node.hub.sweep();
                }
            }
        });
        tokio::spawn(
            self.metrics
                .clone()
                .probe_event_loop(Duration::from_millis(250)),
        );
    }

    /// Effective configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Token and certificate checks.
    pub fn auth(&self) -> &crate::auth::Auth {
        &self.auth
    }

    /// This pod's canary routing.
    pub fn routing(&self) -> &Arc<crate::routing::Routing> {
        &self.routing
    }

    /// The forwarder to the other track, when a peer is configured.
    pub fn proxy(&self) -> Option<&crate::routing::proxy::Proxy> {
        self.proxy.as_ref()
    }

    /// Takes `n` events from `publisher`'s rate budget; how long to wait if
    /// it is spent (counted in `limit_refusals_total`).
    pub fn take_publish_rate(&self, publisher: &ClientKey, n: u32) -> Result<(), Duration> {
        self.publish_rate.try_take(publisher, n).inspect_err(|_| {
            let layer = match publisher {
                ClientKey::Identity(_) => LimitLayer::IdentityPublish,
                ClientKey::Address(_) => LimitLayer::AddressPublish,
            };
            self.metrics.refused(layer).inc();
        })
    }

    /// Liveness and readiness: ready unless draining or the store is unreachable.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.store_ok.load(Ordering::Relaxed)
    }

    /// True once [`Node::start_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.borrow().is_some()
    }

    /// Starts the drain: readiness goes false, each open stream closes at a
    /// random moment within the drain window, and a stream opened from now
    /// on is served until the window ends.
    pub fn start_drain(&self) {
        self.draining.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }

    /// Watch that turns `Some(start)` when draining begins.
    pub fn drain_signal(&self) -> watch::Receiver<Option<Instant>> {
        self.draining.subscribe()
    }

    /// A `retry:` value in ms around the configured base (see [`jitter_ms`]).
    pub fn jittered_retry_ms(&self) -> u64 {
        jitter_ms(self.config.delivery.retry)
    }

    /// `Retry-After` seconds matching the retry hint.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.delivery.retry.as_secs().max(1)
    }

    /// Stores a batch durably and fans it out. A failure is counted.
    pub async fn publish(&self, batch: Vec<NewEvent>) -> Result<Vec<Ack>, StoreError> {
        self.storage_open()?;
        let timer = self.metrics.publish_duration_seconds.start_timer();
        let result = self.store.append(batch).await;
        timer.observe_duration();
        let acks = result.map_err(|e| self.store_error(e))?;
        let fresh = acks.iter().filter(|a| !a.duplicate).count();
        self.metrics.events_published_total.inc_by(fresh as u64);
        Ok(acks)
    }

    /// Drops a topic's history and starts a new epoch. A failure is counted.
    pub async fn wipe(&self, topic: &Topic) -> Result<Epoch, StoreError> {
        let head = self
            .store
            .wipe(topic)
            .await
            .map_err(|e| self.store_error(e))?;
        self.hub.clear_ring(topic);
        head.epoch
            .ok_or_else(|| self.store_error(StoreError::Unavailable("a wipe gave no epoch".into())))
    }

    /// Refuses a store write while the storage layer is degraded: answered
    /// 503, so nothing is acknowledged and then lost.
    pub fn storage_open(&self) -> Result<(), StoreError> {
        if self
            .degrade
            .flags
            .is_on(crate::ops::degrade::Layer::Storage)
        {
            return Err(StoreError::Unavailable(
                "the storage layer is degraded; retry later".into(),
            ));
        }
        Ok(())
    }

    /// What a device stream's accounting writes to.
    pub fn ledger(&self) -> crate::engine::ledger::Ledger {
        crate::engine::ledger::Ledger {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            recovery: self.recovery.clone(),
        }
    }

    /// Whether the pod should get new clients (`/readyz`, gRPC health).
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        // A degraded storage layer keeps the pod ready: its open streams stay.
        let storage_degraded = self
            .degrade
            .flags
            .is_on(crate::ops::degrade::Layer::Storage);
        if !self.is_ready() && !storage_degraded {
            return Err(NotReady::StoreUnreachable);
        }
        Ok(())
    }

    /// Counts and logs a store failure, and hands it back.
    pub fn store_error(&self, e: StoreError) -> StoreError {
        self.metrics.store_errors_total.inc();
        tracing::warn!(error = %e, "store operation failed");
        e
    }
}
