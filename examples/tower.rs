//! A watchtower at work (W1-a..W1-d): Alice hands a tower a justice package
//! for each of Bob's commitments he revokes as they pay each other; she goes
//! offline; Bob broadcasts a revoked commitment; the tower, which holds no
//! key and could read nothing until then, punishes him; Alice comes back and
//! finds her money.
//!
//! The chain is a real Bitcoin Core node in regtest when `BITCOIND_EXE` is
//! set, the simulated chain otherwise (every input checked by Bitcoin Core's
//! script interpreter).
//!
//! Run with `cargo run --example tower`.

#[path = "support/interpreter.rs"]
mod interpreter;
#[path = "../tests/common/regtest.rs"]
#[allow(dead_code)]
mod regtest;

use std::sync::{Arc, Mutex};

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, BlockHash, FeeRate, ScriptBuf, Transaction};
use paychan::chain::{Balance, MonitorEvent};
use paychan::channel::ChannelConfig;
use paychan::sim::{destination, funding_tx, secret, Pair, Store};
use paychan::tower::{
    justice_package, JusticeError, JusticeSettings, Reward, Tower, TowerConfig, TowerEvent, TowerOutput,
};
use paychan::tx::{KeyRole, Signer as _};
use paychan::types::Delay;
use paychan::{MilliSats, Preimage};

/// Where blocks come from.
enum Chain {
    Sim(Box<paychan::sim::chain::SimChain>),
    Regtest(regtest::Bitcoind, Arc<Mutex<regtest::Wallet>>),
}

/// One block as everyone sees it.
struct Block {
    height: u32,
    hash: BlockHash,
    time: u32,
    txs: Vec<Transaction>,
}

impl Chain {
    fn new() -> Chain {
        match regtest::Bitcoind::start("tower") {
            Some(node) => {
                let wallet = Arc::new(Mutex::new(regtest::Wallet::new(&node, 900, 2)));
                Chain::Regtest(node, wallet)
            }
            None => {
                let mut chain = interpreter::verified_chain();
                chain.mine_empty(100);
                Chain::Sim(Box::new(chain))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Chain::Sim(_) => "the simulated chain (set BITCOIND_EXE for a regtest node)",
            Chain::Regtest(..) => "a Bitcoin Core regtest node",
        }
    }

    /// Alice's wallet, which funds the anchor.
    fn wallet(&self) -> paychan::sim::Wallet {
        match self {
            Chain::Sim(_) => Box::new(|amount, script| (funding_tx(script, amount), 0)),
            Chain::Regtest(_, wallet) => {
                let wallet = wallet.clone();
                Box::new(move |amount, script| wallet.lock().expect("not poisoned").pay(amount, script))
            }
        }
    }

    /// Hands `tx` to the mempool (for a node: `testmempoolaccept`, then
    /// `sendrawtransaction`).
    fn submit(&mut self, tx: &Transaction) -> Result<(), String> {
        match self {
            Chain::Sim(chain) => chain.submit(tx.clone()).map(drop).map_err(|e| format!("{e:?}")),
            Chain::Regtest(node, _) => node.accept(tx).and_then(|()| node.send(tx).map(drop)),
        }
    }

    /// The anchor: a real wallet spend on a node; on the simulated chain the
    /// stand-in spends nothing the chain knows, so it is adopted.
    fn anchor(&mut self, tx: &Transaction) {
        match self {
            Chain::Sim(chain) => {
                chain.adopt(tx.clone());
            }
            Chain::Regtest(..) => self.submit(tx).expect("the anchor relays"),
        }
    }

    /// Mines `n` blocks; returns them.
    fn mine(&mut self, n: u32) -> Vec<Block> {
        match self {
            Chain::Sim(chain) => (0..n)
                .map(|_| {
                    let b = chain.mine();
                    Block { height: b.height, hash: b.hash, time: b.time, txs: b.txs }
                })
                .collect(),
            Chain::Regtest(node, wallet) => {
                let from = node.height();
                let address = wallet.lock().expect("not poisoned").address.clone();
                node.mine(n, &address);
                (from + 1..=node.height())
                    .map(|h| {
                        let b = node.block(h);
                        Block { height: h, hash: b.block_hash(), time: b.header.time, txs: b.txdata }
                    })
                    .collect()
            }
        }
    }

    fn height(&self) -> u32 {
        match self {
            Chain::Sim(chain) => chain.height(),
            Chain::Regtest(node, _) => node.height(),
        }
    }
}

/// Channels and monitors see `blocks`; Alice's only when she is online.
fn show(p: &mut Pair, blocks: &[Block], alice_online: bool) {
    for b in blocks {
        let nodes = if alice_online { vec![&mut p.a, &mut p.b] } else { vec![&mut p.b] };
        for n in nodes {
            n.monitor.block_connected(b.height, b.hash, b.time, &b.txs).expect("in order");
            n.drain_monitor();
            n.ch.handle_block(b.height, b.time);
        }
    }
    p.pump();
}

fn pay(p: &mut Pair, from: char, msat: u64, tag: u8, expiry: u32) -> u64 {
    let r = Preimage([tag; 32]);
    let lock = LockTime::from_height(expiry).expect("a height");
    let id = p.node(from).ch.offer_htlc(MilliSats::from_msat(msat), r.hash(), lock, vec![]).expect("affordable");
    p.settle();
    id
}

/// The tower's outputs: writes stored, broadcasts and events returned.
fn drain(tower: &mut Tower, store: &mut Store) -> (Vec<Transaction>, Vec<TowerEvent>) {
    let (mut txs, mut events) = (Vec::new(), Vec::new());
    while let Some(o) = tower.poll_output() {
        match o {
            TowerOutput::Persist(w) => {
                store.apply(&w);
                tower.handle_persisted(w.seq());
            }
            TowerOutput::Broadcast(tx) => txs.push(tx),
            TowerOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
    (txs, events)
}

fn main() {
    let mut chain = Chain::new();
    println!("The chain: {}", chain.name());
    let config = ChannelConfig { delay: Delay::Blocks(144), export_revoked: true, ..ChannelConfig::default() };
    let mut p = Pair::with_wallet(config.clone(), config, Amount::from_sat(1_000_000), chain.wallet());
    p.deliver_all();
    let anchor = p.a.anchor.clone().expect("Alice's wallet funded the anchor");
    chain.anchor(&anchor);
    let blocks = chain.mine(3);
    show(&mut p, &blocks, true);
    p.confirm(3);
    p.deliver_all();
    assert!(p.a.ch.is_open() && p.b.ch.is_open());
    println!("Alice and Bob open a channel of 1,000,000 sat (anchor {})", anchor.compute_txid());

    // The tower: a reward of 1,000 sat per punishment, agreed in advance.
    let reward_key = secret(500);
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    let reward_pk = bitcoin::CompressedPublicKey(reward_key.public_key(&secp));
    let reward =
        Reward { script_pubkey: ScriptBuf::new_p2wpkh(&reward_pk.wpubkey_hash()), amount: Amount::from_sat(1_000) };
    let mut tower = Tower::new(TowerConfig::default());
    let mut tower_store = Store::default();
    let alice = 1;
    let settings = JusticeSettings {
        destination: destination(&p.a.signer),
        fee_rate: FeeRate::from_sat_per_vb(10).expect("a small rate"),
        reward: Some(reward.clone()),
    };
    let mut handed = 0;
    let mut hand_over = |p: &Pair, tower: &mut Tower, store: &mut Store| {
        for r in &p.a.revoked[handed..] {
            match justice_package(r, &settings, &*p.a.signer) {
                Ok(package) => {
                    let bytes = package.blob.len();
                    tower.handle_package(alice, package).expect("within quota");
                    let (_, events) = drain(tower, store);
                    let stored = events.iter().any(|e| matches!(e, TowerEvent::Stored { .. }));
                    println!("  Bob revoked his commitment {}: Alice hands the tower {bytes} sealed bytes (stored: {stored})", r.number);
                }
                Err(JusticeError::Nothing(_)) => {
                    println!("  Bob revoked his commitment {}: it pays him nothing, nothing to hand over", r.number)
                }
                Err(e) => panic!("{e}"),
            }
        }
        handed = p.a.revoked.len();
    };

    println!("They pay each other:");
    let expiry = chain.height() + 400;
    let id = pay(&mut p, 'A', 400_000_000, 1, expiry);
    p.b.ch.fulfill_htlc(id, Preimage([1; 32])).expect("committed");
    p.settle();
    hand_over(&p, &mut tower, &mut tower_store);
    let second = pay(&mut p, 'A', 50_000_000, 2, expiry);
    pay(&mut p, 'B', 30_000_000, 3, expiry);
    hand_over(&p, &mut tower, &mut tower_store);
    let old = p.b.ch.signed_commitment().expect("signed");
    let old_number = p.b.ch.our_commitment_number();
    println!("  Bob keeps a copy of his commitment {old_number} (two HTLCs in flight)");
    p.b.ch.fulfill_htlc(second, Preimage([2; 32])).expect("committed");
    p.settle();
    hand_over(&p, &mut tower, &mut tower_store);
    println!("  the tower keeps {} packages for Alice, {} bytes", tower.usage(alice).0, tower.usage(alice).1);

    println!("Alice goes offline. Bob broadcasts his revoked commitment {old_number}:");
    chain.submit(&old).expect("a valid commitment relays");
    let blocks = chain.mine(1);
    show(&mut p, &blocks, false);
    let mut penalties = Vec::new();
    for b in &blocks {
        tower.block_connected(b.height, &b.txs);
        let (txs, events) = drain(&mut tower, &mut tower_store);
        for e in events {
            if let TowerEvent::Punished { commitment, penalties: ids, .. } = e {
                println!(
                    "  the tower sees {commitment} in block {}: it opens Alice's package and broadcasts {} penalty",
                    b.height,
                    ids.len()
                );
            }
        }
        penalties.extend(txs);
    }
    assert!(!penalties.is_empty(), "the tower punished");
    for tx in &penalties {
        chain.submit(tx).expect("the penalty relays");
    }
    let blocks = chain.mine(1);
    let confirmed: Vec<&Transaction> = blocks.iter().flat_map(|b| &b.txs).filter(|t| penalties.contains(t)).collect();
    assert_eq!(confirmed.len(), penalties.len(), "every penalty confirmed");
    show(&mut p, &blocks, false);
    let to_tower: Amount = confirmed
        .iter()
        .flat_map(|t| &t.output)
        .filter(|o| o.script_pubkey == reward.script_pubkey)
        .map(|o| o.value)
        .sum();
    println!("  the penalty confirms in block {} (the tower earns {to_tower})", blocks[0].height);

    println!("Alice comes back and catches up:");
    let tip = chain.height();
    let from = p.a.monitor.best_block().map_or(0, |(h, _)| h) + 1;
    let missed: Vec<Block> = match &chain {
        Chain::Sim(c) => (from..=tip)
            .map(|h| {
                let b = c.block(h).expect("mined");
                Block { height: h, hash: b.hash, time: b.time, txs: b.txs.clone() }
            })
            .collect(),
        Chain::Regtest(node, _) => (from..=tip)
            .map(|h| {
                let b = node.block(h);
                Block { height: h, hash: b.block_hash(), time: b.header.time, txs: b.txdata }
            })
            .collect(),
    };
    for b in &missed {
        p.a.monitor.block_connected(b.height, b.hash, b.time, &b.txs).expect("in order");
        p.a.drain_monitor();
    }
    for e in &p.a.monitor_events {
        if let MonitorEvent::AnchorSpent { kind, .. } = e {
            println!("  her monitor: the anchor was spent by {kind:?}");
        }
    }
    let dest = destination(&p.a.signer);
    let own = ScriptBuf::new_p2wpkh(&p.a.signer.public_key(KeyRole::Final).wpubkey_hash());
    let from_penalties: Amount =
        confirmed.iter().flat_map(|t| &t.output).filter(|o| o.script_pubkey == dest).map(|o| o.value).sum();
    let own_output: Amount = old.output.iter().filter(|o| o.script_pubkey == own).map(|o| o.value).sum();
    let total: Amount = old.output.iter().map(|o| o.value).sum();
    let left: Amount = p.a.monitor.balances().iter().map(Balance::amount).sum();
    println!("  Bob's revoked commitment held {total}");
    println!("  Alice has {own_output} from her own output and {from_penalties} from the tower's penalty; her monitor counts {left} on chain as hers");
    println!("  Bob has nothing: every output he could have taken went to Alice");
    assert_eq!(from_penalties + own_output + to_tower + penalties.iter().map(|t| fee(t, &old)).sum::<Amount>(), total);
}

/// What `tx` pays in fees, spending outputs of `parent`.
fn fee(tx: &Transaction, parent: &Transaction) -> Amount {
    let spent: Amount = tx.input.iter().map(|i| parent.output[i.previous_output.vout as usize].value).sum();
    spent - tx.output.iter().map(|o| o.value).sum::<Amount>()
}
