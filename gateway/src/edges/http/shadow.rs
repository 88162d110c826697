//! Device shadows: `GET` and `PATCH /v1/devices/{device}/shadow`. A patch is
//! read, merged and written back under the version it was read at; a
//! desired change is then announced on the device's reserved topic, so its
//! streams on every replica get `event: shadow`.

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
use crate::engine::node::Node;
use crate::store::{now_ms, NewEvent};

/// Read-merge-write rounds before a patch without `If-Match` gives up.
const ROUNDS: usize = 16;

/// Who may change desired state: an admin, or a publisher whose grants
/// cover the topic `shadows/<device>` (with auth off, anyone).
fn may_desire(node: &Node, who: &Identity, device: &DeviceId) -> Result<(), AuthError> {
    if who.is_admin() {
        return Ok(());
    }
    match Topic::parse(&format!("shadows/{device}")) {
        Ok(t) => node.auth.authorize(who, Access::Publish, [&t]),
        Err(_) if matches!(who, Identity::Open) => Ok(()),
        Err(_) => Err(AuthError::Forbidden),
    }
}

/// The stored shadow, or an empty one at version 0.
async fn load(node: &Node, device: &DeviceId) -> Result<Shadow, ApiError> {
    let stored = node
        .store
        .shadow(device)
        .await
        .map_err(|e| ApiError::store(node.store_error(e), node.retry_after_secs()))?;
    match stored {
        None => Ok(Shadow::default()),
        Some(stored) => Shadow::from_stored(stored).ok_or_else(|| {
            ApiError::new(
                ErrorCode::StoreUnavailable,
                "the stored shadow is unreadable",
            )
        }),
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

fn conflict(current: u64) -> ApiError {
    ApiError::new(
        ErrorCode::VersionConflict,
        format!("the shadow is at version {current}"),
    )
}

pub async fn get(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    who.may_act_for(&device)
        .or_else(|_| may_desire(&node, &who, &device))?;
    Ok(reply(&load(&node, &device).await?))
}

pub async fn patch(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let device = parse_device(&device)?;
    let limit = node.config.limits.max_shadow_bytes;
    let bytes = read_body(body, limit).await?;
    let patch = shadow::parse_patch(&bytes).map_err(|e| ApiError::new(ErrorCode::BadPatch, e.0))?;
    match patch.side {
        Side::Desired => may_desire(&node, &who, &device)?,
        Side::Reported => who.may_act_for(&device)?,
    }
    let expected = if_match(&headers)?;
    node.storage_open()
        .map_err(|e| ApiError::store(e, node.retry_after_secs()))?;
    for _ in 0..ROUNDS {
        let mut doc = load(&node, &device).await?;
        if expected.is_some_and(|v| v != doc.version) {
            return Err(conflict(doc.version));
        }
        let read_at = doc.version;
        let now = now_ms();
        let applied = doc.apply(&patch, now);
        if applied.keys.is_empty() {
            return Ok(reply(&doc));
        }
        let text = serde_json::to_string(&doc).expect("a shadow serializes");
        if text.len() > limit {
            return Err(ApiError::new(
                ErrorCode::ShadowTooLarge,
                format!(
                    "the shadow would be {} bytes; the limit is {limit}",
                    text.len()
                ),
            ));
        }
        let written = node
            .store
            .put_shadow(&device, read_at, doc.version, text)
            .await
            .map_err(|e| ApiError::store(node.store_error(e), node.retry_after_secs()))?;
        if !written {
            // Another writer came first: with If-Match that is a conflict,
            // without it the patch is merged again into the newer document.
            if expected.is_some() {
                return Err(conflict(read_at + 1));
            }
            continue;
        }
        node.metrics
            .shadow_patches_total
            .with_label_values(&[patch.side.as_str()])
            .inc();
        if patch.side == Side::Desired {
            announce(&node, &device, &doc, &applied.keys, now).await;
        }
        return Ok(reply(&doc));
    }
    Err(ApiError::new(
        ErrorCode::StoreUnavailable,
        "the shadow kept changing; retry",
    )
    .with_retry_after(1))
}

/// Publishes the new delta on the device's reserved topic. The document is
/// stored already: if this fails the device still gets the current delta
/// when it next connects, so the patch is not failed for it.
async fn announce(node: &Node, device: &DeviceId, doc: &Shadow, keys: &[String], now: u64) {
    let (ttl, priority) = doc.announcement(keys);
    let event = NewEvent {
        event_type: Some(Arc::from(crate::engine::delivery::SHADOW_EVENT)),
        ttl,
        priority,
        ..NewEvent::new(
            shadow::topic(device),
            shadow::event_data(doc.version, &doc.delta(now)),
        )
    };
    if let Err(e) = node.store.append(vec![event]).await {
        node.store_error(e);
        tracing::warn!(%device, version = doc.version, "shadow change stored but not announced; the device gets it on reconnect");
    }
}
