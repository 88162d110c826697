//! Canary routing: the table the operator writes (ConfigMap key
//! [`crate::names::ROUTING_KEY`]) and every gateway pod watches, the two
//! tracks, and the bucket function.
//!
//! A routing key is hashed, with the table's salt, into one of 10,000
//! buckets; a bucket belongs to the canary iff it is below the weight (in
//! basis points), so raising the weight only ever moves keys from stable to
//! canary. The hash is part of the contract and never changes:
//! `h = fnv1a64(salt ‖ 0x1f ‖ key)`, `bucket = (h xor (h >> 32)) mod 10000`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hash::fnv1a64;

/// Number of buckets.
pub const BUCKETS: u16 = 10_000;
/// Default header that forces a track (for testers).
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-pushgate-track";
/// Default cookie holding a gateway-issued routing key.
pub const DEFAULT_COOKIE: &str = "pushgate_rk";

/// Which deployment serves a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    /// The current version.
    Stable,
    /// The version being rolled out.
    Canary,
}

impl Track {
    /// `stable` or `canary`, as in labels and the config.
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

/// True for a name usable as a header (and the routing cookie): letters,
/// digits, `-` and `_`.
pub fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Weight, salt and key settings shared by both tracks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingTable {
    /// Canary share in basis points (0..=10000).
    pub weight_bp: u16,
    /// Mixed into the hash; changing it reshuffles every key.
    pub salt: String,
    /// Request header that forces a track (`stable` or `canary`).
    pub override_header: String,
    /// Optional header used as routing key when there is no `traceparent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_header: Option<String>,
    /// Cookie carrying a gateway-issued key (keeps an `EventSource` in its bucket).
    pub cookie: String,
    /// Degrade switches and marks for every pod (an absent one keeps the pod's config).
    #[serde(skip_serializing_if = "crate::degrade::Switches::is_empty")]
    pub degrade: crate::degrade::Switches,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable {
            weight_bp: 0,
            salt: String::new(),
            override_header: DEFAULT_OVERRIDE_HEADER.into(),
            key_header: None,
            cookie: DEFAULT_COOKIE.into(),
            degrade: Default::default(),
        }
    }
}

/// A table no pod could act on, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// The table field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl RoutingTable {
    /// Parses and validates the YAML form.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let t: RoutingTable = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        t.validate().map_err(|e| e.to_string())?;
        Ok(t)
    }

    /// The YAML form (what the operator writes).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a table serializes")
    }

    /// Rejects tables no pod could act on.
    pub fn validate(&self) -> Result<(), TableError> {
        let bad = |field, message: String| Err(TableError { field, message });
        if self.weight_bp > BUCKETS {
            return bad(
                "weight_bp",
                format!("{} is above {BUCKETS}", self.weight_bp),
            );
        }
        let name = |field, h: &str| {
            if is_header_name(h) {
                Ok(())
            } else {
                bad(
                    field,
                    format!("{h:?} is not a header name (letters, digits, '-', '_')"),
                )
            }
        };
        name("override_header", &self.override_header)?;
        if let Some(h) = &self.key_header {
            name("key_header", h)?;
        }
        name("cookie", &self.cookie)?;
        match &self.degrade.auto {
            Some(a) => a.validate().map_err(|message| TableError {
                field: "degrade.auto",
                message,
            }),
            None => Ok(()),
        }
    }

    /// The track owning `bucket` under this table.
    pub fn track_of(&self, bucket: u16) -> Track {
        track_of(bucket, self.weight_bp)
    }

    /// The track owning `key` under this table.
    pub fn track_of_key(&self, key: &str) -> Track {
        self.track_of(bucket(&self.salt, key))
    }

    /// A digest of every routing field (not the degrade switches, which
    /// route nothing): two pods route alike iff their versions agree.
    pub fn version(&self) -> RouteVersion {
        let routing = RoutingTable {
            degrade: Default::default(),
            ..self.clone()
        };
        RouteVersion(fnv1a64(&[routing.to_yaml().as_bytes()]))
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

/// How a pod takes part in routing (config key `routing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSettings {
    /// This pod's track.
    pub track: Track,
    /// Base URL of the other track's Service (`http://name-canary:8080`);
    /// without it every stream is served here.
    pub peer_url: Option<String>,
    /// Routing table file, re-read when it changes (outside Kubernetes).
    pub table_file: Option<PathBuf>,
    /// `namespace/name` of the routing-table ConfigMap to watch through the
    /// Kubernetes API (in-cluster credentials or `KUBECONFIG`).
    pub configmap: Option<String>,
    /// File holding the token that both tracks put on requests they proxy
    /// to each other (re-read when it changes); required with `peer_url`.
    pub peer_token_file: Option<PathBuf>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            track: Track::Stable,
            peer_url: None,
            table_file: None,
            configmap: None,
            peer_token_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_pinned() {
        // Changing any of these moves every client on upgrade.
        assert_eq!(bucket("salt", "4bf92f3577b34da6a3ce929d0e0e4736"), 8987);
        assert_eq!(bucket("", ""), bucket("", ""));
        assert_ne!(bucket("a", "k"), bucket("b", "k"), "the salt reshuffles");
    }

    #[test]
    fn parses_what_the_operator_writes() {
        let t = RoutingTable::from_yaml("weight_bp: 3000\nsalt: pgw\nkey_header: x-device-id\n")
            .unwrap();
        assert_eq!(t.weight_bp, 3000);
        assert_eq!(t.override_header, DEFAULT_OVERRIDE_HEADER);
        assert_eq!(t.key_header.as_deref(), Some("x-device-id"));
        assert_eq!(RoutingTable::from_yaml(&t.to_yaml()).unwrap(), t);
        assert!(RoutingTable::from_yaml("weight_bp: 10001\n").is_err());
        assert!(
            RoutingTable::from_yaml("weight: 5\n").is_err(),
            "unknown keys are errors"
        );
        let e = RoutingTable {
            override_header: "a b".into(),
            ..RoutingTable::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "override_header");
        let marks = RoutingTable::from_yaml(
            "weight_bp: 0\ndegrade:\n  connections: auto\n  auto:\n    connections_trip: 0.5\n    connections_reset: 0.25\n",
        )
        .unwrap();
        let a = marks.degrade.auto.unwrap();
        assert_eq!((a.connections_trip, a.connections_reset), (0.5, 0.25));
        assert_eq!(a.window, crate::degrade::AutoThresholds::default().window);
        let inverted = "degrade:\n  auto:\n    connections_trip: 0.5\n    connections_reset: 0.6\n";
        assert!(
            RoutingTable::from_yaml(inverted)
                .unwrap_err()
                .starts_with("degrade.auto:"),
            "a pod refuses marks that cannot work"
        );
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

    proptest! {
        #[test]
        fn raising_the_weight_never_moves_a_key_back(key in "[a-f0-9]{1,40}", salt in "[a-z]{0,8}") {
            let b = bucket(&salt, &key);
            prop_assert!(b < BUCKETS);
            let mut was_canary = false;
            for w in (0..=BUCKETS).step_by(250) {
                let is_canary = track_of(b, w) == Track::Canary;
                prop_assert!(!was_canary || is_canary);
                was_canary = is_canary;
            }
        }
    }
}
