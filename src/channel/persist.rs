//! The channel's persistent state: a versioned, self-describing-enough
//! binary encoding of everything a [`Channel`] needs to continue after a
//! restart. Secret keys stay with the [`Signer`]; the shachain seed is part
//! of the state (it never leaves the node otherwise, R5-a).
//!
//! Layout: a magic `PCHN`, a format version byte, then the fields in a fixed
//! order (integers big-endian, byte strings length-prefixed with a u32).
//! [`Channel::restore`] checks every tag and length and refuses anything it
//! does not understand.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{absolute, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Transaction, Txid};

use super::journal::{self, Input};
use super::view::{Entry, Htlc, Side, Update, View};
use super::{
    Channel, ChannelConfig, CloseState, Direction, Event, FailBroadcast, FailOrigin, FailReason, Output, Phase,
    RemoteParams, Role, Watch,
};
use crate::journal::JournalError;
use crate::rules::Rule;
use crate::shachain::{RevocationSecrets, ShachainStore};
use crate::tx::funding::{FundingOutput, MAX_ANCHOR};
use crate::tx::Signer;
use crate::types::{Delay, HtlcMsat, MilliSats, Preimage};
use crate::wire;

const MAGIC: &[u8; 4] = b"PCHN";
const FORMAT: u8 = 5;
/// Every stored piece ends with its [`checksum`]: a flipped bit anywhere is
/// refused rather than trusted.
const CHECKSUM_LEN: usize = 8;

/// A 64-bit checksum of `body`, to catch damaged storage (not an
/// adversary: the store is the node's own).
///
/// The body is read as 8-byte words dealt in turn to four lanes; each lane
/// folds its words in through a bijection of its running value, and the
/// lanes, the length and the last partial word are folded together in
/// order at the end. So any change confined to one word, and so any single
/// flipped bit or byte, always changes the result; other damage goes
/// unnoticed with probability about 2^-64. The four lanes are independent
/// dependency chains, which the processor runs side by side: the state is
/// checksummed at every change, and one chain of multiplications was the
/// largest single cost of writing a batch of payments (SHA-256, before it,
/// cost more than everything else in the batch).
pub(crate) fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    // Distinct starting values, so that words trading lanes are noticed.
    let mut lanes = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];
    let mut blocks = body.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = mix(*lane ^ word(w));
        }
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for (lane, w) in lanes.iter_mut().zip(&mut words) {
        *lane = mix(*lane ^ word(w));
    }
    let mut h = start(body);
    for lane in lanes {
        h = mix(h ^ lane);
    }
    finish(h, words.remainder())
}

/// The checksum of the formats before this one (channel format 4, monitor,
/// tower, merchant and client format 1): the same fold through one lane.
/// It is computed only to tell a piece those versions wrote from a damaged
/// one.
fn checksum_single_lane(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut words = body.chunks_exact(8);
    let mut h = start(body);
    for w in &mut words {
        h = mix(h ^ word(w));
    }
    finish(h, words.remainder())
}

/// A bijection of u64: an xorshift, then a multiplication by an odd
/// constant (the 64-bit golden ratio).
fn mix(x: u64) -> u64 {
    (x ^ (x >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// Both checksums start from the body's length...
fn start(body: &[u8]) -> u64 {
    (body.len() as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// ...and end folding in the last partial word (`rest`, under 8 bytes),
/// then mixing once more.
fn finish(h: u64, rest: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let h = mix(mix(h ^ u64::from_le_bytes(tail)) ^ 0x94d0_49bb_1331_11eb);
    mix(h ^ (h >> 31)).to_le_bytes()
}

/// Why a persisted state could not be restored.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The bytes end early.
    #[error("channel state is truncated")]
    Truncated,
    /// Not a channel state, or a format this version does not know.
    #[error("not a channel state of a known format")]
    Format,
    /// A field holds a value no channel can have.
    #[error("channel state field {0} is invalid")]
    Invalid(&'static str),
    /// The signer's keys are not the ones the channel was made with.
    #[error("the signer's keys do not match the channel's")]
    WrongSigner,
    /// The checksum does not match: the bytes were damaged.
    #[error("channel state checksum mismatch: the stored bytes are damaged")]
    Checksum,
    /// Every field reads, but together they describe no channel this crate
    /// could have produced: a rule the channel relies on is broken.
    #[error("channel state is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// A journal entry is missing between the snapshot and a later entry.
    #[error("channel journal has a gap: entry {expected} is missing, found {found}")]
    Gap {
        /// The sequence number expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// A journal entry does not replay to what it recorded: it belongs to
    /// another channel or another state.
    #[error("channel journal entry {seq} does not replay")]
    Replay {
        /// The entry.
        seq: u64,
    },
}

pub(crate) struct W(pub(crate) Vec<u8>);

/// An output read back from a stored state.
pub(crate) enum Kept {
    Output(Output),
    Revoked { number: u64, preimage: Preimage, view: View },
}

/// The body of a stored piece sealed by [`W::seal`], once its checksum
/// matches.
pub(crate) fn unseal(bytes: &[u8]) -> Result<R<'_>, RestoreError> {
    if bytes.len() < CHECKSUM_LEN {
        return Err(RestoreError::Truncated);
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if checksum(body) != sum {
        // A piece sealed by an earlier version is not damage, and not a
        // torn write to drop: journal entries carry no format byte, so this
        // is how a store of another format is refused.
        if checksum_single_lane(body) == sum {
            return Err(RestoreError::Format);
        }
        return Err(RestoreError::Checksum);
    }
    Ok(R(body))
}

/// The body of a stored state that starts with `magic` and `format` (see
/// [`W::header`]) after them: [`RestoreError::Format`] for another kind or
/// version of state, [`RestoreError::Checksum`] for damaged bytes.
pub(crate) fn open<'a>(bytes: &'a [u8], magic: &[u8; 4], format: u8) -> Result<R<'a>, RestoreError> {
    if bytes.len() < magic.len() + 1 + CHECKSUM_LEN {
        return Err(RestoreError::Truncated);
    }
    if bytes[..4] != *magic || bytes[4] != format {
        return Err(RestoreError::Format);
    }
    let mut r = unseal(bytes)?;
    r.take(5)?;
    Ok(r)
}

impl W {
    /// A stored state's start: its magic and format version ([`open`]).
    pub(crate) fn header(magic: &[u8; 4], format: u8, capacity: usize) -> W {
        let mut w = W(Vec::with_capacity(capacity));
        w.raw(magic);
        w.u8(format);
        w
    }
    /// Ends a stored piece with the checksum of everything before it
    /// ([`unseal`]).
    pub(crate) fn seal(mut self) -> Vec<u8> {
        let sum = checksum(&self.0);
        self.raw(&sum);
        self.0
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("state pieces are far below 4 GiB"));
        self.raw(v);
    }
    pub(crate) fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            f(self, v);
        }
    }
    pub(crate) fn key(&mut self, k: &CompressedPublicKey) {
        self.raw(&k.to_bytes());
    }
    pub(crate) fn sig(&mut self, s: &Signature) {
        self.raw(&s.serialize_compact());
    }
    pub(crate) fn hash(&mut self, h: &sha256::Hash) {
        self.raw(h.as_byte_array());
    }
    pub(crate) fn delay(&mut self, d: Delay) {
        match d {
            Delay::Blocks(b) => {
                self.u8(0);
                self.u32(u32::from(b));
            }
            Delay::Seconds(s) => {
                self.u8(1);
                self.u32(s);
            }
        }
    }
    pub(crate) fn htlc(&mut self, h: &Htlc) {
        self.u8(h.offerer as u8);
        self.u64(h.id);
        self.u32(h.amount.to_u32());
        self.hash(&h.r_hash);
        self.u32(h.expiry.to_consensus_u32());
    }
    pub(crate) fn tx(&mut self, tx: &Transaction) {
        self.bytes(&serialize(tx));
    }
    pub(crate) fn outpoint(&mut self, o: &OutPoint) {
        self.raw(o.txid.as_byte_array());
        self.u32(o.vout);
    }
    pub(crate) fn funding(&mut self, f: &FundingOutput) {
        self.outpoint(&f.outpoint());
        self.u64(f.value().to_sat());
        self.key(&f.keys()[0]);
        self.key(&f.keys()[1]);
    }
    pub(crate) fn direction(&mut self, d: Direction) {
        self.u8(match d {
            Direction::Incoming => 0,
            Direction::Outgoing => 1,
        });
    }
    /// An output the application must see again after a restart (never a
    /// Send or Persist: messages are resent from `unacked`).
    pub(crate) fn output(&mut self, o: &Output) {
        match o {
            Output::FundAnchor { amount, script_pubkey } => {
                self.u8(0);
                self.u64(amount.to_sat());
                self.bytes(script_pubkey.as_bytes());
            }
            Output::Broadcast(tx) => {
                self.u8(1);
                self.tx(tx);
            }
            Output::Watch(Watch::AnchorDepth { txid, script_pubkey }) => {
                self.u8(2);
                self.raw(txid.as_byte_array());
                self.bytes(script_pubkey.as_bytes());
            }
            Output::Watch(Watch::AnchorSpend(o)) => {
                self.u8(3);
                self.outpoint(o);
            }
            Output::Event(e) => {
                self.u8(5);
                self.event(e);
            }
            // Kept as the view it was built from, and built again on
            // restore.
            Output::Revoked(r) => {
                self.u8(6);
                self.u64(r.number);
                self.raw(&r.preimage.0);
                self.view(&r.view);
            }
            Output::Send { .. } | Output::Persist { .. } | Output::Monitor(_) => {
                unreachable!("messages, states and monitor updates are not kept")
            }
        }
    }
    pub(crate) fn event(&mut self, e: &Event) {
        match e {
            Event::ChannelOpen { funding, capacity } => {
                self.u8(0);
                self.outpoint(funding);
                self.u64(capacity.to_sat());
            }
            Event::HtlcAdded { direction, id, amount, r_hash, expiry, route } => {
                self.u8(1);
                self.direction(*direction);
                self.u64(*id);
                self.u64(amount.to_msat());
                self.hash(r_hash);
                self.u32(expiry.to_consensus_u32());
                self.bytes(route);
            }
            Event::HtlcFulfilled { direction, id, amount, preimage } => {
                self.u8(2);
                self.direction(*direction);
                self.u64(*id);
                self.u64(amount.to_msat());
                self.raw(&preimage.0);
            }
            Event::HtlcFailed { direction, id, amount, reason } => {
                self.u8(3);
                self.direction(*direction);
                self.u64(*id);
                self.u64(amount.to_msat());
                self.bytes(reason);
            }
            Event::FeeChanged { side, fee_rate } => {
                self.u8(4);
                self.u8(*side as u8);
                self.u32(*fee_rate);
            }
            Event::ChannelClosing => self.u8(5),
            Event::ChannelClosed { tx } => {
                self.u8(6);
                self.tx(tx);
            }
            Event::ChannelFailed { reason, broadcast } => {
                self.u8(7);
                self.u8(reason.origin as u8);
                self.opt(reason.rule, |w, r| w.bytes(r.id().as_bytes()));
                self.bytes(reason.problem.as_bytes());
                self.u8(*broadcast as u8);
            }
        }
    }
    pub(crate) fn view(&mut self, v: &View) {
        self.u8(v.owner as u8);
        self.u64(v.to_local.to_msat());
        self.u64(v.to_remote.to_msat());
        self.u32(v.fee_rate);
        self.u32(v.htlcs.len() as u32);
        for h in v.htlcs.values() {
            self.htlc(h);
        }
    }
}

pub(crate) struct R<'a>(pub(crate) &'a [u8]);

impl<'a> R<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RestoreError> {
        if self.0.len() < n {
            return Err(RestoreError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, RestoreError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool, RestoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RestoreError::Invalid("bool")),
        }
    }
    pub(crate) fn u32(&mut self) -> Result<u32, RestoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, RestoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// An amount of at most 21 million bitcoin.
    pub(crate) fn amount(&mut self) -> Result<Amount, RestoreError> {
        let a = Amount::from_sat(self.u64()?);
        if a > Amount::MAX_MONEY {
            return Err(RestoreError::Invalid("amount above 21 million bitcoin"));
        }
        Ok(a)
    }
    /// Every byte was read.
    pub(crate) fn done(&self) -> Result<(), RestoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RestoreError::Invalid("trailing bytes"))
        }
    }
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, RestoreError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RestoreError>,
    ) -> Result<Option<T>, RestoreError> {
        if self.bool()? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }
    pub(crate) fn key(&mut self) -> Result<CompressedPublicKey, RestoreError> {
        CompressedPublicKey::from_slice(&self.array::<33>()?).map_err(|_| RestoreError::Invalid("public key"))
    }
    pub(crate) fn sig(&mut self) -> Result<Signature, RestoreError> {
        Signature::from_compact(&self.array::<64>()?).map_err(|_| RestoreError::Invalid("signature"))
    }
    pub(crate) fn hash(&mut self) -> Result<sha256::Hash, RestoreError> {
        Ok(sha256::Hash::from_byte_array(self.array()?))
    }
    pub(crate) fn side(&mut self) -> Result<Side, RestoreError> {
        match self.u8()? {
            0 => Ok(Side::Local),
            1 => Ok(Side::Remote),
            _ => Err(RestoreError::Invalid("side")),
        }
    }
    pub(crate) fn delay(&mut self) -> Result<Delay, RestoreError> {
        match (self.u8()?, self.u32()?) {
            (0, b) => u16::try_from(b).map(Delay::Blocks).map_err(|_| RestoreError::Invalid("delay")),
            (1, s) => Delay::from_seconds(s).ok_or(RestoreError::Invalid("delay")),
            _ => Err(RestoreError::Invalid("delay")),
        }
    }
    pub(crate) fn htlc(&mut self) -> Result<Htlc, RestoreError> {
        Ok(Htlc {
            offerer: self.side()?,
            id: self.u64()?,
            amount: HtlcMsat::from_msat(self.u32()?),
            r_hash: self.hash()?,
            expiry: absolute::LockTime::from_consensus(self.u32()?),
        })
    }
    pub(crate) fn tx(&mut self) -> Result<Transaction, RestoreError> {
        deserialize(&self.bytes()?).map_err(|_| RestoreError::Invalid("transaction"))
    }
    pub(crate) fn outpoint(&mut self) -> Result<OutPoint, RestoreError> {
        Ok(OutPoint { txid: Txid::from_byte_array(self.array()?), vout: self.u32()? })
    }
    pub(crate) fn funding(&mut self) -> Result<FundingOutput, RestoreError> {
        let outpoint = self.outpoint()?;
        let value = Amount::from_sat(self.u64()?);
        let (a, b) = (self.key()?, self.key()?);
        Ok(FundingOutput::new(outpoint, value, &a, &b))
    }
    pub(crate) fn direction(&mut self) -> Result<Direction, RestoreError> {
        match self.u8()? {
            0 => Ok(Direction::Incoming),
            1 => Ok(Direction::Outgoing),
            _ => Err(RestoreError::Invalid("direction")),
        }
    }
    /// An output kept by [`W::output`]; a revoked commitment comes back as
    /// what it is built from.
    pub(crate) fn output(&mut self) -> Result<Kept, RestoreError> {
        Ok(Kept::Output(match self.u8()? {
            0 => Output::FundAnchor {
                amount: Amount::from_sat(self.u64()?),
                script_pubkey: ScriptBuf::from_bytes(self.bytes()?),
            },
            1 => Output::Broadcast(self.tx()?),
            2 => Output::Watch(Watch::AnchorDepth {
                txid: Txid::from_byte_array(self.array()?),
                script_pubkey: ScriptBuf::from_bytes(self.bytes()?),
            }),
            3 => Output::Watch(Watch::AnchorSpend(self.outpoint()?)),
            5 => Output::Event(self.event()?),
            6 => {
                return Ok(Kept::Revoked { number: self.u64()?, preimage: Preimage(self.array()?), view: self.view()? })
            }
            _ => return Err(RestoreError::Invalid("output")),
        }))
    }
    pub(crate) fn event(&mut self) -> Result<Event, RestoreError> {
        Ok(match self.u8()? {
            0 => Event::ChannelOpen { funding: self.outpoint()?, capacity: Amount::from_sat(self.u64()?) },
            1 => Event::HtlcAdded {
                direction: self.direction()?,
                id: self.u64()?,
                amount: MilliSats::from_msat(self.u64()?),
                r_hash: self.hash()?,
                expiry: absolute::LockTime::from_consensus(self.u32()?),
                route: self.bytes()?,
            },
            2 => Event::HtlcFulfilled {
                direction: self.direction()?,
                id: self.u64()?,
                amount: MilliSats::from_msat(self.u64()?),
                preimage: Preimage(self.array()?),
            },
            3 => Event::HtlcFailed {
                direction: self.direction()?,
                id: self.u64()?,
                amount: MilliSats::from_msat(self.u64()?),
                reason: self.bytes()?,
            },
            4 => Event::FeeChanged { side: self.side()?, fee_rate: self.u32()? },
            5 => Event::ChannelClosing,
            6 => Event::ChannelClosed { tx: self.tx()? },
            7 => {
                let origin = match self.u8()? {
                    0 => FailOrigin::PeerViolation,
                    1 => FailOrigin::PeerError,
                    2 => FailOrigin::Chain,
                    3 => FailOrigin::Local,
                    _ => return Err(RestoreError::Invalid("failure origin")),
                };
                let rule = self.opt(|r| {
                    let text = r.bytes()?;
                    core::str::from_utf8(&text).ok().and_then(Rule::from_id).ok_or(RestoreError::Invalid("rule"))
                })?;
                let problem = String::from_utf8(self.bytes()?).map_err(|_| RestoreError::Invalid("problem"))?;
                let broadcast = match self.u8()? {
                    0 => FailBroadcast::Nothing,
                    1 => FailBroadcast::CommitmentNoHtlcs,
                    2 => FailBroadcast::Close,
                    3 => FailBroadcast::Commitment,
                    4 => FailBroadcast::AnchorSpent,
                    _ => return Err(RestoreError::Invalid("failure broadcast")),
                };
                Event::ChannelFailed { reason: FailReason { origin, rule, problem }, broadcast }
            }
            _ => return Err(RestoreError::Invalid("event")),
        })
    }
    pub(crate) fn view(&mut self) -> Result<View, RestoreError> {
        let owner = self.side()?;
        let to_local = MilliSats::from_msat(self.u64()?);
        let to_remote = MilliSats::from_msat(self.u64()?);
        let mut v = View::new(owner, to_local, to_remote, self.u32()?);
        for _ in 0..self.u32()? {
            let h = self.htlc()?;
            if v.htlcs.insert((h.offerer, h.id), h).is_some() {
                return Err(RestoreError::Invalid("duplicate HTLC"));
            }
        }
        v.recount();
        Ok(v)
    }
}

fn phase_code(p: Phase) -> u8 {
    match p {
        Phase::AwaitOpen => 0,
        Phase::AwaitAnchorTx => 1,
        Phase::AwaitOpenAnchor => 2,
        Phase::AwaitCommitSig => 3,
        Phase::AwaitDepth => 4,
        Phase::Normal => 5,
        Phase::Closed => 6,
        Phase::Failed => 7,
    }
}

fn phase_of(code: u8) -> Result<Phase, RestoreError> {
    Ok(match code {
        0 => Phase::AwaitOpen,
        1 => Phase::AwaitAnchorTx,
        2 => Phase::AwaitOpenAnchor,
        3 => Phase::AwaitCommitSig,
        4 => Phase::AwaitDepth,
        5 => Phase::Normal,
        6 => Phase::Closed,
        7 => Phase::Failed,
        _ => return Err(RestoreError::Invalid("phase")),
    })
}

impl Channel {
    /// The whole state, as [`Output::Persist`]
    /// carries it.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.encode(true)
    }

    /// The state without what awaits release (which depends on when the
    /// caller confirmed writes, not on the inputs): two channels that saw
    /// the same inputs encode the same.
    #[cfg(feature = "std")]
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        self.encode(false)
    }

    fn encode(&self, outputs: bool) -> Vec<u8> {
        let mut w = W::header(MAGIC, FORMAT, self.state_len_hint.max(1024));
        let c = &self.config;
        w.u32(u32::from(c.max_delay_blocks));
        w.u32(c.max_delay_seconds);
        w.u32(c.max_min_depth);
        w.u32(c.min_fee_rate);
        w.u32(c.max_fee_rate);
        w.u64(c.min_anchor.to_sat());
        w.delay(c.delay);
        w.u32(c.min_depth);
        w.u32(c.fee_rate);
        w.u32(c.deadline_margin_blocks);
        w.u32(c.open_complete_timeout_blocks);
        w.u32(c.close_fee_rate);
        w.u32(c.max_htlcs as u32);
        w.u32(c.min_relay_fee_rate);
        w.bool(c.export_revoked);
        w.u8(self.role as u8);
        w.raw(&self.secrets.seed());
        w.key(&self.signer.public_key(crate::tx::KeyRole::Commit));
        w.u64(self.capacity.to_sat());
        w.u8(phase_code(self.phase));
        w.opt(self.remote, |w, r| {
            w.key(&r.commit_key);
            w.key(&r.final_key);
            w.delay(r.delay);
            w.u32(r.min_depth);
        });
        w.opt(self.funding.as_ref(), |w, f| {
            w.raw(f.outpoint().txid.as_byte_array());
            w.u32(f.outpoint().vout);
            w.u64(f.value().to_sat());
            w.key(&f.keys()[0]);
            w.key(&f.keys()[1]);
        });
        w.opt(self.anchor_tx.as_ref(), |w, tx| w.bytes(&serialize(tx)));
        w.bool(self.anchor_broadcast);
        w.u32(self.anchor_depth);
        w.bool(self.anchor_checked);
        w.opt(self.sent_complete_at, W::u32);
        w.bool(self.received_complete);
        w.u64(self.our_num);
        w.view(&self.our_view);
        w.opt(self.our_sig.as_ref(), W::sig);
        w.u64(self.their_num);
        w.view(&self.their_view);
        w.hash(&self.their_hash);
        w.opt(self.their_next_hash.as_ref(), W::hash);
        w.opt(self.their_prev.as_ref(), |w, (v, h)| {
            w.view(v);
            w.hash(h);
        });
        w.bytes(&self.their_secrets.to_bytes());
        w.view(&self.staged_ours);
        w.view(&self.staged_theirs);
        w.u32(self.log.len() as u32);
        for e in &self.log {
            w.u8(e.from as u8);
            w.u64(e.msg_no);
            match &e.update {
                Update::Add(h) => {
                    w.u8(0);
                    w.htlc(h);
                }
                Update::Fulfill { id, r } => {
                    w.u8(1);
                    w.u64(*id);
                    w.raw(&r.0);
                }
                Update::Fail { id } => {
                    w.u8(2);
                    w.u64(*id);
                }
                Update::Fee(rate) => {
                    w.u8(3);
                    w.u32(*rate);
                }
            }
            w.bytes(&e.blob);
            w.opt(e.removed.as_ref(), W::htlc);
            w.u8(u8::from(e.in_ours) | u8::from(e.in_theirs) << 1 | u8::from(e.theirs_locked) << 2);
        }
        w.u64(self.next_htlc_id);
        w.u32(self.deadlines.len() as u32);
        for (id, d) in &self.deadlines {
            w.u64(*id);
            w.u32(d.to_consensus_u32());
        }
        w.u32(self.must_fail.len() as u32);
        for (id, reason) in &self.must_fail {
            w.u64(*id);
            w.bytes(reason);
        }
        w.bool(self.ever_had_htlc);
        w.bool(self.close.sent_clearing);
        w.u64(self.close.clearing_msg_no);
        w.bool(self.close.clearing_committed);
        w.bool(self.close.received_clearing);
        w.opt(self.close.our_fee, |w, f| w.u64(f.to_sat()));
        w.u64(self.close.our_msg_no);
        w.u32(self.close.signed_fees.len() as u32);
        for f in &self.close.signed_fees {
            w.u64(f.to_sat());
        }
        for their in [&self.close.their, &self.close.their_relayable] {
            w.opt(their.as_ref(), |w, (f, s)| {
                w.u64(f.to_sat());
                w.sig(s);
            });
        }
        w.u64(self.sent);
        w.u64(self.processed);
        w.u64(self.peer_ack);
        w.u64(self.last_in_ack);
        w.u32(self.unacked.len() as u32);
        for (n, ack, bytes) in &self.unacked {
            w.u64(*n);
            w.u64(*ack);
            w.bytes(bytes);
        }
        w.u32(self.height);
        w.u32(self.time);
        w.opt(self.fee_estimate, W::u32);
        // What must reach the application at least once (ADR 0003): every
        // output but messages not yet released, from this change (still
        // pending) and from earlier ones whose writes may still be in flight
        // (gated), since a crash may keep this state and lose those.
        let unreleased =
            || self.gated.iter().map(|(_, o)| o).chain(&self.pending).filter(|o| !matches!(o, Output::Send { .. }));
        if outputs {
            w.u32(unreleased().count() as u32);
            for o in unreleased() {
                w.output(o);
            }
        }
        w.u64(self.version);
        w.seal()
    }

    /// The whole state now, as a snapshot: [`restore`](Self::restore) takes
    /// it with no entries (or with the entries written after it). For a
    /// backup, or to start a store afresh: once it is stored, every entry up
    /// to [`version`](Self::version) may be dropped.
    pub fn snapshot(&self) -> Vec<u8> {
        self.to_bytes()
    }

    /// The sequence number of the last change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Continues a channel from its store: the last snapshot an
    /// [`Output::Persist`] carried and the journal entries stored after it,
    /// in order, with the signer holding its keys. Entries the snapshot
    /// already holds are skipped; a damaged last entry is a write that never
    /// completed and is dropped (nothing was released on it); any other
    /// damage or a missing entry is refused. Each entry is replayed: the
    /// restored channel is the one that wrote the last entry.
    ///
    /// Delivery is at least once: every broadcast, watch request and event
    /// that had not been released when the last entry was written (from its
    /// own change and from earlier ones whose writes were still in flight)
    /// is emitted again, since a crash may have come before they were
    /// handled (handle them idempotently). Messages are not: the restored
    /// channel has no transport; call [`Channel::new_transport`] once one is
    /// up, and what the peer has not acknowledged is resent after its
    /// `authenticate`. Sequence numbers continue from the last entry's.
    ///
    /// A snapshot or entry is refused if its checksum does not match
    /// ([`RestoreError::Checksum`]), if the snapshot breaks any invariant
    /// the channel relies on ([`RestoreError::Inconsistent`]), or if an
    /// entry does not replay to what it recorded ([`RestoreError::Replay`]):
    /// no stored byte can make the channel panic.
    pub fn restore<'a>(
        snapshot: &[u8],
        entries: impl IntoIterator<Item = &'a [u8]>,
        signer: Arc<dyn Signer + Send + Sync>,
    ) -> Result<Channel, RestoreError> {
        let mut ch = Channel::from_snapshot(snapshot, signer)?;
        let journal = crate::journal::entries_after(ch.version, entries).map_err(|e| match e {
            JournalError::Damaged(e) => e,
            JournalError::Gap { expected, found } => RestoreError::Gap { expected, found },
        })?;
        ch.compaction.snapshotted(snapshot.len());
        ch.state_len_hint = snapshot.len();
        ch.htlcs_at_snapshot = ch.htlc_entries();
        if journal.torn {
            ch.compaction.force();
        }
        let entries = journal.entries;
        if entries.is_empty() {
            return Ok(ch);
        }
        let at_snapshot = (ch.version, core::mem::take(&mut ch.gated));
        ch.replaying = true;
        let mut unreleased_from = 0;
        for (seq, mut r) in entries {
            let len = 8 + r.0.len() + 8;
            let header = journal::Header { seq, unreleased_from: r.u64()?, sent: r.u64()?, processed: r.u64()? };
            let count = u16::from_be_bytes(r.array()?);
            let mut signatures = VecDeque::with_capacity(usize::from(count).min(16));
            for _ in 0..count {
                signatures.push_back(match r.u8()? {
                    1 => Ok(r.sig()?),
                    0 => Err(crate::tx::SignerError {
                        reason: String::from_utf8(r.bytes()?).map_err(|_| RestoreError::Invalid("signer error"))?,
                    }),
                    _ => return Err(RestoreError::Invalid("signer call")),
                });
            }
            let input = Input::decode(&mut r)?;
            r.done()?;
            {
                let tape = ch.tape_mut();
                tape.replaying = true;
                tape.replay = signatures;
            }
            // The input changed the state when it was written: so it does
            // again. A command's refusal is part of what it did (a commit
            // that fails the channel), so it is not an error here.
            ch.dirty = true;
            let _ = ch.apply(input);
            ch.flush();
            // Every signer call of the step was made again, from the tape,
            // and no other.
            let diverged = {
                let tape = ch.tape_mut();
                tape.replaying = false;
                !tape.replay.is_empty() || core::mem::take(&mut tape.overrun)
            };
            if diverged || (ch.version, ch.sent, ch.processed) != (header.seq, header.sent, header.processed) {
                return Err(RestoreError::Replay { seq });
            }
            ch.compaction.appended(len);
            unreleased_from = header.unreleased_from;
        }
        ch.replaying = false;
        // At least once: what was not released when the last entry was
        // written comes out again, from the snapshot's list if it reaches
        // back that far. Each keeps its own change's number, so that the
        // next entry's `unreleased_from` still reaches back to it.
        let replayed = core::mem::take(&mut ch.gated);
        let (snapshot_version, snapshot_outputs) = at_snapshot;
        if unreleased_from <= snapshot_version {
            ch.gated.extend(snapshot_outputs.into_items());
        }
        ch.gated.extend(replayed.into_items().filter(|(v, _)| *v >= unreleased_from));
        ch.processed_at.clear();
        ch.durable_processed = ch.processed;
        ch.in_no = ch.processed;
        ch.durable = ch.version;
        // The snapshot was checked; each entry is an input the live channel
        // handled the same way, which no input can make inconsistent. The
        // end is checked all the same.
        ch.check_invariants().map_err(RestoreError::Inconsistent)?;
        Ok(ch)
    }

    fn from_snapshot(state: &[u8], signer: Arc<dyn Signer + Send + Sync>) -> Result<Channel, RestoreError> {
        let mut r = open(state, MAGIC, FORMAT)?;
        let config = ChannelConfig {
            max_delay_blocks: u16::try_from(r.u32()?).map_err(|_| RestoreError::Invalid("max_delay_blocks"))?,
            max_delay_seconds: r.u32()?,
            max_min_depth: r.u32()?,
            min_fee_rate: r.u32()?,
            max_fee_rate: r.u32()?,
            min_anchor: Amount::from_sat(r.u64()?),
            delay: r.delay()?,
            min_depth: r.u32()?,
            fee_rate: r.u32()?,
            deadline_margin_blocks: r.u32()?,
            open_complete_timeout_blocks: r.u32()?,
            close_fee_rate: r.u32()?,
            max_htlcs: r.u32()? as usize,
            min_relay_fee_rate: r.u32()?,
            export_revoked: r.bool()?,
        };
        let role = match r.u8()? {
            0 => Role::Funder,
            1 => Role::Fundee,
            _ => return Err(RestoreError::Invalid("role")),
        };
        let secrets = RevocationSecrets::new(r.array()?);
        if r.key()? != signer.public_key(crate::tx::KeyRole::Commit) {
            return Err(RestoreError::WrongSigner);
        }
        let capacity = Amount::from_sat(r.u64()?);
        let phase = phase_of(r.u8()?)?;
        let our_commit = signer.public_key(crate::tx::KeyRole::Commit);
        let remote = r.opt(|r| Ok(RemoteParams::new(r.key()?, r.key()?, r.delay()?, r.u32()?, &our_commit, role)))?;
        let funding = r.opt(|r| {
            let txid = Txid::from_byte_array(r.array()?);
            let vout = r.u32()?;
            let value = Amount::from_sat(r.u64()?);
            let (a, b) = (r.key()?, r.key()?);
            Ok(FundingOutput::new(OutPoint { txid, vout }, value, &a, &b))
        })?;
        let anchor_tx =
            r.opt(|r| deserialize::<Transaction>(&r.bytes()?).map_err(|_| RestoreError::Invalid("anchor")))?;
        let anchor_broadcast = r.bool()?;
        let anchor_depth = r.u32()?;
        let anchor_checked = r.bool()?;
        let sent_complete_at = r.opt(R::u32)?;
        let received_complete = r.bool()?;
        let our_num = r.u64()?;
        let our_view = r.view()?;
        let our_sig = r.opt(R::sig)?;
        let their_num = r.u64()?;
        let their_view = r.view()?;
        let their_hash = r.hash()?;
        let their_next_hash = r.opt(R::hash)?;
        let their_prev = r.opt(|r| Ok((r.view()?, r.hash()?)))?;
        let their_secrets =
            ShachainStore::from_bytes(&r.bytes()?).map_err(|_| RestoreError::Invalid("shachain store"))?;
        let staged_ours = r.view()?;
        let staged_theirs = r.view()?;
        let mut log = Vec::new();
        for _ in 0..r.u32()? {
            let from = r.side()?;
            let msg_no = r.u64()?;
            let update = match r.u8()? {
                0 => Update::Add(r.htlc()?),
                1 => Update::Fulfill { id: r.u64()?, r: Preimage(r.array()?) },
                2 => Update::Fail { id: r.u64()? },
                3 => Update::Fee(r.u32()?),
                _ => return Err(RestoreError::Invalid("update")),
            };
            let blob = r.bytes()?;
            let removed = r.opt(R::htlc)?;
            let flags = r.u8()?;
            if flags > 7 {
                return Err(RestoreError::Invalid("update flags"));
            }
            log.push(Entry {
                from,
                msg_no,
                update,
                blob,
                removed,
                in_ours: flags & 1 != 0,
                in_theirs: flags & 2 != 0,
                theirs_locked: flags & 4 != 0,
            });
        }
        let next_htlc_id = r.u64()?;
        let mut deadlines = BTreeMap::new();
        for _ in 0..r.u32()? {
            deadlines.insert(r.u64()?, absolute::LockTime::from_consensus(r.u32()?));
        }
        let mut must_fail = BTreeMap::new();
        for _ in 0..r.u32()? {
            must_fail.insert(r.u64()?, r.bytes()?);
        }
        let ever_had_htlc = r.bool()?;
        let close = CloseState {
            sent_clearing: r.bool()?,
            clearing_msg_no: r.u64()?,
            clearing_committed: r.bool()?,
            received_clearing: r.bool()?,
            our_fee: r.opt(|r| r.u64().map(Amount::from_sat))?,
            our_msg_no: r.u64()?,
            signed_fees: {
                let mut fees = Vec::new();
                for _ in 0..r.u32()? {
                    fees.push(Amount::from_sat(r.u64()?));
                }
                fees
            },
            their: r.opt(|r| Ok((Amount::from_sat(r.u64()?), r.sig()?)))?,
            their_relayable: r.opt(|r| Ok((Amount::from_sat(r.u64()?), r.sig()?)))?,
        };
        let sent = r.u64()?;
        let processed = r.u64()?;
        let peer_ack = r.u64()?;
        let last_in_ack = r.u64()?;
        let mut unacked = VecDeque::new();
        for _ in 0..r.u32()? {
            let (n, ack) = (r.u64()?, r.u64()?);
            let bytes = r.bytes()?;
            // Checked now so that a resend can never meet an undecodable one.
            wire::decode(&bytes).map_err(|_| RestoreError::Invalid("unacknowledged message"))?;
            unacked.push_back((n, ack, bytes));
        }
        let height = r.u32()?;
        let time = r.u32()?;
        let fee_estimate = r.opt(R::u32)?;
        let mut unreleased = Vec::new();
        for _ in 0..r.u32()? {
            unreleased.push(r.output()?);
        }
        let version = r.u64()?;
        r.done()?;
        let kept = unreleased;
        let preimage_cache = super::PreimageCache::new(super::OurRevocations::new(&secrets));
        let our_final_hash = signer.public_key(crate::tx::KeyRole::Final).wpubkey_hash();
        let mut ch = Channel {
            signer,
            config,
            role,
            secrets,
            capacity,
            phase,
            remote,
            our_final_hash,
            precomputed: None,
            funding: None,
            anchor_tx,
            anchor_broadcast,
            anchor_depth,
            anchor_checked,
            sent_complete_at,
            received_complete,
            our_num,
            our_view,
            our_sig,
            their_num,
            their_view,
            their_hash,
            their_next_hash,
            their_prev,
            their_txid: None,
            their_prev_txid: None,
            their_secrets,
            staged_ours,
            staged_theirs,
            log,
            hash160s: BTreeMap::new(),
            next_htlc_id,
            deadlines,
            must_fail,
            ever_had_htlc,
            close,
            sent,
            processed,
            peer_ack,
            last_in_ack,
            unacked,
            height,
            time,
            fee_estimate,
            preimage_cache,
            state_len_hint: 0,
            htlcs_at_snapshot: 0,
            htlcs_at_compaction: 0,
            input: Vec::new(),
            replaying: false,
            tape: Default::default(),
            compaction: Default::default(),
            processed_at: VecDeque::new(),
            durable_processed: processed,
            version,
            durable: version,
            dirty: false,
            persist: VecDeque::new(),
            // At least once: what the last state change emitted may not have
            // been handled before the restart, so it comes out again.
            gated: super::Gated::default(),
            link: super::Link::Down,
            in_no: processed,
            pending: Vec::new(),
            monitor_pending: Vec::new(),
        };
        if let Some(funding) = funding {
            ch.set_funding(funding);
        }
        ch.check_invariants().map_err(RestoreError::Inconsistent)?;
        // At least once: what the last state change emitted may not have
        // been handled before the restart, so it comes out again.
        for k in kept {
            let output = match k {
                Kept::Output(o) => o,
                Kept::Revoked { number, preimage, view } => {
                    let commitment = ch
                        .build_theirs(&view, preimage.hash(), number)
                        .ok_or(RestoreError::Inconsistent("a revoked commitment kept for release does not build"))?;
                    Output::Revoked(Box::new(crate::tower::RevokedCommitment { number, commitment, preimage, view }))
                }
            };
            ch.gated.push_back((version, output));
        }
        // The staged views first: under an id the peer reused (R3.2-e), the
        // newer HTLC is the one the coming commitments hold.
        let prev = ch.their_prev.as_ref().map(|(v, _)| v);
        let views = [Some(&ch.staged_ours), Some(&ch.staged_theirs), Some(&ch.our_view), Some(&ch.their_view), prev];
        let htlcs: Vec<Htlc> = views.into_iter().flatten().flat_map(|v| v.htlcs().copied()).collect();
        for h in htlcs {
            ch.hash160s
                .entry((h.offerer, h.id))
                .or_insert_with(|| (h.r_hash, crate::tx::commitment::ripemd_of(&h.r_hash)));
        }
        // Maps read key by key are half full: rebuilt whole.
        ch.compact();
        Ok(ch)
    }

    /// Every rule the channel's code relies on without checking it again:
    /// what `restore` refuses to continue from. A state the channel wrote
    /// always passes (the fault harness restores at every step).
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        fn ensure(ok: bool, what: &'static str) -> Result<(), &'static str> {
            if ok {
                Ok(())
            } else {
                Err(what)
            }
        }
        self.config.validate().map_err(|_| "configuration")?;
        ensure(self.capacity <= MAX_ANCHOR, "capacity above the anchor limit")?;
        ensure(self.version > 0, "version")?;
        let terminal = matches!(self.phase, Phase::Closed | Phase::Failed);
        let open = matches!(self.phase, Phase::AwaitDepth | Phase::Normal);
        let funder_only = matches!(self.phase, Phase::AwaitAnchorTx | Phase::AwaitCommitSig);
        ensure(!funder_only || self.role == Role::Funder, "phase of the funder in a fundee")?;
        ensure(self.phase != Phase::AwaitOpenAnchor || self.role == Role::Fundee, "phase of the fundee in a funder")?;
        ensure(self.phase == Phase::AwaitOpen || terminal || self.remote.is_some(), "peer parameters missing")?;
        let funded = open || self.phase == Phase::AwaitCommitSig;
        ensure(!funded || self.funding.is_some(), "anchor missing")?;
        // What is derived from the anchor and the peer's keys is there
        // whenever they are (`lay_out` checks its keys in debug builds).
        let derivable = self.funding.is_some() && self.remote.is_some();
        ensure(self.precomputed.is_some() == derivable, "what is derived from the anchor")?;
        ensure(self.phase != Phase::AwaitCommitSig || self.anchor_tx.is_some(), "anchor transaction missing")?;
        ensure(!open || self.our_sig.is_some(), "the peer's signature on our commitment is missing")?;
        if open {
            ensure(self.their_next_hash.is_some() != self.their_prev.is_some(), "next revocation hash")?;
        }
        // Commitment numbers stay within the shachain's 48 bits, and the
        // peer's revealed preimages are exactly those of its revoked
        // commitments, so its next revocation is the one expected (R5-b).
        const MAX_COMMITMENTS: u64 = 1 << 48;
        ensure(self.our_num < MAX_COMMITMENTS && self.their_num < MAX_COMMITMENTS, "commitment number")?;
        let awaiting = u64::from(self.their_prev.is_some());
        ensure(self.their_num >= awaiting, "a revocation awaited for no commitment")?;
        let revoked = self.their_num - awaiting;
        ensure(
            self.their_secrets.next_index() == Some(RevocationSecrets::index(revoked)),
            "revealed preimages do not match the revoked commitments",
        )?;
        if matches!(self.phase, Phase::AwaitAnchorTx | Phase::AwaitCommitSig) {
            self.check_initial_fees(self.capacity).map_err(|_| "the anchor does not pay the initial fees")?;
        }
        if let (Phase::AwaitCommitSig, Some(funding)) = (self.phase, &self.funding) {
            self.build_ours_with(funding, &self.our_view, 0).ok_or("our initial commitment does not build")?;
            self.build_theirs_with(funding, &self.their_view, self.their_hash, 0)
                .ok_or("the peer's initial commitment does not build")?;
        }
        if let (Some(f), Some(remote)) = (&self.funding, &self.remote) {
            ensure(f.value() == self.capacity, "anchor value differs from the capacity")?;
            let ours = self.signer.public_key(crate::tx::KeyRole::Commit);
            let keys = f.keys();
            ensure(
                (keys[0] == ours && keys[1] == remote.commit_key) || (keys[1] == ours && keys[0] == remote.commit_key),
                "anchor keys",
            )?;
        }
        // Balances: every view holds the whole capacity (or nothing, before
        // the anchor is known), and nothing is negative by construction.
        // A channel that failed while opening may hold empty views.
        let full = self.funding.is_some()
            || matches!(self.phase, Phase::AwaitAnchorTx | Phase::AwaitCommitSig | Phase::AwaitDepth | Phase::Normal);
        let capacity = MilliSats::from_sat(self.capacity).ok_or("capacity")?;
        let mut views = vec![
            (&self.our_view, Side::Local),
            (&self.their_view, Side::Remote),
            (&self.staged_ours, Side::Local),
            (&self.staged_theirs, Side::Remote),
        ];
        if let Some((v, _)) = &self.their_prev {
            views.push((v, Side::Remote));
        }
        for (v, owner) in &views {
            ensure(v.owner == *owner, "view owner")?;
            ensure(v.fee_rate > 0, "zero fee rate")?;
            let mut total = v.to_local.checked_add(v.to_remote).ok_or("balances overflow")?;
            for h in v.htlcs() {
                ensure(h.amount.to_u32() > 0, "HTLC of zero")?;
                ensure(h.offerer == Side::Remote || h.id < self.next_htlc_id, "HTLC id beyond our counter")?;
                total = total.checked_add(h.amount.msat()).ok_or("balances overflow")?;
            }
            ensure(total == capacity || (!full && total == MilliSats::ZERO), "balances do not add up to the capacity")?;
        }
        // The staged views are the current ones with the log applied.
        for e in &self.log {
            ensure(!e.theirs_locked || e.in_theirs, "update log flags")?;
            ensure(e.from == Side::Remote || e.msg_no <= self.sent, "update message number")?;
        }
        let mut ours = self.our_view.clone();
        let mut theirs = self.their_view.clone();
        for e in &self.log {
            // A removal keeps the HTLC it removes (the totals the peer knew
            // are computed from it): the one a view it has not reached yet
            // holds. Nothing else keeps one.
            match (&e.update, e.in_ours, e.in_theirs) {
                (Update::Fulfill { id, .. } | Update::Fail { id }, false, _) => {
                    ensure(ours.htlc(e.from.other(), *id) == e.removed.as_ref(), "a removal's HTLC")?;
                }
                (Update::Fulfill { id, .. } | Update::Fail { id }, true, false) => {
                    ensure(theirs.htlc(e.from.other(), *id) == e.removed.as_ref(), "a removal's HTLC")?;
                }
                (Update::Fulfill { .. } | Update::Fail { .. }, true, true) => {}
                (Update::Add(_) | Update::Fee(_), _, _) => ensure(e.removed.is_none(), "a removal's HTLC")?,
            }
            if !e.in_ours {
                ours.apply(e.from, &e.update).map_err(|_| "update log does not apply to our commitment")?;
            }
            if !e.in_theirs {
                theirs.apply(e.from, &e.update).map_err(|_| "update log does not apply to the peer's commitment")?;
            }
        }
        ensure(ours == self.staged_ours && theirs == self.staged_theirs, "staged commitments differ from the log")?;
        ensure(self.deadlines.keys().all(|id| *id < self.next_htlc_id), "deadline of an HTLC never offered")?;
        // Messages: counters consistent, and every message the peer has not
        // acknowledged is there to be resent, in order.
        ensure(self.last_in_ack <= self.peer_ack && self.peer_ack <= self.sent, "acknowledge counters")?;
        ensure(self.unacked.len() as u64 == self.sent - self.peer_ack, "unacknowledged messages missing")?;
        for (i, (n, ack, _)) in self.unacked.iter().enumerate() {
            ensure(*n == self.peer_ack + 1 + i as u64 && *ack <= self.processed, "unacknowledged message numbers")?;
        }
        let close = &self.close;
        ensure(close.clearing_msg_no <= self.sent && close.our_msg_no <= self.sent, "close message numbers")?;
        // Commitments: ours rebuilds and carries the peer's valid signature;
        // every commitment of the peer's we keep rebuilds.
        if open && !terminal {
            let funding = self.funding.as_ref().ok_or("anchor missing")?;
            let remote = self.remote.ok_or("peer parameters missing")?;
            let built = self.build_ours(&self.our_view, self.our_num).ok_or("our commitment does not build")?;
            let sig = self.our_sig.as_ref().ok_or("signature missing")?;
            built
                .verify(funding, &remote.commit_key, sig)
                .map_err(|_| "the peer's signature does not sign our commitment")?;
            self.build_theirs(&self.their_view, self.their_hash, self.their_num)
                .ok_or("the peer's commitment does not build")?;
            if let Some((v, h)) = &self.their_prev {
                self.build_theirs(v, *h, self.their_num - 1).ok_or("the peer's previous commitment does not build")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::checksum;
    use proptest::prelude::*;

    proptest! {
        /// Any change confined to one 8-byte word (so any flipped bit or
        /// byte) changes the checksum, whatever the word's lane or position,
        /// the tail's included.
        #[test]
        fn a_change_within_one_word_is_always_caught(
            body in proptest::collection::vec(any::<u8>(), 1..300),
            at in any::<prop::sample::Index>(),
            change in 1u64..,
        ) {
            let start = at.index(body.len()) / 8 * 8;
            let end = (start + 8).min(body.len());
            let mut damaged = body.clone();
            let change = change.to_le_bytes();
            for (b, c) in damaged[start..end].iter_mut().zip(change) {
                *b ^= c;
            }
            prop_assume!(damaged != body);
            prop_assert_ne!(checksum(&damaged), checksum(&body));
        }

        /// Two different words trading places, in one lane or across lanes,
        /// change it too, but for a chance of about 2^-64 (the lanes start
        /// apart and are folded in order).
        #[test]
        fn words_trading_places_are_caught(
            body in proptest::collection::vec(any::<u8>(), 16..300),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let words = body.len() / 8;
            let (a, b) = (a.index(words) * 8, b.index(words) * 8);
            prop_assume!(body[a..a + 8] != body[b..b + 8]);
            let mut swapped = body.clone();
            for i in 0..8 {
                swapped.swap(a + i, b + i);
            }
            prop_assert_ne!(checksum(&swapped), checksum(&body));
        }
    }
}
