//! The channel state machine, driven through the in-memory harness: the
//! establishment sequence, payments, both timing scenarios of section 3,
//! fees, close, and persistence.

mod common;

use paychan::chain::SpendKind;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{absolute, Amount};
use common::pair::{Dir, Node, Packet, Pair};
use paychan::channel::{Channel, ChannelConfig, ChannelError, Event, Output, Side};
use paychan::shachain::RevocationSecrets;
use paychan::wire::{self, Message};
use paychan::{MilliSats, Preimage};

fn height(h: u32) -> absolute::LockTime {
    absolute::LockTime::from_height(h).unwrap()
}

fn msat(n: u64) -> MilliSats {
    MilliSats::from_msat(n)
}

fn offer(node: &mut Node, amount: u64, secret: u8) -> u64 {
    node.ch.offer_htlc(msat(amount), Preimage([secret; 32]).hash(), height(5000), vec![secret]).unwrap()
}

/// HTLC ids in `node`'s own current commitment ("Committed" in the text's
/// diagrams) and in its staged one but not yet committed ("Staged"), each
/// named by (offered by A?, id) mapped to the test's labels.
fn sets(node: &Node, is_a: bool, label: impl Fn(bool, u64) -> char) -> (String, String) {
    let name = |offerer: Side, id: u64| label((offerer == Side::Local) == is_a, id);
    let committed: String = node.ch.our_commitment().htlcs().map(|h| name(h.offerer, h.id)).collect();
    let staged: String = node
        .ch
        .our_staged()
        .htlcs()
        .filter(|h| node.ch.our_commitment().htlc(h.offerer, h.id).is_none())
        .map(|h| name(h.offerer, h.id))
        .collect();
    (sorted(committed), sorted(staged))
}

fn sorted(s: String) -> String {
    let mut c: Vec<char> = s.chars().collect();
    c.sort();
    c.into_iter().collect()
}

#[test]
fn establishment_follows_section_2() {
    let mut p = Pair::default_pair();
    p.block(100);
    // R2.1-f: the first two revocation hashes are of shachain indices
    // 2^64-1 and 2^64-2.
    let Some((0, Message::OpenChannel(open))) = p.a.sent.first().cloned() else { panic!("open_channel first") };
    let secrets = RevocationSecrets::new([0xa1; 32]);
    assert_eq!(open.revocation_hash, sha256::Hash::hash(&paychan::shachain::derive(&[0xa1; 32], u64::MAX)));
    assert_eq!(open.next_revocation_hash, secrets.hash(1));
    // R2.1-a: the connecting node will create the anchor, the other won't.
    assert_eq!(open.anch, wire::AnchorOffer::WillCreate);
    assert!(matches!(&p.b.sent[0].1, Message::OpenChannel(o) if o.anch == wire::AnchorOffer::WontCreate));

    // R2-a: open_channel both ways, then open_anchor, open_commit_sig.
    assert_eq!(p.deliver(Dir::AToB), Some("open_channel"));
    assert_eq!(p.deliver(Dir::BToA), Some("open_channel"));
    assert!(p.a.anchor.is_some(), "the wallet was asked for the anchor");
    // R2.2-a: the anchor creator does not broadcast before open_commit_sig.
    assert!(p.a.broadcasts.is_empty());
    assert_eq!(p.deliver(Dir::AToB), Some("open_anchor"));
    assert!(p.a.broadcasts.is_empty());
    assert_eq!(p.deliver(Dir::BToA), Some("open_commit_sig"));
    // R2.3-b: after a valid open_commit_sig the anchor is broadcast.
    assert_eq!(p.a.broadcasts, vec![p.a.anchor.clone().unwrap()]);
    // R6.1-a: both watch the anchor for spends.
    for node in [&p.a, &p.b] {
        assert!(node
            .watches
            .iter()
            .any(|w| *w == paychan::channel::Watch::AnchorSpend(p.a.ch.funding().unwrap().outpoint())));
    }
    // R2.4-a: no open_complete before the anchor reaches min_depth (3).
    p.confirm(2);
    assert!(p.a_to_b.is_empty() && p.b_to_a.is_empty());
    // R2.4-b: no normal operation before open_complete both ways.
    let early = p.a.ch.offer_htlc(msat(1000), Preimage([1; 32]).hash(), height(5000), vec![]);
    assert!(matches!(early, Err(ChannelError::WrongPhase { .. })));
    p.confirm(3);
    assert_eq!(p.a_to_b.front().map(|q| q.message().name()), Some("open_complete"));
    assert_eq!(p.deliver(Dir::AToB), Some("open_complete"));
    // R2.4-b: B has sent and received open_complete: it is open; A has not
    // received B's yet.
    assert!(p.b.ch.is_open() && !p.a.ch.is_open());
    assert_eq!(p.deliver(Dir::BToA), Some("open_complete"));
    assert!(p.a.ch.is_open());
    for node in [&p.a, &p.b] {
        assert!(node.events.iter().any(|e| matches!(e, Event::ChannelOpen { .. })));
    }
    // Both initial commitments agree.
    assert_eq!(p.a.ch.our_commitment_tx().unwrap().tx(), p.b.ch.their_commitment_tx().unwrap().tx());
    assert_eq!(p.b.ch.our_commitment_tx().unwrap().tx(), p.a.ch.their_commitment_tx().unwrap().tx());
}

#[test]
fn a_payment_moves_the_balance() {
    let mut p = Pair::open();
    let r = Preimage([7; 32]);
    let id = p.a.ch.offer_htlc(msat(10_000_000), r.hash(), height(1000), vec![1, 2, 3]).unwrap();
    p.settle();
    assert!(p.b.events.iter().any(|e| matches!(e, Event::HtlcAdded { id: 0, route, .. } if route == &vec![1, 2, 3])));
    p.b.ch.fulfill_htlc(id, r).unwrap();
    p.settle();
    assert_eq!(p.a.ch.balance(Side::Local), msat(990_000_000));
    assert_eq!(p.b.ch.balance(Side::Local), msat(10_000_000));
    // A learns R as soon as B's fulfill arrives.
    assert!(p.a.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { id: 0, preimage, .. } if *preimage == r)));
    assert!(p.b.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { id: 0, .. })));
}

/// R3-b: the first scenario of section 3, message by message.
#[test]
fn sequential_timing_scenario() {
    let mut p = Pair::open();
    p.a.ch.offer_htlc(msat(20_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.settle();
    p.a.ch.offer_htlc(msat(5_000_000), Preimage([9; 32]).hash(), height(5000), vec![]).unwrap();
    p.settle();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.b.ch.fail_htlc(1, vec![]).unwrap();
    p.settle();
    // Now both can offer. X is A's HTLC 2, Y is B's HTLC 0.
    let label = |by_a: bool, id: u64| match (by_a, id) {
        (true, 2) => 'X',
        (false, 0) => 'Y',
        _ => '?',
    };
    let state = |p: &Pair| (sets(&p.a, true, label), sets(&p.b, false, label));
    let none = (String::new(), String::new());
    assert_eq!(state(&p), (none.clone(), none.clone()));

    // A decides to offer a new HTLC X: Committed [] Staged [X].
    offer(&mut p.a, 1_000_000, 0x58);
    p.pump();
    assert_eq!(state(&p).0, ("".into(), "X".into()));
    // ADD HTLC X ----->  B: Committed [] Staged [X].
    assert_eq!(p.deliver(Dir::AToB), Some("update_add_htlc"));
    assert_eq!(state(&p).1, ("".into(), "X".into()));
    // B decides to offer Y: Committed [] Staged [X Y].
    offer(&mut p.b, 1_000_000, 0x59);
    p.pump();
    assert_eq!(state(&p).1, ("".into(), "XY".into()));
    // <---------- ADD HTLC Y   A: Committed [] Staged [X Y].
    assert_eq!(p.deliver(Dir::BToA), Some("update_add_htlc"));
    assert_eq!(state(&p).0, ("".into(), "XY".into()));
    // A commits its update and the one it got from B: SIG 1 ----->
    p.a.ch.commit().unwrap();
    p.pump();
    // B: Committed [X Y] Staged [].
    assert_eq!(p.deliver(Dir::AToB), Some("update_commit"));
    assert_eq!(state(&p).1, ("XY".into(), "".into()));
    // B replies with the revocation preimage, and a signature.
    p.b.ch.commit().unwrap();
    p.pump();
    assert_eq!(p.deliver(Dir::BToA), Some("update_revocation"));
    assert_eq!(state(&p).0, ("".into(), "XY".into()));
    // A receives this signature and commits: Committed [X Y] Staged [].
    assert_eq!(p.deliver(Dir::BToA), Some("update_commit"));
    assert_eq!(state(&p).0, ("XY".into(), "".into()));
    // REVOCATION --------->
    assert_eq!(p.deliver(Dir::AToB), Some("update_revocation"));
    // R3-b: both end with the same committed set.
    assert_eq!(state(&p), (("XY".into(), "".into()), ("XY".into(), "".into())));
    assert!(!p.a.ch.has_pending_updates() && !p.b.ch.has_pending_updates());
}

/// R3-b: the second scenario: B commits in parallel, before receiving A's
/// update; A commits B's update but not its own, then B's next signature
/// includes A's update too.
#[test]
fn parallel_timing_scenario() {
    let mut p = Pair::open();
    p.a.ch.offer_htlc(msat(20_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.settle();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    let label = |by_a: bool, id: u64| match (by_a, id) {
        (true, 1) => 'X',
        (false, 0) => 'Y',
        _ => '?',
    };
    let state = |p: &Pair| (sets(&p.a, true, label), sets(&p.b, false, label));

    // B: Committed [] Staged [Y];  <------ ADD HTLC Y
    offer(&mut p.b, 1_000_000, 0x59);
    p.pump();
    assert_eq!(state(&p).1, ("".into(), "Y".into()));
    assert_eq!(p.deliver(Dir::BToA), Some("update_add_htlc"));
    // A: Committed [] Staged [Y].
    assert_eq!(state(&p).0, ("".into(), "Y".into()));
    // A offers X (A: Staged [Y X]) while B commits (SIG 0): the messages cross.
    offer(&mut p.a, 1_000_000, 0x58);
    p.b.ch.commit().unwrap();
    p.pump();
    assert_eq!(state(&p).0, ("".into(), "XY".into()));
    // A commits too (SIG 1), before receiving SIG 0.
    p.a.ch.commit().unwrap();
    p.pump();
    // A receives SIG 0: it commits B's update but not its own, which B had
    // not acknowledged: Committed [Y] Staged [X].
    assert_eq!(p.deliver(Dir::BToA), Some("update_commit"));
    assert_eq!(state(&p).0, ("Y".into(), "X".into()));
    // A's REVOCATION and B's receipt of ADD X and SIG 1: B commits both.
    assert_eq!(p.deliver(Dir::AToB), Some("update_add_htlc"));
    assert_eq!(state(&p).1, ("".into(), "XY".into()));
    assert_eq!(p.deliver(Dir::AToB), Some("update_commit"));
    assert_eq!(state(&p).1, ("XY".into(), "".into()));
    assert_eq!(p.deliver(Dir::AToB), Some("update_revocation"));
    // <------ REVOCATION, then B's SIG 1 including A's update.
    assert_eq!(p.deliver(Dir::BToA), Some("update_revocation"));
    p.b.ch.commit().unwrap();
    p.pump();
    assert_eq!(p.deliver(Dir::BToA), Some("update_commit"));
    // A: Committed [Y X] Staged [].
    assert_eq!(state(&p).0, ("XY".into(), "".into()));
    assert_eq!(p.deliver(Dir::AToB), Some("update_revocation"));
    // R3-b: the same committed HTLC sets on both sides as in the first scenario.
    assert_eq!(state(&p), (("XY".into(), "".into()), ("XY".into(), "".into())));
    assert!(!p.a.ch.has_pending_updates() && !p.b.ch.has_pending_updates());
    let (a, b) = (p.a.ch.our_commitment_tx().unwrap(), p.b.ch.their_commitment_tx().unwrap());
    assert_eq!(a.tx(), b.tx());
}

#[test]
fn revocation_follows_section_3_5() {
    let mut p = Pair::open();
    offer(&mut p.a, 5_000_000, 1);
    p.a.ch.commit().unwrap();
    p.pump();
    let b0 = p.b.ch.our_commitment_tx().unwrap().tx().clone();
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    // R3.5-c: B answers with the preimage of its old commitment (0) and the
    // hash of its next-but-one (2).
    let Some(Message::UpdateRevocation(rev)) = p.b_to_a.front().map(|q| q.message().clone()) else {
        panic!("revocation")
    };
    let b_secrets = RevocationSecrets::new([0xb2; 32]);
    assert_eq!(rev.revocation_preimage, b_secrets.preimage(0));
    assert_eq!(rev.next_revocation_hash, b_secrets.hash(2));
    p.deliver(Dir::BToA);
    // R3-a: A's monitor keeps what it needs to punish B's revoked
    // commitment 0, and recognises it on chain (C1-b).
    assert!(p.a.monitor.can_punish(0) && !p.a.monitor.can_punish(1));
    assert_eq!(common::classify(&p.a, &b0), Some(SpendKind::RevokedCommitment { number: 0 }));
    p.settle();
    // R3.5-f: our own commitment stays unsigned by us until we broadcast it.
    assert!(p.a.ch.our_commitment_tx().unwrap().tx().input[0].witness.is_empty());
}

#[test]
fn caller_mistakes_change_nothing() {
    let mut p = Pair::open();
    let before = (p.a.persisted_version, p.a.ch.snapshot());
    let r = Preimage([3; 32]);
    // Every refusal below leaves A exactly as it was.
    // R3.2-b
    assert_eq!(p.a.ch.offer_htlc(msat(0), r.hash(), height(5000), vec![]), Err(ChannelError::BadAmount(msat(0))));
    assert!(matches!(
        p.a.ch.offer_htlc(msat(1 << 32), r.hash(), height(5000), vec![]),
        Err(ChannelError::BadAmount(_))
    ));
    // R3.2-a: more than A has.
    assert_eq!(p.a.ch.offer_htlc(msat(999_000_000), r.hash(), height(5000), vec![]), Err(ChannelError::CannotAfford));
    // R3.6-e: B has nothing, so cannot pay its fee share.
    assert_eq!(p.b.ch.offer_htlc(msat(1), r.hash(), height(5000), vec![]), Err(ChannelError::CannotAfford));
    // R3.2-d, R3.1-b: height 100 + B's delay 144 = 244 at the earliest.
    assert!(matches!(
        p.a.ch.offer_htlc(msat(1000), r.hash(), height(243), vec![]),
        Err(ChannelError::ExpiryTooSoon { earliest, .. }) if earliest == height(244)
    ));
    p.pump();
    assert_eq!((p.a.persisted_version, p.a.ch.snapshot()), before);
    assert!(p.a_to_b.is_empty() && p.b_to_a.is_empty());
    // R3.3-a: we can only remove the peer's HTLCs.
    let id = offer(&mut p.a, 1_000_000, 4);
    p.pump();
    assert_eq!(p.a.ch.fulfill_htlc(id, Preimage([4; 32])), Err(ChannelError::UnknownHtlc(id)));
    assert_eq!(p.a.ch.fail_htlc(id, vec![]), Err(ChannelError::UnknownHtlc(id)));
    // R3.5-a is about the peer; with a staged update commit works, twice not.
    p.a.ch.commit().unwrap();
    assert_eq!(p.a.ch.commit(), Err(ChannelError::AwaitingRevocation));
    p.pump();
    p.settle();
    // R3.5-a: nothing staged, nothing to commit.
    let quiet = (p.a.persisted_version, p.a.ch.snapshot());
    assert_eq!(p.a.ch.commit(), Err(ChannelError::NothingToCommit));
    assert_eq!(p.b.ch.fulfill_htlc(id, Preimage([5; 32])), Err(ChannelError::WrongPreimage(id)));
    assert_eq!(p.a.ch.update_fee(0), Err(ChannelError::BadFeeRate));
    p.pump();
    // Nothing was persisted, queued or sent by any of the refusals.
    assert_eq!((p.a.persisted_version, p.a.ch.snapshot()), quiet);
    assert!(p.a_to_b.is_empty() && p.b_to_a.is_empty());
    // R2.2-c: we never offer an anchor above 4294967 sat.
    let signer = std::sync::Arc::new(paychan::tx::InMemorySigner::new(common::secret(1), common::secret(2)));
    assert!(matches!(
        Channel::new_funder(ChannelConfig::default(), signer, [0; 32], Amount::from_sat(4_294_968)),
        Err(ChannelError::BadAnchorAmount(_))
    ));
}

#[test]
fn htlc_limit_is_1500_per_side() {
    let mut p = Pair::open();
    let expiry = height(5000);
    for i in 0..1500u32 {
        let r = sha256::Hash::hash(&i.to_le_bytes());
        p.a.ch.offer_htlc(msat(1000), r, expiry, vec![]).unwrap();
    }
    // R3.2-c: the 1501st is refused.
    let r = sha256::Hash::hash(b"one more");
    assert_eq!(p.a.ch.offer_htlc(msat(1000), r, expiry, vec![]), Err(ChannelError::TooManyHtlcs));
    p.settle();
    assert_eq!(p.b.ch.our_commitment().offered_by(Side::Remote), 1500);
    assert!(p.b.failed().is_none());
}

#[test]
fn fee_changes_follow_ruling_d7() {
    let mut p = Pair::open();
    let b_rate = p.b.ch.our_commitment().fee_rate();
    // R3.4-a: A's new rate applies from A's next commitment that includes it.
    p.a.ch.update_fee(20_000).unwrap();
    p.pump();
    assert_eq!(p.a.ch.our_commitment().fee_rate(), 10_000);
    p.settle();
    // D7: A's commitments use A's rate; B's keep B's.
    assert_eq!(p.a.ch.our_commitment().fee_rate(), 20_000);
    assert_eq!(p.b.ch.their_commitment().fee_rate(), 20_000);
    assert_eq!(p.b.ch.our_commitment().fee_rate(), b_rate);
    assert!(p.a.events.iter().any(|e| matches!(e, Event::FeeChanged { side: Side::Local, fee_rate: 20_000 })));
    // R3.4-c: an estimate above our rate raises it to twice the estimate.
    assert_eq!(p.b.ch.handle_fee_estimate(15_000), Ok(true));
    p.pump();
    assert!(matches!(p.b_to_a.back().map(Packet::message), Some(Message::UpdateFee(f)) if f.fee_rate == 30_000));
    assert_eq!(p.b.ch.handle_fee_estimate(15_000), Ok(false), "already staged at 30000");
    p.settle();
    assert_eq!(p.a.ch.their_commitment().fee_rate(), 30_000);
}

#[test]
fn incoming_htlcs_that_time_out_are_failed() {
    let mut p = Pair::open();
    p.a.ch.offer_htlc(msat(2_000_000), Preimage([1; 32]).hash(), height(400), vec![]).unwrap();
    p.settle();
    p.block(399);
    assert!(p.b_to_a.is_empty());
    // R3.3-b: at its expiry B fails it at once.
    p.block(400);
    assert!(matches!(p.b_to_a.front().map(Packet::message), Some(Message::UpdateFailHtlc(f)) if f.id == 0));
    p.settle();
    assert!(p.a.events.iter().any(|e| matches!(e, Event::HtlcFailed { id: 0, .. })));
    assert_eq!(p.a.ch.balance(Side::Local), msat(1_000_000_000));
}

#[test]
fn failure_reasons_are_relayed_unchanged() {
    let mut p = Pair::open();
    let id = offer(&mut p.a, 3_000_000, 8);
    p.settle();
    let onion_error = vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff];
    p.b.ch.fail_htlc(id, onion_error.clone()).unwrap();
    p.settle();
    // R3.3-e: the reason reaches A byte for byte, ready to copy upstream.
    let got = p.a.events.iter().find_map(|e| match e {
        Event::HtlcFailed { id: 0, reason, direction, .. } => Some((reason.clone(), *direction)),
        _ => None,
    });
    assert_eq!(got, Some((onion_error, paychan::channel::Direction::Outgoing)));
}

#[test]
fn outputs_wait_for_persistence() {
    let mut p = Pair::open();
    p.a.auto_persist = false;
    p.a.ch.offer_htlc(msat(1_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    // The state change is offered for persistence, and nothing else yet.
    let first = p.a.ch.poll_output();
    let Some(Output::Persist(write)) = first else { panic!("persist first, got {first:?}") };
    // A journal entry, not the whole state.
    assert!(!write.is_snapshot() && write.bytes().len() < 200, "{write:?}");
    assert_eq!(p.a.ch.poll_output(), None, "the update_add_htlc waits for durability");
    p.a.ch.handle_persisted(write.seq());
    assert!(matches!(p.a.ch.poll_output(), Some(Output::Send { message: Message::UpdateAddHtlc(_), .. })));
    // The store with the entry appended restores to a channel that
    // continues.
    let mut store = p.a.store.clone();
    store.apply(&write);
    let mut restored = store.channel(p.a.signer.clone()).unwrap();
    assert_eq!(restored.our_staged(), p.a.ch.our_staged());
    assert_eq!(restored.our_commitment(), p.a.ch.our_commitment());
    assert_eq!(restored.version(), write.seq());
    let state = p.a.ch.snapshot();
    // A restored channel refuses a different signer.
    let other = std::sync::Arc::new(paychan::tx::InMemorySigner::new(common::secret(7), common::secret(8)));
    assert!(Channel::restore(&state, [], other).is_err());
    // Corrupt state never panics.
    for cut in [0, 10, state.len() / 2, state.len() - 1] {
        assert!(Channel::restore(&state[..cut], [], p.a.signer.clone()).is_err());
    }
    let _ = restored.poll_output();
}

#[test]
fn a_restored_channel_carries_on() {
    let mut p = Pair::open();
    offer(&mut p.a, 4_000_000, 1);
    p.settle();
    // A restarts from its last persisted state.
    let state = p.a.ch.snapshot();
    p.a.ch = Channel::restore(&state, [], p.a.signer.clone()).unwrap();
    // R1.2-a: a restarted node talks to its peer on a new transport.
    p.reconnect();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    offer(&mut p.a, 1_000_000, 2);
    p.settle();
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
    assert_eq!(p.b.ch.balance(Side::Local), msat(4_000_000));
    assert_eq!(p.a.ch.our_commitment_tx().unwrap().tx(), p.b.ch.their_commitment_tx().unwrap().tx());
}

#[test]
fn reconnection_retransmits_identical_messages() {
    let mut p = Pair::open();
    offer(&mut p.a, 2_000_000, 1);
    p.a.ch.commit().unwrap();
    p.pump();
    // The transport drops: A's two messages are lost in flight.
    // What goes on the wire is each message's encoding.
    assert!(p.a_to_b.iter().all(|q| wire::encode(q.message()).as_deref() == Ok(q.bytes())));
    let lost: Vec<Packet> = p.a_to_b.drain(..).collect();
    assert_eq!(lost.len(), 2);
    // R6.3-a: losing the transport does not fail the channel.
    assert!(p.a.ch.is_open() && p.b.ch.is_open());
    // R1.2-a: a new transport; B's authenticate acknowledges what it has
    // processed, and A sends again what that does not cover.
    p.b_to_a.clear();
    let b_ack = p.b.ch.new_transport();
    assert_eq!(b_ack, p.b.ch.acknowledge());
    let a_ack = p.a.ch.new_transport();
    p.pump();
    // Nothing is sent before the peer's authenticate says where to start.
    assert!(p.a_to_b.is_empty());
    p.a.ch.handle_authenticate(b_ack);
    p.b.ch.handle_authenticate(a_ack);
    p.pump();
    let again: Vec<Packet> = p.a_to_b.iter().cloned().collect();
    // R1.2-d, R1.2-e: the same messages, bitwise identical, framed the same
    // (each resent message is what its bytes say).
    let messages = |ps: &[Packet]| ps.iter().map(|q| q.message().clone()).collect::<Vec<_>>();
    assert_eq!(messages(&again), messages(&lost));
    assert!(again.iter().all(|q| wire::encode(q.message()).as_deref() == Ok(q.bytes())));
    assert_eq!(again.iter().map(frame).collect::<Vec<_>>(), lost.iter().map(frame).collect::<Vec<_>>());
    // R1.2-c: our acknowledge never decreased.
    assert!(p.a_to_b.iter().all(|q| q.acknowledge() <= p.a.ch.acknowledge()));
    p.settle();
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
    assert_eq!(p.b.ch.our_commitment().offered_by(Side::Remote), 1);
}

/// The frame a transport sends for `q`.
fn frame(q: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    wire::frame::write_frame(q.acknowledge(), q.bytes(), &mut out).unwrap();
    out
}

#[test]
fn acknowledge_counts_processed_messages() {
    let mut p = Pair::open();
    // R1.2-b: B has processed A's open_channel, open_anchor and open_complete.
    assert_eq!(p.b.ch.acknowledge(), 3);
    offer(&mut p.a, 2_000_000, 1);
    p.pump();
    assert_eq!(p.a_to_b.back().map(Packet::acknowledge), Some(3), "A processed B's three messages");
    p.settle();
    // Each message's acknowledge is what its sender had processed then, and
    // never decreases (R1.2-c).
    for node in [&p.a, &p.b] {
        let acks: Vec<u64> = node.sent.iter().map(|(a, _)| *a).collect();
        assert!(acks.windows(2).all(|w| w[0] <= w[1]), "{acks:?}");
    }
    // authenticate is not counted.
    let before = p.b.ch.acknowledge();
    let auth = wire::Authenticate { node_id: common::pubkey(1), session_sig: common::sig(1, [0; 32]) };
    p.b.ch.handle_message(Message::Authenticate(Box::new(auth)), 0);
    assert_eq!(p.b.ch.acknowledge(), before);
}

#[test]
fn acknowledge_and_versions_follow_durability() {
    let mut p = Pair::open();
    let durable_ack = p.b.ch.acknowledge();
    p.b.auto_persist = false;
    offer(&mut p.a, 1_000_000, 1);
    p.pump();
    p.deliver(Dir::AToB);
    // R1.2-b: B processed one more message, but until that state is durable
    // it must not claim it in an authenticate header.
    assert_eq!(p.b.ch.acknowledge(), durable_ack);
    let version = p.b.persisted_version;
    p.b.ch.handle_persisted(version);
    assert_eq!(p.b.ch.acknowledge(), durable_ack + 1);
    // A restored channel continues the version numbers.
    let mut restored = p.b.restored().unwrap();
    restored.handle_block(200, 1_700_000_000);
    let next = std::iter::from_fn(|| restored.poll_output()).find_map(|o| match o {
        Output::Persist(w) => Some(w.seq()),
        _ => None,
    });
    assert_eq!(next, Some(version + 1));
}

#[test]
fn a_crash_after_a_revocation_loses_no_penalty() {
    let mut p = Pair::open();
    offer(&mut p.a, 1_000_000, 1);
    p.a.ch.commit().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    p.deliver(Dir::BToA);
    // A just received B's revocation. A crash of both the channel and the
    // monitor now loses nothing: the restored channel is at the same state,
    // and the monitor restored from its own store can punish.
    let restored = p.a.restored().unwrap();
    assert_eq!(restored.their_commitment_tx().unwrap().txid(), p.a.ch.their_commitment_tx().unwrap().txid());
    // C1-i: the monitor had the revocation before the channel's state was
    // written, and its own store holds it.
    assert!(common::classify(&p.a, &p.b.ch.our_commitment_tx().unwrap().tx().clone()).is_some());
    assert!(p.a.monitor_store.monitor(p.a.monitor.config().clone(), p.a.signer.clone()).unwrap().can_punish(0));
}

#[test]
fn commands_that_would_break_the_close_or_the_limits_are_refused() {
    // No fee change once the close negotiation has begun.
    let mut p = Pair::open();
    p.a.ch.close().unwrap();
    p.pump();
    p.deliver_all();
    assert!(matches!(p.a.ch.update_fee(20_000), Err(ChannelError::WrongPhase { .. }) | Err(ChannelError::Closing)));
    // Routes and reasons that cannot fit in a message are refused.
    let mut p = Pair::open();
    let big = vec![0; paychan::channel::MAX_BLOB + 1];
    assert_eq!(
        p.a.ch.offer_htlc(msat(1_000_000), Preimage([1; 32]).hash(), height(5000), big),
        Err(ChannelError::TooLarge(paychan::channel::MAX_BLOB + 1))
    );
    // R3.6-d: an HTLC that would leave a commitment without any output.
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), Amount::from_sat(10_000));
    p.establish();
    // A holds 10 000 sat; the fee is 3 380; a 540-sat (dust) HTLC per step.
    let mut refused = None;
    for i in 0..20u8 {
        match p.a.ch.offer_htlc(msat(540_000), Preimage([i; 32]).hash(), height(5000), vec![]) {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(ChannelError::CannotAfford));
    p.settle();
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
    let c = p.a.ch.our_commitment_tx().unwrap();
    assert!(!c.tx().output.is_empty());
}

#[test]
fn crossing_adds_near_the_output_cap_never_fail_an_honest_peer() {
    use paychan::channel::MAX_HTLC_OUTPUTS_PER_SIDE;
    use paychan::tx::commitment::MAX_HTLC_OUTPUTS;
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), Amount::from_sat(4_000_000));
    p.establish();
    let r = Preimage([1; 32]);
    p.a.ch.offer_htlc(msat(1_500_000_000), r.hash(), height(5000), vec![]).unwrap();
    p.settle();
    p.b.ch.fulfill_htlc(0, r).unwrap();
    p.settle();
    // Both sides offer as many non-dust HTLCs as they can, at the same time:
    // neither has seen the other's adds when it makes its own.
    let hash = |i: u32, side: u8| sha256::Hash::hash(&[&i.to_le_bytes()[..], &[side]].concat());
    for (side, node) in [(0u8, &mut p.a), (1u8, &mut p.b)] {
        let mut accepted = 0;
        for i in 0..1200u32 {
            match node.ch.offer_htlc(msat(546_000), hash(i, side), height(5000), vec![]) {
                Ok(_) => accepted += 1,
                // R3.2-c: with 43-byte P2WSH outputs (ruling D4) a standard
                // commitment holds MAX_HTLC_OUTPUTS; each side may use half.
                Err(e) => assert_eq!(e, ChannelError::TooManyHtlcs),
            }
        }
        assert_eq!(accepted, MAX_HTLC_OUTPUTS_PER_SIDE);
        // A dust HTLC has no output, so it still fits.
        node.ch.offer_htlc(msat(545_000), hash(9999, side), height(5000), vec![]).unwrap();
    }
    p.pump();
    p.settle();
    // R3.2-c: the adds crossed near the cap, and no honest peer failed.
    assert!(p.a.failed().is_none() && p.b.failed().is_none(), "{:?} {:?}", p.a.failed(), p.b.failed());
    let c = p.a.ch.our_commitment_tx().unwrap();
    assert_eq!(c.tx().output.len(), 2 * MAX_HTLC_OUTPUTS_PER_SIDE + 2);
    const { assert!(2 * MAX_HTLC_OUTPUTS_PER_SIDE <= MAX_HTLC_OUTPUTS) };
}

#[test]
fn every_commitment_carries_its_number_for_either_side() {
    use paychan::tx::commitment::{commitment_number, obscuring_factor};
    let mut p = Pair::open();
    // D10: the factor comes from the funder's then the fundee's commit key.
    let factor = obscuring_factor(&common::pubkey(1), &common::pubkey(3));
    let mut b_held = vec![p.b.ch.our_commitment_tx().unwrap().tx().clone()];
    for i in 0..5u8 {
        offer(&mut p.a, 1_000_000, 10 + i);
        p.settle();
        for node in [&p.a, &p.b] {
            let ours = node.ch.our_commitment_tx().unwrap();
            assert_eq!(commitment_number(ours.tx(), factor), Some(node.ch.our_commitment_number()));
        }
        // What A holds as B's commitment is what B holds as its own.
        let theirs = p.a.ch.their_commitment_tx().unwrap();
        assert_eq!(commitment_number(theirs.tx(), factor), Some(p.b.ch.our_commitment_number()));
        b_held.push(p.b.ch.our_commitment_tx().unwrap().tx().clone());
    }
    // A's monitor reads the number of each of B's commitments on chain: the
    // revoked ones as revoked, the current one as B's current (C1-b).
    let current = p.b.ch.our_commitment_number();
    assert!(current >= 5);
    for tx in &b_held {
        let number = commitment_number(tx, factor).unwrap();
        let expected = if number == current {
            SpendKind::TheirCommitment { number }
        } else {
            SpendKind::RevokedCommitment { number }
        };
        assert_eq!(common::classify(&p.a, tx), Some(expected));
    }
}
