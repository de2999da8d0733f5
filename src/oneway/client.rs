//! The client (A): sets a channel up with a merchant, pays its invoices with
//! ever larger payments, checks the close, and takes its refund after `T`.
//!
//! # The contract
//!
//! - **Inputs**: [`handle_message`](Client::handle_message),
//!   [`handle_block`](Client::handle_block) for each new tip,
//!   [`handle_outpoint`](Client::handle_outpoint) answering
//!   [`ClientOutput::QueryOutpoint`], and
//!   [`handle_persisted`](Client::handle_persisted).
//! - **Commands**: [`provide_funding`](Client::provide_funding) once the
//!   wallet funded the channel output, [`pay`](Client::pay) an invoice,
//!   [`request_close`](Client::request_close). A mistake returns a
//!   [`ClientError`] and changes nothing.
//! - **Outputs** through the persist-before-release gate: the refund data is
//!   stored before `announce` leaves (M1-c), each signed payment before it
//!   leaves.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::sync::Arc;

use bitcoin::psbt::Psbt;
use bitcoin::{absolute, Amount, CompressedPublicKey, FeeRate, OutPoint, ScriptBuf, Transaction};

use super::gate::{Gate, Released};
use super::script::{ChannelScript, OutputKind};
use super::tx::{is_standard_payout, ChannelOutput, DustPolicy};
use super::wire::{Message, Policy, Refusal, SessionId};
use crate::tx::{KeyRole, Signer};

/// The client's settings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClientConfig {
    /// The network asked for (M1-a).
    pub network: String,
    /// If set, the only merchant key accepted (M1-b).
    pub pinned_merchant_key: Option<CompressedPublicKey>,
    /// What to lock in the channel.
    pub capacity: Amount,
    /// `T` is the tip plus this many blocks (M1-c).
    pub lock_delta: u32,
    /// Payments' fee rate (M3-b).
    pub fee_rate: FeeRate,
    /// The refund's fee rate (M4-d).
    pub refund_fee_rate: FeeRate,
    /// Where change and the refund go.
    pub change_script: ScriptBuf,
    /// The output kinds accepted (E1).
    pub kinds: Vec<OutputKind>,
    /// The chain's dust rule (E1, E6).
    pub dust: DustPolicy,
    /// Confirmations after which the channel output's spend is final.
    pub bury_depth: u32,
}

/// What the client hands the caller.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ClientOutput {
    /// Send this to the merchant.
    Send(Message),
    /// The wallet must pay `amount` to `script_pubkey`, broadcast it, and
    /// hand the transaction to [`Client::provide_funding`] once it has
    /// `min_depth` confirmations (M1-c, M2-e). The refund data is stored
    /// before the merchant hears of it.
    FundChannel {
        /// The channel's capacity.
        amount: Amount,
        /// The channel output's script.
        script_pubkey: ScriptBuf,
        /// The confirmations the merchant asks for.
        min_depth: u32,
    },
    /// Broadcast this transaction.
    Broadcast(Transaction),
    /// Look up whether the channel output is spent: answer with
    /// [`Client::handle_outpoint`].
    QueryOutpoint {
        /// The output.
        outpoint: OutPoint,
    },
    /// Store `state` durably, then call [`Client::handle_persisted`].
    Persist {
        /// Increases with every change.
        version: u64,
        /// The whole state ([`Client::restore`] reads it).
        state: Vec<u8>,
    },
    /// Something the application should know.
    Event(ClientEvent),
}

/// What the application learns.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The merchant accepted the channel.
    ChannelOpen {
        /// Its funding outpoint.
        channel_id: OutPoint,
        /// Its capacity.
        capacity: Amount,
        /// `T`.
        locktime: absolute::Height,
    },
    /// The merchant refused the channel: the refund comes after `T`.
    ChannelRejected(Refusal),
    /// An invoice to pay with [`Client::pay`].
    Invoice {
        /// Its id.
        invoice_id: u64,
        /// This order.
        amount: Amount,
        /// The total it asks.
        total: Amount,
    },
    /// The merchant stored the payment of `total`.
    PaymentAcked {
        /// The invoice.
        invoice_id: u64,
        /// The total.
        total: Amount,
    },
    /// The merchant refused something.
    MerchantError(Refusal),
    /// A close was received or seen; `problem` says what is wrong with it
    /// (M4-c), `None` if nothing.
    CloseSeen {
        /// The close.
        tx: Transaction,
        /// What is wrong with it.
        problem: Option<&'static str>,
    },
    /// The refund could not be built (its fee rate leaves only dust, or the
    /// signer failed): the channel output stays unspent until it can.
    RefundFailed(String),
    /// The channel output is spent and buried: the channel is over.
    Settled {
        /// The spending transaction.
        txid: bitcoin::Txid,
        /// Whether it is our refund.
        refund: bool,
    },
}

/// A caller's mistake, or a merchant the client will not deal with (M1-b):
/// nothing changed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Not possible in this phase.
    #[error("{0} is not possible now")]
    WrongPhase(&'static str),
    /// No invoice with this id is outstanding.
    #[error("no outstanding invoice {0}")]
    NoInvoice(u64),
    /// The funding transaction does not pay the channel output.
    #[error("the funding transaction does not pay {0} to the channel script")]
    BadFunding(Amount),
    /// The payment could not be built or signed.
    #[error("the payment could not be built: {0}")]
    Payment(String),
}

/// Why the client refused a merchant's key or terms (M1-b): reported as an
/// event-free typed error from [`Client::handle_message`]'s phase, and the
/// client stops.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupRefusal {
    /// Not a valid compressed key.
    #[error("the merchant key is not a valid compressed public key (M1-b)")]
    BadKey,
    /// Not the pinned key.
    #[error("the merchant key is not the pinned one (M1-b)")]
    NotPinned,
    /// A term the client cannot meet.
    #[error("the merchant's policy cannot be met: {0} (M1-b)")]
    Policy(&'static str),
    /// No tip to set `T` from.
    #[error("no chain tip to set the lock time from")]
    NoTip,
}

/// Where the client is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Requested,
    Funding {
        session: SessionId,
        policy: Policy,
        script: ChannelScript,
    },
    Announced {
        session: SessionId,
        policy: Policy,
        output: ChannelOutput,
        funding: Transaction,
    },
    Open(Open),
    /// Refused: the funding is refunded after `T`.
    Refused {
        output: ChannelOutput,
        why: String,
    },
    Settled,
}

/// An open channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Open {
    pub(crate) output: ChannelOutput,
    pub(crate) funding: Transaction,
    pub(crate) policy: Policy,
    pub(crate) deadline: u32,
    /// The outstanding invoice: (id, amount, total, script).
    pub(crate) invoice: Option<(u64, Amount, Amount, ScriptBuf)>,
    /// The last invoice id seen.
    pub(crate) last_invoice: u64,
    /// The highest total signed, and that payment.
    pub(crate) signed: Option<(u64, Amount, Transaction)>,
    /// The highest total the merchant acked.
    pub(crate) acked: Amount,
    /// The close the merchant sent, if any.
    pub(crate) close: Option<Transaction>,
}

/// The client.
pub struct Client {
    signer: Arc<dyn Signer + Send + Sync>,
    pub(crate) config: ClientConfig,
    pub(crate) key_index: u64,
    pub(crate) phase: Phase,
    pub(crate) tip: Option<u32>,
    pub(crate) refused: Option<SetupRefusal>,
    gate: Gate<ClientOutput>,
}

impl core::fmt::Debug for Client {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Client").field("phase", &self.phase).field("tip", &self.tip).finish_non_exhaustive()
    }
}

impl Client {
    /// A client asking for a channel; its key is `signer`'s
    /// [`KeyRole::Oneway`]`(key_index)`, fresh for this channel (M1-c).
    pub fn new(config: ClientConfig, signer: Arc<dyn Signer + Send + Sync>, key_index: u64, tip: u32) -> Self {
        let mut c = Client {
            signer,
            key_index,
            phase: Phase::Requested,
            tip: Some(tip),
            refused: None,
            gate: Gate::default(),
            config,
        };
        let network = c.config.network.clone();
        c.gate.emit(ClientOutput::Send(Message::RequestChannel { network }));
        c.flush();
        c
    }

    /// The channel output, once funded.
    pub fn channel(&self) -> Option<&ChannelOutput> {
        match &self.phase {
            Phase::Announced { output, .. } | Phase::Refused { output, .. } => Some(output),
            Phase::Open(o) => Some(&o.output),
            _ => None,
        }
    }

    /// The highest total the client signed.
    pub fn signed_total(&self) -> Amount {
        match &self.phase {
            Phase::Open(o) => o.signed.as_ref().map_or(Amount::ZERO, |s| s.1),
            _ => Amount::ZERO,
        }
    }

    /// Why the client stopped at setup, if it did (M1-b).
    pub fn setup_refusal(&self) -> Option<&SetupRefusal> {
        self.refused.as_ref()
    }

    /// Whether the channel is over.
    pub fn is_settled(&self) -> bool {
        self.phase == Phase::Settled
    }

    /// The next output, or `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        Some(match self.gate.poll()? {
            Released::Persist { version, state } => ClientOutput::Persist { version, state },
            Released::Output(o) => o,
        })
    }

    /// State `version` is durable.
    pub fn handle_persisted(&mut self, version: u64) {
        self.gate.persisted(version);
    }

    fn flush(&mut self) {
        if self.gate.is_dirty() {
            let state = self.to_bytes();
            self.gate.flush(state);
        }
    }

    fn event(&mut self, e: ClientEvent) {
        self.gate.emit(ClientOutput::Event(e));
    }

    /// A message from the merchant.
    pub fn handle_message(&mut self, message: Message) {
        match (&self.phase, message) {
            (Phase::Requested, Message::ChannelKey { session_id, merchant_key, policy, payout_script: _ }) => {
                match self.check_key(&merchant_key, &policy) {
                    Err(r) => {
                        self.refused = Some(r);
                        self.phase = Phase::Settled;
                        self.gate.touch();
                    }
                    Ok(script) => {
                        let script_pubkey = script.script_pubkey(policy.kind);
                        let amount = self.config.capacity;
                        let min_depth = policy.min_depth;
                        self.phase = Phase::Funding { session: session_id, policy, script };
                        self.gate.emit(ClientOutput::FundChannel { amount, script_pubkey, min_depth });
                    }
                }
            }
            (
                Phase::Announced { output, funding, policy, .. },
                Message::Accept { channel_id, capacity, locktime, deadline },
            ) => {
                // M2-g: the accept echoes what was announced.
                if channel_id != output.outpoint || capacity != output.value || locktime != output.script.locktime() {
                    let output = output.clone();
                    self.phase = Phase::Refused { output, why: "accept does not echo the announce (M2-g)".into() };
                    self.gate.touch();
                } else {
                    let open = Open {
                        output: output.clone(),
                        funding: funding.clone(),
                        policy: policy.clone(),
                        deadline: deadline.to_consensus_u32(),
                        invoice: None,
                        last_invoice: 0,
                        signed: None,
                        acked: Amount::ZERO,
                        close: None,
                    };
                    self.phase = Phase::Open(open);
                    self.event(ClientEvent::ChannelOpen { channel_id, capacity, locktime });
                }
            }
            // A funding not yet deep enough for the merchant, or its chain
            // backend down: the announce may be sent again (`resend`).
            (Phase::Announced { .. }, Message::Reject(r))
                if matches!(r.code, super::wire::Code::NotConfirmed | super::wire::Code::NoFreshTip) =>
            {
                self.event(ClientEvent::MerchantError(r));
            }
            (Phase::Announced { output, .. }, Message::Reject(r)) => {
                let output = output.clone();
                self.phase = Phase::Refused { output, why: r.explanation.clone() };
                self.event(ClientEvent::ChannelRejected(r));
            }
            (Phase::Open(o), Message::Invoice { channel_id, invoice_id, amount, total, payout_script }) => {
                // The same invoice again (the connection dropped): answer as
                // before, never pay twice (M5-b).
                if invoice_id == o.last_invoice && channel_id == o.output.outpoint {
                    let paid = o.signed.as_ref().is_some_and(|s| s.0 == invoice_id);
                    if paid {
                        let _ = self.resend();
                    }
                    self.flush();
                    return;
                }
                let tip = self.tip.unwrap_or(0);
                let best = o.signed.as_ref().map_or(Amount::ZERO, |s| s.1);
                // M3-b: only an increasing total, within capacity, before
                // the deadline, to a standard script, consistent with its
                // amount.
                let ok = channel_id == o.output.outpoint
                    && invoice_id > o.last_invoice
                    && total > best
                    && total <= o.output.value
                    && total.checked_sub(amount).is_some_and(|prev| prev <= best)
                    && tip < o.deadline
                    && is_standard_payout(&payout_script);
                if ok {
                    let Phase::Open(o) = &mut self.phase else { unreachable!("matched above") };
                    o.last_invoice = invoice_id;
                    o.invoice = Some((invoice_id, amount, total, payout_script));
                    self.event(ClientEvent::Invoice { invoice_id, amount, total });
                } else {
                    let refusal = Refusal {
                        code: super::wire::Code::StaleInvoice,
                        explanation: "the invoice cannot be paid (M3-b)".into(),
                        expected: None,
                    };
                    self.gate.emit(ClientOutput::Send(Message::Error { refusal, transient: false }));
                }
            }
            (Phase::Open(o), Message::PaymentAck { channel_id, invoice_id, total }) => {
                let signed = o.signed.as_ref().is_some_and(|s| s.0 == invoice_id && s.1 == total);
                if channel_id == o.output.outpoint && signed && total > o.acked {
                    let Phase::Open(o) = &mut self.phase else { unreachable!("matched above") };
                    o.acked = total;
                    self.event(ClientEvent::PaymentAcked { invoice_id, total });
                }
            }
            (Phase::Open(o), Message::Close { channel_id, tx: Some(tx) }) if channel_id == o.output.outpoint => {
                let problem = self.check_close(&tx);
                // Only a close that passes is kept; what reaches the chain
                // is checked again either way (M4-c).
                if problem.is_none() {
                    let Phase::Open(o) = &mut self.phase else { unreachable!("matched above") };
                    o.close = Some(tx.clone());
                }
                self.event(ClientEvent::CloseSeen { tx, problem });
            }
            (_, Message::Error { refusal, .. }) => self.event(ClientEvent::MerchantError(refusal)),
            _ => {}
        }
        self.flush();
    }

    /// M1-b, then the script of M1-c.
    fn check_key(&self, merchant_key: &[u8], policy: &Policy) -> Result<ChannelScript, SetupRefusal> {
        if merchant_key.len() != 33 {
            return Err(SetupRefusal::BadKey);
        }
        let key = CompressedPublicKey::from_slice(merchant_key).map_err(|_| SetupRefusal::BadKey)?;
        if self.config.pinned_merchant_key.is_some_and(|p| p != key) {
            return Err(SetupRefusal::NotPinned);
        }
        let c = &self.config;
        if c.capacity < policy.min_capacity || c.capacity > policy.max_capacity {
            return Err(SetupRefusal::Policy("capacity"));
        }
        if c.lock_delta < policy.min_lock_delta || c.lock_delta > policy.max_lock_delta {
            return Err(SetupRefusal::Policy("lock time window"));
        }
        let rate = c.fee_rate.to_sat_per_kwu() * 4;
        if rate < policy.min_fee_rate || rate > policy.max_fee_rate {
            return Err(SetupRefusal::Policy("fee rate"));
        }
        if !c.kinds.contains(&policy.kind) {
            return Err(SetupRefusal::Policy("output kind"));
        }
        if policy.settle_margin.saturating_add(policy.accept_margin) >= c.lock_delta {
            return Err(SetupRefusal::Policy("margins leave no time to pay"));
        }
        let tip = self.tip.ok_or(SetupRefusal::NoTip)?;
        let t = absolute::Height::from_consensus(tip.saturating_add(c.lock_delta))
            .map_err(|_| SetupRefusal::Policy("lock time"))?;
        let ours = self.signer.public_key(KeyRole::Oneway(self.key_index));
        ChannelScript::new(ours, key, t).map_err(|_| SetupRefusal::BadKey)
    }

    /// M4-c.
    fn check_close(&self, tx: &Transaction) -> Option<&'static str> {
        let Phase::Open(o) = &self.phase else { return Some("no open channel") };
        if tx.input.len() != 1 || tx.input[0].previous_output != o.output.outpoint {
            return Some("it does not spend the channel output");
        }
        let Some((_, total, signed)) = &o.signed else { return Some("no payment was ever signed") };
        let Some(payee) = signed.output.first() else { return Some("no payment was ever signed") };
        let sum = |script: &ScriptBuf| {
            tx.output
                .iter()
                .filter(|x| x.script_pubkey == *script)
                .try_fold(Amount::ZERO, |a, x| a.checked_add(x.value))
        };
        let Some(to_merchant) = sum(&payee.script_pubkey) else { return Some("its outputs overflow") };
        if to_merchant > *total {
            return Some("it pays the merchant more than the last total signed");
        }
        let our_change = signed
            .output
            .iter()
            .find(|x| x.script_pubkey == self.config.change_script)
            .map_or(Amount::ZERO, |x| x.value);
        let Some(to_us) = sum(&self.config.change_script) else { return Some("its outputs overflow") };
        if to_us < our_change {
            return Some("it does not pay the client its change");
        }
        None
    }

    /// The wallet's funding transaction (M1-c): the refund data is stored,
    /// then `announce` leaves.
    pub fn provide_funding(&mut self, funding: Transaction) -> Result<(), ClientError> {
        let Phase::Funding { session, policy, script } = &self.phase else {
            return Err(ClientError::WrongPhase("provide_funding"));
        };
        let spk = script.script_pubkey(policy.kind);
        let vout = funding
            .output
            .iter()
            .position(|o| o.script_pubkey == spk && o.value == self.config.capacity)
            .ok_or(ClientError::BadFunding(self.config.capacity))?;
        let output = ChannelOutput {
            outpoint: OutPoint { txid: funding.compute_txid(), vout: vout as u32 },
            value: self.config.capacity,
            script: *script,
            kind: policy.kind,
        };
        let psbt = output.announce_psbt(&funding).map_err(|e| ClientError::Payment(e.to_string()))?;
        let session = *session;
        self.phase = Phase::Announced { session, policy: policy.clone(), output, funding };
        self.gate.emit(ClientOutput::Send(Message::Announce { session_id: session, psbt: psbt.serialize() }));
        self.flush();
        Ok(())
    }

    /// Pays the outstanding invoice `invoice_id` (M3-b): builds and signs
    /// the payment of its total, stores it, sends it.
    pub fn pay(&mut self, invoice_id: u64) -> Result<(), ClientError> {
        let Phase::Open(o) = &self.phase else { return Err(ClientError::WrongPhase("pay")) };
        let Some((id, _, total, payee)) = o.invoice.clone().filter(|i| i.0 == invoice_id) else {
            return Err(ClientError::NoInvoice(invoice_id));
        };
        if self.tip.unwrap_or(0) >= o.deadline {
            return Err(ClientError::WrongPhase("pay after the deadline"));
        }
        let c = &self.config;
        let tx = o
            .output
            .payment_tx(payee, total, c.change_script.clone(), c.fee_rate, &c.dust)
            .map_err(|e| ClientError::Payment(e.to_string()))?;
        let sig = o
            .output
            .sign(&tx, &*self.signer, KeyRole::Oneway(self.key_index))
            .map_err(|e| ClientError::Payment(e.to_string()))?;
        let psbt: Psbt =
            o.output.payment_psbt(&o.funding, tx.clone(), &sig).map_err(|e| ClientError::Payment(e.to_string()))?;
        let channel_id = o.output.outpoint;
        let Phase::Open(o) = &mut self.phase else { unreachable!("matched above") };
        o.signed = Some((id, total, tx));
        o.invoice = None;
        self.gate.emit(ClientOutput::Send(Message::Payment { channel_id, invoice_id, psbt: psbt.serialize() }));
        self.flush();
        Ok(())
    }

    /// Sends again what the merchant may not have received (M5-b): the
    /// announce while it is unanswered, the last payment while it is not
    /// acked. The merchant answers a repeat as it did the first time.
    pub fn resend(&mut self) -> Result<(), ClientError> {
        let message = match &self.phase {
            Phase::Announced { session, output, funding, .. } => {
                let psbt = output.announce_psbt(funding).map_err(|e| ClientError::Payment(e.to_string()))?;
                Message::Announce { session_id: *session, psbt: psbt.serialize() }
            }
            Phase::Open(o) => match &o.signed {
                Some((invoice_id, total, tx)) if *total > o.acked => {
                    let sig = o
                        .output
                        .sign(tx, &*self.signer, KeyRole::Oneway(self.key_index))
                        .map_err(|e| ClientError::Payment(e.to_string()))?;
                    let psbt = o
                        .output
                        .payment_psbt(&o.funding, tx.clone(), &sig)
                        .map_err(|e| ClientError::Payment(e.to_string()))?;
                    Message::Payment { channel_id: o.output.outpoint, invoice_id: *invoice_id, psbt: psbt.serialize() }
                }
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        self.gate.emit(ClientOutput::Send(message));
        self.flush();
        Ok(())
    }

    /// Asks the merchant to close.
    pub fn request_close(&mut self) -> Result<(), ClientError> {
        let Phase::Open(o) = &self.phase else { return Err(ClientError::WrongPhase("request_close")) };
        let channel_id = o.output.outpoint;
        self.gate.emit(ClientOutput::Send(Message::Close { channel_id, tx: None }));
        self.flush();
        Ok(())
    }

    /// A new tip: from `T` on, the client asks whether the channel output is
    /// still unspent, to refund it (M4-d); while a close is known, whether
    /// it is buried.
    pub fn handle_block(&mut self, height: u32) {
        if self.tip.is_some_and(|t| height <= t) {
            return;
        }
        self.tip = Some(height);
        self.gate.touch();
        if let Some(output) = self.channel().cloned() {
            let t = output.script.locktime().to_consensus_u32();
            let closing = matches!(&self.phase, Phase::Open(o) if o.close.is_some());
            if height >= t || closing {
                self.gate.emit(ClientOutput::QueryOutpoint { outpoint: output.outpoint });
            }
        }
        self.flush();
    }

    /// The caller's answer to [`ClientOutput::QueryOutpoint`]: unspent after
    /// `T`, the refund is broadcast (again) (M4-d); spent and buried, the
    /// channel is settled.
    pub fn handle_outpoint(&mut self, outpoint: OutPoint, status: super::merchant::OutpointStatus) {
        use super::merchant::OutpointStatus;
        let Some(output) = self.channel().cloned().filter(|o| o.outpoint == outpoint) else { return };
        match status {
            OutpointStatus::Unavailable => {}
            OutpointStatus::Unspent => {
                let t = output.script.locktime().to_consensus_u32();
                // A close that passed the checks is still on its way: it is
                // broadcast again rather than raced by a refund.
                if let Phase::Open(Open { close: Some(close), .. }) = &self.phase {
                    let close = close.clone();
                    self.gate.emit(ClientOutput::Broadcast(close));
                } else if self.tip.is_some_and(|tip| tip >= t) {
                    let c = &self.config;
                    let refund = output.refund_with_policy(
                        c.change_script.clone(),
                        c.refund_fee_rate,
                        &*self.signer,
                        KeyRole::Oneway(self.key_index),
                        &c.dust,
                    );
                    match refund {
                        Ok(tx) => self.gate.emit(ClientOutput::Broadcast(tx)),
                        Err(e) => self.event(ClientEvent::RefundFailed(e.to_string())),
                    }
                }
            }
            OutpointStatus::Spent { tx, confirmations } => {
                if let Phase::Open(o) = &self.phase {
                    if o.close.is_none() {
                        let problem = self.check_close(&tx);
                        let refund = tx.lock_time == absolute::LockTime::from(output.script.locktime());
                        if !refund {
                            let Phase::Open(o) = &mut self.phase else { unreachable!("matched above") };
                            o.close = Some(tx.clone());
                            self.event(ClientEvent::CloseSeen { tx: tx.clone(), problem });
                        }
                    }
                }
                if confirmations >= self.config.bury_depth.max(1) {
                    let refund = tx.lock_time == absolute::LockTime::from(output.script.locktime());
                    self.phase = Phase::Settled;
                    self.event(ClientEvent::Settled { txid: tx.compute_txid(), refund });
                }
            }
        }
        self.flush();
    }
}

// ---------------------------------------------------------------------
// Persistence.
// ---------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"PCLI";
const FORMAT: u8 = 2;

use crate::channel::persist::{open, R, W};
use crate::channel::RestoreError;

/// Why a stored client state could not be restored.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientRestoreError {
    /// Damaged, truncated or of an unknown format.
    #[error("client state is damaged: {0}")]
    Damaged(#[from] RestoreError),
    /// It reads, but describes nothing this client could have stored.
    #[error("client state is inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl W {
    fn policy(&mut self, p: &Policy) {
        self.u64(p.min_capacity.to_sat());
        self.u64(p.max_capacity.to_sat());
        for v in [p.min_lock_delta, p.max_lock_delta, p.min_depth, p.accept_margin, p.settle_margin] {
            self.u32(v);
        }
        self.u64(p.min_fee_rate);
        self.u64(p.max_fee_rate);
        self.u8(matches!(p.kind, OutputKind::P2sh) as u8);
    }
}

impl R<'_> {
    fn policy(&mut self) -> Result<Policy, RestoreError> {
        Ok(Policy {
            min_capacity: self.amount()?,
            max_capacity: self.amount()?,
            min_lock_delta: self.u32()?,
            max_lock_delta: self.u32()?,
            min_depth: self.u32()?,
            accept_margin: self.u32()?,
            settle_margin: self.u32()?,
            min_fee_rate: self.u64()?,
            max_fee_rate: self.u64()?,
            kind: if self.bool()? { OutputKind::P2sh } else { OutputKind::P2wsh },
        })
    }
}

impl Client {
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::header(MAGIC, FORMAT, 1024);
        w.u64(self.gate.next_version());
        w.u64(self.key_index);
        w.opt(self.tip, W::u32);
        match &self.phase {
            Phase::Requested => w.u8(0),
            Phase::Funding { session, policy, script } => {
                w.u8(1);
                w.raw(&session.0);
                w.policy(policy);
                w.key(&script.merchant());
                w.u32(script.locktime().to_consensus_u32());
            }
            Phase::Announced { session, policy, output, funding } => {
                w.u8(2);
                w.raw(&session.0);
                w.policy(policy);
                w.channel_output(output);
                w.tx(funding);
            }
            Phase::Open(o) => {
                w.u8(3);
                w.channel_output(&o.output);
                w.tx(&o.funding);
                w.policy(&o.policy);
                w.u32(o.deadline);
                w.opt(o.invoice.as_ref(), |w, (id, amount, total, script)| {
                    w.u64(*id);
                    w.u64(amount.to_sat());
                    w.u64(total.to_sat());
                    w.bytes(script.as_bytes());
                });
                w.u64(o.last_invoice);
                w.opt(o.signed.as_ref(), |w, (id, total, tx)| {
                    w.u64(*id);
                    w.u64(total.to_sat());
                    w.tx(tx);
                });
                w.u64(o.acked.to_sat());
                w.opt(o.close.as_ref(), W::tx);
            }
            Phase::Refused { output, why } => {
                w.u8(4);
                w.channel_output(output);
                w.bytes(why.as_bytes());
            }
            Phase::Settled => w.u8(5),
        }
        w.seal()
    }

    /// A client from its last stored state; the caller feeds blocks again
    /// from its tip.
    pub fn restore(
        config: ClientConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        bytes: &[u8],
    ) -> Result<Client, ClientRestoreError> {
        let mut r = open(bytes, MAGIC, FORMAT)?;
        let version = r.u64()?;
        let key_index = r.u64()?;
        let tip = r.opt(R::u32)?;
        let ours = signer.public_key(KeyRole::Oneway(key_index));
        let check = |o: &ChannelOutput| {
            if o.script.client() == ours {
                Ok(())
            } else {
                Err(ClientRestoreError::Inconsistent("a channel key the signer does not hold"))
            }
        };
        let phase = match r.u8()? {
            0 => Phase::Requested,
            1 => {
                let session = SessionId(r.array()?);
                let policy = r.policy()?;
                let merchant = r.key()?;
                let t = absolute::Height::from_consensus(r.u32()?).map_err(|_| RestoreError::Invalid("lock time"))?;
                let script = ChannelScript::new(ours, merchant, t).map_err(|_| RestoreError::Invalid("script"))?;
                Phase::Funding { session, policy, script }
            }
            2 => {
                let session = SessionId(r.array()?);
                let policy = r.policy()?;
                let output = r.channel_output()?;
                let funding = r.tx()?;
                check(&output)?;
                Phase::Announced { session, policy, output, funding }
            }
            3 => {
                let output = r.channel_output()?;
                let funding = r.tx()?;
                let policy = r.policy()?;
                let deadline = r.u32()?;
                let invoice = r.opt(|r| Ok((r.u64()?, r.amount()?, r.amount()?, ScriptBuf::from_bytes(r.bytes()?))))?;
                let last_invoice = r.u64()?;
                let signed = r.opt(|r| Ok((r.u64()?, r.amount()?, r.tx()?)))?;
                let acked = r.amount()?;
                let close = r.opt(R::tx)?;
                check(&output)?;
                if signed.as_ref().is_some_and(|s| s.1 > output.value) || acked > output.value {
                    return Err(ClientRestoreError::Inconsistent("a total above the capacity"));
                }
                Phase::Open(Open { output, funding, policy, deadline, invoice, last_invoice, signed, acked, close })
            }
            4 => {
                let output = r.channel_output()?;
                let why = String::from_utf8_lossy(&r.bytes()?).into_owned();
                check(&output)?;
                Phase::Refused { output, why }
            }
            5 => Phase::Settled,
            _ => return Err(RestoreError::Invalid("phase").into()),
        };
        r.done()?;
        // Versions go on from the stored one (ADR 0003).
        Ok(Client { signer, config, key_index, phase, tip, refused: None, gate: Gate::resumed(version) })
    }
}
