//! The structural check that runs before prost sees a byte.
//!
//! prost ignores every unknown field and fills a missing `required` field
//! with its default, so on its own it would accept what the protocol must
//! reject. This module walks the protobuf encoding against the schema table
//! that build.rs derives from `proto/paychan.proto` and enforces:
//!
//! - an unknown field with an odd number is skipped (R1-a), one with an even
//!   number is an error (R1-b);
//! - every `required` field is present (R1-d);
//! - a known field has the wire type its declaration implies, a `uint32`
//!   fits in 32 bits, and no non-repeated field appears twice (so that a
//!   message has exactly one meaning);
//! - a field key or length prefix takes at most 5 bytes and fits in 32 bits,
//!   as in Google's protobuf (a value varint may take 10).
//!
//! It allocates nothing on success.

use super::{DecodeErrorKind, Problem};
#[allow(unused_imports)]
use crate::prelude::*;

/// How a field is laid out on the wire (the protobuf wire types we accept in
/// known fields; `Varint32` is a varint that must fit in 32 bits).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WireType {
    Varint,
    Varint32,
    /// An `int32` or enum: a varint holding a sign-extended 32-bit value.
    VarintI32,
    Fixed64,
    Len,
    // No fixed32 field is declared today; kept so the table covers every
    // wire type a declaration can imply.
    #[allow(dead_code)]
    Fixed32,
}

impl WireType {
    fn code(self) -> u8 {
        match self {
            WireType::Varint | WireType::Varint32 | WireType::VarintI32 => 0,
            WireType::Fixed64 => 1,
            WireType::Len => 2,
            WireType::Fixed32 => 5,
        }
    }
}

/// One declared field.
#[derive(Debug)]
pub(crate) struct FieldSchema {
    pub number: u32,
    pub name: &'static str,
    pub wire: WireType,
    pub required: bool,
    /// Which `oneof` of the message the field belongs to: at most one member
    /// of a `oneof` may be present.
    pub oneof: Option<i32>,
    /// Index into [`MESSAGES`] when the field is a message.
    pub message: Option<usize>,
}

/// One declared message.
#[derive(Debug)]
pub(crate) struct MessageSchema {
    pub name: &'static str,
    pub fields: &'static [FieldSchema],
}

include!(concat!(env!("OUT_DIR"), "/schema.rs"));

/// The table of `proto/oneway.proto`, the one-way channel's messages.
pub(crate) mod oneway {
    use super::{FieldSchema, MessageSchema, WireType};
    include!(concat!(env!("OUT_DIR"), "/oneway_schema.rs"));
}

/// What the walk of one message saw, for the caller's own rules (the `pkt`
/// union needs to know which of its fields were set).
pub(crate) struct Walk {
    /// Bit `i` is set when `fields[i]` of the schema was present.
    pub seen: u64,
    /// The first unknown odd field number, if any was skipped.
    pub unknown_odd: Option<u32>,
}

/// Largest nesting of unknown groups we skip before giving up.
const MAX_GROUP_DEPTH: usize = 32;

/// The most bytes a field key or a length prefix may take: a 32-bit value
/// needs at most 5 varint bytes.
const MAX_VARINT32_LEN: usize = 5;

/// Checks `bytes` as an encoding of `MESSAGES[msg]`, recursing into known
/// message fields.
pub(crate) fn walk(msg: usize, bytes: &[u8]) -> Result<Walk, Problem> {
    walk_in(MESSAGES, msg, bytes)
}

/// [`walk`] in another file's table.
pub(crate) fn walk_in(table: &'static [MessageSchema], msg: usize, bytes: &[u8]) -> Result<Walk, Problem> {
    let schema = &table[msg];
    debug_assert!(schema.fields.len() <= 64, "the seen mask holds 64 fields");
    let mut r = Reader { bytes, pos: 0 };
    let mut seen = Walk { seen: 0, unknown_odd: None };
    // Encoders write fields in declaration order, so the field after the
    // last one seen is tried first.
    let mut expected = 0;
    while !r.at_end() {
        let (number, wire) = r.key().map_err(Problem::new)?;
        let found = match schema.fields.get(expected) {
            Some(f) if f.number == number => Some(expected),
            _ => schema.fields.iter().position(|f| f.number == number),
        };
        let Some(i) = found else {
            if number % 2 == 0 {
                return Err(Problem::new(DecodeErrorKind::UnknownEvenField(number)));
            }
            seen.unknown_odd.get_or_insert(number);
            r.skip(number, wire).map_err(Problem::new)?;
            continue;
        };
        let field = &schema.fields[i];
        let at_field = |kind| Problem::new(kind).in_field(field.name);
        if wire != field.wire.code() {
            return Err(at_field(DecodeErrorKind::WrongWireType { expected: field.wire.code(), found: wire }));
        }
        if seen.seen & (1 << i) != 0 {
            return Err(at_field(DecodeErrorKind::DuplicateField));
        }
        if let Some(group) = field.oneof {
            let conflict = schema
                .fields
                .iter()
                .enumerate()
                .any(|(j, other)| other.oneof == Some(group) && seen.seen & (1 << j) != 0);
            if conflict {
                return Err(at_field(DecodeErrorKind::OneofConflict));
            }
        }
        seen.seen |= 1 << i;
        expected = i + 1;
        match field.wire {
            WireType::Varint => {
                r.varint().map_err(at_field)?;
            }
            WireType::Varint32 => {
                if r.varint().map_err(at_field)? > u64::from(u32::MAX) {
                    return Err(at_field(DecodeErrorKind::OutOfRange("does not fit in 32 bits")));
                }
            }
            WireType::VarintI32 => {
                let v = r.varint().map_err(at_field)?;
                if v > i32::MAX as u64 && v < (i32::MIN as i64) as u64 {
                    return Err(at_field(DecodeErrorKind::OutOfRange("not a 32-bit signed value")));
                }
            }
            WireType::Fixed64 => {
                r.take(8).map_err(at_field)?;
            }
            WireType::Fixed32 => {
                r.take(4).map_err(at_field)?;
            }
            WireType::Len => {
                let body = r.len_delimited().map_err(at_field)?;
                if let Some(nested) = field.message {
                    // Unknown odd fields inside are ignored too (R1-a).
                    walk_in(table, nested, body).map_err(|p| p.in_field(field.name))?;
                }
            }
        }
    }
    for (i, field) in schema.fields.iter().enumerate() {
        if field.required && seen.seen & (1 << i) == 0 {
            return Err(Problem::new(DecodeErrorKind::MissingRequired).in_field(field.name));
        }
    }
    Ok(seen)
}

/// The body of the first length-delimited field `number` of a message the
/// walk already accepted.
pub(crate) fn len_field(bytes: &[u8], number: u32) -> Option<&[u8]> {
    let mut r = Reader { bytes, pos: 0 };
    while !r.at_end() {
        let (n, wire) = r.key().ok()?;
        if n == number && wire == 2 {
            return r.len_delimited().ok();
        }
        r.skip(n, wire).ok()?;
    }
    None
}

/// A cursor over protobuf bytes. Every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeErrorKind> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or(DecodeErrorKind::Truncated)?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, DecodeErrorKind> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.pos).ok_or(DecodeErrorKind::Truncated)?;
            self.pos += 1;
            // The tenth byte may only carry the top bit of a 64-bit value.
            if i == 9 && byte > 1 {
                return Err(DecodeErrorKind::BadVarint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeErrorKind::BadVarint)
    }

    /// A varint holding a 32-bit quantity (a field key or a length prefix):
    /// at most [`MAX_VARINT32_LEN`] bytes and at most `u32::MAX`.
    ///
    /// Google's protobuf reads both as 32-bit values and refuses a longer
    /// encoding (upb's tag decoder: more than 5 bytes or above `UINT32_MAX`
    /// is malformed; the C++ parser reads a size in at most 5 bytes). A
    /// non-minimal encoding within 5 bytes (`88 80 80 80 00` for key 1/0) is
    /// accepted, as Google accepts it: refusing it would buy nothing, since
    /// such padding is bounded. Values (wire type 0) keep the 10 bytes of a
    /// `uint64`.
    fn varint32(&mut self) -> Result<u32, DecodeErrorKind> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT32_LEN {
            let byte = *self.bytes.get(self.pos).ok_or(DecodeErrorKind::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| DecodeErrorKind::BadKeyOrLength);
            }
        }
        // A continuation bit on the fifth byte: six bytes or more.
        Err(DecodeErrorKind::BadKeyOrLength)
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), DecodeErrorKind> {
        let key = self.varint32()?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(DecodeErrorKind::BadFieldNumber);
        }
        Ok((number, (key & 7) as u8))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], DecodeErrorKind> {
        let len = self.varint32()?;
        let len = usize::try_from(len).map_err(|_| DecodeErrorKind::Truncated)?;
        self.take(len)
    }

    /// Skips the value of an unknown field, including (nested) groups.
    fn skip(&mut self, number: u32, wire: u8) -> Result<(), DecodeErrorKind> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            3 => self.skip_group(number),
            _ => Err(DecodeErrorKind::BadWireType(wire)),
        }
    }

    fn skip_group(&mut self, number: u32) -> Result<(), DecodeErrorKind> {
        let mut open = [0u32; MAX_GROUP_DEPTH];
        let mut depth = 1;
        open[0] = number;
        while depth > 0 {
            let (n, wire) = self.key()?;
            match wire {
                3 => {
                    if depth == MAX_GROUP_DEPTH {
                        return Err(DecodeErrorKind::TooDeep);
                    }
                    open[depth] = n;
                    depth += 1;
                }
                4 => {
                    if open[depth - 1] != n {
                        return Err(DecodeErrorKind::BadWireType(4));
                    }
                    depth -= 1;
                }
                other => self.skip(n, other)?,
            }
        }
        Ok(())
    }
}
