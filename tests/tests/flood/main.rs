//! Hostile load: `pushgate-flood` processes hold 27,000 loopback connections,
//! nearly all of the machine's ephemeral ports, so these tests get a process
//! (and a `cargo test` turn) of their own instead of sharing one with the
//! gateway tests. The HTTP/2 floods (`h2_floods`) live here for the same
//! reason: what they measure needs the machine to themselves.

mod edge_flood;
mod h2_floods;

/// Held by a test that loads the machine, so that two such tests never run
/// at once (the figures they print would be each other's).
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Descriptors the process `pid` holds open.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
