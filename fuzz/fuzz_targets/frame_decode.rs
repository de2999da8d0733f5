//! The frame decoder must never panic whatever bytes arrive in whatever
//! chunks; the first byte of the input picks the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paychan::wire::frame::{FrameDecoder, FrameError};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut dec = FrameDecoder::new();
    for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                // A body that does not decode is skipped; framing goes on.
                Ok(Some(_)) | Err(FrameError::Decode(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
});
