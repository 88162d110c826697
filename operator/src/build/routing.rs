//! Canary routing (docs/CANARY.md): the routing-table ConfigMap every gateway
//! pod watches, the least-privilege identity that lets it watch, and the
//! per-track Services the tracks proxy to each other through.
//!
//! Routing is wired into every pod of a Redis-backed PushGateway, with or
//! without `spec.canary`: adding or removing a canary then only changes the
//! table and the canary objects, never the stable pod template, so the stable
//! pods (and their streams) are never rolled by a canary.

use super::security::{self, PEER_DIR};
use super::{meta, track_labels, Track};
use crate::config::SpecError;
use crate::crd::PushGateway;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount, Volume, VolumeMount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use pushgate_contract::routing::{RoutingSettings, RoutingTable, DEFAULT_OVERRIDE_HEADER};
use std::collections::BTreeMap;

/// Secret key (and file name) of the peer token.
pub const PEER_TOKEN_KEY: &str = "token";
pub use pushgate_contract::names::ROUTING_KEY;

/// True when the gateway pods take part in canary routing: a shared store is
/// needed (both tracks serve the same events) and the tracks proxy over plain
/// HTTP, so TLS excludes it (the CRD rejects `canary` with `tls`).
pub fn enabled(pgw: &PushGateway) -> bool {
    !pgw.spec.embedded_store() && pgw.spec.tls.is_none()
}

/// Name of the routing-table ConfigMap.
pub fn table_name(pgw: &PushGateway) -> String {
    format!("{}-routing", pgw.name_any())
}

/// Name of the gateway pods' ServiceAccount, Role and RoleBinding.
pub fn identity_name(pgw: &PushGateway) -> String {
    format!("{}-gateway", pgw.name_any())
}

/// Name of the Service selecting one track's pods.
pub fn track_service_name(pgw: &PushGateway, track: Track) -> String {
    format!("{}-{}", pgw.name_any(), track.as_str())
}

/// In-cluster URL of one track's Service (the other track's `peer_url`).
pub fn track_url(pgw: &PushGateway, track: Track) -> String {
    let port = super::service_port(pgw);
    let ns = pgw.namespace().unwrap_or_else(|| "default".into());
    let host = format!("{}.{ns}.svc", track_service_name(pgw, track));
    if port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// The `routing` section of `track`'s gateway config, if routing is enabled.
pub fn gateway_config(pgw: &PushGateway, track: Track) -> Option<RoutingSettings> {
    enabled(pgw).then(|| RoutingSettings {
        track,
        peer_url: Some(track_url(pgw, track.other())),
        configmap: Some(format!(
            "{}/{}",
            pgw.namespace().unwrap_or_else(|| "default".into()),
            table_name(pgw)
        )),
        peer_token_file: Some(format!("{PEER_DIR}/{PEER_TOKEN_KEY}").into()),
        table_file: None,
    })
}

/// Name of the Secret with the token the tracks put on proxied requests.
pub fn peer_secret_name(pgw: &PushGateway) -> String {
    format!("{}-peer", pgw.name_any())
}

/// The peer token Secret, with a fresh random token. The reconciler only
/// ever creates it (never overwrites it: every pod must keep agreeing on
/// the token), and it goes with the PushGateway through its owner.
pub fn peer_secret(pgw: &PushGateway) -> Secret {
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    Secret {
        metadata: meta(pgw, peer_secret_name(pgw)),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(PEER_TOKEN_KEY.to_string(), token)])),
        ..Default::default()
    }
}

/// The pod volume and mount of the peer token.
pub fn peer_token_volume(pgw: &PushGateway) -> (Volume, VolumeMount) {
    (
        security::secret_volume(
            "peer-token",
            &peer_secret_name(pgw),
            &[(PEER_TOKEN_KEY, PEER_TOKEN_KEY)],
        ),
        security::mount("peer-token", PEER_DIR),
    )
}

/// The salt in force: `spec.canary.hash.salt`, else the PushGateway's uid
/// (unique per object and stable for its life, so buckets never reshuffle
/// unless the user asks).
pub fn salt(pgw: &PushGateway) -> String {
    pgw.spec
        .canary_hash()
        .salt
        .or_else(|| pgw.uid())
        .unwrap_or_else(|| pgw.name_any())
}

/// The canary share (percent) to write to the table: `spec.canary.weight`
/// once the canary Deployment has a ready pod, else 0. Streams sent to a
/// canary with no ready pod would only be told to retry (a pod refuses a
/// stream for now when its peer is unreachable); holding the weight at 0
/// also moves every stream back to stable by itself when all canary pods fail.
pub fn effective_weight(pgw: &PushGateway, canary_ready_replicas: i32) -> i32 {
    match &pgw.spec.canary {
        Some(c) if canary_ready_replicas > 0 => c.weight.clamp(0, 100),
        _ => 0,
    }
}

/// The routing table with the canary share `weight_percent` (0 without a
/// canary). The caller decides the share (it holds weight at 0 until the
/// canary has a ready pod).
pub fn table(pgw: &PushGateway, weight_percent: i32) -> Result<ConfigMap, SpecError> {
    let hash = pgw.spec.canary_hash();
    let t = RoutingTable {
        // The CRD bounds the weight to 0..=100; clamp anyway so a table is
        // never out of the gateway's range.
        weight_bp: (weight_percent.clamp(0, 100) * 100) as u16,
        salt: salt(pgw),
        // Header names are case-insensitive; lower case is how they go on the wire.
        override_header: hash
            .override_header
            .as_deref()
            .unwrap_or(DEFAULT_OVERRIDE_HEADER)
            .to_ascii_lowercase(),
        key_header: hash.header.as_deref().map(str::to_ascii_lowercase),
        // Every pod watches this table: the switches and marks change on
        // all at once, with no restart.
        degrade: crate::config::degrade_table(&pgw.spec)?,
        ..RoutingTable::default()
    };
    // The gateway's own rule: a table the pods would ignore must fail the
    // reconcile instead, where the user sees it.
    t.validate().map_err(|e| SpecError {
        field: match e.field {
            "key_header" => "spec.canary.hash.header",
            "degrade.auto" => "spec.degrade.auto",
            _ => "spec.canary.hash.overrideHeader",
        },
        message: e.message,
    })?;
    Ok(ConfigMap {
        metadata: meta(pgw, table_name(pgw)),
        data: Some(BTreeMap::from([(ROUTING_KEY.to_string(), t.to_yaml())])),
        ..Default::default()
    })
}

/// The ServiceAccount the gateway pods run as.
pub fn service_account(pgw: &PushGateway) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(pgw, identity_name(pgw)),
        // The pod template asks for the token explicitly; nothing else
        // running as this account gets one by accident.
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// Read access to the routing table and nothing else: one ConfigMap by
/// name (the gateway watches it with a `metadata.name` field selector, which
/// RBAC matches against `resourceNames` for list and watch too).
pub fn role(pgw: &PushGateway) -> Role {
    Role {
        metadata: meta(pgw, identity_name(pgw)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![table_name(pgw)]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    }
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(pgw: &PushGateway) -> RoleBinding {
    RoleBinding {
        metadata: meta(pgw, identity_name(pgw)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: identity_name(pgw),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: identity_name(pgw),
            namespace: pgw.namespace(),
            ..Default::default()
        }]),
    }
}

/// The Service selecting only `track`'s pods: what the other track proxies to.
pub fn track_service(pgw: &PushGateway, track: Track) -> Service {
    let mut s = super::objects::service(pgw);
    s.metadata = meta(pgw, track_service_name(pgw, track));
    if let Some(spec) = s.spec.as_mut() {
        // Only the other track's pods talk to it.
        spec.type_ = Some("ClusterIP".into());
        spec.selector = Some(track_labels(pgw, track));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::crd::PushGatewaySpec;

    fn canary_spec(extra: serde_json::Value) -> PushGatewaySpec {
        let mut v = serde_json::json!({
            "store": {"redis": {"secretRef": {"name": "redis-url"}}},
            "canary": {"image": "gw:2", "weight": 30}
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, x) in m {
                v["canary"][k] = x;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn table_yaml(p: &PushGateway, w: i32) -> String {
        table(p, w).unwrap().data.unwrap()[ROUTING_KEY].clone()
    }

    #[test]
    fn table_is_what_the_gateway_parses() {
        let p = pgw(canary_spec(serde_json::json!({
            "hash": {"header": "X-Device-Id", "salt": "s1", "overrideHeader": "X-Track"}
        })));
        assert_eq!(
            table_yaml(&p, 30),
            "weight_bp: 3000\nsalt: s1\noverride_header: x-track\nkey_header: x-device-id\ncookie: pushgate_rk\n"
        );
    }

    #[test]
    fn degrade_switches_travel_in_the_table_every_pod_watches() {
        let mut p = pgw(redis_spec());
        p.spec.degrade = Some(crate::crd::DegradeSpec {
            connections: Some(crate::crd::DegradeSwitch::On),
            storage: Some(crate::crd::DegradeSwitch::Auto),
            ..Default::default()
        });
        let yaml = table_yaml(&p, 0);
        assert!(
            yaml.ends_with("degrade:\n  connections: on\n  storage: auto\n"),
            "{yaml}"
        );
        let t = RoutingTable::from_yaml(&yaml).unwrap();
        let plain = RoutingTable::from_yaml(&table_yaml(&pgw(redis_spec()), 0)).unwrap();
        assert_eq!(t.version(), plain.version(), "switches route nothing");
    }

    #[test]
    fn auto_marks_travel_in_the_table_and_leave_the_pods_alone() {
        let mut p = pgw(redis_spec());
        let before = crate::build::desired(&p).unwrap().deployment;
        p.spec.degrade = Some(crate::crd::DegradeSpec {
            connections: Some(crate::crd::DegradeSwitch::Auto),
            auto: Some(crate::crd::DegradeAutoSpec {
                connections_trip: Some(0.5),
                connections_reset: Some(0.25),
                ..Default::default()
            }),
            ..Default::default()
        });
        let t = RoutingTable::from_yaml(&table_yaml(&p, 0)).unwrap();
        let a = t.degrade.auto.expect("marks in the table");
        assert_eq!((a.connections_trip, a.connections_reset), (0.5, 0.25));
        assert_eq!(
            a.window,
            std::time::Duration::from_secs(10),
            "the rest at defaults"
        );
        let after = crate::build::desired(&p).unwrap().deployment;
        assert_eq!(
            before.spec.unwrap().template,
            after.spec.unwrap().template,
            "new marks restart no pod"
        );
    }

    #[test]
    fn salt_defaults_to_uid_and_headers_to_gateway_defaults() {
        let p = pgw(canary_spec(serde_json::json!({})));
        assert_eq!(
            table_yaml(&p, 100),
            "weight_bp: 10000\nsalt: uid-1\noverride_header: x-pushgate-track\ncookie: pushgate_rk\n"
        );
        // Without a canary the table still exists, at weight 0.
        let p = pgw(redis_spec());
        assert!(table_yaml(&p, 0).starts_with("weight_bp: 0\nsalt: uid-1\n"));
    }

    #[test]
    fn weight_is_held_at_zero_until_a_canary_pod_is_ready() {
        let p = pgw(canary_spec(serde_json::json!({})));
        assert_eq!(effective_weight(&p, 0), 0);
        assert_eq!(effective_weight(&p, 1), 30);
        assert_eq!(effective_weight(&p, 3), 30);
        assert_eq!(effective_weight(&pgw(redis_spec()), 3), 0, "no canary");
    }

    #[test]
    fn bad_header_names_fail_the_reconcile() {
        let p = pgw(canary_spec(serde_json::json!({"hash": {"header": "a b"}})));
        assert_eq!(table(&p, 0).unwrap_err().field, "spec.canary.hash.header");
        let p = pgw(canary_spec(
            serde_json::json!({"hash": {"overrideHeader": ""}}),
        ));
        assert_eq!(
            table(&p, 0).unwrap_err().field,
            "spec.canary.hash.overrideHeader"
        );
    }

    #[test]
    fn role_reads_only_the_routing_table() {
        let p = pgw(redis_spec());
        let rules = role(&p).rules.unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(
            r.resources.as_deref(),
            Some(&["configmaps".to_string()][..])
        );
        assert_eq!(
            r.resource_names.as_deref(),
            Some(&["demo-routing".to_string()][..])
        );
        assert_eq!(r.verbs, ["get", "list", "watch"]);
        let b = role_binding(&p);
        assert_eq!(b.role_ref.name, "demo-gateway");
        let s = &b.subjects.unwrap()[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "demo-gateway", Some("ns1"))
        );
        assert_eq!(
            service_account(&p).automount_service_account_token,
            Some(false)
        );
    }

    #[test]
    fn each_track_points_at_the_other() {
        let p = pgw(canary_spec(serde_json::json!({})));
        let s = gateway_config(&p, Track::Stable).unwrap();
        assert_eq!(
            (s.track, s.peer_url.as_deref(), s.configmap.as_deref()),
            (
                Track::Stable,
                Some("http://demo-canary.ns1.svc"),
                Some("ns1/demo-routing")
            )
        );
        assert_eq!(
            s.peer_token_file.as_deref(),
            Some(std::path::Path::new("/var/run/secrets/pushgate/peer/token"))
        );
        let c = gateway_config(&p, Track::Canary).unwrap();
        assert_eq!(
            (c.track, c.peer_url.as_deref()),
            (Track::Canary, Some("http://demo-stable.ns1.svc"))
        );
        let svc = track_service(&p, Track::Canary);
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-canary"));
        assert_eq!(
            svc.spec.unwrap().selector.unwrap()["pushgate.dev/track"],
            "canary"
        );
    }

    #[test]
    fn peer_token_is_random_owned_and_mounted() {
        let p = pgw(redis_spec());
        let (a, b) = (peer_secret(&p), peer_secret(&p));
        let token = |s: &Secret| s.string_data.as_ref().unwrap()[PEER_TOKEN_KEY].clone();
        assert_eq!(token(&a).len(), 64);
        assert_ne!(token(&a), token(&b), "a fresh token each time it is built");
        assert_eq!(a.metadata.name.as_deref(), Some("demo-peer"));
        assert_eq!(
            a.metadata.owner_references.unwrap()[0].uid,
            "uid-1",
            "deleted with the PushGateway"
        );
        let (v, m) = peer_token_volume(&p);
        assert_eq!(v.secret.unwrap().secret_name.as_deref(), Some("demo-peer"));
        assert_eq!(m.mount_path, PEER_DIR);
    }

    #[test]
    fn no_routing_for_embedded_store_or_tls() {
        assert!(!enabled(&pgw(PushGatewaySpec::default())));
        let mut spec = redis_spec();
        assert!(enabled(&pgw(spec.clone())));
        spec.tls = Some(crate::crd::TlsSpec {
            secret_name: "c".into(),
            ..Default::default()
        });
        assert!(!enabled(&pgw(spec)));
    }
}
