//! Fee calculation (section 3.6, R3.6-a..e, ruling D9).

use bitcoin::Amount;
use paychan::fees::{
    close_max_vsize, commitment_bytecount, commitment_fee, commitment_max_vsize, htlc_is_dust, is_dust, min_close_fee,
    min_commitment_fee_rate, split_fee, DUST_LIMIT,
};
use paychan::MilliSats;
use proptest::prelude::*;

fn sat(n: u64) -> Amount {
    Amount::from_sat(n)
}

#[test]
fn the_texts_example() {
    // R3.6-a: 338 + 32 per non-dust HTLC; two HTLCs make the text's 402 bytes.
    assert_eq!(commitment_bytecount(0), 338);
    assert_eq!(commitment_bytecount(2), 402);
    // R3.6-b: 402 * 1112 / 1000 = 447.024, truncated to 447, made even: 446.
    assert_eq!(commitment_fee(1112, 2), sat(446));
}

#[test]
fn fee_is_truncated_then_made_even() {
    // R3.6-b: 338 * 1001 / 1000 = 338.338 -> 338 (already even).
    assert_eq!(commitment_fee(1001, 0), sat(338));
    // R3.6-b: 370 * 2999 / 1000 = 1109.63 -> 1109 -> 1108.
    assert_eq!(commitment_fee(2999, 1), sat(1108));
    // R3.6-b: a rate too small for one satoshi pays nothing.
    assert_eq!(commitment_fee(2, 0), sat(0));
    assert_eq!(commitment_fee(0, 1500), sat(0));
    // R3.6-a: 1500 HTLCs each way at 50 000 sat/kB.
    assert_eq!(commitment_fee(50_000, 3000), sat((338 + 32 * 3000) * 50));
}

#[test]
fn dust_is_below_546_satoshis() {
    // D9
    assert!(is_dust(sat(545)));
    assert!(!is_dust(sat(546)));
    assert_eq!(DUST_LIMIT, sat(546));
    // D9: an HTLC is dust when amount_msat / 1000 < 546.
    assert!(htlc_is_dust(MilliSats::from_msat(545_999)));
    assert!(!htlc_is_dust(MilliSats::from_msat(546_000)));
}

#[test]
fn split_cases_of_the_text() {
    // R3.6-c: both can afford half: each pays half.
    let s = split_fee(sat(1000), sat(10_000), sat(700));
    assert_eq!((s.local_paid, s.remote_paid, s.local, s.remote), (sat(500), sat(500), sat(9500), sat(200)));
    // R3.6-d: the remote's 200 left is dust and has no output.
    assert_eq!((s.local_output(), s.remote_output()), (Some(sat(9500)), None));
    assert_eq!(s.effective_fee(), sat(1200));

    // R3.6-c: remote cannot afford half: it pays all it has, local the rest.
    let s = split_fee(sat(1000), sat(10_000), sat(300));
    assert_eq!((s.local_paid, s.remote_paid, s.local, s.remote), (sat(700), sat(300), sat(9300), sat(0)));
    // R3.6-e: remote did not pay its share, local did.
    assert!(!s.remote_paid_share());
    assert!(s.local_paid_share());
    assert!(s.fully_paid());

    // R3.6-c: neither can afford half: both go to zero.
    let s = split_fee(sat(1000), sat(400), sat(300));
    assert_eq!((s.local, s.remote, s.local_paid, s.remote_paid), (sat(0), sat(0), sat(400), sat(300)));
    assert!(!s.fully_paid());
    // R3.6-e
    assert!(!s.local_paid_share() && !s.remote_paid_share());

    // R3.6-c: local cannot afford half, remote cannot cover the rest.
    let s = split_fee(sat(1000), sat(100), sat(600));
    assert_eq!((s.local_paid, s.remote_paid, s.local, s.remote), (sat(100), sat(600), sat(0), sat(0)));
}

/// The worst-case sizes by hand (D4; the measurements on real transactions
/// are in `tests/fee_floor.rs`): 4 + 1 + 41 + 4 bytes of version, input
/// count, anchor input and lock time, 43 + 31 of balance outputs, 43 per HTLC
/// output, the output count (1 byte below 253 outputs, 3 from there to
/// 65,535), and the 224 witness bytes of the anchor, 56 vbytes.
#[test]
fn worst_case_sizes() {
    assert_eq!(commitment_max_vsize(0), 50 + 1 + 74 + 56);
    assert_eq!(commitment_max_vsize(1), 50 + 1 + 74 + 43 + 56);
    assert_eq!(commitment_max_vsize(250), 50 + 1 + 74 + 43 * 250 + 56);
    assert_eq!(commitment_max_vsize(251), 50 + 3 + 74 + 43 * 251 + 56);
    assert_eq!(commitment_max_vsize(2321), 99_986);
    // 65,534 HTLC outputs are 65,536 outputs: a 5-byte count.
    assert_eq!(commitment_max_vsize(65_533), 50 + 3 + 74 + 43 * 65_533 + 56);
    assert_eq!(commitment_max_vsize(65_534), 50 + 5 + 74 + 43 * 65_534 + 56);
    // Absurd counts saturate rather than wrap.
    assert!(commitment_max_vsize(usize::MAX) >= u64::MAX / 4);
    // 4 + 1 + 41 + 1 + 31 + 31 + 4 = 113; (4 × 113 + 224) / 4 = 169.
    assert_eq!(close_max_vsize(), 169);
}

#[test]
fn fee_floors_at_the_extremes() {
    // A zero relay rate needs nothing.
    assert_eq!(min_commitment_fee_rate(0), 0);
    assert_eq!(min_close_fee(0), sat(0));
    // 1 sat/kvB still needs 1 satoshi, made even (R3.6-b, R4.2-b): 2. The
    // smallest commitment, 338 bytes, pays 2 from 6 sat/kB on (2.028).
    assert_eq!(min_close_fee(1), sat(2));
    assert_eq!(min_commitment_fee_rate(1), 6);
    // u32::MAX sat/kvB: the close fee is ⌈4,294,967,295 × 169 / 1000⌉ =
    // 725,849,473, made even; no u32 commitment rate suffices, so it
    // saturates.
    assert_eq!(min_close_fee(u32::MAX), sat(725_849_474));
    assert_eq!(min_commitment_fee_rate(u32::MAX), u32::MAX);
}

/// The rule of R3.6-c written independently: who pays what.
fn reference_split(fee: u64, a: u64, b: u64) -> (u64, u64) {
    let half = fee / 2;
    if a >= half && b >= half {
        (half, fee - half)
    } else if a < half {
        (a, b.min(fee - a))
    } else {
        (a.min(fee - b), b)
    }
}

proptest! {
    #[test]
    fn fee_formula(rate in any::<u32>(), htlcs in 0usize..10_000) {
        let bytes = 338 + 32 * htlcs as u64;
        let expected = bytes * u64::from(rate) / 1000 / 2 * 2;
        // R3.6-a, R3.6-b
        prop_assert_eq!(commitment_fee(rate, htlcs), sat(expected));
        prop_assert_eq!(commitment_fee(rate, htlcs).to_sat() % 2, 0);
    }

    #[test]
    fn split_properties(rate in 0u32..200_000, htlcs in 0usize..3000, a in 0u64..5_000_000, b in 0u64..5_000_000) {
        let fee = commitment_fee(rate, htlcs);
        let s = split_fee(fee, sat(a), sat(b));
        // Value is conserved: the two outputs plus what each paid are what
        // the two sides had.
        prop_assert_eq!(s.local + s.remote + s.local_paid + s.remote_paid, sat(a + b));
        // Nobody pays more than they have, nor more than the fee in total.
        prop_assert!(s.local_paid <= sat(a) && s.remote_paid <= sat(b));
        prop_assert!(s.local_paid + s.remote_paid <= fee);
        // R3.6-c: the division follows the rule exactly.
        let (pa, pb) = reference_split(fee.to_sat(), a, b);
        prop_assert_eq!((s.local_paid, s.remote_paid), (sat(pa), sat(pb)));
        // R3.6-c: the fee is short only if both outputs were used up.
        if !s.fully_paid() {
            prop_assert_eq!((s.local, s.remote), (sat(0), sat(0)));
        }
        // R3.6-d: dust outputs vanish, and only dust ones.
        prop_assert_eq!(s.local_output().is_none(), s.local < sat(546));
        prop_assert_eq!(s.remote_output().is_none(), s.remote < sat(546));
        let outputs = s.local_output().unwrap_or(Amount::ZERO) + s.remote_output().unwrap_or(Amount::ZERO);
        prop_assert_eq!(outputs + s.effective_fee(), sat(a + b));
        // R3.6-e: a side that paid less than half could not afford it.
        if !s.local_paid_share() {
            prop_assert!(sat(a) < fee / 2);
        }
        if !s.remote_paid_share() {
            prop_assert!(sat(b) < fee / 2);
        }
    }

    /// The rule is symmetric: swapping the sides swaps the result.
    #[test]
    fn split_is_symmetric(fee in 0u64..1_000_000, a in 0u64..2_000_000, b in 0u64..2_000_000) {
        let fee = sat(fee & !1);
        let s = split_fee(fee, sat(a), sat(b));
        let t = split_fee(fee, sat(b), sat(a));
        // R3.6-c
        prop_assert_eq!((s.local_paid, s.remote_paid, s.local, s.remote), (t.remote_paid, t.local_paid, t.remote, t.local));
    }
}
