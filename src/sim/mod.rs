//! A deterministic in-memory driver for two channels: a message queue in
//! each direction with delivery controlled by the caller, a stand-in wallet
//! and chain, and a record of everything each node emitted.
//!
//! It is the drive loop of [`Channel`] written once, for the crate's
//! example, tests and benchmarks, and for applications that want to test
//! their own logic against a real peer without a network. Every message
//! crosses the wire codec, so what one side sends is exactly what the other
//! decodes.
//!
//! [`SimChain`] (module [`chain`]) is the chain side: blocks, a mempool and
//! a miner that enforce the consensus rules of the channel's on-chain
//! transactions (locks, relative locks, replacement, scripts through a
//! pluggable verifier), with reorgs.
//!
//! ```
//! use bitcoin::absolute::LockTime;
//! use paychan::sim::Pair;
//! use paychan::{MilliSats, Preimage};
//!
//! let mut pair = Pair::open();
//! let r = Preimage([7; 32]);
//! let id = pair.a.ch.offer_htlc(MilliSats::from_msat(5_000_000), r.hash(), LockTime::from_height(1000).unwrap(), vec![]).unwrap();
//! pair.settle();
//! pair.b.ch.fulfill_htlc(id, r).unwrap();
//! pair.settle();
//! assert_eq!(pair.b.ch.balance(paychan::channel::Side::Local), MilliSats::from_msat(5_000_000));
//! ```

pub mod chain;
pub mod faults;
pub mod net;
pub mod oneway;

pub use chain::{Block, Reject, SimChain, Verifier};

use std::collections::VecDeque;
use std::sync::Arc;

use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};

use crate::chain::{Monitor, MonitorConfig, MonitorEvent, MonitorOutput, MonitorUpdate};
use crate::channel::{Channel, ChannelConfig, Event, Output, RestoreError, Watch};
use crate::journal::Write;
use crate::tx::InMemorySigner;
use crate::wire::{self, Message};

/// The secret key whose scalar is `n` (n > 0): the simulation's fixed keys.
pub fn secret(n: u64) -> SecretKey {
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&n.to_be_bytes());
    SecretKey::from_slice(&bytes).expect("a small non-zero scalar is a valid key")
}

/// A stand-in wallet's funding transaction paying `value` to
/// `script_pubkey` at output 0. Its one input carries a witness, so it
/// passes the segwit check of [`crate::tx::funding::validate_funding`].
pub fn funding_tx(script_pubkey: ScriptBuf, value: Amount) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::from_byte_array([0xf0; 32]), vout: 3 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![0x30; 71], vec![0x02; 33]]),
        }],
        output: vec![TxOut { value, script_pubkey }],
    }
}

/// Where a simulated node's monitor sends what it sweeps: a P2WPKH of the
/// node's `final_key` tweaked apart (the scalar of its commit key plus 100).
pub fn destination(signer: &InMemorySigner) -> ScriptBuf {
    use crate::tx::Signer as _;
    let secp = bitcoin::secp256k1::Secp256k1::signing_only();
    let tweak = u64::from(signer.public_key(crate::tx::KeyRole::Final).to_bytes()[32]);
    let key = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &secret(100 + tweak));
    ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(key).wpubkey_hash())
}

/// A store for a channel or a monitor: its last snapshot and the journal
/// entries after it (see [`crate::journal`]).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Store {
    /// The last snapshot.
    pub snapshot: Option<Vec<u8>>,
    /// The entries after it, with their sequence numbers.
    pub entries: Vec<(u64, Vec<u8>)>,
}

impl Store {
    /// Stores one write.
    pub fn apply(&mut self, w: &Write) {
        self.put(w.clone());
    }

    /// Stores one write, taking it.
    pub fn put(&mut self, w: Write) {
        match w {
            Write::Append { seq, entry } => self.entries.push((seq, entry)),
            Write::Snapshot { seq, state } => {
                self.snapshot = Some(state);
                self.entries.retain(|(s, _)| *s > seq);
            }
        }
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len) + self.entries.iter().map(|(_, e)| e.len()).sum::<usize>()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty()
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|(_, e)| e.as_slice())
    }

    /// The channel as stored.
    pub fn channel(&self, signer: Arc<dyn crate::tx::Signer + Send + Sync>) -> Result<Channel, RestoreError> {
        Channel::restore(self.snapshot.as_deref().ok_or(RestoreError::Truncated)?, self.entries(), signer)
    }

    /// The monitor as stored.
    pub fn monitor(
        &self,
        config: MonitorConfig,
        signer: Arc<dyn crate::tx::Signer + Send + Sync>,
    ) -> Result<Monitor, crate::chain::MonitorRestoreError> {
        Monitor::restore(config, signer, self.snapshot.as_deref(), self.entries())
    }
}

/// One node and everything it emitted.
pub struct Node {
    /// "A" or "B".
    pub name: &'static str,
    /// The channel.
    pub ch: Channel,
    /// Its keys.
    pub signer: Arc<InMemorySigner>,
    /// What the channel stored (every write lands, confirmed or not).
    pub store: Store,
    /// The sequence number of its last write.
    pub persisted_version: u64,
    /// Every write the channel asked for, in order (while `record`).
    pub history: Vec<Write>,
    /// Bytes of every write it asked for, in total.
    pub persisted_bytes: u64,
    /// When false, Persist outputs are recorded but not confirmed.
    pub auto_persist: bool,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Transactions broadcast, in order.
    pub broadcasts: Vec<Transaction>,
    /// Watch requests, in order.
    pub watches: Vec<Watch>,
    /// The peer's revoked commitments handed over (with
    /// `ChannelConfig::export_revoked`), in order; kept even when `record`
    /// is off.
    pub revoked: Vec<crate::tower::RevokedCommitment>,
    /// The channel's on-chain monitor, fed every update as it comes.
    pub monitor: Monitor,
    /// What the monitor stored.
    pub monitor_store: Store,
    /// What the monitor reported.
    pub monitor_events: Vec<MonitorEvent>,
    /// What the monitor broadcast, in order.
    pub monitor_broadcasts: Vec<Transaction>,
    /// Every update the channel handed the monitor, in order.
    pub monitor_updates: Vec<MonitorUpdate>,
    /// Everything the monitor asked to store, in order: replaying a prefix
    /// gives the store as it was at any moment.
    pub monitor_history: Vec<Write>,
    /// Messages sent, in order, with their acknowledge.
    pub sent: Vec<(u64, Message)>,
    /// The anchor transaction the wallet made, if this node funds.
    pub anchor: Option<Transaction>,
    /// When false, messages, events, watches and records are not kept (for
    /// long benchmark runs); broadcasts always are.
    pub record: bool,
    /// The wallet that funds the anchor: given the amount and the script,
    /// it returns the funding transaction and the output index. `None`: the
    /// stand-in [`funding_tx`].
    pub wallet: Option<Wallet>,
    /// A buffer for the monitor updates of one step (reused).
    monitor_batch: Vec<MonitorUpdate>,
}

/// A wallet for [`Node::wallet`]: funds `amount` to `script_pubkey`, returns
/// the (not yet broadcast) transaction and the anchor's output index.
pub type Wallet = Box<dyn FnMut(Amount, ScriptBuf) -> (Transaction, u32) + Send>;

impl Node {
    fn new(name: &'static str, ch: Channel, signer: Arc<InMemorySigner>) -> Self {
        Node {
            name,
            ch,
            monitor: Monitor::new(MonitorConfig::new(destination(&signer)), signer.clone()),
            signer,
            store: Store::default(),
            persisted_version: 0,
            history: Vec::new(),
            persisted_bytes: 0,
            auto_persist: true,
            events: Vec::new(),
            broadcasts: Vec::new(),
            watches: Vec::new(),
            revoked: Vec::new(),
            monitor_store: Store::default(),
            monitor_events: Vec::new(),
            monitor_broadcasts: Vec::new(),
            monitor_updates: Vec::new(),
            monitor_history: Vec::new(),
            sent: Vec::new(),
            anchor: None,
            record: true,
            wallet: None,
            monitor_batch: Vec::new(),
        }
    }

    /// Drains every output; queues the messages to send on `out`.
    fn drain(&mut self, out: &mut VecDeque<Packet>) {
        // The monitor's updates of one step, handed over together before
        // the step's write (C1-i).
        let mut updates = core::mem::take(&mut self.monitor_batch);
        while let Some(o) = self.ch.poll_output() {
            if let Output::Monitor(u) = o {
                if self.record {
                    self.monitor_updates.push(u.clone());
                }
                updates.push(u);
                continue;
            }
            if !updates.is_empty() {
                self.monitor.update_all(updates.drain(..)).expect("the channel's updates apply to its monitor");
                self.drain_monitor();
            }
            match o {
                Output::Persist(w) => {
                    self.persisted_bytes += w.bytes().len() as u64;
                    self.persisted_version = w.seq();
                    if self.auto_persist {
                        self.ch.handle_persisted(w.seq());
                    }
                    if self.record {
                        self.history.push(w.clone());
                    }
                    self.store.put(w);
                }
                Output::Send { message, acknowledge, bytes, .. } => {
                    if self.record {
                        // The message is what the bytes say: the receiver
                        // gets the bytes, the records and the tests see
                        // the message.
                        debug_assert_eq!(wire::decode(&bytes).as_ref(), Ok(&message));
                        self.sent.push((acknowledge, message.clone()));
                    }
                    out.push_back(Packet { acknowledge, message, bytes });
                }
                Output::FundAnchor { amount, script_pubkey } => {
                    let (tx, vout) = match self.wallet.as_mut() {
                        Some(wallet) => wallet(amount, script_pubkey),
                        None => (funding_tx(script_pubkey, amount), 0),
                    };
                    self.anchor = Some(tx.clone());
                    // At least once: a repeat after a restore is refused.
                    let _ = self.ch.provide_anchor(tx, vout);
                }
                Output::Broadcast(tx) => self.broadcasts.push(tx),
                Output::Revoked(r) => self.revoked.push(*r),
                // Taken above.
                Output::Monitor(_) => {}
                _ if !self.record => {}
                Output::Watch(w) => self.watches.push(w),
                Output::Event(e) => self.events.push(e),
            }
        }
        if !updates.is_empty() {
            self.monitor.update_all(updates.drain(..)).expect("the channel's updates apply to its monitor");
            self.drain_monitor();
        }
        self.monitor_batch = updates;
    }

    /// Drains the monitor's outputs: stores what it persists, keeps its
    /// broadcasts and events.
    pub fn drain_monitor(&mut self) {
        while let Some(o) = self.monitor.poll_output() {
            match o {
                MonitorOutput::Persist(p) => {
                    self.monitor.handle_persisted(p.seq());
                    if self.record {
                        self.monitor_history.push(p.clone());
                    }
                    self.monitor_store.put(p);
                }
                MonitorOutput::Broadcast(tx) => self.monitor_broadcasts.push(tx),
                MonitorOutput::Event(e) if self.record => self.monitor_events.push(e),
                _ => {}
            }
        }
    }

    /// The channel as its store holds it.
    pub fn restored(&self) -> Result<Channel, RestoreError> {
        self.store.channel(self.signer.clone())
    }

    /// The channel's failure event, if it failed.
    pub fn failed(&self) -> Option<&Event> {
        self.events.iter().find(|e| matches!(e, Event::ChannelFailed { .. }))
    }

    /// The `error.problem` this node sent, if any.
    pub fn sent_error(&self) -> Option<String> {
        self.sent.iter().find_map(|(_, m)| match m {
            Message::Error(e) => Some(e.problem.clone().unwrap_or_default()),
            _ => None,
        })
    }
}

/// Which way a message travels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// From A to B.
    AToB,
    /// From B to A.
    BToA,
}

/// A message on its way from one node to the other: the acknowledge of its
/// transport header, the message, and the bytes delivered (the sender's
/// channel's encoding, as a transport sends it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Packet {
    acknowledge: u64,
    message: Message,
    bytes: Vec<u8>,
}

impl Packet {
    /// The packet a channel's [`Output::Send`] asks to send, with the
    /// channel's bytes; `None` for any other output.
    pub fn from_output(output: Output) -> Option<Packet> {
        match output {
            Output::Send { message, acknowledge, bytes, .. } => Some(Packet { acknowledge, message, bytes }),
            _ => None,
        }
    }

    /// The acknowledge of its transport header.
    pub fn acknowledge(&self) -> u64 {
        self.acknowledge
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message's encoding: what is delivered.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The acknowledge and the message.
    pub fn into_parts(self) -> (u64, Message) {
        (self.acknowledge, self.message)
    }
}

/// Two channels connected by queues.
pub struct Pair {
    /// The funder.
    pub a: Node,
    /// The fundee.
    pub b: Node,
    /// Messages from A not yet delivered.
    pub a_to_b: VecDeque<Packet>,
    /// Messages from B not yet delivered.
    pub b_to_a: VecDeque<Packet>,
    /// Every delivered message, in order: (direction, name).
    pub trace: Vec<(Dir, &'static str)>,
    /// How many of each node's broadcasts the other has seen on the
    /// simulated chain.
    seen: [usize; 2],
}

/// The default channel capacity.
pub const CAPACITY: Amount = Amount::from_sat(1_000_000);

impl Pair {
    /// A funds with `wallet` (a real funding transaction, for a pair on a
    /// real chain), B accepts; nothing delivered yet.
    pub fn with_wallet(config_a: ChannelConfig, config_b: ChannelConfig, capacity: Amount, wallet: Wallet) -> Self {
        let mut pair = Self::unstarted(config_a, config_b, capacity);
        pair.a.wallet = Some(wallet);
        pair.pump();
        pair
    }

    /// A funds, B accepts; nothing delivered yet.
    pub fn new(config_a: ChannelConfig, config_b: ChannelConfig, capacity: Amount) -> Self {
        let mut pair = Self::unstarted(config_a, config_b, capacity);
        pair.pump();
        pair
    }

    fn unstarted(config_a: ChannelConfig, config_b: ChannelConfig, capacity: Amount) -> Self {
        let sa = Arc::new(InMemorySigner::new(secret(1), secret(2)));
        let sb = Arc::new(InMemorySigner::new(secret(3), secret(4)));
        let a = Channel::new_funder(config_a, sa.clone(), [0xa1; 32], capacity).expect("valid capacity");
        let b = Channel::new_fundee(config_b, sb.clone(), [0xb2; 32]).expect("valid configuration");
        Pair {
            a: Node::new("A", a, sa),
            b: Node::new("B", b, sb),
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            trace: Vec::new(),
            seen: [0, 0],
        }
    }

    /// Default configs, 1,000,000 sat.
    pub fn default_pair() -> Self {
        Self::new(ChannelConfig::default(), ChannelConfig::default(), CAPACITY)
    }

    /// An open channel: establishment run to the end.
    pub fn open() -> Self {
        let mut p = Self::default_pair();
        p.establish();
        p
    }

    /// Moves every output of both nodes to the queues, and shows each node
    /// the other's broadcasts that spend the anchor (the simulated chain).
    pub fn pump(&mut self) {
        loop {
            self.a.drain(&mut self.a_to_b);
            self.b.drain(&mut self.b_to_a);
            if !self.show_spends() {
                return;
            }
        }
    }

    fn show_spends(&mut self) -> bool {
        let Some(anchor) = self.a.ch.funding().map(|f| f.outpoint()) else { return false };
        let spends = |txs: &[Transaction]| -> Vec<Transaction> {
            txs.iter().filter(|tx| tx.input.iter().any(|i| i.previous_output == anchor)).cloned().collect()
        };
        let from_a = spends(&self.a.broadcasts[self.seen[0]..]);
        let from_b = spends(&self.b.broadcasts[self.seen[1]..]);
        self.seen = [self.a.broadcasts.len(), self.b.broadcasts.len()];
        for tx in &from_a {
            self.b.ch.handle_anchor_spent(tx);
        }
        for tx in &from_b {
            self.a.ch.handle_anchor_spent(tx);
        }
        !from_a.is_empty() || !from_b.is_empty()
    }

    /// Delivers the next message in `dir` as its bytes (the receiver
    /// decodes them); returns its name.
    pub fn deliver(&mut self, dir: Dir) -> Option<&'static str> {
        let (queue, to) = match dir {
            Dir::AToB => (&mut self.a_to_b, &mut self.b),
            Dir::BToA => (&mut self.b_to_a, &mut self.a),
        };
        let packet = queue.pop_front()?;
        let name = packet.message.name();
        to.ch.handle_wire(&packet.bytes, packet.acknowledge);
        if self.a.record {
            self.trace.push((dir, name));
        }
        self.pump();
        Some(name)
    }

    /// Delivers until both queues are empty (A's first each round).
    pub fn deliver_all(&mut self) {
        loop {
            let a = self.deliver(Dir::AToB).is_some();
            let b = self.deliver(Dir::BToA).is_some();
            if !a && !b {
                break;
            }
        }
    }

    /// The transport drops, losing every message in flight, and a new one
    /// comes up: each side sends `authenticate` with its acknowledge, then
    /// what the other has not acknowledged (R1.2-a, R1.2-d).
    pub fn reconnect(&mut self) {
        self.a_to_b.clear();
        self.b_to_a.clear();
        let ack_a = self.a.ch.new_transport();
        let ack_b = self.b.ch.new_transport();
        self.a.ch.handle_authenticate(ack_b);
        self.b.ch.handle_authenticate(ack_a);
        self.pump();
    }

    /// Both nodes see the anchor at `depth`.
    pub fn confirm(&mut self, depth: u32) {
        if let Some(anchor) = self.a.anchor.clone() {
            self.a.ch.handle_anchor_depth(&anchor, depth);
            self.b.ch.handle_anchor_depth(&anchor, depth);
        }
        self.pump();
    }

    /// Both nodes see block `height`.
    pub fn block(&mut self, height: u32) {
        self.a.ch.handle_block(height, 1_600_000_000 + height * 600);
        self.b.ch.handle_block(height, 1_600_000_000 + height * 600);
        self.pump();
    }

    /// Runs establishment to normal operation.
    pub fn establish(&mut self) {
        self.block(100);
        self.deliver_all();
        self.confirm(6);
        self.deliver_all();
        assert!(
            self.a.ch.is_open() && self.b.ch.is_open(),
            "A {} / B {}",
            self.a.ch.phase_name(),
            self.b.ch.phase_name()
        );
    }

    /// Delivers everything and commits on either side while anything is
    /// staged, until both queues are empty and nothing is left to commit.
    pub fn settle(&mut self) {
        for _ in 0..20 {
            self.deliver_all();
            let mut any = false;
            if self.a.ch.can_commit() {
                self.a.ch.commit().expect("can_commit");
                any = true;
            }
            if self.b.ch.can_commit() {
                self.b.ch.commit().expect("can_commit");
                any = true;
            }
            self.pump();
            if !any && self.a_to_b.is_empty() && self.b_to_a.is_empty() {
                return;
            }
        }
        panic!("the pair did not settle in 20 rounds");
    }

    /// `payer` ('A' or 'B') pays `amount` to the other node: one HTLC
    /// offered, committed, fulfilled with `preimage` and committed, expiring
    /// at height 5,000 (far past the blocks a simulation mines). What a test
    /// or bench does to put money on both sides of a new pair.
    pub fn pay(&mut self, payer: char, amount: crate::MilliSats, preimage: crate::Preimage) {
        let payee = if payer == 'A' { 'B' } else { 'A' };
        let expiry = absolute::LockTime::from_height(5_000).expect("a height");
        let id = self.node(payer).ch.offer_htlc(amount, preimage.hash(), expiry, Vec::new()).expect("affordable");
        self.settle();
        self.node(payee).ch.fulfill_htlc(id, preimage).expect("incoming");
        self.settle();
    }

    /// Both nodes stop keeping messages, events and records (for long
    /// runs); broadcasts are still kept.
    pub fn record_off(&mut self) {
        self.a.record = false;
        self.b.record = false;
    }

    /// Node 'A' or 'B'.
    pub fn node(&mut self, which: char) -> &mut Node {
        if which == 'A' {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// The anchor outpoint.
    pub fn anchor(&self) -> OutPoint {
        self.a.ch.funding().expect("anchor known").outpoint()
    }
}
