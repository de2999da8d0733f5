//! Revocation preimages from one seed, and their compact storage (section 5).
//!
//! The sender derives every revocation preimage from a secret 256-bit seed
//! ([`derive()`], [`RevocationSecrets`]); the receiver keeps every preimage it
//! has been sent in at most 65 entries ([`ShachainStore`]).
//!
//! # Bit order (ruling D1)
//!
//! Section 5's pseudo-code lists bits 0 to 63, but the design it cites and the
//! compact storage it promises need the bits applied from the most significant
//! down: this crate applies bit 63 first (R5-c). `flip(B)` XORs byte `B / 8`
//! with `1 << (B % 8)`; each flip is followed by a SHA-256 of the 32 bytes.
//! For indices below 2^48 this equals the later 48-bit definition.
//!
//! # Index order (R5-b)
//!
//! The first preimage used is index 2^64-1, then the index decrements by one
//! per commitment: commitment number `n` uses index `2^64 - 1 - n`.
//!
//! # Why the store stays small (R5-d)
//!
//! The secret at index `I` derives every secret whose index agrees with `I`
//! above `I`'s lowest set bit. Keeping, for each count of trailing zero bits,
//! only the latest secret received is enough to derive every secret received
//! so far: 64 positions plus one for index 0. A new secret is checked against
//! every stored secret it can derive before it is accepted, so an inconsistent
//! one is rejected as soon as the secret that must generate it arrives.

#[allow(unused_imports)]
use crate::prelude::*;
use core::fmt;

use bitcoin::hashes::sha256;

use crate::types::Preimage;

/// The preimage of `index` derived from `seed` (section 5, ruling D1).
pub fn derive(seed: &[u8; 32], index: u64) -> [u8; 32] {
    derive_bits(*seed, index, 64)
}

/// Applies the bits of `index` below `bits` to `value`, highest first.
fn derive_bits(value: [u8; 32], index: u64, bits: u32) -> [u8; 32] {
    apply_bits(value, index, bits, 0)
}

/// Applies the bits `low..high` of `index` to `value`, highest first.
fn apply_bits(mut value: [u8; 32], index: u64, high: u32, low: u32) -> [u8; 32] {
    for bit in (low..high).rev() {
        if index & (1 << bit) != 0 {
            value[(bit / 8) as usize] ^= 1 << (bit % 8);
            value = crate::digest::sha256(&value);
        }
    }
    value
}

/// Number of trailing zero bits, 64 for index 0: where an index's secret
/// lives in the store, and how many low bits of other indices it can derive.
fn position(index: u64) -> u32 {
    index.trailing_zeros()
}

/// Whether the secret at `from` derives the secret at `to`: they agree on
/// every bit above `from`'s trailing zeros.
fn can_derive(from: u64, to: u64) -> bool {
    let low = position(from);
    // For index 0, the seed-like root, every index is derivable.
    low == 64 || (from >> low) == (to >> low)
}

/// Low index bits [`RevocationSecrets`] derives per call; the bits above
/// come from its cache.
const CACHED_LOW_BITS: u32 = 16;

/// The sender's side: hands out revocation preimages and hashes by commitment
/// number, from a seed that never leaves it (R5-a).
#[derive(Clone)]
pub struct RevocationSecrets {
    seed: [u8; 32],
    /// The value after applying bits 63..16 of index 2^64-1 (all set), which
    /// every index of the first 65536 commitments shares: their preimages
    /// then cost at most 16 hashes instead of 64.
    top: [u8; 32],
}

impl RevocationSecrets {
    /// Secrets derived from `seed`, which must be 256 unguessable bits chosen
    /// for this channel alone (R5-a).
    pub fn new(seed: [u8; 32]) -> Self {
        RevocationSecrets { seed, top: apply_bits(seed, u64::MAX, 64, CACHED_LOW_BITS) }
    }

    /// The seed, for the channel's own persistence only.
    pub(crate) fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// The shachain index of commitment number `n`: 2^64-1 for the first
    /// commitment, then one less for each next one (R5-b).
    pub fn index(commitment: u64) -> u64 {
        u64::MAX - commitment
    }

    /// The revocation preimage of commitment number `n`.
    pub fn preimage(&self, commitment: u64) -> Preimage {
        let index = Self::index(commitment);
        if index >> CACHED_LOW_BITS == u64::MAX >> CACHED_LOW_BITS {
            Preimage(apply_bits(self.top, index, CACHED_LOW_BITS, 0))
        } else {
            Preimage(derive(&self.seed, index))
        }
    }

    /// The revocation hash of commitment number `n`: SHA-256 of its
    /// preimage.
    pub fn hash(&self, commitment: u64) -> sha256::Hash {
        self.preimage(commitment).hash()
    }
}

/// The intermediate values of the last derivation, so that the next one
/// reuses every level its index shares: commitments use neighbouring
/// indices, so a derivation costs one or two hashes instead of up to 64.
#[derive(Clone)]
pub(crate) struct Cursor {
    /// The index derived last, if any.
    index: Option<u64>,
    /// `levels[k]`: the value after applying bits 63..k of `index`
    /// (`levels[64]` is the seed).
    levels: [[u8; 32]; 65],
}

impl Cursor {
    pub(crate) fn new(secrets: &RevocationSecrets) -> Self {
        let mut levels = [[0u8; 32]; 65];
        levels[64] = secrets.seed;
        Cursor { index: None, levels }
    }

    /// The preimage of commitment number `commitment` (as
    /// [`RevocationSecrets::preimage`] derives it).
    pub(crate) fn preimage(&mut self, commitment: u64) -> Preimage {
        let index = RevocationSecrets::index(commitment);
        // Levels above the highest bit in which the indices differ are
        // shared.
        let start = self.index.map_or(64, |prev| 64 - (prev ^ index).leading_zeros());
        for bit in (0..start).rev() {
            let mut value = self.levels[bit as usize + 1];
            if index & (1 << bit) != 0 {
                value[(bit / 8) as usize] ^= 1 << (bit % 8);
                value = crate::digest::sha256(&value);
            }
            self.levels[bit as usize] = value;
        }
        self.index = Some(index);
        Preimage(self.levels[0])
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cursor { <secret> }")
    }
}

impl fmt::Debug for RevocationSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed is never revealed (R5-a), not even to a log.
        f.write_str("RevocationSecrets { seed: <secret> }")
    }
}

/// Why [`ShachainStore::insert`] refused a secret. The store is unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShachainError {
    /// Secrets must arrive one index at a time, from 2^64-1 downwards.
    #[error("shachain secret for index {got} out of order: expected index {expected} (R5-b)")]
    OutOfOrder {
        /// The index the store expects next.
        expected: u64,
        /// The index offered.
        got: u64,
    },
    /// The store already holds index 0, the last one.
    #[error("shachain is complete: no index below 0")]
    Exhausted,
    /// The secret does not derive one received earlier (R5-d).
    #[error("shachain secret for index {index} does not derive the secret received for index {conflicts_with} (R5-d)")]
    Inconsistent {
        /// The index offered.
        index: u64,
        /// The earlier index whose secret it fails to derive.
        conflicts_with: u64,
    },
}

/// Why [`ShachainStore::from_bytes`] refused its input.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShachainDecodeError {
    /// The input is not as long as its entry count says.
    #[error("serialized shachain store has the wrong length")]
    Length,
    /// The format version byte is unknown.
    #[error("unknown shachain store version {0}")]
    Version(u8),
    /// The entries are not those any sequence of inserts leaves.
    #[error("serialized shachain store is not consistent")]
    Inconsistent,
}

/// The receiver's compact store of revocation preimages (R5-d).
///
/// Secrets are inserted in strictly decreasing index order starting at
/// 2^64-1, one index at a time, as commitments are revoked. The store holds at
/// most 65 entries whatever the number of inserts and can return the secret of
/// every index inserted so far.
#[derive(Clone, PartialEq, Eq)]
pub struct ShachainStore {
    /// `known[p]` is the latest secret whose index has `p` trailing zeros.
    known: [([u8; 32], u64); 65],
    /// How many positions of `known` are in use (the highest used plus one).
    valid: usize,
    /// The smallest index inserted, or `None` for an empty store.
    min_index: Option<u64>,
}

impl Default for ShachainStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ShachainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShachainStore").field("entries", &self.valid).field("min_index", &self.min_index).finish()
    }
}

impl ShachainStore {
    /// Version byte of [`to_bytes`](Self::to_bytes).
    const FORMAT_VERSION: u8 = 1;

    /// An empty store.
    pub fn new() -> Self {
        ShachainStore { known: [([0; 32], 0); 65], valid: 0, min_index: None }
    }

    /// How many entries the store keeps (never more than 65).
    pub fn len(&self) -> usize {
        self.valid
    }

    /// Whether nothing was inserted yet.
    pub fn is_empty(&self) -> bool {
        self.valid == 0
    }

    /// The index the next insert must use, or `None` once index 0 is in.
    pub fn next_index(&self) -> Option<u64> {
        match self.min_index {
            None => Some(u64::MAX),
            Some(min) => min.checked_sub(1),
        }
    }

    /// Stores the secret of `index`, after checking it derives every secret
    /// received before that it should (R5-d). On error nothing changes.
    pub fn insert(&mut self, index: u64, secret: [u8; 32]) -> Result<(), ShachainError> {
        let expected = self.next_index().ok_or(ShachainError::Exhausted)?;
        if index != expected {
            return Err(ShachainError::OutOfOrder { expected, got: index });
        }
        let pos = position(index) as usize;
        for &(known, known_index) in &self.known[..pos.min(self.valid)] {
            if derive_bits(secret, known_index, pos as u32) != known {
                return Err(ShachainError::Inconsistent { index, conflicts_with: known_index });
            }
        }
        self.known[pos] = (secret, index);
        self.valid = self.valid.max(pos + 1);
        self.min_index = Some(index);
        Ok(())
    }

    /// The secret of `index`, if it was inserted (or derives from one that
    /// was: only indices at or above the smallest inserted qualify).
    pub fn get(&self, index: u64) -> Option<[u8; 32]> {
        if index < self.min_index? {
            return None;
        }
        self.known[..self.valid]
            .iter()
            .find(|&&(_, from)| can_derive(from, index))
            .map(|&(secret, from)| derive_bits(secret, index, position(from)))
    }

    /// The secret of `index` as a [`Preimage`].
    pub fn preimage(&self, index: u64) -> Option<Preimage> {
        self.get(index).map(Preimage)
    }

    /// A versioned serialization: version byte, entry count, smallest index
    /// (big-endian u64), then each entry's index (big-endian u64) and secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + self.valid * 40);
        out.push(Self::FORMAT_VERSION);
        out.push(self.valid as u8);
        if let Some(min) = self.min_index {
            out.extend_from_slice(&min.to_be_bytes());
        }
        for (secret, index) in &self.known[..self.valid] {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(secret);
        }
        out
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote, checking that every
    /// entry sits where its index puts it, that the smallest index is the
    /// latest insert, and that every entry agrees with the lower entries it
    /// can derive.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShachainDecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(ShachainDecodeError::Length)?;
        if version != Self::FORMAT_VERSION {
            return Err(ShachainDecodeError::Version(version));
        }
        let (&valid, rest) = rest.split_first().ok_or(ShachainDecodeError::Length)?;
        let valid = usize::from(valid);
        let mut store = ShachainStore::new();
        if valid == 0 {
            return if rest.is_empty() { Ok(store) } else { Err(ShachainDecodeError::Length) };
        }
        if valid > 65 || rest.len() != 8 + valid * 40 {
            return Err(ShachainDecodeError::Length);
        }
        let min = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        for (pos, entry) in rest[8..].chunks_exact(40).enumerate() {
            let index = u64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
            // Every position below the highest is filled by sequential
            // inserts from 2^64-1, each with its own count of trailing zeros,
            // and none below the latest insert.
            if position(index) as usize != pos || index < min {
                return Err(ShachainDecodeError::Inconsistent);
            }
            store.known[pos] = (entry[8..].try_into().expect("32 bytes"), index);
        }
        if !store.known[..valid].iter().any(|&(_, index)| index == min) {
            return Err(ShachainDecodeError::Inconsistent);
        }
        // Every entry must agree with each lower entry it can derive: a
        // corrupted store would otherwise hand out wrong secrets.
        for (pos, &(secret, index)) in store.known[..valid].iter().enumerate() {
            for &(known, known_index) in &store.known[..pos] {
                if can_derive(index, known_index) && derive_bits(secret, known_index, pos as u32) != known {
                    return Err(ShachainDecodeError::Inconsistent);
                }
            }
        }
        store.valid = valid;
        store.min_index = Some(min);
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_zero_derives_everything_and_is_last() {
        assert!(can_derive(0, 12345));
        let mut s = ShachainStore::new();
        s.min_index = Some(0);
        assert_eq!(s.next_index(), None);
        assert_eq!(s.insert(0, [0; 32]), Err(ShachainError::Exhausted));
    }

    proptest::proptest! {
        /// The cursor gives what the text's derivation gives (which the
        /// vectors of `tests/shachain.rs` check), whatever the order of the
        /// commitments asked for: neighbours, repeats, jumps.
        #[test]
        fn the_cursor_derives_as_the_text_does(
            seed: [u8; 32],
            steps in proptest::collection::vec((0u64..3, 0u64..1 << 48), 1..60),
        ) {
            let secrets = RevocationSecrets::new(seed);
            let mut cursor = Cursor::new(&secrets);
            let mut n = 0u64;
            for (kind, jump) in steps {
                n = match kind {
                    0 => n.saturating_add(1).min((1 << 48) - 1),
                    1 => n.saturating_sub(1),
                    _ => jump,
                };
                proptest::prop_assert_eq!(cursor.preimage(n).0, derive(&seed, RevocationSecrets::index(n)));
                proptest::prop_assert_eq!(secrets.preimage(n).0, derive(&seed, RevocationSecrets::index(n)));
            }
        }
    }
}
