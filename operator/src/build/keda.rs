//! `autoscaling.engine: keda`: a KEDA ScaledObject per track instead of an
//! HPA, with one Prometheus trigger per load signal the HPA would use. KEDA
//! turns it into an HPA of its own (`keda-hpa-<name>`).

use super::{meta, track_name, Track};
use crate::config::SpecError;
use crate::crd::PushGateway;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The part of KEDA's `keda.sh/v1alpha1` ScaledObject the operator writes
/// (the API server checks it against KEDA's own CRD schema).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    /// The Deployment it scales.
    pub scale_target_ref: ScaleTarget,
    /// Lower bound of replicas.
    pub min_replica_count: i32,
    /// Upper bound of replicas.
    pub max_replica_count: i32,
    /// The HPA behaviour KEDA passes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    /// What it scales on.
    pub triggers: Vec<Trigger>,
}

/// `scaleTargetRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// The track's Deployment.
    pub name: String,
}

/// `advanced`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    /// `horizontalPodAutoscalerConfig`.
    pub horizontal_pod_autoscaler_config: HpaConfig,
}

/// `advanced.horizontalPodAutoscalerConfig`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HpaConfig {
    /// `spec.autoscaling.behavior`, as given.
    pub behavior: HorizontalPodAutoscalerBehavior,
}

/// One trigger.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// `prometheus` or `memory`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Names the trigger in KEDA's HPA metrics.
    pub name: String,
    /// `AverageValue` (the total divided by the replicas) or `Utilization`.
    pub metric_type: String,
    /// The scaler's settings.
    pub metadata: BTreeMap<String, String>,
}

/// Decimal value of a Kubernetes quantity (`50m`, `5k`, `100`, `1e3`, `2Ki`).
fn number(field: &'static str, q: &Quantity) -> Result<f64, SpecError> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let scale = match suffix {
        "" => Some(1.0),
        "n" => Some(1e-9),
        "u" => Some(1e-6),
        "m" => Some(1e-3),
        "k" => Some(1e3),
        "M" => Some(1e6),
        "G" => Some(1e9),
        "T" => Some(1e12),
        "Ki" => Some(1024.0),
        "Mi" => Some(1024.0 * 1024.0),
        "Gi" => Some(1024.0 * 1024.0 * 1024.0),
        e if e.starts_with(['e', 'E']) => e[1..].parse::<i32>().ok().map(|x| 10f64.powi(x)),
        _ => None,
    };
    match (num.parse::<f64>(), scale) {
        (Ok(n), Some(k)) if n * k > 0.0 => Ok(n * k),
        _ => Err(SpecError {
            field,
            message: format!("{s:?} is not a positive quantity like \"50m\", \"5k\" or \"100\""),
        }),
    }
}

/// The PromQL series selector of `track`'s pods: the labels the chart's
/// adapter rules use (`namespace`, `pod`). Pods of a Deployment are named
/// `<deployment>-<template hash>-<suffix>`, so the stable track's pattern
/// does not take in the canary's (`<name>-canary-…`).
fn pods_of(pgw: &PushGateway, track: Track) -> String {
    format!(
        "namespace=\"{}\",pod=~\"{}-[a-z0-9]+-[a-z0-9]+\"",
        pgw.namespace().unwrap_or_default(),
        track_name(pgw, track)
    )
}

/// The ScaledObject of `track`, when autoscaling is set with `engine: keda`.
pub fn scaled_object_for(
    pgw: &PushGateway,
    track: Track,
) -> Result<Option<ScaledObject>, SpecError> {
    let Some(a) = pgw.spec.autoscaling.clone().filter(|a| a.keda()) else {
        return Ok(None);
    };
    let Some(k) = &a.keda else {
        return Err(SpecError {
            field: "spec.autoscaling.keda.serverAddress",
            message: "engine keda needs the address of the Prometheus its triggers query".into(),
        });
    };
    let q = |v: Option<Quantity>, d: &str| v.unwrap_or_else(|| Quantity(d.into()));
    let signals = [
        (
            "connections",
            "pushgate_connections",
            "spec.autoscaling.targetConnectionsPerPod",
            q(a.target_connections_per_pod.clone(), "5k"),
        ),
        (
            "subscriber-lag",
            "pushgate_subscriber_lag_events",
            "spec.autoscaling.targetSubscriberLag",
            q(a.target_subscriber_lag.clone(), "100"),
        ),
        (
            "event-loop-lag",
            "pushgate_event_loop_lag_seconds",
            "spec.autoscaling.targetEventLoopLag",
            q(a.target_event_loop_lag.clone(), "50m"),
        ),
    ];
    let mut triggers = Vec::new();
    for (name, metric, field, target) in signals {
        // One element: the track's total, which KEDA's AverageValue divides
        // by the replicas, as the HPA averages a Pods metric.
        let query = format!("sum({metric}{{{}}})", pods_of(pgw, track));
        triggers.push(Trigger {
            type_: "prometheus".into(),
            name: name.into(),
            metric_type: "AverageValue".into(),
            metadata: BTreeMap::from([
                ("serverAddress".into(), k.server_address.clone()),
                ("query".into(), query),
                ("threshold".into(), number(field, &target)?.to_string()),
                // minReplicaCount is at least 1, so there is no scale from zero.
                ("activationThreshold".into(), "0".into()),
            ]),
        });
    }
    if let Some(percent) = a.memory_target() {
        triggers.push(Trigger {
            type_: "memory".into(),
            name: "memory".into(),
            metric_type: "Utilization".into(),
            metadata: BTreeMap::from([("value".into(), percent.to_string())]),
        });
    }
    let name = track_name(pgw, track);
    let mut so = ScaledObject::new(
        &name,
        ScaledObjectSpec {
            scale_target_ref: ScaleTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.clone(),
            },
            min_replica_count: a.min_replicas,
            max_replica_count: a.max_replicas,
            advanced: a.behavior.map(|behavior| Advanced {
                horizontal_pod_autoscaler_config: HpaConfig { behavior },
            }),
            triggers,
        },
    );
    so.metadata = meta(pgw, name);
    Ok(Some(so))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn keda(extra: serde_json::Value) -> PushGateway {
        let mut a = serde_json::json!({
            "minReplicas": 1, "maxReplicas": 3, "engine": "keda",
            "keda": {"serverAddress": "http://prom:9090"}
        });
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        pgw(serde_json::from_value(serde_json::json!({
            "store": {"redis": {"secretRef": {"name": "r"}}},
            "autoscaling": a
        }))
        .unwrap())
    }

    #[test]
    fn one_trigger_per_signal_with_the_tracks_total() {
        let p = keda(serde_json::json!({
            "targetConnectionsPerPod": "300",
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}
        }));
        let so = scaled_object_for(&p, Track::Stable).unwrap().unwrap();
        assert_eq!(so.name_any(), "demo");
        assert_eq!(
            (so.spec.min_replica_count, so.spec.max_replica_count),
            (1, 3)
        );
        let t = &so.spec.triggers;
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[0].metadata["query"],
            "sum(pushgate_connections{namespace=\"ns1\",pod=~\"demo-[a-z0-9]+-[a-z0-9]+\"})"
        );
        assert_eq!(t[0].metadata["threshold"], "300");
        assert_eq!(t[1].metadata["threshold"], "100");
        assert_eq!(t[2].metadata["threshold"], "0.05");
        assert_eq!(
            (t[3].type_.as_str(), t[3].metadata["value"].as_str()),
            ("memory", "80")
        );
        let behavior = &so
            .spec
            .advanced
            .unwrap()
            .horizontal_pod_autoscaler_config
            .behavior;
        assert_eq!(
            behavior
                .scale_down
                .as_ref()
                .unwrap()
                .stabilization_window_seconds,
            Some(30)
        );
        let canary = scaled_object_for(&p, Track::Canary).unwrap().unwrap();
        assert!(canary.spec.triggers[0].metadata["query"].contains("pod=~\"demo-canary-"));
    }

    #[test]
    fn quantities_and_missing_settings_are_spec_errors() {
        assert_eq!(number("f", &Quantity("5k".into())).unwrap(), 5000.0);
        assert_eq!(number("f", &Quantity("1e3".into())).unwrap(), 1000.0);
        assert_eq!(number("f", &Quantity("2Ki".into())).unwrap(), 2048.0);
        assert!(number("f", &Quantity("lots".into())).is_err());
        assert!(number("f", &Quantity("0".into())).is_err());
        let bad = keda(serde_json::json!({"targetSubscriberLag": "x"}));
        assert_eq!(
            scaled_object_for(&bad, Track::Stable).unwrap_err().field,
            "spec.autoscaling.targetSubscriberLag"
        );
        let mut none = keda(serde_json::json!({}));
        none.spec.autoscaling.as_mut().unwrap().keda = None;
        assert!(scaled_object_for(&none, Track::Stable).is_err());
        let lean = keda(serde_json::json!({"targetMemoryUtilization": 0}));
        let so = scaled_object_for(&lean, Track::Stable).unwrap().unwrap();
        assert!(
            so.spec.triggers.iter().all(|t| t.type_ != "memory"),
            "0 leaves memory out"
        );
        let hpa = keda(serde_json::json!({"engine": "hpa"}));
        assert!(scaled_object_for(&hpa, Track::Stable).unwrap().is_none());
    }
}
