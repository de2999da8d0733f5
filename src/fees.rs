//! Fee calculation (section 3.6, R3.6-a to R3.6-e, ruling D9).
//!
//! A commitment transaction's fee does not depend on its real size: it is
//! computed from a normative bytecount of 338 plus 32 per non-dust HTLC
//! (R3.6-a) at the commitment owner's fee rate in satoshi per 1000 bytes,
//! truncated and then rounded down to an even number of satoshis (R3.6-b), so
//! that it always splits into two equal halves. The two sides pay half each
//! from their to-`final_key` outputs where they can; otherwise one pays all it
//! has and the other makes up what it can (R3.6-c). An output that is dust
//! after fees is left out (R3.6-d).
//!
//! Dust (ruling D9) is an output below [`DUST_LIMIT`], 546 satoshis.
//!
//! # Fee floors from the real size
//!
//! The normative bytecount is smaller than the real virtual size of a segwit
//! commitment (ruling D4) once it carries more than a few HTLCs: 338 + 32 per
//! HTLC against about 181 + 43. So a fee rate in satoshi per 1000 normative
//! bytes pays less than that rate per real virtual byte, and a commitment at
//! too low a rate would not relay. [`commitment_max_vsize`] and
//! [`close_max_vsize`] give the worst-case virtual sizes, derived from the
//! byte layout; [`min_commitment_fee_rate`] and [`min_close_fee`] give the
//! lowest fee rate and close fee that still pay a node's relay fee rate for
//! them, and [`DEFAULT_MIN_FEE_RATE`] is the first at Bitcoin Core's default
//! of 1000 sat/kvB: 1341 sat per 1000 normative bytes. `tests/fee_floor.rs`
//! measures real transactions built by [`crate::tx`] against all of these.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::Amount;

use crate::tx::commitment::MAX_HTLC_OUTPUTS;
use crate::types::MilliSats;

/// Outputs below this value are dust and are never created (ruling D9).
pub const DUST_LIMIT: Amount = Amount::from_sat(546);

/// The normative size of a commitment transaction without HTLC outputs
/// (R3.6-a): 221 input script + 41 input + 12 core + 2 outputs of 32.
pub const BASE_BYTECOUNT: u64 = 338;

/// The normative size added by each non-dust HTLC output (R3.6-a).
pub const HTLC_BYTECOUNT: u64 = 32;

/// Whether an output of `amount` is dust (ruling D9).
pub fn is_dust(amount: Amount) -> bool {
    amount < DUST_LIMIT
}

/// Whether an HTLC of `amount` is dust: its output would hold
/// `amount_msat / 1000` satoshis, under [`DUST_LIMIT`] (ruling D9). A dust
/// HTLC gets no output and does not count in the fee bytecount.
pub fn htlc_is_dust(amount: MilliSats) -> bool {
    is_dust(amount.to_sat_floor())
}

/// The normative bytecount of a commitment with `non_dust_htlcs` HTLC
/// outputs: `338 + 32 * non_dust_htlcs` (R3.6-a), in 128 bits so that no
/// count overflows.
pub fn commitment_bytecount(non_dust_htlcs: usize) -> u128 {
    u128::from(BASE_BYTECOUNT) + u128::from(HTLC_BYTECOUNT) * non_dust_htlcs as u128
}

/// The fee of a commitment transaction with `non_dust_htlcs` HTLC outputs at
/// `fee_rate_per_kb` satoshi per 1000 bytes (R3.6-a, R3.6-b).
///
/// `commitment_fee(1112, 2)` is 446 satoshis, the text's example: 402 bytes
/// at 1112 sat/kB is 447.024, truncated to 447, rounded down to even.
///
/// The arithmetic is done in 128 bits and cannot overflow. A fee above
/// `u64::MAX` satoshis (only reachable with an absurd HTLC count) saturates at
/// `u64::MAX - 1` satoshis (the largest even amount), which no channel can
/// pay, so such a commitment is always reported unaffordable rather than
/// wrapped into a small fee.
pub fn commitment_fee(fee_rate_per_kb: u32, non_dust_htlcs: usize) -> Amount {
    fee_for_bytecount(commitment_bytecount(non_dust_htlcs), fee_rate_per_kb)
}

/// Bitcoin Core's default `minrelaytxfee` (and incremental relay fee):
/// 1000 satoshi per 1000 virtual bytes, one per vbyte.
pub const DEFAULT_MIN_RELAY_FEE_RATE: u32 = 1000;

// The byte layout of the commitment and close transactions (segwit v0,
// ruling D4; `docs/transactions.md`), term by term. Non-witness bytes weigh 4,
// witness bytes 1, and a virtual byte is a quarter of the weight rounded up.

/// `nVersion`.
const VERSION_BYTES: u64 = 4;
/// The input count, 1, as a one-byte compact size.
const INPUT_COUNT_BYTES: u64 = 1;
/// The anchor input without its witness: outpoint (32-byte txid, 4-byte
/// index), the empty `scriptSig`'s length byte, `nSequence`.
const ANCHOR_INPUT_BYTES: u64 = 32 + 4 + 1 + 4;
/// `nLockTime`.
const LOCK_TIME_BYTES: u64 = 4;
/// A P2WSH output: value (8), script length (1), `OP_0 <32 bytes>` (34).
/// The to-self output and every HTLC output are P2WSH.
const P2WSH_OUTPUT_BYTES: u64 = 8 + 1 + 34;
/// A P2WPKH output: value (8), script length (1), `OP_0 <20 bytes>` (22).
/// The to-other output and both close outputs are P2WPKH.
const P2WPKH_OUTPUT_BYTES: u64 = 8 + 1 + 22;
/// The anchor witness at its largest, in witness bytes (weight 1 each): the
/// segwit marker and flag (2), the element count (1), the empty
/// `OP_CHECKMULTISIG` dummy (1), two signatures of at most 73 bytes with
/// their length bytes (2 × 74; DER with a 33-byte R and S is 72 bytes, plus
/// the sighash byte), and the 71-byte 2-of-2 script with its length byte (72).
const ANCHOR_WITNESS_BYTES: u64 = 2 + 1 + 1 + 2 * (1 + 73) + (1 + 71);

/// Length of Bitcoin's compact-size encoding of `n`.
const fn compact_size_len(n: u64) -> u64 {
    if n < 0xfd {
        1
    } else if n <= 0xffff {
        3
    } else if n <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// The virtual size of a transaction with `base` non-witness bytes and the
/// anchor witness: `ceil((4 × base + witness) / 4)`.
const fn vsize_with_anchor_witness(base: u64) -> u64 {
    (base.saturating_mul(4).saturating_add(ANCHOR_WITNESS_BYTES)).div_ceil(4)
}

/// The largest virtual size (BIP141: weight / 4, rounded up) of a signed
/// commitment transaction with `htlc_outputs` HTLC outputs and both balance
/// outputs present (ruling D4's segwit v0 layout):
///
/// | part | bytes |
/// |---|---|
/// | version, input count, anchor input, lock time | 4 + 1 + 41 + 4 |
/// | output count: compact size of `htlc_outputs + 2` | 1 below 253 outputs, then 3 |
/// | to-self (P2WSH) and to-other (P2WPKH) | 43 + 31 |
/// | HTLC outputs (P2WSH) | 43 each |
/// | anchor witness, 73-byte signatures (weight 1 per byte) | 224 / 4 = 56 |
///
/// That is `181 + 43n` up to 250 HTLC outputs and `183 + 43n` from 251 on;
/// 99,986 at [`MAX_HTLC_OUTPUTS`]. A commitment that lost a balance output
/// as dust, or has shorter signatures (low-S ones are at most 72 bytes), is
/// smaller. Saturates instead of overflowing for absurd counts.
pub const fn commitment_max_vsize(htlc_outputs: usize) -> u64 {
    let n = htlc_outputs as u64;
    let outputs = n.saturating_add(2);
    let base = (VERSION_BYTES + INPUT_COUNT_BYTES + ANCHOR_INPUT_BYTES + LOCK_TIME_BYTES)
        .saturating_add(compact_size_len(outputs))
        .saturating_add(P2WSH_OUTPUT_BYTES + P2WPKH_OUTPUT_BYTES)
        .saturating_add(n.saturating_mul(P2WSH_OUTPUT_BYTES));
    vsize_with_anchor_witness(base)
}

/// The largest virtual size of a signed close transaction (section 4.2): the
/// anchor input and two P2WPKH outputs, laid out as in
/// [`commitment_max_vsize`]: 4 + 1 + 41 + 1 + 2 × 31 + 4 = 113 non-witness
/// bytes and the 224-byte anchor witness, 169 virtual bytes.
pub const fn close_max_vsize() -> u64 {
    let base = VERSION_BYTES
        + INPUT_COUNT_BYTES
        + ANCHOR_INPUT_BYTES
        + compact_size_len(2)
        + 2 * P2WPKH_OUTPUT_BYTES
        + LOCK_TIME_BYTES;
    vsize_with_anchor_witness(base)
}

/// The smallest even fee, in satoshis, that pays `relay_fee_rate_per_kvb`
/// for `vsize` virtual bytes by Bitcoin Core's rule: the fee must be at
/// least `ceil(rate × vsize / 1000)` (`CFeeRate::GetFee` rounds up in
/// current versions; older ones truncated, which this satisfies too).
const fn min_even_fee(relay_fee_rate_per_kvb: u32, vsize: u64) -> u128 {
    let need = (relay_fee_rate_per_kvb as u128 * vsize as u128).div_ceil(1000);
    need + (need & 1)
}

/// The lowest commitment fee rate (satoshi per 1000 normative bytes, the
/// unit of `initial_fee_rate` and `update_fee`) at which every commitment
/// pays at least `relay_fee_rate_per_kvb` (satoshi per 1000 virtual bytes) on
/// its real size: for every non-dust HTLC count `n` from 0 to
/// [`MAX_HTLC_OUTPUTS`], `commitment_fee(rate, n)` (R3.6-a, R3.6-b) is at
/// least Core's minimum fee for [`commitment_max_vsize`]`(n)`.
///
/// For each `n` the fee must reach `F`, the smallest even fee that pays the
/// relay rate (the R3.6-b fee is even, so reaching `F - 1` means reaching
/// `F`). `⌊B × rate / 1000⌋ ≥ F` with `B = 338 + 32n` holds exactly when
/// `rate ≥ ⌈1000 F / B⌉`, and the fee only grows with the rate, so the
/// answer is the largest of these over all `n`, found near the largest `n`,
/// where the real size outgrows the bytecount the most. At 1000 sat/kvB that
/// is [`DEFAULT_MIN_FEE_RATE`], 1341.
///
/// A `const fn`, evaluated at compile time for the default. Saturates at
/// `u32::MAX` (which then does not suffice) for relay rates above about
/// 3.2 billion sat/kvB.
pub const fn min_commitment_fee_rate(relay_fee_rate_per_kvb: u32) -> u32 {
    let mut rate: u128 = 0;
    let mut n = 0;
    while n <= MAX_HTLC_OUTPUTS {
        let fee = min_even_fee(relay_fee_rate_per_kvb, commitment_max_vsize(n));
        let bytecount = BASE_BYTECOUNT as u128 + HTLC_BYTECOUNT as u128 * n as u128;
        let needed = (1000 * fee).div_ceil(bytecount);
        if needed > rate {
            rate = needed;
        }
        n += 1;
    }
    if rate > u32::MAX as u128 {
        u32::MAX
    } else {
        rate as u32
    }
}

/// The lowest commitment fee rate (satoshi per 1000 normative bytes) whose
/// commitments relay at Bitcoin Core's default relay fee rate
/// ([`DEFAULT_MIN_RELAY_FEE_RATE`], 1 sat/vB) at any number of HTLC outputs
/// up to [`MAX_HTLC_OUTPUTS`]: [`min_commitment_fee_rate`]`(1000)`, computed
/// at compile time, 1341. At 1340, worst-case commitments with 2242 HTLC
/// outputs and 75 of the 79 larger counts pay 1 to 10 satoshis less than
/// their virtual size.
pub const DEFAULT_MIN_FEE_RATE: u32 = min_commitment_fee_rate(DEFAULT_MIN_RELAY_FEE_RATE);

/// The smallest even `close_fee` (R4.2-b) that pays `relay_fee_rate_per_kvb`
/// (satoshi per 1000 virtual bytes) for [`close_max_vsize`] by Core's rule
/// (see [`min_commitment_fee_rate`]): 170 satoshis at 1000 sat/kvB.
/// Saturates at the largest even amount.
pub const fn min_close_fee(relay_fee_rate_per_kvb: u32) -> Amount {
    let fee = min_even_fee(relay_fee_rate_per_kvb, close_max_vsize());
    if fee > (u64::MAX - 1) as u128 {
        Amount::from_sat(u64::MAX - 1)
    } else {
        Amount::from_sat(fee as u64)
    }
}

/// [`min_close_fee`] at Bitcoin Core's default relay fee rate: 170 satoshis.
pub const DEFAULT_MIN_CLOSE_FEE: Amount = min_close_fee(DEFAULT_MIN_RELAY_FEE_RATE);

/// `bytecount * fee_rate_per_kb / 1000`, truncated, rounded down to even
/// (R3.6-b), saturating at the largest even amount.
pub fn fee_for_bytecount(bytecount: u128, fee_rate_per_kb: u32) -> Amount {
    let fee = bytecount * u128::from(fee_rate_per_kb) / 1000;
    let even = fee & !1;
    Amount::from_sat(u64::try_from(even).unwrap_or(u64::MAX - 1))
}

/// How a fee divides between the two to-`final_key` outputs of a commitment
/// or close transaction (R3.6-c, R3.6-d).
///
/// `local` and `remote` name the two sides from the point of view of whoever
/// asked; the rule is symmetric.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FeeSplit {
    /// The fee that was to be paid.
    pub fee: Amount,
    /// What the local side pays towards it.
    pub local_paid: Amount,
    /// What the remote side pays towards it.
    pub remote_paid: Amount,
    /// The local to-`final_key` value after its share.
    pub local: Amount,
    /// The remote to-`final_key` value after its share.
    pub remote: Amount,
}

impl FeeSplit {
    /// The local output's value, or `None` if it is dust and left out
    /// (R3.6-d).
    pub fn local_output(&self) -> Option<Amount> {
        (!is_dust(self.local)).then_some(self.local)
    }

    /// The remote output's value, or `None` if it is dust and left out
    /// (R3.6-d).
    pub fn remote_output(&self) -> Option<Amount> {
        (!is_dust(self.remote)).then_some(self.remote)
    }

    /// Whether the local side paid its full half of the fee. A side that did
    /// not cannot add HTLCs until fees change or HTLCs resolve (R3.6-e).
    pub fn local_paid_share(&self) -> bool {
        self.local_paid >= self.fee / 2
    }

    /// Whether the remote side paid its full half of the fee (R3.6-e).
    pub fn remote_paid_share(&self) -> bool {
        self.remote_paid >= self.fee / 2
    }

    /// Whether the two sides together paid the whole fee.
    pub fn fully_paid(&self) -> bool {
        self.local_paid + self.remote_paid == self.fee
    }

    /// What the transaction really pays in fees from the two to-`final_key`
    /// balances: both shares plus any output dropped as dust.
    pub fn effective_fee(&self) -> Amount {
        let dropped = |value: Amount| if is_dust(value) { value } else { Amount::ZERO };
        self.local_paid + self.remote_paid + dropped(self.local) + dropped(self.remote)
    }
}

fn half(fee: Amount) -> Amount {
    // `fee` is even by construction (R3.6-b); halving an odd one rounds the
    // share up so that two shares cover it.
    Amount::from_sat(fee.to_sat().div_ceil(2))
}

/// Divides `fee` between the to-`final_key` balances `local` and `remote`
/// (R3.6-c):
///
/// 1. if each can afford half, each pays half;
/// 2. otherwise the one that cannot pays everything it has, and the other pays
///    the rest, or everything it has if that is not enough.
///
/// Nobody pays more than they have, and `local + remote + fee paid` always
/// equals the two balances (the fee actually paid can fall short of `fee`
/// only when both outputs reach zero).
pub fn split_fee(fee: Amount, local: Amount, remote: Amount) -> FeeSplit {
    let share = half(fee);
    let (local_paid, remote_paid) = if local >= share && remote >= share {
        (fee - share, share)
    } else if local < share {
        let rest = fee - local;
        (local, remote.min(rest))
    } else {
        let rest = fee - remote;
        (local.min(rest), remote)
    };
    FeeSplit { fee, local_paid, remote_paid, local: local - local_paid, remote: remote - remote_paid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_wrapping() {
        assert_eq!(commitment_fee(u32::MAX, usize::MAX), Amount::from_sat(u64::MAX - 1));
    }
}
