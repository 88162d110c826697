//! The HTTP surface: routes, request parsing at the edge, and
//! per-connection context.

mod caller;
pub mod cors;
mod devices;
mod ops;
mod publish;
pub mod refusal;
mod shadow;
mod subscribe;
pub mod trace;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Version;
use axum::routing::{get, post};
use axum::Router;

use crate::core::protocol::Protocol;
use crate::edges::shared::conn::{ConnInfo, STREAM_PATH};
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::node::Node;

/// The API and stream routes, plus health and metrics.
pub fn router(node: Arc<Node>) -> Router {
    let demo = if node.config().demo_page {
        Router::new()
            .route("/demo", get(demo_page))
            .route("/demo/", get(demo_page))
    } else {
        Router::new()
    };
    let routes = Router::new()
        .route(STREAM_PATH, get(subscribe::stream))
        .route(
            "/v1/topics/{*path}",
            post(publish::publish_one).delete(publish::wipe),
        )
        .route("/v1/publish", post(publish::publish_batch))
        .route("/v1/devices/{device}/ack", post(devices::ack))
        .route(
            "/v1/devices/{device}/shadow",
            get(shadow::get).patch(shadow::patch),
        )
        .merge(ops_routes())
        .merge(demo)
        .fallback(not_found);
    let allowed = Arc::new(node.config().cors.allowed_origins.clone());
    let routes = if allowed.is_empty() {
        routes
    } else {
        routes.layer(axum::middleware::from_fn(move |req, next| {
            crate::edges::http::cors::timing_allow_origin(allowed.clone(), req, next)
        }))
    };
    routes
        .layer(tower::util::option_layer(crate::edges::http::cors::layer(
            &node.config().cors,
        )))
        .layer(axum::middleware::from_fn(trace::log_request))
        .with_state(node)
}

/// Health and metrics only (the separate metrics port).
pub fn ops_router(node: Arc<Node>) -> Router {
    ops_routes().fallback(not_found).with_state(node)
}

fn ops_routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
}

/// The example browser subscriber (`demo_page: true`), a single static page.
async fn demo_page() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../../../examples/web/index.html"),
    )
}

async fn not_found(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    // A gRPC client reads only gRPC statuses: tell it in its own terms.
    let grpc = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(
            "no such gRPC service here (is protocols.grpc.enabled set?)",
        )
        .into_http();
    }
    ApiError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}

/// A 200 `text/event-stream` response with the headers every stream carries
/// (no caching, no proxy buffering).
pub fn event_stream(body: axum::body::Body) -> axum::http::Response<axum::body::Body> {
    use axum::http::{header, HeaderValue};
    let mut resp = axum::http::Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for Protocol {
    type Rejection = Infallible;

    /// HTTP/1.1, HTTP/2 and HTTP/3 are told by the request's version.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(protocol_of(parts.version))
    }
}

/// The protocol of an HTTP request's version.
fn protocol_of(version: Version) -> Protocol {
    match version {
        Version::HTTP_2 => Protocol::H2,
        Version::HTTP_3 => Protocol::H3,
        _ => Protocol::Http1,
    }
}

/// Splits a raw query string into its decoded pairs.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_names_the_protocol() {
        assert_eq!(protocol_of(Version::HTTP_11), Protocol::Http1);
        assert_eq!(protocol_of(Version::HTTP_10), Protocol::Http1);
        assert_eq!(protocol_of(Version::HTTP_2), Protocol::H2);
        assert_eq!(protocol_of(Version::HTTP_3), Protocol::H3);
    }
}
