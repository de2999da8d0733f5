//! Issue 11's memory goal, checked: a channel with 1,500 live HTLCs holds
//! under 1 MiB of heap, live right after the round that committed them and
//! restored from its store. The only test of this binary, so that the
//! counting allocator sees nothing else.

#[path = "common/live.rs"]
mod live;
use live::{heap_of, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_channel_with_1500_live_htlcs_holds_under_a_mebibyte() {
    let (live, restored, stored) = heap_of(1500);
    // Keys inserted in order leave a map's nodes half full, and a batch
    // leaves its buffers behind: the channel rebuilds its maps as they
    // double and trims its buffers (without either it held 2.2 MB live).
    assert!(live < 1 << 20, "live: {live} bytes");
    assert!(restored < 1 << 20, "restored: {restored} bytes");
    // The heap is within a small factor of what the state takes to store.
    assert!(restored < 3 * stored as isize, "restored: {restored} bytes for {stored} stored");
}
