//! KEDA on the test control plane: its operator, which turns ScaledObjects
//! into HPAs and answers for their triggers, and its metrics adapter, which
//! serves `external.metrics.k8s.io` to the HPA controller through the
//! aggregation layer. Both are built from KEDA's pinned module by
//! `tests/controlplane/build.sh` and run as processes on this machine, with
//! all of KEDA's CRDs installed. They authenticate each other over gRPC with
//! one certificate from a throwaway CA, as KEDA's own certificate secret
//! would give them. Stopped, and the APIService removed, on drop.

use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::controlplane::{free_port, ControlPlane};
use crate::metrics::{drop_api_service, serve_api_service, spawn, tails, NODE_IP};
use crate::pki::TestCa;
use crate::wait::wait_until;

/// The API group KEDA's adapter serves.
const GROUP: &str = "external.metrics.k8s.io";
/// KEDA's own namespace (leader lease, cluster-wide auth secrets).
const KEDA_NAMESPACE: &str = "keda";

/// A running KEDA operator and metrics adapter.
pub struct Keda {
    operator: Child,
    adapter: Child,
    cp: &'static ControlPlane,
    dir: tempfile::TempDir,
}

impl Keda {
    /// Installs KEDA's CRDs, starts both processes and waits until the
    /// external metrics API is served.
    pub async fn start(cp: &'static ControlPlane) -> Result<Keda> {
        cp.install_keda_crds()?;
        cp.kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {KEDA_NAMESPACE}}}\n"),
        )?;
        let dir = tempfile::Builder::new()
            .prefix("pushgate-keda-")
            .tempdir()?;
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs)?;
        let ca = TestCa::new()?;
        let leaf = ca.peer_leaf("keda-operator")?;
        std::fs::write(certs.join("ca.crt"), &ca.pem)?;
        std::fs::write(certs.join("tls.crt"), &leaf.cert_pem)?;
        std::fs::write(certs.join("tls.key"), &leaf.key_pem)?;
        let kc = cp.kubeconfig_path().display().to_string();
        let env = [
            ("KUBECONFIG", kc.as_str()),
            ("WATCH_NAMESPACE", ""),
            ("POD_NAMESPACE", KEDA_NAMESPACE),
            ("KEDA_CLUSTER_OBJECT_NAMESPACE", KEDA_NAMESPACE),
        ];
        let cert_dir = certs.display().to_string();
        let (grpc, probes) = (free_port(), free_port());
        let operator = spawn(
            &cp.bin().join("keda-operator"),
            &[
                format!("--metrics-service-bind-address=127.0.0.1:{grpc}"),
                format!("--health-probe-bind-address=127.0.0.1:{probes}"),
                "--metrics-bind-address=0".into(),
                format!("--cert-dir={cert_dir}"),
                "--enable-cert-rotation=false".into(),
                "--enable-webhook-patching=false".into(),
                "--enable-apiservice-patching=false".into(),
            ],
            &env,
            &dir.path().join("operator.log"),
        )?;
        let (secure, own_metrics) = (free_port(), free_port());
        let adapter = spawn(
            &cp.bin().join("keda-adapter"),
            &[
                format!("--secure-port={secure}"),
                format!("--bind-address={NODE_IP}"),
                format!("--port={own_metrics}"),
                format!("--cert-dir={cert_dir}"),
                format!("--tls-cert-file={cert_dir}/tls.crt"),
                format!("--tls-private-key-file={cert_dir}/tls.key"),
                format!("--metrics-service-address=127.0.0.1:{grpc}"),
                format!("--lister-kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
            ],
            &env,
            &dir.path().join("adapter.log"),
        )?;
        let keda = Keda {
            operator,
            adapter,
            cp,
            dir,
        };
        let c = reqwest::Client::new();
        let healthz = format!("http://127.0.0.1:{probes}/healthz");
        wait_until("KEDA operator healthy", Duration::from_secs(60), || async {
            match c.get(&healthz).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .with_context(|| keda.logs())?;
        serve_api_service(cp, GROUP, "keda-metrics-apiserver", secure)
            .await
            .with_context(|| keda.logs())?;
        Ok(keda)
    }

    /// The last lines of both logs, for a failure message.
    pub fn logs(&self) -> String {
        tails(self.dir.path(), &["operator.log", "adapter.log"])
    }
}

impl Drop for Keda {
    fn drop(&mut self) {
        drop_api_service(self.cp, GROUP);
        for c in [&mut self.adapter, &mut self.operator] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
