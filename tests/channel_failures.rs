//! Every "fail the connection" rule of sections 2 to 4, and the broadcast
//! section 6.3 chooses for each: the peer's message is injected, and the
//! test checks the `error` sent, the event, and what was broadcast.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::{absolute, Amount, Txid};
use common::chain::verify_input;
use common::pair::{Dir, Node, Pair};
use common::{pubkey, sig};
use paychan::channel::{ChannelConfig, Event, FailBroadcast, FailOrigin};
use paychan::wire::{self, Message};
use paychan::{HtlcMsat, MilliSats, Preimage};

fn height(h: u32) -> absolute::LockTime {
    absolute::LockTime::from_height(h).unwrap()
}

/// A's commit key is secret(1), B's secret(3): a signature by the right key
/// over the wrong digest.
fn wrong_sig_by_a() -> bitcoin::secp256k1::ecdsa::Signature {
    sig(1, [0x66; 32])
}
fn wrong_sig_by_b() -> bitcoin::secp256k1::ecdsa::Signature {
    sig(3, [0x66; 32])
}

/// Hands `node` a message as if from its peer, acknowledging everything the
/// node sent.
fn inject(p: &mut Pair, to_a: bool, msg: Message) {
    let node = if to_a { &mut p.a } else { &mut p.b };
    let ack = node.sent.len() as u64;
    node.ch.handle_message(msg, ack);
    p.pump();
}

/// Asserts `node` failed for `rule`, sent an informative error (R6.3-c) and
/// broadcast as `broadcast` says; returns the broadcasts.
fn failed(node: &Node, rule: &str, broadcast: FailBroadcast) -> Vec<bitcoin::Transaction> {
    let Some(Event::ChannelFailed { reason, broadcast: got }) = node.failed() else {
        panic!("{} did not fail (expected {rule}); events {:?}", node.name, node.events)
    };
    assert_eq!(reason.rule.map(paychan::rules::Rule::id), Some(rule), "{}: {reason}", node.name);
    assert_eq!(*got, broadcast, "{}: broadcast for {rule}", node.name);
    if reason.origin == FailOrigin::PeerViolation {
        // R6.3-c: an informative error went out.
        let problem = node.sent_error().expect("an error message was sent");
        assert!(problem.contains(&reason.problem), "{problem}");
    }
    assert!(node.ch.is_terminal());
    // Every failed state the channel wrote restores (and stays failed).
    let restored = node.restored().unwrap_or_else(|e| panic!("{}: the failed state does not restore: {e}", node.name));
    assert!(restored.is_terminal());
    node.broadcasts.clone()
}

fn config(f: impl FnOnce(&mut ChannelConfig)) -> ChannelConfig {
    let mut c = ChannelConfig::default();
    f(&mut c);
    c
}

/// Delivers the first `n` messages of establishment alternately.
fn opening(cfg_b: ChannelConfig) -> Pair {
    let mut p = Pair::new(ChannelConfig::default(), cfg_b, common::pair::CAPACITY);
    p.block(100);
    p
}

// ---------------------------------------------------------------------------
// Section 2.
// ---------------------------------------------------------------------------

#[test]
fn open_channel_terms_are_checked() {
    let cases: [(&str, ChannelConfig); 5] = [
        ("R2.1-b", config(|c| c.delay = paychan::Delay::Blocks(3000))),
        ("R2.1-b", config(|c| c.delay = paychan::Delay::Seconds(30 * 24 * 3600))),
        ("R2.1-c", config(|c| c.min_depth = 500)),
        // A peer configured for a lower relay floor than ours...
        (
            "R2.1-d",
            config(|c| {
                c.min_relay_fee_rate = 100;
                c.min_fee_rate = 500;
                c.fee_rate = 999;
            }),
        ),
        // ...or for higher fees than we accept.
        (
            "R2.1-d",
            config(|c| {
                c.max_fee_rate = 600_000;
                c.fee_rate = 500_001;
            }),
        ),
    ];
    for (rule, cfg_b) in cases {
        let mut p = opening(cfg_b);
        p.deliver(Dir::BToA);
        // R6.3-d: no anchor was broadcast, so nothing is.
        let b = failed(&p.a, rule, FailBroadcast::Nothing);
        assert!(b.is_empty());
        assert!(p.a.anchor.is_none(), "{rule}: no anchor requested");
    }
}

#[test]
fn anchor_offer_must_match_roles() {
    let mut p = opening(ChannelConfig::default());
    // A (WILL_CREATE_ANCHOR) receives an open_channel that also says WILL.
    let Message::OpenChannel(mut open) = p.b.sent[0].1.clone() else { unreachable!() };
    open.anch = wire::AnchorOffer::WillCreate;
    inject(&mut p, true, Message::OpenChannel(open));
    // R2.1-a
    failed(&p.a, "R2.1-a", FailBroadcast::Nothing);
}

#[test]
fn malformed_messages_fail_with_their_rule() {
    // R2.1-e: an open_channel with an uncompressed key does not decode.
    let Message::OpenChannel(open) = Pair::default_pair().b.sent[0].1.clone() else { unreachable!() };
    let mut bytes = wire::encode(&Message::OpenChannel(open)).unwrap();
    let key = pubkey(3).to_bytes();
    let at = bytes.windows(33).position(|w| w == key).unwrap();
    bytes[at] = 0x04; // not a compressed-key prefix
    let err = wire::decode(&bytes).unwrap_err();
    for (rule, err) in [
        ("R2.1-e", err),
        ("R1-b", wire::decode(&[0x52, 0x00]).unwrap_err()),
        ("R1-d", wire::decode(&[0x42, 0x00]).unwrap_err()),
    ] {
        let mut p = opening(ChannelConfig::default());
        p.a.ch.handle_malformed(&err);
        p.pump();
        failed(&p.a, rule, FailBroadcast::Nothing);
    }
}

#[test]
fn establishment_messages_out_of_order_fail() {
    // R2-a: B waits for open_channel; an open_complete is out of order.
    let mut p = opening(ChannelConfig::default());
    inject(&mut p, false, Message::OpenComplete);
    failed(&p.b, "R2-a", FailBroadcast::Nothing);
    // R2.4-b: an update before establishment ends.
    let mut p = opening(ChannelConfig::default());
    p.deliver(Dir::AToB);
    let add = wire::UpdateAddHtlc {
        id: 0,
        amount: HtlcMsat::from_msat(1000),
        r_hash: Preimage([1; 32]).hash(),
        expiry: height(1000),
        route: vec![],
    };
    inject(&mut p, false, Message::UpdateAddHtlc(add));
    failed(&p.b, "R2.4-b", FailBroadcast::Nothing);
    // R2-a: an establishment message during normal operation.
    let mut p = Pair::open();
    inject(&mut p, true, Message::OpenComplete);
    failed(&p.a, "R2-a", FailBroadcast::CommitmentNoHtlcs);
    // R2-a: the funder never receives open_anchor.
    let mut p = opening(ChannelConfig::default());
    p.deliver(Dir::BToA);
    let anchor = wire::OpenAnchor {
        txid: Txid::all_zeros(),
        output_index: 0,
        amount: Amount::from_sat(100_000),
        commit_sig: wrong_sig_by_b(),
    };
    inject(&mut p, true, Message::OpenAnchor(Box::new(anchor)));
    failed(&p.a, "R2-a", FailBroadcast::Nothing);
}

/// B after both open_channels, before open_anchor.
fn b_awaiting_anchor() -> Pair {
    let mut p = opening(ChannelConfig::default());
    p.deliver(Dir::AToB);
    p.deliver(Dir::BToA);
    p
}

fn open_anchor_from_a(p: &Pair) -> wire::OpenAnchor {
    match p.a_to_b.front().map(|q| q.message()) {
        Some(Message::OpenAnchor(a)) => (**a).clone(),
        other => panic!("expected open_anchor, got {other:?}"),
    }
}

#[test]
fn open_anchor_is_checked() {
    // R2.2-b: too small for the initial commitments' fees.
    let mut p = b_awaiting_anchor();
    let mut a = open_anchor_from_a(&p);
    a.amount = Amount::from_sat(3000);
    inject(&mut p, false, Message::OpenAnchor(Box::new(a)));
    failed(&p.b, "R2.2-b", FailBroadcast::Nothing);
    // R2.2-c: above 4294967 sat.
    let mut p = b_awaiting_anchor();
    let mut a = open_anchor_from_a(&p);
    a.amount = Amount::from_sat(4_294_968);
    inject(&mut p, false, Message::OpenAnchor(Box::new(a)));
    failed(&p.b, "R2.2-c", FailBroadcast::Nothing);
    // R2.2-d: commit_sig does not sign B's initial commitment. B has signed
    // nothing, so no anchor can be on chain (R6.3-d).
    let mut p = b_awaiting_anchor();
    let mut a = open_anchor_from_a(&p);
    a.commit_sig = wrong_sig_by_a();
    inject(&mut p, false, Message::OpenAnchor(Box::new(a)));
    failed(&p.b, "R2.2-d", FailBroadcast::Nothing);
    assert!(!p.b.sent.iter().any(|(_, m)| matches!(m, Message::OpenCommitSig(_))));
}

#[test]
fn open_commit_sig_is_checked() {
    let mut p = b_awaiting_anchor();
    p.deliver(Dir::AToB);
    // R2.3-a: a signature that does not sign A's initial commitment.
    p.b_to_a.clear();
    inject(&mut p, true, Message::OpenCommitSig(wire::OpenCommitSig { sig: wrong_sig_by_b() }));
    // R2.2-a, R6.3-d: the anchor was never broadcast, so nothing is.
    failed(&p.a, "R2.3-a", FailBroadcast::Nothing);
    assert!(p.a.broadcasts.is_empty());
}

#[test]
fn open_complete_timeout() {
    let mut p = opening(ChannelConfig::default());
    p.deliver_all();
    p.confirm(3);
    // B's open_complete is lost.
    p.deliver(Dir::AToB);
    p.b_to_a.clear();
    p.block(100 + 143);
    assert!(p.a.failed().is_none());
    // R2.4-c: 144 blocks after sending open_complete, A gives up. No HTLC
    // ever existed: A broadcasts its latest commitment (R6.3-e).
    p.block(100 + 144);
    let txs = failed(&p.a, "R2.4-c", FailBroadcast::CommitmentNoHtlcs);
    let anchor = p.a.anchor.clone().unwrap();
    assert_eq!(txs.len(), 2, "the anchor, then the commitment");
    verify_input(&txs[1], 0, &anchor.output[0]).expect("a valid commitment spending the anchor");
}

// ---------------------------------------------------------------------------
// Section 3.
// ---------------------------------------------------------------------------

fn add(id: u64, amount: u32, secret: u8) -> Message {
    Message::UpdateAddHtlc(wire::UpdateAddHtlc {
        id,
        amount: HtlcMsat::from_msat(amount),
        r_hash: Preimage([secret; 32]).hash(),
        expiry: height(5000),
        route: vec![],
    })
}

#[test]
fn bad_htlc_offers_fail_the_connection() {
    // R3.2-b: amount 0.
    let mut p = Pair::open();
    inject(&mut p, false, add(0, 0, 1));
    // R6.3-e: no HTLC was ever created: the latest commitment is broadcast.
    failed(&p.b, "R3.2-b", FailBroadcast::CommitmentNoHtlcs);

    // R3.2-a: more than A can pay.
    let mut p = Pair::open();
    inject(&mut p, false, add(0, 999_000_000, 1));
    failed(&p.b, "R3.2-a", FailBroadcast::CommitmentNoHtlcs);

    // R3.2-a, R3.6-e: B, with nothing, cannot offer either.
    let mut p = Pair::open();
    inject(&mut p, true, add(0, 1, 1));
    failed(&p.a, "R3.2-a", FailBroadcast::CommitmentNoHtlcs);

    // R3.2-e: an id already in the staged commitment.
    let mut p = Pair::open();
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    inject(&mut p, false, add(0, 1_000_000, 2));
    // R6.3-g: an HTLC existed: the latest commitment is signed and broadcast.
    failed(&p.b, "R3.2-e", FailBroadcast::Commitment);

    // R3.2-c: more HTLCs than the receiver allows.
    let mut p = Pair::new(ChannelConfig::default(), config(|c| c.max_htlcs = 2), common::pair::CAPACITY);
    p.establish();
    for i in 0..3u8 {
        p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([i; 32]).hash(), height(5000), vec![]).unwrap();
    }
    p.pump();
    p.deliver_all();
    failed(&p.b, "R3.2-c", FailBroadcast::Commitment);
}

/// An open pair with A's HTLC 0 (R = [1; 32]) committed on both sides.
fn with_htlc() -> Pair {
    let mut p = Pair::open();
    p.a.ch.offer_htlc(MilliSats::from_msat(5_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.settle();
    p
}

#[test]
fn bad_removals_fail_the_connection() {
    // R3.3-c: no such HTLC.
    let mut p = with_htlc();
    inject(&mut p, true, Message::UpdateFulfillHtlc(wire::UpdateFulfillHtlc { id: 42, r: Preimage([1; 32]) }));
    failed(&p.a, "R3.3-c", FailBroadcast::Commitment);
    let mut p = with_htlc();
    inject(&mut p, true, Message::UpdateFailHtlc(wire::UpdateFailHtlc { id: 42, reason: vec![] }));
    failed(&p.a, "R3.3-c", FailBroadcast::Commitment);
    // R3.3-a: B cannot remove an HTLC it offered itself: from A's side, B's
    // HTLC ids are not in the id space B's removals refer to.
    let mut p = with_htlc();
    inject(&mut p, false, Message::UpdateFailHtlc(wire::UpdateFailHtlc { id: 0, reason: vec![] }));
    failed(&p.b, "R3.3-c", FailBroadcast::Commitment);
    // R3.3-d: the wrong R.
    let mut p = with_htlc();
    inject(&mut p, true, Message::UpdateFulfillHtlc(wire::UpdateFulfillHtlc { id: 0, r: Preimage([2; 32]) }));
    failed(&p.a, "R3.3-d", FailBroadcast::Commitment);
}

#[test]
fn fee_too_high_fails() {
    let mut p = Pair::open();
    inject(&mut p, true, Message::UpdateFee(wire::UpdateFee { fee_rate: 500_001 }));
    // R3.4-b
    failed(&p.a, "R3.4-b", FailBroadcast::CommitmentNoHtlcs);

    // R3.4-b: within the configured maximum, but so high for this small
    // channel that every output of B's commitment would be dust.
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), Amount::from_sat(10_000));
    p.establish();
    inject(&mut p, true, Message::UpdateFee(wire::UpdateFee { fee_rate: 30_000 }));
    failed(&p.a, "R3.4-b", FailBroadcast::CommitmentNoHtlcs);
    // Our own such rate is refused as a caller mistake.
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), Amount::from_sat(10_000));
    p.establish();
    assert_eq!(p.a.ch.update_fee(30_000), Err(paychan::channel::ChannelError::BadFeeRate));
    assert!(p.a.ch.is_open());
}

#[test]
fn bad_commits_fail() {
    // R3.5-a: update_commit without any staged update.
    let mut p = Pair::open();
    inject(&mut p, true, Message::UpdateCommit(wire::UpdateCommit { sig: wrong_sig_by_b() }));
    failed(&p.a, "R3.5-a", FailBroadcast::CommitmentNoHtlcs);
    // R3.5-b: a signature that does not sign the new commitment.
    let mut p = Pair::open();
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    inject(&mut p, false, Message::UpdateCommit(wire::UpdateCommit { sig: wrong_sig_by_a() }));
    let txs = failed(&p.b, "R3.5-b", FailBroadcast::Commitment);
    // R3.5-e: what B broadcasts is its current commitment, never a revoked one.
    assert_eq!(txs.last().unwrap().compute_txid(), p.b.ch.our_commitment_tx().unwrap().txid());
    // R3.5-d: a revocation preimage that does not match.
    let mut p = Pair::open();
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([1; 32]).hash(), height(5000), vec![]).unwrap();
    p.a.ch.commit().unwrap();
    p.pump();
    let rev = wire::UpdateRevocation {
        revocation_preimage: Preimage([9; 32]),
        next_revocation_hash: Preimage([8; 32]).hash(),
    };
    inject(&mut p, true, Message::UpdateRevocation(rev));
    failed(&p.a, "R3.5-d", FailBroadcast::Commitment);
}

#[test]
fn offered_htlc_past_its_deadline_fails() {
    let mut p = Pair::open();
    let id =
        p.a.ch.offer_htlc(MilliSats::from_msat(3_000_000), Preimage([1; 32]).hash(), height(1000), vec![]).unwrap();
    // R3.1-a: the later of expiry (1000) and now + B's delay (100 + 144),
    // plus the 6-block margin.
    assert_eq!(p.a.ch.htlc_deadline(id), Some(height(1006)));
    p.settle();
    // B never resolves it, and at 1000 it times out for B too, but B's fail
    // is lost.
    p.block(1005);
    p.b_to_a.clear();
    assert!(p.a.failed().is_none());
    // R3.1-c: at the deadline A goes on-chain with its latest commitment
    // (R6.3-g), which still holds the HTLC.
    p.block(1006);
    let txs = failed(&p.a, "R3.1-c", FailBroadcast::Commitment);
    let commitment = txs.last().unwrap();
    verify_input(commitment, 0, &p.a.anchor.clone().unwrap().output[0]).expect("valid commitment");
    // B has no balance yet: to-self and the HTLC.
    assert_eq!(commitment.output.len(), 2);
    assert!(commitment.output.iter().any(|o| o.value == Amount::from_sat(3000)), "the HTLC output");
}

// ---------------------------------------------------------------------------
// Section 4.
// ---------------------------------------------------------------------------

#[test]
fn close_clearing_rules() {
    // R4.1-a: B adds after its own close_clearing.
    let mut p = with_htlc();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    p.b.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::BToA);
    inject(&mut p, true, add(0, 1_000_000, 5));
    failed(&p.a, "R4.1-a", FailBroadcast::Commitment);
    // R4.1-b: a second close_clearing.
    let mut p = Pair::open();
    p.b.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::BToA);
    inject(&mut p, true, Message::CloseClearing);
    failed(&p.a, "R4.1-b", FailBroadcast::CommitmentNoHtlcs);
}

#[test]
fn an_htlc_crossing_close_clearing_is_failed() {
    let mut p = with_htlc();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    // B offers while A starts closing: the two messages cross.
    p.b.ch.offer_htlc(MilliSats::from_msat(1_000_000), Preimage([7; 32]).hash(), height(5000), vec![]).unwrap();
    p.a.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::BToA);
    assert!(p.a.failed().is_none());
    // R3.3-c: not while the HTLC is only staged, in no commitment...
    assert!(!p.a_to_b.iter().any(|q| matches!(q.message(), Message::UpdateFailHtlc(_))));
    p.settle();
    // R4.1-c: ...but as soon as it is in one, A answers it with
    // update_fail_htlc, and stays open.
    assert!(p.a.sent.iter().any(|(_, m)| matches!(m, Message::UpdateFailHtlc(f) if f.id == 0)));
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
    assert!(matches!(p.a.events.last(), Some(Event::ChannelClosed { .. })));
}

/// Both sides have exchanged close_clearing and A has sent its first
/// close_signature; B's reply is held back.
fn negotiating() -> Pair {
    let mut p = with_htlc();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    p.a.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::BToA);
    p.b_to_a.clear();
    assert!(matches!(p.a_to_b.back().map(|q| q.message()), Some(Message::CloseSignature(_))), "{:?}", p.a_to_b);
    p
}

/// A close_signature by B over the close with `fee`.
fn b_close_sig(p: &Pair, fee: u64) -> Message {
    let Some(Message::CloseSignature(ours)) = p.a_to_b.back().map(|q| q.message().clone()) else { unreachable!() };
    let _ = ours;
    let f = p.b.ch.funding().unwrap().clone();
    let close = paychan::tx::closing::build_close(&paychan::tx::closing::CloseSpec {
        funding: &f,
        local_final: pubkey(4),
        remote_final: pubkey(2),
        to_local: p.b.ch.balance(paychan::channel::Side::Local),
        to_remote: p.b.ch.balance(paychan::channel::Side::Remote),
        close_fee: Amount::from_sat(fee),
    })
    .unwrap();
    let sig = close.sign(&f, &*p.b.signer).unwrap();
    Message::CloseSignature(wire::CloseSignature { close_fee: Amount::from_sat(fee), sig })
}

fn a_first_fee(p: &Pair) -> u64 {
    match p.a_to_b.back().map(|q| q.message()) {
        Some(Message::CloseSignature(c)) => c.close_fee.to_sat(),
        _ => unreachable!(),
    }
}

#[test]
fn close_signature_rules() {
    // R4.2-a: not before clearing is complete (an HTLC is still there).
    let mut p = with_htlc();
    p.a.ch.close().unwrap();
    p.pump();
    p.deliver(Dir::AToB);
    p.deliver(Dir::BToA);
    assert!(!p.a_to_b.iter().any(|q| matches!(q.message(), Message::CloseSignature(_))), "R4.2-a: A waits");
    inject(
        &mut p,
        true,
        Message::CloseSignature(wire::CloseSignature { close_fee: Amount::from_sat(1000), sig: wrong_sig_by_b() }),
    );
    failed(&p.a, "R4.2-a", FailBroadcast::Commitment);

    // R4.2-b: what A proposed is even and at most its final commitment fee.
    let p = negotiating();
    let fee = a_first_fee(&p);
    assert_eq!(fee % 2, 0);
    assert!(Amount::from_sat(fee) <= p.a.ch.our_commitment().fee());
    // R4.2-b: an odd fee fails.
    let mut p = negotiating();
    let Message::CloseSignature(mut m) = b_close_sig(&p, 1000) else { unreachable!() };
    m.close_fee = Amount::from_sat(1001);
    inject(&mut p, true, Message::CloseSignature(m));
    failed(&p.a, "R4.2-b", FailBroadcast::Commitment);
    // R4.2-b: above B's final commitment fee.
    let mut p = negotiating();
    let too_much = p.a.ch.their_commitment().fee().to_sat() + 2;
    let m = b_close_sig(&p, too_much);
    inject(&mut p, true, m);
    failed(&p.a, "R4.2-b", FailBroadcast::Commitment);
    // R4.2-d: a signature for another fee.
    let mut p = negotiating();
    let Message::CloseSignature(mut m) = b_close_sig(&p, 1000) else { unreachable!() };
    m.close_fee = Amount::from_sat(1002);
    inject(&mut p, true, Message::CloseSignature(m));
    failed(&p.a, "R4.2-d", FailBroadcast::Commitment);
}

#[test]
fn close_negotiation_narrows_and_a_wrong_way_fee_fails() {
    let mut p = negotiating();
    let ours = a_first_fee(&p);
    // B proposes far lower; A answers strictly between (R4.2-e).
    let m = b_close_sig(&p, 400);
    inject(&mut p, true, m);
    let Some(Message::CloseSignature(next)) = p.a_to_b.back().map(|q| q.message().clone()) else {
        panic!("a counter-proposal")
    };
    let next = next.close_fee.to_sat();
    assert!(next > 400 && next < ours && next % 2 == 0, "{next}");
    // R4.2-f: B's next proposal must be between 400 and A's; 390 is not.
    let m = b_close_sig(&p, 390);
    inject(&mut p, true, m);
    // R6.3-f: A had a valid close_signature (fee 400): it closes with it.
    let txs = failed(&p.a, "R4.2-f", FailBroadcast::Close);
    let close = txs.last().unwrap();
    verify_input(close, 0, &p.a.anchor.clone().unwrap().output[0]).expect("a valid close");
    let fee = Amount::from_sat(1_000_000) - close.output.iter().map(|o| o.value).sum::<Amount>();
    assert_eq!(fee, Amount::from_sat(400));
}

#[test]
fn a_close_below_the_relay_floor_is_never_agreed_nor_broadcast() {
    let mut p = negotiating();
    let floor = paychan::fees::DEFAULT_MIN_CLOSE_FEE;
    // B proposes a fee no node relays: A answers with a relayable one.
    let m = b_close_sig(&p, floor.to_sat() - 70);
    inject(&mut p, true, m);
    let Some(Message::CloseSignature(next)) = p.a_to_b.back().map(|q| q.message().clone()) else {
        panic!("a counter-proposal")
    };
    assert!(next.close_fee >= floor, "{}", next.close_fee);
    // If A fails now, it does not broadcast that close (it would never
    // confirm) but its commitment (R6.3-f falls back, R6.3-g).
    p.a.ch.fail("giving up");
    p.pump();
    assert!(matches!(p.a.failed(), Some(Event::ChannelFailed { broadcast: FailBroadcast::Commitment, .. })));
    let c = p.a.ch.our_commitment_tx().unwrap();
    assert_eq!(p.a.broadcasts.last().unwrap().compute_txid(), c.txid());
}

// ---------------------------------------------------------------------------
// Section 6.
// ---------------------------------------------------------------------------

#[test]
fn an_error_is_not_answered() {
    let mut p = with_htlc();
    inject(&mut p, true, Message::Error(wire::ErrorMessage { problem: Some("bye".into()) }));
    // R6.3-b: A fails and sends no error back.
    let txs = failed(&p.a, "R6.3-b", FailBroadcast::Commitment);
    assert!(p.a.sent_error().is_none());
    assert_eq!(txs.len(), 2);
    // Once failed, nothing else happens.
    inject(&mut p, true, Message::UpdateFee(wire::UpdateFee { fee_rate: 1 }));
    assert_eq!(p.a.broadcasts.len(), 2);
}

#[test]
fn failing_chooses_the_broadcast_of_section_6_3() {
    // R6.3-d: before any anchor.
    let mut p = opening(ChannelConfig::default());
    p.a.ch.fail("user abort");
    p.pump();
    assert!(matches!(p.a.failed(), Some(Event::ChannelFailed { broadcast: FailBroadcast::Nothing, .. })));
    assert!(p.a.broadcasts.is_empty());
    // R6.3-c: an informative error is sent.
    assert_eq!(p.a.sent_error().as_deref(), Some("user abort"));

    // R6.3-e: open, no HTLC ever: the latest commitment.
    let mut p = Pair::open();
    p.b.ch.fail("user abort");
    p.pump();
    assert!(matches!(p.b.failed(), Some(Event::ChannelFailed { broadcast: FailBroadcast::CommitmentNoHtlcs, .. })));
    let anchor_out = p.a.anchor.clone().unwrap().output[0].clone();
    verify_input(p.b.broadcasts.last().unwrap(), 0, &anchor_out).unwrap();

    // R6.3-g: after HTLCs: the latest commitment, signed now, never a
    // revoked one (R3.5-e).
    let mut p = with_htlc();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    p.a.ch.fail("user abort");
    p.pump();
    assert!(matches!(p.a.failed(), Some(Event::ChannelFailed { broadcast: FailBroadcast::Commitment, .. })));
    let tx = p.a.broadcasts.last().unwrap().clone();
    verify_input(&tx, 0, &anchor_out).unwrap();
    assert_eq!(tx.compute_txid(), p.a.ch.our_commitment_tx().unwrap().txid());
    let number = p.a.ch.our_commitment_number();
    assert_eq!(common::classify(&p.b, &tx), Some(paychan::chain::SpendKind::TheirCommitment { number }));

    // R6.1-a: a spend of the anchor fails the channel.
    let mut p = Pair::open();
    p.a.ch.handle_anchor_spent(&p.a.anchor.clone().unwrap());
    p.pump();
    failed(&p.a, "R6.1-a", FailBroadcast::AnchorSpent);
    let _ = Txid::all_zeros();
}

// ---------------------------------------------------------------------------
// Review findings, each pinned by a test.
// ---------------------------------------------------------------------------

#[test]
fn a_funder_lying_about_the_anchor_is_caught_on_chain() {
    use paychan::tx::commitment::{self, CommitmentSpec};
    use paychan::tx::funding::FundingOutput;
    let mut p = b_awaiting_anchor();
    // A claims twice the real amount, and signs B's first commitment for it.
    let mut a = open_anchor_from_a(&p);
    p.a_to_b.clear();
    a.amount *= 2;
    let funding =
        FundingOutput::new(bitcoin::OutPoint { txid: a.txid, vout: a.output_index }, a.amount, &pubkey(1), &pubkey(3));
    let b_first = commitment::build(&CommitmentSpec {
        funding: &funding,
        owner_final: pubkey(4),
        other_final: pubkey(2),
        to_owner: MilliSats::ZERO,
        to_other: MilliSats::from_sat(a.amount).unwrap(),
        htlcs: &[],
        fee_rate_per_kb: 10_000,
        revocation_hash: paychan::shachain::RevocationSecrets::new([0xb2; 32]).hash(0),
        delay: paychan::Delay::Blocks(144),
        number: commitment::CommitmentNumber {
            number: 0,
            obscuring: commitment::obscuring_factor(&pubkey(1), &pubkey(3)),
        },
    })
    .unwrap();
    a.commit_sig = b_first.sign(&funding, &*p.a.signer).unwrap();
    inject(&mut p, false, Message::OpenAnchor(Box::new(a)));
    assert!(p.b.failed().is_none(), "the signature matches the lie");
    // R2.2-d: the anchor on chain does not hold what open_anchor said.
    let real = p.a.anchor.clone().unwrap();
    p.b.ch.handle_anchor_depth(&real, 3);
    p.pump();
    // Every signature B holds commits to the claimed amount: nothing of its
    // could spend the real output, so nothing is broadcast.
    failed(&p.b, "R2.2-d", FailBroadcast::Nothing);
    assert!(p.b.broadcasts.is_empty());
    assert!(!p.b.sent.iter().any(|(_, m)| matches!(m, Message::OpenComplete)));
}

#[test]
fn an_htlc_crossing_clearing_is_failed_until_the_peer_commits_to_it() {
    let mut p = with_htlc();
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    p.settle();
    p.a.ch.close().unwrap();
    p.pump();
    // B has processed A's close_clearing (its acknowledge covers it) but not
    // committed since: an add is answered with update_fail_htlc (R4.1-c).
    inject(&mut p, true, add(1, 1_000_000, 9));
    assert!(p.a.failed().is_none());
    // R3.3-c: the fail waits for the HTLC to be in a commitment; A's next
    // commitment for B has it, and the fail follows at once (R4.1-c).
    assert!(!p.a_to_b.iter().any(|q| matches!(q.message(), Message::UpdateFailHtlc(_))));
    p.a.ch.commit().unwrap();
    p.pump();
    assert!(p.a_to_b.iter().any(|q| matches!(q.message(), Message::UpdateFailHtlc(f) if f.id == 1)));
}

#[test]
fn the_peers_acknowledge_may_not_go_back() {
    let mut p = with_htlc();
    let ack = p.a.sent.len() as u64;
    p.a.ch.handle_message(Message::UpdateFee(wire::UpdateFee { fee_rate: 12_000 }), ack);
    // R1.2-c: a smaller acknowledge than before fails the connection.
    p.a.ch.handle_message(Message::UpdateFee(wire::UpdateFee { fee_rate: 13_000 }), ack - 1);
    p.pump();
    failed(&p.a, "R1.2-c", FailBroadcast::Commitment);
}

#[test]
fn peer_fee_rates_are_bounded_by_ten_times_the_estimate() {
    let mut p = Pair::open();
    p.a.ch.handle_fee_estimate(2_000).unwrap();
    inject(&mut p, true, Message::UpdateFee(wire::UpdateFee { fee_rate: 20_000 }));
    assert!(p.a.failed().is_none(), "ten times the estimate is fine");
    // R3.4-b: above ten times our estimate is too high.
    inject(&mut p, true, Message::UpdateFee(wire::UpdateFee { fee_rate: 20_002 }));
    failed(&p.a, "R3.4-b", FailBroadcast::CommitmentNoHtlcs);
}

#[test]
fn a_reused_peer_id_does_not_change_the_htlc_our_commitment_holds() {
    let mut p = Pair::open();
    // B gets money to offer with.
    p.pay('A', MilliSats::from_msat(400_000_000), Preimage([9; 32]));
    // B offers an HTLC for R1; both commitments hold it.
    let (r1, r2) = (Preimage([0x51; 32]), Preimage([0x52; 32]));
    let amount = MilliSats::from_msat(5_000_000);
    let id = p.b.ch.offer_htlc(amount, r1.hash(), height(5_000), vec![]).unwrap();
    p.settle();
    // A fails it: gone from A's staged commitments, still in A's current one.
    p.a.ch.fail_htlc(id, b"no".to_vec()).unwrap();
    // R3.2-e forbids reusing an id present in the staged commitment only:
    // B may offer a new HTLC, for R2, under the same id.
    let add = wire::UpdateAddHtlc {
        id,
        amount: HtlcMsat::try_from(amount).unwrap(),
        r_hash: r2.hash(),
        expiry: height(5_000),
        route: vec![],
    };
    inject(&mut p, true, Message::UpdateAddHtlc(add));
    assert!(p.a.failed().is_none(), "R3.2-e allows it");
    // A's current commitment is still the one B signed, HTLC for R1 and
    // all: it spends the anchor.
    let anchor = p.a.anchor.clone().expect("A funded");
    let commitment = p.a.ch.signed_commitment().expect("open");
    verify_input(&commitment, 0, &anchor.output[0]).expect("the commitment B signed");
    let built = p.a.ch.our_commitment_tx().unwrap();
    let htlc =
        built.outputs().iter().find(|o| matches!(o.kind, paychan::tx::commitment::OutputKind::Htlc(h) if h.id == id));
    assert!(
        matches!(htlc.map(|o| o.kind), Some(paychan::tx::commitment::OutputKind::Htlc(h)) if h.r_hash == r1.hash())
    );
    // So does the commitment of A restored from its store, which rebuilds
    // its cache of HTLC hashes from every view.
    let restored = p.a.restored().unwrap();
    assert_eq!(restored.signed_commitment(), Some(commitment));
}
