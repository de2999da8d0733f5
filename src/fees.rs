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

use bitcoin::Amount;

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
