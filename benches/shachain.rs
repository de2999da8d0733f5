//! Shachain: derivation at the worst-case index, sequential inserts into the
//! compact store, and lookups.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use paychan::shachain::{derive, ShachainStore};
use std::hint::black_box;

const INSERTS: u64 = 1_000_000;

fn secrets(seed: &[u8; 32]) -> Vec<[u8; 32]> {
    (0..INSERTS).map(|i| derive(seed, u64::MAX - i)).collect()
}

fn bench(c: &mut Criterion) {
    let seed = [0x5a; 32];
    // All 64 bits set: 64 flips and 64 SHA-256 compressions.
    c.bench_function("shachain/derive/worst_index", |b| b.iter(|| derive(black_box(&seed), black_box(u64::MAX))));

    let all = secrets(&seed);
    let mut group = c.benchmark_group("shachain/insert");
    group.sample_size(10);
    group.throughput(Throughput::Elements(INSERTS));
    group.bench_function("1M_sequential", |b| {
        b.iter_batched(
            ShachainStore::new,
            |mut store| {
                for (i, secret) in all.iter().enumerate() {
                    store.insert(u64::MAX - i as u64, *secret).expect("consistent");
                }
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut store = ShachainStore::new();
    for (i, secret) in all.iter().enumerate() {
        store.insert(u64::MAX - i as u64, *secret).expect("consistent");
    }
    // The oldest secret is the farthest from the entry that derives it.
    c.bench_function("shachain/get/oldest_after_1M", |b| b.iter(|| store.get(black_box(u64::MAX))));
    c.bench_function("shachain/get/newest_after_1M", |b| b.iter(|| store.get(black_box(u64::MAX - (INSERTS - 1)))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
