//! Justice packages (W1-a, W1-c): what a client hands a watchtower for one
//! revoked commitment of its peer.
//!
//! A package is a hint, the first 16 bytes of the revoked commitment's txid
//! (in its internal byte order), and a blob: the fully signed penalty
//! transactions, sealed with ChaCha20-Poly1305 under the whole txid. The
//! tower sees the txid only when the commitment reaches the chain; until
//! then the blob tells it nothing but its length.
//!
//! Blob: `version (1) | nonce (12) | ciphertext and tag`. The plaintext is
//! `count (u16) | count × (length (u32) | transaction)`, integers
//! big-endian, transactions in consensus encoding. Each key seals one
//! commitment's penalties; the nonce is the first 12 bytes of a tagged
//! SHA-256 of the plaintext, so two different packages for the same
//! commitment (another fee rate) never share a nonce.

#[allow(unused_imports)]
use crate::prelude::*;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash as _, HashEngine as _};
use bitcoin::{Amount, FeeRate, ScriptBuf, Transaction, TxOut, Txid};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::tx::commitment::Commitment;
use crate::tx::penalty::{build_penalty_rewarding, PenaltyError};
use crate::tx::Signer;
use crate::types::Preimage;

/// The first 16 bytes of a txid: how a tower files a package.
pub type Hint = [u8; 16];

/// The blob format this crate writes and reads.
pub const BLOB_VERSION: u8 = 1;
/// Version, nonce and tag: the smallest blob.
const BLOB_OVERHEAD: usize = 1 + 12 + 16;

/// The hint of the commitment `txid` (W1-a).
pub fn hint(txid: &Txid) -> Hint {
    let mut h = [0u8; 16];
    h.copy_from_slice(&txid.as_byte_array()[..16]);
    h
}

/// What a client hands a tower for one revoked commitment (W1-a).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JusticePackage {
    /// The first 16 bytes of the revoked commitment's txid.
    pub hint: Hint,
    /// The penalty transactions, sealed under the whole txid.
    pub blob: Vec<u8>,
}

/// A reward for the tower, agreed in advance (W1-c).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reward {
    /// Where the tower wants it.
    pub script_pubkey: ScriptBuf,
    /// How much.
    pub amount: Amount,
}

/// How a client builds its packages (W1-c).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JusticeSettings {
    /// Where the penalty pays (the client's wallet).
    pub destination: ScriptBuf,
    /// The fee rate of the penalties, fixed when they are signed: a tower
    /// cannot raise it, so choose it for the worst fees expected within the
    /// cheater's delay.
    pub fee_rate: FeeRate,
    /// The tower's reward, paid by the first penalty transaction when it can
    /// afford it.
    pub reward: Option<Reward>,
}

/// A revoked commitment of the peer, as the channel hands it over when the
/// peer revokes it ([`crate::channel::Output::Revoked`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RevokedCommitment {
    /// Its commitment number.
    pub number: u64,
    /// The transaction and its outputs.
    pub commitment: Commitment,
    /// Its revocation preimage.
    pub preimage: Preimage,
    /// What it was built from: the channel stores this, not the
    /// transaction, while the output awaits release.
    pub(crate) view: crate::channel::View,
}

/// Why no package could be built.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JusticeError {
    /// The penalty could not be built or signed.
    #[error("penalty: {0}")]
    Penalty(#[from] PenaltyError),
    /// Nothing in the revoked commitment is worth a penalty at this fee
    /// rate (its outputs are the client's own, or dust).
    #[error("nothing to punish in commitment {0} at this fee rate")]
    Nothing(Txid),
    /// The signer failed on some of the penalty transactions: a package
    /// without them would lose money, so none is made.
    #[error("the signer failed on {0} penalty transactions")]
    Unsigned(usize),
    /// The reward would make the penalty unrelayable: dust at Bitcoin
    /// Core's default dust relay fee, or a script of a non-standard type.
    #[error("the tower's reward of {0} to that script would not relay")]
    BadReward(Amount),
}

/// Why a blob does not open.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    /// Shorter than a version, a nonce and a tag.
    #[error("blob of {0} bytes is too short")]
    TooShort(usize),
    /// A version this crate does not read.
    #[error("blob version {0} is unknown")]
    Version(u8),
    /// The tag does not match: another commitment's package (a hint that
    /// merely collides), or damaged bytes.
    #[error("blob does not open with this txid")]
    Undecryptable,
    /// It opens, but does not hold transactions in the package format.
    #[error("package plaintext is malformed")]
    Malformed,
    /// A transaction in it spends something other than the commitment.
    #[error("package transaction {0} does not spend the commitment")]
    NotAPenalty(Txid),
}

/// Builds the package for `revoked` (W1-a): the penalty transactions of
/// [`build_penalty_rewarding`], signed with `signer`'s `final_key`, sealed
/// under the commitment's txid.
pub fn justice_package(
    revoked: &RevokedCommitment,
    settings: &JusticeSettings,
    signer: &dyn Signer,
) -> Result<JusticePackage, JusticeError> {
    if let Some(r) = &settings.reward {
        let dust = crate::oneway::tx::dust_threshold(&r.script_pubkey, &Default::default());
        if !crate::oneway::tx::is_standard_payout(&r.script_pubkey) || r.amount < dust {
            return Err(JusticeError::BadReward(r.amount));
        }
    }
    let reward = settings.reward.as_ref().map(|r| TxOut { value: r.amount, script_pubkey: r.script_pubkey.clone() });
    let penalty = build_penalty_rewarding(
        &revoked.commitment,
        revoked.preimage,
        settings.destination.clone(),
        reward,
        settings.fee_rate,
        signer,
    )?;
    if !penalty.failed.is_empty() {
        return Err(JusticeError::Unsigned(penalty.failed.len()));
    }
    let txid = revoked.commitment.txid();
    if penalty.txs.is_empty() {
        return Err(JusticeError::Nothing(txid));
    }
    Ok(JusticePackage { hint: hint(&txid), blob: seal(&txid, &penalty.txs) })
}

/// Seals `txs` under `txid`.
pub fn seal(txid: &Txid, txs: &[Transaction]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(2 + txs.iter().map(|t| 4 + t.total_size()).sum::<usize>());
    // A commitment has at most a few thousand outputs, so a few dozen
    // penalty transactions at most.
    plain.extend_from_slice(&(txs.len() as u16).to_be_bytes());
    for tx in txs {
        let bytes = serialize(tx);
        plain.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        plain.extend_from_slice(&bytes);
    }
    let mut engine = sha256::Hash::engine();
    engine.input(b"paychan/justice-nonce");
    engine.input(&plain);
    let digest = sha256::Hash::from_engine(engine).to_byte_array();
    let nonce = Nonce::from_slice(&digest[..12]);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(txid.as_byte_array()));
    let sealed = cipher.encrypt(nonce, plain.as_slice()).expect("a buffer in memory always encrypts");
    let mut blob = Vec::with_capacity(1 + 12 + sealed.len());
    blob.push(BLOB_VERSION);
    blob.extend_from_slice(nonce);
    blob.extend_from_slice(&sealed);
    blob
}

/// What can be checked of a blob without its key: long enough for a
/// version, a nonce and a tag, and of a version this crate reads.
pub fn check_header(blob: &[u8]) -> Result<(), PackageError> {
    if blob.len() < BLOB_OVERHEAD {
        return Err(PackageError::TooShort(blob.len()));
    }
    if blob[0] != BLOB_VERSION {
        return Err(PackageError::Version(blob[0]));
    }
    Ok(())
}

/// Opens `blob` with the txid of the commitment that appeared on chain, and
/// checks that every transaction in it spends that commitment (W1-b, W1-d).
pub fn open(txid: &Txid, blob: &[u8]) -> Result<Vec<Transaction>, PackageError> {
    check_header(blob)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(txid.as_byte_array()));
    let plain =
        cipher.decrypt(Nonce::from_slice(&blob[1..13]), &blob[13..]).map_err(|_| PackageError::Undecryptable)?;
    let mut rest = plain.as_slice();
    let mut take = |n: usize| -> Result<&[u8], PackageError> {
        if rest.len() < n {
            return Err(PackageError::Malformed);
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u16::from_be_bytes(take(2)?.try_into().expect("two bytes"));
    let mut txs = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into().expect("four bytes")) as usize;
        let tx: Transaction = deserialize(take(len)?).map_err(|_| PackageError::Malformed)?;
        if tx.input.is_empty() || tx.input.iter().any(|i| i.previous_output.txid != *txid) {
            return Err(PackageError::NotAPenalty(tx.compute_txid()));
        }
        txs.push(tx);
    }
    if !rest.is_empty() || txs.is_empty() {
        return Err(PackageError::Malformed);
    }
    Ok(txs)
}
