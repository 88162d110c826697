//! The storage seam: everything between fan-out and durable history goes
//! through [`Store`]. Two implementations pass one conformance suite.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dirlock;
pub mod embedded;
pub mod redis;
mod redis_acks;
mod redis_scripts;
mod redis_shadow;
mod sqlite_acks;
mod sqlite_shadow;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;

use crate::config::Retention;
use crate::core::cursor::Cursor;
use crate::core::device::{Acked, DeviceId};
use crate::core::position::{Epoch, Seq};
use crate::core::tier::Priority;
use crate::core::topic::Topic;

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
    pub idempotency_key: Option<IdempotencyKey>,
    /// How long after its publish time it may still be delivered from history.
    pub ttl: Option<std::time::Duration>,
    /// Its tier.
    pub priority: Priority,
}

impl NewEvent {
    /// An event with no key, no TTL and normal priority.
    pub fn new(topic: Topic, data: impl Into<Arc<str>>) -> NewEvent {
        NewEvent {
            topic,
            event_type: None,
            data: data.into(),
            idempotency_key: None,
            ttl: None,
            priority: Priority::Normal,
        }
    }

    /// When it expires if stored at `ts_ms`.
    pub fn expires_ms(&self, ts_ms: u64) -> Option<u64> {
        self.ttl
            .map(|t| ts_ms.saturating_add(t.as_millis().min(u64::MAX as u128) as u64))
    }
}

/// A publisher's `Idempotency-Key` (header, or `idempotency_key` of a batch
/// item): 1 to 200 visible ASCII characters, one rule for both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A text that is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "an idempotency key is 1 to {} visible ASCII characters",
    IdempotencyKey::MAX_LEN
)]
pub struct BadIdempotencyKey;

impl IdempotencyKey {
    /// Longest key accepted.
    pub const MAX_LEN: usize = 200;

    /// Checks `text` against the one rule.
    pub fn parse(text: &str) -> Result<Self, BadIdempotencyKey> {
        crate::core::device::is_visible_ascii(text, Self::MAX_LEN)
            .then(|| IdempotencyKey(text.to_owned()))
            .ok_or(BadIdempotencyKey)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event as stored: its place in the topic's history is `(epoch, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its topic.
    pub topic: Topic,
    /// History generation of the topic (changes when the history is wiped).
    pub epoch: Epoch,
    /// Strictly increasing per topic within an epoch, starting at 1.
    pub seq: Seq,
    /// Publish time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Optional SSE `event:` type.
    pub event_type: Option<Arc<str>>,
    /// The payload (empty once it expired and retention dropped it).
    pub data: Arc<str>,
    /// When it stops being delivered from history (ms since the Unix epoch).
    pub expires_ms: Option<u64>,
    /// Its tier.
    pub priority: Priority,
    /// Its single-topic cursor; left `Default`, it is made from the fields
    /// above when first asked for ([`StoredEvent::id`]).
    pub id: CursorText,
}

/// An event's single-topic cursor, encoded the first time it is asked for
/// and shared from then on (by its frame, by its publisher's answer). It
/// follows from the event's other fields, so it plays no part in equality.
#[derive(Debug, Clone, Default)]
pub struct CursorText(OnceLock<Arc<str>>);

impl PartialEq for CursorText {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CursorText {}

impl StoredEvent {
    /// Its single-topic cursor, encoded once.
    pub fn id(&self) -> &Arc<str> {
        self.id.0.get_or_init(|| {
            Cursor::single(&self.topic, self.epoch, self.seq, self.ts_ms)
                .encode()
                .into()
        })
    }

    /// Whether it may no longer be delivered from history at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        crate::core::tier::is_expired(self.expires_ms, now_ms)
    }
}

/// What a publisher is told once its event is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Its single-topic cursor (a fresh event's, shared with its stored event).
    pub id: Arc<str>,
    /// Its topic.
    pub topic: Topic,
    /// Epoch it was stored in.
    pub epoch: Epoch,
    /// Its sequence number.
    pub seq: Seq,
    /// Publish time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// True when an `Idempotency-Key` matched an earlier publish.
    pub duplicate: bool,
    /// When it expires, if it has a TTL.
    pub expires_ms: Option<u64>,
}

/// The retained span of a topic's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicHead {
    /// Current epoch; `None` if the topic has never been published to.
    pub epoch: Option<Epoch>,
    /// Oldest retained seq; `None` if nothing is retained.
    pub first_seq: Option<Seq>,
    /// Newest seq ever assigned in this epoch; ZERO if none.
    pub last_seq: Seq,
}

/// Which per-device positions a write goes to: what the device
/// acknowledged, or how far its streams counted expired events as lost (so
/// each lost event is counted once, whichever replica resumes the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    /// Acknowledged positions.
    Acked,
    /// Positions up to which expired events were counted as lost.
    Expired,
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

/// Events read from history, or why not.
pub type Events = Result<Vec<Arc<StoredEvent>>, StoreError>;

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
    /// each tagged with the topic's current epoch. An expired event may come
    /// back without its payload (retention dropped it): it still holds its
    /// place, so a replay can tell expired events from trimmed history.
    async fn read_after(&self, topic: &Topic, after: Seq, limit: usize) -> Events;

    /// The topic's epoch and retained span.
    async fn head(&self, topic: &Topic) -> Result<TopicHead, StoreError>;

    /// Drops the topic's history and starts a new epoch.
    async fn wipe(&self, topic: &Topic) -> Result<TopicHead, StoreError>;

    /// Applies retention now (and drops the payloads of expired events);
    /// returns how many events were removed or dropped.
    async fn trim(&self) -> Result<u64, StoreError>;

    /// Cheap reachability check (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Merges positions into `device`'s `ledger`, durably: each replaces the
    /// stored one of its tag only if [`Acked::superseded_by`] says so, even
    /// against a concurrent writer. Returns, in input order, what each tag
    /// held before and holds after. Positions are kept for
    /// `retention.device_ack_ttl` after their last write.
    async fn merge_positions(
        &self,
        ledger: Ledger,
        device: &DeviceId,
        list: Vec<Acked>,
    ) -> Result<Vec<(Option<Acked>, Acked)>, StoreError>;

    /// `device`'s positions in `ledger` among `tags` (a tag never written
    /// is absent).
    async fn positions(
        &self,
        ledger: Ledger,
        device: &DeviceId,
        tags: &[u32],
    ) -> Result<Vec<Acked>, StoreError>;

    /// Records what `device` acknowledged; returns the stored position of
    /// every tag given, after the merge, in input order.
    async fn ack(&self, device: &DeviceId, acks: Vec<Acked>) -> Result<Vec<Acked>, StoreError> {
        let merged = self.merge_positions(Ledger::Acked, device, acks).await?;
        Ok(merged.into_iter().map(|(_, after)| after).collect())
    }

    /// `device`'s acknowledged positions among `tags`.
    async fn acked(&self, device: &DeviceId, tags: &[u32]) -> Result<Vec<Acked>, StoreError> {
        self.positions(Ledger::Acked, device, tags).await
    }

    /// Moves `device`'s loss ledger forward like [`Store::ack`]; returns,
    /// in input order, what each tag held before (so concurrent counters
    /// of the same expired events count each once).
    async fn record_lost(
        &self,
        device: &DeviceId,
        marks: Vec<Acked>,
    ) -> Result<Vec<Option<Acked>>, StoreError> {
        let merged = self.merge_positions(Ledger::Expired, device, marks).await?;
        Ok(merged.into_iter().map(|(before, _)| before).collect())
    }

    /// `device`'s loss ledger among `tags`.
    async fn lost(&self, device: &DeviceId, tags: &[u32]) -> Result<Vec<Acked>, StoreError> {
        self.positions(Ledger::Expired, device, tags).await
    }

    /// `device`'s shadow document (JSON text) and its version, if any.
    async fn shadow(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError>;

    /// Stores `doc` as `device`'s shadow at `version` if the stored version
    /// is still `expected` (0: none stored); false when another writer came
    /// first. Shadows are kept for `retention.device_ack_ttl` after their
    /// last change.
    async fn put_shadow(
        &self,
        device: &DeviceId,
        expected: u64,
        version: u64,
        doc: String,
    ) -> Result<bool, StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
