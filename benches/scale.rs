//! Issue 11's figures: bytes persisted per payment with 0, 100 and 1,000
//! live HTLCs, the heap of a channel with 1,500 live HTLCs, and the time of
//! one payment at each of those sizes. Figures are printed; times are
//! measured by criterion.

use bitcoin::hashes::{sha256, Hash};
use criterion::{criterion_group, criterion_main, Criterion};
use paychan::sim::Pair;
use paychan::{MilliSats, Preimage};

#[path = "../tests/common/live.rs"]
mod live;
use live::{heap_of, with_live, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn pay(p: &mut Pair, n: u64) {
    let r = Preimage(sha256::Hash::hash(&(1_000_000 + n).to_le_bytes()).to_byte_array());
    // Alternate directions so that neither side runs out.
    p.pay(if n % 2 == 0 { 'A' } else { 'B' }, MilliSats::from_msat(600_000), r);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for live in [0usize, 100, 1000] {
        let mut p = with_live(live);
        // One payment's journal entries, then the average over enough
        // payments to include the snapshots the compaction rule asks for.
        let before = p.a.persisted_bytes + p.b.persisted_bytes;
        pay(&mut p, 0);
        let one = p.a.persisted_bytes + p.b.persisted_bytes - before;
        let runs = 1_000;
        let before = p.a.persisted_bytes + p.b.persisted_bytes;
        for n in 1..=runs {
            pay(&mut p, n);
        }
        let average = (p.a.persisted_bytes + p.b.persisted_bytes - before) / runs;
        println!(
            "scale: one payment with {live} live HTLCs persists {one} bytes (both nodes); \
             {average} bytes on average over {runs} payments, snapshots included"
        );
        let mut n = runs + 1;
        group.bench_function(format!("one_payment/{live}_live_htlcs"), |b| {
            b.iter(|| {
                pay(&mut p, n);
                n += 1;
            })
        });
    }
    group.finish();

    // The heap of one channel with 1,500 live HTLCs, measured by the
    // counting allocator.
    let (live, restored, stored) = heap_of(1500);
    println!("scale: a channel with 1500 live HTLCs holds {live} bytes of heap live, {restored} restored ({stored} bytes stored)");
}

criterion_group!(benches, bench);
criterion_main!(benches);
