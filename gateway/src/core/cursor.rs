//! Resume cursors: the opaque `id:` of every event and the `Last-Event-ID` a
//! client sends back. One cursor carries the stream's position in every topic
//! it reads, so a multi-topic stream resumes exactly from one header.
//!
//! Wire form: base64url (no padding) of
//! `version(1) | ts_ms(varint) | n(varint) | n × (tag u32 LE | epoch varint | seq varint) | check u32 LE`.
//! The check is FNV-1a over everything before it, so a mangled or hand-edited
//! cursor is rejected instead of silently resuming from the wrong place.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::core::hash::fnv1a32;
use crate::core::position::{Epoch, Seq, StreamPos};
use crate::core::topic::Topic;

const VERSION: u8 = 1;
/// Longest cursor text accepted (a stream carries at most a few dozen topics).
pub const MAX_CURSOR_LEN: usize = 4096;

/// Where a stream stands in one topic (on the wire an absent epoch is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The topic's [`Topic::tag`].
    pub tag: u32,
    /// The position in that topic.
    pub at: StreamPos,
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// When the newest event it points at was published (ms since the Unix epoch).
    pub ts_ms: u64,
    /// One position per topic.
    pub positions: Vec<Position>,
}

/// What the client asked for with `Last-Event-ID` / `last_event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeFrom {
    /// No cursor: live events only.
    Live,
    /// `earliest`: all retained history.
    Earliest,
    /// An exact position.
    At(Cursor),
}

/// Why a cursor text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is too long")]
    TooLong,
    #[error("cursor is not valid base64url")]
    Encoding,
    #[error("cursor is truncated or has trailing bytes")]
    Truncated,
    #[error("cursor version {0} is not supported")]
    Version(u8),
    #[error("cursor checksum does not match (mangled or forged)")]
    Checksum,
}

impl ResumeFrom {
    /// Parses the header/query value; empty means live.
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        let text = text.trim();
        if text.is_empty() {
            Ok(ResumeFrom::Live)
        } else if text == "earliest" {
            Ok(ResumeFrom::Earliest)
        } else {
            Cursor::decode(text).map(ResumeFrom::At)
        }
    }
}

impl Cursor {
    /// A cursor for one topic.
    pub fn single(topic: &Topic, epoch: Epoch, seq: Seq, ts_ms: u64) -> Self {
        Cursor {
            ts_ms,
            positions: vec![Position {
                tag: topic.tag(),
                at: StreamPos {
                    epoch: Some(epoch),
                    seq,
                },
            }],
        }
    }

    /// The position recorded for `topic`, if any.
    pub fn position(&self, topic: &Topic) -> Option<Position> {
        let tag = topic.tag();
        self.positions.iter().copied().find(|p| p.tag == tag)
    }

    /// Encodes into the compact text form.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(8 + self.positions.len() * 16);
        buf.push(VERSION);
        put_varint(&mut buf, self.ts_ms);
        put_varint(&mut buf, self.positions.len() as u64);
        for p in &self.positions {
            buf.extend_from_slice(&p.tag.to_le_bytes());
            put_varint(&mut buf, Epoch::raw(p.at.epoch));
            put_varint(&mut buf, p.at.seq.get());
        }
        let check = fnv1a32(&buf);
        buf.extend_from_slice(&check.to_le_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Decodes the text form, verifying version and checksum.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let buf = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| CursorError::Encoding)?;
        if buf.len() < 5 {
            return Err(CursorError::Truncated);
        }
        let (body, check) = buf.split_at(buf.len() - 4);
        if fnv1a32(body) != u32::from_le_bytes(check.try_into().expect("4 bytes")) {
            return Err(CursorError::Checksum);
        }
        let mut r = Reader { buf: body, pos: 0 };
        let version = r.byte()?;
        if version != VERSION {
            return Err(CursorError::Version(version));
        }
        let ts_ms = r.varint()?;
        let n = r.varint()?;
        // Each position takes at least 6 bytes: refuse counts the buffer cannot hold.
        if n > (body.len() as u64) / 6 {
            return Err(CursorError::Truncated);
        }
        let mut positions = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let tag = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
            let epoch = Epoch::new(r.varint()?);
            let seq = Seq::new(r.varint()?);
            positions.push(Position {
                tag,
                at: StreamPos { epoch, seq },
            });
        }
        if r.pos != body.len() {
            return Err(CursorError::Truncated);
        }
        Ok(Cursor { ts_ms, positions })
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, CursorError> {
        let b = *self.buf.get(self.pos).ok_or(CursorError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CursorError> {
        let end = self.pos.checked_add(n).ok_or(CursorError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(CursorError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CursorError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn single_topic_round_trip_is_compact() {
        let e = Epoch::new(3_000_000_001).unwrap();
        let c = Cursor::single(&t("devices/1"), e, Seq::new(42), 1_763_900_000_000);
        let text = c.encode();
        assert!(text.len() < 40, "{text} is {} chars", text.len());
        assert_eq!(Cursor::decode(&text).unwrap(), c);
        assert_eq!(c.position(&t("devices/1")).unwrap().at.seq, Seq::new(42));
        assert!(c.position(&t("devices/2")).is_none());
    }

    #[test]
    fn special_values() {
        assert_eq!(ResumeFrom::parse("").unwrap(), ResumeFrom::Live);
        assert_eq!(ResumeFrom::parse("earliest").unwrap(), ResumeFrom::Earliest);
    }

    #[test]
    fn mangled_cursors_are_rejected() {
        let text = Cursor::single(&t("a"), Epoch::new(7).unwrap(), Seq::new(9), 1).encode();
        let mut chars: Vec<char> = text.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let mangled: String = chars.into_iter().collect();
        assert_eq!(Cursor::decode(&mangled), Err(CursorError::Checksum));
        assert_eq!(Cursor::decode("!!"), Err(CursorError::Encoding));
        assert_eq!(Cursor::decode("AAAA"), Err(CursorError::Truncated));
        assert_eq!(Cursor::decode(&"A".repeat(5000)), Err(CursorError::TooLong));
    }

    proptest! {
        #[test]
        fn round_trip(ts in any::<u64>(), pos in proptest::collection::vec((any::<u32>(), any::<u64>(), any::<u64>()), 0..20)) {
            let c = Cursor { ts_ms: ts, positions: pos.into_iter().map(|(tag, epoch, seq)| Position {
                tag,
                at: StreamPos { epoch: Epoch::new(epoch), seq: Seq::new(seq) },
            }).collect() };
            let text = c.encode();
            prop_assert!(!text.contains(['\n', '\r', '\0', ' ']));
            prop_assert_eq!(Cursor::decode(&text).unwrap(), c);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = ResumeFrom::parse(&s);
        }
    }
}
