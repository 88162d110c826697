//! The protocol edges. Each parses its own requests into the engine's
//! asks and encodes what the engine delivers exactly once into its own wire
//! format; no edge calls another. What they share is in [`shared`]; the
//! TCP listeners ([`server`], [`tcp`], [`tls`]) carry HTTP/1.1, HTTP/2 and
//! gRPC, QUIC carries HTTP/3.

pub mod api;
pub mod frame_budget;
pub mod grpc;
pub mod http;
pub mod http3;
pub mod lean;
pub mod on_wake;
pub mod server;
pub mod shared;
pub mod sse;
pub mod tcp;
pub mod tls;
