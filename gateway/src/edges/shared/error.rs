//! The one error shape of the HTTP API, `{"error": "...", "code": "..."}`,
//! and the one place where domain errors (auth, store, cursors, refusals)
//! become status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::core::resume::CursorAhead;
use crate::engine::admission::{Refusal, RefuseReason};
use crate::store::StoreError;

/// Every machine-readable error code the API answers with; each has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Topic syntax.
    BadTopic,
    /// No `?topic=`.
    MissingTopic,
    /// More topics than `limits.max_topics_per_stream`.
    TooManyTopics,
    /// An undecodable or mangled cursor.
    BadCursor,
    /// A cursor newer than the topic's newest event.
    CursorAhead,
    /// A device id that is not 1 to 200 visible ASCII characters.
    BadDevice,
    /// An acknowledgement body that is not `{"id": "<cursor>"}`.
    BadAck,
    /// Event data is not UTF-8.
    BadData,
    /// Event type syntax, or a reserved one.
    BadEventType,
    /// `Idempotency-Key` syntax.
    BadIdempotencyKey,
    /// A `ttl` that is not a duration from 1ms to 365d.
    BadTtl,
    /// A `priority` other than high, normal or low.
    BadPriority,
    /// A shadow patch that is not valid JSON of the documented shape.
    BadPatch,
    /// An `If-Match` that is not a version.
    BadIfMatch,
    /// `If-Match` names a version that is no longer current.
    VersionConflict,
    /// A shadow document that would grow past `limits.max_shadow_bytes`.
    ShadowTooLarge,
    /// A degrade switch refuses the request for now.
    Degraded,
    /// A batch that is not a JSON array of events.
    BadBatch,
    /// An empty batch.
    EmptyBatch,
    /// A body that could not be read.
    BadBody,
    /// The store refused the request's content.
    StoreRejected,
    /// Missing, malformed, expired or wrongly signed token.
    Unauthorized,
    /// A valid token that does not cover every topic.
    Forbidden,
    /// Unknown path.
    NotFound,
    /// `Accept` excludes `text/event-stream`.
    NotAcceptable,
    /// An event over `limits.max_body_bytes`.
    BodyTooLarge,
    /// A batch over `limits.max_batch_bytes` or `limits.max_batch`.
    BatchTooLarge,
    /// A publisher over `limits.publish_rate`.
    RateLimited,
    /// A client holding `limits.max_streams_per_identity` or
    /// `limits.max_streams_per_address` streams already.
    StreamLimit,
    /// More than `limits.max_connections` streams.
    Overloaded,
    /// More than `limits.accept_rate` new streams per second.
    AcceptRateLimited,
    /// The gateway is shutting down.
    Draining,
    /// The store failed; nothing was stored.
    StoreUnavailable,
    /// The canary track serving the stream is unreachable.
    PeerUnreachable,
    /// The canary routing table changed meanwhile.
    RouteChanged,
    /// A proxied request without the peers' token.
    ProxyUnauthenticated,
}

impl ErrorCode {
    /// The code as written in the body.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadTopic => "bad_topic",
            MissingTopic => "missing_topic",
            TooManyTopics => "too_many_topics",
            BadCursor => "bad_cursor",
            CursorAhead => "cursor_ahead",
            BadDevice => "bad_device",
            BadAck => "bad_ack",
            BadData => "bad_data",
            BadEventType => "bad_event_type",
            BadIdempotencyKey => "bad_idempotency_key",
            BadTtl => "bad_ttl",
            BadPriority => "bad_priority",
            BadPatch => "bad_patch",
            BadIfMatch => "bad_if_match",
            VersionConflict => "version_conflict",
            ShadowTooLarge => "shadow_too_large",
            Degraded => "degraded",
            BadBatch => "bad_batch",
            EmptyBatch => "empty_batch",
            BadBody => "bad_body",
            StoreRejected => "store_rejected",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            NotFound => "not_found",
            NotAcceptable => "not_acceptable",
            BodyTooLarge => "body_too_large",
            BatchTooLarge => "batch_too_large",
            RateLimited => "rate_limited",
            StreamLimit => "stream_limit",
            Overloaded => "overloaded",
            AcceptRateLimited => "accept_rate_limited",
            Draining => "draining",
            StoreUnavailable => "store_unavailable",
            PeerUnreachable => "peer_unreachable",
            RouteChanged => "route_changed",
            ProxyUnauthenticated => "proxy_unauthenticated",
        }
    }

    /// Its HTTP status.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BadTopic | MissingTopic | TooManyTopics | BadCursor | CursorAhead | BadDevice
            | BadAck | BadData | BadEventType | BadIdempotencyKey | BadTtl | BadPriority
            | BadBatch | EmptyBatch | BadBody | BadPatch | BadIfMatch | StoreRejected => {
                StatusCode::BAD_REQUEST
            }
            VersionConflict => StatusCode::PRECONDITION_FAILED,
            ShadowTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            BodyTooLarge | BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited | StreamLimit => StatusCode::TOO_MANY_REQUESTS,
            Overloaded | AcceptRateLimited | Draining | StoreUnavailable | PeerUnreachable
            | RouteChanged | ProxyUnauthenticated | Degraded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Stable, machine-readable code; it decides the status.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for a `Retry-After` header, when the client should come back later.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error without `Retry-After`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header (seconds, at least 1).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// A store failure, telling the client when to retry if it passes.
    pub fn store(e: StoreError, retry_after_secs: u64) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                ApiError::new(ErrorCode::StoreUnavailable, m).with_retry_after(retry_after_secs)
            }
            StoreError::Rejected(m) => ApiError::new(ErrorCode::StoreRejected, m),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        // One fixed body for each: responses never say which check failed.
        match e {
            AuthError::Unauthorized => {
                ApiError::new(ErrorCode::Unauthorized, "missing or invalid token")
            }
            AuthError::Forbidden => {
                ApiError::new(ErrorCode::Forbidden, "not allowed for the requested topic")
            }
        }
    }
}

impl From<Refusal> for ApiError {
    /// The form of a refusal for clients that did not ask for an event
    /// stream: 503 with `Retry-After` (429 for a client over its own
    /// stream limit).
    fn from(r: Refusal) -> Self {
        let secs = r.retry_after_secs();
        ApiError::new(refusal_code(r.reason), r.message).with_retry_after(secs)
    }
}

/// The code of a refusal.
fn refusal_code(r: RefuseReason) -> ErrorCode {
    match r {
        RefuseReason::MaxConnections => ErrorCode::Overloaded,
        RefuseReason::AcceptRate => ErrorCode::AcceptRateLimited,
        RefuseReason::IdentityStreams | RefuseReason::AddressStreams => ErrorCode::StreamLimit,
        RefuseReason::Store => ErrorCode::StoreUnavailable,
        RefuseReason::PeerUnreachable => ErrorCode::PeerUnreachable,
        RefuseReason::RouteChanged => ErrorCode::RouteChanged,
        RefuseReason::ProxyUnauthenticated => ErrorCode::ProxyUnauthenticated,
        RefuseReason::Degraded => ErrorCode::Degraded,
    }
}

impl From<CursorAhead> for ApiError {
    fn from(e: CursorAhead) -> Self {
        ApiError::new(ErrorCode::CursorAhead, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code.as_str() });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code.as_str(),
            self.message
        )
    }
}
