//! A model-based fault harness: two channels over a lossy link, driven by a
//! schedule of operations that includes the faults of real deployments.
//!
//! Each node has a store that persists writes in order and may have several
//! in flight ([`Op::Confirm`] confirms them one at a time or in batches), an
//! application that keeps what the channel told it (events, revoked
//! commitments, broadcasts) across crashes, and a transport that can drop at
//! any moment, losing whatever was in flight. A crash ([`Op::Crash`]) kills a
//! node between any two steps: it restarts from the newest state that reached
//! its store, which is the last confirmed one or any later write that landed
//! before the crash, and both sides reconnect.
//!
//! After every step the harness checks the invariants a user's money relies
//! on, and [`Harness::finish`] brings the pair to a quiet state and checks
//! agreement (see [`Violation`] for the list). The same schedules run as a
//! test (`tests/faults.rs`, seeded) and as the cargo-fuzz target
//! `channel_faults` (bytes from the fuzzer).
//!
//! ```
//! use paychan::sim::faults::{Harness, Rng};
//!
//! let report = Harness::run(&mut Rng::new(7), 200).expect("an honest schedule never breaks the channel");
//! assert!(report.steps > 0);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash as _};
use bitcoin::{absolute, Transaction};

use super::{funding_tx, secret, Store};
use crate::chain::{Monitor, MonitorConfig, SpendKind};
use crate::channel::{Channel, ChannelConfig, Direction, Event, Output, Side};
use crate::journal::Write;
use crate::tx::{InMemorySigner, KeyRole, Signer as _};
use crate::types::{MilliSats, Preimage};
use crate::wire::{self, Authenticate, Message};

/// A source of schedule choices: a seeded generator or a fuzzer's bytes.
pub trait Source {
    /// The next byte, or `None` when the schedule is over.
    fn byte(&mut self) -> Option<u8>;

    /// A number below `n` (n > 0), or `None` when the schedule is over.
    fn below(&mut self, n: u32) -> Option<u32> {
        let hi = u32::from(self.byte()?);
        let lo = u32::from(self.byte()?);
        Some(((hi << 8) | lo) % n)
    }
}

/// SplitMix64: a small deterministic generator for seeded schedules.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Source for Rng {
    fn byte(&mut self) -> Option<u8> {
        Some(self.next_u64() as u8)
    }
}

/// A fuzzer's input as a schedule: each byte is a choice; the schedule ends
/// with the bytes.
#[derive(Clone, Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// One step of a schedule. `node` is 0 for A (the funder), 1 for B.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// The node's application offers an HTLC (of dust size when `dust`).
    Offer {
        /// Who offers.
        node: usize,
        /// Its value, in units of 1,000 sat (or msat when dust).
        size: u32,
        /// A dust-sized HTLC.
        dust: bool,
    },
    /// The node fulfills the `pick`-th incoming HTLC its application knows.
    Fulfill {
        /// Who fulfills.
        node: usize,
        /// Which one.
        pick: u32,
    },
    /// The node fails the `pick`-th incoming HTLC its application knows.
    Fail {
        /// Who fails.
        node: usize,
        /// Which one.
        pick: u32,
    },
    /// The node's application changes its commitment fee rate.
    UpdateFee {
        /// Who.
        node: usize,
        /// The new rate, satoshi per 1000 bytes.
        rate: u32,
    },
    /// Both nodes see a new fee estimate (fees spike and fall).
    FeeEstimate {
        /// Satoshi per 1000 bytes.
        rate: u32,
    },
    /// The node commits what is staged.
    Commit {
        /// Who.
        node: usize,
    },
    /// The node starts a cooperative close.
    Close {
        /// Who.
        node: usize,
    },
    /// A block is found.
    Block,
    /// One message in flight towards `to` is delivered.
    Deliver {
        /// The receiver.
        to: usize,
    },
    /// The transport drops, losing what was in flight, and a new one
    /// comes up.
    Drop,
    /// The node crashes; of its writes in flight, the first `landed`
    /// reached its store.
    Crash {
        /// Who.
        node: usize,
        /// Writes that landed, counted from the oldest in flight.
        landed: u32,
    },
    /// The node's store confirms its oldest `count` writes in flight
    /// (every one when `count` is 0).
    Confirm {
        /// Whose store.
        node: usize,
        /// How many.
        count: u32,
    },
}

impl Op {
    /// The next operation from `src`, or `None` when the schedule is over.
    pub fn draw(src: &mut impl Source) -> Option<Op> {
        let node = usize::from(src.byte()? & 1);
        Some(match src.below(100)? {
            0..=9 => Op::Offer { node, size: 1 + src.below(40_000)?, dust: src.below(6)? == 0 },
            10..=17 => Op::Fulfill { node, pick: src.below(64)? },
            18..=20 => Op::Fail { node, pick: src.below(64)? },
            21..=22 => Op::UpdateFee { node, rate: FEE_LOW + src.below(FEE_HIGH - FEE_LOW)? },
            23..=24 => Op::FeeEstimate { rate: FEE_LOW + src.below(FEE_HIGH / 2 - FEE_LOW)? },
            25..=34 => Op::Commit { node },
            35 if src.below(20)? == 0 => Op::Close { node },
            35..=40 => Op::Block,
            41..=75 => Op::Deliver { to: node },
            76..=77 => Op::Drop,
            78..=79 => Op::Crash { node, landed: src.below(4)? },
            _ => Op::Confirm { node, count: src.below(3)? },
        })
    }
}

/// The fee rates the schedules use: estimates within a factor of five of
/// each other, so that twice any estimate is within ten times any other (the
/// bound an honest peer applies, R3.4-b).
const FEE_LOW: u32 = 2_000;
const FEE_HIGH: u32 = 20_000;

/// The first block of every run.
const START_HEIGHT: u32 = 800_000;

/// What the harness found wrong.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Violation {
    /// The step at which it was found (the number of operations applied).
    pub step: usize,
    /// The operation just applied, if any.
    pub op: Option<Op>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({:?}): {}", self.step, self.op, self.what)
    }
}

/// What a run did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Report {
    /// Operations applied.
    pub steps: usize,
    /// HTLCs offered, fulfilled and failed.
    pub offered: usize,
    /// HTLCs fulfilled.
    pub fulfilled: usize,
    /// HTLCs failed.
    pub failed: usize,
    /// Crashes and transport drops.
    pub crashes: usize,
    /// Transport drops.
    pub drops: usize,
    /// Whether the channel opened.
    pub opened: bool,
    /// Whether it ended in a cooperative close.
    pub closed: bool,
}

/// An HTLC as the harness's model knows it.
#[derive(Clone, Copy, Debug)]
struct ModelHtlc {
    amount: MilliSats,
    preimage: Preimage,
}

/// One node: its channel, its store, its application.
struct Node {
    ch: Channel,
    signer: Arc<InMemorySigner>,
    /// Writes issued and not confirmed, oldest first.
    in_flight: VecDeque<Write>,
    /// What landed in the store.
    stored: Store,
    // The application's own records, which survive crashes.
    events: Vec<Event>,
    /// The on-chain monitor, in a process of its own: it survives the
    /// channel's crashes, and stores each update before the channel's
    /// write is issued (C1-i).
    monitor: Monitor,
    monitor_error: Option<String>,
    /// The newest revoked commitment of the peer checked against it.
    checked_revoked: Option<u64>,
    /// Incoming HTLCs announced by `HtlcAdded`, not yet removed by us.
    incoming: BTreeSet<u64>,
    /// Preimages learned for outgoing HTLCs.
    learned: BTreeMap<u64, Preimage>,
    /// Incoming HTLCs reported fulfilled and failed.
    fulfilled_in: BTreeSet<u64>,
    failed_out: BTreeSet<u64>,
    broadcasts: Vec<Transaction>,
    closed: Option<Transaction>,
    failure: Option<String>,
    /// Commitment numbers and transactions this node ever held as its own.
    held: BTreeMap<u64, Transaction>,
}

impl Node {
    fn new(ch: Channel, signer: Arc<InMemorySigner>) -> Self {
        Node {
            ch,
            monitor: Monitor::new(MonitorConfig::new(super::destination(&signer)), signer.clone()),
            signer,
            in_flight: VecDeque::new(),
            stored: Store::default(),
            events: Vec::new(),
            monitor_error: None,
            checked_revoked: None,
            incoming: BTreeSet::new(),
            learned: BTreeMap::new(),
            fulfilled_in: BTreeSet::new(),
            failed_out: BTreeSet::new(),
            broadcasts: Vec::new(),
            closed: None,
            failure: None,
            held: BTreeMap::new(),
        }
    }
}

/// How a copy of `node`'s monitor classifies `tx` confirmed on chain.
fn punishes(node: &Node, tx: Transaction) -> Option<SpendKind> {
    let m = &node.monitor;
    let mut copy = Monitor::restore(m.config().clone(), node.signer.clone(), Some(&m.snapshot()), []).ok()?;
    let height = copy.best_block().map_or(1, |(h, _)| h + 1);
    copy.block_connected(height, bitcoin::BlockHash::all_zeros(), 1_600_000_000, &[tx]).ok()?;
    copy.spend().map(|(_, kind)| kind)
}

/// Two channels, their stores and applications, a lossy link and a chain.
pub struct Harness {
    nodes: [Node; 2],
    /// Encoded messages in flight towards node 0 and node 1.
    link: [VecDeque<(u64, Vec<u8>)>; 2],
    height: u32,
    anchor_height: Option<u32>,
    /// Anchor spends each node has been shown.
    shown: [usize; 2],
    /// Every HTLC offered, by (offerer, id).
    htlcs: BTreeMap<(usize, u64), ModelHtlc>,
    /// Preimages by payment hash.
    preimages: BTreeMap<sha256::Hash, Preimage>,
    next_preimage: u64,
    report: Report,
    step: usize,
    op: Option<Op>,
}

impl Harness {
    /// A funder and a fundee with default configurations, nothing sent yet.
    pub fn new() -> Self {
        let sa = Arc::new(InMemorySigner::new(secret(1), secret(2)));
        let sb = Arc::new(InMemorySigner::new(secret(3), secret(4)));
        let config = ChannelConfig::default();
        let a = Channel::new_funder(config.clone(), sa.clone(), [0xa1; 32], super::CAPACITY).expect("valid");
        let b = Channel::new_fundee(config, sb.clone(), [0xb2; 32]).expect("valid");
        let mut h = Harness {
            nodes: [Node::new(a, sa), Node::new(b, sb)],
            link: [VecDeque::new(), VecDeque::new()],
            height: START_HEIGHT,
            anchor_height: None,
            shown: [0, 0],
            htlcs: BTreeMap::new(),
            preimages: BTreeMap::new(),
            next_preimage: 0,
            report: Report::default(),
            step: 0,
            op: None,
        };
        for n in 0..2 {
            h.nodes[n].ch.handle_block(START_HEIGHT, block_time(START_HEIGHT));
        }
        h.drain_all();
        h
    }

    /// Runs a schedule of at most `steps` operations from `src`, then
    /// [`finish`](Self::finish)es.
    pub fn run(src: &mut impl Source, steps: usize) -> Result<Report, Violation> {
        let mut h = Harness::new();
        // One schedule in four runs the establishment under faults too; the
        // others start from an open channel, so their steps go to payments.
        if src.below(4).is_some_and(|n| n != 0) {
            h.settle()?;
        }
        let trace = std::env::var_os("PAYCHAN_FAULT_TRACE").is_some();
        for _ in 0..steps {
            let Some(op) = Op::draw(src) else { break };
            h.apply(op)?;
            if trace {
                eprintln!("{op:?} -> {}", h.summary());
            }
        }
        h.finish()
    }

    /// One line on the state of both nodes, for traces.
    pub fn summary(&self) -> String {
        let node = |n: &Node| {
            format!(
                "{} #{}/{} htlcs {}/{} log {} in-flight {} incoming {:?}",
                n.ch.phase_name(),
                n.ch.our_num,
                n.ch.their_num,
                n.ch.our_view.htlcs.len(),
                n.ch.staged_ours.htlcs.len(),
                n.ch.log.len(),
                n.in_flight.len(),
                n.incoming
            )
        };
        format!(
            "A [{}] B [{}] link {}/{}",
            node(&self.nodes[0]),
            node(&self.nodes[1]),
            self.link[0].len(),
            self.link[1].len()
        )
    }

    fn violation(&self, what: impl Into<String>) -> Violation {
        Violation { step: self.step, op: self.op, what: what.into() }
    }

    /// Applies one operation and checks the invariants.
    pub fn apply(&mut self, op: Op) -> Result<(), Violation> {
        self.step += 1;
        self.op = Some(op);
        self.report.steps += 1;
        match op {
            Op::Offer { node, size, dust } => self.offer(node, size, dust)?,
            Op::Fulfill { node, pick } => self.remove(node, pick, true)?,
            Op::Fail { node, pick } => self.remove(node, pick, false)?,
            Op::UpdateFee { node, rate } => {
                self.command(node, |ch| ch.update_fee(rate).map(|_| ()))?;
            }
            Op::FeeEstimate { rate } => {
                for n in 0..2 {
                    self.command(n, |ch| ch.handle_fee_estimate(rate).map(|_| ()))?;
                }
            }
            Op::Commit { node } => {
                if self.nodes[node].ch.can_commit() {
                    self.command(node, Channel::commit)?;
                }
            }
            Op::Close { node } => self.command(node, Channel::close)?,
            Op::Block => self.block(),
            Op::Deliver { to } => self.deliver(to),
            Op::Drop => {
                self.report.drops += 1;
                self.reconnect();
            }
            Op::Crash { node, landed } => self.crash(node, landed as usize)?,
            Op::Confirm { node, count } => self.confirm(node, count as usize),
        }
        self.drain_all();
        self.check()
    }

    fn offer(&mut self, node: usize, size: u32, dust: bool) -> Result<(), Violation> {
        let amount = if dust {
            MilliSats::from_msat(u64::from(size) * 10)
        } else {
            MilliSats::from_msat(u64::from(size) * 5_000)
        };
        self.next_preimage += 1;
        let preimage = Preimage(sha256::Hash::hash(&self.next_preimage.to_be_bytes()).to_byte_array());
        let expiry = absolute::LockTime::from_height(self.height + 400 + size % 200).expect("a height");
        let mut result = None;
        let trace = std::env::var_os("PAYCHAN_FAULT_TRACE").is_some();
        self.command(node, |ch| {
            let r = ch.offer_htlc(amount, preimage.hash(), expiry, vec![node as u8; (size % 50) as usize]);
            if trace {
                eprintln!("offer: {r:?}");
            }
            result = r.as_ref().ok().copied();
            r.map(|_| ())
        })?;
        if let Some(id) = result {
            self.report.offered += 1;
            self.preimages.insert(preimage.hash(), preimage);
            self.htlcs.insert((node, id), ModelHtlc { amount, preimage });
        }
        Ok(())
    }

    fn remove(&mut self, node: usize, pick: u32, fulfill: bool) -> Result<(), Violation> {
        let known: Vec<u64> = self.nodes[node].incoming.iter().copied().collect();
        if known.is_empty() {
            return Ok(());
        }
        let id = known[pick as usize % known.len()];
        let offerer = 1 - node;
        let preimage =
            self.htlcs.get(&(offerer, id)).ok_or_else(|| self.violation(format!("unknown HTLC {id}")))?.preimage;
        let mut done = false;
        self.command(node, |ch| {
            let r = if fulfill { ch.fulfill_htlc(id, preimage) } else { ch.fail_htlc(id, b"no route".to_vec()) };
            done = r.is_ok();
            r
        })?;
        if done {
            self.nodes[node].incoming.remove(&id);
        }
        Ok(())
    }

    /// Runs a command; a refusal must leave the channel as it was.
    fn command(
        &mut self,
        node: usize,
        f: impl FnOnce(&mut Channel) -> Result<(), crate::channel::ChannelError>,
    ) -> Result<(), Violation> {
        let before = self.nodes[node].ch.to_bytes();
        if f(&mut self.nodes[node].ch).is_err() && self.nodes[node].ch.to_bytes() != before {
            return Err(self.violation("a refused command changed the channel"));
        }
        Ok(())
    }

    fn block(&mut self) {
        self.height += 1;
        for n in 0..2 {
            self.nodes[n].ch.handle_block(self.height, block_time(self.height));
        }
        self.report_anchor();
    }

    fn report_anchor(&mut self) {
        let (Some(at), Some(anchor)) = (self.anchor_height, self.anchor()) else { return };
        let depth = self.height + 1 - at;
        for n in 0..2 {
            self.nodes[n].ch.handle_anchor_depth(&anchor, depth);
        }
    }

    /// The anchor, once the funder's wallet broadcast it.
    fn anchor(&self) -> Option<Transaction> {
        let funding = self.nodes[0].ch.funding()?.outpoint();
        self.nodes[0].broadcasts.iter().find(|tx| tx.compute_txid() == funding.txid).cloned()
    }

    fn deliver(&mut self, to: usize) {
        let Some((ack, bytes)) = self.link[to].pop_front() else { return };
        // Journaled as it came: crashes and restores replay these bytes.
        self.nodes[to].ch.handle_wire(&bytes, ack);
        self.track_held(to);
    }

    /// Notes the node's current commitment: the transaction a revocation
    /// record must rebuild.
    fn track_held(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let num = node.ch.our_commitment_number();
        if !node.held.contains_key(&num) {
            if let Some(tx) = node.ch.our_commitment_tx() {
                node.held.insert(num, tx.tx().clone());
            }
        }
    }

    /// The transport drops; a new one comes up; each side's authenticate
    /// is the first message on it.
    fn reconnect(&mut self) {
        self.link = [VecDeque::new(), VecDeque::new()];
        for n in 0..2 {
            let ack = self.nodes[n].ch.new_transport();
            let auth = Message::Authenticate(Box::new(Authenticate {
                node_id: self.nodes[n].signer.public_key(KeyRole::Commit),
                session_sig: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[1; 64]).expect("valid"),
            }));
            let bytes = wire::encode(&auth).expect("small");
            self.link[1 - n].push_back((ack, bytes));
        }
    }

    fn crash(&mut self, node: usize, landed: usize) -> Result<(), Violation> {
        let n = &mut self.nodes[node];
        let landed = landed.min(n.in_flight.len());
        if n.stored.is_empty() && landed == 0 {
            // Nothing ever reached the store: the node never had a channel
            // to restart; the schedule's crash is skipped.
            return Ok(());
        }
        let everything = landed == n.in_flight.len();
        for w in n.in_flight.drain(..landed) {
            n.stored.apply(&w);
        }
        n.in_flight.clear();
        let restored = n.stored.channel(n.signer.clone()).map_err(|e| Violation {
            step: self.step,
            op: self.op,
            what: format!("restore refused a stored state: {e}"),
        })?;
        // With every write landed, the snapshot and the replayed journal are
        // the channel that crashed.
        if everything && restored.fingerprint() != n.ch.fingerprint() {
            return Err(Violation {
                step: self.step,
                op: self.op,
                what: "the restored channel differs from the one that crashed".into(),
            });
        }
        let n = &mut self.nodes[node];
        n.ch = restored;
        // The application goes back to every incoming HTLC the restored
        // channel still holds: a removal it asked for may have been lost.
        for e in &n.events {
            if let Event::HtlcAdded { direction: Direction::Incoming, id, .. } = e {
                if n.ch.our_staged().htlc(Side::Remote, *id).is_some() {
                    n.incoming.insert(*id);
                }
            }
        }
        // Offers whose state never reached the store are gone with the
        // crash (they never left the node): the application offers anew.
        let next_id = self.nodes[node].ch.next_htlc_id;
        self.htlcs.retain(|&(offerer, id), _| offerer != node || id < next_id);
        // Its chain watcher reports the anchor's spends again.
        self.shown[node] = 0;
        self.track_held(node);
        self.report.crashes += 1;
        // Its connection died with it.
        self.reconnect();
        Ok(())
    }

    fn confirm(&mut self, node: usize, count: usize) {
        let n = &mut self.nodes[node];
        let count = if count == 0 { n.in_flight.len() } else { count.min(n.in_flight.len()) };
        for w in n.in_flight.drain(..count) {
            n.stored.apply(&w);
            n.ch.handle_persisted(w.seq());
        }
    }

    /// Drains both nodes until neither has an output, showing each the
    /// other's broadcasts that spend the anchor.
    fn drain_all(&mut self) {
        loop {
            let mut any = false;
            for n in 0..2 {
                any |= self.drain(n);
            }
            any |= self.show_spends();
            if !any {
                return;
            }
        }
    }

    fn drain(&mut self, n: usize) -> bool {
        let mut any = false;
        while let Some(out) = self.nodes[n].ch.poll_output() {
            any = true;
            let node = &mut self.nodes[n];
            match out {
                Output::Persist(w) => node.in_flight.push_back(w),
                Output::Send { acknowledge, bytes, .. } => self.link[1 - n].push_back((acknowledge, bytes)),
                Output::FundAnchor { amount, script_pubkey } => {
                    // At least once: a repeat after a restore is refused.
                    let _ = node.ch.provide_anchor(funding_tx(script_pubkey, amount), 0);
                }
                Output::Broadcast(tx) => {
                    let is_anchor = node.ch.funding().is_some_and(|f| f.outpoint().txid == tx.compute_txid());
                    if is_anchor && self.anchor_height.is_none() {
                        self.anchor_height = Some(self.height + 1);
                    }
                    node.broadcasts.push(tx);
                }
                Output::Monitor(u) => {
                    if let Err(e) = node.monitor.update(u) {
                        node.monitor_error = Some(e.to_string());
                    }
                    while node.monitor.poll_output().is_some() {}
                }
                Output::Watch(_) | Output::Revoked(_) => {}
                Output::Event(e) => {
                    match &e {
                        Event::HtlcAdded { direction: Direction::Incoming, id, .. }
                            if !node.fulfilled_in.contains(id) && !node.events.contains(&e) =>
                        {
                            node.incoming.insert(*id);
                        }
                        Event::HtlcFulfilled { direction: Direction::Outgoing, id, preimage, .. } => {
                            node.learned.insert(*id, *preimage);
                        }
                        Event::HtlcFulfilled { direction: Direction::Incoming, id, .. } => {
                            node.fulfilled_in.insert(*id);
                        }
                        Event::HtlcFailed { direction: Direction::Outgoing, id, .. } => {
                            node.failed_out.insert(*id);
                        }
                        Event::HtlcFailed { direction: Direction::Incoming, id, .. } => {
                            node.incoming.remove(id);
                        }
                        Event::ChannelOpen { .. } => self.report.opened = true,
                        Event::ChannelClosed { tx } => node.closed = Some(tx.clone()),
                        Event::ChannelFailed { reason, .. } => node.failure = Some(reason.to_string()),
                        _ => {}
                    }
                    node.events.push(e);
                }
            }
        }
        any
    }

    /// The simulated chain: each node sees the other's anchor spends.
    fn show_spends(&mut self) -> bool {
        let Some(anchor) = self.nodes[0].ch.funding().map(|f| f.outpoint()) else { return false };
        let mut any = false;
        for n in 0..2 {
            let other = 1 - n;
            let spends: Vec<Transaction> = self.nodes[other].broadcasts[self.shown[n]..]
                .iter()
                .filter(|tx| tx.input.iter().any(|i| i.previous_output == anchor))
                .cloned()
                .collect();
            self.shown[n] = self.nodes[other].broadcasts.len();
            for tx in &spends {
                self.nodes[n].ch.handle_anchor_spent(tx);
                any = true;
            }
        }
        any
    }

    /// The invariants that hold after every step.
    fn check(&mut self) -> Result<(), Violation> {
        for n in 0..2 {
            let node = &self.nodes[n];
            // No channel fails unless the schedule broke a rule, and an
            // honest schedule never does.
            if let Some(f) = &node.failure {
                return Err(self.violation(format!("node {n} failed: {f}")));
            }
            // Value conserved in every view, the staged views equal to the
            // log replayed, our commitment signed by the peer: everything
            // `restore` would check.
            if let Err(what) = node.ch.check_invariants() {
                return Err(self.violation(format!("node {n}: {what}")));
            }
        }
        for n in 0..2 {
            if let Some(e) = &self.nodes[n].monitor_error {
                return Err(self.violation(format!("node {n}'s monitor refused an update: {e}")));
            }
            // C1-i: every revoked state of the peer can be punished by the
            // monitor once the state that revoked it is durable; the newest
            // is checked against the very transaction the peer held.
            let node = &self.nodes[n];
            if node.in_flight.is_empty() && node.ch.phase_name() == "open" {
                let revoked = node.ch.their_num - u64::from(node.ch.their_prev.is_some());
                if let Some(number) = (0..revoked).find(|&k| !node.monitor.can_punish(k)) {
                    return Err(self.violation(format!("node {n}'s monitor cannot punish commitment {number}")));
                }
                let newest = revoked.checked_sub(1);
                if let Some(number) = newest.filter(|n| Some(*n) != node.checked_revoked) {
                    let Some(tx) = self.nodes[1 - n].held.get(&number).cloned() else {
                        return Err(self.violation(format!("node {} never held commitment {number}", 1 - n)));
                    };
                    let kind = punishes(&self.nodes[n], tx);
                    if kind != Some(SpendKind::RevokedCommitment { number }) {
                        return Err(self.violation(format!(
                            "node {n}'s monitor sees commitment {number} as {kind:?}, not as revoked"
                        )));
                    }
                    self.nodes[n].checked_revoked = Some(number);
                }
            }
        }
        Ok(())
    }

    /// Brings the pair to a quiet state (a working link, every write
    /// confirmed, everything delivered and committed) and checks that both
    /// sides agree and that no HTLC or preimage was lost.
    pub fn finish(mut self) -> Result<Report, Violation> {
        self.op = None;
        self.reconnect();
        self.settle()?;
        // The applications settle every HTLC they know of, so that every
        // run checks preimages and refunds, not only live HTLCs.
        for node in 0..2 {
            let known: Vec<u64> = self.nodes[node].incoming.iter().copied().collect();
            for (i, _) in known.iter().enumerate() {
                self.remove(node, i as u32, i % 3 != 2)?;
            }
        }
        self.drain_all();
        self.settle()?;
        self.check()?;
        self.check_end()
    }

    /// Delivers everything, confirms every write and commits on both sides
    /// until nothing moves (with blocks while the anchor is not deep
    /// enough).
    fn settle(&mut self) -> Result<(), Violation> {
        for _ in 0..200 {
            for n in 0..2 {
                self.confirm(n, 0);
            }
            self.drain_all();
            while !self.link[0].is_empty() || !self.link[1].is_empty() {
                for to in 0..2 {
                    self.deliver(to);
                    self.drain_all();
                    self.confirm(0, 0);
                    self.confirm(1, 0);
                    self.drain_all();
                }
            }
            let mut any = false;
            for n in 0..2 {
                if self.nodes[n].ch.can_commit() {
                    self.nodes[n].ch.commit().map_err(|e| self.violation(format!("commit refused: {e}")))?;
                    any = true;
                }
            }
            // The establishment needs blocks; so does nothing else.
            let opening = !(self.nodes[0].ch.is_open() && self.nodes[1].ch.is_open());
            if opening && !self.nodes[0].ch.is_terminal() && self.anchor_height.is_some() {
                self.block();
                any = true;
            }
            self.drain_all();
            let quiet = self.link.iter().all(VecDeque::is_empty) && self.nodes.iter().all(|n| n.in_flight.is_empty());
            if !any && quiet {
                return Ok(());
            }
        }
        Err(self.violation("the pair did not settle"))
    }

    fn check_end(&mut self) -> Result<Report, Violation> {
        let (a, b) = (&self.nodes[0], &self.nodes[1]);
        if a.ch.is_terminal() || b.ch.is_terminal() {
            // Closed: both, on the same transaction.
            if a.closed.is_none() || a.closed != b.closed {
                let txid = |n: &Node| n.closed.as_ref().map(Transaction::compute_txid);
                return Err(self.violation(format!(
                    "the close did not end on one transaction on both sides: A {} {:?}, B {} {:?}",
                    a.ch.phase_name(),
                    txid(a),
                    b.ch.phase_name(),
                    txid(b)
                )));
            }
            self.report.closed = true;
        } else if a.ch.is_open() {
            // Both sides agree byte for byte on both commitments.
            let a_ours = a.ch.our_commitment_tx().map(|c| c.txid());
            let b_theirs = b.ch.their_commitment_tx().map(|c| c.txid());
            let b_ours = b.ch.our_commitment_tx().map(|c| c.txid());
            let a_theirs = a.ch.their_commitment_tx().map(|c| c.txid());
            if a_ours != b_theirs || b_ours != a_theirs || a.ch.has_pending_updates() || b.ch.has_pending_updates() {
                return Err(self.violation("the two sides disagree once quiet"));
            }
            self.check_htlcs()?;
        } else if a.ch.phase_name() != b.ch.phase_name() && self.anchor_height.is_some() {
            return Err(self.violation("establishment did not finish"));
        }
        Ok(self.report)
    }

    /// No HTLC lost or duplicated, every preimage with its offerer, every
    /// balance as the model says.
    fn check_htlcs(&mut self) -> Result<(), Violation> {
        let mut balance = [MilliSats::from_sat(super::CAPACITY).expect("small"), MilliSats::ZERO];
        let mut live = [MilliSats::ZERO, MilliSats::ZERO];
        for (&(offerer, id), h) in &self.htlcs {
            let receiver = 1 - offerer;
            let side = if offerer == 0 { Side::Local } else { Side::Remote };
            let in_a = self.nodes[0].ch.our_commitment().htlc(side, id).is_some();
            let fulfilled = self.nodes[receiver].fulfilled_in.contains(&id);
            let failed = self.nodes[offerer].failed_out.contains(&id);
            let learned = self.nodes[offerer].learned.get(&id);
            match (in_a, fulfilled, failed) {
                (true, false, false) => live[offerer] = live[offerer].checked_add(h.amount).expect("small"),
                (false, true, false) => {
                    if learned != Some(&h.preimage) {
                        return Err(self.violation(format!("node {offerer} never learned R of HTLC {id}")));
                    }
                    balance[offerer] = balance[offerer].checked_sub(h.amount).expect("paid from its balance");
                    balance[receiver] = balance[receiver].checked_add(h.amount).expect("small");
                    self.report.fulfilled += 1;
                }
                (false, false, true) => self.report.failed += 1,
                state => {
                    return Err(self.violation(format!(
                        "HTLC {id} of node {offerer} is lost or duplicated: (live, fulfilled, failed) = {state:?}"
                    )))
                }
            }
        }
        let view = self.nodes[0].ch.our_commitment();
        let expected = [
            balance[0].checked_sub(live[0]).expect("live HTLCs come out of the balance"),
            balance[1].checked_sub(live[1]).expect("live HTLCs come out of the balance"),
        ];
        if [view.balance(Side::Local), view.balance(Side::Remote)] != expected {
            return Err(self.violation(format!("balances {:?} differ from the model's {expected:?}", view)));
        }
        Ok(())
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn block_time(height: u32) -> u32 {
    1_600_000_000 + (height - START_HEIGHT) * 600
}
