//! What one commitment transaction contains, and the updates that change it.
//!
//! A [`View`] is the content of one side's commitment: the two balances, the
//! HTLCs, and the owner's fee rate (ruling D7). Updates ([`Update`]) are
//! applied to views in the order this node processed them; the staged and
//! committed views of section 3 are views with more or fewer updates applied.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::BTreeMap;

use bitcoin::absolute;
use bitcoin::hashes::sha256;

use crate::fees::{commitment_fee, htlc_is_dust};
use crate::tx::commitment::{HtlcDirection, HtlcSpec, MAX_HTLC_OUTPUTS};
use crate::types::{HtlcMsat, MilliSats, Preimage};

/// One of the two channel parties, from this node's point of view.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Side {
    /// This node.
    Local,
    /// The peer.
    Remote,
}

impl Side {
    /// The other party.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}

/// An HTLC in a commitment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Htlc {
    /// Who offered it (and so whose id space `id` is in).
    pub offerer: Side,
    /// The offerer's id for it.
    pub id: u64,
    /// Its value.
    pub amount: HtlcMsat,
    /// SHA-256 of its `R`.
    pub r_hash: sha256::Hash,
    /// When it times out.
    pub expiry: absolute::LockTime,
}

/// A change to the commitments proposed by one side (section 3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Update {
    /// `update_add_htlc` (the route stays with the log entry, not the view).
    Add(Htlc),
    /// `update_fulfill_htlc` of an HTLC the other side offered.
    Fulfill { id: u64, r: Preimage },
    /// `update_fail_htlc` of an HTLC the other side offered.
    Fail { id: u64 },
    /// `update_fee`.
    Fee(u32),
}

/// Why an update cannot apply to a view: a protocol rule it breaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// R3.2-e: the id is already in the commitment.
    DuplicateId(u64),
    /// R3.2-a, R3.6-e: the offerer cannot pay the amount plus its fee share.
    CannotAfford,
    /// R3.2-c: more than the allowed number of HTLCs from one side.
    TooManyHtlcs,
    /// R3.3-c: no such HTLC offered by the other side.
    UnknownHtlc(u64),
    /// R3.3-d: the preimage does not match.
    WrongPreimage(u64),
}

/// The content of one commitment transaction, seen from this node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct View {
    /// Whose commitment this is.
    pub(crate) owner: Side,
    pub(crate) htlcs: BTreeMap<(Side, u64), Htlc>,
    pub(crate) to_local: MilliSats,
    pub(crate) to_remote: MilliSats,
    pub(crate) fee_rate: u32,
    /// HTLCs offered by [Local, Remote].
    offered: [usize; 2],
    /// HTLCs above the dust limit (they count in the fee, R3.6-a).
    non_dust: usize,
    /// Of those, offered by [Local, Remote].
    non_dust_offered: [usize; 2],
}

/// The most non-dust HTLCs one side may offer: half of what a standard
/// commitment can carry ([`MAX_HTLC_OUTPUTS`]). Each side counts only its
/// own, so adds that cross can never take the two together past the limit.
pub const MAX_HTLC_OUTPUTS_PER_SIDE: usize = MAX_HTLC_OUTPUTS / 2;

fn slot(side: Side) -> usize {
    side as usize
}

impl View {
    /// The initial commitment of `owner`: the funder holds everything.
    pub(crate) fn new(owner: Side, to_local: MilliSats, to_remote: MilliSats, fee_rate: u32) -> Self {
        View {
            owner,
            htlcs: BTreeMap::new(),
            to_local,
            to_remote,
            fee_rate,
            offered: [0, 0],
            non_dust: 0,
            non_dust_offered: [0, 0],
        }
    }

    /// `side`'s balance, HTLCs excluded.
    pub fn balance(&self, side: Side) -> MilliSats {
        match side {
            Side::Local => self.to_local,
            Side::Remote => self.to_remote,
        }
    }

    fn balance_mut(&mut self, side: Side) -> &mut MilliSats {
        match side {
            Side::Local => &mut self.to_local,
            Side::Remote => &mut self.to_remote,
        }
    }

    /// The HTLCs, ordered by (offerer, id).
    pub fn htlcs(&self) -> impl Iterator<Item = &Htlc> {
        self.htlcs.values()
    }

    /// The HTLC `id` offered by `offerer`, if present.
    pub fn htlc(&self, offerer: Side, id: u64) -> Option<&Htlc> {
        self.htlcs.get(&(offerer, id))
    }

    /// How many HTLCs `side` has offered in this commitment.
    pub fn offered_by(&self, side: Side) -> usize {
        self.offered[slot(side)]
    }

    /// The owner's fee rate, satoshi per 1000 bytes.
    pub fn fee_rate(&self) -> u32 {
        self.fee_rate
    }

    /// The R3.6 fee of this commitment.
    pub fn fee(&self) -> bitcoin::Amount {
        commitment_fee(self.fee_rate, self.non_dust)
    }

    /// The view without its HTLC map (enough for fee and output checks).
    /// This view without its HTLCs: balances, counts and the fee rate, for
    /// [`View::apply_to_totals`] and the affordability checks of
    /// [`View::check`].
    pub(crate) fn totals(&self) -> View {
        View { htlcs: BTreeMap::new(), ..*self }
    }

    /// [`View::apply`] to the totals alone: a removal takes the HTLC it
    /// removes (as the log keeps it) instead of looking it up.
    pub(crate) fn apply_to_totals(&mut self, from: Side, update: &Update, removed: Option<&Htlc>) {
        match (update, removed) {
            (Update::Add(h), _) => {
                // Checked when logged: affordable in the staged views, which
                // hold at least this update's predecessors.
                if let Some(left) = self.balance(from).checked_sub(h.amount.msat()) {
                    *self.balance_mut(from) = left;
                    self.count(from, h, true);
                }
            }
            (Update::Fulfill { .. }, Some(h)) => {
                self.count(from.other(), h, false);
                self.credit(from, h.amount.msat());
            }
            (Update::Fail { .. }, Some(h)) => {
                self.count(from.other(), h, false);
                self.credit(from.other(), h.amount.msat());
            }
            (Update::Fee(rate), _) if from == self.owner => self.fee_rate = *rate,
            _ => {}
        }
    }

    /// Counts an HTLC offered by `offerer` in or out.
    fn count(&mut self, offerer: Side, h: &Htlc, add: bool) {
        let output = usize::from(!htlc_is_dust(h.amount.msat()));
        let slot = slot(offerer);
        if add {
            self.offered[slot] += 1;
            self.non_dust += output;
            self.non_dust_offered[slot] += output;
        } else {
            self.offered[slot] = self.offered[slot].saturating_sub(1);
            self.non_dust = self.non_dust.saturating_sub(output);
            self.non_dust_offered[slot] = self.non_dust_offered[slot].saturating_sub(output);
        }
    }

    /// Whether the commitment would have at least one output: a non-dust
    /// HTLC, or a balance that is not dust after its fee share (R3.6-d).
    pub fn has_output(&self) -> bool {
        if self.non_dust > 0 {
            return true;
        }
        let (owner, other) = self.owner_balances();
        let split = crate::fees::split_fee(self.fee(), owner.to_sat_floor(), other.to_sat_floor());
        split.local_output().is_some() || split.remote_output().is_some()
    }

    /// Whether `side` can pay its half of the fee from its balance (R3.6-e).
    pub fn can_pay_fee_share(&self, side: Side) -> bool {
        self.balance(side).to_sat_floor() >= self.fee() / 2
    }

    /// Checks every rule an update must meet against this view, without
    /// changing it: ids (R3.2-e, R3.3-c), preimages (R3.3-d), the HTLC count
    /// (R3.2-c) and affordability including the offerer's fee share (R3.2-a,
    /// R3.6-e).
    ///
    /// With `afford` false the fee share is not checked (only that the
    /// balance covers the amount).
    pub(crate) fn check(&self, from: Side, update: &Update, max_htlcs: usize, afford: bool) -> Result<(), Refusal> {
        match update {
            Update::Add(h) => {
                if self.htlcs.contains_key(&(from, h.id)) {
                    return Err(Refusal::DuplicateId(h.id));
                }
                // R3.2-c, and the standard weight limit that the text's 1500
                // was meant to respect: with 43-byte P2WSH outputs (ruling
                // D4) both sides together fit at most MAX_HTLC_OUTPUTS, half
                // each.
                let output = usize::from(!htlc_is_dust(h.amount.msat()));
                let non_dust = self.non_dust + output;
                let own = self.non_dust_offered[slot(from)] + output;
                if self.offered[slot(from)] >= max_htlcs || own > MAX_HTLC_OUTPUTS_PER_SIDE {
                    return Err(Refusal::TooManyHtlcs);
                }
                let left = self.balance(from).checked_sub(h.amount.msat()).ok_or(Refusal::CannotAfford)?;
                if afford {
                    if left.to_sat_floor() < commitment_fee(self.fee_rate, non_dust) / 2 {
                        return Err(Refusal::CannotAfford);
                    }
                    // R3.6-d: the commitment must keep at least one output.
                    let mut after = self.totals();
                    *after.balance_mut(from) = left;
                    after.non_dust = non_dust;
                    if !after.has_output() {
                        return Err(Refusal::CannotAfford);
                    }
                }
                Ok(())
            }
            Update::Fulfill { id, r } => self.check_fulfill(from, *id, &r.hash()),
            Update::Fail { id } => self.htlcs.get(&(from.other(), *id)).map(|_| ()).ok_or(Refusal::UnknownHtlc(*id)),
            Update::Fee(_) => Ok(()),
        }
    }

    /// [`View::check`] of a fulfill by `from` of HTLC `id` whose `R` hashes
    /// to `hash`.
    pub(crate) fn check_fulfill(&self, from: Side, id: u64, hash: &sha256::Hash) -> Result<(), Refusal> {
        let h = self.htlcs.get(&(from.other(), id)).ok_or(Refusal::UnknownHtlc(id))?;
        if *hash != h.r_hash {
            return Err(Refusal::WrongPreimage(id));
        }
        Ok(())
    }

    /// Applies an update by `from`. Only structural rules are enforced here
    /// (the HTLC exists or not, balances stay non-negative): the full rules
    /// were checked by [`View::check`] when the update was first seen. On
    /// refusal the view is unchanged.
    pub(crate) fn apply(&mut self, from: Side, update: &Update) -> Result<(), Refusal> {
        match update {
            Update::Add(h) => {
                let left = self.balance(from).checked_sub(h.amount.msat());
                // One lookup finds the slot or the duplicate.
                let alloc::collections::btree_map::Entry::Vacant(slot) = self.htlcs.entry((from, h.id)) else {
                    return Err(Refusal::DuplicateId(h.id));
                };
                let left = left.ok_or(Refusal::CannotAfford)?;
                slot.insert(*h);
                *self.balance_mut(from) = left;
                self.count(from, h, true);
            }
            // The preimage was checked against this HTLC when the update
            // was logged ([`View::check`]).
            Update::Fulfill { id, .. } => {
                let h = self.remove(from.other(), *id).ok_or(Refusal::UnknownHtlc(*id))?;
                // The receiver of the HTLC is paid.
                self.credit(from, h.amount.msat());
            }
            Update::Fail { id } => {
                let h = self.remove(from.other(), *id).ok_or(Refusal::UnknownHtlc(*id))?;
                // The offerer is refunded.
                self.credit(from.other(), h.amount.msat());
            }
            Update::Fee(rate) => {
                // Ruling D7: a fee rate applies only to its proposer's own
                // commitment.
                if from == self.owner {
                    self.fee_rate = *rate;
                }
            }
        }
        Ok(())
    }

    fn credit(&mut self, side: Side, amount: MilliSats) {
        // Every amount comes out of the anchor, which is far below 2^64 msat.
        let total = self.balance(side).checked_add(amount).expect("balances stay within the anchor");
        *self.balance_mut(side) = total;
    }

    fn remove(&mut self, offerer: Side, id: u64) -> Option<Htlc> {
        let h = self.htlcs.remove(&(offerer, id))?;
        self.count(offerer, &h, false);
        Some(h)
    }

    /// The HTLCs as the transaction layer wants them, directions relative to
    /// the owner, with the RIPEMD-160 of each `r_hash` from `hash160s` (the
    /// channel's cache, in the same key order; one missing, or computed for
    /// another HTLC under the same id, is computed).
    pub(crate) fn htlc_specs(&self, hash160s: &BTreeMap<(Side, u64), super::Hash160Entry>) -> Vec<HtlcSpec> {
        let mut cached = hash160s.iter().peekable();
        self.htlcs
            .iter()
            .map(|(key, h)| {
                // Both maps are ordered by key: one walk through the cache.
                while cached.next_if(|(k, _)| *k < key).is_some() {}
                let hash160 = match cached.peek() {
                    Some((k, (r_hash, hash160))) if *k == key && *r_hash == h.r_hash => *hash160,
                    _ => crate::tx::commitment::ripemd_of(&h.r_hash),
                };
                let direction = if h.offerer == self.owner { HtlcDirection::Offered } else { HtlcDirection::Received };
                HtlcSpec::with_hash160(direction, h.id, h.amount.msat(), h.r_hash, h.expiry, hash160)
            })
            .collect()
    }

    /// (owner's balance, other's balance).
    pub(crate) fn owner_balances(&self) -> (MilliSats, MilliSats) {
        match self.owner {
            Side::Local => (self.to_local, self.to_remote),
            Side::Remote => (self.to_remote, self.to_local),
        }
    }

    /// Recomputes the derived counters (after deserialization).
    pub(crate) fn recount(&mut self) {
        self.offered = [0, 0];
        self.non_dust = 0;
        self.non_dust_offered = [0, 0];
        let htlcs = core::mem::take(&mut self.htlcs);
        for h in htlcs.values() {
            self.count(h.offerer, h, true);
        }
        self.htlcs = htlcs;
    }
}

/// One update in the log, with where it has been included so far.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    pub from: Side,
    /// For our updates: the number of the message that carried it (the peer
    /// has processed it once its `acknowledge` reaches this).
    pub msg_no: u64,
    pub update: Update,
    /// Route (adds) or failure reason (fails), kept for the events.
    pub blob: Vec<u8>,
    /// For removals: the HTLC removed, kept for the events.
    pub removed: Option<Htlc>,
    /// In our latest commitment (which we hold, the previous revoked).
    pub in_ours: bool,
    /// In the latest commitment of theirs that we signed.
    pub in_theirs: bool,
    /// In a commitment of theirs whose predecessor they revoked.
    pub theirs_locked: bool,
}
