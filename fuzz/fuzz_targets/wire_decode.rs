//! `decode` must never panic, and whatever it accepts must re-encode to a
//! message that decodes to itself (an `error` text included: `decode` keeps
//! at most `MAX_ERROR_TEXT` bytes of it, so it always re-encodes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use paychan::wire::{self, ErrorMessage, Message, MAX_ERROR_TEXT};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode(data) {
        if let Message::Error(ErrorMessage { problem: Some(text) }) = &msg {
            assert!(text.len() <= MAX_ERROR_TEXT, "kept {} bytes of error text", text.len());
        }
        let again = wire::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(wire::decode(&again).as_ref(), Ok(&msg));
    }
});
