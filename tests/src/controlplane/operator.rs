//! The real `pushgate-operator` binary as a child process.

use super::util::{free_port, http_get, tail};
use super::ControlPlane;
use crate::wait::wait_until_blocking;
use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

/// A `pushgate-operator` process against a [`ControlPlane`]; killed on drop.
pub struct OperatorProcess {
    child: Child,
    /// Identity written to the leader Lease.
    pub identity: String,
    /// Port of its `/metrics` and `/healthz`.
    pub metrics_port: u16,
    log: PathBuf,
}

/// Knobs of an [`OperatorProcess`].
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Namespace to watch; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Lease name.
    pub lease_name: String,
    /// Lease identity.
    pub identity: String,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// Renew interval in seconds.
    pub renew_interval: u64,
    /// Kubeconfig to run with; the admin one when `None`.
    pub kubeconfig: Option<PathBuf>,
}

impl OperatorOptions {
    /// Defaults for a test namespace: short lease so handovers are quick.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: Some(namespace.into()),
            ..Self::all_namespaces(namespace, identity)
        }
    }

    /// Watching every namespace, electing in `lease_namespace` (as the chart runs it).
    pub fn all_namespaces(lease_namespace: &str, identity: &str) -> Self {
        Self {
            namespace: None,
            lease_namespace: lease_namespace.into(),
            lease_name: "pushgate-operator".into(),
            identity: identity.into(),
            lease_duration: 6,
            renew_interval: 1,
            kubeconfig: None,
        }
    }
}

/// The `pushgate-operator` binary built next to this test executable.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/pushgate-operator
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("pushgate-operator"))
        .context("locating the target dir")?;
    if !bin.exists() {
        bail!(
            "{} is missing; build it with `cargo build -p operator --bins` \
             (or run `cargo test --workspace`, which builds it)",
            bin.display()
        );
    }
    // `cargo test -p pushgate-e2e` does not rebuild another package's
    // binaries: refuse to test an operator older than its sources.
    let built = std::fs::metadata(&bin)?.modified()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/src");
    if let Some(newer) = newest(&src)?.filter(|(t, _)| *t > built) {
        bail!(
            "{} is older than {}; rebuild it with `cargo build -p operator --bins`",
            bin.display(),
            newer.1.display()
        );
    }
    Ok(bin)
}

/// The most recently modified file under `dir`, recursively.
fn newest(dir: &Path) -> anyhow::Result<Option<(SystemTime, PathBuf)>> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let candidate = if entry.file_type()?.is_dir() {
            newest(&path)?
        } else {
            Some((entry.metadata()?.modified()?, path))
        };
        if let Some(c) = candidate {
            if best.as_ref().is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
    }
    Ok(best)
}

impl OperatorProcess {
    /// Starts the operator and waits until its `/healthz` answers.
    pub fn start(cp: &ControlPlane, opts: &OperatorOptions) -> anyhow::Result<OperatorProcess> {
        let metrics_port = free_port();
        let log = cp.root().join(format!("operator-{}.log", opts.identity));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(operator_binary()?);
        if let Some(ns) = &opts.namespace {
            cmd.args(["--namespace", ns]);
        }
        let child = cmd
            .args(["--lease-namespace", &opts.lease_namespace])
            .args([
                "--lease-name",
                &opts.lease_name,
                "--identity",
                &opts.identity,
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--lease-duration", &opts.lease_duration.to_string()])
            .args(["--renew-interval", &opts.renew_interval.to_string()])
            .env(
                "KUBECONFIG",
                opts.kubeconfig.as_deref().unwrap_or(cp.kubeconfig_path()),
            )
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let mut op = OperatorProcess {
            child,
            identity: opts.identity.clone(),
            metrics_port,
            log,
        };
        let mut exited = None;
        let r = wait_until_blocking("operator /healthz", Duration::from_secs(20), || {
            if let Ok(Some(s)) = op.child.try_wait() {
                exited = Some(s);
                return true;
            }
            http_get(metrics_port, "/healthz").is_some_and(|b| b == "ok")
        });
        if let Some(s) = exited {
            bail!("operator exited ({s}):\n{}", tail(&op.log));
        }
        r.with_context(|| format!("operator log:\n{}", tail(&op.log)))?;
        Ok(op)
    }

    /// Current value of an unlabelled metric or a labelled series, e.g.
    /// `pushgate_operator_reconciles_total{result="ok"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        http_get(self.metrics_port, "/metrics")
            .and_then(|body| {
                body.lines().find_map(|l| {
                    l.strip_prefix(series)
                        .and_then(|rest| rest.strip_prefix(' '))
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0.0)
    }

    /// The object `name` the operator writes, waited for (30 s); panics
    /// with the operator's log if it does not appear.
    pub async fn object<K>(&self, api: &kube::Api<K>, name: &str) -> K
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        crate::wait::wait_until(name, Duration::from_secs(30), || async {
            api.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", self.log_tail()))
    }

    /// The end of the operator's log so far (for assertion messages).
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// The operator's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILLs the process: no lease release, the hard failover case.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl OperatorProcess {
    /// SIGTERM and wait (bounded) for a clean exit, which releases the Lease.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_until_blocking(
            "operator to exit after SIGTERM",
            Duration::from_secs(15),
            || !self.running(),
        )
    }
}
