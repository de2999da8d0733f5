//! The wire codec: protocol messages as validated Rust values, and their
//! protobuf encoding (section 1 of the protocol text, `proto/paychan.proto`).
//!
//! The generated prost types stay inside this module. The rest of the crate,
//! and its users, see [`Message`], whose payloads hold only values that passed
//! validation: compressed public keys (R2.1-e), low-S signatures (ruling D3),
//! 32-byte hashes, representable lock times, and typed amounts.
//!
//! - [`encode`] turns a [`Message`] into the bytes of one `pkt`. It never
//!   emits a field that is not in the proto file (R1-c), and it refuses a
//!   message that [`decode`] would not give back unchanged (one above
//!   [`MAX_PKT_LEN`], an `error` text above [`MAX_ERROR_TEXT`]).
//! - [`decode`] parses the bytes of one `pkt`. Before prost sees the input,
//!   the input's size is checked (no allocation for oversized input) and the
//!   encoding is walked against the schema: unknown odd fields are ignored
//!   (R1-a), unknown even fields rejected (R1-b), missing `required` fields
//!   rejected (R1-d). An unknown odd `pkt` variant decodes to
//!   [`Message::Unknown`], which a receiver ignores; an unknown even one is an
//!   error.
//! - [`frame`] is the plain 12-byte framing of ruling D8 for links that are
//!   already secured, with an incremental decoder for bytes arriving in
//!   arbitrary chunks.
//!
//! Every [`DecodeError`] names the message and field at fault and, where one
//! applies, the requirement the input broke ([`DecodeError::rule`]).

pub mod frame;
pub(crate) mod schema;

#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/paychan.rs"));
}

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

use bitcoin::absolute;
use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{Amount, CompressedPublicKey, Txid};
use prost::Message as _;

use crate::types::{Delay, HtlcMsat, Preimage};

/// The largest encoded `pkt` accepted, in bytes. Larger input is rejected
/// before anything is allocated for it.
pub const MAX_PKT_LEN: usize = 65_536;

/// The longest `error.problem` text, in bytes of UTF-8, that we send, and the
/// most of one that we keep.
///
/// The text is for diagnosis only (section 6.3.1). [`encode`] refuses a
/// longer one ([`EncodeError::ErrorTextTooLong`]); a sender cuts its text
/// with [`bounded_error_text`] first. [`decode`] reads a received text
/// lossily (invalid UTF-8 becomes U+FFFD, so that an `error` is always
/// recognised as one, R6.3-b) and keeps at most this many bytes of the
/// result, cut at a character boundary. So every `error` that `decode`
/// returns re-encodes and decodes to itself, however long or broken the
/// text it came from: without the cut, 60,000 invalid bytes would become
/// 180,000 bytes of U+FFFD, above [`MAX_PKT_LEN`].
pub const MAX_ERROR_TEXT: usize = 1024;

/// `text` cut to at most [`MAX_ERROR_TEXT`] bytes at a character boundary:
/// the `error.problem` to send for it, which [`encode`] always accepts.
///
/// ```
/// use paychan::wire::{bounded_error_text, MAX_ERROR_TEXT};
/// assert_eq!(bounded_error_text("short"), "short");
/// // 2001 bytes whose characters start at 0 and then at odd offsets: byte
/// // 1024 is inside an 'é', so the cut falls at 1023.
/// let long = format!("a{}", "é".repeat(1000));
/// assert_eq!(bounded_error_text(&long).len(), 1023);
/// assert_eq!(MAX_ERROR_TEXT, 1024);
/// ```
pub fn bounded_error_text(text: &str) -> String {
    text[..floor_char_boundary(text, MAX_ERROR_TEXT)].to_owned()
}

/// The largest `i <= max` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    // A UTF-8 character is at most 4 bytes, so this takes at most 3 steps.
    (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// `bytes` decoded as UTF-8 with U+FFFD for each invalid sequence (as
/// `String::from_utf8_lossy`), cut at a character boundary to at most
/// [`MAX_ERROR_TEXT`] bytes. It never builds more than that: only the prefix
/// that is kept is decoded.
fn bounded_lossy_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().min(MAX_ERROR_TEXT));
    // Appends what fits of `piece`; false once something did not fit (what
    // follows must not be appended: the result is a prefix).
    let push = |out: &mut String, piece: &str| {
        let room = MAX_ERROR_TEXT - out.len();
        let end = floor_char_boundary(piece, room);
        out.push_str(&piece[..end]);
        end == piece.len()
    };
    for chunk in bytes.utf8_chunks() {
        if !push(&mut out, chunk.valid()) {
            break;
        }
        if !chunk.invalid().is_empty() && !push(&mut out, "\u{fffd}") {
            break;
        }
    }
    out
}

/// Which side funds the channel (`open_channel.anch`, section 2.1, R2.1-a).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AnchorOffer {
    /// `WILL_CREATE_ANCHOR`: sent by the node that opened the connection.
    WillCreate,
    /// `WONT_CREATE_ANCHOR`: sent by the node that accepted it.
    WontCreate,
}

/// `authenticate` (BOLT #1 draft): the first message on a transport.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Authenticate {
    /// The sending node's identity key.
    pub node_id: CompressedPublicKey,
    /// The node's signature of the session key.
    pub session_sig: Signature,
}

/// `open_channel` (section 2.1.1): one node's keys and demands.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenChannel {
    /// The `OP_CHECKSEQUENCEVERIFY` delay the receiver must put on payments to
    /// itself.
    pub delay: Delay,
    /// Revocation hash of the sender's first commitment (R2.1-f).
    pub revocation_hash: sha256::Hash,
    /// Revocation hash of the sender's second commitment (R2.1-f).
    pub next_revocation_hash: sha256::Hash,
    /// Key that signs commitments and redeems the anchor.
    pub commit_key: CompressedPublicKey,
    /// Key that receives the sender's funds.
    pub final_key: CompressedPublicKey,
    /// Whether the sender will create the anchor (R2.1-a).
    pub anch: AnchorOffer,
    /// Blocks the anchor must be buried before normal operation (0 when the
    /// optional field is absent).
    pub min_depth: u32,
    /// Fee rate for the sender's commitment transactions, satoshi per 1000
    /// bytes.
    pub initial_fee_rate: u32,
}

/// `open_anchor` (section 2.2.1): the funding output and a signature for the
/// receiver's first commitment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenAnchor {
    /// The anchor transaction's id (its 32 bytes in internal byte order).
    pub txid: Txid,
    /// Which output of it pays the 2-of-2.
    pub output_index: u32,
    /// That output's value.
    pub amount: Amount,
    /// Signature for the receiver's initial commitment transaction.
    pub commit_sig: Signature,
}

/// `open_commit_sig` (section 2.3.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OpenCommitSig {
    /// Signature for the anchor creator's initial commitment transaction.
    pub sig: Signature,
}

/// `update_add_htlc` (section 3.2.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UpdateAddHtlc {
    /// The sender's identifier for this HTLC (R3.2-e).
    pub id: u64,
    /// The HTLC's value.
    pub amount: HtlcMsat,
    /// SHA-256 of the HTLC's `R`.
    pub r_hash: sha256::Hash,
    /// When the HTLC expires: a block height or a Unix time.
    pub expiry: absolute::LockTime,
    /// Onion-wrapped routing information, opaque here.
    pub route: Vec<u8>,
}

/// `update_fulfill_htlc` (section 3.3.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UpdateFulfillHtlc {
    /// Which HTLC.
    pub id: u64,
    /// The HTLC's `R`.
    pub r: Preimage,
}

/// `update_fail_htlc` (section 3.3.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UpdateFailHtlc {
    /// Which HTLC.
    pub id: u64,
    /// Opaque failure reason, relayed unchanged (R3.3-e).
    pub reason: Vec<u8>,
}

/// `update_fee` (section 3.4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UpdateFee {
    /// The new fee rate for the sender's commitments, satoshi per 1000 bytes.
    pub fee_rate: u32,
}

/// `update_commit` (section 3.5.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UpdateCommit {
    /// Signature for the receiver's new commitment transaction.
    pub sig: Signature,
}

/// `update_revocation` (section 3.5.2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UpdateRevocation {
    /// Preimage revoking the sender's previous commitment.
    pub revocation_preimage: Preimage,
    /// Revocation hash of the sender's next commitment.
    pub next_revocation_hash: sha256::Hash,
}

/// `close_signature` (section 4.2.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CloseSignature {
    /// The proposed fee of the close transaction.
    pub close_fee: Amount,
    /// Signature of the close transaction with that fee.
    pub sig: Signature,
}

/// `error` (section 6.3.1): diagnostic text before hanging up.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ErrorMessage {
    /// What went wrong, if the sender said: at most [`MAX_ERROR_TEXT`]
    /// bytes (see there).
    pub problem: Option<String>,
}

/// A `pkt` whose only message has an unknown odd field number: the receiver
/// ignores it (R1-a).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UnknownPacket {
    number: u32,
}

impl UnknownPacket {
    /// The `pkt` field number that was not recognised (always odd).
    pub fn number(&self) -> u32 {
        self.number
    }
}

/// One protocol message: the decoded content of a `pkt` (section 1.1,
/// numbers of ruling D3).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Message {
    /// `authenticate` (pkt field 50). Boxed, like `open_channel` and
    /// `open_anchor`: these come once per connection or channel, and inline
    /// they would make every message as large as the largest (212 bytes)
    /// where an HTLC update takes 80.
    Authenticate(Box<Authenticate>),
    /// `open_channel` (pkt field 20).
    OpenChannel(Box<OpenChannel>),
    /// `open_anchor` (pkt field 21).
    OpenAnchor(Box<OpenAnchor>),
    /// `open_commit_sig` (pkt field 22).
    OpenCommitSig(OpenCommitSig),
    /// `open_complete` (pkt field 23).
    OpenComplete,
    /// `update_add_htlc` (pkt field 2).
    UpdateAddHtlc(UpdateAddHtlc),
    /// `update_fulfill_htlc` (pkt field 3).
    UpdateFulfillHtlc(UpdateFulfillHtlc),
    /// `update_fail_htlc` (pkt field 4).
    UpdateFailHtlc(UpdateFailHtlc),
    /// `update_commit` (pkt field 5).
    UpdateCommit(UpdateCommit),
    /// `update_revocation` (pkt field 6).
    UpdateRevocation(UpdateRevocation),
    /// `update_fee` (pkt field 8).
    UpdateFee(UpdateFee),
    /// `close_clearing` (pkt field 30).
    CloseClearing,
    /// `close_signature` (pkt field 31).
    CloseSignature(CloseSignature),
    /// `error` (pkt field 40).
    Error(ErrorMessage),
    /// A message of an unknown odd type, to be ignored (R1-a).
    Unknown(UnknownPacket),
}

impl Message {
    /// The protocol's name for the message, as in the proto file.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Authenticate(_) => "authenticate",
            Message::OpenChannel(_) => "open_channel",
            Message::OpenAnchor(_) => "open_anchor",
            Message::OpenCommitSig(_) => "open_commit_sig",
            Message::OpenComplete => "open_complete",
            Message::UpdateAddHtlc(_) => "update_add_htlc",
            Message::UpdateFulfillHtlc(_) => "update_fulfill_htlc",
            Message::UpdateFailHtlc(_) => "update_fail_htlc",
            Message::UpdateCommit(_) => "update_commit",
            Message::UpdateRevocation(_) => "update_revocation",
            Message::UpdateFee(_) => "update_fee",
            Message::CloseClearing => "close_clearing",
            Message::CloseSignature(_) => "close_signature",
            Message::Error(_) => "error",
            Message::Unknown(_) => "unknown",
        }
    }
}

/// What was wrong with the input (see [`DecodeError`] for where).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input is longer than [`MAX_PKT_LEN`].
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ends inside a field.
    Truncated,
    /// A varint longer than 10 bytes or above 64 bits.
    BadVarint,
    /// A field key or length prefix written in more than 5 bytes, or whose
    /// value does not fit in 32 bits. Both are 32-bit quantities, and
    /// Google's protobuf refuses longer encodings of them; a non-minimal
    /// encoding within 5 bytes is accepted, as there.
    BadKeyOrLength,
    /// A field key with number 0 or above 2^29-1.
    BadFieldNumber,
    /// A wire type that protobuf does not define, or an unbalanced group.
    BadWireType(u8),
    /// Unknown groups nested too deeply to skip.
    TooDeep,
    /// A known field encoded with the wrong wire type.
    WrongWireType {
        /// The wire type its declaration implies.
        expected: u8,
        /// The wire type found.
        found: u8,
    },
    /// A field with an even number that the proto file does not declare (R1-b).
    UnknownEvenField(u32),
    /// A `required` field is absent (R1-d).
    MissingRequired,
    /// A non-repeated field appears more than once.
    DuplicateField,
    /// Two members of one `oneof` are present.
    OneofConflict,
    /// A `pkt` with no message in it.
    Empty,
    /// A value outside the range its type allows.
    OutOfRange(&'static str),
    /// Not a valid compressed 33-byte public key (R2.1-e).
    InvalidPublicKey,
    /// Not a valid compact signature (R or S not below the curve order).
    InvalidSignature,
    /// A signature whose S is in the upper half of the order (ruling D3).
    HighS,
    /// An enum value the proto file does not declare.
    UnknownEnumValue(i32),
    /// The protobuf decoder refused the input for another reason.
    Malformed,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::TooLarge { len, max } => {
                write!(f, "{len} bytes exceed the {max}-byte limit")
            }
            DecodeErrorKind::Truncated => f.write_str("input ends inside a field"),
            DecodeErrorKind::BadVarint => f.write_str("malformed varint"),
            DecodeErrorKind::BadKeyOrLength => {
                f.write_str("field key or length prefix longer than 5 bytes or above 32 bits")
            }
            DecodeErrorKind::BadFieldNumber => f.write_str("invalid field number"),
            DecodeErrorKind::BadWireType(w) => write!(f, "invalid wire type {w}"),
            DecodeErrorKind::TooDeep => f.write_str("groups nested too deeply"),
            DecodeErrorKind::WrongWireType { expected, found } => {
                write!(f, "wire type {found} where {expected} is declared")
            }
            DecodeErrorKind::UnknownEvenField(n) => write!(f, "unknown even field {n} (R1-b)"),
            DecodeErrorKind::MissingRequired => f.write_str("required field missing (R1-d)"),
            DecodeErrorKind::DuplicateField => f.write_str("field appears more than once"),
            DecodeErrorKind::OneofConflict => f.write_str("more than one member of a oneof"),
            DecodeErrorKind::Empty => f.write_str("no message"),
            DecodeErrorKind::OutOfRange(why) => write!(f, "value out of range: {why}"),
            DecodeErrorKind::InvalidPublicKey => f.write_str("not a valid compressed public key (R2.1-e)"),
            DecodeErrorKind::InvalidSignature => f.write_str("not a valid compact signature"),
            DecodeErrorKind::HighS => f.write_str("signature is not low-S (ruling D3)"),
            DecodeErrorKind::UnknownEnumValue(v) => write!(f, "unknown enum value {v}"),
            DecodeErrorKind::Malformed => f.write_str("malformed protobuf"),
        }
    }
}

/// Why [`decode`] rejected its input, and where.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DecodeError {
    message: &'static str,
    field: String,
    kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(message: &'static str, field: impl Into<String>, kind: DecodeErrorKind) -> Self {
        DecodeError { message, field: field.into(), kind }
    }

    /// The message at fault, as named in the proto file (`"pkt"` for the
    /// envelope itself).
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The field at fault as a dotted path inside the message (for example
    /// `"commit_key.key"`), or `""` when the message as a whole is at fault.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What was wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// The requirement (or ruling) the input broke, if one names it.
    /// Structural faults (truncation, a bad varint, key or length prefix, a
    /// wrong wire type) break no numbered rule and give `None`; the channel
    /// fails the connection on them all the same.
    pub fn rule(&self) -> Option<&'static str> {
        match self.kind {
            DecodeErrorKind::UnknownEvenField(_) => Some("R1-b"),
            DecodeErrorKind::MissingRequired => Some("R1-d"),
            DecodeErrorKind::InvalidPublicKey => Some("R2.1-e"),
            DecodeErrorKind::HighS | DecodeErrorKind::InvalidSignature => Some("D3"),
            _ => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.message, self.kind)
        } else {
            write!(f, "{}.{}: {}", self.message, self.field, self.kind)
        }
    }
}

impl core::error::Error for DecodeError {}

/// A decoding problem found by the schema walk, with the field path from the
/// innermost field outwards.
#[derive(Debug)]
pub(crate) struct Problem {
    path: Vec<&'static str>,
    kind: DecodeErrorKind,
}

impl Problem {
    pub(crate) fn new(kind: DecodeErrorKind) -> Self {
        Problem { path: Vec::new(), kind }
    }

    pub(crate) fn in_field(mut self, name: &'static str) -> Self {
        self.path.push(name);
        self
    }

    /// Names the error after the `pkt` member it occurred in.
    fn into_error(self) -> DecodeError {
        self.into_error_in(schema::MESSAGES, schema::PKT)
    }

    /// Names the error after the member of the envelope `table[root]` it
    /// occurred in.
    pub(crate) fn into_error_in(mut self, table: &'static [schema::MessageSchema], root: usize) -> DecodeError {
        let envelope = &table[root];
        let Some(member) = self.path.pop() else {
            return DecodeError::new(envelope.name, "", self.kind);
        };
        let message = envelope
            .fields
            .iter()
            .find(|f| f.name == member)
            .and_then(|f| f.message)
            .map_or(envelope.name, |m| table[m].name);
        self.path.reverse();
        DecodeError::new(message, self.path.join("."), self.kind)
    }
}

/// A message [`encode`] refuses: one that [`decode`] would refuse.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoding would exceed [`MAX_PKT_LEN`].
    #[error("{name} would encode to {len} bytes, above the {max}-byte limit")]
    TooLarge {
        /// The message's name (`pkt` for encoded bytes that
        /// [`frame::write_frame`] refuses).
        name: &'static str,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An `error` whose text is longer than [`MAX_ERROR_TEXT`]: [`decode`]
    /// would cut it, so it would not come back unchanged. Cut it first with
    /// [`bounded_error_text`].
    #[error("error text of {len} bytes is above the {max}-byte limit")]
    ErrorTextTooLong {
        /// The text's length in bytes.
        len: usize,
        /// The limit, [`MAX_ERROR_TEXT`].
        max: usize,
    },
}

/// Encodes `msg` as one `pkt`.
///
/// Only fields declared in `proto/paychan.proto` are written (R1-c), every
/// message in field-number order, so equal messages always give equal bytes
/// (which retransmission relies on, R1.2-e). A message that [`decode`] would
/// not give back unchanged is refused here instead: one whose encoding is
/// longer than [`MAX_PKT_LEN`], and an `error` whose text is longer than
/// [`MAX_ERROR_TEXT`]. So whatever this function returns decodes to `msg`.
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    if let Message::Error(ErrorMessage { problem: Some(text) }) = msg {
        if text.len() > MAX_ERROR_TEXT {
            return Err(EncodeError::ErrorTextTooLong { len: text.len(), max: MAX_ERROR_TEXT });
        }
    }
    let bytes = encode_unchecked(msg);
    if bytes.len() > MAX_PKT_LEN {
        return Err(EncodeError::TooLarge { name: msg.name(), len: bytes.len(), max: MAX_PKT_LEN });
    }
    Ok(bytes)
}

fn encode_unchecked(msg: &Message) -> Vec<u8> {
    use proto::pkt::Pkt as P;
    let pkt = match msg {
        Message::Authenticate(m) => P::Auth(proto::Authenticate {
            node_id: pubkey_to_proto(&m.node_id),
            session_sig: sig_to_proto(&m.session_sig),
        }),
        Message::OpenChannel(m) => P::Open(proto::OpenChannel {
            delay: proto::Locktime {
                locktime: Some(match m.delay {
                    Delay::Blocks(b) => proto::locktime::Locktime::Blocks(u32::from(b)),
                    Delay::Seconds(s) => proto::locktime::Locktime::Seconds(s),
                }),
            },
            revocation_hash: hash_to_proto(m.revocation_hash.to_byte_array()),
            commit_key: pubkey_to_proto(&m.commit_key),
            final_key: pubkey_to_proto(&m.final_key),
            anch: match m.anch {
                AnchorOffer::WillCreate => proto::open_channel::AnchorOffer::WillCreateAnchor,
                AnchorOffer::WontCreate => proto::open_channel::AnchorOffer::WontCreateAnchor,
            } as i32,
            min_depth: Some(m.min_depth),
            initial_fee_rate: m.initial_fee_rate,
            next_revocation_hash: hash_to_proto(m.next_revocation_hash.to_byte_array()),
        }),
        Message::OpenAnchor(m) => P::OpenAnchor(proto::OpenAnchor {
            txid: hash_to_proto(m.txid.to_byte_array()),
            output_index: m.output_index,
            amount: m.amount.to_sat(),
            commit_sig: sig_to_proto(&m.commit_sig),
        }),
        Message::OpenCommitSig(m) => P::OpenCommitSig(proto::OpenCommitSig { sig: sig_to_proto(&m.sig) }),
        Message::OpenComplete => P::OpenComplete(proto::OpenComplete {}),
        Message::UpdateAddHtlc(m) => P::UpdateAddHtlc(proto::UpdateAddHtlc {
            id: m.id,
            amount_msat: m.amount.to_u32(),
            r_hash: hash_to_proto(m.r_hash.to_byte_array()),
            expiry: proto::Locktime {
                locktime: Some(match m.expiry {
                    absolute::LockTime::Blocks(h) => proto::locktime::Locktime::Blocks(h.to_consensus_u32()),
                    absolute::LockTime::Seconds(t) => proto::locktime::Locktime::Seconds(t.to_consensus_u32()),
                }),
            },
            route: proto::Routing { info: m.route.clone() },
        }),
        Message::UpdateFulfillHtlc(m) => {
            P::UpdateFulfillHtlc(proto::UpdateFulfillHtlc { id: m.id, r: hash_to_proto(m.r.0) })
        }
        Message::UpdateFailHtlc(m) => {
            P::UpdateFailHtlc(proto::UpdateFailHtlc { id: m.id, reason: proto::FailReason { info: m.reason.clone() } })
        }
        Message::UpdateCommit(m) => P::UpdateCommit(proto::UpdateCommit { sig: sig_to_proto(&m.sig) }),
        Message::UpdateRevocation(m) => P::UpdateRevocation(proto::UpdateRevocation {
            revocation_preimage: hash_to_proto(m.revocation_preimage.0),
            next_revocation_hash: hash_to_proto(m.next_revocation_hash.to_byte_array()),
        }),
        Message::UpdateFee(m) => P::UpdateFee(proto::UpdateFee { fee_rate: m.fee_rate }),
        Message::CloseClearing => P::CloseClearing(proto::CloseClearing {}),
        Message::CloseSignature(m) => {
            P::CloseSignature(proto::CloseSignature { close_fee: m.close_fee.to_sat(), sig: sig_to_proto(&m.sig) })
        }
        Message::Error(m) => P::Error(proto::Error { problem: m.problem.clone() }),
        Message::Unknown(u) => {
            // An ignored message has no content we kept: an empty
            // length-delimited field with its (odd) number.
            let mut out = Vec::with_capacity(6);
            prost::encoding::encode_key(u.number, prost::encoding::WireType::LengthDelimited, &mut out);
            out.push(0);
            return out;
        }
    };
    proto::Pkt { pkt: Some(pkt) }.encode_to_vec()
}

/// Decodes the bytes of one `pkt`.
///
/// See the module documentation for what is checked; the error says which
/// message and field broke which rule.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_PKT_LEN {
        return Err(DecodeError::new("pkt", "", DecodeErrorKind::TooLarge { len: bytes.len(), max: MAX_PKT_LEN }));
    }
    let walk = schema::walk(schema::PKT, bytes).map_err(Problem::into_error)?;
    if walk.seen == 0 {
        return match walk.unknown_odd {
            Some(number) => Ok(Message::Unknown(UnknownPacket { number })),
            None => Err(DecodeError::new("pkt", "", DecodeErrorKind::Empty)),
        };
    }
    // `error` is decoded by hand: its text is for diagnosis only, and one
    // that is not UTF-8 must still be treated as an error message (R6.3-b:
    // answering it with an error would be wrong), so it is read lossily, and
    // cut to MAX_ERROR_TEXT so that the result always re-encodes.
    let pkt_fields = schema::MESSAGES[schema::PKT].fields;
    let error_member = pkt_fields.iter().enumerate().find(|(_, f)| f.name == "error");
    if let Some((_, field)) = error_member.filter(|(i, _)| walk.seen & (1 << i) != 0) {
        let body = schema::len_field(bytes, field.number).unwrap_or_default();
        let problem = schema::len_field(body, 1).map(bounded_lossy_text);
        return Ok(Message::Error(ErrorMessage { problem }));
    }
    let pkt = proto::Pkt::decode(bytes)
        // The walk accepted the structure and `error` was handled above, so
        // prost has nothing left to object to; report it as malformed if it
        // ever does.
        .map_err(|_| DecodeError::new("pkt", "", DecodeErrorKind::Malformed))?;
    let pkt = pkt.pkt.expect("the walk saw exactly one pkt member");
    from_proto(pkt)
}

fn from_proto(pkt: proto::pkt::Pkt) -> Result<Message, DecodeError> {
    use proto::pkt::Pkt as P;
    Ok(match pkt {
        P::Auth(m) => {
            let at = Ctx("authenticate");
            Message::Authenticate(Box::new(Authenticate {
                node_id: at.pubkey("node_id", &m.node_id)?,
                session_sig: at.sig("session_sig", &m.session_sig)?,
            }))
        }
        P::Open(m) => {
            let at = Ctx("open_channel");
            let anch = match proto::open_channel::AnchorOffer::try_from(m.anch) {
                Ok(proto::open_channel::AnchorOffer::WillCreateAnchor) => AnchorOffer::WillCreate,
                Ok(proto::open_channel::AnchorOffer::WontCreateAnchor) => AnchorOffer::WontCreate,
                Err(_) => return Err(at.err("anch", DecodeErrorKind::UnknownEnumValue(m.anch))),
            };
            let delay =
                match at.locktime("delay", &m.delay)? {
                    proto::locktime::Locktime::Blocks(b) => Delay::Blocks(u16::try_from(b).map_err(|_| {
                        at.err("delay.blocks", DecodeErrorKind::OutOfRange("above BIP68's 65535 blocks"))
                    })?),
                    proto::locktime::Locktime::Seconds(s) => Delay::from_seconds(s).ok_or_else(|| {
                        at.err("delay.seconds", DecodeErrorKind::OutOfRange("above BIP68's 65535 * 512 seconds"))
                    })?,
                };
            Message::OpenChannel(Box::new(OpenChannel {
                delay,
                revocation_hash: sha256::Hash::from_byte_array(hash_from_proto(&m.revocation_hash)),
                next_revocation_hash: sha256::Hash::from_byte_array(hash_from_proto(&m.next_revocation_hash)),
                commit_key: at.pubkey("commit_key", &m.commit_key)?,
                final_key: at.pubkey("final_key", &m.final_key)?,
                anch,
                min_depth: m.min_depth.unwrap_or(0),
                initial_fee_rate: m.initial_fee_rate,
            }))
        }
        P::OpenAnchor(m) => {
            let at = Ctx("open_anchor");
            Message::OpenAnchor(Box::new(OpenAnchor {
                txid: Txid::from_byte_array(hash_from_proto(&m.txid)),
                output_index: m.output_index,
                amount: Amount::from_sat(m.amount),
                commit_sig: at.sig("commit_sig", &m.commit_sig)?,
            }))
        }
        P::OpenCommitSig(m) => {
            Message::OpenCommitSig(OpenCommitSig { sig: Ctx("open_commit_sig").sig("sig", &m.sig)? })
        }
        P::OpenComplete(_) => Message::OpenComplete,
        P::UpdateAddHtlc(m) => {
            let at = Ctx("update_add_htlc");
            let expiry = match at.locktime("expiry", &m.expiry)? {
                proto::locktime::Locktime::Blocks(b) => {
                    absolute::Height::from_consensus(b).map(absolute::LockTime::Blocks).map_err(|_| {
                        at.err("expiry.blocks", DecodeErrorKind::OutOfRange("a height must be below 500000000"))
                    })
                }
                proto::locktime::Locktime::Seconds(s) => {
                    absolute::Time::from_consensus(s).map(absolute::LockTime::Seconds).map_err(|_| {
                        at.err("expiry.seconds", DecodeErrorKind::OutOfRange("a time must be at least 500000000"))
                    })
                }
            }?;
            Message::UpdateAddHtlc(UpdateAddHtlc {
                id: m.id,
                amount: HtlcMsat::from_msat(m.amount_msat),
                r_hash: sha256::Hash::from_byte_array(hash_from_proto(&m.r_hash)),
                expiry,
                route: m.route.info,
            })
        }
        P::UpdateFulfillHtlc(m) => {
            Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id: m.id, r: Preimage(hash_from_proto(&m.r)) })
        }
        P::UpdateFailHtlc(m) => Message::UpdateFailHtlc(UpdateFailHtlc { id: m.id, reason: m.reason.info }),
        P::UpdateCommit(m) => Message::UpdateCommit(UpdateCommit { sig: Ctx("update_commit").sig("sig", &m.sig)? }),
        P::UpdateRevocation(m) => Message::UpdateRevocation(UpdateRevocation {
            revocation_preimage: Preimage(hash_from_proto(&m.revocation_preimage)),
            next_revocation_hash: sha256::Hash::from_byte_array(hash_from_proto(&m.next_revocation_hash)),
        }),
        P::UpdateFee(m) => Message::UpdateFee(UpdateFee { fee_rate: m.fee_rate }),
        P::CloseClearing(_) => Message::CloseClearing,
        P::CloseSignature(m) => Message::CloseSignature(CloseSignature {
            close_fee: Amount::from_sat(m.close_fee),
            sig: Ctx("close_signature").sig("sig", &m.sig)?,
        }),
        // Not reached (`decode` reads `error` by hand), but bounded the same
        // way should that ever change.
        P::Error(m) => Message::Error(ErrorMessage { problem: m.problem.as_deref().map(bounded_error_text) }),
    })
}

/// The message being converted, for naming fields in errors.
#[derive(Clone, Copy)]
struct Ctx(&'static str);

impl Ctx {
    fn err(self, field: &'static str, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.0, field, kind)
    }

    fn pubkey(self, field: &'static str, p: &proto::BitcoinPubkey) -> Result<CompressedPublicKey, DecodeError> {
        // Only the 33-byte compressed form is valid (R2.1-e). The length check
        // matters: `CompressedPublicKey::from_slice` would also accept, and
        // silently compress, a 65-byte uncompressed key.
        if p.key.len() != 33 {
            return Err(self.err(field, DecodeErrorKind::InvalidPublicKey));
        }
        CompressedPublicKey::from_slice(&p.key).map_err(|_| self.err(field, DecodeErrorKind::InvalidPublicKey))
    }

    fn sig(self, field: &'static str, p: &proto::Signature) -> Result<Signature, DecodeError> {
        let mut compact = [0u8; 64];
        for (chunk, word) in compact.chunks_exact_mut(8).zip([p.r1, p.r2, p.r3, p.r4, p.s1, p.s2, p.s3, p.s4]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let sig = Signature::from_compact(&compact).map_err(|_| self.err(field, DecodeErrorKind::InvalidSignature))?;
        // Low S: S, big-endian, at most half the group order (what
        // `normalize_s` leaves alone), compared as bytes.
        if compact[32..] > HALF_ORDER[..] {
            return Err(self.err(field, DecodeErrorKind::HighS));
        }
        Ok(sig)
    }

    fn locktime(self, field: &'static str, p: &proto::Locktime) -> Result<proto::locktime::Locktime, DecodeError> {
        p.locktime.ok_or_else(|| self.err(field, DecodeErrorKind::MissingRequired))
    }
}

/// Half the secp256k1 group order, rounded down, big-endian: the largest
/// low S.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

fn hash_from_proto(p: &proto::Sha256Hash) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(8).zip([p.a, p.b, p.c, p.d]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

fn hash_to_proto(bytes: [u8; 32]) -> proto::Sha256Hash {
    let w = words::<4>(&bytes);
    proto::Sha256Hash { a: w[0], b: w[1], c: w[2], d: w[3] }
}

fn sig_to_proto(sig: &Signature) -> proto::Signature {
    let w = words::<8>(&sig.serialize_compact());
    proto::Signature { r1: w[0], r2: w[1], r3: w[2], r4: w[3], s1: w[4], s2: w[5], s3: w[6], s4: w[7] }
}

fn pubkey_to_proto(key: &CompressedPublicKey) -> proto::BitcoinPubkey {
    proto::BitcoinPubkey { key: key.to_bytes().to_vec() }
}

/// Splits bytes into little-endian 64-bit words, so that the fixed64 fields
/// carry the bytes in order on the wire.
fn words<const N: usize>(bytes: &[u8]) -> [u64; N] {
    debug_assert_eq!(bytes.len(), N * 8);
    let mut out = [0u64; N];
    for (word, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8) yields 8 bytes"));
    }
    out
}
