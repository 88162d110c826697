//! The API port's router: every HTTP route, and the gRPC services beside
//! them when enabled, under one listener.

use std::sync::Arc;

use axum::Router;

use crate::engine::node::Node;

/// The API and stream routes (plus health and metrics), and gRPC when
/// `protocols.grpc.enabled`. With `h3_port` every response advertises
/// HTTP/3 there (`Alt-Svc`).
pub fn api_router(node: Arc<Node>, h3_port: Option<u16>) -> Router {
    let http = crate::edges::http::router(node.clone());
    let api = if node.config().protocols.grpc.enabled {
        crate::edges::grpc::mount(http, &node)
    } else {
        http
    };
    match h3_port {
        Some(port) => {
            let alt_svc = axum::http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
                .expect("a port is header text");
            api.layer(axum::middleware::map_response(
                move |mut resp: axum::response::Response| {
                    let alt_svc = alt_svc.clone();
                    async move {
                        resp.headers_mut()
                            .insert(axum::http::header::ALT_SVC, alt_svc);
                        resp
                    }
                },
            ))
        }
        None => api,
    }
}
