//! ConfigMap, Service, PodDisruptionBudget, PVC and HPA.

use super::{
    config_name_for, instance_labels, meta, pvc_name, routing, selector_labels, track_name, Track,
};
use crate::config::{self, SpecError, CONFIG_KEY, METRICS_PORT};
use crate::crd::PushGateway;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, Service, ServicePort, ServiceSpec,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The ConfigMap with the stable track's rendered `pushgate.yaml`.
pub fn config_map(pgw: &PushGateway) -> Result<ConfigMap, SpecError> {
    config_map_for(pgw, Track::Stable)
}

/// The ConfigMap with `track`'s rendered `pushgate.yaml`: the same settings
/// for both tracks except the `routing` section (own track, other's Service).
pub fn config_map_for(pgw: &PushGateway, track: Track) -> Result<ConfigMap, SpecError> {
    let routing = routing::gateway_config(pgw, track);
    Ok(ConfigMap {
        metadata: meta(pgw, config_name_for(pgw, track)),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            config::render_with(&pgw.spec, routing)?,
        )])),
        ..Default::default()
    })
}

/// One Service for the API (named port `http`) and metrics (`metrics`),
/// in front of the pods of both tracks.
pub fn service(pgw: &PushGateway) -> Service {
    let s = pgw.spec.service.clone().unwrap_or_default();
    let mut metadata = meta(pgw, pgw.name_any());
    metadata.annotations = s.annotations;
    let port = |name: &str, port: i32, target: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let mut ports = vec![
        port("http", pgw.spec.service_port(), "http", "TCP"),
        port("metrics", i32::from(METRICS_PORT), "metrics", "TCP"),
    ];
    // gRPC rides the API port of the pods (HTTP/2): its own Service port
    // is for clients that expect one.
    if let Some(p) = pgw.spec.grpc_port() {
        ports.push(port("grpc", p, "http", "TCP"));
    }
    if let Some(p) = pgw.spec.http3_port() {
        ports.push(port("h3", i32::from(p), "h3", "UDP"));
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(s.type_.unwrap_or_else(|| "ClusterIP".into())),
            selector: Some(instance_labels(pgw)),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one gateway pod voluntarily down at a time.
pub fn pdb(pgw: &PushGateway) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(pgw, pgw.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pgw)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The embedded store's claim; `None` with a Redis store.
pub fn pvc(pgw: &PushGateway) -> Option<PersistentVolumeClaim> {
    if !pgw.spec.embedded_store() {
        return None;
    }
    let e = pgw.spec.embedded_settings();
    Some(PersistentVolumeClaim {
        metadata: meta(pgw, pvc_name(pgw)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: e.storage_class,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    e.size.unwrap_or_else(|| Quantity("1Gi".into())),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn pods_metric(name: &str, average: Quantity) -> MetricSpec {
    MetricSpec {
        type_: "Pods".into(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: name.into(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".into(),
                average_value: Some(average),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// autoscaling/v2 HPA of the stable track.
pub fn hpa(pgw: &PushGateway) -> Option<HorizontalPodAutoscaler> {
    hpa_for(pgw, Track::Stable)
}

/// autoscaling/v2 HPA of `track`'s Deployment on the gateway's own load
/// metrics plus memory. Each track scales on its own load (the canary's is
/// its share of the streams), with the same bounds.
pub fn hpa_for(pgw: &PushGateway, track: Track) -> Option<HorizontalPodAutoscaler> {
    // With KEDA its ScaledObject makes the HPA: never both.
    let a = pgw.spec.autoscaling.clone().filter(|a| !a.keda())?;
    let q = |v: Option<Quantity>, d: &str| v.unwrap_or_else(|| Quantity(d.into()));
    Some(HorizontalPodAutoscaler {
        metadata: meta(pgw, track_name(pgw, track)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: track_name(pgw, track),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(
                // Connections first: `kubectl get hpa` shows the first two
                // metrics, and they are what moves an IoT fleet's tier.
                [
                    pods_metric(
                        "pushgate_connections",
                        q(a.target_connections_per_pod.clone(), "5k"),
                    ),
                    pods_metric(
                        "pushgate_subscriber_lag_events",
                        q(a.target_subscriber_lag.clone(), "100"),
                    ),
                    pods_metric(
                        "pushgate_event_loop_lag_seconds",
                        q(a.target_event_loop_lag.clone(), "50m"),
                    ),
                ]
                .into_iter()
                .chain(a.memory_target().map(|percent| MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "memory".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(percent),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }))
                .collect(),
            ),
            behavior: a.behavior,
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::crd::PushGatewaySpec;

    #[test]
    fn hpa_has_gateway_metrics_memory_and_behavior() {
        let mut spec = redis_spec();
        spec.autoscaling = serde_json::from_value(serde_json::json!({
            "minReplicas": 2, "maxReplicas": 7, "targetConnectionsPerPod": "2000",
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}}
        }))
        .unwrap();
        let h = hpa(&pgw(spec)).unwrap().spec.unwrap();
        assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 7));
        assert_eq!(h.scale_target_ref.kind, "Deployment");
        let m = h.metrics.unwrap();
        let pods: Vec<_> = m.iter().filter_map(|m| m.pods.as_ref()).collect();
        let names: Vec<_> = pods.iter().map(|p| p.metric.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "pushgate_connections",
                "pushgate_subscriber_lag_events",
                "pushgate_event_loop_lag_seconds"
            ]
        );
        assert_eq!(pods[0].target.average_value.as_ref().unwrap().0, "2000");
        let mem = m.iter().find_map(|m| m.resource.as_ref()).unwrap();
        assert_eq!(
            (mem.name.as_str(), mem.target.average_utilization),
            ("memory", Some(80))
        );
        let sd = h.behavior.unwrap().scale_down.unwrap();
        assert_eq!(sd.stabilization_window_seconds, Some(120));
        let mut lean = redis_spec();
        lean.autoscaling = serde_json::from_value(serde_json::json!({
            "minReplicas": 1, "maxReplicas": 3, "targetMemoryUtilization": 0
        }))
        .unwrap();
        let m = hpa(&pgw(lean)).unwrap().spec.unwrap().metrics.unwrap();
        assert_eq!(m.len(), 3, "0 leaves memory out");
        assert!(m.iter().all(|m| m.resource.is_none()));
    }

    #[test]
    fn pvc_only_for_embedded_store() {
        let spec: PushGatewaySpec = serde_json::from_value(serde_json::json!({
            "store": {"embedded": {"size": "5Gi", "storageClass": "fast"}}
        }))
        .unwrap();
        let p = pvc(&pgw(spec)).unwrap().spec.unwrap();
        assert_eq!(p.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(p.resources.unwrap().requests.unwrap()["storage"].0, "5Gi");
        assert!(pvc(&pgw(redis_spec())).is_none());
    }

    #[test]
    fn service_exposes_http_and_metrics() {
        let s = service(&pgw(PushGatewaySpec::default())).spec.unwrap();
        let ports: Vec<_> = s
            .ports
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [("http".to_string(), 80), ("metrics".to_string(), 9090)]
        );
        // Clients reach the pods of both tracks through it.
        let sel = s.selector.unwrap();
        assert_eq!(sel["app.kubernetes.io/instance"], "demo");
        assert!(!sel.contains_key("pushgate.dev/track"), "{sel:?}");
    }

    #[test]
    fn protocols_add_a_grpc_port_and_a_udp_port_for_http3() {
        let spec: PushGatewaySpec = serde_json::from_value(serde_json::json!({
            "service": {"port": 443},
            "tls": {"secretName": "cert"},
            "protocols": {"grpc": {"enabled": true}, "http3": {"enabled": true}}
        }))
        .unwrap();
        let gw = pgw(spec);
        let ports: Vec<_> = service(&gw)
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| {
                let target = match p.target_port.unwrap() {
                    IntOrString::String(s) => s,
                    IntOrString::Int(i) => i.to_string(),
                };
                (p.name.unwrap(), p.port, target, p.protocol.unwrap())
            })
            .collect();
        let want = [
            ("http", 443, "http", "TCP"),
            ("metrics", 9090, "metrics", "TCP"),
            ("grpc", 9000, "http", "TCP"),
            ("h3", 443, "h3", "UDP"),
        ]
        .map(|(n, p, t, pr)| (n.to_string(), p, t.to_string(), pr.to_string()));
        assert_eq!(ports, want);
        // The pods serve both; Alt-Svc names the Service's UDP port.
        let c = config::gateway_config(&gw.spec, None).unwrap();
        assert!(c.protocols.grpc.enabled);
        assert!(c.protocols.http3.enabled);
        assert_eq!(c.protocols.http3.advertise_port, Some(443));
        let off = config::gateway_config(&PushGatewaySpec::default(), None).unwrap();
        assert_eq!(off.protocols, Default::default());
    }
}
