//! Scenario 6: two real operator processes share one Lease. Only the holder
//! reconciles; SIGKILLing it hands over within the lease duration.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use pushgate_e2e::controlplane::{ControlPlane, OperatorOptions, OperatorProcess};
use pushgate_e2e::wait::{holds_for, wait_until};
use std::time::{Duration, Instant};

const RECONCILES: &str = "pushgate_operator_reconciles_total{result=\"ok\"}";

fn holder(cp: &ControlPlane, ns: &str) -> String {
    cp.kubectl(&[
        "get",
        "lease",
        "pushgate-operator",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .unwrap_or_default()
}

fn apply(cp: &ControlPlane, ns: &str, name: &str) {
    let doc = format!("apiVersion: pushgate.dev/v1alpha1\nkind: PushGateway\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec: {{}}\n");
    cp.kubectl_stdin(&["apply", "-f", "-"], &doc).unwrap();
}

async fn deployment_exists(api: &Api<Deployment>, name: &str) {
    wait_until(
        &format!("Deployment {name}"),
        Duration::from_secs(30),
        || async {
            match api.get_opt(name).await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_failover_is_bounded() {
    let cp = ControlPlane::shared();
    cp.install_crds().unwrap();
    let ns = cp.namespace("leader").unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cp.client().await.unwrap(), &ns);
    let opts_a = OperatorOptions::new(&ns, "op-a");
    let lease = Duration::from_secs(opts_a.lease_duration);

    let mut a = OperatorProcess::start(cp, &opts_a).unwrap();
    wait_until(
        "op-a to take the Lease",
        Duration::from_secs(20),
        || async {
            let h = holder(cp, &ns);
            if h == "op-a" {
                Ok(())
            } else {
                Err(h)
            }
        },
    )
    .await
    .unwrap();
    let b = OperatorProcess::start(cp, &OperatorOptions::new(&ns, "op-b")).unwrap();

    apply(cp, &ns, "first");
    deployment_exists(&deployments, "first").await;
    wait_until(
        "op-a to count its reconcile",
        Duration::from_secs(10),
        || async {
            let n = a.metric(RECONCILES);
            if n >= 1.0 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        },
    )
    .await
    .unwrap();
    // Give the standby every chance to misbehave: several of its retry
    // periods (nothing marks a reconcile that does not happen).
    holds_for(
        "the standby reconciling nothing",
        Duration::from_secs(3),
        || async {
            let n = b.metric(RECONCILES);
            if n == 0.0 {
                Ok(())
            } else {
                Err(format!("{n} reconciles"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nstandby:\n{}", b.log_tail()));
    assert_eq!(b.metric("pushgate_operator_leader"), 0.0);
    assert_eq!(a.metric("pushgate_operator_leader"), 1.0);
    assert_eq!(holder(cp, &ns), "op-a");

    // Hard failure: no release, the standby must wait the lease out.
    a.kill();
    let killed = Instant::now();
    wait_until("op-b to take over the Lease", lease * 3, || async {
        let h = holder(cp, &ns);
        if h == "op-b" {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await
    .unwrap();
    let handover = killed.elapsed();
    // The lease duration plus one retry period (1s) and API round-trips.
    assert!(
        handover <= lease + Duration::from_secs(3),
        "handover took {handover:?} (lease {lease:?})"
    );
    eprintln!("handover after SIGKILL took {handover:?} (lease {lease:?})");

    apply(cp, &ns, "second");
    deployment_exists(&deployments, "second").await;
    // The counter moves when the reconcile returns, just after the apply.
    wait_until(
        "the new leader to count reconciles",
        Duration::from_secs(10),
        || async {
            let (n, leader) = (b.metric(RECONCILES), b.metric("pushgate_operator_leader"));
            if n >= 1.0 && leader == 1.0 {
                Ok(())
            } else {
                Err(format!("reconciles {n}, leader gauge {leader}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log_tail()));
}
