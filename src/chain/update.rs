//! What the channel hands the monitor: its constant parameters and, at every
//! step, what changed (ruling D11). Nothing here grows with the number of
//! states: a revocation is one preimage, which the shachain store folds.

#[allow(unused_imports)]
use crate::prelude::*;
use bitcoin::hashes::sha256;
use bitcoin::{CompressedPublicKey, Txid};

use crate::channel::{Htlc, Role, Side};
use crate::tx::funding::FundingOutput;
use crate::types::{Delay, MilliSats, Preimage};

/// A channel's constant parameters, handed to its monitor once the anchor
/// is known.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelParams {
    /// The anchor output.
    pub funding: FundingOutput,
    /// Which side funded it.
    pub role: Role,
    /// Our `final_key`.
    pub our_final: CompressedPublicKey,
    /// The peer's `final_key`.
    pub their_final: CompressedPublicKey,
    /// The CSV delay on our outputs in our commitments (the peer's `delay`).
    pub our_delay: Delay,
    /// The CSV delay on the peer's outputs in its commitments (our `delay`).
    pub their_delay: Delay,
    /// The obscuring factor of commitment numbers (ruling D10).
    pub obscuring: u64,
}

/// One change the channel hands its monitor ([`crate::channel::Output::Monitor`]).
///
/// The updates of one channel step come in order, HTLC changes before the
/// commitment they lead to. Applying an update twice, or applying updates
/// the channel later forgot (a crash between the monitor's write and the
/// channel's), is harmless: the monitor keeps a superset.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MonitorUpdate {
    /// The channel's parameters: the first update of every channel.
    Setup(Box<ChannelParams>),
    /// `side`'s commitment `number` is signed: ours when the peer's
    /// signature arrived (and our previous one is revoked), the peer's when
    /// we signed it.
    Commitment {
        /// Whose commitment.
        side: Side,
        /// Its number.
        number: u64,
        /// Its txid.
        txid: Txid,
        /// Its revocation hash.
        revocation_hash: sha256::Hash,
        /// Our balance in it, HTLCs and fees excluded.
        to_local: MilliSats,
    },
    /// `htlc` is in `side`'s commitments from `number` on.
    HtlcAdded {
        /// Whose commitments.
        side: Side,
        /// The first commitment holding it.
        number: u64,
        /// The HTLC.
        htlc: Htlc,
    },
    /// The HTLC `(offerer, id)` is in none of `side`'s commitments from
    /// `number` on.
    HtlcRemoved {
        /// Whose commitments.
        side: Side,
        /// The first commitment without it.
        number: u64,
        /// Who offered it.
        offerer: Side,
        /// The offerer's id.
        id: u64,
    },
    /// The HTLCs that `side`'s commitment `number` adds and removes, in the
    /// order the channel logged them: the same as an
    /// [`HtlcAdded`](Self::HtlcAdded) or [`HtlcRemoved`](Self::HtlcRemoved)
    /// per change, in that order, in one update. The channel hands over a
    /// commitment's changes this way, one update however many HTLCs a
    /// batch commits.
    Htlcs {
        /// Whose commitments.
        side: Side,
        /// The first commitment with the changes.
        number: u64,
        /// The changes, in order.
        changes: Vec<HtlcChange>,
    },
    /// The peer revoked its commitment `number` with `preimage`.
    Revoked {
        /// The commitment.
        number: u64,
        /// Its revocation preimage.
        preimage: Preimage,
    },
    /// We know this payment preimage (we fulfilled an incoming HTLC with
    /// it): an HTLC paying to it can be claimed on chain.
    Preimage(Preimage),
}

/// One change in a [`MonitorUpdate::Htlcs`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum HtlcChange {
    /// The HTLC is in the commitments from the update's number on.
    Added(Htlc),
    /// The HTLC `(offerer, id)` is in none of them from that number on.
    Removed {
        /// Who offered it.
        offerer: Side,
        /// The offerer's id.
        id: u64,
    },
}

/// One HTLC ever committed and the commitment numbers of each side that held
/// it (ruling D11).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct HtlcRecord {
    pub(crate) htlc: Htlc,
    /// For [our commitments, the peer's]: the first and last number holding
    /// it (the last open while it is still held).
    pub(crate) held: [Option<(u64, Option<u64>)>; 2],
}

impl HtlcRecord {
    pub(crate) fn held_by(&self, side: Side, number: u64) -> bool {
        match self.held[side as usize] {
            Some((first, last)) => first <= number && last.is_none_or(|l| number <= l),
            None => false,
        }
    }
}
