//! The channel's incremental persistence (ADR 0006): what a payment writes,
//! restoring from every prefix of the store, damaged and foreign journals,
//! the compaction bound, and outputs emitted again after a restore.

mod common;

use bitcoin::absolute;
use bitcoin::hashes::{sha256, Hash};
use common::pair::{Dir, Packet, Pair, Store, CAPACITY};
use paychan::channel::{Channel, ChannelConfig, Event, Output, RestoreError};
use paychan::journal::Write;
use paychan::tx::{InMemorySigner, KeyRole, Sighash, Signer, SignerError, SigningInput};
use paychan::wire::Message;
use paychan::{MilliSats, Preimage};
use std::sync::Arc;

fn expiry() -> absolute::LockTime {
    absolute::LockTime::from_height(5_000).unwrap()
}

fn preimage(n: u64) -> Preimage {
    Preimage(sha256::Hash::hash(&n.to_le_bytes()).to_byte_array())
}

/// One payment of 1,000 sat from `payer` to the other side, settled.
fn pay(p: &mut Pair, payer: char, n: u64) {
    p.pay(payer, MilliSats::from_msat(1_000_000), preimage(n));
}

/// A pair with `live` HTLCs of 1,000 sat outstanding from A to B, and money
/// on both sides.
fn with_live(live: u64) -> Pair {
    let mut p = Pair::new(ChannelConfig::default(), ChannelConfig::default(), CAPACITY * 2);
    p.establish();
    pay_amount(&mut p, 500_000_000);
    for i in 0..live {
        p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), preimage(10_000 + i).hash(), expiry(), vec![]).unwrap();
    }
    p.settle();
    p
}

fn pay_amount(p: &mut Pair, msat: u64) {
    let r = preimage(u64::MAX);
    let id = p.a.ch.offer_htlc(MilliSats::from_msat(msat), r.hash(), expiry(), vec![]).unwrap();
    p.settle();
    p.b.ch.fulfill_htlc(id, r).unwrap();
    p.settle();
}

/// The journal bytes both nodes append for one payment each way (a payment
/// during which neither wrote a snapshot).
fn appended_per_payment(p: &mut Pair, n: &mut u64) -> usize {
    loop {
        let before = [p.a.history.len(), p.b.history.len()];
        pay(p, 'A', *n);
        pay(p, 'B', *n + 1);
        *n += 2;
        let writes: Vec<&Write> = p.a.history[before[0]..].iter().chain(&p.b.history[before[1]..]).collect();
        if writes.iter().all(|w| !w.is_snapshot()) {
            return writes.iter().map(|w| w.bytes().len()).sum();
        }
    }
}

#[test]
fn a_payment_writes_the_same_bytes_whatever_the_live_htlcs() {
    let mut sizes = Vec::new();
    for live in [0, 100] {
        let mut p = with_live(live);
        assert_eq!(p.a.ch.our_commitment().htlcs().count() as u64, live);
        let mut n = 0;
        sizes.push(appended_per_payment(&mut p, &mut n));
    }
    // The entries hold the step's input (messages, commands), never the
    // HTLC set: the same payment appends the same bytes.
    assert_eq!(sizes[0], sizes[1], "{sizes:?}");
    // Two payments, each an offer, a fulfil and two commitment rounds at
    // both nodes: a few dozen entries of a few dozen bytes.
    assert!(sizes[0] < 4_000, "{sizes:?}");
}

#[test]
fn every_prefix_of_the_store_restores_and_the_whole_store_is_the_live_channel() {
    let mut p = with_live(0);
    for n in 0..6 {
        pay(&mut p, if n % 2 == 0 { 'A' } else { 'B' }, n);
    }
    p.a.ch.update_fee(20_000).unwrap();
    p.a.ch.commit().unwrap();
    p.settle();
    p.reconnect();
    p.settle();
    p.a.ch.close().unwrap();
    p.settle();
    assert!(p.a.ch.is_terminal());
    let history = p.a.history.clone();
    assert!(history.len() > 40 && history[0].is_snapshot());
    let mut store = Store::default();
    for (i, w) in history.iter().enumerate() {
        store.apply(w);
        let restored = store.channel(p.a.signer.clone()).unwrap_or_else(|e| panic!("prefix {}: {e}", i + 1));
        assert_eq!(restored.version(), w.seq());
    }
    // The whole store replays to the live channel, byte for byte, once the
    // outputs emitted again are drained.
    let mut restored = store.channel(p.a.signer.clone()).unwrap();
    while restored.poll_output().is_some() {}
    assert_eq!(restored.snapshot(), p.a.ch.snapshot());
}

#[test]
fn a_torn_last_entry_is_dropped_and_other_damage_is_refused() {
    let mut p = Pair::open();
    for n in 0..3 {
        pay(&mut p, 'A', n);
    }
    let store = p.a.store.clone();
    let snapshot = store.snapshot.clone().unwrap();
    let entries: Vec<Vec<u8>> = store.entries.iter().map(|(_, e)| e.clone()).collect();
    assert!(entries.len() >= 4, "{}", entries.len());
    let last = store.entries.last().unwrap().0;
    let restore =
        |entries: &[Vec<u8>]| Channel::restore(&snapshot, entries.iter().map(Vec::as_slice), p.a.signer.clone());
    assert_eq!(restore(&entries).unwrap().version(), last);
    // A write cut short by a crash: the last entry is dropped, and the
    // channel is the one before it.
    for cut in [1, 10, entries.last().unwrap().len() - 1] {
        let mut torn = entries.clone();
        torn.last_mut().unwrap().truncate(cut);
        assert_eq!(restore(&torn).unwrap().version(), last - 1);
    }
    // A flipped bit anywhere but the last entry is damage.
    let mut damaged = entries.clone();
    damaged[1][12] ^= 1;
    assert_eq!(restore(&damaged).err(), Some(RestoreError::Checksum));
    // A missing entry.
    let mut gap = entries.clone();
    gap.remove(1);
    assert!(matches!(restore(&gap), Err(RestoreError::Gap { .. })));
    // Entries the snapshot holds are skipped (a crash between storing a
    // snapshot and dropping them).
    let mut stale = entries.clone();
    stale.insert(1, entries[0].clone());
    assert_eq!(restore(&stale).unwrap().version(), last);
    let fresh = p.a.ch.snapshot();
    let all = Channel::restore(&fresh, entries.iter().map(Vec::as_slice), p.a.signer.clone()).unwrap();
    assert_eq!(all.version(), p.a.ch.version());
    // B's journal does not replay on A's snapshot: refused, never applied.
    let b_entries: Vec<&[u8]> = p.b.store.entries().collect();
    assert!(Channel::restore(&snapshot, b_entries, p.a.signer.clone()).is_err());
}

#[test]
fn a_journal_of_another_state_is_refused() {
    // Two channels with the same keys and the same history up to a point:
    // the entries of one after they part do not replay on the other's
    // snapshot, and the entry header says so (RestoreError::Replay).
    let mut p = with_live(0);
    pay(&mut p, 'A', 0);
    let snapshot = p.a.ch.snapshot();
    let version = p.a.ch.version();
    // One branch: A pays.
    let mut branch = with_live(0);
    pay(&mut branch, 'A', 0);
    assert_eq!(branch.a.ch.version(), version);
    pay(&mut branch, 'A', 1);
    // The other: A stays, and B pays A; A's snapshot is of before.
    pay(&mut p, 'B', 7);
    let entries: Vec<&[u8]> =
        branch.a.store.entries.iter().filter(|(s, _)| *s > version).map(|(_, e)| e.as_slice()).collect();
    // The same channel: the branch's entries replay on its own state.
    assert!(Channel::restore(&snapshot, entries.iter().copied(), p.a.signer.clone()).is_ok());
    let other: Vec<&[u8]> = p.a.store.entries.iter().filter(|(s, _)| *s > version).map(|(_, e)| e.as_slice()).collect();
    let mut mixed = other[..1].to_vec();
    mixed.extend(&entries[1..]);
    let result = Channel::restore(&snapshot, mixed, p.a.signer.clone());
    assert!(matches!(result, Err(RestoreError::Replay { .. })), "{:?}", result.err());
}

#[test]
fn the_store_stays_within_the_compaction_bound() {
    let mut p = with_live(20);
    let mut snapshots = 0;
    let mut worst = 0.0f64;
    for n in 0..300 {
        let before = p.a.history.len();
        pay(&mut p, 'A', n);
        snapshots += p.a.history[before..].iter().filter(|w| w.is_snapshot()).count();
        let snapshot = p.a.store.snapshot.as_ref().unwrap().len();
        let kept = p.a.store.len();
        // ADR 0006: at most a snapshot, plus twice the larger of its size
        // and the state's size now (and 4 KiB), plus the entry that
        // crossed the line.
        let now = p.a.ch.snapshot().len();
        let largest_entry = p.a.store.entries.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
        assert!(kept <= snapshot + (2 * snapshot.max(now)).max(4096) + largest_entry, "{kept} {snapshot} {now}");
        worst = worst.max(kept as f64 / snapshot as f64);
    }
    assert!(snapshots >= 2, "{snapshots} snapshots");
    assert!(worst > 2.0, "the journal grew to {worst} snapshots before compaction");
}

#[test]
fn a_growing_state_is_not_snapshotted_on_its_way_up() {
    // 100 HTLCs offered and committed: the state grows from about 1 KB to
    // more than 20 KB. The rule waits for twice the state's size now, not
    // twice the last (small) snapshot: snapshot bytes stay below the entry
    // bytes (ADR 0006).
    let mut p = with_live(0);
    let before = p.a.history.len();
    for i in 0..100 {
        p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), preimage(20_000 + i).hash(), expiry(), vec![]).unwrap();
    }
    p.settle();
    let written = &p.a.history[before..];
    let snapshots: usize = written.iter().filter(|w| w.is_snapshot()).map(|w| w.bytes().len()).sum();
    let entries: usize = written.iter().filter(|w| !w.is_snapshot()).map(|w| w.bytes().len()).sum();
    assert!(p.a.ch.snapshot().len() > 20_000);
    assert!(snapshots <= entries / 2, "{snapshots} bytes of snapshots for {entries} bytes of entries");
    // And the store restores to the live channel.
    let mut restored = p.a.restored().unwrap();
    while restored.poll_output().is_some() {}
    assert_eq!(restored.snapshot(), p.a.ch.snapshot());
}

#[test]
fn outputs_not_released_come_out_again_after_a_restore() {
    let mut p = Pair::open();
    let r = preimage(1);
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), r.hash(), expiry(), vec![]).unwrap();
    p.a.ch.commit().unwrap();
    p.pump();
    // Each message reaches B, whose write lands in its store but is not
    // confirmed yet; B "crashes" there, and its store is restored.
    let mut found = false;
    for _ in 0..20 {
        for node in [&mut p.a, &mut p.b] {
            if node.ch.can_commit() {
                node.ch.commit().unwrap();
            }
        }
        p.pump();
        while p.deliver(Dir::BToA).is_some() {
            p.pump();
        }
        let Some((ack, message)) = p.a_to_b.pop_front().map(Packet::into_parts) else { continue };
        p.b.ch.handle_message(message, ack);
        let out: Vec<Output> = std::iter::from_fn(|| p.b.ch.poll_output()).collect();
        let Some(write) = out.iter().find_map(|o| if let Output::Persist(w) = o { Some(w.clone()) } else { None })
        else {
            continue;
        };
        // Nothing but the write (and the monitor's update) before it is
        // durable.
        assert!(out.iter().all(|o| matches!(o, Output::Persist(_) | Output::Monitor(_))), "{out:?}");
        p.b.store.apply(&write);
        let mut restored = p.b.restored().unwrap();
        let again: Vec<Output> = std::iter::from_fn(|| restored.poll_output()).collect();
        // Messages are never emitted again: a restored channel has no
        // transport.
        assert!(!again.iter().any(|o| matches!(o, Output::Send { .. })), "{again:?}");
        let event_again = again.iter().any(|o| matches!(o, Output::Event(Event::HtlcAdded { .. })));
        // The live channel releases what the restored one emitted again.
        p.b.ch.handle_persisted(write.seq());
        let released: Vec<Output> = std::iter::from_fn(|| p.b.ch.poll_output()).collect();
        let event_live = released.iter().any(|o| matches!(o, Output::Event(Event::HtlcAdded { .. })));
        assert_eq!(event_again, event_live, "{again:?} {released:?}");
        p.b_to_a.extend(released.into_iter().filter_map(Packet::from_output));
        if event_live {
            found = true;
            break;
        }
    }
    assert!(found, "B never added the HTLC");
    p.settle();
    // The last write was made before its own event was released, so a
    // restore would emit it again; after one more change written once
    // everything was released, a restore emits nothing again.
    p.b.ch.handle_block(500, 1_700_000_000);
    p.settle();
    let mut restored = p.b.restored().unwrap();
    let again: Vec<Output> = std::iter::from_fn(|| restored.poll_output()).collect();
    assert!(!again.iter().any(|o| matches!(o, Output::Event(_))), "{again:?}");
}

#[test]
fn no_journal_byte_can_make_the_channel_panic() {
    // A store with a snapshot and entries of every kind of step: messages,
    // commands, a fee, blocks, a reconnection (with HTLCs enough that the
    // journal is not compacted meanwhile).
    let mut p = with_live(40);
    let snapshot = p.a.ch.snapshot();
    let from = p.a.ch.version();
    pay(&mut p, 'A', 1);
    p.a.ch.update_fee(15_000).unwrap();
    p.a.ch.commit().unwrap();
    p.settle();
    p.a.ch.handle_block(300, 1_700_000_000);
    p.reconnect();
    p.settle();
    pay(&mut p, 'B', 2);
    let writes: Vec<&Write> = p.a.history.iter().filter(|w| w.seq() > from).collect();
    assert!(writes.iter().all(|w| !w.is_snapshot()), "the journal was compacted");
    let entries: Vec<Vec<u8>> = writes.iter().map(|w| w.bytes().to_vec()).collect();
    assert!(entries.len() > 10, "{}", entries.len());
    let restore =
        |entries: &[Vec<u8>]| Channel::restore(&snapshot, entries.iter().map(Vec::as_slice), p.a.signer.clone());
    assert_eq!(restore(&entries).unwrap().version(), p.a.ch.version());
    let mut refused = 0;
    let mut tried = 0;
    for (k, entry) in entries.iter().enumerate() {
        for i in 0..entry.len() - 8 {
            let mut bad = entries.clone();
            bad[k][i] ^= 0x04;
            bad[k] = common::resealed(bad[k].clone());
            tried += 1;
            // Whatever restore accepts works on.
            let Ok(mut ch) = restore(&bad) else {
                refused += 1;
                continue;
            };
            while ch.poll_output().is_some() {}
            ch.new_transport();
            ch.handle_authenticate(0);
            ch.handle_block(900_000, 1_800_000_000);
            ch.fail("test");
            while ch.poll_output().is_some() {}
        }
    }
    // Most changes are caught: the sequence numbers, the counters each entry
    // records, the decoders.
    assert!(refused * 2 > tried, "{refused} of {tried}");
}

/// A signer whose signatures differ each time (extra nonce data from a
/// counter), as some hardware signers' do.
struct Varying {
    inner: InMemorySigner,
    keys: [bitcoin::secp256k1::SecretKey; 2],
    counter: std::sync::atomic::AtomicU64,
}

impl Varying {
    fn new(start: u64) -> Self {
        let keys = [paychan::sim::secret(1), paychan::sim::secret(2)];
        Varying { inner: InMemorySigner::new(keys[0], keys[1]), keys, counter: start.into() }
    }
}

impl Signer for Varying {
    fn public_key(&self, role: KeyRole) -> bitcoin::CompressedPublicKey {
        self.inner.public_key(role)
    }

    fn sign(&self, input: &SigningInput<'_>) -> Result<bitcoin::secp256k1::ecdsa::Signature, SignerError> {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = if input.role == KeyRole::Commit { &self.keys[0] } else { &self.keys[1] };
        let digest = match input.sighash {
            Sighash::SegwitV0(h) => h.to_byte_array(),
            Sighash::Legacy(h) => h.to_byte_array(),
        };
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        let mut extra = [0u8; 32];
        extra[..8].copy_from_slice(&n.to_le_bytes());
        Ok(secp.sign_ecdsa_with_noncedata(&bitcoin::secp256k1::Message::from_digest(digest), key, &extra))
    }
}

#[test]
fn a_restore_resends_the_bytes_first_sent_whatever_the_signer() {
    let mut p = with_live(0);
    // A's signer now signs differently every time.
    let snapshot = p.a.ch.snapshot();
    p.a.ch = Channel::restore(&snapshot, [], Arc::new(Varying::new(0))).unwrap();
    p.a.store = Store { snapshot: Some(snapshot), entries: Vec::new() };
    p.reconnect();
    p.settle();
    pay(&mut p, 'A', 1);
    // A signs B's next commitment; the update_commit is written and sent,
    // not yet acknowledged.
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), preimage(2).hash(), expiry(), vec![]).unwrap();
    p.a.ch.commit().unwrap();
    p.pump();
    let sent: Vec<Message> = p.a_to_b.iter().map(|q| q.message().clone()).collect();
    assert!(sent.iter().any(|m| matches!(m, Message::UpdateCommit(_))), "{sent:?}");
    // A crashes and restarts with a signer that would sign otherwise.
    let mut restored = p.a.store.channel(Arc::new(Varying::new(1_000))).unwrap();
    while restored.poll_output().is_some() {}
    // R1.2-e: what it would retransmit is bitwise what it sent.
    assert_eq!(restored.snapshot(), p.a.ch.snapshot());
    p.a.ch = restored;
    p.a_to_b.clear();
    p.reconnect();
    p.settle();
    let resent: Vec<Message> = p.a.sent.iter().rev().take(8).map(|(_, m)| m.clone()).collect();
    let commit = |ms: &[Message]| ms.iter().find(|m| matches!(m, Message::UpdateCommit(_))).cloned();
    assert_eq!(commit(&resent), commit(&sent));
    assert!(p.a.failed().is_none() && p.b.failed().is_none());
}

/// A signer that fails while `down` is set.
struct Flaky {
    inner: InMemorySigner,
    down: std::sync::atomic::AtomicBool,
}

impl Signer for Flaky {
    fn public_key(&self, role: KeyRole) -> bitcoin::CompressedPublicKey {
        self.inner.public_key(role)
    }

    fn sign(&self, input: &SigningInput<'_>) -> Result<bitcoin::secp256k1::ecdsa::Signature, SignerError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SignerError { reason: "device unplugged".into() });
        }
        self.inner.sign(input)
    }
}

#[test]
fn a_signer_failure_replays_as_it_happened() {
    let mut p = with_live(0);
    let flaky = Arc::new(Flaky {
        inner: InMemorySigner::new(paychan::sim::secret(1), paychan::sim::secret(2)),
        down: false.into(),
    });
    let snapshot = p.a.ch.snapshot();
    p.a.ch = Channel::restore(&snapshot, [], flaky.clone()).unwrap();
    p.a.store = Store { snapshot: Some(snapshot), entries: Vec::new() };
    p.reconnect();
    p.settle();
    pay(&mut p, 'A', 1);
    // B closes; A's signer fails when A must sign its close proposal: A
    // fails the channel (and cannot sign its commitment either).
    flaky.down.store(true, std::sync::atomic::Ordering::Relaxed);
    p.b.ch.close().unwrap();
    p.settle();
    assert!(p.a.failed().is_some(), "A failed on its signer");
    // Restored with a signer that works, A is where it was: failed, with
    // the same messages to resend. Replay never asks the signer.
    let working = Arc::new(InMemorySigner::new(paychan::sim::secret(1), paychan::sim::secret(2)));
    let mut restored = p.a.store.channel(working).unwrap();
    while restored.poll_output().is_some() {}
    assert!(restored.is_terminal());
    assert_eq!(restored.snapshot(), p.a.ch.snapshot());
}

#[test]
fn after_a_torn_entry_the_next_write_is_a_snapshot() {
    let mut p = with_live(0);
    pay(&mut p, 'A', 1);
    // The last write was torn by a crash: restore drops it.
    let mut store = p.a.store.clone();
    let (_, last) = store.entries.last_mut().unwrap();
    last.truncate(last.len() / 2);
    let torn_version = store.entries.last().unwrap().0;
    let mut ch = store.channel(p.a.signer.clone()).unwrap();
    assert_eq!(ch.version(), torn_version - 1);
    while ch.poll_output().is_some() {}
    // The next change: a snapshot that supersedes the torn entry, not an
    // entry behind it.
    ch.handle_block(700, 1_800_000_000);
    let writes: Vec<Write> = std::iter::from_fn(|| ch.poll_output())
        .filter_map(|o| if let Output::Persist(w) = o { Some(w) } else { None })
        .collect();
    assert!(matches!(writes[..], [Write::Snapshot { seq, .. }] if seq == torn_version), "{writes:?}");
    for w in &writes {
        store.apply(w);
    }
    // And the store restores again, torn bytes gone.
    assert!(store.entries.is_empty());
    assert_eq!(store.channel(p.a.signer.clone()).unwrap().version(), torn_version);
}

#[test]
fn a_message_is_journaled_as_it_came_off_the_wire() {
    let mut p = with_live(0);
    p.a.ch.offer_htlc(MilliSats::from_msat(1_000_000), preimage(7).hash(), expiry(), vec![]).unwrap();
    p.pump();
    let (ack, message) = p.a_to_b.pop_front().expect("A's update_add_htlc").into_parts();
    assert!(matches!(message, Message::UpdateAddHtlc(_)));
    // An unknown odd field (999, a varint) after the message's own: R1-a
    // says it is ignored, so the message is the same.
    let mut bytes = paychan::wire::encode(&message).unwrap();
    bytes.extend_from_slice(&[0xb8, 0x3e, 0x01]);
    assert_eq!(paychan::wire::decode(&bytes).unwrap(), message);
    let before = p.b.history.len();
    p.b.ch.handle_wire(&bytes, ack);
    p.pump();
    // B's entry holds the bytes as they came, unknown field and all...
    let entry = match &p.b.history[before] {
        Write::Append { entry, .. } => entry.clone(),
        other => panic!("an entry, not {other:?}"),
    };
    assert!(entry.windows(bytes.len()).any(|w| w == bytes.as_slice()), "the received bytes are in the entry");
    assert!(p.b.failed().is_none());
    // ...and the store replays them to the live channel.
    let mut restored = p.b.restored().unwrap();
    while restored.poll_output().is_some() {}
    assert_eq!(restored.snapshot(), p.b.ch.snapshot());
    p.settle();
    assert_eq!(p.b.ch.our_commitment().htlcs().count(), 1);

    // Bytes that do not decode fail the channel as `handle_malformed` does.
    let mut q = with_live(0);
    let bad = [0xff, 0xff, 0xff];
    let error = paychan::wire::decode(&bad).unwrap_err();
    q.b.ch.handle_wire(&bad, 0);
    q.pump();
    let mut r = with_live(0);
    r.b.ch.handle_malformed(&error);
    r.pump();
    assert!(q.b.failed().is_some());
    assert_eq!(q.b.sent_error(), r.b.sent_error());
    assert_eq!(q.b.failed(), r.b.failed());
}
