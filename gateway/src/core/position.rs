//! Where an event sits in its topic's history, and where a stream stands in
//! a topic: typed, so an epoch cannot be mistaken for a sequence number and
//! "no epoch yet" is `None`, not a magic 0. The raw numbers appear only on
//! the wire (cursors, SQLite, Redis), converted at that edge.

use std::fmt;
use std::num::NonZeroU64;

/// A generation of a topic's history; it changes when the history is wiped.
/// Never 0: a topic that was never published to has no epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(NonZeroU64);

impl Epoch {
    /// The epoch stored as `raw`; `None` for 0 (no history).
    pub fn new(raw: u64) -> Option<Epoch> {
        NonZeroU64::new(raw).map(Epoch)
    }

    /// The number as stored.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// A random new epoch, different from `old`. Kept below 2^31 so it fits
    /// every store's integer column and a short varint.
    pub fn fresh(old: Option<Epoch>) -> Epoch {
        loop {
            let raw = u64::from(rand::random::<u32>() >> 1) + 1;
            if Some(raw) != old.map(Epoch::get) {
                return Epoch::new(raw).expect("non-zero by construction");
            }
        }
    }

    /// The raw form of an optional epoch (0: none), for the wire.
    pub fn raw(e: Option<Epoch>) -> u64 {
        e.map_or(0, Epoch::get)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A sequence number within one epoch of a topic: events are 1, 2, 3, …
/// and [`Seq::ZERO`] is the position before the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seq(u64);

impl Seq {
    /// Before the first event.
    pub const ZERO: Seq = Seq(0);

    /// The sequence number `raw`.
    pub const fn new(raw: u64) -> Seq {
        Seq(raw)
    }

    /// The number as stored.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The one after.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    /// The one before (ZERO stays ZERO).
    pub fn prev(self) -> Seq {
        Seq(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a stream stands in one topic: the last event it has, `seq` of
/// `epoch`; with no epoch, the topic had no history when this was taken
/// (and `seq` counts from the start of whatever epoch comes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPos {
    /// The epoch `seq` belongs to.
    pub epoch: Option<Epoch>,
    /// The last event delivered (ZERO: none).
    pub seq: Seq,
}

impl StreamPos {
    /// True when an event of `epoch` belongs to the history this position
    /// refers to (a position without an epoch accepts the first epoch it sees).
    pub fn same_history(&self, epoch: Epoch) -> bool {
        self.epoch.is_none_or(|e| e == epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_epoch_and_fresh_ones_differ() {
        assert_eq!(Epoch::new(0), None);
        let e = Epoch::new(7).unwrap();
        assert_eq!((e.get(), Epoch::raw(Some(e)), Epoch::raw(None)), (7, 7, 0));
        for _ in 0..100 {
            let f = Epoch::fresh(Some(e));
            assert_ne!(f, e);
            assert!(f.get() <= 1 << 31);
        }
    }

    #[test]
    fn positions_accept_their_own_history_only() {
        let (a, b) = (Epoch::new(1).unwrap(), Epoch::new(2).unwrap());
        let none = StreamPos::default();
        assert!(none.same_history(a) && none.same_history(b));
        let at_a = StreamPos {
            epoch: Some(a),
            seq: Seq::new(3),
        };
        assert!(at_a.same_history(a) && !at_a.same_history(b));
        assert_eq!(Seq::new(3).next(), Seq::new(4));
        assert_eq!(Seq::ZERO.prev(), Seq::ZERO);
    }
}
