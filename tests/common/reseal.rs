//! The crate's storage checksum, written out again independently of it.
//! (Shared with the fuzz crate, which uses only part of it.)
#![allow(dead_code)]

/// The fold's bijection of u64.
fn mix(x: u64) -> u64 {
    (x ^ (x >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Both checksums end the same way: the partial last word (from `at`) and
/// a final mix of the running value `h`, written over the last 8 bytes.
fn finish(mut state: Vec<u8>, mut h: u64, at: usize) -> Vec<u8> {
    let body = state.len() - 8;
    let mut tail = [0u8; 8];
    tail[..body - at].copy_from_slice(&state[at..body]);
    h = mix(mix(h ^ u64::from_le_bytes(tail)) ^ 0x94d0_49bb_1331_11eb);
    let sum = mix(h ^ (h >> 31));
    state[body..].copy_from_slice(&sum.to_le_bytes());
    state
}

/// A stored piece (a snapshot or a journal entry) with its checksum
/// recomputed, as a buggy writer would leave it: the format's 64-bit
/// checksum (ADR 0003), written out here again.
pub fn resealed(state: Vec<u8>) -> Vec<u8> {
    let body = state.len() - 8;
    // Word i goes to lane i mod 4.
    let mut lanes: [u64; 4] =
        [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];
    let mut at = 0;
    while at + 8 <= body {
        let lane = (at / 8) % 4;
        lanes[lane] = mix(lanes[lane] ^ u64::from_le_bytes(state[at..at + 8].try_into().unwrap()));
        at += 8;
    }
    let mut h = (body as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for lane in lanes {
        h = mix(h ^ lane);
    }
    finish(state, h, at)
}

/// A stored piece resealed as the formats before the four-lane checksum
/// sealed it (one lane: every word folded in turn): what a store written by
/// an earlier version of the crate holds.
pub fn resealed_single_lane(state: Vec<u8>) -> Vec<u8> {
    let body = state.len() - 8;
    let mut h = (body as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut at = 0;
    while at + 8 <= body {
        h = mix(h ^ u64::from_le_bytes(state[at..at + 8].try_into().unwrap()));
        at += 8;
    }
    finish(state, h, at)
}
