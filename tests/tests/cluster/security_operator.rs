//! `spec.auth` and `spec.tls` against the real control plane: the operator
//! mounts the Secrets into the gateway pods and points the gateway at them,
//! and no key material reaches the ConfigMap, the status or the operator log.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use operator::crd::PushGateway;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::wait::wait_until;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn auth_and_tls_secrets_are_mounted_not_copied() {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("sec").unwrap();
    let op = OperatorProcess::start(cp, &OperatorOptions::new(&ns, "sec-op")).unwrap();
    let client = cp.client().await.unwrap();

    // Real key material, so a leak would be recognisable.
    let jwt = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["gw.example".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let pub_pem = jwt.public_key_pem();
    for args in [
        vec![
            "create",
            "secret",
            "generic",
            "jwt",
            "--from-literal",
            &format!("es256.pub={pub_pem}"),
        ],
        vec![
            "create",
            "secret",
            "tls",
            "gw-cert",
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        vec![
            "create",
            "secret",
            "generic",
            "redis",
            "--from-literal=url=redis://127.0.0.1:1/0",
        ],
    ] {
        let mut args = args;
        args.extend(["-n", &ns]);
        cp.kubectl(&args).unwrap();
    }
    let doc = format!(
        "apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: secure\n  namespace: {ns}\nspec:\n  store: {{redis: {{secretRef: {{name: redis}}}}}}\n  auth:\n    keySecretRef: {{name: jwt, key: es256.pub}}\n    algorithm: es256\n    anonymousSubscribe: [\"public/**\"]\n  tls: {{secretName: gw-cert}}\n"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc).unwrap();
    // A bad algorithm is refused by the CRD schema.
    let bad = doc.replace("algorithm: es256", "algorithm: none");
    assert!(cp
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &bad.replace("name: secure", "name: bad")
        )
        .is_err());

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = wait_until("Deployment secure", WAIT, || {
        let api = deployments.clone();
        async move {
            api.get_opt("secure")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\noperator log:\n{}", op.log_tail()));
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let env: Vec<(String, String)> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get("PUSHGATE_AUTH_KEY_FILE").as_deref(),
        Some("/var/run/secrets/pushgate/auth/key")
    );
    assert_eq!(get("PUSHGATE_AUTH_ALGORITHM").as_deref(), Some("es256"));
    assert_eq!(
        get("PUSHGATE_AUTH_ANONYMOUS_SUBSCRIBE").as_deref(),
        Some("public/**")
    );
    assert_eq!(
        get("PUSHGATE_TLS_CERT_FILE").as_deref(),
        Some("/var/run/secrets/pushgate/tls/tls.crt")
    );
    let vols = pod.volumes.unwrap();
    let secret_of = |v: &str| {
        vols.iter()
            .find(|x| x.name == v)
            .and_then(|x| x.secret.clone())
            .and_then(|s| s.secret_name)
    };
    assert_eq!(secret_of("auth-key").as_deref(), Some("jwt"));
    assert_eq!(secret_of("tls").as_deref(), Some("gw-cert"));

    // Nothing secret outside the Secrets.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = serde_json::to_string(&cms.get("secure-config").await.unwrap().data).unwrap();
    let pgws: Api<PushGateway> = Api::namespaced(client, &ns);
    let status = serde_json::to_string(&pgws.get("secure").await.unwrap().status).unwrap();
    let key_body = |pem: &str| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()[..40]
            .to_owned()
    };
    let log = op.log_tail();
    for secret in [
        key_body(&pub_pem),
        key_body(&cert.signing_key.serialize_pem()),
    ] {
        for (what, text) in [
            ("ConfigMap", &cm),
            ("status", &status),
            ("operator log", &log),
        ] {
            assert!(!text.contains(&secret), "key material in the {what}");
        }
    }
}
