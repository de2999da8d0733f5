//! `decode` must never panic, and whatever it accepts must re-encode to a
//! message that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paychan::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode(data) {
        let again = wire::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(wire::decode(&again).as_ref(), Ok(&msg));
    }
});
