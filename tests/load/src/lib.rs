//! pushgate-load: a raw SSE load generator (idle, fanout, publish, storm)
//! that measures pushgate and any other SSE server given URL templates, and
//! the report writer behind `tests/load/bench.sh`.

pub mod delay;
pub mod floor;
pub mod grpc;
pub mod modes;
pub mod net;
pub mod parse;
pub mod plot;
pub mod quic;
pub mod report;
pub mod stats;
pub mod summary;
pub mod weaknet;
