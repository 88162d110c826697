//! Scenarios 2–5 against the real control plane, with the operator running as
//! a real process per test (each test has its own namespace and Lease).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use operator::crd::PushGateway;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::wait::{holds_for, wait_until};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct Env {
    cp: &'static ControlPlane,
    ns: String,
    client: Client,
    op: OperatorProcess,
}

async fn setup(prefix: &str) -> Env {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace(prefix).unwrap();
    let op =
        OperatorProcess::start(cp, &OperatorOptions::new(&ns, &format!("{prefix}-op"))).unwrap();
    Env {
        cp,
        client: cp.client().await.unwrap(),
        ns,
        op,
    }
}

impl Env {
    fn apply(&self, name: &str, spec: &str) {
        let doc = format!(
            "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: {name}\n  namespace: {}\nspec:\n{spec}",
            self.ns
        );
        self.cp.kubectl_stdin(&["apply", "-f", "-"], &doc).unwrap();
    }

    /// A Redis-backed gateway: its pods need no volume, so kwok makes them Ready.
    fn apply_redis(&self, name: &str, extra: &str) {
        self.cp
            .kubectl(&[
                "create",
                "secret",
                "generic",
                &format!("{name}-redis"),
                "-n",
                &self.ns,
                "--from-literal=url=redis://127.0.0.1:1/0",
            ])
            .unwrap();
        self.apply(
            name,
            &format!("  store: {{redis: {{secretRef: {{name: {name}-redis}}}}}}\n{extra}"),
        );
    }

    fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
        &self,
    ) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn get<K>(&self, name: &str) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api = self.api::<K>();
        let what = format!("{} {name}", K::kind(&()));
        wait_until(&what, WAIT, || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await {
                    Ok(Some(o)) => Ok(o),
                    Ok(None) => Err("absent".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.op.log_tail()))
    }

    async fn ready(&self, name: &str) -> PushGateway {
        let api = self.api::<PushGateway>();
        wait_until(&format!("PushGateway {name} Ready=True"), WAIT, || {
            let api = api.clone();
            async move {
                let p = api.get(name).await.map_err(|e| e.to_string())?;
                let st = p.status.clone().unwrap_or_default();
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready && st.observed_generation == p.metadata.generation {
                    Ok(p)
                } else {
                    Err(format!("{:?}", p.status))
                }
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.op.log_tail()))
    }

    async fn rvs(&self, name: &str) -> Vec<String> {
        let cm: ConfigMap = self.get(&format!("{name}-config")).await;
        let d: Deployment = self.get(name).await;
        let s: Service = self.get(name).await;
        let p: PodDisruptionBudget = self.get(name).await;
        let g: PushGateway = self.get(name).await;
        [
            cm.resource_version(),
            d.resource_version(),
            s.resource_version(),
            p.resource_version(),
            g.resource_version(),
        ]
        .into_iter()
        .map(Option::unwrap)
        .collect()
    }
}

#[tokio::test]
async fn minimal_pushgateway_yields_expected_objects() {
    let env = setup("objects").await;
    let minimal = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/minimal.yaml"
    ))
    .unwrap();
    env.cp
        .kubectl_stdin(&["apply", "-n", &env.ns, "-f", "-"], &minimal)
        .unwrap();
    let pgw: PushGateway = env.get("minimal").await;
    let uid = pgw.uid().unwrap();

    let dep: Deployment = env.get("minimal").await;
    let cm: ConfigMap = env.get("minimal-config").await;
    let svc: Service = env.get("minimal").await;
    let pdb: PodDisruptionBudget = env.get("minimal").await;
    let pvc: PersistentVolumeClaim = env.get("minimal-data").await;
    for (kind, refs) in [
        ("Deployment", dep.owner_references()),
        ("ConfigMap", cm.owner_references()),
        ("Service", svc.owner_references()),
        ("PodDisruptionBudget", pdb.owner_references()),
        ("PersistentVolumeClaim", pvc.owner_references()),
    ] {
        assert_eq!(refs.len(), 1, "{kind} owner refs: {refs:?}");
        assert_eq!(
            (
                refs[0].kind.as_str(),
                refs[0].uid.as_str(),
                refs[0].controller
            ),
            ("PushGateway", uid.as_str(), Some(true)),
            "{kind}"
        );
    }

    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(format!("ghcr.io/pushgate/pushgate:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(
        c.args.clone().unwrap(),
        ["serve", "--config", "/etc/pushgate/pushgate.yaml"]
    );
    let rp = c.readiness_probe.clone().unwrap().http_get.unwrap();
    let lp = c.liveness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(
        (rp.path.as_deref(), lp.path.as_deref()),
        (Some("/readyz"), Some("/healthz"))
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(
        (
            sc.run_as_non_root,
            sc.read_only_root_filesystem,
            sc.allow_privilege_escalation
        ),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(
        pod.security_context.unwrap().seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    assert!(
        pod.termination_grace_period_seconds.unwrap() > 20,
        "grace period must exceed the 20s drain window"
    );
    // What the gateway parses: the embedded store on the pod's volume.
    let parsed = pushgate::config::Config::from_yaml(&cm.data.unwrap()["pushgate.yaml"]).unwrap();
    assert_eq!(parsed.store, pushgate::config::StoreKind::Embedded);
    assert_eq!(parsed.data_dir, std::path::Path::new("/var/lib/pushgate"));
    assert_eq!(
        pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );

    // Autoscaled variant: HPA with the gateway metrics, Deployment replicas left to it.
    env.apply_redis(
        "scaled",
        "  autoscaling: {minReplicas: 2, maxReplicas: 6, behavior: {scaleDown: {stabilizationWindowSeconds: 120}}}\n",
    );
    let hpa: HorizontalPodAutoscaler = env.get("scaled").await;
    let h = hpa.spec.unwrap();
    assert_eq!((h.min_replicas, h.max_replicas), (Some(2), 6));
    let metrics = h.metrics.unwrap();
    let pods: Vec<_> = metrics
        .iter()
        .filter_map(|m| m.pods.as_ref().map(|p| p.metric.name.clone()))
        .collect();
    assert_eq!(
        pods,
        [
            "pushgate_connections",
            "pushgate_subscriber_lag_events",
            "pushgate_event_loop_lag_seconds"
        ]
    );
    let mem = metrics.iter().find_map(|m| m.resource.clone()).unwrap();
    assert_eq!(
        (mem.name.as_str(), mem.target.type_.as_str()),
        ("memory", "Utilization")
    );
    assert_eq!(
        h.behavior
            .unwrap()
            .scale_down
            .unwrap()
            .stabilization_window_seconds,
        Some(120)
    );
    let scaled: Deployment = env.get("scaled").await;
    let managed = scaled.metadata.managed_fields.clone().unwrap_or_default();
    let ours = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("pushgate-operator"))
        .unwrap();
    let fields = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(
        !fields.contains("f:replicas"),
        "operator must not own spec.replicas under an HPA: {fields}"
    );

    // A config change reaches the ConfigMap and rolls the pods (hash
    // annotation); dropping autoscaling deletes the HPA and hands
    // spec.replicas back to the operator.
    let hash = |d: &Deployment| {
        d.spec
            .clone()
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()["pushgate.dev/config-hash"]
            .clone()
    };
    let old_hash = hash(&scaled);
    env.apply("scaled", "  store: {redis: {secretRef: {name: scaled-redis}}}\n  replicas: 3\n  limits: {maxBatch: 5}\n");
    let deps = env.api::<Deployment>();
    let hpas = env.api::<HorizontalPodAutoscaler>();
    wait_until("the HPA to go and replicas to be 3", WAIT, || async {
        let d = deps.get("scaled").await.map_err(|e| e.to_string())?;
        let hpa = hpas.get_opt("scaled").await.map_err(|e| e.to_string())?;
        let replicas = d.spec.as_ref().and_then(|s| s.replicas);
        if hpa.is_none() && replicas == Some(3) && hash(&d) != old_hash {
            Ok(())
        } else {
            Err(format!(
                "hpa present: {}, replicas {replicas:?}",
                hpa.is_some()
            ))
        }
    })
    .await
    .unwrap();
    let cm: ConfigMap = env.get("scaled-config").await;
    assert!(cm.data.unwrap()["pushgate.yaml"].contains("limits:\n  max_batch: 5\n"));

    // Switching to the embedded store switches the rollout to Recreate (the
    // apiserver would reject a left-over rollingUpdate block).
    env.apply("scaled", "  store: {embedded: {}}\n");
    wait_until(
        "the Deployment strategy to become Recreate",
        WAIT,
        || async {
            let d = deps.get("scaled").await.map_err(|e| e.to_string())?;
            let st = d.spec.unwrap().strategy.unwrap_or_default();
            match (st.type_.as_deref(), &st.rolling_update) {
                (Some("Recreate"), None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap();

    // Creations are announced as Events on the PushGateway.
    let ns = env.ns.clone();
    let cp = env.cp;
    wait_until("a Created Event for the Deployment", WAIT, || async {
        let out = cp
            .kubectl(&[
                "get",
                "events",
                "-n",
                &ns,
                "--field-selector",
                "reason=Created,involvedObject.name=minimal",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .map_err(|e| e.to_string())?;
        if out.contains("created Deployment minimal") {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await
    .unwrap();

    // `kubectl get pgw` prints the printer columns.
    let table = env.cp.kubectl(&["get", "pgw", "-n", &env.ns]).unwrap();
    let header: Vec<_> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "REASON", "REPLICAS", "CANARY", "WEIGHT", "AGE"],
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("minimal ")), "{table}");
}

#[tokio::test]
async fn reconcile_is_idempotent_and_repairs_drift() {
    let mut env = setup("drift").await;
    env.apply_redis("gw", "  replicas: 2\n");
    env.ready("gw").await;
    // Ready can be reported while the first operator still writes the last
    // status (e.g. the second replica turning ready): wait until nothing moves.
    let before = wait_until(
        "the resourceVersions to stop moving",
        Duration::from_secs(30),
        || async {
            let rvs = env.rvs("gw").await;
            holds_for(
                "the resourceVersions",
                Duration::from_millis(700),
                || async { env.rvs("gw").await == rvs },
            )
            .await
            .map(|()| rvs.clone())
            .map_err(|e| format!("{e:#}"))
        },
    )
    .await
    .unwrap();

    // A second reconcile, by a fresh operator process, must change nothing.
    env.op.terminate().unwrap();
    env.op = OperatorProcess::start(env.cp, &OperatorOptions::new(&env.ns, "drift-op-2")).unwrap();
    let op = &env.op;
    wait_until("the restarted operator to reconcile", WAIT, || async {
        let n = op.metric("pushgate_operator_reconciles_total{result=\"ok\"}");
        if n >= 1.0 {
            Ok(())
        } else {
            Err(format!("{n} reconciles"))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        env.rvs("gw").await,
        before,
        "a no-op reconcile changed resourceVersions"
    );
    // Status writes must not trigger further reconciles (generation
    // predicate): once the start-up burst from the initial watch lists is
    // over, the count stays put while nothing changes.
    let ok = "pushgate_operator_reconciles_total{result=\"ok\"}";
    let settled = wait_until("the start-up burst of reconciles to end", WAIT, || async {
        let n = op.metric(ok);
        holds_for("the reconcile count", Duration::from_secs(2), || async {
            op.metric(ok) == n
        })
        .await
        .map(|()| n)
        .map_err(|e| format!("{e:#}"))
    })
    .await
    .unwrap();
    // Nothing marks a reconcile that does not happen: watch a window.
    holds_for(
        "no reconciles without a change",
        Duration::from_secs(3),
        || async {
            match op.metric(ok) {
                n if n == settled => Ok(()),
                n => Err(format!("{settled} -> {n}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", op.log_tail()));

    // A deleted Deployment is recreated.
    let old: Deployment = env.get("gw").await;
    env.cp
        .kubectl(&["delete", "deployment", "gw", "-n", &env.ns, "--wait=false"])
        .unwrap();
    let api = env.api::<Deployment>();
    let old_uid = old.uid().unwrap();
    wait_until("the Deployment to be recreated", WAIT, || async {
        match api.get_opt("gw").await {
            Ok(Some(d)) if d.uid() != Some(old_uid.clone()) => Ok(()),
            other => Err(format!("{:?}", other.map(|o| o.map(|d| d.uid())))),
        }
    })
    .await
    .unwrap();

    // Hand edits are reverted: the config file and the container image.
    let cm_api = env.api::<ConfigMap>();
    let original = env.get::<ConfigMap>("gw-config").await.data.unwrap()["pushgate.yaml"].clone();
    env.cp
        .kubectl(&[
            "patch",
            "configmap",
            "gw-config",
            "-n",
            &env.ns,
            "--type=merge",
            "-p",
            r#"{"data":{"pushgate.yaml":"tampered: true\n"}}"#,
        ])
        .unwrap();
    env.cp
        .kubectl(&[
            "set",
            "image",
            "deployment/gw",
            "-n",
            &env.ns,
            "gateway=evil:latest",
        ])
        .unwrap();
    wait_until("the ConfigMap edit to be reverted", WAIT, || async {
        let cm = cm_api.get("gw-config").await.map_err(|e| e.to_string())?;
        let now = cm
            .data
            .unwrap_or_default()
            .remove("pushgate.yaml")
            .unwrap_or_default();
        if now == original {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await
    .unwrap();
    wait_until("the image edit to be reverted", WAIT, || async {
        let d = api.get("gw").await.map_err(|e| e.to_string())?;
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        if image.starts_with("ghcr.io/pushgate/pushgate:") {
            Ok(())
        } else {
            Err(image)
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn status_reports_ready_and_spec_errors() {
    let env = setup("status").await;
    env.apply_redis("gw", "  replicas: 2\n");
    let p = env.ready("gw").await;
    let st = p.status.unwrap();
    assert_eq!(st.observed_generation, p.metadata.generation);
    assert_eq!((st.replicas, st.ready_replicas), (Some(2), Some(2)));
    assert_eq!(
        st.url.as_deref(),
        Some(format!("http://gw.{}.svc", env.ns).as_str())
    );
    let ready_pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=gw"))
        .await
        .unwrap();
    assert_eq!(ready_pods.items.len(), 2);

    // The schema accepts any string here; only the operator can tell it is not a duration.
    env.apply_redis_spec_error();
    let api = env.api::<PushGateway>();
    let degraded = wait_until("Degraded=True with reason InvalidSpec", WAIT, || async {
        let p = api.get("gw").await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        let d = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .cloned();
        match d {
            Some(c) if st.observed_generation == p.metadata.generation => Ok(c),
            _ => Err(format!("{:?}", p.status)),
        }
    })
    .await
    .unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    // Retries back off exponentially (1s, 2s, 4s, ...): at most 3 in any 5s
    // window, where a fixed 1s retry would make 5.
    let errors = "pushgate_operator_reconcile_errors_total{reason=\"InvalidSpec\"}";
    // error_policy counts the failure just after the status was written.
    let op = &env.op;
    let first = wait_until("the failed reconcile to be counted", WAIT, || async {
        let n = op.metric(errors);
        if n >= 1.0 {
            Ok(n)
        } else {
            Err(format!("{n}"))
        }
    })
    .await
    .unwrap();
    // A rate: a 5 s window is what is being measured.
    holds_for(
        "at most 3 retries in 5 s",
        Duration::from_secs(5),
        || async {
            match env.op.metric(errors) {
                after if after - first <= 3.0 => Ok(()),
                after => Err(format!("retries do not back off: {first} -> {after}")),
            }
        },
    )
    .await
    .unwrap();
    assert!(
        degraded.message.contains("spec.delivery.drainWindow"),
        "{}",
        degraded.message
    );
    let events = wait_until("a Warning Event for the PushGateway", WAIT, || async {
        let out = env.cp.kubectl(&["get", "events", "-n", &env.ns, "--field-selector", "reason=InvalidSpec", "-o", "jsonpath={range .items[*]}{.type} {.involvedObject.kind}/{.involvedObject.name}{\"\\n\"}{end}"]).map_err(|e| e.to_string())?;
        if out.contains("Warning PushGateway/gw") { Ok(out) } else { Err(out) }
    })
    .await
    .unwrap();
    assert!(!events.is_empty());
    let p: PushGateway = env.get("gw").await;
    let ready = p
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
}

impl Env {
    fn apply_redis_spec_error(&self) {
        self.apply("gw", "  store: {redis: {secretRef: {name: gw-redis}}}\n  replicas: 2\n  delivery: {drainWindow: soon}\n");
    }
}

#[tokio::test]
async fn deleting_the_pushgateway_removes_every_child() {
    let env = setup("gc").await;
    env.apply("gw", "  {}\n");
    env.apply_redis(
        "scaled",
        "  autoscaling: {minReplicas: 1, maxReplicas: 3}\n",
    );
    let _: Deployment = env.get("gw").await;
    let _: PersistentVolumeClaim = env.get("gw-data").await;
    let _: HorizontalPodAutoscaler = env.get("scaled").await;
    env.ready("scaled").await;

    for name in ["gw", "scaled"] {
        env.cp
            .kubectl(&[
                "delete",
                "pgw",
                name,
                "-n",
                &env.ns,
                "--wait=true",
                "--timeout=30s",
            ])
            .unwrap();
    }
    let cp = env.cp;
    let ns = env.ns.clone();
    // Owned objects must be gone; pods only need to be terminating, since
    // finishing a pod's deletion is the (fake) kubelet's job, after its grace period.
    wait_until("every child to be garbage-collected", WAIT, || async {
        let out = cp
            .kubectl(&["get", "deploy,rs,svc,cm,pdb,pvc,hpa", "-n", &ns, "-l", "app.kubernetes.io/name=pushgate", "-o", "name"])
            .map_err(|e| e.to_string())?;
        let pods = cp
            .kubectl(&["get", "pod", "-n", &ns, "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\"\\n\"}{end}"])
            .map_err(|e| e.to_string())?;
        let running = pods.lines().filter(|l| l.ends_with('='));
        let left: Vec<_> = out.lines().chain(running).collect();
        if left.is_empty() { Ok(()) } else { Err(left.join(", ")) }
    })
    .await
    .unwrap();
    // Configmaps the control plane adds itself (kube-root-ca.crt) are not ours.
    let cms = cp.kubectl(&["get", "cm", "-n", &ns, "-o", "name"]).unwrap();
    assert!(!cms.contains("-config"), "{cms}");
}

#[tokio::test]
async fn the_keda_engine_writes_a_scaled_object_and_never_an_hpa_beside_it() {
    use operator::build::keda::ScaledObject;
    let env = setup("keda").await;
    // KEDA's own CRD: the API server checks (and prunes) the ScaledObject
    // against KEDA's schema, so a field KEDA does not know would be lost.
    env.cp.install_keda_crds().unwrap();
    env.apply_redis(
        "scaled",
        "  autoscaling: {minReplicas: 1, maxReplicas: 3}\n",
    );
    let _: HorizontalPodAutoscaler = env.get("scaled").await;

    let store = "  store: {redis: {secretRef: {name: scaled-redis}}}\n";
    env.apply(
        "scaled",
        &format!(
            "{store}  autoscaling: {{minReplicas: 1, maxReplicas: 3, engine: keda, \
             keda: {{serverAddress: 'http://prometheus.monitoring:9090'}}, \
             targetConnectionsPerPod: '300', \
             behavior: {{scaleDown: {{stabilizationWindowSeconds: 30}}}}}}\n"
        ),
    );
    let so: ScaledObject = env.get("scaled").await;
    let hpas = env.api::<HorizontalPodAutoscaler>();
    wait_until("the operator's HPA to go", WAIT, || async {
        match hpas.get_opt("scaled").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await
    .unwrap();
    // What is stored is exactly what the operator built: nothing pruned.
    let pgw: PushGateway = env.get("scaled").await;
    let want = operator::build::keda::scaled_object_for(&pgw, operator::build::Track::Stable)
        .unwrap()
        .unwrap();
    assert_eq!(so.spec, want.spec);
    let t = &so.spec.triggers[0];
    assert_eq!(
        (t.type_.as_str(), t.metadata["threshold"].as_str()),
        ("prometheus", "300")
    );
    assert_eq!(
        t.metadata["query"],
        format!(
            "sum(pushgate_connections{{namespace=\"{}\",pod=~\"scaled-[a-z0-9]+-[a-z0-9]+\"}})",
            env.ns
        )
    );
    assert_eq!(
        (so.spec.min_replica_count, so.spec.max_replica_count),
        (1, 3)
    );
    let own = so.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(own[0].uid, pgw.metadata.uid.clone().unwrap());

    // Back to the HPA engine: the ScaledObject goes, the HPA returns.
    env.apply(
        "scaled",
        &format!("{store}  autoscaling: {{minReplicas: 1, maxReplicas: 3, engine: hpa}}\n"),
    );
    let sos = env.api::<ScaledObject>();
    wait_until(
        "the ScaledObject to go and the HPA to return",
        WAIT,
        || async {
            let so = sos.get_opt("scaled").await.map_err(|e| e.to_string())?;
            let hpa = hpas.get_opt("scaled").await.map_err(|e| e.to_string())?;
            match (so, hpa) {
                (None, Some(_)) => Ok(()),
                (so, hpa) => Err(format!("so {}, hpa {}", so.is_some(), hpa.is_some())),
            }
        },
    )
    .await
    .unwrap();
}
