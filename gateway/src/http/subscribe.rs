//! `GET /v1/stream?topic=a&topic=b` with `Last-Event-ID` or `last_event_id`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Response, Uri};
use axum::response::IntoResponse;
use axum::Extension;

use super::caller::Caller;
use super::error::{ApiError, ErrorCode};
use super::{query_pairs, refusal, ConnInfo};
use crate::admission::{self, Refusal, RefuseReason};
use crate::auth::{Access, AuthError, Identity};
use crate::cursor::ResumeFrom;
use crate::device::DeviceId;
use crate::node::Node;
use crate::protocol::Protocol;
use crate::routing::Decision;
use crate::stream::{self, OpenError, StreamRequest};

/// Why a stream request did not become a stream.
enum Failure {
    /// Come back later (its form depends on the client).
    Refused(Refusal),
    /// An error.
    Api(ApiError),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Failure::Api(e.into())
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Refused(r) => Failure::Refused(r),
            OpenError::CursorAhead(c) => Failure::Api(c.into()),
        }
    }
}
use crate::topic::Topic;

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

/// The stream request as parsed at the edge.
struct Parsed {
    topics: Vec<Topic>,
    resume: ResumeFrom,
    /// `?device=`: names the device only with auth off.
    device: Option<DeviceId>,
    /// `?shadow_version=`: the shadow version a device already has.
    shadow_version: Option<u64>,
}

fn parse(node: &Node, uri: &Uri, headers: &HeaderMap) -> Result<Parsed, ApiError> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut query_cursor = None;
    let mut device = None;
    let mut shadow_version = None;
    for (k, v) in query_pairs(uri.query()) {
        match k.as_str() {
            "topic" => {
                let t = Topic::parse(&v)
                    .map_err(|e| ApiError::new(ErrorCode::BadTopic, e.to_string()))?;
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
    if topics.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MissingTopic,
            "give at least one ?topic=",
        ));
    }
    let max = node.config.limits.max_topics_per_stream;
    if topics.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooManyTopics,
            format!("a stream carries at most {max} topics"),
        ));
    }
    // The header wins: it is what a reconnecting EventSource sends.
    let header_cursor =
        match headers.get("last-event-id") {
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::new(ErrorCode::BadCursor, "Last-Event-ID is not valid text")
            })?),
            None => None,
        };
    let text = header_cursor.or(query_cursor.as_deref()).unwrap_or("");
    let resume =
        ResumeFrom::parse(text).map_err(|e| ApiError::new(ErrorCode::BadCursor, e.to_string()))?;
    Ok(Parsed {
        topics,
        resume,
        device,
        shadow_version,
    })
}

/// The device a stream belongs to: the credential's, or with auth off the
/// `device` parameter. A parameter naming another device than the
/// credential's is refused rather than ignored.
fn stream_device(who: &Identity, named: Option<DeviceId>) -> Result<Option<DeviceId>, AuthError> {
    match (who, named) {
        (Identity::Open, named) => Ok(named),
        (_, None) => Ok(who.device().cloned()),
        (_, Some(d)) => who.may_act_for(&d).map(|()| Some(d)),
    }
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
    who: Identity,
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
    let mut req = parse(node, uri, headers)?;
    // All requested topics or none: a partial stream would hide the refusal.
    node.auth.authorize(&who, Access::Subscribe, &req.topics)?;
    let device = stream_device(&who, req.device.take())?;
    let routing = &node.routing;
    // A request that says a peer proxied it must prove it, and must have
    // been routed with the table this pod has: otherwise the two pods
    // disagree about its track, and serving it could pin it to the wrong one.
    let proxied = match &node.proxy {
        Some(p) => p
            .verify(headers)
            .map_err(|_| node.refuse(RefuseReason::ProxyUnauthenticated))?,
        None => None,
    };
    let slot = admission::admit(node, protocol)?;
    let routed = routing.decide(headers, who.client_id(), proxied.is_some());
    // A proxied stream registers under the sender's table: if this pod's
    // differs (older or newer), registration fails and the client retries.
    let version = proxied.map_or(routed.version, |p| p.version);
    let route_changed = || node.refuse(RefuseReason::RouteChanged);
    match routed.decision {
        Decision::Local { key } => {
            let route = routing
                .register(key, routing.track, version)
                .map_err(|_| route_changed())?;
            let body = stream::open(
                node,
                StreamRequest {
                    topics: req.topics,
                    resume: req.resume,
                    device,
                    shadow_version: req.shadow_version,
                    conn: conn.kill,
                    slot,
                    route: Some(route),
                    credential: who.lifetime().cloned(),
                },
            )
            .await?;
            let mut resp = super::event_stream(body);
            let h = resp.headers_mut();
            h.insert(
                TRACK_HEADER,
                HeaderValue::from_static(routing.track.as_str()),
            );
            if let Some(c) = routed
                .set_cookie
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                h.append(header::SET_COOKIE, c);
            }
            Ok(resp)
        }
        Decision::Proxy { key } => {
            let proxy = node
                .proxy
                .as_ref()
                .expect("Proxy is only decided with a peer");
            let route = routing
                .register(key, routing.track.other(), version)
                .map_err(|_| route_changed())?;
            let farewell = Box::pin(stream::farewell(node.clone(), route.moved.clone()));
            proxy
                .forward(
                    uri,
                    headers,
                    routed.set_cookie.as_deref(),
                    routed.version,
                    (slot, route),
                    farewell,
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "peer track unreachable; the client retries");
                    node.refuse(RefuseReason::PeerUnreachable).into()
                })
        }
    }
}
