//! The one-way merchant channel (`002_eae50c3ad23eff4b.txt`, made a protocol
//! by `oneway.md`): a client locks coins in an output that both parties can
//! spend together, or the client alone after block height `T`; it pays a
//! merchant by signing ever larger payments out of it as PSBTs; the merchant
//! closes by countersigning and broadcasting the best one before `T`.
//!
//! | module | what |
//! |---|---|
//! | [`script`] | the channel script of ruling E2, built and parsed byte for byte; P2WSH and P2SH outputs (E1) |
//! | [`tx`] | the funding output, announce and payment PSBTs, the cooperative close, the refund; dust and standardness rules |
//! | [`wire`] | the messages of ruling E3 (`proto/oneway.proto`), with the peer protocol's odd/even and required-field rules |
//! | [`client`] | [`client::Client`]: setup \[1\]-\[C\], payments \[E\]\[F\], close checks, the refund after `T` |
//! | [`merchant`] | [`merchant::Merchant`]: many sessions and channels in one sans-IO object; every check of M2 and M3 with its own code; the close and its re-broadcast |
//!
//! Both roles follow the peer channel's contract: inputs (`handle_*`),
//! commands, outputs drained with `poll_output` after each, a `Persist`
//! output that is released at once and gates every other output until the
//! caller says it is durable (M1-c, M2-g, M3-g), and `restore` from the last
//! stored state. Neither reads a clock or the chain: the tip is handed in,
//! and chain questions (is the funding there, how deep, is the channel output
//! spent) are outputs the caller answers.
//!
//! A drive loop for the merchant (the client's is alike):
//!
//! ```text
//! while let Some(out) = merchant.poll_output() {
//!     match out {
//!         MerchantOutput::Persist { version, state } => { db.write(state)?; merchant.handle_persisted(version) }
//!         MerchantOutput::Send { peer, message } => conns[peer].send(&wire::encode(&message))?,
//!         MerchantOutput::Broadcast(tx) => node.broadcast(tx)?,
//!         MerchantOutput::QueryFunding { outpoint } => merchant.handle_funding(outpoint, node.funding_status(outpoint)),
//!         MerchantOutput::QueryOutpoint { outpoint } => merchant.handle_outpoint(outpoint, node.outpoint_status(outpoint)),
//!         MerchantOutput::Event(MerchantEvent::PaymentReceived { channel_id, invoice_id, .. }) => shop.fulfil(channel_id, invoice_id),
//!         MerchantOutput::Event(_) => {}
//!     }
//! }
//! ```
//!
//! `docs/oneway-transactions.md` specifies the script and every transaction
//! byte for byte. `paychan::sim::oneway::Shop` is that loop written once, on the simulated
//! chain, for the tests and the `merchant` example.

#[allow(unused_imports)]
use crate::prelude::*;
pub mod client;
mod gate;
pub mod merchant;
pub mod script;
pub mod tx;
pub mod wire;
