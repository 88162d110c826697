//! Every operator feature on gateways that really run: the README's
//! no-Docker cluster (a kubelet, containerd and runc, kube-proxy, CoreDNS),
//! the chart's operator Deployment from its image, and PushGateways whose
//! rendered Deployments, Secrets, probes, volumes and security settings are
//! executed as written. Clients reach the gateways only through their
//! Services' ClusterIPs (kube-proxy), as in-cluster clients would.
//!
//! The tests share one cluster and one `helm install`, and run one at a time.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pushgate::routing::{bucket, track_of, Track};
use pushgate_e2e::cluster::{readme_step, run_lines, Cluster, README_KUBERNETES};
use pushgate_e2e::controlplane::ControlPlane;
use pushgate_e2e::gateway::{publish, publish_json, PublishOptions};
use pushgate_e2e::pki::TestCa;
use pushgate_e2e::process::run_ok;
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::subscriber::{follow_to_marker, Ticker, TracedFleet};
use pushgate_e2e::wait::wait_until;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(180);
/// The images `tests/cluster/images.sh` builds, as the chart and CRD default to.
const GATEWAY_IMAGE: &str = "ghcr.io/pushgate/pushgate:0.1.0";
const OPERATOR_IMAGE: &str = "ghcr.io/pushgate/pushgate-operator:0.1.0";
/// The namespace of the README's `helm install`.
const RELEASE_NS: &str = "pushgate-system";

/// One test at a time: they share the node's two cores and the operator.
/// (An async lock: each test has its own runtime and holds it across awaits.)
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The README's steps 2–4, run verbatim once per test binary (with step 5's
/// first command, which stops step 4's background jobs): the operator from
/// the chart, `examples/minimal.yaml`, and a stream through `kubectl
/// port-forward`. Returns the cluster and what step 4's stream printed.
fn installed() -> (&'static Cluster, &'static str) {
    static INSTALL: OnceLock<String> = OnceLock::new();
    let cluster = Cluster::shared();
    let out = INSTALL.get_or_init(|| {
        let t0 = Instant::now();
        let mut lines = cluster.shell_prelude();
        for step in 2..=4 {
            lines.extend(readme_step(README_KUBERNETES, step));
        }
        let stop = readme_step(README_KUBERNETES, 5)[0]
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            stop.starts_with("kill %"),
            "step 5 starts by stopping step 4: {stop}"
        );
        // Step 4's stream runs in the background: let it print first.
        lines.push("sleep 3".into());
        lines.push(stop);
        let out = run_lines(&lines, &[]).unwrap_or_else(|e| {
            panic!(
                "{e:#}\n--- kubelet\n{}\n--- containerd\n{}",
                cluster.log_tail("kubelet", 30),
                cluster.log_tail("containerd", 30)
            )
        });
        eprintln!("README steps 2-4 on the real node in {:?}", t0.elapsed());
        out
    });
    (cluster, out.as_str())
}

/// One scenario: the cluster to itself (tests run one at a time) and a
/// namespace of its own, deleted when the scenario ends.
struct Scenario {
    _one: tokio::sync::MutexGuard<'static, ()>,
    cluster: &'static Cluster,
    ns: String,
}

impl Scenario {
    async fn new(prefix: &str) -> Scenario {
        let one = serial().await;
        let (cluster, _) = installed();
        let ns = cluster.cp.namespace(prefix).unwrap();
        Scenario {
            _one: one,
            cluster,
            ns,
        }
    }

    fn cp(&self) -> &'static ControlPlane {
        &self.cluster.cp
    }

    /// Applies PushGateway `name` in this namespace with `spec` (YAML lines
    /// indented by two).
    fn pushgateway(&self, name: &str, spec: &str) {
        apply(
            self.cp(),
            &format!(
                "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n{spec}",
                self.ns
            ),
        );
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self
            .cp()
            .kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

/// Condition `type_` of a PushGateway (as JSON), if it is set.
fn condition(pgw: &Value, type_: &str) -> Option<Value> {
    pgw["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// `kubectl get <what> -o json`.
fn get_json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&cp.kubectl(&a).unwrap()).unwrap()
}

/// The pods of PushGateway `name` (both tracks).
fn gateway_pods(cp: &ControlPlane, ns: &str, name: &str) -> Vec<Value> {
    let sel = format!("app.kubernetes.io/instance={name}");
    get_json(cp, &["pods", "-n", ns, "-l", &sel])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `http://<ClusterIP>:<port>` of a Service.
fn service_url(cp: &ControlPlane, ns: &str, name: &str) -> String {
    let svc = get_json(cp, &["service", name, "-n", ns]);
    let port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .unwrap()["port"]
        .clone();
    format!(
        "http://{}:{port}",
        svc["spec"]["clusterIP"].as_str().unwrap()
    )
}

/// Waits until PushGateway `name` is Ready with `replicas` ready pods, all
/// of them in `ready` state through their real probes.
async fn wait_ready(cp: &ControlPlane, ns: &str, name: &str, replicas: usize) {
    wait_until(&format!("{ns}/{name} Ready"), WAIT, || async {
        let pgw = get_json(cp, &["pushgateway", name, "-n", ns]);
        let cond = condition(&pgw, "Ready");
        let pods = gateway_pods(cp, ns, name);
        let n = pods.iter().filter(|p| ready(p)).count();
        match cond {
            Some(c) if c["status"] == "True" && n == replicas && pods.len() == replicas => Ok(()),
            c => Err(format!("condition {c:?}, {n}/{} pods ready", pods.len())),
        }
    })
    .await
    .unwrap();
    // Ready pods reach the Service once kube-proxy has synced its endpoints.
    let url = service_url(cp, ns, name);
    let addr = url.trim_start_matches("http://").to_owned();
    wait_until(&format!("{addr} ({name}) accepts"), WAIT, || async {
        tokio::net::TcpStream::connect(&addr)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
}

/// Waits until kube-proxy balances the `http` port of Service `name` over
/// exactly `n` endpoints (its iptables rules name each one), so that new
/// streams through the Service spread over every ready pod.
async fn wait_routed(ns: &str, name: &str, n: usize) {
    let tag = format!("\"{ns}/{name}:http -> ");
    wait_until(&format!("{ns}/{name} routed to {n}"), WAIT, || async {
        let out = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .map_err(|e| e.to_string())?;
        let rules = String::from_utf8_lossy(&out.stdout);
        let routed: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SVC-") && l.contains(&tag))
            .collect();
        match routed.len() {
            k if k == n => Ok(()),
            _ => Err(format!("{routed:#?}")),
        }
    })
    .await
    .unwrap();
}

fn apply(cp: &ControlPlane, doc: &str) {
    cp.kubectl_stdin(&["apply", "-f", "-"], doc).unwrap();
}

fn merge_patch(cp: &ControlPlane, ns: &str, name: &str, patch: &str) {
    cp.kubectl(&[
        "patch",
        "pushgateway",
        name,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        patch,
    ])
    .unwrap();
}

/// A client that opens a new connection per request, so each stream goes
/// through kube-proxy's balancing on its own.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The host pid of the gateway container of `pod`.
fn pid_of(cluster: &Cluster, pod: &Value) -> u32 {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .expect("a started container");
    cluster.container_pid(id).unwrap()
}

#[tokio::test]
async fn readme_install_runs_the_operator_and_a_gateway_in_real_pods() {
    let _one = serial().await;
    let (cluster, step4) = installed();
    let cp = &cluster.cp;

    // Step 4 streamed through kubectl port-forward (kubelet → containerd).
    assert!(
        step4.contains("data: hello from Kubernetes"),
        "README step 4 printed:\n{step4}"
    );

    // The chart's operator Deployment runs from its image, with its own
    // ServiceAccount; one of its pods holds the Lease.
    let pods = get_json(cp, &["pods", "-n", RELEASE_NS])["items"]
        .as_array()
        .cloned()
        .unwrap();
    let operators: Vec<&Value> = pods
        .iter()
        .filter(|p| p["spec"]["containers"][0]["image"] == OPERATOR_IMAGE)
        .collect();
    assert!(!operators.is_empty(), "no operator pod: {pods:#?}");
    let names: Vec<&str> = operators
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    for p in &operators {
        assert!(ready(p), "operator pod not ready: {:#}", p["status"]);
        assert_eq!(p["spec"]["serviceAccountName"], "pushgate");
    }
    let lease = get_json(cp, &["lease", "pushgate-operator", "-n", RELEASE_NS]);
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert!(
        names.iter().any(|n| holder.starts_with(n)),
        "lease held by {holder:?}, not one of the operator pods {names:?}"
    );

    // examples/minimal.yaml: one pod, Ready through its real probes, its
    // embedded store on a bound claim, no restarts.
    let table = cp
        .kubectl(&["get", "pgw", "minimal", "-n", "default"])
        .unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["minimal", "True", "AllReplicasReady", "1"],
        "{table}"
    );
    let gw = gateway_pods(cp, "default", "minimal");
    assert_eq!(gw.len(), 1, "{gw:#?}");
    assert!(ready(&gw[0]));
    assert_eq!(gw[0]["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(gw[0]["spec"]["containers"][0]["image"], GATEWAY_IMAGE);
    let claims = get_json(cp, &["pvc", "-n", "default"]);
    assert!(
        claims["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"]["phase"] == "Bound"),
        "{claims:#}"
    );

    // Through the Service's ClusterIP: publish, then resume from earliest.
    let base = service_url(cp, "default", "minimal");
    let c = http();
    publish(&c, &base, "pods", "via ClusterIP").await.unwrap();
    let url = format!("{base}/v1/stream?topic=pods");
    let Opened::Stream(mut s) = SseClient::open(&c, &url, Some("earliest")).await.unwrap() else {
        panic!("stream refused")
    };
    let ev = s.next(Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(ev.data, "via ClusterIP");

    // The pod's process runs as the image's user, on a read-only root, with
    // no shell in the image; its open-file limit is what it can hold.
    let pid = pid_of(cluster, &gw[0]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(uid, "65532", "{status}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    let opts = root.split_whitespace().nth(5).unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "root mount: {root}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/root/bin/sh")).exists(),
        "the gateway image has a shell"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        nofile >= 16_384,
        "a gateway pod can hold only {nofile} descriptors:\n{limits}"
    );
}

#[tokio::test]
async fn a_crashed_and_a_deleted_pod_lose_no_acknowledged_event() {
    let sc = Scenario::new("crash").await;
    let (cluster, cp, ns) = (sc.cluster, sc.cp(), sc.ns.clone());
    sc.pushgateway("solo", "  delivery: {retry: 200ms}\n");
    wait_ready(cp, &ns, "solo", 1).await;
    let base = service_url(cp, &ns, "solo");
    let c = http();
    let follower = tokio::spawn(follow_to_marker(
        c.clone(),
        vec![base.clone()],
        "/v1/stream?topic=crash".into(),
        Some("earliest".into()),
        "END",
        Duration::from_secs(300),
    ));
    let ticker = Ticker::start(&c, base.clone(), "crash", Duration::from_millis(50));
    ticker.wait_more(20, WAIT).await.unwrap();

    // A crash: SIGKILL to the gateway process; kubelet restarts the container.
    let pod = gateway_pods(cp, &ns, "solo").remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let pid = pid_of(cluster, &pod);
    nix_kill(pid);
    wait_until("the container restarted", WAIT, || async {
        let p = gateway_pods(cp, &ns, "solo");
        let restarts = p
            .first()
            .map(|p| p["status"]["containerStatuses"][0]["restartCount"].clone());
        match restarts {
            Some(Value::Number(n)) if n.as_u64() == Some(1) && ready(&p[0]) => Ok(()),
            r => Err(format!("restarts {r:?}")),
        }
    })
    .await
    .unwrap();
    ticker.wait_more(20, WAIT).await.unwrap();

    // A force deletion: a new pod mounts the same claim at once, while the
    // old container may still be running (it waits for the data directory).
    cp.kubectl(&[
        "delete",
        "pod",
        &name,
        "-n",
        &ns,
        "--force",
        "--grace-period=0",
    ])
    .unwrap();
    wait_until("a new pod Ready", WAIT, || async {
        let p = gateway_pods(cp, &ns, "solo");
        match p.as_slice() {
            [p] if p["metadata"]["name"] != name.as_str() && ready(p) => Ok(()),
            ps => Err(format!("{} pods", ps.len())),
        }
    })
    .await
    .unwrap();
    ticker.wait_more(20, WAIT).await.unwrap();

    let sent = ticker.finish(&c, &base, "crash").await;
    let seen = follower.await.unwrap().unwrap();
    let got: Vec<&str> = seen.events.iter().map(|e| e.data.as_str()).collect();
    let want: Vec<&str> = sent.iter().map(String::as_str).collect();
    assert_eq!(got, want, "every acknowledged event once, in order");
    eprintln!(
        "crash + delete: {} events, {} connections, {} refusals",
        sent.len(),
        seen.connections,
        seen.refusals
    );
}

fn nix_kill(pid: u32) {
    // SAFETY: kill(2) with a pid we read from containerd; no memory involved.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {pid}");
}

/// A Redis the pods reach on the node's bridge address, and a Secret for it.
fn redis_for_pods(cp: &ControlPlane, ns: &str) -> RedisServer {
    let redis = RedisServer::start_on([10, 244, 0, 1].into()).unwrap();
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "redis",
        "-n",
        ns,
        &format!("--from-literal=url={}", redis.url()),
    ])
    .unwrap();
    redis
}

#[tokio::test]
async fn a_rolling_update_of_real_pods_keeps_every_stream_exactly_once() {
    const N: usize = 200;
    let sc = Scenario::new("rolling").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    sc.pushgateway("gw", "  replicas: 2\n  store: {redis: {secretRef: {name: redis}}}\n  delivery: {retry: 200ms, heartbeat: 15s}\n  limits: {acceptRate: 100000}\n");
    wait_ready(cp, &ns, "gw", 2).await;
    let before: Vec<String> = gateway_pods(cp, &ns, "gw")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let base = service_url(cp, &ns, "gw");
    let c = http();
    let fleet = TracedFleet::spawn(&c, std::slice::from_ref(&base), "roll", N);
    let ticker = Ticker::start(&c, base.clone(), "roll", Duration::from_millis(40));
    fleet.wait_connected_once(WAIT).await.unwrap();

    // A config change rolls the pods: new ones start, old ones drain.
    merge_patch(
        cp,
        &ns,
        "gw",
        r#"{"spec":{"delivery":{"heartbeat":"10s"}}}"#,
    );
    wait_until("both pods replaced", WAIT, || async {
        let pods = gateway_pods(cp, &ns, "gw");
        let fresh = pods
            .iter()
            .filter(|p| {
                ready(p) && !before.contains(&p["metadata"]["name"].as_str().unwrap().to_owned())
            })
            .count();
        if fresh == 2 && pods.len() == 2 {
            Ok(())
        } else {
            Err(format!("{fresh} new of {} pods", pods.len()))
        }
    })
    .await
    .unwrap();
    let sent = ticker.finish(&c, &base, "roll").await;
    let moved = fleet.connections().iter().filter(|n| **n > 1).count();
    fleet.finish(&sent).await;
    eprintln!(
        "rolling update: {N} subscribers, {} events, {moved} reconnected",
        sent.len()
    );
    assert!(moved > 0, "no stream was moved by the rollout");
}

/// `pushgate_streams_by_track{track=...}` summed over the pods of a track,
/// scraped from each pod's metrics port on its pod IP.
async fn streams_by_track(c: &reqwest::Client, pods: &[Value]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for p in pods.iter().filter(|p| ready(p)) {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let Ok(r) = c.get(format!("http://{ip}:9090/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("pushgate_streams_by_track{track=\"") {
                let (track, v) = rest.split_once("\"} ").unwrap();
                *by.entry(track.to_owned()).or_default() += v.parse::<f64>().unwrap() as usize;
            }
        }
    }
    by
}

#[tokio::test]
async fn canary_weights_move_exactly_the_hashed_streams_between_real_pods() {
    const N: usize = 500;
    let sc = Scenario::new("canary").await;
    let (cluster, cp, ns) = (sc.cluster, sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    // The canary image: the same bits under a new tag, as a registry would hold.
    let canary_image = "ghcr.io/pushgate/pushgate:0.1.0-canary";
    let _ = cluster.ctr(&["images", "tag", "--force", GATEWAY_IMAGE, canary_image]);
    sc.pushgateway(
        "gw",
        &format!("  image: {GATEWAY_IMAGE}\n  store: {{redis: {{secretRef: {{name: redis}}}}}}\n  delivery: {{retry: 200ms}}\n  limits: {{acceptRate: 100000}}\n  canary: {{image: {canary_image}, weight: 0}}\n"),
    );
    wait_ready(cp, &ns, "gw", 2).await;
    let uid = get_json(cp, &["pushgateway", "gw", "-n", &ns])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = service_url(cp, &ns, "gw");
    let c = http();
    let fleet = TracedFleet::spawn(&c, std::slice::from_ref(&base), "canary", N);
    let buckets: Vec<u16> = fleet.traces.iter().map(|t| bucket(&uid, t)).collect();
    let ticker = Ticker::start(&c, base.clone(), "canary", Duration::from_millis(40));
    fleet.wait_connected_once(WAIT).await.unwrap();

    let mut previous = 0u16;
    for weight in [0u16, 30, 100, 0] {
        let before = fleet.connections();
        merge_patch(
            cp,
            &ns,
            "gw",
            &format!(r#"{{"spec":{{"canary":{{"weight":{weight}}}}}}}"#),
        );
        let bp = weight * 100;
        let want = buckets
            .iter()
            .filter(|b| track_of(**b, bp) == Track::Canary)
            .count();
        wait_until(
            &format!("{weight}%: {want} canary streams"),
            WAIT,
            || async {
                let by = streams_by_track(&c, &gateway_pods(cp, &ns, "gw")).await;
                let (s, k) = (
                    by.get("stable").copied().unwrap_or(0),
                    by.get("canary").copied().unwrap_or(0),
                );
                if s == N - want && k == want {
                    Ok(())
                } else {
                    Err(format!("{by:?}"))
                }
            },
        )
        .await
        .unwrap();
        // Every moved subscriber has reconnected on its new track: the
        // closings of this change are over, so one closed without moving
        // would show now.
        fleet
            .wait_moved(&buckets, &before, previous * 100, bp, WAIT)
            .await
            .unwrap();
        fleet.assert_moved_exactly(&buckets, &before, previous * 100, bp);
        eprintln!("canary {weight}%: {want} canary streams");
        previous = weight;
    }
    let sent = ticker.finish(&c, &base, "canary").await;
    fleet.finish(&sent).await;
}

#[tokio::test]
async fn tls_and_tokens_hold_through_the_service() {
    let sc = Scenario::new("secure").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let ca = tls_secret(cp, &ns, "cert");
    let secret = "a-shared-hs256-secret-of-32-bytes!";
    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "jwt",
        "-n",
        &ns,
        &format!("--from-literal=key={secret}"),
    ])
    .unwrap();
    sc.pushgateway(
        "secure",
        "  auth: {keySecretRef: {name: jwt}, algorithm: hs256}\n  tls: {secretName: cert}\n",
    );
    wait_ready(cp, &ns, "secure", 1).await;
    let plain = service_url(cp, &ns, "secure");
    let addr: std::net::SocketAddr = plain.trim_start_matches("http://").parse().unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());

    // No token: 401 over HTTPS (the probes got in without one).
    let r = c
        .get(format!("{base}/v1/stream?topic=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    // Plain HTTP is not served.
    let plain_answer = http()
        .get(format!("{plain}/v1/stream?topic=t"))
        .send()
        .await;
    assert!(
        plain_answer
            .as_ref()
            .map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered {plain_answer:?}"
    );

    // A token minted by `pushgate token` with the same secret works.
    let token = mint(
        secret,
        &["--sub", "t1", "--subscribe", "t", "--publish", "t"],
    );
    publish_json(
        &c,
        &base,
        "t",
        "secret",
        PublishOptions::token(Some(&token)),
    )
    .await
    .unwrap();
    let headers = [("authorization".to_owned(), format!("Bearer {token}"))];
    let url = format!("{base}/v1/stream?topic=t");
    let Opened::Stream(mut s) = SseClient::open_with(&c, &url, Some("earliest"), &headers)
        .await
        .unwrap()
    else {
        panic!("a valid token was refused")
    };
    assert_eq!(
        s.next(Duration::from_secs(10)).await.unwrap().unwrap().data,
        "secret"
    );
}

/// A `kubernetes.io/tls` Secret `name` for `localhost`, signed by the CA returned.
fn tls_secret(cp: &ControlPlane, ns: &str, name: &str) -> TestCa {
    let ca = TestCa::new().unwrap();
    let leaf = ca.leaf("gateway").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = leaf.write_to(dir.path()).unwrap();
    cp.kubectl(&[
        "create",
        "secret",
        "tls",
        name,
        "-n",
        ns,
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    ca
}

#[tokio::test]
async fn a_real_pod_serves_http3_through_a_udp_service_port() {
    use pushgate_e2e::h3_client::H3Client;
    let sc = Scenario::new("quic").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let ca = tls_secret(cp, &ns, "cert");
    sc.pushgateway(
        "quic",
        "  tls: {secretName: cert}\n  protocols: {http3: {enabled: true}}\n",
    );
    wait_ready(cp, &ns, "quic", 1).await;
    let svc = get_json(cp, &["service", "quic", "-n", &ns]);
    let h3 = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "h3")
        .cloned()
        .expect("an h3 Service port");
    assert_eq!(
        (h3["protocol"].as_str(), h3["port"].as_i64()),
        (Some("UDP"), Some(80))
    );
    let tcp: std::net::SocketAddr = service_url(cp, &ns, "quic")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // Over TCP the Service answers HTTPS and advertises its UDP port.
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", tcp)
        .build()
        .unwrap();
    let health = c
        .get(format!("https://localhost:{}/healthz", tcp.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.headers()["alt-svc"], "h3=\":80\"; ma=86400");
    // Over QUIC, through kube-proxy's UDP rules to the pod.
    let mut client = H3Client::connect(tcp, &ca.pem).await.unwrap();
    let (status, body) = client.publish("q", "over quic", &[]).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let mut s = client
        .stream("topic=q", Some("earliest"), &[])
        .await
        .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(
        s.next(Duration::from_secs(10)).await.unwrap().unwrap().data,
        "over quic"
    );
    client.close().await;
}

/// `pushgate token` with `secret` as the key.
fn mint(secret: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, secret).unwrap();
    pushgate_e2e::gateway::mint_token(&key, args).unwrap()
}

#[tokio::test]
async fn a_gateway_whose_image_cannot_be_pulled_is_degraded_and_alone() {
    let sc = Scenario::new("badimage").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    sc.pushgateway("broken", "  image: ghcr.io/pushgate/does-not-exist:1\n");
    let reason = wait_until("Degraded with the pod's reason", WAIT, || async {
        let pgw = get_json(cp, &["pushgateway", "broken", "-n", &ns]);
        let cond = condition(&pgw, "Degraded").filter(|c| c["status"] == "True");
        match cond {
            Some(c) => Ok(c),
            None => Err(format!("{:#}", pgw["status"])),
        }
    })
    .await
    .unwrap();
    let why = reason["reason"].as_str().unwrap();
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&why),
        "{reason:#}"
    );
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("does-not-exist"),
        "{reason:#}"
    );
    let table = cp
        .kubectl(&["get", "pushgateway", "broken", "-n", &ns])
        .unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["broken", "False", why], "{table}");
    let describe = cp
        .kubectl(&["describe", "pushgateway", "broken", "-n", &ns])
        .unwrap();
    assert!(describe.contains(why), "{describe}");
    // The README's gateway is untouched.
    let minimal = gateway_pods(cp, "default", "minimal");
    assert!(minimal.iter().all(ready), "{minimal:#?}");
}

#[tokio::test]
async fn an_auto_breaker_on_a_real_pod_shows_in_the_status_and_takes_new_marks_live() {
    let sc = Scenario::new("breaker").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    // 10 of 20 streams trip the connections layer; 5 reset it.
    sc.pushgateway(
        "gw",
        "  store: {redis: {secretRef: {name: redis}}}\n  delivery: {retry: 200ms}\n  limits: {maxConnections: 20}\n  degrade: {connections: auto, auto: {connectionsTrip: 0.5, connectionsReset: 0.25}}\n",
    );
    wait_ready(cp, &ns, "gw", 1).await;
    let pod = gateway_pods(cp, &ns, "gw").remove(0);
    let (name, uid) = (
        pod["metadata"]["name"].as_str().unwrap().to_owned(),
        pod["metadata"]["uid"].clone(),
    );
    let layer = |want_status: &'static str, want_reason: &'static str| {
        let ns = ns.clone();
        async move {
            wait_until(
                &format!("ConnectionsDegraded {want_reason}"),
                WAIT,
                || async {
                    let pgw = get_json(cp, &["pushgateway", "gw", "-n", &ns]);
                    match condition(&pgw, "ConnectionsDegraded") {
                        Some(c) if c["status"] == want_status && c["reason"] == want_reason => {
                            Ok(c)
                        }
                        c => Err(format!("{c:?}")),
                    }
                },
            )
            .await
            .unwrap()
        }
    };
    // The operator hears the pod before anything trips.
    let armed = layer("False", "AutoArmed").await;
    assert!(
        armed["message"]
            .as_str()
            .unwrap()
            .contains("1 of 1 pods answered"),
        "{armed:#}"
    );

    let base = service_url(cp, &ns, "gw");
    let url = format!("{base}/v1/stream?topic=breaker");
    let c = http();
    let mut open = Vec::new();
    for _ in 0..10 {
        match SseClient::open(&c, &url, None).await.unwrap() {
            Opened::Stream(s) if s.refusal().is_none() => open.push(s),
            Opened::Stream(s) => panic!("refused early: {:?}", s.refusal()),
            Opened::Refused(st, body) => panic!("{st}: {body}"),
        }
    }
    let t_full = Instant::now();
    let tripped = layer("True", "AutoTripped").await;
    let seen_tripped = t_full.elapsed();
    assert!(
        tripped["message"].as_str().unwrap().contains(&name),
        "{tripped:#}"
    );
    let events = cp
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=BreakerTripped",
        ])
        .unwrap();
    assert!(events.contains("BreakerTripped"), "{events}");
    // A new EventSource is refused the safe way: a 200 stream with `retry:`.
    match SseClient::open(&c, &url, None).await.unwrap() {
        Opened::Stream(s) => assert!(s.refusal().is_some(), "admitted while tripped"),
        Opened::Refused(st, body) => panic!("an EventSource got {st}: {body}"),
    }

    // New marks put 10 of 20 under the reset mark: the breaker resets on
    // the same pod, which is neither replaced nor restarted.
    merge_patch(
        cp,
        &ns,
        "gw",
        r#"{"spec":{"degrade":{"auto":{"connectionsTrip":0.9,"connectionsReset":0.6}}}}"#,
    );
    let t_patch = Instant::now();
    layer("False", "AutoArmed").await;
    eprintln!(
        "breaker on a real pod: 10th stream -> status AutoTripped {seen_tripped:?}; \
         patch of the marks -> status AutoArmed {:?} (status polled every 250 ms)",
        t_patch.elapsed()
    );
    let pods = gateway_pods(cp, &ns, "gw");
    assert_eq!(pods.len(), 1, "{pods:#?}");
    assert_eq!(pods[0]["metadata"]["uid"], uid, "the pod was replaced");
    assert_eq!(pods[0]["status"]["containerStatuses"][0]["restartCount"], 0);
    let admitted = wait_until("a new stream admitted", WAIT, || async {
        match SseClient::open(&c, &url, None).await.unwrap() {
            Opened::Stream(s) if s.refusal().is_none() => Ok(s),
            Opened::Stream(s) => Err(format!("refused: {:?}", s.refusal())),
            Opened::Refused(st, body) => panic!("{st}: {body}"),
        }
    })
    .await
    .unwrap();
    open.push(admitted);
    // Every stream opened along the way is still live.
    publish(&c, &base, "breaker", "still here").await.unwrap();
    for s in &mut open {
        let ev = s.next(Duration::from_secs(10)).await.unwrap().unwrap();
        assert_eq!(ev.data, "still here");
    }
}

/// The chart's prometheus-adapter rules, rendered by `helm template`, as
/// the adapter's config file (`rules:`).
fn chart_adapter_rules(cp: &ControlPlane) -> String {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/pushgate");
    let home = std::env::temp_dir().join("pushgate-helm-config");
    let out = run_ok(
        std::process::Command::new(cp.bin().join("helm"))
            .args([
                "template",
                "pushgate",
                chart,
                "--set",
                "prometheusAdapterRules.enabled=true",
                "--show-only",
                "templates/prometheus-adapter-rules.yaml",
                // Offline, helm assumes v1.20, below the chart's kubeVersion.
                "--kube-version",
                "v1.34.4",
            ])
            .env("HELM_CONFIG_HOME", &home)
            .env("HELM_CACHE_HOME", &home),
    );
    let cm: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    cm["data"]["config.yaml"].as_str().unwrap().to_owned()
}

/// The replica count of Deployment `gw` over time, as a test sees it, with
/// its HPA's current average per pod of one (Pods or External) metric.
struct Timeline {
    cp: &'static ControlPlane,
    ns: String,
    hpa: &'static str,
    metric: &'static str,
    t0: Instant,
    points: Vec<(u64, i64, Option<String>)>,
}

impl Timeline {
    fn new(
        cp: &'static ControlPlane,
        ns: &str,
        hpa: &'static str,
        metric: &'static str,
    ) -> Timeline {
        let (ns, t0, points) = (ns.to_owned(), Instant::now(), Vec::new());
        Timeline {
            cp,
            ns,
            hpa,
            metric,
            t0,
            points,
        }
    }

    /// Records the current replicas (of `gw`) and metric value if changed.
    fn note(&mut self) -> i64 {
        let dep = get_json(self.cp, &["deployment", "gw", "-n", &self.ns]);
        let hpa = get_json(self.cp, &["hpa", self.hpa, "-n", &self.ns]);
        let current = hpa["status"]["currentMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|m| {
                ["pods", "external"]
                    .into_iter()
                    .find(|kind| m[kind]["metric"]["name"] == self.metric)
                    .and_then(|kind| m[kind]["current"]["averageValue"].as_str())
            })
            .map(str::to_owned);
        let replicas = dep["spec"]["replicas"].as_i64().unwrap_or(0);
        if self
            .points
            .last()
            .is_none_or(|(_, r, c)| *r != replicas || *c != current)
        {
            self.points
                .push((self.t0.elapsed().as_secs(), replicas, current));
        }
        replicas
    }

    /// Polls (bounded: 3 minutes) until the HPA set `replicas`.
    async fn wait_for(&mut self, replicas: i64) {
        let r = wait_until(
            &format!("replicas to reach {replicas}"),
            Duration::from_secs(180),
            || {
                let n = self.note();
                async move {
                    if n == replicas {
                        Ok(())
                    } else {
                        Err(format!("{n} replicas"))
                    }
                }
            },
        )
        .await;
        if let Err(e) = r {
            panic!("{e}: {}", self.render());
        }
    }

    fn render(&self) -> String {
        let mut out = format!(
            "replicas over time (s, replicas, {} per pod):\n",
            self.metric
        );
        for (t, r, cur) in &self.points {
            out += &format!("  {t:>4} s  {r}  {}\n", cur.as_deref().unwrap_or("-"));
        }
        out
    }
}

/// Prints `kubectl get hpa` and the metrics of `kubectl describe hpa`, and
/// checks that the HPA has a current value for every metric, `metric` among
/// them: what an operator on call sees.
fn show_hpa(cp: &ControlPlane, ns: &str, hpa: &str, metric: &str) {
    let table = cp.kubectl(&["get", "hpa", hpa, "-n", ns]).unwrap();
    let described = cp.kubectl(&["describe", "hpa", hpa, "-n", ns]).unwrap();
    let metrics: Vec<&str> = described
        .lines()
        .skip_while(|l| !l.starts_with("Metrics:"))
        .take_while(|l| !l.starts_with("Min replicas:"))
        .collect();
    eprintln!("{table}{}", metrics.join("\n"));
    assert!(!table.contains("<unknown>"), "{table}");
    assert!(
        metrics.iter().any(|l| l.contains(metric)) && !described.contains("<unknown>"),
        "{described}"
    );
}

#[tokio::test]
async fn the_hpa_scales_on_connections_read_through_prometheus_and_the_adapter() {
    use pushgate_e2e::metrics::MetricsStack;
    let sc = Scenario::new("hpa").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    let metrics = MetricsStack::start(cp, &ns, &chart_adapter_rules(cp), Duration::from_secs(2))
        .await
        .unwrap();
    // Memory is left out: nothing serves metrics.k8s.io here, and an HPA
    // that cannot compute one of its metrics never scales down.
    sc.pushgateway(
        "gw",
        "  store: {redis: {secretRef: {name: redis}}}\n  delivery: {retry: 200ms, drainWindow: 5s}\n  limits: {acceptRate: 100000}\n\
         \x20 autoscaling:\n    minReplicas: 1\n    maxReplicas: 3\n    targetConnectionsPerPod: \"300\"\n    targetMemoryUtilization: 0\n\
         \x20   behavior:\n      scaleUp: {stabilizationWindowSeconds: 0}\n      scaleDown: {stabilizationWindowSeconds: 10, policies: [{type: Pods, value: 2, periodSeconds: 5}]}\n",
    );
    wait_ready(cp, &ns, "gw", 1).await;
    let mut timeline = Timeline::new(cp, &ns, "gw", "pushgate_connections");

    // 800 streams through the Service: 800 / 300 per pod asks for 3 pods.
    let base = service_url(cp, &ns, "gw");
    let c = http();
    let crowd = TracedFleet::spawn(&c, std::slice::from_ref(&base), "hpa-a", 800);
    let crowd_ticker = Ticker::start(&c, base.clone(), "hpa-a", Duration::from_millis(200));
    crowd.wait_connected_once(WAIT).await.unwrap();
    let pod0 = gateway_pods(cp, &ns, "gw")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = wait_until("the adapter serves the pod's connections", WAIT, || async {
        match metrics.pod_metric(&ns, &pod0, "pushgate_connections") {
            Some(v) if v >= 800.0 => Ok(v),
            v => Err(format!("{v:?}\n{}", metrics.logs())),
        }
    })
    .await
    .unwrap();
    eprintln!("custom.metrics.k8s.io: {pod0} pushgate_connections = {seen}");
    timeline.wait_for(3).await;
    wait_ready(cp, &ns, "gw", 3).await;
    wait_routed(&ns, "gw", 3).await;
    show_hpa(cp, &ns, "gw", "pushgate_connections");

    // A second fleet spreads over the three pods; the crowd leaves, and
    // with 300 streams left the HPA goes back to one pod. The streams on
    // the pods it removes drain off and resume on the one left.
    let spread = TracedFleet::spawn(&c, std::slice::from_ref(&base), "hpa-b", 300);
    let ticker = Ticker::start(&c, base.clone(), "hpa-b", Duration::from_millis(100));
    spread.wait_connected_once(WAIT).await.unwrap();
    let sent = crowd_ticker.finish(&c, &base, "hpa-a").await;
    crowd.finish(&sent).await;
    timeline.wait_for(1).await;
    wait_ready(cp, &ns, "gw", 1).await;
    let sent = ticker.finish(&c, &base, "hpa-b").await;
    let moved = spread.connections().iter().filter(|n| **n > 1).count();
    spread.finish(&sent).await;
    eprint!("{}", timeline.render());
    eprintln!("scale-down: {moved} of 300 streams resumed on the remaining pod, every event once");
    assert!(moved > 0, "no stream was on a removed pod");
}

#[tokio::test]
async fn the_hpa_scales_up_when_subscribers_stop_reading() {
    use pushgate_e2e::gateway::publish;
    use pushgate_e2e::metrics::MetricsStack;
    use pushgate_e2e::subscriber::follow;
    const LAG: &str = "pushgate_subscriber_lag_events";
    let sc = Scenario::new("lag").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    let metrics = MetricsStack::start(cp, &ns, &chart_adapter_rules(cp), Duration::from_secs(2))
        .await
        .unwrap();
    // Only the lag target can be exceeded: connections and event-loop lag
    // have targets far above what 100 streams make.
    sc.pushgateway(
        "gw",
        "  store: {redis: {secretRef: {name: redis}}}\n  delivery: {retry: 200ms, queueSize: 5000}\n  limits: {acceptRate: 100000}\n\
         \x20 autoscaling:\n    minReplicas: 1\n    maxReplicas: 2\n    targetSubscriberLag: \"2000\"\n    targetConnectionsPerPod: \"100000\"\n\
         \x20   targetEventLoopLag: \"10\"\n    targetMemoryUtilization: 0\n    behavior: {scaleUp: {stabilizationWindowSeconds: 0}}\n",
    );
    wait_ready(cp, &ns, "gw", 1).await;
    let pod0 = gateway_pods(cp, &ns, "gw")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = service_url(cp, &ns, "gw");
    let c = http();
    let path = "/v1/stream?topic=lag".to_owned();
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let url = format!("{base}{path}");
        stalled.push(SseClient::connect(&c, &url, None).await.unwrap());
    }
    // The 100 read nothing from now on: once their sockets' buffers are
    // full, every event waits in the gateway's queues.
    // The queues stay full while nobody reads, so 1,000 events (well over
    // what the sockets' buffers hold) keep the lag up for as long as the
    // scrape, the adapter and the HPA take to see it.
    let payload = "x".repeat(8 * 1024);
    let mut sent = Vec::new();
    let mut timeline = Timeline::new(cp, &ns, "gw", LAG);
    for i in 0..1000 {
        let data = format!("{i:05}{payload}");
        publish(&c, &base, "lag", &data).await.unwrap();
        sent.push(data[..5].to_owned());
    }
    let lag = wait_until("the adapter serves the lag", WAIT, || async {
        match metrics.pod_metric(&ns, &pod0, LAG) {
            Some(v) if v >= 20_000.0 => Ok(v),
            v => Err(format!("{v:?}\n{}", metrics.logs())),
        }
    })
    .await
    .unwrap();
    eprintln!(
        "custom.metrics.k8s.io: {pod0} {LAG} = {lag} after {} events of 8 KiB",
        sent.len()
    );
    timeline.wait_for(2).await;
    eprint!("{}", timeline.render());
    show_hpa(cp, &ns, "gw", LAG);

    // They read again, and each gets every event once, in order.
    let readers: Vec<_> = stalled
        .into_iter()
        .map(|mut s| {
            let (c, base, path, n) = (c.clone(), base.clone(), path.clone(), sent.len());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < n {
                    match s.next(WAIT).await {
                        Ok(Some(ev)) => got.push(ev.data[..5].to_owned()),
                        _ => break,
                    }
                }
                if got.len() < n {
                    // Cut meanwhile: resume from its cursor like an EventSource.
                    let cursor = Some(s.last_event_id().to_owned());
                    let rest = follow(c, vec![base], path, cursor, n - got.len(), WAIT)
                        .await
                        .unwrap();
                    got.extend(rest.events.iter().map(|e| e.data[..5].to_owned()));
                }
                got
            })
        })
        .collect();
    for r in readers {
        assert_eq!(
            r.await.unwrap(),
            sent,
            "a stalled subscriber lost or repeated events"
        );
    }
}

#[tokio::test]
async fn keda_scales_the_gateway_from_its_scaled_object_and_no_hpa_of_ours() {
    use pushgate_e2e::keda::Keda;
    use pushgate_e2e::metrics::MetricsStack;
    let sc = Scenario::new("keda").await;
    let (cp, ns) = (sc.cp(), sc.ns.clone());
    let _redis = redis_for_pods(cp, &ns);
    let metrics = MetricsStack::start(cp, &ns, &chart_adapter_rules(cp), Duration::from_secs(2))
        .await
        .unwrap();
    let keda = Keda::start(cp).await.unwrap();
    // KEDA's operator runs on this machine, so it reaches Prometheus on
    // loopback; in a cluster this is Prometheus' Service address.
    sc.pushgateway(
        "gw",
        &format!(
            "  store: {{redis: {{secretRef: {{name: redis}}}}}}\n  delivery: {{retry: 200ms}}\n  limits: {{acceptRate: 100000}}\n\
             \x20 autoscaling:\n    engine: keda\n    keda: {{serverAddress: \"{}\"}}\n    minReplicas: 1\n    maxReplicas: 3\n\
             \x20   targetConnectionsPerPod: \"300\"\n    targetMemoryUtilization: 0\n    behavior: {{scaleUp: {{stabilizationWindowSeconds: 0}}}}\n",
            metrics.prometheus_url
        ),
    );
    wait_ready(cp, &ns, "gw", 1).await;
    wait_until("KEDA made its HPA", WAIT, || async {
        cp.kubectl(&["get", "hpa", "keda-hpa-gw", "-n", &ns])
            .map_err(|e| format!("{e}\n{}", keda.logs()))
    })
    .await
    .unwrap();
    let mut timeline = Timeline::new(cp, &ns, "keda-hpa-gw", "s0-prometheus");
    let base = service_url(cp, &ns, "gw");
    let c = http();
    let crowd = TracedFleet::spawn(&c, std::slice::from_ref(&base), "keda", 800);
    let ticker = Ticker::start(&c, base.clone(), "keda", Duration::from_millis(200));
    crowd.wait_connected_once(WAIT).await.unwrap();
    timeline.wait_for(3).await;
    wait_ready(cp, &ns, "gw", 3).await;
    eprint!("{}", timeline.render());
    show_hpa(cp, &ns, "keda-hpa-gw", "s0-prometheus");
    let names: Vec<String> = get_json(cp, &["hpa", "-n", &ns])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["keda-hpa-gw"], "one HPA, KEDA's");
    let sent = ticker.finish(&c, &base, "keda").await;
    crowd.finish(&sent).await;
}
