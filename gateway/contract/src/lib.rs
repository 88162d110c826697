//! The contract between the pushgate gateway and its operator. Everything
//! both sides must agree on is defined here once: the gateway parses these
//! types and the operator renders them, so drift between the two is a
//! compile error.
//!
//! - [`config`]: every section of the gateway's config file, with defaults;
//! - [`routing`]: the canary routing table, its validation, [`routing::Track`]
//!   and the bucket hash (pinned by test vectors);
//! - [`names`]: ConfigMap keys, `PUSHGATE_*` variable names, ports and paths;
//! - [`hash`]: the small stable hashes the wire formats use.

pub mod config;
pub mod degrade;
pub mod hash;
pub mod names;
pub mod routing;
