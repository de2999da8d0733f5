//! The one-way channel's messages (ruling E3, `proto/oneway.proto`) as
//! validated values, and their encoding.
//!
//! The envelope and the rules are the peer protocol's: unknown odd fields
//! and envelope members are ignored (R1-a), unknown even ones refused (R1-b),
//! missing required fields refused (R1-d); the same schema walk runs before
//! prost sees a byte. Values are checked on the way in: amounts at most 21
//! million bitcoin (E5), lock times block heights (E4), outpoints and
//! session ids of their exact lengths. PSBTs and keys stay bytes: what is
//! wrong with them is the receiving role's to say, each with its own code
//! (M1-b, M2-a).

#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/paychan.oneway.rs"));
}

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash as _;
use bitcoin::{absolute, Amount, OutPoint, ScriptBuf, Transaction, Txid};
use prost::Message as _;

use super::script::OutputKind;
use crate::wire::schema::{self, oneway as table};
use crate::wire::{DecodeError, DecodeErrorKind, Problem};

/// The largest encoded message accepted: room for a PSBT carrying a full
/// funding transaction of standard size.
pub const MAX_MSG_LEN: usize = 512 * 1024;

/// A merchant session's id (16 bytes, fresh per `request_channel`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub [u8; 16]);

/// What the merchant accepts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Policy {
    /// The smallest channel.
    pub min_capacity: Amount,
    /// The largest channel.
    pub max_capacity: Amount,
    /// The nearest `T` allowed, in blocks from the tip.
    pub min_lock_delta: u32,
    /// The farthest `T` allowed, in blocks from the tip.
    pub max_lock_delta: u32,
    /// Confirmations the funding needs before the channel is accepted.
    pub min_depth: u32,
    /// Blocks before the merchant's closing height from which it takes no
    /// payment.
    pub accept_margin: u32,
    /// Blocks before `T` at which the merchant closes.
    pub settle_margin: u32,
    /// The lowest fee rate of a payment, satoshi per 1000 virtual bytes.
    pub min_fee_rate: u64,
    /// The highest fee rate of a payment, satoshi per 1000 virtual bytes.
    pub max_fee_rate: u64,
    /// The kind of channel output.
    pub kind: OutputKind,
}

/// Why a role refused something: each check has its own code (M2-g, M3-c).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum Code {
    // Setup and announce (M1, M2).
    /// The network is not served (M1-a).
    UnsupportedNetwork,
    /// The session id is unknown or already used (M2-f).
    UnknownSession,
    /// The PSBT does not decode, or is too large (M2-a).
    MalformedPsbt,
    /// Not exactly one input (M2-a, E7).
    InputCount,
    /// The announce carries outputs (M2-a).
    HasOutputs,
    /// Signatures, a scriptSig or a witness where none belong (M2-a).
    HasSignatures,
    /// No full funding transaction (M2-b).
    MissingFundingTx,
    /// The funding transaction's txid is not the input's (M2-b).
    FundingTxidMismatch,
    /// The input's output index is beyond the funding transaction (M2-b).
    OutputIndexOutOfRange,
    /// `witness_utxo` differs from the funding output (M2-b).
    WitnessUtxoMismatch,
    /// The output is not of the kind the policy names (M2-c).
    WrongOutputKind,
    /// The script is not the channel script, or its hash is not the
    /// output's (M2-c, E2).
    ScriptMismatch,
    /// The script's merchant key is not this session's (M2-c).
    WrongMerchantKey,
    /// `T` is too near (M2-d).
    LocktimeTooSoon,
    /// `T` is too far (M2-d).
    LocktimeTooLate,
    /// The merchant has no recent enough tip to judge `T` (E4).
    NoFreshTip,
    /// The capacity is outside the policy (M2-e).
    CapacityOutOfPolicy,
    /// The funding has too few confirmations (M2-e).
    NotConfirmed,
    /// The funding output is spent (M2-e).
    FundingSpent,
    /// The funding output does not hold the value claimed (M2-e).
    ValueMismatch,
    /// The outpoint already has a channel, open or closed (M2-f).
    OutpointUsed,
    // Payments (M3).
    /// No open channel with this id (M5-a).
    UnknownChannel,
    /// The channel no longer takes payments (M3-c).
    PastDeadline,
    /// Not the outstanding invoice (M3-c).
    StaleInvoice,
    /// The input is not the channel's (M3-c).
    WrongInput,
    /// Transaction version not 1 or 2 (M3-c).
    BadVersion,
    /// Not final: a sequence below 0xFFFFFFFF or a lock time (M3-c).
    NotFinal,
    /// Not 1 to 4 outputs (M3-c).
    OutputCount,
    /// An output script of no standard spendable type (M3-c).
    NonStandardOutput,
    /// An output below its dust threshold (M3-c).
    DustOutput,
    /// No output pays the invoiced total to the invoiced script (M3-c).
    NoPayeeOutput,
    /// The total does not exceed the best payment so far (M3-c).
    NotIncreasing,
    /// The outputs exceed the capacity (M3-c).
    OverCapacity,
    /// The fee rate is below the policy's floor (M3-d).
    FeeTooLow,
    /// The fee rate is above the policy's ceiling (M3-d).
    FeeTooHigh,
    /// Not exactly the client's signature (M3-e).
    SignatureSet,
    /// A sighash type other than ALL (M3-e).
    SighashType,
    /// A signature that is not strict DER or not low-S (M3-e).
    SignatureEncoding,
    /// A signature that does not verify (M3-e).
    InvalidSignature,
    /// The countersigned transaction failed its final check (M3-f).
    FinalCheck,
    // Anything.
    /// The message does not fit the state (M5-a).
    WrongState,
    /// The message does not decode (M5-a).
    Malformed,
    /// A backend or store failed: try again (M5-b).
    Transient,
    /// A code this version does not know.
    Unknown(u32),
}

const CODES: &[(Code, u32)] = &[
    (Code::UnsupportedNetwork, 1),
    (Code::UnknownSession, 2),
    (Code::MalformedPsbt, 3),
    (Code::InputCount, 4),
    (Code::HasOutputs, 5),
    (Code::HasSignatures, 6),
    (Code::MissingFundingTx, 7),
    (Code::FundingTxidMismatch, 8),
    (Code::OutputIndexOutOfRange, 9),
    (Code::WitnessUtxoMismatch, 10),
    (Code::WrongOutputKind, 11),
    (Code::ScriptMismatch, 12),
    (Code::WrongMerchantKey, 13),
    (Code::LocktimeTooSoon, 14),
    (Code::LocktimeTooLate, 15),
    (Code::NoFreshTip, 16),
    (Code::CapacityOutOfPolicy, 17),
    (Code::NotConfirmed, 18),
    (Code::FundingSpent, 19),
    (Code::ValueMismatch, 20),
    (Code::OutpointUsed, 21),
    (Code::UnknownChannel, 40),
    (Code::PastDeadline, 41),
    (Code::StaleInvoice, 42),
    (Code::WrongInput, 43),
    (Code::BadVersion, 44),
    (Code::NotFinal, 45),
    (Code::OutputCount, 46),
    (Code::NonStandardOutput, 47),
    (Code::DustOutput, 48),
    (Code::NoPayeeOutput, 49),
    (Code::NotIncreasing, 50),
    (Code::OverCapacity, 51),
    (Code::FeeTooLow, 52),
    (Code::FeeTooHigh, 53),
    (Code::SignatureSet, 54),
    (Code::SighashType, 55),
    (Code::SignatureEncoding, 56),
    (Code::InvalidSignature, 57),
    (Code::FinalCheck, 58),
    (Code::WrongState, 90),
    (Code::Malformed, 91),
    (Code::Transient, 92),
];

impl Code {
    /// Its number on the wire.
    pub fn to_u32(self) -> u32 {
        match self {
            Code::Unknown(n) => n,
            known => CODES.iter().find(|(c, _)| *c == known).map(|(_, n)| *n).expect("every known code has a number"),
        }
    }

    /// The code numbered `n`.
    pub fn from_u32(n: u32) -> Code {
        CODES.iter().find(|(_, m)| *m == n).map_or(Code::Unknown(n), |(c, _)| *c)
    }
}

/// A refusal: its code, a text for people, and optionally the value that was
/// expected.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Refusal {
    /// Which check.
    pub code: Code,
    /// What went wrong, for people.
    pub explanation: String,
    /// The value expected, where one applies.
    pub expected: Option<u64>,
}

/// One message of the one-way channel.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Message {
    /// \[1\] The client asks for a channel.
    RequestChannel {
        /// "bitcoin", "regtest", "dogecoin", ...
        network: String,
    },
    /// \[2\] The merchant's key and terms.
    ChannelKey {
        /// The session.
        session_id: SessionId,
        /// The merchant's key, as sent (the client checks it, M1-b).
        merchant_key: Vec<u8>,
        /// The terms.
        policy: Policy,
        /// Where the merchant wants to be paid.
        payout_script: ScriptBuf,
    },
    /// \[3\] The funding input as a PSBT.
    Announce {
        /// The session.
        session_id: SessionId,
        /// BIP 174 bytes (the merchant checks them, M2-a).
        psbt: Vec<u8>,
    },
    /// \[4\] The merchant takes the channel.
    Accept {
        /// The funding outpoint.
        channel_id: OutPoint,
        /// Its value.
        capacity: Amount,
        /// `T`.
        locktime: absolute::Height,
        /// The height from which the merchant takes no payment.
        deadline: absolute::Height,
    },
    /// \[4'\] The merchant refuses the channel.
    Reject(Refusal),
    /// \[5\] What the client owes so far.
    Invoice {
        /// The channel.
        channel_id: OutPoint,
        /// Increasing per channel.
        invoice_id: u64,
        /// This order.
        amount: Amount,
        /// Everything paid so far, this order included (E5).
        total: Amount,
        /// Where to pay.
        payout_script: ScriptBuf,
    },
    /// \[6\] The client's payment.
    Payment {
        /// The channel.
        channel_id: OutPoint,
        /// The invoice paid.
        invoice_id: u64,
        /// BIP 174 bytes, signed by the client.
        psbt: Vec<u8>,
    },
    /// \[6'\] The merchant stored the payment.
    PaymentAck {
        /// The channel.
        channel_id: OutPoint,
        /// The invoice paid.
        invoice_id: u64,
        /// The total it stored.
        total: Amount,
    },
    /// \[7\] From the client: please close. From the merchant: the close it
    /// broadcast.
    Close {
        /// The channel.
        channel_id: OutPoint,
        /// The close transaction (from the merchant).
        tx: Option<Transaction>,
    },
    /// A refusal outside the announce.
    Error {
        /// What was refused, and why.
        refusal: Refusal,
        /// Whether trying again may work (M5-b).
        transient: bool,
    },
    /// An envelope member with an odd number this version does not know:
    /// ignored (R1-a).
    Unknown {
        /// Its field number.
        number: u32,
    },
}

impl Message {
    /// The message's name, as in the proto file.
    pub fn name(&self) -> &'static str {
        match self {
            Message::RequestChannel { .. } => "request_channel",
            Message::ChannelKey { .. } => "channel_key",
            Message::Announce { .. } => "announce",
            Message::Accept { .. } => "accept",
            Message::Reject(_) => "reject",
            Message::Invoice { .. } => "invoice",
            Message::Payment { .. } => "payment",
            Message::PaymentAck { .. } => "payment_ack",
            Message::Close { .. } => "close",
            Message::Error { .. } => "error",
            Message::Unknown { .. } => "unknown",
        }
    }
}

fn outpoint_to(o: &OutPoint) -> proto::Outpoint {
    proto::Outpoint { txid: o.txid.as_byte_array().to_vec(), vout: o.vout }
}

fn kind_to(k: OutputKind) -> u32 {
    match k {
        OutputKind::P2wsh => 0,
        OutputKind::P2sh => 1,
    }
}

/// Encodes `msg`. Every value this module gives out encodes; an `Unknown`
/// envelope member encodes to an empty envelope.
pub fn encode(msg: &Message) -> Vec<u8> {
    use proto::msg::Msg as M;
    let refusal = |r: &Refusal| (r.code.to_u32(), r.explanation.clone(), r.expected);
    let m = match msg {
        Message::RequestChannel { network } => {
            Some(M::RequestChannel(proto::RequestChannel { network: network.clone() }))
        }
        Message::ChannelKey { session_id, merchant_key, policy: p, payout_script } => {
            Some(M::ChannelKey(proto::ChannelKey {
                session_id: session_id.0.to_vec(),
                merchant_key: merchant_key.clone(),
                policy: proto::Policy {
                    min_capacity: p.min_capacity.to_sat(),
                    max_capacity: p.max_capacity.to_sat(),
                    min_lock_delta: p.min_lock_delta,
                    max_lock_delta: p.max_lock_delta,
                    min_depth: p.min_depth,
                    accept_margin: p.accept_margin,
                    settle_margin: p.settle_margin,
                    min_fee_rate: p.min_fee_rate,
                    max_fee_rate: p.max_fee_rate,
                    kind: kind_to(p.kind),
                },
                payout_script: payout_script.to_bytes(),
            }))
        }
        Message::Announce { session_id, psbt } => {
            Some(M::Announce(proto::Announce { session_id: session_id.0.to_vec(), psbt: psbt.clone() }))
        }
        Message::Accept { channel_id, capacity, locktime, deadline } => Some(M::Accept(proto::Accept {
            channel_id: outpoint_to(channel_id),
            capacity: capacity.to_sat(),
            locktime: locktime.to_consensus_u32(),
            deadline: deadline.to_consensus_u32(),
        })),
        Message::Reject(r) => {
            let (code, explanation, expected) = refusal(r);
            Some(M::Reject(proto::Reject { code, explanation, expected }))
        }
        Message::Invoice { channel_id, invoice_id, amount, total, payout_script } => Some(M::Invoice(proto::Invoice {
            channel_id: outpoint_to(channel_id),
            invoice_id: *invoice_id,
            amount: amount.to_sat(),
            total: total.to_sat(),
            payout_script: payout_script.to_bytes(),
        })),
        Message::Payment { channel_id, invoice_id, psbt } => Some(M::Payment(proto::Payment {
            channel_id: outpoint_to(channel_id),
            invoice_id: *invoice_id,
            psbt: psbt.clone(),
        })),
        Message::PaymentAck { channel_id, invoice_id, total } => Some(M::PaymentAck(proto::PaymentAck {
            channel_id: outpoint_to(channel_id),
            invoice_id: *invoice_id,
            total: total.to_sat(),
        })),
        Message::Close { channel_id, tx } => {
            Some(M::Close(proto::Close { channel_id: outpoint_to(channel_id), tx: tx.as_ref().map(serialize) }))
        }
        Message::Error { refusal: r, transient } => {
            let (code, explanation, expected) = refusal(r);
            Some(M::Error(proto::Error { code, explanation, expected, transient: transient.then_some(true) }))
        }
        Message::Unknown { .. } => None,
    };
    proto::Msg { msg: m }.encode_to_vec()
}

struct At(&'static str);

impl At {
    fn err(&self, field: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.0, field, kind)
    }

    /// At most 21 million bitcoin (E5).
    fn amount(&self, field: &'static str, sat: u64) -> Result<Amount, DecodeError> {
        let a = Amount::from_sat(sat);
        if a > Amount::MAX_MONEY {
            return Err(self.err(field, DecodeErrorKind::OutOfRange("above 21 million bitcoin (E5)")));
        }
        Ok(a)
    }

    fn outpoint(&self, field: &'static str, o: &proto::Outpoint) -> Result<OutPoint, DecodeError> {
        let txid: [u8; 32] = o
            .txid
            .as_slice()
            .try_into()
            .map_err(|_| self.err(field, DecodeErrorKind::OutOfRange("txid not 32 bytes")))?;
        Ok(OutPoint { txid: Txid::from_byte_array(txid), vout: o.vout })
    }

    fn session(&self, bytes: &[u8]) -> Result<SessionId, DecodeError> {
        let id: [u8; 16] = bytes
            .try_into()
            .map_err(|_| self.err("session_id", DecodeErrorKind::OutOfRange("session id not 16 bytes")))?;
        Ok(SessionId(id))
    }

    /// A block height (E4): 500,000,000 and above are times.
    fn height(&self, field: &'static str, h: u32) -> Result<absolute::Height, DecodeError> {
        absolute::Height::from_consensus(h)
            .map_err(|_| self.err(field, DecodeErrorKind::OutOfRange("not a block height (E4)")))
    }
}

/// A refusal as received: its text cut like the peer protocol's errors.
fn refusal_of(code: u32, explanation: &str, expected: Option<u64>) -> Refusal {
    Refusal { code: Code::from_u32(code), explanation: crate::wire::bounded_error_text(explanation), expected }
}

/// Decodes one message. See the module documentation for what is checked.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_MSG_LEN {
        return Err(DecodeError::new("msg", "", DecodeErrorKind::TooLarge { len: bytes.len(), max: MAX_MSG_LEN }));
    }
    let walk = schema::walk_in(table::MESSAGES, table::MSG, bytes)
        .map_err(|p: Problem| p.into_error_in(table::MESSAGES, table::MSG))?;
    if walk.seen == 0 {
        return match walk.unknown_odd {
            Some(number) => Ok(Message::Unknown { number }),
            None => Err(DecodeError::new("msg", "", DecodeErrorKind::Empty)),
        };
    }
    let msg = proto::Msg::decode(bytes).map_err(|_| DecodeError::new("msg", "", DecodeErrorKind::Malformed))?;
    let Some(m) = msg.msg else { return Err(DecodeError::new("msg", "", DecodeErrorKind::Empty)) };
    use proto::msg::Msg as M;
    Ok(match m {
        M::RequestChannel(m) => Message::RequestChannel { network: m.network },
        M::ChannelKey(m) => {
            let at = At("channel_key");
            let p = &m.policy;
            let kind = match p.kind {
                0 => OutputKind::P2wsh,
                1 => OutputKind::P2sh,
                _ => return Err(at.err("policy.kind", DecodeErrorKind::OutOfRange("not 0 (P2WSH) or 1 (P2SH)"))),
            };
            Message::ChannelKey {
                session_id: at.session(&m.session_id)?,
                merchant_key: m.merchant_key,
                policy: Policy {
                    min_capacity: at.amount("policy.min_capacity", p.min_capacity)?,
                    max_capacity: at.amount("policy.max_capacity", p.max_capacity)?,
                    min_lock_delta: p.min_lock_delta,
                    max_lock_delta: p.max_lock_delta,
                    min_depth: p.min_depth,
                    accept_margin: p.accept_margin,
                    settle_margin: p.settle_margin,
                    min_fee_rate: p.min_fee_rate,
                    max_fee_rate: p.max_fee_rate,
                    kind,
                },
                payout_script: ScriptBuf::from_bytes(m.payout_script),
            }
        }
        M::Announce(m) => Message::Announce { session_id: At("announce").session(&m.session_id)?, psbt: m.psbt },
        M::Accept(m) => {
            let at = At("accept");
            Message::Accept {
                channel_id: at.outpoint("channel_id", &m.channel_id)?,
                capacity: at.amount("capacity", m.capacity)?,
                locktime: at.height("locktime", m.locktime)?,
                deadline: at.height("deadline", m.deadline)?,
            }
        }
        M::Reject(m) => Message::Reject(refusal_of(m.code, &m.explanation, m.expected)),
        M::Invoice(m) => {
            let at = At("invoice");
            Message::Invoice {
                channel_id: at.outpoint("channel_id", &m.channel_id)?,
                invoice_id: m.invoice_id,
                amount: at.amount("amount", m.amount)?,
                total: at.amount("total", m.total)?,
                payout_script: ScriptBuf::from_bytes(m.payout_script),
            }
        }
        M::Payment(m) => Message::Payment {
            channel_id: At("payment").outpoint("channel_id", &m.channel_id)?,
            invoice_id: m.invoice_id,
            psbt: m.psbt,
        },
        M::PaymentAck(m) => {
            let at = At("payment_ack");
            Message::PaymentAck {
                channel_id: at.outpoint("channel_id", &m.channel_id)?,
                invoice_id: m.invoice_id,
                total: at.amount("total", m.total)?,
            }
        }
        M::Close(m) => {
            let at = At("close");
            let tx = match m.tx {
                Some(bytes) => Some(deserialize(&bytes).map_err(|_| at.err("tx", DecodeErrorKind::Malformed))?),
                None => None,
            };
            Message::Close { channel_id: at.outpoint("channel_id", &m.channel_id)?, tx }
        }
        M::Error(m) => Message::Error {
            refusal: refusal_of(m.code, &m.explanation, m.expected),
            transient: m.transient.unwrap_or(false),
        },
    })
}
