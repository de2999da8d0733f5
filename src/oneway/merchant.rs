//! The merchant (B): one sans-IO object serving many sessions and channels,
//! keyed by session id and funding outpoint (M5-c).
//!
//! # The contract
//!
//! - **Inputs**: [`handle_message`](Merchant::handle_message) with the
//!   caller's token for the connection it came on (answers go back to that
//!   token), [`handle_block`](Merchant::handle_block) for each new tip,
//!   [`handle_funding`](Merchant::handle_funding) and
//!   [`handle_outpoint`](Merchant::handle_outpoint) answering the chain
//!   questions it asks, and [`handle_persisted`](Merchant::handle_persisted).
//! - **Commands**: [`invoice`](Merchant::invoice) an order,
//!   [`close`](Merchant::close) a channel. A mistake returns a
//!   [`MerchantError`] and changes nothing.
//! - **Outputs**, drained with [`poll_output`](Merchant::poll_output):
//!   [`MerchantOutput::Persist`] first, released at once; every other output
//!   waits until the state it depends on is durable (M2-g, M3-g).
//!
//! Every peer message is checked in the order of `oneway.md`, and each
//! refusal names its check with its own [`Code`]. Nothing a client sends can
//! make it panic or change what was stored (M5-a).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;

use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::psbt::Psbt;
use bitcoin::{absolute, Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};

use super::gate::{Gate, Released};
use super::script::{ChannelScript, OutputKind};
use super::tx::{dust_threshold, is_standard_payout, ChannelOutput, DustPolicy};
use super::wire::{Code, Message, Policy, Refusal, SessionId};
use crate::tx::{KeyRole, Signer};

/// The most sessions handed out and not yet announced that are kept.
pub const MAX_SESSIONS: usize = 10_000;

/// The largest PSBT the merchant reads (M2-a).
pub const MAX_PSBT_LEN: usize = 256 * 1024;

/// The merchant's settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MerchantConfig {
    /// The network it serves (M1-a).
    pub network: String,
    /// Its terms.
    pub policy: Policy,
    /// Where it is paid.
    pub payout_script: ScriptBuf,
    /// The chain's dust rule (E1).
    pub dust: DustPolicy,
    /// Confirmations after which a spent channel output is final and the
    /// channel forgotten (M4-b).
    pub bury_depth: u32,
    /// The oldest tip, in seconds behind the caller's clock
    /// ([`Merchant::handle_now`]), against which `T` is still judged (E4).
    pub max_tip_age: u32,
}

/// A caller's token for the connection a message came on.
pub type Peer = u64;

/// What the merchant hands the caller.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MerchantOutput {
    /// Send `message` on connection `peer`.
    Send {
        /// The connection.
        peer: Peer,
        /// The message.
        message: Message,
    },
    /// Broadcast this transaction.
    Broadcast(Transaction),
    /// Look up the funding output: answer with
    /// [`Merchant::handle_funding`] (M2-e).
    QueryFunding {
        /// The output.
        outpoint: OutPoint,
    },
    /// Look up whether the channel output is spent, and how deep: answer
    /// with [`Merchant::handle_outpoint`] (M4-b).
    QueryOutpoint {
        /// The output.
        outpoint: OutPoint,
    },
    /// Store `state` durably, then call [`Merchant::handle_persisted`].
    Persist {
        /// Increases with every change.
        version: u64,
        /// The whole state ([`Merchant::restore`] reads it).
        state: Vec<u8>,
    },
    /// Something the application should know.
    Event(MerchantEvent),
}

/// What the application learns.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MerchantEvent {
    /// A channel was accepted.
    ChannelOpen {
        /// Its funding outpoint.
        channel_id: OutPoint,
        /// Its capacity.
        capacity: Amount,
    },
    /// A payment is stored: the order may be fulfilled (M3-g). At least
    /// once: a restored merchant reports each channel's best payment again.
    PaymentReceived {
        /// The channel.
        channel_id: OutPoint,
        /// The invoice it paid.
        invoice_id: u64,
        /// This order's amount.
        amount: Amount,
        /// The total paid so far.
        total: Amount,
    },
    /// The merchant closed the channel with this transaction (M4-a).
    ChannelClosing {
        /// The channel.
        channel_id: OutPoint,
        /// The close, or `None` if no payment was ever made.
        tx: Option<Transaction>,
    },
    /// The channel output is spent and buried: the channel is forgotten
    /// (M4-b). `ours` is false when the client's refund won (M4-e).
    ChannelSettled {
        /// The channel.
        channel_id: OutPoint,
        /// The spending transaction.
        txid: Txid,
        /// Whether it was our close.
        ours: bool,
        /// What we were paid on chain.
        received: Amount,
    },
}

/// A caller's mistake: nothing changed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerchantError {
    /// No open channel with this id.
    #[error("no open channel {0}")]
    UnknownChannel(OutPoint),
    /// An invoice of nothing, or one the channel cannot pay (M3-a).
    #[error("the channel cannot pay a total of {0} (M3-a)")]
    CannotPay(Amount),
    /// The channel is past its deadline (M3-a).
    #[error("the channel takes no payment past its deadline (M3-a)")]
    PastDeadline,
    /// An invoice is outstanding.
    #[error("invoice {0} is still outstanding")]
    Outstanding(u64),
    /// The merchant has no fresh chain tip to judge the deadline by (E4).
    #[error("no fresh chain tip (E4)")]
    NoFreshTip,
    /// The close could not be signed (the signer failed): the channel stays
    /// open and the close is tried again at the next block.
    #[error("the close could not be signed: {0}")]
    Signer(String),
}

/// Answers to [`MerchantOutput::QueryFunding`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FundingStatus {
    /// The output is in the chain.
    Found {
        /// Its confirmations.
        confirmations: u32,
        /// Its value.
        value: Amount,
        /// Whether it is unspent.
        unspent: bool,
    },
    /// The chain has no such output.
    Missing,
    /// The backend could not answer: never a rejection (M2-e).
    Unavailable,
}

/// Answers to [`MerchantOutput::QueryOutpoint`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OutpointStatus {
    /// Unspent.
    Unspent,
    /// Spent by `tx` with `confirmations`.
    Spent {
        /// The spending transaction.
        tx: Transaction,
        /// Its confirmations.
        confirmations: u32,
    },
    /// The backend could not answer: never counts as spent (M4-b).
    Unavailable,
}

/// A session: a key handed out, waiting for its announce.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Session {
    pub(crate) key_index: u64,
    /// The announce being checked against the chain, if any.
    pub(crate) pending: Option<Pending>,
}

/// An announce that passed every check but the chain's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Pending {
    pub(crate) peer: Peer,
    pub(crate) output: ChannelOutput,
}

/// The best payment so far.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Best {
    pub(crate) invoice_id: u64,
    pub(crate) amount: Amount,
    pub(crate) total: Amount,
    /// The payment, unsigned, and the client's signature.
    pub(crate) tx: Transaction,
    pub(crate) client_sig: bitcoin::secp256k1::ecdsa::Signature,
}

/// An outstanding invoice.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Invoice {
    pub(crate) id: u64,
    pub(crate) amount: Amount,
    pub(crate) total: Amount,
}

/// One open or closing channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Chan {
    pub(crate) output: ChannelOutput,
    pub(crate) key_index: u64,
    pub(crate) peer: Peer,
    /// The height from which no payment is taken.
    pub(crate) deadline: u32,
    pub(crate) next_invoice: u64,
    pub(crate) invoice: Option<Invoice>,
    pub(crate) best: Option<Best>,
    /// The close broadcast, once closing.
    pub(crate) closing: Option<Option<Transaction>>,
}

/// The merchant.
pub struct Merchant {
    signer: Arc<dyn Signer + Send + Sync>,
    pub(crate) config: MerchantConfig,
    pub(crate) next_key: u64,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) channels: BTreeMap<OutPoint, Chan>,
    /// Every outpoint that ever had a channel here (M2-f).
    pub(crate) used: BTreeSet<OutPoint>,
    pub(crate) tip: Option<u32>,
    /// The tip's time, and the caller's latest clock reading (E4).
    tip_time: u32,
    now: u32,
    /// A block arrived since this object was made: a restored tip is stale
    /// until then.
    fresh: bool,
    gate: Gate<MerchantOutput>,
}

impl core::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Merchant")
            .field("sessions", &self.sessions.len())
            .field("channels", &self.channels.len())
            .field("tip", &self.tip)
            .finish_non_exhaustive()
    }
}

fn refusal(code: Code, explanation: impl Into<String>) -> Refusal {
    Refusal { code, explanation: explanation.into(), expected: None }
}

fn refusal_expecting(code: Code, explanation: impl Into<String>, expected: u64) -> Refusal {
    Refusal { code, explanation: explanation.into(), expected: Some(expected) }
}

impl Merchant {
    /// A merchant with no session yet. `signer` derives a fresh key for each
    /// session ([`KeyRole::Oneway`]).
    pub fn new(config: MerchantConfig, signer: Arc<dyn Signer + Send + Sync>) -> Self {
        Merchant {
            signer,
            config,
            next_key: 0,
            sessions: BTreeMap::new(),
            channels: BTreeMap::new(),
            used: BTreeSet::new(),
            tip: None,
            tip_time: 0,
            now: 0,
            fresh: false,
            gate: Gate::default(),
        }
    }

    // -----------------------------------------------------------------
    // Getters.
    // -----------------------------------------------------------------

    /// The best total paid on `channel_id`, if it is open.
    pub fn best_total(&self, channel_id: &OutPoint) -> Option<Amount> {
        self.channels.get(channel_id).map(|c| c.best.as_ref().map_or(Amount::ZERO, |b| b.total))
    }

    /// The best payment on `channel_id`, countersigned and finalised: the
    /// transaction the merchant would broadcast now.
    pub fn best_transaction(&self, channel_id: &OutPoint) -> Option<Transaction> {
        let c = self.channels.get(channel_id)?;
        self.finalised(c).ok()
    }

    /// Open or closing channels.
    pub fn channels(&self) -> impl Iterator<Item = &OutPoint> {
        self.channels.keys()
    }

    /// The configuration.
    pub fn config(&self) -> &MerchantConfig {
        &self.config
    }

    // -----------------------------------------------------------------
    // Outputs.
    // -----------------------------------------------------------------

    /// The next output, or `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MerchantOutput> {
        Some(match self.gate.poll()? {
            Released::Persist { version, state } => MerchantOutput::Persist { version, state },
            Released::Output(o) => o,
        })
    }

    /// State `version` is durable: release what depended on it.
    pub fn handle_persisted(&mut self, version: u64) {
        self.gate.persisted(version);
    }

    fn send(&mut self, peer: Peer, message: Message) {
        self.gate.emit(MerchantOutput::Send { peer, message });
    }

    fn flush(&mut self) {
        if self.gate.is_dirty() {
            let state = self.to_bytes();
            self.gate.flush(state);
        }
    }

    // -----------------------------------------------------------------
    // Messages.
    // -----------------------------------------------------------------

    /// A message from the client on connection `peer`.
    pub fn handle_message(&mut self, peer: Peer, message: Message) {
        match message {
            Message::RequestChannel { network } => self.on_request(peer, network),
            Message::Announce { session_id, psbt } => self.on_announce(peer, session_id, &psbt),
            Message::Payment { channel_id, invoice_id, psbt } => self.on_payment(peer, channel_id, invoice_id, &psbt),
            Message::Close { channel_id, .. } => {
                // Only the connection the channel pays over may ask.
                if self.channels.get(&channel_id).is_some_and(|c| c.closing.is_none() && c.peer == peer) {
                    let _ = self.close(channel_id);
                    return;
                }
                self.error(peer, refusal(Code::UnknownChannel, "no open channel to close"), false);
            }
            // R1-a: an unknown odd member is ignored.
            Message::Unknown { .. } => {}
            // M5-a: anything else does not belong here.
            other => {
                self.error(peer, refusal(Code::WrongState, format!("{} is not for the merchant", other.name())), false)
            }
        }
        self.flush();
    }

    /// A message that did not decode (M5-a).
    pub fn handle_malformed(&mut self, peer: Peer, error: &crate::wire::DecodeError) {
        self.error(peer, refusal(Code::Malformed, error.to_string()), false);
        self.flush();
    }

    fn error(&mut self, peer: Peer, refusal: Refusal, transient: bool) {
        self.send(peer, Message::Error { refusal, transient });
    }

    fn reject(&mut self, peer: Peer, refusal: Refusal) {
        self.send(peer, Message::Reject(refusal));
    }

    /// M1-a: a fresh key and session for every request; the key index is
    /// stored before the key leaves, so no crash can make it reused.
    fn on_request(&mut self, peer: Peer, network: String) {
        if network != self.config.network {
            let why = format!("network {network} is not served; this merchant serves {}", self.config.network);
            return self.error(peer, refusal(Code::UnsupportedNetwork, why), false);
        }
        // A bound on sessions nobody announced (M1-a asks for nothing to
        // prove first): the oldest goes.
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.sessions.iter().min_by_key(|(_, s)| s.key_index).map(|(id, _)| *id) {
                self.sessions.remove(&oldest);
            }
        }
        let key_index = self.next_key;
        self.next_key += 1;
        let key = self.signer.public_key(KeyRole::Oneway(key_index));
        // The session id commits to the key: unique as the key is.
        let digest = sha256::Hash::hash(&key.to_bytes()).to_byte_array();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        let session_id = SessionId(id);
        self.sessions.insert(session_id, Session { key_index, pending: None });
        self.send(
            peer,
            Message::ChannelKey {
                session_id,
                merchant_key: key.to_bytes().to_vec(),
                policy: self.config.policy.clone(),
                payout_script: self.config.payout_script.clone(),
            },
        );
    }

    /// M2-a..M2-f, in order; the chain's part (M2-e) is asked of the caller.
    fn on_announce(&mut self, peer: Peer, session_id: SessionId, bytes: &[u8]) {
        let Some(session) = self.sessions.get(&session_id).cloned() else {
            return self.reject(peer, refusal(Code::UnknownSession, "no such session, or it was used (M2-f)"));
        };
        if session.pending.is_some() {
            return self.reject(peer, refusal(Code::UnknownSession, "this session's announce is being checked (M2-f)"));
        }
        match self.check_announce(session.key_index, bytes) {
            Err(r) => self.reject(peer, r),
            Ok(output) => {
                let outpoint = output.outpoint;
                self.sessions.get_mut(&session_id).expect("looked up above").pending = Some(Pending { peer, output });
                self.gate.emit(MerchantOutput::QueryFunding { outpoint });
            }
        }
    }

    fn check_announce(&self, key_index: u64, bytes: &[u8]) -> Result<ChannelOutput, Refusal> {
        // M2-a
        if bytes.len() > MAX_PSBT_LEN {
            return Err(refusal_expecting(Code::MalformedPsbt, "PSBT too large", MAX_PSBT_LEN as u64));
        }
        let psbt = Psbt::deserialize(bytes).map_err(|e| refusal(Code::MalformedPsbt, e.to_string()))?;
        if psbt.unsigned_tx.input.len() != 1 || psbt.inputs.len() != 1 {
            return Err(refusal_expecting(
                Code::InputCount,
                "the announce must spend exactly the channel output (E7)",
                1,
            ));
        }
        if !psbt.unsigned_tx.output.is_empty() || !psbt.outputs.is_empty() {
            return Err(refusal(Code::HasOutputs, "the announce carries no outputs (M2-a)"));
        }
        let input = &psbt.inputs[0];
        let txin = &psbt.unsigned_tx.input[0];
        if !input.partial_sigs.is_empty()
            || input.final_script_sig.is_some()
            || input.final_script_witness.is_some()
            || !txin.script_sig.is_empty()
            || !txin.witness.is_empty()
        {
            return Err(refusal(Code::HasSignatures, "the announce carries no signatures (M2-a)"));
        }
        // M2-b: checked by hand before anything indexes.
        let outpoint = txin.previous_output;
        let Some(funding) = &input.non_witness_utxo else {
            return Err(refusal(Code::MissingFundingTx, "the full funding transaction is missing (M2-b)"));
        };
        if funding.compute_txid() != outpoint.txid {
            return Err(refusal(Code::FundingTxidMismatch, "the funding transaction is not the one spent (M2-b)"));
        }
        let Some(out) = funding.output.get(outpoint.vout as usize) else {
            let n = funding.output.len() as u64;
            return Err(refusal_expecting(Code::OutputIndexOutOfRange, "the output index is out of range", n));
        };
        // M2-f, checked as soon as the outpoint is known: a used outpoint's
        // script names an earlier session's key, so the checks of M2-c would
        // otherwise hide why it is refused.
        let pending_elsewhere =
            self.sessions.values().any(|s| s.pending.as_ref().is_some_and(|p| p.output.outpoint == outpoint));
        if self.used.contains(&outpoint) || pending_elsewhere {
            return Err(refusal(Code::OutpointUsed, "this outpoint has, or had, a channel (M2-f)"));
        }
        let kind = self.config.policy.kind;
        if out.script_pubkey.is_p2wsh() && input.witness_utxo.as_ref() != Some(out) {
            return Err(refusal(Code::WitnessUtxoMismatch, "witness_utxo must equal the funding output (M2-b)"));
        }
        // M2-c
        let out_kind = if out.script_pubkey.is_p2wsh() {
            OutputKind::P2wsh
        } else if out.script_pubkey.is_p2sh() {
            OutputKind::P2sh
        } else {
            return Err(refusal(Code::WrongOutputKind, "the output is neither P2WSH nor P2SH"));
        };
        if out_kind != kind {
            return Err(refusal(
                Code::WrongOutputKind,
                format!("the policy asks for {kind:?}, the output is {out_kind:?}"),
            ));
        }
        let script = match kind {
            OutputKind::P2wsh => input.witness_script.as_ref(),
            OutputKind::P2sh => input.redeem_script.as_ref(),
        };
        let Some(script) = script else {
            return Err(refusal(Code::ScriptMismatch, "the channel script is missing"));
        };
        let parsed = ChannelScript::parse(script).map_err(|e| refusal(Code::ScriptMismatch, e.to_string()))?;
        if parsed.script_pubkey(kind) != out.script_pubkey {
            return Err(refusal(Code::ScriptMismatch, "the output does not commit to the script (M2-c)"));
        }
        if parsed.merchant() != self.signer.public_key(KeyRole::Oneway(key_index)) {
            return Err(refusal(Code::WrongMerchantKey, "the script's merchant key is not this session's (M2-c)"));
        }
        // M2-d, E4: judged on a fresh tip only.
        let Some(tip) = self.fresh_tip() else {
            return Err(refusal(Code::NoFreshTip, "the merchant has no fresh chain tip to judge the lock time (E4)"));
        };
        let t = parsed.locktime().to_consensus_u32();
        let p = &self.config.policy;
        let (earliest, latest) = (tip.saturating_add(p.min_lock_delta), tip.saturating_add(p.max_lock_delta));
        if t < earliest {
            return Err(refusal_expecting(Code::LocktimeTooSoon, "T is too near (M2-d)", u64::from(earliest)));
        }
        if t > latest {
            return Err(refusal_expecting(Code::LocktimeTooLate, "T is too far (M2-d)", u64::from(latest)));
        }
        // M2-e: capacity within policy (the chain is asked next).
        if out.value < p.min_capacity || out.value > p.max_capacity || out.value > Amount::MAX_MONEY {
            return Err(refusal(
                Code::CapacityOutOfPolicy,
                format!("capacity {} is outside the policy (M2-e)", out.value),
            ));
        }
        Ok(ChannelOutput { outpoint, value: out.value, script: parsed, kind })
    }

    /// The caller's answer to [`MerchantOutput::QueryFunding`] (M2-e).
    pub fn handle_funding(&mut self, outpoint: OutPoint, status: FundingStatus) {
        let Some((session_id, pending)) = self
            .sessions
            .iter()
            .find_map(|(id, s)| s.pending.as_ref().filter(|p| p.output.outpoint == outpoint).map(|p| (*id, p.clone())))
        else {
            return;
        };
        let peer = pending.peer;
        let refused = match status {
            FundingStatus::Unavailable => {
                // M2-e: a backend failure is transient, never a rejection.
                self.sessions.get_mut(&session_id).expect("found").pending = None;
                self.error(peer, refusal(Code::Transient, "the chain backend did not answer; try again"), true);
                self.flush();
                return;
            }
            FundingStatus::Missing => Some(refusal(Code::NotConfirmed, "the funding output is not in the chain")),
            FundingStatus::Found { unspent: false, .. } => {
                Some(refusal(Code::FundingSpent, "the funding output is spent"))
            }
            FundingStatus::Found { confirmations, .. } if confirmations < self.config.policy.min_depth => {
                let depth = u64::from(self.config.policy.min_depth);
                Some(refusal_expecting(Code::NotConfirmed, "the funding needs more confirmations", depth))
            }
            FundingStatus::Found { value, .. } if value != pending.output.value => Some(refusal_expecting(
                Code::ValueMismatch,
                "the funding output holds another value",
                pending.output.value.to_sat(),
            )),
            FundingStatus::Found { .. } => None,
        };
        if let Some(r) = refused {
            // The session may try again (a funding not yet deep enough).
            self.sessions.get_mut(&session_id).expect("found").pending = None;
            self.reject(peer, r);
            self.flush();
            return;
        }
        let t = pending.output.script.locktime().to_consensus_u32();
        let p = &self.config.policy;
        let deadline = t.saturating_sub(p.settle_margin).saturating_sub(p.accept_margin);
        // M2-d again, now that the chain answered: the channel must still
        // leave time to pay.
        if self.tip.is_none_or(|tip| tip >= deadline) {
            self.sessions.get_mut(&session_id).expect("found").pending = None;
            self.reject(peer, refusal_expecting(Code::LocktimeTooSoon, "T leaves no time to pay", u64::from(deadline)));
            self.flush();
            return;
        }
        // M2-g: recorded before `accept` leaves; the session is used.
        let session = self.sessions.remove(&session_id).expect("found");
        let capacity = pending.output.value;
        self.used.insert(outpoint);
        self.channels.insert(
            outpoint,
            Chan {
                output: pending.output.clone(),
                key_index: session.key_index,
                peer,
                deadline,
                next_invoice: 1,
                invoice: None,
                best: None,
                closing: None,
            },
        );
        let locktime = pending.output.script.locktime();
        let deadline = absolute::Height::from_consensus(deadline).unwrap_or(absolute::Height::ZERO);
        self.send(peer, Message::Accept { channel_id: outpoint, capacity, locktime, deadline });
        self.gate.emit(MerchantOutput::Event(MerchantEvent::ChannelOpen { channel_id: outpoint, capacity }));
        self.flush();
    }

    // -----------------------------------------------------------------
    // Orders.
    // -----------------------------------------------------------------

    /// Invoices an order of `amount` on `channel_id` (M3-a): the total is
    /// the best so far plus `amount`. Returns the invoice id.
    pub fn invoice(&mut self, channel_id: OutPoint, amount: Amount) -> Result<u64, MerchantError> {
        let tip = self.fresh_tip().ok_or(MerchantError::NoFreshTip)?;
        let c = self.channels.get(&channel_id).filter(|c| c.closing.is_none());
        let c = c.ok_or(MerchantError::UnknownChannel(channel_id))?;
        if let Some(i) = &c.invoice {
            return Err(MerchantError::Outstanding(i.id));
        }
        if tip >= c.deadline {
            return Err(MerchantError::PastDeadline);
        }
        let best = c.best.as_ref().map_or(Amount::ZERO, |b| b.total);
        let total = best.checked_add(amount).filter(|_| amount > Amount::ZERO);
        let total = total.ok_or(MerchantError::CannotPay(amount))?;
        // M3-a: payable after the lowest fee and with the dust a dropped
        // change may add (E6).
        let size = c.output.finalized_size(&self.example_payment(c, total));
        let fee = Amount::from_sat((self.config.policy.min_fee_rate.saturating_mul(size as u64)).div_ceil(1000));
        if total.checked_add(fee).is_none_or(|need| need > c.output.value)
            || total < dust_threshold(&self.config.payout_script, &self.config.dust)
        {
            return Err(MerchantError::CannotPay(total));
        }
        let id = c.next_invoice;
        let peer = c.peer;
        let c = self.channels.get_mut(&channel_id).expect("looked up above");
        c.next_invoice += 1;
        c.invoice = Some(Invoice { id, amount, total });
        let payout_script = self.config.payout_script.clone();
        self.send(peer, Message::Invoice { channel_id, invoice_id: id, amount, total, payout_script });
        self.flush();
        Ok(id)
    }

    /// Withdraws the outstanding invoice of `channel_id` (one the client
    /// cannot or will not pay), so that another can be made.
    pub fn cancel_invoice(&mut self, channel_id: OutPoint) -> Result<(), MerchantError> {
        let c = self.channels.get_mut(&channel_id).ok_or(MerchantError::UnknownChannel(channel_id))?;
        if c.invoice.take().is_some() {
            self.gate.touch();
            self.flush();
        }
        Ok(())
    }

    /// Sends the outstanding invoice of `channel_id` again (after the
    /// connection dropped, M5-b).
    pub fn resend_invoice(&mut self, channel_id: OutPoint) -> Result<(), MerchantError> {
        let c = self.channels.get(&channel_id).ok_or(MerchantError::UnknownChannel(channel_id))?;
        let Some(i) = c.invoice.clone() else { return Ok(()) };
        let (peer, payout_script) = (c.peer, self.config.payout_script.clone());
        let message =
            Message::Invoice { channel_id, invoice_id: i.id, amount: i.amount, total: i.total, payout_script };
        self.send(peer, message);
        self.flush();
        Ok(())
    }

    /// A payment's shape, for its size: the channel input, the payee and a
    /// change output.
    fn example_payment(&self, c: &Chan, total: Amount) -> Transaction {
        let payee = TxOut { value: total, script_pubkey: self.config.payout_script.clone() };
        let change = TxOut { value: Amount::ZERO, script_pubkey: self.config.payout_script.clone() };
        c.output.spending(vec![payee, change])
    }

    /// M3-c..M3-g.
    fn on_payment(&mut self, peer: Peer, channel_id: OutPoint, invoice_id: u64, bytes: &[u8]) {
        let Some(c) = self.channels.get(&channel_id).cloned() else {
            return self.error(peer, refusal(Code::UnknownChannel, "no such channel"), false);
        };
        // M5-b: a retried payment of the stored best is acked again.
        if let Some(best) = c.best.as_ref().filter(|b| b.invoice_id == invoice_id) {
            let same = Psbt::deserialize(bytes).is_ok_and(|p| p.unsigned_tx == best.tx);
            if same && bytes.len() <= MAX_PSBT_LEN {
                let total = best.total;
                return self.send(peer, Message::PaymentAck { channel_id, invoice_id, total });
            }
        }
        match self.check_payment(&c, invoice_id, bytes) {
            Err(r) => {
                let transient = matches!(r.code, Code::Transient | Code::NoFreshTip);
                self.error(peer, r, transient)
            }
            Ok((best, tx)) => {
                let _ = tx;
                let amount = best.amount;
                let total = best.total;
                let c = self.channels.get_mut(&channel_id).expect("looked up above");
                c.best = Some(best);
                c.invoice = None;
                c.peer = peer;
                // M3-g: stored before the ack and the event leave.
                self.send(peer, Message::PaymentAck { channel_id, invoice_id, total });
                self.gate.emit(MerchantOutput::Event(MerchantEvent::PaymentReceived {
                    channel_id,
                    invoice_id,
                    amount,
                    total,
                }));
            }
        }
    }

    fn check_payment(&self, c: &Chan, invoice_id: u64, bytes: &[u8]) -> Result<(Best, Transaction), Refusal> {
        // E4: no payment is taken on a tip that may be past the deadline.
        let Some(tip) = self.fresh_tip() else {
            return Err(refusal(Code::NoFreshTip, "the merchant's chain tip is stale; try again (E4)"));
        };
        if c.closing.is_some() {
            return Err(refusal(Code::PastDeadline, "the channel is closing"));
        }
        if tip >= c.deadline {
            return Err(refusal_expecting(
                Code::PastDeadline,
                "the channel takes no more payments",
                u64::from(c.deadline),
            ));
        }
        let Some(invoice) = c.invoice.as_ref().filter(|i| i.id == invoice_id) else {
            let expected = c.invoice.as_ref().map_or(0, |i| i.id);
            return Err(refusal_expecting(Code::StaleInvoice, "not the outstanding invoice", expected));
        };
        if bytes.len() > MAX_PSBT_LEN {
            return Err(refusal_expecting(Code::MalformedPsbt, "PSBT too large", MAX_PSBT_LEN as u64));
        }
        let psbt = Psbt::deserialize(bytes).map_err(|e| refusal(Code::MalformedPsbt, e.to_string()))?;
        let tx = &psbt.unsigned_tx;
        if tx.input.len() != 1 || psbt.inputs.len() != 1 {
            return Err(refusal_expecting(Code::InputCount, "a payment spends the channel output only", 1));
        }
        if tx.input[0].previous_output != c.output.outpoint {
            return Err(refusal(Code::WrongInput, "the input is not the channel's"));
        }
        let input = &psbt.inputs[0];
        let stored = c.output.script.to_script();
        let given = match c.output.kind {
            OutputKind::P2wsh => input.witness_script.as_ref(),
            OutputKind::P2sh => input.redeem_script.as_ref(),
        };
        if given.is_some_and(|s| *s != stored) {
            return Err(refusal(Code::WrongInput, "the input's script is not the channel's"));
        }
        if !matches!(tx.version.0, 1 | 2) {
            return Err(refusal(Code::BadVersion, format!("version {} (M3-c)", tx.version.0)));
        }
        if tx.input[0].sequence != bitcoin::Sequence::MAX || tx.lock_time != absolute::LockTime::ZERO {
            return Err(refusal(Code::NotFinal, "a payment is final: sequence 0xFFFFFFFF, lock time 0 (M3-c)"));
        }
        if tx.output.is_empty() || tx.output.len() > 4 {
            return Err(refusal(Code::OutputCount, format!("{} outputs (M3-c)", tx.output.len())));
        }
        let mut sum = Amount::ZERO;
        for o in &tx.output {
            if !is_standard_payout(&o.script_pubkey) {
                return Err(refusal(Code::NonStandardOutput, "an output of no standard spendable type (M3-c)"));
            }
            let dust = dust_threshold(&o.script_pubkey, &self.config.dust);
            if o.value < dust {
                return Err(refusal_expecting(Code::DustOutput, "an output below its dust threshold", dust.to_sat()));
            }
            sum = sum
                .checked_add(o.value)
                .filter(|s| *s <= Amount::MAX_MONEY)
                .ok_or_else(|| refusal(Code::OverCapacity, "the outputs overflow (E5)"))?;
        }
        let payee: Vec<&TxOut> = tx
            .output
            .iter()
            .filter(|o| o.script_pubkey == self.config.payout_script && o.value == invoice.total)
            .collect();
        if payee.len() != 1 {
            let total = invoice.total.to_sat();
            return Err(refusal_expecting(
                Code::NoPayeeOutput,
                "exactly one output must pay the invoiced total",
                total,
            ));
        }
        let best = c.best.as_ref().map_or(Amount::ZERO, |b| b.total);
        if invoice.total <= best {
            return Err(refusal_expecting(
                Code::NotIncreasing,
                "the total must exceed the best payment",
                best.to_sat(),
            ));
        }
        if sum > c.output.value {
            return Err(refusal_expecting(
                Code::OverCapacity,
                "the outputs exceed the capacity",
                c.output.value.to_sat(),
            ));
        }
        // M3-d
        let fee = c.output.value - sum;
        let size = c.output.finalized_size(tx) as u64;
        let p = &self.config.policy;
        let floor = Amount::from_sat(p.min_fee_rate.saturating_mul(size).div_ceil(1000));
        let dust_allowance =
            dust_threshold(&ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::all_zeros()), &self.config.dust);
        // E6: a client whose change was dust left it out; its fee was
        // computed with the change output (at most 43 bytes, a P2TR one) and
        // the dust went to the fee on top.
        let ceiling = Amount::from_sat(p.max_fee_rate.saturating_mul(size + 43) / 1000) + dust_allowance;
        if fee < floor {
            return Err(refusal_expecting(Code::FeeTooLow, "the fee is below the floor (M3-d)", floor.to_sat()));
        }
        if fee > ceiling {
            return Err(refusal_expecting(Code::FeeTooHigh, "the fee is above the ceiling (M3-d)", ceiling.to_sat()));
        }
        // M3-e
        let client = c.output.script.client();
        if input.partial_sigs.len() != 1 {
            return Err(refusal_expecting(Code::SignatureSet, "exactly the client's signature", 1));
        }
        let Some(sig) = input.partial_sigs.get(&bitcoin::PublicKey::new(client.0)) else {
            return Err(refusal(Code::SignatureSet, "the signature is not the client's key's"));
        };
        if sig.sighash_type != bitcoin::sighash::EcdsaSighashType::All
            || input
                .sighash_type
                .is_some_and(|t| t.ecdsa_hash_ty().ok() != Some(bitcoin::sighash::EcdsaSighashType::All))
        {
            return Err(refusal(Code::SighashType, "only SIGHASH_ALL (M3-e)"));
        }
        let mut low = sig.signature;
        low.normalize_s();
        if low != sig.signature {
            return Err(refusal(Code::SignatureEncoding, "a high-S signature (M3-e)"));
        }
        if c.output.verify(tx, &client, &sig.signature).is_err() {
            return Err(refusal(Code::InvalidSignature, "the client's signature does not verify (M3-e)"));
        }
        let best = Best {
            invoice_id,
            amount: invoice.amount,
            total: invoice.total,
            tx: tx.clone(),
            client_sig: sig.signature,
        };
        // M3-f: the countersigned, finalised transaction is checked before
        // the payment is taken.
        let mut check = c.clone();
        check.best = Some(best.clone());
        // A failure here is the signer's (both signatures verified above):
        // transient, the client may try again (M5-b).
        let final_tx = self.finalised(&check).map_err(|e| refusal(Code::Transient, e))?;
        Ok((best, final_tx))
    }

    /// `c`'s best payment, countersigned and finalised, after checking both
    /// signatures on it.
    fn finalised(&self, c: &Chan) -> Result<Transaction, String> {
        let best = c.best.as_ref().ok_or("no payment")?;
        let role = KeyRole::Oneway(c.key_index);
        let ours = c.output.sign(&best.tx, &*self.signer, role).map_err(|e| e.to_string())?;
        c.output.verify(&best.tx, &c.output.script.client(), &best.client_sig).map_err(|e| e.to_string())?;
        c.output.verify(&best.tx, &c.output.script.merchant(), &ours).map_err(|e| e.to_string())?;
        let mut tx = best.tx.clone();
        c.output.finalize_cooperative(&mut tx, &best.client_sig, &ours);
        Ok(tx)
    }

    // -----------------------------------------------------------------
    // Closing (M4).
    // -----------------------------------------------------------------

    /// Closes `channel_id` with its best payment (M4-a): countersigned,
    /// finalised, broadcast, and sent to the client. With no payment,
    /// nothing is broadcast and the channel is forgotten.
    pub fn close(&mut self, channel_id: OutPoint) -> Result<(), MerchantError> {
        let c = self.channels.get(&channel_id).filter(|c| c.closing.is_none());
        let c = c.ok_or(MerchantError::UnknownChannel(channel_id))?.clone();
        // A payment whose close cannot be signed now (a signer offline)
        // keeps the channel: the close is tried again at the next block.
        let tx = match c.best {
            Some(_) => Some(self.finalised(&c).map_err(MerchantError::Signer)?),
            None => None,
        };
        if let Some(tx) = &tx {
            self.gate.emit(MerchantOutput::Broadcast(tx.clone()));
        }
        self.send(c.peer, Message::Close { channel_id, tx: tx.clone() });
        self.gate.emit(MerchantOutput::Event(MerchantEvent::ChannelClosing { channel_id, tx: tx.clone() }));
        if tx.is_some() {
            self.channels.get_mut(&channel_id).expect("looked up above").closing = Some(tx);
            self.gate.emit(MerchantOutput::QueryOutpoint { outpoint: channel_id });
        } else {
            self.channels.remove(&channel_id);
        }
        self.flush();
        Ok(())
    }

    /// The tip, if fresh (E4): a block arrived since start, and it is at
    /// most `max_tip_age` behind the caller's clock.
    fn fresh_tip(&self) -> Option<u32> {
        self.tip.filter(|_| self.fresh && self.now.saturating_sub(self.tip_time) <= self.config.max_tip_age)
    }

    /// The caller's clock, in seconds (as block times): a tip older than
    /// `max_tip_age` behind it is not fresh enough to judge `T` by (E4).
    /// Times that go backwards are ignored.
    pub fn handle_now(&mut self, now: u32) {
        self.now = self.now.max(now);
    }

    /// A new tip at `height` with block time `time` (E4): closes what
    /// reached `T - settle_margin` (M4-b), re-broadcasts what is closing and
    /// asks whether it is spent.
    pub fn handle_block(&mut self, height: u32, time: u32) {
        // The same height again only refreshes a restored tip.
        if self.tip.is_some_and(|t| height < t || (height == t && self.fresh)) {
            return;
        }
        self.fresh = true;
        self.tip = Some(height);
        self.tip_time = time;
        self.now = self.now.max(time);
        self.gate.touch();
        let settle = self.config.policy.settle_margin;
        let due: Vec<OutPoint> = self
            .channels
            .iter()
            .filter(|(_, c)| c.closing.is_none())
            .filter(|(_, c)| height >= c.output.script.locktime().to_consensus_u32().saturating_sub(settle))
            .map(|(o, _)| *o)
            .collect();
        for o in due {
            let _ = self.close(o);
        }
        let closing: Vec<(OutPoint, Transaction)> =
            self.channels.iter().filter_map(|(o, c)| c.closing.clone().flatten().map(|tx| (*o, tx))).collect();
        for (outpoint, tx) in closing {
            self.gate.emit(MerchantOutput::Broadcast(tx));
            self.gate.emit(MerchantOutput::QueryOutpoint { outpoint });
        }
        self.flush();
    }

    /// The caller's answer to [`MerchantOutput::QueryOutpoint`] (M4-b,
    /// M4-e). A backend that cannot answer never counts as spent.
    pub fn handle_outpoint(&mut self, outpoint: OutPoint, status: OutpointStatus) {
        let Some(c) = self.channels.get(&outpoint) else { return };
        let OutpointStatus::Spent { tx, confirmations } = status else { return };
        if confirmations < self.config.bury_depth.max(1) {
            return;
        }
        let ours_txid = c.closing.clone().flatten().map(|t| t.compute_txid());
        let txid = tx.compute_txid();
        let received: Amount =
            tx.output.iter().filter(|o| o.script_pubkey == self.config.payout_script).map(|o| o.value).sum();
        self.channels.remove(&outpoint);
        let event =
            MerchantEvent::ChannelSettled { channel_id: outpoint, txid, ours: ours_txid == Some(txid), received };
        self.gate.emit(MerchantOutput::Event(event));
        self.flush();
    }
}

// ---------------------------------------------------------------------
// Persistence.
// ---------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"PMER";
const FORMAT: u8 = 2;

/// Why a stored merchant state could not be restored.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerchantRestoreError {
    /// Damaged, truncated or of an unknown format.
    #[error("merchant state is damaged: {0}")]
    Damaged(#[from] crate::channel::RestoreError),
    /// It reads, but describes nothing this merchant could have stored.
    #[error("merchant state is inconsistent: {0}")]
    Inconsistent(&'static str),
}

use crate::channel::persist::{open, R, W};
use crate::channel::RestoreError;

impl W {
    pub(super) fn channel_output(&mut self, o: &ChannelOutput) {
        self.outpoint(&o.outpoint);
        self.u64(o.value.to_sat());
        self.key(&o.script.client());
        self.key(&o.script.merchant());
        self.u32(o.script.locktime().to_consensus_u32());
        self.u8(match o.kind {
            OutputKind::P2wsh => 0,
            OutputKind::P2sh => 1,
        });
    }
}

impl R<'_> {
    pub(super) fn channel_output(&mut self) -> Result<ChannelOutput, RestoreError> {
        let outpoint = self.outpoint()?;
        let value = self.amount()?;
        let (client, merchant) = (self.key()?, self.key()?);
        let t = absolute::Height::from_consensus(self.u32()?).map_err(|_| RestoreError::Invalid("lock time"))?;
        let kind = match self.u8()? {
            0 => OutputKind::P2wsh,
            1 => OutputKind::P2sh,
            _ => return Err(RestoreError::Invalid("output kind")),
        };
        let script = ChannelScript::new(client, merchant, t).map_err(|_| RestoreError::Invalid("channel script"))?;
        Ok(ChannelOutput { outpoint, value, script, kind })
    }
}

impl Merchant {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::header(MAGIC, FORMAT, 256 + 512 * self.channels.len());
        w.u64(self.gate.next_version());
        w.u64(self.next_key);
        w.opt(self.tip, W::u32);
        w.u32(self.sessions.len() as u32);
        for (id, s) in &self.sessions {
            w.raw(&id.0);
            w.u64(s.key_index);
        }
        w.u32(self.channels.len() as u32);
        for c in self.channels.values() {
            w.channel_output(&c.output);
            w.u64(c.key_index);
            w.u64(c.peer);
            w.u32(c.deadline);
            w.u64(c.next_invoice);
            w.opt(c.invoice.as_ref(), |w, i| {
                w.u64(i.id);
                w.u64(i.amount.to_sat());
                w.u64(i.total.to_sat());
            });
            w.opt(c.best.as_ref(), |w, b| {
                w.u64(b.invoice_id);
                w.u64(b.amount.to_sat());
                w.u64(b.total.to_sat());
                w.tx(&b.tx);
                w.sig(&b.client_sig);
            });
            w.opt(c.closing.clone().flatten().as_ref(), W::tx);
        }
        w.u32(self.used.len() as u32);
        for o in &self.used {
            w.outpoint(o);
        }
        w.seal()
    }

    /// A merchant from its last stored state. Every channel's best payment
    /// is checked again (both signatures, the finalised transaction), and
    /// reported again as [`MerchantEvent::PaymentReceived`] (at least once);
    /// closing channels are asked about at the next block. Sessions whose
    /// announce was being checked must announce again.
    pub fn restore(
        config: MerchantConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        bytes: &[u8],
    ) -> Result<Merchant, MerchantRestoreError> {
        let mut r = open(bytes, MAGIC, FORMAT)?;
        let mut m = Merchant::new(config, signer);
        let version = r.u64()?;
        m.next_key = r.u64()?;
        m.tip = r.opt(R::u32)?;
        for _ in 0..r.u32()? {
            let id = SessionId(r.array()?);
            let key_index = r.u64()?;
            if key_index >= m.next_key {
                return Err(MerchantRestoreError::Inconsistent("a session key not yet handed out"));
            }
            m.sessions.insert(id, Session { key_index, pending: None });
        }
        for _ in 0..r.u32()? {
            let output = r.channel_output()?;
            let key_index = r.u64()?;
            let peer = r.u64()?;
            let deadline = r.u32()?;
            let next_invoice = r.u64()?;
            let invoice = r.opt(|r| Ok(Invoice { id: r.u64()?, amount: r.amount()?, total: r.amount()? }))?;
            let best = r.opt(|r| {
                Ok(Best {
                    invoice_id: r.u64()?,
                    amount: r.amount()?,
                    total: r.amount()?,
                    tx: r.tx()?,
                    client_sig: r.sig()?,
                })
            })?;
            let closing = r.opt(R::tx)?;
            if output.script.merchant() != m.signer.public_key(KeyRole::Oneway(key_index)) {
                return Err(MerchantRestoreError::Inconsistent("a channel key the signer does not hold"));
            }
            let chan =
                Chan { output, key_index, peer, deadline, next_invoice, invoice, best, closing: closing.map(Some) };
            // The client's signature is checked; ours is made at the close,
            // so a signer offline at startup does not stop the restore.
            if let Some(b) = &chan.best {
                if chan.output.verify(&b.tx, &chan.output.script.client(), &b.client_sig).is_err()
                    || b.tx.output.iter().all(|o| o.value != b.total)
                {
                    return Err(MerchantRestoreError::Inconsistent("a stored payment does not verify"));
                }
            }
            m.channels.insert(chan.output.outpoint, chan);
        }
        for _ in 0..r.u32()? {
            m.used.insert(r.outpoint()?);
        }
        r.done()?;
        if m.channels.keys().any(|o| !m.used.contains(o)) {
            return Err(MerchantRestoreError::Inconsistent("a channel missing from the used outpoints"));
        }
        // Versions go on from the stored one (ADR 0003).
        m.gate = Gate::resumed(version);
        let reports: Vec<MerchantEvent> = m
            .channels
            .iter()
            .filter_map(|(o, c)| {
                c.best.as_ref().map(|b| MerchantEvent::PaymentReceived {
                    channel_id: *o,
                    invoice_id: b.invoice_id,
                    amount: b.amount,
                    total: b.total,
                })
            })
            .collect();
        for e in reports {
            m.gate.emit(MerchantOutput::Event(e));
        }
        m.flush();
        Ok(m)
    }
}
