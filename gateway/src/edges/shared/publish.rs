//! The way every protocol publishes: the checks of one event and of a
//! batch, in one order (topic, authorisation, options, rate, size), and
//! what the publisher is told. Edges read their own request and map the
//! errors to their own status codes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::auth::{Access, Identity};
use crate::core::tier::{self, Priority};
use crate::core::topic::Topic;
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::delivery::is_reserved_event_type;
use crate::engine::node::Node;
use crate::store::{Ack, IdempotencyKey, NewEvent, StoreError};

/// Longest accepted event type.
const MAX_EVENT_TYPE_LEN: usize = 100;

pub fn parse_topic(s: &str) -> Result<Topic, ApiError> {
    Topic::parse(s).map_err(|e| ApiError::new(ErrorCode::BadTopic, e.to_string()))
}

pub fn parse_event_type(t: &str) -> Result<Arc<str>, ApiError> {
    let bad = |m: &str| Err(ApiError::new(ErrorCode::BadEventType, m));
    if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN {
        return bad("event type must be 1 to 100 characters");
    }
    if t.chars().any(|c| c.is_control()) {
        return bad("event type must not contain control characters");
    }
    if is_reserved_event_type(t) {
        return bad("event types `reset`, `expired`, `skipped`, `shadow`, `expired-token` and `expired-certificate` are reserved for the gateway");
    }
    Ok(Arc::from(t))
}

pub fn parse_ttl(text: &str) -> Result<Duration, ApiError> {
    tier::parse_ttl(text).map_err(|e| ApiError::new(ErrorCode::BadTtl, e.to_string()))
}

pub fn parse_priority(text: &str) -> Result<Priority, ApiError> {
    Priority::parse(text).map_err(|e| ApiError::new(ErrorCode::BadPriority, e.to_string()))
}

pub fn idempotency_key(text: &str) -> Result<IdempotencyKey, ApiError> {
    IdempotencyKey::parse(text)
        .map_err(|e| ApiError::new(ErrorCode::BadIdempotencyKey, e.to_string()))
}

/// A store failure as the client sees it.
pub fn store_failed(node: &Node, e: StoreError) -> ApiError {
    ApiError::store(e, node.retry_after_secs())
}

/// Takes `n` events from the rate budget of `who` publishing from client
/// address `client` (429 beyond): its identity's, or without a credential
/// its address's.
pub fn check_rate(node: &Node, who: &Identity, client: IpAddr, n: usize) -> Result<(), ApiError> {
    node.take_publish_rate(&who.client_key(client), n.min(u32::MAX as usize) as u32)
        .map_err(|wait| {
            ApiError::new(ErrorCode::RateLimited, "publish rate limit exceeded")
                .with_retry_after(wait.as_secs_f64().ceil() as u64)
        })
}

/// Event data as text (400 unless UTF-8).
pub fn utf8(bytes: Bytes) -> Result<Arc<str>, ApiError> {
    String::from_utf8(bytes.into())
        .map(Arc::from)
        .map_err(|_| ApiError::new(ErrorCode::BadData, "event data must be UTF-8 text"))
}

/// What a publisher is told of a stored event: its cursor, a valid
/// `Last-Event-ID` for a stream of that one topic.
#[derive(serde::Serialize)]
pub struct Published {
    /// The cursor.
    pub id: String,
    /// The topic.
    pub topic: Topic,
    /// Its sequence number in the topic.
    pub seq: u64,
    /// When it stops being delivered from history (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl From<&Ack> for Published {
    fn from(a: &Ack) -> Self {
        Published {
            id: a.id.to_string(),
            topic: a.topic.clone(),
            seq: a.seq.get(),
            expires_at_ms: a.expires_ms,
        }
    }
}

/// One event as an edge received it, its options still text.
#[derive(Default)]
pub struct PublishAsk<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Options in the order given: `event`, `ttl`, `priority` (others ignored).
    pub options: Vec<(&'a str, &'a str)>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
}

/// An event that passed every check but its data.
pub struct Prepared {
    topic: Topic,
    event_type: Option<Arc<str>>,
    ttl: Option<Duration>,
    priority: Option<Priority>,
    idempotency_key: Option<IdempotencyKey>,
}

/// Checks `ask` for `who`, publishing from client address `client`,
/// before its data is read.
pub fn prepare(
    node: &Node,
    who: &Identity,
    client: IpAddr,
    ask: PublishAsk<'_>,
) -> Result<Prepared, ApiError> {
    let topic = parse_topic(ask.topic)?;
    node.auth().authorize(who, Access::Publish, [&topic])?;
    let (mut event_type, mut ttl, mut priority) = (None, None, None);
    for (k, v) in ask.options {
        match k {
            "event" => event_type = Some(parse_event_type(v)?),
            "ttl" => ttl = Some(parse_ttl(v)?),
            "priority" => priority = Some(parse_priority(v)?),
            _ => {}
        }
    }
    let idempotency_key = ask.idempotency_key.map(idempotency_key).transpose()?;
    check_rate(node, who, client, 1)?;
    Ok(Prepared {
        topic,
        event_type,
        ttl,
        priority,
        idempotency_key,
    })
}

/// Stores a prepared event with `data`: its ack (`duplicate` for a retried
/// idempotency key).
pub async fn commit(node: &Node, p: Prepared, data: Arc<str>) -> Result<Ack, ApiError> {
    let acks = node
        .publish(vec![NewEvent {
            topic: p.topic,
            event_type: p.event_type,
            data,
            idempotency_key: p.idempotency_key,
            ttl: tier::resolve(&node.config().delivery.tiers, p.ttl, p.priority),
            priority: p.priority.unwrap_or_default(),
        }])
        .await
        .map_err(|e| store_failed(node, e))?;
    Ok(acks.into_iter().next().expect("one ack per event"))
}

/// The error of event data over `limits.max_body_bytes`.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("body exceeds {limit} bytes"),
    )
}
