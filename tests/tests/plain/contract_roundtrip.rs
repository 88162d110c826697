//! The operator renders the gateway's config with the gateway's own types
//! (the contract crate); this checks the other half: for many generated
//! PushGateway specs, every config and routing table the operator writes is
//! accepted by the gateway's parser and validation, and says what the spec
//! asked for. The file and the pod's variables together go through the real
//! binary's loader (`pushgate config`), as in a pod.

use std::time::Duration;

use operator::build::{self, routing, Track};
use operator::crd::{PushGateway, PushGatewaySpec};
use proptest::prelude::*;
use pushgate::config::Config;
use pushgate::routing::RoutingTable;

fn duration() -> impl Strategy<Value = (String, Duration)> {
    prop_oneof![
        (1u64..3600).prop_map(|s| (format!("{s}s"), Duration::from_secs(s))),
        (1u64..10_000).prop_map(|ms| (format!("{ms}ms"), Duration::from_millis(ms))),
        (1u64..120).prop_map(|m| (format!("{m}m"), Duration::from_secs(m * 60))),
    ]
}

/// A spec as users write it, with every rendered field optional.
fn spec() -> impl Strategy<Value = (serde_json::Value, Option<Duration>, Option<u32>)> {
    (
        any::<bool>(),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
        proptest::option::of(1u32..100_000),
        proptest::option::of(1u64..1_000_000),
        proptest::option::of((1u32..200_000, 1u32..50_000)),
        proptest::option::of((
            0i32..=100,
            "[a-z0-9]{0,12}",
            proptest::option::of("X-[A-Za-z]{1,10}"),
        )),
        proptest::option::of((
            prop_oneof![Just("hs256"), Just("rs256"), Just("es256")],
            0..3usize,
            any::<bool>(),
        )),
    )
        .prop_map(
            |(redis, drain, heartbeat, queue, max_events, limits, canary, auth)| {
                let mut v = serde_json::json!({});
                if redis {
                    v["store"] = serde_json::json!({"redis": {"secretRef": {"name": "r"}}});
                }
                let mut delivery = serde_json::json!({});
                if let Some((t, _)) = &drain {
                    delivery["drainWindow"] = t.clone().into();
                }
                if let Some((t, _)) = &heartbeat {
                    delivery["heartbeat"] = t.clone().into();
                }
                if let Some(q) = queue {
                    delivery["queueSize"] = q.into();
                }
                v["delivery"] = delivery;
                if let Some(n) = max_events {
                    v["retention"] = serde_json::json!({"maxEvents": n});
                }
                if let Some((conns, rate)) = limits {
                    v["limits"] = serde_json::json!({"maxConnections": conns, "acceptRate": rate});
                }
                if let (true, Some((weight, salt, header))) = (redis, canary) {
                    let mut hash = serde_json::json!({"salt": salt});
                    if let Some(h) = header {
                        hash["header"] = h.into();
                    }
                    v["canary"] =
                        serde_json::json!({"image": "gw:2", "weight": weight, "hash": hash});
                }
                if let Some((a, keys, devices)) = auth {
                    // One key, a key set, or (with devices) client certificates alone.
                    v["auth"] = match keys {
                        0 => serde_json::json!({"keySecretRef": {"name": "k"}, "algorithm": a}),
                        1 => serde_json::json!({"keysSecretRef": {"name": "ks"}, "algorithm": a}),
                        _ => serde_json::json!({}),
                    };
                    if devices || keys == 2 {
                        v["auth"]["certificateGrants"] = serde_json::json!([
                            {"identity": "sensor-*", "subscribe": ["devices/{identity}/**"]}
                        ]);
                        if v.get("canary").is_none_or(|c| c.is_null()) {
                            v["tls"] = serde_json::json!({"secretName": "c", "clientCA": {"secretName": "ca"}});
                        }
                    }
                    if v["auth"].as_object().is_some_and(|o| o.is_empty())
                        || (v["auth"].get("certificateGrants").is_some() && v.get("tls").is_none())
                    {
                        v.as_object_mut().unwrap().remove("auth");
                    }
                }
                (v, drain.map(|d| d.1), queue)
            },
        )
}

fn pgw(spec: serde_json::Value) -> PushGateway {
    let spec: PushGatewaySpec = serde_json::from_value(spec).expect("a valid spec");
    let mut p = PushGateway::new("gw", spec);
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some("uid-7".into());
    p
}

/// What the real binary makes of `yaml` plus the container's literal variables.
fn load_in_pod(yaml: &str, pod_env: &[(String, String)]) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgate.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(pushgate_e2e::gateway::binary())
        .arg("config")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .envs(pod_env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run pushgate config");
    assert!(
        out.status.success(),
        "the gateway refuses {yaml:?} with {pod_env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Config::from_yaml(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// The variables of a Deployment's gateway container that have literal values.
fn literal_env(d: &k8s_openapi::api::apps::v1::Deployment) -> Vec<(String, String)> {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Next to this module, by path (see resume_property).
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plain/contract_roundtrip.proptest-regressions"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_rendered_config_is_what_the_gateway_accepts((spec, drain, queue) in spec()) {
        let p = pgw(spec);
        let d = build::desired(&p).expect("renders");
        let mut pods = vec![(Track::Stable, &d.config_map, &d.deployment)];
        if let Some(c) = &d.canary {
            pods.push((Track::Canary, &c.config_map, &c.deployment));
        }
        let auth = p.spec.auth.as_ref();
        for (track, cm, deployment) in pods {
            let c = load_in_pod(
                &cm.data.as_ref().unwrap()[pushgate_contract::names::CONFIG_KEY],
                &literal_env(deployment),
            );
            prop_assert_eq!(c.delivery.drain_window, drain.unwrap_or(Duration::from_secs(20)));
            prop_assert_eq!(c.delivery.queue_size, queue.map_or(1024, |q| q as usize));
            prop_assert_eq!(c.metrics_listen.map(|a| a.port()), Some(pushgate_contract::names::METRICS_PORT));
            if routing::enabled(&p) {
                prop_assert_eq!(c.routing.track, track);
                prop_assert!(c.routing.peer_url.is_some() && c.routing.peer_token_file.is_some());
            }
            prop_assert_eq!(c.auth.key_file.is_some(), auth.is_some_and(|a| a.key_secret_ref.is_some()));
            prop_assert_eq!(c.auth.key_dir.is_some(), auth.is_some_and(|a| a.keys_secret_ref.is_some()));
            prop_assert_eq!(
                c.auth.certificate_grants.len(),
                auth.and_then(|a| a.certificate_grants.as_ref()).map_or(0, Vec::len)
            );
            prop_assert_eq!(
                c.tls.client_ca_file.is_some(),
                p.spec.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
            );
        }
        for w in [0, 37, 100] {
            let t = routing::table(&p, w).expect("table");
            let yaml = &t.data.unwrap()[pushgate_contract::names::ROUTING_KEY];
            let parsed = RoutingTable::from_yaml(yaml)
                .unwrap_or_else(|e| panic!("gateway rejects table {yaml:?}: {e}"));
            prop_assert_eq!(parsed.weight_bp, (w * 100) as u16);
        }
    }
}
