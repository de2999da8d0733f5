//! Transaction building: every transaction a channel signs or broadcasts, as
//! pure functions over rust-bitcoin types. `docs/transactions.md` specifies
//! each one byte for byte.
//!
//! | module | transactions |
//! |---|---|
//! | [`funding`] | the anchor output (P2WSH 2-of-2) and validation of the funding transaction |
//! | [`commitment`] | commitment transactions and their output map |
//! | [`htlc`] | HTLC output scripts, success and timeout sweeps |
//! | [`sweep`] | the generic sweep builder, and the delayed to-self sweep |
//! | [`closing`] | the mutual close transaction |
//! | [`penalty`] | sweeping a revoked commitment with its revocation preimage |
//! | [`sign`] | the [`Signer`] trait, an in-memory signer, verification |
//!
//! Every output is segwit v0 (ruling D4); every signature is BIP143
//! `SIGHASH_ALL`, low-S.

pub mod closing;
pub mod commitment;
pub mod funding;
pub mod htlc;
pub mod penalty;
mod ripemd;
mod script;
pub mod sign;
pub mod sweep;

#[allow(unused_imports)]
use crate::prelude::*;
pub use sign::{InMemorySigner, KeyRole, Sighash, Signer, SignerError, SigningInput, VerifyError};
