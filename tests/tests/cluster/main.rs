//! The operator, the chart and the example manifests against a real control
//! plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) from
//! `tests/controlplane/build.sh`. Namespace-scoped tests share
//! `ControlPlane::shared()` and isolate themselves by namespace; tests that
//! run an operator over all namespaces get a `ControlPlane::dedicated` one,
//! or it would reconcile every other test's PushGateways.

mod examples_manifests;
mod helm_chart;
mod helm_install;
mod helm_readme;
mod operator_canary;
mod operator_crd;
mod operator_degrade;
mod operator_leader;
mod operator_rbac;
mod operator_reconcile;
mod security_operator;
