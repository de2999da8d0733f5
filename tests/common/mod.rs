//! Helpers shared by the integration tests: deterministic keys and
//! signatures, and a minimal protobuf assembler that is independent of the
//! crate's own encoder (so hand-built inputs are not computed by the code
//! under test).
#![allow(dead_code)]

use std::sync::LazyLock;

use bitcoin::secp256k1::{ecdsa::Signature, All, Message as SecpMessage, Secp256k1};
use bitcoin::CompressedPublicKey;

pub static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

pub use paychan::sim::secret;

/// The compressed public key of `secret(n)`.
pub fn pubkey(n: u64) -> CompressedPublicKey {
    CompressedPublicKey(secret(n).public_key(&SECP))
}

/// A low-S signature by `secret(n)` of the 32-byte digest `msg`.
pub fn sig(n: u64, msg: [u8; 32]) -> Signature {
    SECP.sign_ecdsa(&SecpMessage::from_digest(msg), &secret(n))
}

/// Minimal protobuf writer for hand-built test inputs.
pub mod pb {
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn key(field: u32, wire: u8, out: &mut Vec<u8>) {
        varint((u64::from(field) << 3) | u64::from(wire), out);
    }

    pub fn uint(field: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        key(field, 0, &mut out);
        varint(v, &mut out);
        out
    }

    pub fn fixed64(field: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        key(field, 1, &mut out);
        out.extend_from_slice(&v.to_le_bytes());
        out
    }

    pub fn bytes(field: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key(field, 2, &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    /// A message: the concatenation of its fields.
    pub fn msg(fields: &[Vec<u8>]) -> Vec<u8> {
        fields.concat()
    }

    /// A 32-byte value as the four fixed64 fields of `sha256_hash`.
    pub fn hash(bytes: &[u8; 32]) -> Vec<u8> {
        let words: Vec<Vec<u8>> = bytes
            .chunks(8)
            .enumerate()
            .map(|(i, c)| fixed64(i as u32 + 1, u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        words.concat()
    }

    /// A 64-byte compact signature as the eight fixed64 fields of `signature`.
    pub fn signature(compact: &[u8; 64]) -> Vec<u8> {
        let words: Vec<Vec<u8>> = compact
            .chunks(8)
            .enumerate()
            .map(|(i, c)| fixed64(i as u32 + 1, u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        words.concat()
    }

    /// A `pkt` holding `body` as member `field`.
    pub fn pkt(field: u32, body: &[u8]) -> Vec<u8> {
        bytes(field, body)
    }
}

/// Parses the hex lines of a vector file, ignoring `#` comments and blanks.
pub fn read_hex_vector(path: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text.lines().map(|l| l.split('#').next().unwrap()).flat_map(|l| l.split_whitespace()).collect();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Transaction fixtures and Bitcoin Core's script interpreter.
pub mod chain {
    use bitcoin::consensus::serialize;
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::SecretKey;
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::{Amount, Script, Transaction, TxOut, Witness};

    use super::SECP;

    /// Runs input `index` of `tx` through libbitcoinconsensus with every
    /// pre-taproot rule (P2SH, DERSIG, NULLDUMMY, CLTV, CSV, WITNESS).
    pub fn verify_input(tx: &Transaction, index: usize, spent: &TxOut) -> Result<(), bitcoinconsensus::Error> {
        bitcoinconsensus::verify_with_flags(
            spent.script_pubkey.as_bytes(),
            spent.value.to_sat(),
            &serialize(tx),
            None,
            index,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT,
        )
    }

    #[allow(unused_imports)]
    pub use paychan::sim::funding_tx;

    /// A simulated chain whose every accepted input passes the
    /// interpreter ([`verify_input`]).
    pub fn verified_chain() -> paychan::sim::chain::SimChain {
        paychan::sim::chain::SimChain::with_verifier(Box::new(|tx: &Transaction, i: usize, spent: &TxOut| {
            verify_input(tx, i, spent).map_err(|e| format!("{e:?}"))
        }))
    }

    /// Replaces the signature (witness element 0) of input `index` with a
    /// fresh one by `key` over the transaction as it is now: for negative
    /// tests that change a field and must re-sign to isolate that change.
    pub fn resign(tx: &mut Transaction, index: usize, witness_script: &Script, value: Amount, key: &SecretKey) {
        let sighash =
            SighashCache::new(&*tx).p2wsh_signature_hash(index, witness_script, value, EcdsaSighashType::All).unwrap();
        let sig = SECP.sign_ecdsa(&bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array()), key);
        let mut items: Vec<Vec<u8>> = tx.input[index].witness.iter().map(|w| w.to_vec()).collect();
        items[0] = bitcoin::ecdsa::Signature::sighash_all(sig).serialize().to_vec();
        tx.input[index].witness = Witness::from_slice(&items);
    }

    /// Replaces witness element `element` of input `index`.
    pub fn set_witness_element(tx: &mut Transaction, index: usize, element: usize, value: Vec<u8>) {
        let mut items: Vec<Vec<u8>> = tx.input[index].witness.iter().map(|w| w.to_vec()).collect();
        items[element] = value;
        tx.input[index].witness = Witness::from_slice(&items);
    }
}
pub mod net;
pub mod pair;
pub mod regtest;

/// How `node`'s monitor, restored from what it stored, classifies `tx`
/// confirmed in the next block (C1-b).
pub fn classify(node: &paychan::sim::Node, tx: &bitcoin::Transaction) -> Option<paychan::chain::SpendKind> {
    use bitcoin::hashes::Hash as _;
    let mut m = node.monitor_store.monitor(node.monitor.config().clone(), node.signer.clone()).unwrap();
    let height = m.best_block().map_or(1, |(h, _)| h + 1);
    m.block_connected(height, bitcoin::BlockHash::all_zeros(), 1_700_000_000, std::slice::from_ref(tx)).unwrap();
    m.spend().map(|(_, kind)| kind)
}

/// The high-S twin of a compact signature: `s` replaced by `n - s`, which
/// verifies the same under non-strict rules.
pub fn high_s(compact: &[u8; 64]) -> [u8; 64] {
    const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xBA, 0xAE,
        0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
    ];
    let mut out = *compact;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(compact[32 + i]) - borrow;
        out[32 + i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    out
}

mod reseal;
#[allow(unused_imports)]
pub use reseal::{resealed, resealed_single_lane};
