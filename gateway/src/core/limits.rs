//! Token-bucket rate limits: one global bucket (new streams per second) and
//! one bucket per publisher key, sharded so publishers do not contend.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
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
        use std::hash::{BuildHasher, RandomState};
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let h = HASHER.get_or_init(RandomState::new).hash_one(key) as usize;
        let mut shard = self.shards[h % SHARDS]
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
}
