//! A gRPC call as the HTTP request it stands for, and an HTTP answer as
//! the gRPC status it stands for.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use tonic::metadata::MetadataMap;
use tonic::{Code, Extensions, Status};
use tower::ServiceExt;

use super::proto;
use crate::http::{ConnInfo, STREAM_PATH};
use crate::protocol::Protocol;

/// Largest error or publish answer read back (the API's are far smaller).
const MAX_ANSWER: usize = 64 * 1024;

/// Metadata that describes the gRPC call itself, not the request it stands for.
fn is_call_header(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "content-length" | "te" | "accept" | "accept-encoding" | "host"
    ) || name.starts_with("grpc-")
}

/// The call's metadata as request headers (binary `-bin` entries are not
/// HTTP headers the API reads).
fn headers_of(meta: MetadataMap) -> HeaderMap {
    let mut headers = meta.into_headers();
    let drop: Vec<header::HeaderName> = headers
        .keys()
        .filter(|k| is_call_header(k.as_str()) || k.as_str().ends_with("-bin"))
        .cloned()
        .collect();
    for k in drop {
        headers.remove(k);
    }
    headers
}

fn request(
    method: Method,
    uri: String,
    mut headers: HeaderMap,
    ext: Extensions,
    body: Body,
) -> Result<Request<Body>, Status> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .map_err(|e| Status::invalid_argument(format!("cannot form the request: {e}")))?;
    std::mem::swap(req.headers_mut(), &mut headers);
    // The connection's facts (peer address, kill switch, client certificate),
    // and nothing else: the outer route's path parameters would be read as
    // the inner route's.
    if let Some(conn) = ext.get::<ConnInfo>() {
        req.extensions_mut().insert(conn.clone());
    }
    req.extensions_mut().insert(Protocol::Grpc);
    Ok(req)
}

/// `Subscribe` as `GET /v1/stream?topic=…&last_event_id=…`. Without an
/// `Accept: text/event-stream` a refusal is the JSON 503, which becomes
/// `UNAVAILABLE` with `retry-after`.
pub fn subscribe_request(
    msg: &proto::SubscribeRequest,
    meta: MetadataMap,
    ext: Extensions,
) -> Result<Request<Body>, Status> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for t in &msg.topics {
        q.append_pair("topic", t);
    }
    if !msg.last_event_id.is_empty() {
        q.append_pair("last_event_id", &msg.last_event_id);
    }
    if msg.shadow_version > 0 {
        q.append_pair("shadow_version", &msg.shadow_version.to_string());
    }
    let uri = format!("{STREAM_PATH}?{}", q.finish());
    request(Method::GET, uri, headers_of(meta), ext, Body::empty())
}

/// `Publish` as `POST /v1/topics/{topic}/events`.
pub fn publish_request(
    msg: proto::PublishRequest,
    meta: MetadataMap,
    ext: Extensions,
) -> Result<Request<Body>, Status> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("event", &msg.event_type),
        ("ttl", &msg.ttl),
        ("priority", &msg.priority),
    ] {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    let uri = format!(
        "/v1/topics/{}/events?{}",
        path_segments(&msg.topic),
        q.finish()
    );
    let mut headers = headers_of(meta);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if !msg.idempotency_key.is_empty() {
        let key = HeaderValue::from_str(&msg.idempotency_key)
            .map_err(|_| Status::invalid_argument("idempotency_key is not header text"))?;
        headers.insert("idempotency-key", key);
    }
    request(Method::POST, uri, headers, ext, Body::from(msg.data))
}

/// Percent-encodes a topic for the path, keeping its `/` separators (the
/// API parses the topic, so an invalid one gets the API's own error).
fn path_segments(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs a request through the API router.
pub async fn call(api: &Router, req: Request<Body>) -> axum::http::Response<Body> {
    match api.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// The gRPC code of an API status.
fn code_of(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 406 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        500..=599 => Code::Internal,
        _ => Code::Unknown,
    }
}

/// An API error answer as a status: its code and message, with the API's
/// error code as `pushgate-code` and `retry-after` kept.
pub async fn status_of(resp: axum::http::Response<Body>) -> Status {
    let (parts, body) = resp.into_parts();
    let code = code_of(parts.status);
    let body = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct ApiError {
        error: String,
        code: String,
    }
    let mut status = match serde_json::from_slice::<ApiError>(&body) {
        Ok(e) => {
            let mut s = Status::new(code, e.error);
            if let Ok(v) = e.code.parse() {
                s.metadata_mut().insert("pushgate-code", v);
            }
            s
        }
        Err(_) => Status::new(code, format!("HTTP {}", parts.status)),
    };
    if let Some(v) = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// The `201` of a publish as its response.
pub async fn published(resp: axum::http::Response<Body>) -> Result<proto::PublishResponse, Status> {
    #[derive(serde::Deserialize)]
    struct Published {
        id: String,
        topic: String,
        seq: u64,
        #[serde(default)]
        expires_at_ms: Option<u64>,
    }
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
        .await
        .map_err(|e| Status::internal(format!("reading the publish answer: {e}")))?;
    let p: Published = serde_json::from_slice(&body)
        .map_err(|e| Status::internal(format!("the publish answer does not parse: {e}")))?;
    Ok(proto::PublishResponse {
        id: p.id,
        topic: p.topic,
        seq: p.seq,
        expires_at_ms: p.expires_at_ms.unwrap_or(0),
        replayed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_keep_their_slashes_and_nothing_else_passes_raw() {
        assert_eq!(path_segments("sensors/1/temp"), "sensors/1/temp");
        assert_eq!(path_segments("a b?c#d%"), "a%20b%3Fc%23d%25");
    }

    #[test]
    fn call_metadata_is_not_forwarded() {
        let mut meta = MetadataMap::new();
        meta.insert("authorization", "Bearer t".parse().unwrap());
        meta.insert("content-type", "application/grpc".parse().unwrap());
        meta.insert("grpc-timeout", "5S".parse().unwrap());
        meta.insert("traceparent", "00-abc-def-01".parse().unwrap());
        meta.insert_bin(
            "trace-bin",
            tonic::metadata::MetadataValue::from_bytes(b"x"),
        );
        let h = headers_of(meta);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["authorization", "traceparent"]);
    }

    #[test]
    fn api_statuses_map_to_grpc_codes() {
        assert_eq!(code_of(StatusCode::UNAUTHORIZED), Code::Unauthenticated);
        assert_eq!(code_of(StatusCode::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(code_of(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code_of(StatusCode::BAD_REQUEST), Code::InvalidArgument);
        assert_eq!(
            code_of(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
    }
}
