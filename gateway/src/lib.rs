//! pushgate: a Server-Sent Events push gateway with exact resume.
//!
//! The folders are the architecture, inside out:
//! - [`core`]: the pure pieces (topics, positions, cursors, resume
//!   planning, the replay/live sequencer, queues, tiers, devices, shadows);
//! - [`engine`]: the one engine every protocol goes through
//!   ([`engine::node::Node`]: publish, subscribe, devices), fan-out, and
//!   the typed [`engine::delivery::Delivery`] a subscription yields;
//! - [`store`]: the [`store::Store`] seam and its SQLite and Redis implementations;
//! - [`auth`]: credentials and topic claims; [`routing`]: canary tracks;
//! - [`edges`]: one folder per protocol, each a thin encoder over the
//!   engine, plus what they share (`edges::shared`);
//! - [`ops`]: metrics, degrade switches, lifecycle, reload, telemetry.

pub mod auth;
pub mod config;
pub mod core;
pub mod edges;
pub mod engine;
pub mod ops;
pub mod routing;
pub mod store;

use std::sync::Arc;

pub use config::Config;
pub use edges::server::Server;
pub use engine::node::Node;

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
        ops::lifecycle::drain(self.node, self.server).await;
    }
}
