//! Placeholder until the transaction layer lands: the kind of channel output.

/// The kind of channel output (E1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum OutputKind {
    /// P2WSH (default).
    P2wsh,
    /// Legacy P2SH.
    P2sh,
}
