//! Status computed from the observed Deployment: a pure function, so the
//! condition logic is tested without a cluster.

use crate::build;
use crate::crd::{CanaryStatus, Condition, PushGateway, PushGatewayStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use crate::breakers::{PodBreakers, LAYERS};

/// A reconcile failure to surface as `Degraded=True`.
#[derive(Debug, Clone)]
pub struct Failure {
    /// CamelCase reason, e.g. `InvalidSpec`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

struct Rollout {
    desired: i32,
    ready: i32,
    done: bool,
}

fn rollout(dep: Option<&Deployment>) -> Rollout {
    let Some(d) = dep else {
        return Rollout {
            desired: 0,
            ready: 0,
            done: false,
        };
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let current = st.observed_generation >= d.metadata.generation;
    let updated = st.updated_replicas.unwrap_or(0) >= desired;
    // Old pods still terminating mean the rollout has not settled.
    let settled = st.replicas.unwrap_or(0) <= desired;
    Rollout {
        desired,
        ready,
        done: current && updated && settled && ready >= desired && desired > 0,
    }
}

fn condition(
    prev: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time unless the status flipped, so an unchanged
    // status is a no-op write (no new resourceVersion, no reconcile loop).
    let last = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: last,
        observed_generation: generation,
    }
}

/// Container states that do not pass by waiting: a pod in one of them keeps
/// the rollout from ever completing, so it is reported as `Degraded`.
const STUCK: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The first gateway pod that cannot start, as a failure named by its
/// container's waiting reason (e.g. `ImagePullBackOff`) with the kubelet's message.
pub fn stuck_pod(pods: &[Pod]) -> Option<Failure> {
    pods.iter().find_map(|p| {
        let st = p.status.as_ref()?;
        let all = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        all.filter_map(|c| Some((c, c.state.as_ref()?.waiting.as_ref()?)))
            .find(|(_, w)| w.reason.as_deref().is_some_and(|r| STUCK.contains(&r)))
            .map(|(c, w)| Failure {
                reason: w.reason.clone().unwrap_or_default(),
                message: format!(
                    "pod {} container {} ({}): {}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    c.name,
                    c.image,
                    w.message.as_deref().unwrap_or("waiting")
                ),
            })
    })
}

/// One condition per degrade layer (`ConnectionsDegraded`, …): `True` with
/// reason `SwitchedOn` when `spec.degrade` turns it on, or `AutoTripped`
/// when it is `auto` and some pod's breaker has tripped (named in the
/// message, from `breakers`); else `False` with `AutoArmed` or `SwitchedOff`.
fn layer_conditions(
    pgw: &PushGateway,
    breakers: &[PodBreakers],
    prev: &[Condition],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    use crate::crd::DegradeSwitch;
    let spec = pgw.spec.degrade.clone().unwrap_or_default();
    [
        ("ConnectionsDegraded", spec.connections),
        ("EventsDegraded", spec.events),
        ("StorageDegraded", spec.storage),
    ]
    .into_iter()
    .zip(LAYERS.into_iter().enumerate())
    .map(|((type_, switch), (i, layer))| {
        let (on, reason, msg) = match switch.unwrap_or(DegradeSwitch::Off) {
            DegradeSwitch::On => (true, "SwitchedOn", format!("spec.degrade.{layer} is on")),
            DegradeSwitch::Auto => auto_layer(layer, i, breakers),
            DegradeSwitch::Off => (false, "SwitchedOff", format!("spec.degrade.{layer} is off")),
        };
        condition(prev, type_, on, reason, msg, generation, now)
    })
    .collect()
}

/// An `auto` layer as the pods report it.
fn auto_layer(layer: &str, i: usize, breakers: &[PodBreakers]) -> (bool, &'static str, String) {
    let names = |f: &dyn Fn(&PodBreakers) -> bool| {
        breakers
            .iter()
            .filter(|b| f(b))
            .map(|b| b.pod.as_str())
            .collect::<Vec<_>>()
    };
    let tripped = names(&|b| b.degraded.is_some_and(|d| d[i]));
    let silent = names(&|b| b.degraded.is_none());
    let unheard = match silent.is_empty() {
        true => String::new(),
        false => format!("; no answer from {}", silent.join(", ")),
    };
    if tripped.is_empty() {
        let msg = format!(
            "spec.degrade.{layer} is auto: no pod's breaker is tripped ({} of {} pods answered){unheard}",
            breakers.len() - silent.len(),
            breakers.len()
        );
        (false, "AutoArmed", msg)
    } else {
        let msg = format!(
            "spec.degrade.{layer} is auto: the breaker tripped on {} of {} pods: {}{unheard}",
            tripped.len(),
            breakers.len(),
            tripped.join(", ")
        );
        (true, "AutoTripped", msg)
    }
}

/// The layer conditions whose `auto` breaker tripped (`BreakerTripped`) or
/// reset (`BreakerReset`) between `prev` and `next`: each is an Event.
pub fn breaker_changes<'a>(
    prev: &[Condition],
    next: &'a [Condition],
) -> Vec<(&'static str, &'a Condition)> {
    let tripped = |c: Option<&Condition>| c.is_some_and(|c| c.reason == "AutoTripped");
    next.iter()
        .filter(|c| c.type_.ends_with("Degraded") && c.type_ != "Degraded")
        .filter_map(|c| {
            let before = tripped(prev.iter().find(|p| p.type_ == c.type_));
            match (before, tripped(Some(c))) {
                (false, true) => Some(("BreakerTripped", c)),
                (true, false) => Some(("BreakerReset", c)),
                _ => None,
            }
        })
        .collect()
}

/// What the reconciler observed of the canary track.
#[derive(Debug, Clone, Copy)]
pub struct CanaryObserved<'a> {
    /// The canary Deployment as stored, if it exists yet.
    pub deployment: Option<&'a Deployment>,
    /// Canary share (percent) written to the routing table.
    pub weight: i32,
}

/// True once the Deployment's rollout is complete.
pub fn rolled_out(dep: Option<&Deployment>) -> bool {
    rollout(dep).done
}

/// The status to write after a reconcile attempt; `canary` is `Some` while
/// `spec.canary` is set, and `breakers` is what the pods said of their
/// `auto` breakers (empty when no layer is `auto`).
pub fn compute(
    pgw: &PushGateway,
    dep: Option<&Deployment>,
    canary: Option<CanaryObserved<'_>>,
    failure: Option<&Failure>,
    breakers: &[PodBreakers],
    now: &str,
) -> PushGatewayStatus {
    let prev = pgw.status.clone().unwrap_or_default().conditions;
    let generation = pgw.metadata.generation;
    let r = rollout(dep);
    let ready_msg = format!("{}/{} gateway pods ready", r.ready, r.desired);
    let (ready_reason, progressing_reason) = if r.done {
        ("AllReplicasReady", "RolloutComplete")
    } else {
        ("ReplicasNotReady", "RollingOut")
    };
    let degraded = match failure {
        Some(f) => condition(
            &prev,
            "Degraded",
            true,
            &f.reason,
            f.message.clone(),
            generation,
            now,
        ),
        None => condition(
            &prev,
            "Degraded",
            false,
            "ReconcileSucceeded",
            "all objects applied".into(),
            generation,
            now,
        ),
    };
    let ok = r.done && failure.is_none();
    let mut conditions = vec![
        condition(
            &prev,
            "Ready",
            ok,
            // The failure's own reason, so `kubectl get` shows why.
            failure.map_or(ready_reason, |f| f.reason.as_str()),
            ready_msg.clone(),
            generation,
            now,
        ),
        condition(
            &prev,
            "Progressing",
            !r.done,
            progressing_reason,
            ready_msg,
            generation,
            now,
        ),
        degraded,
    ];
    conditions.extend(layer_conditions(pgw, breakers, &prev, generation, now));
    let canary_status = canary.map(|c| {
        let cr = rollout(c.deployment);
        let (reason, msg) = if cr.done {
            (
                "CanaryReady",
                format!("{}/{} canary pods ready", cr.ready, cr.desired),
            )
        } else {
            (
                "CanaryNotReady",
                format!("{}/{} canary pods ready", cr.ready, cr.desired),
            )
        };
        conditions.push(condition(
            &prev,
            "CanaryReady",
            cr.done,
            reason,
            msg,
            generation,
            now,
        ));
        CanaryStatus {
            image: build::track_image(pgw, build::Track::Canary),
            ready_replicas: cr.ready,
            weight: c.weight,
        }
    });
    PushGatewayStatus {
        observed_generation: generation,
        conditions,
        replicas: dep.map(|_| r.desired),
        ready_replicas: Some(r.ready),
        image: Some(build::image(pgw)),
        url: Some(build::url(pgw)),
        canary: canary_status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::testutil::pgw;
    use crate::crd::PushGatewaySpec;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn dep(replicas: i32, ready: i32) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(replicas),
                updated_replicas: Some(replicas),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(1);
        d
    }

    /// The status of a default PushGateway whose Deployment wants `want`
    /// pods and has `ready`.
    fn plain(want: i32, ready: i32) -> PushGatewayStatus {
        compute(
            &pgw(PushGatewaySpec::default()),
            Some(&dep(want, ready)),
            None,
            None,
            &[],
            "t0",
        )
    }

    fn get<'a>(s: &'a PushGatewayStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn each_degrade_layer_has_a_condition_with_its_reason() {
        use crate::crd::{DegradeSpec, DegradeSwitch};
        let spec = PushGatewaySpec {
            degrade: Some(DegradeSpec {
                connections: Some(DegradeSwitch::On),
                events: Some(DegradeSwitch::Auto),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = compute(&pgw(spec), Some(&dep(1, 1)), None, None, &[], "t0");
        let c = get(&s, "ConnectionsDegraded");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SwitchedOn")
        );
        let e = get(&s, "EventsDegraded");
        assert_eq!(
            (e.status.as_str(), e.reason.as_str()),
            ("False", "AutoArmed")
        );
        let st = get(&s, "StorageDegraded");
        assert_eq!(
            (st.status.as_str(), st.reason.as_str()),
            ("False", "SwitchedOff")
        );
        assert_eq!(get(&plain(1, 1), "ConnectionsDegraded").status, "False");
    }

    #[test]
    fn an_auto_layer_names_the_pods_whose_breaker_tripped() {
        use crate::crd::{DegradeSpec, DegradeSwitch};
        let p = pgw(PushGatewaySpec {
            degrade: Some(DegradeSpec {
                connections: Some(DegradeSwitch::Auto),
                storage: Some(DegradeSwitch::Auto),
                ..Default::default()
            }),
            ..Default::default()
        });
        let pod = |name: &str, d| PodBreakers {
            pod: name.into(),
            degraded: d,
        };
        let seen = [
            pod("gw-a", Some([true, false, false])),
            pod("gw-b", Some([false, false, false])),
            pod("gw-c", None),
        ];
        let s = compute(&p, Some(&dep(3, 3)), None, None, &seen, "t0");
        let c = get(&s, "ConnectionsDegraded");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "AutoTripped")
        );
        assert!(
            c.message.contains("1 of 3 pods: gw-a; no answer from gw-c"),
            "{}",
            c.message
        );
        let st = get(&s, "StorageDegraded");
        assert_eq!(
            (st.status.as_str(), st.reason.as_str()),
            ("False", "AutoArmed")
        );
        assert!(
            st.message.contains("2 of 3 pods answered"),
            "{}",
            st.message
        );
        let e = get(&s, "EventsDegraded");
        assert_eq!(e.reason, "SwitchedOff", "a layer not auto ignores the pods");
        let calm = compute(&p, Some(&dep(3, 3)), None, None, &seen[1..], "t1");
        let ev = |a: &PushGatewayStatus, b: &PushGatewayStatus| {
            breaker_changes(&a.conditions, &b.conditions)
                .into_iter()
                .map(|(r, c)| (r, c.type_.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ev(&calm, &s),
            [("BreakerTripped", "ConnectionsDegraded".to_string())]
        );
        assert_eq!(
            ev(&s, &calm),
            [("BreakerReset", "ConnectionsDegraded".to_string())]
        );
        assert!(ev(&s, &s).is_empty());
    }

    #[test]
    fn ready_when_all_replicas_ready() {
        let s = plain(1, 1);
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, "Progressing").status, "False");
        assert_eq!(get(&s, "Degraded").status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_replicas, Some(1));
    }

    #[test]
    fn not_ready_while_rolling_out() {
        let s = plain(2, 1);
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Progressing").status, "True");
    }

    #[test]
    fn failure_is_degraded_with_reason() {
        let f = Failure {
            reason: "InvalidSpec".into(),
            message: "bad".into(),
        };
        let p = pgw(PushGatewaySpec::default());
        let s = compute(&p, Some(&dep(1, 1)), None, Some(&f), &[], "t0");
        let d = get(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
            ("True", "InvalidSpec", "bad")
        );
        let ready = get(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSpec")
        );
    }

    #[test]
    fn canary_status_and_condition_only_while_canary_is_set() {
        let s = plain(1, 1);
        assert!(s.canary.is_none());
        assert!(s.conditions.iter().all(|c| c.type_ != "CanaryReady"));

        let spec: PushGatewaySpec = serde_json::from_value(serde_json::json!({
            "store": {"redis": {"secretRef": {"name": "r"}}},
            "canary": {"image": "gw:2", "weight": 30}
        }))
        .unwrap();
        let p = pgw(spec);
        let c = dep(2, 1);
        let seen = |d, w| CanaryObserved {
            deployment: Some(d),
            weight: w,
        };
        let s = compute(&p, Some(&dep(1, 1)), Some(seen(&c, 0)), None, &[], "t0");
        assert_eq!(get(&s, "CanaryReady").status, "False");
        assert_eq!(
            get(&s, "Ready").status,
            "True",
            "Ready is the stable track's"
        );
        assert_eq!(
            s.canary,
            Some(CanaryStatus {
                image: "gw:2".into(),
                ready_replicas: 1,
                weight: 0
            })
        );
        let ready = dep(2, 2);
        let s = compute(
            &p,
            Some(&dep(1, 1)),
            Some(seen(&ready, 30)),
            None,
            &[],
            "t1",
        );
        let cond = get(&s, "CanaryReady");
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "CanaryReady")
        );
        assert_eq!(s.canary.unwrap().weight, 30);
        let absent = compute(
            &p,
            Some(&dep(1, 1)),
            Some(CanaryObserved {
                deployment: None,
                weight: 0,
            }),
            None,
            &[],
            "t2",
        );
        assert_eq!(absent.canary.unwrap().ready_replicas, 0);
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let mut p = pgw(PushGatewaySpec::default());
        p.status = Some(compute(&p, Some(&dep(1, 1)), None, None, &[], "t0"));
        let again = compute(&p, Some(&dep(1, 1)), None, None, &[], "t1");
        assert_eq!(Some(&again), p.status.as_ref());
        let flipped = compute(&p, Some(&dep(1, 0)), None, None, &[], "t2");
        assert_eq!(get(&flipped, "Ready").last_transition_time, "t2");
    }

    #[test]
    fn a_pod_that_cannot_pull_its_image_is_the_failure() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
        };
        let pod = |name: &str, reason: &str| Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "gateway".into(),
                    image: "ghcr.io/pushgate/nope:1".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("pull access denied".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            stuck_pod(&[pod("a", "ContainerCreating")]).is_none(),
            "that passes"
        );
        let f = stuck_pod(&[pod("a", "ContainerCreating"), pod("b", "ImagePullBackOff")]).unwrap();
        assert_eq!(f.reason, "ImagePullBackOff");
        assert_eq!(
            f.message,
            "pod b container gateway (ghcr.io/pushgate/nope:1): pull access denied"
        );
    }
}
