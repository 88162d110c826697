//! Real kube-apiserver + etcd (+ controller-manager, scheduler, kwok) on loopback.
//!
//! Binaries come from `tests/controlplane/build.sh` (Go-built, cached under
//! `$HOME/.cache/pushgate-k8s`). One control plane is shared by the
//! namespace-scoped tests of a test binary ([`ControlPlane::shared`]); they
//! isolate themselves with a unique namespace each ([`ControlPlane::namespace`]).
//! Tests that act on every namespace take a [`ControlPlane::dedicated`] one.

use anyhow::{bail, Context as _};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod certs;
mod operator;
mod util;

pub use operator::{operator_binary, OperatorOptions, OperatorProcess};
pub use util::{free_port, http_get};

use crate::wait::wait_until_blocking;

use certs::make_certs;
use util::{run, tail};

/// Name of the fake node kwok manages.
pub const NODE: &str = "kwok-node-0";

/// A running control plane; everything is killed and removed on drop.
pub struct ControlPlane {
    dir: Mutex<Option<tempfile::TempDir>>,
    root: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
    ca: PathBuf,
    children: Mutex<Vec<(String, Child)>>,
}

/// Location of the build script, which also reports where the binaries are.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

/// Runs the (idempotent) build script and returns the bin directory.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let script = build_script();
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "control-plane build failed ({}); run `bash {}` and fix the error it prints",
            out.status,
            script.display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !dir.join("kube-apiserver").exists() {
        bail!("build script did not report a bin dir with kube-apiserver: {stdout}");
    }
    Ok(dir)
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

type Slot = OnceLock<Result<ControlPlane, String>>;

/// The control planes of this process by key, each started on first use.
/// Test files are modules of a few test binaries, so one process holds
/// tests that used to have a control plane each.
static SLOTS: Mutex<Vec<(&'static str, &'static Slot)>> = Mutex::new(Vec::new());

extern "C" fn shutdown_all() {
    let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    for (_, slot) in slots.iter() {
        if let Some(Ok(cp)) = slot.get() {
            cp.shutdown();
        }
    }
}

fn slot(key: &'static str) -> &'static Slot {
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = slots.iter().find(|(k, _)| *k == key) {
        return s;
    }
    if slots.is_empty() {
        // Statics are never dropped; atexit runs when the test harness exits.
        // SAFETY: registering a plain extern "C" fn has no preconditions.
        unsafe { libc::atexit(shutdown_all) };
    }
    let s: &'static Slot = Box::leak(Box::default());
    slots.push((key, s));
    s
}

impl ControlPlane {
    /// The control plane shared by the namespace-scoped tests of this test
    /// binary, started on first use and torn down when the process exits.
    /// Each test takes its own namespace ([`ControlPlane::namespace`]).
    pub fn shared() -> &'static ControlPlane {
        Self::keyed("shared")
    }

    /// A control plane of its own for a test that acts on the whole cluster
    /// (an operator watching all namespaces would reconcile every other
    /// test's PushGateways, and theirs would fight over its own). Started on
    /// first use of `key`, torn down when the process exits.
    pub fn dedicated(key: &'static str) -> &'static ControlPlane {
        assert_ne!(
            key, "shared",
            "the shared control plane is ControlPlane::shared()"
        );
        Self::keyed(key)
    }

    fn keyed(key: &'static str) -> &'static ControlPlane {
        // Started outside the list's lock: two keys may start at once.
        let cp = slot(key).get_or_init(|| ControlPlane::start().map_err(|e| format!("{e:#}")));
        match cp {
            Ok(cp) => cp,
            Err(e) => panic!("control plane {key:?} failed to start: {e}"),
        }
    }

    /// Builds (if needed) and starts etcd, kube-apiserver,
    /// kube-controller-manager, kube-scheduler and kwok, and a fake Node.
    pub fn start() -> anyhow::Result<ControlPlane> {
        let t0 = Instant::now();
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("pushgate-k8s-").tempdir()?;
        let root = dir.path().to_path_buf();
        let cp = ControlPlane {
            dir: Mutex::new(Some(dir)),
            kubeconfig: root.join("kubeconfig"),
            ca: root.join("ca.crt"),
            root,
            bin,
            children: Mutex::default(),
        };
        let certs = make_certs(&cp.root)?;
        let s = |p: &Path| p.display().to_string();

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        cp.spawn(
            "etcd",
            &[
                "--data-dir",
                &s(&cp.root.join("etcd")),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync",
            ],
        )?;
        cp.wait_for("etcd", Duration::from_secs(30), || etcd_healthy(etcd_port))?;

        cp.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1",
                "--secure-port",
                &api_port.to_string(),
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                "--tls-cert-file",
                &s(&certs.server),
                "--tls-private-key-file",
                &s(&certs.server_key),
                "--client-ca-file",
                &s(&certs.ca),
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-account-key-file",
                &s(&certs.sa_pub),
                "--service-account-signing-key-file",
                &s(&certs.sa_key),
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
            ],
        )?;
        std::fs::write(&cp.kubeconfig, format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority: {}\n\
             users:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\ncurrent-context: test\n",
            s(&certs.ca), s(&certs.admin), s(&certs.admin_key),
        ))?;
        cp.wait_for("kube-apiserver /readyz", Duration::from_secs(90), || {
            cp.kubectl_output(&["get", "--raw", "/readyz"])
                .is_ok_and(|o| o.status.success())
        })?;

        // The garbage collector learns about resource types added after it
        // starts only at its 30s discovery resync; with the CRD already there
        // it watches PushGateways from the start and cascades at once.
        cp.install_crds()?;

        let kc = s(&cp.kubeconfig);
        cp.spawn(
            "kube-controller-manager",
            &[
                "--kubeconfig",
                &kc,
                "--secure-port=0",
                "--leader-elect=false",
                "--root-ca-file",
                &s(&certs.ca),
                "--service-account-private-key-file",
                &s(&certs.sa_key),
                "--cluster-signing-cert-file",
                &s(&certs.ca),
                "--cluster-signing-key-file",
                &s(&certs.ca_key),
            ],
        )?;
        cp.spawn(
            "kube-scheduler",
            &[
                "--kubeconfig",
                &kc,
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )?;
        cp.spawn(
            "kwok",
            &[
                "--kubeconfig",
                &kc,
                "--manage-all-nodes=true",
                // Written by build.sh from the pinned kwok module: pod/node lifecycles.
                "--config",
                &s(&cp.bin.join("../kwok-stages.yaml")),
                "--server-address",
                &format!("127.0.0.1:{}", free_port()),
            ],
        )?;
        cp.kubectl_stdin(&["apply", "-f", "-"], &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels:\n    type: kwok\n    kubernetes.io/hostname: {NODE}\n\
             status:\n  allocatable: {{cpu: \"32\", memory: 256Gi, pods: \"110\"}}\n  capacity: {{cpu: \"32\", memory: 256Gi, pods: \"110\"}}\n"
        ))?;
        cp.wait_for(
            "kwok to mark the fake node Ready",
            Duration::from_secs(60),
            || {
                cp.kubectl_output(&[
                    "get",
                    "node",
                    NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_ok_and(|o| o.stdout == b"True")
            },
        )?;
        // The controller-manager creates the default ServiceAccount; its
        // presence shows the controllers are running.
        cp.wait_for(
            "kube-controller-manager (default ServiceAccount)",
            Duration::from_secs(60),
            || {
                cp.kubectl_output(&["get", "serviceaccount", "default", "-n", "default"])
                    .is_ok_and(|o| o.status.success())
            },
        )?;
        eprintln!(
            "control plane up in {:?} at {}",
            t0.elapsed(),
            cp.root.display()
        );
        Ok(cp)
    }

    /// A handle on a control plane something else runs (the real-node
    /// cluster of `tests/cluster/up.sh`): the same helpers, no processes of its own.
    pub fn attach(root: &Path, bin: &Path, kubeconfig: &Path, ca: &Path) -> ControlPlane {
        ControlPlane {
            dir: Mutex::new(None),
            root: root.to_owned(),
            bin: bin.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            ca: ca.to_owned(),
            children: Mutex::default(),
        }
    }

    fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.root.join(format!("{name}.log")))?;
        let child = Command::new(self.bin.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("HOME", &self.root)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.join(name).display()))?;
        self.children
            .lock()
            .unwrap()
            .push((name.to_string(), child));
        Ok(())
    }

    /// Waits for `check`, failing early (with the log tail) if a component died.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let mut dead = None;
        let r = wait_until_blocking(what, timeout, || {
            for (name, child) in self.children.lock().unwrap().iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    dead = Some((name.clone(), status));
                    return true;
                }
            }
            check()
        });
        if let Some((name, status)) = dead {
            bail!(
                "{name} exited ({status}) while waiting for {what}:\n{}",
                tail(&self.root.join(format!("{name}.log")))
            );
        }
        r
    }

    /// Writes a kubeconfig that authenticates with a ServiceAccount token
    /// (from `kubectl create token`), to run a client with only its RBAC.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
    ) -> anyhow::Result<PathBuf> {
        let token =
            self.kubectl(&["create", "token", account, "-n", namespace, "--duration=1h"])?;
        let server = self.kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])?;
        let path = self.root.join(format!("kubeconfig-{namespace}-{account}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {}\n\
                 users:\n- name: sa\n  user:\n    token: {}\n\
                 contexts:\n- name: test\n  context:\n    cluster: test\n    user: sa\ncurrent-context: test\n",
                self.ca.display(),
                token.trim(),
            ),
        )?;
        Ok(path)
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Directory of the Go-built binaries.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A fresh client; build one per test, since a client is bound to the
    /// tokio runtime it was first used on.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c
    }

    /// Runs kubectl and returns its raw output, whatever the exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.kubectl_cmd(args).output()?)
    }

    /// Runs kubectl, failing with its stderr unless it succeeds; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run(&mut self.kubectl_cmd(args))?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs kubectl with `stdin` piped in; returns the raw output.
    pub fn kubectl_stdin_output(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(stdin.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Like [`ControlPlane::kubectl_stdin_output`], failing unless kubectl succeeds.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let out = self.kubectl_stdin_output(args, stdin)?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Creates a namespace unique to this process and call: `<prefix>-<pid>-<n>`.
    pub fn namespace(&self, prefix: &str) -> anyhow::Result<String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &ns])?;
        Ok(ns)
    }

    /// Creates the Secret `name` in `ns` with one literal `key=value`.
    pub fn secret(&self, ns: &str, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
        let literal = format!("--from-literal={key}={value}");
        self.kubectl(&["create", "secret", "generic", name, "-n", ns, &literal])?;
        Ok(())
    }

    /// Directory holding certs, logs and etcd data.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Kills every component and removes the temp dir (idempotent).
    pub fn shutdown(&self) {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, c) in children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(self.dir.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Path of the generated PushGateway CRD in the repository.
pub fn crd_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/pushgate.dev_pushgateways.yaml")
}

impl ControlPlane {
    /// Installs KEDA's CRDs (from KEDA's pinned module, as `build.sh`
    /// fetched them), so ScaledObjects are checked by its schema and KEDA's
    /// operator finds every kind it watches.
    pub fn install_keda_crds(&self) -> anyhow::Result<()> {
        let dir = self.bin.join("../keda-crds");
        anyhow::ensure!(
            dir.join("keda.sh_scaledobjects.yaml").is_file(),
            "{} is missing KEDA's CRDs: run tests/controlplane/build.sh",
            dir.display()
        );
        self.kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()])?;
        self.wait_established(&[
            "crd/scaledobjects.keda.sh",
            "crd/triggerauthentications.keda.sh",
        ])
    }

    /// Waits until `crds` are Established. `kubectl wait` fails at once on
    /// a CRD whose status has no conditions yet (just created), so that
    /// failure is retried, a bounded number of times.
    fn wait_established(&self, crds: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=30s"];
        args.extend_from_slice(crds);
        wait_until_blocking(
            &format!("{crds:?} to be Established"),
            Duration::from_secs(60),
            || self.kubectl(&args).map_err(|e| format!("{e:#}")),
        )
        .map(drop)
    }

    /// Applies the committed CRD and waits until it is served (idempotent).
    pub fn install_crds(&self) -> anyhow::Result<()> {
        self.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &crd_path().display().to_string(),
        ])?;
        self.wait_established(&["crd/pushgateways.pushgate.dev"])
    }
}
