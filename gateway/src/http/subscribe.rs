//! `GET /v1/stream?topic=a&topic=b` with `Last-Event-ID` or `last_event_id`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Response, StatusCode, Uri};
use axum::Extension;

use super::{query_pairs, ConnInfo};
use crate::auth::Access;
use crate::cursor::ResumeFrom;
use crate::error::ApiError;
use crate::node::Node;
use crate::routing::{Decision, PROXIED_HEADER};
use crate::stream::{self, StreamRequest};
use crate::topic::Topic;

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "text/event-stream" | "text/*" | "*/*" | "")
    })
}

pub async fn stream(
    State(node): State<Arc<Node>>,
    Extension(conn): Extension<ConnInfo>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response<Body>, ApiError> {
    if !accepts_event_stream(&headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint serves text/event-stream",
        ));
    }
    let who = node.auth.authenticate(&headers, uri.query())?;
    let mut topics: Vec<Topic> = Vec::new();
    let mut query_cursor = None;
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "topic" => {
                let t = Topic::parse(&v)
                    .map_err(|e| ApiError::bad_request("bad_topic", e.to_string()))?;
                if !topics.contains(&t) {
                    topics.push(t);
                }
            }
            "last_event_id" | "lastEventId" => query_cursor = Some(v),
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(ApiError::bad_request(
            "missing_topic",
            "give at least one ?topic=",
        ));
    }
    let max = node.config.limits.max_topics_per_stream;
    if topics.len() > max {
        return Err(ApiError::bad_request(
            "too_many_topics",
            format!("a stream carries at most {max} topics"),
        ));
    }
    // All requested topics or none: a partial stream would hide the refusal.
    node.auth.authorize(&who, Access::Subscribe, &topics)?;
    // The header wins: it is what a reconnecting EventSource sends.
    let header_cursor =
        match headers.get("last-event-id") {
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::bad_request("bad_cursor", "Last-Event-ID is not valid text")
            })?),
            None => None,
        };
    let text = header_cursor.or(query_cursor.as_deref()).unwrap_or("");
    let resume =
        ResumeFrom::parse(text).map_err(|e| ApiError::bad_request("bad_cursor", e.to_string()))?;
    let routed = node.routing.decide(&headers, who.client_id());
    let key = match routed.decision {
        Decision::Local { key } => key,
        Decision::Proxy => {
            let proxy = node
                .proxy
                .as_ref()
                .expect("Proxy is only decided with a peer");
            match proxy
                .forward(&uri, &headers, routed.set_cookie.as_deref())
                .await
            {
                Ok(resp) => return Ok(resp),
                // The store is shared, so serving here loses nothing; the
                // stream moves to its track on a later reconnect.
                Err(e) => {
                    tracing::warn!(error = %e, "peer track unreachable; serving locally");
                    None
                }
            }
        }
    };
    stream::open(
        &node,
        StreamRequest {
            topics,
            resume,
            conn: conn.kill,
            route: Some(
                node.routing
                    .register(key, headers.contains_key(PROXIED_HEADER)),
            ),
            set_cookie: routed.set_cookie,
        },
    )
    .await
}
