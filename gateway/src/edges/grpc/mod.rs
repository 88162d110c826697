//! gRPC (`pushgate.v1.Pushgate`, standard health, reflection) on the API
//! port, over HTTP/2: a thin edge over the engine. A call is parsed into
//! the same asks as an HTTP request and goes through the same shared flows
//! (auth, limits, admission, drain, routing); a subscription's deliveries
//! are encoded once as [`proto::Event`]s (`deliveries`). Only a stream that
//! the other canary track serves arrives as its SSE response, read back
//! into events (`events`).

mod call;
pub mod codec;
mod deliveries;
mod events;

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::http::HeaderValue;
use axum::Router;
use futures_util::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::auth::Identity;
use crate::core::protocol::Protocol;
use crate::edges::shared::client;
use crate::edges::shared::conn::ConnInfo;
use crate::edges::shared::error::ApiError;
use crate::edges::shared::publish::{self as flow, parse_topic, PublishAsk, Published};
use crate::edges::shared::subscribe::{self, Failure, Opened, Origin, StreamAsk};
use crate::engine::node::Node;
use call::status;

/// The generated messages, server and client of `proto/pushgate/v1/pushgate.proto`.
pub mod proto {
    // Generated code builds every codec with `Default::default()`, ours too.
    #![allow(clippy::default_constructed_unit_structs)]
    tonic::include_proto!("pushgate.v1");
    // The server, declared in build.rs.
    include!(concat!(env!("OUT_DIR"), "/pushgate.v1.Pushgate.rs"));

    /// The encoded descriptor set, served by reflection.
    pub const DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("pushgate_v1_descriptor");
}

use proto::pushgate_server::{Pushgate, PushgateServer};

/// What a `Publish` message may carry besides its data: topic, event type,
/// TTL, priority and idempotency key are each far smaller.
const MESSAGE_OVERHEAD: usize = 16 * 1024;

/// How often the health service re-reads readiness.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// The `pushgate.v1.Pushgate` service.
#[derive(Clone)]
struct Service {
    node: Arc<Node>,
}

impl Service {
    /// Who calls, from the call's metadata and connection (a 401 as
    /// `UNAUTHENTICATED` before anything else is read).
    fn caller(&self, headers: &axum::http::HeaderMap, conn: &ConnInfo) -> Result<Identity, Status> {
        self.node
            .auth()
            .authenticate(headers, None, conn.cert.as_deref())
            .map_err(|e| status(e.into()))
    }
}

#[tonic::async_trait]
impl Pushgate for Service {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<codec::Encoded, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (meta, ext, msg) = req.into_parts();
        let conn = call::conn_of(&ext)?;
        let headers = call::headers_of(meta);
        let who = self.caller(&headers, &conn)?;
        let node = &self.node;
        let mut topics = Vec::with_capacity(msg.topics.len());
        for t in &msg.topics {
            let t = parse_topic(t).map_err(status)?;
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        let own_cursor = (!msg.last_event_id.is_empty()).then_some(msg.last_event_id.as_str());
        let shadow_version = (msg.shadow_version > 0).then_some(msg.shadow_version);
        let ask = StreamAsk::new(node, topics, &headers, own_cursor, None, shadow_version)
            .map_err(status)?;
        let uri = call::stream_uri(&msg)?;
        let origin = Origin {
            who,
            protocol: Protocol::Grpc,
            client: client::of(node, &conn, &headers),
            conn: conn.kill,
            headers: &headers,
            uri: &uri,
        };
        let stream: Self::SubscribeStream = match subscribe::open(node, origin, ask).await {
            Ok(Opened::Local { deliveries, .. }) => Box::pin(deliveries::encode(deliveries)),
            Ok(Opened::Forwarded(resp)) if resp.status() == axum::http::StatusCode::OK => {
                Box::pin(events::read(resp.into_body(), &msg.topics))
            }
            Ok(Opened::Forwarded(resp)) => return Err(call::status_of(resp).await),
            Err(Failure::Refused(r)) => return Err(status(ApiError::from(r))),
            Err(Failure::Api(e)) => return Err(status(e)),
        };
        Ok(Response::new(stream))
    }

    async fn publish(
        &self,
        req: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let (meta, ext, msg) = req.into_parts();
        // What HTTP publishers send as a header must be header text here too.
        if !msg.idempotency_key.is_empty() && HeaderValue::from_str(&msg.idempotency_key).is_err() {
            return Err(Status::invalid_argument(
                "idempotency_key is not header text",
            ));
        }
        let conn = call::conn_of(&ext)?;
        let headers = call::headers_of(meta);
        let who = self.caller(&headers, &conn)?;
        let node = &self.node;
        let options = [
            ("event", msg.event_type.as_str()),
            ("ttl", msg.ttl.as_str()),
            ("priority", msg.priority.as_str()),
        ];
        let ask = PublishAsk {
            topic: &msg.topic,
            options: options.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
            idempotency_key: (!msg.idempotency_key.is_empty())
                .then_some(msg.idempotency_key.as_str()),
        };
        let client = client::of(node, &conn, &headers);
        let prepared = flow::prepare(node, &who, client, ask).map_err(status)?;
        let limit = node.config().limits.max_body_bytes;
        if msg.data.len() > limit {
            return Err(status(flow::too_large(limit)));
        }
        let ack = flow::commit(node, prepared, msg.data.into())
            .await
            .map_err(status)?;
        let p = Published::from(&ack);
        Ok(Response::new(proto::PublishResponse {
            id: p.id,
            topic: p.topic.as_str().to_owned(),
            seq: p.seq,
            expires_at_ms: p.expires_at_ms.unwrap_or(0),
            replayed: ack.duplicate,
        }))
    }
}

/// Adds the gRPC services to `api`.
pub fn mount(api: Router, node: &Arc<Node>) -> Router {
    // A message far over the body limit is refused from its length prefix,
    // before it is read (tonic's default would buffer up to 4 MiB of it).
    let pushgate = PushgateServer::new(Service { node: node.clone() })
        .max_decoding_message_size(node.config().limits.max_body_bytes + MESSAGE_OVERHEAD);
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(reporter, Arc::downgrade(node)));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor sets are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled descriptor sets are valid");
    api.route_service(&route_of(&pushgate), pushgate)
        .route_service(&route_of(&health), health)
        .route_service(&route_of(&reflection), reflection)
        .route_service(&route_of(&reflection_alpha), reflection_alpha)
}

/// The route of every method of a service: `/{package.Service}/{method}`.
fn route_of<S: NamedService>(_: &S) -> String {
    format!("/{}/{{method}}", S::NAME)
}

/// Keeps the health service in step with `/readyz`: serving while the pod
/// takes new clients, not serving while it drains or its store is out.
/// Ends with the node.
async fn report_health(reporter: tonic_health::server::HealthReporter, node: Weak<Node>) {
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_POLL);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let status = match node.readiness() {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        drop(node);
        if last != Some(status) {
            // The empty name is the whole server's status.
            for service in ["", <PushgateServer<Service> as NamedService>::NAME] {
                reporter.set_service_status(service, status).await;
            }
            last = Some(status);
        }
    }
}
