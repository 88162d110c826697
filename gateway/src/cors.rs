//! Cross-origin access for browser subscribers (`EventSource`, with
//! `withCredentials` when cookies carry the token).

use axum::http::{header, HeaderName, HeaderValue, Method};
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
