//! Process lifecycle: signals, drain then exit.

use std::sync::Arc;
use std::time::Duration;

use crate::edges::server::Server;
use crate::engine::node::Node;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Drains: readiness false at once, and the connections open then are asked
/// to reconnect on fresh ones after their current responses (HTTP/2 and
/// HTTP/3 GOAWAY, HTTP/1.1 close); open streams
/// close spread over the drain window (each with a jittered `retry:`). A
/// stream opened during the drain arrived on a fresh connection, so no
/// ready replica took it: it is served until the window ends. The
/// listeners stop when no stream is left or the window has passed.
pub async fn drain(node: Arc<Node>, server: Server) {
    node.start_drain();
    let window = node.config().delivery.drain_window;
    let started = tokio::time::Instant::now();
    // Stay reachable briefly even when idle, so load balancers see readiness fall.
    let min_wait = window.min(Duration::from_secs(1));
    tracing::info!(
        streams = node.metrics().connections.get(),
        window_ms = window.as_millis() as u64,
        "draining"
    );
    loop {
        let elapsed = started.elapsed();
        if elapsed >= window || (elapsed >= min_wait && node.metrics().connections.get() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown(Duration::from_secs(2)).await;
    tracing::info!(left = node.metrics().connections.get(), "drained; exiting");
}
