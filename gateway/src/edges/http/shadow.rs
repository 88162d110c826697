//! Device shadows: `GET` and `PATCH /v1/devices/{device}/shadow` (with
//! `If-Match` and an `ETag`) over the engine's shadow API.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::caller::Caller;
use super::devices::parse_device;
use super::publish::read_body;
use crate::auth::{Access, AuthError, Identity};
use crate::core::device::DeviceId;
use crate::core::shadow::{self, Shadow, Side};
use crate::core::topic::Topic;
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::devices::ShadowError;
use crate::engine::node::Node;

/// Who may change desired state: an admin, or a publisher whose grants
/// cover the topic `shadows/<device>` (with auth off, anyone).
fn may_desire(node: &Node, who: &Identity, device: &DeviceId) -> Result<(), AuthError> {
    if who.is_admin() {
        return Ok(());
    }
    match Topic::parse(&format!("shadows/{device}")) {
        Ok(t) => node.auth().authorize(who, Access::Publish, [&t]),
        Err(_) if matches!(who, Identity::Open) => Ok(()),
        Err(_) => Err(AuthError::Forbidden),
    }
}

/// A shadow failure as the client sees it.
fn shadow_failed(node: &Node, e: ShadowError) -> ApiError {
    match e {
        ShadowError::Store(e) => ApiError::store(e, node.retry_after_secs()),
        ShadowError::Unreadable => ApiError::new(
            ErrorCode::StoreUnavailable,
            "the stored shadow is unreadable",
        ),
        ShadowError::Conflict { current } => ApiError::new(
            ErrorCode::VersionConflict,
            format!("the shadow is at version {current}"),
        ),
        ShadowError::TooLarge { size, limit } => ApiError::new(
            ErrorCode::ShadowTooLarge,
            format!("the shadow would be {size} bytes; the limit is {limit}"),
        ),
        ShadowError::KeptChanging => ApiError::new(
            ErrorCode::StoreUnavailable,
            "the shadow kept changing; retry",
        )
        .with_retry_after(1),
    }
}

fn reply(doc: &Shadow) -> Response {
    let mut resp = Json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some).map_err(|_| {
        ApiError::new(
            ErrorCode::BadIfMatch,
            "If-Match is a shadow version: N or \"N\"",
        )
    })
}

pub async fn get(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    who.may_act_for(&device)
        .or_else(|_| may_desire(&node, &who, &device))?;
    let doc = node
        .shadow(&device)
        .await
        .map_err(|e| shadow_failed(&node, e))?;
    Ok(reply(&doc))
}

pub async fn patch(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let limit = node.config().limits.max_shadow_bytes;
    let bytes = read_body(body, limit).await?;
    let patch = shadow::parse_patch(&bytes).map_err(|e| ApiError::new(ErrorCode::BadPatch, e.0))?;
    match patch.side {
        Side::Desired => may_desire(&node, &who, &device)?,
        Side::Reported => who.may_act_for(&device)?,
    }
    let expected = if_match(&headers)?;
    let doc = node
        .patch_shadow(&device, &patch, expected)
        .await
        .map_err(|e| shadow_failed(&node, e))?;
    Ok(reply(&doc))
}
