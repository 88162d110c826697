//! Publishing: `POST /v1/topics/{topic}/events`, `POST /v1/publish`, and
//! `DELETE /v1/topics/{topic}` (wipe history, new epoch).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;

use super::caller::Caller;
use super::error::{ApiError, ErrorCode};
use super::{query_pairs, ConnInfo};
use crate::auth::Access;
use crate::cursor::Cursor;
use crate::node::Node;
use crate::sse;
use crate::store::{Ack, IdempotencyKey, NewEvent, StoreError};
use crate::tier::{self, Priority};
use crate::topic::Topic;

/// Longest accepted event type.
const MAX_EVENT_TYPE_LEN: usize = 100;

fn parse_topic(s: &str) -> Result<Topic, ApiError> {
    Topic::parse(s).map_err(|e| ApiError::new(ErrorCode::BadTopic, e.to_string()))
}

fn parse_event_type(t: &str) -> Result<Arc<str>, ApiError> {
    let bad = |m: &str| Err(ApiError::new(ErrorCode::BadEventType, m));
    if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN {
        return bad("event type must be 1 to 100 characters");
    }
    if t.chars().any(|c| c.is_control()) {
        return bad("event type must not contain control characters");
    }
    if sse::is_reserved_event_type(t) {
        return bad("event types `reset`, `expired`, `skipped`, `shadow`, `expired-token` and `expired-certificate` are reserved for the gateway");
    }
    Ok(Arc::from(t))
}

fn parse_ttl(text: &str) -> Result<Duration, ApiError> {
    tier::parse_ttl(text).map_err(|e| ApiError::new(ErrorCode::BadTtl, e.to_string()))
}

fn parse_priority(text: &str) -> Result<Priority, ApiError> {
    Priority::parse(text).map_err(|e| ApiError::new(ErrorCode::BadPriority, e.to_string()))
}

fn idempotency_key(text: &str) -> Result<IdempotencyKey, ApiError> {
    IdempotencyKey::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::BadIdempotencyKey, e.to_string()))
}

fn header_idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| idempotency_key(v.to_str().unwrap_or("")))
        .transpose()
}

/// A store failure as the client sees it.
fn store_failed(node: &Node, e: StoreError) -> ApiError {
    ApiError::store(e, node.retry_after_secs())
}

fn check_rate(node: &Node, conn: &ConnInfo, n: usize) -> Result<(), ApiError> {
    node.publish_rate
        .try_take(&conn.peer.ip(), n.min(u32::MAX as usize) as u32)
        .map_err(|wait| {
            ApiError::new(ErrorCode::RateLimited, "publish rate limit exceeded")
                .with_retry_after(wait.as_secs_f64().ceil() as u64)
        })
}

/// Reads a whole request body of at most `limit` bytes (413 beyond).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("body exceeds {limit} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::BadBody, format!("cannot read body: {e}"))
        }
    })
}

fn utf8(bytes: Bytes) -> Result<Arc<str>, ApiError> {
    String::from_utf8(bytes.into())
        .map(Arc::from)
        .map_err(|_| ApiError::new(ErrorCode::BadData, "event data must be UTF-8 text"))
}

#[derive(serde::Serialize)]
struct Published {
    id: String,
    topic: Topic,
    seq: u64,
    /// When it stops being delivered from history (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

impl From<&Ack> for Published {
    fn from(a: &Ack) -> Self {
        Published {
            id: Cursor::single(&a.topic, a.epoch, a.seq, a.ts_ms).encode(),
            topic: a.topic.clone(),
            seq: a.seq.get(),
            expires_at_ms: a.expires_ms,
        }
    }
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
    let topic = parse_topic(topic)?;
    node.auth.authorize(&who, Access::Publish, [&topic])?;
    let (mut event_type, mut ttl, mut priority) = (None, None, None);
    for (k, v) in query_pairs(uri.query()) {
        match &*k {
            "event" => event_type = Some(parse_event_type(&v)?),
            "ttl" => ttl = Some(parse_ttl(&v)?),
            "priority" => priority = Some(parse_priority(&v)?),
            _ => {}
        }
    }
    let idempotency_key = header_idempotency_key(&headers)?;
    check_rate(&node, &conn, 1)?;
    let data = utf8(read_body(body, node.config.limits.max_body_bytes).await?)?;
    let acks = node
        .publish(vec![NewEvent {
            topic,
            event_type,
            data,
            idempotency_key,
            ttl: tier::resolve(&node.config.delivery.tiers, ttl, priority),
            priority: priority.unwrap_or_default(),
        }])
        .await
        .map_err(|e| store_failed(&node, e))?;
    let ack = acks.first().expect("one ack per event");
    Ok(created(&Published::from(ack), ack.duplicate))
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
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &node.config.limits;
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
            ttl: tier::resolve(&node.config.delivery.tiers, ttl, priority),
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
    node.auth
        .authorize(&who, Access::Publish, batch.iter().map(|e| &e.topic))?;
    check_rate(&node, &conn, batch.len())?;
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
    node.auth.authorize(&who, Access::Publish, [&topic])?;
    let epoch = node
        .wipe(&topic)
        .await
        .map_err(|e| store_failed(&node, e))?
        .get();
    tracing::info!(%topic, epoch, "topic history wiped");
    Ok(Json(serde_json::json!({ "topic": topic, "epoch": epoch })).into_response())
}
