//! Random channel histories followed by a random adversarial chain: the
//! peer broadcasts any of its commitments, current or revoked, after a
//! while, with reorganisations and a miner that delays the victim's
//! transactions; both monitors race on what the scripts allow.
//! (C1-b..C1-g, R6.1-b, R6.2-a..d.)

mod common;

use std::collections::BTreeSet;

use bitcoin::{Amount, OutPoint, Transaction};
use common::net::Net;
use paychan::chain::{MonitorEvent, SpendKind};
use paychan::channel::{ChannelConfig, Side};
use paychan::types::Delay;
use paychan::{MilliSats, Preimage};
use proptest::prelude::*;

/// B's and A's `delay`: short, so that a case runs in few blocks.
const DELAY: u32 = 6;

#[derive(Clone, Debug)]
enum Op {
    /// An HTLC from A (or B) of `msat`, expiring `blocks` from now.
    Pay { from_a: bool, msat: u64, blocks: u32 },
    /// The receiver of the `n`th live HTLC fulfills it; `commit`: the
    /// fulfill is committed (else it stays in flight, R known).
    Fulfill { n: usize, commit: bool },
    /// The receiver fails the `n`th live HTLC.
    Fail { n: usize },
    /// A fee change by A or B.
    Fee { by_a: bool, rate: u32 },
}

#[derive(Clone, Debug)]
struct Attack {
    /// Which of B's commitments (index into those it ever held; the last is
    /// current).
    which: usize,
    /// Blocks before B broadcasts.
    wait: u32,
    /// Blocks the miner ignores A's transactions after the cheat.
    delay_victim: u32,
    /// A reorganisation of this depth after the first confirmation, then
    /// another of B's commitments (`Some(index)`) or the same one again.
    reorg: Option<(u32, Option<usize>)>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 600_000u64..40_000_000, 20u32..40).prop_map(|(from_a, msat, blocks)| Op::Pay { from_a, msat, blocks }),
        2 => (0usize..8, any::<bool>()).prop_map(|(n, commit)| Op::Fulfill { n, commit }),
        1 => (0usize..8).prop_map(|n| Op::Fail { n }),
        1 => (any::<bool>(), 2_000u32..20_000).prop_map(|(by_a, rate)| Op::Fee { by_a, rate }),
    ]
}

fn attack() -> impl Strategy<Value = Attack> {
    (any::<usize>(), 0u32..4, 0u32..4, proptest::option::of((1u32..3, proptest::option::of(any::<usize>()))))
        .prop_map(|(which, wait, delay_victim, reorg)| Attack { which, wait, delay_victim, reorg })
}

fn config() -> ChannelConfig {
    ChannelConfig { delay: Delay::Blocks(DELAY as u16), deadline_margin_blocks: 2, ..ChannelConfig::default() }
}

/// Live HTLCs in A's current commitment: (offerer, id, r tag).
fn live(net: &Net) -> Vec<(Side, u64)> {
    net.p.a.ch.our_commitment().htlcs().map(|h| (h.offerer, h.id)).collect()
}

struct Run {
    net: Net,
    /// B's commitments, signed, in order of number.
    held: Vec<(u64, Transaction)>,
    /// Preimages by tag (R = [tag; 32]).
    next_tag: u8,
    tags: std::collections::BTreeMap<(Side, u64), u8>,
}

impl Run {
    fn note_b(&mut self) {
        let n = self.net.p.b.ch.our_commitment_number();
        if self.held.last().is_none_or(|(k, _)| *k != n) {
            if let Some(tx) = self.net.p.b.ch.signed_commitment() {
                self.held.push((n, tx));
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Pay { from_a, msat, blocks } => {
                let tag = self.next_tag;
                self.next_tag = self.next_tag.wrapping_add(1).max(1);
                let expiry = self.net.expiry(blocks);
                let node = if from_a { &mut self.net.p.a } else { &mut self.net.p.b };
                if let Ok(id) =
                    node.ch.offer_htlc(MilliSats::from_msat(msat), Preimage([tag; 32]).hash(), expiry, vec![])
                {
                    let side = if from_a { Side::Local } else { Side::Remote };
                    self.tags.insert((side, id), tag);
                }
            }
            Op::Fulfill { n, commit } => {
                let l = live(&self.net);
                if let Some(&(offerer, id)) = l.get(n % l.len().max(1)) {
                    let tag = self.tags[&(offerer, id)];
                    let receiver = if offerer == Side::Local { &mut self.net.p.b } else { &mut self.net.p.a };
                    let _ = receiver.ch.fulfill_htlc(id, Preimage([tag; 32]));
                    if !commit {
                        self.net.p.pump();
                        return;
                    }
                }
            }
            Op::Fail { n } => {
                let l = live(&self.net);
                if let Some(&(offerer, id)) = l.get(n % l.len().max(1)) {
                    let receiver = if offerer == Side::Local { &mut self.net.p.b } else { &mut self.net.p.a };
                    let _ = receiver.ch.fail_htlc(id, vec![]);
                }
            }
            Op::Fee { by_a, rate } => {
                let node = if by_a { &mut self.net.p.a } else { &mut self.net.p.b };
                let _ = node.ch.update_fee(rate);
            }
        }
        self.net.p.settle();
        self.note_b();
    }
}

fn spent_outputs(net: &Net, tx: &Transaction) -> Vec<(u32, Option<Transaction>)> {
    let txid = tx.compute_txid();
    (0..tx.output.len() as u32).map(|vout| (vout, net.chain.spender(&OutPoint { txid, vout }).cloned())).collect()
}

fn run_case(ops: &[Op], attack: &Attack) -> Result<(), TestCaseError> {
    let mut net = common::net::open_with(config());
    // A gives B a balance so that both sides can offer.
    net.offer('A', 200_000_000, 200, 40);
    net.p.settle();
    net.p.b.ch.fulfill_htlc(0, Preimage([200; 32])).unwrap();
    net.p.settle();
    let mut run = Run { net, held: Vec::new(), next_tag: 1, tags: Default::default() };
    run.note_b();
    for op in ops {
        run.apply(op);
    }
    let Run { mut net, held, .. } = run;
    net.mine_n(attack.wait);
    let pick = |i: usize| &held[i % held.len()];
    let (number, cheat) = pick(attack.which).clone();
    let current = net.p.b.ch.our_commitment_number();
    // B broadcasts; A goes on as it was (its channel learns of the spend
    // from the chain).
    let _ = net.chain.submit(cheat.clone());
    let a_dest = paychan::sim::destination(&net.p.a.signer);
    let mut cheat = cheat;
    let mut number = number;
    let seen = net.mine().height;
    if let Some((depth, other)) = attack.reorg {
        net.reorg(depth);
        if let Some(i) = other {
            let (n2, tx2) = pick(i).clone();
            net.chain.evict(&cheat.compute_txid());
            if net.chain.submit(tx2.clone()).is_ok() {
                cheat = tx2;
                number = n2;
            }
        }
        net.mine();
    }
    prop_assert!(net.chain.confirmations(&cheat.compute_txid()) > 0, "the cheat is on chain");
    let seen = seen.max(net.height() - net.chain.confirmations(&cheat.compute_txid()) + 1);
    // C1-b
    let expected =
        if number == current { SpendKind::TheirCommitment { number } } else { SpendKind::RevokedCommitment { number } };
    prop_assert_eq!(net.p.a.monitor.spend().map(|(_, k)| k), Some(expected));
    if number != current {
        // C1-g: every output of a revoked commitment is A's: the balances
        // add up to the outputs not yet claimed plus what A's confirmed
        // claims pay.
        let a_dest = paychan::sim::destination(&net.p.a.signer);
        let mut total = Amount::ZERO;
        let mut claims = BTreeSet::new();
        for (vout, spender) in spent_outputs(&net, &cheat) {
            match spender {
                None => total += cheat.output[vout as usize].value,
                Some(s) if s.output.iter().all(|o| o.script_pubkey == a_dest) => {
                    if claims.insert(s.compute_txid()) {
                        total += s.output.iter().map(|o| o.value).sum::<Amount>();
                    }
                }
                Some(_) => {}
            }
        }
        prop_assert_eq!(net.balance_sum('A'), total);
    }
    // A miner that leaves A's transactions in the mempool for a while.
    for _ in 0..attack.delay_victim {
        let block = net.chain.mine_only(|t| !t.output.iter().all(|o| o.script_pubkey == a_dest));
        net.connect(&block);
    }
    if number != current {
        // C1-e, R6.1-b: by the last block before B's delay opens its paths,
        // every output but A's own P2WPKH is A's.
        net.mine_to(seen + DELAY - 1);
        for (vout, spender) in spent_outputs(&net, &cheat) {
            let is_a_final = cheat.output[vout as usize].script_pubkey
                == bitcoin::ScriptBuf::new_p2wpkh(
                    &paychan::tx::Signer::public_key(&*net.p.a.signer, paychan::tx::KeyRole::Final).wpubkey_hash(),
                );
            if !is_a_final {
                let outpoint = OutPoint { txid: cheat.compute_txid(), vout };
                let Some(s) = spender else {
                    // D13: worth less than the fee of claiming it even at
                    // 1 sat/vB: reported, not silently dropped.
                    let reported = net.events('A').iter().any(|e| {
                        matches!(e,
                        MonitorEvent::Uneconomical { outpoint: o, .. } if *o == outpoint)
                    });
                    prop_assert!(reported, "output {vout} neither punished nor reported: refused {:?}", net.refused);
                    continue;
                };
                prop_assert!(s.output.iter().all(|o| o.script_pubkey == a_dest));
            }
        }
    } else {
        // Long enough for every expiry and delay.
        net.mine_n(60);
        // Every HTLC output ends with one side (the scripts decide which,
        // the interpreter checked it); R seen on chain reaches A (R6.2-a).
        let b_dest = paychan::sim::destination(&net.p.b.signer);
        let learned: BTreeSet<[u8; 32]> = net
            .events('A')
            .iter()
            .filter_map(|e| match e {
                MonitorEvent::PreimageLearned { preimage, .. } => Some(preimage.0),
                _ => None,
            })
            .collect();
        for (vout, spender) in spent_outputs(&net, &cheat) {
            let out = &cheat.output[vout as usize];
            if out.script_pubkey.is_p2wpkh() {
                continue;
            }
            let outpoint = OutPoint { txid: cheat.compute_txid(), vout };
            let Some(s) = spender else {
                // D13: an output worth less than its claim's fee is left,
                // and reported by the side it belongs to.
                let reported = |w| {
                    net.events(w)
                        .iter()
                        .any(|e| matches!(e, MonitorEvent::Uneconomical { outpoint: o, .. } if *o == outpoint))
                };
                prop_assert!(reported('A') || reported('B'), "output {vout} never resolved nor reported");
                continue;
            };
            let by_a = s.output.iter().all(|o| o.script_pubkey == a_dest);
            let by_b = s.output.iter().all(|o| o.script_pubkey == b_dest);
            prop_assert!(by_a || by_b);
            if by_b {
                let input = s.input.iter().find(|i| i.previous_output.vout == vout).unwrap();
                if let Some(r) = input.witness.nth(1).and_then(|w| <[u8; 32]>::try_from(w).ok()) {
                    if r != [0; 32] {
                        prop_assert!(learned.contains(&r), "R of output {vout} not reported");
                    }
                }
            }
        }
    }
    prop_assert!(
        net.refused.iter().all(|(_, _, e)| !matches!(e, paychan::sim::chain::Reject::Script { .. })),
        "{:?}",
        net.refused
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn every_cheat_is_punished_and_every_htlc_resolved(ops in proptest::collection::vec(op(), 0..8), attack in attack()) {
        run_case(&ops, &attack)?;
    }
}
