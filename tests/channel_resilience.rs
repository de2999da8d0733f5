//! The channel on real links and real processes: transports that drop with
//! messages in flight both ways, writes that pipeline and crashes between a
//! write and its confirmation, damaged storage, and the defects an
//! independent review found in each. Every test names the rule it keeps.

mod common;

use std::sync::Arc;

use bitcoin::{absolute, Amount};
use common::pair::{Dir, Packet, Pair};
use paychan::chain::MonitorUpdate;
use paychan::channel::{Channel, ChannelConfig, ChannelError, Event, Output, RestoreError, Side};
use paychan::wire::{self, Message, UpdateFee, UpdateFulfillHtlc, MAX_ERROR_TEXT};
use paychan::{MilliSats, Preimage};

fn height(h: u32) -> absolute::LockTime {
    absolute::LockTime::from_height(h).unwrap()
}

fn offer(p: &mut Pair, a: bool, msat: u64, secret: u8) -> u64 {
    let node = if a { &mut p.a } else { &mut p.b };
    let id =
        node.ch.offer_htlc(MilliSats::from_msat(msat), Preimage([secret; 32]).hash(), height(5000), vec![]).unwrap();
    p.pump();
    id
}

fn rule(event: Option<&Event>) -> Option<&'static str> {
    match event {
        Some(Event::ChannelFailed { reason, .. }) => reason.rule.map(|r| r.id()),
        _ => None,
    }
}

fn no_failure(p: &Pair) {
    assert!(p.a.failed().is_none(), "A failed: {:?}", p.a.failed());
    assert!(p.b.failed().is_none(), "B failed: {:?}", p.b.failed());
}

/// Everything `ch` emits until it is quiet, confirming every write.
fn drain(ch: &mut Channel) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = ch.poll_output() {
        if let Output::Persist(w) = &o {
            ch.handle_persisted(w.seq());
        }
        out.push(o);
    }
    out
}

// ---------------------------------------------------------------------------
// 1, 2: reconnection with traffic in flight both ways.
// ---------------------------------------------------------------------------

#[test]
fn crossed_open_channels_survive_a_drop() {
    // The two open_channels always cross. B processes A's, then the link
    // drops before A sees B's.
    let mut p = Pair::default_pair();
    p.deliver(Dir::AToB);
    p.reconnect();
    // B resends its open_channel with its original acknowledge (0), below
    // what its authenticate acknowledged (1): a retransmission, accepted
    // with its first header (R1.2-e), not a decreasing acknowledge (R1.2-c).
    p.establish();
    no_failure(&p);
}

#[test]
fn drops_with_messages_in_flight_both_ways_fail_nothing() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 50_000_000, 200);
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([200; 32])).unwrap();
    p.settle();
    for round in 0..6u8 {
        offer(&mut p, true, 3_000_000, round);
        offer(&mut p, false, 1_000_000, 100 + round);
        for node in [&mut p.a, &mut p.b] {
            if node.ch.can_commit() {
                node.ch.commit().unwrap();
            }
        }
        p.pump();
        // Part of each side's traffic arrives, then the link drops.
        for _ in 0..round % 3 {
            p.deliver(Dir::AToB);
            p.deliver(Dir::BToA);
        }
        // R6.3-a: losing the transport does not fail the channel; R1.2-a:
        // it continues on the next.
        p.reconnect();
        no_failure(&p);
    }
    p.settle();
    no_failure(&p);
    // R1.2-d: everything lost in flight was resent: both sides hold every
    // HTLC, once.
    assert_eq!(p.a.ch.our_commitment().offered_by(Side::Local), 6);
    assert_eq!(p.a.ch.our_commitment().offered_by(Side::Remote), 6);
    assert_eq!(p.a.ch.our_commitment_tx().unwrap().txid(), p.b.ch.their_commitment_tx().unwrap().txid());
}

#[test]
fn a_message_processed_before_a_drop_is_not_processed_again() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 2_000_000, 1);
    p.a.ch.commit().unwrap();
    p.pump();
    // B processes the add, but its write is still in flight when the link
    // drops: its authenticate may only acknowledge what is durable (R1.2-b).
    p.b.auto_persist = false;
    p.deliver(Dir::AToB);
    let before = p.b.ch.acknowledge();
    p.reconnect();
    assert_eq!(p.b.ch.acknowledge(), before);
    // A resends the add and the commit (R1.2-d); B recognises the add as
    // one it processed and skips it instead of adding id 0 twice (R3.2-e).
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    no_failure(&p);
    p.b.auto_persist = true;
    let version = p.b.persisted_version;
    p.b.ch.handle_persisted(version);
    p.pump();
    p.settle();
    no_failure(&p);
    assert!(p.b.ch.our_commitment().htlc(Side::Remote, id).is_some());
    assert_eq!(p.b.ch.our_commitment().offered_by(Side::Remote), 1);
}

#[test]
fn an_authenticate_below_an_earlier_acknowledge_fails() {
    let mut p = Pair::open();
    let seen = p.b.sent.last().map(|(ack, _)| *ack).unwrap();
    assert!(seen > 0);
    p.a_to_b.clear();
    p.b_to_a.clear();
    p.a.ch.new_transport();
    // R1.2-c: B once acknowledged `seen` of A's messages; an authenticate
    // claiming fewer is a peer going back on its word.
    p.a.ch.handle_authenticate(seen - 1);
    p.pump();
    assert_eq!(rule(p.a.failed()), Some("R1.2-c"));
}

#[test]
fn nothing_is_sent_on_a_new_transport_before_the_peers_authenticate() {
    let mut p = Pair::open();
    offer(&mut p, true, 1_000_000, 1);
    p.a_to_b.clear();
    p.a.ch.new_transport();
    // A command while the transport is being set up: its message waits.
    offer(&mut p, true, 1_000_000, 2);
    assert!(p.a_to_b.is_empty());
    // R1.2-d: the authenticate says where to start; both adds follow, in
    // order, with their original headers.
    p.a.ch.handle_authenticate(p.b.ch.acknowledge());
    p.pump();
    let ids: Vec<u64> = p
        .a_to_b
        .iter()
        .filter_map(|q| match q.message() {
            Message::UpdateAddHtlc(a) => Some(a.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [0, 1]);
}

// ---------------------------------------------------------------------------
// 3: outputs of writes that were never confirmed.
// ---------------------------------------------------------------------------

#[test]
fn outputs_of_unconfirmed_writes_come_back_after_a_crash() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 5_000_000, 9);
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([9; 32])).unwrap();
    p.b.ch.commit().unwrap();
    p.pump();
    // A's store takes writes but confirms none: B's fulfill (R reported),
    // B's commit, then a block, three writes in flight.
    p.a.auto_persist = false;
    p.deliver(Dir::BToA);
    p.deliver(Dir::BToA);
    p.a.ch.handle_block(200, 1_700_000_000);
    p.pump();
    assert!(!p.a.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { .. })), "nothing released yet");
    // A crashes; its store holds the newest write (the block's), which
    // landed though it was never confirmed.
    let mut restored = p.a.restored().unwrap();
    let out = drain(&mut restored);
    // R6.2-a: R still reaches the application, though it came with an
    // earlier write than the one restored.
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::HtlcFulfilled { preimage, .. }) if *preimage == Preimage([9; 32]))));
}

#[test]
fn the_monitor_has_a_revocation_before_the_state_that_holds_it_is_written() {
    let mut p = Pair::open();
    offer(&mut p, true, 5_000_000, 9);
    p.a.ch.commit().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    // B's revocation reaches A, whose writes are not confirmed.
    p.a.auto_persist = false;
    let (ack, message) = p.b_to_a.pop_front().unwrap().into_parts();
    p.a.ch.handle_message(message, ack);
    let out: Vec<Output> = std::iter::from_fn(|| p.a.ch.poll_output()).collect();
    // C1-i, R3-a: the monitor's update comes out before the state that
    // holds the revocation, so the caller stores it first; a crash after
    // the channel's write can never leave the monitor without it.
    let update = out.iter().position(|o| matches!(o, Output::Monitor(MonitorUpdate::Revoked { number: 0, .. })));
    let state = out.iter().position(|o| matches!(o, Output::Persist(_)));
    assert!(update.unwrap() < state.unwrap(), "{out:?}");
    // Nothing else is released while the state is not durable.
    assert!(!out.iter().any(|o| matches!(o, Output::Send { .. } | Output::Event(_))));
}

// ---------------------------------------------------------------------------
// 4: removals of HTLCs in no commitment.
// ---------------------------------------------------------------------------

#[test]
fn r_is_refused_for_an_htlc_in_no_commitment() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 2_000_000, 4);
    p.deliver(Dir::AToB);
    // The HTLC is only staged at B: in neither side's commitment.
    assert!(p.b.ch.our_staged().htlc(Side::Remote, id).is_some());
    // R3.3-c: our own command is refused, and changes nothing.
    assert_eq!(p.b.ch.fulfill_htlc(id, Preimage([4; 32])), Err(ChannelError::NotCommitted(id)));
    assert_eq!(p.b.ch.fail_htlc(id, vec![]), Err(ChannelError::NotCommitted(id)));
    // R3.3-c: the peer's fulfill fails the connection, and R is not
    // reported for an HTLC no commitment holds.
    let ack = p.b.ch.acknowledge();
    p.a.ch.handle_message(Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id, r: Preimage([4; 32]) }), ack);
    p.pump();
    assert_eq!(rule(p.a.failed()), Some("R3.3-c"));
    assert!(!p.a.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { .. })));
}

#[test]
fn r_is_revealed_only_once_no_commitment_lacks_the_htlc() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 2_000_000, 4);
    p.a.ch.commit().unwrap();
    p.pump();
    p.deliver_all();
    // B's commitment holds the HTLC, A's does not yet: A could still close
    // on a commitment without it, so B keeps R (and may fail it, R3.3-c).
    assert!(p.b.ch.our_commitment().htlc(Side::Remote, id).is_some());
    assert_eq!(p.b.ch.fulfill_htlc(id, Preimage([4; 32])), Err(ChannelError::NotCommitted(id)));
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([4; 32])).unwrap();
    p.settle();
    no_failure(&p);
}

// ---------------------------------------------------------------------------
// 5: fees and the close.
// ---------------------------------------------------------------------------

#[test]
fn fees_freeze_once_clearing_begins() {
    let mut p = Pair::open();
    // B changes its fee while A's close_clearing is on its way: the two
    // cross, and B's change is taken (it was sent before B knew).
    p.a.ch.close().unwrap();
    p.b.ch.update_fee(15_000).unwrap();
    p.pump();
    // R3.4-a, R4.2-a (ADR 0004): once clearing has begun neither side
    // changes its fee, so no fee change can cross a close_signature.
    assert!(matches!(p.a.ch.update_fee(20_000), Err(ChannelError::WrongPhase { command: "update_fee", .. })));
    assert!(!p.a.ch.handle_fee_estimate(90_000).unwrap(), "no automatic raise while clearing");
    p.settle();
    no_failure(&p);
    let closes: Vec<_> = [&p.a, &p.b]
        .iter()
        .map(|n| {
            n.events.iter().find_map(|e| match e {
                Event::ChannelClosed { tx } => Some(tx.compute_txid()),
                _ => None,
            })
        })
        .collect();
    assert!(closes[0].is_some() && closes[0] == closes[1], "{closes:?}");
}

#[test]
fn an_update_fee_during_the_negotiation_fails_the_peer() {
    let mut p = Pair::open();
    p.b.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::BToA);
    // A answered with its close_clearing and, clearing complete, opened the
    // negotiation. R4.2-a: a fee change now could not be committed before
    // the close.
    let ack = p.b.ch.acknowledge();
    p.a.ch.handle_message(Message::UpdateFee(UpdateFee { fee_rate: 12_000 }), ack);
    p.pump();
    assert_eq!(rule(p.a.failed()), Some("R4.2-a"));
}

#[test]
fn crossing_close_proposals_two_satoshis_apart_end_on_one_close() {
    // A opens at 1680 sat, B at 1682: no even fee lies strictly between.
    let a = ChannelConfig { close_fee_rate: 5_000, ..ChannelConfig::default() };
    let b = ChannelConfig { close_fee_rate: 5_006, ..ChannelConfig::default() };
    let mut p = Pair::new(a, b, Amount::from_sat(1_000_000));
    p.establish();
    // Both start closing at once; their close_signatures cross.
    p.a.ch.close().unwrap();
    p.b.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::BToA);
    let proposals = |q: &std::collections::VecDeque<Packet>| {
        q.iter()
            .filter_map(|q| match q.message() {
                Message::CloseSignature(c) => Some(c.close_fee.to_sat()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!((proposals(&p.a_to_b), proposals(&p.b_to_a)), (vec![1680], vec![1682]));
    p.deliver_all();
    no_failure(&p);
    // R4.2-e, R4.2-f, D5: one close transaction, on both sides.
    let closed = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ChannelClosed { tx } => Some(tx.compute_txid()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let (ca, cb) = (closed(&p.a.events), closed(&p.b.events));
    assert_eq!(ca.len(), 1);
    assert_eq!(ca, cb);
    let all: Vec<_> =
        p.a.broadcasts
            .iter()
            .chain(&p.b.broadcasts)
            .filter(|t| t.input[0].previous_output == p.anchor())
            .map(|t| t.compute_txid())
            .collect();
    assert!(all.iter().all(|t| *t == ca[0]), "a conflicting close was broadcast: {all:?}");
}

// ---------------------------------------------------------------------------
// 8, 9: fee estimates and the open_complete timeout.
// ---------------------------------------------------------------------------

#[test]
fn the_automatic_fee_raise_stays_within_what_an_identical_peer_accepts() {
    let mut p = Pair::open();
    // A fee spike: twice the estimate would be 120,000, above the default
    // maximum both nodes accept.
    for node in [&mut p.a, &mut p.b] {
        let _ = node.ch.handle_fee_estimate(60_000).unwrap();
    }
    p.pump();
    p.settle();
    // R3.4-c: the fee was raised; R3.4-b: to no more than the peer accepts.
    no_failure(&p);
    assert_eq!(p.a.ch.our_commitment().fee_rate(), ChannelConfig::default().max_fee_rate);
}

#[test]
fn the_open_complete_timeout_counts_from_the_first_block() {
    let mut p = Pair::default_pair();
    p.deliver_all();
    // The anchor's depth is reported before any block: A sends
    // open_complete while its height is still unknown.
    let anchor = p.a.anchor.clone().unwrap();
    p.a.ch.handle_anchor_depth(&anchor, 6);
    p.pump();
    assert!(p.a_to_b.iter().any(|q| matches!(q.message(), Message::OpenComplete)));
    p.a.ch.handle_block(800_000, 1_700_000_000);
    p.pump();
    // R2.4-c: the wait starts at the first block, not at height 0.
    assert!(p.a.failed().is_none());
    p.a.ch.handle_block(800_143, 1_700_100_000);
    p.pump();
    assert!(p.a.failed().is_none());
    p.a.ch.handle_block(800_144, 1_700_100_600);
    p.pump();
    assert_eq!(rule(p.a.failed()), Some("R2.4-c"));
}

// ---------------------------------------------------------------------------
// 10: damaged and inconsistent stored state.
// ---------------------------------------------------------------------------

/// A state with HTLCs both ways, a fulfilled one, and a commitment of B's
/// awaiting revocation; and B's revocation, not yet delivered.
fn rich_state() -> (Pair, Vec<u8>, (u64, Message)) {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 5_000_000, 1);
    offer(&mut p, true, 300_000, 2);
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).unwrap();
    p.settle();
    offer(&mut p, false, 1_000_000, 3);
    p.settle();
    offer(&mut p, true, 2_000_000, 5);
    p.a.ch.commit().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    let revocation = p.b_to_a.pop_front().unwrap().into_parts();
    assert!(matches!(revocation.1, Message::UpdateRevocation(_)));
    let state = p.a.ch.snapshot();
    (p, state, revocation)
}

#[test]
fn a_flipped_byte_anywhere_is_refused() {
    let (p, state, _) = rich_state();
    assert!(Channel::restore(&state, [], p.a.signer.clone()).is_ok());
    for i in 0..state.len() {
        let mut bad = state.clone();
        bad[i] ^= 0x10;
        assert!(Channel::restore(&bad, [], p.a.signer.clone()).is_err(), "byte {i}");
    }
}

#[test]
fn no_stored_byte_can_make_the_channel_panic() {
    let (p, state, (ack, revocation)) = rich_state();
    each_accepted_damage(&state, &p.a.signer, |mut ch| {
        // Whatever restore accepts works: it takes the revocation it was
        // waiting for (the old code panicked rebuilding a damaged
        // commitment there), then fails and broadcasts.
        ch.new_transport();
        ch.handle_authenticate(0);
        ch.handle_message(revocation.clone(), ack);
        ch.handle_block(900_000, 1_800_000_000);
        ch.fail("test");
        drain(&mut ch);
    });
}

/// Runs `f` on each channel restore accepts from `state` with one bit of
/// one byte flipped (and resealed, as a buggy writer would leave it).
fn each_accepted_damage(state: &[u8], signer: &Arc<paychan::tx::InMemorySigner>, mut f: impl FnMut(Channel)) {
    for i in 0..state.len() {
        for bit in [0x01, 0x80] {
            let mut bad = state.to_vec();
            bad[i] ^= bit;
            if let Ok(mut ch) = Channel::restore(&common::resealed(bad), [], signer.clone()) {
                drain(&mut ch);
                f(ch);
            }
        }
    }
}

/// A state holding a staged removal (B's fulfill, not yet in its
/// commitment), damaged anywhere: whatever restore accepts takes an add
/// from a peer that has processed everything B sent, which is checked
/// against the totals the peer knew, computed from the HTLC the removal
/// keeps. A removal keeping another HTLC than the one its view holds is
/// refused at restore (it made the totals wrong, and a debug build panic).
#[test]
fn no_stored_byte_of_a_staged_removal_can_make_the_channel_panic() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 5_000_000, 1);
    offer(&mut p, true, 300_000, 2);
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).unwrap();
    p.pump();
    let state = p.b.ch.snapshot();
    // A processes the fulfill, then adds: its add acknowledges all B sent.
    p.deliver(Dir::BToA);
    offer(&mut p, true, 700_000, 3);
    p.pump();
    let add = p.a_to_b.iter().find(|q| matches!(q.message(), Message::UpdateAddHtlc(_))).cloned().unwrap().into_parts();
    // It acknowledges B's fulfill, the last message B sent.
    assert!(add.0 > 0);
    // Undamaged, the restored channel takes it.
    let mut ch = Channel::restore(&state, [], p.b.signer.clone()).unwrap();
    drain(&mut ch);
    ch.new_transport();
    ch.handle_authenticate(add.0);
    ch.handle_message(add.1.clone(), add.0);
    let out = drain(&mut ch);
    assert!(!out.iter().any(|o| matches!(o, Output::Event(Event::ChannelFailed { .. }))), "{out:?}");
    each_accepted_damage(&state, &p.b.signer, |mut ch| {
        ch.new_transport();
        ch.handle_authenticate(add.0);
        ch.handle_message(add.1.clone(), add.0);
        drain(&mut ch);
    });
}

#[test]
fn a_state_whose_balances_do_not_add_up_is_refused() {
    let (p, state, _) = rich_state();
    // A's balance in its current commitment, as the state encodes it
    // (big-endian millisatoshis), one satoshi higher: value from nowhere.
    let to_local = p.a.ch.our_commitment().balance(Side::Local).to_msat();
    let at = state.windows(8).position(|w| w == to_local.to_be_bytes()).expect("the balance is in the state");
    let mut bad = state.clone();
    bad[at..at + 8].copy_from_slice(&(to_local + 1000).to_be_bytes());
    assert!(matches!(
        Channel::restore(&common::resealed(bad), [], p.a.signer.clone()),
        Err(RestoreError::Inconsistent(_))
    ));
}

// ---------------------------------------------------------------------------
// 11: bounded texts.
// ---------------------------------------------------------------------------

#[test]
fn an_oversized_error_text_is_cut_and_the_state_still_restores() {
    let mut p = Pair::open();
    p.a.ch.fail(&"x".repeat(100_000));
    p.pump();
    // R6.3-c: the error says why, within the codec's limits.
    let sent = p.a.sent_error().expect("an error was sent");
    assert_eq!(sent.len(), MAX_ERROR_TEXT);
    // The state with that message unacknowledged restores and resends it.
    let mut restored = p.a.restored().unwrap();
    drain(&mut restored);
    restored.new_transport();
    restored.handle_authenticate(p.b.ch.acknowledge());
    let resent: Vec<Output> = drain(&mut restored);
    let error = resent.iter().find_map(|o| match o {
        Output::Send { message: Message::Error(e), .. } => Some(e.clone()),
        _ => None,
    });
    assert_eq!(error.and_then(|e| e.problem).map(|t| t.len()), Some(MAX_ERROR_TEXT));
    assert!(wire::encode(&Message::Error(wire::ErrorMessage { problem: Some(sent) })).is_ok());
}

// ---------------------------------------------------------------------------
// 13, 14: relay floors in the configuration.
// ---------------------------------------------------------------------------

#[test]
fn configurations_below_the_relay_floor_are_refused() {
    let signer = || Arc::new(paychan::tx::InMemorySigner::new(common::secret(1), common::secret(2)));
    let bad = [
        // The old default: commitments with 2,242 or more HTLC outputs
        // would pay less than 1 sat/vB.
        (ChannelConfig { min_fee_rate: 1_340, ..ChannelConfig::default() }, "min_fee_rate"),
        (ChannelConfig { close_fee_rate: 999, ..ChannelConfig::default() }, "close_fee_rate"),
        (ChannelConfig { fee_rate: 1_000, ..ChannelConfig::default() }, "fee_rate"),
        (ChannelConfig { min_relay_fee_rate: 0, ..ChannelConfig::default() }, "min_relay_fee_rate"),
    ];
    for (config, field) in bad {
        assert_eq!(config.validate(), Err(ChannelError::InvalidConfig(field)));
        assert!(matches!(
            Channel::new_fundee(config, signer(), [1; 32]),
            Err(ChannelError::InvalidConfig(f)) if f == field
        ));
    }
    assert_eq!(ChannelConfig::default().validate(), Ok(()));
    // A node whose relay floor is lower may choose lower rates.
    let low = ChannelConfig { min_relay_fee_rate: 100, min_fee_rate: 135, close_fee_rate: 100, ..Default::default() };
    assert_eq!(low.validate(), Ok(()));
}

#[test]
fn a_close_negotiated_with_a_lower_floor_peer_ends_relayable() {
    // B relays at 0.1 sat/vB and opens the negotiation far below A's floor.
    let b = ChannelConfig { min_relay_fee_rate: 100, min_fee_rate: 135, close_fee_rate: 100, ..Default::default() };
    let mut p = Pair::new(ChannelConfig::default(), b, Amount::from_sat(1_000_000));
    p.establish();
    p.b.ch.close().unwrap();
    p.pump();
    p.deliver_all();
    no_failure(&p);
    let close = p.a.events.iter().find_map(|e| match e {
        Event::ChannelClosed { tx } => Some(tx.clone()),
        _ => None,
    });
    let close = close.expect("the two agree");
    let fee = Amount::from_sat(1_000_000) - close.output.iter().map(|o| o.value).sum::<Amount>();
    // The agreed close pays A's relay floor: a node relays it.
    assert!(fee >= paychan::fees::DEFAULT_MIN_CLOSE_FEE, "{fee}");
    assert!(matches!(p.b.events.last(), Some(Event::ChannelClosed { .. })));
}

// ---------------------------------------------------------------------------
// Found by review: the acknowledge of a new transport, failed states that
// restore, a preimage that arrives after the failure.
// ---------------------------------------------------------------------------

#[test]
fn the_acknowledge_of_a_new_transport_stays_until_the_peers_authenticate() {
    let mut p = Pair::open();
    offer(&mut p, true, 2_000_000, 1);
    p.a.ch.commit().unwrap();
    p.pump();
    // B processes both messages, but its writes are still in flight.
    p.b.auto_persist = false;
    p.deliver(Dir::AToB);
    p.deliver(Dir::AToB);
    p.a_to_b.clear();
    p.b_to_a.clear();
    let ack = p.b.ch.new_transport();
    // The writes are confirmed while the authenticate is being sent: the
    // acknowledge B reports must stay the one its numbering starts from
    // (R1.2-b), or A's resent messages would be taken for duplicates.
    let version = p.b.persisted_version;
    p.b.ch.handle_persisted(version);
    assert_eq!(p.b.ch.acknowledge(), ack);
    p.b.auto_persist = true;
    p.pump();
    let a_ack = p.a.ch.new_transport();
    p.a.ch.handle_authenticate(p.b.ch.acknowledge());
    p.b.ch.handle_authenticate(a_ack);
    p.pump();
    p.settle();
    no_failure(&p);
    assert_eq!(p.b.ch.our_commitment().offered_by(Side::Remote), 1);
}

#[test]
fn an_anchor_too_small_for_the_peers_fee_rate_fails_without_blaming_the_peer() {
    let a = ChannelConfig { min_anchor: Amount::from_sat(10_000), ..ChannelConfig::default() };
    // R2.2-b: our own min_anchor is checked when the channel is made...
    let signer = Arc::new(paychan::tx::InMemorySigner::new(common::secret(1), common::secret(2)));
    assert_eq!(
        Channel::new_funder(a.clone(), signer, [1; 32], Amount::from_sat(9_999)).err(),
        Some(ChannelError::BadAnchorAmount(Amount::from_sat(9_999)))
    );
    // ...and the peer's acceptable initial fee rate, on open_channel: the
    // anchor must pay both initial commitments' fees.
    let b = ChannelConfig { fee_rate: 90_000, ..ChannelConfig::default() };
    let mut p = Pair::new(a, b, Amount::from_sat(20_000));
    p.deliver(Dir::BToA);
    match p.a.failed() {
        Some(Event::ChannelFailed { reason, .. }) => {
            assert_eq!(reason.rule.map(|r| r.id()), Some("R2.2-b"));
            assert_eq!(reason.origin, paychan::channel::FailOrigin::Local);
        }
        other => panic!("{other:?}"),
    }
    // The failed state restores.
    assert!(p.a.restored().unwrap().is_terminal());
}

#[test]
fn a_failed_channel_still_learns_r_from_a_late_fulfill() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 5_000_000, 6);
    p.settle();
    p.b.ch.fulfill_htlc(id, Preimage([6; 32])).unwrap();
    p.pump();
    // A fails before B's fulfill arrives (its deadline, say).
    p.a.ch.fail("deadline");
    p.pump();
    p.deliver(Dir::BToA);
    // R6.2-a: R reaches the application at once, not only from the chain.
    assert!(p.a.events.iter().any(|e| matches!(e,
        Event::HtlcFulfilled { preimage, .. } if *preimage == Preimage([6; 32]))));
}

#[test]
fn a_message_before_the_peers_authenticate_fails_and_one_without_a_transport_waits() {
    let mut p = Pair::open();
    let id = offer(&mut p, true, 1_000_000, 3);
    let add = p.a_to_b.pop_front().unwrap().into_parts();
    // Restored, with no transport yet: the message is not taken (it could
    // not be numbered) and the peer will resend it.
    let mut restored = p.b.restored().unwrap();
    drain(&mut restored);
    restored.handle_message(add.1.clone(), add.0);
    assert!(drain(&mut restored).is_empty());
    assert!(restored.our_staged().htlc(Side::Remote, id).is_none());
    // R1.2-a: on a new transport the peer's authenticate comes first.
    restored.new_transport();
    restored.handle_message(add.1, add.0);
    let failed = drain(&mut restored).into_iter().find_map(|o| match o {
        Output::Event(Event::ChannelFailed { reason, .. }) => reason.rule.map(|r| r.id()),
        _ => None,
    });
    assert_eq!(failed, Some("R1.2-a"));
}
