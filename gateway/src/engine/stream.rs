//! One subscription: resume planning, history replay, the seam to live
//! delivery, heartbeats, slow-consumer and drain endings. It yields typed
//! [`Delivery`]s that the protocol edge encodes; dropping it (client gone)
//! frees everything.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use prometheus::IntCounter;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::lifetime::{Ended, Lifetime};
use crate::config::Backpressure;
use crate::core::cursor::ResumeFrom;
use crate::core::device::{Acked, DeviceId};
use crate::core::position::Seq;
use crate::core::resume::{self, CursorAhead, Cut, Start};
use crate::core::sequencer::{self, Sequencer};
use crate::core::shadow;
use crate::core::topic::Topic;
use crate::engine::admission::{Refusal, RefuseReason, StreamSlot};
use crate::engine::delivery::{Delivery, End, Notice};
use crate::engine::fanout::{Frame, KickReason, Subscription};
use crate::engine::ledger::DeviceTrack;
use crate::engine::node::Node;
use crate::ops::degrade::Layer;
use crate::routing::RouteGuard;
use crate::store::{now_ms, StoreError, StoredEvent};

/// Events read from the store per page during replay.
const PAGE: usize = 256;

/// A validated stream request.
pub struct StreamRequest {
    /// Topics, deduplicated, in request order.
    pub topics: Vec<Topic>,
    /// Where to start (without a cursor, a device starts where it acknowledged).
    pub resume: ResumeFrom,
    /// The device the stream belongs to.
    pub device: Option<DeviceId>,
    /// The shadow version the device says it has (`?shadow_version=`).
    pub shadow_version: Option<u64>,
    /// Cancels the client's connection (slow consumers that stop reading).
    pub conn: CancellationToken,
    /// Its slot of `max_connections`.
    pub slot: StreamSlot,
    /// Canary routing registration: closes the stream when its bucket moves.
    pub route: Option<RouteGuard>,
    /// The credential that opened it: the stream ends when it does.
    pub credential: Option<Lifetime>,
}

/// Why a stream did not open: transient (come back later) or a cursor it
/// cannot honour.
#[derive(Debug)]
pub enum OpenError {
    /// Come back later.
    Refused(Refusal),
    /// The cursor points past the newest event.
    CursorAhead(CursorAhead),
}

/// What an open subscription yields, until the gateway ends it or the
/// client drops it.
pub type Deliveries = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// Opens an admitted stream: plans the resume, registers for live events
/// and returns what it delivers.
pub async fn open(node: &Arc<Node>, mut req: StreamRequest) -> Result<Deliveries, OpenError> {
    // With the storage layer degraded the store is not asked: streams are
    // planned from the hot ring, and one that needs the store comes back later.
    let ring_only = node.degrade.flags.is_on(Layer::Storage);
    let degraded = || OpenError::Refused(node.refuse(RefuseReason::Degraded));
    if ring_only {
        if req.device.is_some() && matches!(req.resume, ResumeFrom::Live) {
            // Its position is in the store.
            return Err(degraded());
        }
        if matches!(req.resume, ResumeFrom::Earliest) {
            return Err(degraded());
        }
        // Its accounting needs the store too; this stream goes without.
        req.device = None;
    }
    let acked = match &req.device {
        Some(d) => {
            let tags: Vec<u32> = req.topics.iter().map(Topic::tag).collect();
            node.store.acked(d, &tags).await.map_err(|e| {
                node.store_error(e);
                OpenError::Refused(node.refuse(RefuseReason::Store))
            })?
        }
        None => Vec::new(),
    };
    let from_acks = matches!(req.resume, ResumeFrom::Live) && !acked.is_empty();
    if from_acks {
        req.resume = ResumeFrom::At(Acked::to_cursor(&acked));
    }
    // Register before reading heads: anything newer than the heads arrives
    // through the queue, anything older comes from history — no gap at the seam.
    // A device's stream also follows its shadow's reserved topic, outside
    // the cursor: shadow events carry their version instead.
    let sub = match &req.device {
        Some(d) => {
            let mut topics = req.topics.clone();
            topics.push(shadow::topic(d));
            node.hub.subscribe(&topics, req.conn)
        }
        None => node.hub.subscribe(&req.topics, req.conn),
    };
    let mut starts = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let head = if ring_only {
            node.hub.ring_head(t).ok_or_else(degraded)?
        } else {
            match node.store.head(t).await {
                Ok(h) => h,
                Err(e) => {
                    node.store_error(e);
                    return Err(OpenError::Refused(node.refuse(RefuseReason::Store)));
                }
            }
        };
        let start = match resume::plan(t, head, &req.resume) {
            Ok(s) => s,
            // The device's own stored position cannot be corrected by the
            // client, so a 400 would refuse it forever: join live instead.
            Err(ahead) if from_acks => {
                tracing::warn!(error = %ahead, "acknowledged position is ahead of the topic; joining live");
                resume::plan(t, head, &ResumeFrom::Live).map_err(OpenError::CursorAhead)?
            }
            Err(ahead) => return Err(OpenError::CursorAhead(ahead)),
        };
        // The ring's start is not where history starts: a cursor before it
        // needs the store, not a reset.
        if ring_only
            && (start.cut.is_some()
                || (start.from.seq < start.upto
                    && node.hub.from_ring(t, start.from, start.upto).is_none()))
        {
            return Err(degraded());
        }
        starts.push(start);
    }
    let shadow_first = match &req.device {
        Some(d) => shadow_pending(node, d, req.shadow_version)
            .await
            .map_err(|e| {
                node.store_error(e);
                OpenError::Refused(node.refuse(RefuseReason::Store))
            })?,
        None => None,
    };
    if from_acks {
        node.metrics.device_resumes_total.inc();
    }
    if let Some(gap) = req.device.as_ref().and_then(|d| node.recovery.resumed(d)) {
        node.metrics
            .conn_recovery_seconds
            .observe(gap.as_secs_f64());
    }
    if let ResumeFrom::At(c) = &req.resume {
        let outcome = if starts.iter().any(|s| s.cut.is_some()) {
            "reset"
        } else {
            "exact"
        };
        node.metrics
            .resume_total
            .with_label_values(&[outcome])
            .inc();
        // An acknowledged position's time is when its event was published,
        // not when the client went away: it says nothing about the gap.
        if c.ts_ms > 0 && !from_acks {
            let gap = now_ms().saturating_sub(c.ts_ms) as f64 / 1000.0;
            node.metrics.reconnect_gap_seconds.observe(gap);
        }
    }
    let protocol = req.slot.protocol().as_str();
    node.metrics
        .streams_opened_total
        .with_label_values(&[protocol])
        .inc();
    let moved = req.route.as_ref().map(|r| r.moved.clone());
    let b = body(
        node.clone(),
        sub,
        starts,
        (req.slot, req.route),
        Endings {
            moved: moved.unwrap_or_default(),
            credential: req.credential,
        },
        req.device.map(|d| (d, acked)),
        shadow_first,
    );
    Ok(Box::pin(b))
}

/// The `event: shadow` a device's stream starts with: the current delta,
/// unless nothing is pending or the device says it has this version.
async fn shadow_pending(
    node: &Node,
    device: &DeviceId,
    has_version: Option<u64>,
) -> Result<Option<String>, StoreError> {
    let Some(stored) = node.store.shadow(device).await? else {
        return Ok(None);
    };
    let Some(doc) = shadow::Shadow::from_stored(stored) else {
        tracing::warn!(%device, "stored shadow is unreadable; not announced");
        return Ok(None);
    };
    if has_version.is_some_and(|v| v >= doc.version) {
        return Ok(None);
    }
    let delta = doc.delta(now_ms());
    Ok((!delta.is_empty()).then(|| shadow::event_data(doc.version, &delta)))
}

/// What woke the stream loop.
enum Step {
    Frame(Option<Arc<Frame>>),
    Heartbeat,
    DrainStarted,
    Close,
    CredentialEnded(Ended),
}

/// What, besides the client and a drain, ends a stream.
struct Endings {
    /// Its bucket moved to the other track.
    moved: CancellationToken,
    /// The credential that opened it.
    credential: Option<Lifetime>,
}

/// The stream's state between polls: its sequencer, and what it delivers.
struct Live {
    node: Arc<Node>,
    seq: Sequencer,
    /// Events passed over and not yet announced: what, topic index, count.
    notices: Vec<(Notice, usize, u64)>,
    /// Set for a device's stream (boxed: most streams are not one).
    device: Option<Box<DeviceTrack>>,
    /// `events_delivered_total` of the stream's protocol.
    delivered: IntCounter,
}

impl Live {
    fn id(&self) -> String {
        self.seq.cursor().encode()
    }

    /// Delivers an event (the sequencer has recorded it).
    fn write(&self, frame: &Arc<Frame>, replay: bool, out: &mut Vec<Delivery>) {
        // A single-topic stream's cursor is the one the shared frame carries.
        let id = (!self.seq.is_single()).then(|| self.id());
        out.push(Delivery::Event {
            frame: frame.clone(),
            id,
        });
        self.delivered.inc();
        if replay {
            self.node.metrics.events_replayed_total.inc();
        }
        if let Some(d) = &self.device {
            d.delivered();
        }
    }

    /// Writes an event the sequencer accepted, unless it expired: an expired
    /// event is never delivered, only counted for `event: expired`.
    fn deliver(&mut self, i: usize, frame: &Arc<Frame>, replay: bool, out: &mut Vec<Delivery>) {
        let ev = &frame.event;
        if ev.expires_ms.is_some() && ev.is_expired(now_ms()) {
            self.note(Notice::Expired, i, 1);
            self.node.metrics.events_expired_total.inc();
            if let Some(d) = &mut self.device {
                d.expired(i, ev);
            }
        } else {
            self.write(frame, replay, out);
        }
    }

    fn note(&mut self, what: Notice, i: usize, n: u64) {
        match self
            .notices
            .iter_mut()
            .find(|(w, t, _)| *w == what && *t == i)
        {
            Some((_, _, count)) => *count += n,
            None => self.notices.push((what, i, n)),
        }
    }

    /// The `expired` / `skipped` notices for what was passed over since the
    /// last ones (no cursor: they are announced again if the client drops
    /// before the next).
    fn take_notices(&mut self) -> Vec<Delivery> {
        let notices = std::mem::take(&mut self.notices);
        [Notice::Expired, Notice::Skipped]
            .into_iter()
            .filter_map(|what| {
                let topics: Vec<serde_json::Value> = notices
                    .iter()
                    .filter(|(w, _, _)| *w == what)
                    .map(|(_, i, count)| {
                        serde_json::json!({ "topic": self.seq.topic(*i), "count": count })
                    })
                    .collect();
                (!topics.is_empty()).then(|| Delivery::Notice {
                    kind: what,
                    data: serde_json::json!({ "topics": topics }).to_string(),
                })
            })
            .collect()
    }

    /// Puts the `event: expired` and `event: skipped` blocks before what a
    /// step wrote, and the cursor after it: the stream has moved past those
    /// events even if nothing else followed them. Then settles the device's
    /// losses.
    async fn announce(&mut self, out: &mut Vec<Delivery>) -> Result<(), StoreError> {
        let notices = self.take_notices();
        if !notices.is_empty() {
            out.splice(0..0, notices);
            out.push(Delivery::Position { id: self.id() });
        }
        if let Some(d) = &mut self.device {
            d.settle_lost(&self.seq).await?;
            d.update_unacked(&self.seq);
        }
        Ok(())
    }

    /// The reset naming every cut topic.
    fn reset(&self, cuts: &[(Topic, Cut)]) -> Delivery {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            topic: &'a Topic,
            #[serde(flatten)]
            cut: &'a Cut,
        }
        let topics: Vec<Entry<'_>> = cuts
            .iter()
            .map(|(topic, cut)| Entry { topic, cut })
            .collect();
        Delivery::Reset {
            data: serde_json::json!({ "topics": topics }).to_string(),
            id: self.id(),
        }
    }

    fn report(&self, i: usize, cut: Option<Cut>, out: &mut Vec<Delivery>) {
        if let Some(cut) = cut {
            out.push(self.reset(&[(self.seq.topic(i).clone(), cut)]));
        }
    }

    /// Offers an exact-next event (live, or from the hot ring).
    fn next(&mut self, i: usize, frame: &Arc<Frame>, replay: bool, out: &mut Vec<Delivery>) {
        if self.seq.offer(i, &frame.event) {
            self.deliver(i, frame, replay, out);
        }
    }

    /// Writes events of topic `i` from the store, after the stream's
    /// position up to `upto` (or until history runs out).
    async fn replay_stored(
        &mut self,
        i: usize,
        upto: Seq,
        replay: bool,
        out: &mut Vec<Delivery>,
    ) -> Result<(), StoreError> {
        let topic = self.seq.topic(i).clone();
        loop {
            let after = self.seq.position(i).seq;
            if after >= upto {
                return Ok(());
            }
            let page = self.node.store.read_after(&topic, after, PAGE).await?;
            let mut progressed = false;
            for ev in page {
                if ev.seq > upto {
                    return Ok(());
                }
                // Another epoch: the live path reports it when it shows up.
                let Some(cut) = self.seq.offer_history(i, &ev) else {
                    return Ok(());
                };
                self.report(i, cut, out);
                self.deliver(i, &Frame::new(ev), replay, out);
                progressed = true;
            }
            if !progressed {
                // Nothing left up to `upto`: the caller settles the gap.
                return Ok(());
            }
        }
    }

    /// A live frame: skip what was already sent, fill gaps from the store,
    /// report an epoch change or a cut, then deliver.
    async fn live(&mut self, frame: Arc<Frame>, out: &mut Vec<Delivery>) -> Result<(), StoreError> {
        let ev: &Arc<StoredEvent> = &frame.event;
        let Some(i) = self.seq.index(&ev.topic) else {
            // Only a device's shadow topic is followed outside the cursor.
            if ev.topic.is_reserved() && !ev.is_expired(now_ms()) {
                out.push(Delivery::Shadow {
                    data: ev.data.clone(),
                    id: None,
                });
            }
            return Ok(());
        };
        let (cut, step) = self.seq.live(i, ev);
        self.report(i, cut, out);
        match step {
            sequencer::Live::Skip => return Ok(()),
            sequencer::Live::Next => {}
            // The queue made room by dropping this topic's older events:
            // they are announced, not fetched.
            sequencer::Live::Fill { .. } if frame.policy != Backpressure::Disconnect => {
                let n = self.seq.skip_before(i, ev);
                self.note(Notice::Skipped, i, n);
                self.node
                    .metrics
                    .events_skipped_total
                    .with_label_values(&[frame.policy.as_str()])
                    .inc_by(n);
            }
            sequencer::Live::Fill { upto, .. } => {
                self.replay_stored(i, upto, false, out).await?;
                let cut = self.seq.settle(i, ev);
                self.report(i, cut, out);
            }
        }
        self.next(i, &frame, false, out);
        Ok(())
    }
}

fn body(
    node: Arc<Node>,
    mut sub: Subscription,
    starts: Vec<Start>,
    guards: (StreamSlot, Option<RouteGuard>),
    endings: Endings,
    device: Option<(DeviceId, Vec<Acked>)>,
    shadow_first: Option<String>,
) -> impl Stream<Item = Delivery> {
    async_stream::stream! {
        let delivered = node
            .metrics
            .events_delivered_total
            .with_label_values(&[guards.0.protocol().as_str()]);
        let _guards = guards;
        let Endings { moved, credential } = endings;
        // Boxed, and only for streams opened with a credential: an idle
        // stream's state is its memory cost, and most carry no deadline.
        let mut credential_ended = credential.as_ref().map(|c| Box::pin(c.ended()));
        let seq = Sequencer::new(&starts);
        let device = device.map(|(d, acked)| Box::new(DeviceTrack::new(node.ledger(), d, &seq, &acked)));
        let mut live = Live { node: node.clone(), seq, notices: Vec::new(), device, delivered };
        // The first block carries an `id:` too, so a client that drops before
        // its first event still resumes from exactly here.
        yield Delivery::Start { retry_ms: node.jittered_retry_ms(), id: live.id() };
        if let Some(data) = shadow_first {
            yield Delivery::Shadow { data: data.into(), id: Some(live.id()) };
        }
        let cuts: Vec<(Topic, Cut)> = starts
            .iter()
            .filter_map(|s| s.cut.clone().map(|c| (s.topic.clone(), c)))
            .collect();
        if !cuts.is_empty() {
            yield live.reset(&cuts);
        }
        // The whole replay is gathered first, so that `event: expired`
        // (counts of every topic) comes before any replayed event.
        let mut out = Vec::new();
        for (i, s) in starts.iter().enumerate() {
            if s.from.seq >= s.upto {
                continue;
            }
            if let Some(frames) = node.hub.from_ring(&s.topic, s.from, s.upto) {
                for f in frames {
                    live.next(i, &f, true, &mut out);
                }
            } else if live.replay_stored(i, s.upto, true, &mut out).await.is_err() {
                yield Delivery::End(End::Retry { retry_ms: node.jittered_retry_ms() });
                return;
            }
        }
        if live.announce(&mut out).await.is_err() {
            yield Delivery::End(End::Retry { retry_ms: node.jittered_retry_ms() });
            return;
        }
        for d in out.drain(..) {
            yield d;
        }

        // What the replay needed is not kept for the life of the stream.
        drop(starts);
        let mut out = Vec::with_capacity(2);
        let hb = node.config.delivery.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + hb, hb);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = node.drain_signal();
        let mut drain_watch = true;
        let mut close_at: Option<Instant> = None;
        if let Some(start) = *drain.borrow_and_update() {
            close_at = Some(drain_end(&node, start.into()));
        }
        // One timer for the drain close, made when draining starts (not on
        // every loop turn, which cost a timer-wheel handle per delivery).
        // Made once: a fresh one every turn cost a waiter registration and
        // removal (two locks) per delivery.
        let moved = moved.cancelled_owned();
        tokio::pin!(moved);
        let mut close = close_at.map(|at| Box::pin(tokio::time::sleep_until(at)));
        loop {
            // Fast path: a frame already queued needs none of the timers or signals
            // below (a drain or a move is still seen as soon as the queue runs dry).
            // An ended credential is checked on every turn: a busy stream must
            // not outlive its token.
            let open = credential.as_ref().is_none_or(|c| !c.is_over());
            let queued = if open && close_at.is_none() && !matches!(drain.has_changed(), Ok(true)) {
                sub.rx.try_recv()
            } else {
                None
            };
            let step = if let Some(f) = queued { Step::Frame(Some(f)) } else { tokio::select! {
                biased;
                _ = async { close.as_mut().expect("guarded").await }, if close.is_some() => Step::Close,
                why = async { credential_ended.as_mut().expect("guarded").await }, if credential_ended.is_some() => Step::CredentialEnded(why),
                changed = drain.changed(), if drain_watch && close_at.is_none() => {
                    if changed.is_err() { drain_watch = false; }
                    Step::DrainStarted
                }
                f = sub.rx.recv() => Step::Frame(f),
                _ = heartbeat.tick() => Step::Heartbeat,
                // Its bucket now belongs to the other track: leave, the client resumes there.
                _ = &mut moved => Step::Close,
            }};
            match step {
                Step::Frame(Some(frame)) => {
                    sub.took_one(&frame);
                    if live.live(frame, &mut out).await.is_err()
                        || live.announce(&mut out).await.is_err()
                    {
                        yield Delivery::End(End::Retry { retry_ms: node.jittered_retry_ms() });
                        return;
                    }
                    for d in out.drain(..) {
                        yield d;
                    }
                }
                Step::Frame(None) => {
                    // The hub dropped us (slow consumer): hint, then end; the client resumes by cursor.
                    debug_assert_eq!(sub.shared.kick_reason(), KickReason::SlowConsumer);
                    yield Delivery::End(End::Retry { retry_ms: node.jittered_retry_ms() });
                    return;
                }
                Step::Heartbeat => {
                    // Acknowledgements may arrive through another replica.
                    if let Some(d) = live.device.as_mut().filter(|d| d.has_unacked()) {
                        if let Err(e) = d.refresh_acked(&live.seq).await {
                            node.store_error(e);
                        }
                    }
                    yield Delivery::Heartbeat;
                }
                Step::DrainStarted => {
                    if let Some(start) = *drain.borrow_and_update() {
                        let at = drain_deadline(&node, start.into());
                        close_at = Some(at);
                        close = Some(Box::pin(tokio::time::sleep_until(at)));
                    }
                }
                Step::Close => {
                    yield Delivery::End(End::Retry { retry_ms: node.jittered_retry_ms() });
                    return;
                }
                Step::CredentialEnded(why) => {
                    // The client comes back with a fresh credential and its
                    // Last-Event-ID, which this block leaves untouched.
                    node.metrics.streams_ended_by_credential_total
                        .with_label_values(&[why.as_str()])
                        .inc();
                    yield Delivery::End(End::Credential { why, retry_ms: node.jittered_retry_ms() });
                    return;
                }
            }
        }
    }
}

/// Resolves when a stream held here but served elsewhere (forwarded to the
/// other track) must end, as a local stream would: at its moment in the
/// drain window, or when its route moves. Gives the ending to send.
pub async fn farewell(node: Arc<Node>, moved: CancellationToken) -> End {
    let mut drain = node.drain_signal();
    let started = *drain.borrow_and_update();
    // Held during the drain, it ends with the window, as a stream does.
    let close_at = match started {
        Some(start) => drain_end(&node, start.into()),
        None => loop {
            if let Some(start) = *drain.borrow_and_update() {
                break drain_deadline(&node, start.into());
            }
            tokio::select! {
                changed = drain.changed() => {
                    if changed.is_err() {
                        moved.cancelled().await;
                        return End::Retry { retry_ms: node.jittered_retry_ms() };
                    }
                }
                _ = moved.cancelled() => return End::Retry { retry_ms: node.jittered_retry_ms() },
            }
        },
    };
    tokio::select! {
        _ = tokio::time::sleep_until(close_at) => {}
        _ = moved.cancelled() => {}
    }
    End::Retry {
        retry_ms: node.jittered_retry_ms(),
    }
}

/// The end of the drain window: a stream opened while the gateway drains
/// came on a connection made after the drain began, so nothing else took
/// it (a single instance, or the moment before the load balancer saw
/// readiness fall). It is served until the gateway stops, rather than
/// refused until the process is gone.
fn drain_end(node: &Node, start: Instant) -> Instant {
    start + node.config.delivery.drain_window
}

/// A random moment within the drain window, so streams leave gradually.
fn drain_deadline(node: &Node, start: Instant) -> Instant {
    let window = node.config.delivery.drain_window;
    let offset = if window.is_zero() {
        Duration::ZERO
    } else {
        window.mul_f64(rand::rng().random_range(0.0..0.9))
    };
    start + offset
}
