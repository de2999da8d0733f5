//! Watchtowers (W1): building one justice package (penalty built, signed and
//! sealed) with 0 and 20 HTLCs in the revoked commitment, and a tower
//! scanning a block of 3,000 transactions against 1,000,000 stored hints.

use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::{absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid};
use criterion::{criterion_group, criterion_main, Criterion};
use paychan::channel::ChannelConfig;
use paychan::sim::{destination, Pair, CAPACITY};
use paychan::tower::{justice_package, JusticePackage, JusticeSettings, Tower, TowerConfig};
use paychan::{MilliSats, Preimage};
use std::hint::black_box;

/// A pair where B's last revoked commitment holds `htlcs` HTLCs.
fn revoked_with(htlcs: u64) -> Pair {
    let config = ChannelConfig { export_revoked: true, ..ChannelConfig::default() };
    let mut p = Pair::new(config.clone(), config, CAPACITY * 2);
    p.establish();
    let expiry = absolute::LockTime::from_height(5_000).expect("a height");
    p.pay('A', MilliSats::from_msat(500_000_000), Preimage([7; 32]));
    for i in 0..htlcs {
        let r = Preimage(sha256::Hash::hash(&i.to_le_bytes()).to_byte_array());
        let from = if i % 2 == 0 { &mut p.a } else { &mut p.b };
        from.ch.offer_htlc(MilliSats::from_msat(2_000_000), r.hash(), expiry, vec![]).expect("affordable");
    }
    p.settle();
    // One more change revokes the commitment holding them.
    p.a.ch.update_fee(12_000).expect("a fee");
    p.a.ch.commit().expect("a commit");
    p.settle();
    p
}

/// A transaction of about 250 bytes spending `n`'s outpoint.
fn filler(n: u64) -> Transaction {
    let txid = Txid::from_byte_array(sha256::Hash::hash(&n.to_le_bytes()).to_byte_array());
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid, vout: 0 },
            script_sig: ScriptBuf::from_bytes(vec![0x51; 107]),
            sequence: Sequence::MAX,
            witness: Default::default(),
        }],
        output: vec![
            TxOut { value: Amount::from_sat(50_000), script_pubkey: ScriptBuf::from_bytes(vec![0x00; 22]) },
            TxOut { value: Amount::from_sat(40_000), script_pubkey: ScriptBuf::from_bytes(vec![0x00; 22]) },
        ],
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tower");
    for htlcs in [0u64, 20] {
        let p = revoked_with(htlcs);
        let revoked = p.a.revoked.last().expect("B revoked").clone();
        let live = revoked.commitment.outputs().len();
        let settings = JusticeSettings {
            destination: destination(&p.a.signer),
            fee_rate: FeeRate::from_sat_per_vb(10).expect("a rate"),
            reward: None,
        };
        let package = justice_package(&revoked, &settings, &*p.a.signer).expect("a package");
        println!(
            "tower: a package for a commitment of {live} outputs ({htlcs} HTLCs) seals {} bytes",
            package.blob.len()
        );
        group.bench_function(format!("package/{htlcs}_htlcs"), |b| {
            b.iter(|| justice_package(black_box(&revoked), &settings, &*p.a.signer).expect("a package"))
        });
    }

    // A million packages under random hints (64-byte blobs: the scan never
    // opens one), then a block of 3,000 transactions, none a cheat.
    let mut tower = Tower::new(TowerConfig { max_packages: 2_000_000, ..TowerConfig::default() });
    for i in 0..1_000_000u64 {
        let digest = sha256::Hash::hash(&(i ^ 0x5555).to_le_bytes()).to_byte_array();
        let mut hint = [0u8; 16];
        hint.copy_from_slice(&digest[..16]);
        let mut blob = vec![1u8; 64];
        blob[1..33].copy_from_slice(&digest);
        tower.handle_package(i % 1_000, JusticePackage { hint, blob }).expect("within quota");
        if i % 10_000 == 0 {
            while tower.poll_output().is_some() {}
        }
    }
    while tower.poll_output().is_some() {}
    println!("tower: {} packages stored", tower.packages());
    let block: Vec<Transaction> = (0..3_000).map(filler).collect();
    group.sample_size(20);
    group.bench_function("scan_3000_txs_against_1000000_hints", |b| {
        b.iter(|| {
            tower.block_connected(900_000, black_box(&block));
            while tower.poll_output().is_some() {}
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
