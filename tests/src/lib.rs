//! Harnesses for the real dependencies of the end-to-end tests. Each one
//! starts its process on loopback and cleans up on drop.

pub mod browser;
pub mod cluster;
pub mod controlplane;
pub mod gateway;
pub mod grpc;
pub mod h2_raw;
pub mod h3_client;
pub mod keda;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod redis;
pub mod sse_client;
pub mod subscriber;
pub mod wait;
