//! Persist before release, for the one-way roles: the same gate as the peer
//! channel's (`docs/adr/0003-persist-before-release.md`). Every input that
//! changes the state ends with one [`Gate::flush`]: the state is serialised
//! into a persist output, released at once, and everything else the input
//! produced waits until the caller says that version is durable.

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::collections::VecDeque;

/// The gate: a state version counter and the outputs waiting on it.
#[derive(Debug)]
pub(crate) struct Gate<O> {
    version: u64,
    durable: u64,
    dirty: bool,
    pending: Vec<O>,
    gated: VecDeque<(u64, O)>,
    persist: VecDeque<(u64, Vec<u8>)>,
}

impl<O> Default for Gate<O> {
    fn default() -> Self {
        Gate {
            version: 0,
            durable: 0,
            dirty: false,
            pending: Vec::new(),
            gated: VecDeque::new(),
            persist: VecDeque::new(),
        }
    }
}

/// What the gate releases next.
pub(crate) enum Released<O> {
    Persist { version: u64, state: Vec<u8> },
    Output(O),
}

impl<O> Gate<O> {
    /// A gate resuming after `version`, which is durable.
    pub(crate) fn resumed(version: u64) -> Self {
        Gate { version, durable: version, ..Gate::default() }
    }

    /// The state changed.
    pub(crate) fn touch(&mut self) {
        self.dirty = true;
    }

    /// An output that depends on the state as it will be written next.
    pub(crate) fn emit(&mut self, output: O) {
        self.pending.push(output);
        self.dirty = true;
    }

    /// The version the next state will be written as (stored in it, so
    /// that versions go on increasing across restores).
    pub(crate) fn next_version(&self) -> u64 {
        self.version + 1
    }

    /// Whether the state changed since the last flush.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Ends an input that changed the state: writes `state` and gates what
    /// the input produced behind it.
    pub(crate) fn flush(&mut self, state: Vec<u8>) {
        self.dirty = false;
        self.version += 1;
        self.persist.push_back((self.version, state));
        for o in self.pending.drain(..) {
            self.gated.push_back((self.version, o));
        }
    }

    /// The next output: a state to store first, then what is durable.
    pub(crate) fn poll(&mut self) -> Option<Released<O>> {
        if let Some((version, state)) = self.persist.pop_front() {
            return Some(Released::Persist { version, state });
        }
        match self.gated.front() {
            Some((v, _)) if *v <= self.durable => self.gated.pop_front().map(|(_, o)| Released::Output(o)),
            _ => None,
        }
    }

    /// `version` and every earlier one are durable.
    pub(crate) fn persisted(&mut self, version: u64) {
        self.durable = self.durable.max(version.min(self.version));
    }
}
