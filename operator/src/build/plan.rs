//! The writes of one reconcile, in order, from the same builder for what
//! must exist and what must not: every object a PushGateway can own is a
//! slot (kind and name) that the desired state fills or leaves empty, and
//! an empty slot is a delete. Pure, so the order is unit-tested.

use super::keda::ScaledObject;
use super::{config_name_for, routing, track_name, Desired, Track};
use crate::crd::PushGateway;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;

/// An object the operator owns, of one of the kinds it writes.
#[derive(Debug, Clone)]
pub enum Owned {
    /// A ConfigMap.
    ConfigMap(ConfigMap),
    /// A Deployment.
    Deployment(Box<Deployment>),
    /// A Service.
    Service(Service),
    /// A PodDisruptionBudget.
    Pdb(PodDisruptionBudget),
    /// A PersistentVolumeClaim.
    Pvc(PersistentVolumeClaim),
    /// A HorizontalPodAutoscaler.
    Hpa(Box<HorizontalPodAutoscaler>),
    /// A KEDA ScaledObject.
    ScaledObject(Box<ScaledObject>),
    /// A ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// A Role.
    Role(Role),
    /// A RoleBinding.
    RoleBinding(RoleBinding),
}

/// The kinds of [`Owned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ConfigMap.
    ConfigMap,
    /// Deployment.
    Deployment,
    /// Service.
    Service,
    /// PodDisruptionBudget.
    Pdb,
    /// PersistentVolumeClaim.
    Pvc,
    /// HorizontalPodAutoscaler.
    Hpa,
    /// KEDA ScaledObject.
    ScaledObject,
    /// ServiceAccount.
    ServiceAccount,
    /// Role.
    Role,
    /// RoleBinding.
    RoleBinding,
}

impl Owned {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Owned::ConfigMap(_) => Kind::ConfigMap,
            Owned::Deployment(_) => Kind::Deployment,
            Owned::Service(_) => Kind::Service,
            Owned::Pdb(_) => Kind::Pdb,
            Owned::Pvc(_) => Kind::Pvc,
            Owned::Hpa(_) => Kind::Hpa,
            Owned::ScaledObject(_) => Kind::ScaledObject,
            Owned::ServiceAccount(_) => Kind::ServiceAccount,
            Owned::Role(_) => Kind::Role,
            Owned::RoleBinding(_) => Kind::RoleBinding,
        }
    }

    /// Its name.
    pub fn name(&self) -> String {
        match self {
            Owned::ConfigMap(o) => o.name_any(),
            Owned::Deployment(o) => o.name_any(),
            Owned::Service(o) => o.name_any(),
            Owned::Pdb(o) => o.name_any(),
            Owned::Pvc(o) => o.name_any(),
            Owned::Hpa(o) => o.name_any(),
            Owned::ScaledObject(o) => o.name_any(),
            Owned::ServiceAccount(o) => o.name_any(),
            Owned::Role(o) => o.name_any(),
            Owned::RoleBinding(o) => o.name_any(),
        }
    }
}

/// Where the routing table's weight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// 0: every stream on the stable track.
    Zero,
    /// `spec.canary.weight` once the canary Deployment applied just before
    /// has a ready pod, else 0.
    CanaryReadiness,
}

/// One write.
#[derive(Debug, Clone)]
pub enum Change {
    /// Server-side apply.
    Apply(Box<Owned>),
    /// Delete it if it exists and this PushGateway owns it.
    Delete(Kind, String),
    /// Create the Secret unless one of its name exists (never overwritten).
    CreateSecret(Box<Secret>),
    /// Apply the routing table with this weight.
    RoutingTable(Weight),
}

impl Change {
    /// `apply Kind/name`, `delete Kind/name`, … (for tests and logs).
    pub fn describe(&self) -> String {
        match self {
            Change::Apply(o) => format!("apply {:?}/{}", o.kind(), o.name()),
            Change::Delete(k, n) => format!("delete {k:?}/{n}"),
            Change::CreateSecret(s) => format!("create Secret/{}", s.name_any()),
            Change::RoutingTable(w) => format!("routing table {w:?}"),
        }
    }
}

/// A slot: filled, it is applied; empty, it is deleted.
fn slot(kind: Kind, name: String, want: Option<Owned>) -> Change {
    match want {
        Some(o) => Change::Apply(Box::new(o)),
        None => Change::Delete(kind, name),
    }
}

/// The writes that make the cluster match `d`, in order:
/// 1. the gateway pods' identity before any pod that runs as it, and the
///    peer token;
/// 2. when the canary goes away, the table at weight 0 first, so its streams
///    move to stable before its pods are deleted;
/// 3. the stable track;
/// 4. the canary track, then the table with the canary's weight (it depends
///    on the canary having a ready pod) — or the canary's deletion;
/// 5. without routing (embedded store, TLS), the routing objects' deletion.
pub fn changes(pgw: &PushGateway, d: &Desired) -> Vec<Change> {
    let mut out = Vec::new();
    let id = routing::identity_name(pgw);
    if let Some(r) = &d.routing {
        out.push(Change::Apply(Box::new(Owned::ServiceAccount(
            r.service_account.clone(),
        ))));
        out.push(Change::Apply(Box::new(Owned::Role(r.role.clone()))));
        out.push(Change::Apply(Box::new(Owned::RoleBinding(
            r.role_binding.clone(),
        ))));
        out.push(Change::CreateSecret(Box::new(r.peer_secret.clone())));
        if d.canary.is_none() {
            out.push(Change::RoutingTable(Weight::Zero));
        }
    }
    out.push(Change::Apply(Box::new(Owned::ConfigMap(
        d.config_map.clone(),
    ))));
    // The embedded store's claim is never deleted: it holds the history.
    if let Some(pvc) = &d.pvc {
        out.push(Change::Apply(Box::new(Owned::Pvc(pvc.clone()))));
    }
    out.push(Change::Apply(Box::new(Owned::Deployment(Box::new(
        d.deployment.clone(),
    )))));
    out.push(Change::Apply(Box::new(Owned::Service(d.service.clone()))));
    out.push(Change::Apply(Box::new(Owned::Pdb(d.pdb.clone()))));
    out.push(slot(
        Kind::Hpa,
        track_name(pgw, Track::Stable),
        d.hpa.clone().map(|h| Owned::Hpa(Box::new(h))),
    ));
    out.push(slot(
        Kind::ScaledObject,
        track_name(pgw, Track::Stable),
        d.scaled_object
            .clone()
            .map(|s| Owned::ScaledObject(Box::new(s))),
    ));
    let canary = d.canary.as_ref();
    let canary_name = track_name(pgw, Track::Canary);
    out.push(slot(
        Kind::ConfigMap,
        config_name_for(pgw, Track::Canary),
        canary.map(|c| Owned::ConfigMap(c.config_map.clone())),
    ));
    out.push(slot(
        Kind::Deployment,
        canary_name.clone(),
        canary.map(|c| Owned::Deployment(Box::new(c.deployment.clone()))),
    ));
    for (i, track) in [Track::Stable, Track::Canary].into_iter().enumerate() {
        out.push(slot(
            Kind::Service,
            routing::track_service_name(pgw, track),
            canary.map(|c| Owned::Service(c.track_services[i].clone())),
        ));
    }
    out.push(slot(
        Kind::Hpa,
        canary_name.clone(),
        canary
            .and_then(|c| c.hpa.clone())
            .map(|h| Owned::Hpa(Box::new(h))),
    ));
    out.push(slot(
        Kind::ScaledObject,
        canary_name,
        canary
            .and_then(|c| c.scaled_object.clone())
            .map(|s| Owned::ScaledObject(Box::new(s))),
    ));
    if canary.is_some() {
        out.push(Change::RoutingTable(Weight::CanaryReadiness));
    }
    if d.routing.is_none() {
        out.push(Change::Delete(Kind::ConfigMap, routing::table_name(pgw)));
        out.push(Change::Delete(Kind::RoleBinding, id.clone()));
        out.push(Change::Delete(Kind::Role, id.clone()));
        out.push(Change::Delete(Kind::ServiceAccount, id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::desired;
    use super::super::testutil::*;
    use super::*;
    use crate::crd::PushGatewaySpec;

    fn plan(spec: serde_json::Value) -> Vec<String> {
        let spec: PushGatewaySpec = serde_json::from_value(spec).unwrap();
        let p = pgw(spec);
        changes(&p, &desired(&p).unwrap())
            .iter()
            .map(Change::describe)
            .collect()
    }

    fn pos(plan: &[String], what: &str) -> usize {
        plan.iter()
            .position(|c| c == what)
            .unwrap_or_else(|| panic!("{what} not in {plan:#?}"))
    }

    #[test]
    fn removing_the_canary_moves_streams_home_before_deleting_it() {
        let p = plan(serde_json::json!({"store": {"redis": {"secretRef": {"name": "r"}}}}));
        let zero = pos(&p, "routing table Zero");
        for gone in [
            "delete Deployment/demo-canary",
            "delete ConfigMap/demo-canary-config",
            "delete Service/demo-canary",
            "delete Service/demo-stable",
            "delete Hpa/demo-canary",
        ] {
            assert!(zero < pos(&p, gone), "{gone} before the table: {p:#?}");
        }
        assert!(pos(&p, "apply ServiceAccount/demo-gateway") < pos(&p, "apply Deployment/demo"));
        assert!(!p.iter().any(|c| c.contains("CanaryReadiness")));
    }

    #[test]
    fn the_canary_weight_is_written_after_its_deployment() {
        let p = plan(serde_json::json!({
            "store": {"redis": {"secretRef": {"name": "r"}}},
            "canary": {"image": "gw:2", "weight": 30}
        }));
        assert!(pos(&p, "apply Deployment/demo-canary") < pos(&p, "routing table CanaryReadiness"));
        for kept in [
            "delete Deployment/demo-canary",
            "delete ConfigMap/demo-canary-config",
            "delete Service/demo-canary",
            "delete Service/demo-stable",
        ] {
            assert!(!p.iter().any(|c| c == kept), "{kept}: {p:#?}");
        }
    }

    #[test]
    fn without_routing_its_objects_go_and_the_claim_stays() {
        let p = plan(serde_json::json!({}));
        for gone in [
            "delete ConfigMap/demo-routing",
            "delete RoleBinding/demo-gateway",
            "delete Role/demo-gateway",
            "delete ServiceAccount/demo-gateway",
            "delete Hpa/demo",
        ] {
            pos(&p, gone);
        }
        assert!(pos(&p, "apply Pvc/demo-data") < pos(&p, "apply Deployment/demo"));
        assert!(!p.iter().any(|c| c == "delete Pvc/demo-data"));
    }

    #[test]
    fn one_autoscaler_per_track_never_both() {
        let scaling = |engine: &str| {
            plan(serde_json::json!({
                "store": {"redis": {"secretRef": {"name": "r"}}},
                "canary": {"image": "gw:2", "weight": 30},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "engine": engine,
                                "keda": {"serverAddress": "http://prom:9090"}}
            }))
        };
        let keda = scaling("keda");
        for name in ["demo", "demo-canary"] {
            pos(&keda, &format!("apply ScaledObject/{name}"));
            pos(&keda, &format!("delete Hpa/{name}"));
        }
        let hpa = scaling("hpa");
        for name in ["demo", "demo-canary"] {
            pos(&hpa, &format!("apply Hpa/{name}"));
            pos(&hpa, &format!("delete ScaledObject/{name}"));
        }
    }
}
