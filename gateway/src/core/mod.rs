//! The pure pieces: no I/O, no clock but what they are given, each
//! property-tested on its own.

pub mod cursor;
pub mod device;
pub mod hash;
pub mod limits;
pub mod position;
pub mod protocol;
pub mod queue;
pub mod resume;
pub mod sequencer;
pub mod shadow;
pub mod tier;
pub mod topic;
pub mod traceparent;
