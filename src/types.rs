//! Small domain types shared by every layer: millisatoshi amounts, HTLC
//! preimages and the relative `delay` of `open_channel`.
//!
//! Satoshi amounts are [`bitcoin::Amount`] throughout; only what the protocol
//! counts in millisatoshi gets a type of its own here. Arithmetic is checked:
//! an overflow is reported as `None`, never wrapped.

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::{Amount, Sequence};

/// An amount in millisatoshi (1/1000 satoshi), as HTLC amounts and channel
/// balances are counted (section 3.2).
///
/// On-chain outputs can only carry whole satoshis: [`MilliSats::to_sat_floor`]
/// truncates, and the truncated remainder goes to fees.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliSats(u64);

impl MilliSats {
    /// Zero millisatoshi.
    pub const ZERO: MilliSats = MilliSats(0);
    /// The largest representable amount.
    pub const MAX: MilliSats = MilliSats(u64::MAX);

    /// An amount of `msat` millisatoshi.
    pub const fn from_msat(msat: u64) -> Self {
        MilliSats(msat)
    }

    /// The amount in millisatoshi.
    pub const fn to_msat(self) -> u64 {
        self.0
    }

    /// The exact millisatoshi value of a satoshi amount, or `None` if it does
    /// not fit in 64 bits.
    pub fn from_sat(amount: Amount) -> Option<Self> {
        amount.to_sat().checked_mul(1000).map(MilliSats)
    }

    /// Whole satoshis, rounding down (the sub-satoshi remainder is dropped,
    /// as commitment transactions do).
    pub fn to_sat_floor(self) -> Amount {
        Amount::from_sat(self.0 / 1000)
    }

    /// `self + rhs`, or `None` on overflow.
    pub fn checked_add(self, rhs: MilliSats) -> Option<MilliSats> {
        self.0.checked_add(rhs.0).map(MilliSats)
    }

    /// `self - rhs`, or `None` if `rhs` is larger.
    pub fn checked_sub(self, rhs: MilliSats) -> Option<MilliSats> {
        self.0.checked_sub(rhs.0).map(MilliSats)
    }
}

impl fmt::Debug for MilliSats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

impl fmt::Display for MilliSats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

impl MilliSats {
    /// The sum of `amounts`, or `None` on overflow.
    pub fn checked_sum(amounts: impl IntoIterator<Item = MilliSats>) -> Option<MilliSats> {
        amounts.into_iter().try_fold(MilliSats::ZERO, MilliSats::checked_add)
    }
}

/// The amount of one HTLC as `update_add_htlc` carries it: millisatoshi in 32
/// bits (section 3.2.1; the anchor limit of R2.2-c guarantees every amount in
/// a channel fits).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HtlcMsat(u32);

impl HtlcMsat {
    /// An HTLC amount of `msat` millisatoshi.
    pub const fn from_msat(msat: u32) -> Self {
        HtlcMsat(msat)
    }

    /// The amount as a [`MilliSats`].
    pub const fn msat(self) -> MilliSats {
        MilliSats(self.0 as u64)
    }

    /// The raw 32-bit millisatoshi value carried on the wire.
    pub const fn to_u32(self) -> u32 {
        self.0
    }
}

impl TryFrom<MilliSats> for HtlcMsat {
    type Error = core::num::TryFromIntError;

    fn try_from(value: MilliSats) -> Result<Self, Self::Error> {
        u32::try_from(value.0).map(HtlcMsat)
    }
}

impl fmt::Debug for HtlcMsat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

impl fmt::Display for HtlcMsat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

/// A 32-byte secret whose SHA-256 is published in advance: an HTLC's `R`
/// (section 3.3) or a commitment's revocation preimage (section 5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Preimage(pub [u8; 32]);

impl Preimage {
    /// SHA-256 of the preimage: the `r_hash` or revocation hash it opens.
    pub fn hash(&self) -> sha256::Hash {
        sha256::Hash::from_byte_array(crate::digest::sha256(&self.0))
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A preimage is a secret until it is revealed: print only its hash.
        write!(f, "Preimage(sha256={})", self.hash())
    }
}

/// The relative lock time of `open_channel.delay`: how long the receiver's
/// payments to itself stay locked by `OP_CHECKSEQUENCEVERIFY` (section 2.1).
///
/// Both forms are kept exactly as sent so that a message re-encodes to the
/// same bytes; [`Delay::to_sequence`] gives the BIP68 value, rounding seconds
/// up to whole 512-second units so the lock is never shorter than asked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Delay {
    /// A number of blocks, at most 65535 (BIP68's 16-bit field).
    Blocks(u16),
    /// A number of seconds, at most [`Delay::MAX_SECONDS`].
    Seconds(u32),
}

impl Delay {
    /// The longest delay in seconds BIP68 can express: 65535 units of 512 s.
    pub const MAX_SECONDS: u32 = 0xFFFF * 512;

    /// A delay in seconds, or `None` if BIP68 cannot express it.
    pub fn from_seconds(seconds: u32) -> Option<Self> {
        (seconds <= Self::MAX_SECONDS).then_some(Delay::Seconds(seconds))
    }

    /// The BIP68 relative lock: both the operand of `OP_CHECKSEQUENCEVERIFY`
    /// and the smallest `nSequence` that satisfies it.
    pub fn to_sequence(self) -> Sequence {
        match self {
            Delay::Blocks(blocks) => Sequence::from_height(blocks),
            Delay::Seconds(seconds) => {
                let units = seconds.div_ceil(512);
                let units = u16::try_from(units).expect("Delay::Seconds is at most MAX_SECONDS");
                Sequence::from_512_second_intervals(units)
            }
        }
    }
}

impl fmt::Display for Delay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delay::Blocks(b) => write!(f, "{b} blocks"),
            Delay::Seconds(s) => write!(f, "{s} seconds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msat_arithmetic_is_checked() {
        assert_eq!(MilliSats::MAX.checked_add(MilliSats::from_msat(1)), None);
        assert_eq!(MilliSats::ZERO.checked_sub(MilliSats::from_msat(1)), None);
        assert_eq!(MilliSats::from_msat(1999).to_sat_floor(), Amount::from_sat(1));
        assert_eq!(MilliSats::from_sat(Amount::from_sat(u64::MAX)), None);
        assert_eq!(MilliSats::checked_sum([MilliSats::MAX, MilliSats::from_msat(1)]), None);
        assert_eq!(
            MilliSats::checked_sum([MilliSats::from_msat(2), MilliSats::from_msat(3)]),
            Some(MilliSats::from_msat(5))
        );
    }

    #[test]
    fn delay_maps_to_bip68() {
        assert_eq!(Delay::Blocks(144).to_sequence(), Sequence(144));
        // 513 seconds round up to two 512-second units, with the type flag.
        assert_eq!(Delay::Seconds(513).to_sequence(), Sequence((1 << 22) | 2));
        assert_eq!(Delay::from_seconds(Delay::MAX_SECONDS + 1), None);
        assert_eq!(Delay::Seconds(Delay::MAX_SECONDS).to_sequence(), Sequence((1 << 22) | 0xFFFF));
    }
}
