//! Authentication as an extractor: a handler that takes [`Caller`] has the
//! caller authenticated from the request head, before any extractor that
//! reads the body runs, so an unauthenticated request costs no buffering.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::ConnInfo;
use crate::auth::Identity;
use crate::edges::shared::error::ApiError;
use crate::engine::node::Node;

/// Who is calling (a 401 before the handler runs if the token is bad).
pub struct Caller(pub Identity);

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let cert = parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.cert.as_deref());
        Ok(Caller(node.auth().authenticate(
            &parts.headers,
            parts.uri.query(),
            cert,
        )?))
    }
}
