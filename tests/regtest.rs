//! End to end against a real Bitcoin Core node in regtest (`BITCOIND_EXE`):
//! every transaction the library emits goes through `testmempoolaccept`
//! (consensus and relay policy: fees at 1 sat/vB, dust, standardness,
//! MINIMALIF, lock times) and then into a mined block. Without
//! `BITCOIND_EXE` each test says plainly that it did not run.

mod common;

use std::sync::{Arc, Mutex};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use common::regtest::{Bitcoind, Wallet};
use paychan::chain::{MonitorEvent, SpendKind};
use paychan::channel::ChannelConfig;
use paychan::sim::{Pair, Wallet as PairWallet};
use paychan::{MilliSats, Preimage};

/// What the node said about each kind of transaction, printed at the end of
/// each test (`--nocapture` shows it).
#[derive(Default)]
struct Verdicts(Vec<(String, Result<(), String>)>);

impl Verdicts {
    /// `testmempoolaccept`, then `sendrawtransaction` when accepted.
    fn submit(&mut self, node: &Bitcoind, what: impl Into<String>, tx: &Transaction) -> Result<(), String> {
        let what = what.into();
        let verdict = node.accept(tx);
        if verdict.is_ok() {
            node.send(tx).expect("accepted by testmempoolaccept, so sent");
        }
        self.0.push((what, verdict.clone()));
        verdict
    }

    fn refused(&mut self, node: &Bitcoind, what: impl Into<String>, tx: &Transaction) -> String {
        let what = what.into();
        let verdict = node.accept(tx);
        self.0.push((what.clone(), verdict.clone()));
        verdict.expect_err(&format!("{what} must be refused"))
    }

    fn print(&self, test: &str) {
        for (what, verdict) in &self.0 {
            match verdict {
                Ok(()) => eprintln!("{test}: {what}: accepted"),
                Err(e) => eprintln!("{test}: {what}: refused ({e})"),
            }
        }
    }
}

fn shared_wallet(wallet: &Arc<Mutex<Wallet>>) -> PairWallet {
    let wallet = wallet.clone();
    Box::new(move |amount, script| wallet.lock().expect("not poisoned").pay(amount, script))
}

/// Both channels and monitors see every block up to the node's tip.
fn follow(node: &Bitcoind, p: &mut Pair, from: &mut u32) {
    let tip = node.height();
    while *from < tip {
        *from += 1;
        let block = node.block(*from);
        let time = block.header.time;
        for n in [&mut p.a, &mut p.b] {
            n.monitor.block_connected(*from, block.block_hash(), time, &block.txdata).expect("in order");
            n.drain_monitor();
        }
        p.a.ch.handle_block(*from, time);
        p.b.ch.handle_block(*from, time);
        p.pump();
    }
}

/// A channel of `capacity` open on a real anchor; returns the pair, the
/// wallet, and the last block the pair saw.
fn open(node: &Bitcoind, v: &mut Verdicts, config: ChannelConfig, capacity: Amount) -> (Pair, Arc<Mutex<Wallet>>, u32) {
    let wallet = Arc::new(Mutex::new(Wallet::new(node, 900, 3)));
    let mut p = Pair::with_wallet(config.clone(), config, capacity, shared_wallet(&wallet));
    let mut seen = 0;
    follow(node, &mut p, &mut seen);
    p.deliver_all();
    let anchor = p.a.anchor.clone().expect("A's wallet funded the anchor");
    v.submit(node, "anchor (funding)", &anchor).expect("the anchor relays");
    let miner = wallet.lock().unwrap().address.clone();
    node.mine(3, &miner);
    follow(node, &mut p, &mut seen);
    p.confirm(3);
    p.deliver_all();
    assert!(p.a.ch.is_open() && p.b.ch.is_open());
    (p, wallet, seen)
}

fn pay(p: &mut Pair, from: char, msat: u64, tag: u8, expiry: u32) -> u64 {
    let r = Preimage([tag; 32]);
    let id = p
        .node(from)
        .ch
        .offer_htlc(MilliSats::from_msat(msat), r.hash(), LockTime::from_height(expiry).unwrap(), vec![])
        .unwrap();
    p.settle();
    id
}

#[test]
fn a_channel_lives_its_whole_life_on_a_real_anchor() {
    let Some(node) = Bitcoind::start("life") else { return };
    let mut v = Verdicts::default();
    let (mut p, wallet, mut seen) = open(&node, &mut v, ChannelConfig::default(), Amount::from_sat(1_000_000));
    let expiry = node.height() + 500;
    // Payments both ways.
    for i in 0..5u8 {
        let id = pay(&mut p, 'A', 40_000_000, 10 + i, expiry);
        p.b.ch.fulfill_htlc(id, Preimage([10 + i; 32])).unwrap();
        p.settle();
    }
    let id = pay(&mut p, 'B', 15_000_000, 30, expiry);
    p.a.ch.fulfill_htlc(id, Preimage([30; 32])).unwrap();
    p.settle();
    // A fee change, committed.
    p.a.ch.update_fee(12_000).unwrap();
    p.settle();
    // Every current commitment, with HTLCs in flight, relays as it is.
    let to_b = pay(&mut p, 'A', 20_000_000, 40, expiry);
    let to_a = pay(&mut p, 'B', 9_000_000, 41, expiry);
    for (who, tx) in [('A', p.a.ch.signed_commitment()), ('B', p.b.ch.signed_commitment())] {
        let tx = tx.unwrap();
        let verdict = node.accept(&tx);
        v.0.push((format!("{who}'s commitment with 2 HTLCs (test only)"), verdict.clone()));
        verdict.expect("a commitment relays");
    }
    p.b.ch.fulfill_htlc(to_b, Preimage([40; 32])).unwrap();
    p.a.ch.fail_htlc(to_a, vec![]).unwrap();
    p.settle();
    // Cooperative close.
    p.a.ch.close().unwrap();
    p.settle();
    let close =
        p.a.events
            .iter()
            .find_map(|e| match e {
                paychan::channel::Event::ChannelClosed { tx } => Some(tx.clone()),
                _ => None,
            })
            .expect("the close");
    v.submit(&node, "cooperative close", &close).expect("the close relays");
    let miner = wallet.lock().unwrap().address.clone();
    node.mine(1, &miner);
    follow(&node, &mut p, &mut seen);
    assert_eq!(node.confirmations(&close.compute_txid()), 1);
    assert_eq!(p.a.monitor.spend().map(|(_, k)| k), Some(SpendKind::MutualClose));
    v.print("life");
}

/// B broadcasts a revoked commitment holding `a_htlcs` HTLCs from A and
/// `b_htlcs` from B; A's monitor punishes it on the real node.
fn cheat(test: &str, a_htlcs: usize, b_htlcs: usize) {
    let Some(node) = Bitcoind::start(test) else { return };
    let mut v = Verdicts::default();
    let config = ChannelConfig { fee_rate: 1_341, min_fee_rate: 1_341, ..ChannelConfig::default() };
    let (mut p, wallet, mut seen) = open(&node, &mut v, config, Amount::from_sat(4_000_000));
    let expiry = node.height() + 500;
    // B gets a balance, then HTLCs pile up both ways in one commit each.
    let id = pay(&mut p, 'A', 2_000_000_000, 1, expiry);
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).unwrap();
    p.settle();
    for i in 0..a_htlcs.max(b_htlcs) {
        let r =
            Preimage(<bitcoin::hashes::sha256::Hash as bitcoin::hashes::Hash>::hash(&i.to_le_bytes()).to_byte_array());
        let lock = LockTime::from_height(expiry).unwrap();
        if i < a_htlcs {
            p.a.ch.offer_htlc(MilliSats::from_msat(700_000), r.hash(), lock, vec![]).unwrap();
        }
        if i < b_htlcs {
            p.b.ch.offer_htlc(MilliSats::from_msat(700_000), r.hash(), lock, vec![]).unwrap();
        }
    }
    p.record_off();
    p.settle();
    p.a.record = true;
    p.b.record = true;
    let old = p.b.ch.signed_commitment().unwrap();
    let outputs = old.output.len();
    // The channel moves on (a fee change, or B fails one of A's HTLCs): B
    // revokes it.
    if a_htlcs > 0 {
        p.b.ch.fail_htlc(1, vec![]).unwrap();
    } else {
        p.a.ch.update_fee(2_000).unwrap();
    }
    p.settle();
    assert!(p.b.ch.our_commitment_number() > old_number(&p, &old));
    v.submit(&node, format!("revoked commitment with {outputs} outputs"), &old).expect("a commitment relays");
    let miner = wallet.lock().unwrap().address.clone();
    node.mine(1, &miner);
    follow(&node, &mut p, &mut seen);
    assert_eq!(
        p.a.monitor.spend().map(|(_, k)| k),
        Some(SpendKind::RevokedCommitment { number: old_number(&p, &old) })
    );
    // Every penalty relays and confirms.
    let penalties: Vec<Transaction> =
        p.a.monitor_broadcasts
            .iter()
            .filter(|t| t.input.iter().any(|i| i.previous_output.txid == old.compute_txid()))
            .cloned()
            .collect();
    assert!(!penalties.is_empty());
    let mut swept = std::collections::BTreeSet::new();
    for tx in &penalties {
        if swept.iter().any(|o: &OutPoint| tx.input.iter().any(|i| i.previous_output == *o)) {
            continue;
        }
        let what = format!("penalty of {} inputs, {} bytes", tx.input.len(), tx.total_size());
        v.submit(&node, what, tx).expect("a penalty relays");
        swept.extend(tx.input.iter().map(|i| i.previous_output));
    }
    node.mine(1, &miner);
    follow(&node, &mut p, &mut seen);
    let a_final = ScriptBuf::new_p2wpkh(
        &paychan::tx::Signer::public_key(&*p.a.signer, paychan::tx::KeyRole::Final).wpubkey_hash(),
    );
    for (vout, o) in old.output.iter().enumerate() {
        let outpoint = OutPoint { txid: old.compute_txid(), vout: vout as u32 };
        assert!(o.script_pubkey == a_final || swept.contains(&outpoint), "output {vout} not punished");
    }
    assert!(penalties.iter().all(|t| t.total_size() < 100_000));
    assert!(p.a.monitor_events.iter().any(|e| matches!(e, MonitorEvent::AnchorSpent { .. })));
    v.print(test);
}

fn old_number(p: &Pair, old: &Transaction) -> u64 {
    let params = p.a.monitor.params().unwrap();
    paychan::tx::commitment::commitment_number(old, params.obscuring).unwrap()
}

#[test]
fn a_cheat_without_htlcs_is_punished() {
    cheat("cheat0", 0, 0);
}

#[test]
fn a_cheat_with_50_htlcs_is_punished() {
    cheat("cheat50", 25, 25);
}

#[test]
fn a_cheat_with_the_most_htlc_outputs_is_punished() {
    let most = paychan::channel::MAX_HTLC_OUTPUTS_PER_SIDE;
    cheat("cheat_max", most, most);
}

#[test]
fn the_one_way_channel_pays_closes_and_refunds_on_a_real_node() {
    use paychan::oneway::script::{ChannelScript, OutputKind};
    use paychan::oneway::tx::{ChannelOutput, DustPolicy};
    use paychan::tx::{InMemorySigner, KeyRole};
    let Some(node) = Bitcoind::start("oneway") else { return };
    let mut v = Verdicts::default();
    let mut wallet = Wallet::new(&node, 901, 4);
    let client = InMemorySigner::new(common::secret(31), common::secret(32));
    let merchant = InMemorySigner::new(common::secret(33), common::secret(34));
    let (ck, mk) = (KeyRole::Oneway(0), KeyRole::Oneway(0));
    let payee = wallet.address.script_pubkey();
    for kind in [OutputKind::P2wsh, OutputKind::P2sh] {
        let t = bitcoin::absolute::Height::from_consensus(node.height() + 20).unwrap();
        let script = ChannelScript::new(
            paychan::tx::Signer::public_key(&client, ck),
            paychan::tx::Signer::public_key(&merchant, mk),
            t,
        )
        .unwrap();
        // Two channels of this kind: one closed by the merchant, one
        // refunded.
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let (funding, vout) = wallet.pay(Amount::from_sat(200_000), script.script_pubkey(kind));
            v.submit(&node, format!("{kind:?} funding"), &funding).unwrap();
            outputs.push(ChannelOutput {
                outpoint: OutPoint { txid: funding.compute_txid(), vout },
                value: Amount::from_sat(200_000),
                script,
                kind,
            });
        }
        node.mine(1, &wallet.address);
        // The merchant's close of the best payment (M4-a).
        let c = &outputs[0];
        let change = ScriptBuf::new_p2wpkh(&common::pubkey(35).wpubkey_hash());
        let mut tx = c
            .payment_tx(
                payee.clone(),
                Amount::from_sat(70_000),
                change,
                FeeRate::from_sat_per_vb_u32(1),
                &DustPolicy::default(),
            )
            .unwrap();
        let sig_a = c.sign(&tx, &client, ck).unwrap();
        let sig_b = c.sign(&tx, &merchant, mk).unwrap();
        c.finalize_cooperative(&mut tx, &sig_a, &sig_b);
        v.submit(&node, format!("{kind:?} payment, countersigned (the close) at 1 sat/vB"), &tx).unwrap();
        // The refund: refused before T, accepted from T (M4-d).
        let r = &outputs[1];
        let refund = r.refund(wallet.address.script_pubkey(), FeeRate::from_sat_per_vb_u32(1), &client, ck).unwrap();
        let why = v.refused(&node, format!("{kind:?} refund before T"), &refund);
        assert!(why.contains("non-final"), "{why}");
        while node.height() < t.to_consensus_u32() {
            node.mine(1, &wallet.address);
        }
        v.submit(&node, format!("{kind:?} refund at T"), &refund).unwrap();
        node.mine(1, &wallet.address);
        assert_eq!(node.confirmations(&refund.compute_txid()), 1);
        assert!(node.confirmations(&tx.compute_txid()) > 1);
    }
    v.print("oneway");
}

/// Submits what the monitors broadcast that the node has not taken yet;
/// returns how many were accepted now. A claim the node refuses is tried
/// again at the next call (its lock may not be open yet); its last reason is
/// kept in `pending`.
fn relay(
    node: &Bitcoind,
    p: &Pair,
    v: &mut Verdicts,
    known: &mut std::collections::BTreeSet<bitcoin::Txid>,
    pending: &mut std::collections::BTreeMap<bitcoin::Txid, String>,
) -> usize {
    let mut accepted = 0;
    for (who, txs) in [("A", &p.a.monitor_broadcasts), ("B", &p.b.monitor_broadcasts)] {
        for tx in txs.iter().rev().take(20) {
            let txid = tx.compute_txid();
            if known.contains(&txid) {
                continue;
            }
            let kinds: Vec<&str> = tx
                .input
                .iter()
                .map(|i| match (i.witness.len(), i.witness.nth(1)) {
                    (3, Some([])) => "to-self after the delay",
                    (3, Some(w)) if w == [0u8; 32] => "HTLC timeout",
                    (3, Some(_)) => "HTLC claim with R",
                    _ => "other",
                })
                .collect();
            match node.accept(tx) {
                Ok(()) => {
                    v.submit(node, format!("{who}'s monitor: {}", kinds.join(", ")), tx).expect("just accepted");
                    known.insert(txid);
                    pending.remove(&txid);
                    accepted += 1;
                }
                Err(e) => {
                    pending.insert(txid, format!("{who}: {} ({e})", kinds.join(", ")));
                }
            }
        }
    }
    accepted
}

#[test]
fn a_unilateral_close_with_htlcs_both_ways_is_resolved_by_both_monitors() {
    use paychan::tx::commitment::{HtlcDirection, OutputKind as Kind};
    let Some(node) = Bitcoind::start("unilateral") else { return };
    let mut v = Verdicts::default();
    // A short delay keeps the run to a hundred blocks.
    let config = ChannelConfig { delay: paychan::types::Delay::Blocks(20), ..ChannelConfig::default() };
    let (mut p, wallet, mut seen) = open(&node, &mut v, config, Amount::from_sat(1_000_000));
    let miner = wallet.lock().unwrap().address.clone();
    let now = node.height();
    // B gets a balance; then two HTLCs each way.
    let id = pay(&mut p, 'A', 300_000_000, 1, now + 100);
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).unwrap();
    p.settle();
    let h1 = pay(&mut p, 'A', 20_000_000, 11, now + 60); // B will know R
    let h2 = pay(&mut p, 'A', 15_000_000, 12, now + 62); // B never knows R
    let h3 = pay(&mut p, 'B', 12_000_000, 13, now + 60); // A will know R
    let _h4 = pay(&mut p, 'B', 7_000_000, 14, now + 64); // A never knows R
                                                         // Each learns one R; neither fulfill arrives; B vanishes and closes.
    p.b.ch.fulfill_htlc(h1, Preimage([11; 32])).unwrap();
    p.a.ch.fulfill_htlc(h3, Preimage([13; 32])).unwrap();
    p.pump();
    p.a_to_b.clear();
    p.b_to_a.clear();
    let b_commitment = p.b.ch.our_commitment_tx().unwrap();
    p.b.ch.fail("gone");
    p.pump();
    let tx = p.b.broadcasts.last().unwrap().clone();
    assert_eq!(tx.compute_txid(), b_commitment.txid());
    v.submit(&node, "B's commitment with 4 HTLCs", &tx).unwrap();
    node.mine(1, &miner);
    let closed_at = node.height();
    follow(&node, &mut p, &mut seen);
    let mut known = std::collections::BTreeSet::new();
    let mut pending = std::collections::BTreeMap::new();
    // C1-d, R6.2-c: A claims B's HTLC with R at once.
    assert!(relay(&node, &p, &mut v, &mut known, &mut pending) >= 1);
    // R6.2-b: A's timeout of h2 and B's to-self sweep are refused before
    // their CLTV and CSV, by the node itself.
    let a_dest = paychan::sim::destination(&p.a.signer);
    let h2_out = b_commitment.htlc_output(HtlcDirection::Received, h2).unwrap().vout;
    let early =
        paychan::tx::htlc::timeout_sweep(&b_commitment, h2_out, a_dest, FeeRate::from_sat_per_vb_u32(2), &*p.a.signer)
            .unwrap();
    let why = v.refused(&node, "A's HTLC timeout before its expiry", &early);
    assert!(why.contains("non-final"), "{why}");
    let to_self = b_commitment.outputs().iter().find(|o| o.kind == Kind::ToOwner).unwrap().vout;
    let b_dest = paychan::sim::destination(&p.b.signer);
    let early_self = paychan::tx::sweep::to_self_sweep(
        &b_commitment,
        to_self,
        b_dest,
        FeeRate::from_sat_per_vb_u32(2),
        &*p.b.signer,
    )
    .unwrap();
    let why = v.refused(&node, "B's to-self sweep before its delay", &early_self);
    assert!(why.contains("non-BIP68-final"), "{why}");
    // Time passes: every lock opens; each monitor's claims relay and
    // confirm.
    while node.height() < now + 64 + 22 {
        node.mine(2, &miner);
        follow(&node, &mut p, &mut seen);
        relay(&node, &p, &mut v, &mut known, &mut pending);
    }
    node.mine(1, &miner);
    follow(&node, &mut p, &mut seen);
    // Every output of B's commitment is resolved on the real chain, but
    // A's own P2WPKH.
    let spent: std::collections::BTreeSet<OutPoint> = (closed_at..=node.height())
        .flat_map(|h| node.block(h).txdata)
        .flat_map(|t| t.input.into_iter().map(|i| i.previous_output))
        .collect();
    for o in b_commitment.outputs() {
        if o.kind == Kind::ToOther {
            continue;
        }
        assert!(
            spent.contains(&OutPoint { txid: tx.compute_txid(), vout: o.vout }),
            "output {} ({:?}) unresolved; refused: {:?}; A: {:?}; B: {:?}",
            o.vout,
            o.kind,
            pending,
            p.a.monitor_events,
            p.b.monitor_events
        );
    }
    // R6.2-a: A read R of h1 from B's claim on chain.
    assert!(p.a.monitor_events.iter().any(|e| matches!(e,
        MonitorEvent::PreimageLearned { id, preimage, .. } if *id == h1 && *preimage == Preimage([11; 32]))));
    v.print("unilateral");
}

#[test]
fn a_tower_punishes_on_a_real_node() {
    use paychan::tower::{justice_package, JusticeSettings, Reward, Tower, TowerConfig, TowerEvent, TowerOutput};
    let Some(node) = Bitcoind::start("tower") else { return };
    let mut v = Verdicts::default();
    let config = ChannelConfig { export_revoked: true, ..ChannelConfig::default() };
    let (mut p, wallet, mut seen) = open(&node, &mut v, config, Amount::from_sat(2_000_000));
    let expiry = node.height() + 500;
    let id = pay(&mut p, 'A', 900_000_000, 1, expiry);
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).unwrap();
    p.settle();
    for tag in 2..12 {
        pay(&mut p, if tag % 2 == 0 { 'A' } else { 'B' }, 3_000_000, tag, expiry);
    }
    let old = p.b.ch.signed_commitment().unwrap();
    p.b.ch.fail_htlc(1, vec![]).unwrap();
    p.settle();
    // W1-a, W1-c: A's packages, with a reward for the tower.
    let reward = Reward {
        script_pubkey: ScriptBuf::new_p2wpkh(&common::pubkey(9).wpubkey_hash()),
        amount: Amount::from_sat(2_000),
    };
    let settings = JusticeSettings {
        destination: paychan::sim::destination(&p.a.signer),
        fee_rate: FeeRate::from_sat_per_vb(3).unwrap(),
        reward: Some(reward.clone()),
    };
    let mut tower = Tower::new(TowerConfig::default());
    for r in &p.a.revoked {
        if let Ok(package) = justice_package(r, &settings, &*p.a.signer) {
            tower.handle_package(1, package).unwrap();
        }
    }
    // B cheats; A is offline; the tower sees the block (W1-b).
    v.submit(&node, format!("revoked commitment with {} outputs", old.output.len()), &old).expect("relays");
    let miner = wallet.lock().unwrap().address.clone();
    node.mine(1, &miner);
    let block = node.block(node.height());
    tower.block_connected(node.height(), &block.txdata);
    let mut penalties = Vec::new();
    let mut punished = false;
    while let Some(o) = tower.poll_output() {
        match o {
            TowerOutput::Persist(w) => tower.handle_persisted(w.seq()),
            TowerOutput::Broadcast(tx) => penalties.push(tx),
            TowerOutput::Event(TowerEvent::Punished { commitment, .. }) => punished |= commitment == old.compute_txid(),
            _ => {}
        }
    }
    assert!(punished && !penalties.is_empty());
    // Bitcoin Core's relay policy takes the tower's penalties, reward and
    // all, and they confirm.
    for tx in &penalties {
        let what = format!("tower penalty of {} inputs, {} outputs", tx.input.len(), tx.output.len());
        v.submit(&node, what, tx).expect("a tower's penalty relays");
    }
    node.mine(1, &miner);
    for tx in &penalties {
        assert!(node.confirmations(&tx.compute_txid()) >= 1);
    }
    assert!(penalties[0].output.iter().any(|o| o.script_pubkey == reward.script_pubkey && o.value == reward.amount));
    follow(&node, &mut p, &mut seen);
    v.print("tower");
}
