//! Cross-origin access for browser subscribers (`EventSource`, with
//! `withCredentials` when cookies carry the token).

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The `cors` section. No origins: no CORS headers at all (same-origin only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins such as `https://app.example.com`, or the single entry `*`.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `withCredentials`).
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

fn origin_ok(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', ' '])
        && HeaderValue::from_str(o).is_ok()
}

impl CorsConfig {
    /// `*` alone and never with credentials (browsers refuse that pairing, and
    /// it would hand every site the user's cookie-carried token); otherwise
    /// exact `scheme://host[:port]` origins.
    pub fn validate(&self) -> Result<(), String> {
        let wildcard = self.allowed_origins.iter().any(|o| o == "*");
        if wildcard && (self.allowed_origins.len() > 1 || self.allow_credentials) {
            return Err(
                "cors.allowed_origins `*` must stand alone and excludes cors.allow_credentials"
                    .into(),
            );
        }
        if let Some(bad) = self
            .allowed_origins
            .iter()
            .find(|o| *o != "*" && !origin_ok(o))
        {
            return Err(format!(
                "cors.allowed_origins: {bad:?} is not an origin like https://app.example.com"
            ));
        }
        if self.allow_credentials && self.allowed_origins.is_empty() {
            return Err("cors.allow_credentials needs cors.allowed_origins".into());
        }
        Ok(())
    }

    /// The layer, when any origin is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        let origin = if self.allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_credentials(self.allow_credentials)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static("traceparent"),
                ])
                .expose_headers([
                    header::RETRY_AFTER,
                    HeaderName::from_static("idempotent-replayed"),
                ])
                .max_age(self.max_age),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str], creds: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: creds,
            ..Default::default()
        }
    }

    #[test]
    fn validation() {
        cfg(&[], false).validate().unwrap();
        cfg(&["*"], false).validate().unwrap();
        cfg(&["https://a.example", "http://localhost:3000"], true)
            .validate()
            .unwrap();
        assert!(cfg(&["*"], true).validate().is_err());
        assert!(cfg(&["*", "https://a.example"], false).validate().is_err());
        assert!(cfg(&["https://a.example/"], false).validate().is_err());
        assert!(cfg(&["a.example"], false).validate().is_err());
        assert!(cfg(&["https://*.example"], false).validate().is_err());
        assert!(cfg(&[], true).validate().is_err());
    }
}
