//! Device shadows: a JSON document per device with the state publishers
//! want (`desired`) and the state the device reports (`reported`), changed
//! by JSON merge patches (RFC 7396) under a version for optimistic
//! concurrency. Pure: the stores only compare-and-set serialized documents.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::device::DeviceId;
use crate::core::tier::Priority;
use crate::core::topic::Topic;

/// The document as `GET /v1/devices/{device}/shadow` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    /// Desired and reported state.
    pub state: Sides,
    /// Per top-level key: `{"timestamp": ms}` of its last change, and a
    /// desired key's `cache_policy`.
    pub metadata: Sides,
    /// Bumped by every patch that changed something; 0 for no document.
    pub version: u64,
}

/// One JSON object per side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sides {
    /// Set by publishers.
    pub desired: Map<String, Value>,
    /// Set by the device.
    pub reported: Map<String, Value>,
}

/// A desired key's `cache_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// After this many seconds a desired value is no longer pending: it
    /// leaves the delta (a command that came too late is worthless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_sec: Option<u64>,
    /// Priority of the `event: shadow` that carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityName>,
}

/// A priority as written in a cache policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityName {
    /// Commands.
    High,
    /// The default.
    Normal,
    /// Bulk.
    Low,
}

impl From<PriorityName> for Priority {
    fn from(p: PriorityName) -> Priority {
        match p {
            PriorityName::High => Priority::High,
            PriorityName::Normal => Priority::Normal,
            PriorityName::Low => Priority::Low,
        }
    }
}

/// Which side a patch changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Publishers' wishes.
    Desired,
    /// The device's own report.
    Reported,
}

impl Side {
    /// `desired` or `reported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Desired => "desired",
            Side::Reported => "reported",
        }
    }
}

/// A validated `PATCH` body.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The side it changes.
    pub side: Side,
    /// The merge patch of that side.
    pub changes: Map<String, Value>,
    /// Cache policies per desired key.
    pub policies: Map<String, Value>,
}

/// A body that is not a shadow patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPatch(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    state: BodyState,
    #[serde(default)]
    cache_policy: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyState {
    #[serde(default)]
    desired: Option<Value>,
    #[serde(default)]
    reported: Option<Value>,
}

/// Parses `{"state":{"desired":{..}}}` or `{"state":{"reported":{..}}}`,
/// with an optional `cache_policy` per desired key.
pub fn parse_patch(bytes: &[u8]) -> Result<Patch, BadPatch> {
    let shape = "a shadow patch is {\"state\":{\"desired\":{..}}} or {\"state\":{\"reported\":{..}}}, optionally with \"cache_policy\":{key:{\"ttl_sec\":N,\"priority\":\"high\"}} for desired keys";
    let body: Body =
        serde_json::from_slice(bytes).map_err(|e| BadPatch(format!("{shape}: {e}")))?;
    let (side, changes) = match (body.state.desired, body.state.reported) {
        (Some(d), None) => (Side::Desired, d),
        (None, Some(r)) => (Side::Reported, r),
        _ => return Err(BadPatch(format!("{shape}: give exactly one side"))),
    };
    let Value::Object(changes) = changes else {
        return Err(BadPatch(format!(
            "state.{} must be an object",
            side.as_str()
        )));
    };
    let policies = body.cache_policy.unwrap_or_default();
    if side == Side::Reported && !policies.is_empty() {
        return Err(BadPatch("cache_policy applies to desired keys only".into()));
    }
    for (key, p) in &policies {
        let policy: CachePolicy = serde_json::from_value(p.clone())
            .map_err(|e| BadPatch(format!("cache_policy.{key}: {e}")))?;
        if policy.ttl_sec == Some(0) {
            return Err(BadPatch(format!(
                "cache_policy.{key}.ttl_sec must be positive"
            )));
        }
        if !changes.contains_key(key) {
            return Err(BadPatch(format!(
                "cache_policy.{key} names a key the patch does not set"
            )));
        }
    }
    Ok(Patch {
        side,
        changes,
        policies,
    })
}

/// RFC 7396 on one object: `null` removes, objects merge, anything else replaces.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let slot = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                merge(slot.as_object_mut().expect("made an object"), p);
            }
            other => {
                target.insert(k.clone(), strip_nulls(other));
            }
        }
    }
}

/// A value set by a patch has no `null` members (RFC 7396 removes them).
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What a patch changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Top-level keys whose value changed.
    pub keys: Vec<String>,
}

impl Shadow {
    /// A document as a store holds it: its version and JSON text.
    pub fn from_stored((version, doc): (u64, String)) -> Option<Shadow> {
        let mut s: Shadow = serde_json::from_str(&doc).ok()?;
        s.version = version;
        Some(s)
    }

    /// Applies `patch` at `now_ms`. A patch that changes nothing (values
    /// and policies as they were) leaves the version as it was.
    pub fn apply(&mut self, patch: &Patch, now_ms: u64) -> Applied {
        let (state, meta) = match patch.side {
            Side::Desired => (&mut self.state.desired, &mut self.metadata.desired),
            Side::Reported => (&mut self.state.reported, &mut self.metadata.reported),
        };
        let mut applied = Applied::default();
        for (k, v) in &patch.changes {
            let before = state.get(k).cloned();
            merge(state, &Map::from_iter([(k.clone(), v.clone())]));
            let after = state.get(k).cloned();
            let policy = patch.policies.get(k).cloned();
            let old_policy = meta.get(k).and_then(|m| m.get("cache_policy").cloned());
            if before == after && (policy.is_none() || policy == old_policy) {
                continue;
            }
            applied.keys.push(k.clone());
            match after {
                None => {
                    meta.remove(k);
                }
                Some(_) => {
                    let mut m = Map::new();
                    m.insert("timestamp".into(), now_ms.into());
                    if let Some(p) = policy.or(old_policy) {
                        m.insert("cache_policy".into(), p);
                    }
                    meta.insert(k.clone(), Value::Object(m));
                }
            }
        }
        if !applied.keys.is_empty() {
            self.version += 1;
        }
        applied
    }

    /// The desired keys whose value differs from reported, leaving out
    /// those whose `cache_policy.ttl_sec` has passed since they were set.
    pub fn delta(&self, now_ms: u64) -> Map<String, Value> {
        self.state
            .desired
            .iter()
            .filter(|(k, v)| self.state.reported.get(*k) != Some(*v))
            .filter(|(k, _)| self.pending(k, now_ms))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn policy(&self, key: &str) -> Option<CachePolicy> {
        let p = self.metadata.desired.get(key)?.get("cache_policy")?;
        serde_json::from_value(p.clone()).ok()
    }

    fn pending(&self, key: &str, now_ms: u64) -> bool {
        let set_at = self
            .metadata
            .desired
            .get(key)
            .and_then(|m| m.get("timestamp"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match self.policy(key).and_then(|p| p.ttl_sec) {
            Some(ttl) => set_at.saturating_add(ttl.saturating_mul(1000)) > now_ms,
            None => true,
        }
    }

    /// The TTL and priority of the `event: shadow` announcing `keys`: it
    /// lives as long as its longest-lived key's policy allows (no TTL if
    /// any key has none), at the highest of their priorities.
    pub fn announcement(&self, keys: &[String]) -> (Option<std::time::Duration>, Priority) {
        let policies: Vec<Option<CachePolicy>> = keys.iter().map(|k| self.policy(k)).collect();
        let ttl = policies
            .iter()
            .map(|p| p.and_then(|p| p.ttl_sec))
            .try_fold(0u64, |acc, t| t.map(|t| acc.max(t)))
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_secs);
        let priority = policies
            .iter()
            .filter_map(|p| p.and_then(|p| p.priority))
            .map(Priority::from)
            .min()
            .unwrap_or_default();
        (ttl, priority)
    }
}

/// The reserved topic a device's desired changes are published on: every
/// replica delivers them to the device's streams through the normal live
/// path. The id goes in hex, so any device id makes a valid name.
pub fn topic(device: &DeviceId) -> Topic {
    let hex: String = device
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    Topic::reserved(&format!("shadow/{hex}"))
}

/// The data of an `event: shadow`.
pub fn event_data(version: u64, delta: &Map<String, Value>) -> String {
    serde_json::json!({ "version": version, "delta": delta }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn patch(body: Value) -> Patch {
        parse_patch(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn patches_merge_bump_the_version_and_stamp_keys() {
        let mut s = Shadow::default();
        let a = s.apply(
            &patch(json!({"state":{"desired":{"fan":"on","mode":{"a":1,"b":2}}}})),
            10,
        );
        assert_eq!(a.keys, ["fan", "mode"]);
        assert_eq!(s.version, 1);
        s.apply(
            &patch(json!({"state":{"desired":{"mode":{"b":null,"c":3},"fan":null}}})),
            20,
        );
        assert_eq!(json!(s.state.desired), json!({"mode":{"a":1,"c":3}}));
        assert_eq!(json!(s.metadata.desired), json!({"mode":{"timestamp":20}}));
        assert_eq!(s.version, 2);
        let none = s.apply(&patch(json!({"state":{"desired":{"mode":{"a":1}}}})), 30);
        assert!(none.keys.is_empty());
        assert_eq!(
            s.version, 2,
            "a patch that changes nothing keeps the version"
        );
        s.apply(
            &patch(json!({"state":{"reported":{"mode":{"a":1,"c":3}}}})),
            40,
        );
        assert_eq!(json!(s.metadata.reported), json!({"mode":{"timestamp":40}}));
        assert_eq!(s.delta(50), Map::new());
    }

    #[test]
    fn the_delta_drops_what_is_reported_or_past_its_ttl() {
        let mut s = Shadow::default();
        s.apply(
            &patch(json!({
                "state":{"desired":{"valve":"open","led":"red","fan":1}},
                "cache_policy":{"valve":{"ttl_sec":60,"priority":"high"}}
            })),
            1_000,
        );
        s.apply(&patch(json!({"state":{"reported":{"fan":1}}})), 2_000);
        assert_eq!(json!(s.delta(60_999)), json!({"valve":"open","led":"red"}));
        assert_eq!(
            json!(s.delta(61_000)),
            json!({"led":"red"}),
            "valve's ttl passed"
        );
        let (ttl, prio) = s.announcement(&["valve".into()]);
        assert_eq!(
            (ttl, prio),
            (Some(std::time::Duration::from_secs(60)), Priority::High)
        );
        let (ttl, _) = s.announcement(&["valve".into(), "led".into()]);
        assert_eq!(ttl, None, "led has no ttl: the event may not expire");
    }

    #[test]
    fn malformed_patches_say_why() {
        for bad in [
            "not json",
            "{}",
            r#"{"state":{}}"#,
            r#"{"state":{"desired":{},"reported":{}}}"#,
            r#"{"state":{"desired":[1]}}"#,
            r#"{"state":{"desired":{"a":1}},"extra":1}"#,
            r#"{"state":{"reported":{"a":1}},"cache_policy":{"a":{"ttl_sec":5}}}"#,
            r#"{"state":{"desired":{"a":1}},"cache_policy":{"a":{"ttl_sec":0}}}"#,
            r#"{"state":{"desired":{"a":1}},"cache_policy":{"b":{"ttl_sec":5}}}"#,
            r#"{"state":{"desired":{"a":1}},"cache_policy":{"a":{"priority":"urgent"}}}"#,
        ] {
            assert!(parse_patch(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn shadow_topics_are_reserved_and_per_device() {
        let a = topic(&DeviceId::parse("pump-7").unwrap());
        let b = topic(&DeviceId::parse("pump-8").unwrap());
        assert!(a.is_reserved() && a != b);
        assert!(Topic::parse(a.as_str()).is_err());
    }

    fn small_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0i64..4).prop_map(|n| json!(n)),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop::collection::btree_map("[abc]", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    /// RFC 7396's reference algorithm, on whole values.
    fn reference(target: &Value, patch: &Value) -> Value {
        let Value::Object(p) = patch else {
            return patch.clone();
        };
        let mut t = match target {
            Value::Object(t) => t.clone(),
            _ => Map::new(),
        };
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                let merged = reference(t.get(k).unwrap_or(&Value::Null), v);
                t.insert(k.clone(), merged);
            }
        }
        Value::Object(t)
    }

    proptest! {
        #[test]
        fn merging_matches_the_rfc(target in small_json(), patch in small_json()) {
            let (Value::Object(mut t), Value::Object(p)) = (reference(&Value::Null, &target), patch.clone()) else {
                return Ok(());
            };
            let expected = reference(&Value::Object(t.clone()), &patch);
            merge(&mut t, &p);
            prop_assert_eq!(Value::Object(t), expected);
        }
    }
}
