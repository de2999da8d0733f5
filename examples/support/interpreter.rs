//! The examples' simulated chain checks every input with Bitcoin Core's
//! script interpreter (libbitcoinconsensus, every pre-taproot rule).

use bitcoin::consensus::serialize;
use bitcoin::{Transaction, TxOut};
use paychan::sim::chain::SimChain;

/// A simulated chain whose every accepted input passes the interpreter.
pub fn verified_chain() -> SimChain {
    SimChain::with_verifier(Box::new(|tx: &Transaction, index: usize, spent: &TxOut| {
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
