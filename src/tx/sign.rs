//! Signatures: the [`Signer`] trait that keeps secret keys out of the core,
//! an in-memory implementation, and verification.
//!
//! Every signature this crate asks for is a `SIGHASH_ALL`, low-S signature
//! over one input of a transaction the crate built: BIP143 (segwit v0) for
//! every peer-channel transaction and for a P2WSH one-way channel, the legacy
//! digest for a P2SH one-way channel. The core hands the signer the whole
//! transaction, the input, its script and value, and the sighash it computed,
//! so a signer that does not trust the core (a hardware device, a PSBT round
//! trip) can recompute and check everything before it signs.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::{ecdsa::Signature, All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{LegacySighash, SegwitV0Sighash};
use bitcoin::{Amount, CompressedPublicKey, Script, Transaction};

/// One verification/signing context for the whole process.
/// Runs `f` with a signing and verification context: one for the whole
/// process with `std`; without it (no lazy statics) one per use, which is
/// cheap since libsecp256k1 0.4 precomputes nothing at creation.
pub(crate) fn with_secp<R>(f: impl FnOnce(&Secp256k1<All>) -> R) -> R {
    #[cfg(feature = "std")]
    {
        static SECP: std::sync::LazyLock<Secp256k1<All>> = std::sync::LazyLock::new(Secp256k1::new);
        f(&SECP)
    }
    #[cfg(not(feature = "std"))]
    {
        f(&Secp256k1::new())
    }
}

/// Which key signs: one of a node's two peer-channel keys (section 2.1), or
/// the key of one one-way channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyRole {
    /// `commit_key`: the anchor 2-of-2, so commitment and close transactions.
    Commit,
    /// `final_key`: outputs paid to this node, so sweeps and penalties.
    Final,
    /// The key of the one-way channel (or merchant session) numbered `n`: a
    /// fresh key for each number, never reused (M1-a, M1-c).
    Oneway(u64),
}

/// The digest a signature commits to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Sighash {
    /// BIP143, for segwit v0 inputs.
    SegwitV0(SegwitV0Sighash),
    /// The original digest, for legacy (P2SH) inputs.
    Legacy(LegacySighash),
}

impl Sighash {
    /// The 32 bytes signed.
    pub fn to_byte_array(self) -> [u8; 32] {
        match self {
            Sighash::SegwitV0(h) => h.to_byte_array(),
            Sighash::Legacy(h) => h.to_byte_array(),
        }
    }
}

impl core::fmt::Display for Sighash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Sighash::SegwitV0(h) => write!(f, "{h}"),
            Sighash::Legacy(h) => write!(f, "{h} (legacy)"),
        }
    }
}

/// Everything a signer needs to decide about and produce one signature.
#[derive(Clone, Copy, Debug)]
pub struct SigningInput<'a> {
    /// The transaction being signed (its witnesses may still be empty).
    pub tx: &'a Transaction,
    /// Which input of `tx` is signed.
    pub input_index: usize,
    /// The script of the output that input spends: its witness script
    /// (P2WSH), or its redeem script (P2SH).
    pub script: &'a Script,
    /// The value of the output that input spends.
    pub value: Amount,
    /// The `SIGHASH_ALL` digest the crate computed for this input.
    pub sighash: Sighash,
    /// Which key must sign.
    pub role: KeyRole,
}

/// A signer refused or failed to sign.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("signer failed: {reason}")]
pub struct SignerError {
    /// What the signer reported.
    pub reason: String,
}

/// Holds (or reaches) a node's channel keys and signs on request.
///
/// The core never needs a secret key of its own: implement this for a
/// hardware device, a remote service or a PSBT workflow. Signatures must be
/// low-S (libsecp256k1 always produces them).
pub trait Signer {
    /// The public key for `role`: the same at every call (a channel keeps
    /// what it derives from it, and refuses to restore with a signer whose
    /// keys changed). Called often: return a cached value.
    fn public_key(&self, role: KeyRole) -> CompressedPublicKey;

    /// Signs `input.sighash` with the key for `input.role`.
    fn sign(&self, input: &SigningInput<'_>) -> Result<Signature, SignerError>;
}

/// A [`Signer`] holding both secret keys in memory.
#[derive(Clone)]
pub struct InMemorySigner {
    commit: SecretKey,
    final_key: SecretKey,
    /// The two public keys, derived once (each derivation is an elliptic
    /// curve multiplication).
    public: [CompressedPublicKey; 2],
}

impl InMemorySigner {
    /// A signer for the given `commit_key` and `final_key` secrets.
    pub fn new(commit: SecretKey, final_key: SecretKey) -> Self {
        let public =
            with_secp(|s| [CompressedPublicKey(commit.public_key(s)), CompressedPublicKey(final_key.public_key(s))]);
        InMemorySigner { commit, final_key, public }
    }

    fn secret(&self, role: KeyRole) -> SecretKey {
        match role {
            KeyRole::Commit => self.commit,
            KeyRole::Final => self.final_key,
            KeyRole::Oneway(n) => oneway_secret(&self.final_key, n),
        }
    }
}

/// The in-memory signer's key for one-way channel `n`: SHA-256 of a tag, its
/// `final_key` secret and `n`, hashed again in the (2^-128) case that is not
/// a valid scalar. Deterministic, so a restored node finds its keys again.
fn oneway_secret(base: &SecretKey, n: u64) -> SecretKey {
    use bitcoin::hashes::sha256;
    let mut engine = sha256::Hash::engine();
    bitcoin::hashes::HashEngine::input(&mut engine, b"paychan one-way key");
    bitcoin::hashes::HashEngine::input(&mut engine, &base.secret_bytes());
    bitcoin::hashes::HashEngine::input(&mut engine, &n.to_be_bytes());
    let mut digest = sha256::Hash::from_engine(engine).to_byte_array();
    loop {
        if let Ok(key) = SecretKey::from_slice(&digest) {
            return key;
        }
        digest = sha256::Hash::hash(&digest).to_byte_array();
    }
}

impl core::fmt::Debug for InMemorySigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InMemorySigner")
            .field("commit_key", &self.public_key(KeyRole::Commit))
            .field("final_key", &self.public_key(KeyRole::Final))
            .finish_non_exhaustive()
    }
}

impl Signer for InMemorySigner {
    fn public_key(&self, role: KeyRole) -> CompressedPublicKey {
        match role {
            KeyRole::Commit => self.public[0],
            KeyRole::Final => self.public[1],
            KeyRole::Oneway(_) => with_secp(|s| CompressedPublicKey(self.secret(role).public_key(s))),
        }
    }

    fn sign(&self, input: &SigningInput<'_>) -> Result<Signature, SignerError> {
        Ok(with_secp(|s| s.sign_ecdsa(&message(input.sighash), &self.secret(input.role))))
    }
}

/// A signature did not verify.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("signature does not verify against key {key} for sighash {sighash}")]
pub struct VerifyError {
    /// The key it was checked against.
    pub key: CompressedPublicKey,
    /// The digest it was checked against.
    pub sighash: Sighash,
}

/// Checks `sig` by `key` over `sighash`.
pub fn verify(sighash: Sighash, key: &CompressedPublicKey, sig: &Signature) -> Result<(), VerifyError> {
    with_secp(|s| s.verify_ecdsa(&message(sighash), sig, &key.0)).map_err(|_| VerifyError { key: *key, sighash })
}

fn message(sighash: Sighash) -> Message {
    Message::from_digest(sighash.to_byte_array())
}

/// A signer's signature in the low-S form standard relay and the peer
/// require, whatever form an external signer returned.
pub(crate) fn low_s(sig: Result<Signature, SignerError>) -> Result<Signature, SignerError> {
    sig.map(|mut s| {
        s.normalize_s();
        s
    })
}

/// The witness encoding of a signature: DER plus the `SIGHASH_ALL` byte.
pub(crate) fn witness_sig(sig: &Signature) -> bitcoin::ecdsa::SerializedSignature {
    bitcoin::ecdsa::Signature::sighash_all(*sig).serialize()
}
