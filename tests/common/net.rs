//! The world of the on-chain tests: [`paychan::sim::net::Net`] on a chain
//! whose every accepted input passes Bitcoin Core's script interpreter.

use bitcoin::{Amount, FeeRate, Transaction};

pub use paychan::sim::net::Net;

pub use super::chain::verified_chain;

/// An open channel on a verified chain.
pub fn open() -> Net {
    Net::open(verified_chain())
}

/// The same with `config`.
pub fn open_with(config: paychan::channel::ChannelConfig) -> Net {
    Net::open_with(config, verified_chain())
}

/// A transaction's fee rate, given the values it spends.
pub fn fee_rate(tx: &Transaction, spent: Amount) -> FeeRate {
    let out: Amount = tx.output.iter().map(|o| o.value).sum();
    FeeRate::from_sat_per_kwu((spent - out).to_sat() * 1000 / tx.weight().to_wu())
}
