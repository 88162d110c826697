//! A real single-node cluster: the README's "without Docker" step 1, run
//! verbatim (release binaries, OCI images from `tests/cluster/images.sh`,
//! `tests/cluster/up.sh`), so pods really run: containerd and runc, a kubelet,
//! kube-proxy, CoreDNS, CNI on the bridge `pg0`. One per machine (kubelet has
//! fixed host paths), shared by the tests of a binary and torn down with
//! `tests/cluster/down.sh` when the process exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::controlplane::{bin_dir, ControlPlane};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the first `sh` block after `heading` in the README, without
/// comments and blank lines.
pub fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has a {heading:?} section"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("a sh block under {heading:?}"));
    block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The lines of step `n` (from its `# n.` comment to the next numbered one)
/// of the first `sh` block after `heading` in the README.
pub fn readme_step(heading: &str, n: u32) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = readme
        .split(heading)
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("a sh block under {heading:?}"))
        .to_owned();
    let numbered = |l: &str| {
        l.strip_prefix("# ")
            .and_then(|r| r.split_once('.'))
            .and_then(|(k, _)| k.parse::<u32>().ok())
    };
    let lines: Vec<String> = block
        .lines()
        .skip_while(|l| numbered(l) != Some(n))
        .skip(1)
        .take_while(|l| numbered(l).is_none())
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty(), "README {heading:?} has a step {n}");
    lines
}

/// The README heading of the Kubernetes path (steps 2–5 are shared with the
/// no-Docker path).
pub const README_KUBERNETES: &str = "## Kubernetes in five minutes";

/// The README heading of the no-Docker path.
pub const README_HEADING: &str = "### Without Docker";

/// Runs `lines` as one bash script from the repository root.
pub fn run_lines(lines: &[String], envs: &[(&str, String)]) -> anyhow::Result<String> {
    let script = format!("set -euo pipefail\n{}\n", lines.join("\n"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(&script).current_dir(repo());
    // A user's shell has none of the variables cargo sets for this test
    // binary; build scripts watch some of them (`CARGO_PKG_NAME`, …), and a
    // `cargo build` run with them would rebuild half the dependency graph.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let ours = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || [
                "CARGO",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&&*k);
        if ours {
            cmd.env_remove(&*k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().context("bash")?;
    if !out.status.success() {
        bail!(
            "failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The running cluster.
pub struct Cluster {
    /// Its API, with the usual helpers.
    pub cp: ControlPlane,
    state: PathBuf,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

extern "C" fn shutdown_shared() {
    if let Some(Ok(c)) = SHARED.get() {
        c.down();
    }
}

impl Cluster {
    /// The cluster of this test binary, started on first use.
    pub fn shared() -> &'static Cluster {
        let c = SHARED.get_or_init(|| {
            let c = Cluster::up().map_err(|e| format!("{e:#}"));
            // SAFETY: registering a plain extern "C" fn has no preconditions.
            unsafe { libc::atexit(shutdown_shared) };
            c
        });
        match c {
            Ok(c) => c,
            Err(e) => panic!("the real-node cluster failed to start: {e}"),
        }
    }

    /// Runs the README's no-Docker step 1 verbatim.
    fn up() -> anyhow::Result<Cluster> {
        let t0 = Instant::now();
        let lines = readme_block(README_HEADING);
        let state = lines
            .iter()
            .find_map(|l| l.strip_prefix("bash tests/cluster/up.sh "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(PathBuf::from)
            .context("the README block runs tests/cluster/up.sh STATE_DIR")?;
        // A cluster left by a killed run would block this one: take it down first.
        if Path::new("/run/pushgate-cluster.state").exists() {
            let old = std::fs::read_to_string("/run/pushgate-cluster.state")?;
            eprintln!("taking down a cluster left at {}", old.trim());
            down(Path::new(old.trim()));
        }
        let bin = bin_dir()?;
        let result = run_lines(&lines, &[]);
        if let Err(e) = result {
            eprintln!("{e:#}");
            for log in [
                "kubelet",
                "containerd",
                "kube-apiserver",
                "kube-proxy",
                "coredns",
            ] {
                eprintln!("--- {log}.log (last lines)\n{}", log_tail(&state, log, 15));
            }
            down(&state);
            bail!("README's no-Docker step 1 failed");
        }
        let cp = ControlPlane::attach(
            &state,
            &bin,
            &state.join("kubeconfig"),
            &state.join("pki/ca.crt"),
        );
        eprintln!(
            "real-node cluster up in {:?} at {}",
            t0.elapsed(),
            state.display()
        );
        Ok(Cluster { cp, state })
    }

    /// Where the cluster keeps its state (logs under `log/`).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The last `n` lines of a component's log (`kubelet`, `containerd`, …).
    pub fn log_tail(&self, component: &str, n: usize) -> String {
        log_tail(&self.state, component, n)
    }

    /// What a shell needs to follow the README on this cluster: the README's
    /// own `export` line, then the Helm homes kept under the state directory.
    pub fn shell_prelude(&self) -> Vec<String> {
        let mut lines: Vec<String> = readme_block(README_HEADING)
            .into_iter()
            .filter(|l| l.starts_with("export "))
            .collect();
        for (var, dir) in [
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_DATA_HOME", "helm/data"),
        ] {
            lines.push(format!("export {var}={}", self.state.join(dir).display()));
        }
        lines
    }

    /// Runs `ctr` against the node's containerd, in the Kubernetes namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let sock = self.state.join("containerd/containerd.sock");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .context("ctr")?;
        if !out.status.success() {
            bail!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The host pid of a running container, from the pod's
    /// `containerd://<id>` container id.
    pub fn container_pid(&self, container_id: &str) -> anyhow::Result<u32> {
        let id = container_id
            .strip_prefix("containerd://")
            .unwrap_or(container_id);
        let tasks = self.ctr(&["tasks", "ls"])?;
        tasks
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next()?.parse().ok())?
            })
            .with_context(|| format!("no task {id} in:\n{tasks}"))
    }

    fn down(&self) {
        down(&self.state);
    }
}

/// The last `n` lines of `log/<component>.log` under `state`.
fn log_tail(state: &Path, component: &str, n: usize) -> String {
    let text =
        std::fs::read_to_string(state.join(format!("log/{component}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `tests/cluster/down.sh STATE_DIR` (idempotent).
fn down(state: &Path) {
    let status = Command::new("bash")
        .arg(repo().join("tests/cluster/down.sh"))
        .arg(state)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("tests/cluster/down.sh {} failed", state.display());
    }
}
