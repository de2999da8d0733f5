//! Payments between two in-memory channels, every message through the wire
//! codec and every state change persisted, against the cost of the
//! signatures and verifications a payment needs.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use paychan::sim::Pair;
use paychan::{MilliSats, Preimage};
use std::hint::black_box;

/// One payment from `payer` to the other node: offer, commit/revoke both
/// ways, fulfill, commit/revoke both ways.
fn pay(p: &mut Pair, payer: char, n: u64) {
    p.pay(payer, MilliSats::from_msat(600_000), Preimage(sha256::Hash::hash(&n.to_le_bytes()).to_byte_array()));
}

/// A pair with money on both sides.
fn funded() -> Pair {
    let mut p = Pair::open();
    p.pay('A', MilliSats::from_msat(400_000_000), Preimage([9; 32]));
    p
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("payment");
    let mut p = funded();
    // Keep no history: the run is long and only the channels' work counts.
    p.a.record = false;
    p.b.record = false;
    let mut n = 0u64;
    group.bench_function("one_payment", |b| {
        b.iter(|| {
            // Alternate directions so the balances never run out.
            pay(&mut p, if n % 2 == 0 { 'A' } else { 'B' }, n);
            n += 1;
        })
    });

    // The cryptography a payment cannot avoid: four commitment signatures
    // and their four verifications, each of a new digest as a payment's
    // are. (Signing and checking the same four digests over and over runs
    // about 8% faster on this machine, because the CPU learns the
    // verifications' branches: that would not be the floor of a payment.)
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[3; 32]).expect("valid");
    let public = key.public_key(&secp);
    let digests: Vec<Message> =
        (0u32..8192).map(|i| Message::from_digest(sha256::Hash::hash(&i.to_le_bytes()).to_byte_array())).collect();
    let mut next = digests.iter().cycle();
    group.bench_function("four_signatures_and_verifications", |b| {
        b.iter(|| {
            for _ in 0..4 {
                let d = next.next().expect("cycles");
                let sig = secp.sign_ecdsa(black_box(d), &key);
                secp.verify_ecdsa(d, &sig, &public).expect("valid");
            }
        })
    });

    // 100 payments in one commitment round each way.
    group.throughput(Throughput::Elements(100));
    group.sample_size(20);
    group.bench_function("batch_of_100", |b| {
        b.iter_batched(
            funded,
            |mut p| {
                p.a.record = false;
                p.b.record = false;
                let expiry = LockTime::from_height(5000).expect("a height");
                let preimages: Vec<Preimage> =
                    (0u64..100).map(|i| Preimage(sha256::Hash::hash(&i.to_le_bytes()).to_byte_array())).collect();
                let ids: Vec<u64> = preimages
                    .iter()
                    .map(|r| p.a.ch.offer_htlc(MilliSats::from_msat(600_000), r.hash(), expiry, vec![]).expect("ok"))
                    .collect();
                p.settle();
                for (id, r) in ids.into_iter().zip(preimages) {
                    p.b.ch.fulfill_htlc(id, r).expect("incoming");
                }
                p.settle();
                p
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
