//! The commitment's witness scripts, written straight into their bytes.
//!
//! A commitment with n HTLCs has n + 1 scripts, all made of the same few
//! pieces: the two `final_key`s, the RIPEMD-160 of the revocation hash and
//! the delay. [`ScriptKeys`] encodes those once per commitment, and each
//! script is then one allocation and a few copies. `rust-bitcoin`'s
//! `Builder` would serialize both keys again for every HTLC, which cost more
//! than hashing the script. The layouts are those of [`super::htlc`] and
//! [`super::commitment::to_self_script`]; the tests compare every script
//! with one made by `Builder`.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::opcodes::all::{
    OP_2DROP, OP_BOOLOR, OP_CHECKSIG, OP_CLTV, OP_CSV, OP_DROP, OP_DUP, OP_ELSE, OP_ENDIF, OP_EQUAL, OP_EQUALVERIFY,
    OP_HASH160, OP_IF, OP_NOTIF, OP_PUSHNUM_1, OP_PUSHNUM_NEG1, OP_SIZE, OP_SWAP,
};
use bitcoin::opcodes::OP_0;
use bitcoin::{absolute, CompressedPublicKey, ScriptBuf};

use super::commitment::{HtlcDirection, HtlcSpec};
use crate::types::Delay;

/// An encoded integer push, as `Builder::push_int` writes it: `OP_0`,
/// `OP_1NEGATE`, `OP_1`..`OP_16`, or a minimal script number of at most 8
/// bytes behind its length.
#[derive(Clone, Copy, Debug)]
struct IntPush {
    len: usize,
    bytes: [u8; 9],
}

impl IntPush {
    fn new(n: i64) -> Self {
        let mut bytes = [0u8; 9];
        let len = if n == -1 || (1..=16).contains(&n) {
            bytes[0] = if n == -1 { OP_PUSHNUM_NEG1.to_u8() } else { OP_PUSHNUM_1.to_u8() + (n - 1) as u8 };
            1
        } else if n == 0 {
            bytes[0] = OP_0.to_u8();
            1
        } else {
            let mut number = [0u8; 8];
            let len = bitcoin::script::write_scriptint(&mut number, n);
            // A script number of at most 8 bytes: a one-byte direct push.
            bytes[0] = len as u8;
            bytes[1..=len].copy_from_slice(&number[..len]);
            len + 1
        };
        IntPush { len, bytes }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What every witness script of one commitment shares, encoded once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScriptKeys {
    owner_final: [u8; 33],
    other_final: [u8; 33],
    revocation_ripemd: [u8; 20],
    delay: IntPush,
}

/// The longest HTLC script: 57 fixed bytes, two 34-byte key pushes and two
/// pushes of at most 9 bytes.
const MAX_SCRIPT: usize = 57 + 2 * 34 + 2 * 9;

/// Appends script bytes (the buffer is sized for the longest script up
/// front).
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn op(&mut self, op: bitcoin::Opcode) -> &mut Self {
        self.0.push(op.to_u8());
        self
    }

    /// A direct push of at most 75 bytes: its length, then the bytes.
    fn push(&mut self, data: &[u8]) -> &mut Self {
        debug_assert!(data.len() <= 75);
        self.0.push(data.len() as u8);
        self.0.extend_from_slice(data);
        self
    }

    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        self
    }
}

impl ScriptKeys {
    /// The shared pieces of the scripts of a commitment owned by the holder
    /// of `owner_final`.
    pub(crate) fn new(
        owner_final: &CompressedPublicKey,
        other_final: &CompressedPublicKey,
        revocation_ripemd: [u8; 20],
        delay: Delay,
    ) -> Self {
        Self::from_bytes(owner_final.to_bytes(), other_final.to_bytes(), revocation_ripemd, delay)
    }

    /// [`ScriptKeys::new`] with the two keys serialized already.
    pub(crate) fn from_bytes(
        owner_final: [u8; 33],
        other_final: [u8; 33],
        revocation_ripemd: [u8; 20],
        delay: Delay,
    ) -> Self {
        ScriptKeys {
            owner_final,
            other_final,
            revocation_ripemd,
            delay: IntPush::new(delay.to_sequence().to_consensus_u32().into()),
        }
    }

    /// The owner's revocable output's script
    /// ([`super::commitment::to_self_script`]).
    pub(crate) fn revocable(&self) -> ScriptBuf {
        let mut bytes = Vec::with_capacity(MAX_SCRIPT);
        self.write_revocable(&mut bytes);
        ScriptBuf::from_bytes(bytes)
    }

    /// Appends [`ScriptKeys::revocable`]'s bytes to `out`.
    pub(crate) fn write_revocable(&self, out: &mut Vec<u8>) {
        out.reserve(MAX_SCRIPT);
        let mut w = Writer(out);
        w.op(OP_HASH160)
            .push(&self.revocation_ripemd)
            .op(OP_EQUAL)
            .op(OP_IF)
            .push(&self.other_final)
            .op(OP_ELSE)
            .raw(self.delay.as_bytes())
            .op(OP_CSV)
            .op(OP_DROP)
            .push(&self.owner_final)
            .op(OP_ENDIF)
            .op(OP_CHECKSIG);
    }

    /// The script of HTLC `h` in this commitment ([`super::htlc`]).
    pub(crate) fn htlc(&self, h: &HtlcSpec) -> ScriptBuf {
        self.htlc_with(h.direction, &h.r_hash160(), h.expiry)
    }

    pub(crate) fn htlc_with(
        &self,
        direction: HtlcDirection,
        r_ripemd: &[u8; 20],
        expiry: absolute::LockTime,
    ) -> ScriptBuf {
        let mut bytes = Vec::with_capacity(MAX_SCRIPT);
        self.write_htlc(direction, r_ripemd, expiry, &mut bytes);
        ScriptBuf::from_bytes(bytes)
    }

    /// Appends [`ScriptKeys::htlc_with`]'s bytes to `out`.
    pub(crate) fn write_htlc(
        &self,
        direction: HtlcDirection,
        r_ripemd: &[u8; 20],
        expiry: absolute::LockTime,
        out: &mut Vec<u8>,
    ) {
        let expiry = IntPush::new(expiry.to_consensus_u32().into());
        out.reserve(MAX_SCRIPT);
        let mut w = Writer(out);
        // OP_SIZE 32 OP_EQUALVERIFY OP_HASH160 OP_DUP <RIPEMD160(r_hash)> OP_EQUAL
        w.op(OP_SIZE).raw(IntPush::new(32).as_bytes()).op(OP_EQUALVERIFY).op(OP_HASH160).op(OP_DUP);
        w.push(r_ripemd).op(OP_EQUAL);
        match direction {
            HtlcDirection::Offered => {
                w.op(OP_SWAP)
                    .push(&self.revocation_ripemd)
                    .op(OP_EQUAL)
                    .op(OP_BOOLOR)
                    .op(OP_IF)
                    .push(&self.other_final)
                    .op(OP_ELSE)
                    .raw(expiry.as_bytes())
                    .op(OP_CLTV)
                    .raw(self.delay.as_bytes())
                    .op(OP_CSV)
                    .op(OP_2DROP)
                    .push(&self.owner_final)
                    .op(OP_ENDIF)
                    .op(OP_CHECKSIG);
            }
            HtlcDirection::Received => {
                w.op(OP_IF)
                    .raw(self.delay.as_bytes())
                    .op(OP_CSV)
                    .op(OP_2DROP)
                    .push(&self.owner_final)
                    .op(OP_ELSE)
                    .push(&self.revocation_ripemd)
                    .op(OP_EQUAL)
                    .op(OP_NOTIF)
                    .raw(expiry.as_bytes())
                    .op(OP_CLTV)
                    .op(OP_DROP)
                    .op(OP_ENDIF)
                    .push(&self.other_final)
                    .op(OP_ENDIF)
                    .op(OP_CHECKSIG);
            }
        }
    }
}
