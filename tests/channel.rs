//! The channel state machine, driven through the in-memory harness.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{absolute, Amount};
use common::pair::{Dir, Pair};
use paychan::channel::{Event, Side};
use paychan::{MilliSats, Preimage};

fn height(h: u32) -> absolute::LockTime {
    absolute::LockTime::from_height(h).unwrap()
}

#[test]
fn establishment_and_one_payment() {
    let mut p = Pair::default_pair();
    p.block(100);
    // R2.2-a: A asks its wallet for the anchor but does not broadcast it
    // before open_commit_sig.
    assert_eq!(p.deliver(Dir::AToB), Some("open_channel"));
    assert_eq!(p.deliver(Dir::BToA), Some("open_channel"));
    assert!(p.a.anchor.is_some());
    assert!(p.a.broadcasts.is_empty());
    assert_eq!(p.deliver(Dir::AToB), Some("open_anchor"));
    assert!(p.a.broadcasts.is_empty(), "R2.2-a");
    assert_eq!(p.deliver(Dir::BToA), Some("open_commit_sig"));
    // R2.3-b: after a valid open_commit_sig the anchor is broadcast.
    assert_eq!(p.a.broadcasts, vec![p.a.anchor.clone().unwrap()]);
    p.confirm(6);
    p.deliver_all();
    assert!(p.a.ch.is_open() && p.b.ch.is_open());

    let r = Preimage([7; 32]);
    let id = p.a.ch.offer_htlc(MilliSats::from_msat(10_000_000), r.hash(), height(1000), vec![1, 2, 3]).unwrap();
    p.settle();
    p.b.ch.fulfill_htlc(id, r).unwrap();
    p.settle();
    assert_eq!(p.a.ch.balance(Side::Local), MilliSats::from_msat(990_000_000));
    assert_eq!(p.b.ch.balance(Side::Local), MilliSats::from_msat(10_000_000));
    assert!(p.b.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { id: 0, .. })));
    let _ = (sha256::Hash::hash(b""), Amount::ZERO);
}

#[test]
fn debug_repro() {
    let mut p = Pair::open();
    let r0 = Preimage([1; 32]);
    p.a.ch.offer_htlc(MilliSats::from_msat(34_120_255), r0.hash(), height(10_000), vec![]).unwrap();
    p.a.ch.update_fee(10_006).unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.b.ch.fulfill_htlc(0, r0).unwrap();
    p.b.ch.offer_htlc(MilliSats::from_msat(32_269_256), Preimage([2; 32]).hash(), height(10_000), vec![]).unwrap();
    p.b.ch.offer_htlc(MilliSats::from_msat(1), Preimage([3; 32]).hash(), height(10_000), vec![]).unwrap();
    p.pump();
    p.settle();
    println!("A: {:?}\nB: {:?}", p.a.failed(), p.b.failed());
    println!("trace {:?}", p.trace);
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
}
