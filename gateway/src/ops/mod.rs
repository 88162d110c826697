//! Running the gateway: metrics, degrade switches and breakers, the
//! process lifecycle and its open-file limit, reloads, telemetry, the
//! allocator.

pub mod alloc;
pub mod degrade;
pub mod lifecycle;
pub mod metrics;
pub mod nofile;
pub mod reload;
pub mod telemetry;
