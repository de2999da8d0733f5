//! The channel: a sans-IO state machine for establishment (section 2),
//! staged/committed updates (section 3), cooperative close (section 4) and
//! failing the connection (section 6.3).
//!
//! See [`Channel`] for the contract. The code is split by phase, each file
//! an `impl Channel` block:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the types, construction, getters, outputs and the persist gate, dispatch, building commitments |
//! | `transport.rs` | section 1.2: inbound numbering, `authenticate`, retransmission |
//! | `establish.rs` | section 2: establishment |
//! | `update.rs` | section 3: HTLCs, fees, commit and revocation, deadlines |
//! | `close.rs` | section 4: clearing and the close negotiation |
//! | `failure.rs` | section 6.3: failing the connection, the chain's verdicts |
//! | `persist.rs` | the stored state, its checksum and the invariants `restore` checks |
//! | `view.rs` | what one commitment holds, and the updates that change it |

mod close;
mod establish;
mod failure;
mod journal;
pub(crate) mod persist;
mod transport;
mod update;
mod view;

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use core::fmt;

use bitcoin::hashes::sha256;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{absolute, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Transaction, Txid};

use journal::Input;
pub use persist::RestoreError;
use view::{Entry, Refusal, Update};
pub use view::{Htlc, Side, View, MAX_HTLC_OUTPUTS_PER_SIDE};

use crate::chain::{ChannelParams, HtlcChange, MonitorUpdate};
use crate::fees::{commitment_fee, fee_for_bytecount, DUST_LIMIT};
use crate::journal::{Compaction, Write};
use crate::rules::Rule;
use crate::shachain::{RevocationSecrets, ShachainStore};
use crate::tx::closing::{build_close, CloseSpec, CloseTx};
use crate::tx::commitment::{self, Commitment, CommitmentId, CommitmentNumber, CommitmentSpec, Precomputed};
use crate::tx::funding::{validate_funding, FundingError, FundingOutput, MAX_ANCHOR};
use crate::tx::{KeyRole, Signer, SignerError};
use crate::types::{Delay, HtlcMsat, MilliSats, Preimage};
use crate::wire::{
    AnchorOffer, CloseSignature, DecodeError, ErrorMessage, Message, OpenAnchor, OpenChannel, OpenCommitSig,
    UpdateAddHtlc, UpdateCommit, UpdateFailHtlc, UpdateFee, UpdateFulfillHtlc, UpdateRevocation,
};

/// The most HTLCs one side may offer in one commitment (R3.2-c).
pub const MAX_HTLCS_PER_SIDE: usize = 1500;

/// The normative size used for the opening close-fee offer (the 2016
/// reference's estimate of a close transaction).
const CLOSE_BYTECOUNT: u128 = 336;

/// The largest route or failure reason we send: whatever the id, the
/// message stays within the decoder's limit ([`crate::wire::MAX_PKT_LEN`]).
pub const MAX_BLOB: usize = crate::wire::MAX_PKT_LEN - 128;

/// Seconds per block, for comparing a delay in one unit with an expiry in
/// the other.
const SECONDS_PER_BLOCK: u32 = 600;

/// Every bound the protocol text leaves to the node (sections 2.1, 2.2, 3.1,
/// 3.4, 4.2), and this node's own demands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelConfig {
    /// The longest `delay` we accept from the peer, in blocks (R2.1-b).
    pub max_delay_blocks: u16,
    /// The longest `delay` we accept from the peer, in seconds (R2.1-b).
    pub max_delay_seconds: u32,
    /// The largest `min_depth` we accept from the peer (R2.1-c).
    pub max_min_depth: u32,
    /// The lowest fee rate we accept for the peer's commitments (R2.1-d).
    pub min_fee_rate: u32,
    /// The highest fee rate we accept for the peer's commitments (R2.1-d,
    /// R3.4-b).
    pub max_fee_rate: u32,
    /// The smallest anchor we accept (R2.2-b); at least the fees of both
    /// initial commitments are always required.
    pub min_anchor: Amount,
    /// Our `delay`: how long the peer's payments to itself stay locked.
    pub delay: Delay,
    /// Our `min_depth` for the anchor.
    pub min_depth: u32,
    /// Our commitments' initial fee rate, satoshi per 1000 bytes.
    pub fee_rate: u32,
    /// Blocks added to an offered HTLC's redemption deadline (R3.1-a).
    pub deadline_margin_blocks: u32,
    /// Blocks we wait for the peer's `open_complete` after sending ours
    /// (R2.4-c).
    pub open_complete_timeout_blocks: u32,
    /// Fee rate of our opening close-fee offer, satoshi per 1000 bytes.
    pub close_fee_rate: u32,
    /// The most HTLCs one side may offer in a commitment (R3.2-c: at most
    /// 1500).
    pub max_htlcs: usize,
    /// The lowest fee rate a node relays, satoshi per 1000 virtual bytes
    /// (Bitcoin Core's `-minrelaytxfee`, 1000 by default): commitments and
    /// closes we sign pay at least this, whatever their real size.
    pub min_relay_fee_rate: u32,
    /// Hand over each commitment of the peer's as it revokes it
    /// ([`Output::Revoked`]), to build justice packages for a watchtower
    /// ([`crate::tower`], W1-a). Off by default.
    pub export_revoked: bool,
}

impl ChannelConfig {
    /// Checks that the configuration is consistent and that every
    /// transaction it leads to pays the relay floor: `min_fee_rate` at least
    /// [`min_commitment_fee_rate`](crate::fees::min_commitment_fee_rate) of
    /// the relay rate, `fee_rate` between `min_fee_rate` and `max_fee_rate`,
    /// `close_fee_rate` at least the relay rate.
    pub fn validate(&self) -> Result<(), ChannelError> {
        let bad = |field| Err(ChannelError::InvalidConfig(field));
        if self.min_relay_fee_rate == 0 {
            return bad("min_relay_fee_rate");
        }
        if self.min_fee_rate < crate::fees::min_commitment_fee_rate(self.min_relay_fee_rate) {
            return bad("min_fee_rate");
        }
        if self.max_fee_rate < self.min_fee_rate {
            return bad("max_fee_rate");
        }
        if self.fee_rate < self.min_fee_rate || self.fee_rate > self.max_fee_rate {
            return bad("fee_rate");
        }
        if self.close_fee_rate < self.min_relay_fee_rate || self.close_fee_rate > self.max_fee_rate {
            return bad("close_fee_rate");
        }
        if self.max_htlcs > MAX_HTLCS_PER_SIDE {
            return bad("max_htlcs");
        }
        if matches!(self.delay, Delay::Blocks(0)) || self.min_depth == 0 {
            return bad(if self.min_depth == 0 { "min_depth" } else { "delay" });
        }
        if self.min_anchor > MAX_ANCHOR {
            return bad("min_anchor");
        }
        Ok(())
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_delay_blocks: 2016,
            max_delay_seconds: 14 * 24 * 3600,
            max_min_depth: 100,
            // The lowest rate at which the normative bytecount (R3.6-a) still
            // pays 1 sat per real vbyte with segwit outputs at any HTLC count.
            min_fee_rate: crate::fees::DEFAULT_MIN_FEE_RATE,
            max_fee_rate: 100_000,
            min_anchor: Amount::from_sat(10_000),
            delay: Delay::Blocks(144),
            min_depth: 3,
            fee_rate: 10_000,
            deadline_margin_blocks: 6,
            open_complete_timeout_blocks: 144,
            close_fee_rate: 5_000,
            max_htlcs: MAX_HTLCS_PER_SIDE,
            min_relay_fee_rate: crate::fees::DEFAULT_MIN_RELAY_FEE_RATE,
            export_revoked: false,
        }
    }
}

/// What the channel hands the caller (drained with [`Channel::poll_output`]).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send `message` with `acknowledge` in its transport header (ruling D8).
    #[non_exhaustive]
    Send {
        /// The message.
        message: Message,
        /// The header's acknowledge value (R1.2-b).
        acknowledge: u64,
        /// `message` as a `pkt`: what goes on the wire. The channel encodes
        /// every message it sends ([`crate::wire::encode`]) and keeps the
        /// bytes until the peer acknowledges them; a retransmission repeats
        /// them exactly (R1.2-e), even after a restore of a state whose
        /// stored bytes carry fields this version ignores. A transport sends
        /// them rather than encoding the message again.
        bytes: Vec<u8>,
    },
    /// The funder's wallet must create (but not broadcast, R2.2-a) a
    /// transaction paying `amount` to `script_pubkey`, then pass it to
    /// [`Channel::provide_anchor`].
    FundAnchor {
        /// The channel's capacity.
        amount: Amount,
        /// The anchor's P2WSH 2-of-2 script.
        script_pubkey: ScriptBuf,
    },
    /// Broadcast this transaction.
    Broadcast(Transaction),
    /// Watch the chain as described.
    Watch(Watch),
    /// Store this durably (append the entry, or replace everything up to
    /// its sequence number by the snapshot: [`Write`]), then call
    /// [`Channel::handle_persisted`] with [`Write::seq`]. Nothing that depends
    /// on this change is released before. Sequence numbers increase by one
    /// with every change; [`Channel::restore`] takes the snapshot and the
    /// entries after it.
    Persist(Write),
    /// Something the application should know.
    Event(Event),
    /// Hand this to the channel's on-chain monitor
    /// ([`crate::chain::Monitor::update`]) and make the monitor's resulting
    /// state durable before writing the [`Output::Persist`] that follows it
    /// (C1-i). Released at once, like `Persist`, and before it.
    Monitor(MonitorUpdate),
    /// The peer revoked this commitment of its own (with
    /// [`ChannelConfig::export_revoked`]): make it a justice package for a
    /// watchtower ([`crate::tower::justice_package`], W1-a). Released once
    /// the revocation is durable, like an event.
    Revoked(Box<crate::tower::RevokedCommitment>),
}

/// What to watch on chain.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Watch {
    /// Report the anchor's depth with [`Channel::handle_anchor_depth`].
    AnchorDepth {
        /// The anchor transaction.
        txid: Txid,
        /// Its channel output's script.
        script_pubkey: ScriptBuf,
    },
    /// Report any spend of the anchor with [`Channel::handle_anchor_spent`]
    /// (R6.1-a).
    AnchorSpend(OutPoint),
}

/// An HTLC's direction from this node's point of view.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Offered by the peer to us.
    Incoming,
    /// Offered by us to the peer.
    Outgoing,
}

impl Direction {
    fn of(offerer: Side) -> Self {
        match offerer {
            Side::Local => Direction::Outgoing,
            Side::Remote => Direction::Incoming,
        }
    }
}

/// Who or what ended the channel's normal life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailOrigin {
    /// The peer broke a rule (we sent an `error`, R6.3-c).
    PeerViolation,
    /// The peer sent an `error` (we did not answer, R6.3-b).
    PeerError,
    /// A deadline or timeout passed, or the anchor was spent.
    Chain,
    /// The application asked.
    Local,
}

/// Why the channel failed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FailReason {
    /// What caused it.
    pub origin: FailOrigin,
    /// The requirement broken, if one applies.
    pub rule: Option<Rule>,
    /// A description (sent as `error.problem` when we send one).
    pub problem: String,
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Some(rule) => write!(f, "{} ({rule})", self.problem),
            None => f.write_str(&self.problem),
        }
    }
}

/// What was broadcast when the channel failed (section 6.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailBroadcast {
    /// No anchor was broadcast: nothing to do (R6.3-d).
    Nothing,
    /// Our latest commitment, no HTLC ever created (R6.3-e).
    CommitmentNoHtlcs,
    /// The close transaction from the last valid `close_signature` (R6.3-f).
    Close,
    /// Our latest commitment, signed now (R6.3-g).
    Commitment,
    /// The anchor was already spent: broadcasting would only conflict.
    AnchorSpent,
}

/// Something the application should know.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event {
    /// Both `open_complete`s were exchanged: normal operation begins (R2.4-b).
    ChannelOpen {
        /// The anchor output.
        funding: OutPoint,
        /// Its value.
        capacity: Amount,
    },
    /// An HTLC is committed in both current commitments.
    HtlcAdded {
        /// Ours or theirs.
        direction: Direction,
        /// The offerer's id.
        id: u64,
        /// Its value.
        amount: MilliSats,
        /// Its payment hash.
        r_hash: sha256::Hash,
        /// Its expiry.
        expiry: absolute::LockTime,
        /// Its routing information.
        route: Vec<u8>,
    },
    /// An HTLC was fulfilled: for outgoing ones as soon as the peer reveals
    /// `R` (so it can be used upstream at once, R6.2-a), for incoming ones
    /// when our fulfill is committed.
    HtlcFulfilled {
        /// Ours or theirs.
        direction: Direction,
        /// The offerer's id.
        id: u64,
        /// Its value.
        amount: MilliSats,
        /// The preimage.
        preimage: Preimage,
    },
    /// An HTLC failed and its removal is committed in both commitments.
    HtlcFailed {
        /// Ours or theirs.
        direction: Direction,
        /// The offerer's id.
        id: u64,
        /// Its value.
        amount: MilliSats,
        /// The opaque reason, to be copied unchanged upstream (R3.3-e).
        reason: Vec<u8>,
    },
    /// A fee rate change is committed.
    FeeChanged {
        /// Whose commitments it applies to.
        side: Side,
        /// The new rate, satoshi per 1000 bytes.
        fee_rate: u32,
    },
    /// `close_clearing` was sent or received: no new HTLCs.
    ChannelClosing,
    /// The fees matched and the close transaction was broadcast.
    ChannelClosed {
        /// The close transaction.
        tx: Transaction,
    },
    /// The channel failed (section 6.3).
    ChannelFailed {
        /// Why.
        reason: FailReason,
        /// What was broadcast.
        broadcast: FailBroadcast,
    },
}

/// A caller's mistake. The channel is unchanged.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The command does not apply in the channel's current phase.
    #[error("{command} is not possible while the channel is {phase}")]
    WrongPhase {
        /// The command.
        command: &'static str,
        /// The phase.
        phase: &'static str,
    },
    /// Closing has begun: no new HTLCs (R4.1-a).
    #[error("the channel is closing: no new HTLCs (R4.1-a)")]
    Closing,
    /// `close_clearing` was already sent (R4.1-b).
    #[error("close_clearing was already sent (R4.1-b)")]
    AlreadyClosing,
    /// An HTLC amount must be above zero (R3.2-b) and fit in 32 bits.
    #[error("HTLC amount {0} must be above 0 msat and below 2^32 msat (R3.2-b)")]
    BadAmount(MilliSats),
    /// The expiry is less than the peer's `delay` away (R3.2-d, R3.1-b).
    #[error("expiry {expiry} is sooner than the peer's delay allows: at least {earliest} (R3.2-d)")]
    ExpiryTooSoon {
        /// The expiry asked for.
        expiry: absolute::LockTime,
        /// The earliest acceptable.
        earliest: absolute::LockTime,
    },
    /// We cannot pay the amount plus our fee share in both commitments
    /// (R3.2-a, R3.6-e).
    #[error("cannot afford the HTLC and our fee share in both commitments (R3.2-a, R3.6-e)")]
    CannotAfford,
    /// We already offer the most HTLCs allowed (R3.2-c).
    #[error("already offering the most HTLCs allowed (R3.2-c)")]
    TooManyHtlcs,
    /// No incoming HTLC with this id (we can only remove the peer's, R3.3-a).
    #[error("no incoming HTLC {0} to remove (R3.3-a)")]
    UnknownHtlc(u64),
    /// The preimage does not match the HTLC's hash.
    #[error("preimage does not match incoming HTLC {0}")]
    WrongPreimage(u64),
    /// The incoming HTLC is not yet in a current commitment (to fail it,
    /// R3.3-c), or not yet irrevocably in both (to fulfill it: revealing `R`
    /// earlier could let the peer close on a commitment without it).
    #[error("incoming HTLC {0} is not committed yet (R3.3-c)")]
    NotCommitted(u64),
    /// Nothing staged for the peer's commitment (R3.5-a).
    #[error("nothing to commit (R3.5-a)")]
    NothingToCommit,
    /// The previous `update_commit` awaits its revocation.
    #[error("the previous commitment has not been revoked yet")]
    AwaitingRevocation,
    /// A fee rate of zero, or one that would leave every output of our
    /// commitment dust.
    #[error("fee rate must be above zero and leave our commitment an output")]
    BadFeeRate,
    /// The anchor amount is outside what the protocol allows (R2.2-c) or
    /// below our own `min_anchor`.
    #[error("anchor amount {0} is below min_anchor or above 4294967 sat (R2.2-c)")]
    BadAnchorAmount(Amount),
    /// The anchor transaction given is not the one asked for.
    #[error("anchor transaction rejected: {0}")]
    BadAnchor(FundingError),
    /// The configuration is inconsistent or leads to transactions below the
    /// relay floor: the field named is the first found wrong.
    #[error("invalid channel configuration: {0}")]
    InvalidConfig(&'static str),
    /// A route or failure reason longer than [`MAX_BLOB`] bytes.
    #[error("{0} bytes of route or reason exceed the {MAX_BLOB}-byte limit")]
    TooLarge(usize),
    /// The command found the channel unable to continue and failed it (the
    /// one error that changes the channel: see [`Event::ChannelFailed`]).
    #[error("the channel failed: {0}")]
    Failed(&'static str),
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// A peer's protocol violation: fails the connection.
#[derive(Debug)]
pub(crate) struct Violation {
    rule: Option<Rule>,
    problem: String,
}

fn violation(rule: Rule, problem: impl Into<String>) -> Violation {
    Violation { rule: Some(rule), problem: problem.into() }
}

impl Refusal {
    fn peer(self) -> Violation {
        match self {
            Refusal::DuplicateId(id) => violation(Rule::R3_2_e, format!("HTLC id {id} is already in the commitment")),
            Refusal::CannotAfford => violation(Rule::R3_2_a, "HTLC the offerer cannot pay for in both commitments"),
            Refusal::TooManyHtlcs => violation(Rule::R3_2_c, "more than the allowed number of HTLCs"),
            Refusal::UnknownHtlc(id) => violation(Rule::R3_3_c, format!("no HTLC {id} in the commitment")),
            Refusal::WrongPreimage(id) => violation(Rule::R3_3_d, format!("preimage does not match HTLC {id}")),
        }
    }

    fn caller(self) -> ChannelError {
        match self {
            Refusal::DuplicateId(_) => unreachable!("our ids come from a counter"),
            Refusal::CannotAfford => ChannelError::CannotAfford,
            Refusal::TooManyHtlcs => ChannelError::TooManyHtlcs,
            Refusal::UnknownHtlc(id) => ChannelError::UnknownHtlc(id),
            Refusal::WrongPreimage(id) => ChannelError::WrongPreimage(id),
        }
    }
}

/// Which side funds the channel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Opened the connection, creates the anchor (`WILL_CREATE_ANCHOR`).
    Funder,
    /// Accepted the connection (`WONT_CREATE_ANCHOR`).
    Fundee,
}

/// The phases of a channel's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    /// Waiting for the peer's `open_channel`.
    AwaitOpen,
    /// Funder: waiting for the wallet's anchor transaction.
    AwaitAnchorTx,
    /// Fundee: waiting for `open_anchor`.
    AwaitOpenAnchor,
    /// Funder: waiting for `open_commit_sig`.
    AwaitCommitSig,
    /// Waiting for the anchor's depth and both `open_complete`s.
    AwaitDepth,
    /// Normal operation, including clearing and close negotiation.
    Normal,
    /// The close transaction was broadcast.
    Closed,
    /// The connection failed.
    Failed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::AwaitOpen => "waiting for open_channel",
            Phase::AwaitAnchorTx => "waiting for the anchor transaction",
            Phase::AwaitOpenAnchor => "waiting for open_anchor",
            Phase::AwaitCommitSig => "waiting for open_commit_sig",
            Phase::AwaitDepth => "waiting for the anchor to reach its depth",
            Phase::Normal => "open",
            Phase::Closed => "closed",
            Phase::Failed => "failed",
        }
    }
}

/// The peer's `open_channel` parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct RemoteParams {
    commit_key: CompressedPublicKey,
    final_key: CompressedPublicKey,
    delay: Delay,
    min_depth: u32,
    /// Derived once (not stored): the hash in our P2WPKH outputs to
    /// `final_key`, and the channel's obscuring factor (ruling D10).
    final_hash: bitcoin::WPubkeyHash,
    obscuring: u64,
}

impl RemoteParams {
    /// The peer's parameters, in a channel where our `commit_key` is
    /// `our_commit` and we are `role`.
    fn new(
        commit_key: CompressedPublicKey,
        final_key: CompressedPublicKey,
        delay: Delay,
        min_depth: u32,
        our_commit: &CompressedPublicKey,
        role: Role,
    ) -> Self {
        let obscuring = match role {
            Role::Funder => commitment::obscuring_factor(our_commit, &commit_key),
            Role::Fundee => commitment::obscuring_factor(&commit_key, our_commit),
        };
        RemoteParams { commit_key, final_key, delay, min_depth, final_hash: final_key.wpubkey_hash(), obscuring }
    }
}

/// Close negotiation (section 4).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct CloseState {
    sent_clearing: bool,
    /// Our outbound message number of `close_clearing`.
    clearing_msg_no: u64,
    /// The peer sent an `update_commit` acknowledging our `close_clearing`:
    /// from then on it may not add HTLCs (section 4.1).
    clearing_committed: bool,
    received_clearing: bool,
    /// Our last `close_fee` proposal.
    our_fee: Option<Amount>,
    /// Its outbound message number: an answer acknowledges it.
    our_msg_no: u64,
    /// Every fee we signed a close for: a close seen on chain with one of
    /// them is the negotiation's end, whoever broadcast it.
    signed_fees: Vec<Amount>,
    /// The peer's last valid proposal and signature.
    their: Option<(Amount, Signature)>,
    /// The peer's last valid proposal at or above the relay floor: the close
    /// broadcast if the channel fails (R6.3-f).
    their_relayable: Option<(Amount, Signature)>,
}

/// One payment channel, as a sans-IO state machine.
///
/// # The contract
///
/// A `Channel` never performs I/O, reads a clock or draws randomness: the
/// caller feeds it inputs and drains its outputs. Methods come in four kinds,
/// as in quinn-proto:
///
/// - **Inputs** (`handle_*`): a decoded peer message with the `acknowledge`
///   of its transport header ([`handle_message`](Self::handle_message)), a
///   message that failed to decode ([`handle_malformed`](Self::handle_malformed)),
///   chain events ([`handle_anchor_depth`](Self::handle_anchor_depth),
///   [`handle_block`](Self::handle_block),
///   [`handle_anchor_spent`](Self::handle_anchor_spent)), the peer's
///   `authenticate` on a new transport
///   ([`handle_authenticate`](Self::handle_authenticate)), and
///   [`handle_persisted`](Self::handle_persisted), which says a state
///   version is durable. A peer's violation is never returned as an error:
///   it fails the channel (an `error` message, the broadcast of section 6.3,
///   an [`Event::ChannelFailed`]).
/// - **Commands** from the application: [`offer_htlc`](Self::offer_htlc),
///   [`fulfill_htlc`](Self::fulfill_htlc), [`fail_htlc`](Self::fail_htlc),
///   [`update_fee`](Self::update_fee), [`commit`](Self::commit),
///   [`close`](Self::close), [`provide_anchor`](Self::provide_anchor),
///   [`fail`](Self::fail), and [`new_transport`](Self::new_transport) when a
///   transport replaces the last one (after a drop or a restart). A mistake
///   returns a [`ChannelError`] and changes nothing.
/// - **Outputs**, drained with [`poll_output`](Self::poll_output) after every
///   input or command until it returns `None`. [`Output::Persist`] comes
///   first and is released at once; every other output (messages,
///   broadcasts, watches, events) waits until the state version it depends
///   on is durable, so nothing leaves the node that a crash could make it
///   forget (see `docs/adr/0003-persist-before-release.md`).
/// - **Getters**: [`phase_name`](Self::phase_name),
///   [`our_commitment`](Self::our_commitment), [`balance`](Self::balance)
///   and the like, for the application and tests.
///
/// # Drive loop
///
/// ```text
/// loop {
///     while let Some(out) = channel.poll_output() {
///         match out {
///             Output::Persist(w) => { db.write(&w)?; channel.handle_persisted(w.seq()); }
///             Output::Send { acknowledge, bytes, .. } => transport.send(acknowledge, &bytes)?,
///             Output::Broadcast(tx) => node.broadcast(tx)?,
///             Output::Watch(w) => watcher.add(w),
///             Output::FundAnchor { amount, script_pubkey } => {
///                 let tx = wallet.fund(amount, script_pubkey)?;
///                 channel.provide_anchor(tx, 0)?;
///             }
///             Output::Event(e) => app.on_event(e),
///             _ => {}
///         }
///     }
///     match next_input()? {
///         // A new transport (after a drop, or after restarting from the db):
///         // our authenticate first, nothing else until the peer's.
///         Input::Connected(t) => t.send_authenticate(channel.new_transport())?,
///         Input::Frame(ack, Message::Authenticate(_)) => channel.handle_authenticate(ack),
///         Input::Frame(ack, msg) => channel.handle_message(msg, ack),
///         Input::Block { height, time } => channel.handle_block(height, time),
///         Input::AnchorDepth(anchor, depth) => channel.handle_anchor_depth(&anchor, depth),
///         Input::Pay { amount, hash, expiry } => { channel.offer_htlc(amount, hash, expiry, vec![])?; channel.commit()?; }
///     }
/// }
/// ```
///
/// The crate documentation has a complete, compiled version of this loop.
pub struct Channel {
    signer: Arc<dyn Signer + Send + Sync>,
    pub(crate) config: ChannelConfig,
    pub(crate) role: Role,
    pub(crate) secrets: RevocationSecrets,
    /// The anchor amount (funder: chosen at creation; fundee: from
    /// `open_anchor`).
    pub(crate) capacity: Amount,
    pub(crate) phase: Phase,
    pub(crate) remote: Option<RemoteParams>,
    /// The hash in the peer's P2WPKH outputs to our `final_key` (derived).
    pub(crate) our_final_hash: bitcoin::WPubkeyHash,
    pub(crate) funding: Option<FundingOutput>,
    /// What our commitments and the peer's share, computed once (derived
    /// from `funding` and `remote`, set with `funding`).
    precomputed: Option<Precomputed>,
    pub(crate) anchor_tx: Option<Transaction>,
    /// The anchor may be on chain (funder broadcast it, or fundee sent
    /// `open_commit_sig`): from now on failing means broadcasting.
    pub(crate) anchor_broadcast: bool,
    pub(crate) anchor_depth: u32,
    /// The anchor seen on chain matched `open_anchor`.
    pub(crate) anchor_checked: bool,
    pub(crate) sent_complete_at: Option<u32>,
    pub(crate) received_complete: bool,

    /// Our current commitment: number, content, the peer's signature.
    pub(crate) our_num: u64,
    pub(crate) our_view: View,
    pub(crate) our_sig: Option<Signature>,
    /// The peer's latest commitment we signed.
    pub(crate) their_num: u64,
    pub(crate) their_view: View,
    pub(crate) their_hash: sha256::Hash,
    /// The peer's revocation hash for `their_num + 1`, unknown while the
    /// previous commitment awaits revocation.
    pub(crate) their_next_hash: Option<sha256::Hash>,
    /// The peer's previous commitment while it awaits revocation.
    pub(crate) their_prev: Option<(View, sha256::Hash)>,
    /// Txids of the peer's latest and previous commitments, when known (a
    /// cache, not persisted: rebuilt when missing).
    pub(crate) their_txid: Option<Txid>,
    pub(crate) their_prev_txid: Option<Txid>,
    pub(crate) their_secrets: ShachainStore,
    /// Views with every logged update applied: the "staged" commitments.
    pub(crate) staged_ours: View,
    pub(crate) staged_theirs: View,
    pub(crate) log: Vec<Entry>,
    /// RIPEMD-160 of the `r_hash` of every HTLC in a view, as the scripts
    /// hold it, with that `r_hash` (a cache, not persisted: rebuilt on
    /// restore). The peer may reuse an id once no staged commitment holds it
    /// (R3.2-e) while a current one still holds the old HTLC: an entry is
    /// used only for the `r_hash` it was computed from.
    pub(crate) hash160s: BTreeMap<(Side, u64), Hash160Entry>,
    pub(crate) next_htlc_id: u64,
    /// Redemption deadlines of HTLCs we offered (R3.1-a).
    pub(crate) deadlines: BTreeMap<u64, absolute::LockTime>,
    /// Incoming HTLCs we must fail, with the reason, sent once each is in a
    /// commitment (R3.3-c).
    pub(crate) must_fail: BTreeMap<u64, Vec<u8>>,
    pub(crate) ever_had_htlc: bool,
    pub(crate) close: CloseState,

    /// Non-authenticate messages we sent, and processed (R1.2-b).
    pub(crate) sent: u64,
    pub(crate) processed: u64,
    /// The highest acknowledge the peer sent, in a message header or its
    /// `authenticate`: what it has durably processed of ours.
    pub(crate) peer_ack: u64,
    /// The header acknowledge of the last peer message we processed: the
    /// floor for the next one's (R1.2-c).
    pub(crate) last_in_ack: u64,
    /// Messages the peer has not acknowledged: (number, acknowledge, message).
    /// (Encoded once: the state is persisted far more often than resent.)
    pub(crate) unacked: VecDeque<(u64, u64, Vec<u8>)>,
    pub(crate) height: u32,
    pub(crate) time: u32,
    /// The caller's latest fee estimate: peer fee rates above ten times it
    /// are refused (section 3.4).
    pub(crate) fee_estimate: Option<u32>,

    // Not persisted.
    /// The state of the transport (see [`Channel::new_transport`]).
    link: Link,
    /// The number of the last peer message received on this transport: the
    /// peer numbers its messages from one, and after a reconnection resends
    /// from the one after the acknowledge of our `authenticate`.
    in_no: u64,
    /// Recent revocation preimages (see `our_preimage`).
    preimage_cache: PreimageCache,
    /// The last state's size, to allocate the next one at once.
    state_len_hint: usize,
    /// [`Channel::htlc_entries`] when the last snapshot was written.
    htlcs_at_snapshot: usize,
    /// How many HTLCs the views held when their maps were last rebuilt
    /// ([`Channel::compact`]): they are rebuilt when that has doubled.
    htlcs_at_compaction: usize,
    /// The current step's input, encoded for the journal (the buffer is
    /// reused).
    input: Vec<u8>,
    /// Replaying the journal in `restore`: nothing is written or sent.
    replaying: bool,
    /// The signatures of the current step (see `journal::Tape`).
    tape: TapeCell,
    compaction: Compaction,
    /// `processed` as of each version not yet durable, and as of the last
    /// durable one.
    processed_at: VecDeque<(u64, u64)>,
    durable_processed: u64,
    version: u64,
    durable: u64,
    dirty: bool,
    persist: VecDeque<Output>,
    gated: Gated,
    pending: Vec<Output>,
    /// Updates for the monitor, released with the next state.
    monitor_pending: Vec<MonitorUpdate>,
}

/// Our revocation preimages as `Channel::our_preimage` derives them: the
/// shachain levels of the last one derived, and the last few preimages with
/// their hashes, since a commitment round asks for each number several
/// times (to build, to tell the monitor, to send). Behind a lock with `std`,
/// so that a channel stays `Sync`.
#[cfg(feature = "std")]
type PreimageCache = std::sync::Mutex<OurRevocations>;
#[cfg(not(feature = "std"))]
type PreimageCache = core::cell::RefCell<OurRevocations>;

pub(crate) struct OurRevocations {
    cursor: crate::shachain::Cursor,
    recent: [Option<(u64, Preimage, sha256::Hash)>; 4],
    next: usize,
}

impl OurRevocations {
    pub(crate) fn new(secrets: &RevocationSecrets) -> Self {
        OurRevocations { cursor: crate::shachain::Cursor::new(secrets), recent: [None; 4], next: 0 }
    }

    /// The preimage of commitment `num` and its hash.
    fn get(&mut self, num: u64) -> (Preimage, sha256::Hash) {
        if let Some((_, preimage, hash)) = self.recent.iter().flatten().find(|(n, _, _)| *n == num) {
            return (*preimage, *hash);
        }
        let preimage = self.cursor.preimage(num);
        let hash = preimage.hash();
        self.recent[self.next] = Some((num, preimage, hash));
        self.next = (self.next + 1) % self.recent.len();
        (preimage, hash)
    }
}

impl fmt::Debug for OurRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OurRevocations { <secret> }")
    }
}
#[cfg(feature = "std")]
type TapeCell = std::sync::Mutex<journal::Tape>;
#[cfg(not(feature = "std"))]
type TapeCell = core::cell::RefCell<journal::Tape>;

/// An entry of `Channel::hash160s`: an `r_hash` and its RIPEMD-160.
pub(crate) type Hash160Entry = (sha256::Hash, [u8; 20]);

/// Gives back the memory of a buffer that once held far more than it holds
/// now. A batch passes through the update log, the output queues and the
/// unacknowledged messages once (1,500 HTLCs leave 1,500 events, updates
/// and entries behind), and their capacity would otherwise stay with the
/// channel for good. A buffer holding less than a quarter of its capacity
/// is cut to twice what it holds, so growing back costs no more than the
/// shrink saved; what it holds counts as at least 16 slots or 1 KiB
/// (whichever is more slots), so a buffer of up to four times that, one
/// step's worth, is never cut only to grow back at the next step.
pub(crate) trait Trim {
    fn trim(&mut self);
}

/// The least a buffer counts as holding: this many slots, or this many
/// bytes' worth if that is more.
const TRIM_FLOOR: usize = 16;
const TRIM_FLOOR_BYTES: usize = 1024;

/// The capacity to cut a buffer holding `len` of `capacity` slots of `T`
/// to, if any.
fn trimmed<T>(len: usize, capacity: usize) -> Option<usize> {
    let floor = TRIM_FLOOR.max(TRIM_FLOOR_BYTES / core::mem::size_of::<T>().max(1));
    let keep = len.max(floor);
    (capacity > 4 * keep).then_some(2 * keep)
}

impl<T> Trim for Vec<T> {
    fn trim(&mut self) {
        if let Some(to) = trimmed::<T>(self.len(), self.capacity()) {
            self.shrink_to(to);
        }
    }
}

impl<T> Trim for VecDeque<T> {
    fn trim(&mut self) {
        if let Some(to) = trimmed::<T>(self.len(), self.capacity()) {
            self.shrink_to(to);
        }
    }
}

/// Outputs waiting for the state they depend on to be durable, in order,
/// each with the number of that state; and how many of them are not
/// messages, so that the oldest change with such an output is found without
/// walking a long queue of messages (a caller that issues many commands
/// before draining would otherwise pay for it at every step).
#[derive(Default, Debug)]
pub(crate) struct Gated {
    queue: VecDeque<(u64, Output)>,
    others: usize,
}

impl Gated {
    fn is_message(output: &Output) -> bool {
        matches!(output, Output::Send { .. })
    }

    pub(crate) fn push_back(&mut self, item: (u64, Output)) {
        self.others += usize::from(!Self::is_message(&item.1));
        self.queue.push_back(item);
    }

    pub(crate) fn extend(&mut self, items: impl IntoIterator<Item = (u64, Output)>) {
        for item in items {
            self.push_back(item);
        }
    }

    fn front(&self) -> Option<&(u64, Output)> {
        self.queue.front()
    }

    fn pop_front(&mut self) -> Option<(u64, Output)> {
        let item = self.queue.pop_front()?;
        self.others -= usize::from(!Self::is_message(&item.1));
        Some(item)
    }

    fn trim(&mut self) {
        self.queue.trim();
    }

    /// Drops the messages (a new transport resends from `unacked`).
    fn drop_messages(&mut self) {
        self.queue.retain(|(_, o)| !Self::is_message(o));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(u64, Output)> {
        self.queue.iter()
    }

    pub(crate) fn into_items(self) -> impl Iterator<Item = (u64, Output)> {
        self.queue.into_iter()
    }

    /// The change of the oldest output that is not a message.
    pub(crate) fn oldest_other(&self) -> Option<u64> {
        if self.others == 0 {
            return None;
        }
        self.queue.iter().find(|(_, o)| !Self::is_message(o)).map(|(v, _)| *v)
    }
}

/// The transport, as the channel sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// Messages flow.
    Up,
    /// A new transport is up and our `authenticate` went out: waiting for
    /// the peer's, which says what to resend.
    AwaitingAuth,
    /// No transport since the channel was restored.
    Down,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("our_num", &self.our_num)
            .field("their_num", &self.their_num)
            .field("to_local", &self.our_view.to_local)
            .field("to_remote", &self.our_view.to_remote)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The connecting node: it will create an anchor of `capacity`
    /// (`WILL_CREATE_ANCHOR`, R2.1-a). `seed` is this channel's shachain seed:
    /// 256 unguessable bits, never reused (R5-a).
    pub fn new_funder(
        config: ChannelConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        seed: [u8; 32],
        capacity: Amount,
    ) -> Result<Self, ChannelError> {
        // R2.2-c: we never offer more than 4294967 satoshis.
        if capacity < config.min_anchor || capacity == Amount::ZERO || capacity > MAX_ANCHOR {
            return Err(ChannelError::BadAnchorAmount(capacity));
        }
        config.validate()?;
        Ok(Self::new(config, signer, seed, Role::Funder, capacity))
    }

    /// The accepting node (`WONT_CREATE_ANCHOR`, R2.1-a).
    pub fn new_fundee(
        config: ChannelConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        seed: [u8; 32],
    ) -> Result<Self, ChannelError> {
        config.validate()?;
        Ok(Self::new(config, signer, seed, Role::Fundee, Amount::ZERO))
    }

    fn new(
        config: ChannelConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        seed: [u8; 32],
        role: Role,
        capacity: Amount,
    ) -> Self {
        let secrets = RevocationSecrets::new(seed);
        let placeholder = sha256::Hash::from_byte_array([0; 32]);
        let empty = View::new(Side::Local, MilliSats::ZERO, MilliSats::ZERO, config.fee_rate);
        let empty_theirs = View::new(Side::Remote, MilliSats::ZERO, MilliSats::ZERO, config.fee_rate);
        let preimage_cache = PreimageCache::new(OurRevocations::new(&secrets));
        let our_final_hash = signer.public_key(KeyRole::Final).wpubkey_hash();
        let mut ch = Channel {
            signer,
            role,
            capacity,
            phase: Phase::AwaitOpen,
            remote: None,
            our_final_hash,
            precomputed: None,
            funding: None,
            anchor_tx: None,
            anchor_broadcast: false,
            anchor_depth: 0,
            anchor_checked: false,
            sent_complete_at: None,
            received_complete: false,
            our_num: 0,
            our_view: empty.clone(),
            our_sig: None,
            their_num: 0,
            their_view: empty_theirs.clone(),
            their_hash: placeholder,
            their_next_hash: None,
            their_prev: None,
            their_txid: None,
            their_prev_txid: None,
            their_secrets: ShachainStore::new(),
            staged_ours: empty.clone(),
            staged_theirs: empty_theirs,
            log: Vec::new(),
            hash160s: BTreeMap::new(),
            next_htlc_id: 0,
            deadlines: BTreeMap::new(),
            must_fail: BTreeMap::new(),
            ever_had_htlc: false,
            close: CloseState::default(),
            sent: 0,
            processed: 0,
            peer_ack: 0,
            last_in_ack: 0,
            link: Link::Up,
            in_no: 0,
            unacked: VecDeque::new(),
            height: 0,
            time: 0,
            fee_estimate: None,
            preimage_cache,
            state_len_hint: 0,
            htlcs_at_snapshot: 0,
            htlcs_at_compaction: 0,
            input: Vec::new(),
            replaying: false,
            tape: Default::default(),
            compaction: Compaction::default(),
            processed_at: VecDeque::new(),
            durable_processed: 0,
            version: 0,
            durable: 0,
            dirty: false,
            persist: VecDeque::new(),
            gated: Gated::default(),
            pending: Vec::new(),
            monitor_pending: Vec::new(),
            secrets,
            config,
        };
        // R2.1-f: the first two revocation hashes are those of shachain
        // indices 2^64-1 and 2^64-2.
        let open = OpenChannel {
            delay: ch.config.delay,
            revocation_hash: ch.secrets.hash(0),
            next_revocation_hash: ch.secrets.hash(1),
            commit_key: ch.signer.public_key(KeyRole::Commit),
            final_key: ch.signer.public_key(KeyRole::Final),
            anch: match role {
                Role::Funder => AnchorOffer::WillCreate,
                Role::Fundee => AnchorOffer::WontCreate,
            },
            min_depth: ch.config.min_depth,
            initial_fee_rate: ch.config.fee_rate,
        };
        ch.send(Message::OpenChannel(Box::new(open)));
        ch.flush();
        ch
    }

    // -----------------------------------------------------------------
    // Getters.
    // -----------------------------------------------------------------

    /// Which side funds the channel.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A short description of the phase ("open", "closed", ...).
    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    /// Whether normal operation has begun and the channel is not closed or
    /// failed.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Normal
    }

    /// Whether the channel has ended (closed or failed).
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::Failed)
    }

    /// The content of our current commitment.
    pub fn our_commitment(&self) -> &View {
        &self.our_view
    }

    /// The content of the peer's latest commitment (the one we signed last).
    pub fn their_commitment(&self) -> &View {
        &self.their_view
    }

    /// Our commitment as it will be once everything staged is committed.
    pub fn our_staged(&self) -> &View {
        &self.staged_ours
    }

    /// The peer's commitment as it will be once everything staged is
    /// committed.
    pub fn their_staged(&self) -> &View {
        &self.staged_theirs
    }

    /// The number of our current commitment (0 is the first).
    pub fn our_commitment_number(&self) -> u64 {
        self.our_num
    }

    /// `side`'s balance in our current commitment.
    pub fn balance(&self, side: Side) -> MilliSats {
        self.our_view.balance(side)
    }

    /// The anchor output, once known.
    pub fn funding(&self) -> Option<&FundingOutput> {
        self.funding.as_ref()
    }

    /// Whether updates are logged that are not yet committed in both
    /// commitments.
    pub fn has_pending_updates(&self) -> bool {
        !self.log.is_empty() || self.their_prev.is_some()
    }

    /// Whether [`commit`](Self::commit) would send an `update_commit` now.
    pub fn can_commit(&self) -> bool {
        self.phase == Phase::Normal && self.their_prev.is_none() && self.log.iter().any(|e| !e.in_theirs)
    }

    /// Our latest commitment transaction, built (unsigned by us) from our
    /// current view: the bytes the peer signed.
    pub fn our_commitment_tx(&self) -> Option<Commitment> {
        self.build_ours(&self.our_view, self.our_num)
    }

    /// Our current commitment, fully signed, ready to broadcast: for an
    /// application that must close at once without the channel (its process
    /// lost, its peer gone). Broadcasting it once it is revoked, after a
    /// later [`Output::Persist`], hands the peer everything (R3.5-e):
    /// prefer [`fail`](Self::fail), which broadcasts it for you.
    pub fn signed_commitment(&self) -> Option<Transaction> {
        let (sig, funding, remote) = (self.our_sig?, self.funding.as_ref()?, self.remote?);
        let ours = self.build_ours(&self.our_view, self.our_num)?;
        ours.finalize(funding, &*self.signer, &remote.commit_key, &sig).ok()
    }

    /// The peer's latest commitment transaction as we signed it.
    pub fn their_commitment_tx(&self) -> Option<Commitment> {
        self.build_theirs(&self.their_view, self.their_hash, self.their_num)
    }

    /// The redemption deadline of the HTLC `id` we offered (R3.1-a), while
    /// it is unresolved.
    pub fn htlc_deadline(&self, id: u64) -> Option<absolute::LockTime> {
        self.deadlines.get(&id).copied()
    }

    /// The `acknowledge` value for an `authenticate` header now (R1.2-b):
    /// the messages processed as of the last durable state, so that a crash
    /// can never make us claim a message we then forget.
    ///
    /// Between [`new_transport`](Self::new_transport) and the peer's
    /// `authenticate` it stays the value `new_transport` returned, which the
    /// inbound numbering starts from.
    pub fn acknowledge(&self) -> u64 {
        match self.link {
            Link::AwaitingAuth => self.in_no,
            Link::Up | Link::Down => self.durable_processed,
        }
    }

    // -----------------------------------------------------------------
    // Outputs.
    // -----------------------------------------------------------------

    /// The next output, or `None`. Call after every input or command until it
    /// returns `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(p) = self.persist.pop_front() {
            return Some(p);
        }
        match self.gated.front() {
            Some((version, _)) if *version <= self.durable => self.gated.pop_front().map(|(_, o)| o),
            _ => None,
        }
    }

    /// The state of `version` (and every earlier one) is durable: release
    /// what depended on it.
    pub fn handle_persisted(&mut self, version: u64) {
        self.durable = self.durable.max(version.min(self.version));
        while self.processed_at.front().is_some_and(|(v, _)| *v <= self.durable) {
            let (_, processed) = self.processed_at.pop_front().expect("checked non-empty");
            self.durable_processed = processed;
        }
    }

    fn send(&mut self, message: Message) {
        self.sent += 1;
        // Every message we build is bounded (routes and reasons by
        // MAX_BLOB, error texts by MAX_ERROR_TEXT), so it encodes.
        let bytes = crate::wire::encode(&message).expect("every message we send is bounded");
        // Without a transport it waits in `unacked` for the next one.
        if self.link == Link::Up {
            self.pending.push(Output::Send { message, acknowledge: self.processed, bytes: bytes.clone() });
        }
        self.unacked.push_back((self.sent, self.processed, bytes));
        self.dirty = true;
    }

    fn emit(&mut self, output: Output) {
        self.pending.push(output);
        self.dirty = true;
    }

    fn monitor(&mut self, update: MonitorUpdate) {
        self.monitor_pending.push(update);
        self.dirty = true;
    }

    /// The monitor's setup and both initial commitments, once both are
    /// signed.
    fn monitor_setup(&mut self, funding: &FundingOutput, ours: Txid, theirs: Txid) {
        let Some(remote) = self.remote else { return };
        let obscuring = remote.obscuring;
        self.monitor(MonitorUpdate::Setup(Box::new(ChannelParams {
            funding: funding.clone(),
            role: self.role,
            our_final: self.signer.public_key(KeyRole::Final),
            their_final: remote.final_key,
            our_delay: remote.delay,
            their_delay: self.config.delay,
            obscuring,
        })));
        let (our_hash, their_hash) = (self.our_hash(0), self.their_hash);
        let (ours_local, theirs_local) = (self.our_view.to_local, self.their_view.to_local);
        self.monitor(MonitorUpdate::Commitment {
            side: Side::Local,
            number: 0,
            txid: ours,
            revocation_hash: our_hash,
            to_local: ours_local,
        });
        self.monitor(MonitorUpdate::Commitment {
            side: Side::Remote,
            number: 0,
            txid: theirs,
            revocation_hash: their_hash,
            to_local: theirs_local,
        });
    }

    fn event(&mut self, event: Event) {
        self.emit(Output::Event(event));
    }

    /// Ends one step: journals a change and gates what it produced behind
    /// that version (or, replaying, only keeps the outputs).
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.version += 1;
        self.processed_at.push_back((self.version, self.processed));
        if self.replaying {
            // The monitor has these updates already (C1-i), and a restored
            // channel has no transport.
            self.monitor_pending.clear();
            for o in self.pending.drain(..).filter(|o| !matches!(o, Output::Send { .. })) {
                self.gated.push_back((self.version, o));
            }
            return;
        }
        for u in self.monitor_pending.drain(..) {
            self.persist.push_back(Output::Monitor(u));
        }
        // The first change (the channel's creation) has no input and starts
        // the store with a snapshot; the compaction rule says when the next.
        let snapshot = self.input.is_empty() || self.compaction.due_at(self.state_len_estimate());
        // Maps filled key by key are half full. A snapshot walks the whole
        // state anyway, so it rebuilds them with full nodes and has the
        // buffers give back what a batch left; so does the views' doubling
        // since the last rebuild (amortized, a constant per HTLC).
        if snapshot || self.htlc_entries() > 2 * self.htlcs_at_compaction.max(512) {
            self.compact();
        }
        let write = if snapshot {
            let state = self.to_bytes();
            self.state_len_hint = state.len();
            self.htlcs_at_snapshot = self.htlc_entries();
            self.compaction.snapshotted(state.len());
            Write::Snapshot { seq: self.version, state }
        } else {
            let header = journal::Header {
                seq: self.version,
                unreleased_from: self.unreleased_from(),
                sent: self.sent,
                processed: self.processed,
            };
            let entry = journal::entry(&header, &journal::tape_of(&mut self.tape).recorded, &self.input);
            self.compaction.appended(entry.len());
            Write::Append { seq: self.version, entry }
        };
        self.input.clear();
        self.persist.push_back(Output::Persist(write));
        for o in self.pending.drain(..) {
            self.gated.push_back((self.version, o));
        }
        self.pending.trim();
        self.monitor_pending.trim();
        self.input.trim();
        self.persist.trim();
        self.gated.trim();
    }

    // -----------------------------------------------------------------
    // Inputs.
    // -----------------------------------------------------------------

    /// A new best block at `height`, with median time past `time`. Heights
    /// and times that go backwards are ignored.
    pub fn handle_block(&mut self, height: u32, time: u32) {
        if self.is_terminal() || (height <= self.height && time <= self.time) {
            return;
        }
        let _ = self.step(Input::Block { height, time });
    }

    fn apply_block(&mut self, height: u32, time: u32) {
        if self.is_terminal() || (height <= self.height && time <= self.time) {
            return;
        }
        self.height = self.height.max(height);
        self.time = self.time.max(time);
        self.dirty = true;
        // R2.4-c: an open_complete sent before any block was seen (height
        // 0) starts its timeout at the first block, not at genesis.
        if self.sent_complete_at == Some(0) {
            self.sent_complete_at = Some(self.height);
        }
        if let Err(v) = self.check_clock() {
            self.fail_with(FailOrigin::Chain, v.rule, v.problem);
        }
        self.progress();
    }

    // -----------------------------------------------------------------
    // Commands (the rest are with their phase).
    // -----------------------------------------------------------------

    fn wrong_phase(&self, command: &'static str) -> ChannelError {
        ChannelError::WrongPhase { command, phase: self.phase.name() }
    }

    // -----------------------------------------------------------------
    // Message handling.
    // -----------------------------------------------------------------

    fn dispatch(&mut self, message: Message, ack: u64) -> Result<(), Violation> {
        let name = message.name();
        // A normal-operation message before both open_completes breaks
        // R2.4-b; anything else out of place breaks the order of R2-a.
        let normal_message = name.starts_with("update_") || name.starts_with("close_");
        let unexpected = |phase: Phase| {
            let rule = if normal_message && phase != Phase::Normal { Rule::R2_4_b } else { Rule::R2_a };
            violation(rule, format!("unexpected {name} while {}", phase.name()))
        };
        match (self.phase, message) {
            // R6.3-b: an error fails the connection and gets no error back.
            (_, Message::Error(ErrorMessage { problem })) => {
                let problem = format!("peer sent error: {}", problem.unwrap_or_default());
                self.fail_with(FailOrigin::PeerError, Some(Rule::R6_3_b), problem);
                Ok(())
            }
            // R1-a: an unknown odd message is ignored.
            (_, Message::Unknown(_)) => Ok(()),
            (Phase::AwaitOpen, Message::OpenChannel(o)) => self.on_open_channel(*o),
            (Phase::AwaitOpenAnchor, Message::OpenAnchor(a)) => self.on_open_anchor(*a),
            (Phase::AwaitCommitSig, Message::OpenCommitSig(s)) => self.on_open_commit_sig(s),
            (Phase::AwaitDepth, Message::OpenComplete) if !self.received_complete => {
                self.received_complete = true;
                Ok(())
            }
            (Phase::Normal, Message::UpdateAddHtlc(m)) => self.on_add(m, ack),
            (Phase::Normal, Message::UpdateFulfillHtlc(m)) => {
                self.on_remove(Update::Fulfill { id: m.id, r: m.r }, Vec::new())
            }
            (Phase::Normal, Message::UpdateFailHtlc(m)) => self.on_remove(Update::Fail { id: m.id }, m.reason),
            (Phase::Normal, Message::UpdateFee(m)) => self.on_fee(m.fee_rate),
            (Phase::Normal, Message::UpdateCommit(m)) => self.on_commit(m.sig, ack),
            (Phase::Normal, Message::UpdateRevocation(m)) => self.on_revocation(m),
            (Phase::Normal, Message::CloseClearing) => self.on_close_clearing(),
            (Phase::Normal, Message::CloseSignature(m)) => self.on_close_signature(m, ack),
            (phase, _) => Err(unexpected(phase)),
        }
    }

    // -----------------------------------------------------------------
    // Progress that follows from state: open_complete, close negotiation.
    // -----------------------------------------------------------------

    fn progress(&mut self) {
        if self.phase == Phase::AwaitDepth {
            let remote = self.remote.expect("known before the anchor");
            let needed = self.config.min_depth.max(remote.min_depth).max(1);
            // R2.4-a: open_complete only once the anchor is deep enough.
            if self.sent_complete_at.is_none() && self.anchor_depth >= needed {
                self.send(Message::OpenComplete);
                self.sent_complete_at = Some(self.height);
            }
            // R2.4-b: normal operation once both were sent and received.
            if self.sent_complete_at.is_some() && self.received_complete {
                self.phase = Phase::Normal;
                let funding = self.funding.as_ref().expect("known");
                let event = Event::ChannelOpen { funding: funding.outpoint(), capacity: funding.value() };
                self.event(event);
            }
        }
        if self.phase == Phase::Normal {
            self.send_decided_fails();
        }
        // R4.2-a: once clearing is complete, open the fee negotiation.
        if self.phase == Phase::Normal && self.close.our_fee.is_none() && self.clearing_complete() {
            let fee = self.initial_close_fee();
            if let Err(v) = self.send_close_signature(fee) {
                self.fail_with(FailOrigin::Local, v.rule, v.problem);
            }
        }
    }

    // -----------------------------------------------------------------
    // Building commitments.
    // -----------------------------------------------------------------

    /// Our revocation preimage of commitment `num`. The preimages asked
    /// for are of neighbouring commitments (the hash of the next but one
    /// when one is signed, the preimage of the previous when revoked), so
    /// the derivation resumes from the levels it shares with the last one.
    fn our_revocation(&self, num: u64) -> (Preimage, sha256::Hash) {
        #[cfg(feature = "std")]
        let mut cache = self.preimage_cache.lock().expect("never poisoned: no code panics while holding it");
        #[cfg(not(feature = "std"))]
        let mut cache = self.preimage_cache.borrow_mut();
        cache.get(num)
    }

    fn our_preimage(&self, num: u64) -> Preimage {
        self.our_revocation(num).0
    }

    fn our_hash(&self, num: u64) -> sha256::Hash {
        self.our_revocation(num).1
    }

    fn build_ours(&self, view: &View, num: u64) -> Option<Commitment> {
        self.build_ours_with(self.funding.as_ref()?, view, num)
    }

    fn build_ours_with(&self, funding: &FundingOutput, view: &View, num: u64) -> Option<Commitment> {
        self.with_our_spec(funding, view, num, commitment::build_with)
    }

    /// Our commitment `num` holding `view`, as far as checking the peer's
    /// signature on it and telling the monitor need (no output map).
    fn id_ours(&self, view: &View, num: u64) -> Option<CommitmentId> {
        let pre = self.precomputed.as_ref()?.ours();
        self.with_our_spec(self.funding.as_ref()?, view, num, |spec, hash| commitment::id_with(spec, hash, false, pre))
    }

    /// Runs `f` on the spec of our commitment `num` holding `view`.
    fn with_our_spec<T>(
        &self,
        funding: &FundingOutput,
        view: &View,
        num: u64,
        f: impl FnOnce(&CommitmentSpec<'_>, &bitcoin::WPubkeyHash) -> Result<T, commitment::CommitmentError>,
    ) -> Option<T> {
        let remote = self.remote?;
        let (to_owner, to_other) = view.owner_balances();
        let spec = CommitmentSpec {
            funding,
            owner_final: self.signer.public_key(KeyRole::Final),
            other_final: remote.final_key,
            to_owner,
            to_other,
            htlcs: &view.htlc_specs(&self.hash160s),
            fee_rate_per_kb: view.fee_rate,
            revocation_hash: self.our_hash(num),
            // Our outputs wait for the delay the peer asked for.
            delay: remote.delay,
            number: CommitmentNumber { number: num, obscuring: remote.obscuring },
        };
        f(&spec, &remote.final_hash).ok()
    }

    fn build_theirs(&self, view: &View, revocation_hash: sha256::Hash, num: u64) -> Option<Commitment> {
        self.build_theirs_with(self.funding.as_ref()?, view, revocation_hash, num)
    }

    /// Rebuilds the HTLC maps with full nodes and trims the buffers: what
    /// a snapshot does besides writing the state, since it walks the whole
    /// state anyway.
    fn compact(&mut self) {
        // A small map's slack is small: only large ones are rebuilt.
        fn rebuild<K: Ord, V>(map: &mut BTreeMap<K, V>) {
            if map.len() >= 256 {
                *map = core::mem::take(map).into_iter().collect();
            }
        }
        for view in [&mut self.our_view, &mut self.their_view, &mut self.staged_ours, &mut self.staged_theirs] {
            rebuild(&mut view.htlcs);
        }
        if let Some((view, _)) = &mut self.their_prev {
            rebuild(&mut view.htlcs);
        }
        rebuild(&mut self.hash160s);
        self.htlcs_at_compaction = self.htlc_entries();
        self.unacked.trim();
        self.processed_at.trim();
    }

    /// How many HTLCs the views hold, each counted once per view: what makes
    /// a snapshot large.
    fn htlc_entries(&self) -> usize {
        let views = [&self.our_view, &self.their_view, &self.staged_ours, &self.staged_theirs];
        views.iter().map(|v| v.htlcs.len()).sum::<usize>() + self.their_prev.as_ref().map_or(0, |(v, _)| v.htlcs.len())
    }

    /// About how large a snapshot would be now: the last one, and 49 bytes
    /// (an encoded HTLC) for each HTLC a view holds beyond what the views
    /// held then. A lower estimate of the growth: the log's entries for
    /// those HTLCs take more.
    fn state_len_estimate(&self) -> usize {
        let grown = self.htlc_entries().saturating_sub(self.htlcs_at_snapshot);
        self.state_len_hint + 49 * grown
    }

    /// The anchor is known: it, and what is derived from it.
    pub(crate) fn set_funding(&mut self, funding: FundingOutput) {
        let ours = self.signer.public_key(KeyRole::Final);
        self.precomputed = self.remote.map(|r| Precomputed::new(&funding, r.obscuring, &ours, &r.final_key));
        self.funding = Some(funding);
    }

    fn build_theirs_with(
        &self,
        funding: &FundingOutput,
        view: &View,
        revocation_hash: sha256::Hash,
        num: u64,
    ) -> Option<Commitment> {
        self.with_their_spec(funding, view, revocation_hash, num, commitment::build_with)
    }

    /// The peer's commitment `num` holding `view`, as far as signing it and
    /// telling the monitor need (no output map).
    fn id_theirs(&self, view: &View, revocation_hash: sha256::Hash, num: u64) -> Option<CommitmentId> {
        let funding = self.funding.as_ref()?;
        let pre = self.precomputed.as_ref()?.theirs();
        self.with_their_spec(funding, view, revocation_hash, num, |spec, hash| {
            commitment::id_with(spec, hash, true, pre)
        })
    }

    /// Runs `f` on the spec of the peer's commitment `num` holding `view`.
    fn with_their_spec<T>(
        &self,
        funding: &FundingOutput,
        view: &View,
        revocation_hash: sha256::Hash,
        num: u64,
        f: impl FnOnce(&CommitmentSpec<'_>, &bitcoin::WPubkeyHash) -> Result<T, commitment::CommitmentError>,
    ) -> Option<T> {
        let remote = self.remote?;
        let (to_owner, to_other) = view.owner_balances();
        let spec = CommitmentSpec {
            funding,
            owner_final: remote.final_key,
            other_final: self.signer.public_key(KeyRole::Final),
            to_owner,
            to_other,
            htlcs: &view.htlc_specs(&self.hash160s),
            fee_rate_per_kb: view.fee_rate,
            revocation_hash,
            // The peer's outputs wait for the delay we asked for.
            delay: self.config.delay,
            number: CommitmentNumber { number: num, obscuring: remote.obscuring },
        };
        f(&spec, &self.our_final_hash).ok()
    }

    // -----------------------------------------------------------------
    // Failing the connection (section 6.3).
    // -----------------------------------------------------------------
}

use bitcoin::hashes::Hash as _;
