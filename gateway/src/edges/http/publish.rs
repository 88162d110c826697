//! Publishing: `POST /v1/topics/{topic}/events`, `POST /v1/publish`, and
//! `DELETE /v1/topics/{topic}` (wipe history, new epoch).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;

use super::caller::Caller;
use super::{query_pairs, ConnInfo};
use crate::auth::Access;
use crate::core::tier;
use crate::edges::shared::client;
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::edges::shared::publish::{
    self as flow, idempotency_key, parse_event_type, parse_priority, parse_topic, parse_ttl,
    store_failed, PublishAsk, Published,
};
use crate::engine::node::Node;
use crate::store::NewEvent;

/// Reads a whole request body of at most `limit` bytes (413 beyond).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            flow::too_large(limit)
        } else {
            ApiError::new(ErrorCode::BadBody, format!("cannot read body: {e}"))
        }
    })
}

fn created<T: serde::Serialize>(body: &T, replayed: bool) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        resp.headers_mut().insert(
            "idempotent-replayed",
            "true".parse().expect("static header"),
        );
    }
    resp
}

pub async fn publish_one(
    State(node): State<Arc<Node>>,
    Extension(conn): Extension<ConnInfo>,
    Caller(who): Caller,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(topic) = path.strip_suffix("/events") else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "publish with POST /v1/topics/{topic}/events",
        ));
    };
    let query = query_pairs(uri.query());
    let ask = PublishAsk {
        topic,
        options: query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        idempotency_key: headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap_or("")),
    };
    let client = client::of(&node, &conn, &headers);
    let prepared = flow::prepare(&node, &who, client, ask)?;
    let data = flow::utf8(read_body(body, node.config().limits.max_body_bytes).await?)?;
    let ack = flow::commit(&node, prepared, data).await?;
    Ok(created(&Published::from(&ack), ack.duplicate))
}

/// One element of a batch publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    topic: String,
    /// A string is sent as is; any other JSON value is sent as its JSON text.
    data: serde_json::Value,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Such as `90s`.
    #[serde(default)]
    ttl: Option<String>,
    /// `high`, `normal` or `low`.
    #[serde(default)]
    priority: Option<String>,
}

pub async fn publish_batch(
    State(node): State<Arc<Node>>,
    Extension(conn): Extension<ConnInfo>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &node.config().limits;
    let bytes = read_body(body, limits.max_batch_bytes).await?;
    let items: Vec<BatchItem> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::BadBatch,
            format!("body must be a JSON array of {{topic, data, event?, idempotency_key?, ttl?, priority?}}: {e}"),
        )
    })?;
    if items.is_empty() {
        return Err(ApiError::new(ErrorCode::EmptyBatch, "batch is empty"));
    }
    if items.len() > limits.max_batch {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "batch has {} events; the limit is {}",
                items.len(),
                limits.max_batch
            ),
        ));
    }
    let mut batch = Vec::with_capacity(items.len());
    for item in items {
        let data: Arc<str> = match item.data {
            serde_json::Value::String(s) => Arc::from(s),
            other => Arc::from(other.to_string()),
        };
        if data.len() > limits.max_body_bytes {
            return Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("an event's data exceeds {} bytes", limits.max_body_bytes),
            ));
        }
        let ttl = item.ttl.as_deref().map(parse_ttl).transpose()?;
        let priority = item.priority.as_deref().map(parse_priority).transpose()?;
        batch.push(NewEvent {
            ttl: tier::resolve(&node.config().delivery.tiers, ttl, priority),
            priority: priority.unwrap_or_default(),
            topic: parse_topic(&item.topic)?,
            event_type: item.event.as_deref().map(parse_event_type).transpose()?,
            data,
            idempotency_key: item
                .idempotency_key
                .as_deref()
                .map(idempotency_key)
                .transpose()?,
        });
    }
    node.auth()
        .authorize(&who, Access::Publish, batch.iter().map(|e| &e.topic))?;
    let client = client::of(&node, &conn, &headers);
    flow::check_rate(&node, &who, client, batch.len())?;
    let acks = node
        .publish(batch)
        .await
        .map_err(|e| store_failed(&node, e))?;
    let body: Vec<Published> = acks.iter().map(Published::from).collect();
    Ok(created(&body, false))
}

pub async fn wipe(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&path)?;
    node.auth().authorize(&who, Access::Publish, [&topic])?;
    let epoch = node
        .wipe(&topic)
        .await
        .map_err(|e| store_failed(&node, e))?
        .get();
    tracing::info!(%topic, epoch, "topic history wiped");
    Ok(Json(serde_json::json!({ "topic": topic, "epoch": epoch })).into_response())
}
