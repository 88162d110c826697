//! One SSE stream: resume planning, history replay, the seam to live
//! delivery, heartbeats, slow-consumer and drain endings. The body is a
//! generator polled by hyper; dropping it (client gone) frees everything.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::{Refusal, RefuseReason, StreamSlot};
use crate::cursor::{Cursor, Position, ResumeFrom};
use crate::error::ApiError;
use crate::fanout::{Frame, KickReason, Subscription};
use crate::node::Node;
use crate::resume::{self, Cut, Start};
use crate::routing::RouteGuard;
use crate::sse;
use crate::store::{now_ms, StoreError, StoredEvent};
use crate::topic::Topic;

/// Events read from the store per page during replay.
const PAGE: usize = 256;

/// A validated stream request.
pub struct StreamRequest {
    /// Topics, deduplicated, in request order.
    pub topics: Vec<Topic>,
    /// Where to start.
    pub resume: ResumeFrom,
    /// Cancels the client's connection (slow consumers that stop reading).
    pub conn: CancellationToken,
    /// Its slot of `max_connections`.
    pub slot: StreamSlot,
    /// Canary routing registration: closes the stream when its bucket moves.
    pub route: Option<RouteGuard>,
}

/// Why a stream did not open: transient (come back later) or an error.
#[derive(Debug)]
pub enum OpenError {
    /// Come back later.
    Refused(Refusal),
    /// A permanent error (bad cursor).
    Api(ApiError),
}

impl From<Refusal> for OpenError {
    fn from(r: Refusal) -> Self {
        OpenError::Refused(r)
    }
}

impl From<ApiError> for OpenError {
    fn from(e: ApiError) -> Self {
        OpenError::Api(e)
    }
}

/// Opens an admitted stream: plans the resume, registers for live events
/// and returns the body of the streaming response.
pub async fn open(node: &Arc<Node>, req: StreamRequest) -> Result<Body, OpenError> {
    // Register before reading heads: anything newer than the heads arrives
    // through the queue, anything older comes from history — no gap at the seam.
    let sub = node.hub.subscribe(&req.topics, req.conn);
    let mut starts = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let head = match node.store.head(t).await {
            Ok(h) => h,
            Err(e) => {
                node.store_error(e);
                return Err(node.refuse(RefuseReason::Store).into());
            }
        };
        let start = resume::plan(t, head, &req.resume)
            .map_err(|e| ApiError::bad_request("cursor_ahead", e.to_string()))?;
        starts.push(start);
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
        if c.ts_ms > 0 {
            let gap = now_ms().saturating_sub(c.ts_ms) as f64 / 1000.0;
            node.metrics.reconnect_gap_seconds.observe(gap);
        }
    }
    node.metrics.streams_opened_total.inc();
    let moved = req.route.as_ref().map(|r| r.moved.clone());
    Ok(Body::from_stream(body(
        node.clone(),
        sub,
        starts,
        (req.slot, req.route),
        moved,
    )))
}

/// Per-stream positions; builds the bytes for each delivered event.
struct Cursors {
    topics: Vec<Topic>,
    pos: Vec<(u64, u64)>,
    last_ts: u64,
}

impl Cursors {
    fn new(starts: &[Start]) -> Self {
        Cursors {
            topics: starts.iter().map(|s| s.topic.clone()).collect(),
            pos: starts.iter().map(|s| (s.epoch, s.after)).collect(),
            last_ts: 0,
        }
    }

    fn index(&self, t: &Topic) -> Option<usize> {
        self.topics.iter().position(|x| x == t)
    }

    fn id(&self) -> String {
        Cursor {
            ts_ms: self.last_ts,
            positions: self
                .topics
                .iter()
                .zip(&self.pos)
                .map(|(t, (epoch, seq))| Position {
                    tag: t.tag(),
                    epoch: *epoch,
                    seq: *seq,
                })
                .collect(),
        }
        .encode()
    }

    /// Bytes for one event; the caller guarantees it is the next one of its topic.
    fn write(&mut self, i: usize, frame: &Frame, out: &mut Vec<Bytes>) {
        let ev = &frame.event;
        self.pos[i] = (ev.epoch, ev.seq);
        self.last_ts = ev.ts_ms;
        if self.topics.len() == 1 {
            out.push(frame.single());
        } else {
            out.push(frame.body());
            let mut tail = BytesMut::new();
            sse::write_id_and_end(&mut tail, &self.id());
            out.push(tail.freeze());
        }
    }

    /// The `event: reset` block naming every cut topic.
    fn reset(&self, cuts: &[(Topic, Cut)]) -> Bytes {
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
        let data = serde_json::json!({ "topics": topics }).to_string();
        sse::event(Some(sse::RESET_EVENT), &data, Some(&self.id()))
    }
}

enum Step {
    Frame(Option<Arc<Frame>>),
    Heartbeat,
    DrainStarted,
    Close,
}

/// The stream's state between polls.
struct Live {
    node: Arc<Node>,
    cur: Cursors,
}

impl Live {
    /// Writes events of topic `i` from the store with `after < seq <= upto`.
    async fn replay_stored(
        &mut self,
        i: usize,
        upto: u64,
        replay: bool,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StoreError> {
        let topic = self.cur.topics[i].clone();
        loop {
            let (epoch, after) = self.cur.pos[i];
            if after >= upto {
                return Ok(());
            }
            let page = self.node.store.read_after(&topic, after, PAGE).await?;
            let mut progressed = false;
            for ev in page {
                if ev.seq > upto {
                    return Ok(());
                }
                if epoch != 0 && ev.epoch != epoch {
                    // Wiped meanwhile: the live path reports it when the new epoch shows up.
                    return Ok(());
                }
                self.emit(i, &Frame::new(ev), replay, out);
                progressed = true;
            }
            if !progressed {
                // Trimmed under us: the next live event will report the cut.
                return Ok(());
            }
        }
    }

    fn emit(&mut self, i: usize, frame: &Frame, replay: bool, out: &mut Vec<Bytes>) {
        let (epoch, seq) = self.cur.pos[i];
        let ev = &frame.event;
        if (epoch == 0 || ev.epoch == epoch) && ev.seq != seq + 1 {
            return;
        }
        self.cur.write(i, frame, out);
        self.node.metrics.events_delivered_total.inc();
        if replay {
            self.node.metrics.events_replayed_total.inc();
        }
    }

    /// A live frame: skip what was already sent, fill gaps from the store,
    /// report an epoch change, then deliver.
    async fn live(&mut self, frame: Arc<Frame>, out: &mut Vec<Bytes>) -> Result<(), StoreError> {
        let ev: &Arc<StoredEvent> = &frame.event;
        let Some(i) = self.cur.index(&ev.topic) else {
            return Ok(());
        };
        let (epoch, seq) = self.cur.pos[i];
        if epoch != 0 && ev.epoch != epoch {
            self.cur.pos[i] = (ev.epoch, 0);
            out.push(self.cur.reset(&[(ev.topic.clone(), Cut::EpochChanged)]));
        } else if ev.seq <= seq {
            return Ok(());
        }
        if ev.seq > self.cur.pos[i].1 + 1 {
            self.replay_stored(i, ev.seq - 1, false, out).await?;
            let behind = self.cur.pos[i].1;
            if ev.seq > behind + 1 {
                let cut = Cut::Trimmed {
                    missed_from: behind + 1,
                    missed_to: ev.seq - 1,
                };
                self.cur.pos[i].1 = ev.seq - 1;
                out.push(self.cur.reset(&[(ev.topic.clone(), cut)]));
            }
        }
        self.cur.pos[i].0 = ev.epoch;
        self.emit(i, &frame, false, out);
        Ok(())
    }
}

fn body(
    node: Arc<Node>,
    mut sub: Subscription,
    starts: Vec<Start>,
    guards: (StreamSlot, Option<RouteGuard>),
    moved: Option<CancellationToken>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    async_stream::stream! {
        let _guards = guards;
        let moved = moved.unwrap_or_default();
        let mut live = Live { node: node.clone(), cur: Cursors::new(&starts) };
        // The first block carries an `id:` too, so a client that drops before
        // its first event still resumes from exactly here.
        let mut first = BytesMut::from(format!("retry: {}\n", node.jittered_retry_ms()).as_bytes());
        sse::write_id_and_end(&mut first, &live.cur.id());
        yield Ok(first.freeze());
        let cuts: Vec<(Topic, Cut)> = starts
            .iter()
            .filter_map(|s| s.cut.clone().map(|c| (s.topic.clone(), c)))
            .collect();
        if !cuts.is_empty() {
            yield Ok(live.cur.reset(&cuts));
        }
        let mut out = Vec::new();
        for (i, s) in starts.iter().enumerate() {
            if s.after >= s.upto {
                continue;
            }
            if let Some(frames) = node.hub.from_ring(&s.topic, s.epoch, s.after, s.upto) {
                for f in frames {
                    live.emit(i, &f, true, &mut out);
                }
            } else if live.replay_stored(i, s.upto, true, &mut out).await.is_err() {
                yield Ok(sse::retry(node.jittered_retry_ms()));
                return;
            }
            for b in out.drain(..) {
                yield Ok(b);
            }
        }

        let hb = node.config.delivery.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + hb, hb);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = node.drain_signal();
        let mut drain_watch = true;
        let mut close_at: Option<Instant> = None;
        if let Some(start) = *drain.borrow_and_update() {
            close_at = Some(drain_deadline(&node, start.into()));
        }
        // One timer for the drain close, re-armed when draining starts: building a
        // fresh `Sleep` on every loop turn cost a timer-wheel handle per delivery.
        let close = tokio::time::sleep_until(close_at.unwrap_or(Instant::now() + Duration::from_secs(86_400)));
        tokio::pin!(close);
        loop {
            // Fast path: a frame already queued needs none of the timers or signals
            // below (a drain or a move is still seen as soon as the queue runs dry).
            let queued = if close_at.is_none() && !matches!(drain.has_changed(), Ok(true)) {
                sub.rx.try_recv().ok()
            } else {
                None
            };
            let step = if let Some(f) = queued { Step::Frame(Some(f)) } else { tokio::select! {
                biased;
                _ = &mut close, if close_at.is_some() => Step::Close,
                changed = drain.changed(), if drain_watch && close_at.is_none() => {
                    if changed.is_err() { drain_watch = false; }
                    Step::DrainStarted
                }
                f = sub.rx.recv() => Step::Frame(f),
                _ = heartbeat.tick() => Step::Heartbeat,
                // Its bucket now belongs to the other track: leave, the client resumes there.
                _ = moved.cancelled() => Step::Close,
            }};
            match step {
                Step::Frame(Some(frame)) => {
                    sub.took_one();
                    if live.live(frame, &mut out).await.is_err() {
                        yield Ok(sse::retry(node.jittered_retry_ms()));
                        return;
                    }
                    for b in out.drain(..) {
                        yield Ok(b);
                    }
                }
                Step::Frame(None) => {
                    // The hub dropped us (slow consumer): hint, then end; the client resumes by cursor.
                    debug_assert_eq!(sub.shared.kick_reason(), KickReason::SlowConsumer);
                    yield Ok(sse::retry(node.jittered_retry_ms()));
                    return;
                }
                Step::Heartbeat => yield Ok(Bytes::from_static(sse::HEARTBEAT)),
                Step::DrainStarted => {
                    if let Some(start) = *drain.borrow_and_update() {
                        let at = drain_deadline(&node, start.into());
                        close_at = Some(at);
                        close.as_mut().reset(at);
                    }
                }
                Step::Close => {
                    yield Ok(sse::retry(node.jittered_retry_ms()));
                    return;
                }
            }
        }
    }
}

/// Resolves when a stream held here but served elsewhere (forwarded to the
/// other track) must end, as a local stream would: at its moment in the
/// drain window, or when its route moves. Gives the `retry:` block to end with.
pub async fn farewell(node: Arc<Node>, moved: CancellationToken) -> Bytes {
    let mut drain = node.drain_signal();
    let start = loop {
        if let Some(start) = *drain.borrow_and_update() {
            break start;
        }
        tokio::select! {
            changed = drain.changed() => {
                if changed.is_err() {
                    moved.cancelled().await;
                    return sse::retry(node.jittered_retry_ms());
                }
            }
            _ = moved.cancelled() => return sse::retry(node.jittered_retry_ms()),
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(drain_deadline(&node, start.into())) => {}
        _ = moved.cancelled() => {}
    }
    sse::retry(node.jittered_retry_ms())
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
