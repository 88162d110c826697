//! Cross-origin access for browser subscribers (`EventSource`, with
//! `withCredentials` when cookies carry the token).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use pushgate_contract::config::CorsConfig;

/// The layer for `c`, when any origin is allowed.
pub fn layer(c: &CorsConfig) -> Option<CorsLayer> {
    if c.allowed_origins.is_empty() {
        return None;
    }
    let origin = if c.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            c.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_credentials(c.allow_credentials)
            // PATCH, If-Match and ETag: device shadows edited from a page.
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("traceparent"),
                header::IF_MATCH,
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static("idempotent-replayed"),
                header::ETAG,
            ])
            .max_age(c.max_age),
    )
}

/// `Timing-Allow-Origin` for the origins CORS allows, so a page can read its
/// streams' Resource Timing (the protocol they used, how long they took to
/// connect) for its own monitoring; other origins see zeros, as browsers
/// default to.
pub async fn timing_allow_origin(allowed: Arc<Vec<String>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = next.run(req).await;
    if let Some(origin) = origin {
        let any = allowed.iter().any(|o| o == "*");
        if any || allowed.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
            resp.headers_mut()
                .insert(HeaderName::from_static("timing-allow-origin"), origin);
        }
    }
    resp
}
