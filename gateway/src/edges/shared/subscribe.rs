//! The way every protocol opens a stream: authorise every topic, admit,
//! route by canary track, then open the subscription here or forward it to
//! the other track. Edges parse their own request into [`StreamAsk`] and
//! encode what comes back; none of them holds a copy of this.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Response, Uri};
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, AuthError, Identity};
use crate::core::cursor::ResumeFrom;
use crate::core::device::DeviceId;
use crate::core::protocol::Protocol;
use crate::core::topic::Topic;
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::admission::{self, Refusal, RefuseReason};
use crate::engine::delivery::Delivery;
use crate::engine::node::Node;
use crate::engine::stream::{self, Deliveries, OpenError, StreamRequest};
use crate::routing::{Decision, Track};

/// A stream request as an edge parsed it.
pub struct StreamAsk {
    /// Topics, deduplicated, in request order.
    pub topics: Vec<Topic>,
    /// Where to start.
    pub resume: ResumeFrom,
    /// The device it names (trusted only with auth off).
    pub device: Option<DeviceId>,
    /// The shadow version the device already has.
    pub shadow_version: Option<u64>,
}

impl StreamAsk {
    /// Checks what every edge parsed the same way: at least one topic and at
    /// most `limits.max_topics_per_stream`, and the cursor, where the
    /// `Last-Event-ID` header wins over the request's own (it is what a
    /// reconnecting EventSource sends).
    pub fn new(
        node: &Node,
        topics: Vec<Topic>,
        headers: &HeaderMap,
        own_cursor: Option<&str>,
        device: Option<DeviceId>,
        shadow_version: Option<u64>,
    ) -> Result<StreamAsk, ApiError> {
        if topics.is_empty() {
            return Err(ApiError::new(
                ErrorCode::MissingTopic,
                "give at least one ?topic=",
            ));
        }
        let max = node.config().limits.max_topics_per_stream;
        if topics.len() > max {
            return Err(ApiError::new(
                ErrorCode::TooManyTopics,
                format!("a stream carries at most {max} topics"),
            ));
        }
        let header_cursor = match headers.get("last-event-id") {
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::new(ErrorCode::BadCursor, "Last-Event-ID is not valid text")
            })?),
            None => None,
        };
        let text = header_cursor.or(own_cursor).unwrap_or("");
        let resume = ResumeFrom::parse(text)
            .map_err(|e| ApiError::new(ErrorCode::BadCursor, e.to_string()))?;
        Ok(StreamAsk {
            topics,
            resume,
            device,
            shadow_version,
        })
    }
}

/// Who asks, and over what.
pub struct Origin<'a> {
    /// The authenticated caller.
    pub who: Identity,
    /// The protocol it came over.
    pub protocol: Protocol,
    /// The client address (`edges::shared::client`).
    pub client: IpAddr,
    /// Closes the caller's connection (a slow consumer that stops reading).
    pub conn: CancellationToken,
    /// Request headers: routing keys, the peer proxy's proof.
    pub headers: &'a HeaderMap,
    /// The request as the other track would be asked for it.
    pub uri: &'a Uri,
}

/// A stream that opened.
pub enum Opened {
    /// Served here.
    Local {
        /// What it delivers.
        deliveries: Deliveries,
        /// This pod's track.
        track: Track,
        /// A routing-key cookie to set, so a reconnect keeps its bucket.
        set_cookie: Option<String>,
    },
    /// Served by the other track: its SSE response, relayed.
    Forwarded(Response<Body>),
}

/// Why a stream request did not become a stream.
pub enum Failure {
    /// Come back later (its form depends on the client).
    Refused(Refusal),
    /// An error.
    Api(ApiError),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Failure::Api(e.into())
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Refused(r) => Failure::Refused(r),
            OpenError::CursorAhead(c) => Failure::Api(c.into()),
        }
    }
}

/// The device a stream belongs to: the credential's, or with auth off the
/// `device` parameter. A parameter naming another device than the
/// credential's is refused rather than ignored.
fn stream_device(who: &Identity, named: Option<DeviceId>) -> Result<Option<DeviceId>, AuthError> {
    match (who, named) {
        (Identity::Open, named) => Ok(named),
        (_, None) => Ok(who.device().cloned()),
        (_, Some(d)) => who.may_act_for(&d).map(|()| Some(d)),
    }
}

/// Opens `ask` for `origin`.
pub async fn open(node: &Arc<Node>, origin: Origin<'_>, ask: StreamAsk) -> Result<Opened, Failure> {
    let Origin {
        who,
        protocol,
        client,
        conn,
        headers,
        uri,
    } = origin;
    // All requested topics or none: a partial stream would hide the refusal.
    node.auth()
        .authorize(&who, Access::Subscribe, &ask.topics)?;
    let device = stream_device(&who, ask.device)?;
    let routing = &node.routing();
    // A request that says a peer proxied it must prove it, and must have
    // been routed with the table this pod has: otherwise the two pods
    // disagree about its track, and serving it could pin it to the wrong one.
    let proxied = match node.proxy() {
        Some(p) => p
            .verify(headers)
            .map_err(|_| node.refuse(RefuseReason::ProxyUnauthenticated))?,
        None => None,
    };
    // A stream another track proxied was counted against its client there.
    let client = proxied.is_none().then(|| who.client_key(client));
    let slot = admission::admit(node, protocol, client)?;
    let routed = routing.decide(headers, who.client_id(), proxied.is_some());
    // A proxied stream registers under the sender's table: if this pod's
    // differs (older or newer), registration fails and the client retries.
    let version = proxied.map_or(routed.version, |p| p.version);
    let route_changed = || node.refuse(RefuseReason::RouteChanged);
    match routed.decision {
        Decision::Local { key } => {
            let route = routing
                .register(key, routing.track, version)
                .map_err(|_| route_changed())?;
            let deliveries = stream::open(
                node,
                StreamRequest {
                    topics: ask.topics,
                    resume: ask.resume,
                    device,
                    shadow_version: ask.shadow_version,
                    conn,
                    slot,
                    route: Some(route),
                    credential: who.lifetime().cloned(),
                },
            )
            .await?;
            Ok(Opened::Local {
                deliveries,
                track: routing.track,
                set_cookie: routed.set_cookie,
            })
        }
        Decision::Proxy { key } => {
            let proxy = node.proxy().expect("Proxy is only decided with a peer");
            let route = routing
                .register(key, routing.track.other(), version)
                .map_err(|_| route_changed())?;
            let ending = stream::farewell(node.clone(), route.moved.clone());
            let farewell =
                Box::pin(async move { crate::edges::sse::encode(Delivery::End(ending.await)).0 });
            let resp = proxy
                .forward(
                    uri,
                    headers,
                    routed.set_cookie.as_deref(),
                    routed.version,
                    (slot, route),
                    farewell,
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "peer track unreachable; the client retries");
                    node.refuse(RefuseReason::PeerUnreachable)
                })?;
            Ok(Opened::Forwarded(resp))
        }
    }
}
