//! The channel: a sans-IO state machine for establishment (section 2),
//! staged/committed updates (section 3), cooperative close (section 4) and
//! failing the connection (section 6.3).
//!
//! See [`Channel`] for the contract.

mod persist;
mod view;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use bitcoin::hashes::sha256;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{absolute, Amount, CompressedPublicKey, OutPoint, ScriptBuf, Transaction, Txid};

pub use persist::RestoreError;
use view::{Entry, Refusal, Update};
pub use view::{Htlc, Side, View, MAX_HTLC_OUTPUTS_PER_SIDE};

use crate::fees::{commitment_fee, fee_for_bytecount, DUST_LIMIT};
use crate::rules::Rule;
use crate::shachain::{RevocationSecrets, ShachainStore};
use crate::tx::closing::{build_close, CloseSpec, CloseTx};
use crate::tx::commitment::{self, Commitment, CommitmentSpec, HtlcSpec};
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
        }
    }
}

/// What the channel hands the caller (drained with [`Channel::poll_output`]).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send `message` with `acknowledge` in its transport header (ruling D8).
    Send {
        /// The message.
        message: Message,
        /// The header's acknowledge value (R1.2-b).
        acknowledge: u64,
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
    /// Store `state` durably, then call [`Channel::handle_persisted`] with
    /// `version`. Nothing that depends on this state is released before.
    Persist {
        /// Increases by one with every state change.
        version: u64,
        /// The whole channel state ([`Channel::restore`] reads it back).
        state: Vec<u8>,
    },
    /// Something the application should know.
    Event(Event),
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
    /// The peer revoked this commitment: keep the record durably and, should
    /// its txid ever appear on chain, build the penalty from it (R3-a,
    /// R6.1-b). The channel itself keeps only current state.
    RevokedCommitment(Box<RevokedCommitment>),
}

/// Everything needed to rebuild a revoked commitment of the peer and take
/// all its outputs (R3-a).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RevokedCommitment {
    /// Its commitment number.
    pub number: u64,
    /// Its txid.
    pub txid: Txid,
    /// The revocation preimage the peer revealed.
    pub preimage: Preimage,
    /// The anchor it spends.
    pub funding: FundingOutput,
    /// The peer's balance in it.
    pub to_owner: MilliSats,
    /// Our balance in it.
    pub to_other: MilliSats,
    /// Its HTLCs, directions seen from the peer.
    pub htlcs: Vec<HtlcSpec>,
    /// Its fee rate.
    pub fee_rate: u32,
    /// The delay on the peer's outputs (ours).
    pub delay: Delay,
    /// The peer's `final_key`.
    pub owner_final: CompressedPublicKey,
    /// Our `final_key`.
    pub other_final: CompressedPublicKey,
}

impl RevokedCommitment {
    /// The commitment transaction, rebuilt exactly; an error only for a
    /// record that no channel produced.
    pub fn rebuild(&self) -> Result<Commitment, commitment::CommitmentError> {
        commitment::build(&CommitmentSpec {
            funding: &self.funding,
            owner_final: self.owner_final,
            other_final: self.other_final,
            to_owner: self.to_owner,
            to_other: self.to_other,
            htlcs: &self.htlcs,
            fee_rate_per_kb: self.fee_rate,
            revocation_hash: self.preimage.hash(),
            delay: self.delay,
        })
    }
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
    /// The anchor amount is outside what the protocol allows (R2.2-c).
    #[error("anchor amount {0} is outside 1..=4294967 sat (R2.2-c)")]
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
///   [`handle_anchor_spent`](Self::handle_anchor_spent)), and
///   [`handle_persisted`](Self::handle_persisted), which says a state
///   version is durable. A peer's violation is never returned as an error:
///   it fails the channel (an `error` message, the broadcast of section 6.3,
///   an [`Event::ChannelFailed`]).
/// - **Commands** from the application: [`offer_htlc`](Self::offer_htlc),
///   [`fulfill_htlc`](Self::fulfill_htlc), [`fail_htlc`](Self::fail_htlc),
///   [`update_fee`](Self::update_fee), [`commit`](Self::commit),
///   [`close`](Self::close), [`provide_anchor`](Self::provide_anchor),
///   [`fail`](Self::fail), [`reconnect`](Self::reconnect). A mistake returns a
///   [`ChannelError`] and changes nothing.
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
///             Output::Persist { version, state } => { db.write(state)?; channel.handle_persisted(version); }
///             Output::Send { message, acknowledge } => transport.send(acknowledge, &message)?,
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
    pub(crate) funding: Option<FundingOutput>,
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
    preimage_cache: std::sync::Mutex<Vec<(u64, Preimage)>>,
    /// The last state's size, to allocate the next one at once.
    state_len_hint: usize,
    /// `processed` as of each version not yet durable, and as of the last
    /// durable one.
    processed_at: VecDeque<(u64, u64)>,
    durable_processed: u64,
    version: u64,
    durable: u64,
    dirty: bool,
    persist: VecDeque<Output>,
    gated: VecDeque<(u64, Output)>,
    pending: Vec<Output>,
    /// The outputs other than messages that had not been released when the
    /// latest state was written: kept in it and emitted again after a
    /// restore (at least once, ADR 0003).
    unreleased: Vec<Output>,
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
        if capacity == Amount::ZERO || capacity > MAX_ANCHOR {
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
        let mut ch = Channel {
            signer,
            role,
            capacity,
            phase: Phase::AwaitOpen,
            remote: None,
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
            preimage_cache: Default::default(),
            state_len_hint: 0,
            processed_at: VecDeque::new(),
            durable_processed: 0,
            version: 0,
            durable: 0,
            dirty: false,
            persist: VecDeque::new(),
            gated: VecDeque::new(),
            pending: Vec::new(),
            unreleased: Vec::new(),
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
        ch.send(Message::OpenChannel(open));
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

    /// The peer's latest commitment transaction as we signed it.
    pub fn their_commitment_tx(&self) -> Option<Commitment> {
        self.build_theirs(&self.their_view, self.their_hash)
    }

    /// The redemption deadline of the HTLC `id` we offered (R3.1-a), while
    /// it is unresolved.
    pub fn htlc_deadline(&self, id: u64) -> Option<absolute::LockTime> {
        self.deadlines.get(&id).copied()
    }

    /// The `acknowledge` value for an `authenticate` header now (R1.2-b):
    /// the messages processed as of the last durable state, so that a crash
    /// can never make us claim a message we then forget.
    pub fn acknowledge(&self) -> u64 {
        self.durable_processed
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
        self.unacked.push_back((self.sent, self.processed, bytes));
        // Without a transport it waits in `unacked` for the next one.
        if self.link == Link::Up {
            self.pending.push(Output::Send { message, acknowledge: self.processed });
        }
        self.dirty = true;
    }

    fn emit(&mut self, output: Output) {
        self.pending.push(output);
        self.dirty = true;
    }

    fn event(&mut self, event: Event) {
        self.emit(Output::Event(event));
    }

    /// Ends one input or command: persists a changed state and gates what it
    /// produced behind that version.
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.version += 1;
        self.processed_at.push_back((self.version, self.processed));
        // What must reach the application at least once: everything not yet
        // released, from this change and from earlier ones whose writes are
        // still in flight, since a crash may keep this state and lose those.
        self.unreleased = self
            .gated
            .iter()
            .map(|(_, o)| o)
            .chain(&self.pending)
            .filter(|o| !matches!(o, Output::Send { .. }))
            .cloned()
            .collect();
        let state = self.to_bytes();
        self.state_len_hint = state.len();
        self.persist.push_back(Output::Persist { version: self.version, state });
        for o in self.pending.drain(..) {
            self.gated.push_back((self.version, o));
        }
    }

    // -----------------------------------------------------------------
    // Inputs.
    // -----------------------------------------------------------------

    /// A message from the peer, with the `acknowledge` value of its transport
    /// header (ruling D8).
    ///
    /// The peer's `authenticate` goes to
    /// [`handle_authenticate`](Self::handle_authenticate). A message the peer
    /// retransmits after a reconnection that this channel had already
    /// processed is recognised by its number and skipped (R1.2-b, R1.2-d).
    pub fn handle_message(&mut self, message: Message, acknowledge: u64) {
        // `authenticate` belongs to the transport and is not counted (R1.2-b).
        if let Message::Authenticate(_) = message {
            self.handle_authenticate(acknowledge);
            return;
        }
        if self.is_terminal() {
            return;
        }
        if self.link != Link::Up {
            // The peer's first message on a transport is its authenticate,
            // which says what we must resend: anything before it cannot be
            // numbered.
            let problem = format!("{} before the peer's authenticate", message.name());
            self.processed += 1;
            self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_a), problem);
            self.flush();
            return;
        }
        self.in_no += 1;
        if self.in_no <= self.processed {
            // R1.2-d: a retransmission of a message we processed before the
            // reconnection (our authenticate could only acknowledge what was
            // durable). Its effects are already in the state.
            return;
        }
        self.processed += 1;
        self.dirty = true;
        // R1.2-c: the acknowledges of the peer's messages never decrease, nor
        // exceed what we sent. Retransmissions keep their first header, so
        // the floor is the last processed message's, not the authenticate's.
        if acknowledge < self.last_in_ack || acknowledge > self.sent {
            let problem = format!("acknowledge {acknowledge} outside {}..={}", self.last_in_ack, self.sent);
            self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_c), problem);
            self.flush();
            return;
        }
        self.last_in_ack = acknowledge;
        self.trim_unacked(acknowledge);
        if let Err(v) = self.dispatch(message, acknowledge) {
            self.fail_with(FailOrigin::PeerViolation, v.rule, v.problem);
        }
        self.progress();
        self.flush();
    }

    /// A message from the peer that did not decode: fails the connection
    /// with the rule it broke (R1-b, R1-d, R2.1-e).
    pub fn handle_malformed(&mut self, error: &DecodeError) {
        if self.is_terminal() {
            return;
        }
        self.processed += 1;
        self.fail_with(
            FailOrigin::PeerViolation,
            error.rule().and_then(Rule::from_id),
            format!("malformed message: {error}"),
        );
        self.flush();
    }

    /// The anchor transaction `anchor` is `depth` blocks deep (1 = in the
    /// tip). The first report checks that its output really is the 2-of-2
    /// holding the amount `open_anchor` claimed: a funder that lied fails the
    /// channel before it opens. A transaction with another txid is not the
    /// anchor and is ignored.
    pub fn handle_anchor_depth(&mut self, anchor: &Transaction, depth: u32) {
        if self.is_terminal() || depth <= self.anchor_depth {
            return;
        }
        let Some(funding) = self.funding.clone() else { return };
        if anchor.compute_txid() != funding.outpoint().txid {
            return;
        }
        if !self.anchor_checked {
            let out = anchor.output.get(funding.outpoint().vout as usize);
            if out.is_none_or(|o| o.script_pubkey != funding.script_pubkey() || o.value != funding.value()) {
                // Every signature we hold commits to the described output, so
                // no transaction of ours could spend the real one.
                let problem = "the anchor on chain is not the output open_anchor described".to_string();
                self.fail_inner(FailOrigin::Chain, Some(Rule::R2_2_d), problem, Some(FailBroadcast::Nothing));
                self.flush();
                return;
            }
            self.anchor_checked = true;
        }
        self.anchor_depth = depth;
        self.dirty = true;
        self.progress();
        self.flush();
    }

    /// A new best block at `height`, with median time past `time`. Heights
    /// and times that go backwards are ignored.
    pub fn handle_block(&mut self, height: u32, time: u32) {
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
        self.flush();
    }

    /// A transaction spending the anchor was seen (R6.1-a). A close with a
    /// fee either side proposed ends the channel as closed; anything else
    /// fails it.
    pub fn handle_anchor_spent(&mut self, tx: &Transaction) {
        // Closed (our own close seen again) or failed: nothing more to do.
        if self.is_terminal() {
            return;
        }
        // A close with a fee we signed ends the negotiation, whoever
        // broadcast it (the peer may accept our proposal without echoing
        // it, ruling D5).
        let txid = tx.compute_txid();
        let signed = self.close.signed_fees.clone();
        if signed.into_iter().any(|fee| self.build_close(fee).is_some_and(|c| c.tx().compute_txid() == txid)) {
            self.event(Event::ChannelClosed { tx: tx.clone() });
            self.phase = Phase::Closed;
            self.flush();
            return;
        }
        self.anchor_broadcast = true;
        self.fail_inner(
            FailOrigin::Chain,
            Some(Rule::R6_1_a),
            format!("anchor spent by {}", tx.compute_txid()),
            Some(FailBroadcast::AnchorSpent),
        );
        self.flush();
    }

    /// A new transport replaces the old one (R1.2-a): call it once the
    /// transport is up, before reading anything from it, and send the
    /// peer an `authenticate` whose header carries the returned
    /// acknowledge: the messages we have durably processed (R1.2-b). A
    /// restored channel starts without a transport and needs this call too.
    ///
    /// Messages queued for the old transport and not yet drained are
    /// dropped, and nothing is sent until the peer's `authenticate` arrives
    /// ([`handle_authenticate`](Self::handle_authenticate)), since only it
    /// says where the retransmission starts.
    pub fn new_transport(&mut self) -> u64 {
        self.gated.retain(|(_, o)| !matches!(o, Output::Send { .. }));
        self.link = Link::AwaitingAuth;
        // The peer resends everything after what we acknowledge now.
        self.in_no = self.durable_processed;
        self.durable_processed
    }

    /// The peer's `authenticate`, with the acknowledge of its header: every
    /// message of ours it does not cover is sent again, with its original
    /// header, so the bytes are identical (R1.2-d, R1.2-e); then new messages
    /// flow. An acknowledge below one the peer sent before, or above what we
    /// sent, fails the connection (R1.2-c). Outside a reconnection (no
    /// [`new_transport`](Self::new_transport) before it) it is ignored.
    pub fn handle_authenticate(&mut self, acknowledge: u64) {
        // A failed channel still resends its unacknowledged messages: the
        // peer should learn why (R6.3-c).
        if self.link != Link::AwaitingAuth {
            return;
        }
        self.link = Link::Up;
        if acknowledge < self.peer_ack || acknowledge > self.sent {
            let problem = format!("authenticate acknowledges {acknowledge}, outside {}..={}", self.peer_ack, self.sent);
            self.fail_with(FailOrigin::PeerViolation, Some(Rule::R1_2_c), problem);
            self.flush();
            return;
        }
        self.trim_unacked(acknowledge);
        for (_, ack, bytes) in &self.unacked {
            let message = crate::wire::decode(bytes).expect("checked to decode when stored or restored");
            self.gated.push_back((self.version, Output::Send { message, acknowledge: *ack }));
        }
    }

    /// The peer has processed our messages up to `acknowledge`: they need
    /// no retransmission.
    fn trim_unacked(&mut self, acknowledge: u64) {
        if acknowledge > self.peer_ack {
            self.peer_ack = acknowledge.min(self.sent);
            while self.unacked.front().is_some_and(|(n, _, _)| *n <= self.peer_ack) {
                self.unacked.pop_front();
            }
            self.dirty = true;
        }
    }

    // -----------------------------------------------------------------
    // Commands.
    // -----------------------------------------------------------------

    /// Funder: the wallet's anchor transaction (signed, not broadcast,
    /// R2.2-a), paying the anchor at output `vout`.
    pub fn provide_anchor(&mut self, tx: Transaction, vout: u32) -> Result<(), ChannelError> {
        if self.phase != Phase::AwaitAnchorTx {
            return Err(self.wrong_phase("provide_anchor"));
        }
        let remote = self.remote.expect("known after open_channel");
        let ours = self.signer.public_key(KeyRole::Commit);
        let funding =
            validate_funding(&tx, vout, &ours, &remote.commit_key, self.capacity).map_err(ChannelError::BadAnchor)?;
        let theirs = self
            .build_theirs_with(&funding, &self.their_view, self.their_hash)
            .expect("the initial commitment builds: its fees were checked");
        let commit_sig = theirs.sign(&funding, &*self.signer)?;
        self.send(Message::OpenAnchor(OpenAnchor {
            txid: funding.outpoint().txid,
            output_index: funding.outpoint().vout,
            amount: funding.value(),
            commit_sig,
        }));
        self.funding = Some(funding);
        self.anchor_tx = Some(tx);
        self.phase = Phase::AwaitCommitSig;
        self.flush();
        Ok(())
    }

    /// Offers an HTLC of `amount` for `r_hash`, expiring at `expiry`, with
    /// opaque `route`; returns its id. Checks R3.1-b, R3.2-a..e and R4.1-a.
    pub fn offer_htlc(
        &mut self,
        amount: MilliSats,
        r_hash: sha256::Hash,
        expiry: absolute::LockTime,
        route: Vec<u8>,
    ) -> Result<u64, ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("offer_htlc"));
        }
        // R4.1-a: no new HTLC after close_clearing either way.
        if self.close.sent_clearing || self.close.received_clearing {
            return Err(ChannelError::Closing);
        }
        // R3.2-b
        let wire_amount =
            HtlcMsat::try_from(amount).ok().filter(|a| a.to_u32() > 0).ok_or(ChannelError::BadAmount(amount))?;
        // R3.2-d, R3.1-b: the expiry is at least the peer's delay away, so
        // the deadline is still ahead.
        let earliest = self.earliest_expiry(expiry);
        if !earliest.is_implied_by(expiry) {
            return Err(ChannelError::ExpiryTooSoon { expiry, earliest });
        }
        if route.len() > MAX_BLOB {
            return Err(ChannelError::TooLarge(route.len()));
        }
        let htlc = Htlc { offerer: Side::Local, id: self.next_htlc_id, amount: wire_amount, r_hash, expiry };
        let update = Update::Add(htlc);
        self.check_both(Side::Local, &update, true).map_err(Refusal::caller)?;
        self.next_htlc_id += 1;
        // R3.1-a
        self.deadlines.insert(htlc.id, self.deadline(expiry));
        self.ever_had_htlc = true;
        self.send(Message::UpdateAddHtlc(UpdateAddHtlc {
            id: htlc.id,
            amount: wire_amount,
            r_hash,
            expiry,
            route: route.clone(),
        }));
        self.log_update(Side::Local, update, route, None);
        self.flush();
        Ok(htlc.id)
    }

    /// Fulfills the incoming HTLC `id` with its preimage `r` (R3.3-a).
    pub fn fulfill_htlc(&mut self, id: u64, r: Preimage) -> Result<(), ChannelError> {
        self.remove_htlc("fulfill_htlc", Update::Fulfill { id, r }, Vec::new())
    }

    /// Fails the incoming HTLC `id`; `reason` is sent as is (copy it
    /// unchanged from the outgoing HTLC's failure when relaying, R3.3-e).
    pub fn fail_htlc(&mut self, id: u64, reason: Vec<u8>) -> Result<(), ChannelError> {
        self.remove_htlc("fail_htlc", Update::Fail { id }, reason)
    }

    fn remove_htlc(&mut self, command: &'static str, update: Update, reason: Vec<u8>) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase(command));
        }
        if reason.len() > MAX_BLOB {
            return Err(ChannelError::TooLarge(reason.len()));
        }
        // R3.3-a: only the peer's HTLCs, as staged (not already removed).
        self.check_both(Side::Local, &update, true).map_err(Refusal::caller)?;
        // R3.3-c: the HTLC must be in a current commitment, as the peer will
        // check; and R is revealed only once no commitment the peer can
        // still broadcast lacks the HTLC.
        let ready = match update {
            Update::Fulfill { id, .. } => self.locked_in(Side::Remote, id),
            Update::Fail { id } => self.in_a_commitment(Side::Remote, id),
            _ => true,
        };
        if !ready {
            let (Update::Fulfill { id, .. } | Update::Fail { id }) = update else { unreachable!("removals only") };
            return Err(ChannelError::NotCommitted(id));
        }
        let removed = self.staged_htlc_of(Side::Local, &update);
        let message = match &update {
            Update::Fulfill { id, r } => Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id: *id, r: *r }),
            Update::Fail { id } => Message::UpdateFailHtlc(UpdateFailHtlc { id: *id, reason: reason.clone() }),
            _ => unreachable!("removals only"),
        };
        self.send(message);
        self.log_update(Side::Local, update, reason, removed);
        self.flush();
        Ok(())
    }

    /// Changes the fee rate of our commitments (R3.4-a); it applies once the
    /// peer acknowledges it (ruling D7).
    ///
    /// Fees are frozen once `close_clearing` has been sent or received (see
    /// `docs/adr/0004-fees-freeze-at-clearing.md`): a fee change that crossed
    /// the peer's `close_signature` would leave the two sides disagreeing on
    /// whether clearing is complete (R4.2-a).
    pub fn update_fee(&mut self, fee_rate: u32) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("update_fee"));
        }
        if self.close.sent_clearing || self.close.received_clearing {
            return Err(ChannelError::WrongPhase { command: "update_fee", phase: "clearing for a close" });
        }
        let mut staged = self.staged_ours.clone();
        staged.fee_rate = fee_rate;
        if fee_rate < self.config.min_fee_rate || !staged.has_output() {
            return Err(ChannelError::BadFeeRate);
        }
        self.send(Message::UpdateFee(UpdateFee { fee_rate }));
        self.log_update(Side::Local, Update::Fee(fee_rate), Vec::new(), None);
        self.flush();
        Ok(())
    }

    /// A fee estimate from the caller (satoshi per 1000 bytes for timely
    /// inclusion): if our commitments' rate is below it, raise it to twice
    /// the estimate, as the text suggests (R3.4-c), but never above our
    /// `max_fee_rate`, the most a peer configured like us accepts (R3.4-b).
    /// Returns whether an `update_fee` was sent.
    pub fn handle_fee_estimate(&mut self, estimate: u32) -> Result<bool, ChannelError> {
        if self.fee_estimate != Some(estimate) {
            self.fee_estimate = Some(estimate);
            self.dirty = true;
            self.flush();
        }
        let clearing = self.close.sent_clearing || self.close.received_clearing;
        let target = estimate.saturating_mul(2).min(self.config.max_fee_rate).max(self.config.min_fee_rate);
        let current = self.staged_ours.fee_rate;
        if self.phase != Phase::Normal || clearing || current >= estimate || current >= target {
            return Ok(false);
        }
        self.update_fee(target).map(|()| true)
    }

    /// Signs the peer's next commitment with every staged change and sends
    /// `update_commit` (R3.5-a, R3.5-b).
    pub fn commit(&mut self) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("commit"));
        }
        if self.their_prev.is_some() {
            return Err(ChannelError::AwaitingRevocation);
        }
        // R3.5-a: never without a staged update.
        if !self.log.iter().any(|e| !e.in_theirs) {
            return Err(ChannelError::NothingToCommit);
        }
        let next_hash = self.their_next_hash.expect("known while no revocation is awaited");
        let view = self.staged_theirs.clone();
        let Some(built) = self.build_theirs(&view, next_hash) else {
            // Only a channel so small that fees leave every output dust gets
            // here (R3.6-d leaves a transaction with no output): it cannot go
            // on, so it fails like any broken channel.
            let problem = "the peer's next commitment would have no output: every output is dust";
            self.fail_with(FailOrigin::Local, Some(Rule::R3_6_d), problem.to_string());
            self.flush();
            return Err(ChannelError::Failed(problem));
        };
        let sig = built.sign(self.funding.as_ref().expect("normal operation has an anchor"), &*self.signer)?;
        self.send(Message::UpdateCommit(UpdateCommit { sig }));
        let prev = std::mem::replace(&mut self.their_view, view);
        self.their_prev = Some((prev, self.their_hash));
        self.their_prev_txid = self.their_txid.replace(built.txid());
        self.their_hash = next_hash;
        self.their_next_hash = None;
        self.their_num += 1;
        for e in &mut self.log {
            e.in_theirs = true;
        }
        // The HTLCs just committed may be failed now (R3.3-c).
        self.send_decided_fails();
        self.flush();
        Ok(())
    }

    /// Begins a cooperative close: sends `close_clearing` (R4.1-b: once).
    pub fn close(&mut self) -> Result<(), ChannelError> {
        if self.phase != Phase::Normal {
            return Err(self.wrong_phase("close"));
        }
        if self.close.sent_clearing {
            return Err(ChannelError::AlreadyClosing);
        }
        self.send_clearing();
        self.progress();
        self.flush();
        Ok(())
    }

    /// Fails the channel on the application's decision: sends an `error`
    /// and broadcasts as section 6.3 says.
    pub fn fail(&mut self, problem: &str) {
        if self.is_terminal() {
            return;
        }
        self.fail_with(FailOrigin::Local, None, problem.to_string());
        self.flush();
    }

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
            (Phase::AwaitOpen, Message::OpenChannel(o)) => self.on_open_channel(o),
            (Phase::AwaitOpenAnchor, Message::OpenAnchor(a)) => self.on_open_anchor(a),
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
            (Phase::Normal, Message::UpdateFee(m)) => self.on_fee(m.fee_rate, ack),
            (Phase::Normal, Message::UpdateCommit(m)) => self.on_commit(m.sig, ack),
            (Phase::Normal, Message::UpdateRevocation(m)) => self.on_revocation(m),
            (Phase::Normal, Message::CloseClearing) => self.on_close_clearing(),
            (Phase::Normal, Message::CloseSignature(m)) => self.on_close_signature(m, ack),
            (phase, _) => Err(unexpected(phase)),
        }
    }

    fn on_open_channel(&mut self, o: OpenChannel) -> Result<(), Violation> {
        // R2.1-a
        let expected = match self.role {
            Role::Funder => AnchorOffer::WontCreate,
            Role::Fundee => AnchorOffer::WillCreate,
        };
        if o.anch != expected {
            return Err(violation(Rule::R2_1_a, format!("peer's anch is {:?}, expected {expected:?}", o.anch)));
        }
        // R2.1-b
        let too_long = match o.delay {
            Delay::Blocks(b) => b > self.config.max_delay_blocks,
            Delay::Seconds(s) => s > self.config.max_delay_seconds,
        };
        if too_long {
            return Err(violation(Rule::R2_1_b, format!("delay {} is unreasonably large", o.delay)));
        }
        // R2.1-c
        if o.min_depth > self.config.max_min_depth {
            return Err(violation(Rule::R2_1_c, format!("min_depth {} is unreasonably large", o.min_depth)));
        }
        // R2.1-d
        if o.initial_fee_rate < self.config.min_fee_rate || o.initial_fee_rate > self.max_peer_fee_rate() {
            return Err(violation(
                Rule::R2_1_d,
                format!(
                    "initial_fee_rate {} outside {}..={}",
                    o.initial_fee_rate,
                    self.config.min_fee_rate,
                    self.max_peer_fee_rate()
                ),
            ));
        }
        self.remote = Some(RemoteParams {
            commit_key: o.commit_key,
            final_key: o.final_key,
            delay: o.delay,
            min_depth: o.min_depth,
        });
        self.their_hash = o.revocation_hash;
        self.their_next_hash = Some(o.next_revocation_hash);
        self.their_view = View::new(Side::Remote, MilliSats::ZERO, MilliSats::ZERO, o.initial_fee_rate);
        match self.role {
            Role::Funder => {
                // R2.2-b: our anchor must cover both initial commitments' fees.
                self.check_initial_fees(self.capacity).map_err(|v| Violation { rule: v.rule, problem: v.problem })?;
                self.set_initial_views(self.capacity);
                let ours = self.signer.public_key(KeyRole::Commit);
                let script = crate::tx::funding::anchor_witness_script(&ours, &o.commit_key);
                self.emit(Output::FundAnchor {
                    amount: self.capacity,
                    script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
                });
                self.phase = Phase::AwaitAnchorTx;
            }
            Role::Fundee => self.phase = Phase::AwaitOpenAnchor,
        }
        Ok(())
    }

    /// The highest fee rate we accept for the peer's commitments: the
    /// configured maximum, and ten times the caller's latest estimate as the
    /// text suggests (section 3.4), since we pay half of that fee, or all of
    /// it when the peer cannot (R3.6-c).
    fn max_peer_fee_rate(&self) -> u32 {
        match self.fee_estimate {
            Some(estimate) => self.config.max_fee_rate.min(estimate.saturating_mul(10)),
            None => self.config.max_fee_rate,
        }
    }

    /// R2.2-b: the anchor pays both initial commitments' fees and leaves a
    /// non-dust output.
    fn check_initial_fees(&self, amount: Amount) -> Result<(), Violation> {
        let needed =
            commitment_fee(self.config.fee_rate, 0).max(commitment_fee(self.their_view.fee_rate, 0)) + DUST_LIMIT;
        if amount < needed || amount < self.config.min_anchor {
            return Err(violation(
                Rule::R2_2_b,
                format!("anchor of {amount} does not cover the initial commitment fees (needs {needed})"),
            ));
        }
        Ok(())
    }

    fn set_initial_views(&mut self, capacity: Amount) {
        let all = MilliSats::from_sat(capacity).expect("capacity is at most 4294967 sat");
        let (to_local, to_remote) = match self.role {
            Role::Funder => (all, MilliSats::ZERO),
            Role::Fundee => (MilliSats::ZERO, all),
        };
        let their_rate = self.their_view.fee_rate;
        self.our_view = View::new(Side::Local, to_local, to_remote, self.config.fee_rate);
        self.their_view = View::new(Side::Remote, to_local, to_remote, their_rate);
        self.staged_ours = self.our_view.clone();
        self.staged_theirs = self.their_view.clone();
    }

    fn on_open_anchor(&mut self, a: OpenAnchor) -> Result<(), Violation> {
        // R2.2-c
        if a.amount > MAX_ANCHOR {
            return Err(violation(Rule::R2_2_c, format!("anchor amount {} is above 4294967 sat", a.amount)));
        }
        self.check_initial_fees(a.amount)?;
        let remote = self.remote.expect("known after open_channel");
        let funding = FundingOutput::new(
            OutPoint { txid: a.txid, vout: a.output_index },
            a.amount,
            &self.signer.public_key(KeyRole::Commit),
            &remote.commit_key,
        );
        self.capacity = a.amount;
        self.set_initial_views(a.amount);
        let ours = self.build_ours_with(&funding, &self.our_view, 0).expect("fees were checked");
        // R2.2-d
        if ours.verify(&funding, &remote.commit_key, &a.commit_sig).is_err() {
            return Err(violation(Rule::R2_2_d, "open_anchor.commit_sig does not sign our initial commitment"));
        }
        let theirs = self.build_theirs_with(&funding, &self.their_view, self.their_hash).expect("fees were checked");
        let sig = theirs.sign(&funding, &*self.signer).map_err(|e| Violation { rule: None, problem: e.to_string() })?;
        self.our_sig = Some(a.commit_sig);
        self.send(Message::OpenCommitSig(OpenCommitSig { sig }));
        self.watch_anchor(&funding);
        self.funding = Some(funding);
        // The funder may broadcast from now on (R2.3-b).
        self.anchor_broadcast = true;
        self.phase = Phase::AwaitDepth;
        Ok(())
    }

    fn on_open_commit_sig(&mut self, s: OpenCommitSig) -> Result<(), Violation> {
        let funding = self.funding.clone().expect("set with the anchor");
        let remote = self.remote.expect("known after open_channel");
        let ours = self.build_ours_with(&funding, &self.our_view, 0).expect("fees were checked");
        // R2.3-a
        if ours.verify(&funding, &remote.commit_key, &s.sig).is_err() {
            return Err(violation(Rule::R2_3_a, "open_commit_sig.sig does not sign our initial commitment"));
        }
        self.our_sig = Some(s.sig);
        // R2.3-b: broadcast the anchor now, and watch it (R6.1-a).
        let anchor = self.anchor_tx.take().expect("kept until open_commit_sig");
        self.emit(Output::Broadcast(anchor));
        self.watch_anchor(&funding);
        self.anchor_broadcast = true;
        self.phase = Phase::AwaitDepth;
        Ok(())
    }

    fn watch_anchor(&mut self, funding: &FundingOutput) {
        self.emit(Output::Watch(Watch::AnchorDepth {
            txid: funding.outpoint().txid,
            script_pubkey: funding.script_pubkey(),
        }));
        self.emit(Output::Watch(Watch::AnchorSpend(funding.outpoint())));
    }

    fn on_add(&mut self, m: UpdateAddHtlc, ack: u64) -> Result<(), Violation> {
        // R4.1-a: the peer may not add after its own close_clearing, nor
        // after processing ours.
        if self.close.received_clearing {
            return Err(violation(Rule::R4_1_a, "update_add_htlc after the peer's close_clearing"));
        }
        if self.close.clearing_committed {
            return Err(violation(
                Rule::R4_1_a,
                "update_add_htlc after an update_commit acknowledging our close_clearing",
            ));
        }
        // R3.2-b
        if m.amount.to_u32() == 0 {
            return Err(violation(Rule::R3_2_b, format!("HTLC {} has amount 0", m.id)));
        }
        let htlc = Htlc { offerer: Side::Remote, id: m.id, amount: m.amount, r_hash: m.r_hash, expiry: m.expiry };
        let update = Update::Add(htlc);
        // Structurally valid in both staged commitments (R3.2-e, R3.2-c)...
        self.check_both(Side::Remote, &update, false).map_err(Refusal::peer)?;
        // ...and affordable (R3.2-a) in both commitments as the peer knew
        // them: our updates it had not yet processed (a fee change, an add
        // raising the fee) are its bad luck, not its fault (section 3.6).
        let known = self.peer_known(ack);
        for view in known {
            view.check(Side::Remote, &update, self.config.max_htlcs, true).map_err(Refusal::peer)?;
        }
        self.ever_had_htlc = true;
        self.log_update(Side::Remote, update, m.route, None);
        // R4.1-c: an HTLC that crossed our close_clearing is failed at once.
        // So is one expiring too soon for us to claim it from our own
        // commitment, where R only takes it after the peer's delay (ruling
        // D6; the offerer's R3.2-d is a SHOULD, so not a violation).
        // Both are failed as soon as the HTLC is in a commitment (R3.3-c).
        let too_soon = self.reached(self.incoming_deadline(htlc.expiry));
        if self.close.sent_clearing || too_soon {
            let reason = if too_soon { b"expiry too soon".to_vec() } else { b"closing".to_vec() };
            self.must_fail.insert(m.id, reason);
        }
        Ok(())
    }

    fn on_remove(&mut self, update: Update, reason: Vec<u8>) -> Result<(), Violation> {
        // R3.3-c, R3.3-d (and R3.3-a: the id is in our id space).
        self.check_both(Side::Remote, &update, true).map_err(Refusal::peer)?;
        // R3.3-c: in a current commitment, not only staged. The peer's
        // commitment counts as well as ours: it may remove an HTLC as soon as
        // its own commitment holds it.
        if let Update::Fulfill { id, .. } | Update::Fail { id } = update {
            if !self.in_a_commitment(Side::Local, id) {
                return Err(violation(Rule::R3_3_c, format!("HTLC {id} is in no current commitment, only staged")));
            }
        }
        let removed = self.staged_htlc_of(Side::Remote, &update);
        if let (Update::Fulfill { r, .. }, Some(h)) = (&update, removed) {
            // The preimage is usable upstream at once (R6.2-a's off-chain twin).
            self.event(Event::HtlcFulfilled {
                direction: Direction::Outgoing,
                id: h.id,
                amount: h.amount.msat(),
                preimage: *r,
            });
        }
        self.log_update(Side::Remote, update, reason, removed);
        Ok(())
    }

    fn on_fee(&mut self, rate: u32, ack: u64) -> Result<(), Violation> {
        // Fees freeze at clearing (ADR 0004): only a fee change that crossed
        // our close_clearing, sent before the peer processed it, is taken.
        if self.close.received_clearing {
            return Err(violation(Rule::R4_2_a, "update_fee after the peer's close_clearing"));
        }
        if self.close.sent_clearing && ack >= self.close.clearing_msg_no {
            return Err(violation(Rule::R4_2_a, "update_fee after processing our close_clearing"));
        }
        // R3.4-b
        if rate > self.max_peer_fee_rate() || rate == 0 {
            return Err(violation(
                Rule::R3_4_b,
                format!("update_fee of {rate} is outside 1..={}", self.max_peer_fee_rate()),
            ));
        }
        // R3.4-b: a rate that would leave the peer's commitment without any
        // output is too high for this channel.
        let mut staged = self.staged_theirs.clone();
        staged.fee_rate = rate;
        if !staged.has_output() {
            return Err(violation(
                Rule::R3_4_b,
                format!("update_fee of {rate} leaves every output of the commitment dust"),
            ));
        }
        self.log_update(Side::Remote, Update::Fee(rate), Vec::new(), None);
        Ok(())
    }

    fn on_commit(&mut self, sig: Signature, ack: u64) -> Result<(), Violation> {
        // R3.5-b: our new commitment has every change of the peer and ours
        // up to the message its header acknowledges.
        let included = |e: &Entry| !e.in_ours && (e.from == Side::Remote || e.msg_no <= ack);
        if !self.log.iter().any(included) {
            // R3.5-a
            return Err(violation(Rule::R3_5_a, "update_commit without any update"));
        }
        let mut view = self.our_view.clone();
        for e in self.log.iter().filter(|e| included(e)) {
            view.apply(e.from, &e.update).map_err(Refusal::peer)?;
        }
        let num = self.our_num + 1;
        let built = self.build_ours(&view, num).ok_or_else(|| violation(Rule::R3_2_a, "commitment cannot be built"))?;
        let funding = self.funding.as_ref().expect("normal operation has an anchor");
        if built.verify(funding, &self.remote.expect("open").commit_key, &sig).is_err() {
            return Err(violation(Rule::R3_5_b, format!("update_commit signature does not sign our commitment {num}")));
        }
        for e in self.log.iter_mut().filter(|e| included(e)) {
            e.in_ours = true;
        }
        if self.close.sent_clearing && ack >= self.close.clearing_msg_no {
            self.close.clearing_committed = true;
        }
        self.our_view = view;
        self.our_sig = Some(sig);
        self.our_num = num;
        // R3.5-c: revoke the previous commitment, give the next hash.
        self.send(Message::UpdateRevocation(UpdateRevocation {
            revocation_preimage: self.our_preimage(num - 1),
            next_revocation_hash: self.our_hash(num + 1),
        }));
        self.lock_in();
        Ok(())
    }

    fn on_revocation(&mut self, m: UpdateRevocation) -> Result<(), Violation> {
        let Some((prev_view, prev_hash)) = self.their_prev.take() else {
            return Err(violation(Rule::R3_5_d, "update_revocation without a commitment to revoke"));
        };
        // R3.5-d
        if m.revocation_preimage.hash() != prev_hash {
            self.their_prev = Some((prev_view, prev_hash));
            return Err(violation(Rule::R3_5_d, "revocation preimage does not match the previous commitment"));
        }
        let prev_num = self.their_num - 1;
        // R5-d: consistent with every preimage revealed before.
        if let Err(e) = self.their_secrets.insert(RevocationSecrets::index(prev_num), m.revocation_preimage.0) {
            self.their_prev = Some((prev_view, prev_hash));
            return Err(violation(Rule::R5_d, e.to_string()));
        }
        self.their_next_hash = Some(m.next_revocation_hash);
        // R3-a: what is needed to punish this commitment if it is ever
        // broadcast leaves the channel as a durable watch record.
        let Some(record) = self.revoked_record(&prev_view, prev_num, m.revocation_preimage) else {
            self.their_prev = Some((prev_view, prev_hash));
            return Err(Violation { rule: None, problem: "the revoked commitment cannot be rebuilt".into() });
        };
        self.emit(Output::Watch(Watch::RevokedCommitment(Box::new(record))));
        for e in self.log.iter_mut().filter(|e| e.in_theirs) {
            e.theirs_locked = true;
        }
        self.lock_in();
        Ok(())
    }

    /// The punishment record of the peer's commitment `view`; `None` only if
    /// it cannot be rebuilt, which `restore` rules out for every stored one.
    fn revoked_record(&self, view: &View, number: u64, preimage: Preimage) -> Option<RevokedCommitment> {
        let funding = self.funding.clone()?;
        let remote = self.remote?;
        let (to_owner, to_other) = view.owner_balances();
        let htlcs = view.htlc_specs();
        let txid = match self.their_prev_txid {
            Some(txid) => txid,
            None => self.build_theirs(view, preimage.hash())?.txid(),
        };
        Some(RevokedCommitment {
            number,
            txid,
            preimage,
            funding,
            to_owner,
            to_other,
            htlcs,
            fee_rate: view.fee_rate,
            delay: self.config.delay,
            owner_final: remote.final_key,
            other_final: self.signer.public_key(KeyRole::Final),
        })
    }

    fn on_close_clearing(&mut self) -> Result<(), Violation> {
        // R4.1-b
        if self.close.received_clearing {
            return Err(violation(Rule::R4_1_b, "second close_clearing"));
        }
        self.close.received_clearing = true;
        if !self.close.sent_clearing {
            self.send_clearing();
        }
        Ok(())
    }

    fn send_clearing(&mut self) {
        self.send(Message::CloseClearing);
        self.close.sent_clearing = true;
        self.close.clearing_msg_no = self.sent;
        self.event(Event::ChannelClosing);
    }

    fn on_close_signature(&mut self, m: CloseSignature, ack: u64) -> Result<(), Violation> {
        // R4.2-a: only once clearing is complete.
        if !self.clearing_complete() {
            return Err(violation(Rule::R4_2_a, "close_signature before clearing is complete"));
        }
        // R4.2-b
        let their_max = self.their_view.fee();
        if m.close_fee.to_sat() % 2 == 1 || m.close_fee > their_max {
            return Err(violation(Rule::R4_2_b, format!("close_fee {} is odd or above {their_max}", m.close_fee)));
        }
        let close =
            self.build_close(m.close_fee).ok_or_else(|| violation(Rule::R4_2_b, "close_fee leaves no output"))?;
        let funding = self.funding.as_ref().expect("open");
        // R4.2-d
        if close.verify(funding, &self.remote.expect("open").commit_key, &m.sig).is_err() {
            return Err(violation(
                Rule::R4_2_d,
                format!("close_signature does not sign the close with fee {}", m.close_fee),
            ));
        }
        // The peer had not processed our last proposal when it sent this
        // one: the two crossed.
        let crossed = self.close.our_fee.is_some() && ack < self.close.our_msg_no;
        // R4.2-f, ruling D5: each answer must narrow the interval.
        if let (false, Some(ours), Some((prev, _))) = (crossed, self.close.our_fee, self.close.their) {
            let (lo, hi) = if prev < ours { (prev, ours) } else { (ours, prev) };
            let between = m.close_fee == ours || (m.close_fee > lo && m.close_fee < hi);
            if !between {
                return Err(violation(
                    Rule::R4_2_f,
                    format!("close_fee {} is not between {prev} and {ours}", m.close_fee),
                ));
            }
        }
        let theirs = m.close_fee;
        let floor = self.close_floor();
        self.close.their = Some((theirs, m.sig));
        if theirs >= floor {
            // R6.3-f: the close we would broadcast on failure.
            self.close.their_relayable = Some((theirs, m.sig));
        }
        // The same fee on both sides: the same transaction.
        if self.close.our_fee == Some(theirs) {
            self.finish_close(close);
            return Ok(());
        }
        // D5 tie-break for crossed proposals: both sides would answer both
        // and could end on two different closes. The funder answers the
        // fundee's proposal as if its own had not been sent; the fundee
        // waits for that answer, so one exchange goes on.
        if crossed && self.role == Role::Fundee {
            return Ok(());
        }
        // R4.2-b: we never propose more than our own final commitment's fee,
        // nor less than a fee the network relays.
        let cap = Amount::from_sat(self.our_view.fee().to_sat() & !1);
        let next = match self.close.our_fee {
            // R4.2-e: propose strictly between the two (D5: when no even
            // value within our bounds lies strictly between, accept theirs).
            Some(ours) => {
                let (lo, hi) = (ours.min(theirs), ours.max(theirs));
                let mid = (lo + Amount::from_sat(((hi - lo).to_sat() / 2) & !1)).min(cap).max(floor);
                if mid > lo && mid < hi {
                    mid
                } else {
                    theirs
                }
            }
            None => self.initial_close_fee(),
        };
        if next != theirs {
            return self.send_close_signature(next);
        }
        if theirs < floor {
            // Agreeing would leave a close no node relays (and the peer's
            // proposals leave no relayable fee to propose): the negotiation
            // cannot end on a usable transaction.
            return Err(violation(
                Rule::R4_2_f,
                format!("close_fee {theirs} is below the relay floor {floor} and no relayable fee is left to propose"),
            ));
        }
        // R4.2-e: agree: echo the fee with our signature when we may propose
        // it ourselves (R4.2-b), and broadcast.
        if theirs <= cap {
            self.send_close_signature(theirs)?;
        }
        self.finish_close(close);
        Ok(())
    }

    /// The lowest close fee we propose or accept: the close transaction's
    /// worst-case size at the relay fee rate.
    fn close_floor(&self) -> Amount {
        crate::fees::min_close_fee(self.config.min_relay_fee_rate)
    }

    fn send_close_signature(&mut self, fee: Amount) -> Result<(), Violation> {
        let close = self.build_close(fee).ok_or_else(|| violation(Rule::R4_2_b, "our close fee leaves no output"))?;
        let sig = close
            .sign(self.funding.as_ref().expect("open"), &*self.signer)
            .map_err(|e| Violation { rule: None, problem: e.to_string() })?;
        self.close.our_fee = Some(fee);
        self.close.signed_fees.push(fee);
        self.send(Message::CloseSignature(CloseSignature { close_fee: fee, sig }));
        self.close.our_msg_no = self.sent;
        Ok(())
    }

    fn finish_close(&mut self, close: CloseTx) {
        let (_, sig) = self.close.their.expect("agreed on their signature");
        let funding = self.funding.clone().expect("open");
        let remote = self.remote.expect("open");
        match close.finalize(&funding, &*self.signer, &remote.commit_key, &sig) {
            Ok(tx) => {
                self.emit(Output::Broadcast(tx.clone()));
                self.event(Event::ChannelClosed { tx });
                self.phase = Phase::Closed;
            }
            Err(e) => self.fail_with(FailOrigin::Local, None, format!("cannot sign the close: {e}")),
        }
    }

    /// The opening offer: a 336-byte estimate at our close fee rate, at
    /// least the relay floor, capped at our final commitment's fee (R4.2-b),
    /// even.
    fn initial_close_fee(&self) -> Amount {
        fee_for_bytecount(CLOSE_BYTECOUNT, self.config.close_fee_rate).max(self.close_floor()).min(self.our_view.fee())
    }

    fn build_close(&self, fee: Amount) -> Option<CloseTx> {
        let remote = self.remote?;
        build_close(&CloseSpec {
            funding: self.funding.as_ref()?,
            local_final: self.signer.public_key(KeyRole::Final),
            remote_final: remote.final_key,
            to_local: self.our_view.to_local,
            to_remote: self.our_view.to_remote,
            close_fee: fee,
        })
        .ok()
    }

    /// R4.2-a: clearing was started by either side and no HTLC or update
    /// remains in either commitment.
    fn clearing_complete(&self) -> bool {
        self.close.sent_clearing
            && self.close.received_clearing
            && self.log.is_empty()
            && self.their_prev.is_none()
            && self.our_view.htlcs.is_empty()
            && self.their_view.htlcs.is_empty()
    }

    // -----------------------------------------------------------------
    // The update log.
    // -----------------------------------------------------------------

    /// R3.2-a, R3.6-e: an update must be valid in both staged commitments
    /// (`afford`: including the offerer's fee share).
    fn check_both(&self, from: Side, update: &Update, afford: bool) -> Result<(), Refusal> {
        self.staged_theirs.check(from, update, self.config.max_htlcs, afford)?;
        self.staged_ours.check(from, update, self.config.max_htlcs, afford)
    }

    /// Both commitments as the peer knew them when it sent a message
    /// acknowledging `ack` of ours: every update of its own and ours up to
    /// `ack`. Our current commitment holds only such updates, so it is the
    /// base; the peer's commitment differs only in its fee rate, which only
    /// the peer changes (ruling D7).
    fn peer_known(&self, ack: u64) -> [View; 2] {
        let mut ours = self.our_view.clone();
        for e in self.log.iter().filter(|e| !e.in_ours && (e.from == Side::Remote || e.msg_no <= ack)) {
            // Every entry was applied to the staged views already.
            let _ = ours.apply(e.from, &e.update);
        }
        let mut theirs = ours.clone();
        theirs.owner = Side::Remote;
        theirs.fee_rate = self.staged_theirs.fee_rate;
        [ours, theirs]
    }

    /// The HTLC a removal by `from` removes.
    fn staged_htlc_of(&self, from: Side, update: &Update) -> Option<Htlc> {
        match update {
            Update::Fulfill { id, .. } | Update::Fail { id } => self.staged_ours.htlc(from.other(), *id).copied(),
            _ => None,
        }
    }

    fn log_update(&mut self, from: Side, update: Update, blob: Vec<u8>, removed: Option<Htlc>) {
        self.staged_theirs.apply(from, &update).expect("checked against this view");
        self.staged_ours.apply(from, &update).expect("checked against this view");
        let msg_no = if from == Side::Local { self.sent } else { 0 };
        self.log.push(Entry {
            from,
            msg_no,
            update,
            blob,
            removed,
            in_ours: false,
            in_theirs: false,
            theirs_locked: false,
        });
        self.dirty = true;
    }

    /// Updates committed in both current commitments leave the log and are
    /// reported.
    fn lock_in(&mut self) {
        let (done, rest): (Vec<Entry>, Vec<Entry>) =
            std::mem::take(&mut self.log).into_iter().partition(|e| e.in_ours && e.theirs_locked);
        self.log = rest;
        for e in done {
            let event = match (&e.update, e.from) {
                (Update::Add(h), _) => Some(Event::HtlcAdded {
                    direction: Direction::of(h.offerer),
                    id: h.id,
                    amount: h.amount.msat(),
                    r_hash: h.r_hash,
                    expiry: h.expiry,
                    route: e.blob,
                }),
                (Update::Fulfill { id, r }, Side::Local) => Some(Event::HtlcFulfilled {
                    direction: Direction::Incoming,
                    id: *id,
                    amount: e.removed.map_or(MilliSats::ZERO, |h| h.amount.msat()),
                    preimage: *r,
                }),
                // Outgoing fulfills were reported when R arrived.
                (Update::Fulfill { id, .. }, Side::Remote) => {
                    self.deadlines.remove(id);
                    None
                }
                (Update::Fail { id }, from) => {
                    if from == Side::Remote {
                        self.deadlines.remove(id);
                    }
                    Some(Event::HtlcFailed {
                        direction: Direction::of(from.other()),
                        id: *id,
                        amount: e.removed.map_or(MilliSats::ZERO, |h| h.amount.msat()),
                        reason: e.blob,
                    })
                }
                (Update::Fee(rate), from) => Some(Event::FeeChanged { side: from, fee_rate: *rate }),
            };
            if let Some(event) = event {
                self.event(event);
            }
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

    /// Deadlines and timeouts that depend on the chain's clock.
    fn check_clock(&mut self) -> Result<(), Violation> {
        // R2.4-c: the peer's open_complete is late.
        if let (Phase::AwaitDepth, Some(at), false) = (self.phase, self.sent_complete_at, self.received_complete) {
            if self.height >= at.saturating_add(self.config.open_complete_timeout_blocks) {
                return Err(violation(Rule::R2_4_c, "open_complete did not arrive in time"));
            }
        }
        if self.phase != Phase::Normal {
            return Ok(());
        }
        // R3.1-c: an HTLC we offered is in a current commitment past its
        // deadline.
        for (id, deadline) in &self.deadlines {
            // The peer's previous commitment counts until it is revoked.
            let prev = self.their_prev.as_ref().is_some_and(|(v, _)| v.htlc(Side::Local, *id).is_some());
            let present = prev
                || self.our_view.htlc(Side::Local, *id).is_some()
                || self.their_view.htlc(Side::Local, *id).is_some();
            if present && self.reached(*deadline) {
                return Err(violation(
                    Rule::R3_1_c,
                    format!("offered HTLC {id} is past its redemption deadline {deadline}"),
                ));
            }
        }
        // R6.2-c: an incoming HTLC we fulfilled must be claimable on-chain
        // if the peer stalls: once the fulfill is still not committed by the
        // time only the peer's delay is left, go on-chain while our success
        // path can still beat its timeout.
        let fulfilled = self.log.iter().filter_map(|e| match (&e.update, e.from) {
            (Update::Fulfill { id, .. }, Side::Local) if !(e.in_ours && e.theirs_locked) => e.removed.map(|h| (*id, h)),
            _ => None,
        });
        for (id, h) in fulfilled {
            if self.reached(self.incoming_deadline(h.expiry)) {
                return Err(violation(
                    Rule::R6_2_c,
                    format!("incoming HTLC {id} is fulfilled but not committed before its deadline"),
                ));
            }
        }
        // R3.3-b: fail incoming HTLCs that have timed out, as soon as
        // possible.
        let expired: Vec<u64> = self
            .staged_ours
            .htlcs()
            .filter(|h| h.offerer == Side::Remote && self.reached(h.expiry) && !self.must_fail.contains_key(&h.id))
            .map(|h| h.id)
            .collect();
        for id in expired {
            self.must_fail.insert(id, b"expired".to_vec());
            self.dirty = true;
        }
        Ok(())
    }

    /// Sends the fails decided earlier (R3.3-b, R4.1-c, an expiry too soon)
    /// for HTLCs that have reached a commitment since (R3.3-c); forgets those
    /// the application removed itself.
    fn send_decided_fails(&mut self) {
        if self.must_fail.is_empty() {
            return;
        }
        let ready: Vec<u64> =
            self.must_fail.keys().copied().filter(|id| self.in_a_commitment(Side::Remote, *id)).collect();
        for id in ready {
            let reason = self.must_fail.remove(&id).expect("listed just now");
            let update = Update::Fail { id };
            if self.check_both(Side::Local, &update, true).is_err() {
                continue;
            }
            let removed = self.staged_htlc_of(Side::Local, &update);
            self.send(Message::UpdateFailHtlc(UpdateFailHtlc { id, reason: reason.clone() }));
            self.log_update(Side::Local, update, reason, removed);
        }
        let staged = &self.staged_ours;
        self.must_fail.retain(|id, _| staged.htlc(Side::Remote, *id).is_some());
    }

    /// R3.3-c: the HTLC `id` offered by `offerer` is in a current commitment
    /// of either side.
    fn in_a_commitment(&self, offerer: Side, id: u64) -> bool {
        self.our_view.htlc(offerer, id).is_some() || self.their_view.htlc(offerer, id).is_some()
    }

    /// The HTLC is in our current commitment and in every commitment of the
    /// peer's that it has not revoked: no broadcast can leave it out.
    fn locked_in(&self, offerer: Side, id: u64) -> bool {
        self.our_view.htlc(offerer, id).is_some()
            && self.their_view.htlc(offerer, id).is_some()
            && self.their_prev.as_ref().is_none_or(|(v, _)| v.htlc(offerer, id).is_some())
    }

    fn reached(&self, lock: absolute::LockTime) -> bool {
        match lock {
            absolute::LockTime::Blocks(h) => self.height >= h.to_consensus_u32(),
            absolute::LockTime::Seconds(t) => self.time >= t.to_consensus_u32(),
        }
    }

    /// The peer's delay in blocks and in seconds.
    fn their_delay(&self) -> (u32, u32) {
        match self.remote.map(|r| r.delay) {
            Some(Delay::Blocks(b)) => (u32::from(b), u32::from(b) * SECONDS_PER_BLOCK),
            Some(Delay::Seconds(s)) => (s.div_ceil(SECONDS_PER_BLOCK), s),
            None => (0, 0),
        }
    }

    /// R3.2-d: the earliest expiry of an HTLC offered now, in `like`'s unit.
    fn earliest_expiry(&self, like: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        match like {
            absolute::LockTime::Blocks(_) => absolute::LockTime::from_height(self.height.saturating_add(blocks))
                .unwrap_or(absolute::LockTime::from_height(499_999_999).expect("a height")),
            absolute::LockTime::Seconds(_) => {
                absolute::LockTime::from_time(self.time.saturating_add(seconds).max(500_000_000)).expect("a time")
            }
        }
    }

    /// The last moment to go on-chain for an incoming HTLC whose R we know:
    /// our success path waits the peer's delay (ruling D6), so `expiry` less
    /// that delay, less our safety margin.
    fn incoming_deadline(&self, expiry: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        let margin = self.config.deadline_margin_blocks;
        match expiry {
            absolute::LockTime::Blocks(h) => {
                absolute::LockTime::from_height(h.to_consensus_u32().saturating_sub(blocks.saturating_add(margin)))
                    .expect("below the height limit")
            }
            absolute::LockTime::Seconds(t) => {
                let back = seconds.saturating_add(margin.saturating_mul(SECONDS_PER_BLOCK));
                absolute::LockTime::from_time(t.to_consensus_u32().saturating_sub(back).max(500_000_000))
                    .expect("a time")
            }
        }
    }

    /// R3.1-a: the later of `expiry` and now + the peer's delay, plus our
    /// safety margin.
    fn deadline(&self, expiry: absolute::LockTime) -> absolute::LockTime {
        let (blocks, seconds) = self.their_delay();
        let margin = self.config.deadline_margin_blocks;
        match expiry {
            absolute::LockTime::Blocks(h) => {
                let at = h.to_consensus_u32().max(self.height.saturating_add(blocks)).saturating_add(margin);
                absolute::LockTime::from_height(at.min(499_999_999)).expect("a height")
            }
            absolute::LockTime::Seconds(t) => {
                let at = t.to_consensus_u32().max(self.time.saturating_add(seconds));
                absolute::LockTime::from_time(at.saturating_add(margin.saturating_mul(SECONDS_PER_BLOCK)))
                    .expect("a time")
            }
        }
    }

    // -----------------------------------------------------------------
    // Building commitments.
    // -----------------------------------------------------------------

    /// Our revocation preimage of commitment `num`. Each commitment's
    /// preimage is needed three times (its hash when it is signed and when
    /// announced, the preimage when revoked): the last few are cached.
    fn our_preimage(&self, num: u64) -> Preimage {
        let mut cache = self.preimage_cache.lock().expect("never poisoned: no code panics while holding it");
        if let Some((_, p)) = cache.iter().find(|(n, _)| *n == num) {
            return *p;
        }
        let p = self.secrets.preimage(num);
        if cache.len() == 3 {
            cache.remove(0);
        }
        cache.push((num, p));
        p
    }

    fn our_hash(&self, num: u64) -> sha256::Hash {
        self.our_preimage(num).hash()
    }

    fn build_ours(&self, view: &View, num: u64) -> Option<Commitment> {
        self.build_ours_with(self.funding.as_ref()?, view, num)
    }

    fn build_ours_with(&self, funding: &FundingOutput, view: &View, num: u64) -> Option<Commitment> {
        let remote = self.remote?;
        let (to_owner, to_other) = view.owner_balances();
        commitment::build(&CommitmentSpec {
            funding,
            owner_final: self.signer.public_key(KeyRole::Final),
            other_final: remote.final_key,
            to_owner,
            to_other,
            htlcs: &view.htlc_specs(),
            fee_rate_per_kb: view.fee_rate,
            revocation_hash: self.our_hash(num),
            // Our outputs wait for the delay the peer asked for.
            delay: remote.delay,
        })
        .ok()
    }

    fn build_theirs(&self, view: &View, revocation_hash: sha256::Hash) -> Option<Commitment> {
        self.build_theirs_with(self.funding.as_ref()?, view, revocation_hash)
    }

    fn build_theirs_with(
        &self,
        funding: &FundingOutput,
        view: &View,
        revocation_hash: sha256::Hash,
    ) -> Option<Commitment> {
        let remote = self.remote?;
        let (to_owner, to_other) = view.owner_balances();
        commitment::build(&CommitmentSpec {
            funding,
            owner_final: remote.final_key,
            other_final: self.signer.public_key(KeyRole::Final),
            to_owner,
            to_other,
            htlcs: &view.htlc_specs(),
            fee_rate_per_kb: view.fee_rate,
            revocation_hash,
            // The peer's outputs wait for the delay we asked for.
            delay: self.config.delay,
        })
        .ok()
    }

    // -----------------------------------------------------------------
    // Failing the connection (section 6.3).
    // -----------------------------------------------------------------

    fn fail_with(&mut self, origin: FailOrigin, rule: Option<Rule>, problem: String) {
        self.fail_inner(origin, rule, problem, None);
    }

    fn fail_inner(&mut self, origin: FailOrigin, rule: Option<Rule>, problem: String, forced: Option<FailBroadcast>) {
        if self.is_terminal() {
            return;
        }
        // R6.3-b: never answer an error with an error; R6.3-c: otherwise say
        // why.
        if origin != FailOrigin::PeerError {
            let text = crate::wire::bounded_error_text(&problem);
            self.send(Message::Error(ErrorMessage { problem: Some(text) }));
        }
        let broadcast = match forced {
            Some(b) => b,
            None => self.failure_broadcast(),
        };
        self.phase = Phase::Failed;
        self.event(Event::ChannelFailed { reason: FailReason { origin, rule, problem }, broadcast });
        self.dirty = true;
    }

    /// Chooses and emits the broadcast of section 6.3.
    fn failure_broadcast(&mut self) -> FailBroadcast {
        // R6.3-d
        if !self.anchor_broadcast {
            return FailBroadcast::Nothing;
        }
        // R6.3-f: a valid close_signature was received: close with the last
        // one a node would relay.
        if let Some((fee, sig)) = self.close.their_relayable {
            if let Some(close) = self.build_close(fee) {
                let funding = self.funding.clone().expect("open");
                if let Ok(tx) = close.finalize(&funding, &*self.signer, &self.remote.expect("open").commit_key, &sig) {
                    self.emit(Output::Broadcast(tx));
                    return FailBroadcast::Close;
                }
            }
        }
        // R6.3-e, R6.3-g: sign our latest commitment only now (R3.5-f); it is
        // never a revoked one (R3.5-e).
        let (Some(sig), Some(funding)) = (self.our_sig, self.funding.clone()) else {
            return FailBroadcast::Nothing;
        };
        let Some(ours) = self.build_ours(&self.our_view, self.our_num) else {
            return FailBroadcast::Nothing;
        };
        match ours.finalize(&funding, &*self.signer, &self.remote.expect("open").commit_key, &sig) {
            Ok(tx) => {
                self.emit(Output::Broadcast(tx));
                if self.ever_had_htlc {
                    FailBroadcast::Commitment
                } else {
                    FailBroadcast::CommitmentNoHtlcs
                }
            }
            Err(_) => FailBroadcast::Nothing,
        }
    }
}

use bitcoin::hashes::Hash as _;
