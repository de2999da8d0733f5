//! The monitor's persistence: an append-only journal of what it was given
//! (the channel's updates, the relevant transactions of each block, the
//! disconnections), compacted now and then into a snapshot.
//!
//! Every piece ends with the crate's 64-bit checksum. An entry is
//! `seq (u64) | kind (u8) | payload | checksum`; a snapshot is
//! `PMON | format (u8) | seq (u64) | state | checksum`. The state is a
//! deterministic function of the journal, so [`Monitor::restore`] replays
//! the entries after the snapshot and ends exactly where the monitor was.
//!
//! Compaction rule (`docs/adr/0005-monitor-journal.md`): once the entries
//! written since the last snapshot exceed twice its size (and 4 KiB), a new
//! snapshot follows the entry that crossed the line. What is kept is then at
//! most a snapshot, plus twice its size, plus 4 KiB: a channel with a million
//! revoked states and no HTLCs keeps a few kilobytes (D11).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::sync::Arc;

use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, Transaction};

use super::update::{ChannelParams, HtlcChange, HtlcRecord, MonitorUpdate};
use super::{Confirmed, Known, Monitor, MonitorConfig, State, Tip};
use crate::channel::persist::{open, R, W};
use crate::channel::{RestoreError, Role, Side};
use crate::journal::{self, JournalError, Write};
use crate::shachain::ShachainStore;
use crate::tx::Signer;
use crate::types::{MilliSats, Preimage};

const MAGIC: &[u8; 4] = b"PMON";
const FORMAT: u8 = 2;

/// Why a monitor could not be restored.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorRestoreError {
    /// A piece is damaged, truncated or of an unknown format.
    #[error("monitor store is damaged: {0}")]
    Damaged(RestoreError),
    /// An entry is missing between the snapshot and a later entry.
    #[error("monitor journal has a gap: entry {expected} is missing, found {found}")]
    Gap {
        /// The sequence number expected.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// An entry reads but cannot apply.
    #[error("monitor journal entry {seq} does not apply: {why}")]
    Inconsistent {
        /// The entry.
        seq: u64,
        /// Why.
        why: String,
    },
}

impl From<RestoreError> for MonitorRestoreError {
    fn from(e: RestoreError) -> Self {
        MonitorRestoreError::Damaged(e)
    }
}

/// One journal entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Entry {
    Update(MonitorUpdate),
    /// Several updates given together ([`Monitor::update_all`]).
    Updates(Vec<MonitorUpdate>),
    Block {
        height: u32,
        hash: BlockHash,
        time: u32,
        txs: Vec<Transaction>,
    },
    Disconnect {
        height: u32,
    },
}

impl W {
    fn side(&mut self, s: Side) {
        self.u8(s as u8);
    }
    fn update(&mut self, u: &MonitorUpdate) {
        match u {
            MonitorUpdate::Setup(p) => {
                self.u8(1);
                self.funding(&p.funding);
                self.u8(matches!(p.role, Role::Fundee) as u8);
                self.key(&p.our_final);
                self.key(&p.their_final);
                self.delay(p.our_delay);
                self.delay(p.their_delay);
                self.u64(p.obscuring);
            }
            MonitorUpdate::Commitment { side, number, txid, revocation_hash, to_local } => {
                self.u8(2);
                self.side(*side);
                self.known(&Known {
                    number: *number,
                    txid: *txid,
                    revocation_hash: *revocation_hash,
                    to_local: *to_local,
                });
            }
            MonitorUpdate::HtlcAdded { side, number, htlc } => {
                self.u8(3);
                self.side(*side);
                self.u64(*number);
                self.htlc(htlc);
            }
            MonitorUpdate::HtlcRemoved { side, number, offerer, id } => {
                self.u8(4);
                self.side(*side);
                self.u64(*number);
                self.side(*offerer);
                self.u64(*id);
            }
            MonitorUpdate::Htlcs { side, number, changes } => {
                // Room for a commitment's changes at once (an added HTLC
                // takes 50 bytes, a removed one 10), not by doubling.
                self.0.reserve(14 + 50 * changes.len());
                self.u8(7);
                self.side(*side);
                self.u64(*number);
                self.u32(changes.len() as u32);
                for change in changes {
                    match change {
                        HtlcChange::Added(htlc) => {
                            self.u8(0);
                            self.htlc(htlc);
                        }
                        HtlcChange::Removed { offerer, id } => {
                            self.u8(1);
                            self.side(*offerer);
                            self.u64(*id);
                        }
                    }
                }
            }
            MonitorUpdate::Revoked { number, preimage } => {
                self.u8(5);
                self.u64(*number);
                self.raw(&preimage.0);
            }
            MonitorUpdate::Preimage(p) => {
                self.u8(6);
                self.raw(&p.0);
            }
        }
    }
    fn known(&mut self, k: &Known) {
        self.u64(k.number);
        self.raw(k.txid.as_byte_array());
        self.hash(&k.revocation_hash);
        self.u64(k.to_local.to_msat());
    }
    fn range(&mut self, r: Option<(u64, Option<u64>)>) {
        self.opt(r, |w, (first, last)| {
            w.u64(first);
            w.opt(last, W::u64);
        });
    }
}

impl R<'_> {
    fn update(&mut self) -> Result<MonitorUpdate, RestoreError> {
        Ok(match self.u8()? {
            1 => MonitorUpdate::Setup(Box::new(ChannelParams {
                funding: self.funding()?,
                role: if self.bool()? { Role::Fundee } else { Role::Funder },
                our_final: self.key()?,
                their_final: self.key()?,
                our_delay: self.delay()?,
                their_delay: self.delay()?,
                obscuring: self.u64()?,
            })),
            2 => {
                let side = self.side()?;
                let k = self.known()?;
                MonitorUpdate::Commitment {
                    side,
                    number: k.number,
                    txid: k.txid,
                    revocation_hash: k.revocation_hash,
                    to_local: k.to_local,
                }
            }
            3 => MonitorUpdate::HtlcAdded { side: self.side()?, number: self.u64()?, htlc: self.htlc()? },
            4 => MonitorUpdate::HtlcRemoved {
                side: self.side()?,
                number: self.u64()?,
                offerer: self.side()?,
                id: self.u64()?,
            },
            7 => {
                let (side, number) = (self.side()?, self.u64()?);
                let n = self.u32()? as usize;
                // Each change is at least ten bytes.
                let mut changes = Vec::with_capacity(n.min(self.0.len() / 10));
                for _ in 0..n {
                    changes.push(match self.u8()? {
                        0 => HtlcChange::Added(self.htlc()?),
                        1 => HtlcChange::Removed { offerer: self.side()?, id: self.u64()? },
                        _ => return Err(RestoreError::Invalid("monitor HTLC change")),
                    });
                }
                MonitorUpdate::Htlcs { side, number, changes }
            }
            5 => MonitorUpdate::Revoked { number: self.u64()?, preimage: Preimage(self.array()?) },
            6 => MonitorUpdate::Preimage(Preimage(self.array()?)),
            _ => return Err(RestoreError::Invalid("monitor update")),
        })
    }
    fn known(&mut self) -> Result<Known, RestoreError> {
        Ok(Known {
            number: self.u64()?,
            txid: bitcoin::Txid::from_byte_array(self.array()?),
            revocation_hash: self.hash()?,
            to_local: MilliSats::from_msat(self.u64()?),
        })
    }
    fn range(&mut self) -> Result<Option<(u64, Option<u64>)>, RestoreError> {
        self.opt(|r| Ok((r.u64()?, r.opt(R::u64)?)))
    }
}

/// An [`Entry::Updates`] written as its updates are applied
/// ([`Monitor::update_all`]), without collecting them first: the same bytes
/// as [`encode_entry`]'s.
pub(crate) struct UpdatesEntry {
    w: W,
    count: u32,
}

impl UpdatesEntry {
    /// Where the count goes: after the sequence number and the tag.
    const COUNT_AT: usize = 9;

    pub(crate) fn new(seq: u64, hint: usize) -> Self {
        let mut w = W(Vec::with_capacity(24 + 100 * hint));
        w.u64(seq);
        w.u8(3);
        w.u32(0);
        UpdatesEntry { w, count: 0 }
    }

    pub(crate) fn push(&mut self, u: &MonitorUpdate) {
        self.w.update(u);
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// The sealed entry; a lone update takes the single-update form
    /// ([`Entry::Update`]: tag 0, no count).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.count == 1 {
            self.w.0[Self::COUNT_AT - 1] = 0;
            self.w.0.drain(Self::COUNT_AT..Self::COUNT_AT + 4);
        } else {
            self.w.0[Self::COUNT_AT..Self::COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        }
        self.w.seal()
    }
}

pub(crate) fn encode_entry(seq: u64, entry: &Entry) -> Vec<u8> {
    // A capacity hint: most updates take under 100 bytes, and `Htlcs`
    // makes room for its changes as it is written.
    let mut w = W(Vec::with_capacity(match entry {
        Entry::Updates(updates) => 24 + 100 * updates.len(),
        _ => 128,
    }));
    w.u64(seq);
    match entry {
        Entry::Update(u) => {
            w.u8(0);
            w.update(u);
        }
        Entry::Block { height, hash, time, txs } => {
            w.u8(1);
            w.u32(*height);
            w.raw(hash.as_byte_array());
            w.u32(*time);
            w.u32(txs.len() as u32);
            for tx in txs {
                w.tx(tx);
            }
        }
        Entry::Disconnect { height } => {
            w.u8(2);
            w.u32(*height);
        }
        Entry::Updates(updates) => {
            w.u8(3);
            w.u32(updates.len() as u32);
            for u in updates {
                w.update(u);
            }
        }
    }
    w.seal()
}

/// An entry's body, after its sequence number.
fn decode_entry(mut r: R<'_>) -> Result<Entry, RestoreError> {
    let entry = match r.u8()? {
        0 => Entry::Update(r.update()?),
        1 => {
            let height = r.u32()?;
            let hash = BlockHash::from_byte_array(r.array()?);
            let time = r.u32()?;
            let n = r.u32()? as usize;
            let mut txs = Vec::with_capacity(n.min(r.0.len() / 60));
            for _ in 0..n {
                txs.push(r.tx()?);
            }
            Entry::Block { height, hash, time, txs }
        }
        2 => Entry::Disconnect { height: r.u32()? },
        3 => {
            let n = r.u32()? as usize;
            // Each update is at least two bytes.
            let mut updates = Vec::with_capacity(n.min(r.0.len() / 2));
            for _ in 0..n {
                updates.push(r.update()?);
            }
            Entry::Updates(updates)
        }
        _ => return Err(RestoreError::Invalid("monitor entry kind")),
    };
    r.done()?;
    Ok(entry)
}

fn encode_state(seq: u64, s: &State) -> Vec<u8> {
    let mut w = W::header(MAGIC, FORMAT, 256 + s.records.len() * 80);
    w.u64(seq);
    w.opt(s.params.as_ref(), |w, p| w.update(&MonitorUpdate::Setup(Box::new(p.clone()))));
    w.u32(s.records.len() as u32);
    for r in &s.records {
        w.htlc(&r.htlc);
        w.range(r.held[0]);
        w.range(r.held[1]);
    }
    for k in [&s.ours, &s.ours_prev, &s.theirs, &s.theirs_prev] {
        w.opt(k.as_ref(), W::known);
    }
    w.bytes(&s.secrets.to_bytes());
    w.u32(s.preimages.len() as u32);
    for p in s.preimages.values() {
        w.raw(&p.0);
    }
    w.opt(s.tip.as_ref(), |w, t| {
        w.u32(t.height);
        w.raw(t.hash.as_byte_array());
        w.u32(t.time);
    });
    w.u32(s.confirmed.len() as u32);
    for c in &s.confirmed {
        w.u32(c.height);
        w.u32(c.time);
        w.tx(&c.tx);
    }
    w.seal()
}

fn decode_state(bytes: &[u8]) -> Result<(u64, State), RestoreError> {
    let mut r = open(bytes, MAGIC, FORMAT)?;
    let seq = r.u64()?;
    let params = r.opt(|r| match r.update()? {
        MonitorUpdate::Setup(p) => Ok(*p),
        _ => Err(RestoreError::Invalid("monitor parameters")),
    })?;
    let n = r.u32()? as usize;
    let mut records = Vec::with_capacity(n.min(r.0.len() / 50));
    let mut by_id = super::ById::default();
    for _ in 0..n {
        let htlc = r.htlc()?;
        let held = [r.range()?, r.range()?];
        by_id.insert(htlc.offerer, htlc.id, records.len());
        records.push(HtlcRecord { htlc, held });
    }
    let ours = r.opt(R::known)?;
    let ours_prev = r.opt(R::known)?;
    let theirs = r.opt(R::known)?;
    let theirs_prev = r.opt(R::known)?;
    let secrets = ShachainStore::from_bytes(&r.bytes()?).map_err(|_| RestoreError::Invalid("shachain store"))?;
    let n = r.u32()? as usize;
    let mut preimages = alloc::collections::BTreeMap::new();
    for _ in 0..n {
        let p = Preimage(r.array()?);
        preimages.insert(p.hash(), p);
    }
    let tip = r.opt(|r| Ok(Tip { height: r.u32()?, hash: BlockHash::from_byte_array(r.array()?), time: r.u32()? }))?;
    let n = r.u32()? as usize;
    let mut confirmed = Vec::with_capacity(n.min(r.0.len() / 60));
    for _ in 0..n {
        let (height, time, tx) = (r.u32()?, r.u32()?, r.tx()?);
        confirmed.push(Confirmed { height, time, txid: tx.compute_txid(), tx });
    }
    r.done()?;
    for k in [&ours, &ours_prev, &theirs, &theirs_prev].into_iter().flatten() {
        if k.number >= 1 << 48 {
            return Err(RestoreError::Inconsistent("commitment number out of range"));
        }
    }
    if params.is_none() && (ours.is_some() || theirs.is_some() || !records.is_empty() || !confirmed.is_empty()) {
        return Err(RestoreError::Inconsistent("monitor data without parameters"));
    }
    Ok((
        seq,
        State { params, records, by_id, ours, ours_prev, theirs, theirs_prev, secrets, preimages, tip, confirmed },
    ))
}

impl Monitor {
    /// Appends `entry` to the journal, and a snapshot when the compaction
    /// rule says so.
    pub(super) fn append(&mut self, entry: Entry) {
        self.append_encoded(encode_entry(self.seq + 1, &entry));
    }

    /// Appends an entry already encoded with the next sequence number.
    pub(super) fn append_encoded(&mut self, bytes: Vec<u8>) {
        self.seq += 1;
        self.compaction.appended(bytes.len());
        self.persist.push_back(Write::Append { seq: self.seq, entry: bytes });
        if self.compaction.due() {
            let state = encode_state(self.seq, &self.state);
            self.compaction.snapshotted(state.len());
            self.persist.push_back(Write::Snapshot { seq: self.seq, state });
        }
    }

    /// The monitor's whole state as one snapshot (for a copy to another
    /// place, a tower or a backup); it restores like any other.
    pub fn snapshot(&self) -> Vec<u8> {
        encode_state(self.seq, &self.state)
    }

    /// Rebuilds a monitor from its last snapshot (if any) and the journal
    /// entries stored after it, in order; entries the snapshot already holds
    /// are skipped. The restored monitor re-emits its watches, its claims
    /// and its events (at least once), and continues from
    /// [`best_block`](Self::best_block).
    pub fn restore<'a>(
        config: MonitorConfig,
        signer: Arc<dyn Signer + Send + Sync>,
        snapshot: Option<&[u8]>,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Monitor, MonitorRestoreError> {
        let mut m = Monitor::new(config, signer);
        if let Some(bytes) = snapshot {
            let (seq, state) = decode_state(bytes)?;
            m.seq = seq;
            m.state = state;
            m.compaction.snapshotted(bytes.len());
            if let Some(t) = m.state.tip {
                m.recent.push_back(t);
            }
        }
        let journal = journal::entries_after(m.seq, entries).map_err(|e| match e {
            JournalError::Damaged(e) => MonitorRestoreError::Damaged(e),
            JournalError::Gap { expected, found } => MonitorRestoreError::Gap { expected, found },
        })?;
        if journal.torn {
            m.compaction.force();
        }
        for (seq, r) in journal.entries {
            // Its sequence number, its body, its checksum.
            let len = 8 + r.0.len() + 8;
            let entry = decode_entry(r)?;
            let inconsistent = |why: String| MonitorRestoreError::Inconsistent { seq, why };
            match entry {
                Entry::Update(u) => m.apply_update(&u).map_err(|e| inconsistent(e.to_string()))?,
                Entry::Updates(updates) => {
                    for u in &updates {
                        m.apply_update(u).map_err(|e| inconsistent(e.to_string()))?;
                    }
                }
                // Blocks and disconnections that touched nothing are not
                // journaled, and a snapshot holds the tip of its moment: a
                // block at or below the tip replaced what was there, and a
                // disconnection may be of a block below it.
                Entry::Block { height, hash, time, txs } => {
                    if m.state.tip.is_some_and(|t| height <= t.height) {
                        m.disconnect(height);
                    }
                    m.connect(height, hash, time, &txs);
                }
                Entry::Disconnect { height } => {
                    if m.state.tip.is_none_or(|t| t.height < height) {
                        return Err(inconsistent(format!("disconnection of {height} above the tip")));
                    }
                    m.disconnect(height);
                }
            }
            m.seq = seq;
            m.compaction.appended(len);
        }
        m.durable = m.seq;
        m.watched.clear();
        m.watches.clear();
        if let Some(f) = m.state.params.as_ref().map(|p| p.funding.clone()) {
            m.watch(f.outpoint(), f.script_pubkey());
        }
        m.evaluate();
        Ok(m)
    }

    /// Bytes the monitor would keep if compacted now: its snapshot's size.
    pub fn kept_bytes(&self) -> usize {
        encode_state(self.seq, &self.state).len()
    }
}

#[cfg(test)]
mod tests {
    use super::{decode_entry, encode_entry, Entry, UpdatesEntry};
    use crate::chain::{HtlcChange, MonitorUpdate};
    use crate::channel::persist::R;
    use crate::channel::{Htlc, Side};
    use crate::types::{HtlcMsat, Preimage};
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::{sha256, Hash};

    /// Updates written one by one as they are applied make the same entry as
    /// the collected list, or as the single update.
    #[test]
    fn an_entry_written_as_applied_is_the_collected_one() {
        let htlc = |id: u64| Htlc {
            offerer: Side::Remote,
            id,
            amount: HtlcMsat::from_msat(1000 + id as u32),
            r_hash: sha256::Hash::hash(&id.to_le_bytes()),
            expiry: LockTime::from_height(500 + id as u32).expect("a height"),
        };
        let updates = vec![
            MonitorUpdate::Htlcs {
                side: Side::Remote,
                number: 6,
                changes: vec![HtlcChange::Added(htlc(4)), HtlcChange::Removed { offerer: Side::Local, id: 2 }],
            },
            MonitorUpdate::HtlcAdded { side: Side::Local, number: 7, htlc: htlc(1) },
            MonitorUpdate::HtlcRemoved { side: Side::Remote, number: 8, offerer: Side::Local, id: 3 },
            MonitorUpdate::Preimage(Preimage([5; 32])),
            MonitorUpdate::HtlcAdded { side: Side::Remote, number: 9, htlc: htlc(2) },
        ];
        let mut entry = UpdatesEntry::new(42, 1);
        for u in &updates {
            entry.push(u);
        }
        assert_eq!(entry.count(), 5);
        assert_eq!(entry.finish(), encode_entry(42, &Entry::Updates(updates.clone())));
        // A lone update is written in the single-update form.
        let mut lone = UpdatesEntry::new(43, 1);
        lone.push(&updates[0]);
        assert_eq!(lone.finish(), encode_entry(43, &Entry::Update(updates[0].clone())));

        // Each reads back as written (seq, then the body, then the checksum).
        let read = |bytes: &[u8]| decode_entry(R(&bytes[8..bytes.len() - 8]));
        let whole = encode_entry(44, &Entry::Updates(updates.clone()));
        assert_eq!(read(&whole), Ok(Entry::Updates(updates.clone())));
        // A count of HTLC changes beyond the bytes left, an unknown change
        // and a cut entry are refused, not read into anything.
        let one = encode_entry(45, &Entry::Update(updates[0].clone()));
        // seq (8), entry kind (1), update tag (1), side (1), number (8).
        let count_at = 8 + 1 + 1 + 1 + 8;
        let mut huge = one.clone();
        huge[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read(&huge).is_err());
        let mut unknown = one.clone();
        unknown[count_at + 4] = 2;
        assert!(read(&unknown).is_err());
        for cut in 9..one.len() - 8 {
            assert!(read(&one[..cut + 8]).is_err(), "cut at {cut}");
        }
    }
}
