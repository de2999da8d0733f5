//! The fault harness of `paychan::sim::faults` with the fuzzer choosing the
//! schedule: operations, deliveries, transport drops, crashes with writes in
//! flight, confirmations. Every invariant the harness checks must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paychan::sim::faults::{Bytes, Harness};

fuzz_target!(|data: &[u8]| {
    if let Err(v) = Harness::run(&mut Bytes(data), 400) {
        panic!("{v}");
    }
});
