//! `helm install charts/pushgate` into the real test control plane; then the
//! real operator binary, authenticated with the token of the chart's
//! ServiceAccount (and nothing else), reconciles `examples/minimal.yaml`,
//! holds its Lease in the release namespace, and is refused what the chart
//! does not grant.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use kube::Api;
use operator::crd::PushGateway;
use pushgate_e2e::cluster::repo;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::process::run_ok;
use pushgate_e2e::wait::wait_until;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(45);
const RELEASE: &str = "pg";

fn helm(cp: &ControlPlane, args: &[&str]) -> String {
    let out = Command::new(cp.bin().join("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .env("HELM_CONFIG_HOME", cp.root().join("helm-config"))
        .env("HELM_CACHE_HOME", cp.root().join("helm-cache"))
        .env("HELM_DATA_HOME", cp.root().join("helm-data"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn helm_install_then_operator_runs_with_only_the_charts_rbac() {
    // Its operator watches every namespace: a control plane of its own.
    let cp = ControlPlane::dedicated("helm-install");
    let release_ns = cp.namespace("pushgate-system").unwrap();
    let chart = repo().join("charts/pushgate").display().to_string();

    // Install as a platform team would.
    let notes = helm(
        cp,
        &[
            "install",
            RELEASE,
            &chart,
            "--namespace",
            &release_ns,
            "--timeout",
            "60s",
        ],
    );
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("kubectl apply -f"),
        "NOTES.txt not shown: {notes}"
    );
    let status = helm(
        cp,
        &["status", RELEASE, "--namespace", &release_ns, "-o", "json"],
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed");

    // What the chart created is in the API.
    let sa = format!("{RELEASE}-pushgate");
    cp.kubectl(&["get", "serviceaccount", &sa, "-n", &release_ns])
        .unwrap();
    for concern in ["pushgateways", "children", "events"] {
        cp.kubectl(&["get", "clusterrole", &format!("{sa}-{concern}")])
            .unwrap();
        cp.kubectl(&["get", "clusterrolebinding", &format!("{sa}-{concern}")])
            .unwrap();
    }
    cp.kubectl(&[
        "get",
        "role,rolebinding",
        &format!("{sa}-leader-election"),
        "-n",
        &release_ns,
    ])
    .unwrap();
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/pushgateways.pushgate.dev",
        "--timeout=30s",
    ])
    .unwrap();
    let client = cp.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let dep = deploys.get(&sa).await.unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa.as_str()));
    // kube-controller-manager and kwok take the operator Deployment to
    // available (the fake pods do not run the operator: it runs below).
    wait_until("the operator Deployment to be available", WAIT, || async {
        let d = deploys.get(&sa).await.map_err(|e| e.to_string())?;
        let s = d.status.unwrap_or_default();
        if s.available_replicas == Some(2) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
    .unwrap();

    // The ServiceAccount's own token, nothing more.
    let kubeconfig = cp.service_account_kubeconfig(&release_ns, &sa).unwrap();
    let kc = kubeconfig.display().to_string();
    let app_ns = cp.namespace("app").unwrap();
    // kubectl resolves keda.sh/scaledobjects only once KEDA's CRD is served.
    cp.install_keda_crds().unwrap();
    let can_i = |args: &[&str]| -> bool {
        let mut a = vec!["--kubeconfig", kc.as_str(), "auth", "can-i"];
        a.extend_from_slice(args);
        let out = cp.kubectl_output(&a).unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for allowed in [
        &["watch", "pushgateways.pushgate.dev", "--all-namespaces"][..],
        &[
            "patch",
            "pushgateways.pushgate.dev",
            "--subresource=status",
            "-n",
            &app_ns,
        ],
        &["create", "deployments.apps", "-n", &app_ns],
        &[
            "delete",
            "horizontalpodautoscalers.autoscaling",
            "-n",
            &app_ns,
        ],
        &["patch", "scaledobjects.keda.sh", "-n", &app_ns],
        &["create", "events.events.k8s.io", "-n", &app_ns],
        &["list", "pods", "-n", &app_ns],
        &[
            "update",
            "leases.coordination.k8s.io/pushgate-operator",
            "-n",
            &release_ns,
        ],
    ] {
        assert!(
            can_i(allowed),
            "the chart's ServiceAccount may not {allowed:?}"
        );
    }
    for forbidden in [
        &["get", "secrets", "-n", &app_ns][..],
        &["list", "secrets", "--all-namespaces"],
        &["update", "deployments.apps", "-n", &app_ns],
        &["create", "pushgateways.pushgate.dev", "-n", &app_ns],
        &["delete", "pushgateways.pushgate.dev", "-n", &app_ns],
        &["create", "pods", "-n", &app_ns],
        &["delete", "pods", "-n", &app_ns],
        &["create", "leases.coordination.k8s.io", "-n", &app_ns],
        &[
            "update",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            &release_ns,
        ],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &["delete", "customresourcedefinitions.apiextensions.k8s.io"],
    ] {
        assert!(
            !can_i(forbidden),
            "the chart's ServiceAccount may {forbidden:?}"
        );
    }
    // And a real request, not only a review: reading a Secret is refused.
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        &app_ns,
        "--from-literal=k=v",
    ])
    .unwrap();
    let denied = cp
        .kubectl_output(&["--kubeconfig", &kc, "get", "secret", "s", "-n", &app_ns])
        .unwrap();
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // The real operator with those permissions, watching all namespaces and
    // electing in the release namespace — as the chart's Deployment runs it.
    let op = OperatorProcess::start(
        cp,
        &OperatorOptions {
            kubeconfig: Some(kubeconfig.clone()),
            ..OperatorOptions::all_namespaces(&release_ns, "helm-test")
        },
    )
    .unwrap();

    let minimal = repo().join("examples/minimal.yaml").display().to_string();
    cp.kubectl(&["apply", "-n", &app_ns, "-f", &minimal])
        .unwrap();

    let leases: Api<Lease> = Api::namespaced(client.clone(), &release_ns);
    wait_until("the operator to hold its Lease", WAIT, || async {
        let l = leases
            .get("pushgate-operator")
            .await
            .map_err(|e| e.to_string())?;
        let holder = l.spec.and_then(|s| s.holder_identity);
        (holder.as_deref() == Some("helm-test"))
            .then_some(())
            .ok_or(format!("{holder:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log()));

    let pgws: Api<PushGateway> = Api::namespaced(client.clone(), &app_ns);
    wait_until("status written for examples/minimal.yaml", WAIT, || async {
        let p = pgws.get("minimal").await.map_err(|e| e.to_string())?;
        let gen = p.metadata.generation;
        let s = p.status.ok_or("no status")?;
        if s.observed_generation == gen && s.conditions.iter().any(|c| c.type_ == "Ready") {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log()));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &app_ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), &app_ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &app_ns);
    let app_deploys: Api<Deployment> = Api::namespaced(client.clone(), &app_ns);
    wait_until("the children of minimal", WAIT, || async {
        let d = app_deploys
            .get_opt("minimal")
            .await
            .map_err(|e| e.to_string())?;
        let s = svcs.get_opt("minimal").await.map_err(|e| e.to_string())?;
        let p = pvcs
            .get_opt("minimal-data")
            .await
            .map_err(|e| e.to_string())?;
        let c = cms
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (d.is_some() && s.is_some() && p.is_some() && c > 0)
            .then_some(())
            .ok_or(format!(
                "deployment {} service {} pvc {} configmaps {c}",
                d.is_some(),
                s.is_some(),
                p.is_some()
            ))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log()));
    let events = cp
        .kubectl(&[
            "get",
            "events",
            "-n",
            &app_ns,
            "--field-selector",
            "reason=Created",
            "-o",
            "name",
        ])
        .unwrap();
    assert!(
        !events.trim().is_empty(),
        "no Created events:\n{}",
        op.log()
    );

    let log = op.log();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC denials in the operator log:\n{log}"
    );

    // Upgrade and rollback as docs/OPERATIONS.md describes them.
    drop(op);
    let replicas = || async { deploys.get(&sa).await.unwrap().spec.unwrap().replicas };
    helm(
        cp,
        &[
            "upgrade",
            RELEASE,
            &chart,
            "--namespace",
            &release_ns,
            "--reuse-values",
            "--set",
            "replicaCount=1,logLevel=debug",
        ],
    );
    assert_eq!(replicas().await, Some(1));
    let bad = Command::new(cp.bin().join("helm"))
        .args([
            "upgrade",
            RELEASE,
            &chart,
            "--namespace",
            &release_ns,
            "--reuse-values",
        ])
        .args(["--set", "replicaCount=-1"])
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "the schema let replicaCount=-1 through an upgrade"
    );
    helm(cp, &["rollback", RELEASE, "1", "--namespace", &release_ns]);
    assert_eq!(replicas().await, Some(2));
    let history = helm(
        cp,
        &["history", RELEASE, "--namespace", &release_ns, "-o", "json"],
    );
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");

    // Uninstall leaves the CRD (Helm never deletes crds/) and removes RBAC.
    helm(cp, &["uninstall", RELEASE, "--namespace", &release_ns]);
    let gone = cp
        .kubectl_output(&["get", "clusterrole", &format!("{sa}-children")])
        .unwrap();
    assert!(
        !gone.status.success(),
        "ClusterRole survived helm uninstall"
    );
    cp.kubectl(&["get", "crd", "pushgateways.pushgate.dev"])
        .unwrap();
}

#[test]
fn rendered_chart_passes_server_side_dry_run() {
    // Every object the chart renders (with the CRD) is valid for the real
    // apiserver — except the prometheus-operator kinds, whose CRDs it lacks.
    let cp = ControlPlane::shared();
    let ns = cp.namespace("render").unwrap();
    let chart = repo().join("charts/pushgate").display().to_string();
    let out = run_ok(
        Command::new(cp.bin().join("helm"))
            .args([
                "template",
                "dry",
                &chart,
                "--namespace",
                &ns,
                "--include-crds",
            ])
            .args(["--kube-version", "v1.34.4"])
            .args([
                "--set",
                "grafanaDashboard.enabled=true,prometheusAdapterRules.enabled=true",
            ]),
    );
    let manifest = String::from_utf8(out.stdout).unwrap();
    assert!(manifest.contains("kind: CustomResourceDefinition"));
    let applied = cp
        .kubectl_stdin(
            &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
            &manifest,
        )
        .unwrap();
    for want in [
        "customresourcedefinition.apiextensions.k8s.io/pushgateways.pushgate.dev",
        "deployment.apps/dry-pushgate",
        "role.rbac.authorization.k8s.io/dry-pushgate-leader-election",
        "configmap/dry-pushgate-dashboard",
    ] {
        assert!(applied.contains(want), "{want} not in:\n{applied}");
    }
}
