//! On-chain enforcement, end to end, on the simulated chain (every input of
//! every transaction checked by Bitcoin Core's script interpreter):
//!
//! 1. A and B make payments with HTLCs in flight both ways; B broadcasts one
//!    of its revoked commitments; A's monitor takes every output.
//! 2. B vanishes with HTLCs in flight; A closes on chain; each side's
//!    monitor resolves every output it can, and A learns a preimage from
//!    B's claim.
//!
//! Run with `cargo run --example cheat`.

#[path = "support/interpreter.rs"]
mod interpreter;

use std::collections::BTreeMap;

use bitcoin::{Amount, ScriptBuf, Transaction, Txid};
use paychan::chain::{Balance, MonitorEvent, Resolution};
use paychan::channel::ChannelConfig;
use paychan::sim::destination;
use paychan::sim::net::Net;
use paychan::types::Delay;
use paychan::Preimage;

/// Names for the transactions of the story.
#[derive(Default)]
struct Story {
    names: BTreeMap<Txid, String>,
    printed: u32,
}

impl Story {
    fn name(&mut self, tx: &Transaction, what: impl Into<String>) {
        self.names.insert(tx.compute_txid(), what.into());
    }

    /// Prints every block mined since the last call that holds something.
    fn blocks(&mut self, net: &Net) {
        let (a_dest, b_dest) = (destination(&net.p.a.signer), destination(&net.p.b.signer));
        for h in self.printed + 1..=net.height() {
            let block = net.chain.block(h).expect("mined");
            for tx in &block.txs {
                let txid = tx.compute_txid();
                let out: Amount = tx.output.iter().map(|o| o.value).sum();
                let name = self.names.get(&txid).cloned().unwrap_or_else(|| {
                    let who = if tx.output.iter().all(|o| o.script_pubkey == a_dest) {
                        "A's monitor"
                    } else if tx.output.iter().all(|o| o.script_pubkey == b_dest) {
                        "B's monitor"
                    } else {
                        "?"
                    };
                    let spent: Vec<String> = tx
                        .input
                        .iter()
                        .map(|i| {
                            let parent = self.names.get(&i.previous_output.txid).map_or("?", String::as_str);
                            format!("{parent}:{}", i.previous_output.vout)
                        })
                        .collect();
                    format!("{who} claims {}", spent.join(", "))
                });
                println!("  block {h:>4}  {}..  {name} -> {out}", &txid.to_string()[..8]);
            }
        }
        self.printed = net.height();
    }
}

fn resolutions(net: &Net, who: char) {
    for e in net.events(who) {
        match e {
            MonitorEvent::AnchorSpent { kind, height, .. } => println!("  {who}: anchor spent at {height}: {kind:?}"),
            MonitorEvent::OutputResolved { outpoint, value, resolution } => {
                let how = match resolution {
                    Resolution::Claimed { .. } => "claimed by us",
                    Resolution::Wallet => "pays our wallet key",
                    Resolution::Peer { .. } => "taken by the peer, as the scripts allow",
                    Resolution::Lost { .. } => "LOST to the cheater",
                };
                println!("  {who}: output {} ({value}) {how}", outpoint.vout);
            }
            MonitorEvent::PreimageLearned { id, preimage, .. } => {
                println!(
                    "  {who}: learned R of HTLC {id} from the chain (its hash {:.8}..)",
                    preimage.hash().to_string()
                )
            }
            MonitorEvent::Uneconomical { outpoint, value, fee } => {
                println!("  {who}: output {} ({value}) not worth its {fee} fee", outpoint.vout)
            }
            MonitorEvent::Final => println!("  {who}: everything final"),
            _ => {}
        }
    }
}

/// What each side got on chain: its claims' outputs and its wallet outputs.
fn received(net: &Net, who: char, script: &ScriptBuf, wallet: &ScriptBuf) -> Amount {
    let _ = who;
    (1..=net.height())
        .filter_map(|h| net.chain.block(h))
        .flat_map(|b| b.txs.iter())
        .flat_map(|t| t.output.iter())
        .filter(|o| o.script_pubkey == *script || o.script_pubkey == *wallet)
        .map(|o| o.value)
        .sum()
}

fn final_key_script(net: &Net, who: char) -> ScriptBuf {
    let signer = if who == 'A' { &net.p.a.signer } else { &net.p.b.signer };
    let key = paychan::tx::Signer::public_key(&**signer, paychan::tx::KeyRole::Final);
    ScriptBuf::new_p2wpkh(&key.wpubkey_hash())
}

fn config() -> ChannelConfig {
    ChannelConfig { delay: Delay::Blocks(30), ..ChannelConfig::default() }
}

/// An open channel on the verified chain in which A has paid B 300,000 sat,
/// and the story that names its transactions.
fn opened() -> (Net, Story) {
    let mut net = Net::open_with(config(), interpreter::verified_chain());
    let mut story = Story::default();
    story.name(net.p.a.anchor.as_ref().expect("funded"), "anchor");
    story.printed = net.height() - 1;
    net.offer('A', 300_000_000, 9, 200);
    net.p.settle();
    net.p.b.ch.fulfill_htlc(0, Preimage([9; 32])).expect("committed");
    net.p.settle();
    (net, story)
}

fn cheat() {
    println!("== 1. B broadcasts a revoked commitment ==");
    let (mut net, mut story) = opened();
    // HTLCs in flight both ways.
    for (from, msat, tag) in [('A', 40_000_000, 1), ('A', 25_000_000, 2), ('B', 30_000_000, 3)] {
        net.offer(from, msat, tag, 200);
    }
    net.p.settle();
    let old = net.p.b.ch.signed_commitment().expect("signed");
    let number = net.p.b.ch.our_commitment_number();
    story.name(&old, format!("B's commitment {number}"));
    println!("  B keeps its commitment {number}: {} outputs, 3 HTLCs in flight", old.output.len());
    // More payments: B revokes it.
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).expect("committed");
    net.p.settle();
    net.offer('A', 10_000_000, 4, 200);
    net.p.settle();
    println!("  ...the channel moves on to commitment {}; B revoked {number}", net.p.b.ch.our_commitment_number());
    let before: Amount = net.p.a.monitor.balances().iter().map(Balance::amount).sum();
    println!("  A's balance before: {before} (on a close of its current commitment)");
    net.chain.submit(old.clone()).expect("a valid transaction");
    net.submit_monitor[0] = false;
    net.mine();
    let claimable: Vec<Balance> = net.p.a.monitor.balances();
    let sum: Amount = claimable.iter().map(Balance::amount).sum();
    println!("  the cheat confirms: A's monitor counts {} outputs of A's, {sum} in all", claimable.len());
    net.submit_monitor[0] = true;
    net.submit();
    net.mine_n(2);
    story.blocks(&net);
    resolutions(&net, 'A');
    let a = received(&net, 'A', &destination(&net.p.a.signer), &final_key_script(&net, 'A'));
    let b = received(&net, 'B', &destination(&net.p.b.signer), &final_key_script(&net, 'B'));
    let total: Amount = old.output.iter().map(|o| o.value).sum();
    println!("  the revoked commitment held {total}: A ends with {a}, B with {b}");
    println!();
}

fn vanish() {
    println!("== 2. B vanishes with HTLCs in flight ==");
    let (mut net, mut story) = opened();
    // A offers two (B will learn R of the first), B offers one (A never
    // learns its R).
    net.offer('A', 40_000_000, 1, 80);
    net.offer('A', 25_000_000, 2, 90);
    net.offer('B', 30_000_000, 3, 100);
    net.p.settle();
    // B learns R of A's HTLC 1 and sends its fulfill, which never arrives:
    // B is gone.
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).expect("committed");
    net.p.pump();
    net.p.b_to_a.clear();
    println!("  B goes silent; A closes with its commitment {}", net.p.a.ch.our_commitment_number());
    net.p.a.ch.fail("peer vanished");
    net.p.pump();
    net.submit();
    let commitment = net.p.a.broadcasts.last().expect("A broadcast its commitment").clone();
    story.name(&commitment, "A's commitment");
    net.mine();
    // Every expiry, then every delay, then final.
    net.mine_n(230);
    story.blocks(&net);
    resolutions(&net, 'A');
    resolutions(&net, 'B');
    let a = received(&net, 'A', &destination(&net.p.a.signer), &final_key_script(&net, 'A'));
    let b = received(&net, 'B', &destination(&net.p.b.signer), &final_key_script(&net, 'B'));
    let total: Amount = commitment.output.iter().map(|o| o.value).sum();
    println!("  A's commitment held {total}: A ends with {a}, B with {b}, {} in fees", total - a - b);
}

fn main() {
    cheat();
    vanish();
}
