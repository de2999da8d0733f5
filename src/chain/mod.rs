//! On-chain enforcement (section 6, `onchain.md`): a [`Monitor`] watches the
//! anchor of one channel, classifies every spend of it, sweeps what is ours,
//! resolves HTLCs, learns `R` from the peer's claims, punishes revoked
//! states and follows reorganisations.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Monitor`], its contract, inputs and outputs |
//! | `update.rs` | what the channel hands it ([`MonitorUpdate`], ruling D11) |
//! | `resolve.rs` | classification (C1-b) and what to claim, when, at which fee (C1-c..e, D13) |
//! | `persist.rs` | its incremental, append-only persistence and the compaction rule |
//!
//! The monitor keeps, per channel, the shachain store of the peer's
//! revocation preimages (at most 65 entries), the constant parameters, and
//! one record per HTLC ever committed with the commitment numbers that held
//! it (D11). A revoked commitment seen on chain is recognised in O(1) from
//! the number in its lock fields (D10); its outputs are recognised by their
//! scripts, rebuilt from those records, and their amounts read from the
//! transaction.

mod persist;
mod resolve;
mod update;

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;

use bitcoin::hashes::sha256;
use bitcoin::{Amount, BlockHash, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};

use crate::journal::{Compaction, Write};
pub use persist::MonitorRestoreError;
pub use resolve::{Balance, Resolution, SpendKind};
pub(crate) use update::HtlcRecord;
pub use update::{ChannelParams, HtlcChange, MonitorUpdate};

use crate::channel::{Htlc, Side};
use crate::shachain::{RevocationSecrets, ShachainStore};
use crate::tx::Signer;
use crate::types::{MilliSats, Preimage};

/// The monitor's settings (rulings D12, D13).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MonitorConfig {
    /// Where every sweep, claim and penalty pays.
    pub destination: ScriptBuf,
    /// A spend, and each transaction resolving its outputs, is final once
    /// this many blocks deep (D12; the text's upper figure, 100, by default).
    pub final_depth: u32,
    /// The highest fee rate any claim pays (D13).
    pub max_fee_rate: FeeRate,
    /// Over this many blocks before a claim's deadline its fee rate rises
    /// from the caller's estimate to `max_fee_rate` (D13).
    pub urgency_blocks: u32,
}

impl MonitorConfig {
    /// The defaults: final at 100 blocks, a cap of 500 sat/vB, a 12-block
    /// ramp.
    pub fn new(destination: ScriptBuf) -> Self {
        MonitorConfig {
            destination,
            final_depth: 100,
            max_fee_rate: FeeRate::from_sat_per_vb_u32(500),
            urgency_blocks: 12,
        }
    }
}

/// What the monitor hands the caller, drained with [`Monitor::poll_output`]
/// in this order: broadcasts, watches, persistence, events.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MonitorOutput {
    /// Broadcast this transaction (again, if it was before: a claim is
    /// re-broadcast at every block until it confirms, re-signed at a higher
    /// rate as its deadline nears).
    Broadcast(Transaction),
    /// Report the transactions that spend this output (its script, for
    /// compact block filters) with the blocks that hold them.
    Watch {
        /// The output.
        outpoint: OutPoint,
        /// Its script.
        script_pubkey: ScriptBuf,
    },
    /// Store this (see [`Write`]); then call
    /// [`Monitor::handle_persisted`] with its sequence number.
    Persist(Write),
    /// Something the application should know.
    Event(MonitorEvent),
}

/// Something the application should know (events are at least once: a
/// restored monitor reports again what it finds).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MonitorEvent {
    /// A spend of the anchor confirmed, classified (C1-b).
    AnchorSpent {
        /// The spending transaction.
        txid: Txid,
        /// The block height holding it.
        height: u32,
        /// What it is.
        kind: SpendKind,
    },
    /// The anchor spend reported before left the chain (C1-f): whatever
    /// replaces it is reported anew.
    AnchorSpendReorged {
        /// The transaction that left the chain.
        txid: Txid,
    },
    /// A payment preimage appeared on chain (R6.2-a): if it is of an HTLC we
    /// offered, claim the matching incoming HTLC upstream at once.
    PreimageLearned {
        /// Who offered the HTLC it opens.
        offerer: Side,
        /// The offerer's id.
        id: u64,
        /// The preimage.
        preimage: Preimage,
    },
    /// An output of the anchor spend is resolved (C1-c, C1-d, C1-e).
    OutputResolved {
        /// The output.
        outpoint: OutPoint,
        /// Its value.
        value: Amount,
        /// How.
        resolution: Resolution,
    },
    /// An output of the anchor spend matches nothing the monitor knows (an
    /// HTLC record missing): reported, so that it is not silently lost.
    OutputUnrecognised {
        /// The output.
        outpoint: OutPoint,
        /// Its value.
        value: Amount,
    },
    /// An output of ours is not worth claiming at the current fee rate
    /// (D13): it is reported, not dropped; it is claimed if rates fall.
    Uneconomical {
        /// The output.
        outpoint: OutPoint,
        /// Its value.
        value: Amount,
        /// What claiming it would cost.
        fee: Amount,
    },
    /// The anchor spend and every resolution are `final_depth` deep (D12):
    /// the monitor has nothing left to do.
    Final,
}

/// A caller's mistake: the monitor is unchanged.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// An update before [`MonitorUpdate::Setup`], or a second, different
    /// setup.
    #[error("the monitor has {0}")]
    Setup(&'static str),
    /// A revocation preimage inconsistent with those before it (R5-d).
    #[error("revocation preimage of commitment {0} is inconsistent with the earlier ones")]
    BadPreimage(u64),
    /// A commitment number at or above 2^48.
    #[error("commitment number {0} is out of range")]
    BadNumber(u64),
    /// A block that does not follow the tip (disconnect first).
    #[error("block {got} does not follow the tip at {tip}")]
    NotNext {
        /// The tip's height.
        tip: u32,
        /// The block's.
        got: u32,
    },
}

/// One of the peer's or our commitments the monitor knows by txid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Known {
    pub(crate) number: u64,
    pub(crate) txid: Txid,
    pub(crate) revocation_hash: sha256::Hash,
    pub(crate) to_local: MilliSats,
}

/// A transaction of interest in the current chain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Confirmed {
    pub(crate) height: u32,
    pub(crate) time: u32,
    pub(crate) txid: Txid,
    pub(crate) tx: Transaction,
}

/// The chain tip as the monitor last saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Tip {
    pub(crate) height: u32,
    pub(crate) hash: BlockHash,
    pub(crate) time: u32,
}

/// Everything the monitor persists: a deterministic function of the
/// updates and relevant blocks it was given.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct State {
    pub(crate) params: Option<ChannelParams>,
    pub(crate) records: Vec<HtlcRecord>,
    /// Where each `(offerer, id)`'s records are in `records` (derived, not
    /// stored).
    pub(crate) by_id: ById,
    pub(crate) ours: Option<Known>,
    /// Our previous commitment: revoked by the channel in the step that
    /// replaced it, but a crash before the channel's write can restore the
    /// channel to it, and it may then be broadcast.
    pub(crate) ours_prev: Option<Known>,
    pub(crate) theirs: Option<Known>,
    pub(crate) theirs_prev: Option<Known>,
    pub(crate) secrets: ShachainStore,
    pub(crate) preimages: BTreeMap<sha256::Hash, Preimage>,
    pub(crate) tip: Option<Tip>,
    pub(crate) confirmed: Vec<Confirmed>,
}

/// The on-chain monitor of one channel: a sans-IO object, persisted apart
/// from the channel (C1-a).
///
/// # The contract
///
/// - **Inputs**: the channel's updates ([`update`](Self::update), from
///   [`crate::channel::Output::Monitor`]), connected blocks with the
///   transactions that touch what it watches
///   ([`block_connected`](Self::block_connected); giving the whole block is
///   fine), disconnected blocks ([`block_disconnected`](Self::block_disconnected)),
///   the caller's fee estimate ([`handle_fee_estimate`](Self::handle_fee_estimate)),
///   and [`handle_persisted`](Self::handle_persisted).
/// - **Outputs**, drained with [`poll_output`](Self::poll_output) after every
///   input until `None`: broadcasts and watches at once (a penalty must leave
///   in the block its cheat is seen; nothing depends on it but the chain),
///   then what to persist, then events, which wait until what they report is
///   durable.
/// - **Persist before release (C1-i)**: the channel's updates of a state
///   version must be durable in the monitor's store before the channel's
///   own state of that version is written and
///   [`crate::channel::Channel::handle_persisted`] is called. Then whatever
///   crashes, the monitor knows every state the channel released a message
///   for.
/// - **Getters**: [`balances`](Self::balances) (C1-g),
///   [`best_block`](Self::best_block), [`spend`](Self::spend).
///
/// # Drive loop
///
/// ```text
/// // Channel side: monitor updates come before the state they belong to.
/// Output::Monitor(u) => { monitor.update(u)?; drain(monitor) }
/// Output::Persist(w) => { channel_db.apply(&w)?; channel.handle_persisted(w.seq()) }
/// // Chain side.
/// on block  => monitor.block_connected(height, hash, time, &txs)?; drain(monitor)
/// on reorg  => monitor.block_disconnected(height)?; drain(monitor)
/// fn drain(m) { while let Some(o) = m.poll_output() { match o {
///     MonitorOutput::Broadcast(tx) => node.broadcast(tx),
///     MonitorOutput::Watch { outpoint, script_pubkey } => filter.add(outpoint, script_pubkey),
///     MonitorOutput::Persist(p) => { store.apply(&p)?; m.handle_persisted(p.seq()) }
///     MonitorOutput::Event(e) => app.on_event(e),
/// } } }
/// ```
pub struct Monitor {
    signer: Arc<dyn Signer + Send + Sync>,
    config: MonitorConfig,
    pub(crate) state: State,
    /// The caller's latest estimate (not persisted: the caller gives it
    /// again after a restart).
    fee_estimate: FeeRate,
    /// What was last reported, to report changes only.
    reported: resolve::Report,
    /// Signed penalties (tag 0) and claims (tagged by path) by their inputs:
    /// re-used while their fee rate stands.
    signed: BTreeMap<(u8, Vec<OutPoint>), (FeeRate, Vec<Transaction>)>,
    watched: BTreeSet<OutPoint>,
    /// Recent tips, for the time after a disconnection.
    recent: VecDeque<Tip>,
    // Persistence.
    seq: u64,
    durable: u64,
    compaction: Compaction,
    // Outputs.
    broadcasts: VecDeque<Transaction>,
    watches: VecDeque<(OutPoint, ScriptBuf)>,
    persist: VecDeque<Write>,
    events: VecDeque<(u64, MonitorEvent)>,
}

impl core::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Monitor")
            .field("tip", &self.state.tip.map(|t| t.height))
            .field("records", &self.state.records.len())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor with nothing to watch yet: the channel's first update is
    /// [`MonitorUpdate::Setup`]. `signer` holds our `final_key`.
    pub fn new(config: MonitorConfig, signer: Arc<dyn Signer + Send + Sync>) -> Self {
        Monitor {
            signer,
            config,
            state: State::default(),
            fee_estimate: FeeRate::from_sat_per_vb_u32(1),
            reported: resolve::Report::default(),
            signed: BTreeMap::new(),
            watched: BTreeSet::new(),
            recent: VecDeque::new(),
            seq: 0,
            durable: 0,
            compaction: Compaction::default(),
            broadcasts: VecDeque::new(),
            watches: VecDeque::new(),
            persist: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // -----------------------------------------------------------------
    // Getters.
    // -----------------------------------------------------------------

    /// The tip the monitor has seen last: after a restore, feed blocks from
    /// the one after it (disconnecting first what left the chain).
    pub fn best_block(&self) -> Option<(u32, BlockHash)> {
        self.state.tip.map(|t| (t.height, t.hash))
    }

    /// The anchor spend in the current chain and its class, if any.
    pub fn spend(&self) -> Option<(Txid, SpendKind)> {
        self.reported.spend
    }

    /// The channel's parameters, once set up.
    pub fn params(&self) -> Option<&ChannelParams> {
        self.state.params.as_ref()
    }

    /// Whether the peer's commitment `number` is revoked and the monitor
    /// holds its preimage.
    pub fn can_punish(&self, number: u64) -> bool {
        number < 1 << 48 && self.state.secrets.preimage(RevocationSecrets::index(number)).is_some()
    }

    /// How many HTLC records the monitor keeps (D11).
    pub fn htlc_records(&self) -> usize {
        self.state.records.len()
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    // -----------------------------------------------------------------
    // Outputs.
    // -----------------------------------------------------------------

    /// The next output, or `None`: broadcasts, watches, persistence, then
    /// the events whose state is durable.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MonitorOutput> {
        if let Some(tx) = self.broadcasts.pop_front() {
            return Some(MonitorOutput::Broadcast(tx));
        }
        if let Some((outpoint, script_pubkey)) = self.watches.pop_front() {
            return Some(MonitorOutput::Watch { outpoint, script_pubkey });
        }
        if let Some(p) = self.persist.pop_front() {
            return Some(MonitorOutput::Persist(p));
        }
        match self.events.front() {
            Some((seq, _)) if *seq <= self.durable => self.events.pop_front().map(|(_, e)| MonitorOutput::Event(e)),
            _ => None,
        }
    }

    /// Everything up to `seq` is durable.
    pub fn handle_persisted(&mut self, seq: u64) {
        self.durable = self.durable.max(seq.min(self.seq));
    }

    // -----------------------------------------------------------------
    // Inputs.
    // -----------------------------------------------------------------

    /// Applies one update from the channel.
    pub fn update(&mut self, update: MonitorUpdate) -> Result<(), MonitorError> {
        self.update_all([update])
    }

    /// Several updates as one input, journaled as one entry: what the
    /// channel hands over in one step (its `Output::Monitor`s before its
    /// `Output::Persist`) costs one write. Each is applied in
    /// order; on a refusal the ones before it stay
    /// applied (and journaled), the rest are not, and the error is returned.
    pub fn update_all(&mut self, updates: impl IntoIterator<Item = MonitorUpdate>) -> Result<(), MonitorError> {
        let updates = updates.into_iter();
        // Each update is encoded once, as it is applied.
        let mut entry = persist::UpdatesEntry::new(self.seq + 1, updates.size_hint().0);
        let mut result = Ok(());
        for u in updates {
            if let Err(e) = self.apply_update(&u) {
                result = Err(e);
                break;
            }
            entry.push(&u);
        }
        if entry.count() == 0 {
            // Nothing changed.
            return result;
        }
        self.append_encoded(entry.finish());
        self.evaluate();
        result
    }

    /// A payment preimage learned outside the channel (from the next hop,
    /// after this channel failed, when the channel no longer takes a
    /// fulfill): HTLCs paying to it are claimed on chain (R6.2-c).
    pub fn provide_preimage(&mut self, preimage: Preimage) -> Result<(), MonitorError> {
        self.update(MonitorUpdate::Preimage(preimage))
    }

    /// A block connected at `height` on top of the tip, with median time
    /// past `time`, and its transactions: the whole block, or at least every
    /// transaction that spends a watched output and every transaction of the
    /// same block spending one of those (a claim can confirm with the
    /// commitment it spends, before its outputs are watched). Others are
    /// ignored. Heights may skip blocks that hold nothing of interest.
    pub fn block_connected(
        &mut self,
        height: u32,
        hash: BlockHash,
        time: u32,
        txs: &[Transaction],
    ) -> Result<(), MonitorError> {
        if let Some(tip) = self.state.tip {
            if height <= tip.height {
                return Err(MonitorError::NotNext { tip: tip.height, got: height });
            }
        }
        let relevant = self.connect(height, hash, time, txs);
        if !relevant.is_empty() {
            self.append(persist::Entry::Block { height, hash, time, txs: relevant });
        }
        self.evaluate();
        Ok(())
    }

    /// The tip block, at `height`, left the chain: everything it confirmed
    /// is unconfirmed again (C1-f).
    pub fn block_disconnected(&mut self, height: u32) -> Result<(), MonitorError> {
        match self.state.tip {
            Some(tip) if tip.height == height => {}
            Some(tip) => return Err(MonitorError::NotNext { tip: tip.height, got: height }),
            None => return Err(MonitorError::NotNext { tip: 0, got: height }),
        }
        let had = self.state.confirmed.iter().any(|c| c.height >= height);
        self.disconnect(height);
        if had {
            self.append(persist::Entry::Disconnect { height });
        }
        self.evaluate();
        Ok(())
    }

    /// The caller's fee estimate for a confirmation within a few blocks:
    /// claims are signed at it, and above it as their deadlines near (D13).
    pub fn handle_fee_estimate(&mut self, rate: FeeRate) {
        self.fee_estimate = rate.max(FeeRate::from_sat_per_vb_u32(1));
        self.evaluate();
    }

    // -----------------------------------------------------------------
    // Applying inputs to the state (also used when restoring).
    // -----------------------------------------------------------------

    fn apply_update(&mut self, update: &MonitorUpdate) -> Result<(), MonitorError> {
        let s = &mut self.state;
        if let MonitorUpdate::Setup(params) = update {
            return match &s.params {
                Some(p) if p != &**params => Err(MonitorError::Setup("another channel's parameters")),
                Some(_) => Ok(()),
                None => {
                    s.params = Some((**params).clone());
                    let f = &params.funding;
                    self.watch(f.outpoint(), f.script_pubkey());
                    Ok(())
                }
            };
        }
        if s.params.is_none() {
            return Err(MonitorError::Setup("no parameters yet"));
        }
        match update {
            MonitorUpdate::Setup(_) => unreachable!("handled above"),
            MonitorUpdate::Commitment { side, number, txid, revocation_hash, to_local } => {
                if *number >= 1 << 48 {
                    return Err(MonitorError::BadNumber(*number));
                }
                let known =
                    Known { number: *number, txid: *txid, revocation_hash: *revocation_hash, to_local: *to_local };
                match side {
                    Side::Local => match s.ours {
                        Some(o) if o.number < *number => s.ours_prev = s.ours.replace(known),
                        Some(o) if o.number > *number => {}
                        _ => s.ours = Some(known),
                    },
                    Side::Remote => match s.theirs {
                        Some(t) if t.number < *number => {
                            s.theirs_prev = s.theirs.replace(known);
                        }
                        Some(t) if t.number > *number => {}
                        _ => s.theirs = Some(known),
                    },
                }
            }
            MonitorUpdate::HtlcAdded { side, number, htlc } => s.htlc_added(*side, *number, htlc),
            MonitorUpdate::HtlcRemoved { side, number, offerer, id } => s.htlc_removed(*side, *number, *offerer, *id),
            MonitorUpdate::Htlcs { side, number, changes } => {
                for change in changes {
                    match change {
                        HtlcChange::Added(htlc) => s.htlc_added(*side, *number, htlc),
                        HtlcChange::Removed { offerer, id } => s.htlc_removed(*side, *number, *offerer, *id),
                    }
                }
            }
            MonitorUpdate::Revoked { number, preimage } => {
                if *number >= 1 << 48 {
                    return Err(MonitorError::BadNumber(*number));
                }
                let index = RevocationSecrets::index(*number);
                match s.secrets.get(index) {
                    Some(p) if p == preimage.0 => {}
                    Some(_) => return Err(MonitorError::BadPreimage(*number)),
                    None => {
                        // Only the next index in order fits the store; an
                        // older one it can derive is checked above.
                        if s.secrets.next_index().is_some_and(|n| n != index) {
                            return Err(MonitorError::BadPreimage(*number));
                        }
                        s.secrets.insert(index, preimage.0).map_err(|_| MonitorError::BadPreimage(*number))?;
                    }
                }
                if s.theirs_prev.is_some_and(|p| p.number <= *number) {
                    s.theirs_prev = None;
                }
            }
            MonitorUpdate::Preimage(p) => {
                s.preimages.insert(p.hash(), *p);
            }
        }
        Ok(())
    }

    /// Records the block's relevant transactions; returns them.
    fn connect(&mut self, height: u32, hash: BlockHash, time: u32, txs: &[Transaction]) -> Vec<Transaction> {
        let tip = Tip { height, hash, time };
        self.state.tip = Some(tip);
        self.recent.push_back(tip);
        if self.recent.len() > 2 * self.config.final_depth as usize + 1 {
            self.recent.pop_front();
        }
        let mut relevant = Vec::new();
        let Some(anchor) = self.state.params.as_ref().map(|p| p.funding.outpoint()) else {
            return relevant;
        };
        for tx in txs {
            let spends_anchor = tx.input.iter().any(|i| i.previous_output == anchor);
            let spend_txid =
                self.state.confirmed.iter().find(|c| c.tx.input.iter().any(|i| i.previous_output == anchor));
            let spends_spend = spend_txid.is_some_and(|c| tx.input.iter().any(|i| i.previous_output.txid == c.txid));
            if spends_anchor || spends_spend {
                let txid = tx.compute_txid();
                if !self.state.confirmed.iter().any(|c| c.txid == txid) {
                    self.state.confirmed.push(Confirmed { height, time, txid, tx: tx.clone() });
                    relevant.push(tx.clone());
                }
            }
        }
        relevant
    }

    fn disconnect(&mut self, height: u32) {
        self.state.confirmed.retain(|c| c.height < height);
        while self.recent.back().is_some_and(|t| t.height >= height) {
            self.recent.pop_back();
        }
        let time = self.state.tip.map_or(0, |t| t.time);
        self.state.tip = Some(match self.recent.back() {
            Some(t) => *t,
            None => Tip { height: height.saturating_sub(1), hash: BlockHash::from_byte_array([0; 32]), time },
        });
    }

    fn watch(&mut self, outpoint: OutPoint, script_pubkey: ScriptBuf) {
        if self.watched.insert(outpoint) {
            self.watches.push_back((outpoint, script_pubkey));
        }
    }
}

/// The indices in [`State::records`] of the records of each HTLC
/// `(offerer, id)`. An id has one record unless the peer reused it (R3.2-e
/// allows that once no staged commitment holds the first), so the first
/// index is kept inline and only the rare others in a list: one lookup and
/// no allocation per HTLC.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct ById(BTreeMap<(Side, u64), (usize, Vec<usize>)>);

impl State {
    /// `htlc` is in `side`'s commitments from `number` on.
    fn htlc_added(&mut self, side: Side, number: u64, htlc: &Htlc) {
        let slot = side as usize;
        let records = &self.records;
        // The same HTLC, unless that side's commitments stopped holding it
        // before this one: then the peer reused the id for an HTLC with the
        // same terms (R3.2-e), a new one.
        let same = |i: usize| {
            let r = &records[i];
            r.htlc == *htlc && !matches!(r.held[slot], Some((_, Some(last))) if last < number)
        };
        match self.by_id.find_or_insert(htlc.offerer, htlc.id, records.len(), same) {
            Some(i) => {
                let r = &mut self.records[i];
                r.held[slot] = Some(match r.held[slot] {
                    Some((first, last)) => (first.min(number), last),
                    None => (number, None),
                })
            }
            None => {
                let mut held = [None, None];
                held[slot] = Some((number, None));
                self.records.push(HtlcRecord { htlc: *htlc, held });
            }
        }
    }

    /// The HTLC `(offerer, id)` is in none of `side`'s commitments from
    /// `number` on.
    fn htlc_removed(&mut self, side: Side, number: u64, offerer: Side, id: u64) {
        let slot = side as usize;
        for i in self.by_id.of(offerer, id) {
            let r = &mut self.records[i];
            if let Some((first, None)) = r.held[slot] {
                // Removed in the very commitment that added it: no
                // commitment of that side ever held it.
                r.held[slot] = if first < number { Some((first, Some(number - 1))) } else { None };
            }
        }
    }
}

impl ById {
    /// The first of `(offerer, id)`'s records for which `same` holds; if
    /// none does, `index` is recorded as its next (one search either way).
    fn find_or_insert(&mut self, offerer: Side, id: u64, index: usize, same: impl Fn(usize) -> bool) -> Option<usize> {
        match self.0.entry((offerer, id)) {
            alloc::collections::btree_map::Entry::Vacant(v) => {
                v.insert((index, Vec::new()));
                None
            }
            alloc::collections::btree_map::Entry::Occupied(mut o) => {
                let (first, more) = o.get_mut();
                let found = core::iter::once(*first).chain(more.iter().copied()).find(|&i| same(i));
                if found.is_none() {
                    more.push(index);
                }
                found
            }
        }
    }

    /// Records `index` as `(offerer, id)`'s next record.
    pub(crate) fn insert(&mut self, offerer: Side, id: u64, index: usize) {
        self.find_or_insert(offerer, id, index, |_| false);
    }

    /// The indices of `(offerer, id)`'s records, in the order they were
    /// inserted.
    pub(crate) fn of(&self, offerer: Side, id: u64) -> impl Iterator<Item = usize> + '_ {
        self.0
            .get(&(offerer, id))
            .into_iter()
            .flat_map(|(first, more)| core::iter::once(*first).chain(more.iter().copied()))
    }
}

use bitcoin::hashes::Hash as _;
