//! A watchtower fed whatever the fuzzer makes (W1-d): packages of any
//! bytes under any hint from any client, blocks of transactions whose txids
//! share those hints (and the real revoked commitment of a channel, with its
//! honest package), client removals, restores from the tower's own store
//! and from damaged bytes. Nothing panics; an honest package always
//! punishes its commitment.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::hashes::Hash as _;
use paychan::bitcoin::{absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid};
use paychan::channel::ChannelConfig;
use paychan::sim::{destination, Pair, Store};
use paychan::tower::{self, justice_package, JusticePackage, JusticeSettings, Tower, TowerConfig, TowerEvent, TowerOutput};
use paychan::Preimage;

/// B's revoked commitment and A's honest package for it.
struct Honest {
    cheat: Transaction,
    package: JusticePackage,
    _signer: Arc<paychan::tx::InMemorySigner>,
}

static HONEST: LazyLock<Honest> = LazyLock::new(|| {
    let config = ChannelConfig { export_revoked: true, ..ChannelConfig::default() };
    let mut p = Pair::new(config.clone(), config, paychan::sim::CAPACITY);
    p.establish();
    let expiry = absolute::LockTime::from_height(5_000).expect("a height");
    let r = Preimage([3; 32]);
    p.a.ch.offer_htlc(paychan::MilliSats::from_msat(300_000_000), r.hash(), expiry, vec![]).expect("affordable");
    p.settle();
    let cheat = p.b.ch.signed_commitment().expect("signed");
    p.b.ch.fulfill_htlc(0, r).expect("incoming");
    p.settle();
    let revoked = p.a.revoked.iter().find(|r| r.commitment.txid() == cheat.compute_txid()).expect("revoked").clone();
    let settings = JusticeSettings {
        destination: destination(&p.a.signer),
        fee_rate: FeeRate::from_sat_per_vb(5).expect("a rate"),
        reward: None,
    };
    let package = justice_package(&revoked, &settings, &*p.a.signer).expect("a package");
    Honest { cheat, package, _signer: p.a.signer.clone() }
});

/// A transaction whose txid the fuzzer cannot choose, but whose hint a
/// package can copy.
fn tx(seed: u64) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([seed as u8; 32]), vout: (seed >> 8) as u32 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Default::default(),
        }],
        output: vec![TxOut { value: Amount::from_sat(seed % 100_000), script_pubkey: ScriptBuf::new() }],
    }
}

fn drain(t: &mut Tower, store: &mut Store, broadcasts: &mut Vec<Transaction>, events: &mut Vec<TowerEvent>) {
    while let Some(o) = t.poll_output() {
        match o {
            TowerOutput::Persist(w) => {
                store.apply(&w);
                t.handle_persisted(w.seq());
            }
            TowerOutput::Broadcast(tx) => broadcasts.push(tx),
            TowerOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let honest = &*HONEST;
    let config = TowerConfig { max_blob: 4096, max_packages: 64, max_bytes: 64 * 1024, max_per_hint: 4 };
    let mut t = Tower::new(config.clone());
    let mut store = Store::default();
    let (mut broadcasts, mut events) = (Vec::new(), Vec::new());
    let mut honest_filed = false;
    let mut cheat_shown = false;
    let mut txs: Vec<Transaction> = Vec::new();
    let mut d = data;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        if d.len() < n {
            return None;
        }
        let (a, b) = d.split_at(n);
        d = b;
        Some(a.to_vec())
    };
    while let Some(op) = take(1) {
        let Some(arg) = take(2) else { break };
        let client = u64::from(arg[0] % 4);
        match op[0] % 8 {
            // A package of fuzzer bytes, under the hint of a transaction
            // the next block will hold, or of the cheat.
            0 | 1 => {
                let len = usize::from(arg[1]) * 4;
                let Some(mut blob) = take(len) else { break };
                if let Some(b) = blob.first_mut() {
                    *b = if op[0] % 2 == 0 { 1 } else { *b };
                }
                let target = if arg[0] & 0x80 != 0 { honest.cheat.clone() } else { tx(u64::from(arg[1])) };
                txs.push(target.clone());
                let _ = t.handle_package(client, JusticePackage { hint: tower::hint(&target.compute_txid()), blob });
            }
            // The honest package, or a copy with one byte changed.
            2 => {
                let mut p = honest.package.clone();
                if arg[1] != 0 {
                    let i = usize::from(arg[1]) % p.blob.len();
                    p.blob[i] ^= arg[0] | 1;
                } else {
                    honest_filed |= t.handle_package(0, p.clone()).is_ok();
                    continue;
                }
                let _ = t.handle_package(client, p);
            }
            // A block: some of the transactions, perhaps the cheat.
            3 | 4 => {
                let mut block: Vec<Transaction> = txs.drain(..).collect();
                if op[0] % 8 == 4 {
                    block.push(honest.cheat.clone());
                    cheat_shown = true;
                }
                t.block_connected(u32::from(arg[1]), &block);
            }
            5 => {
                t.remove_client(client);
                if client == 0 {
                    honest_filed = false;
                }
            }
            // A restart from the store.
            6 => {
                drain(&mut t, &mut store, &mut broadcasts, &mut events);
                t = Tower::restore(config.clone(), store.snapshot.as_deref(), store.entries()).expect("its own store");
            }
            // Damaged bytes as a store: refused or restored, never a panic.
            _ => {
                let len = usize::from(arg[1]);
                let Some(bytes) = take(len) else { break };
                let _ = Tower::restore(config.clone(), Some(&bytes), [bytes.as_slice()]);
            }
        }
        drain(&mut t, &mut store, &mut broadcasts, &mut events);
        // An honest package stored, then its commitment shown: punished.
        if honest_filed && cheat_shown {
            let txid = honest.cheat.compute_txid();
            assert!(
                events.iter().any(|e| matches!(e, TowerEvent::Punished { client: 0, commitment, .. } if *commitment == txid)),
                "the honest package did not punish"
            );
        }
        cheat_shown = false;
    }
});
