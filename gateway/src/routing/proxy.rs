//! Forwarding a stream to the other track's Service: streaming, no buffering
//! (heartbeats and events pass through as they come).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::IntGauge;

use super::{Track, PROXIED_HEADER};

/// HTTP/1.1 client to the peer Service.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    peer: Arc<str>,
    track: Track,
    open: IntGauge,
}

/// Headers that belong to one hop only.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// Holds the `proxied_streams` gauge up while the forwarded body lives.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Proxy {
    /// A proxy to `peer` (base URL) for a pod of `track`.
    pub fn new(peer: &str, track: Track, open: IntGauge) -> Proxy {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        Proxy {
            client: Client::builder(TokioExecutor::new()).build(http),
            peer: Arc::from(peer.trim_end_matches('/')),
            track,
            open,
        }
    }

    /// Forwards a stream request; `Err` when the peer cannot be reached.
    pub async fn forward(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        set_cookie: Option<&str>,
    ) -> Result<Response<Body>, String> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let target: Uri = format!("{}{path}", self.peer)
            .parse()
            .map_err(|e| format!("bad peer URL: {e}"))?;
        let mut req = Request::get(target)
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        for (k, v) in headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                req.headers_mut().append(k.clone(), v.clone());
            }
        }
        req.headers_mut().insert(
            PROXIED_HEADER,
            HeaderValue::from_static(self.track.as_str()),
        );
        if let Some(c) = set_cookie {
            // The peer hashes the same key the client will send from now on.
            if let Ok(v) = HeaderValue::from_str(c.split(';').next().unwrap_or("")) {
                req.headers_mut().append(header::COOKIE, v);
            }
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("peer {} unreachable: {e}", self.peer))?;
        let (mut parts, incoming) = resp.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            parts.headers.append(header::SET_COOKIE, c);
        }
        self.open.inc();
        let guard = Open(self.open.clone());
        let body = http_body_util::BodyDataStream::new(incoming).map(move |chunk| {
            let _alive = &guard;
            chunk
        });
        Ok(Response::from_parts(parts, Body::from_stream(body)))
    }
}
