//! Penalty transactions: taking every output of a revoked commitment with its
//! revocation preimage (section 6.1, R6.1-b, R6.1-c).
//!
//! The revoked commitment is rebuilt from what was kept when it was revoked
//! (R3-a) and its txid compared with the one seen on chain. Every output we
//! are owed is claimed on its revocation path: the owner's to-self output and
//! every HTLC output, in both directions. The to-other output already pays
//! our `final_key` (P2WPKH) and needs no penalty; it is listed so the wallet
//! can pick it up.
//!
//! Inputs are taken in output order and packed greedily into transactions
//! that each stay under [`MAX_PENALTY_TX_SIZE`] bytes with the largest
//! possible signatures (R6.1-c), each paying `fee_rate` on its own weight. An
//! output worth less than the fee its input would add is not swept: it is
//! reported in [`Penalty::uneconomical`], never silently dropped.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut, Txid};

use super::commitment::{Commitment, CommitmentOutput, OutputKind};
use super::sign::Signer;
use super::sweep::{build_sweep_with, unsigned_sweep_with, varint_len, Claim, SweepError, SweepInput};
use crate::types::{Delay, Preimage};

/// Every penalty transaction stays below this many bytes (R6.1-c).
pub const MAX_PENALTY_TX_SIZE: usize = 100_000;

/// Serialized size of a sweep without its inputs: version, segwit marker and
/// flag, input count (3 bytes up to 65535 inputs), output count, the one
/// output, and the lock time.
fn sweep_overhead(destination: &ScriptBuf) -> usize {
    4 + 2 + 3 + 1 + 8 + varint_len(destination.len()) + destination.len() + 4
}

/// The transactions that take what a revoked commitment owes us.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Penalty {
    /// Signed transactions, each under [`MAX_PENALTY_TX_SIZE`] bytes.
    pub txs: Vec<Transaction>,
    /// Outputs not swept because the fee for their input would exceed their
    /// value at this fee rate: (outpoint, value, fee its input would cost).
    pub uneconomical: Vec<(OutPoint, Amount, Amount)>,
    /// The to-other output, already paying our `final_key`.
    pub already_ours: Option<(OutPoint, Amount)>,
    /// Batches the signer failed to sign: their outputs and the error. The
    /// other transactions are still here, ready to broadcast.
    pub failed: Vec<(Vec<OutPoint>, SweepError)>,
}

/// Why no penalty could be built.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PenaltyError {
    /// The preimage does not revoke this commitment.
    #[error("preimage does not revoke this commitment (its revocation hash is {0})")]
    WrongPreimage(bitcoin::hashes::sha256::Hash),
    /// Building or signing a transaction failed.
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// Builds the penalty transactions for `revoked`, the other side's commitment
/// whose revocation preimage is `preimage`, paying to `destination`.
pub fn build_penalty(
    revoked: &Commitment,
    preimage: Preimage,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Penalty, PenaltyError> {
    if preimage.hash() != revoked.revocation_hash() {
        return Err(PenaltyError::WrongPreimage(revoked.revocation_hash()));
    }
    build_penalty_from(revoked.txid(), revoked.outputs(), revoked.delay(), preimage, destination, fee_rate, signer)
}

/// Builds the penalty transactions for the outputs of the revoked
/// commitment `txid` (known from its outputs alone, as an on-chain monitor
/// or a watchtower knows it: amounts read from the transaction, scripts
/// recognised), whose owner's outputs wait `delay` and whose revocation
/// preimage is `preimage`. Outputs given may be a subset (those still
/// unspent).
pub fn build_penalty_from(
    txid: Txid,
    outputs: &[CommitmentOutput],
    delay: Delay,
    preimage: Preimage,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Penalty, PenaltyError> {
    penalty_from(txid, outputs, delay, preimage, destination, None, fee_rate, signer)
}

/// [`build_penalty`] for a watchtower to hold (W1-c): the first transaction
/// also pays `reward`, agreed with the tower in advance, if it can afford it
/// and keep more than dust for `destination` (otherwise it pays no reward:
/// the penalty comes first).
pub fn build_penalty_rewarding(
    revoked: &Commitment,
    preimage: Preimage,
    destination: ScriptBuf,
    reward: Option<TxOut>,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Penalty, PenaltyError> {
    if preimage.hash() != revoked.revocation_hash() {
        return Err(PenaltyError::WrongPreimage(revoked.revocation_hash()));
    }
    let (txid, outputs, delay) = (revoked.txid(), revoked.outputs(), revoked.delay());
    penalty_from(txid, outputs, delay, preimage, destination, reward, fee_rate, signer)
}

#[allow(clippy::too_many_arguments)]
fn penalty_from(
    txid: Txid,
    outputs: &[CommitmentOutput],
    delay: Delay,
    preimage: Preimage,
    destination: ScriptBuf,
    mut reward: Option<TxOut>,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Penalty, PenaltyError> {
    let mut penalty = Penalty { txs: Vec::new(), uneconomical: Vec::new(), already_ours: None, failed: Vec::new() };
    let mut worth: Vec<SweepInput> = Vec::new();
    for out in outputs {
        if out.kind == OutputKind::ToOther {
            penalty.already_ours = Some((OutPoint { txid, vout: out.vout }, out.value));
            continue;
        }
        let input = SweepInput::from_output(txid, out, delay, preimage.hash(), Claim::Revocation(preimage))?;
        let cost = fee_rate.fee_wu(input.max_weight()).unwrap_or(Amount::MAX_MONEY);
        if cost >= input.value() {
            penalty.uneconomical.push((input.outpoint(), input.value(), cost));
        } else {
            worth.push(input);
        }
    }

    let overhead = sweep_overhead(&destination);
    // The first batch leaves room for the reward output.
    let reward_size = reward.as_ref().map_or(0, |o| 8 + varint_len(o.script_pubkey.len()) + o.script_pubkey.len());
    let mut batch: Vec<SweepInput> = Vec::new();
    let mut size = overhead + reward_size;
    for input in worth {
        if !batch.is_empty() && size + input.max_size() >= MAX_PENALTY_TX_SIZE {
            let full = core::mem::take(&mut batch);
            finish(full, &destination, reward.take(), fee_rate, signer, &mut penalty)?;
            size = overhead;
        }
        size += input.max_size();
        batch.push(input);
    }
    if !batch.is_empty() {
        finish(batch, &destination, reward.take(), fee_rate, signer, &mut penalty)?;
    }
    Ok(penalty)
}

/// Signs one batch, or reports it uneconomical as a whole if the fee of the
/// transaction leaves only dust.
fn finish(
    batch: Vec<SweepInput>,
    destination: &ScriptBuf,
    reward: Option<TxOut>,
    fee_rate: FeeRate,
    signer: &dyn Signer,
    penalty: &mut Penalty,
) -> Result<(), PenaltyError> {
    // A reward the batch cannot afford is dropped, not the penalty.
    let reward = reward.filter(|r| unsigned_sweep_with(&batch, destination.clone(), Some(r), fee_rate).is_ok());
    match unsigned_sweep_with(&batch, destination.clone(), reward.as_ref(), fee_rate) {
        Err(SweepError::NotWorthSweeping { fee, .. }) => {
            penalty.uneconomical.extend(batch.iter().map(|i| (i.outpoint(), i.value(), fee)));
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(_) => {
            let outpoints: Vec<OutPoint> = batch.iter().map(SweepInput::outpoint).collect();
            match build_sweep_with(batch, destination.clone(), reward.as_ref(), fee_rate, signer) {
                Ok(tx) => {
                    debug_assert!(tx.total_size() < MAX_PENALTY_TX_SIZE, "penalty tx of {} bytes", tx.total_size());
                    penalty.txs.push(tx);
                }
                // One batch's failure must not cost the others: time is short.
                Err(e) => penalty.failed.push((outpoints, e)),
            }
            Ok(())
        }
    }
}
