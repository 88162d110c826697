//! Canary by trace-id hash, end to end on loopback: the real control plane,
//! the operator process, a real Redis and two real `pushgate` processes (one
//! per track) started from the configs the operator wrote, each watching the
//! operator's routing-table ConfigMap as the ServiceAccount the operator
//! created for the pods (so its least-privilege Role is exercised too).
//! `kubectl patch` moves the weight 0 → 30 → 100 → 0: after every step each
//! process serves exactly the streams the hash assigns to its track, only
//! the moved subscribers reconnected, and in the end every subscriber got
//! every event exactly once, in order. Removing `spec.canary` then deletes
//! the canary objects without touching the stable track.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, ResourceExt};
use operator::crd::PushGateway;
use pushgate::routing::RoutingTable;
use pushgate::routing::{bucket, track_of, Track};
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::gateway::GatewayProcess;
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::subscriber::{Ticker, TracedFleet};
use pushgate_e2e::wait::wait_until;

const WAIT: Duration = Duration::from_secs(30);
/// Subscribers, each with its own trace id.
const N: usize = 1000;

fn table_of(cm: &ConfigMap) -> RoutingTable {
    let yaml = &cm.data.as_ref().unwrap()["routing.yaml"];
    RoutingTable::from_yaml(yaml).unwrap_or_else(|e| panic!("gateway rejects {yaml:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_weight_patches_move_exactly_the_hashed_streams_with_zero_loss() {
    let started = Instant::now();
    // 1,000 subscribers plus their reconnects need more descriptors than a
    // common soft limit of 1024: the hard limit, as the gateway takes.
    pushgate::ops::nofile::raise_nofile_limit().unwrap();
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("canary").unwrap();
    let op = OperatorProcess::start(cp, &OperatorOptions::new(&ns, "canary-op")).unwrap();
    let redis = RedisServer::start().unwrap();
    cp.secret(&ns, "gw-redis", "url", &redis.url()).unwrap();
    // Delivery and limit settings travel through the rendered config; the
    // 200ms retry keeps moved subscribers' reconnects quick.
    let doc = format!(
        "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n\
         \x20 image: pushgate:stable\n\
         \x20 store: {{redis: {{secretRef: {{name: gw-redis}}}}}}\n\
         \x20 delivery: {{retry: 200ms}}\n\
         \x20 limits: {{acceptRate: 100000}}\n\
         \x20 canary: {{image: pushgate:canary, weight: 0}}\n"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc).unwrap();

    let client = cp.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pgws: Api<PushGateway> = Api::namespaced(client.clone(), &ns);

    // What the operator wrote: one config per track and the routing table.
    let stable_cm = op.object(&cms, "gw-config").await;
    let canary_cm = op.object(&cms, "gw-canary-config").await;
    let table = table_of(&op.object(&cms, "gw-routing").await);
    assert_eq!(table.weight_bp, 0);
    let salt = table.salt.clone();
    let pgw = pgws.get("gw").await.unwrap();
    assert_eq!(Some(&salt), pgw.uid().as_ref(), "default salt is the uid");
    let canary_dep = op.object(&deps, "gw-canary").await;
    let image = canary_dep.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("pushgate:canary"));
    let sel = op.object(&svcs, "gw").await.spec.unwrap().selector.unwrap();
    assert!(!sel.contains_key("pushgate.dev/track"), "{sel:?}");

    // The pods' identity, exactly as the pods would hold it.
    let sa_kubeconfig = cp.service_account_kubeconfig(&ns, "gw-gateway").unwrap();
    let denied = cp
        .kubectl_output(&[
            "--kubeconfig",
            &sa_kubeconfig.display().to_string(),
            "get",
            "configmap",
            "gw-config",
            "-n",
            &ns,
        ])
        .unwrap();
    assert!(
        !denied.status.success(),
        "the gateway identity reads more than its routing table"
    );

    // The peer token the operator generated, as the pods mount it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = op.object(&secrets, "gw-peer").await;
    let token = secret.data.as_ref().unwrap()["token"].0.clone();
    assert_eq!(token.len(), 64, "a 32-byte random token in hex");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("peer-token");
    std::fs::write(&token_file, &token).unwrap();
    let (a_stable, a_canary) = (
        GatewayProcess::free_addr().unwrap(),
        GatewayProcess::free_addr().unwrap(),
    );
    let start = |track: &str, cm: &ConfigMap, addr, peer| {
        let path = dir.path().join(format!("{track}.yaml"));
        let text = &cm.data.as_ref().unwrap()["pushgate.yaml"];
        let parsed = pushgate::config::Config::from_yaml(text).unwrap();
        assert_eq!(parsed.routing.track.as_str(), track, "{text}");
        assert_eq!(
            parsed.routing.configmap,
            Some(format!("{ns}/gw-routing")),
            "{text}"
        );
        std::fs::write(&path, text).unwrap();
        let peer = format!("http://{peer}");
        let store = redis.url();
        // Loopback stand-ins for the pod's addresses, the peer Service and
        // the Redis Secret; everything else is the operator's config.
        let args = [
            "--config",
            path.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--peer-url",
            &peer,
            "--store",
            &store,
            "--peer-token-file",
            token_file.to_str().unwrap(),
        ];
        let kc = sa_kubeconfig.to_str().unwrap();
        GatewayProcess::start_on_with_env(track, addr, &args, &[("KUBECONFIG", kc)]).unwrap()
    };
    let stable = start("stable", &stable_cm, a_stable, a_canary);
    let canary = start("canary", &canary_cm, a_canary, a_stable);

    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let fleet = TracedFleet::spawn(&c, &[stable.url(""), canary.url("")], "canary", N);
    let buckets: Vec<u16> = fleet.traces.iter().map(|t| bucket(&salt, t)).collect();
    let publisher = Ticker::start(&c, stable.url(""), "canary", Duration::from_millis(40));
    fleet.wait_connected_once(WAIT).await.unwrap();

    let mut previous = 0i32;
    for weight in [0i32, 30, 100, 0] {
        let step = Instant::now();
        let before = fleet.connections();
        cp.kubectl(&[
            "patch",
            "pgw",
            "gw",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            &format!("{{\"spec\":{{\"canary\":{{\"weight\":{weight}}}}}}}"),
        ])
        .unwrap();
        let bp = (weight * 100) as u16;
        let want_canary = buckets
            .iter()
            .filter(|b| track_of(**b, bp) == Track::Canary)
            .count();
        // The operator's salt splits like any other: 1,000 random ids land
        // within 6 points of the weight (over 4 standard deviations at 30%).
        let share = want_canary as f64 * 100.0 / N as f64;
        assert!(
            (share - f64::from(weight)).abs() <= 6.0,
            "weight {weight}%: the hash gives the canary {share:.1}%"
        );
        wait_until(
            &format!("weight {weight}%: exactly {want_canary} canary streams"),
            WAIT,
            || async {
                let (s, k) = (
                    stable.streams_on_track("stable").await,
                    canary.streams_on_track("canary").await,
                );
                if s == N - want_canary && k == want_canary {
                    Ok(())
                } else {
                    Err(format!("stable {s} canary {k}"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
        // Every moved subscriber has reconnected on its new track: the
        // closings of this change are over, so one closed without moving
        // would show now.
        let from = (previous * 100) as u16;
        fleet
            .wait_moved(&buckets, &before, from, bp, WAIT)
            .await
            .unwrap();
        fleet.assert_moved_exactly(&buckets, &before, from, bp);
        let moved_count = buckets
            .iter()
            .filter(|b| track_of(**b, from) != track_of(**b, bp))
            .count();
        let st = pgws.get("gw").await.unwrap().status.unwrap_or_default();
        assert_eq!(st.canary.map(|c| c.weight), Some(weight));
        eprintln!(
            "weight {weight}%: {want_canary} canary, {moved_count} moved, {:?}",
            step.elapsed()
        );
        previous = weight;
    }

    let sent = publisher.finish(&c, &stable.url(""), "canary").await;
    fleet.finish(&sent).await;

    // Removing the canary deletes its objects; the stable track's config
    // (hence its pods) stays exactly as it was.
    let stable_rv = cms.get("gw-config").await.unwrap().resource_version();
    cp.kubectl(&[
        "patch",
        "pgw",
        "gw",
        "-n",
        &ns,
        "--type",
        "json",
        "-p",
        "[{\"op\":\"remove\",\"path\":\"/spec/canary\"}]",
    ])
    .unwrap();
    wait_until("canary objects deleted", WAIT, || async {
        let left = [
            deps.get_opt("gw-canary").await.ok().flatten().is_some(),
            svcs.get_opt("gw-canary").await.ok().flatten().is_some(),
            svcs.get_opt("gw-stable").await.ok().flatten().is_some(),
            cms.get_opt("gw-canary-config")
                .await
                .ok()
                .flatten()
                .is_some(),
        ];
        let st = pgws.get("gw").await.map_err(|e| e.to_string())?.status;
        let status_clean = st.as_ref().is_some_and(|s| {
            s.canary.is_none() && s.conditions.iter().all(|c| c.type_ != "CanaryReady")
        });
        if left == [false; 4] && status_clean {
            Ok(())
        } else {
            Err(format!("still present: {left:?}, status {st:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
    assert_eq!(table_of(&cms.get("gw-routing").await.unwrap()).weight_bp, 0);
    assert_eq!(
        cms.get("gw-config").await.unwrap().resource_version(),
        stable_rv
    );
    eprintln!("total {:?}", started.elapsed());
}
