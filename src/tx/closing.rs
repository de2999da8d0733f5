//! The mutual close transaction (section 4.2, R4.2-c).
//!
//! One input spending the anchor (`nSequence` 0xFFFFFFFF, witness as for a
//! commitment), version 2, `nLockTime` 0, and up to two P2WPKH outputs paying
//! each side's `final_key` its balance, truncated to whole satoshis, less its
//! share of `close_fee` divided as in Fee Calculation (R3.6-c). Dust outputs
//! are left out (R3.6-d). Outputs are in BIP69 order, so both sides build the
//! same bytes whichever of them calls itself local.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{absolute, transaction, Amount, CompressedPublicKey, ScriptBuf, Transaction, TxOut};

use super::funding::FundingOutput;
use super::sign::{Signer, SignerError, VerifyError};
use crate::fees::{split_fee, FeeSplit};
use crate::types::MilliSats;

/// What the close transaction pays.
#[derive(Clone, Copy, Debug)]
pub struct CloseSpec<'a> {
    /// The anchor it spends.
    pub funding: &'a FundingOutput,
    /// Our `final_key`.
    pub local_final: CompressedPublicKey,
    /// The other side's `final_key`.
    pub remote_final: CompressedPublicKey,
    /// Our balance.
    pub to_local: MilliSats,
    /// Their balance.
    pub to_remote: MilliSats,
    /// The negotiated fee (`close_signature.close_fee`).
    pub close_fee: Amount,
}

/// Why a close transaction could not be built.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The balances do not add up to the anchor's value (HTLCs must all be
    /// resolved before closing, R4.2-a).
    #[error("balances add up to {total:?}, the anchor holds {funding}")]
    ValueMismatch {
        /// What the balances add up to (`None` on overflow).
        total: Option<MilliSats>,
        /// What the anchor holds.
        funding: Amount,
    },
    /// `close_fee` must be even (R4.2-b): an odd fee would not split into
    /// equal halves, and the two sides would build different transactions.
    #[error("close_fee {0} is odd (R4.2-b)")]
    OddFee(Amount),
    /// Both outputs would be dust.
    #[error("both outputs of the close transaction would be dust")]
    NoOutputs,
}

/// A built close transaction (unsigned) and how its fee was divided.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CloseTx {
    tx: Transaction,
    split: FeeSplit,
}

/// Builds the close transaction `spec` describes.
pub fn build_close(spec: &CloseSpec<'_>) -> Result<CloseTx, CloseError> {
    let total = spec.to_local.checked_add(spec.to_remote);
    if total.is_none() || total != MilliSats::from_sat(spec.funding.value()) {
        return Err(CloseError::ValueMismatch { total, funding: spec.funding.value() });
    }
    if spec.close_fee.to_sat() % 2 == 1 {
        return Err(CloseError::OddFee(spec.close_fee));
    }
    let split = split_fee(spec.close_fee, spec.to_local.to_sat_floor(), spec.to_remote.to_sat_floor());
    let p2wpkh = |key: &CompressedPublicKey| ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
    let mut output: Vec<TxOut> = [
        split.local_output().map(|value| TxOut { value, script_pubkey: p2wpkh(&spec.local_final) }),
        split.remote_output().map(|value| TxOut { value, script_pubkey: p2wpkh(&spec.remote_final) }),
    ]
    .into_iter()
    .flatten()
    .collect();
    if output.is_empty() {
        return Err(CloseError::NoOutputs);
    }
    output.sort_by(|a, b| (a.value, a.script_pubkey.as_bytes()).cmp(&(b.value, b.script_pubkey.as_bytes())));
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![spec.funding.txin()],
        output,
    };
    Ok(CloseTx { tx, split })
}

impl CloseTx {
    /// The unsigned transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// How `close_fee` was divided (local = the caller's side).
    pub fn fee_split(&self) -> &FeeSplit {
        &self.split
    }

    /// Our signature (`close_signature.sig`).
    pub fn sign(&self, funding: &FundingOutput, signer: &dyn Signer) -> Result<Signature, SignerError> {
        funding.sign(&self.tx, signer)
    }

    /// Checks the other side's signature (R4.2-d).
    pub fn verify(
        &self,
        funding: &FundingOutput,
        key: &CompressedPublicKey,
        sig: &Signature,
    ) -> Result<(), VerifyError> {
        funding.verify(&self.tx, key, sig)
    }

    /// The fully signed close transaction.
    pub fn finalize(
        &self,
        funding: &FundingOutput,
        signer: &dyn Signer,
        their_key: &CompressedPublicKey,
        their_sig: &Signature,
    ) -> Result<Transaction, SignerError> {
        funding.finalize(&self.tx, signer, their_key, their_sig)
    }
}
