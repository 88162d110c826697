//! The README's "Kubernetes in five minutes", steps 2 and 3, run verbatim
//! (the lines of its `sh` block, unchanged) against the test control plane:
//! `helm install`, `rollout status`, `kubectl apply -f examples/minimal.yaml`,
//! `kubectl wait ... --for=condition=Ready`. Only what a real cluster adds by
//! itself is supplied by the test: a PersistentVolume for the claim (no
//! provisioner here) and the operator process (kwok pods run nothing), which
//! runs with the token of the chart's ServiceAccount.

use pushgate_e2e::cluster::repo;
use pushgate_e2e::cluster::{readme_step, README_KUBERNETES};
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use std::process::Command;

fn step(n: u32) -> Vec<String> {
    readme_step(README_KUBERNETES, n)
}

/// Runs one README line with bash, the pinned tools first on PATH and the
/// control plane's kubeconfig, from the repository root.
fn sh(cp: &ControlPlane, line: &str) -> String {
    let path = format!(
        "{}:{}",
        cp.bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", line])
        .current_dir(repo())
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("HELM_CONFIG_HOME", cp.root().join("helm-config"))
        .env("HELM_CACHE_HOME", cp.root().join("helm-cache"))
        .env("HELM_DATA_HOME", cp.root().join("helm-data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "README line failed: {line}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn readme_kubernetes_in_five_minutes_steps_2_and_3_verbatim() {
    // The README's operator watches every namespace (and its namespace and
    // release names are fixed): a control plane of its own.
    let cp = ControlPlane::dedicated("helm-readme");
    let install = step(2);
    assert!(
        install.iter().any(|l| l.starts_with("helm install ")),
        "{install:?}"
    );
    for line in &install {
        sh(cp, line);
    }

    // What a real cluster has by itself: a volume for the claim, and the
    // operator actually running (here: locally, as the chart's ServiceAccount).
    let pv_dir = cp.root().join("pv-minimal");
    std::fs::create_dir_all(&pv_dir).unwrap();
    cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: readme-pv}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: {}}}\n",
            pv_dir.display()
        ),
    )
    .unwrap();
    let kubeconfig = cp
        .service_account_kubeconfig("pushgate-system", "pushgate")
        .unwrap();
    let op = OperatorProcess::start(
        cp,
        &OperatorOptions {
            kubeconfig: Some(kubeconfig.clone()),
            ..OperatorOptions::all_namespaces("pushgate-system", "readme")
        },
    )
    .unwrap();
    let op_log = || op.log();

    let gateway = step(3);
    assert!(
        gateway.iter().any(|l| l.contains("--for=condition=Ready")),
        "{gateway:?}"
    );
    let mut last = String::new();
    for line in &gateway {
        let out = std::panic::catch_unwind(|| sh(cp, line)).unwrap_or_else(|_| {
            panic!(
                "README step 3 failed at: {line}\noperator log:\n{}",
                op_log()
            )
        });
        last = out;
    }
    // `kubectl get pushgateways` shows it Ready.
    assert!(last.contains("minimal"), "{last}");
    assert!(last.contains("True"), "{last}");
    let log = op_log();
    assert!(!log.contains("orbidden"), "RBAC denials:\n{log}");
}
