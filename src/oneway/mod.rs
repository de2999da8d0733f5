//! The one-way merchant channel (placeholder while the transaction layer
//! lands).

pub mod client;
mod gate;
pub mod merchant;
pub mod script;
pub mod tx;
pub mod wire;
