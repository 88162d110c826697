//! The store conformance suite: every [`Store`] implementation must pass
//! [`run_all`] unchanged. Each case gets a fresh store from the factory and
//! uses topic names unique to the run, so a shared server is fine. The
//! factory also hands over [`Faults`]: a way to make the real store fail
//! appends to one topic, so that failures part-way are tested too.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{now_ms, IdempotencyKey, NewEvent, Store, StoreOptions, StoredEvent, TopicHead};
use crate::config::Retention;
use crate::core::device::{Acked, DeviceId};
use crate::core::position::{Epoch, Seq};
use crate::core::tier::Priority;
use crate::core::topic::Topic;

/// Makes the store under test fail every append to one topic, inside the
/// store itself (an SQLite trigger, a Redis key of the wrong type), and undoes it.
#[async_trait::async_trait]
pub trait Faults: Send + Sync {
    /// From now on, appends touching `topic` fail.
    async fn poison(&self, topic: &Topic);
    /// Appends to `topic` work again.
    async fn heal(&self, topic: &Topic);
}

/// What a factory builds: the store and its fault switch.
pub struct Built {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its fault switch.
    pub faults: Arc<dyn Faults>,
}

/// A store under test plus everything its live sink received.
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    faults: Arc<dyn Faults>,
    live: Arc<Mutex<Vec<Arc<StoredEvent>>>>,
    prefix: String,
}

impl Subject {
    fn topic(&self, name: &str) -> Topic {
        Topic::parse(&format!("{}/{name}", self.prefix)).expect("valid test topic")
    }

    fn device(&self, name: &str) -> DeviceId {
        DeviceId::parse(&format!("{}-{name}", self.prefix)).expect("valid test device")
    }

    fn live_for(&self, t: &Topic) -> Vec<u64> {
        let live = self.live.lock().unwrap();
        live.iter()
            .filter(|e| &e.topic == t)
            .map(|e| e.seq.get())
            .collect()
    }
}

fn event(topic: &Topic, data: &str) -> NewEvent {
    NewEvent::new(topic.clone(), data)
}

async fn make<F, Fut>(factory: &F, retention: Retention) -> Subject
where
    F: Fn(StoreOptions) -> Fut,
    Fut: Future<Output = Built>,
{
    let live: Arc<Mutex<Vec<Arc<StoredEvent>>>> = Arc::default();
    let sink_live = live.clone();
    let built = factory(StoreOptions {
        retention,
        sink: Arc::new(move |e| sink_live.lock().unwrap().push(e)),
    })
    .await;
    Subject {
        store: built.store,
        faults: built.faults,
        live,
        prefix: format!("conf-{:08x}", rand::random::<u32>()),
    }
}

/// Runs every case against stores built by `factory`; panics on the first failure.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn(StoreOptions) -> Fut,
    Fut: Future<Output = Built>,
{
    let r = Retention::default();
    sequences_are_per_topic_and_gapless(make(&factory, r.clone()).await).await;
    payloads_survive_exactly(make(&factory, r.clone()).await).await;
    batches_are_ordered_and_atomic(make(&factory, r.clone()).await).await;
    a_failure_part_way_leaves_each_topic_all_or_nothing(make(&factory, r.clone()).await).await;
    reads_page_in_order(make(&factory, r.clone()).await).await;
    idempotency_key_dedupes(make(&factory, r.clone()).await).await;
    live_sink_sees_each_event_once_in_order(make(&factory, r.clone()).await).await;
    wipe_starts_a_new_epoch(make(&factory, r.clone()).await).await;
    unknown_topic_has_empty_head(make(&factory, r.clone()).await).await;
    concurrent_appends_get_unique_seqs(make(&factory, r.clone()).await).await;
    device_acks_move_forward_only(make(&factory, r.clone()).await).await;
    device_acks_belong_to_one_device(make(&factory, r.clone()).await).await;
    concurrent_device_acks_keep_the_newest(make(&factory, r.clone()).await).await;
    expired_events_keep_their_place_and_lose_their_payload(make(&factory, r.clone()).await).await;
    the_loss_ledger_says_what_it_held_before(make(&factory, r.clone()).await).await;
    shadows_move_by_compare_and_set(make(&factory, r.clone()).await).await;
    concurrent_shadow_writers_from_one_version_one_wins(make(&factory, r.clone()).await).await;
    let by_count = Retention {
        max_events: 3,
        ..r.clone()
    };
    retention_by_count(make(&factory, by_count).await).await;
    let by_age = Retention {
        max_age: Duration::from_millis(300),
        ..r
    };
    retention_by_age(make(&factory, by_age).await).await;
}

async fn append_one(s: &Subject, t: &Topic, data: &str) -> u64 {
    let acks = s.store.append(vec![event(t, data)]).await.expect("append");
    assert_eq!(acks.len(), 1);
    assert!(!acks[0].duplicate);
    acks[0].seq.get()
}

async fn sequences_are_per_topic_and_gapless(s: Subject) {
    let (a, b) = (s.topic("a"), s.topic("b"));
    for i in 1..=5 {
        assert_eq!(append_one(&s, &a, "x").await, i);
    }
    assert_eq!(
        append_one(&s, &b, "y").await,
        1,
        "topics count independently"
    );
    let head = s.store.head(&a).await.unwrap();
    assert_eq!(
        (head.first_seq, head.last_seq),
        (Some(Seq::new(1)), Seq::new(5))
    );
    assert!(head.epoch.is_some(), "a published topic has an epoch");
    let events = s.store.read_after(&a, Seq::ZERO, 100).await.unwrap();
    assert!(events.iter().all(|e| Some(e.epoch) == head.epoch));
}

async fn payloads_survive_exactly(s: Subject) {
    let t = s.topic("payloads");
    let payloads = [
        "",
        "plain",
        "multi\nline\r\nand\rcr",
        "ünïcødé ✓ 🚀",
        "\0nul",
        &"z".repeat(60_000),
    ];
    for p in payloads {
        let mut e = event(&t, p);
        e.event_type = Some(Arc::from("kind.v1"));
        s.store.append(vec![e]).await.unwrap();
    }
    let read = s.store.read_after(&t, Seq::ZERO, 100).await.unwrap();
    assert_eq!(read.len(), payloads.len());
    for (ev, p) in read.iter().zip(payloads) {
        assert_eq!(&*ev.data, p);
        assert_eq!(ev.event_type.as_deref(), Some("kind.v1"));
        assert_eq!(ev.topic, t);
        assert!(ev.ts_ms > 1_600_000_000_000, "timestamp is in ms");
    }
}

async fn batches_are_ordered_and_atomic(s: Subject) {
    let (a, b) = (s.topic("a"), s.topic("b"));
    let batch = vec![
        event(&a, "a1"),
        event(&b, "b1"),
        event(&a, "a2"),
        event(&b, "b2"),
    ];
    let acks = s.store.append(batch).await.unwrap();
    let got: Vec<(String, u64)> = acks
        .iter()
        .map(|k| (k.topic.to_string(), k.seq.get()))
        .collect();
    assert_eq!(
        got,
        vec![
            (a.to_string(), 1),
            (b.to_string(), 1),
            (a.to_string(), 2),
            (b.to_string(), 2)
        ]
    );
    assert_eq!(data_of(&s, &a).await, ["a1", "a2"]);
    assert!(s.store.append(Vec::new()).await.unwrap().is_empty());
}

fn keyed(topic: &Topic, data: &str) -> NewEvent {
    NewEvent {
        idempotency_key: IdempotencyKey::parse(&format!("k-{data}")).ok(),
        ..event(topic, data)
    }
}

async fn data_of(s: &Subject, t: &Topic) -> Vec<String> {
    let events = s.store.read_after(t, Seq::ZERO, 100).await.expect("read");
    events.iter().map(|e| e.data.to_string()).collect()
}

/// The promise of [`Store::append`]: a batch that fails part-way has stored,
/// per topic, all of that topic's events or none, burnt no sequence number,
/// and announced exactly what it stored; retried with the same idempotency
/// keys it then stores every event exactly once.
async fn a_failure_part_way_leaves_each_topic_all_or_nothing(s: Subject) {
    let (a, b) = (s.topic("ok"), s.topic("poisoned"));
    let batch = || {
        vec![
            keyed(&a, "a1"),
            keyed(&b, "b1"),
            keyed(&a, "a2"),
            keyed(&b, "b2"),
        ]
    };
    s.faults.poison(&b).await;
    assert!(
        s.store.append(batch()).await.is_err(),
        "a failed append is reported"
    );
    let stored_a = data_of(&s, &a).await;
    assert!(
        stored_a.is_empty() || stored_a == ["a1", "a2"],
        "topic a is all or nothing: {stored_a:?}"
    );
    assert_eq!(
        s.live_for(&a).len(),
        stored_a.len(),
        "announced what it stored"
    );
    assert!(s.live_for(&b).is_empty());
    s.faults.heal(&b).await;
    assert!(data_of(&s, &b).await.is_empty(), "nothing of topic b");
    assert_eq!(
        s.store.head(&b).await.unwrap().last_seq,
        Seq::ZERO,
        "no seq burnt"
    );

    let acks = s.store.append(batch()).await.expect("the retry succeeds");
    let dup: Vec<bool> = acks.iter().map(|k| k.duplicate).collect();
    let a_was_stored = !stored_a.is_empty();
    assert_eq!(dup, [a_was_stored, false, a_was_stored, false]);
    assert_eq!(data_of(&s, &a).await, ["a1", "a2"]);
    assert_eq!(data_of(&s, &b).await, ["b1", "b2"]);
    let seqs: Vec<u64> = acks.iter().map(|k| k.seq.get()).collect();
    assert_eq!(seqs, [1, 1, 2, 2], "gapless per topic");
    assert_eq!(s.live_for(&b), [1, 2], "each event announced once");
}

async fn reads_page_in_order(s: Subject) {
    let t = s.topic("paged");
    let batch: Vec<NewEvent> = (1..=25).map(|i| event(&t, &i.to_string())).collect();
    s.store.append(batch).await.unwrap();
    let mut after = Seq::ZERO;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = s.store.read_after(&t, after, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().unwrap().seq;
        seen.extend(page.iter().map(|e| e.data.parse::<u64>().unwrap()));
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert!(s
        .store
        .read_after(&t, Seq::new(25), 7)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.store
            .read_after(&t, Seq::new(20), 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn idempotency_key_dedupes(s: Subject) {
    let (t, other) = (s.topic("idem"), s.topic("idem2"));
    let mut e = event(&t, "once");
    e.idempotency_key = IdempotencyKey::parse("req-1").ok();
    let first = s.store.append(vec![e.clone()]).await.unwrap().remove(0);
    let again = s.store.append(vec![e.clone()]).await.unwrap().remove(0);
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.seq, again.epoch), (first.seq, first.epoch));
    assert_eq!(
        s.store.read_after(&t, Seq::ZERO, 10).await.unwrap().len(),
        1
    );
    e.topic = other.clone();
    let elsewhere = s.store.append(vec![e]).await.unwrap().remove(0);
    assert!(!elsewhere.duplicate, "keys are scoped to their topic");
    assert_eq!(
        s.live_for(&t),
        vec![1],
        "a duplicate is not fanned out again"
    );
}

async fn live_sink_sees_each_event_once_in_order(s: Subject) {
    let (a, b) = (s.topic("a"), s.topic("b"));
    for i in 0..20 {
        let t = if i % 3 == 0 { &b } else { &a };
        s.store.append(vec![event(t, "x")]).await.unwrap();
    }
    assert_eq!(s.live_for(&a), (1..=13).collect::<Vec<_>>());
    assert_eq!(s.live_for(&b), (1..=7).collect::<Vec<_>>());
}

async fn wipe_starts_a_new_epoch(s: Subject) {
    let t = s.topic("wiped");
    append_one(&s, &t, "old").await;
    append_one(&s, &t, "old").await;
    let before = s.store.head(&t).await.unwrap();
    let after = s.store.wipe(&t).await.unwrap();
    assert_ne!(after.epoch, before.epoch);
    assert!(after.epoch.is_some());
    assert_eq!(s.store.head(&t).await.unwrap(), after);
    assert!(data_of(&s, &t).await.is_empty());
    assert_eq!(
        append_one(&s, &t, "new").await,
        1,
        "seq restarts in the new epoch"
    );
    let read = s.store.read_after(&t, Seq::ZERO, 10).await.unwrap();
    assert_eq!(Some(read[0].epoch), after.epoch);
}

async fn unknown_topic_has_empty_head(s: Subject) {
    let t = s.topic("never");
    let head = s.store.head(&t).await.unwrap();
    assert_eq!(head, TopicHead::default());
    assert!(data_of(&s, &t).await.is_empty());
    s.store.ping().await.unwrap();
}

async fn concurrent_appends_get_unique_seqs(s: Subject) {
    let t = s.topic("busy");
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (s, t) = (s.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                seqs.push(append_one(&s, &t, &format!("{w}-{i}")).await);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one publisher's seqs increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    assert_eq!(s.live_for(&t).len(), 200);
}

async fn retention_by_count(s: Subject) {
    let t = s.topic("count");
    for i in 1..=10 {
        append_one(&s, &t, &i.to_string()).await;
    }
    s.store.trim().await.unwrap();
    let head = s.store.head(&t).await.unwrap();
    assert_eq!(
        (head.first_seq, head.last_seq),
        (Some(Seq::new(8)), Seq::new(10))
    );
    assert_eq!(data_of(&s, &t).await, ["8", "9", "10"]);
}

async fn retention_by_age(s: Subject) {
    let t = s.topic("age");
    append_one(&s, &t, "old").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    append_one(&s, &t, "new").await;
    s.store.trim().await.unwrap();
    let head = s.store.head(&t).await.unwrap();
    assert_eq!(
        (head.first_seq, head.last_seq),
        (Some(Seq::new(2)), Seq::new(2)),
        "only the old event aged out"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.store.trim().await.unwrap();
    let head = s.store.head(&t).await.unwrap();
    assert_eq!(
        (head.first_seq, head.last_seq),
        (None, Seq::new(2)),
        "last_seq survives trimming"
    );
}

fn acked(tag: u32, epoch: u64, seq: u64, ts_ms: u64) -> Acked {
    Acked {
        tag,
        epoch: Epoch::new(epoch).expect("non-zero"),
        seq: Seq::new(seq),
        ts_ms,
    }
}

async fn device_acks_move_forward_only(s: Subject) {
    let d = s.device("d");
    assert!(s.store.acked(&d, &[1, 2]).await.unwrap().is_empty());
    let after = s
        .store
        .ack(&d, vec![acked(1, 5, 60, 100), acked(2, 5, 3, 100)])
        .await
        .unwrap();
    assert_eq!(after, vec![acked(1, 5, 60, 100), acked(2, 5, 3, 100)]);
    // Older in the same epoch: kept; newer: moves.
    let after = s
        .store
        .ack(&d, vec![acked(1, 5, 30, 200), acked(2, 5, 4, 50)])
        .await
        .unwrap();
    assert_eq!(after, vec![acked(1, 5, 60, 100), acked(2, 5, 4, 50)]);
    // Another epoch: only a later publish replaces it.
    let after = s.store.ack(&d, vec![acked(1, 6, 1, 99)]).await.unwrap();
    assert_eq!(after, vec![acked(1, 5, 60, 100)]);
    let after = s.store.ack(&d, vec![acked(1, 6, 1, 101)]).await.unwrap();
    assert_eq!(after, vec![acked(1, 6, 1, 101)]);
    assert_eq!(
        s.store.acked(&d, &[2, 1, 3]).await.unwrap(),
        vec![acked(2, 5, 4, 50), acked(1, 6, 1, 101)],
        "stored, in the order asked, unknown tags absent"
    );
}

async fn device_acks_belong_to_one_device(s: Subject) {
    let (a, b) = (s.device("a"), s.device("b"));
    s.store.ack(&a, vec![acked(1, 5, 9, 1)]).await.unwrap();
    assert!(s.store.acked(&b, &[1]).await.unwrap().is_empty());
    s.store.ack(&b, vec![acked(1, 5, 2, 1)]).await.unwrap();
    assert_eq!(
        s.store.acked(&a, &[1]).await.unwrap(),
        vec![acked(1, 5, 9, 1)]
    );
}

async fn concurrent_device_acks_keep_the_newest(s: Subject) {
    let d = s.device("c");
    let store = s.store.clone();
    let tasks: Vec<_> = (1..=20u64)
        .map(|seq| {
            let (store, d) = (store.clone(), d.clone());
            tokio::spawn(async move { store.ack(&d, vec![acked(1, 5, seq, seq)]).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("ack");
    }
    assert_eq!(
        s.store.acked(&d, &[1]).await.unwrap(),
        vec![acked(1, 5, 20, 20)],
        "no concurrent ack moved the position back"
    );
}

async fn expired_events_keep_their_place_and_lose_their_payload(s: Subject) {
    let t = s.topic("ttl");
    let short = NewEvent {
        ttl: Some(Duration::from_millis(1)),
        priority: Priority::High,
        ..event(&t, "gone")
    };
    let long = NewEvent {
        ttl: Some(Duration::from_secs(3600)),
        priority: Priority::Low,
        event_type: Some(Arc::from("cmd")),
        ..event(&t, "kept")
    };
    let acks = s
        .store
        .append(vec![event(&t, "plain"), short, long])
        .await
        .expect("append");
    assert_eq!(acks[0].expires_ms, None);
    assert_eq!(acks[1].expires_ms, Some(acks[1].ts_ms + 1));
    assert_eq!(acks[2].expires_ms, Some(acks[2].ts_ms + 3_600_000));
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.store.trim().await.expect("trim");
    let now = now_ms();
    let read = s.store.read_after(&t, Seq::ZERO, 10).await.expect("read");
    let seqs: Vec<u64> = read.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, [1, 2, 3], "an expired event keeps its place");
    assert!(!read[0].is_expired(now) && &*read[0].data == "plain");
    assert_eq!(read[0].priority, Priority::Normal);
    assert!(read[1].is_expired(now), "{:?}", read[1]);
    assert_eq!(&*read[1].data, "", "the expired payload is dropped");
    assert_eq!(read[1].priority, Priority::High);
    assert!(!read[2].is_expired(now));
    assert_eq!((&*read[2].data, read[2].priority), ("kept", Priority::Low));
    assert_eq!(read[2].event_type.as_deref(), Some("cmd"));
    assert_eq!(read[2].expires_ms, acks[2].expires_ms);
    let head = s.store.head(&t).await.expect("head");
    assert_eq!(
        (head.first_seq, head.last_seq),
        (Some(Seq::new(1)), Seq::new(3))
    );
}

async fn the_loss_ledger_says_what_it_held_before(s: Subject) {
    let d = s.device("lossy");
    assert!(s.store.lost(&d, &[1]).await.unwrap().is_empty());
    let before = s
        .store
        .record_lost(&d, vec![acked(1, 5, 10, 100), acked(2, 5, 3, 100)])
        .await
        .unwrap();
    assert_eq!(before, vec![None, None]);
    let before = s
        .store
        .record_lost(&d, vec![acked(1, 5, 7, 90), acked(2, 5, 8, 120)])
        .await
        .unwrap();
    assert_eq!(
        before,
        vec![Some(acked(1, 5, 10, 100)), Some(acked(2, 5, 3, 100))]
    );
    assert_eq!(
        s.store.lost(&d, &[1, 2]).await.unwrap(),
        vec![acked(1, 5, 10, 100), acked(2, 5, 8, 120)],
        "forward only, like acknowledgements"
    );
    assert!(
        s.store.acked(&d, &[1, 2]).await.unwrap().is_empty(),
        "the loss ledger is not the acknowledgements"
    );
}

async fn shadows_move_by_compare_and_set(s: Subject) {
    let (a, b) = (s.device("shadow-a"), s.device("shadow-b"));
    assert_eq!(s.store.shadow(&a).await.unwrap(), None);
    assert!(
        !s.store.put_shadow(&a, 1, 2, "{}".into()).await.unwrap(),
        "nothing at 1"
    );
    assert!(s
        .store
        .put_shadow(&a, 0, 1, r#"{"v":1}"#.into())
        .await
        .unwrap());
    assert!(!s
        .store
        .put_shadow(&a, 0, 1, r#"{"v":"x"}"#.into())
        .await
        .unwrap());
    assert!(s
        .store
        .put_shadow(&a, 1, 2, r#"{"v":2}"#.into())
        .await
        .unwrap());
    assert_eq!(
        s.store.shadow(&a).await.unwrap(),
        Some((2, r#"{"v":2}"#.to_owned()))
    );
    assert_eq!(
        s.store.shadow(&b).await.unwrap(),
        None,
        "one device's shadow only"
    );
}

async fn concurrent_shadow_writers_from_one_version_one_wins(s: Subject) {
    let d = s.device("shadow-c");
    assert!(s.store.put_shadow(&d, 0, 1, "one".into()).await.unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, d) = (s.store.clone(), d.clone());
            tokio::spawn(async move { store.put_shadow(&d, 1, 2, format!("w{i}")).await })
        })
        .collect();
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.expect("task").expect("put") {
            won.push(i);
        }
    }
    assert_eq!(won.len(), 1, "exactly one writer wins: {won:?}");
    assert_eq!(
        s.store.shadow(&d).await.unwrap(),
        Some((2, format!("w{}", won[0])))
    );
}
