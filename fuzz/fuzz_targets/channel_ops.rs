//! Random operation sequences on two in-memory channels: each input byte
//! pair is one operation. Honest peers must never fail the channel, never
//! panic, and always agree once quiet.
#![no_main]

use paychan::bitcoin::absolute::LockTime;
use libfuzzer_sys::fuzz_target;
use paychan::channel::{ChannelError, Side};
use paychan::sim::{Dir, Pair};
use paychan::{MilliSats, Preimage};

fuzz_target!(|data: &[u8]| {
    let mut p = Pair::open();
    let expiry = LockTime::from_height(10_000).expect("a height");
    for op in data.chunks(2).take(200) {
        let (kind, arg) = (op[0], *op.get(1).unwrap_or(&0));
        let who = if kind & 1 == 0 { 'A' } else { 'B' };
        let node = p.node(who);
        match kind >> 1 & 7 {
            0 => {
                let r = Preimage([arg; 32]);
                let _ = node.ch.offer_htlc(MilliSats::from_msat(u64::from(arg) * 400_000 + 1), r.hash(), expiry, vec![]);
            }
            1 | 2 => {
                let incoming: Vec<u64> =
                    node.ch.our_staged().htlcs().filter(|h| h.offerer == Side::Remote).map(|h| h.id).collect();
                if let Some(id) = incoming.get(usize::from(arg) % incoming.len().max(1)) {
                    let h = *node.ch.our_staged().htlc(Side::Remote, *id).expect("listed");
                    // The fuzzer's preimages are [b; 32] for the offer's byte b.
                    let r = (0..=255u8).map(|b| Preimage([b; 32])).find(|r| r.hash() == h.r_hash);
                    let result = match (kind >> 1 & 7, r) {
                        (1, Some(r)) => node.ch.fulfill_htlc(*id, r),
                        _ => node.ch.fail_htlc(*id, vec![arg]),
                    };
                    // R3.3-c: an HTLC only staged cannot be removed yet;
                    // any other refusal of a listed HTLC is a bug.
                    match result {
                        Ok(()) | Err(ChannelError::NotCommitted(_)) => {}
                        Err(e) => panic!("a valid removal refused: {e}"),
                    }
                }
            }
            3 => {
                let _ = node.ch.update_fee(1000 + u32::from(arg) * 200);
            }
            4 => {
                let _ = node.ch.commit();
            }
            _ => {
                p.pump();
                p.deliver(if kind & 1 == 0 { Dir::AToB } else { Dir::BToA });
            }
        }
        p.pump();
        assert!(p.a.failed().is_none() && p.b.failed().is_none(), "an honest peer failed");
    }
    p.settle();
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
    let (a, b) = (p.a.ch.our_commitment_tx().expect("open"), p.b.ch.their_commitment_tx().expect("open"));
    assert_eq!(a.tx(), b.tx());
});
