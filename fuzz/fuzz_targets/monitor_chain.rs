//! Arbitrary chain events and transactions fed to an on-chain monitor that
//! watches a channel with HTLCs in flight and revoked states: blocks with
//! the peer's real commitments (current and revoked), mutated copies of
//! them, spends of their outputs and arbitrary decoded transactions;
//! disconnections; fee estimates; channel updates; restores from its own
//! store and from arbitrary bytes. Nothing may panic, and a monitor restored
//! from its store must agree with the live one.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::consensus::deserialize;
use paychan::bitcoin::hashes::Hash as _;
use paychan::bitcoin::{Amount, BlockHash, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use paychan::chain::{HtlcChange, Monitor, MonitorConfig, MonitorOutput, MonitorUpdate};
use paychan::sim::{Store, Pair};
use paychan::tx::InMemorySigner;
use paychan::{MilliSats, Preimage};

struct Base {
    config: MonitorConfig,
    signer: Arc<InMemorySigner>,
    snapshot: Vec<u8>,
    /// The peer's commitments, revoked then current.
    commitments: Vec<Transaction>,
}

static BASE: LazyLock<Base> = LazyLock::new(|| {
    let mut p = Pair::open();
    let mut commitments = Vec::new();
    for i in 0..4u8 {
        let expiry = paychan::bitcoin::absolute::LockTime::from_height(400 + u32::from(i)).expect("a height");
        let r = Preimage([i + 1; 32]);
        p.a.ch.offer_htlc(MilliSats::from_msat(3_000_000 * u64::from(i + 1)), r.hash(), expiry, vec![]).expect("offer");
        p.settle();
        commitments.push(p.b.ch.signed_commitment().expect("signed"));
    }
    p.b.ch.fulfill_htlc(0, Preimage([1; 32])).expect("fulfill");
    p.settle();
    commitments.push(p.b.ch.signed_commitment().expect("signed"));
    Base {
        config: p.a.monitor.config().clone(),
        signer: p.a.signer.clone(),
        snapshot: p.a.monitor.snapshot(),
        commitments,
    }
});

fn drain(m: &mut Monitor, store: &mut Store) {
    while let Some(o) = m.poll_output() {
        if let MonitorOutput::Persist(p) = o {
            store.apply(&p);
            m.handle_persisted(p.seq());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let base = &*BASE;
    // Stored bytes never panic a restore.
    if data.first() == Some(&0xff) {
        let mut parts = data[1..].split(|b| *b == 0xfe);
        let snapshot = parts.next();
        let entries: Vec<&[u8]> = parts.collect();
        let _ = Monitor::restore(base.config.clone(), base.signer.clone(), snapshot, entries);
        return;
    }
    let mut m = Monitor::restore(base.config.clone(), base.signer.clone(), Some(&base.snapshot), [])
        .expect("the base snapshot restores");
    let mut store = Store { snapshot: Some(base.snapshot.clone()), entries: Vec::new() };
    drain(&mut m, &mut store);
    let mut height = m.best_block().map_or(1000, |(h, _)| h + 1);
    let mut seen: Vec<Transaction> = base.commitments.clone();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        match op % 7 {
            // A block with one of the known transactions, perhaps changed.
            0 | 1 => {
                let mut tx = seen[usize::from(arg) % seen.len()].clone();
                match next().unwrap_or(0) % 6 {
                    0 => {}
                    1 => {
                        let i = usize::from(arg) % tx.output.len().max(1);
                        if let Some(o) = tx.output.get_mut(i) {
                            o.value = Amount::from_sat(u64::from(arg) * 1000);
                        }
                    }
                    2 => {
                        tx.output.truncate(usize::from(arg) % 4);
                    }
                    3 => tx.lock_time = paychan::bitcoin::absolute::LockTime::from_consensus(u32::from(arg) << 20),
                    4 => {
                        // A spend of one of its outputs with an arbitrary
                        // 32-byte witness value (R, or garbage).
                        let vout = u32::from(arg) % tx.output.len().max(1) as u32;
                        tx = Transaction {
                            version: paychan::bitcoin::transaction::Version::TWO,
                            lock_time: paychan::bitcoin::absolute::LockTime::ZERO,
                            input: vec![TxIn {
                                previous_output: OutPoint { txid: tx.compute_txid(), vout },
                                script_sig: ScriptBuf::new(),
                                sequence: Sequence::MAX,
                                witness: Witness::from_slice(&[vec![1; 72], vec![arg % 5 + 1; 32], vec![0x51]]),
                            }],
                            output: vec![TxOut { value: Amount::from_sat(1000), script_pubkey: ScriptBuf::new() }],
                        };
                    }
                    _ => tx.input.clear(),
                }
                seen.push(tx.clone());
                let _ = m.block_connected(height, BlockHash::all_zeros(), 1_600_000_000 + height * 600, &[tx]);
                height += 1;
            }
            // A block with an arbitrary decoded transaction.
            2 => {
                let len = usize::from(arg);
                let raw: Vec<u8> = (0..len).filter_map(|_| next()).collect();
                let txs: Vec<Transaction> = deserialize(&raw).into_iter().collect();
                let _ = m.block_connected(height, BlockHash::all_zeros(), 1_600_000_000 + height * 600, &txs);
                height += 1;
            }
            // Empty blocks: timers run.
            3 => {
                for _ in 0..arg % 32 {
                    let _ = m.block_connected(height, BlockHash::all_zeros(), 1_600_000_000 + height * 600, &[]);
                    height += 1;
                }
            }
            4 => {
                if let Some((h, _)) = m.best_block() {
                    if m.block_disconnected(h).is_ok() {
                        height = h;
                    }
                }
            }
            5 => m.handle_fee_estimate(FeeRate::from_sat_per_kwu(u64::from(arg) * 997)),
            _ => {
                let number = u64::from(next().unwrap_or(0));
                let update = match arg % 6 {
                    0 => MonitorUpdate::Preimage(Preimage([arg; 32])),
                    1 => MonitorUpdate::Revoked { number, preimage: Preimage([arg; 32]) },
                    2 => MonitorUpdate::HtlcRemoved {
                        side: paychan::channel::Side::Remote,
                        number,
                        offerer: paychan::channel::Side::Local,
                        id: u64::from(arg),
                    },
                    // A commitment's changes together, chosen by the next
                    // byte: HTLCs (of the set the pair built) leaving and
                    // coming back in either side's commitments, in any order.
                    3 => {
                        let plan = next().unwrap_or(0);
                        let side = if plan & 1 == 0 { paychan::channel::Side::Local } else { paychan::channel::Side::Remote };
                        let changes = (0..plan >> 5)
                            .map(|i| {
                                let pick = next().unwrap_or(i);
                                let offerer = paychan::channel::Side::Local;
                                // One of the pair's HTLCs, or (bit 6) one
                                // under the same id with other terms.
                                let id = pick % 4;
                                let other_terms = u32::from(pick >> 6 & 1);
                                let htlc = paychan::channel::Htlc {
                                    offerer,
                                    id: u64::from(id),
                                    amount: paychan::HtlcMsat::from_msat(3_000_000 * (u32::from(id) + 1) + other_terms),
                                    r_hash: Preimage([id + 1; 32]).hash(),
                                    expiry: paychan::bitcoin::absolute::LockTime::from_height(400 + u32::from(id))
                                        .expect("a height"),
                                };
                                if pick & 0x80 == 0 {
                                    HtlcChange::Removed { offerer, id: htlc.id }
                                } else {
                                    HtlcChange::Added(htlc)
                                }
                            })
                            .collect();
                        MonitorUpdate::Htlcs { side, number, changes }
                    }
                    _ => {
                        // A restore from what it stored agrees with it.
                        drain(&mut m, &mut store);
                        let mut restored =
                            store.monitor(base.config.clone(), base.signer.clone()).expect("own store");
                        // Blocks with nothing of interest are not stored:
                        // the caller feeds them again from its best block.
                        let (from, to) = (restored.best_block().map_or(0, |b| b.0), m.best_block().map_or(0, |b| b.0));
                        for h in from + 1..=to {
                            let _ = restored.block_connected(h, BlockHash::all_zeros(), 1_600_000_000 + h * 600, &[]);
                        }
                        assert_eq!(restored.spend(), m.spend());
                        assert_eq!(restored.balances(), m.balances());
                        continue;
                    }
                };
                let _ = m.update(update);
            }
        }
        drain(&mut m, &mut store);
        let _ = m.balances();
    }
});
