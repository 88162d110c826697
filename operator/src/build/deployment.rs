//! The Deployment of each track (stable, and canary while `spec.canary` is set).

use super::{
    config_name_for, fnv1a, meta, pvc_name, routing, track_image, track_labels, track_name, Track,
    CONFIG_HASH_ANNOTATION,
};
use crate::config::{self, SpecError, API_PORT, CONFIG_DIR, CONFIG_KEY, DATA_DIR, METRICS_PORT};
use crate::crd::PushGateway;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Distroless "nonroot" uid/gid of the gateway image.
const RUN_AS: i64 = 65532;
/// Extra seconds past the drain window before the kubelet sends SIGKILL.
const GRACE_MARGIN_SECS: i64 = 10;

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The API and metrics ports, and the API port on UDP for HTTP/3.
fn container_ports(pgw: &PushGateway) -> Vec<ContainerPort> {
    let port = |name: &str, port: u16, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let mut ports = vec![
        port("http", API_PORT, "TCP"),
        port("metrics", METRICS_PORT, "TCP"),
    ];
    if pgw.spec.http3_port().is_some() {
        ports.push(port("h3", API_PORT, "UDP"));
    }
    ports
}

fn container(pgw: &PushGateway, track: Track) -> Container {
    let spec = &pgw.spec;
    let redis = spec.store.as_ref().and_then(|s| s.redis.as_ref());
    let mut env = redis.map(|r| {
        vec![EnvVar {
            name: pushgate_contract::names::env::STORE.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.secret_ref.name.clone(),
                    key: r.secret_ref.key.clone().unwrap_or_else(|| "url".into()),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let extra = super::security::env(spec);
    if !extra.is_empty() {
        env.get_or_insert_with(Vec::new).extend(extra);
    }
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if spec.embedded_store() {
        mounts.push(mount("data", DATA_DIR, false));
    }
    mounts.extend(super::security::mounts(spec));
    if routing::enabled(pgw) {
        mounts.push(routing::peer_token_volume(pgw).1);
    }
    Container {
        name: "gateway".into(),
        image: Some(track_image(pgw, track)),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(container_ports(pgw)),
        env,
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn volumes(pgw: &PushGateway, track: Track) -> Vec<Volume> {
    let mut v = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_name_for(pgw, track),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    if pgw.spec.embedded_store() {
        v.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(pgw),
                read_only: Some(false),
            }),
            ..Default::default()
        });
    }
    v.extend(super::security::volumes(&pgw.spec));
    if routing::enabled(pgw) {
        v.push(routing::peer_token_volume(pgw).0);
    }
    v
}

/// The embedded store's RWO volume can only be mounted by one pod at a time,
/// hence `Recreate`. Otherwise `rollingUpdate` is spelled out rather than
/// left to defaults: owning it lets server-side apply drop it again when the
/// store switches to embedded (a defaulted `rollingUpdate` next to
/// `type: Recreate` is rejected by the apiserver).
fn strategy(embedded: bool) -> DeploymentStrategy {
    if embedded {
        return DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        // Surge first so serving capacity never drops during a rollout.
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// The stable track's Deployment.
pub fn deployment(pgw: &PushGateway, config_map: &ConfigMap) -> Result<Deployment, SpecError> {
    deployment_for(pgw, Track::Stable, config_map)
}

/// The Deployment running `track`'s gateway pods from `config_map`.
/// `spec.replicas` is left out when an HPA owns it, so the operator and the
/// HPA never fight over it. The canary runs as many replicas as the stable
/// track (or its own HPA with the same bounds).
pub fn deployment_for(
    pgw: &PushGateway,
    track: Track,
    config_map: &ConfigMap,
) -> Result<Deployment, SpecError> {
    let spec = &pgw.spec;
    let drain = config::drain_window(spec)?;
    let over = spec.pod_overrides.clone().unwrap_or_default();
    let config_text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .map(String::as_str)
        .unwrap_or_default();

    let mut pod_labels = over.labels.unwrap_or_default();
    pod_labels.extend(track_labels(pgw, track));
    let mut pod_annotations = over.annotations.unwrap_or_default();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.into(), fnv1a(config_text));

    let replicas = match spec.autoscaling {
        Some(_) => None,
        None => Some(spec.replicas.unwrap_or(1)),
    };
    let strategy = Some(strategy(spec.embedded_store()));
    let routing = routing::enabled(pgw);

    Ok(Deployment {
        metadata: meta(pgw, track_name(pgw, track)),
        spec: Some(DeploymentSpec {
            replicas,
            strategy,
            selector: LabelSelector {
                match_labels: Some(track_labels(pgw, track)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(pgw, track)],
                    volumes: Some(volumes(pgw, track)),
                    termination_grace_period_seconds: Some(
                        drain.as_secs() as i64 + GRACE_MARGIN_SECS,
                    ),
                    enable_service_links: Some(false),
                    // The API token is mounted only where the pod needs it:
                    // to watch the routing table, as an identity that can
                    // read nothing else.
                    service_account_name: routing.then(|| routing::identity_name(pgw)),
                    automount_service_account_token: Some(routing),
                    node_selector: over.node_selector,
                    tolerations: over.tolerations,
                    priority_class_name: over.priority_class_name,
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        sysctls: over.sysctls,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{config_map, desired};
    use super::container_ports;
    use crate::crd::PushGatewaySpec;

    fn pod(spec: PushGatewaySpec) -> k8s_openapi::api::core::v1::PodSpec {
        let d = desired(&pgw(spec)).unwrap();
        d.deployment.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn http3_adds_the_api_port_on_udp() {
        let spec: PushGatewaySpec = serde_json::from_value(serde_json::json!({
            "tls": {"secretName": "cert"},
            "protocols": {"http3": {"enabled": true}}
        }))
        .unwrap();
        let ports: Vec<_> = container_ports(&pgw(spec))
            .into_iter()
            .map(|p| (p.name.unwrap(), p.container_port, p.protocol.unwrap()))
            .collect();
        let want = [
            ("http", 8080, "TCP"),
            ("metrics", 9090, "TCP"),
            ("h3", 8080, "UDP"),
        ]
        .map(|(n, p, pr)| (n.to_string(), p, pr.to_string()));
        assert_eq!(ports, want);
        let plain = container_ports(&pgw(Default::default()));
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn probes_hit_readyz_and_healthz_on_metrics_port() {
        let c = &pod(PushGatewaySpec::default()).containers[0];
        let r = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let l = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(r.path.as_deref(), Some("/readyz"));
        assert_eq!(l.path.as_deref(), Some("/healthz"));
        let metrics = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some("metrics"));
        assert_eq!(metrics.unwrap().container_port, 9090);
        assert_eq!(format!("{:?}", r.port), "String(\"metrics\")");
    }

    #[test]
    fn security_context_is_restricted() {
        let p = pod(PushGatewaySpec::default());
        let sc = p.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        let psc = p.security_context.unwrap();
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(psc.run_as_non_root, Some(true));
    }

    #[test]
    fn grace_period_exceeds_drain_window() {
        assert_eq!(
            pod(PushGatewaySpec::default()).termination_grace_period_seconds,
            Some(30)
        );
        let spec: PushGatewaySpec =
            serde_json::from_value(serde_json::json!({"delivery": {"drainWindow": "1m"}})).unwrap();
        assert_eq!(pod(spec).termination_grace_period_seconds, Some(70));
    }

    #[test]
    fn replicas_left_to_hpa_when_autoscaling() {
        let mut spec = redis_spec();
        spec.replicas = Some(3);
        let d = desired(&pgw(spec.clone())).unwrap().deployment;
        assert_eq!(d.spec.unwrap().replicas, Some(3));
        spec.autoscaling =
            serde_json::from_value(serde_json::json!({"minReplicas": 2, "maxReplicas": 5}))
                .unwrap();
        let d = desired(&pgw(spec)).unwrap().deployment;
        assert_eq!(d.spec.unwrap().replicas, None);
    }

    #[test]
    fn redis_url_comes_from_secret_not_configmap() {
        let p = pod(redis_spec());
        let env = &p.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "PUSHGATE_STORE");
        let sel = env
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("redis-url", "url"));
        assert!(p
            .volumes
            .unwrap()
            .iter()
            .all(|v| v.persistent_volume_claim.is_none()));
    }

    #[test]
    fn strategy_follows_store() {
        let embedded = desired(&pgw(PushGatewaySpec::default()))
            .unwrap()
            .deployment;
        let s = embedded.spec.unwrap().strategy.unwrap();
        assert_eq!(
            (s.type_.as_deref(), s.rolling_update),
            (Some("Recreate"), None)
        );
        let redis = desired(&pgw(redis_spec())).unwrap().deployment;
        let s = redis.spec.unwrap().strategy.unwrap();
        assert_eq!(s.type_.as_deref(), Some("RollingUpdate"));
        assert!(s.rolling_update.is_some());
    }

    #[test]
    fn sysctls_and_resources_pass_through() {
        let spec: PushGatewaySpec = serde_json::from_value(serde_json::json!({
            "resources": {"limits": {"memory": "256Mi"}},
            "podOverrides": {"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}]}
        }))
        .unwrap();
        let p = pod(spec);
        let limits = p.containers[0].resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["memory"].0, "256Mi");
        let sysctls = p.security_context.unwrap().sysctls.unwrap();
        assert_eq!(sysctls[0].name, "net.ipv4.ip_local_port_range");
    }

    fn canary_pgw() -> crate::crd::PushGateway {
        pgw(serde_json::from_value(serde_json::json!({
            "image": "gw:1",
            "replicas": 3,
            "store": {"redis": {"secretRef": {"name": "redis-url"}}},
            "limits": {"maxBatch": 5},
            "canary": {"image": "gw:2", "weight": 30}
        }))
        .unwrap())
    }

    #[test]
    fn canary_deployment_differs_only_in_image_track_and_config() {
        use super::super::CONFIG_HASH_ANNOTATION;
        let d = desired(&canary_pgw()).unwrap();
        let c = d.canary.expect("canary objects while spec.canary is set");
        let (s, k) = (d.deployment, c.deployment);
        assert_eq!(k.metadata.name.as_deref(), Some("demo-canary"));
        let (ss, ks) = (s.spec.unwrap(), k.spec.unwrap());
        assert_eq!(ks.replicas, Some(3));
        let sel = ks.selector.match_labels.unwrap();
        assert_eq!(sel["pushgate.dev/track"], "canary");
        assert_eq!(
            ss.selector.match_labels.unwrap()["pushgate.dev/track"],
            "stable",
            "the stable selector never changes (it is immutable)"
        );
        let (sp, kp) = (ss.template.spec.unwrap(), ks.template.spec.unwrap());
        assert_eq!(sp.containers[0].image.as_deref(), Some("gw:1"));
        assert_eq!(kp.containers[0].image.as_deref(), Some("gw:2"));
        let cfg_vol = |p: &k8s_openapi::api::core::v1::PodSpec| {
            p.volumes.as_ref().unwrap()[0]
                .config_map
                .as_ref()
                .unwrap()
                .name
                .clone()
        };
        assert_eq!(
            (cfg_vol(&sp), cfg_vol(&kp)),
            ("demo-config".into(), "demo-canary-config".into())
        );
        // Same container otherwise: env (Redis URL), probes, security.
        let mut kc = kp.containers[0].clone();
        kc.image = sp.containers[0].image.clone();
        assert_eq!(kc, sp.containers[0]);
        for p in [&sp, &kp] {
            assert_eq!(p.service_account_name.as_deref(), Some("demo-gateway"));
            assert_eq!(p.automount_service_account_token, Some(true));
        }
        let ann = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| {
            t.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
        };
        assert_ne!(
            ann(ss.template.metadata),
            ann(ks.template.metadata),
            "each track rolls on its own config"
        );
    }

    #[test]
    fn track_configs_route_to_each_other() {
        let d = desired(&canary_pgw()).unwrap();
        let stable = &d.config_map.data.as_ref().unwrap()["pushgate.yaml"];
        let canary = &d.canary.unwrap().config_map.data.unwrap()["pushgate.yaml"];
        assert!(stable.ends_with(
            "routing:\n  peer_url: http://demo-canary.ns1.svc\n  configmap: ns1/demo-routing\n  \
             peer_token_file: /var/run/secrets/pushgate/peer/token\n"
        ), "{stable}");
        assert!(canary.ends_with(
            "routing:\n  track: canary\n  peer_url: http://demo-stable.ns1.svc\n  configmap: ns1/demo-routing\n  \
             peer_token_file: /var/run/secrets/pushgate/peer/token\n"
        ), "{canary}");
        // Everything before the routing section is the same.
        let head = |y: &str| y.split("routing:").next().unwrap().to_owned();
        assert_eq!(head(stable), head(canary));
    }

    #[test]
    fn stable_pods_are_untouched_by_adding_or_removing_the_canary() {
        let with = desired(&canary_pgw()).unwrap();
        let mut p = canary_pgw();
        p.spec.canary = None;
        let without = desired(&p).unwrap();
        assert!(without.canary.is_none());
        assert_eq!(with.deployment, without.deployment);
        assert_eq!(with.config_map, without.config_map);
        assert!(without.routing.is_some(), "the routing identity stays");
    }

    #[test]
    fn canary_gets_its_own_hpa_and_embedded_store_no_routing() {
        let mut p = canary_pgw();
        p.spec.autoscaling =
            serde_json::from_value(serde_json::json!({"minReplicas": 2, "maxReplicas": 5}))
                .unwrap();
        let c = desired(&p).unwrap().canary.unwrap();
        assert_eq!(c.deployment.spec.unwrap().replicas, None);
        let h = c.hpa.unwrap();
        assert_eq!(h.metadata.name.as_deref(), Some("demo-canary"));
        assert_eq!(h.spec.unwrap().scale_target_ref.name, "demo-canary");

        let e = desired(&pgw(PushGatewaySpec::default())).unwrap();
        assert!(e.routing.is_none());
        let pod = e.deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
        assert!(!e.config_map.data.unwrap()["pushgate.yaml"].contains("routing"));
    }

    #[test]
    fn config_change_changes_pod_template_hash() {
        let a = pgw(PushGatewaySpec::default());
        let b =
            pgw(serde_json::from_value(serde_json::json!({"limits": {"maxBatch": 5}})).unwrap());
        let hash = |p: &crate::crd::PushGateway| {
            let cm = config_map(p).unwrap();
            let d = super::deployment(p, &cm).unwrap();
            d.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[super::CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a.clone()));
    }
}
