//! What every protocol edge shares: the connection's facts, the one error
//! list and its status codes, and the flows of publishing and of opening a
//! stream.

pub mod client;
pub mod conn;
pub mod drain;
pub mod error;
pub mod publish;
pub mod subscribe;
