//! The anchor (funding) output: a P2WSH 2-of-2 of the two `commit_key`s
//! (section 2.2, ruling D4), its validation, and signing its single spend.
//!
//! Witness script: `2 <key_lesser> <key_greater> 2 OP_CHECKMULTISIG`, keys
//! sorted by their 33-byte encoding. Witness: an empty element (the
//! `OP_CHECKMULTISIG` dummy, NULLDUMMY), the two signatures in key order, the
//! witness script.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::{sha256d, Hash as _};
use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_PUSHNUM_2};
use bitcoin::script::Builder;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::sighash::{EcdsaSighashType, SegwitV0Sighash, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, CompressedPublicKey, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn,
    Witness,
};

use super::sign::{self, witness_sig, KeyRole, Sighash, Signer, SignerError, SigningInput, VerifyError};
use crate::digest;

/// The largest anchor the protocol allows, so that every millisatoshi amount
/// fits in 32 bits (section 2.2, R2.2-c).
pub const MAX_ANCHOR: Amount = Amount::from_sat(4_294_967);

/// The length of the anchor's witness script, and where in it its two keys
/// are: `OP_2`, then each key's push (a length byte and 33 bytes), then
/// `OP_2 OP_CHECKMULTISIG`.
const ANCHOR_SCRIPT_LEN: usize = 71;
const FIRST_KEY: core::ops::Range<usize> = 2..35;
const SECOND_KEY: core::ops::Range<usize> = 36..69;

/// The anchor's witness script for the two `commit_key`s, in either order.
pub fn anchor_witness_script(a: &CompressedPublicKey, b: &CompressedPublicKey) -> ScriptBuf {
    let [first, second] = sorted(a, b);
    Builder::new()
        .push_opcode(OP_PUSHNUM_2)
        .push_slice(first.to_bytes())
        .push_slice(second.to_bytes())
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script()
}

fn sorted(a: &CompressedPublicKey, b: &CompressedPublicKey) -> [CompressedPublicKey; 2] {
    if a.to_bytes() <= b.to_bytes() {
        [*a, *b]
    } else {
        [*b, *a]
    }
}

/// A confirmed-to-be-ours anchor output: where it is, what it holds, and the
/// two keys that must sign to spend it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FundingOutput {
    outpoint: OutPoint,
    value: Amount,
    keys: [CompressedPublicKey; 2],
    witness_script: ScriptBuf,
    /// BIP143's hashPrevouts of every one-input spend of the anchor.
    hash_prevouts: sha256d::Hash,
}

impl FundingOutput {
    /// The anchor output at `outpoint` holding `value`, locked to `a` and `b`.
    ///
    /// This trusts the caller's description; use [`validate_funding`] to
    /// check a funding transaction against it.
    pub fn new(outpoint: OutPoint, value: Amount, a: &CompressedPublicKey, b: &CompressedPublicKey) -> Self {
        let mut prevout = [0u8; 36];
        prevout[..32].copy_from_slice(outpoint.txid.as_byte_array());
        prevout[32..].copy_from_slice(&outpoint.vout.to_le_bytes());
        FundingOutput {
            outpoint,
            value,
            keys: sorted(a, b),
            witness_script: anchor_witness_script(a, b),
            hash_prevouts: sha256d::Hash::hash(&prevout),
        }
    }

    /// Where the anchor output is.
    pub fn outpoint(&self) -> OutPoint {
        self.outpoint
    }

    /// The two `commit_key`s, sorted as in the script.
    pub fn keys(&self) -> [CompressedPublicKey; 2] {
        self.keys
    }

    /// What it holds.
    pub fn value(&self) -> Amount {
        self.value
    }

    /// The 2-of-2 witness script.
    pub fn witness_script(&self) -> &Script {
        &self.witness_script
    }

    /// The P2WSH output script the anchor transaction must pay.
    pub fn script_pubkey(&self) -> ScriptBuf {
        ScriptBuf::new_p2wsh(&self.witness_script.wscript_hash())
    }

    /// The input spending the anchor, as commitment and close transactions
    /// use it: no script sig, `nSequence` 0xFFFFFFFF, witness filled in by
    /// [`FundingOutput::witness`].
    pub fn txin(&self) -> TxIn {
        TxIn {
            previous_output: self.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }
    }

    /// The BIP143 `SIGHASH_ALL` digest of input 0 of `tx`, which must spend
    /// this anchor.
    pub fn sighash(&self, tx: &Transaction) -> SegwitV0Sighash {
        debug_assert_eq!(tx.input.first().map(|i| i.previous_output), Some(self.outpoint));
        SighashCache::new(tx)
            .p2wsh_signature_hash(0, &self.witness_script, self.value, EcdsaSighashType::All)
            .expect("a transaction spending the anchor has input 0")
    }

    /// [`FundingOutput::sighash`] of a one-input transaction spending this
    /// anchor, from its version, input sequence and lock time, and its
    /// outputs' hash (BIP143's hashOutputs): the outputs are not serialized
    /// again. With `prefix` for this version and sequence, the preimage's
    /// constant part is not hashed again either.
    pub(crate) fn sighash_parts(
        &self,
        version: transaction::Version,
        sequence: Sequence,
        lock_time: absolute::LockTime,
        hash_outputs: &sha256d::Hash,
        prefix: Option<&SighashPrefix>,
    ) -> SegwitV0Sighash {
        let mut engine = match prefix {
            Some(p) if p.version == version && p.sequence == sequence => p.engine.clone(),
            _ => self.sighash_prefix(version, sequence).engine,
        };
        use sha2::Digest as _;
        engine.update(sequence.0.to_le_bytes());
        engine.update(hash_outputs.as_byte_array());
        engine.update(lock_time.to_consensus_u32().to_le_bytes());
        engine.update(EcdsaSighashType::All.to_u32().to_le_bytes());
        SegwitV0Sighash::from_byte_array(digest::finish_double(engine))
    }

    /// The part of the BIP143 preimage of a one-input spend of this anchor
    /// that only the transaction's version and input sequence change (184 of
    /// its 228 bytes), hashed: a commitment's signature hash then takes
    /// three SHA-256 blocks instead of seven. A commitment's sequence changes
    /// once every 2^24 commitments (ruling D10).
    pub(crate) fn sighash_prefix(&self, version: transaction::Version, sequence: Sequence) -> SighashPrefix {
        use sha2::Digest as _;
        let mut engine = digest::Engine::new();
        engine.update(version.0.to_le_bytes());
        engine.update(self.hash_prevouts.as_byte_array());
        engine.update(sha256d::Hash::hash(&sequence.0.to_le_bytes()).as_byte_array());
        engine.update(self.outpoint.txid.as_byte_array());
        engine.update(self.outpoint.vout.to_le_bytes());
        // The script code: the 71-byte 2-of-2 with its one-byte length.
        let script_len = u8::try_from(self.witness_script.len()).expect("a 2-of-2 script is 71 bytes");
        debug_assert!(script_len < 0xfd);
        engine.update([script_len]);
        engine.update(self.witness_script.as_bytes());
        engine.update(self.value.to_sat().to_le_bytes());
        SighashPrefix { version, sequence, engine }
    }

    /// Our signature on `tx` (a commitment or close transaction spending this
    /// anchor), made by `signer`'s `commit_key`.
    pub fn sign(&self, tx: &Transaction, signer: &dyn Signer) -> Result<Signature, SignerError> {
        self.sign_digest(tx, self.sighash(tx), signer)
    }

    /// Our signature on `tx`, whose [`FundingOutput::sighash`] is `sighash`.
    pub(crate) fn sign_digest(
        &self,
        tx: &Transaction,
        sighash: SegwitV0Sighash,
        signer: &dyn Signer,
    ) -> Result<Signature, SignerError> {
        sign::low_s(signer.sign(&SigningInput {
            tx,
            input_index: 0,
            script: &self.witness_script,
            value: self.value,
            sighash: Sighash::SegwitV0(sighash),
            role: KeyRole::Commit,
        }))
    }

    /// Checks a signature on `tx` by `key`, which must be one of the two
    /// anchor keys.
    pub fn verify(&self, tx: &Transaction, key: &CompressedPublicKey, sig: &Signature) -> Result<(), VerifyError> {
        self.verify_digest(self.sighash(tx), key, sig)
    }

    /// Checks a signature by `key` on a spend whose sighash is `sighash`.
    pub(crate) fn verify_digest(
        &self,
        sighash: SegwitV0Sighash,
        key: &CompressedPublicKey,
        sig: &Signature,
    ) -> Result<(), VerifyError> {
        // The script holds both keys serialized: one serialization to
        // compare, where comparing keys serializes both of each pair.
        let bytes = key.to_bytes();
        let script = self.witness_script.as_bytes();
        debug_assert_eq!(script.len(), ANCHOR_SCRIPT_LEN);
        if bytes[..] != script[FIRST_KEY] && bytes[..] != script[SECOND_KEY] {
            return Err(VerifyError { key: *key, sighash: Sighash::SegwitV0(sighash) });
        }
        sign::verify(Sighash::SegwitV0(sighash), key, sig)
    }

    /// `tx` (input 0 spending this anchor) with our signature added to
    /// `their_sig`: ready to broadcast.
    pub fn finalize(
        &self,
        tx: &Transaction,
        signer: &dyn Signer,
        their_key: &CompressedPublicKey,
        their_sig: &Signature,
    ) -> Result<Transaction, SignerError> {
        let ours = self.sign(tx, signer)?;
        let our_key = signer.public_key(KeyRole::Commit);
        let mut tx = tx.clone();
        tx.input[0].witness = self.witness((&our_key, &ours), (their_key, their_sig));
        Ok(tx)
    }

    /// The witness spending the anchor with one signature per key, in
    /// whichever order they are given.
    pub fn witness(&self, a: (&CompressedPublicKey, &Signature), b: (&CompressedPublicKey, &Signature)) -> Witness {
        let (first, second) = if *a.0 == self.keys[0] { (a.1, b.1) } else { (b.1, a.1) };
        let mut w = Witness::new();
        w.push([]);
        w.push(witness_sig(first));
        w.push(witness_sig(second));
        w.push(self.witness_script.as_bytes());
        w
    }
}

/// [`FundingOutput::sighash_prefix`]: the hashed constant part of the
/// signature hash of one-input spends of an anchor with this version and
/// input sequence.
#[derive(Clone)]
pub(crate) struct SighashPrefix {
    version: transaction::Version,
    sequence: Sequence,
    engine: digest::Engine,
}

impl core::fmt::Debug for SighashPrefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SighashPrefix").field("version", &self.version).field("sequence", &self.sequence).finish()
    }
}

/// Why a funding transaction is not the anchor we agreed on.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FundingError {
    /// The transaction has no output at that index.
    #[error("funding transaction has {outputs} outputs, no output {vout}")]
    NoSuchOutput {
        /// The index asked for.
        vout: u32,
        /// How many outputs there are.
        outputs: usize,
    },
    /// The output does not pay the 2-of-2 of the two commit keys.
    #[error("funding output {vout} does not pay the 2-of-2 of the two commit keys")]
    WrongScript {
        /// The index of the output.
        vout: u32,
    },
    /// The output's value differs from the agreed amount.
    #[error("funding output holds {found}, not the agreed {expected}")]
    WrongAmount {
        /// The agreed amount.
        expected: Amount,
        /// What the output holds.
        found: Amount,
    },
    /// The amount is above the protocol's limit (R2.2-c).
    #[error("funding amount {0} is above the 4294967 sat limit (R2.2-c)")]
    TooLarge(Amount),
    /// An input has no witness, so third parties could change the funding
    /// txid and invalidate every commitment signed over it (ruling D4).
    #[error("funding input {0} is not a signed segwit input: its txid could be malleated")]
    MalleableInput(usize),
}

/// Checks that output `vout` of the signed funding transaction `tx` is the
/// anchor: the P2WSH 2-of-2 of `a` and `b` holding exactly `amount`, at most
/// [`MAX_ANCHOR`], and that every input is segwit so the txid cannot change.
pub fn validate_funding(
    tx: &Transaction,
    vout: u32,
    a: &CompressedPublicKey,
    b: &CompressedPublicKey,
    amount: Amount,
) -> Result<FundingOutput, FundingError> {
    let output = tx.output.get(vout as usize).ok_or(FundingError::NoSuchOutput { vout, outputs: tx.output.len() })?;
    let funding = FundingOutput::new(OutPoint { txid: tx.compute_txid(), vout }, amount, a, b);
    if output.script_pubkey != funding.script_pubkey() {
        return Err(FundingError::WrongScript { vout });
    }
    if output.value != amount {
        return Err(FundingError::WrongAmount { expected: amount, found: output.value });
    }
    if amount > MAX_ANCHOR {
        return Err(FundingError::TooLarge(amount));
    }
    if let Some(i) = tx.input.iter().position(|i| i.witness.is_empty()) {
        return Err(FundingError::MalleableInput(i));
    }
    Ok(funding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    fn key(i: u8) -> CompressedPublicKey {
        let secret = SecretKey::from_slice(&[i; 32]).expect("valid");
        CompressedPublicKey(secret.public_key(&Secp256k1::signing_only()))
    }

    // Where `verify_digest` looks for the two keys.
    #[test]
    fn the_key_ranges_are_the_scripts_keys() {
        for (a, b) in [(key(1), key(2)), (key(2), key(1)), (key(7), key(3))] {
            let script = anchor_witness_script(&a, &b);
            let bytes = script.as_bytes();
            assert_eq!(bytes.len(), ANCHOR_SCRIPT_LEN);
            let [first, second] = sorted(&a, &b);
            assert_eq!(bytes[FIRST_KEY], first.to_bytes());
            assert_eq!(bytes[SECOND_KEY], second.to_bytes());
        }
    }
}
