//! paychan: a sans-IO core for two-party Bitcoin payment channels.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fees;
pub mod shachain;
pub mod types;
pub mod wire;

pub use types::{Delay, HtlcMsat, MilliSats, Preimage};
