//! The routing table: what the operator writes (ConfigMap key `routing.yaml`)
//! and every gateway pod watches.

use serde::{Deserialize, Serialize};

use super::bucket::{bucket, track_of, Track, BUCKETS};
use crate::hash::fnv1a64;

/// Default header that forces a track (for testers).
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-pushgate-track";
/// Default cookie holding a gateway-issued routing key.
pub const DEFAULT_COOKIE: &str = "pushgate_rk";

/// Weight, salt and key settings shared by both tracks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingTable {
    /// Canary share in basis points (0..=10000).
    pub weight_bp: u16,
    /// Mixed into the hash; changing it reshuffles every key.
    pub salt: String,
    /// Request header that forces a track (`stable` or `canary`).
    pub override_header: String,
    /// Optional header used as routing key when there is no `traceparent`.
    pub key_header: Option<String>,
    /// Cookie carrying a gateway-issued key (keeps an `EventSource` in its bucket).
    pub cookie: String,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable {
            weight_bp: 0,
            salt: String::new(),
            override_header: DEFAULT_OVERRIDE_HEADER.into(),
            key_header: None,
            cookie: DEFAULT_COOKIE.into(),
        }
    }
}

impl RoutingTable {
    /// Parses and validates the YAML form.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let t: RoutingTable = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        t.validate()?;
        Ok(t)
    }

    /// Rejects tables no pod could act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.weight_bp > BUCKETS {
            return Err(format!("weight_bp {} is above {BUCKETS}", self.weight_bp));
        }
        let header_ok = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !header_ok(&self.override_header) {
            return Err("override_header must be a valid header name".into());
        }
        if let Some(h) = &self.key_header {
            if !header_ok(h) {
                return Err("key_header must be a valid header name".into());
            }
        }
        if !header_ok(&self.cookie) {
            return Err("cookie must be a plain token".into());
        }
        Ok(())
    }

    /// The track owning `bucket` under this table.
    pub fn track_of(&self, bucket: u16) -> Track {
        track_of(bucket, self.weight_bp)
    }

    /// The track owning `key` under this table.
    pub fn track_of_key(&self, key: &str) -> Track {
        self.track_of(bucket(&self.salt, key))
    }

    /// A digest of every field: two pods route alike iff their versions agree.
    pub fn version(&self) -> RouteVersion {
        let text = serde_yaml::to_string(self).expect("a table serializes");
        RouteVersion(fnv1a64(&[text.as_bytes()]))
    }
}

/// Identifies a routing table by content (see [`RoutingTable::version`]);
/// written as 16 hex digits in the header of a proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteVersion(pub u64);

impl std::fmt::Display for RouteVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for RouteVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 16 {
            return Err("a route version is 16 hex digits".into());
        }
        u64::from_str_radix(s, 16)
            .map(RouteVersion)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_operator_writes() {
        let t = RoutingTable::from_yaml("weight_bp: 3000\nsalt: pgw\nkey_header: x-device-id\n")
            .unwrap();
        assert_eq!(t.weight_bp, 3000);
        assert_eq!(t.override_header, DEFAULT_OVERRIDE_HEADER);
        assert_eq!(t.key_header.as_deref(), Some("x-device-id"));
        assert!(RoutingTable::from_yaml("weight_bp: 10001\n").is_err());
        assert!(
            RoutingTable::from_yaml("weight: 5\n").is_err(),
            "unknown keys are errors"
        );
        assert!(RoutingTable::from_yaml("override_header: 'a b'\n").is_err());
    }

    #[test]
    fn version_changes_with_any_field_and_round_trips() {
        let a = RoutingTable::default();
        let b = RoutingTable {
            weight_bp: 1,
            ..RoutingTable::default()
        };
        let c = RoutingTable {
            salt: "x".into(),
            ..RoutingTable::default()
        };
        assert_eq!(a.version(), RoutingTable::default().version());
        assert_ne!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        let v = b.version();
        assert_eq!(v.to_string().parse::<RouteVersion>().unwrap(), v);
        assert!("xyz".parse::<RouteVersion>().is_err());
    }
}
