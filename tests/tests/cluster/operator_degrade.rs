//! One `kubectl patch` of `spec.degrade` flips a layer on every pod at once:
//! the real control plane, the operator process, a real Redis and three
//! real `pushgate` processes started from the operator's config, each
//! watching the operator's routing-table ConfigMap as the pods' identity.
//! With the connections layer on, new EventSources are refused the safe
//! way (200 + retry) and open streams keep flowing; switched off, they are
//! admitted again. The status shows the layer, and the flip times are printed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use operator::crd::PushGateway;
use pushgate::routing::RoutingTable;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::gateway::{publish, GatewayProcess};
use pushgate_e2e::redis::RedisServer;
use pushgate_e2e::sse_client::{Opened, SseClient};
use pushgate_e2e::wait::{wait_until, wait_until_every};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until every pod reports `want` for `layer`; returns when.
async fn all_flipped(pods: &[GatewayProcess], layer: &str, want: f64) -> Instant {
    let metric = format!("pushgate_degraded{{layer=\"{layer}\"}}");
    // Every 5 ms: the flip time is printed.
    wait_until_every(
        &format!("every pod to report {metric} = {want}"),
        Duration::from_secs(15),
        Duration::from_millis(5),
        || async {
            for (i, p) in pods.iter().enumerate() {
                let v = p.metric(&metric).await.map_err(|e| format!("{e:#}"))?;
                if v != want {
                    return Err(format!("pod {i}: {v}"));
                }
            }
            Ok(Instant::now())
        },
    )
    .await
    .unwrap()
}

async fn refusal(c: &reqwest::Client, gw: &GatewayProcess) -> Option<String> {
    match SseClient::open(c, &gw.url("/v1/stream?topic=dg/op"), None)
        .await
        .unwrap()
    {
        Opened::Stream(s) => s.refusal().map(str::to_owned),
        Opened::Refused(status, body) => panic!("an EventSource got {status}: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_patch_flips_the_connections_layer_on_every_pod() {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("degrade").unwrap();
    let op = OperatorProcess::start(cp, &OperatorOptions::new(&ns, "degrade-op")).unwrap();
    let redis = RedisServer::start().unwrap();
    cp.secret(&ns, "gw-redis", "url", &redis.url()).unwrap();
    let doc = format!(
        "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: gw\n  namespace: {ns}\nspec:\n\
         \x20 image: pushgate:stable\n  replicas: 3\n\
         \x20 store: {{redis: {{secretRef: {{name: gw-redis}}}}}}\n\
         \x20 delivery: {{retry: 200ms}}\n"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc).unwrap();
    let client = cp.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let pgws: Api<PushGateway> = Api::namespaced(client.clone(), &ns);
    let config = op.object(&cms, "gw-config").await;
    let table = op.object(&cms, "gw-routing").await;
    let parsed = RoutingTable::from_yaml(&table.data.as_ref().unwrap()["routing.yaml"]).unwrap();
    assert!(parsed.degrade.is_empty(), "nothing switched yet");

    // Three pods from the operator's config, as the pods' identity.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pushgate.yaml");
    std::fs::write(&path, &config.data.as_ref().unwrap()["pushgate.yaml"]).unwrap();
    let kc = cp.service_account_kubeconfig(&ns, "gw-gateway").unwrap();
    // The peer token the pods mount; no canary runs, so the peer is idle.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = op.object(&secrets, "gw-peer").await;
    let token_file = dir.path().join("peer-token");
    std::fs::write(&token_file, &secret.data.as_ref().unwrap()["token"].0).unwrap();
    let peer = format!("http://{}", GatewayProcess::free_addr().unwrap());
    let prefix = format!("opdg{:x}", rand::random::<u32>());
    let store = redis.url();
    let pods: Vec<GatewayProcess> = (0..3)
        .map(|i| {
            let args = [
                "--config",
                path.to_str().unwrap(),
                "--metrics-listen",
                "127.0.0.1:0",
                "--store",
                &store,
                "--redis-key-prefix",
                &prefix,
                "--peer-token-file",
                token_file.to_str().unwrap(),
                "--peer-url",
                &peer,
            ];
            let addr = GatewayProcess::free_addr().unwrap();
            let env = [("KUBECONFIG", kc.to_str().unwrap())];
            GatewayProcess::start_on_with_env(&format!("pod-{i}"), addr, &args, &env).unwrap()
        })
        .collect();
    let c = reqwest::Client::new();
    for p in &pods {
        assert_eq!(refusal(&c, p).await, None);
    }
    // A stream open before the flip keeps flowing through it.
    let mut open = match SseClient::open(&c, &pods[0].url("/v1/stream?topic=dg/op"), None)
        .await
        .unwrap()
    {
        Opened::Stream(s) => *s,
        Opened::Refused(s, b) => panic!("{s} {b}"),
    };
    open.await_id(WAIT).await.unwrap();

    let patch = |layer: &str, switch: &str| {
        cp.kubectl(&[
            "patch",
            "pgw",
            "gw",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            &format!("{{\"spec\":{{\"degrade\":{{\"{layer}\":\"{switch}\"}}}}}}"),
        ])
        .unwrap();
    };
    let start = Instant::now();
    patch("connections", "on");
    let on_after = all_flipped(&pods, "connections", 1.0)
        .await
        .duration_since(start);
    for p in &pods {
        assert_eq!(refusal(&c, p).await.as_deref(), Some("degraded"));
    }
    publish(&c, &pods[1].url(""), "dg/op", "still-flowing")
        .await
        .unwrap();
    let ev = open.next(WAIT).await.unwrap().unwrap();
    assert_eq!(ev.data, "still-flowing", "an open stream is kept");
    let status = wait_until("status", WAIT, || async {
        let pgw = pgws.get("gw").await.map_err(|e| e.to_string())?;
        let conds = pgw.status.map(|s| s.conditions).unwrap_or_default();
        conds
            .into_iter()
            .find(|c| c.type_ == "ConnectionsDegraded" && c.status == "True")
            .ok_or_else(|| "ConnectionsDegraded not True yet".to_string())
    })
    .await
    .unwrap();
    assert_eq!(status.reason, "SwitchedOn");
    let event = wait_until("DegradeSwitched event", WAIT, || async {
        let out = cp
            .kubectl_output(&[
                "get",
                "events",
                "-n",
                &ns,
                "--field-selector",
                "reason=DegradeSwitched",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("connections=on")
            .then_some(text)
            .ok_or_else(|| "no event yet".to_string())
    })
    .await
    .unwrap();
    assert!(event.contains("events=off, storage=off"), "{event}");

    let start = Instant::now();
    patch("connections", "off");
    let off_after = all_flipped(&pods, "connections", 0.0)
        .await
        .duration_since(start);
    for p in &pods {
        assert_eq!(refusal(&c, p).await, None, "admitted once it flips back");
    }
    eprintln!(
        "kubectl patch → all 3 pods flipped: connections on in {} ms, off in {} ms",
        on_after.as_millis(),
        off_after.as_millis()
    );
    // The other layers travel the same way.
    for layer in ["events", "storage"] {
        let start = Instant::now();
        patch(layer, "on");
        let on = all_flipped(&pods, layer, 1.0).await.duration_since(start);
        let start = Instant::now();
        patch(layer, "off");
        let off = all_flipped(&pods, layer, 0.0).await.duration_since(start);
        eprintln!(
            "kubectl patch → all 3 pods flipped: {layer} on in {} ms, off in {} ms",
            on.as_millis(),
            off.as_millis()
        );
    }
}
