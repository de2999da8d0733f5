//! The one-way merchant channel (placeholder while the transaction layer
//! lands).

pub mod script;
pub mod wire;
