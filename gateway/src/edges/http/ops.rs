//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::node::{Node, NotReady};

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(node): State<Arc<Node>>) -> Result<impl IntoResponse, ApiError> {
    readiness(&node)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Readiness as the API answers it.
fn readiness(node: &Node) -> Result<(), ApiError> {
    node.readiness().map_err(|e| match e {
        NotReady::Draining => ApiError::new(ErrorCode::Draining, "gateway is draining"),
        NotReady::StoreUnreachable => {
            ApiError::new(ErrorCode::StoreUnavailable, "store is unreachable")
        }
    })
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics().render(),
    )
}
