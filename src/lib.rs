//! paychan: a sans-IO core for two-party Bitcoin payment channels.
//!
//! paychan implements the early Lightning peer protocol (the protocol text
//! `003_c21a625b82f75701.txt`, "the text" below): channel establishment,
//! HTLC updates with a staged/committed log, cooperative close, failure
//! handling and on-chain enforcement, with revocation preimages from a
//! shachain. It is a pure, synchronous library: it never reads a clock, a
//! random source, a socket or a disk. Time, block heights, seeds and keys are
//! arguments; messages, transactions and state to persist are outputs.
//!
//! # Layers
//!
//! | module | what it does | protocol text |
//! |---|---|---|
//! | [`wire`] | protobuf messages as validated values; `pkt` encode/decode; D8 framing | sections 1, 2.x.1, 3.x.1, 4.x.1, 6.3.1 |
//! | [`shachain`] | revocation preimages from a seed; the compact receiver store | section 5 |
//! | [`fees`] | commitment fee, dust, and the split of a fee between the two sides | section 3.6 |
//! | [`tx`] | funding, commitment, HTLC, sweep, close and penalty transactions; signing | sections 2.2, 3, 4.2, 6 |
//! | [`types`] | millisatoshi amounts, preimages, the relative `delay` | |
//!
//! # Example
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
//! // Wire: a pkt, and the same message framed with an acknowledge counter.
//! let msg = Message::UpdateFee(UpdateFee { fee_rate: 2000 });
//! assert_eq!(wire::decode(&wire::encode(&msg)), Ok(msg.clone()));
//! let mut stream = Vec::new();
//! frame::encode_frame(7, &msg, &mut stream);
//! let mut decoder = frame::FrameDecoder::new();
//! decoder.push(&stream[..5]); // bytes arrive in arbitrary pieces
//! assert_eq!(decoder.next_frame(), Ok(None));
//! decoder.push(&stream[5..]);
//! let frame = decoder.next_frame().unwrap().unwrap();
//! assert_eq!((frame.acknowledge, frame.message), (7, msg));
//!
//! // Shachain: the sender reveals preimages from index 2^64-1 down; the
//! // receiver stores them in at most 65 entries.
//! let secrets = RevocationSecrets::new([0x42; 32]);
//! let mut store = ShachainStore::new();
//! for n in 0..1000 {
//!     store.insert(RevocationSecrets::index(n), secrets.preimage(n).0).unwrap();
//! }
//! assert!(store.len() <= 65);
//! assert_eq!(store.preimage(RevocationSecrets::index(17)), Some(secrets.preimage(17)));
//!
//! // Fees: 402 bytes at 1112 sat/kB is 446 satoshis.
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
//! whose fee rate: [`tx`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod channel;
pub mod fees;
pub mod shachain;
pub mod sim;
pub mod tx;
pub mod types;
pub mod wire;

pub use types::{Delay, HtlcMsat, MilliSats, Preimage};
