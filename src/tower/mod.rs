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
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig { max_blob: 1 << 20, max_packages: 1_000_000, max_bytes: 256 << 20 }
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
    /// The client already stored this very package.
    #[error("the client already stored this package")]
    Duplicate,
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
    /// Penalties broadcast and not yet seen in a block, by commitment, with
    /// their txids: they go out again with every block until they confirm.
    active: BTreeMap<Txid, Vec<(Txid, Transaction)>>,
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
const FORMAT: u8 = 1;

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
        if len < 1 + 12 + 16 {
            return Err(Refusal::Malformed(PackageError::TooShort(len)));
        }
        if package.blob[0] != package::BLOB_VERSION {
            return Err(Refusal::Malformed(PackageError::Version(package.blob[0])));
        }
        let usage = self.usage.get(&client).copied().unwrap_or_default();
        if usage.packages >= self.config.max_packages || usage.bytes + len > self.config.max_bytes {
            return Err(Refusal::OverQuota);
        }
        let stored = self.by_hint.get(&package.hint);
        if stored.is_some_and(|v| v.iter().any(|s| s.client == client && s.blob == package.blob)) {
            return Err(Refusal::Duplicate);
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
            // A penalty confirmed: no need to send it again.
            for penalties in self.active.values_mut() {
                penalties.retain(|(id, _)| *id != txid);
            }
            let Some(stored) = self.by_hint.get(&package::hint(&txid)) else { continue };
            for s in stored {
                match package::open(&txid, &s.blob) {
                    Ok(penalties) => {
                        let ids: Vec<Txid> = penalties.iter().map(Transaction::compute_txid).collect();
                        self.events.push_back((
                            self.seq,
                            TowerEvent::Punished { client: s.client, commitment: txid, penalties: ids.clone() },
                        ));
                        self.broadcasts.extend(penalties.iter().cloned());
                        self.active.insert(txid, ids.into_iter().zip(penalties).collect());
                    }
                    Err(why) => {
                        self.events.push_back((self.seq, TowerEvent::NotOpened { client: s.client, txid, why }))
                    }
                }
            }
        }
        self.active.retain(|_, p| !p.is_empty());
        let again: Vec<Transaction> = self.active.values().flatten().map(|(_, tx)| tx.clone()).collect();
        for tx in again {
            if !self.broadcasts.contains(&tx) {
                self.broadcasts.push_back(tx);
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
        w.seal()
    }

    /// A tower from its store: the last snapshot (if any) and the entries
    /// after it. A damaged last entry is dropped (it was never confirmed);
    /// other damage is refused.
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
