//! The on-chain monitor on a simulated chain whose every input passes
//! Bitcoin Core's script interpreter and whose lock-time and maturity rules
//! are enforced: each class of anchor spend (C1-b), the sweeps and claims of
//! each side (C1-c, C1-d, R6.2-a..d), penalties (C1-e, R6.1-b, R6.1-c),
//! reorganisations (C1-f, R6.1-d), balances (C1-g), restores (C1-i) and
//! fees (D13).

mod common;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, FeeRate, OutPoint, Transaction, Txid};
use common::net::{fee_rate, Net};
use paychan::chain::{Balance, HtlcChange, Monitor, MonitorEvent, MonitorOutput, MonitorUpdate, Resolution, SpendKind};
use paychan::channel::Side;
use paychan::sim::chain::Reject;
use paychan::sim::Store;
use paychan::tx::penalty::MAX_PENALTY_TX_SIZE;
use paychan::Preimage;

fn value_of(tx: &Transaction) -> Amount {
    tx.output.iter().map(|o| o.value).sum()
}

/// The spends of `tx`'s outputs confirmed on the chain.
fn spenders(net: &Net, tx: &Transaction) -> Vec<Transaction> {
    let txid = tx.compute_txid();
    let mut out: Vec<Transaction> = Vec::new();
    for vout in 0..tx.output.len() as u32 {
        if let Some(s) = net.chain.spender(&OutPoint { txid, vout }) {
            if !out.iter().any(|t| t.compute_txid() == s.compute_txid()) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// A channel with HTLCs in flight both ways: A offers 3 (one with R = [1;
/// 32] that B will know), B offers 2 (one with R = [4; 32] that A will
/// know).
fn with_htlcs_both_ways() -> Net {
    let mut net = common::net::open();
    // B needs a balance to offer from.
    net.offer('A', 300_000_000, 9, 400);
    net.p.settle();
    net.p.b.ch.fulfill_htlc(0, Preimage([9; 32])).unwrap();
    net.p.settle();
    net.offer('A', 20_000_000, 1, 400);
    net.offer('A', 15_000_000, 2, 420);
    net.offer('A', 5_000_000, 3, 440);
    net.offer('B', 12_000_000, 4, 400);
    net.offer('B', 7_000_000, 5, 430);
    net.p.settle();
    net
}

#[test]
fn a_revoked_commitment_is_punished_in_the_block_it_is_seen() {
    let mut net = with_htlcs_both_ways();
    // B keeps its commitment with five HTLCs in flight, then the channel
    // moves on and B revokes it.
    let old = net.p.b.ch.signed_commitment().unwrap();
    let old_number = net.p.b.ch.our_commitment_number();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    assert!(net.p.b.ch.our_commitment_number() > old_number);
    // B cheats.
    net.chain.submit(old.clone()).unwrap();
    let seen = net.mine();
    let seen_height = seen.height;
    // C1-b: A's monitor reads the number from the lock fields (D10) and
    // knows the commitment revoked; B's own monitor sees its previous
    // commitment (which a crash could have left unrevoked).
    assert_eq!(net.spend_kind('A'), Some(SpendKind::RevokedCommitment { number: old_number }));
    assert_eq!(net.spend_kind('B'), Some(SpendKind::OurCommitment { number: old_number }));
    // C1-e, R6.1-b: the penalty went out in the block the cheat was seen,
    // and confirms in the next.
    net.mine();
    let penalties = spenders(&net, &old);
    assert!(!penalties.is_empty());
    assert!(net.refused.is_empty(), "{:?}", net.refused);
    let a_dest = paychan::sim::destination(&net.p.a.signer);
    for tx in &penalties {
        // R6.1-c: each under 100,000 bytes; every input passed the
        // interpreter on the way in (the chain's verifier).
        assert!(tx.total_size() < MAX_PENALTY_TX_SIZE);
        assert!(tx.output.iter().all(|o| o.script_pubkey == a_dest));
        assert_eq!(net.chain.confirmations(&tx.compute_txid()), 1);
    }
    // Every output of the revoked commitment is A's: swept, or paying A's
    // final key directly.
    let resolved = net.resolutions('A');
    for vout in 0..old.output.len() as u32 {
        let outpoint = OutPoint { txid: old.compute_txid(), vout };
        match resolved.get(&outpoint) {
            Some(Resolution::Claimed { .. }) => assert!(net.chain.spender(&outpoint).is_some()),
            Some(Resolution::Wallet) => {}
            other => panic!("output {vout} of the revoked commitment: {other:?}"),
        }
    }
    // What A gets: everything but the to-other output, minus the penalty's
    // fee, at no less than the 1 sat/vB asked for.
    let swept: Amount = penalties.iter().map(value_of).sum();
    let claimed: Amount =
        penalties.iter().flat_map(|t| t.input.iter()).map(|i| old.output[i.previous_output.vout as usize].value).sum();
    assert!(swept < claimed && claimed - swept < Amount::from_sat(10_000));
    for tx in &penalties {
        let spent: Amount = tx.input.iter().map(|i| old.output[i.previous_output.vout as usize].value).sum();
        assert!(fee_rate(tx, spent) >= FeeRate::from_sat_per_vb_u32(1));
    }
    // The penalty confirmed well before B's delay ran out.
    assert!(net.height() < seen_height + 144);
}

#[test]
fn the_peers_current_commitment_and_our_own_resolve_every_htlc() {
    let mut net = with_htlcs_both_ways();
    // B learns R of A's HTLC 1 (it fulfills, but the fulfill never
    // commits); A learns R of B's HTLC 0 likewise.
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.a.ch.fulfill_htlc(0, Preimage([4; 32])).unwrap();
    net.p.pump();
    net.p.a_to_b.clear();
    net.p.b_to_a.clear();
    let b_commitment = net.p.a.ch.their_commitment_tx().unwrap();
    // B closes unilaterally: its current commitment.
    net.p.b.ch.fail("gone");
    net.p.pump();
    net.submit();
    let confirmed_at = net.mine().height;
    let tx = net.chain.block(confirmed_at).unwrap().txs[0].clone();
    assert_eq!(tx.compute_txid(), b_commitment.txid());
    // C1-b: B sees its own commitment, A the peer's.
    let number = net.p.b.ch.our_commitment_number();
    assert_eq!(net.spend_kind('B'), Some(SpendKind::OurCommitment { number }));
    assert_eq!(net.spend_kind('A'), Some(SpendKind::TheirCommitment { number }));

    // C1-d, R6.2-c: A claims B's HTLC 0 at once with R.
    net.mine();
    let htlc_b0 = b_commitment.htlc_output(paychan::tx::commitment::HtlcDirection::Offered, 0).unwrap().vout;
    let claim = net.chain.spender(&OutPoint { txid: tx.compute_txid(), vout: htlc_b0 }).cloned();
    assert!(claim.is_some(), "A claims the HTLC whose R it knows at once");
    // C1-d: A's to-other output is reported as A's wallet's.
    let resolved = net.resolutions('A');
    assert!(resolved.values().any(|r| *r == Resolution::Wallet));

    // R6.2-b: A's timeout of its HTLC 2 (B never learned R) is refused
    // before its expiry, whoever builds it.
    let htlc_a2 = b_commitment.htlc_output(paychan::tx::commitment::HtlcDirection::Received, 2).unwrap().vout;
    let dest = paychan::sim::destination(&net.p.a.signer);
    let early = paychan::tx::htlc::timeout_sweep(
        &b_commitment,
        htlc_a2,
        dest.clone(),
        FeeRate::from_sat_per_vb_u32(2),
        &*net.p.a.signer,
    )
    .unwrap();
    assert!(matches!(net.chain.submit(early.clone()), Err(Reject::NonFinal { .. })));

    // B's own claims: its to-self output after the delay (C1-c), refused
    // before; its claim of A's HTLC 1 with R after the delay (R6.2-c).
    let b_dest = paychan::sim::destination(&net.p.b.signer);
    let to_self = b_commitment.outputs().iter().find(|o| o.kind == paychan::tx::commitment::OutputKind::ToOwner);
    let to_self = to_self.unwrap().vout;
    let early_self = paychan::tx::sweep::to_self_sweep(
        &b_commitment,
        to_self,
        b_dest,
        FeeRate::from_sat_per_vb_u32(2),
        &*net.p.b.signer,
    )
    .unwrap();
    assert!(matches!(net.chain.submit(early_self), Err(Reject::RelativeLock { .. })));

    // Time passes: every lock opens, every claim goes out and confirms.
    net.mine_to(confirmed_at + 144 + 2);
    let b_claim = net.chain.spender(&OutPoint { txid: tx.compute_txid(), vout: to_self });
    assert!(b_claim.is_some(), "B swept its to-self output after the delay");
    // R6.2-a: B claimed A's HTLC 1 with R; A's monitor read R from the
    // witness and reported it.
    assert!(net.events('A').iter().any(|e| matches!(e,
        MonitorEvent::PreimageLearned { offerer: Side::Local, id: 1, preimage } if *preimage == Preimage([1; 32]))));
    let expiry_a2 = b_commitment.output(htlc_a2).map(|o| match o.kind {
        paychan::tx::commitment::OutputKind::Htlc(h) => h.expiry.to_consensus_u32(),
        _ => unreachable!(),
    });
    // B's HTLC 1 expires 30 blocks after A's HTLC 2; B's own timeout waits
    // the delay on top.
    net.mine_to(expiry_a2.unwrap() + 30 + 144 + 2);
    let count = |net: &Net, who| {
        let resolved = net.resolutions(who);
        let claimed = resolved.values().filter(|r| matches!(r, Resolution::Claimed { .. })).count();
        let peer = resolved.values().filter(|r| matches!(r, Resolution::Peer { .. })).count();
        let wallet = resolved.values().filter(|r| matches!(r, Resolution::Wallet)).count();
        (claimed, peer, wallet)
    };
    // R6.2-b, R6.2-c, C1-d: A took B's HTLC 0 with R and its HTLCs 2 and 3
    // back after their expiry; B took A's HTLC 1 with R; A's balance is in
    // its wallet.
    assert_eq!(count(&net, 'A'), (3, 1, 1));
    // C1-c: B swept its to-self output, claimed A's HTLC 1 with R and took
    // its HTLC 1 back after expiry and delay; A took B's HTLC 0 with R.
    assert_eq!(count(&net, 'B'), (3, 1, 0));
    // R6.2-d: B never knew R of A's HTLCs 2 and 3 and claimed neither.
    assert!(net.refused.iter().all(|(n, _, _)| *n != 'B'), "{:?}", net.refused);
    // C1-g: once everything is final, nothing is left to claim.
    net.mine_n(100);
    assert!(net.events('A').contains(&MonitorEvent::Final));
    assert!(net.events('B').contains(&MonitorEvent::Final));
    assert!(net.p.a.monitor.balances().is_empty());
}

#[test]
fn a_mutual_close_and_an_unknown_spend_are_told_apart() {
    let mut net = common::net::open();
    net.offer('A', 50_000_000, 1, 400);
    net.p.settle();
    net.p.b.ch.fulfill_htlc(0, Preimage([1; 32])).unwrap();
    net.p.settle();
    net.p.a.ch.close().unwrap();
    net.p.settle();
    net.submit();
    net.mine();
    // C1-b: our close, its output ours in the wallet.
    assert_eq!(net.spend_kind('A'), Some(SpendKind::MutualClose));
    assert_eq!(net.spend_kind('B'), Some(SpendKind::MutualClose));
    assert!(net.resolutions('B').values().all(|r| *r == Resolution::Wallet));
    // C1-g: B's balance is its close output, until final.
    let close = net.chain.tip().txs[0].clone();
    let b_final = paychan::tx::Signer::public_key(&*net.p.b.signer, paychan::tx::KeyRole::Final);
    let b_out =
        close.output.iter().find(|o| o.script_pubkey == bitcoin::ScriptBuf::new_p2wpkh(&b_final.wpubkey_hash()));
    assert_eq!(net.balance_sum('B'), b_out.unwrap().value);
    assert!(matches!(net.p.b.monitor.balances()[..], [Balance::AwaitingConfirmations { .. }]));

    // C1-b: a spend the monitor cannot place is reported as unknown.
    let mut odd = close.clone();
    odd.output[0].script_pubkey = bitcoin::ScriptBuf::new_op_return([1; 4]);
    let mut fresh = Monitor::new(net.p.a.monitor.config().clone(), net.p.a.signer.clone());
    for u in &net.p.a.monitor_updates {
        fresh.update(u.clone()).unwrap();
    }
    fresh.block_connected(net.height(), bitcoin::BlockHash::all_zeros(), 1_700_000_000, &[odd]).unwrap();
    assert_eq!(fresh.spend().map(|(_, k)| k), Some(SpendKind::Unknown));
    let mut events = Vec::new();
    while let Some(o) = fresh.poll_output() {
        if let paychan::chain::MonitorOutput::Persist(p) = &o {
            fresh.handle_persisted(p.seq());
        }
        events.push(o);
    }
    assert!(events.iter().any(|o| matches!(
        o,
        paychan::chain::MonitorOutput::Event(MonitorEvent::AnchorSpent { kind: SpendKind::Unknown, .. })
    )));
}

#[test]
fn reorganisations_end_where_the_final_chain_would() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    let old_number = net.p.b.ch.our_commitment_number();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    let current = net.p.b.ch.signed_commitment().unwrap();
    // B's current commitment confirms first...
    net.chain.submit(current.clone()).unwrap();
    net.mine();
    net.mine();
    assert_eq!(net.spend_kind('A'), Some(SpendKind::TheirCommitment { number: old_number + 1 }));
    // ...then a reorganisation replaces it with the revoked one (C1-f):
    // the monitor handles the new one as if the first had never been.
    net.reorg(2);
    assert!(net.events('A').iter().any(|e| matches!(e, MonitorEvent::AnchorSpendReorged { .. })));
    assert!(net.p.a.monitor.spend().is_none());
    net.chain.evict(&current.compute_txid());
    net.chain.submit(old.clone()).unwrap();
    net.mine();
    assert_eq!(net.spend_kind('A'), Some(SpendKind::RevokedCommitment { number: old_number }));
    net.mine();
    let penalties = spenders(&net, &old);
    assert!(!penalties.is_empty());
    // A penalty that leaves the chain is broadcast again and confirms again
    // (C1-f); the monitor keeps reacting until it is buried (R6.1-d).
    net.reorg(1);
    assert!(penalties.iter().all(|t| net.chain.confirmations(&t.compute_txid()) == 0));
    net.mine();
    assert!(spenders(&net, &old).iter().all(|t| net.chain.confirmations(&t.compute_txid()) == 1));
    assert!(!net.events('A').contains(&MonitorEvent::Final));
    // The monitor is where one that only ever saw the final chain would be.
    let mut twin = Monitor::new(net.p.a.monitor.config().clone(), net.p.a.signer.clone());
    for u in &net.p.a.monitor_updates {
        twin.update(u.clone()).unwrap();
    }
    for h in 1..=net.height() {
        let b = net.chain.block(h).unwrap();
        twin.block_connected(h, b.hash, b.time, &b.txs).unwrap();
    }
    assert_eq!(twin.spend(), net.p.a.monitor.spend());
    assert_eq!(twin.balances(), net.p.a.monitor.balances());
    assert_eq!(twin.best_block(), net.p.a.monitor.best_block());
    // D12: final after final_depth blocks, and only then.
    net.mine_n(99);
    assert!(net.events('A').contains(&MonitorEvent::Final));
}

#[test]
fn the_monitor_restored_from_any_stored_version_still_punishes() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    net.offer('A', 1_000_000, 7, 400);
    net.p.settle();
    net.chain.submit(old.clone()).unwrap();
    net.submit_monitor[0] = false;
    let seen = net.mine().height;
    net.mine_n(3);
    // C1-i: whatever version of A's monitor survives (every prefix of what
    // it asked to store), restoring it and replaying the chain from its best
    // block punishes every revoked output.
    let history = net.p.a.monitor_history.clone();
    let updates_end = history.len();
    let mut checked = 0;
    for k in 0..=updates_end {
        let mut store = Store::default();
        for p in &history[..k] {
            store.apply(p);
        }
        let Ok(mut m) = store.monitor(net.p.a.monitor.config().clone(), net.p.a.signer.clone()) else {
            panic!("a stored prefix must restore");
        };
        // The channel's updates after the prefix reach it again (the
        // channel releases nothing before the monitor stored them, so a
        // prefix that lacks the revocation comes from before B could cheat).
        if !m.can_punish(net.p.b.ch.our_commitment_number() - 2) {
            continue;
        }
        let from = m.best_block().map_or(1, |(h, _)| h + 1);
        let mut broadcasts = Vec::new();
        for h in from..=net.height() {
            let b = net.chain.block(h).unwrap();
            m.block_connected(h, b.hash, b.time, &b.txs).unwrap();
            while let Some(o) = m.poll_output() {
                if let paychan::chain::MonitorOutput::Broadcast(tx) = o {
                    broadcasts.push(tx);
                }
            }
        }
        assert_eq!(
            m.spend().map(|(_, k)| k),
            Some(SpendKind::RevokedCommitment { number: net.p.b.ch.our_commitment_number() - 2 })
        );
        let swept: std::collections::BTreeSet<OutPoint> =
            broadcasts.iter().flat_map(|t| t.input.iter().map(|i| i.previous_output)).collect();
        let a_final = bitcoin::ScriptBuf::new_p2wpkh(
            &paychan::tx::Signer::public_key(&*net.p.a.signer, paychan::tx::KeyRole::Final).wpubkey_hash(),
        );
        for (vout, o) in old.output.iter().enumerate() {
            let outpoint = OutPoint { txid: old.compute_txid(), vout: vout as u32 };
            assert!(o.script_pubkey == a_final || swept.contains(&outpoint), "prefix {k}: output {vout} not punished");
        }
        checked += 1;
    }
    assert!(checked > 0);
    assert!(net.height() < seen + 144);
}

#[test]
fn penalty_fees_rise_towards_the_deadline_and_never_pass_the_cap() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    net.p.a.monitor.handle_fee_estimate(FeeRate::from_sat_per_vb_u32(5));
    net.p.a.drain_monitor();
    net.chain.submit(old.clone()).unwrap();
    // A miner that ignores the penalty for most of B's delay.
    let seen = net.mine().height;
    let before = net.p.a.monitor_broadcasts.len();
    for _ in 0..140 {
        let block = net.chain.mine_only(|t| t.input.iter().all(|i| i.previous_output.txid != old.compute_txid()));
        net.connect(&block);
    }
    // D13: re-signed at rising rates as the deadline (seen + 144) nears,
    // never above the cap.
    let cap = net.p.a.monitor.config().max_fee_rate;
    // Rates of each claim, by the outputs it takes: the batch of every
    // output, and outputs that a high rate priced out of the batch, claimed
    // alone at the most they can pay.
    let mut rates: std::collections::BTreeMap<Vec<u32>, Vec<FeeRate>> = Default::default();
    for tx in &net.p.a.monitor_broadcasts[before..] {
        if tx.input.iter().any(|i| i.previous_output.txid == old.compute_txid()) {
            let spent: Amount = tx.input.iter().map(|i| old.output[i.previous_output.vout as usize].value).sum();
            let key = tx.input.iter().map(|i| i.previous_output.vout).collect();
            rates.entry(key).or_default().push(fee_rate(tx, spent));
        }
    }
    // The claim of the largest output A must take (B's to-self, in the
    // batch whatever the rate) rises, from the estimate to above 100 sat/vB.
    let a_final = bitcoin::ScriptBuf::new_p2wpkh(
        &paychan::tx::Signer::public_key(&*net.p.a.signer, paychan::tx::KeyRole::Final).wpubkey_hash(),
    );
    let big = (0..old.output.len() as u32)
        .filter(|v| old.output[*v as usize].script_pubkey != a_final)
        .max_by_key(|v| old.output[*v as usize].value)
        .unwrap();
    let mut big_rates = Vec::new();
    for tx in &net.p.a.monitor_broadcasts[before..] {
        if tx.input.iter().any(|i| i.previous_output == OutPoint { txid: old.compute_txid(), vout: big }) {
            let spent: Amount = tx.input.iter().map(|i| old.output[i.previous_output.vout as usize].value).sum();
            big_rates.push(fee_rate(tx, spent));
        }
    }
    assert!(big_rates.windows(2).all(|w| w[0] <= w[1]), "{big_rates:?}");
    assert!(big_rates.first().unwrap() >= &FeeRate::from_sat_per_vb_u32(5));
    assert!(big_rates.last().unwrap() > &FeeRate::from_sat_per_vb_u32(100), "{big_rates:?}");
    for r in rates.values() {
        assert!(r.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
        assert!(r.iter().all(|r| *r <= cap));
    }
    // The miner relents: the latest penalty confirms before the deadline.
    net.mine();
    assert!(net.height() < seen + 144);
    assert!(!spenders(&net, &old).is_empty());
}

#[test]
fn balances_sum_to_what_we_own_minus_fees() {
    let mut net = with_htlcs_both_ways();
    // C1-g: before any spend, A's balance in its commitment and its HTLCs.
    let to_local = net.p.a.ch.our_commitment().balance(Side::Local).to_sat_floor();
    let balances = net.p.a.monitor.balances();
    assert!(balances.contains(&Balance::ClaimableOnChannelClose { amount: to_local }));
    let old = net.p.b.ch.signed_commitment().unwrap();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    net.chain.submit(old.clone()).unwrap();
    net.submit_monitor[0] = false;
    net.mine();
    // Every output of the revoked commitment is A's: the sum of A's
    // balances is the sum of the outputs.
    assert_eq!(net.balance_sum('A'), value_of(&old));
    net.submit_monitor[0] = true;
    net.submit();
    net.mine();
    // After the penalty: what it pays plus the to-other output.
    let penalties = spenders(&net, &old);
    let to_other = value_of(&old)
        - penalties
            .iter()
            .flat_map(|t| t.input.iter())
            .map(|i| old.output[i.previous_output.vout as usize].value)
            .sum::<Amount>();
    assert_eq!(net.balance_sum('A'), penalties.iter().map(value_of).sum::<Amount>() + to_other);
}

/// `updates` with each [`MonitorUpdate::Htlcs`] spelled out as the
/// `HtlcAdded` and `HtlcRemoved` it stands for, in order.
fn one_per_htlc(updates: &[MonitorUpdate]) -> Vec<MonitorUpdate> {
    updates
        .iter()
        .flat_map(|u| match u {
            MonitorUpdate::Htlcs { side, number, changes } => changes
                .iter()
                .map(|c| match *c {
                    HtlcChange::Added(htlc) => MonitorUpdate::HtlcAdded { side: *side, number: *number, htlc },
                    HtlcChange::Removed { offerer, id } => {
                        MonitorUpdate::HtlcRemoved { side: *side, number: *number, offerer, id }
                    }
                    other => panic!("a change this test does not know: {other:?}"),
                })
                .collect(),
            u => vec![u.clone()],
        })
        .collect()
}

/// The last HTLC added to our commitments in `updates` (one per change),
/// with the number of the first commitment holding it.
fn last_local_add(updates: &[MonitorUpdate]) -> (u64, paychan::channel::Htlc) {
    updates
        .iter()
        .rev()
        .find_map(|u| match u {
            MonitorUpdate::HtlcAdded { side: Side::Local, number, htlc } => Some((*number, *htlc)),
            _ => None,
        })
        .expect("an HTLC in our commitments")
}

/// A's channel updates, one per HTLC change ([`one_per_htlc`]).
fn a_updates(net: &Net) -> Vec<MonitorUpdate> {
    one_per_htlc(&net.p.a.monitor_updates)
}

/// A fresh monitor of A's given those of A's channel updates, one per HTLC
/// change ([`a_updates`]), that `keep` accepts with their index.
fn replayed(net: &Net, keep: impl Fn(usize, &MonitorUpdate) -> bool) -> Monitor {
    let mut m = Monitor::new(net.p.a.monitor.config().clone(), net.p.a.signer.clone());
    for (i, u) in a_updates(net).iter().enumerate() {
        if keep(i, u) {
            m.update(u.clone()).unwrap();
        }
    }
    m
}

fn drain_events(m: &mut Monitor) -> Vec<MonitorEvent> {
    let mut events = Vec::new();
    while let Some(o) = m.poll_output() {
        match o {
            MonitorOutput::Persist(p) => m.handle_persisted(p.seq()),
            MonitorOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
    events
}

#[test]
fn our_previous_commitment_is_still_ours() {
    let mut net = with_htlcs_both_ways();
    let ours = net.p.a.ch.signed_commitment().unwrap();
    let number = net.p.a.ch.our_commitment_number();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    assert!(net.p.a.ch.our_commitment_number() > number);
    // A crash between the monitor's write and the channel's can restore
    // the channel to its previous commitment and have it broadcast: the
    // monitor knows it as ours (C1-b), though the channel revoked it.
    let mut m = replayed(&net, |_, _| true);
    let before = a_updates(&net)
        .iter()
        .rposition(|u| matches!(u, MonitorUpdate::Commitment { side: Side::Local, number: n, .. } if *n == number + 1));
    let mut prev = replayed(&net, |i, _| i <= before.unwrap());
    for m in [&mut m, &mut prev] {
        m.block_connected(
            net.height() + 1,
            bitcoin::BlockHash::all_zeros(),
            1_700_000_000,
            std::slice::from_ref(&ours),
        )
        .unwrap();
        assert_eq!(m.spend().map(|(_, k)| k), Some(SpendKind::OurCommitment { number }));
        // Its to-self output waits for A's delay (C1-c).
        assert!(m.balances().iter().any(|b| matches!(b, Balance::ClaimableAt { .. })));
    }
}

#[test]
fn a_revoked_commitment_with_a_missing_record_is_punished_for_the_rest() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    let number = net.p.b.ch.our_commitment_number();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    // A monitor that lost the record of B's HTLC 0 (offered by B).
    let mut m = replayed(
        &net,
        |_, u| !matches!(u, MonitorUpdate::HtlcAdded { htlc, .. } if htlc.offerer == Side::Remote && htlc.id == 0),
    );
    drain_events(&mut m);
    m.block_connected(net.height() + 1, bitcoin::BlockHash::all_zeros(), 1_700_000_000, std::slice::from_ref(&old))
        .unwrap();
    // C1-e: still punished (the number and the preimage say what it is);
    // the output it cannot place is reported, not silently lost.
    assert_eq!(m.spend().map(|(_, k)| k), Some(SpendKind::RevokedCommitment { number }));
    let mut penalties = Vec::new();
    let mut events = Vec::new();
    while let Some(o) = m.poll_output() {
        match o {
            MonitorOutput::Broadcast(tx) => penalties.push(tx),
            MonitorOutput::Persist(p) => m.handle_persisted(p.seq()),
            MonitorOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
    let unrecognised: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            MonitorEvent::OutputUnrecognised { outpoint, .. } => Some(*outpoint),
            _ => None,
        })
        .collect();
    assert_eq!(unrecognised.len(), 1);
    let swept: usize = penalties.iter().map(|t| t.input.len()).sum();
    // Every output but the unknown one and A's own P2WPKH.
    assert_eq!(swept, old.output.len() - 2);
}

#[test]
fn a_preimage_learned_after_the_channel_failed_still_claims() {
    let mut net = with_htlcs_both_ways();
    let b_commitment = net.p.b.ch.signed_commitment().unwrap();
    // B closes with its HTLC 1 to A in flight; A learns its R only later,
    // from the next hop, once its channel has failed.
    net.chain.submit(b_commitment.clone()).unwrap();
    net.mine();
    assert!(net.p.a.ch.is_terminal());
    assert!(net.p.a.ch.fulfill_htlc(1, Preimage([5; 32])).is_err());
    net.p.a.monitor.provide_preimage(Preimage([5; 32])).unwrap();
    net.p.a.drain_monitor();
    net.submit();
    net.mine();
    // R6.2-c: A's claim with R confirmed.
    let htlc = (0..b_commitment.output.len() as u32)
        .map(|vout| OutPoint { txid: b_commitment.compute_txid(), vout })
        .filter_map(|o| net.chain.spender(&o).cloned())
        .find(|t| t.input[0].witness.nth(1) == Some(&[5u8; 32][..]));
    assert!(htlc.is_some());
}

#[test]
fn a_revocation_after_the_commitment_confirmed_reclassifies_it() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    let number = net.p.b.ch.our_commitment_number();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    // A monitor that has every update but B's revocation of `old`.
    let updates = a_updates(&net);
    let revoked_at = updates.iter().position(|u| matches!(u, MonitorUpdate::Revoked { number: n, .. } if *n == number));
    let mut m = replayed(&net, |i, _| i < revoked_at.unwrap());
    m.block_connected(net.height() + 1, bitcoin::BlockHash::all_zeros(), 1_700_000_000, std::slice::from_ref(&old))
        .unwrap();
    assert_eq!(m.spend().map(|(_, k)| k), Some(SpendKind::TheirCommitment { number }));
    drain_events(&mut m);
    // The revocation arrives: the same transaction is now a cheat (C1-b),
    // and no reorganisation is reported (C1-f).
    m.update(updates[revoked_at.unwrap()].clone()).unwrap();
    assert_eq!(m.spend().map(|(_, k)| k), Some(SpendKind::RevokedCommitment { number }));
    let events = drain_events(&mut m);
    assert!(!events.iter().any(|e| matches!(e, MonitorEvent::AnchorSpendReorged { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, MonitorEvent::AnchorSpent { kind: SpendKind::RevokedCommitment { .. }, .. })));
}

#[test]
fn an_htlc_removed_where_it_was_added_is_held_by_no_commitment() {
    let net = with_htlcs_both_ways();
    let mut m = replayed(&net, |_, _| true);
    let before = m.balances();
    let (number, htlc) = last_local_add(&a_updates(&net));
    // An HTLC added to and removed from our commitment in one step (the
    // peer failed it before its update_commit): D11's range is empty.
    let ghost = paychan::channel::Htlc { id: 99, ..htlc };
    m.update(MonitorUpdate::HtlcAdded { side: Side::Local, number: number + 1, htlc: ghost }).unwrap();
    m.update(MonitorUpdate::HtlcRemoved { side: Side::Local, number: number + 1, offerer: ghost.offerer, id: 99 })
        .unwrap();
    assert_eq!(m.balances(), before);
}

/// R3.2-e lets the peer reuse an id once no staged commitment holds the old
/// HTLC; an HTLC that comes back under its old id with the very same terms
/// is a new one, held from its new number on, not the old record (whose
/// range was closed) again.
#[test]
fn an_htlc_back_under_its_id_with_the_same_terms_is_held_again() {
    let net = with_htlcs_both_ways();
    let mut m = replayed(&net, |_, _| true);
    let updates = &a_updates(&net);
    let (number, htlc) = updates
        .iter()
        .rev()
        .find_map(|u| match u {
            MonitorUpdate::HtlcAdded { side: Side::Local, number, htlc } if htlc.offerer == Side::Local => {
                Some((*number, *htlc))
            }
            _ => None,
        })
        .unwrap();
    let (current, revocation_hash, to_local) = updates
        .iter()
        .rev()
        .find_map(|u| match u {
            MonitorUpdate::Commitment { side: Side::Local, number, revocation_hash, to_local, .. } => {
                Some((*number, *revocation_hash, *to_local))
            }
            _ => None,
        })
        .unwrap();
    assert!(number <= current);
    let commitment = |n: u64| MonitorUpdate::Commitment {
        side: Side::Local,
        number: n,
        txid: Txid::from_byte_array([n as u8; 32]),
        revocation_hash,
        to_local,
    };
    let contested = |m: &Monitor| {
        m.balances()
            .iter()
            .filter(|b| matches!(b, Balance::Contested { amount, .. } if *amount == htlc.amount.msat().to_sat_floor()))
            .count()
    };
    let held = contested(&m);
    assert!(held >= 1);
    // It leaves our commitments from current + 1 on...
    m.update(MonitorUpdate::HtlcRemoved { side: Side::Local, number: current + 1, offerer: htlc.offerer, id: htlc.id })
        .unwrap();
    m.update(commitment(current + 1)).unwrap();
    assert_eq!(contested(&m), held - 1);
    // ...and comes back, same id, same terms, from current + 2 on.
    m.update(MonitorUpdate::HtlcAdded { side: Side::Local, number: current + 2, htlc }).unwrap();
    m.update(commitment(current + 2)).unwrap();
    assert_eq!(contested(&m), held);
    // A repeat of the first add (a replay after a crash) changes nothing.
    m.update(MonitorUpdate::HtlcAdded { side: Side::Local, number, htlc }).unwrap();
    assert_eq!(contested(&m), held);
}

#[test]
fn a_restore_after_a_reorganisation_below_a_snapshot_replays() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    net.mine_n(3);
    // A snapshot holds the tip of its moment, a block never journaled...
    let snapshot = net.p.a.monitor.snapshot();
    let from = net.p.a.monitor_history.len();
    // ...which a reorganisation then replaces with one holding the cheat.
    net.reorg(2);
    net.chain.submit(old.clone()).unwrap();
    net.mine();
    let entries: Vec<Vec<u8>> = net.p.a.monitor_history[from..].iter().map(|p| p.bytes().to_vec()).collect();
    // C1-i: the store restores, and the monitor punishes.
    let m = Monitor::restore(
        net.p.a.monitor.config().clone(),
        net.p.a.signer.clone(),
        Some(&snapshot),
        entries.iter().map(Vec::as_slice),
    )
    .unwrap();
    assert_eq!(m.spend(), net.p.a.monitor.spend());
    assert!(matches!(m.spend(), Some((_, SpendKind::RevokedCommitment { .. }))));
}

/// The peer's revocation preimages of commitments `0..n` (n at most 2^20),
/// derived here from the seed independently of the crate (section 5 with
/// ruling D1: bit 63 first; commitment c has index 2^64-1-c), sharing the
/// work of the 44 high bits every such index has set.
fn peer_preimages(seed: [u8; 32], n: u64) -> impl Iterator<Item = Preimage> {
    use sha2::{Digest, Sha256};
    assert!(n <= 1 << 20);
    let apply = |mut value: [u8; 32], index: u64, high: u32, low: u32| {
        for bit in (low..high).rev() {
            if index >> bit & 1 == 1 {
                value[(bit / 8) as usize] ^= 1 << (bit % 8);
                value = Sha256::digest(value).into();
            }
        }
        value
    };
    let prefix = apply(seed, u64::MAX, 64, 20);
    (0..n).map(move |c| Preimage(apply(prefix, u64::MAX - c, 20, 0)))
}

#[test]
fn what_the_monitor_keeps_does_not_grow_with_states() {
    use paychan::shachain::RevocationSecrets;
    let net = common::net::open();
    // A's monitor after establishment, fed B's revocations directly (what
    // the channel would hand it, without the signatures).
    let mut m = replayed(&net, |_, _| true);
    let mut store = Store::default();
    let drain = |m: &mut Monitor, store: &mut Store| {
        while let Some(o) = m.poll_output() {
            if let MonitorOutput::Persist(p) = o {
                store.apply(&p);
                m.handle_persisted(p.seq());
            }
        }
    };
    drain(&mut m, &mut store);
    let secrets = RevocationSecrets::new([0xb2; 32]);
    let states = 1_000_000;
    for (c, preimage) in peer_preimages([0xb2; 32], states).enumerate() {
        if c < 3 || c as u64 == states - 1 {
            assert_eq!(preimage, secrets.preimage(c as u64), "the test's derivation agrees");
        }
        m.update(MonitorUpdate::Revoked { number: c as u64, preimage }).unwrap();
        drain(&mut m, &mut store);
    }
    // C1-h, D11: a million revoked states and no HTLCs: a few kilobytes
    // kept, and every state punishable from them.
    assert!(store.len() < 16 * 1024, "{} bytes kept", store.len());
    let restored = store.monitor(m.config().clone(), net.p.a.signer.clone()).unwrap();
    for c in [0, 1, 12_345, 999_998, 999_999] {
        assert!(restored.can_punish(c));
    }
    assert!(!restored.can_punish(states));

    // 10,000 states with 20 HTLCs live in each: one record per HTLC ever
    // committed (D11), not one copy per state.
    let mut m = replayed(&net, |_, _| true);
    let mut store = Store::default();
    drain(&mut m, &mut store);
    let htlc = |id: u64| paychan::channel::Htlc {
        offerer: if id % 2 == 0 { Side::Local } else { Side::Remote },
        id,
        amount: paychan::types::HtlcMsat::from_msat(1_000_000 + id as u32),
        r_hash: Preimage([id as u8; 32]).hash(),
        expiry: bitcoin::absolute::LockTime::from_height(500_000 + id as u32).unwrap(),
    };
    for (c, preimage) in peer_preimages([0xb2; 32], 10_000).enumerate() {
        let c = c as u64;
        // Commitment c + 1 adds one HTLC and, past 20, removes the oldest.
        m.update(MonitorUpdate::HtlcAdded { side: Side::Remote, number: c + 1, htlc: htlc(c) }).unwrap();
        if c >= 20 {
            let old = htlc(c - 20);
            let removed =
                MonitorUpdate::HtlcRemoved { side: Side::Remote, number: c + 1, offerer: old.offerer, id: old.id };
            m.update(removed).unwrap();
        }
        m.update(MonitorUpdate::Revoked { number: c, preimage }).unwrap();
        drain(&mut m, &mut store);
    }
    assert_eq!(m.htlc_records(), 10_000);
    // Per-state copies would hold 10,000 x 20 HTLCs of 53 bytes each
    // (direction, id, amount, hash, expiry): 10.6 MB. D11 keeps one record
    // of at most 80 bytes each, and the store at most three snapshots.
    assert!(m.kept_bytes() < 10_000 * 80, "{} bytes in a snapshot", m.kept_bytes());
    assert!(store.len() <= 3 * m.kept_bytes() + 4096, "{} bytes kept", store.len());
}

#[test]
fn outputs_come_in_the_documented_order_and_events_wait_for_the_store() {
    let mut net = with_htlcs_both_ways();
    let old = net.p.b.ch.signed_commitment().unwrap();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.settle();
    let mut m = replayed(&net, |_, _| true);
    drain_events(&mut m);
    m.block_connected(net.height() + 1, bitcoin::BlockHash::all_zeros(), 1_700_000_000, std::slice::from_ref(&old))
        .unwrap();
    // C1-a: a sans-IO object: what to broadcast, what to watch, what to
    // store, and then, only once stored, what to report.
    let mut kinds = Vec::new();
    let mut last_seq = 0;
    while let Some(o) = m.poll_output() {
        kinds.push(match &o {
            MonitorOutput::Broadcast(_) => 0,
            MonitorOutput::Watch { .. } => 1,
            MonitorOutput::Persist(p) => {
                last_seq = p.seq();
                2
            }
            MonitorOutput::Event(_) => 3,
            _ => 4,
        });
    }
    assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{kinds:?}");
    assert!(kinds.contains(&0) && kinds.contains(&1) && kinds.contains(&2));
    // R6.1-b: the penalty leaves before the block is even stored; the
    // events wait.
    assert!(!kinds.contains(&3));
    m.handle_persisted(last_seq);
    let events: Vec<_> = std::iter::from_fn(|| m.poll_output()).collect();
    assert!(events.iter().any(|o| matches!(
        o,
        MonitorOutput::Event(MonitorEvent::AnchorSpent { kind: SpendKind::RevokedCommitment { .. }, .. })
    )));
}

#[test]
fn updates_given_together_are_one_write_and_restore_the_same() {
    let net = with_htlcs_both_ways();
    let updates = net.p.a.monitor_updates.clone();
    assert!(updates.len() > 10);
    let config = net.p.a.monitor.config().clone();
    // C1-a: one by one, or together: the same monitor.
    let mut one_by_one = Monitor::new(config.clone(), net.p.a.signer.clone());
    for u in &updates {
        one_by_one.update(u.clone()).unwrap();
    }
    let mut together = Monitor::new(config.clone(), net.p.a.signer.clone());
    together.update_all(updates.clone()).unwrap();
    let mut store = Store::default();
    let writes: Vec<_> = std::iter::from_fn(|| together.poll_output())
        .filter_map(|o| if let MonitorOutput::Persist(p) = o { Some(p) } else { None })
        .collect();
    assert_eq!(writes.iter().filter(|w| !w.is_snapshot()).count(), 1, "one entry for all");
    for w in &writes {
        store.apply(w);
        together.handle_persisted(w.seq());
    }
    assert_eq!(together.htlc_records(), one_by_one.htlc_records());
    for n in 0..20 {
        assert_eq!(together.can_punish(n), one_by_one.can_punish(n));
    }
    // Its store restores to it.
    let restored = store.monitor(config.clone(), net.p.a.signer.clone()).unwrap();
    assert_eq!(restored.snapshot(), together.snapshot());
    // A refused update stops the batch: those before it stay, those after
    // do not, and the error names it.
    let mut partial = Monitor::new(config, net.p.a.signer.clone());
    let bad = MonitorUpdate::Revoked { number: 1 << 48, preimage: Preimage([0; 32]) };
    let mut batch = updates[..3].to_vec();
    batch.push(bad);
    batch.extend(updates[3..].iter().cloned());
    assert!(partial.update_all(batch).is_err());
    assert!(partial.params().is_some());
    assert_eq!(partial.htlc_records(), 0);
}

/// A monitor's state as its snapshot holds it, without the snapshot's
/// magic, format and sequence number (which counts the updates given) or
/// its checksum.
fn state(m: &Monitor) -> Vec<u8> {
    let snapshot = m.snapshot();
    snapshot[13..snapshot.len() - 8].to_vec()
}

/// The channel hands over each commitment's HTLC changes as one
/// `MonitorUpdate::Htlcs`: a monitor given that ends exactly where one given
/// an `HtlcAdded` or `HtlcRemoved` per change ends, and so does its store.
#[test]
fn a_commitments_htlc_changes_in_one_update_are_one_update_per_change() {
    let mut net = with_htlcs_both_ways();
    net.p.b.ch.fulfill_htlc(1, Preimage([1; 32])).unwrap();
    net.p.b.ch.fulfill_htlc(2, Preimage([2; 32])).unwrap();
    net.p.settle();
    let updates = net.p.a.monitor_updates.clone();
    // A's three HTLCs were committed together: one update for each side's
    // commitment.
    let sizes: Vec<usize> = updates
        .iter()
        .filter_map(|u| if let MonitorUpdate::Htlcs { changes, .. } = u { Some(changes.len()) } else { None })
        .collect();
    assert_eq!(sizes.iter().filter(|&&n| n == 3).count(), 2, "{sizes:?}");
    assert!(!updates.iter().any(|u| matches!(u, MonitorUpdate::HtlcAdded { .. } | MonitorUpdate::HtlcRemoved { .. })));
    let config = net.p.a.monitor.config().clone();
    let given = |updates: &[MonitorUpdate]| {
        let mut m = Monitor::new(config.clone(), net.p.a.signer.clone());
        let mut store = Store::default();
        for u in updates {
            m.update(u.clone()).unwrap();
            while let Some(o) = m.poll_output() {
                if let MonitorOutput::Persist(w) = o {
                    store.apply(&w);
                    m.handle_persisted(w.seq());
                }
            }
        }
        (m, store)
    };
    let (together, store) = given(&updates);
    let (apart, _) = given(&one_per_htlc(&updates));
    // D11: the same records and ranges, byte for byte.
    assert_eq!(state(&together), state(&apart));
    // The funding HTLC, A's three, B's two.
    let records = together.htlc_records();
    assert_eq!(records, 6);
    let restored = store.monitor(config.clone(), net.p.a.signer.clone()).unwrap();
    assert_eq!(restored.snapshot(), together.snapshot());

    // The changes apply in order. R3.2-e: an HTLC removed, back under its id
    // with the same terms and removed again, all in one commitment, is the
    // old record closed and a new one that no commitment held; added first,
    // it would be the old record again and no new one.
    let (number, htlc) = last_local_add(&one_per_htlc(&updates));
    let next = number + 10;
    let removed = HtlcChange::Removed { offerer: htlc.offerer, id: htlc.id };
    let changes = vec![removed, HtlcChange::Added(htlc), removed];
    let mut in_order = updates.clone();
    in_order.push(MonitorUpdate::Htlcs { side: Side::Local, number: next, changes });
    let (together, _) = given(&in_order);
    let (apart, _) = given(&one_per_htlc(&in_order));
    assert_eq!(state(&together), state(&apart));
    assert_eq!(together.htlc_records(), records + 1);
    let mut reordered = updates;
    reordered.push(MonitorUpdate::Htlcs {
        side: Side::Local,
        number: next,
        changes: vec![HtlcChange::Added(htlc), removed, removed],
    });
    let (reordered, _) = given(&reordered);
    assert_eq!(reordered.htlc_records(), records);
    assert_ne!(state(&reordered), state(&together));
}
