//! gRPC (`pushgate.v1.Pushgate`, standard health, reflection) on the API
//! port, over HTTP/2. Each call becomes the matching HTTP request to the
//! API router in-process (`/v1/stream`, `/v1/topics/{topic}/events`) with
//! the call's metadata as headers and its connection's facts: auth, limits,
//! admission, drain, routing and metrics are the HTTP ones, not a copy.
//! A stream's SSE body is read back into [`proto::Event`]s.

mod events;
mod forward;

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use futures_util::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::node::Node;

/// The generated messages, server and client of `proto/pushgate/v1/pushgate.proto`.
pub mod proto {
    tonic::include_proto!("pushgate.v1");

    /// The encoded descriptor set, served by reflection.
    pub const DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("pushgate_v1_descriptor");
}

use proto::pushgate_server::{Pushgate, PushgateServer};

/// How often the health service re-reads readiness.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// The `pushgate.v1.Pushgate` service: forwards to the HTTP API.
#[derive(Clone)]
struct Service {
    api: Router,
}

#[tonic::async_trait]
impl Pushgate for Service {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (meta, ext, msg) = req.into_parts();
        let http = forward::subscribe_request(&msg, meta, ext)?;
        let resp = forward::call(&self.api, http).await;
        if resp.status() != axum::http::StatusCode::OK {
            return Err(forward::status_of(resp).await);
        }
        Ok(Response::new(Box::pin(events::read(
            resp.into_body(),
            &msg.topics,
        ))))
    }

    async fn publish(
        &self,
        req: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        let (meta, ext, msg) = req.into_parts();
        let http = forward::publish_request(msg, meta, ext)?;
        let resp = forward::call(&self.api, http).await;
        if resp.status() != axum::http::StatusCode::CREATED {
            return Err(forward::status_of(resp).await);
        }
        forward::published(resp).await.map(Response::new)
    }
}

/// Adds the gRPC services to `api`, which they forward to.
pub fn mount(api: Router, node: &Arc<Node>) -> Router {
    let pushgate = PushgateServer::new(Service { api: api.clone() });
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
        let status = match crate::http::ops::readiness(&node) {
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
