//! Issue 11's figures: bytes persisted per payment with 0, 100 and 1,000
//! live HTLCs, the heap of a channel with 1,500 live HTLCs, and the time of
//! one payment at each of those sizes. Figures are printed; times are
//! measured by criterion.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use criterion::{criterion_group, criterion_main, Criterion};
use paychan::channel::{Channel, ChannelConfig};
use paychan::sim::{Pair, CAPACITY};
use paychan::{MilliSats, Preimage};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn config() -> ChannelConfig {
    ChannelConfig { fee_rate: 1_341, ..ChannelConfig::default() }
}

/// A pair with `live` HTLCs from A to B in both commitments (and B given
/// money to pay with).
fn with_live(live: usize) -> Pair {
    // Room for 1,500 HTLCs of 600 sat each way and their fees.
    let capacity = CAPACITY * 4;
    let mut p = Pair::new(config(), config(), capacity);
    p.establish();
    let expiry = LockTime::from_height(5_000).expect("a height");
    let r = Preimage([9; 32]);
    p.a.ch.offer_htlc(MilliSats::from_msat(2_000_000_000), r.hash(), expiry, vec![]).expect("affordable");
    p.settle();
    p.b.ch.fulfill_htlc(0, r).expect("incoming");
    p.settle();
    for i in 0..live {
        let r = Preimage(sha256::Hash::hash(&(i as u64).to_le_bytes()).to_byte_array());
        let from = if i % 2 == 0 { &mut p.a } else { &mut p.b };
        from.ch.offer_htlc(MilliSats::from_msat(600_000), r.hash(), expiry, vec![]).expect("affordable");
    }
    p.settle();
    p.a.record = false;
    p.b.record = false;
    p
}

fn pay(p: &mut Pair, n: u64) {
    let r = Preimage(sha256::Hash::hash(&(1_000_000 + n).to_le_bytes()).to_byte_array());
    let expiry = LockTime::from_height(5_000).expect("a height");
    // Alternate directions so that neither side runs out.
    let (payer, payee) = if n % 2 == 0 { ('A', 'B') } else { ('B', 'A') };
    let id = p.node(payer).ch.offer_htlc(MilliSats::from_msat(600_000), r.hash(), expiry, vec![]).expect("affordable");
    p.settle();
    p.node(payee).ch.fulfill_htlc(id, r).expect("incoming");
    p.settle();
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

    // The heap of one channel with 1,500 live HTLCs: restored from its
    // stored state, measured by the counting allocator.
    let p = with_live(1500);
    let state = p.a.ch.snapshot();
    let signer = p.a.signer.clone();
    drop(p);
    let before = LIVE.load(Ordering::Relaxed);
    let ch = Channel::restore(&state, [], signer).expect("restores");
    let heap = LIVE.load(Ordering::Relaxed) - before;
    println!("scale: a channel with 1500 live HTLCs holds {heap} bytes of heap ({} bytes stored)", state.len());
    drop(ch);
}

criterion_group!(benches, bench);
criterion_main!(benches);
