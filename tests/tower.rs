//! Watchtowers (W1-a..W1-d): justice packages built from a real channel's
//! revoked commitments, a tower that punishes the cheat on the verified
//! simulated chain while the victim is offline, and everything a tower must
//! refuse or report.

mod common;

use std::collections::BTreeSet;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use common::net::Net;
use paychan::channel::{ChannelConfig, RestoreError};
use paychan::sim::{Dir, Store};
use paychan::tower::{
    self, justice_package, JusticeError, JusticePackage, JusticeSettings, PackageError, Refusal, RevokedCommitment,
    Reward, Tower, TowerConfig, TowerEvent, TowerOutput,
};
use paychan::tx::commitment::OutputKind;
use paychan::tx::{KeyRole, Signer as _};
use paychan::types::Delay;
use paychan::wire::Message;
use paychan::Preimage;
use proptest::prelude::*;

fn config() -> ChannelConfig {
    ChannelConfig { delay: Delay::Blocks(6), deadline_margin_blocks: 2, export_revoked: true, ..Default::default() }
}

fn settings(net: &Net, reward: Option<Reward>) -> JusticeSettings {
    JusticeSettings {
        destination: paychan::sim::destination(&net.p.a.signer),
        fee_rate: FeeRate::from_sat_per_vb(5).unwrap(),
        reward,
    }
}

fn reward() -> Reward {
    let key = common::pubkey(77);
    Reward { script_pubkey: ScriptBuf::new_p2wpkh(&key.wpubkey_hash()), amount: Amount::from_sat(5_000) }
}

/// A channel where A has handed over B's revoked commitments, B holding
/// HTLCs both ways in them; returns the net, B's signed commitments by
/// number, and what A's channel handed over.
fn history() -> (Net, Vec<(u64, Transaction)>) {
    let mut net = common::net::open_with(config());
    let mut held = Vec::new();
    let mut note = |net: &mut Net| {
        let n = net.p.b.ch.our_commitment_number();
        if let Some(tx) = net.p.b.ch.signed_commitment() {
            if held.last().is_none_or(|(k, _)| *k != n) {
                held.push((n, tx));
            }
        }
    };
    note(&mut net);
    net.offer('A', 300_000_000, 1, 40);
    net.p.settle();
    note(&mut net);
    net.p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    net.p.settle();
    note(&mut net);
    net.offer('A', 20_000_000, 2, 40);
    net.offer('B', 30_000_000, 3, 40);
    net.p.settle();
    note(&mut net);
    net.offer('A', 1_000_000, 4, 40);
    net.p.settle();
    note(&mut net);
    (net, held)
}

/// Every package of A's, as A would hand it to the tower (a revoked
/// commitment that pays B nothing has nothing to punish).
fn packages(net: &Net, s: &JusticeSettings) -> Vec<(RevokedCommitment, JusticePackage)> {
    net.p
        .a
        .revoked
        .iter()
        .filter_map(|r| match justice_package(r, s, &*net.p.a.signer) {
            Ok(p) => Some((r.clone(), p)),
            Err(JusticeError::Nothing(_)) => None,
            Err(e) => panic!("{e}"),
        })
        .collect()
}

/// Drains the tower: stores its writes, returns broadcasts and events.
fn drain(t: &mut Tower, store: &mut Store) -> (Vec<Transaction>, Vec<TowerEvent>) {
    let (mut txs, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = t.poll_output() {
        match o {
            TowerOutput::Persist(w) => {
                store.apply(&w);
                t.handle_persisted(w.seq());
            }
            TowerOutput::Broadcast(tx) => txs.push(tx),
            TowerOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
    (txs, events)
}

/// The block that just confirmed, shown to the tower; what it broadcasts
/// goes to the chain's mempool.
fn show(net: &mut Net, t: &mut Tower, store: &mut Store) -> Vec<TowerEvent> {
    let height = net.height();
    let block = net.chain.block(height).unwrap().clone();
    t.block_connected(height, &block.txs);
    let (txs, events) = drain(t, store);
    for tx in txs {
        let _ = net.chain.submit(tx);
    }
    events
}

#[test]
fn a_package_hides_the_penalty_until_the_commitment_is_known() {
    let (net, _) = history();
    let s = settings(&net, None);
    let all = packages(&net, &s);
    assert!(all.len() >= 3, "{} revoked", all.len());
    for (revoked, package) in &all {
        let txid = revoked.commitment.txid();
        // W1-a: the hint is the first 16 bytes of the revoked commitment's
        // txid.
        assert_eq!(package.hint[..], txid.as_byte_array()[..16]);
        // W1-a: the blob holds neither the txid nor any penalty in clear.
        let penalties = tower::package::open(&txid, &package.blob).unwrap();
        let blob = &package.blob;
        let contains = |needle: &[u8]| blob.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(txid.as_byte_array()));
        assert!(!contains(&txid.as_byte_array()[16..]));
        for p in &penalties {
            assert!(!contains(p.compute_txid().as_byte_array()));
            assert!(!contains(&bitcoin::consensus::serialize(&p.input[0].previous_output)));
            assert!(!contains(s.destination.as_bytes()));
        }
        // W1-a: nothing else opens it: not a txid that shares the hint, not
        // another commitment's.
        let mut near = *txid.as_byte_array();
        near[31] ^= 1;
        assert_eq!(tower::package::open(&Txid::from_byte_array(near), blob), Err(PackageError::Undecryptable));
    }
    // Two packages of the same commitment at different fee rates do not
    // share a nonce (each key seals more than once only then).
    let (revoked, first) = &all[0];
    let other = JusticeSettings { fee_rate: FeeRate::from_sat_per_vb(9).unwrap(), ..s.clone() };
    let second = justice_package(revoked, &other, &*net.p.a.signer).unwrap();
    assert_ne!(first.blob[1..13], second.blob[1..13]);
}

#[test]
fn a_penalty_takes_every_output_owed_at_the_fee_fixed_when_signed() {
    let (net, _) = history();
    for reward in [None, Some(reward())] {
        let s = settings(&net, reward.clone());
        for (revoked, package) in packages(&net, &s) {
            let c = &revoked.commitment;
            let penalties = tower::package::open(&c.txid(), &package.blob).unwrap();
            // D11/C1-e: every output but the one already paying A.
            let owed: BTreeSet<OutPoint> = c
                .outputs()
                .iter()
                .filter(|o| o.kind != OutputKind::ToOther)
                .map(|o| OutPoint { txid: c.txid(), vout: o.vout })
                .collect();
            let spent: BTreeSet<OutPoint> =
                penalties.iter().flat_map(|p| p.input.iter().map(|i| i.previous_output)).collect();
            assert_eq!(spent, owed);
            let value = |op: &OutPoint| c.tx().output[op.vout as usize].value;
            let mut rewarded = 0;
            for p in &penalties {
                let inputs: Amount = p.input.iter().map(|i| value(&i.previous_output)).sum();
                let outputs: Amount = p.output.iter().map(|o| o.value).sum();
                // W1-c: the fee is the client's rate (5 sat/vB, 1,250
                // sat/kWU) on the largest witnesses: never below it on the
                // real weight, and above it only by what a shorter
                // signature saves (a few weight units an input).
                let fee = (inputs - outputs).to_sat();
                let weight = p.weight().to_wu();
                let slack = 4 * p.input.len() as u64;
                assert!(fee * 1000 >= 1250 * weight, "fee {fee} for {weight} WU");
                assert!(fee * 1000 <= 1250 * (weight + slack) + 1000, "fee {fee} for {weight} WU");
                // W1-c: everything to A's destination, but the reward.
                assert_eq!(p.output[0].script_pubkey, s.destination);
                match &reward {
                    Some(r) if p.output.len() == 2 => {
                        assert_eq!(
                            (p.output[1].script_pubkey.clone(), p.output[1].value),
                            (r.script_pubkey.clone(), r.amount)
                        );
                        rewarded += 1;
                    }
                    _ => assert_eq!(p.output.len(), 1),
                }
            }
            assert_eq!(rewarded, usize::from(reward.is_some()));
        }
    }
}

#[test]
fn the_tower_punishes_a_cheat_while_the_victim_is_offline() {
    let (mut net, held) = history();
    let s = settings(&net, Some(reward()));
    let mut t = Tower::new(TowerConfig::default());
    let mut store = Store::default();
    for (_, package) in packages(&net, &s) {
        t.handle_package(7, package).unwrap();
    }
    let (_, events) = drain(&mut t, &mut store);
    // Each package is reported once it is durable.
    assert_eq!(events.iter().filter(|e| matches!(e, TowerEvent::Stored { client: 7, .. })).count(), t.packages());
    // A goes offline: its monitor sees blocks but nothing it sends reaches
    // the chain.
    net.submit_monitor[0] = false;
    let a_dest = s.destination.clone();
    let (number, cheat) = held[1].clone();
    assert!(number < net.p.b.ch.our_commitment_number());
    // Blocks of other transactions: nothing opens, nothing is reported.
    net.mine();
    assert!(show(&mut net, &mut t, &mut store).is_empty());
    net.chain.submit(cheat.clone()).unwrap();
    net.mine();
    // W1-b: the tower recognises the revoked commitment by its hint, opens
    // the package with its txid and broadcasts the penalties.
    let events = show(&mut net, &mut t, &mut store);
    let punished = events.iter().find_map(|e| match e {
        TowerEvent::Punished { commitment, penalties, client: 7 } if *commitment == cheat.compute_txid() => {
            Some(penalties.clone())
        }
        _ => None,
    });
    let penalties = punished.expect("punished");
    // The chain (Bitcoin Core's interpreter on every input) takes them at
    // once, before B's delay.
    net.mine();
    for p in &penalties {
        assert!(net.chain.confirmations(p) > 0, "penalty {p} confirmed");
    }
    // Every output of the cheat is spent, and what they held went to A
    // (less fees and the tower's reward).
    let cheat_txid = cheat.compute_txid();
    let mut to_a = Amount::ZERO;
    for vout in 0..cheat.output.len() as u32 {
        let spender = net.chain.spender(&OutPoint { txid: cheat_txid, vout }).cloned();
        let a_own = ScriptBuf::new_p2wpkh(&net.p.a.signer.public_key(KeyRole::Final).wpubkey_hash());
        match spender {
            Some(p) => to_a += p.output.iter().filter(|o| o.script_pubkey == a_dest).map(|o| o.value).sum(),
            // Only A's own output is left: it pays A already.
            None => assert_eq!(cheat.output[vout as usize].script_pubkey, a_own),
        }
    }
    assert!(to_a > Amount::ZERO);
    // The tower punishes once: later blocks send nothing again.
    net.mine();
    let again = show(&mut net, &mut t, &mut store);
    assert!(again.iter().all(|e| !matches!(e, TowerEvent::Punished { .. })));
}

#[test]
fn bad_packages_are_refused_and_collisions_reported() {
    let (mut net, held) = history();
    let s = settings(&net, None);
    let all = packages(&net, &s);
    let config = TowerConfig { max_blob: 4_000, max_packages: 3, max_bytes: 1 << 20, max_per_hint: 3 };
    let mut t = Tower::new(config);
    let mut store = Store::default();
    let (_, good) = all[0].clone();
    // W1-d: oversized, truncated, unknown version: refused, nothing kept.
    let big = JusticePackage { hint: good.hint, blob: vec![1; 4_001] };
    assert_eq!(t.handle_package(1, big), Err(Refusal::Oversized(4_001)));
    let short = JusticePackage { hint: good.hint, blob: good.blob[..20].to_vec() };
    assert_eq!(t.handle_package(1, short), Err(Refusal::Malformed(PackageError::TooShort(20))));
    let mut versioned = good.clone();
    versioned.blob[0] = 9;
    assert_eq!(t.handle_package(1, versioned), Err(Refusal::Malformed(PackageError::Version(9))));
    assert_eq!(t.packages(), 0);
    // W1-d: a client over its quota is refused; another is not.
    t.handle_package(1, good.clone()).unwrap();
    // The same package again (the client's acknowledgement was lost): it
    // is acknowledged again, and kept once.
    t.handle_package(1, good.clone()).unwrap();
    assert_eq!(t.usage(1).0, 1);
    let (_, acks) = drain(&mut t, &mut store);
    assert_eq!(acks.iter().filter(|e| matches!(e, TowerEvent::Stored { client: 1, .. })).count(), 2);
    // A bad tag: the same package with one ciphertext byte flipped.
    let mut tampered = good.clone();
    let last = tampered.blob.len() - 1;
    tampered.blob[last] ^= 1;
    t.handle_package(1, tampered).unwrap();
    // A package filed under the hint of a commitment it is not for: the
    // next revoked commitment's blob, under the first one's hint.
    let (_, other) = all[1].clone();
    t.handle_package(1, JusticePackage { hint: good.hint, blob: other.blob.clone() }).unwrap();
    // W1-d: a fourth under one hint is refused before the quota.
    let mut fourth = other.blob.clone();
    fourth[20] ^= 1;
    assert_eq!(t.handle_package(1, JusticePackage { hint: good.hint, blob: fourth }), Err(Refusal::TooManyForHint));
    assert_eq!(t.handle_package(1, other.clone()), Err(Refusal::OverQuota));
    t.handle_package(2, other).unwrap();
    assert_eq!(t.usage(1).0, 3);
    drain(&mut t, &mut store);
    // The first revoked commitment reaches the chain: the good package
    // punishes, the tampered and the misfiled ones are reported, nothing
    // panics.
    let revoked_txid = all[0].0.commitment.txid();
    let cheat = held.iter().find(|(_, tx)| tx.compute_txid() == revoked_txid).unwrap().1.clone();
    net.submit_monitor[0] = false;
    net.chain.submit(cheat).unwrap();
    net.mine();
    let events = show(&mut net, &mut t, &mut store);
    let punished = events.iter().filter(|e| matches!(e, TowerEvent::Punished { client: 1, .. })).count();
    let undecryptable = events
        .iter()
        .filter(|e| matches!(e, TowerEvent::NotOpened { client: 1, why: PackageError::Undecryptable, .. }))
        .count();
    assert_eq!((punished, undecryptable), (1, 2), "{events:?}");
}

#[test]
fn a_package_that_opens_but_holds_no_penalty_is_reported() {
    let (net, _) = history();
    let (revoked, _) = packages(&net, &settings(&net, None)).remove(0);
    let txid = revoked.commitment.txid();
    // W1-d: sealed under the right txid, but a transaction spending
    // something else, or bytes that are no transaction.
    let stranger = net.p.a.anchor.clone().unwrap();
    let blob = tower::package::seal(&txid, std::slice::from_ref(&stranger));
    assert_eq!(tower::package::open(&txid, &blob), Err(PackageError::NotAPenalty(stranger.compute_txid())));
    let mut t = Tower::new(TowerConfig::default());
    t.handle_package(3, JusticePackage { hint: tower::hint(&txid), blob }).unwrap();
    let mut store = Store::default();
    drain(&mut t, &mut store);
    t.block_connected(500, &[revoked.commitment.tx().clone()]);
    let (txs, events) = drain(&mut t, &mut store);
    assert!(txs.is_empty());
    assert!(matches!(events[..], [TowerEvent::NotOpened { client: 3, why: PackageError::NotAPenalty(_), .. }]));
}

#[test]
fn a_restored_tower_still_punishes() {
    let (mut net, held) = history();
    let s = settings(&net, None);
    let mut t = Tower::new(TowerConfig::default());
    let mut store = Store::default();
    for (_, package) in packages(&net, &s) {
        t.handle_package(7, package).unwrap();
        drain(&mut t, &mut store);
    }
    t.remove_client(9);
    let mut t = Tower::restore(TowerConfig::default(), store.snapshot.as_deref(), store.entries()).unwrap();
    assert_eq!(t.packages(), packages(&net, &s).len());
    net.submit_monitor[0] = false;
    let packaged: BTreeSet<Txid> = packages(&net, &s).iter().map(|(r, _)| r.commitment.txid()).collect();
    let cheat = held.iter().find(|(_, tx)| packaged.contains(&tx.compute_txid())).unwrap().1.clone();
    net.chain.submit(cheat).unwrap();
    net.mine();
    let events = show(&mut net, &mut t, &mut store);
    assert!(events.iter().any(|e| matches!(e, TowerEvent::Punished { .. })), "{events:?}");
    // A client that leaves takes its packages with it, durably.
    t.remove_client(7);
    drain(&mut t, &mut store);
    let t = Tower::restore(TowerConfig::default(), store.snapshot.as_deref(), store.entries()).unwrap();
    assert_eq!(t.packages(), 0);
}

/// A tower whose store an earlier version wrote (journal entries sealed
/// with the old checksum, no snapshot yet) is refused as another format,
/// not restored empty: its one package would otherwise be dropped as a
/// torn write, and the breach it guards would go unpunished.
#[test]
fn a_store_of_an_earlier_format_is_refused_not_emptied() {
    let (net, _) = history();
    let mut t = Tower::new(TowerConfig::default());
    let mut store = Store::default();
    let (_, package) = packages(&net, &settings(&net, None)).into_iter().next().unwrap();
    t.handle_package(1, package).unwrap();
    drain(&mut t, &mut store);
    assert!(store.snapshot.is_none(), "one package is below the first snapshot");
    let entries: Vec<Vec<u8>> = store.entries.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(entries.len(), 1);
    // As stored, it restores with its package.
    let t = Tower::restore(TowerConfig::default(), None, entries.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(t.packages(), 1);
    // As an earlier version sealed it: refused.
    let old: Vec<Vec<u8>> = entries.iter().map(|e| common::resealed_single_lane(e.clone())).collect();
    let restored = Tower::restore(TowerConfig::default(), None, old.iter().map(Vec::as_slice));
    assert_eq!(restored.err(), Some(RestoreError::Format));
    // A damaged last entry is still a torn write, dropped.
    let mut torn = entries[0].clone();
    torn[3] ^= 1;
    let t = Tower::restore(TowerConfig::default(), None, [torn.as_slice()]).unwrap();
    assert_eq!(t.packages(), 0);
}

#[test]
fn no_stored_byte_makes_a_tower_panic() {
    let (net, _) = history();
    let mut t = Tower::new(TowerConfig::default());
    let mut store = Store::default();
    for (_, package) in packages(&net, &settings(&net, None)).into_iter().take(2) {
        t.handle_package(1, package).unwrap();
    }
    drain(&mut t, &mut store);
    let snapshot = t.snapshot();
    for i in (0..snapshot.len()).step_by(7) {
        let mut bad = snapshot.clone();
        bad[i] ^= 0x40;
        let _ = Tower::restore(TowerConfig::default(), Some(&common::resealed(bad)), []);
    }
    let entries: Vec<Vec<u8>> = store.entries.iter().map(|(_, e)| e.clone()).collect();
    for k in 0..entries.len() {
        for i in (0..entries[k].len() - 8).step_by(5) {
            let mut bad = entries.clone();
            bad[k][i] ^= 0x40;
            bad[k] = common::resealed(bad[k].clone());
            let _ = Tower::restore(TowerConfig::default(), None, bad.iter().map(Vec::as_slice));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// W1-b: random channel histories; B broadcasts a random revoked
    /// commitment while A is offline: the tower always punishes, every
    /// owed output goes to A, and the chain's interpreter takes it all.
    #[test]
    fn the_tower_always_punishes(
        ops in proptest::collection::vec((any::<bool>(), 5_000_000u64..30_000_000, any::<bool>()), 1..10),
        which in any::<usize>(),
        rate in 1u64..10,
    ) {
        let mut net = common::net::open_with(config());
        net.offer('A', 300_000_000, 200, 40);
        net.p.settle();
        net.p.b.ch.fulfill_htlc(0, Preimage([200; 32])).unwrap();
        net.p.settle();
        let mut held = Vec::new();
        let mut tag = 1u8;
        for (from_a, msat, settle) in ops {
            let from = if from_a { 'A' } else { 'B' };
            let expiry = net.expiry(40);
            let r = Preimage([tag; 32]);
            let offered = net.node(from).ch.offer_htlc(paychan::MilliSats::from_msat(msat), r.hash(), expiry, vec![]);
            if let Ok(id) = offered {
                net.p.settle();
                if settle {
                    let to = if from_a { 'B' } else { 'A' };
                    let _ = net.node(to).ch.fulfill_htlc(id, r);
                    net.p.settle();
                }
            }
            tag = tag.wrapping_add(1).max(1);
            if let Some(tx) = net.p.b.ch.signed_commitment() {
                held.push((net.p.b.ch.our_commitment_number(), tx));
            }
        }
        let current = net.p.b.ch.our_commitment_number();
        let revoked: Vec<_> = held.iter().filter(|(n, _)| *n < current).cloned().collect();
        prop_assume!(!revoked.is_empty());
        let (_, cheat) = revoked[which % revoked.len()].clone();
        let s = JusticeSettings { fee_rate: FeeRate::from_sat_per_vb(rate).unwrap(), ..settings(&net, None) };
        let mut t = Tower::new(TowerConfig::default());
        let mut store = Store::default();
        for r in &net.p.a.revoked {
            if let Ok(p) = justice_package(r, &s, &*net.p.a.signer) {
                t.handle_package(1, p).unwrap();
            }
        }
        drain(&mut t, &mut store);
        net.submit_monitor[0] = false;
        net.chain.submit(cheat.clone()).unwrap();
        net.mine();
        let events = show(&mut net, &mut t, &mut store);
        prop_assert!(events.iter().any(|e| matches!(e, TowerEvent::Punished { .. })), "{:?}", events);
        net.mine();
        // Every output of the cheat but A's own is spent by the tower's
        // penalties, paying A.
        let txid = cheat.compute_txid();
        let a_own = ScriptBuf::new_p2wpkh(&net.p.a.signer.public_key(KeyRole::Final).wpubkey_hash());
        for vout in 0..cheat.output.len() as u32 {
            let out = &cheat.output[vout as usize];
            if out.script_pubkey == a_own {
                continue;
            }
            let spender = net.chain.spender(&OutPoint { txid, vout }).cloned();
            prop_assert!(spender.is_some(), "output {} of the cheat is unspent", vout);
            prop_assert_eq!(spender.unwrap().output[0].script_pubkey.clone(), s.destination.clone());
        }
    }
}

#[test]
fn a_revoked_commitment_not_yet_handed_over_survives_a_crash() {
    let (mut net, _) = history();
    let handed = net.p.a.revoked.len();
    // From B's next revocation on, A's writes land but are not confirmed:
    // the Revoked output waits behind them.
    net.offer('A', 2_000_000, 9, 40);
    for _ in 0..40 {
        for node in [&mut net.p.a, &mut net.p.b] {
            if node.ch.can_commit() {
                node.ch.commit().unwrap();
            }
        }
        net.p.pump();
        if matches!(net.p.b_to_a.front().map(|q| q.message()), Some(Message::UpdateRevocation(_))) {
            net.p.a.auto_persist = false;
            net.p.deliver(Dir::BToA);
            net.p.pump();
            break;
        }
        net.p.deliver(Dir::AToB);
        net.p.deliver(Dir::BToA);
    }
    assert!(!net.p.a.auto_persist, "B revoked");
    assert_eq!(net.p.a.revoked.len(), handed, "nothing released");
    // A crashes: from its journal, and from a snapshot of that moment, the
    // revoked commitment comes out again, rebuilt to the same transaction.
    let snapshot = net.p.a.ch.snapshot();
    for mut restored in [
        net.p.a.restored().unwrap(),
        paychan::channel::Channel::restore(&snapshot, [], net.p.a.signer.clone()).unwrap(),
    ] {
        let again: Vec<RevokedCommitment> = std::iter::from_fn(|| restored.poll_output())
            .filter_map(|o| if let paychan::channel::Output::Revoked(r) = o { Some(*r) } else { None })
            .collect();
        assert!(!again.is_empty());
        net.p.a.ch.handle_persisted(net.p.a.persisted_version);
        for r in &again {
            assert!(r.preimage.hash() == r.commitment.revocation_hash());
            assert!(justice_package(r, &settings(&net, None), &*net.p.a.signer).is_ok());
        }
    }
    // The live channel releases the same ones once its writes are durable.
    net.p.pump();
    assert!(net.p.a.revoked.len() > handed);
}

#[test]
fn a_reward_that_would_not_relay_is_refused() {
    let (net, _) = history();
    let revoked = packages(&net, &settings(&net, None)).remove(0).0;
    let dust = Reward { amount: Amount::from_sat(293), ..reward() };
    let bare = Reward { script_pubkey: ScriptBuf::from_bytes(vec![0x51]), amount: Amount::from_sat(10_000) };
    for bad in [dust, bare] {
        let amount = bad.amount;
        let result = justice_package(&revoked, &settings(&net, Some(bad)), &*net.p.a.signer);
        // W1-c: a reward output the network would not relay would stall the
        // whole penalty.
        assert_eq!(result, Err(JusticeError::BadReward(amount)));
    }
    assert!(justice_package(
        &revoked,
        &settings(&net, Some(Reward { amount: Amount::from_sat(294), ..reward() })),
        &*net.p.a.signer
    )
    .is_ok());
}

#[test]
fn a_cheater_cannot_displace_the_victims_penalties_and_a_restart_keeps_sending_them() {
    let (mut net, held) = history();
    let s = settings(&net, None);
    let (revoked, package) = packages(&net, &s).pop().unwrap();
    let txid = revoked.commitment.txid();
    let cheat = held.iter().find(|(_, tx)| tx.compute_txid() == txid).unwrap().1.clone();
    let mut t = Tower::new(TowerConfig::default());
    let mut store = Store::default();
    t.handle_package(1, package).unwrap();
    // The cheater, a client of the same tower, knows its commitment's txid:
    // it files junk that opens, a "penalty" paying itself with a bad
    // signature.
    let mut junk = tower::package::open(&txid, &justice_package(&revoked, &s, &*net.p.a.signer).unwrap().blob).unwrap();
    junk[0].output[0].script_pubkey = ScriptBuf::new_p2wpkh(&common::pubkey(66).wpubkey_hash());
    t.handle_package(2, JusticePackage { hint: tower::hint(&txid), blob: tower::package::seal(&txid, &junk) }).unwrap();
    drain(&mut t, &mut store);
    net.submit_monitor[0] = false;
    net.chain.submit(cheat).unwrap();
    net.mine();
    // The tower crashes after writing, before its broadcasts left.
    let block = net.chain.block(net.height()).unwrap().clone();
    t.block_connected(block.height, &block.txs);
    while let Some(o) = t.poll_output() {
        match o {
            TowerOutput::Persist(w) => {
                store.apply(&w);
                t.handle_persisted(w.seq());
            }
            _ => break,
        }
    }
    let mut t = Tower::restore(TowerConfig::default(), store.snapshot.as_deref(), store.entries()).unwrap();
    // W1-b: with the next block, both punishments go out again; the
    // victim's is there whatever the cheater filed.
    net.mine();
    let (txs, _) = {
        let height = net.height();
        let block = net.chain.block(height).unwrap().clone();
        t.block_connected(height, &block.txs);
        drain(&mut t, &mut store)
    };
    let victims = tower::package::open(&txid, &justice_package(&revoked, &s, &*net.p.a.signer).unwrap().blob).unwrap();
    for p in &victims {
        assert!(txs.contains(p), "the victim's penalty is sent again after the restart");
        net.chain.submit(p.clone()).unwrap();
    }
    assert!(net.chain.submit(junk[0].clone()).is_err(), "the junk does not verify");
    net.mine();
    // Once the victim's penalty confirms, the tower stops sending both.
    let height = net.height();
    let block = net.chain.block(height).unwrap().clone();
    t.block_connected(height, &block.txs);
    drain(&mut t, &mut store);
    t.block_connected(height + 1, &[]);
    let (again, _) = drain(&mut t, &mut store);
    assert!(again.is_empty(), "{again:?}");
}
