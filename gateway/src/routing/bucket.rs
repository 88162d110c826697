//! Buckets: a routing key is hashed, with the table's salt, into one of
//! 10,000 buckets; a bucket belongs to the canary iff it is below the weight
//! (in basis points). Raising the weight therefore only ever moves keys from
//! stable to canary. The hash is part of the contract — never change it:
//! `h = fnv1a64(salt ‖ 0x1f ‖ key)`, `bucket = (h xor (h >> 32)) mod 10000`.

use crate::hash::fnv1a64;

/// Number of buckets.
pub const BUCKETS: u16 = 10_000;

/// Which deployment serves a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// The current version.
    Stable,
    /// The version being rolled out.
    Canary,
}

impl Track {
    /// `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }

    /// The other track.
    pub fn other(self) -> Track {
        match self {
            Track::Stable => Track::Canary,
            Track::Canary => Track::Stable,
        }
    }
}

impl std::str::FromStr for Track {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stable" => Ok(Track::Stable),
            "canary" => Ok(Track::Canary),
            other => Err(format!("track must be stable or canary, not {other:?}")),
        }
    }
}

/// The bucket of `key` under `salt`.
pub fn bucket(salt: &str, key: &str) -> u16 {
    let h = fnv1a64(&[salt.as_bytes(), b"\x1f", key.as_bytes()]);
    // Fold the high bits in: FNV's low bits alone mix poorly for short keys.
    ((h ^ (h >> 32)) % u64::from(BUCKETS)) as u16
}

/// The track owning `bucket` at `weight_bp` (0..=10000).
pub fn track_of(bucket: u16, weight_bp: u16) -> Track {
    if bucket < weight_bp {
        Track::Canary
    } else {
        Track::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_trace_id(rng: &mut impl Rng) -> String {
        format!("{:032x}", rng.random::<u128>())
    }

    #[test]
    fn split_matches_the_weight_within_one_point() {
        let mut rng = rand::rng();
        let ids: Vec<String> = (0..100_000).map(|_| random_trace_id(&mut rng)).collect();
        for pct in [0u16, 1, 10, 50, 99, 100] {
            let w = pct * 100;
            let canary = ids
                .iter()
                .filter(|id| track_of(bucket("salt-1", id), w) == Track::Canary)
                .count();
            let share = canary as f64 / ids.len() as f64 * 100.0;
            assert!(
                (share - f64::from(pct)).abs() <= 1.0,
                "weight {pct}%: canary share {share:.2}%"
            );
            if pct == 0 {
                assert_eq!(canary, 0);
            }
            if pct == 100 {
                assert_eq!(canary, ids.len());
            }
        }
    }

    #[test]
    fn same_key_same_bucket_and_raising_never_moves_back() {
        let mut rng = rand::rng();
        for _ in 0..10_000 {
            let id = random_trace_id(&mut rng);
            let b = bucket("s", &id);
            assert_eq!(b, bucket("s", &id));
            assert!(b < BUCKETS);
            let mut was_canary = false;
            for w in (0..=BUCKETS).step_by(250) {
                let is_canary = track_of(b, w) == Track::Canary;
                assert!(
                    !was_canary || is_canary,
                    "raising the weight moved {id} back"
                );
                was_canary = is_canary;
            }
        }
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned values: changing the hash would move every client on upgrade.
        assert_eq!(bucket("", ""), bucket("", ""));
        assert_eq!(bucket("salt", "4bf92f3577b34da6a3ce929d0e0e4736"), 8987);
        assert_ne!(bucket("a", "k"), bucket("b", "k"), "the salt reshuffles");
    }
}
