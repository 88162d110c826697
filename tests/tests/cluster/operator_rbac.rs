//! The shipped RBAC (`operator/deploy/rbac.yaml`) is enough: the operator,
//! authenticated as its ServiceAccount, reconciles every kind of child,
//! writes status and Events, holds its Lease, creates the gateway pods'
//! Role for the routing table (allowed only because it holds that access
//! itself) and deletes an unwanted HPA and a removed canary.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::rbac::v1::Role;
use kube::Api;
use operator::crd::PushGateway;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::wait::wait_until;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn operator_works_with_only_the_shipped_rbac() {
    let cp = ControlPlane::shared();
    let rbac = concat!(env!("CARGO_MANIFEST_DIR"), "/../operator/deploy/rbac.yaml");
    cp.kubectl(&["apply", "-f", rbac]).unwrap();
    let ns = cp.namespace("rbac").unwrap();
    let kubeconfig = cp
        .service_account_kubeconfig("pushgate-system", "pushgate-operator")
        .unwrap();
    // Sanity: the token really is the restricted identity.
    let denied = cp
        .kubectl_output(&[
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "get",
            "secrets",
            "-n",
            &ns,
        ])
        .unwrap();
    assert!(
        !denied.status.success(),
        "the ServiceAccount can read Secrets; the test would prove nothing"
    );

    let mut opts = OperatorOptions::new(&ns, "rbac-op");
    opts.kubeconfig = Some(kubeconfig);
    let op = OperatorProcess::start(cp, &opts).unwrap();

    cp.kubectl(&[
        "create",
        "secret",
        "generic",
        "r",
        "-n",
        &ns,
        "--from-literal=url=redis://127.0.0.1:1/0",
    ])
    .unwrap();
    let doc = |name: &str, spec: &str| {
        format!("apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}")
    };
    let scaled = "  store: {redis: {secretRef: {name: r}}}\n  autoscaling: {minReplicas: 1, maxReplicas: 2}\n  canary: {image: x, weight: 10}\n";
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc("scaled", scaled))
        .unwrap();
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc("embedded", "  {}\n"))
        .unwrap();

    let client = cp.client().await.unwrap();
    let pgws: Api<PushGateway> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    wait_until(
        "Ready=True written by the restricted operator",
        WAIT,
        || async {
            let p = pgws.get("scaled").await.map_err(|e| e.to_string())?;
            let ready = p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if ready {
                Ok(())
            } else {
                Err(format!("{:?}", p.status))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    assert!(hpas.get_opt("scaled").await.unwrap().is_some());
    assert!(hpas.get_opt("scaled-canary").await.unwrap().is_some());
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    assert!(roles.get_opt("scaled-gateway").await.unwrap().is_some());
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(deps.get_opt("scaled-canary").await.unwrap().is_some());
    assert!(pvcs.get_opt("embedded-data").await.unwrap().is_some());
    let events = cp
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=Created",
            "-o",
            "name",
        ])
        .unwrap();
    assert!(!events.trim().is_empty(), "no Created events");

    let unscaled = "  store: {redis: {secretRef: {name: r}}}\n";
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc("scaled", unscaled))
        .unwrap();
    wait_until("the HPAs and the canary to be deleted", WAIT, || async {
        let left = (
            hpas.get_opt("scaled").await.map(|h| h.is_some()),
            hpas.get_opt("scaled-canary").await.map(|h| h.is_some()),
            deps.get_opt("scaled-canary").await.map(|d| d.is_some()),
        );
        match left {
            (Ok(false), Ok(false), Ok(false)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail()));
    let log = op.log_tail();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "RBAC denials in the operator log:\n{log}"
    );
}
