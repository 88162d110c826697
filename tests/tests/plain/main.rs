//! Gateway processes on loopback and what they talk to: the embedded store
//! and a real Redis, gRPC and HTTP/3 clients, the example clients, and
//! property tests. No control plane, no browser. One test binary (one link)
//! for all of them; each former test file is a module:
//! `cargo test -p pushgate-e2e --test plain gateway_api::`.

mod canary_routing;
mod contract_roundtrip;
mod credentials_mtls;
mod credentials_tokens;
mod degrade_switches;
mod devices_acks;
mod devices_property;
mod devices_shadow;
mod devices_ttl;
mod examples_clients;
mod gateway_api;
mod gateway_backpressure;
mod gateway_drain;
mod gateway_limits;
mod gateway_metrics;
mod gateway_restarts;
mod gateway_wire;
mod grpc_streams;
mod http3_streams;
mod limits_identity;
mod protocol_matrix;
mod redis_replicas;
mod redis_store;
mod resume_property;
mod security_auth;
mod security_cors;
mod security_tls;
mod wire_fixture;
