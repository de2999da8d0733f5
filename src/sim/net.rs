//! Two channels, their on-chain monitors, and a simulated chain: the world
//! the on-chain tests, the `cheat` example and the benchmarks drive.
//!
//! Every block is shown to both channels and both monitors; whatever they
//! broadcast in answer goes to the chain's mempool, which checks it (with
//! the script interpreter the caller gives the chain) and mines it in the
//! next block. A test can hold back one side's broadcasts, mine selectively,
//! or reorganise the chain.

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, OutPoint, Transaction, Txid};

use super::chain::{Block, Reject, SimChain};
use super::{Node, Pair};
use crate::chain::{Balance, MonitorEvent, Resolution, SpendKind};
use crate::channel::ChannelConfig;
use crate::types::{MilliSats, Preimage};

/// Two channels, their monitors and a chain.
pub struct Net {
    /// The channels and their monitors.
    pub p: Pair,
    /// The chain.
    pub chain: SimChain,
    /// Broadcasts the chain refused: (node, txid, why).
    pub refused: Vec<(char, Txid, Reject)>,
    /// How many of each node's channel broadcasts were submitted.
    seen: [usize; 2],
    /// How many of each node's monitor broadcasts were submitted.
    seen_monitor: [usize; 2],
    /// When false, the monitors' broadcasts are not submitted (a victim
    /// offline, or a miner that ignores them).
    pub submit_monitor: [bool; 2],
}

impl Net {
    /// An open channel with the default configuration whose anchor is
    /// confirmed on `chain` at height 101; channels and monitors have seen
    /// every block.
    pub fn open(chain: SimChain) -> Self {
        Self::open_with(ChannelConfig::default(), chain)
    }

    /// The same, both nodes with `config`.
    pub fn open_with(config: ChannelConfig, mut chain: SimChain) -> Self {
        let mut p = Pair::new(config.clone(), config, super::CAPACITY);
        p.establish();
        chain.mine_empty(100);
        let anchor = p.a.anchor.clone().expect("A funded");
        chain.adopt(anchor);
        let mut net =
            Net { p, chain, refused: Vec::new(), seen: [1, 0], seen_monitor: [0, 0], submit_monitor: [true; 2] };
        for h in 1..=net.chain.height() {
            let block = net.chain.block(h).expect("mined").clone();
            net.connect(&block);
        }
        net
    }

    /// Node 'A' or 'B'.
    pub fn node(&mut self, which: char) -> &mut Node {
        self.p.node(which)
    }

    /// Both channels and both monitors see `block`; what they broadcast in
    /// answer goes to the mempool.
    pub fn connect(&mut self, block: &Block) {
        for node in [&mut self.p.a, &mut self.p.b] {
            node.monitor.block_connected(block.height, block.hash, block.time, &block.txs).expect("blocks in order");
            node.drain_monitor();
        }
        self.p.block(block.height);
        let anchor = self.p.anchor();
        for tx in &block.txs {
            if tx.input.iter().any(|i| i.previous_output == anchor) {
                self.p.a.ch.handle_anchor_spent(tx);
                self.p.b.ch.handle_anchor_spent(tx);
            }
        }
        self.p.pump();
        self.submit();
    }

    /// Submits what the nodes broadcast since the last call.
    pub fn submit(&mut self) {
        for (i, name) in [(0, 'A'), (1, 'B')] {
            let node = if i == 0 { &mut self.p.a } else { &mut self.p.b };
            let mut txs: Vec<Transaction> = node.broadcasts[self.seen[i]..].to_vec();
            self.seen[i] = node.broadcasts.len();
            if self.submit_monitor[i] {
                txs.extend(node.monitor_broadcasts[self.seen_monitor[i]..].iter().cloned());
            }
            self.seen_monitor[i] = node.monitor_broadcasts.len();
            for tx in txs {
                let txid = tx.compute_txid();
                match self.chain.submit(tx) {
                    Ok(_) | Err(Reject::AlreadyKnown) => {}
                    Err(e) => self.refused.push((name, txid, e)),
                }
            }
        }
    }

    /// Mines one block with the mempool and shows it to everyone.
    pub fn mine(&mut self) -> Block {
        let block = self.chain.mine();
        self.connect(&block);
        block
    }

    /// Mines `n` blocks.
    pub fn mine_n(&mut self, n: u32) {
        for _ in 0..n {
            self.mine();
        }
    }

    /// Mines until `height`.
    pub fn mine_to(&mut self, height: u32) {
        while self.chain.height() < height {
            self.mine();
        }
    }

    /// Disconnects the top `depth` blocks, telling the monitors.
    pub fn reorg(&mut self, depth: u32) {
        for block in self.chain.reorg(depth) {
            for node in [&mut self.p.a, &mut self.p.b] {
                node.monitor.block_disconnected(block.height).expect("the tip first");
                node.drain_monitor();
            }
        }
        self.submit();
    }

    /// The chain's height.
    pub fn height(&self) -> u32 {
        self.chain.height()
    }

    /// An expiry `blocks` after the tip.
    pub fn expiry(&self, blocks: u32) -> LockTime {
        LockTime::from_height(self.height() + blocks).expect("a height")
    }

    /// `from` offers `msat` for `R = [tag; 32]` expiring `blocks` from now;
    /// returns the HTLC id.
    pub fn offer(&mut self, from: char, msat: u64, tag: u8, blocks: u32) -> u64 {
        let expiry = self.expiry(blocks);
        let node = self.p.node(from);
        node.ch
            .offer_htlc(MilliSats::from_msat(msat), Preimage([tag; 32]).hash(), expiry, vec![])
            .expect("a valid offer")
    }

    /// Events of `which`'s monitor.
    pub fn events(&self, which: char) -> &[MonitorEvent] {
        if which == 'A' {
            &self.p.a.monitor_events
        } else {
            &self.p.b.monitor_events
        }
    }

    /// The anchor spend `which`'s monitor reported last.
    pub fn spend_kind(&self, which: char) -> Option<SpendKind> {
        self.events(which).iter().rev().find_map(|e| match e {
            MonitorEvent::AnchorSpent { kind, .. } => Some(*kind),
            _ => None,
        })
    }

    /// The resolutions `which`'s monitor reported, last one per output.
    pub fn resolutions(&self, which: char) -> std::collections::BTreeMap<OutPoint, Resolution> {
        let mut out = std::collections::BTreeMap::new();
        for e in self.events(which) {
            match e {
                MonitorEvent::OutputResolved { outpoint, resolution, .. } => {
                    out.insert(*outpoint, *resolution);
                }
                MonitorEvent::AnchorSpendReorged { .. } => out.clear(),
                _ => {}
            }
        }
        out
    }

    /// The sum of `which`'s balances.
    pub fn balance_sum(&mut self, which: char) -> Amount {
        self.p.node(which).monitor.balances().iter().map(Balance::amount).sum()
    }

    /// A confirmed transaction by txid.
    pub fn confirmed(&self, txid: &Txid) -> Option<Transaction> {
        (1..=self.chain.height())
            .filter_map(|h| self.chain.block(h))
            .flat_map(|b| b.txs.iter())
            .find(|tx| tx.compute_txid() == *txid)
            .cloned()
    }
}
