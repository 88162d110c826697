//! The reconciler against an in-memory apiserver behind kube's `tower_test`
//! mock service (the controller-rs pattern): no cluster, but real kube
//! client requests, so the order of the writes is checked as they go out.

use super::{reconcile, Context};
use crate::crd::PushGateway;
use crate::metrics::Metrics;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use tower_test::mock;

/// Objects by path, and every request as `METHOD path`.
#[derive(Default)]
struct FakeApi {
    objects: BTreeMap<String, Value>,
    log: Vec<String>,
    version: u64,
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": reason,
    });
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn ok(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(v.to_string().into_bytes()))
        .unwrap()
}

impl FakeApi {
    fn stamp(&mut self, mut v: Value) -> Value {
        self.version += 1;
        v["metadata"]["resourceVersion"] = json!(self.version.to_string());
        v
    }

    /// Answers like the apiserver would for what the reconciler sends.
    fn answer(&mut self, method: &Method, path: &str, body: Option<Value>) -> Response<Body> {
        self.log.push(format!("{method} {path}"));
        let collection = path.rsplit_once('/').map_or(path, |(c, _)| c);
        match *method {
            Method::GET => match self.objects.get(path) {
                Some(v) => ok(StatusCode::OK, v),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::PATCH => {
                let mut v = body.unwrap_or_default();
                if path.ends_with("/status") {
                    let owner = path.trim_end_matches("/status");
                    let mut pgw = self.objects.get(owner).cloned().unwrap_or_default();
                    pgw["status"] = v["status"].take();
                    return ok(StatusCode::OK, &pgw);
                }
                v = self.stamp(v);
                self.objects.insert(path.to_owned(), v.clone());
                ok(StatusCode::OK, &v)
            }
            Method::POST => {
                let v = body.unwrap_or_default();
                let name = v["metadata"]["name"].as_str().unwrap_or("event").to_owned();
                let key = format!("{path}/{name}");
                if path.contains("/secrets") && self.objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                let v = self.stamp(v);
                self.objects.insert(key, v.clone());
                ok(StatusCode::CREATED, &v)
            }
            Method::DELETE => match self.objects.remove(path) {
                Some(v) => ok(StatusCode::OK, &v),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            _ => {
                let _ = collection;
                status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
            }
        }
    }
}

fn owned(kind: &str, api_version: &str, name: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {
            "name": name, "namespace": "ns1",
            "ownerReferences": [{
                "apiVersion": "pushgate.dev/v1alpha1", "kind": "PushGateway",
                "name": "demo", "uid": "uid-1", "controller": true
            }]
        }
    })
}

/// Runs one reconcile of `pgw` against a fake holding `seed`; returns the
/// request log and what is stored afterwards.
async fn reconcile_against(
    pgw: PushGateway,
    seed: Vec<(&str, Value)>,
) -> (Vec<String>, BTreeMap<String, Value>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api = Arc::new(Mutex::new(FakeApi::default()));
    {
        let mut a = api.lock().unwrap();
        for (path, v) in seed {
            a.objects.insert(path.to_owned(), v);
        }
        let pgw_path = "/apis/pushgate.dev/v1alpha1/namespaces/ns1/pushgateways/demo";
        a.objects
            .insert(pgw_path.to_owned(), serde_json::to_value(&pgw).unwrap());
    }
    let server = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body = serde_json::from_slice::<Value>(&bytes).ok();
                let path = parts.uri.path().to_owned();
                let resp = api.lock().unwrap().answer(&parts.method, &path, body);
                send.send_response(resp);
            }
        })
    };
    let client = Client::new(service, "ns1");
    let ctx = Arc::new(Context::new(client, Metrics::default(), "test".into()));
    reconcile(Arc::new(pgw), ctx)
        .await
        .expect("reconcile succeeds");
    server.abort();
    let a = api.lock().unwrap();
    (a.log.clone(), a.objects.clone())
}

fn demo(spec: Value) -> PushGateway {
    let mut p = PushGateway::new("demo", serde_json::from_value(spec).unwrap());
    p.metadata.namespace = Some("ns1".into());
    p.metadata.uid = Some("uid-1".into());
    p.metadata.generation = Some(2);
    p
}

fn at(log: &[String], what: &str) -> usize {
    log.iter()
        .position(|l| l == what)
        .unwrap_or_else(|| panic!("no {what:?} in {log:#?}"))
}

#[tokio::test]
async fn removing_the_canary_writes_weight_zero_before_deleting_its_objects() {
    const CORE: &str = "/api/v1/namespaces/ns1";
    const APPS: &str = "/apis/apps/v1/namespaces/ns1";
    const HPA: &str = "/apis/autoscaling/v2/namespaces/ns1";
    let seed = vec![
        (
            "/apis/apps/v1/namespaces/ns1/deployments/demo-canary",
            owned("Deployment", "apps/v1", "demo-canary"),
        ),
        (
            "/api/v1/namespaces/ns1/configmaps/demo-canary-config",
            owned("ConfigMap", "v1", "demo-canary-config"),
        ),
        (
            "/api/v1/namespaces/ns1/services/demo-canary",
            owned("Service", "v1", "demo-canary"),
        ),
        (
            "/api/v1/namespaces/ns1/services/demo-stable",
            owned("Service", "v1", "demo-stable"),
        ),
        (
            "/apis/autoscaling/v2/namespaces/ns1/horizontalpodautoscalers/demo-canary",
            owned("HorizontalPodAutoscaler", "autoscaling/v2", "demo-canary"),
        ),
    ];
    let pgw = demo(json!({"store": {"redis": {"secretRef": {"name": "r"}}}}));
    let (log, objects) = reconcile_against(pgw, seed).await;
    let table = at(&log, &format!("PATCH {CORE}/configmaps/demo-routing"));
    for gone in [
        format!("DELETE {APPS}/deployments/demo-canary"),
        format!("DELETE {CORE}/configmaps/demo-canary-config"),
        format!("DELETE {CORE}/services/demo-canary"),
        format!("DELETE {CORE}/services/demo-stable"),
        format!("DELETE {HPA}/horizontalpodautoscalers/demo-canary"),
    ] {
        assert!(
            table < at(&log, &gone),
            "{gone} before the weight-0 table: {log:#?}"
        );
    }
    // The identity exists before the pods that run as it, the peer token is
    // created (never patched), and the stable track is kept.
    assert!(
        at(&log, &format!("PATCH {CORE}/serviceaccounts/demo-gateway"))
            < at(&log, &format!("PATCH {APPS}/deployments/demo"))
    );
    at(&log, &format!("POST {CORE}/secrets"));
    assert!(!log
        .iter()
        .any(|l| l.starts_with("PATCH") && l.contains("/secrets")));
    let table = &objects[&format!("{CORE}/configmaps/demo-routing")];
    let yaml = table["data"]["routing.yaml"].as_str().unwrap();
    assert!(yaml.starts_with("weight_bp: 0\n"), "{yaml}");
    assert!(objects.contains_key(&format!("{APPS}/deployments/demo")));
    assert!(!objects.contains_key(&format!("{APPS}/deployments/demo-canary")));
}

#[tokio::test]
async fn objects_another_owner_holds_are_left_alone() {
    let mut foreign = owned("Deployment", "apps/v1", "demo-canary");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    let seed = vec![(
        "/apis/apps/v1/namespaces/ns1/deployments/demo-canary",
        foreign,
    )];
    let pgw = demo(json!({"store": {"redis": {"secretRef": {"name": "r"}}}}));
    let (log, objects) = reconcile_against(pgw, seed).await;
    assert!(!log.iter().any(|l| l.starts_with("DELETE")), "{log:#?}");
    assert!(objects.contains_key("/apis/apps/v1/namespaces/ns1/deployments/demo-canary"));
}
