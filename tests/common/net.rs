//! The world of the on-chain tests: [`paychan::sim::net::Net`] on a chain
//! whose every accepted input passes Bitcoin Core's script interpreter.

use bitcoin::consensus::serialize;
use bitcoin::{Amount, FeeRate, Transaction};
use paychan::sim::chain::SimChain;

pub use paychan::sim::net::Net;

/// A simulated chain checking every input with libbitcoinconsensus.
pub fn verified_chain() -> SimChain {
    SimChain::with_verifier(Box::new(|tx: &Transaction, index: usize, spent: &bitcoin::TxOut| {
        bitcoinconsensus::verify_with_flags(
            spent.script_pubkey.as_bytes(),
            spent.value.to_sat(),
            &serialize(tx),
            None,
            index,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT,
        )
        .map_err(|e| format!("{e:?}"))
    }))
}

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
