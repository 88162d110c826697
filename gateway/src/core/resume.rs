//! Where a stream starts in each topic, from the client's cursor and the
//! store's heads. Pure: no I/O, so every rule of the resume contract is unit-tested.

use crate::core::cursor::ResumeFrom;
use crate::core::position::{Seq, StreamPos};
use crate::core::topic::Topic;
use crate::store::TopicHead;

/// Why a client is told its history was cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Cut {
    /// Retention removed events the client had not seen (`missed_from..=missed_to`).
    Trimmed {
        /// First missed seq.
        missed_from: u64,
        /// Last missed seq.
        missed_to: u64,
    },
    /// The topic's history was wiped; its epoch changed.
    EpochChanged,
}

/// The start of one topic in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The topic.
    pub topic: Topic,
    /// Where the stream stands: replay the events after `from.seq` up to
    /// `upto`, then go live.
    pub from: StreamPos,
    /// The head when the stream started.
    pub upto: Seq,
    /// Set when the client must be told that history was cut.
    pub cut: Option<Cut>,
}

/// A cursor that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor for topic {topic} points past its newest event (seq {seq} > {last})")]
pub struct CursorAhead {
    /// The topic.
    pub topic: Topic,
    /// Seq in the cursor.
    pub seq: Seq,
    /// Newest seq in the store.
    pub last: Seq,
}

/// Computes the start of `topic` given its head and what the client asked for.
pub fn plan(topic: &Topic, head: TopicHead, from: &ResumeFrom) -> Result<Start, CursorAhead> {
    // The position just before the oldest retained event (the head if none is).
    let before_oldest = head.first_seq.map_or(head.last_seq, Seq::prev);
    let start = |seq: Seq, cut: Option<Cut>| Start {
        topic: topic.clone(),
        from: StreamPos {
            epoch: head.epoch,
            seq,
        },
        upto: head.last_seq,
        cut,
    };
    let pos = match from {
        ResumeFrom::Live => return Ok(start(head.last_seq, None)),
        ResumeFrom::Earliest => return Ok(start(before_oldest, None)),
        ResumeFrom::At(c) => match c.position(topic) {
            // A topic the cursor does not know joins live, like a new subscription.
            None => return Ok(start(head.last_seq, None)),
            Some(p) => p.at,
        },
    };
    let Some(current) = head.epoch else {
        // Nothing was ever stored (or the store lost the topic entirely).
        let cut = pos.epoch.is_some().then_some(Cut::EpochChanged);
        return Ok(start(Seq::ZERO, cut));
    };
    if !pos.same_history(current) {
        return Ok(start(before_oldest, Some(Cut::EpochChanged)));
    }
    // Same epoch, or the client started before the topic had any history
    // (its seq then counts from the start of this epoch).
    let seq = if pos.epoch.is_none() {
        Seq::ZERO
    } else {
        pos.seq
    };
    if seq > head.last_seq {
        return Err(CursorAhead {
            topic: topic.clone(),
            seq,
            last: head.last_seq,
        });
    }
    let first_needed = seq.next();
    let first_available = head.first_seq.unwrap_or(head.last_seq.next());
    if first_available > first_needed {
        let cut = Cut::Trimmed {
            missed_from: first_needed.get(),
            missed_to: first_available.prev().get(),
        };
        return Ok(start(first_available.prev(), Some(cut)));
    }
    Ok(start(seq, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cursor::Cursor;
    use crate::core::position::Epoch;

    fn t() -> Topic {
        Topic::parse("t").unwrap()
    }
    fn head(epoch: u64, first_seq: u64, last_seq: u64) -> TopicHead {
        TopicHead {
            epoch: Epoch::new(epoch),
            first_seq: (first_seq > 0).then_some(Seq::new(first_seq)),
            last_seq: Seq::new(last_seq),
        }
    }
    fn at(epoch: u64, seq: u64) -> ResumeFrom {
        let c = Cursor {
            ts_ms: 0,
            positions: vec![crate::core::cursor::Position {
                tag: t().tag(),
                at: StreamPos {
                    epoch: Epoch::new(epoch),
                    seq: Seq::new(seq),
                },
            }],
        };
        ResumeFrom::At(c)
    }
    fn after(s: &Start) -> u64 {
        s.from.seq.get()
    }

    #[test]
    fn live_and_earliest() {
        let h = head(5, 3, 10);
        let s = plan(&t(), h, &ResumeFrom::Live).unwrap();
        assert_eq!((after(&s), s.upto.get(), s.cut), (10, 10, None));
        let s = plan(&t(), h, &ResumeFrom::Earliest).unwrap();
        assert_eq!((after(&s), s.upto.get(), s.cut), (2, 10, None));
        let s = plan(&t(), head(5, 0, 10), &ResumeFrom::Earliest).unwrap();
        assert_eq!(after(&s), 10, "nothing retained: earliest is live");
    }

    #[test]
    fn exact_resume_within_retention() {
        let s = plan(&t(), head(5, 3, 10), &at(5, 2)).unwrap();
        assert_eq!(
            (after(&s), s.cut),
            (2, None),
            "seq 3 is the first needed and is there"
        );
        let s = plan(&t(), head(5, 3, 10), &at(5, 10)).unwrap();
        assert_eq!((after(&s), s.cut), (10, None));
    }

    #[test]
    fn trimmed_history_is_reported() {
        let s = plan(&t(), head(5, 6, 10), &at(5, 2)).unwrap();
        assert_eq!(after(&s), 5);
        assert_eq!(
            s.cut,
            Some(Cut::Trimmed {
                missed_from: 3,
                missed_to: 5
            })
        );
        let s = plan(&t(), head(5, 0, 10), &at(5, 7)).unwrap();
        assert_eq!(after(&s), 10, "all gone: continue live");
        assert_eq!(
            s.cut,
            Some(Cut::Trimmed {
                missed_from: 8,
                missed_to: 10
            })
        );
    }

    #[test]
    fn epoch_change_is_reported() {
        let s = plan(&t(), head(6, 1, 4), &at(5, 9)).unwrap();
        assert_eq!((after(&s), s.cut), (0, Some(Cut::EpochChanged)));
        let s = plan(&t(), head(0, 0, 0), &at(5, 9)).unwrap();
        assert_eq!((after(&s), s.cut), (0, Some(Cut::EpochChanged)));
    }

    #[test]
    fn cursor_from_before_the_topic_existed_replays_from_the_start() {
        let s = plan(&t(), head(6, 1, 4), &at(0, 0)).unwrap();
        assert_eq!((after(&s), s.cut), (0, None));
    }

    #[test]
    fn cursor_ahead_is_an_error() {
        assert!(plan(&t(), head(5, 1, 4), &at(5, 9)).is_err());
    }

    #[test]
    fn topic_missing_from_cursor_joins_live() {
        let other = ResumeFrom::At(Cursor::single(
            &Topic::parse("o").unwrap(),
            Epoch::new(1).unwrap(),
            Seq::new(1),
            0,
        ));
        let s = plan(&t(), head(5, 1, 4), &other).unwrap();
        assert_eq!((after(&s), s.cut), (4, None));
    }
}
