//! Fan-out: the hub hands every live event, encoded once, to every local
//! subscriber of its topic. Registry and hot rings are sharded by topic, so
//! publishing on one topic never waits for another; each subscriber has a
//! bounded queue, and one that falls behind is disconnected (it resumes by
//! cursor from the store), never silently skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::auth::pattern::TopicPattern;
use crate::config::Backpressure;
use crate::core::hash::fnv1a32;
use crate::core::position::{Seq, StreamPos};
use crate::core::queue::{self, TrySendError};
use crate::core::tier::Priority;
use crate::core::topic::Topic;
use crate::edges::sse::wire as sse;
use crate::ops::degrade::{Flags, Layer};
use crate::ops::metrics::Metrics;
use crate::store::StoredEvent;

const SHARDS: usize = 64;
/// Topics without subscribers keep their hot ring this long after their last publish.
const IDLE_SLOT_TTL: Duration = Duration::from_secs(120);

/// One event encoded once: `event:`/`data:` lines followed by the `id:` of a
/// single-topic stream. Multi-topic streams send [`Frame::body`] and their own `id:`.
#[derive(Debug)]
pub struct Frame {
    /// The stored event.
    pub event: Arc<StoredEvent>,
    /// What a full subscriber queue does with its topic's events.
    pub policy: Backpressure,
    bytes: Bytes,
    body_len: usize,
    /// The single-topic block in an edge's other encoding (gRPC's message),
    /// made by the first stream that needs it.
    other: OnceLock<Bytes>,
}

impl Frame {
    /// Encodes an event.
    pub fn new(event: Arc<StoredEvent>) -> Arc<Frame> {
        Frame::with_policy(event, Backpressure::Disconnect)
    }

    /// Encodes an event of a topic with backpressure `policy`.
    pub fn with_policy(event: Arc<StoredEvent>, policy: Backpressure) -> Arc<Frame> {
        let mut buf = BytesMut::with_capacity(event.data.len() + 64);
        sse::write_body(&mut buf, event.event_type.as_deref(), &event.data);
        let body_len = buf.len();
        sse::write_id_and_end(&mut buf, event.id());
        Arc::new(Frame {
            event,
            policy,
            bytes: buf.freeze(),
            body_len,
            other: OnceLock::new(),
        })
    }

    /// The complete block with a single-topic `id:` (shared by every single-topic stream).
    pub fn single(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The `event:`/`data:` lines only.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(..self.body_len)
    }

    /// The single-topic block in an edge's other encoding: `encode` runs for
    /// the first stream that asks, every later one shares its bytes (so an
    /// event is encoded once per encoding, not once per subscriber).
    pub fn other_encoding(&self, encode: impl FnOnce(&Frame) -> Bytes) -> Bytes {
        self.other.get_or_init(|| encode(self)).clone()
    }

    /// The single-topic cursor, encoded once with the event ([`StoredEvent::id`]).
    pub fn single_id(&self) -> &str {
        self.event.id()
    }
}

/// Why the hub closed a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KickReason {
    /// Still open.
    None = 0,
    /// Its queue was full.
    SlowConsumer = 1,
}

/// State shared between the hub's registry entry and the stream.
#[derive(Debug)]
pub struct SubShared {
    kicked: AtomicU8,
    finished: AtomicBool,
    /// Cancels the whole HTTP connection (used when a kicked stream cannot even be written to).
    pub conn: CancellationToken,
}

impl SubShared {
    /// Why the hub closed the subscription, if it did.
    pub fn kick_reason(&self) -> KickReason {
        match self.kicked.load(Ordering::Acquire) {
            1 => KickReason::SlowConsumer,
            _ => KickReason::None,
        }
    }
}

struct Entry {
    id: u64,
    topics: Vec<Topic>,
    tx: queue::Sender<Arc<Frame>>,
    shared: Arc<SubShared>,
}

struct Slot {
    subs: Vec<Arc<Entry>>,
    ring: VecDeque<Arc<Frame>>,
    touched: Instant,
    /// The newest event held back from live fan-out while the events layer
    /// is degraded (its subscribers fill what came before from history).
    held: Option<Arc<Frame>>,
}

/// The local fan-out registry.
pub struct Hub {
    shards: Box<[Mutex<HashMap<Topic, Slot>>]>,
    next_id: AtomicU64,
    ring_cap: usize,
    queue_size: usize,
    slow_grace: Duration,
    metrics: Arc<Metrics>,
    rt: tokio::runtime::Handle,
    degrade: Arc<Flags>,
    policies: Vec<(TopicPattern, Backpressure)>,
}

/// A registered subscriber: its queue of frames. Dropping it unregisters at once.
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    topics: Vec<Topic>,
    /// Frames to deliver, in per-topic order.
    pub rx: queue::Receiver<Arc<Frame>>,
    /// Kick state and connection handle.
    pub shared: Arc<SubShared>,
}

impl Hub {
    /// A hub; must be created inside a tokio runtime.
    pub fn new(
        ring_cap: usize,
        queue_size: usize,
        slow_grace: Duration,
        metrics: Arc<Metrics>,
        degrade: Arc<Flags>,
        policies: Vec<(TopicPattern, Backpressure)>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            ring_cap,
            queue_size,
            slow_grace,
            metrics,
            rt: tokio::runtime::Handle::current(),
            degrade,
            policies,
        })
    }

    /// The backpressure policy of `topic`: the first rule that matches.
    pub fn policy_of(&self, topic: &Topic) -> Backpressure {
        self.policies
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map_or(Backpressure::Disconnect, |(_, b)| *b)
    }

    fn shard(&self, topic: &Topic) -> MutexGuard<'_, HashMap<Topic, Slot>> {
        let i = fnv1a32(topic.as_str().as_bytes()) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber on `topics`; frames published from now on are queued for it.
    pub fn subscribe(self: &Arc<Self>, topics: &[Topic], conn: CancellationToken) -> Subscription {
        let (tx, rx) = queue::channel(self.queue_size);
        let shared = Arc::new(SubShared {
            kicked: AtomicU8::new(0),
            finished: AtomicBool::new(false),
            conn,
        });
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            topics: topics.to_vec(),
            tx,
            shared: shared.clone(),
        });
        for t in topics {
            self.shard(t)
                .entry(t.clone())
                .or_insert_with(|| Slot {
                    subs: Vec::new(),
                    ring: VecDeque::new(),
                    touched: Instant::now(),
                    held: None,
                })
                .subs
                .push(entry.clone());
        }
        Subscription {
            hub: self.clone(),
            id: entry.id,
            topics: topics.to_vec(),
            rx,
            shared,
        }
    }

    /// Hands one stored event to every local subscriber of its topic.
    pub fn dispatch(&self, event: Arc<StoredEvent>) {
        let policy = self.policy_of(&event.topic);
        let frame = Frame::with_policy(event, policy);
        let ev = &frame.event;
        let mut slow = Vec::new();
        {
            let mut shard = self.shard(&ev.topic);
            let slot = shard.entry(ev.topic.clone()).or_insert_with(|| Slot {
                subs: Vec::new(),
                ring: VecDeque::new(),
                touched: Instant::now(),
                held: None,
            });
            slot.touched = Instant::now();
            if self.ring_cap > 0 {
                // The ring only ever holds a gapless run of one epoch.
                if let Some(back) = slot.ring.back() {
                    if back.event.epoch != ev.epoch || back.event.seq.next() != ev.seq {
                        slot.ring.clear();
                    }
                }
                if slot.ring.len() == self.ring_cap {
                    slot.ring.pop_front();
                }
                slot.ring.push_back(frame.clone());
            }
            // Held under the shard's lock: a release after the layer
            // recovers takes the same lock, so nothing held is left behind.
            if self.degrade.is_on(Layer::Events)
                && ev.priority != Priority::High
                && !ev.topic.is_reserved()
            {
                slot.held = Some(frame);
                return;
            }
            self.fan_out(slot, &frame, &mut slow);
        }
        for entry in slow {
            self.kick(&entry, KickReason::SlowConsumer);
        }
    }

    /// Frames of `topic` after `from` up to `upto` from the hot ring, if it
    /// holds all of them (and they are of `from`'s epoch).
    pub fn from_ring(&self, topic: &Topic, from: StreamPos, upto: Seq) -> Option<Vec<Arc<Frame>>> {
        let shard = self.shard(topic);
        let ring = &shard.get(topic)?.ring;
        let (front, back) = (ring.front()?, ring.back()?);
        if from.epoch != Some(front.event.epoch)
            || front.event.seq > from.seq.next()
            || back.event.seq < upto
        {
            return None;
        }
        Some(
            ring.iter()
                .filter(|f| f.event.seq > from.seq && f.event.seq <= upto)
                .cloned()
                .collect(),
        )
    }

    fn fan_out(&self, slot: &mut Slot, frame: &Arc<Frame>, slow: &mut Vec<Arc<Entry>>) {
        let mut queued = 0i64;
        let topic = &frame.event.topic;
        slot.subs.retain(|s| {
            let sent = match s.tx.try_send(frame.clone()) {
                Err(TrySendError::Full(f)) if frame.policy != Backpressure::Disconnect => {
                    // Room is made from this topic's own queued events; the
                    // stream announces the gap as `event: skipped`.
                    let keep_latest = frame.policy == Backpressure::KeepLatest;
                    s.tx.try_send_dropping(f, keep_latest, |q| &q.event.topic == topic)
                        .map(|dropped| dropped as i64)
                }
                other => other.map(|()| 0),
            };
            match sent {
                Ok(dropped) => {
                    queued += 1 - dropped;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    slow.push(s.clone());
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
        self.metrics.subscriber_lag_events.add(queued);
        self.metrics
            .subscriber_queue_events
            .with_label_values(&[frame.policy.as_str()])
            .add(queued);
    }

    /// After the events layer recovers: each topic's newest held event goes
    /// to its subscribers, whose streams fill the gap before it from
    /// history, in order. Returns how many topics had events held.
    pub fn release_held(&self) -> usize {
        let mut released = 0;
        for shard in self.shards.iter() {
            let mut slow = Vec::new();
            {
                let mut s = shard.lock().unwrap_or_else(|p| p.into_inner());
                for slot in s.values_mut() {
                    if let Some(frame) = slot.held.take() {
                        self.fan_out(slot, &frame, &mut slow);
                        released += 1;
                    }
                }
            }
            for entry in slow {
                self.kick(&entry, KickReason::SlowConsumer);
            }
        }
        released
    }

    /// The span the hot ring holds of `topic`, as a head: what a stream can
    /// be planned from while the store is not to be asked.
    pub fn ring_head(&self, topic: &Topic) -> Option<crate::store::TopicHead> {
        let shard = self.shard(topic);
        let ring = &shard.get(topic)?.ring;
        let (front, back) = (ring.front()?, ring.back()?);
        Some(crate::store::TopicHead {
            epoch: Some(back.event.epoch),
            first_seq: Some(front.event.seq),
            last_seq: back.event.seq,
        })
    }

    /// Forgets the hot ring of a topic (its history was wiped).
    pub fn clear_ring(&self, topic: &Topic) {
        if let Some(slot) = self.shard(topic).get_mut(topic) {
            slot.ring.clear();
        }
    }

    fn kick(&self, entry: &Arc<Entry>, reason: KickReason) {
        entry.shared.kicked.store(reason as u8, Ordering::Release);
        if reason == KickReason::SlowConsumer {
            self.metrics.slow_consumer_disconnects_total.inc();
        }
        self.remove(entry.id, &entry.topics);
        // Dropping the registry's senders ends the stream once it drains its
        // queue; if the client does not read even that, cut the connection.
        let shared = entry.shared.clone();
        let grace = self.slow_grace;
        self.rt.spawn(async move {
            tokio::time::sleep(grace).await;
            if !shared.finished.load(Ordering::Acquire) {
                shared.conn.cancel();
            }
        });
    }

    fn remove(&self, id: u64, topics: &[Topic]) {
        for t in topics {
            let mut shard = self.shard(t);
            if let Some(slot) = shard.get_mut(t) {
                slot.subs.retain(|s| s.id != id);
                if slot.subs.is_empty() && slot.ring.is_empty() {
                    shard.remove(t);
                }
            }
        }
    }

    /// Drops hot rings of topics nobody reads and nobody published to lately.
    pub fn sweep(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, s| !s.subs.is_empty() || s.touched.elapsed() < IDLE_SLOT_TTL);
        }
    }

    /// Number of registered subscriptions per topic, summed (for tests and debugging).
    pub fn registrations(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.values().map(|slot| slot.subs.len()).sum::<usize>()
            })
            .sum()
    }
}

impl Subscription {
    /// Marks a frame as taken from the queue (keeps the lag gauge exact).
    pub fn took_one(&self, frame: &Frame) {
        self.hub.metrics.subscriber_lag_events.dec();
        self.hub
            .metrics
            .subscriber_queue_events
            .with_label_values(&[frame.policy.as_str()])
            .dec();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.finished.store(true, Ordering::Release);
        while let Some(f) = self.rx.try_recv() {
            self.took_one(&f);
        }
        self.hub.remove(self.id, &self.topics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(topic: &Topic, seq: u64) -> Arc<StoredEvent> {
        Arc::new(StoredEvent {
            topic: topic.clone(),
            epoch: crate::core::position::Epoch::new(7).unwrap(),
            seq: Seq::new(seq),
            ts_ms: 1,
            event_type: None,
            data: Arc::from("d"),
            expires_ms: None,
            priority: Default::default(),
            id: Default::default(),
        })
    }

    fn pos(epoch: u64, seq: u64) -> StreamPos {
        StreamPos {
            epoch: crate::core::position::Epoch::new(epoch),
            seq: Seq::new(seq),
        }
    }

    #[tokio::test]
    async fn encodes_once_and_shares_bytes() {
        let hub = Hub::new(
            4,
            8,
            Duration::from_secs(1),
            Metrics::new(),
            Arc::default(),
            Vec::new(),
        );
        let t = Topic::parse("t").unwrap();
        let mut a = hub.subscribe(std::slice::from_ref(&t), CancellationToken::new());
        let mut b = hub.subscribe(std::slice::from_ref(&t), CancellationToken::new());
        hub.dispatch(ev(&t, 1));
        let (fa, fb) = (a.rx.recv().await.unwrap(), b.rx.recv().await.unwrap());
        assert!(Arc::ptr_eq(&fa, &fb));
        assert_eq!(fa.single().as_ptr(), fb.single().as_ptr());
        assert!(fa.single().starts_with(&fa.body()));
    }

    #[test]
    fn another_encoding_is_made_once_and_shared() {
        let frame = Frame::new(ev(&Topic::parse("t").unwrap(), 1));
        let mut runs = 0;
        let first = frame.other_encoding(|f| {
            runs += 1;
            Bytes::from(f.single_id().to_owned())
        });
        let again = frame.other_encoding(|_| unreachable!("encoded once"));
        assert_eq!((runs, first.as_ptr()), (1, again.as_ptr()));
        assert_eq!(&first[..], frame.single_id().as_bytes());
        // The cursor text is the one the SSE block carries.
        assert!(frame
            .single()
            .ends_with(format!("id: {}\n\n", frame.single_id()).as_bytes()));
    }

    #[tokio::test]
    async fn full_queue_kicks_only_the_slow_one() {
        let metrics = Metrics::new();
        let hub = Hub::new(
            4,
            2,
            Duration::from_millis(10),
            metrics.clone(),
            Arc::default(),
            Vec::new(),
        );
        let t = Topic::parse("t").unwrap();
        let mut fast = hub.subscribe(std::slice::from_ref(&t), CancellationToken::new());
        let slow = hub.subscribe(std::slice::from_ref(&t), CancellationToken::new());
        for seq in 1..=3 {
            hub.dispatch(ev(&t, seq));
            let f = fast.rx.recv().await.unwrap();
            fast.took_one(&f);
            assert_eq!(f.event.seq, Seq::new(seq));
        }
        assert_eq!(slow.shared.kick_reason(), KickReason::SlowConsumer);
        assert_eq!(metrics.slow_consumer_disconnects_total.get(), 1);
        assert_eq!(hub.registrations(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            slow.shared.conn.is_cancelled(),
            "unread stream has its connection cut"
        );
        drop(slow);
        assert_eq!(metrics.subscriber_lag_events.get(), 0);
    }

    #[tokio::test]
    async fn ring_serves_only_complete_ranges() {
        let hub = Hub::new(
            3,
            8,
            Duration::from_secs(1),
            Metrics::new(),
            Arc::default(),
            Vec::new(),
        );
        let t = Topic::parse("t").unwrap();
        for seq in 1..=5 {
            hub.dispatch(ev(&t, seq));
        }
        let seqs = |v: Vec<Arc<Frame>>| v.iter().map(|f| f.event.seq.get()).collect::<Vec<_>>();
        assert_eq!(
            seqs(hub.from_ring(&t, pos(7, 2), Seq::new(5)).unwrap()),
            [3, 4, 5]
        );
        assert_eq!(
            seqs(hub.from_ring(&t, pos(7, 3), Seq::new(4)).unwrap()),
            [4]
        );
        assert!(
            hub.from_ring(&t, pos(7, 1), Seq::new(5)).is_none(),
            "seq 2 fell out of the ring"
        );
        assert!(
            hub.from_ring(&t, pos(8, 3), Seq::new(5)).is_none(),
            "other epoch"
        );
        assert!(
            hub.from_ring(&t, pos(7, 3), Seq::new(6)).is_none(),
            "ring does not reach 6"
        );
        hub.dispatch(ev(&t, 9));
        assert!(
            hub.from_ring(&t, pos(7, 3), Seq::new(5)).is_none(),
            "a gap resets the ring"
        );
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_it() {
        let hub = Hub::new(
            0,
            8,
            Duration::from_secs(1),
            Metrics::new(),
            Arc::default(),
            Vec::new(),
        );
        let (a, b) = (Topic::parse("a").unwrap(), Topic::parse("b").unwrap());
        let s = hub.subscribe(&[a.clone(), b.clone()], CancellationToken::new());
        assert_eq!(hub.registrations(), 2);
        drop(s);
        assert_eq!(hub.registrations(), 0);
    }
}
