//! The storage seam: everything between fan-out and durable history goes
//! through [`Store`]. Two implementations pass one conformance suite.

pub mod conformance;
pub mod embedded;
pub mod redis;
mod redis_scripts;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Retention;
use crate::topic::Topic;

/// An event a publisher asked to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Where it goes.
    pub topic: Topic,
    /// Optional SSE `event:` type (validated at the edge).
    pub event_type: Option<Arc<str>>,
    /// The payload (UTF-8, any size within the configured limit).
    pub data: Arc<str>,
    /// Makes a retried publish a no-op that returns the first result.
    pub idempotency_key: Option<String>,
}

/// An event as stored: its place in the topic's history is `(epoch, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its topic.
    pub topic: Topic,
    /// History generation of the topic (changes when the history is wiped).
    pub epoch: u64,
    /// Strictly increasing per topic within an epoch, starting at 1.
    pub seq: u64,
    /// Publish time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Optional SSE `event:` type.
    pub event_type: Option<Arc<str>>,
    /// The payload.
    pub data: Arc<str>,
}

/// What a publisher is told once its event is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Its topic.
    pub topic: Topic,
    /// Epoch it was stored in.
    pub epoch: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Publish time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// True when an `Idempotency-Key` matched an earlier publish.
    pub duplicate: bool,
}

/// The retained span of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicHead {
    /// Current epoch; 0 if the topic has never been published to.
    pub epoch: u64,
    /// Oldest retained seq; 0 if nothing is retained.
    pub first_seq: u64,
    /// Newest seq ever assigned in this epoch; 0 if none.
    pub last_seq: u64,
}

/// Receives every stored event once, in per-topic order, after it is durable.
/// Must not block: it is called from the store's commit path.
pub type LiveSink = Arc<dyn Fn(Arc<StoredEvent>) + Send + Sync>;

/// Settings every store implementation receives.
#[derive(Clone)]
pub struct StoreOptions {
    /// History limits.
    pub retention: Retention,
    /// Where live events go (the fan-out hub).
    pub sink: LiveSink,
}

/// Why a store operation failed. Every variant means "not done": a failed
/// append was not acknowledged and must not be assumed stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store rejected the request: {0}")]
    Rejected(String),
}

/// Durable, ordered, per-topic event history plus the live feed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a batch, atomically per topic: on error, each topic has all of
    /// its events of the batch stored or none (the embedded store: none at
    /// all), no sequence number is used up, and only stored events reached
    /// the live sink. On success, one ack per event in input order; events
    /// reach the live sink before this returns.
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Ack>, StoreError>;

    /// Up to `limit` retained events of `topic` with `seq > after`, in order,
    /// each tagged with the topic's current epoch.
    async fn read_after(
        &self,
        topic: &Topic,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<StoredEvent>>, StoreError>;

    /// The topic's epoch and retained span.
    async fn head(&self, topic: &Topic) -> Result<TopicHead, StoreError>;

    /// Drops the topic's history and starts a new epoch.
    async fn wipe(&self, topic: &Topic) -> Result<TopicHead, StoreError>;

    /// Applies retention now; returns how many events were removed.
    async fn trim(&self) -> Result<u64, StoreError>;

    /// Cheap reachability check (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh epoch, never 0 and different from `old`.
pub fn new_epoch(old: u64) -> u64 {
    loop {
        let e = u64::from(rand::random::<u32>() >> 1) + 1;
        if e != old {
            return e;
        }
    }
}
