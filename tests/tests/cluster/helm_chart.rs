//! The Helm chart `charts/pushgate` without a cluster: `helm lint --strict`
//! and `helm template --kube-version` for the defaults and every documented
//! values combination (`ci/*-values.yaml`), the strict schema, the CRD copy,
//! RBAC equal to `operator/deploy/rbac.yaml`, and monitoring objects that
//! only name metrics the binaries really export.

use pushgate_e2e::cluster::repo;
use pushgate_e2e::controlplane::bin_dir;
use pushgate_e2e::process::run_ok;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const KUBE_VERSION: &str = "v1.34.4";

fn chart() -> PathBuf {
    repo().join("charts/pushgate")
}

/// The pinned helm from tests/controlplane/build.sh (built on first use).
fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| bin_dir().expect("control-plane tools (helm)").join("helm"))
}

fn helm(args: &[&str]) -> Output {
    let helm = helm_bin();
    assert!(
        helm.exists(),
        "{} missing: tests/controlplane/build.sh builds it",
        helm.display()
    );
    Command::new(helm)
        .args(args)
        // No user config, cache or repositories leak in.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("pushgate-helm-config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("pushgate-helm-cache"),
        )
        .output()
        .expect("run helm")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` with extra args, parsed into its documents.
fn render(extra: &[&str]) -> Vec<Value> {
    let chart = chart().display().to_string();
    let mut args = vec![
        "template",
        "pg",
        &chart,
        "--namespace",
        "pushgate-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let text = ok(helm(&args), &format!("helm template {extra:?}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// The documented combinations: every `ci/*-values.yaml`.
fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn packaged_chart_carries_the_top_level_crds() {
    // charts/pushgate/crds/ links to crds/; what users install is the
    // packaged chart, so compare the bytes inside the .tgz.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    ok(
        helm(&["package", &chart().display().to_string(), "-d", &d]),
        "helm package",
    );
    let tgz = dir.path().join("pushgate-0.1.0.tgz");
    run_ok(Command::new("tar").args(["xzf", &tgz.display().to_string(), "-C", &d]));
    let listing = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let top = repo().join("crds");
    let packaged = dir.path().join("pushgate/crds");
    assert!(
        !packaged.is_symlink(),
        "the package holds a link, not the CRDs"
    );
    assert_eq!(listing(&top), listing(&packaged));
    for n in listing(&top) {
        let a = std::fs::read(top.join(&n)).unwrap();
        let b = std::fs::read(packaged.join(&n)).unwrap();
        assert!(!std::fs::symlink_metadata(packaged.join(&n))
            .unwrap()
            .is_symlink());
        assert!(a == b, "packaged crds/{n} differs from crds/{n}");
    }
    // The chart's directory of CRDs resolves to the same files too.
    assert_eq!(listing(&top), listing(&chart().join("crds")));
}

#[test]
fn lint_and_template_default_and_every_documented_combination() {
    let chart_s = chart().display().to_string();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let files = ci_values();
    assert!(files.len() >= 3, "expected the documented ci/*-values.yaml");

    // Defaults.
    ok(helm(&["lint", "--strict", &chart_s]), "helm lint --strict");
    let docs = render(&[]);
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let dep = find(&docs, "Deployment", "pg-pushgate");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "pg-pushgate");
    assert_eq!(dep["spec"]["replicas"], 2);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/pushgate/pushgate-operator:0.1.0");
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--lease-name=pushgate-operator"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "{args:?}"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // The Lease Role is namespaced and pinned to the one Lease.
    let role = find(&docs, "Role", "pg-pushgate-leader-election");
    assert_eq!(role["metadata"]["namespace"], "pushgate-system");
    assert_eq!(role["rules"][1]["resourceNames"][0], "pushgate-operator");

    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("ci/{name}")),
            "ci/{name} is not documented in charts/pushgate/README.md"
        );
        let fs = f.display().to_string();
        ok(
            helm(&["lint", "--strict", &chart_s, "-f", &fs]),
            &format!("helm lint --strict -f {name}"),
        );
        let docs = render(&["-f", &fs]);
        let k = kinds(&docs);
        match name.as_str() {
            "monitoring-values.yaml" => {
                for want in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
                    assert!(k.iter().any(|x| x == want), "{name}: no {want} in {k:?}");
                }
                assert_eq!(k.iter().filter(|x| *x == "ServiceMonitor").count(), 2);
                let rule = find(&docs, "PrometheusRule", "pg-pushgate");
                assert_eq!(
                    rule["metadata"]["labels"]["release"],
                    "kube-prometheus-stack"
                );
                let alerts: Vec<&str> = rule["spec"]["groups"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .flat_map(|g| g["rules"].as_sequence().unwrap())
                    .map(|r| r["alert"].as_str().unwrap())
                    .collect();
                for a in [
                    "PushgateResumeLostEvents",
                    "PushgateReconnectGapHigh",
                    "PushgateSubscriberLag",
                    "PushgateEventLoopLag",
                    "PushgateDeviceLossRateHigh",
                    "PushgateDeviceRecoverySlow",
                    "PushgateDegraded",
                    "PushgateBreakerFlapping",
                ] {
                    assert!(alerts.contains(&a), "missing alert {a}: {alerts:?}");
                }
                let cm = find(&docs, "ConfigMap", "pg-pushgate-dashboard");
                assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
                let dash: serde_json::Value =
                    serde_json::from_str(cm["data"]["pushgate.json"].as_str().unwrap())
                        .expect("dashboard JSON");
                let titles: Vec<&str> = dash["panels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["title"].as_str().unwrap())
                    .collect();
                for t in [
                    "Open streams",
                    "Deliveries / s",
                    "Resume outcomes / s",
                    "Streams per track",
                    "Device loss rate",
                    "Connection recovery (p50 / p95)",
                    "Degraded layers",
                    "Backpressure by policy",
                ] {
                    assert!(titles.contains(&t), "dashboard lacks {t}: {titles:?}");
                }
                let adapter = find(&docs, "ConfigMap", "pg-pushgate-adapter-rules");
                let rules: Value =
                    serde_yaml::from_str(adapter["data"]["config.yaml"].as_str().unwrap()).unwrap();
                assert_eq!(rules["rules"].as_sequence().unwrap().len(), 3);
            }
            "existing-serviceaccount-values.yaml" => {
                assert_eq!(k, ["Deployment"], "{name}");
                let dep = find(&docs, "Deployment", "pg-pushgate");
                assert_eq!(
                    dep["spec"]["template"]["spec"]["serviceAccountName"],
                    "pushgate-operator"
                );
            }
            "single-namespace-values.yaml" => {
                let dep = find(&docs, "Deployment", "pg-pushgate");
                assert_eq!(dep["spec"]["replicas"], 1);
                let pod = &dep["spec"]["template"]["spec"];
                let args = serde_yaml::to_string(&pod["containers"][0]["args"]).unwrap();
                assert!(args.contains("--namespace=team-a"), "{args}");
                assert!(
                    args.contains("--lease-name=pushgate-operator-team-a"),
                    "{args}"
                );
                assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
                assert_eq!(pod["priorityClassName"], "system-cluster-critical");
                let role = find(&docs, "Role", "pg-pushgate-leader-election");
                assert_eq!(
                    role["rules"][1]["resourceNames"][0],
                    "pushgate-operator-team-a"
                );
            }
            other => panic!("ci/{other} has no assertions in this test"),
        }
    }
}

#[test]
fn schema_rejects_wrong_types_and_unknown_keys() {
    let chart_s = chart().display().to_string();
    let base = [
        "template",
        "pg",
        chart_s.as_str(),
        "--kube-version",
        KUBE_VERSION,
    ];
    // The same flags with right values pass, so a failure below is the schema.
    for good in [
        "replicaCount=3",
        "serviceMonitor.enabled=true",
        "metrics.port=9000",
    ] {
        let mut a = base.to_vec();
        a.extend(["--set", good]);
        ok(helm(&a), &format!("--set {good}"));
    }
    for (flag, value, path) in [
        ("--set", "replicaCount=two", "/replicaCount"),
        (
            "--set-string",
            "serviceMonitor.enabled=yes",
            "/serviceMonitor/enabled",
        ),
        ("--set", "metrics.port=70000", "/metrics/port"),
        ("--set", "image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("--set", "replicaCount=3,bogusKey=1", "bogusKey"),
        ("--set", "serviceMonitor.intervall=30s", "intervall"),
    ] {
        let mut a = base.to_vec();
        a.extend([flag, value]);
        let out = helm(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            err.contains("schema") && err.contains(path),
            "{flag} {value}: unexpected error: {err}"
        );
        // helm install/upgrade validate the same way as template; lint too.
        let out = helm(&["lint", "--strict", &chart_s, flag, value]);
        assert!(!out.status.success(), "lint accepted {flag} {value}");
    }
}

/// (apiGroup, resource, verb) triples a set of RBAC rules grants.
fn grants(rules: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules.as_sequence().unwrap() {
        let list = |k: &str| -> Vec<String> {
            r[k].as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for g in list("apiGroups") {
            for res in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), res.clone(), v));
                }
            }
        }
    }
    out
}

#[test]
fn chart_rbac_grants_exactly_what_operator_deploy_rbac_grants() {
    let docs = render(&[]);
    let mut chart = BTreeSet::new();
    for d in &docs {
        if d["kind"] == "ClusterRole" || d["kind"] == "Role" {
            chart.extend(grants(&d["rules"]));
        }
        // Every binding of the chart names the chart's ServiceAccount.
        if d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding" {
            assert_eq!(d["subjects"][0]["name"], "pg-pushgate");
            assert_eq!(d["subjects"][0]["namespace"], "pushgate-system");
        }
    }
    let text = std::fs::read_to_string(repo().join("operator/deploy/rbac.yaml")).unwrap();
    let mut shipped = BTreeSet::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let d = Value::deserialize(d).unwrap();
        if d["kind"] == "ClusterRole" {
            shipped.extend(grants(&d["rules"]));
        }
    }
    assert!(!shipped.is_empty());
    let extra: Vec<_> = chart.difference(&shipped).collect();
    let missing: Vec<_> = shipped.difference(&chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "chart RBAC differs from operator/deploy/rbac.yaml: extra {extra:?}, missing {missing:?}"
    );
    // Secrets: create only (the peer token), never read.
    let secrets: Vec<&String> = chart
        .iter()
        .filter(|(_, r, _)| r == "secrets")
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(secrets, ["create"], "the operator never reads a Secret");
    assert!(
        !chart
            .iter()
            .any(|(g, r, v)| g == "*" || r == "*" || v == "*"),
        "wildcards in the chart RBAC: {chart:?}"
    );
}

/// Metric names the binaries define: gateway names get the registry prefix
/// `pushgate_`; histograms also export `_bucket`, `_sum`, `_count`.
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let lit = |src: &str| -> Vec<String> {
        src.split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(str::to_owned)
            .collect()
    };
    let gw = std::fs::read_to_string(repo().join("gateway/src/ops/metrics.rs")).unwrap();
    for n in lit(&gw) {
        let n = format!("pushgate_{n}");
        for s in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{n}{s}"));
        }
        names.insert(n);
    }
    let op = std::fs::read_to_string(repo().join("operator/src/metrics.rs")).unwrap();
    names.extend(lit(&op).into_iter().filter(|n| n.starts_with("pushgate_")));
    names
}

#[test]
fn alerts_dashboard_and_adapter_rules_name_only_real_metrics() {
    let exported = exported_metrics();
    for must in [
        "pushgate_connections",
        "pushgate_resume_total",
        "pushgate_reconnect_gap_seconds_bucket",
        "pushgate_operator_leader",
    ] {
        assert!(
            exported.contains(must),
            "metric parser lost {must}: {exported:?}"
        );
    }
    let docs = render(&[
        "-f",
        &chart()
            .join("ci/monitoring-values.yaml")
            .display()
            .to_string(),
    ]);
    let mut used = BTreeSet::new();
    for d in &docs {
        if matches!(d["kind"].as_str(), Some("PrometheusRule" | "ConfigMap")) {
            let text = serde_yaml::to_string(d).unwrap();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("pushgate_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(tail.len());
                used.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    assert!(used.len() >= 12, "too few metrics referenced: {used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "monitoring objects name metrics nobody exports: {unknown:?}"
    );
}

/// Runs the pinned `promcheck` (Prometheus' own rule and PromQL parsers).
fn promcheck(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let bin = helm_bin().with_file_name("promcheck");
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (tests/controlplane/build.sh builds it)",
                bin.display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn alerts_dashboard_and_adapter_queries_are_valid_for_prometheus() {
    let docs = render(&[
        "-f",
        &chart()
            .join("ci/monitoring-values.yaml")
            .display()
            .to_string(),
    ]);
    let dir = tempfile::tempdir().unwrap();

    // Alerts: the PrometheusRule's groups as a rule file, checked like
    // `promtool check rules` (PromQL and annotation templates included).
    let rule = find(&docs, "PrometheusRule", "pg-pushgate");
    let n_alerts = rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_sequence().unwrap().len())
        .sum::<usize>();
    let file = dir.path().join("rules.yaml");
    let mut groups = serde_yaml::Mapping::new();
    groups.insert("groups".into(), rule["spec"]["groups"].clone());
    std::fs::write(&file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    let out = ok(
        promcheck(&["rules", &file.display().to_string()], ""),
        "promcheck rules",
    );
    assert!(out.contains(&format!(": {n_alerts} rules")), "{out}");
    // The checker does check: one broken expression fails it.
    let broken =
        serde_yaml::to_string(&groups)
            .unwrap()
            .replacen("expr: sum by", "expr: sum by by", 1);
    std::fs::write(&file, broken).unwrap();
    let out = promcheck(&["rules", &file.display().to_string()], "");
    assert!(!out.status.success(), "a broken expr passed promcheck");

    // Dashboard panels, with Grafana's variables filled in.
    let cm = find(&docs, "ConfigMap", "pg-pushgate-dashboard");
    let dash: serde_json::Value =
        serde_json::from_str(cm["data"]["pushgate.json"].as_str().unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*")
                    .replace("$pushgateway", ".*"),
            );
        }
    }
    // prometheus-adapter rules, with the adapter's template filled in.
    let adapter = find(&docs, "ConfigMap", "pg-pushgate-adapter-rules");
    let rules: Value =
        serde_yaml::from_str(adapter["data"]["config.yaml"].as_str().unwrap()).unwrap();
    for r in rules["rules"].as_sequence().unwrap() {
        let series = r["seriesQuery"].as_str().unwrap();
        let metric = series.split('{').next().unwrap();
        exprs.push(series.to_owned());
        exprs.push(
            r["metricsQuery"]
                .as_str()
                .unwrap()
                .replace("<<.Series>>", metric)
                .replace("<<.LabelMatchers>>", "namespace=\"default\",pod=~\"a|b\"")
                .replace("<<.GroupBy>>", "pod"),
        );
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    let out = ok(promcheck(&["exprs"], &exprs.join("\n")), "promcheck exprs");
    assert!(
        out.contains(&format!("{} expressions", exprs.len())),
        "{out}"
    );
    let out = promcheck(&["exprs"], "sum(rate(pushgate_connections[5m])");
    assert!(
        !out.status.success(),
        "an unbalanced expression passed promcheck"
    );
}
