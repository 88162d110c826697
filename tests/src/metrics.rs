//! The metrics stack an HPA reads on the real node: a Prometheus server that
//! discovers the gateway pods of one namespace through the Kubernetes API
//! and scrapes their metrics port, and prometheus-adapter serving
//! `custom.metrics.k8s.io` through the API server's aggregation layer, with
//! the rules given (the chart's). Both are built from their pinned Go modules
//! by `tests/controlplane/build.sh` and run as processes on this machine; the
//! adapter listens on the node's bridge address, which the APIService's
//! Endpoints may name (loopback is refused there). Stopped, and the
//! APIService removed, on drop.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::controlplane::{free_port, ControlPlane};
use crate::wait::wait_until;

/// The node's bridge address: pods and the API server both reach it.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

/// The API group prometheus-adapter serves.
const GROUP: &str = "custom.metrics.k8s.io";
/// Where the extension servers' Services and Endpoints live.
const NAMESPACE: &str = "custom-metrics";

/// A running Prometheus + prometheus-adapter.
pub struct MetricsStack {
    prometheus: Child,
    adapter: Child,
    /// Prometheus' HTTP API, `http://127.0.0.1:PORT`.
    pub prometheus_url: String,
    cp: &'static ControlPlane,
    dir: tempfile::TempDir,
}

/// Starts `bin` with `args` and `env`, its output going to `log`.
pub(crate) fn spawn(
    bin: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// Registers the APIService `v1beta1.<group>`, served by an extension
/// server listening on `NODE_IP:port`, and waits until it is Available. The
/// aggregation layer reaches it through a Service without selector whose
/// Endpoints name the bridge address.
pub(crate) async fn serve_api_service(
    cp: &ControlPlane,
    group: &str,
    service: &str,
    port: u16,
) -> Result<()> {
    let objects = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: {service}, namespace: {NAMESPACE}}}\n\
         spec: {{ports: [{{port: 443, targetPort: {port}}}]}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {service}, namespace: {NAMESPACE}}}\n\
         subsets: [{{addresses: [{{ip: {NODE_IP}}}], ports: [{{port: {port}}}]}}]\n---\n\
         apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1beta1.{group}}}\n\
         spec: {{service: {{name: {service}, namespace: {NAMESPACE}, port: 443}}, \
         group: {group}, version: v1beta1, insecureSkipTLSVerify: true, \
         groupPriorityMinimum: 100, versionPriority: 100}}\n"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &objects)?;
    let name = format!("v1beta1.{group}");
    wait_until(
        &format!("{group} served"),
        Duration::from_secs(90),
        || async {
            let available = cp
                .kubectl(&[
                    "get",
                    "apiservice",
                    &name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
                ])
                .map_err(|e| e.to_string())?;
            match available.trim() {
                "True" => Ok(()),
                other => Err(format!("Available={other}")),
            }
        },
    )
    .await
}

/// Removes the APIService of `group`: one nobody serves breaks discovery
/// for every client.
pub(crate) fn drop_api_service(cp: &ControlPlane, group: &str) {
    let name = format!("v1beta1.{group}");
    let _ = cp.kubectl(&["delete", "apiservice", &name, "--ignore-not-found"]);
}

/// The last 20 lines of each of `logs` in `dir`, for a failure message.
pub(crate) fn tails(dir: &Path, logs: &[&str]) -> String {
    let mut out = String::new();
    for name in logs {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out += &format!(
            "--- {name}\n{}\n",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    out
}

impl MetricsStack {
    /// Starts both for the gateway pods of `namespace`, scraping every
    /// `scrape`, with `rules` as the adapter's config (its `rules:` YAML).
    pub async fn start(
        cp: &'static ControlPlane,
        namespace: &str,
        rules: &str,
        scrape: Duration,
    ) -> Result<MetricsStack> {
        let dir = tempfile::Builder::new()
            .prefix("pushgate-metrics-")
            .tempdir()?;
        let kc = cp.kubeconfig_path().display().to_string();
        let secs = scrape.as_secs().max(1);
        // The pods' own labels become `namespace` and `pod`, which the
        // adapter's rules map to Kubernetes resources.
        let config = format!(
            "global: {{scrape_interval: {secs}s, evaluation_interval: {secs}s}}\n\
             scrape_configs:\n\
             - job_name: pushgate\n\
             \x20 kubernetes_sd_configs:\n\
             \x20 - {{role: pod, kubeconfig_file: {kc}, namespaces: {{names: [{namespace}]}}}}\n\
             \x20 relabel_configs:\n\
             \x20 - {{source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], regex: pushgate, action: keep}}\n\
             \x20 - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: metrics, action: keep}}\n\
             \x20 - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}\n\
             \x20 - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        std::fs::write(dir.path().join("rules.yaml"), rules)?;
        let prom_port = free_port();
        let prometheus_url = format!("http://127.0.0.1:{prom_port}");
        let p = |s: &str| dir.path().join(s).display().to_string();
        let prometheus = spawn(
            &cp.bin().join("prometheus"),
            &[
                format!("--config.file={}", p("prometheus.yml")),
                format!("--web.listen-address=127.0.0.1:{prom_port}"),
                format!("--storage.tsdb.path={}", p("tsdb")),
                "--storage.tsdb.retention.time=1h".into(),
            ],
            &[],
            &dir.path().join("prometheus.log"),
        )?;
        let adapter_port = free_port();
        let adapter = spawn(
            &cp.bin().join("prometheus-adapter"),
            &[
                format!("--secure-port={adapter_port}"),
                format!("--bind-address={NODE_IP}"),
                format!("--cert-dir={}", p("adapter-certs")),
                format!("--lister-kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                format!("--prometheus-url={prometheus_url}/"),
                "--metrics-relist-interval=5s".into(),
                format!("--config={}", p("rules.yaml")),
            ],
            &[],
            &dir.path().join("adapter.log"),
        )?;
        let stack = MetricsStack {
            prometheus,
            adapter,
            prometheus_url,
            cp,
            dir,
        };
        let c = reqwest::Client::new();
        let ready = format!("{}/-/ready", stack.prometheus_url);
        wait_until("Prometheus ready", Duration::from_secs(60), || async {
            match c.get(&ready).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .with_context(|| stack.logs())?;
        serve_api_service(cp, GROUP, "prometheus-adapter", adapter_port)
            .await
            .with_context(|| stack.logs())?;
        Ok(stack)
    }

    /// One metric of one pod as the adapter serves it to the HPA controller,
    /// e.g. `pushgate_connections`; `None` while it has no value.
    pub fn pod_metric(&self, namespace: &str, pod: &str, metric: &str) -> Option<f64> {
        let path = format!(
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{pod}/{metric}"
        );
        let out = self.cp.kubectl(&["get", "--raw", &path]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let q = v["items"][0]["value"].as_str()?;
        parse_quantity(q)
    }

    /// The last lines of both logs, for a failure message.
    pub fn logs(&self) -> String {
        tails(self.dir.path(), &["prometheus.log", "adapter.log"])
    }
}

/// A Kubernetes quantity as the adapter writes it (`300`, `1500m`).
fn parse_quantity(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|v| v / 1000.0),
        None => q.parse().ok(),
    }
}

impl Drop for MetricsStack {
    fn drop(&mut self) {
        drop_api_service(self.cp, GROUP);
        for c in [&mut self.adapter, &mut self.prometheus] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
