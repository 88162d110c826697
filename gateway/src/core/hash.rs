//! Small stable hashes used in wire formats (never change them: cursors
//! depend on them). Defined in the contract crate, with their test vectors.

pub use pushgate_contract::hash::{fnv1a32, fnv1a64};
