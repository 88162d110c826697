//! Forwarding a stream to the other track's Service: streaming, no
//! buffering (heartbeats and events pass through as they come). The
//! forwarded body ends, with the farewell block it is given, when the
//! holder says so (drain, or the route moved back to this track).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, Uri};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::IntGauge;

use super::peer::PeerToken;
use super::{RouteVersion, Track};

/// HTTP/1.1 client to the peer Service.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    peer: Arc<str>,
    track: Track,
    token: PeerToken,
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

/// Resolves when the forwarded stream must end, to the block written last.
pub type Farewell = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// A forward that could not reach the peer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

impl Proxy {
    /// A proxy to `peer` (base URL) for a pod of `track`.
    pub fn new(peer: &str, track: Track, token: PeerToken, open: IntGauge) -> Proxy {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
        Proxy {
            client: Client::builder(TokioExecutor::new()).build(http),
            peer: Arc::from(peer.trim_end_matches('/')),
            track,
            token,
            open,
        }
    }

    /// Checks the peer headers of an incoming request (see [`PeerToken::verify`]).
    pub fn verify(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<super::ProxiedFrom>, super::peer::Unproven> {
        self.token.verify(headers)
    }

    /// Forwards a stream request routed with table `version`. `hold` lives
    /// as long as the forwarded body; `farewell` ends it.
    pub async fn forward<H: Send + 'static>(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        set_cookie: Option<&str>,
        version: RouteVersion,
        hold: H,
        farewell: Farewell,
    ) -> Result<Response<Body>, Unreachable> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let target: Uri = format!("{}{path}", self.peer)
            .parse()
            .map_err(|e| Unreachable(format!("bad peer URL: {e}")))?;
        let mut req = Request::get(target)
            .body(Body::empty())
            .map_err(|e| Unreachable(e.to_string()))?;
        for (k, v) in headers {
            if !HOP_BY_HOP.contains(&k.as_str()) {
                req.headers_mut().append(k.clone(), v.clone());
            }
        }
        self.token.stamp(req.headers_mut(), self.track, version);
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
            .map_err(|e| Unreachable(format!("peer {} unreachable: {e}", self.peer)))?;
        let (mut parts, incoming) = resp.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(h);
        }
        if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            parts.headers.append(header::SET_COOKIE, c);
        }
        self.open.inc();
        let open = Open(self.open.clone());
        let mut upstream = http_body_util::BodyDataStream::new(incoming);
        let body = async_stream::stream! {
            let _hold = (hold, open);
            let mut farewell = farewell;
            // Only between two blocks may the farewell be written: inside a
            // block it would be read as part of the pending event.
            let mut at_boundary = true;
            loop {
                tokio::select! {
                    biased;
                    bytes = &mut farewell => {
                        if at_boundary {
                            yield Ok::<Bytes, std::convert::Infallible>(bytes);
                        }
                        // Else the client drops the unfinished event and
                        // resumes from the last one it completed.
                        return;
                    }
                    chunk = upstream.next() => match chunk {
                        Some(Ok(b)) => {
                            if !b.is_empty() {
                                at_boundary = b.ends_with(b"\n\n");
                            }
                            yield Ok(b);
                        }
                        _ => return,
                    },
                }
            }
        };
        Ok(Response::from_parts(parts, Body::from_stream(body)))
    }
}
