//! Scenario 1: the CRD installs, a valid spec is accepted and each impossible
//! spec is rejected by `kubectl apply` with its CEL message.

use pushgate_e2e::controlplane::ControlPlane;

fn apply(cp: &ControlPlane, ns: &str, name: &str, spec: &str) -> (bool, String) {
    let doc = format!(
        "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    );
    let out = cp
        .kubectl_stdin_output(&["apply", "-f", "-"], &doc)
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn crd_installs_and_cel_rejects_impossible_specs() {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("crd").unwrap();

    // Every shipped example is valid (server-side dry run: schema + CEL).
    for example in ["minimal.yaml", "redis-autoscaled.yaml"] {
        let path = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        cp.kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", &path])
            .unwrap();
    }
    let minimal = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/minimal.yaml"
    ))
    .unwrap();
    cp.kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &minimal)
        .unwrap();
    let redis = "  store: {redis: {secretRef: {name: r}}}\n";
    let (ok, err) = apply(cp, &ns, "scaled", &format!("{redis}  replicas: 3\n  canary: {{image: x, weight: 10}}\n  autoscaling: {{minReplicas: 2, maxReplicas: 4}}\n"));
    assert!(ok, "valid redis spec rejected: {err}");
    let devices = "  auth:\n    keysSecretRef: {name: jwt-keys}\n    certificateGrants: [{identity: sensor-*, subscribe: [\"devices/{identity}/**\"]}]\n  tls: {secretName: c, clientCA: {secretName: device-ca, mode: optional, identity: dns}}\n";
    let (ok, err) = apply(cp, &ns, "devices", devices);
    assert!(ok, "valid key-set and mTLS spec rejected: {err}");

    let cases = [
        ("  replicas: 3\n", "store.embedded keeps events on a single pod's volume, so replicas must be 1"),
        ("  store: {embedded: {size: 1Gi}}\n  autoscaling: {minReplicas: 1, maxReplicas: 3}\n", "store.embedded cannot be autoscaled"),
        ("  canary: {image: x, weight: 10}\n", "canary needs a shared store (store.redis)"),
        (&format!("{redis}  autoscaling: {{minReplicas: 5, maxReplicas: 2}}\n"), "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"),
        (&format!("{redis}  autoscaling: {{minReplicas: 1, maxReplicas: 2, engine: keda}}\n"), "autoscaling.engine keda needs autoscaling.keda.serverAddress"),
        (&format!("{redis}  autoscaling: {{minReplicas: 1, maxReplicas: 2, engine: kubernetes}}\n"), "Unsupported value: \"kubernetes\""),
        (&format!("{redis}  canary: {{image: x, weight: 150}}\n"), "canary.weight is the percentage of streams sent to the canary and must be between 0 and 100"),
        (&format!("{redis}  canary: {{image: x, weight: -1}}\n"), "must be between 0 and 100"),
        ("  store: {embedded: {}, redis: {secretRef: {name: r}}}\n", "store: set exactly one of embedded or redis"),
        (&format!("{redis}  canary: {{image: x, weight: 10}}\n  tls: {{secretName: c}}\n"), "canary cannot be combined with tls yet"),
        ("  auth: {keySecretRef: {name: a}, keysSecretRef: {name: b}}\n", "give keySecretRef (one key) or keysSecretRef (a key set), not both"),
        ("  auth: {algorithm: hs256}\n", "auth needs keySecretRef, keysSecretRef or certificateGrants"),
        ("  auth: {certificateGrants: [{identity: x, subscribe: [a]}]}\n  tls: {secretName: c}\n", "auth.certificateGrants need tls.clientCA"),
        ("  protocols: {http3: {enabled: true}}\n", "protocols.http3 needs tls: QUIC is always encrypted"),
    ];
    for (i, (spec, message)) in cases.iter().enumerate() {
        let (ok, err) = apply(cp, &ns, &format!("bad-{i}"), spec);
        assert!(!ok, "spec {i} was accepted:\n{spec}");
        assert!(
            err.contains(message),
            "spec {i}: expected {message:?} in:\n{err}"
        );
    }
    let names = cp
        .kubectl(&["get", "pgw", "-n", &ns, "-o", "name"])
        .unwrap();
    assert_eq!(
        names.lines().count(),
        3,
        "only the three valid specs exist: {names}"
    );
}
