//! Process lifecycle: open-file limit, signals, drain then exit.

use std::sync::Arc;
use std::time::Duration;

use crate::node::Node;
use crate::server::Server;

/// Raises the open-file soft limit to the hard limit; returns (before, after, hard).
#[allow(clippy::useless_conversion)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((before, lim.rlim_cur, lim.rlim_max))
    }
}

/// The current open-file soft limit (1024 if it cannot be read).
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

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

/// Drains: readiness false and new streams refused at once; open streams
/// close spread over the drain window (each with a jittered `retry:`); the
/// listeners stop when no stream is left or the window has passed.
pub async fn drain(node: Arc<Node>, server: Server) {
    node.start_drain();
    let window = node.config.delivery.drain_window;
    let started = tokio::time::Instant::now();
    // Stay reachable briefly even when idle, so load balancers see readiness fall.
    let min_wait = window.min(Duration::from_secs(1));
    tracing::info!(
        streams = node.metrics.connections.get(),
        window_ms = window.as_millis() as u64,
        "draining"
    );
    loop {
        let elapsed = started.elapsed();
        if elapsed >= window || (elapsed >= min_wait && node.metrics.connections.get() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown(Duration::from_secs(2)).await;
    tracing::info!(left = node.metrics.connections.get(), "drained; exiting");
}
