//! `GET /v1/stream?topic=a&topic=b` with `Last-Event-ID` or `last_event_id`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Response, Uri};
use axum::response::IntoResponse;
use axum::Extension;

use super::caller::Caller;
use super::{query_pairs, refusal, ConnInfo};
use crate::core::protocol::Protocol;
use crate::edges::shared::client;
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::edges::shared::publish::parse_topic;
use crate::edges::shared::subscribe::{self, Failure, Opened, Origin, StreamAsk};
use crate::edges::sse::SseBody;
use crate::engine::node::Node;

use crate::core::topic::Topic;

/// Response header naming the track that served a stream.
pub const TRACK_HEADER: &str = "x-pushgate-track";

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(media, "text/event-stream" | "text/*" | "*/*" | "")
    })
}

/// The stream request as `?topic=`, `?device=` (names the device only with
/// auth off), `?shadow_version=` and the cursor of `Last-Event-ID` or
/// `?last_event_id=`.
fn parse(node: &Node, uri: &Uri, headers: &HeaderMap) -> Result<StreamAsk, ApiError> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut query_cursor = None;
    let mut device = None;
    let mut shadow_version = None;
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "topic" => {
                let t = parse_topic(&v)?;
                if !topics.contains(&t) {
                    topics.push(t);
                }
            }
            "last_event_id" | "lastEventId" => query_cursor = Some(v),
            "device" => device = Some(super::devices::parse_device(&v)?),
            "shadow_version" => {
                shadow_version = Some(v.parse().map_err(|_| {
                    ApiError::new(ErrorCode::BadCursor, "shadow_version is a version number")
                })?)
            }
            _ => {}
        }
    }
    StreamAsk::new(
        node,
        topics,
        headers,
        query_cursor.as_deref(),
        device,
        shadow_version,
    )
}

pub async fn stream(
    State(node): State<Arc<Node>>,
    Extension(conn): Extension<ConnInfo>,
    Caller(who): Caller,
    protocol: Protocol,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let event_stream = refusal::wants_event_stream(&headers);
    match open(&node, (conn, protocol), who, &uri, &headers).await {
        Ok(resp) => resp,
        Err(Failure::Refused(r)) => refusal::response(r, event_stream),
        Err(Failure::Api(e)) => e.into_response(),
    }
}

async fn open(
    node: &Arc<Node>,
    (conn, protocol): (ConnInfo, Protocol),
    who: crate::auth::Identity,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response<Body>, Failure> {
    if !accepts_event_stream(headers) {
        return Err(ApiError::new(
            ErrorCode::NotAcceptable,
            "this endpoint serves text/event-stream",
        )
        .into());
    }
    let ask = parse(node, uri, headers)?;
    let origin = Origin {
        who,
        protocol,
        client: client::of(node, &conn, headers),
        conn: conn.kill,
        headers,
        uri,
    };
    match subscribe::open(node, origin, ask).await? {
        Opened::Local {
            deliveries,
            track,
            set_cookie,
        } => {
            let mut resp = super::event_stream(Body::from_stream(SseBody::new(deliveries)));
            let h = resp.headers_mut();
            h.insert(TRACK_HEADER, HeaderValue::from_static(track.as_str()));
            if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.append(header::SET_COOKIE, c);
            }
            Ok(resp)
        }
        Opened::Forwarded(resp) => Ok(resp),
    }
}
