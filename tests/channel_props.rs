//! Random operation sequences on a channel pair: offers, fulfills, fails,
//! fee changes, commits and single message deliveries in any order, with the
//! invariants checked after every step.

mod common;

use std::collections::BTreeMap;

use bitcoin::absolute;
use common::pair::{Dir, Pair, CAPACITY};
use paychan::channel::{Channel, ChannelError, Side, View};
use paychan::{MilliSats, Preimage};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Offer { by_a: bool, msat: u64, secret: u8 },
    Fulfill { by_a: bool, pick: usize },
    Fail { by_a: bool, pick: usize },
    Fee { by_a: bool, rate: u32 },
    Commit { by_a: bool },
    Deliver { a_to_b: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 1u64..60_000_000, any::<u8>()).prop_map(|(by_a, msat, secret)| Op::Offer { by_a, msat, secret }),
        2 => (any::<bool>(), any::<usize>()).prop_map(|(by_a, pick)| Op::Fulfill { by_a, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(by_a, pick)| Op::Fail { by_a, pick }),
        1 => (any::<bool>(), paychan::fees::DEFAULT_MIN_FEE_RATE..60_000).prop_map(|(by_a, rate)| Op::Fee { by_a, rate }),
        3 => any::<bool>().prop_map(|by_a| Op::Commit { by_a }),
        6 => any::<bool>().prop_map(|a_to_b| Op::Deliver { a_to_b }),
    ]
}

fn preimage(secret: u8, id: u64) -> Preimage {
    let mut p = [secret; 32];
    p[..8].copy_from_slice(&id.to_le_bytes());
    Preimage(p)
}

/// Every view of a node holds exactly the capacity.
fn conserved(ch: &Channel) -> Result<(), TestCaseError> {
    let views: [(&str, &View); 4] = [
        ("ours", ch.our_commitment()),
        ("theirs", ch.their_commitment()),
        ("staged ours", ch.our_staged()),
        ("staged theirs", ch.their_staged()),
    ];
    for (name, v) in views {
        let total = MilliSats::checked_sum(
            [v.balance(Side::Local), v.balance(Side::Remote)].into_iter().chain(v.htlcs().map(|h| h.amount.msat())),
        );
        prop_assert_eq!(total, MilliSats::from_sat(CAPACITY), "{} view does not conserve value", name);
    }
    Ok(())
}

/// The test's own record of HTLCs: (offered by A?, id) -> (amount, preimage).
type Model = BTreeMap<(bool, u64), (u64, Preimage)>;

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut p = Pair::open();
    let mut live: Model = BTreeMap::new();
    let mut paid_a_to_b: i64 = 0;
    // The channel's id counters: ids are never reused (R3.2-e).
    let mut next_id = [0u64; 2];
    for op in ops {
        match op {
            Op::Offer { by_a, msat, secret } => {
                let node = p.node(if by_a { 'A' } else { 'B' });
                let r = preimage(secret, next_id[usize::from(by_a)]);
                let expiry = absolute::LockTime::from_height(10_000).unwrap();
                if let Ok(id) = node.ch.offer_htlc(MilliSats::from_msat(msat), r.hash(), expiry, vec![]) {
                    // R3.2-e: ids come from a counter.
                    prop_assert_eq!(id, next_id[usize::from(by_a)]);
                    next_id[usize::from(by_a)] += 1;
                    prop_assert!(live.insert((by_a, id), (msat, r)).is_none(), "id reused");
                }
            }
            Op::Fulfill { by_a, pick } | Op::Fail { by_a, pick } => {
                // A node removes HTLCs the other offered, as it has staged them.
                let node = p.node(if by_a { 'A' } else { 'B' });
                let incoming: Vec<u64> =
                    node.ch.our_staged().htlcs().filter(|h| h.offerer == Side::Remote).map(|h| h.id).collect();
                if incoming.is_empty() {
                    continue;
                }
                let id = incoming[pick % incoming.len()];
                let (msat, r) = live[&(!by_a, id)];
                let fulfill = matches!(op, Op::Fulfill { .. });
                let result = if fulfill { node.ch.fulfill_htlc(id, r) } else { node.ch.fail_htlc(id, vec![0xfa]) };
                // R3.3-c: an HTLC only staged is not removed yet (and R is
                // revealed only once it is in every commitment).
                if result == Err(ChannelError::NotCommitted(id)) {
                    continue;
                }
                prop_assert!(result.is_ok(), "{:?}", result);
                live.remove(&(!by_a, id));
                if fulfill {
                    paid_a_to_b += if by_a { -(msat as i64) } else { msat as i64 };
                }
            }
            Op::Fee { by_a, rate } => {
                p.node(if by_a { 'A' } else { 'B' }).ch.update_fee(rate).unwrap();
            }
            Op::Commit { by_a } => {
                let _ = p.node(if by_a { 'A' } else { 'B' }).ch.commit();
            }
            Op::Deliver { a_to_b } => {
                p.deliver(if a_to_b { Dir::AToB } else { Dir::BToA });
            }
        }
        p.pump();
        // Honest peers never fail: every signature and preimage verified.
        prop_assert!(p.a.failed().is_none(), "A failed: {:?}", p.a.failed());
        prop_assert!(p.b.failed().is_none(), "B failed: {:?}", p.b.failed());
        conserved(&p.a.ch)?;
        conserved(&p.b.ch)?;
    }

    p.settle();
    prop_assert!(p.a.failed().is_none() && p.b.failed().is_none(), "A {:?} B {:?}", p.a.failed(), p.b.failed());
    conserved(&p.a.ch)?;
    conserved(&p.b.ch)?;
    // Once quiet, both agree on both commitment transactions byte for byte.
    let (a_ours, b_theirs) = (p.a.ch.our_commitment_tx().unwrap(), p.b.ch.their_commitment_tx().unwrap());
    prop_assert_eq!(a_ours.tx(), b_theirs.tx());
    let (b_ours, a_theirs) = (p.b.ch.our_commitment_tx().unwrap(), p.a.ch.their_commitment_tx().unwrap());
    prop_assert_eq!(b_ours.tx(), a_theirs.tx());
    prop_assert!(!p.a.ch.has_pending_updates() && !p.b.ch.has_pending_updates());
    // No HTLC lost or duplicated: both commitments hold exactly the model's.
    for ch in [&p.a.ch, &p.b.ch] {
        for view in [ch.our_commitment(), ch.their_commitment()] {
            let seen: Vec<(bool, u64)> =
                view.htlcs().map(|h| ((h.offerer == Side::Local) == std::ptr::eq(ch, &p.a.ch), h.id)).collect();
            let expected: Vec<(bool, u64)> = live.keys().copied().collect();
            let mut seen_sorted = seen.clone();
            seen_sorted.sort();
            prop_assert_eq!(seen_sorted, expected);
        }
    }
    // Balances follow the payments.
    let in_flight_a: u64 = live.iter().filter(|((a, _), _)| *a).map(|(_, (m, _))| m).sum();
    let in_flight_b: u64 = live.iter().filter(|((a, _), _)| !*a).map(|(_, (m, _))| m).sum();
    let a_balance = CAPACITY.to_sat() as i64 * 1000 - paid_a_to_b - in_flight_a as i64;
    prop_assert_eq!(p.a.ch.balance(Side::Local).to_msat() as i64, a_balance);
    prop_assert_eq!(p.b.ch.balance(Side::Local).to_msat() as i64, paid_a_to_b - in_flight_b as i64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_operations_keep_the_channel_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// A hostile peer's messages: every kind, with small ids, random amounts,
/// signatures by the right key over wrong data, and now and then the right
/// preimage.
fn hostile() -> impl Strategy<Value = paychan::wire::Message> {
    use paychan::wire::*;
    use paychan::{HtlcMsat, Preimage};
    let sig = (0u8..4).prop_map(|n| common::sig(3, [n; 32]));
    prop_oneof![
        (0u64..4, any::<u32>(), 0u8..4, 0u32..1200).prop_map(|(id, amount, r, h)| Message::UpdateAddHtlc(
            UpdateAddHtlc {
                id,
                amount: HtlcMsat::from_msat(amount),
                r_hash: Preimage([r; 32]).hash(),
                expiry: absolute::LockTime::from_height(h).unwrap(),
                route: vec![],
            }
        )),
        (0u64..4, 0u8..4)
            .prop_map(|(id, r)| Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id, r: Preimage([r; 32]) })),
        (0u64..4).prop_map(|id| Message::UpdateFailHtlc(UpdateFailHtlc { id, reason: vec![1] })),
        any::<u32>().prop_map(|fee_rate| Message::UpdateFee(UpdateFee { fee_rate })),
        sig.clone().prop_map(|sig| Message::UpdateCommit(UpdateCommit { sig })),
        (0u8..4).prop_map(|n| Message::UpdateRevocation(UpdateRevocation {
            revocation_preimage: Preimage([n; 32]),
            next_revocation_hash: Preimage([n; 32]).hash(),
        })),
        Just(Message::CloseClearing),
        (0u64..5000, sig.clone()).prop_map(|(fee, sig)| Message::CloseSignature(CloseSignature {
            close_fee: bitcoin::Amount::from_sat(fee),
            sig
        })),
        sig.clone().prop_map(|sig| Message::OpenCommitSig(OpenCommitSig { sig })),
        Just(Message::OpenComplete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever a hostile peer sends, in any phase, the channel neither
    /// panics nor loses value: it either stays consistent or fails with a
    /// rule, sending one error and broadcasting a valid transaction.
    #[test]
    fn a_hostile_peer_never_panics(open in any::<bool>(), msgs in proptest::collection::vec((hostile(), 0u64..20), 1..12)) {
        let mut p = Pair::default_pair();
        if open {
            p.establish();
            let r = Preimage([1; 32]);
            p.a.ch.offer_htlc(MilliSats::from_msat(20_000_000), r.hash(), absolute::LockTime::from_height(1000).unwrap(), vec![]).unwrap();
            p.settle();
        } else {
            p.block(100);
            p.deliver(Dir::AToB);
            p.deliver(Dir::BToA);
        }
        for (m, ack) in msgs {
            p.a.ch.handle_message(m, ack);
            p.pump();
            conserved(&p.a.ch)?;
            // Every state the channel writes, whatever the peer sent, is one
            // it can restart from.
            let restored = p.a.restored();
            prop_assert!(restored.is_ok(), "{:?}", restored.err());
        }
        if let Some(paychan::channel::Event::ChannelFailed { reason, .. }) = p.a.failed() {
            prop_assert!(reason.rule.is_some(), "{}", reason);
            prop_assert!(p.a.sent.iter().filter(|(_, m)| matches!(m, paychan::wire::Message::Error(_))).count() <= 1);
            if open {
                let anchor = p.a.anchor.clone().unwrap();
                let tx = p.a.broadcasts.last().unwrap();
                prop_assert!(common::chain::verify_input(tx, 0, &anchor.output[0]).is_ok());
            }
        }
    }
}
