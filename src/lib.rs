//! paychan: a sans-IO core for two-party Bitcoin payment channels.
//!
//! paychan implements the Lightning peer protocol of the initial draft of
//! BOLT #2, "Basis of Lightning Technology RFC 2" (2016; "the text" below):
//! channel establishment, HTLC updates with a staged/committed log,
//! cooperative close, failure handling and on-chain enforcement, with
//! revocation preimages from a shachain; and a one-way merchant channel
//! ([`oneway`]) in which a client pays with ever larger PSBTs. It is a pure, synchronous library: it never reads a clock, a
//! random source, a socket or a disk. Time, block heights, seeds and keys are
//! arguments; messages, transactions and state to persist are outputs.
//!
//! Without the default `std` feature the crate is `#![no_std]` with `alloc`
//! (everything but [`sim`](crate#layers), which needs `std`).
//!
//! # Layers
//!
//! | module | what it does | protocol text |
//! |---|---|---|
//! | [`wire`] | protobuf messages as validated values; `pkt` encode/decode; D8 framing | sections 1, 2.x.1, 3.x.1, 4.x.1, 6.3.1 |
//! | [`shachain`] | revocation preimages from a seed; the compact receiver store | section 5 |
//! | [`fees`] | commitment fee, dust, and the split of a fee between the two sides | section 3.6 |
//! | [`tx`] | funding, commitment, HTLC, sweep, close and penalty transactions; signing | sections 2.2, 3, 4.2, 6 |
//! | [`channel`] | the sans-IO state machine: establishment, updates, close, failure, persistence | sections 1.2, 2, 3, 4, 6.3 |
//! | [`journal`] | incremental persistence: entries appended, snapshots now and then | |
//! | [`chain`] | the on-chain monitor: classifying the anchor's spend, sweeps, HTLC claims, penalties, reorgs | section 6 |
//! | [`tower`] | watchtowers: justice packages sealed under the revoked commitment's txid, and a tower that punishes for an offline client (W1-a..W1-d) | `onchain.md` |
//! | [`oneway`] | the one-way merchant channel: its script, transactions and PSBTs, wire messages, client and merchant (E1-E7, M1-M5) | `002_eae50c3ad23eff4b.txt`, `oneway.md` |
//! | [`sim`] | two channels in memory and a simulated chain, for tests, examples and experiments | |
//! | [`types`] | millisatoshi amounts, preimages, the relative `delay` | |
//!
//! # The drive loop
//!
//! A [`channel::Channel`] is driven by feeding it inputs and draining
//! [`channel::Output`]s. Here two nodes talk through in-memory queues (a real
//! node would frame messages onto a transport with [`wire::frame`]): they
//! open a channel, make a payment and close.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::sync::Arc;
//! use bitcoin::absolute::LockTime;
//! use bitcoin::Amount;
//! use bitcoin::hashes::Hash as _;
//! use paychan::chain::{Monitor, MonitorConfig, MonitorEvent, MonitorOutput, SpendKind};
//! use paychan::channel::{Channel, ChannelConfig, Event, Output, Watch};
//! use paychan::journal::Write;
//! use paychan::sim::{funding_tx, secret};
//! use paychan::tx::InMemorySigner;
//! use paychan::{MilliSats, Preimage};
//!
//! /// Everything one node's surroundings do with its outputs, and the
//! /// channel's on-chain monitor (which could live in another process).
//! #[derive(Default)]
//! struct World {
//!     outbox: VecDeque<(u64, Vec<u8>)>, db: Db, chain: Vec<bitcoin::Transaction>, events: Vec<Event>,
//!     monitor: Option<Monitor>, monitor_db: Db, monitor_events: Vec<MonitorEvent>,
//! }
//!
//! /// A store: the last snapshot and the journal entries after it.
//! #[derive(Default)]
//! struct Db { snapshot: Vec<u8>, journal: Vec<Vec<u8>> }
//!
//! impl Db {
//!     fn write(&mut self, write: Write) {
//!         match write {
//!             Write::Append { entry, .. } => self.journal.push(entry),
//!             // Every entry so far is in the snapshot.
//!             Write::Snapshot { state, .. } => { self.snapshot = state; self.journal.clear(); }
//!         }
//!     }
//! }
//!
//! fn drain_monitor(w: &mut World) {
//!     let Some(m) = w.monitor.as_mut() else { return };
//!     while let Some(out) = m.poll_output() {
//!         match out {
//!             MonitorOutput::Persist(p) => { let seq = p.seq(); w.monitor_db.write(p); m.handle_persisted(seq); }
//!             MonitorOutput::Broadcast(tx) => w.chain.push(tx),
//!             MonitorOutput::Event(e) => w.monitor_events.push(e),
//!             _ => {} // watches: a node with a full chain needs none
//!         }
//!     }
//! }
//!
//! fn drain(ch: &mut Channel, w: &mut World) {
//!     while let Some(out) = ch.poll_output() {
//!         match out {
//!             // The monitor's updates come first and are stored first (C1-i)...
//!             Output::Monitor(u) => { if let Some(m) = w.monitor.as_mut() { m.update(u).unwrap(); } drain_monitor(w); }
//!             // ...then the change; only then is anything that depends on it released.
//!             Output::Persist(p) => { let seq = p.seq(); w.db.write(p); ch.handle_persisted(seq); }
//!             Output::Send { acknowledge, bytes, .. } => w.outbox.push_back((acknowledge, bytes)),
//!             // The funder's wallet builds the anchor; it is broadcast later, when the channel says so.
//!             Output::FundAnchor { amount, script_pubkey } => ch.provide_anchor(funding_tx(script_pubkey, amount), 0).unwrap(),
//!             Output::Broadcast(tx) => w.chain.push(tx),
//!             Output::Watch(Watch::AnchorDepth { .. } | Watch::AnchorSpend(_)) => {}
//!             Output::Event(e) => w.events.push(e),
//!             _ => {}
//!         }
//!     }
//! }
//!
//! /// Delivers every queued message, both ways, until both sides are quiet.
//! fn run(a: &mut Channel, wa: &mut World, b: &mut Channel, wb: &mut World) {
//!     loop {
//!         drain(a, wa);
//!         drain(b, wb);
//!         if wa.outbox.is_empty() && wb.outbox.is_empty() { break; }
//!         for (from, to) in [(&mut *wa, &mut *b), (&mut *wb, &mut *a)] {
//!             // Decoded, or failed as malformed; journaled as received.
//!             while let Some((ack, bytes)) = from.outbox.pop_front() {
//!                 to.handle_wire(&bytes, ack);
//!             }
//!         }
//!     }
//! }
//!
//! let config = ChannelConfig::default();
//! let signer_a = Arc::new(InMemorySigner::new(secret(1), secret(2)));
//! let signer_b = Arc::new(InMemorySigner::new(secret(3), secret(4)));
//! // Seeds and keys come from the caller: the core draws no randomness.
//! let mut a = Channel::new_funder(config.clone(), signer_a.clone(), [0x11; 32], Amount::from_sat(500_000)).unwrap();
//! let mut b = Channel::new_fundee(config, signer_b, [0x22; 32]).unwrap();
//! let (mut wa, mut wb) = (World::default(), World::default());
//! // A's monitor sweeps to A's wallet.
//! let sweep_to = bitcoin::ScriptBuf::new_p2wpkh(&paychan::tx::Signer::public_key(&*signer_a, paychan::tx::KeyRole::Final).wpubkey_hash());
//! wa.monitor = Some(Monitor::new(MonitorConfig::new(sweep_to), signer_a));
//!
//! // Establishment: open_channel both ways, open_anchor, open_commit_sig...
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! assert_eq!(wa.chain.len(), 1, "the anchor, broadcast after open_commit_sig");
//! // ...then the chain buries the anchor and both send open_complete.
//! let anchor = wa.chain[0].clone();
//! for ch in [&mut a, &mut b] { ch.handle_block(800_000, 1_700_000_000); ch.handle_anchor_depth(&anchor, 3); }
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! assert!(a.is_open() && b.is_open());
//!
//! // A pays B: offer, commit; B fulfills, commits.
//! let r = Preimage([42; 32]);
//! let id = a.offer_htlc(MilliSats::from_msat(70_000_000), r.hash(), LockTime::from_height(800_500).unwrap(), vec![]).unwrap();
//! a.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! b.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! b.fulfill_htlc(id, r).unwrap();
//! b.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! a.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! assert!(wa.events.iter().any(|e| matches!(e, Event::HtlcFulfilled { preimage, .. } if *preimage == r)));
//!
//! // The transport drops with A's next message in flight. On the new one each
//! // side's authenticate says what it has durably processed (R1.2-b), and the
//! // other resends the rest, byte for byte (R1.2-d, R1.2-e).
//! let id = a.offer_htlc(MilliSats::from_msat(1_000_000), r.hash(), LockTime::from_height(800_500).unwrap(), vec![]).unwrap();
//! drain(&mut a, &mut wa);
//! wa.outbox.clear();
//! let (ack_a, ack_b) = (a.new_transport(), b.new_transport());
//! a.handle_authenticate(ack_b);
//! b.handle_authenticate(ack_a);
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! assert!(b.our_staged().htlc(paychan::channel::Side::Remote, id).is_some());
//! a.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! b.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! b.fail_htlc(id, vec![]).unwrap();
//! b.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! a.commit().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//!
//! // Cooperative close: clearing, fee negotiation, the close transaction.
//! a.close().unwrap();
//! run(&mut a, &mut wa, &mut b, &mut wb);
//! assert!(a.is_terminal() && b.is_terminal());
//! assert_eq!(wa.chain.last(), wb.chain.last());
//! // The channel can be restored from its store: the snapshot, then the journal.
//! let journal = wb.db.journal.iter().map(Vec::as_slice);
//! let restored = Channel::restore(&wb.db.snapshot, journal, Arc::new(InMemorySigner::new(secret(3), secret(4)))).unwrap();
//! assert!(restored.is_terminal());
//! // The close confirms: A's monitor classifies the anchor's spend (C1-b).
//! let close = wa.chain.last().unwrap().clone();
//! wa.monitor.as_mut().unwrap().block_connected(800_001, bitcoin::BlockHash::from_byte_array([1; 32]), 1_700_000_600, &[close]).unwrap();
//! drain_monitor(&mut wa);
//! assert!(wa.monitor_events.iter().any(|e| matches!(e, MonitorEvent::AnchorSpent { kind: SpendKind::MutualClose, .. })));
//! ```
//!
//! [`sim::Pair`] packages this loop for tests and experiments.
//!
//! # The foundation, by example
//!
//! Encode a message, cut the framed stream anywhere, and decode it again;
//! derive the first revocation hash; compute the text's fee example.
//!
//! ```
//! use bitcoin::Amount;
//! use paychan::fees::commitment_fee;
//! use paychan::shachain::{RevocationSecrets, ShachainStore};
//! use paychan::wire::{self, frame, Message, UpdateFee};
//!
//! let msg = Message::UpdateFee(UpdateFee { fee_rate: 2000 });
//! assert_eq!(wire::decode(&wire::encode(&msg).unwrap()), Ok(msg.clone()));
//! let mut stream = Vec::new();
//! frame::encode_frame(7, &msg, &mut stream).unwrap();
//! let mut decoder = frame::FrameDecoder::new();
//! decoder.push(&stream[..5]); // bytes arrive in arbitrary pieces
//! assert_eq!(decoder.next_frame(), Ok(None));
//! decoder.push(&stream[5..]);
//! let frame = decoder.next_frame().unwrap().unwrap();
//! assert_eq!((frame.acknowledge, frame.message), (7, msg));
//!
//! let secrets = RevocationSecrets::new([0x42; 32]);
//! let mut store = ShachainStore::new();
//! for n in 0..1000 {
//!     store.insert(RevocationSecrets::index(n), secrets.preimage(n).0).unwrap();
//! }
//! assert!(store.len() <= 65);
//! assert_eq!(store.preimage(RevocationSecrets::index(17)), Some(secrets.preimage(17)));
//!
//! assert_eq!(commitment_fee(1112, 2), Amount::from_sat(446));
//! ```
//!
//! # Rulings
//!
//! Where the text is ambiguous this crate follows the rulings of the
//! project's requirements catalogue, cited where they apply: D1 (shachain bit
//! order, [`shachain`]), D2 and D3 (field and `pkt` numbers,
//! `proto/paychan.proto`), D8 (acknowledge and framing, [`wire::frame`]), D9
//! (dust, [`fees`]), D4, D6 and D7 (segwit outputs, direct HTLC spends,
//! whose fee rate: [`tx`]). Where the text leaves a gap that real links
//! expose, the project's own decisions are in `docs/adr/` (retransmissions
//! and crashes: 0003; fees at clearing, crossed close proposals and relay
//! floors: 0004; the on-chain monitor, what it keeps and its journal: 0005,
//! after rulings D10-D13 of `onchain.md`; the channel's journal of inputs
//! and its snapshots: 0006; watchtower packages and towers: 0007).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

/// What `std`'s prelude gives, from `alloc`, for the `no_std` build.
#[allow(unused_imports)]
pub(crate) mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::boxed::Box;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec::Vec;
    pub(crate) use alloc::{format, vec};
}

pub mod chain;
pub mod channel;
mod digest;
pub mod fees;
pub mod journal;
pub mod oneway;
pub mod rules;
pub mod shachain;
#[cfg(feature = "std")]
pub mod sim;
pub mod tower;
pub mod tx;
pub mod types;
pub mod wire;

/// The rust-bitcoin version paychan speaks, re-exported so that callers use
/// the same types.
pub use bitcoin;
pub use types::{Delay, HtlcMsat, MilliSats, Preimage};
