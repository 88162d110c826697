//! pushgate: a Server-Sent Events push gateway with exact resume.
//!
//! Layers, outside in: [`http`] parses requests at the edge into trusted
//! types ([`topic::Topic`], [`cursor::Cursor`]); [`node::Node`] owns the
//! [`store::Store`] (the single seam to durable history) and the
//! [`fanout::Hub`] (local delivery); [`stream`] runs one SSE stream.

pub mod admission;
pub mod alloc;
pub mod auth;
pub mod config;
pub mod cors;
pub mod cursor;
pub mod degrade;
pub mod device;
pub mod edge;
pub mod fanout;
pub mod grpc;
pub mod hash;
pub mod http;
pub mod http3;
pub mod lean;
pub mod ledger;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod position;
pub mod protocol;
pub mod queue;
pub mod reload;
pub mod resume;
pub mod routing;
pub mod sequencer;
pub mod server;
pub mod shadow;
pub mod sse;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tier;
pub mod tls;
pub mod topic;

use std::sync::Arc;

pub use config::Config;
pub use node::Node;
pub use server::Server;

/// A gateway running inside the current tokio runtime (used by `pushgate
/// serve` and by in-process tests).
pub struct Gateway {
    /// The node.
    pub node: Arc<Node>,
    /// Its listeners.
    pub server: Server,
}

impl Gateway {
    /// Opens the store and binds the listeners.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        let node = Node::start(config).await?;
        let server = Server::start(node.clone()).await?;
        Ok(Gateway { node, server })
    }

    /// Drains and stops (what SIGTERM does).
    pub async fn drain(self) {
        lifecycle::drain(self.node, self.server).await;
    }
}
