//! Cooperative close (section 4): clearing, then a fee negotiation that
//! always terminates (ruling D5) with both sides broadcasting the same close.

mod common;

use bitcoin::{absolute, Amount};
use common::chain::verify_input;
use common::pair::{Pair, CAPACITY};
use paychan::channel::{ChannelConfig, Event, Side};
use paychan::wire::Message;
use paychan::{MilliSats, Preimage};
use proptest::prelude::*;

fn closed_tx(events: &[Event]) -> Option<bitcoin::Transaction> {
    events.iter().find_map(|e| match e {
        Event::ChannelClosed { tx } => Some(tx.clone()),
        _ => None,
    })
}

/// Opens, pays `paid` msat from A to B, closes with the given close fee
/// rates; returns the pair after the negotiation.
fn close_with(a_rate: u32, b_rate: u32, paid: u64) -> Pair {
    close_with_fees(a_rate, b_rate, paid, 10_000, 10_000)
}

/// As `close_with`, with each side's commitment fee rate too (which caps
/// what it may propose, R4.2-b).
fn close_with_fees(a_rate: u32, b_rate: u32, paid: u64, a_fee: u32, b_fee: u32) -> Pair {
    let cfg = |rate, fee_rate| ChannelConfig { close_fee_rate: rate, fee_rate, ..ChannelConfig::default() };
    let mut p = Pair::new(cfg(a_rate, a_fee), cfg(b_rate, b_fee), CAPACITY);
    p.establish();
    if paid > 0 {
        let r = Preimage([5; 32]);
        p.a.ch
            .offer_htlc(MilliSats::from_msat(paid), r.hash(), absolute::LockTime::from_height(5000).unwrap(), vec![])
            .unwrap();
        p.settle();
        p.b.ch.fulfill_htlc(0, r).unwrap();
        p.settle();
    }
    p.a.ch.close().unwrap();
    p.settle();
    p
}

#[test]
fn both_sides_broadcast_the_same_close() {
    let p = close_with(5_000, 9_000, 250_000_000);
    let (a, b) = (closed_tx(&p.a.events).expect("A closed"), closed_tx(&p.b.events).expect("B closed"));
    // R4.2-e: agreement means both sign and broadcast the same transaction.
    assert_eq!(a, b);
    // At least one side broadcast it (the other may have seen it on chain
    // before the echo arrived).
    assert!(p.a.broadcasts.contains(&a) || p.b.broadcasts.contains(&b));
    verify_input(&a, 0, &p.a.anchor.clone().unwrap().output[0]).expect("a valid close");
    // R4.2-b: every proposal was even and within the proposer's final
    // commitment fee.
    for (node, max) in [(&p.a, p.a.ch.our_commitment().fee()), (&p.b, p.b.ch.our_commitment().fee())] {
        for (_, m) in &node.sent {
            if let Message::CloseSignature(c) = m {
                assert_eq!(c.close_fee.to_sat() % 2, 0);
                assert!(c.close_fee <= max);
            }
        }
    }
    // R4.2-c: the fee is split evenly between the two balances.
    let fee = CAPACITY - a.output.iter().map(|o| o.value).sum::<Amount>();
    let mut values: Vec<u64> = a.output.iter().map(|o| o.value.to_sat()).collect();
    values.sort();
    assert_eq!(values, vec![250_000 - fee.to_sat() / 2, 750_000 - fee.to_sat() / 2]);
    // R4.1-b: each side sent close_clearing exactly once.
    for node in [&p.a, &p.b] {
        assert_eq!(node.sent.iter().filter(|(_, m)| matches!(m, Message::CloseClearing)).count(), 1);
        assert!(node.events.iter().any(|e| matches!(e, Event::ChannelClosing)));
    }
    // R4.1-a: no HTLC can be offered any more.
    assert!(p.a.ch.is_terminal() && p.b.ch.is_terminal());
}

#[test]
fn clearing_waits_for_htlcs_to_resolve() {
    let mut p = Pair::open();
    let r = Preimage([6; 32]);
    p.a.ch
        .offer_htlc(MilliSats::from_msat(9_000_000), r.hash(), absolute::LockTime::from_height(5000).unwrap(), vec![])
        .unwrap();
    p.settle();
    p.b.ch.close().unwrap();
    // R4.1-a: after close_clearing no new HTLC.
    assert!(p
        .b
        .ch
        .offer_htlc(MilliSats::from_msat(1), r.hash(), absolute::LockTime::from_height(5000).unwrap(), vec![])
        .is_err());
    p.settle();
    assert!(p
        .a
        .ch
        .offer_htlc(MilliSats::from_msat(1000), r.hash(), absolute::LockTime::from_height(5000).unwrap(), vec![])
        .is_err());
    // R4.2-a: no close_signature while the HTLC is in the commitments.
    assert!(!p.a.sent.iter().chain(&p.b.sent).any(|(_, m)| matches!(m, Message::CloseSignature(_))));
    p.b.ch.fulfill_htlc(0, r).unwrap();
    p.settle();
    let a = closed_tx(&p.a.events).expect("closed once the HTLC resolved");
    assert_eq!(Some(a), closed_tx(&p.b.events));
    assert_eq!(p.b.ch.balance(Side::Local), MilliSats::from_msat(9_000_000));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// R4.2-f, D5: whatever the two sides' fee preferences, negotiation
    /// ends in agreement, each proposal strictly inside the last two.
    #[test]
    fn negotiation_always_terminates(
        a_rate in 1_000u32..60_000,
        b_rate in 1_000u32..60_000,
        paid in 0u64..900_000_000,
        a_fee in 1341u32..30_000,
        b_fee in 1341u32..30_000,
    ) {
        let p = close_with_fees(a_rate, b_rate, paid, a_fee, b_fee);
        let a = closed_tx(&p.a.events);
        prop_assert!(a.is_some(), "A did not close: {:?}", p.a.failed());
        prop_assert_eq!(a, closed_tx(&p.b.events));
        // D5: each side's proposals move strictly towards the other's, so
        // the interval narrows every round; both end on the agreed fee.
        let mut rounds = 0;
        let mut last = Vec::new();
        for node in [&p.a, &p.b] {
            let fees: Vec<u64> = node.sent.iter().filter_map(|(_, m)| match m {
                Message::CloseSignature(c) => Some(c.close_fee.to_sat()),
                _ => None,
            }).collect();
            last.push(fees.last().copied());
            let _ = &last;
            let up = fees.windows(2).all(|w| w[0] < w[1]);
            let down = fees.windows(2).all(|w| w[0] > w[1]);
            prop_assert!(up || down, "not monotonic: {:?}", fees);
            // R4.2-b: never above the proposer's final commitment fee.
            let cap = node.ch.our_commitment().fee().to_sat();
            prop_assert!(fees.iter().all(|f| *f <= cap && f % 2 == 0), "{:?} above {}", fees, cap);
            rounds += fees.len();
        }
        // Both sent a proposal; when one side accepted a fee above its own
        // cap it closed without echoing it (ruling D5).
        prop_assert!(last[0].is_some() && last[1].is_some());
        let fees = vec![(); rounds];
        prop_assert!(fees.len() <= 40, "too many rounds: {}", fees.len());
    }
}
