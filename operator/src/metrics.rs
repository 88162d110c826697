//! Operator self-metrics and the `/metrics` + `/healthz` endpoint.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;

/// Reconcile counters and timings.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by outcome (`ok` / `error`).
    pub reconciles: IntCounterVec,
    /// Failed reconciles by reason.
    pub errors: IntCounterVec,
    /// Reconcile duration in seconds.
    pub duration: HistogramVec,
    /// 1 while this process holds the leader Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("pushgate_operator_reconciles_total", "Reconciles by result"),
            &["result"],
        )
        .unwrap();
        let errors = IntCounterVec::new(
            Opts::new(
                "pushgate_operator_reconcile_errors_total",
                "Failed reconciles by reason",
            ),
            &["reason"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pushgate_operator_reconcile_duration_seconds",
                "Reconcile duration",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["result"],
        )
        .unwrap();
        let leader = IntGauge::new(
            "pushgate_operator_leader",
            "1 while holding the leader Lease",
        )
        .unwrap();
        registry.register(Box::new(reconciles.clone())).unwrap();
        registry.register(Box::new(errors.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

/// Serves `/metrics` and `/healthz` until the process exits.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> anyhow::Result<()> {
    use axum::{routing::get, Router};
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
    axum::serve(listener, app).await?;
    Ok(())
}
