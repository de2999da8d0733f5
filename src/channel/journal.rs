//! The channel's journal (`docs/adr/0006-incremental-persistence.md`):
//! every input and command that changes the state is one entry, and
//! [`Channel::restore`] replays the entries after a snapshot.
//!
//! A step's entry is what the state machine saw, after the transport's
//! numbering ([`Input`]); its size does not depend on the live HTLCs. The
//! channel is deterministic (signatures are RFC 6979), so replaying an entry
//! on the state before it gives the state after it. Each entry also carries
//! the message counters after the step, which replay checks, and the oldest
//! change whose outputs were not all released, which says what a restored
//! channel must emit again (at least once, ADR 0003).
//!
//! Signatures the step made are in the entry too, and replay takes them
//! from there instead of asking the signer: a retransmission after a restore
//! is bitwise the message first sent (R1.2-e) even with a signer whose
//! signatures vary, and a restore makes no signature.
//!
//! Layout: `seq | unreleased_from | sent | processed` (u64 each, big-endian),
//! what the step's signer calls gave (a u16 count, then for each 1 and a
//! 64-byte compact signature, or 0 and the failure's reason), one
//! tagged input, and the checksum.

#[allow(unused_imports)]
use crate::prelude::*;

use alloc::collections::VecDeque;

use bitcoin::hashes::sha256;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{absolute, CompressedPublicKey, Transaction};

use super::persist::{R, W};
use super::{Channel, ChannelError, FailOrigin, Output, RestoreError};
use crate::rules::Rule;
use crate::tx::{KeyRole, Signer, SignerError, SigningInput};
use crate::types::{MilliSats, Preimage};
use crate::wire::{self, Message, UpdateFulfillHtlc};

/// One step of the state machine, as the journal keeps it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) enum Input {
    /// A peer message numbered and processed (not a retransmission).
    Message {
        message: Message,
        ack: u64,
    },
    /// A peer message before its `authenticate` on a new transport.
    BeforeAuth(Message),
    /// A fulfill that arrived after the channel failed.
    LateFulfill(UpdateFulfillHtlc),
    /// The peer's `authenticate` on a new transport.
    Authenticate(u64),
    /// A peer message that did not decode.
    Malformed {
        rule: Option<Rule>,
        text: String,
    },
    Block {
        height: u32,
        time: u32,
    },
    AnchorDepth {
        anchor: Transaction,
        depth: u32,
    },
    AnchorSpent(Transaction),
    FeeEstimate(u32),
    Offer {
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
        route: Vec<u8>,
    },
    Fulfill {
        id: u64,
        r: Preimage,
    },
    FailHtlc {
        id: u64,
        reason: Vec<u8>,
    },
    UpdateFee(u32),
    Commit,
    Close,
    ProvideAnchor {
        tx: Transaction,
        vout: u32,
    },
    Fail(String),
}

impl Input {
    pub(super) fn encode(&self, w: &mut W) {
        let message = |w: &mut W, m: &Message| {
            // Peer messages decoded within the limits, so they encode.
            w.bytes(&wire::encode(m).expect("a decoded message encodes"));
        };
        match self {
            Input::Message { message: m, ack } => {
                Input::encode_message(w, *ack, &wire::encode(m).expect("a decoded message encodes"))
            }
            Input::BeforeAuth(m) => {
                w.u8(2);
                message(w, m);
            }
            Input::LateFulfill(m) => {
                w.u8(3);
                w.u64(m.id);
                w.raw(&m.r.0);
            }
            Input::Authenticate(ack) => {
                w.u8(4);
                w.u64(*ack);
            }
            Input::Malformed { rule, text } => {
                w.u8(5);
                w.opt(*rule, |w, r| w.bytes(r.id().as_bytes()));
                w.bytes(text.as_bytes());
            }
            Input::Block { height, time } => {
                w.u8(6);
                w.u32(*height);
                w.u32(*time);
            }
            Input::AnchorDepth { anchor, depth } => {
                w.u8(7);
                w.tx(anchor);
                w.u32(*depth);
            }
            Input::AnchorSpent(tx) => {
                w.u8(8);
                w.tx(tx);
            }
            Input::FeeEstimate(rate) => {
                w.u8(9);
                w.u32(*rate);
            }
            Input::Offer { amount, r_hash, expiry, route } => {
                w.u8(10);
                w.u64(amount.to_msat());
                w.hash(r_hash);
                w.u32(expiry.to_consensus_u32());
                w.bytes(route);
            }
            Input::Fulfill { id, r } => {
                w.u8(11);
                w.u64(*id);
                w.raw(&r.0);
            }
            Input::FailHtlc { id, reason } => {
                w.u8(12);
                w.u64(*id);
                w.bytes(reason);
            }
            Input::UpdateFee(rate) => {
                w.u8(13);
                w.u32(*rate);
            }
            Input::Commit => w.u8(14),
            Input::Close => w.u8(15),
            Input::ProvideAnchor { tx, vout } => {
                w.u8(16);
                w.tx(tx);
                w.u32(*vout);
            }
            Input::Fail(text) => {
                w.u8(17);
                w.bytes(text.as_bytes());
            }
        }
    }

    /// The entry of a numbered peer message whose encoding is `bytes`
    /// (tag 1): a message journaled as it came off the wire needs no
    /// encoding again.
    pub(super) fn encode_message(w: &mut W, ack: u64, bytes: &[u8]) {
        w.0.reserve(13 + bytes.len());
        w.u8(1);
        w.u64(ack);
        w.bytes(bytes);
    }

    pub(super) fn decode(r: &mut R<'_>) -> Result<Input, RestoreError> {
        let message = |r: &mut R<'_>| wire::decode(&r.bytes()?).map_err(|_| RestoreError::Invalid("journaled message"));
        let text = |r: &mut R<'_>| String::from_utf8(r.bytes()?).map_err(|_| RestoreError::Invalid("journaled text"));
        Ok(match r.u8()? {
            1 => {
                let ack = r.u64()?;
                Input::Message { message: message(r)?, ack }
            }
            2 => Input::BeforeAuth(message(r)?),
            3 => Input::LateFulfill(UpdateFulfillHtlc { id: r.u64()?, r: Preimage(r.array()?) }),
            4 => Input::Authenticate(r.u64()?),
            5 => {
                let rule = r.opt(|r| {
                    let id = text(r)?;
                    Rule::from_id(&id).ok_or(RestoreError::Invalid("journaled rule"))
                })?;
                Input::Malformed { rule, text: text(r)? }
            }
            6 => Input::Block { height: r.u32()?, time: r.u32()? },
            7 => Input::AnchorDepth { anchor: r.tx()?, depth: r.u32()? },
            8 => Input::AnchorSpent(r.tx()?),
            9 => Input::FeeEstimate(r.u32()?),
            10 => Input::Offer {
                amount: MilliSats::from_msat(r.u64()?),
                r_hash: r.hash()?,
                expiry: absolute::LockTime::from_consensus(r.u32()?),
                route: r.bytes()?,
            },
            11 => Input::Fulfill { id: r.u64()?, r: Preimage(r.array()?) },
            12 => Input::FailHtlc { id: r.u64()?, reason: r.bytes()? },
            13 => Input::UpdateFee(r.u32()?),
            14 => Input::Commit,
            15 => Input::Close,
            16 => Input::ProvideAnchor { tx: r.tx()?, vout: r.u32()? },
            17 => Input::Fail(text(r)?),
            _ => return Err(RestoreError::Invalid("journaled input")),
        })
    }
}

/// What an entry says besides its input.
pub(super) struct Header {
    pub(super) seq: u64,
    pub(super) unreleased_from: u64,
    pub(super) sent: u64,
    pub(super) processed: u64,
}

/// An entry: the header, what the step's signer calls gave, the input
/// (already encoded), the checksum.
pub(super) fn entry(h: &Header, signatures: &[Result<Signature, SignerError>], input: &[u8]) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(42 + 65 * signatures.len() + input.len()));
    w.u64(h.seq);
    w.u64(h.unreleased_from);
    w.u64(h.sent);
    w.u64(h.processed);
    // A step signs at most a handful of transactions.
    w.0.extend_from_slice(&(signatures.len() as u16).to_be_bytes());
    for sig in signatures {
        // A call that failed is part of what the step did, and its reason
        // may be in the error the channel sends.
        match sig {
            Ok(sig) => {
                w.u8(1);
                w.sig(sig);
            }
            Err(e) => {
                w.u8(0);
                w.bytes(e.reason.as_bytes());
            }
        }
    }
    w.raw(input);
    w.seal()
}

/// What the signer gave in the current step, in order: recorded live,
/// played back in a replay, which never asks the signer.
#[derive(Default, Debug)]
pub(crate) struct Tape {
    recording: bool,
    pub(super) recorded: Vec<Result<Signature, SignerError>>,
    /// Replaying: the calls of the entry being replayed.
    pub(super) replaying: bool,
    pub(super) replay: VecDeque<Result<Signature, SignerError>>,
    /// A replayed step asked for more signatures than its entry holds.
    pub(super) overrun: bool,
}

/// The tape in `cell`, reached through `&mut`: no lock taken.
#[cfg(feature = "std")]
pub(super) fn tape_of(cell: &mut super::TapeCell) -> &mut Tape {
    cell.get_mut().expect("never poisoned: no code panics while holding it")
}

#[cfg(not(feature = "std"))]
pub(super) fn tape_of(cell: &mut super::TapeCell) -> &mut Tape {
    cell.get_mut()
}

/// The channel's signer as its steps use it: through the [`Tape`].
pub(super) struct Taped<'a>(pub(super) &'a Channel);

impl Signer for Taped<'_> {
    fn public_key(&self, role: KeyRole) -> CompressedPublicKey {
        self.0.signer.public_key(role)
    }

    fn sign(&self, input: &SigningInput<'_>) -> Result<Signature, SignerError> {
        let mut tape = self.0.tape();
        if tape.replaying {
            return match tape.replay.pop_front() {
                Some(result) => result,
                None => {
                    tape.overrun = true;
                    Err(SignerError { reason: "replay asked for a signature its entry does not hold".into() })
                }
            };
        }
        let result = self.0.signer.sign(input);
        if tape.recording {
            tape.recorded.push(result.clone());
        }
        result
    }
}

impl Channel {
    /// Runs one step: journals `input`, applies it, and ends the step
    /// ([`Channel::flush`]). A step that changes nothing leaves no entry.
    pub(super) fn step(&mut self, input: Input) -> Result<(), ChannelError> {
        self.step_encoded(input, Input::encode)
    }

    /// [`Channel::step`] with the input's entry written by `encode`.
    pub(super) fn step_encoded(
        &mut self,
        input: Input,
        encode: impl FnOnce(&Input, &mut W),
    ) -> Result<(), ChannelError> {
        let mut w = W(core::mem::take(&mut self.input));
        w.0.clear();
        encode(&input, &mut w);
        self.input = w.0;
        {
            let tape = self.tape_mut();
            tape.recording = true;
            tape.recorded.clear();
        }
        let result = self.apply(input);
        self.flush();
        self.tape_mut().recording = false;
        result
    }

    /// The signer, through the tape.
    pub(super) fn signing(&self) -> Taped<'_> {
        Taped(self)
    }

    #[cfg(feature = "std")]
    pub(super) fn tape(&self) -> std::sync::MutexGuard<'_, Tape> {
        self.tape.lock().expect("never poisoned: no code panics while holding it")
    }

    #[cfg(not(feature = "std"))]
    pub(super) fn tape(&self) -> core::cell::RefMut<'_, Tape> {
        self.tape.borrow_mut()
    }

    /// The tape, from a step's own `&mut self`: no lock taken (the lock is
    /// for the signer, which only sees `&Channel`).
    pub(super) fn tape_mut(&mut self) -> &mut Tape {
        tape_of(&mut self.tape)
    }

    /// What a step does, live or replayed.
    pub(super) fn apply(&mut self, input: Input) -> Result<(), ChannelError> {
        match input {
            Input::Message { message, ack } => self.apply_message(message, ack),
            Input::BeforeAuth(message) => {
                // R1.2-a: it cannot be numbered.
                let problem = format!("{} before the peer's authenticate", message.name());
                self.processed += 1;
                self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_a), problem);
            }
            Input::LateFulfill(m) => self.late_fulfill(m),
            Input::Authenticate(ack) => self.apply_authenticate(ack),
            Input::Malformed { rule, text } => {
                if !self.is_terminal() {
                    self.processed += 1;
                    self.fail_with(FailOrigin::PeerViolation, rule, format!("malformed message: {text}"));
                }
            }
            Input::Block { height, time } => self.apply_block(height, time),
            Input::AnchorDepth { anchor, depth } => self.apply_anchor_depth(&anchor, depth),
            Input::AnchorSpent(tx) => self.apply_anchor_spent(&tx),
            Input::FeeEstimate(rate) => return self.apply_fee_estimate(rate),
            Input::Offer { amount, r_hash, expiry, route } => return self.apply_offer(amount, r_hash, expiry, route),
            Input::Fulfill { id, r } => {
                return self.remove_htlc("fulfill_htlc", super::Update::Fulfill { id, r }, Vec::new())
            }
            Input::FailHtlc { id, reason } => return self.remove_htlc("fail_htlc", super::Update::Fail { id }, reason),
            Input::UpdateFee(rate) => return self.apply_update_fee(rate),
            Input::Commit => return self.apply_commit(),
            Input::Close => return self.apply_close(),
            Input::ProvideAnchor { tx, vout } => return self.apply_provide_anchor(tx, vout),
            Input::Fail(problem) => {
                if !self.is_terminal() {
                    self.fail_with(FailOrigin::Local, None, problem);
                }
            }
        }
        Ok(())
    }

    /// The oldest change with an output (other than a message) not yet
    /// released, or the next change if there is none.
    pub(super) fn unreleased_from(&self) -> u64 {
        let unreleased = |o: &Output| !matches!(o, Output::Send { .. });
        match self.gated.oldest_other() {
            Some(v) => v,
            None if self.pending.iter().any(unreleased) => self.version,
            None => self.version + 1,
        }
    }
}
