//! TTL tiers: an event's `priority` and time-to-live, parsed at the edge.
//! An expired event is never delivered from history; replays say how many
//! they skipped (`event: expired`).

use std::fmt;
use std::time::Duration;

use crate::config::{Tiers, MAX_TTL};

/// How urgent an event is: picks its tier's default TTL (and, when the
/// gateway degrades, which events still fan out live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Priority {
    /// Commands: hot tier.
    High,
    /// The default: warm tier.
    #[default]
    Normal,
    /// Bulk history: cold tier.
    Low,
}

/// A text that is not a priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("priority is one of high, normal, low")]
pub struct BadPriority;

/// A text that is not a TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttl is a duration from 1ms to 365d, such as 90s, 2m or 1h")]
pub struct BadTtl;

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Parses `high`, `normal` or `low`.
    pub fn parse(text: &str) -> Result<Priority, BadPriority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or(BadPriority)
    }

    /// The name used in requests and stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The stored code (0 high, 1 normal, 2 low).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The priority of a stored code (unknown codes read as normal).
    pub fn from_code(code: u8) -> Priority {
        Priority::ALL
            .get(code as usize)
            .copied()
            .unwrap_or_default()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a TTL such as `90s` (humantime syntax; a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, BadTtl> {
    let ttl = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|_| BadTtl)?,
    };
    if ttl.is_zero() || ttl > MAX_TTL || ttl.as_millis() == 0 {
        return Err(BadTtl);
    }
    Ok(ttl)
}

/// What a publish asked for: an explicit TTL wins, a priority without one
/// takes its tier's default, neither means no TTL.
pub fn resolve(
    tiers: &Tiers,
    ttl: Option<Duration>,
    priority: Option<Priority>,
) -> Option<Duration> {
    ttl.or_else(|| match priority? {
        Priority::High => tiers.high,
        Priority::Normal => tiers.normal,
        Priority::Low => tiers.low,
    })
}

/// Whether an event that expires at `expires_ms` (if ever) is expired at `now_ms`.
pub fn is_expired(expires_ms: Option<u64>, now_ms: u64) -> bool {
    expires_ms.is_some_and(|at| at <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0", "0s", "-1s", "soon", "366d", "1us"] {
            assert_eq!(parse_ttl(bad), Err(BadTtl), "{bad:?}");
        }
    }

    #[test]
    fn an_explicit_ttl_wins_then_the_tier_then_none() {
        let tiers = Tiers::default();
        let s = Duration::from_secs;
        assert_eq!(resolve(&tiers, Some(s(5)), Some(Priority::Low)), Some(s(5)));
        assert_eq!(resolve(&tiers, None, Some(Priority::High)), Some(s(120)));
        assert_eq!(
            resolve(&tiers, None, Some(Priority::Low)),
            Some(s(7 * 86400))
        );
        assert_eq!(resolve(&tiers, None, None), None);
        let none = Tiers {
            high: None,
            ..Tiers::default()
        };
        assert_eq!(resolve(&none, None, Some(Priority::High)), None);
    }

    #[test]
    fn priorities_round_trip_through_text_and_codes() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.as_str()), Ok(p));
            assert_eq!(Priority::from_code(p.code()), p);
        }
        assert_eq!(Priority::parse("urgent"), Err(BadPriority));
        assert!(is_expired(Some(10), 10));
        assert!(!is_expired(Some(11), 10));
        assert!(!is_expired(None, u64::MAX));
    }
}
