//! Pure functions from a `PushGateway` to the objects it should own. No API
//! calls here, so every field that matters is unit-tested without a cluster.

mod deployment;
pub mod keda;
mod objects;
pub mod plan;
pub mod routing;
mod security;

pub use deployment::{deployment, deployment_for};
pub use objects::{config_map, config_map_for, hpa, hpa_for, pdb, pvc, service};

use crate::config::SpecError;
use crate::crd::PushGateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Field manager of every server-side apply.
pub const MANAGER: &str = "pushgate-operator";
/// Default gateway image repository; the tag is the operator version.
pub const IMAGE_REPO: &str = "ghcr.io/pushgate/pushgate";
/// Pod template annotation that rolls pods when the config changes.
pub const CONFIG_HASH_ANNOTATION: &str = "pushgate.dev/config-hash";

/// Everything one PushGateway owns.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Gateway config file.
    pub config_map: ConfigMap,
    /// Stable track.
    pub deployment: Deployment,
    /// API + metrics Service.
    pub service: Service,
    /// Disruption budget.
    pub pdb: PodDisruptionBudget,
    /// Claim of the embedded store, if used.
    pub pvc: Option<PersistentVolumeClaim>,
    /// Autoscaler, if autoscaling is set with the `hpa` engine.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// KEDA's ScaledObject, if autoscaling is set with the `keda` engine.
    pub scaled_object: Option<keda::ScaledObject>,
    /// Routing identity, with a Redis store (see [`routing::enabled`]).
    pub routing: Option<Routing>,
    /// The canary track, while `spec.canary` is set.
    pub canary: Option<Canary>,
}

/// What lets the gateway pods watch the routing table. The table itself is
/// built by the reconciler ([`routing::table`]) because its weight depends on
/// the canary's observed readiness.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Identity of the gateway pods.
    pub service_account: ServiceAccount,
    /// Read access to the routing table only.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The tracks' peer token, created once and never overwritten.
    pub peer_secret: Secret,
}

/// The canary track's objects.
#[derive(Debug, Clone)]
pub struct Canary {
    /// Canary gateway config (`routing.track: canary`).
    pub config_map: ConfigMap,
    /// Canary Deployment.
    pub deployment: Deployment,
    /// Its own autoscaler, if autoscaling is set with the `hpa` engine.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Its own ScaledObject, with the `keda` engine.
    pub scaled_object: Option<keda::ScaledObject>,
    /// Services selecting one track each: `[stable, canary]`.
    pub track_services: [Service; 2],
}

/// A deployment track: stable (`spec.image`) or canary (`spec.canary.image`).
pub use pushgate_contract::routing::Track;

/// Builds every owned object, or the first spec error found.
pub fn desired(pgw: &PushGateway) -> Result<Desired, SpecError> {
    let config_map = config_map(pgw)?;
    // Validates the table settings now, so a bad header name fails the whole
    // reconcile before anything is applied.
    routing::table(pgw, 0)?;
    let canary = match pgw.spec.canary {
        Some(_) => {
            let cm = config_map_for(pgw, Track::Canary)?;
            Some(Canary {
                deployment: deployment_for(pgw, Track::Canary, &cm)?,
                config_map: cm,
                hpa: hpa_for(pgw, Track::Canary),
                scaled_object: keda::scaled_object_for(pgw, Track::Canary)?,
                track_services: [
                    routing::track_service(pgw, Track::Stable),
                    routing::track_service(pgw, Track::Canary),
                ],
            })
        }
        None => None,
    };
    Ok(Desired {
        deployment: deployment(pgw, &config_map)?,
        config_map,
        service: service(pgw),
        pdb: pdb(pgw),
        pvc: pvc(pgw),
        hpa: hpa(pgw),
        scaled_object: keda::scaled_object_for(pgw, Track::Stable)?,
        routing: routing::enabled(pgw).then(|| Routing {
            service_account: routing::service_account(pgw),
            role: routing::role(pgw),
            role_binding: routing::role_binding(pgw),
            peer_secret: routing::peer_secret(pgw),
        }),
        canary,
    })
}

/// Name of `track`'s Deployment (and HPA): the PushGateway's name for stable.
pub fn track_name(pgw: &PushGateway, track: Track) -> String {
    match track {
        Track::Stable => pgw.name_any(),
        Track::Canary => format!("{}-canary", pgw.name_any()),
    }
}

/// Image of `track`.
pub fn track_image(pgw: &PushGateway, track: Track) -> String {
    match (track, &pgw.spec.canary) {
        (Track::Canary, Some(c)) => c.image.clone(),
        _ => image(pgw),
    }
}

/// Service port of the HTTP API (default 80).
pub fn service_port(pgw: &PushGateway) -> i32 {
    pgw.spec.service.as_ref().and_then(|s| s.port).unwrap_or(80)
}

/// Image of the stable track.
pub fn image(pgw: &PushGateway) -> String {
    pgw.spec
        .image
        .clone()
        .unwrap_or_else(|| format!("{IMAGE_REPO}:{}", env!("CARGO_PKG_VERSION")))
}

/// Name of the ConfigMap holding the stable track's `pushgate.yaml`.
pub fn config_name(pgw: &PushGateway) -> String {
    config_name_for(pgw, Track::Stable)
}

/// Name of the ConfigMap holding `track`'s `pushgate.yaml`.
pub fn config_name_for(pgw: &PushGateway, track: Track) -> String {
    format!("{}-config", track_name(pgw, track))
}

/// Name of the embedded store's claim.
pub fn pvc_name(pgw: &PushGateway) -> String {
    format!("{}-data", pgw.name_any())
}

/// In-cluster URL of the HTTP API.
pub fn url(pgw: &PushGateway) -> String {
    let port = service_port(pgw);
    let ns = pgw.namespace().unwrap_or_else(|| "default".into());
    let host = format!("{}.{ns}.svc", pgw.name_any());
    if port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// Labels selecting the stable track's pods.
pub fn selector_labels(pgw: &PushGateway) -> BTreeMap<String, String> {
    track_labels(pgw, Track::Stable)
}

/// Labels selecting every gateway pod of the PushGateway, both tracks: the
/// client-facing Service uses them (one Service in front of every gateway pod).
pub fn instance_labels(pgw: &PushGateway) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "pushgate".into()),
        ("app.kubernetes.io/instance".into(), pgw.name_any()),
    ])
}

/// Labels selecting one track's pods.
pub fn track_labels(pgw: &PushGateway, track: Track) -> BTreeMap<String, String> {
    let mut l = instance_labels(pgw);
    l.insert("pushgate.dev/track".into(), track.as_str().into());
    l
}

fn labels(pgw: &PushGateway) -> BTreeMap<String, String> {
    // Owned objects carry the instance labels only: a track label on, say,
    // the routing table would be meaningless.
    let mut l = instance_labels(pgw);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l
}

fn owner_ref(pgw: &PushGateway) -> OwnerReference {
    // controller_owner_ref only fails without a uid, i.e. for objects never
    // read from the API; the reconciler only sees stored objects.
    pgw.controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: PushGateway::api_version(&()).into(),
            kind: PushGateway::kind(&()).into(),
            name: pgw.name_any(),
            uid: String::new(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
}

/// Metadata shared by all owned objects: name, namespace, labels, owner.
fn meta(pgw: &PushGateway, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: pgw.namespace(),
        labels: Some(labels(pgw)),
        owner_references: Some(vec![owner_ref(pgw)]),
        ..Default::default()
    }
}

/// Stable FNV-1a (the contract's), so the config hash does not change between operator builds.
fn fnv1a(data: &str) -> String {
    format!(
        "{:016x}",
        pushgate_contract::hash::fnv1a64(&[data.as_bytes()])
    )
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::crd::{PushGateway, PushGatewaySpec};

    /// A PushGateway as read from the API (with uid), for builder tests.
    pub fn pgw(spec: PushGatewaySpec) -> PushGateway {
        let mut p = PushGateway::new("demo", spec);
        p.metadata.namespace = Some("ns1".into());
        p.metadata.uid = Some("uid-1".into());
        p.metadata.generation = Some(3);
        p
    }

    /// Redis-backed spec, the only one allowed to scale.
    pub fn redis_spec() -> PushGatewaySpec {
        serde_json::from_value(serde_json::json!({
            "store": {"redis": {"secretRef": {"name": "redis-url"}}}
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::crd::PushGatewaySpec;

    #[test]
    fn every_object_is_owned_by_the_pushgateway() {
        let d = desired(&pgw(PushGatewaySpec::default())).unwrap();
        let metas = [
            &d.config_map.metadata,
            &d.deployment.metadata,
            &d.service.metadata,
            &d.pdb.metadata,
            &d.pvc.as_ref().unwrap().metadata,
        ];
        for m in metas {
            let o = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!((o.kind.as_str(), o.uid.as_str()), ("PushGateway", "uid-1"));
            assert_eq!(o.controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("ns1"));
        }
        assert!(d.hpa.is_none());
    }

    #[test]
    fn url_uses_service_dns_name() {
        assert_eq!(url(&pgw(PushGatewaySpec::default())), "http://demo.ns1.svc");
    }

    #[test]
    fn default_image_is_pinned_to_operator_version() {
        let i = image(&pgw(PushGatewaySpec::default()));
        assert_eq!(
            i,
            format!("ghcr.io/pushgate/pushgate:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
