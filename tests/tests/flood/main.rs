//! Hostile load: `pushgate-flood` processes hold 27,000 loopback connections,
//! nearly all of the machine's ephemeral ports, so these tests get a process
//! (and a `cargo test` turn) of their own instead of sharing one with the
//! gateway tests.

mod edge_flood;
