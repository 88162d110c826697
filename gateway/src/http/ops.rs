//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::error::{ApiError, ErrorCode};
use crate::node::Node;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(node): State<Arc<Node>>) -> Result<impl IntoResponse, ApiError> {
    readiness(&node)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Whether the pod should get new clients (also the gRPC health status).
pub fn readiness(node: &Node) -> Result<(), ApiError> {
    if node.is_draining() {
        return Err(ApiError::new(ErrorCode::Draining, "gateway is draining"));
    }
    // A degraded storage layer keeps the pod ready: its open streams stay.
    let storage_degraded = node.degrade.flags.is_on(crate::degrade::Layer::Storage);
    if !node.is_ready() && !storage_degraded {
        return Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            "store is unreachable",
        ));
    }
    Ok(())
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics.render(),
    )
}
