//! Commitment transactions with 0, 10, 100 and 1500 HTLCs: build, build and
//! sign, verify; and the penalty for a revoked 1500-HTLC commitment.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{absolute, Amount, CompressedPublicKey, FeeRate, OutPoint, ScriptBuf, Txid};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paychan::tx::commitment::{self, CommitmentSpec, HtlcDirection, HtlcSpec};
use paychan::tx::funding::FundingOutput;
use paychan::tx::penalty::build_penalty;
use paychan::tx::InMemorySigner;
use paychan::{Delay, MilliSats, Preimage};
use std::hint::black_box;

fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).expect("valid scalar")
}

fn bench(c: &mut Criterion) {
    let secp = Secp256k1::new();
    let public = |n: u8| CompressedPublicKey(key(n).public_key(&secp));
    let funding_value = Amount::from_sat(4_000_000);
    let funding = FundingOutput::new(
        OutPoint { txid: Txid::from_byte_array([7; 32]), vout: 0 },
        funding_value,
        &public(1),
        &public(3),
    );
    let a = InMemorySigner::new(key(1), key(2));
    let b = InMemorySigner::new(key(3), key(4));
    let revocation = Preimage([0xee; 32]);
    let spec_for = |htlcs: &[HtlcSpec]| {
        let in_htlcs: u64 = htlcs.iter().map(|h| h.amount.to_msat()).sum();
        let to_owner = 2_400_000_000 - in_htlcs;
        (to_owner, 4_000_000_000 - 2_400_000_000)
    };

    let mut group = c.benchmark_group("commitment");
    for n in [0u64, 10, 100, 1500] {
        let htlcs: Vec<HtlcSpec> = (0..n)
            .map(|i| {
                HtlcSpec::new(
                    if i % 2 == 0 { HtlcDirection::Offered } else { HtlcDirection::Received },
                    i,
                    MilliSats::from_msat(600_000 + i),
                    sha256::Hash::hash(&i.to_le_bytes()),
                    absolute::LockTime::from_height(800_000 + i as u32).expect("a height"),
                )
            })
            .collect();
        let (to_owner, to_other) = spec_for(&htlcs);
        let spec = CommitmentSpec {
            funding: &funding,
            owner_final: public(2),
            other_final: public(4),
            to_owner: MilliSats::from_msat(to_owner),
            to_other: MilliSats::from_msat(to_other),
            htlcs: &htlcs,
            fee_rate_per_kb: 10_000,
            revocation_hash: revocation.hash(),
            delay: Delay::Blocks(144),
            number: paychan::tx::commitment::CommitmentNumber::default(),
        };
        group.throughput(Throughput::Elements(n.max(1)));
        group.bench_with_input(BenchmarkId::new("build", n), &spec, |bench, spec| {
            bench.iter(|| commitment::build(black_box(spec)).expect("valid spec"))
        });
        group.bench_with_input(BenchmarkId::new("build_sign", n), &spec, |bench, spec| {
            bench.iter(|| {
                let c = commitment::build(black_box(spec)).expect("valid spec");
                c.sign(&funding, &b).expect("in-memory signer")
            })
        });
        let built = commitment::build(&spec).expect("valid spec");
        let sig = built.sign(&funding, &b).expect("in-memory signer");
        group.bench_with_input(BenchmarkId::new("verify", n), &built, |bench, built| {
            bench.iter(|| built.verify(&funding, &public(3), black_box(&sig)).expect("valid signature"))
        });
        if n == 1500 {
            let dest = ScriptBuf::new_p2wpkh(&public(9).wpubkey_hash());
            let rate = FeeRate::from_sat_per_vb(2).expect("small rate");
            group.sample_size(10);
            group.bench_function("penalty/1500", |bench| {
                bench.iter(|| build_penalty(&built, revocation, dest.clone(), rate, &a).expect("sweepable"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
