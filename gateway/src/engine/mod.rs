//! The engine: [`node::Node`] owns the store, the fan-out hub and the
//! limits, and is what every protocol edge calls; a subscription
//! ([`stream`]) yields typed [`delivery::Delivery`]s that the edges encode.

pub mod admission;
pub mod delivery;
pub mod devices;
pub mod fanout;
pub mod ledger;
pub mod node;
pub mod stream;
