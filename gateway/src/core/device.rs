//! Devices: who a stream or an acknowledgement belongs to, and the
//! acknowledged position a device resumes from when it lost its own cursor.

use std::fmt;

use crate::core::cursor::{Cursor, Position};
use crate::core::position::{Epoch, Seq, StreamPos};

/// True for 1 to `max` visible ASCII characters: the rule for ids that go
/// into log lines, paths and store keys unescaped.
pub fn is_visible_ascii(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| b.is_ascii_graphic())
}

/// A device's id: the token's device claim, or (auth off) the `device`
/// query parameter. 1 to 200 visible ASCII characters, so it is safe in log
/// lines, URL paths and store keys alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

/// A text that is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a device id is 1 to {} visible ASCII characters", DeviceId::MAX_LEN)]
pub struct BadDeviceId;

impl DeviceId {
    /// Longest id accepted (as long as a token's `sub`).
    pub const MAX_LEN: usize = 200;

    /// Checks `text` against the one rule.
    pub fn parse(text: &str) -> Result<DeviceId, BadDeviceId> {
        is_visible_ascii(text, Self::MAX_LEN)
            .then(|| DeviceId(text.to_owned()))
            .ok_or(BadDeviceId)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The newest position a device acknowledged in one topic, keyed like a
/// cursor position by the topic's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The topic's [`crate::core::topic::Topic::tag`].
    pub tag: u32,
    /// History generation the position belongs to.
    pub epoch: Epoch,
    /// Last event processed.
    pub seq: Seq,
    /// Publish time of the acknowledged cursor's newest event (ms).
    pub ts_ms: u64,
}

impl Acked {
    /// Whether `new` replaces `self`. An acknowledgement never moves back:
    /// in one epoch the higher seq wins; across epochs (the topic was wiped,
    /// and epochs are random, not ordered) the later publish time wins.
    pub fn superseded_by(&self, new: &Acked) -> bool {
        if self.epoch == new.epoch {
            new.seq > self.seq
        } else {
            new.ts_ms > self.ts_ms
        }
    }

    /// Merges `new` into `current` (either may be absent): what is stored after.
    pub fn merge(current: Option<Acked>, new: Acked) -> Acked {
        match current {
            Some(c) if !c.superseded_by(&new) => c,
            _ => new,
        }
    }

    /// The positions of `cursor` that can be acknowledged: those in a topic
    /// with history (a position without an epoch points at nothing).
    /// A tag given twice keeps its newest position.
    pub fn from_cursor(cursor: &Cursor) -> Vec<Acked> {
        let mut out: Vec<Acked> = Vec::with_capacity(cursor.positions.len());
        for p in &cursor.positions {
            let Some(epoch) = p.at.epoch else { continue };
            let a = Acked {
                tag: p.tag,
                epoch,
                seq: p.at.seq,
                ts_ms: cursor.ts_ms,
            };
            match out.iter_mut().find(|o| o.tag == a.tag) {
                Some(o) => *o = Acked::merge(Some(*o), a),
                None => out.push(a),
            }
        }
        out
    }

    /// A cursor that resumes from every position in `list`.
    pub fn to_cursor(list: &[Acked]) -> Cursor {
        Cursor {
            ts_ms: list.iter().map(|a| a.ts_ms).max().unwrap_or(0),
            positions: list
                .iter()
                .map(|a| Position {
                    tag: a.tag,
                    at: StreamPos {
                        epoch: Some(a.epoch),
                        seq: a.seq,
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64, ts_ms: u64) -> Acked {
        Acked {
            tag: 7,
            epoch: Epoch::new(epoch).unwrap(),
            seq: Seq::new(seq),
            ts_ms,
        }
    }

    #[test]
    fn device_ids_are_visible_ascii() {
        assert!(DeviceId::parse("dev-1@plant:7|a").is_ok());
        for bad in ["", "a b", "tab\t", "é", &"x".repeat(201)] {
            assert_eq!(DeviceId::parse(bad), Err(BadDeviceId), "{bad:?}");
        }
    }

    #[test]
    fn an_acknowledgement_never_moves_back() {
        let stored = at(1, 60, 100);
        assert_eq!(Acked::merge(Some(stored), at(1, 30, 200)), stored);
        assert_eq!(Acked::merge(Some(stored), at(1, 60, 200)), stored);
        assert_eq!(Acked::merge(Some(stored), at(1, 61, 50)), at(1, 61, 50));
        assert_eq!(Acked::merge(None, at(1, 3, 1)), at(1, 3, 1));
    }

    #[test]
    fn across_a_wipe_the_later_publish_wins() {
        let stored = at(1, 60, 100);
        assert_eq!(Acked::merge(Some(stored), at(2, 1, 99)), stored);
        assert_eq!(Acked::merge(Some(stored), at(2, 1, 101)), at(2, 1, 101));
    }

    #[test]
    fn cursors_round_trip_without_empty_positions() {
        let c = Cursor {
            ts_ms: 9,
            positions: vec![
                Position {
                    tag: 1,
                    at: StreamPos {
                        epoch: Epoch::new(3),
                        seq: Seq::new(4),
                    },
                },
                Position {
                    tag: 2,
                    at: StreamPos {
                        epoch: None,
                        seq: Seq::ZERO,
                    },
                },
            ],
        };
        let acked = Acked::from_cursor(&c);
        assert_eq!(acked.len(), 1);
        let back = Acked::to_cursor(&acked);
        assert_eq!(back.positions, c.positions[..1]);
        assert_eq!(back.ts_ms, 9);
    }
}
