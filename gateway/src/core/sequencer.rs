//! The per-stream sequencer: decides, for every event offered to a stream
//! from history or from the live queue, whether it is the next one of its
//! topic, a duplicate to drop, or behind a gap that history must fill first,
//! and when the client must be told (`event: reset`) that history was cut
//! or replaced. Pure: no I/O and no bytes, so every rule of the seam between
//! replay and live delivery is unit- and property-tested here.

use crate::core::cursor::{Cursor, Position};
use crate::core::position::{Seq, StreamPos};
use crate::core::resume::{Cut, Start};
use crate::core::topic::Topic;
use crate::store::StoredEvent;

/// What to do with a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Already delivered (it was in history, or is a re-announcement): drop it.
    Skip,
    /// The next one of its topic: offer it.
    Next,
    /// Events are missing before it: read history after `after` up to
    /// `upto`, offering each, then call [`Sequencer::settle`].
    Fill {
        /// The last event the stream has.
        after: Seq,
        /// The last event before the live one.
        upto: Seq,
    },
}

/// Positions of one stream in each of its topics.
#[derive(Debug, Clone)]
pub struct Sequencer {
    topics: Vec<Topic>,
    pos: Vec<StreamPos>,
    last_ts: u64,
}

impl Sequencer {
    /// A stream starting where `starts` say.
    pub fn new(starts: &[Start]) -> Self {
        Sequencer {
            topics: starts.iter().map(|s| s.topic.clone()).collect(),
            pos: starts.iter().map(|s| s.from).collect(),
            last_ts: 0,
        }
    }

    /// The index of `topic` in this stream.
    pub fn index(&self, topic: &Topic) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// Where the stream stands in topic `i`.
    pub fn position(&self, i: usize) -> StreamPos {
        self.pos[i]
    }

    /// Topic `i`.
    pub fn topic(&self, i: usize) -> &Topic {
        &self.topics[i]
    }

    /// Topics in the stream.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// True for a stream of one topic (whose events carry their shared id).
    pub fn is_single(&self) -> bool {
        self.topics.len() == 1
    }

    /// The stream's cursor: its position in every topic.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            ts_ms: self.last_ts,
            positions: self
                .topics
                .iter()
                .zip(&self.pos)
                .map(|(t, at)| Position {
                    tag: t.tag(),
                    at: *at,
                })
                .collect(),
        }
    }

    /// Offers an event of topic `i`, from history or live. True when it is
    /// the next one (and it is now recorded as delivered): write it.
    pub fn offer(&mut self, i: usize, ev: &StoredEvent) -> bool {
        let p = &mut self.pos[i];
        if !p.same_history(ev.epoch) || ev.seq != p.seq.next() {
            return false;
        }
        *p = StreamPos {
            epoch: Some(ev.epoch),
            seq: ev.seq,
        };
        self.last_ts = ev.ts_ms;
        true
    }

    /// Offers an event of topic `i` read from history after the stream's
    /// position. One further ahead than the next means retention removed
    /// those in between since the stream planned its start: they are
    /// reported (the cut), and the event is accepted. `None`: skip it.
    pub fn offer_history(&mut self, i: usize, ev: &StoredEvent) -> Option<Option<Cut>> {
        let p = self.pos[i];
        if !p.same_history(ev.epoch) || ev.seq <= p.seq {
            return None;
        }
        let cut = (ev.seq > p.seq.next()).then(|| Cut::Trimmed {
            missed_from: p.seq.next().get(),
            missed_to: ev.seq.prev().get(),
        });
        self.pos[i] = StreamPos {
            epoch: Some(ev.epoch),
            seq: ev.seq,
        };
        self.last_ts = ev.ts_ms;
        Some(cut)
    }

    /// A live event of topic `i`. A new epoch (the history was wiped) is
    /// reported first (the returned cut) and the stream starts over in it.
    pub fn live(&mut self, i: usize, ev: &StoredEvent) -> (Option<Cut>, Live) {
        let p = &mut self.pos[i];
        let mut cut = None;
        if !p.same_history(ev.epoch) {
            *p = StreamPos {
                epoch: Some(ev.epoch),
                seq: Seq::ZERO,
            };
            cut = Some(Cut::EpochChanged);
        } else if ev.seq <= p.seq {
            return (None, Live::Skip);
        }
        let step = if ev.seq > p.seq.next() {
            Live::Fill {
                after: p.seq,
                upto: ev.seq.prev(),
            }
        } else {
            Live::Next
        };
        (cut, step)
    }

    /// A live event of topic `i` after events its stream will not get (its
    /// queue dropped them): the stream moves to just before `ev`. Returns
    /// how many it passed over.
    pub fn skip_before(&mut self, i: usize, ev: &StoredEvent) -> u64 {
        let p = &mut self.pos[i];
        let n = ev.seq.prev().get().saturating_sub(p.seq.get());
        *p = StreamPos {
            epoch: Some(ev.epoch),
            seq: ev.seq.prev(),
        };
        n
    }

    /// After a fill before the live event `ev`: if history could not close
    /// the gap (retention trimmed it meanwhile), the stream jumps to just
    /// before `ev` and the client is told what it missed.
    pub fn settle(&mut self, i: usize, ev: &StoredEvent) -> Option<Cut> {
        let p = &mut self.pos[i];
        if ev.seq <= p.seq.next() {
            return None;
        }
        let cut = Cut::Trimmed {
            missed_from: p.seq.next().get(),
            missed_to: ev.seq.prev().get(),
        };
        *p = StreamPos {
            epoch: Some(ev.epoch),
            seq: ev.seq.prev(),
        };
        Some(cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::position::Epoch;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn topic() -> Topic {
        Topic::parse("t").unwrap()
    }

    fn ev(epoch: u64, seq: u64) -> StoredEvent {
        StoredEvent {
            topic: topic(),
            epoch: Epoch::new(epoch).unwrap(),
            seq: Seq::new(seq),
            ts_ms: seq,
            event_type: None,
            data: Arc::from(""),
            expires_ms: None,
            priority: Default::default(),
            id: Default::default(),
        }
    }

    fn at(epoch: u64, seq: u64) -> Sequencer {
        Sequencer::new(&[Start {
            topic: topic(),
            from: StreamPos {
                epoch: Epoch::new(epoch),
                seq: Seq::new(seq),
            },
            upto: Seq::new(seq),
            cut: None,
        }])
    }

    #[test]
    fn next_skip_and_fill() {
        let mut s = at(1, 3);
        assert_eq!(s.live(0, &ev(1, 2)), (None, Live::Skip));
        assert_eq!(s.live(0, &ev(1, 4)), (None, Live::Next));
        assert!(s.offer(0, &ev(1, 4)));
        assert!(!s.offer(0, &ev(1, 4)), "never twice");
        assert_eq!(
            s.live(0, &ev(1, 8)),
            (
                None,
                Live::Fill {
                    after: Seq::new(4),
                    upto: Seq::new(7)
                }
            )
        );
        assert!(s.offer(0, &ev(1, 5)));
        // 6 and 7 were trimmed before the fill could read them.
        assert_eq!(
            s.settle(0, &ev(1, 8)),
            Some(Cut::Trimmed {
                missed_from: 6,
                missed_to: 7
            })
        );
        assert!(s.offer(0, &ev(1, 8)));
        assert_eq!(s.cursor().ts_ms, 8);
    }

    #[test]
    fn a_new_epoch_is_reported_and_starts_over() {
        let mut s = at(1, 9);
        assert_eq!(s.live(0, &ev(2, 1)), (Some(Cut::EpochChanged), Live::Next));
        assert!(s.offer(0, &ev(2, 1)));
        let mut s = at(1, 9);
        let (cut, step) = s.live(0, &ev(2, 3));
        assert_eq!(cut, Some(Cut::EpochChanged));
        assert_eq!(
            step,
            Live::Fill {
                after: Seq::ZERO,
                upto: Seq::new(2)
            }
        );
        assert!(!s.offer(0, &ev(1, 10)), "the old epoch is over");
    }

    #[test]
    fn a_stream_that_started_without_history_takes_the_first_epoch() {
        let mut s = at(0, 0);
        assert_eq!(s.live(0, &ev(5, 1)), (None, Live::Next));
        assert!(s.offer(0, &ev(5, 1)));
        assert_eq!(s.position(0).epoch, Epoch::new(5));
    }

    /// What a stream sees of one topic: its start, the head when it
    /// started, the history a read returns (trimmed below `first`), the
    /// live events in order from `live_from` (at most the head + 1, since a
    /// stream subscribes before it reads the head, so with duplicates), and
    /// a wipe after `wipe_at` live events into a new epoch of `new_len`.
    #[derive(Debug, Clone)]
    struct World {
        start: u64,
        head: u64,
        first: u64,
        live_from: u64,
        wipe_at: Option<usize>,
        new_len: u64,
    }

    const LIVE_PAST_HEAD: u64 = 10;

    fn world() -> impl Strategy<Value = World> {
        (
            0u64..30,
            0u64..30,
            1u64..45,
            1u64..35,
            proptest::option::of(0usize..40),
            1u64..10,
        )
            .prop_map(|(a, b, first, live_from, wipe_at, new_len)| World {
                start: a.min(b),
                head: a.max(b),
                first,
                live_from: live_from.min(a.max(b) + 1),
                wipe_at,
                new_len,
            })
    }

    /// What a client got: delivered (epoch, seq) and the cuts, in order.
    type Seen = (Vec<(u64, u64)>, Vec<Cut>);

    /// Drives a sequencer the way a stream does: replay from history, then
    /// live events, filling gaps from history.
    fn run(w: &World) -> Seen {
        let history = |epoch: u64, after: Seq, upto: Seq| -> Vec<StoredEvent> {
            let first = if epoch == 1 { w.first } else { 1 };
            (after.get() + 1..=upto.get())
                .filter(|s| *s >= first)
                .map(|s| ev(epoch, s))
                .collect()
        };
        let mut s = at(1, w.start);
        let (mut out, mut cuts) = (Vec::new(), Vec::new());
        let replay = |s: &mut Sequencer, e: &StoredEvent, out: &mut Vec<_>, cuts: &mut Vec<_>| {
            if let Some(cut) = s.offer_history(0, e) {
                cuts.extend(cut);
                out.push((e.epoch.get(), e.seq.get()));
            }
        };
        for h in history(1, Seq::new(w.start), Seq::new(w.head)) {
            replay(&mut s, &h, &mut out, &mut cuts);
        }
        let mut live: Vec<StoredEvent> = (w.live_from..=w.head + LIVE_PAST_HEAD)
            .map(|n| ev(1, n))
            .collect();
        if let Some(at) = w.wipe_at {
            live.truncate(at.min(live.len()));
            live.extend((1..=w.new_len).map(|n| ev(2, n)));
        }
        for e in &live {
            let (cut, step) = s.live(0, e);
            cuts.extend(cut);
            match step {
                Live::Skip => continue,
                Live::Next => {}
                Live::Fill { after, upto } => {
                    for h in history(e.epoch.get(), after, upto) {
                        replay(&mut s, &h, &mut out, &mut cuts);
                    }
                    cuts.extend(s.settle(0, e));
                }
            }
            if s.offer(0, e) {
                out.push((e.epoch.get(), e.seq.get()));
            }
        }
        (out, cuts)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn every_event_once_in_order_and_every_gap_reported(w in world()) {
            let (out, cuts) = run(&w);
            let old: Vec<u64> = out.iter().filter(|d| d.0 == 1).map(|d| d.1).collect();
            let new: Vec<u64> = out.iter().filter(|d| d.0 == 2).map(|d| d.1).collect();
            let boundary = out.iter().position(|d| d.0 == 2).unwrap_or(out.len());
            prop_assert!(out[boundary..].iter().all(|d| d.0 == 2), "old after new: {:?}", out);
            prop_assert!(old.windows(2).all(|p| p[0] < p[1]), "once, in order: {:?}", old);
            let missed: Vec<u64> = cuts.iter().flat_map(|c| match c {
                Cut::Trimmed { missed_from, missed_to } => (*missed_from..=*missed_to).collect(),
                Cut::EpochChanged => Vec::new(),
            }).collect();
            // Only what history no longer had may be reported missed, and
            // delivered and missed together are every event after the start.
            prop_assert!(missed.iter().all(|n| *n < w.first),
                "a retained event was reported missed: {:?} {:?}", w, cuts);
            let mut all: Vec<u64> = old.iter().chain(&missed).copied().collect();
            all.sort_unstable();
            let top = all.last().copied().unwrap_or(w.start);
            prop_assert_eq!(all, (w.start + 1..=top).collect::<Vec<_>>(), "{:?}", w);
            match w.wipe_at {
                None => prop_assert_eq!(top, w.head + LIVE_PAST_HEAD),
                Some(_) => {
                    prop_assert_eq!(new, (1..=w.new_len).collect::<Vec<_>>());
                    prop_assert_eq!(cuts.iter().filter(|c| **c == Cut::EpochChanged).count(), 1);
                }
            }
        }
    }
}
