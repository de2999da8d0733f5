//! The in-memory pair lives in the library: `paychan::sim`.
#[allow(unused_imports)]
pub use paychan::sim::*;
