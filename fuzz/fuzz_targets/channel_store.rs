//! A channel's store (its snapshot and journal, ADR 0006) damaged in every
//! way the fuzzer finds: entries dropped, repeated, swapped or cut short,
//! bytes changed with or without the checksum recomputed. `restore` refuses
//! or gives a channel that works on; it never panics.
#![no_main]

#[path = "../../tests/common/reseal.rs"]
mod reseal;

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::absolute::LockTime;
use paychan::channel::{Channel, ChannelConfig};
use paychan::sim::{Pair, CAPACITY};
use paychan::tx::InMemorySigner;
use paychan::{MilliSats, Preimage};

/// An honest store: a snapshot of a channel with HTLCs in flight, then the
/// entries of payments both ways, a fee change and a reconnection.
struct Honest {
    signer: Arc<InMemorySigner>,
    snapshot: Vec<u8>,
    entries: Vec<Vec<u8>>,
}

static HONEST: LazyLock<Honest> = LazyLock::new(|| {
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), CAPACITY * 2);
    p.establish();
    let expiry = LockTime::from_height(5_000).expect("a height");
    let pay = |p: &mut Pair, from: char, n: u8, msat: u64| {
        let r = Preimage([n; 32]);
        let id = p.node(from).ch.offer_htlc(MilliSats::from_msat(msat), r.hash(), expiry, vec![n]).expect("affordable");
        p.settle();
        let to = if from == 'A' { 'B' } else { 'A' };
        p.node(to).ch.fulfill_htlc(id, r).expect("incoming");
        p.settle();
    };
    pay(&mut p, 'A', 1, 500_000_000);
    for n in 0..30 {
        p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([100 + n; 32]).hash(), expiry, vec![]).expect("ok");
    }
    p.settle();
    let snapshot = p.a.ch.snapshot();
    let from = p.a.ch.version();
    pay(&mut p, 'A', 2, 2_000_000);
    p.a.ch.update_fee(15_000).expect("a fee");
    p.a.ch.commit().expect("a commit");
    p.settle();
    p.reconnect();
    pay(&mut p, 'B', 3, 3_000_000);
    p.a.ch.handle_block(300, 1_700_000_000);
    p.pump();
    let entries = p.a.history.iter().filter(|w| w.seq() > from).map(|w| w.bytes().to_vec()).collect();
    Honest { signer: p.a.signer.clone(), snapshot, entries }
});

fuzz_target!(|data: &[u8]| {
    let honest = &*HONEST;
    let mut snapshot = honest.snapshot.clone();
    let mut entries = honest.entries.clone();
    let mut ops = data.chunks_exact(4);
    for op in &mut ops {
        let (which, at, value) = (op[0] as usize, u16::from_le_bytes([op[1], op[2]]) as usize, op[3]);
        let n = entries.len();
        match which % 8 {
            0 if n > 0 => {
                entries.remove(at % n);
            }
            1 if n > 0 => {
                let e = entries[at % n].clone();
                entries.insert(value as usize % (n + 1), e);
            }
            2 if n > 1 => entries.swap(at % n, value as usize % n),
            3 if n > 0 => {
                let e = &mut entries[at % n];
                let len = e.len();
                e.truncate(value as usize % (len + 1));
            }
            4 | 5 if n > 0 => {
                let e = &mut entries[at % n];
                let len = e.len();
                if len > 0 {
                    e[(at / n) % len] ^= value;
                    if which % 8 == 5 && len >= 8 {
                        *e = reseal::resealed(e.clone());
                    }
                }
            }
            6 | 7 => {
                let len = snapshot.len();
                snapshot[at % len] ^= value;
                if which % 8 == 7 {
                    snapshot = reseal::resealed(snapshot);
                }
            }
            _ => {}
        }
    }
    let signer = honest.signer.clone();
    let Ok(mut ch) = Channel::restore(&snapshot, entries.iter().map(Vec::as_slice), signer) else { return };
    // Whatever restore accepts works on.
    while ch.poll_output().is_some() {}
    ch.new_transport();
    ch.handle_authenticate(0);
    let _ = ch.commit();
    ch.handle_block(900_000, 1_800_000_000);
    ch.fail("fuzz");
    while ch.poll_output().is_some() {}
});
