//! Commitment transactions (sections 3 and 3.6, rulings D4, D6, D9; format in
//! `docs/transactions.md`).
//!
//! A commitment transaction belongs to one side, its *owner*: the owner holds
//! it, the *other* side signed it. It spends the anchor and pays:
//!
//! - the owner's balance to the revocable to-self script: the other side can
//!   take it at once with the revocation preimage, the owner only after the
//!   `delay` the other side asked for;
//! - the other side's balance to its `final_key` (P2WPKH);
//! - one P2WSH output per non-dust HTLC ([`super::htlc`]).
//!
//! Outputs are in BIP69 order (value, then script bytes), with ties between
//! identical outputs broken by (kind, HTLC id) so that the output map is
//! deterministic too. The fee of R3.6 at the owner's fee rate (ruling D7) is
//! split between the two to-`final_key` balances; dust outputs are left out.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::{sha256, sha256d, Hash as _};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::sighash::SegwitV0Sighash;
use bitcoin::{
    absolute, transaction, Amount, CompressedPublicKey, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxOut,
    Txid, WPubkeyHash,
};

use super::funding::{FundingOutput, SighashPrefix};
use super::script::ScriptKeys;
use super::sign::{Signer, SignerError, VerifyError};
use crate::digest;
use crate::fees::{commitment_fee, htlc_is_dust, split_fee, FeeSplit};
use crate::types::{Delay, MilliSats};

/// Standard relay's largest transaction weight.
pub const MAX_STANDARD_WEIGHT: u64 = 400_000;

/// The most the anchor input's witness can weigh: marker and flag (2),
/// element count (1), the empty dummy (1), two 73-byte signatures with their
/// lengths (148) and the 71-byte script with its length (72).
const ANCHOR_WITNESS_WEIGHT: u64 = 2 + 1 + 1 + 148 + 72;

/// The most non-dust HTLCs a commitment can carry and stay within
/// [`MAX_STANDARD_WEIGHT`]: 4 × (127 base bytes + 43 per P2WSH output) plus
/// the anchor witness.
pub const MAX_HTLC_OUTPUTS: usize = ((MAX_STANDARD_WEIGHT - ANCHOR_WITNESS_WEIGHT - 4 * 127) / (4 * 43)) as usize;

/// `RIPEMD160(hash)`: what `OP_HASH160` of the hash's preimage equals, since
/// HASH160(x) = RIPEMD160(SHA256(x)).
pub(crate) fn ripemd_of(hash: &sha256::Hash) -> [u8; 20] {
    super::ripemd::ripemd160_32(hash.as_byte_array())
}

/// The owner's revocable output:
///
/// `OP_HASH160 <RIPEMD160(revocation_hash)> OP_EQUAL OP_IF <other_final>
/// OP_ELSE <delay> OP_CHECKSEQUENCEVERIFY OP_DROP <owner_final> OP_ENDIF
/// OP_CHECKSIG`
pub fn to_self_script(
    revocation_hash: &sha256::Hash,
    other_final: &CompressedPublicKey,
    delay: Delay,
    owner_final: &CompressedPublicKey,
) -> ScriptBuf {
    ScriptKeys::new(owner_final, other_final, ripemd_of(revocation_hash), delay).revocable()
}

/// Which way an HTLC goes, seen from the commitment's owner.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum HtlcDirection {
    /// The owner offered it: the owner gets it back after `expiry`, the other
    /// side takes it with `R`.
    Offered,
    /// The owner received it: the owner takes it with `R`, the other side
    /// gets it back after `expiry`.
    Received,
}

/// One HTLC as a commitment includes it ([`HtlcSpec::new`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HtlcSpec {
    /// Offered or received by the owner.
    pub direction: HtlcDirection,
    /// The offerer's id for it (ids are per offerer, so `(direction, id)`
    /// identifies an HTLC within one commitment).
    pub id: u64,
    /// Its value; the output holds `amount / 1000` satoshis, truncated.
    pub amount: MilliSats,
    /// SHA-256 of its `R`.
    pub r_hash: sha256::Hash,
    /// When it times out.
    pub expiry: absolute::LockTime,
    /// RIPEMD-160 of `r_hash`, as its script holds it: computed once per
    /// HTLC, not at every commitment (it never changes).
    r_hash160: [u8; 20],
}

impl HtlcSpec {
    /// An HTLC of `amount` for `r_hash`, expiring at `expiry`.
    pub fn new(
        direction: HtlcDirection,
        id: u64,
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
    ) -> Self {
        HtlcSpec { direction, id, amount, r_hash, expiry, r_hash160: ripemd_of(&r_hash) }
    }

    /// The same, with `r_hash160` = RIPEMD-160 of `r_hash` known already.
    pub(crate) fn with_hash160(
        direction: HtlcDirection,
        id: u64,
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
        r_hash160: [u8; 20],
    ) -> Self {
        debug_assert_eq!(r_hash160, ripemd_of(&r_hash));
        HtlcSpec { direction, id, amount, r_hash, expiry, r_hash160 }
    }

    /// RIPEMD-160 of `r_hash`, as the HTLC's script holds it.
    pub fn r_hash160(&self) -> [u8; 20] {
        self.r_hash160
    }
}

/// Everything that determines one commitment transaction.
#[derive(Clone, Copy, Debug)]
pub struct CommitmentSpec<'a> {
    /// The anchor it spends.
    pub funding: &'a FundingOutput,
    /// The owner's `final_key`.
    pub owner_final: CompressedPublicKey,
    /// The other side's `final_key`.
    pub other_final: CompressedPublicKey,
    /// The owner's balance.
    pub to_owner: MilliSats,
    /// The other side's balance.
    pub to_other: MilliSats,
    /// The HTLCs in this commitment.
    pub htlcs: &'a [HtlcSpec],
    /// The owner's fee rate, satoshi per 1000 bytes (ruling D7).
    pub fee_rate_per_kb: u32,
    /// The revocation hash of this commitment (the owner's).
    pub revocation_hash: sha256::Hash,
    /// The `delay` the other side asked for in its `open_channel`: how long
    /// the owner's payments to itself stay locked.
    pub delay: Delay,
    /// Its commitment number (0 is the first) and the channel's obscuring
    /// factor ([`obscuring_factor`]): ruling D10 writes the number, obscured,
    /// in the lock fields.
    pub number: CommitmentNumber,
}

/// A commitment number and the channel's obscuring factor, which ruling D10
/// writes into every commitment's lock fields.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CommitmentNumber {
    /// The commitment number: 0 for the first, below 2^48.
    pub number: u64,
    /// The channel's [`obscuring_factor`].
    pub obscuring: u64,
}

/// The highest bit of a commitment's nLockTime and the upper byte D10 sets:
/// 0x20 makes the lock time a timestamp in 1987, always final.
const LOCK_TIME_TAG: u32 = 0x20 << 24;
/// The upper byte of the anchor input's nSequence: bit 31 set disables
/// relative lock times (BIP 68).
const SEQUENCE_TAG: u32 = 0x80 << 24;
const LOW_24: u64 = 0xFF_FFFF;

/// The channel's obscuring factor (ruling D10): the lower 48 bits of
/// SHA256(funder's `commit_key` || fundee's `commit_key`), the last six bytes
/// of the hash read big-endian.
pub fn obscuring_factor(funder_commit_key: &CompressedPublicKey, fundee_commit_key: &CompressedPublicKey) -> u64 {
    let mut engine = sha256::Hash::engine();
    bitcoin::hashes::HashEngine::input(&mut engine, &funder_commit_key.to_bytes());
    bitcoin::hashes::HashEngine::input(&mut engine, &fundee_commit_key.to_bytes());
    let hash = sha256::Hash::from_engine(engine).to_byte_array();
    let mut low = [0u8; 8];
    low[2..].copy_from_slice(&hash[26..]);
    u64::from_be_bytes(low)
}

impl CommitmentNumber {
    /// The nLockTime and anchor-input nSequence of this commitment (D10):
    /// `obscured = number XOR obscuring`; nLockTime = `0x20 << 24 | lower
    /// 24 bits`, nSequence = `0x80 << 24 | upper 24 bits` (of 48).
    pub fn lock_fields(&self) -> (absolute::LockTime, Sequence) {
        let obscured = (self.number ^ self.obscuring) & ((1 << 48) - 1);
        let lock = LOCK_TIME_TAG | (obscured & LOW_24) as u32;
        let sequence = SEQUENCE_TAG | ((obscured >> 24) & LOW_24) as u32;
        (absolute::LockTime::from_consensus(lock), Sequence(sequence))
    }
}

/// The commitment number a transaction spending the anchor carries (D10),
/// with the channel's obscuring factor; `None` if its lock fields are not
/// those of a commitment (a close, or anything else). O(1): whoever sees a
/// commitment on chain knows which one it is without a table of txids.
pub fn commitment_number(tx: &Transaction, obscuring: u64) -> Option<u64> {
    let lock = tx.lock_time.to_consensus_u32();
    let sequence = tx.input.first()?.sequence.0;
    if lock & 0xFF00_0000 != LOCK_TIME_TAG || sequence & 0xFF00_0000 != SEQUENCE_TAG {
        return None;
    }
    let obscured = ((u64::from(sequence) & LOW_24) << 24) | (u64::from(lock) & LOW_24);
    Some(obscured ^ (obscuring & ((1 << 48) - 1)))
}

/// What one output of a commitment is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OutputKind {
    /// The owner's revocable balance.
    ToOwner,
    /// The other side's balance (P2WPKH to its `final_key`).
    ToOther,
    /// An HTLC.
    Htlc(HtlcSpec),
}

/// One output of a commitment and how to spend it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommitmentOutput {
    /// Its index in the transaction.
    pub vout: u32,
    /// Its value.
    pub value: Amount,
    /// What it is.
    pub kind: OutputKind,
    /// Its witness script (`None` for the P2WPKH to-other output).
    pub witness_script: Option<ScriptBuf>,
}

/// A built commitment transaction (unsigned) and the map of its outputs, so
/// that watchers and sweepers never re-derive which output is which.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Commitment {
    tx: Transaction,
    /// Computed once: hashing a 1500-HTLC transaction costs ~150 µs.
    txid: Txid,
    /// BIP143's hashOutputs, computed with the txid from the same bytes.
    hash_outputs: sha256d::Hash,
    outputs: Vec<CommitmentOutput>,
    trimmed: Vec<HtlcSpec>,
    fee: FeeSplit,
    revocation_hash: sha256::Hash,
    delay: Delay,
    owner_final: CompressedPublicKey,
    other_final: CompressedPublicKey,
}

/// Why a commitment could not be built. These are caller mistakes: the
/// channel checks its own state before building.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    /// The balances and HTLCs do not add up to the anchor's value.
    #[error("balances and HTLCs add up to {total:?}, the anchor holds {funding}")]
    ValueMismatch {
        /// What the spec adds up to (`None` if the sum overflows).
        total: Option<MilliSats>,
        /// What the anchor holds.
        funding: Amount,
    },
    /// Every output would be dust: a transaction needs at least one.
    #[error("every output of the commitment would be dust")]
    NoOutputs,
    /// The signed transaction would weigh more than the 400,000 weight
    /// units standard relay accepts (ruling D4's P2WSH outputs are 43 bytes,
    /// so this happens past about 2320 HTLC outputs).
    #[error("commitment would weigh {0} weight units, above the standard 400000")]
    TooHeavy(u64),
    /// Two HTLCs of one direction share an id.
    #[error("two {direction:?} HTLCs share id {id}")]
    DuplicateHtlc {
        /// Their direction.
        direction: HtlcDirection,
        /// Their id.
        id: u64,
    },
}

/// Builds the commitment transaction `spec` describes.
///
/// Cost is O(n log n) in the number of HTLCs (one sort of the outputs).
pub fn build(spec: &CommitmentSpec<'_>) -> Result<Commitment, CommitmentError> {
    build_with(spec, &spec.other_final.wpubkey_hash())
}

/// [`build`], with the hash of `spec.other_final` known already (a channel
/// keeps it: it never changes).
pub(crate) fn build_with(
    spec: &CommitmentSpec<'_>,
    other_final_hash: &WPubkeyHash,
) -> Result<Commitment, CommitmentError> {
    let mut laid = lay_out(spec, other_final_hash, true, None)?;
    let mut map = Vec::with_capacity(laid.outputs.len());
    for (vout, o) in laid.outputs.iter().enumerate() {
        let kind = match o.source {
            Source::ToOwner => OutputKind::ToOwner,
            Source::ToOther => OutputKind::ToOther,
            Source::Htlc(i) => OutputKind::Htlc(spec.htlcs[i as usize]),
        };
        let witness_script = o.script.map(|i| core::mem::take(&mut laid.scripts[i as usize]));
        map.push(CommitmentOutput { vout: vout as u32, value: o.value, kind, witness_script });
    }
    Ok(Commitment {
        tx: laid.tx(spec.funding),
        txid: laid.txid(spec.funding),
        hash_outputs: sha256d::Hash::from_byte_array(digest::sha256d(&laid.serialized)),
        outputs: map,
        trimmed: spec.htlcs.iter().filter(|h| htlc_is_dust(h.amount)).copied().collect(),
        fee: laid.fee,
        revocation_hash: spec.revocation_hash,
        delay: spec.delay,
        owner_final: spec.owner_final,
        other_final: spec.other_final,
    })
}

/// What a channel needs of a commitment to sign it or check a signature on
/// it and to tell its monitor: the txid and the BIP143 signature hash,
/// computed without the output map and witness scripts a [`Commitment`]
/// keeps (and, to check a signature, without the transaction).
pub(crate) struct CommitmentId {
    pub(crate) txid: Txid,
    /// The BIP143 `SIGHASH_ALL` digest of its anchor input.
    pub(crate) sighash: SegwitV0Sighash,
    /// The transaction, for a signer to see; `None` when only checking.
    tx: Option<Transaction>,
}

/// [`build_with`]'s [`CommitmentId`], with the unsigned transaction when
/// `with_tx` (to sign it). `pre` must have been computed for this
/// commitment's anchor, obscuring factor, owner and keys: its keys are used
/// as they are (its signature hash prefix only when the commitment's
/// sequence is the prefix's).
pub(crate) fn id_with(
    spec: &CommitmentSpec<'_>,
    other_final_hash: &WPubkeyHash,
    with_tx: bool,
    pre: ForOwner<'_>,
) -> Result<CommitmentId, CommitmentError> {
    let laid = lay_out(spec, other_final_hash, false, Some(pre))?;
    let hash_outputs = sha256d::Hash::from_byte_array(digest::sha256d(&laid.serialized));
    Ok(CommitmentId {
        txid: laid.txid(spec.funding),
        sighash: spec.funding.sighash_parts(VERSION, laid.sequence, laid.lock_time, &hash_outputs, Some(pre.prefix)),
        tx: with_tx.then(|| laid.tx(spec.funding)),
    })
}

/// What every commitment of a channel shares, computed once: the hashed
/// constant part of its signature hash, and the two final keys serialized
/// (a key's serialization is a field conversion, and every commitment's
/// scripts hold both keys).
pub(crate) struct Precomputed {
    prefix: SighashPrefix,
    /// Our final key, then the peer's.
    finals: [[u8; 33]; 2],
}

impl Precomputed {
    /// For the commitments spending `funding` of a channel with the
    /// `obscuring` factor, where our final key is `ours` and the peer's is
    /// `theirs`.
    pub(crate) fn new(
        funding: &FundingOutput,
        obscuring: u64,
        ours: &CompressedPublicKey,
        theirs: &CompressedPublicKey,
    ) -> Self {
        let (_, sequence) = CommitmentNumber { number: 0, obscuring }.lock_fields();
        Precomputed { prefix: funding.sighash_prefix(VERSION, sequence), finals: [ours.to_bytes(), theirs.to_bytes()] }
    }

    /// For our commitments.
    pub(crate) fn ours(&self) -> ForOwner<'_> {
        ForOwner { prefix: &self.prefix, owner_final: &self.finals[0], other_final: &self.finals[1] }
    }

    /// For the peer's commitments.
    pub(crate) fn theirs(&self) -> ForOwner<'_> {
        ForOwner { prefix: &self.prefix, owner_final: &self.finals[1], other_final: &self.finals[0] }
    }
}

impl core::fmt::Debug for Precomputed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Precomputed").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// [`Precomputed`] for the commitments of one owner.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForOwner<'a> {
    prefix: &'a SighashPrefix,
    owner_final: &'a [u8; 33],
    other_final: &'a [u8; 33],
}

impl CommitmentId {
    /// Our `commit_key` signature (see [`Commitment::sign`]); the id must
    /// have been made with its transaction.
    pub(crate) fn sign(&self, funding: &FundingOutput, signer: &dyn Signer) -> Result<Signature, SignerError> {
        let tx = self.tx.as_ref().expect("an id made to be signed holds its transaction");
        funding.sign_digest(tx, self.sighash, signer)
    }

    /// Checks the other side's signature (see [`Commitment::verify`]).
    pub(crate) fn verify(
        &self,
        funding: &FundingOutput,
        key: &CompressedPublicKey,
        sig: &Signature,
    ) -> Result<(), VerifyError> {
        funding.verify_digest(self.sighash, key, sig)
    }
}

/// Every commitment is a version 2 transaction.
const VERSION: transaction::Version = transaction::Version::TWO;

/// Where an output comes from: the index of its HTLC in the spec's list.
#[derive(Clone, Copy, Debug)]
enum Source {
    ToOwner,
    ToOther,
    Htlc(u32),
}

/// One output as laid out: its value, its script pubkey (a P2WSH or a
/// P2WPKH, 34 or 22 bytes) inline, where it comes from and, when kept, the
/// index of its witness script.
#[derive(Clone, Copy, Debug)]
struct LaidOutput {
    value: Amount,
    spk: [u8; 34],
    spk_len: u8,
    source: Source,
    script: Option<u32>,
}

impl LaidOutput {
    fn spk(&self) -> &[u8] {
        &self.spk[..self.spk_len as usize]
    }
}

/// A commitment's outputs in transaction order, serialized, with its lock
/// fields and fee split: everything its txid and signature hash need.
struct Laid {
    outputs: Vec<LaidOutput>,
    /// The outputs serialized once: the txid and the signature hash's
    /// hashOutputs are both hashes of these bytes.
    serialized: Vec<u8>,
    /// The witness scripts, when kept.
    scripts: Vec<ScriptBuf>,
    fee: FeeSplit,
    lock_time: absolute::LockTime,
    sequence: Sequence,
}

/// Lays out the outputs of the commitment `spec` describes (checking it
/// first): the same for a full [`Commitment`] and for a [`CommitmentId`].
/// Witness scripts are kept when `keep_scripts`; otherwise each is written
/// into one scratch buffer, hashed and dropped.
fn lay_out(
    spec: &CommitmentSpec<'_>,
    other_final_hash: &WPubkeyHash,
    keep_scripts: bool,
    pre: Option<ForOwner<'_>>,
) -> Result<Laid, CommitmentError> {
    let funding_msat = MilliSats::from_sat(spec.funding.value());
    let total =
        MilliSats::checked_sum([spec.to_owner, spec.to_other].into_iter().chain(spec.htlcs.iter().map(|h| h.amount)));
    if total.is_none() || total != funding_msat {
        return Err(CommitmentError::ValueMismatch { total, funding: spec.funding.value() });
    }

    // Each (direction, id) once. A channel's HTLCs come in key order, so
    // the common case is one pass; otherwise the keys are sorted.
    let key = |h: &HtlcSpec| (h.direction, h.id);
    if !spec.htlcs.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        let mut keys: Vec<(HtlcDirection, u64)> = spec.htlcs.iter().map(key).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(CommitmentError::DuplicateHtlc { direction: w[0].0, id: w[0].1 });
        }
    }

    let live = spec.htlcs.iter().filter(|h| !htlc_is_dust(h.amount)).count();
    let fee = split_fee(
        commitment_fee(spec.fee_rate_per_kb, live),
        spec.to_owner.to_sat_floor(),
        spec.to_other.to_sat_floor(),
    );

    let revocation_ripemd = ripemd_of(&spec.revocation_hash);
    let keys = match pre {
        Some(p) => {
            debug_assert_eq!(
                (*p.owner_final, *p.other_final),
                (spec.owner_final.to_bytes(), spec.other_final.to_bytes()),
                "precomputed for these keys"
            );
            ScriptKeys::from_bytes(*p.owner_final, *p.other_final, revocation_ripemd, spec.delay)
        }
        None => ScriptKeys::new(&spec.owner_final, &spec.other_final, revocation_ripemd, spec.delay),
    };
    let mut outputs = Vec::with_capacity(live + 2);
    let mut scripts = Vec::with_capacity(if keep_scripts { live + 1 } else { 0 });
    let mut scratch = Vec::new();
    let mut p2wsh = |value: Amount, source: Source, write: &dyn Fn(&mut Vec<u8>)| {
        scratch.clear();
        write(&mut scratch);
        let mut spk = [0u8; 34];
        spk[0] = bitcoin::opcodes::OP_0.to_u8();
        spk[1] = 32;
        spk[2..].copy_from_slice(&digest::sha256(&scratch));
        let script = keep_scripts.then(|| {
            scripts.push(ScriptBuf::from_bytes(scratch.clone()));
            scripts.len() as u32 - 1
        });
        LaidOutput { value, spk, spk_len: 34, source, script }
    };
    if let Some(value) = fee.local_output() {
        outputs.push(p2wsh(value, Source::ToOwner, &|out| keys.write_revocable(out)));
    }
    for (i, h) in spec.htlcs.iter().enumerate().filter(|(_, h)| !htlc_is_dust(h.amount)) {
        let write = |out: &mut Vec<u8>| keys.write_htlc(h.direction, &h.r_hash160(), h.expiry, out);
        outputs.push(p2wsh(h.amount.to_sat_floor(), Source::Htlc(i as u32), &write));
    }
    if let Some(value) = fee.remote_output() {
        let mut spk = [0u8; 34];
        spk[0] = bitcoin::opcodes::OP_0.to_u8();
        spk[1] = 20;
        spk[2..22].copy_from_slice(other_final_hash.as_byte_array());
        outputs.push(LaidOutput { value, spk, spk_len: 22, source: Source::ToOther, script: None });
    }
    if outputs.is_empty() {
        return Err(CommitmentError::NoOutputs);
    }
    // BIP69, then (kind, id): identical outputs get a fixed order too.
    let rank = |o: &LaidOutput| match o.source {
        Source::ToOwner => (0, 0),
        Source::ToOther => (1, 0),
        Source::Htlc(i) => {
            let h = &spec.htlcs[i as usize];
            (2 + h.direction as u8, h.id)
        }
    };
    // The value and the script's first 8 bytes in one integer settle most
    // comparisons (the order is the same: both scripts are longer).
    let key = |o: &LaidOutput| {
        let head = u64::from_be_bytes(o.spk[..8].try_into().expect("8 bytes"));
        (u128::from(o.value.to_sat()) << 64) | u128::from(head)
    };
    outputs.sort_unstable_by(|a, b| {
        key(a).cmp(&key(b)).then_with(|| a.spk().cmp(b.spk())).then_with(|| rank(a).cmp(&rank(b)))
    });

    let mut serialized = Vec::with_capacity(outputs.len() * 43);
    for o in &outputs {
        serialized.extend_from_slice(&o.value.to_sat().to_le_bytes());
        let (prefix, len) = compact_size(o.spk().len());
        serialized.extend_from_slice(&prefix[..len]);
        serialized.extend_from_slice(o.spk());
    }
    // No witness yet: the weight is four times the size, plus the anchor
    // witness to come.
    let size = 4 + 1 + 41 + compact_size(outputs.len()).1 + serialized.len() + 4;
    let weight = 4 * size as u64 + ANCHOR_WITNESS_WEIGHT;
    if weight > MAX_STANDARD_WEIGHT {
        return Err(CommitmentError::TooHeavy(weight));
    }
    let (lock_time, sequence) = spec.number.lock_fields();
    Ok(Laid { outputs, serialized, scripts, fee, lock_time, sequence })
}

impl Laid {
    /// The unsigned transaction.
    fn tx(&self, funding: &FundingOutput) -> Transaction {
        let mut input = funding.txin();
        input.sequence = self.sequence;
        let output = self
            .outputs
            .iter()
            .map(|o| TxOut { value: o.value, script_pubkey: ScriptBuf::from_bytes(o.spk().to_vec()) })
            .collect();
        Transaction { version: VERSION, lock_time: self.lock_time, input: vec![input], output }
    }

    /// The txid: the hash of the transaction without witness data.
    fn txid(&self, funding: &FundingOutput) -> Txid {
        use sha2::Digest as _;
        let outpoint = funding.outpoint();
        let mut engine = digest::Engine::new();
        engine.update(VERSION.0.to_le_bytes());
        engine.update([1]);
        engine.update(outpoint.txid.as_byte_array());
        engine.update(outpoint.vout.to_le_bytes());
        // An empty script sig.
        engine.update([0]);
        engine.update(self.sequence.0.to_le_bytes());
        let (count, len) = compact_size(self.outputs.len());
        engine.update(&count[..len]);
        engine.update(&self.serialized);
        engine.update(self.lock_time.to_consensus_u32().to_le_bytes());
        Txid::from_byte_array(digest::finish_double(engine))
    }
}

/// Bitcoin's CompactSize length prefix of `n`: the buffer and how many of
/// its bytes it takes.
fn compact_size(n: usize) -> ([u8; 5], usize) {
    let mut out = [0u8; 5];
    let len = match n {
        0..=0xfc => {
            out[0] = n as u8;
            1
        }
        0xfd..=0xffff => {
            out[0] = 0xfd;
            out[1..3].copy_from_slice(&(n as u16).to_le_bytes());
            3
        }
        _ => {
            out[0] = 0xfe;
            out[1..].copy_from_slice(&(n as u32).to_le_bytes());
            5
        }
    };
    (out, len)
}

impl Commitment {
    /// The unsigned transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// Its txid (which signatures cannot change: every input is segwit).
    pub fn txid(&self) -> Txid {
        self.txid
    }

    /// Every output, in transaction order.
    pub fn outputs(&self) -> &[CommitmentOutput] {
        &self.outputs
    }

    /// The output at `vout`.
    pub fn output(&self, vout: u32) -> Option<&CommitmentOutput> {
        self.outputs.get(vout as usize)
    }

    /// The outpoint of output `vout`.
    pub fn outpoint(&self, vout: u32) -> OutPoint {
        OutPoint { txid: self.txid(), vout }
    }

    /// The output carrying the HTLC `(direction, id)`, if it has one (a dust
    /// HTLC has none).
    pub fn htlc_output(&self, direction: HtlcDirection, id: u64) -> Option<&CommitmentOutput> {
        self.outputs.iter().find(|o| matches!(o.kind, OutputKind::Htlc(h) if h.direction == direction && h.id == id))
    }

    /// HTLCs too small for an output (ruling D9): their value went to fees.
    pub fn trimmed_htlcs(&self) -> &[HtlcSpec] {
        &self.trimmed
    }

    /// How the R3.6 fee was divided between the two balances.
    pub fn fee_split(&self) -> &FeeSplit {
        &self.fee
    }

    /// The fee the transaction really pays: anchor value minus outputs.
    pub fn absolute_fee(&self, funding: &FundingOutput) -> Amount {
        funding.value() - self.tx.output.iter().map(|o| o.value).sum::<Amount>()
    }

    /// This commitment's revocation hash.
    pub fn revocation_hash(&self) -> sha256::Hash {
        self.revocation_hash
    }

    /// The CSV delay on the owner's outputs.
    pub fn delay(&self) -> Delay {
        self.delay
    }

    /// The owner's `final_key`.
    pub fn owner_final(&self) -> CompressedPublicKey {
        self.owner_final
    }

    /// The other side's `final_key`.
    pub fn other_final(&self) -> CompressedPublicKey {
        self.other_final
    }

    /// Our `commit_key` signature for this commitment (we are the other
    /// side, signing the owner's transaction: `update_commit`,
    /// `open_anchor`, `open_commit_sig`).
    pub fn sign(&self, funding: &FundingOutput, signer: &dyn Signer) -> Result<Signature, SignerError> {
        funding.sign_digest(&self.tx, self.sighash(funding), signer)
    }

    /// The BIP143 `SIGHASH_ALL` digest of its anchor input: what
    /// [`FundingOutput::sighash`] gives for [`Commitment::tx`], without
    /// hashing the outputs again.
    pub fn sighash(&self, funding: &FundingOutput) -> SegwitV0Sighash {
        let sequence = self.tx.input[0].sequence;
        funding.sighash_parts(self.tx.version, sequence, self.tx.lock_time, &self.hash_outputs, None)
    }

    /// Checks the other side's signature on this commitment (we are the
    /// owner).
    pub fn verify(
        &self,
        funding: &FundingOutput,
        key: &CompressedPublicKey,
        sig: &Signature,
    ) -> Result<(), VerifyError> {
        funding.verify_digest(self.sighash(funding), key, sig)
    }

    /// The fully signed transaction, ready to broadcast. The owner signs
    /// only now, when it is about to broadcast (R3.5-f).
    pub fn finalize(
        &self,
        funding: &FundingOutput,
        signer: &dyn Signer,
        their_key: &CompressedPublicKey,
        their_sig: &Signature,
    ) -> Result<Transaction, SignerError> {
        funding.finalize(&self.tx, signer, their_key, their_sig)
    }

    /// Where `script` is among the outputs' witness scripts (for callers
    /// matching an on-chain spend).
    pub fn find_witness_script(&self, script: &Script) -> Option<&CommitmentOutput> {
        self.outputs.iter().find(|o| o.witness_script.as_deref() == Some(script))
    }
}

/// What an on-chain observer knows of a commitment before seeing it: the
/// owner's keys, the delay and revocation hash of its revocable outputs, and
/// every HTLC it may hold (ruling D11). Amounts come from the transaction.
#[derive(Clone, Copy, Debug)]
pub struct CommitmentTemplate<'a> {
    /// The owner's `final_key`.
    pub owner_final: CompressedPublicKey,
    /// The other side's `final_key`.
    pub other_final: CompressedPublicKey,
    /// The CSV delay on the owner's outputs.
    pub delay: Delay,
    /// The commitment's revocation hash.
    pub revocation_hash: sha256::Hash,
    /// Every HTLC the commitment may hold, directions seen from the owner
    /// (a superset is fine: candidates that match no output are ignored).
    pub htlcs: &'a [HtlcSpec],
}

/// A commitment seen on chain, its outputs recognised by their scripts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecognisedOutputs {
    /// Every output recognised, in transaction order, with the value the
    /// transaction gives it.
    pub outputs: Vec<CommitmentOutput>,
    /// Outputs that match nothing the template allows.
    pub unknown: Vec<u32>,
}

/// Recognises the outputs of `tx`, a commitment described by `template`:
/// the to-owner output by its revocable script, the to-other output by its
/// P2WPKH, each HTLC output by its script (an HTLC whose value and script
/// equal another's is matched to the first candidate with that value).
/// Cost: one script and one SHA-256 per candidate HTLC, one lookup per
/// output.
pub fn recognise(tx: &Transaction, template: &CommitmentTemplate<'_>) -> RecognisedOutputs {
    use alloc::collections::BTreeMap;
    let keys = ScriptKeys::new(
        &template.owner_final,
        &template.other_final,
        ripemd_of(&template.revocation_hash),
        template.delay,
    );
    let to_owner = keys.revocable();
    let to_owner_spk = ScriptBuf::new_p2wsh(&to_owner.wscript_hash());
    let to_other_spk = ScriptBuf::new_p2wpkh(&template.other_final.wpubkey_hash());
    let mut candidates: BTreeMap<ScriptBuf, Vec<(HtlcSpec, ScriptBuf, bool)>> = BTreeMap::new();
    for h in template.htlcs.iter().filter(|h| !htlc_is_dust(h.amount)) {
        let script = keys.htlc(h);
        candidates.entry(ScriptBuf::new_p2wsh(&script.wscript_hash())).or_default().push((*h, script, false));
    }
    let mut outputs = Vec::with_capacity(tx.output.len());
    let mut unknown = Vec::new();
    for (vout, txout) in tx.output.iter().enumerate() {
        let vout = vout as u32;
        let found = if txout.script_pubkey == to_owner_spk {
            Some((OutputKind::ToOwner, Some(to_owner.clone())))
        } else if txout.script_pubkey == to_other_spk {
            Some((OutputKind::ToOther, None))
        } else {
            candidates.get_mut(&txout.script_pubkey).and_then(|list| {
                let pick = list
                    .iter()
                    .position(|(h, _, used)| !used && h.amount.to_sat_floor() == txout.value)
                    .or_else(|| list.iter().position(|(_, _, used)| !used))?;
                list[pick].2 = true;
                Some((OutputKind::Htlc(list[pick].0), Some(list[pick].1.clone())))
            })
        };
        match found {
            Some((kind, witness_script)) => {
                outputs.push(CommitmentOutput { vout, value: txout.value, kind, witness_script })
            }
            None => unknown.push(vout),
        }
    }
    RecognisedOutputs { outputs, unknown }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use proptest::prelude::*;

    fn key(n: u8) -> CompressedPublicKey {
        let secret = SecretKey::from_slice(&[n; 32]).expect("in range");
        CompressedPublicKey(secret.public_key(&Secp256k1::new()))
    }

    fn funding(sat: u64) -> FundingOutput {
        let outpoint = OutPoint { txid: Txid::from_byte_array([7; 32]), vout: 1 };
        FundingOutput::new(outpoint, Amount::from_sat(sat), &key(1), &key(3))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The identity the channel signs and checks ([`id_with`]) is the
        /// full [`build`]'s: same txid, same signature hash, same
        /// transaction, same refusals. Up to 600 HTLCs, so that some
        /// commitments have more than 252 outputs (a three-byte count) and
        /// some are too heavy to relay.
        #[test]
        fn the_id_is_the_full_commitments(
            htlcs in proptest::collection::vec((any::<bool>(), 1u64..2_000_000, any::<u8>(), 400_000u32..400_100), 0..600),
            owner_share in 0u64..=1000,
            rate in 0u32..60_000,
            number in prop_oneof![0u64..(1 << 24), 0u64..(1 << 48)],
        ) {
            let f = funding(4_000_000);
            let htlcs: Vec<HtlcSpec> = htlcs
                .into_iter()
                .enumerate()
                .map(|(i, (offered, msat, r, h))| {
                    let direction = if offered { HtlcDirection::Offered } else { HtlcDirection::Received };
                    let expiry = absolute::LockTime::from_consensus(h);
                    HtlcSpec::new(direction, i as u64, MilliSats::from_msat(msat), sha256::Hash::hash(&[r]), expiry)
                })
                .collect();
            let in_htlcs: u64 = htlcs.iter().map(|h| h.amount.to_msat()).sum();
            let rest = 4_000_000_000 - in_htlcs;
            let to_owner = rest / 1000 * owner_share;
            let spec = CommitmentSpec {
                funding: &f,
                owner_final: key(2),
                other_final: key(4),
                to_owner: MilliSats::from_msat(to_owner),
                to_other: MilliSats::from_msat(rest - to_owner),
                htlcs: &htlcs,
                fee_rate_per_kb: rate,
                revocation_hash: sha256::Hash::hash(b"revocation"),
                delay: Delay::Blocks(144),
                number: CommitmentNumber { number, obscuring: 0x5253_382d_acf5 },
            };
            let hash = key(4).wpubkey_hash();
            // Computed as the owner's channel computes it (the owner's key
            // first): its `ours` is for this commitment; the other side's
            // channel has the keys the other way round and uses `theirs`.
            let owners = Precomputed::new(&f, spec.number.obscuring, &spec.owner_final, &spec.other_final);
            let others = Precomputed::new(&f, spec.number.obscuring, &spec.other_final, &spec.owner_final);
            match (build(&spec), id_with(&spec, &hash, true, others.theirs())) {
                (Ok(full), Ok(id)) => {
                    prop_assert_eq!(id.txid, full.txid());
                    prop_assert_eq!(id.txid, full.tx().compute_txid());
                    prop_assert_eq!(id.sighash, f.sighash(full.tx()));
                    prop_assert_eq!(id.tx.as_ref(), Some(full.tx()));
                    // The owner's side, checking: the same txid and hash,
                    // whether the number's sequence is the prefix's (below
                    // 2^24) or not.
                    let checking = id_with(&spec, &hash, false, owners.ours()).expect("built once");
                    prop_assert!(checking.tx.is_none());
                    prop_assert_eq!(checking.txid, full.tx().compute_txid());
                    prop_assert_eq!(checking.sighash, f.sighash(full.tx()));
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "build {:?} but id {:?}", a.map(|c| c.txid()), b.map(|c| c.txid)),
            }
        }
    }
}
