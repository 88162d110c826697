//! Request logging with a trace id: the trace-id of `traceparent` when the
//! caller sent one, otherwise a fresh random id.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::core::traceparent::trace_id_of;

/// Logs each request in a span named by its trace id.
pub async fn log_request(req: Request, next: Next) -> Response {
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    // The path only: query strings may carry tokens.
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %req.method(),
        path = %req.uri().path(),
        client = tracing::field::Empty,
    );
    let started = Instant::now();
    async move {
        let resp = next.run(req).await;
        tracing::info!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        resp
    }
    .instrument(span)
    .await
}
