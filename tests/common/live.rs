//! A channel grown to many live HTLCs, and a counting allocator to weigh
//! it: shared by `benches/scale.rs` and `tests/heap.rs` (each installs the
//! allocator as its own global one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
use paychan::channel::{Channel, ChannelConfig};
use paychan::sim::{Pair, CAPACITY};
use paychan::{MilliSats, Preimage};

/// Counts the bytes live on the heap.
pub struct Counting;

pub static LIVE: AtomicIsize = AtomicIsize::new(0);

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

pub fn config() -> ChannelConfig {
    ChannelConfig { fee_rate: 1_341, ..ChannelConfig::default() }
}

/// A pair with `live` HTLCs from A to B in both commitments (and B given
/// money to pay with).
pub fn with_live(live: usize) -> Pair {
    // Room for 1,500 HTLCs of 600 sat each way and their fees.
    let capacity = CAPACITY * 4;
    let mut p = Pair::new(config(), config(), capacity);
    p.establish();
    let expiry = LockTime::from_height(5_000).expect("a height");
    p.pay('A', MilliSats::from_msat(2_000_000_000), Preimage([9; 32]));
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

/// The heap bytes of a channel with `live` HTLCs, live (right after the
/// round that committed them: what freeing it gives back) and restored
/// from its stored state; and the stored state's size.
pub fn heap_of(live: usize) -> (isize, isize, usize) {
    let tiny = Pair::open().a.ch;
    let mut p = with_live(live);
    let channel = std::mem::replace(&mut p.a.ch, tiny);
    let state = channel.snapshot();
    let signer = p.a.signer.clone();
    drop(p);
    let before = LIVE.load(Ordering::Relaxed);
    drop(channel);
    let live_heap = before - LIVE.load(Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed);
    let restored = Channel::restore(&state, [], signer).expect("restores");
    let restored_heap = LIVE.load(Ordering::Relaxed) - before;
    drop(restored);
    (live_heap, restored_heap, state.len())
}
