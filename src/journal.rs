//! Incremental persistence, shared by the [channel](crate::channel) and
//! its [on-chain monitor](crate::chain): each change is a small entry the
//! caller appends to a journal; now and then a whole snapshot replaces the
//! journal (`docs/adr/0006-incremental-persistence.md`).
//!
//! The caller's store keeps one snapshot and the entries after it. Both
//! objects emit [`Write`]s in sequence order and are restored from the
//! snapshot and the entries stored after it:
//!
//! ```text
//! match write {
//!     Write::Append { seq, entry } => db.append(seq, entry)?,
//!     // Store the snapshot, then drop the old one and every entry up to seq.
//!     Write::Snapshot { seq, state } => db.replace(seq, state)?,
//! }
//! object.handle_persisted(seq);
//! ```
//!
//! Every piece ends with the crate's 64-bit checksum. An entry starts with
//! its sequence number; the entries after a snapshot must follow it without
//! a gap. An entry whose checksum fails is a write that never completed if it
//! is the last one (nothing was released on it, ADR 0003, so it is dropped),
//! and damage anywhere else.

#[allow(unused_imports)]
use crate::prelude::*;

use crate::channel::persist::{unseal, R};
use crate::channel::RestoreError;

/// One write for the caller's store.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Write {
    /// Append `entry` to the journal.
    Append {
        /// Its sequence number: one more than the previous write's.
        seq: u64,
        /// The entry.
        entry: Vec<u8>,
    },
    /// Store this snapshot, then drop the previous snapshot and every entry
    /// up to `seq`: the snapshot holds them.
    Snapshot {
        /// The last change it includes.
        seq: u64,
        /// The state.
        state: Vec<u8>,
    },
}

impl Write {
    /// Its sequence number (what `handle_persisted` takes once it is
    /// durable).
    pub fn seq(&self) -> u64 {
        match self {
            Write::Append { seq, .. } | Write::Snapshot { seq, .. } => *seq,
        }
    }

    /// The bytes to store.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Write::Append { entry, .. } => entry,
            Write::Snapshot { state, .. } => state,
        }
    }

    /// Whether it is a snapshot.
    pub fn is_snapshot(&self) -> bool {
        matches!(self, Write::Snapshot { .. })
    }
}

/// The journal never triggers a snapshot below this many bytes.
pub(crate) const MIN_JOURNAL: usize = 4096;

/// The compaction rule: a snapshot once the entries since the last one add
/// up to more than twice its size, and to more than [`MIN_JOURNAL`]. The
/// store then holds at most a snapshot plus twice its size plus 4 KiB, and
/// on average each byte of entry costs at most one byte of snapshot. An
/// owner whose state has grown since its last snapshot may pass its
/// current size ([`Compaction::due_at`]): the snapshot then waits until the
/// entries add up to twice that, so that a state growing fast (a batch of
/// new HTLCs) is not snapshotted again and again on its way up.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Compaction {
    journal: usize,
    snapshot: usize,
    /// A torn entry was dropped at restore: it is still in the store, and
    /// the next write must be a snapshot that supersedes it (an entry
    /// appended after it would sit behind damage).
    forced: bool,
}

impl Compaction {
    /// An entry of `len` bytes was written.
    pub(crate) fn appended(&mut self, len: usize) {
        self.journal += len;
    }

    /// A snapshot of `len` bytes was written.
    pub(crate) fn snapshotted(&mut self, len: usize) {
        self.snapshot = len;
        self.journal = 0;
        self.forced = false;
    }

    /// The next write must be a snapshot.
    pub(crate) fn force(&mut self) {
        self.forced = true;
    }

    /// Whether the entries since the last snapshot call for a new one.
    pub(crate) fn due(&self) -> bool {
        self.due_at(0)
    }

    /// [`Compaction::due`], for a state whose size is now about `current`
    /// bytes: a snapshot once the entries add up to twice the larger of the
    /// last snapshot and `current`.
    pub(crate) fn due_at(&self, current: usize) -> bool {
        self.forced || self.journal > MIN_JOURNAL.max(2 * self.snapshot.max(current))
    }
}

/// Why a journal could not be read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum JournalError {
    /// An entry other than the last is damaged, or any entry was written
    /// by another format version ([`RestoreError::Format`]).
    Damaged(RestoreError),
    /// An entry is missing.
    Gap { expected: u64, found: u64 },
}

/// The entries of a journal after its snapshot.
pub(crate) struct Entries<'a> {
    /// Each with its sequence number, the reader after it.
    pub(crate) entries: Vec<(u64, R<'a>)>,
    /// A damaged last entry was dropped: the restored object must write a
    /// snapshot next ([`Compaction::force`]).
    pub(crate) torn: bool,
}

/// The entries after a snapshot of change `after`, each with its sequence
/// number and the reader positioned after it: entries the snapshot holds are
/// skipped, a damaged last entry is dropped (a write that never completed),
/// and a gap is refused.
pub(crate) fn entries_after<'a>(
    after: u64,
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Entries<'a>, JournalError> {
    let entries: Vec<&[u8]> = entries.into_iter().collect();
    let mut out = Vec::with_capacity(entries.len());
    let mut next = after + 1;
    let mut torn = false;
    for (i, bytes) in entries.iter().enumerate() {
        let mut r = match unseal(bytes) {
            Ok(r) => r,
            // Written by another version: refused, even as the last entry.
            Err(e @ RestoreError::Format) => return Err(JournalError::Damaged(e)),
            Err(_) if i + 1 == entries.len() => {
                torn = true;
                break;
            }
            Err(e) => return Err(JournalError::Damaged(e)),
        };
        let seq = r.u64().map_err(JournalError::Damaged)?;
        if seq < next {
            continue;
        }
        if seq != next {
            return Err(JournalError::Gap { expected: next, found: seq });
        }
        next += 1;
        out.push((seq, r));
    }
    Ok(Entries { entries: out, torn })
}
