//! Token-bucket rate limits: one global bucket (new streams per second) and
//! one bucket per publisher key, sharded so publishers do not contend; and
//! caps on what one key holds at once (open streams per client).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Keyed buckets kept before idle ones are forgotten.
const MAX_KEYS_PER_SHARD: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills, then takes `n` tokens or says how long until they would be there.
    fn take(&mut self, n: f64, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / rate))
        }
    }
}

/// One shared token bucket.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl RateLimit {
    /// `per_sec` tokens per second, bursts of `per_sec`.
    pub fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        RateLimit {
            rate,
            burst: rate,
            bucket: Mutex::new(Bucket {
                tokens: rate,
                at: Instant::now(),
            }),
        }
    }

    /// Takes one token, or returns how long to wait.
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.take(1.0, self.rate, self.burst, Instant::now())
    }
}

/// A token bucket per key.
pub struct KeyedRateLimit<K> {
    rate: f64,
    burst: f64,
    shards: Box<[Mutex<HashMap<K, Bucket>>]>,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    /// `per_sec` tokens per second per key, bursts of `per_sec`.
    pub fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        KeyedRateLimit {
            rate,
            burst: rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes `n` tokens for `key`, or returns how long to wait.
    pub fn try_take(&self, key: &K, n: u32) -> Result<(), Duration> {
        let mut shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if shard.len() >= MAX_KEYS_PER_SHARD && !shard.contains_key(key) {
            // Forget buckets that have refilled completely: they carry no state.
            let (rate, burst) = (self.rate, self.burst);
            shard.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let bucket = shard.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.take(f64::from(n), self.rate, self.burst, now)
    }
}

/// The shard of `key`, with a per-process random hash so that no client
/// can aim all of its keys at one shard.
fn shard_of<K: Hash>(key: &K) -> usize {
    use std::hash::{BuildHasher, RandomState};
    static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    HASHER.get_or_init(RandomState::new).hash_one(key) as usize % SHARDS
}

/// Whom a per-client limit counts: a credential, or before auth the
/// client address. Two tokens behind one proxy are two clients; one token
/// on many addresses is one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A token's `sub` or a client certificate's identity.
    Identity(Arc<str>),
    /// The client address: the peer's, or the one a trusted proxy names.
    Address(IpAddr),
}

/// How many things each key holds at once (open streams per client),
/// capped per key. Keys holding nothing are forgotten, so the map is as
/// large as the set of clients holding something.
pub struct KeyedSlots<K> {
    max: usize,
    shards: Box<[Mutex<HashMap<K, usize>>]>,
}

/// One thing held under a key of [`KeyedSlots`]; dropping it gives it back.
pub struct Held<K: Hash + Eq> {
    slots: Arc<KeyedSlots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> KeyedSlots<K> {
    /// At most `max` (at least 1) held per key.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(KeyedSlots {
            max: max.max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    /// The cap per key.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Holds one more under `key`, or `None` if it already holds the cap.
    pub fn try_hold(self: &Arc<Self>, key: K) -> Option<Held<K>> {
        let mut shard = self.shards[shard_of(&key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let held = shard.entry(key.clone()).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(Held {
            slots: self.clone(),
            key,
        })
    }

    /// How many `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        let shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut shard = self.slots.shards[shard_of(&self.key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = shard.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 2.0,
            at: t0,
        };
        assert!(b.take(1.0, 10.0, 2.0, t0).is_ok());
        assert!(b.take(1.0, 10.0, 2.0, t0).is_ok());
        let wait = b.take(1.0, 10.0, 2.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9);
        assert!(b
            .take(1.0, 10.0, 2.0, t0 + Duration::from_millis(100))
            .is_ok());
        b.take(0.0, 10.0, 2.0, t0 + Duration::from_secs(100))
            .unwrap();
        assert_eq!(b.tokens, 2.0, "never more than the burst");
    }

    #[test]
    fn keys_are_independent() {
        let l = KeyedRateLimit::new(3);
        assert!(l.try_take(&"a", 3).is_ok());
        assert!(l.try_take(&"a", 1).is_err());
        assert!(l.try_take(&"b", 1).is_ok());
        assert!(l.try_take(&"c", 4).is_err(), "more than a burst never fits");
    }

    #[test]
    fn a_key_holds_at_most_its_cap_and_gets_slots_back() {
        let slots = KeyedSlots::new(2);
        let a1 = slots.try_hold("a").unwrap();
        let a2 = slots.try_hold("a").unwrap();
        assert!(slots.try_hold("a").is_none(), "a third is over the cap");
        let b = slots.try_hold("b").expect("another key has its own cap");
        drop(a1);
        assert_eq!(slots.held(&"a"), 1);
        let a3 = slots
            .try_hold("a")
            .expect("a slot given back is free again");
        drop((a2, a3, b));
        assert_eq!(slots.held(&"a"), 0);
        assert!(
            slots.shards.iter().all(|s| s.lock().unwrap().is_empty()),
            "keys holding nothing are forgotten"
        );
    }
}
