//! The plain framing of ruling D8, for tests, examples and links that are
//! already secured: each `pkt` is preceded by a 12-byte header holding the
//! transport `acknowledge` counter (little-endian u64) and the length of the
//! encoded `pkt` (little-endian u32).
//!
//! [`FrameDecoder`] accepts bytes in whatever chunks a socket delivers them
//! and yields whole frames. A length above [`MAX_PKT_LEN`] is rejected as soon
//! as its header arrives, before anything is buffered for the body; after
//! that the stream has lost its framing, so the decoder stays failed. A body
//! that does not decode is reported and skipped: the framing is intact.

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

use super::{decode, encode, DecodeError, EncodeError, Message, MAX_PKT_LEN};

/// Length of the frame header: acknowledge (8 bytes) and length (4 bytes).
pub const HEADER_LEN: usize = 12;

/// Appends one frame carrying `msg` and the header value `acknowledge` to
/// `out`; a message [`encode`] refuses leaves `out` unchanged.
pub fn encode_frame(acknowledge: u64, msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_frame(acknowledge, &encode(msg)?, out)
}

/// Appends one frame carrying `pkt`, a message encoded already (as
/// [`Output::Send`](crate::channel::Output::Send) carries it), and the
/// header value `acknowledge` to `out`. A `pkt` above [`MAX_PKT_LEN`],
/// which no peer would take, is refused ([`EncodeError::TooLarge`], named
/// `pkt`) and leaves `out` unchanged.
pub fn write_frame(acknowledge: u64, pkt: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if pkt.len() > MAX_PKT_LEN {
        return Err(EncodeError::TooLarge { name: "pkt", len: pkt.len(), max: MAX_PKT_LEN });
    }
    let len = u32::try_from(pkt.len()).expect("at most MAX_PKT_LEN");
    out.reserve(HEADER_LEN + pkt.len());
    out.extend_from_slice(&acknowledge.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(pkt);
    Ok(())
}

/// One decoded frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    /// The sender's `acknowledge` counter from the header.
    pub acknowledge: u64,
    /// The message.
    pub message: Message,
}

/// Why a stream of frames could not be decoded.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// A header announced a body longer than [`MAX_PKT_LEN`].
    TooLarge {
        /// The announced length.
        len: u64,
    },
    /// A body did not decode.
    Decode(DecodeError),
    /// An earlier [`FrameError::TooLarge`] left the stream without framing.
    Failed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len } => {
                write!(f, "frame announces {len} bytes, above the {MAX_PKT_LEN}-byte limit")
            }
            FrameError::Decode(e) => write!(f, "frame body: {e}"),
            FrameError::Failed => f.write_str("stream failed earlier and has lost its framing"),
        }
    }
}

impl core::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            FrameError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Incremental decoder of a byte stream of frames.
///
/// Feed bytes with [`push`](Self::push) and drain frames with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. The decoder
/// only keeps bytes that are not yet a whole frame, so its buffer stays below
/// one frame plus the last chunk pushed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the first unconsumed byte of `buf` is.
    start: usize,
    failed: bool,
}

impl FrameDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        let pending = &self.buf[self.start..];
        let Some(header) = pending.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let acknowledge = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_PKT_LEN {
            return Err(self.fail(FrameError::TooLarge { len: len as u64 }));
        }
        let Some(body) = pending.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let message = decode(body).map_err(FrameError::Decode);
        self.start += HEADER_LEN + len;
        self.compact();
        // A body that does not decode is the peer's protocol violation, but
        // the framing around it is intact: the stream can go on.
        message.map(|message| Some(Frame { acknowledge, message }))
    }

    fn fail(&mut self, err: FrameError) -> FrameError {
        self.failed = true;
        self.buf = Vec::new();
        self.start = 0;
        err
    }

    /// Drops consumed bytes once they are the larger part of the buffer, so
    /// copying stays linear in the stream length.
    fn compact(&mut self) {
        if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}
