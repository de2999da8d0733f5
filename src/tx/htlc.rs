//! HTLC outputs and their direct spends (section 6.2, ruling D6).
//!
//! There are no second-stage HTLC transactions in this protocol: each HTLC
//! output of a commitment is spent directly, by the owner after the CSV
//! `delay` and by the other side at once. Both scripts start with
//! `OP_SIZE 32 OP_EQUALVERIFY`, so the witness always carries a 32-byte
//! value: `R`, the revocation preimage, or 32 zero bytes on the timeout path.
//!
//! Offered by the owner (the owner gets it back after `expiry` and `delay`;
//! the other side takes it with `R` or the revocation preimage):
//!
//! ```text
//! OP_SIZE 32 OP_EQUALVERIFY OP_HASH160 OP_DUP <RIPEMD160(r_hash)> OP_EQUAL
//! OP_SWAP <RIPEMD160(revocation_hash)> OP_EQUAL OP_BOOLOR
//! OP_IF <other_final>
//! OP_ELSE <expiry> OP_CHECKLOCKTIMEVERIFY <delay> OP_CHECKSEQUENCEVERIFY OP_2DROP <owner_final>
//! OP_ENDIF OP_CHECKSIG
//! ```
//!
//! Received by the owner (the owner takes it with `R` after `delay`; the other
//! side gets it back after `expiry`, or at once with the revocation
//! preimage):
//!
//! ```text
//! OP_SIZE 32 OP_EQUALVERIFY OP_HASH160 OP_DUP <RIPEMD160(r_hash)> OP_EQUAL
//! OP_IF <delay> OP_CHECKSEQUENCEVERIFY OP_2DROP <owner_final>
//! OP_ELSE <RIPEMD160(revocation_hash)> OP_EQUAL OP_NOTIF <expiry> OP_CHECKLOCKTIMEVERIFY OP_DROP OP_ENDIF <other_final>
//! OP_ENDIF OP_CHECKSIG
//! ```
//!
//! The offered script joins its two hash checks with `OP_BOOLOR` where the
//! 2016 reference used `OP_ADD`: if an offerer chose an `r_hash` equal to its
//! own revocation hash, `OP_ADD` would leave 2 for `OP_IF`, which segwit's
//! MINIMALIF relay policy rejects, making the other side's spends
//! non-standard. `OP_BOOLOR` always leaves 0 or 1.
//!
//! The sweeps are built by [`super::sweep`]; [`success_sweep`] and
//! [`timeout_sweep`] are the one-input cases.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::sha256;
use bitcoin::{absolute, CompressedPublicKey, FeeRate, ScriptBuf, Transaction};

use super::commitment::{ripemd_of, Commitment, HtlcDirection};
use super::script::ScriptKeys;
use super::sign::Signer;
use super::sweep::{sweep_output, Claim, SweepError};
use crate::types::{Delay, Preimage};

/// The script of an HTLC the commitment's owner offered.
pub fn offered_htlc_script(
    r_hash: &sha256::Hash,
    revocation_hash: &sha256::Hash,
    owner_final: &CompressedPublicKey,
    other_final: &CompressedPublicKey,
    expiry: absolute::LockTime,
    delay: Delay,
) -> ScriptBuf {
    ScriptKeys::new(owner_final, other_final, ripemd_of(revocation_hash), delay).htlc_with(
        HtlcDirection::Offered,
        &ripemd_of(r_hash),
        expiry,
    )
}

/// The script of an HTLC the commitment's owner received.
pub fn received_htlc_script(
    r_hash: &sha256::Hash,
    revocation_hash: &sha256::Hash,
    owner_final: &CompressedPublicKey,
    other_final: &CompressedPublicKey,
    expiry: absolute::LockTime,
    delay: Delay,
) -> ScriptBuf {
    ScriptKeys::new(owner_final, other_final, ripemd_of(revocation_hash), delay).htlc_with(
        HtlcDirection::Received,
        &ripemd_of(r_hash),
        expiry,
    )
}

/// Spends the HTLC output `vout` of `commitment` with its `R` (R6.2-c): the
/// owner's path (after the CSV delay) for an HTLC the owner received, the
/// other side's path (at once) for one the owner offered. `signer` must hold
/// the matching `final_key`.
pub fn success_sweep(
    commitment: &Commitment,
    vout: u32,
    r: Preimage,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    sweep_output(commitment, vout, Claim::Success(r), destination, fee_rate, signer)
}

/// Spends the HTLC output `vout` of `commitment` after its expiry (R6.2-b):
/// the owner's path (after expiry and the CSV delay) for an HTLC the owner
/// offered, the other side's path (after expiry) for one the owner received.
pub fn timeout_sweep(
    commitment: &Commitment,
    vout: u32,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    signer: &dyn Signer,
) -> Result<Transaction, SweepError> {
    sweep_output(commitment, vout, Claim::Timeout, destination, fee_rate, signer)
}
