//! The one-way channel's script (ruling E2): built byte for byte, and parsed
//! back by an exact inverse that refuses everything else.
//!
//! ```text
//! 63            OP_IF
//! <T>           a minimal CScriptNum push of the block height T
//! b1            OP_CHECKLOCKTIMEVERIFY
//! 75            OP_DROP
//! 21 <A:33>     the client's key
//! ac            OP_CHECKSIG
//! 67            OP_ELSE
//! 52            OP_2
//! 21 <A:33>
//! 21 <B:33>     the merchant's key
//! 52            OP_2
//! ae            OP_CHECKMULTISIG
//! 68            OP_ENDIF
//! ```
//!
//! `docs/oneway-transactions.md` specifies it, its outputs and its spends.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_CHECKSIG, OP_CLTV, OP_DROP, OP_ELSE, OP_ENDIF, OP_IF, OP_PUSHNUM_2};
use bitcoin::script::Builder;
use bitcoin::{absolute, CompressedPublicKey, Script, ScriptBuf};

/// How the channel output commits to the script (ruling E1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OutputKind {
    /// Pay-to-witness-script-hash: `00 20 SHA256(script)`. The default, for
    /// Bitcoin.
    P2wsh,
    /// Legacy pay-to-script-hash: `a9 14 HASH160(script) 87`. The seed's
    /// form, and the only one on chains without segwit (Dogecoin).
    P2sh,
}

/// Which of the two keys of the script.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Party {
    /// `<A>`, the client (payer).
    Client,
    /// `<B>`, the merchant (payee).
    Merchant,
}

impl core::fmt::Display for Party {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Party::Client => "client",
            Party::Merchant => "merchant",
        })
    }
}

/// The channel script of ruling E2: the client `A` alone after block height
/// `T`, or `A` and the merchant `B` together at any time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ChannelScript {
    client: CompressedPublicKey,
    merchant: CompressedPublicKey,
    locktime: absolute::Height,
}

/// The first block height that is not a height: from here on a lock time is
/// a Unix time (BIP 65), which ruling E4 refuses.
const LOCKTIME_THRESHOLD: i64 = 500_000_000;

impl ChannelScript {
    /// The script for client key `client`, merchant key `merchant` and the
    /// refund height `locktime`. The keys must differ and `locktime` must be
    /// at least 1 (E2); [`absolute::Height`] is already below 500,000,000.
    pub fn new(
        client: CompressedPublicKey,
        merchant: CompressedPublicKey,
        locktime: absolute::Height,
    ) -> Result<Self, ScriptError> {
        if client == merchant {
            return Err(ScriptError::SameKeys);
        }
        if locktime.to_consensus_u32() == 0 {
            return Err(ScriptError::ZeroLocktime);
        }
        Ok(ChannelScript { client, merchant, locktime })
    }

    /// `<A>`, the client's key.
    pub fn client(&self) -> CompressedPublicKey {
        self.client
    }

    /// `<B>`, the merchant's key.
    pub fn merchant(&self) -> CompressedPublicKey {
        self.merchant
    }

    /// `T`, the height from which the client alone can spend.
    pub fn locktime(&self) -> absolute::Height {
        self.locktime
    }

    /// The script, byte for byte as in E2. `T` is pushed as
    /// [`Builder::push_int`] does: `OP_1`..`OP_16` for 1 to 16, otherwise the
    /// shortest little-endian push (1 to 4 bytes for a height).
    pub fn to_script(&self) -> ScriptBuf {
        Builder::new()
            .push_opcode(OP_IF)
            .push_int(i64::from(self.locktime.to_consensus_u32()))
            .push_opcode(OP_CLTV)
            .push_opcode(OP_DROP)
            .push_slice(self.client.to_bytes())
            .push_opcode(OP_CHECKSIG)
            .push_opcode(OP_ELSE)
            .push_opcode(OP_PUSHNUM_2)
            .push_slice(self.client.to_bytes())
            .push_slice(self.merchant.to_bytes())
            .push_opcode(OP_PUSHNUM_2)
            .push_opcode(OP_CHECKMULTISIG)
            .push_opcode(OP_ENDIF)
            .into_script()
    }

    /// The output script paying to this script as `kind`.
    pub fn script_pubkey(&self, kind: OutputKind) -> ScriptBuf {
        let script = self.to_script();
        match kind {
            OutputKind::P2wsh => ScriptBuf::new_p2wsh(&script.wscript_hash()),
            OutputKind::P2sh => ScriptBuf::new_p2sh(&script.script_hash()),
        }
    }

    /// The exact inverse of [`ChannelScript::to_script`]: accepts a script
    /// only if it is, byte for byte, the E2 script of some valid keys and
    /// height, so `parse(s)?.to_script() == s`. Every other input is refused
    /// with the first rule it breaks, reading left to right; no input panics.
    pub fn parse(script: &Script) -> Result<Self, ScriptError> {
        let mut r = Reader { bytes: script.as_bytes(), pos: 0 };
        r.opcode(OP_IF.to_u8(), "OP_IF")?;
        let locktime = r.locktime()?;
        r.opcode(OP_CLTV.to_u8(), "OP_CHECKLOCKTIMEVERIFY")?;
        r.opcode(OP_DROP.to_u8(), "OP_DROP")?;
        let client = r.key(Party::Client)?;
        r.opcode(OP_CHECKSIG.to_u8(), "OP_CHECKSIG")?;
        r.opcode(OP_ELSE.to_u8(), "OP_ELSE")?;
        r.opcode(OP_PUSHNUM_2.to_u8(), "OP_2")?;
        let client_again = r.key(Party::Client)?;
        let merchant = r.key(Party::Merchant)?;
        r.opcode(OP_PUSHNUM_2.to_u8(), "OP_2")?;
        r.opcode(OP_CHECKMULTISIG.to_u8(), "OP_CHECKMULTISIG")?;
        r.opcode(OP_ENDIF.to_u8(), "OP_ENDIF")?;
        if r.pos < r.bytes.len() {
            return Err(ScriptError::TrailingBytes { position: r.pos, count: r.bytes.len() - r.pos });
        }
        if client != client_again {
            return Err(ScriptError::ClientKeyMismatch);
        }
        ChannelScript::new(client, merchant, locktime)
    }
}

/// A cursor over the script's bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn next(&mut self, expected: &'static str) -> Result<u8, ScriptError> {
        let byte = *self.bytes.get(self.pos).ok_or(ScriptError::Truncated { position: self.pos, expected })?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize, expected: &'static str) -> Result<&[u8], ScriptError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(ScriptError::Truncated { position: self.bytes.len(), expected })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn opcode(&mut self, op: u8, expected: &'static str) -> Result<(), ScriptError> {
        let position = self.pos;
        let found = self.next(expected)?;
        if found != op {
            return Err(ScriptError::UnexpectedOpcode { position, found, expected });
        }
        Ok(())
    }

    /// A 33-byte push of a valid compressed key.
    fn key(&mut self, party: Party) -> Result<CompressedPublicKey, ScriptError> {
        const EXPECTED: &str = "a 33-byte key push";
        let position = self.pos;
        let op = self.next(EXPECTED)?;
        match op {
            0x21 => {
                let bytes = self.take(33, EXPECTED)?;
                CompressedPublicKey::from_slice(bytes).map_err(|_| ScriptError::InvalidKey { party })
            }
            0x41 => {
                self.take(65, EXPECTED)?;
                Err(ScriptError::UncompressedKey { party })
            }
            0x01..=0x4b => {
                self.take(usize::from(op), EXPECTED)?;
                Err(ScriptError::KeyLength { party, len: usize::from(op) })
            }
            found => Err(ScriptError::UnexpectedOpcode { position, found, expected: EXPECTED }),
        }
    }

    /// `<T>`: a minimal CScriptNum push of a height, 1 <= T < 500,000,000.
    fn locktime(&mut self) -> Result<absolute::Height, ScriptError> {
        const EXPECTED: &str = "the locktime push";
        let position = self.pos;
        let op = self.next(EXPECTED)?;
        let value: i64 = match op {
            // OP_0: the empty push, zero.
            0x00 => return Err(ScriptError::ZeroLocktime),
            // OP_1NEGATE.
            0x4f => return Err(ScriptError::NegativeLocktime),
            // OP_1 .. OP_16.
            0x51..=0x60 => i64::from(op - 0x50),
            // A direct push of 1 to 4 bytes; OP_CHECKLOCKTIMEVERIFY reads up
            // to 5, and a minimal positive 5-byte number is already a time.
            0x01..=0x05 => {
                let data = self.take(usize::from(op), EXPECTED)?;
                decode_minimal_num(data)?
            }
            0x06..=0x4b => {
                self.take(usize::from(op), EXPECTED)?;
                return Err(ScriptError::LocktimeTooLong { len: usize::from(op) });
            }
            // OP_PUSHDATA1/2/4 are never minimal for a number of at most 5 bytes.
            0x4c..=0x4e => return Err(ScriptError::NonMinimalLocktime),
            found => return Err(ScriptError::UnexpectedOpcode { position, found, expected: EXPECTED }),
        };
        if value == 0 {
            return Err(ScriptError::ZeroLocktime);
        }
        if value < 0 {
            return Err(ScriptError::NegativeLocktime);
        }
        if value >= LOCKTIME_THRESHOLD {
            return Err(ScriptError::TimeLocktime(value));
        }
        let height = u32::try_from(value).ok().and_then(|v| absolute::Height::from_consensus(v).ok());
        height.ok_or(ScriptError::TimeLocktime(value))
    }
}

/// Decodes 1 to 5 bytes pushed by a direct push opcode as a CScriptNum,
/// refusing every encoding that `push_int` (and MINIMALDATA) would not
/// produce: a redundant top byte, and a single byte that `OP_1NEGATE` or
/// `OP_1`..`OP_16` should have pushed.
fn decode_minimal_num(data: &[u8]) -> Result<i64, ScriptError> {
    let Some((&last, rest)) = data.split_last() else {
        return Err(ScriptError::NonMinimalLocktime);
    };
    // The top byte only carries the sign: redundant unless the byte below
    // has its top bit set.
    if last & 0x7f == 0 && rest.last().is_none_or(|b| b & 0x80 == 0) {
        return Err(ScriptError::NonMinimalLocktime);
    }
    let mut magnitude: i64 = 0;
    for (i, b) in data.iter().enumerate() {
        let b = if i + 1 == data.len() { b & 0x7f } else { *b };
        magnitude |= i64::from(b) << (8 * i);
    }
    let value = if last & 0x80 != 0 { -magnitude } else { magnitude };
    if data.len() == 1 && (value == -1 || (1..=16).contains(&value)) {
        return Err(ScriptError::NonMinimalLocktime);
    }
    Ok(value)
}

/// Why a script is not the channel script of ruling E2.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The two keys are the same (E2: A != B).
    #[error("the client and merchant keys are the same (E2: A != B)")]
    SameKeys,
    /// The client's key in the multisig branch differs from the one in the
    /// refund branch.
    #[error("the client key of the 2-of-2 differs from the refund key (E2: both are A)")]
    ClientKeyMismatch,
    /// `T` is zero (E2: 1 <= T).
    #[error("locktime is zero (E2: 1 <= T < 500000000)")]
    ZeroLocktime,
    /// `T` is negative, so `OP_CHECKLOCKTIMEVERIFY` always fails.
    #[error("locktime is negative (E2: 1 <= T < 500000000)")]
    NegativeLocktime,
    /// `T` is a Unix time, not a block height (E4).
    #[error("locktime {0} is a time, not a block height (E2, E4: T < 500000000)")]
    TimeLocktime(i64),
    /// `T` is not pushed in its one minimal form (E2).
    #[error("locktime is not a minimal number push (E2)")]
    NonMinimalLocktime,
    /// `T` is pushed as a number longer than `OP_CHECKLOCKTIMEVERIFY` reads.
    #[error("locktime push of {len} bytes is longer than the 5 bytes OP_CHECKLOCKTIMEVERIFY reads (E2)")]
    LocktimeTooLong {
        /// The push's length.
        len: usize,
    },
    /// A key is pushed in its 65-byte uncompressed form (E2: 33 bytes).
    #[error("the {party} key is uncompressed (E2: 33-byte compressed keys)")]
    UncompressedKey {
        /// Whose key.
        party: Party,
    },
    /// A key push has another length (E2: 33 bytes).
    #[error("the {party} key push is {len} bytes, not 33 (E2)")]
    KeyLength {
        /// Whose key.
        party: Party,
        /// The push's length.
        len: usize,
    },
    /// A 33-byte key is not a valid compressed point.
    #[error("the {party} key is not a valid compressed public key (E2)")]
    InvalidKey {
        /// Whose key.
        party: Party,
    },
    /// A byte is not the opcode E2 has at that place.
    #[error("byte {position} is {found:#04x}, not {expected} (E2)")]
    UnexpectedOpcode {
        /// Its offset in the script.
        position: usize,
        /// The byte found.
        found: u8,
        /// What E2 has there.
        expected: &'static str,
    },
    /// The script ends (or a push runs past its end) before E2's does.
    #[error("script ends at byte {position}, before {expected} (E2)")]
    Truncated {
        /// Where it ends.
        position: usize,
        /// What E2 has there.
        expected: &'static str,
    },
    /// Bytes follow E2's final `OP_ENDIF`.
    #[error("{count} bytes follow OP_ENDIF at byte {position} (E2)")]
    TrailingBytes {
        /// Offset of the first extra byte.
        position: usize,
        /// How many there are.
        count: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_numbers() {
        assert_eq!(decode_minimal_num(&[0x11]), Ok(17));
        assert_eq!(decode_minimal_num(&[0x90, 0x00]), Ok(144));
        assert_eq!(decode_minimal_num(&[0x90]), Ok(-16));
        assert_eq!(decode_minimal_num(&[0x05]), Err(ScriptError::NonMinimalLocktime));
        assert_eq!(decode_minimal_num(&[0x81]), Err(ScriptError::NonMinimalLocktime));
        assert_eq!(decode_minimal_num(&[0x11, 0x00]), Err(ScriptError::NonMinimalLocktime));
        assert_eq!(decode_minimal_num(&[0x00]), Err(ScriptError::NonMinimalLocktime));
        assert_eq!(decode_minimal_num(&[0x80]), Err(ScriptError::NonMinimalLocktime));
        assert_eq!(decode_minimal_num(&[0xff, 0xff, 0xff, 0x7f]), Ok(0x7fff_ffff));
        assert_eq!(decode_minimal_num(&[0xff, 0xff, 0xff, 0xff, 0x00]), Ok(0xffff_ffff));
    }

    #[test]
    fn every_height_class_round_trips() {
        let a = CompressedPublicKey::from_slice(&[
            0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b, 0x07, 0x02,
            0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98,
        ])
        .unwrap();
        let mut b_bytes = a.to_bytes();
        b_bytes[0] = 0x03;
        let b = CompressedPublicKey::from_slice(&b_bytes).unwrap();
        for t in [1, 16, 17, 127, 128, 255, 32767, 32768, 8_388_607, 8_388_608, 499_999_999] {
            let s = ChannelScript::new(a, b, absolute::Height::from_consensus(t).unwrap()).unwrap();
            assert_eq!(ChannelScript::parse(&s.to_script()), Ok(s), "T = {t}");
        }
    }
}
