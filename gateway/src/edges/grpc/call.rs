//! What a gRPC call carries besides its message: metadata as the headers the
//! shared flows read, the connection's facts, and errors as statuses.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use tonic::metadata::MetadataMap;
use tonic::{Code, Extensions, Status};

use super::proto;
use crate::edges::shared::conn::{ConnInfo, STREAM_PATH};
use crate::edges::shared::error::ApiError;

/// Largest error answer read back from the other track (the API's are far smaller).
const MAX_ANSWER: usize = 64 * 1024;

/// Metadata that describes the gRPC call itself, not what it asks for.
fn is_call_header(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "content-length" | "te" | "accept" | "accept-encoding" | "host"
    ) || name.starts_with("grpc-")
}

/// The call's metadata as request headers (binary `-bin` entries are not
/// headers the gateway reads).
pub fn headers_of(meta: MetadataMap) -> HeaderMap {
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

/// The facts of the connection the call arrived on (peer address, kill
/// switch, client certificate), which the listener attaches to every request.
pub fn conn_of(ext: &Extensions) -> Result<ConnInfo, Status> {
    ext.get::<ConnInfo>()
        .cloned()
        .ok_or_else(|| Status::internal("the call carries no connection facts"))
}

/// `Subscribe` as the stream request the other canary track is asked for:
/// `GET /v1/stream?topic=…&last_event_id=…`.
pub fn stream_uri(msg: &proto::SubscribeRequest) -> Result<axum::http::Uri, Status> {
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
    format!("{STREAM_PATH}?{}", q.finish())
        .parse()
        .map_err(|e| Status::invalid_argument(format!("cannot form the request: {e}")))
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

/// A status with the gateway's error code as `pushgate-code` and, for a
/// refusal for now, `retry-after`.
fn status_with(
    code: Code,
    message: String,
    pushgate_code: &str,
    retry_after: Option<u64>,
) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = pushgate_code.parse() {
        s.metadata_mut().insert("pushgate-code", v);
    }
    if let Some(secs) = retry_after {
        s.metadata_mut().insert("retry-after", secs.into());
    }
    s
}

/// An API error as a status.
pub fn status(e: ApiError) -> Status {
    let code = code_of(e.status());
    status_with(code, e.message, e.code.as_str(), e.retry_after)
}

/// An error answer of the other track as a status: its code and message,
/// with its error code and `retry-after` kept.
pub async fn status_of(resp: axum::http::Response<Body>) -> Status {
    let (parts, body) = resp.into_parts();
    let code = code_of(parts.status);
    let body = axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Answer {
        error: String,
        code: String,
    }
    let retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match serde_json::from_slice::<Answer>(&body) {
        Ok(a) => status_with(code, a.error, &a.code, retry_after),
        Err(_) => {
            let mut s = Status::new(code, format!("HTTP {}", parts.status));
            if let Some(secs) = retry_after {
                s.metadata_mut().insert("retry-after", secs.into());
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::shared::error::ErrorCode;

    #[test]
    fn call_metadata_is_not_read_as_headers() {
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

    #[test]
    fn an_error_keeps_its_code_and_retry_hint() {
        let s = status(ApiError::new(ErrorCode::Draining, "later").with_retry_after(3));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "later");
        assert_eq!(s.metadata().get("pushgate-code").unwrap(), "draining");
        assert_eq!(s.metadata().get("retry-after").unwrap(), "3");
    }
}
