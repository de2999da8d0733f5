//! Transactions that spend commitment outputs to an address of ours: the
//! delayed to-self output of our own commitment, HTLC outputs with `R` or
//! after their expiry, and any revocable output with the revocation preimage.
//!
//! Every sweep is version 2 with one output to a caller-given script and a fee
//! from a caller-given [`FeeRate`] applied to the transaction's weight with
//! the largest possible signatures (73 bytes), so the real fee rate is never
//! below the one asked for. Each input's witness is `<sig> <32-byte value or
//! empty> <witness script>`; its `nSequence` is the CSV `delay` on the
//! owner's delayed paths and 0xFFFFFFFD otherwise (which also lets
//! `nLockTime` apply); `nLockTime` is the largest `expiry` of the timeout
//! inputs, or 0.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::sha256;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Weight,
    Witness,
};

use super::commitment::{Commitment, CommitmentOutput, HtlcDirection, OutputKind};
use super::sign::{low_s, witness_sig, KeyRole, Sighash, Signer, SignerError, SigningInput};
use crate::fees::{is_dust, DUST_LIMIT};
use crate::types::{Delay, Preimage};

/// The largest DER signature plus its sighash byte.
const MAX_SIG_LEN: usize = 73;

/// What we claim an output with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Claim {
    /// The owner's own to-self output, after the CSV delay.
    DelayedToSelf,
    /// An HTLC output, with its `R`.
    Success(Preimage),
    /// An HTLC output, after its expiry.
    Timeout,
    /// Any revocable output of a revoked commitment, with its revocation
    /// preimage (R6.1-b).
    Revocation(Preimage),
}

/// Why a sweep could not be built.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// The commitment has no such output.
    #[error("commitment has no output {0}")]
    NoSuchOutput(u32),
    /// The claim does not apply to that kind of output.
    #[error("output {vout} ({kind}) cannot be claimed by {claim}")]
    WrongClaim {
        /// The output.
        vout: u32,
        /// What it is.
        kind: &'static str,
        /// What was tried.
        claim: &'static str,
    },
    /// A preimage does not hash to what the script expects.
    #[error("preimage does not open output {vout}: expected sha256 {expected}")]
    WrongPreimage {
        /// The output.
        vout: u32,
        /// The hash the preimage must have.
        expected: sha256::Hash,
    },
    /// Timeout inputs mixing block heights and times cannot share a
    /// `nLockTime`.
    #[error("timeout inputs mix block-height and time expiries")]
    MixedLockTimeUnits,
    /// After the fee, what is left would be dust (or nothing).
    #[error("sweeping {total} would cost {fee}, leaving less than the {DUST_LIMIT} dust limit")]
    NotWorthSweeping {
        /// What the inputs hold.
        total: Amount,
        /// The fee they would pay.
        fee: Amount,
    },
    /// No inputs were given.
    #[error("nothing to sweep")]
    Empty,
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// One output to sweep and the path that spends it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SweepInput {
    outpoint: OutPoint,
    value: Amount,
    witness_script: ScriptBuf,
    /// The 32-byte witness value, empty for the delayed to-self path.
    secret: Vec<u8>,
    sequence: Sequence,
    lock_time: Option<absolute::LockTime>,
    claim: Claim,
}

impl SweepInput {
    /// The input that claims output `vout` of `commitment` with `claim`,
    /// after checking the claim applies to that output and any preimage
    /// opens it.
    ///
    /// | output | claim | path |
    /// |---|---|---|
    /// | to-owner | `DelayedToSelf` | owner, after `delay` |
    /// | to-owner, any HTLC | `Revocation(p)` | other side, at once |
    /// | HTLC offered by owner | `Success(R)` | other side, at once |
    /// | HTLC offered by owner | `Timeout` | owner, after `expiry` and `delay` |
    /// | HTLC received by owner | `Success(R)` | owner, after `delay` |
    /// | HTLC received by owner | `Timeout` | other side, after `expiry` |
    ///
    /// The to-other output is a plain P2WPKH to the other side's key: its
    /// wallet spends it like any other.
    pub fn from_commitment(commitment: &Commitment, vout: u32, claim: Claim) -> Result<Self, SweepError> {
        let out = commitment.output(vout).ok_or(SweepError::NoSuchOutput(vout))?;
        Self::from_output(commitment.txid(), out, commitment.delay(), commitment.revocation_hash(), claim)
    }

    /// The input that claims `out`, an output of the commitment `txid` whose
    /// owner's outputs wait `delay` and whose revocation hash is
    /// `revocation_hash`: the same paths as
    /// [`from_commitment`](Self::from_commitment), for a commitment known
    /// only from its outputs (one seen on chain and recognised from its
    /// scripts, with amounts read from the transaction).
    pub fn from_output(
        txid: Txid,
        out: &CommitmentOutput,
        delay: Delay,
        revocation_hash: sha256::Hash,
        claim: Claim,
    ) -> Result<Self, SweepError> {
        let vout = out.vout;
        let wrong = |kind| SweepError::WrongClaim { vout, kind, claim: claim_name(&claim) };
        let check = |p: &Preimage, expected: sha256::Hash| {
            if p.hash() == expected {
                Ok(p.0.to_vec())
            } else {
                Err(SweepError::WrongPreimage { vout, expected })
            }
        };
        let delayed = delay.to_sequence();
        let (secret, sequence, lock_time) = match (&out.kind, claim) {
            (OutputKind::ToOther, _) => return Err(wrong("to-other P2WPKH")),
            (OutputKind::ToOwner, Claim::DelayedToSelf) => (Vec::new(), delayed, None),
            (OutputKind::ToOwner | OutputKind::Htlc(_), Claim::Revocation(p)) => {
                (check(&p, revocation_hash)?, Sequence::ENABLE_RBF_NO_LOCKTIME, None)
            }
            (OutputKind::ToOwner, _) => return Err(wrong("to-owner")),
            (OutputKind::Htlc(_), Claim::DelayedToSelf) => return Err(wrong("HTLC")),
            (OutputKind::Htlc(h), Claim::Success(r)) => {
                let sequence = match h.direction {
                    HtlcDirection::Offered => Sequence::ENABLE_RBF_NO_LOCKTIME,
                    HtlcDirection::Received => delayed,
                };
                (check(&r, h.r_hash)?, sequence, None)
            }
            (OutputKind::Htlc(h), Claim::Timeout) => {
                let sequence = match h.direction {
                    HtlcDirection::Offered => delayed,
                    HtlcDirection::Received => Sequence::ENABLE_RBF_NO_LOCKTIME,
                };
                (vec![0; 32], sequence, Some(h.expiry))
            }
        };
        let witness_script = out.witness_script.clone().ok_or_else(|| wrong("to-other P2WPKH"))?;
        Ok(SweepInput {
            outpoint: OutPoint { txid, vout },
            value: out.value,
            witness_script,
            secret,
            sequence,
            lock_time,
            claim,
        })
    }

    /// The output this input spends.
    pub fn outpoint(&self) -> OutPoint {
        self.outpoint
    }

    /// Its value.
    pub fn value(&self) -> Amount {
        self.value
    }

    /// The path it takes.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// The most this input adds to a transaction's serialized size: the
    /// 41-byte input plus its witness with the largest signature.
    pub fn max_size(&self) -> usize {
        41 + witness_len(&[MAX_SIG_LEN, self.secret.len(), self.witness_script.len()])
    }

    /// The most this input adds to a transaction's weight.
    pub fn max_weight(&self) -> Weight {
        Weight::from_wu((41 * 4 + witness_len(&[MAX_SIG_LEN, self.secret.len(), self.witness_script.len()])) as u64)
    }

    fn txin(&self) -> TxIn {
        TxIn {
            previous_output: self.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: self.sequence,
            witness: Witness::new(),
        }
    }
}

fn claim_name(claim: &Claim) -> &'static str {
    match claim {
        Claim::DelayedToSelf => "delayed to-self",
        Claim::Success(_) => "HTLC success",
        Claim::Timeout => "HTLC timeout",
        Claim::Revocation(_) => "revocation",
    }
}

/// Serialized length of a witness with elements of these lengths (the
/// element count is at most 3 here, so every length prefix is one byte for
/// elements under 253 bytes).
fn witness_len(elements: &[usize]) -> usize {
    1 + elements.iter().map(|&len| varint_len(len) + len).sum::<usize>()
}

pub(crate) fn varint_len(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        _ => 5,
    }
}

/// The unsigned sweep of `inputs` to `destination`, and the fee it pays;
/// `extra`, if any, is paid as a second output before the rest goes to
/// `destination` (a watchtower's reward, W1-c).
pub(crate) fn unsigned_sweep_with(
    inputs: &[SweepInput],
    destination: ScriptBuf,
    extra: Option<&TxOut>,
    fee_rate: FeeRate,
) -> Result<(Transaction, Amount), SweepError> {
    if inputs.is_empty() {
        return Err(SweepError::Empty);
    }
    let mut lock_time: Option<absolute::LockTime> = None;
    for l in inputs.iter().filter_map(|i| i.lock_time) {
        match lock_time {
            Some(current) if !l.is_same_unit(current) => return Err(SweepError::MixedLockTimeUnits),
            Some(current) if !current.is_implied_by(l) => {}
            _ => lock_time = Some(l),
        }
    }
    let lock_time = lock_time.unwrap_or(absolute::LockTime::ZERO);
    let total: Amount = inputs.iter().map(|i| i.value).sum();
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time,
        input: inputs.iter().map(SweepInput::txin).collect(),
        output: vec![TxOut { value: Amount::ZERO, script_pubkey: destination }],
    };
    tx.output.extend(extra.cloned());
    // Weight of the unsigned transaction counts no witness; add each input's
    // largest witness and the segwit marker and flag.
    let witness_weight: u64 =
        inputs.iter().map(|i| witness_len(&[MAX_SIG_LEN, i.secret.len(), i.witness_script.len()]) as u64).sum::<u64>()
            + 2;
    let weight = tx.weight() + Weight::from_wu(witness_weight);
    let fee = fee_rate.fee_wu(weight).unwrap_or(Amount::MAX_MONEY);
    let paid = extra.map_or(Amount::ZERO, |o| o.value);
    let value = total.checked_sub(fee).and_then(|v| v.checked_sub(paid)).filter(|v| !is_dust(*v));
    let Some(value) = value else {
        return Err(SweepError::NotWorthSweeping { total, fee });
    };
    tx.output[0].value = value;
    Ok((tx, fee))
}

/// Builds and signs one transaction spending every input to `destination`
/// at `fee_rate`, with `signer`'s `final_key`.
pub fn build_sweep(
    inputs: Vec<SweepInput>,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    build_sweep_with(inputs, destination, None, fee_rate, signer)
}

/// [`build_sweep`] with `extra` paid as a second output (a watchtower's
/// reward, W1-c).
pub(crate) fn build_sweep_with(
    inputs: Vec<SweepInput>,
    destination: ScriptBuf,
    extra: Option<&TxOut>,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    let (mut tx, _) = unsigned_sweep_with(&inputs, destination, extra, fee_rate)?;
    let mut cache = SighashCache::new(&tx);
    let mut witnesses = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let sighash = cache
            .p2wsh_signature_hash(i, &input.witness_script, input.value, EcdsaSighashType::All)
            .expect("input index is in range");
        let sig = low_s(signer.sign(&SigningInput {
            tx: cache.transaction(),
            input_index: i,
            script: &input.witness_script,
            value: input.value,
            sighash: Sighash::SegwitV0(sighash),
            role: KeyRole::Final,
        }))?;
        let mut w = Witness::new();
        w.push(witness_sig(&sig));
        w.push(&input.secret);
        w.push(input.witness_script.as_bytes());
        witnesses.push(w);
    }
    for (txin, w) in tx.input.iter_mut().zip(witnesses) {
        txin.witness = w;
    }
    Ok(tx)
}

/// One transaction claiming output `vout` of `commitment` with `claim` (see
/// [`SweepInput::from_commitment`] for the paths).
pub fn sweep_output(
    commitment: &Commitment,
    vout: u32,
    claim: Claim,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    let input = SweepInput::from_commitment(commitment, vout, claim)?;
    build_sweep(vec![input], destination, fee_rate, signer)
}

/// The delayed to-self sweep of our own commitment: output `vout` (the
/// to-owner output) after the CSV `delay`.
pub fn to_self_sweep(
    commitment: &Commitment,
    vout: u32,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    sweep_output(commitment, vout, Claim::DelayedToSelf, destination, fee_rate, signer)
}
