//! The one-way merchant channel (the seed `002_eae50c3ad23eff4b.txt`, made a
//! protocol by the project's `oneway.md`, rulings E1-E7, requirements M1-M5):
//! a client locks coins in an output that both parties can spend together,
//! or the client alone after block height `T`, and pays a merchant with ever
//! larger signed payments out of it.
//!
//! | module | what it does |
//! |---|---|
//! | [`script`] | the channel script (E2), built and parsed byte for byte |
//! | [`tx`] | the channel output, payment, refund, announce and payment PSBTs; dust and standard outputs |
//!
//! `docs/oneway-transactions.md` specifies the script and every transaction.

pub mod script;
pub mod tx;
