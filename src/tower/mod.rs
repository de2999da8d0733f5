//! Watchtowers (`onchain.md`, W1-a..W1-d): a client that goes offline
//! hands a third party, for each revoked commitment of its peer, a justice
//! package; the [`Tower`] watches the chain and broadcasts the penalty if
//! the revoked commitment ever appears. The tower holds no key of either
//! party and learns nothing from a package until its commitment is on
//! chain.
//!
//! The client side: the channel, configured with
//! [`ChannelConfig::export_revoked`](crate::channel::ChannelConfig::export_revoked),
//! emits [`Output::Revoked`](crate::channel::Output::Revoked) when the peer
//! revokes a commitment; [`justice_package`] turns it into a package.
//!
//! The tower side is sans-IO like the rest of the crate:
//!
//! ```text
//! on a package from client c => match tower.handle_package(c, package) { Ok(()) => {}, Err(e) => reply(c, e) }
//! on a block                 => tower.block_connected(height, &txs)
//! while let Some(o) = tower.poll_output() { match o {
//!     TowerOutput::Persist(w) => { db.apply(&w)?; tower.handle_persisted(w.seq()) }
//!     TowerOutput::Broadcast(tx) => node.broadcast(tx),
//!     TowerOutput::Event(TowerEvent::Stored { client, hint }) => ack(client, hint),
//!     TowerOutput::Event(e) => log(e),
//! } }
//! ```

pub mod package;

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::{BTreeMap, VecDeque};

use bitcoin::hashes::Hash as _;
use bitcoin::{Transaction, Txid};

use crate::channel::persist::{open as open_sealed, W};
use crate::channel::RestoreError;
use crate::journal::{self, Compaction, JournalError, Write};
pub use package::{
    hint, justice_package, Hint, JusticeError, JusticePackage, JusticeSettings, PackageError, RevokedCommitment, Reward,
};

/// Who a package belongs to: the caller authenticates its clients and names
/// them.
pub type ClientId = u64;

/// A tower's limits (W1-d).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TowerConfig {
    /// The largest blob taken. The largest honest package, of a commitment
    /// with the most HTLC outputs a standard transaction can hold, is about
    /// 700 KB.
    pub max_blob: usize,
    /// The most packages one client may keep.
    pub max_packages: usize,
    /// The most blob bytes one client may keep.
    pub max_bytes: usize,
    /// The most packages one client may file under one hint (honest
    /// clients file one per commitment, a few if they re-sign at other fee
    /// rates): what one transaction can make the tower try to open.
    pub max_per_hint: usize,
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig { max_blob: 1 << 20, max_packages: 1_000_000, max_bytes: 256 << 20, max_per_hint: 4 }
    }
}

/// Why a package was refused (W1-d). Nothing is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The blob is larger than [`TowerConfig::max_blob`].
    #[error("blob of {0} bytes is larger than the tower takes")]
    Oversized(usize),
    /// The blob cannot be a package (too short, unknown version).
    #[error("not a package: {0}")]
    Malformed(PackageError),
    /// The client keeps as many packages or bytes as it may.
    #[error("the client is over its quota")]
    OverQuota,
    /// The client keeps as many packages under this hint as it may.
    #[error("the client keeps as many packages under this hint as it may")]
    TooManyForHint,
}

/// What the tower hands its caller.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TowerOutput {
    /// Store this, then call [`Tower::handle_persisted`] with its sequence
    /// number.
    Persist(Write),
    /// Broadcast this penalty.
    Broadcast(Transaction),
    /// Something to know.
    Event(TowerEvent),
}

/// What the tower did (W1-d: everything that goes wrong is reported).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TowerEvent {
    /// A package is durably stored: the client may rely on it now.
    Stored {
        /// Its client.
        client: ClientId,
        /// Its hint.
        hint: Hint,
    },
    /// A revoked commitment appeared and its penalties were broadcast.
    Punished {
        /// The package's client.
        client: ClientId,
        /// The revoked commitment.
        commitment: Txid,
        /// The penalty transactions broadcast.
        penalties: Vec<Txid>,
    },
    /// A transaction shares a package's hint, but the package does not
    /// open for it, or holds no penalty of it: a hint that merely collides,
    /// or a bad package.
    NotOpened {
        /// The package's client.
        client: ClientId,
        /// The transaction on chain.
        txid: Txid,
        /// Why.
        why: PackageError,
    },
}

/// A package as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Stored {
    client: ClientId,
    blob: Vec<u8>,
}

/// A client's use of its quota.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Usage {
    packages: usize,
    bytes: usize,
}

/// A watchtower (W1-b): packages filed by hint, matched against every
/// block's transactions. It never holds a key.
pub struct Tower {
    config: TowerConfig,
    by_hint: BTreeMap<Hint, Vec<Stored>>,
    usage: BTreeMap<ClientId, Usage>,
    /// Penalties broadcast and not settled, by client and commitment, with
    /// their txids: they go out again with every block until a confirmed
    /// transaction spends their inputs (they, or another claim).
    active: BTreeMap<(ClientId, Txid), Vec<(Txid, Transaction)>>,
    seq: u64,
    durable: u64,
    compaction: Compaction,
    persist: VecDeque<Write>,
    broadcasts: VecDeque<Transaction>,
    events: VecDeque<(u64, TowerEvent)>,
}

impl core::fmt::Debug for Tower {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tower").field("hints", &self.by_hint.len()).field("seq", &self.seq).finish_non_exhaustive()
    }
}

const MAGIC: &[u8; 4] = b"PTWR";
const FORMAT: u8 = 2;

impl Tower {
    /// An empty tower.
    pub fn new(config: TowerConfig) -> Self {
        Tower {
            config,
            by_hint: BTreeMap::new(),
            usage: BTreeMap::new(),
            active: BTreeMap::new(),
            seq: 0,
            durable: 0,
            compaction: Compaction::default(),
            persist: VecDeque::new(),
            broadcasts: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// How many packages are stored.
    pub fn packages(&self) -> usize {
        self.usage.values().map(|u| u.packages).sum()
    }

    /// How many packages and blob bytes `client` keeps.
    pub fn usage(&self, client: ClientId) -> (usize, usize) {
        self.usage.get(&client).map_or((0, 0), |u| (u.packages, u.bytes))
    }

    /// Takes `package` from `client` (W1-b): it is stored, and
    /// [`TowerEvent::Stored`] follows once it is durable. A package that is
    /// too large, cannot be one, or takes the client over its quota is
    /// refused, and nothing changes (W1-d).
    pub fn handle_package(&mut self, client: ClientId, package: JusticePackage) -> Result<(), Refusal> {
        let len = package.blob.len();
        if len > self.config.max_blob {
            return Err(Refusal::Oversized(len));
        }
        package::check_header(&package.blob).map_err(Refusal::Malformed)?;
        let stored = self.by_hint.get(&package.hint);
        let mine = stored.map_or(0, |v| v.iter().filter(|s| s.client == client).count());
        // The same package again (its acknowledgement was lost): stored.
        if stored.is_some_and(|v| v.iter().any(|s| s.client == client && s.blob == package.blob)) {
            self.events.push_back((self.seq, TowerEvent::Stored { client, hint: package.hint }));
            return Ok(());
        }
        if mine >= self.config.max_per_hint {
            return Err(Refusal::TooManyForHint);
        }
        let usage = self.usage.get(&client).copied().unwrap_or_default();
        if usage.packages >= self.config.max_packages || usage.bytes + len > self.config.max_bytes {
            return Err(Refusal::OverQuota);
        }
        let mut w = W(Vec::with_capacity(48 + len));
        w.u8(1);
        w.u64(client);
        w.raw(&package.hint);
        w.bytes(&package.blob);
        self.insert(client, package.hint, package.blob);
        self.append(w);
        self.events.push_back((self.seq, TowerEvent::Stored { client, hint: package.hint }));
        Ok(())
    }

    /// Forgets every package of `client` (it closed its channels, or left).
    pub fn remove_client(&mut self, client: ClientId) {
        if self.usage.remove(&client).is_none() {
            return;
        }
        self.remove(client);
        self.active.retain(|(c, _), _| *c != client);
        let mut w = W(Vec::with_capacity(32));
        w.u8(2);
        w.u64(client);
        self.append(w);
    }

    /// A new block (W1-b): every transaction whose txid starts with a
    /// stored hint opens the packages filed under it; the penalties of each
    /// that opens are broadcast, and anything else is reported (W1-d).
    /// Penalties broadcast before and not yet seen in a block go out again.
    pub fn block_connected(&mut self, _height: u32, txs: &[Transaction]) {
        for tx in txs {
            let txid = tx.compute_txid();
            // A penalty confirmed, or something else took its inputs: no
            // need to send it again. Settled punishments are journaled.
            if !self.active.is_empty() {
                let spends = |p: &Transaction| {
                    p.input.iter().any(|i| tx.input.iter().any(|j| j.previous_output == i.previous_output))
                };
                let mut settled = Vec::new();
                for (key, penalties) in self.active.iter_mut() {
                    penalties.retain(|(_, p)| !spends(p));
                    if penalties.is_empty() {
                        settled.push(*key);
                    }
                }
                for (client, commitment) in settled {
                    self.active.remove(&(client, commitment));
                    self.journal_punishment(4, client, commitment);
                }
            }
            let Some(stored) = self.by_hint.get(&package::hint(&txid)) else { continue };
            let mut opened = Vec::new();
            for s in stored {
                match package::open(&txid, &s.blob) {
                    Ok(penalties) => opened.push((s.client, penalties)),
                    Err(why) => {
                        self.events.push_back((self.seq, TowerEvent::NotOpened { client: s.client, txid, why }))
                    }
                }
            }
            for (client, penalties) in opened {
                let ids: Vec<Txid> = penalties.iter().map(Transaction::compute_txid).collect();
                self.broadcasts.extend(penalties.iter().cloned());
                self.active.insert((client, txid), ids.iter().copied().zip(penalties).collect());
                // Journaled, so that a restart goes on sending them.
                self.journal_punishment(3, client, txid);
                self.events.push_back((self.seq, TowerEvent::Punished { client, commitment: txid, penalties: ids }));
            }
        }
        let mut sent: alloc::collections::BTreeSet<Txid> =
            self.broadcasts.iter().map(Transaction::compute_txid).collect();
        let again: Vec<Transaction> =
            self.active.values().flatten().filter(|(id, _)| sent.insert(*id)).map(|(_, tx)| tx.clone()).collect();
        self.broadcasts.extend(again);
    }

    /// Journals a punishment begun (3) or settled (4).
    fn journal_punishment(&mut self, kind: u8, client: ClientId, commitment: Txid) {
        let mut w = W(Vec::with_capacity(48));
        w.u8(kind);
        w.u64(client);
        w.raw(commitment.as_byte_array());
        self.append(w);
    }

    /// Opens `client`'s packages for `commitment` again (after a restart).
    fn reopen(&mut self, client: ClientId, commitment: Txid) {
        let Some(stored) = self.by_hint.get(&package::hint(&commitment)) else { return };
        for s in stored.iter().filter(|s| s.client == client) {
            if let Ok(penalties) = package::open(&commitment, &s.blob) {
                let ids: Vec<Txid> = penalties.iter().map(Transaction::compute_txid).collect();
                self.active.insert((client, commitment), ids.into_iter().zip(penalties).collect());
            }
        }
    }

    /// The next output: writes, then broadcasts, then events (each event
    /// only once the write it follows is durable).
    pub fn poll_output(&mut self) -> Option<TowerOutput> {
        if let Some(w) = self.persist.pop_front() {
            return Some(TowerOutput::Persist(w));
        }
        if let Some(tx) = self.broadcasts.pop_front() {
            return Some(TowerOutput::Broadcast(tx));
        }
        match self.events.front() {
            Some((seq, _)) if *seq <= self.durable => self.events.pop_front().map(|(_, e)| TowerOutput::Event(e)),
            _ => None,
        }
    }

    /// The write `seq` (and every earlier one) is durable.
    pub fn handle_persisted(&mut self, seq: u64) {
        self.durable = self.durable.max(seq.min(self.seq));
    }

    /// The whole store as one snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let bytes: usize = self.usage.values().map(|u| u.bytes + 40 * u.packages).sum();
        let mut w = W::header(MAGIC, FORMAT, 32 + bytes);
        w.u64(self.seq);
        w.u64(self.by_hint.values().map(Vec::len).sum::<usize>() as u64);
        for (hint, stored) in &self.by_hint {
            for s in stored {
                w.u64(s.client);
                w.raw(hint);
                w.bytes(&s.blob);
            }
        }
        w.u64(self.active.len() as u64);
        for (client, commitment) in self.active.keys() {
            w.u64(*client);
            w.raw(commitment.as_byte_array());
        }
        w.seal()
    }

    /// A tower from its store: the last snapshot (if any) and the entries
    /// after it. A damaged last entry is dropped (it was never confirmed);
    /// other damage is refused. Punishments begun and not settled go on:
    /// their penalties are sent again with the next block. Feed blocks
    /// again from a little before the restart (a penalty seen confirmed
    /// while the write saying so was lost is sent once more, harmlessly).
    pub fn restore<'a>(
        config: TowerConfig,
        snapshot: Option<&[u8]>,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Tower, RestoreError> {
        let mut t = Tower::new(config);
        if let Some(bytes) = snapshot {
            let mut r = open_sealed(bytes, MAGIC, FORMAT)?;
            t.seq = r.u64()?;
            for _ in 0..r.u64()? {
                let client = r.u64()?;
                let hint = r.array()?;
                let blob = r.bytes()?;
                t.insert(client, hint, blob);
            }
            for _ in 0..r.u64()? {
                let client = r.u64()?;
                let commitment = Txid::from_byte_array(r.array()?);
                t.reopen(client, commitment);
            }
            r.done()?;
            t.compaction.snapshotted(bytes.len());
        }
        let journal = journal::entries_after(t.seq, entries).map_err(|e| match e {
            JournalError::Damaged(e) => e,
            JournalError::Gap { expected, found } => RestoreError::Gap { expected, found },
        })?;
        if journal.torn {
            t.compaction.force();
        }
        for (seq, mut r) in journal.entries {
            let len = 8 + r.0.len() + 8;
            match r.u8()? {
                1 => {
                    let client = r.u64()?;
                    let hint = r.array()?;
                    let blob = r.bytes()?;
                    t.insert(client, hint, blob);
                }
                2 => {
                    let client = r.u64()?;
                    t.usage.remove(&client);
                    t.remove(client);
                    t.active.retain(|(c, _), _| *c != client);
                }
                3 => {
                    let client = r.u64()?;
                    let commitment = Txid::from_byte_array(r.array()?);
                    t.reopen(client, commitment);
                }
                4 => {
                    let client = r.u64()?;
                    let commitment = Txid::from_byte_array(r.array()?);
                    t.active.remove(&(client, commitment));
                }
                _ => return Err(RestoreError::Invalid("tower entry")),
            }
            r.done()?;
            t.seq = seq;
            t.compaction.appended(len);
        }
        t.durable = t.seq;
        Ok(t)
    }

    fn insert(&mut self, client: ClientId, hint: Hint, blob: Vec<u8>) {
        let usage = self.usage.entry(client).or_default();
        usage.packages += 1;
        usage.bytes += blob.len();
        self.by_hint.entry(hint).or_default().push(Stored { client, blob });
    }

    fn remove(&mut self, client: ClientId) {
        self.by_hint.retain(|_, stored| {
            stored.retain(|s| s.client != client);
            !stored.is_empty()
        });
    }

    /// Journals one change (its body in `w`), and a snapshot when the
    /// compaction rule says so.
    fn append(&mut self, body: W) {
        self.seq += 1;
        let mut w = W(Vec::with_capacity(16 + body.0.len()));
        w.u64(self.seq);
        w.raw(&body.0);
        let entry = w.seal();
        self.compaction.appended(entry.len());
        self.persist.push_back(Write::Append { seq: self.seq, entry });
        if self.compaction.due() {
            let state = self.snapshot();
            self.compaction.snapshotted(state.len());
            self.persist.push_back(Write::Snapshot { seq: self.seq, state });
        }
    }
}
