//! `pushgate-operator`: elects a leader, then reconciles PushGateways.

use clap::Parser;
use operator::controller::{self, Context};
use operator::leader::{Elector, LeaderConfig};
use operator::metrics::{self, Metrics};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Reconciles PushGateway resources (pushgate.dev/v1alpha1).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address of the /metrics and /healthz endpoint.
    #[arg(
        long,
        env = "PUSHGATE_OPERATOR_METRICS_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    metrics_listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PUSHGATE_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "pushgate-operator")]
    lease_name: String,
    /// Namespace of the Lease; when unset: --namespace, else "default". The
    /// chart sets it through $POD_NAMESPACE (its own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity written to the Lease (default: $POD_NAME or hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds after the last renewal before another replica may take over.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds between renewals.
    #[arg(long, default_value_t = 5)]
    renew_interval: u64,
    /// How often the gateway pods' `auto` breakers are read while a
    /// PushGateway has a degrade layer on `auto` (e.g. `5s`).
    #[arg(long, env = "PUSHGATE_OPERATOR_BREAKER_POLL", default_value = "5s", value_parser = humantime::parse_duration)]
    breaker_poll: Duration,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "operator".into());
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let metrics = Metrics::default();
    let server = tokio::spawn(metrics::serve(args.metrics_listen, metrics.clone()));

    let client = kube::Client::try_default().await?;
    let identity = args.identity.unwrap_or_else(default_identity);
    let lease_ns = args
        .lease_namespace
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let elector = Elector::new(
        client.clone(),
        LeaderConfig {
            name: args.lease_name,
            namespace: lease_ns,
            identity: identity.clone(),
            lease_duration: Duration::from_secs(args.lease_duration),
            renew_interval: Duration::from_secs(args.renew_interval),
        },
    );

    tracing::info!(%identity, lease = %elector.config().name, "waiting for leadership");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown_signal() => return Ok(()),
        r = server => anyhow::bail!("metrics server stopped: {r:?}"),
    }
    tracing::info!(%identity, "acquired leadership; reconciling");
    metrics.leader.set(1);

    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), identity)
            .with_breaker_poll(args.breaker_poll),
    );
    tokio::select! {
        r = controller::run(client, args.namespace, ctx) => {
            elector.release().await;
            r
        }
        _ = elector.keep() => {
            // Another replica may already be reconciling: stop at once rather
            // than race it, and let the restart policy bring us back as standby.
            metrics.leader.set(0);
            anyhow::bail!("lost the leader Lease");
        }
    }
}
