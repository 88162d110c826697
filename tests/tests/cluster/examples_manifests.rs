//! Every YAML under `examples/` is accepted by the real apiserver with the
//! committed CRD (`kubectl apply --dry-run=server`: OpenAPI schema + CEL).

use pushgate_e2e::controlplane::ControlPlane;
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

#[test]
fn every_example_passes_server_side_dry_run() {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("examples").unwrap();
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"),
        &mut files,
    );
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for must in [
        "minimal.yaml",
        "redis.yaml",
        "autoscaling.yaml",
        "canary.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "examples/{must} missing: {names:?}"
        );
    }
    let mut pushgateways = 0;
    for f in &files {
        let path = f.display().to_string();
        let out = cp
            .kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", &path])
            .unwrap_or_else(|e| panic!("{path}: {e:#}"));
        pushgateways += out.matches("pushgateway.pushgate.dev/").count();
        assert!(out.contains("(server dry run)"), "{path}: {out}");
    }
    assert!(
        pushgateways >= 4,
        "only {pushgateways} PushGateways among {names:?}"
    );
    // The dry run really validates: a typo in an example's spec is refused.
    let canary =
        std::fs::read_to_string(files.iter().find(|f| f.ends_with("canary.yaml")).unwrap())
            .unwrap()
            .replace("weight: 10", "weight: 140");
    let bad = cp
        .kubectl_stdin_output(
            &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
            &canary,
        )
        .unwrap();
    assert!(!bad.status.success(), "weight 140 accepted");
}
