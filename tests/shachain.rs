//! Shachain generation and the compact receiver store (section 5, R5-a..d,
//! ruling D1), checked against a straightforward implementation written here
//! and against published vectors of the 48-bit definition.

use bitcoin::hashes::{sha256, Hash};
use paychan::shachain::{derive, RevocationSecrets, ShachainError, ShachainStore};
use proptest::prelude::*;

/// The text's algorithm with ruling D1's bit order, written out plainly:
/// for each bit from 63 down to 0 that is set in `index`, flip that bit of
/// the value (byte bit/8, bit bit%8) and hash. Uses bitcoin_hashes' SHA-256,
/// not the sha2 crate the library uses.
fn reference(seed: [u8; 32], index: u64) -> [u8; 32] {
    reference_bits(seed, index, 63, 0)
}

/// Applies bits `high` down to `low` (inclusive) of `index` to `value`.
fn reference_bits(mut value: [u8; 32], index: u64, high: u32, low: u32) -> [u8; 32] {
    let mut bit = high as i64;
    while bit >= low as i64 {
        let b = bit as u32;
        if (index >> b) & 1 == 1 {
            value[(b / 8) as usize] ^= 1 << (b % 8);
            value = sha256::Hash::hash(&value).to_byte_array();
        }
        bit -= 1;
    }
    value
}

fn hex32(s: &str) -> [u8; 32] {
    core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

#[test]
fn matches_the_48_bit_definition_below_2_pow_48() {
    // Published vectors of the later 48-bit definition (generate_from_seed).
    // D1: applying bit 63 first gives the same results for these indices.
    let cases = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            281474976710655,
            "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
        ),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            281474976710655,
            "7cc854b54e3e0dcdb010d7a3fee464a9687be6e8db3be6854c475621e007a5dc",
        ),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            0xaaaaaaaaaaa,
            "56f4008fb007ca9acf0e15b054d5c9fd12ee06cea347914ddbaed70d1c13a528",
        ),
        (
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            0x555555555555,
            "9015daaeb06dba4ccc05b91b2f73bd54405f2be9f217fbacd3c5ac2e62327d31",
        ),
        (
            "0101010101010101010101010101010101010101010101010101010101010101",
            1,
            "915c75942a26bb3a433a8ce2cb0427c29ec6c1775cfc78328b57f6ba7bfeaa9c",
        ),
    ];
    for (seed, index, expected) in cases {
        // R5-c
        assert_eq!(derive(&hex32(seed), index), hex32(expected), "seed {seed} index {index}");
    }
}

#[test]
fn bit_63_is_applied_first() {
    // D1: with bits 63 and 0 set, the value is flipped at bit 63 (byte 7,
    // 0x80) and hashed, then flipped at bit 0 and hashed, not the reverse.
    let seed = [0x42; 32];
    let mut v = seed;
    v[7] ^= 0x80;
    v = sha256::Hash::hash(&v).to_byte_array();
    v[0] ^= 1;
    v = sha256::Hash::hash(&v).to_byte_array();
    // R5-c
    assert_eq!(derive(&seed, (1 << 63) | 1), v);
    // Index 0 is the seed itself.
    assert_eq!(derive(&seed, 0), seed);
}

proptest! {
    /// R5-c: generation equals the straightforward implementation.
    #[test]
    fn derive_matches_reference(seed in any::<[u8; 32]>(), index in any::<u64>()) {
        // R5-c
        prop_assert_eq!(derive(&seed, index), reference(seed, index));
    }

    /// R5-b, R2.1-f: commitment n uses index 2^64-1-n.
    #[test]
    fn revocation_secrets_count_down_from_the_top(seed in any::<[u8; 32]>(), n in 0u64..1_000_000) {
        let secrets = RevocationSecrets::new(seed);
        // R5-b
        prop_assert_eq!(secrets.preimage(n).0, reference(seed, u64::MAX - n));
        prop_assert_eq!(secrets.hash(n), sha256::Hash::hash(&reference(seed, u64::MAX - n)));
    }

    /// R5-d: every inserted secret can be recovered, and the store stays at
    /// most 65 entries.
    #[test]
    fn every_stored_secret_is_recovered(seed in any::<[u8; 32]>(), n in 1u64..3000, probes in proptest::collection::vec(any::<u64>(), 20)) {
        let mut store = ShachainStore::new();
        for i in 0..n {
            store.insert(u64::MAX - i, reference(seed, u64::MAX - i)).unwrap();
            // R5-d
            prop_assert!(store.len() <= 65);
        }
        for p in probes {
            let index = u64::MAX - p % n;
            prop_assert_eq!(store.get(index), Some(reference(seed, index)));
        }
        // Nothing below the last insert is known.
        prop_assert_eq!(store.get(u64::MAX - n), None);
        // The serialization round-trips and keeps every secret.
        let back = ShachainStore::from_bytes(&store.to_bytes()).unwrap();
        prop_assert_eq!(&back, &store);
        prop_assert_eq!(back.get(u64::MAX - (n - 1)), Some(reference(seed, u64::MAX - (n - 1))));
    }

    /// R5-d: a corrupted secret is rejected, with the store unchanged, as soon
    /// as anything can check it: at once if it should derive secrets already
    /// stored, otherwise when the secret that derives it arrives.
    #[test]
    fn corrupted_secret_is_caught(seed in any::<[u8; 32]>(), bad in 0u64..500, flip in 0usize..256) {
        let mut store = ShachainStore::new();
        let bad_index = u64::MAX - bad;
        let mut i = 0u64;
        loop {
            let index = u64::MAX - i;
            let mut secret = reference(seed, index);
            if index == bad_index {
                secret[flip / 8] ^= 1 << (flip % 8);
            }
            let before = store.clone();
            match store.insert(index, secret) {
                Ok(()) => {
                    // Accepted only while nothing stored can check the bad one.
                    let bad_has_children = bad_index.trailing_zeros() > 0;
                    let unchecked = if index > bad_index {
                        true
                    } else if index == bad_index {
                        !bad_has_children
                    } else {
                        index.trailing_zeros() <= bad_index.trailing_zeros()
                    };
                    prop_assert!(unchecked);
                }
                Err(ShachainError::Inconsistent { index: at, conflicts_with }) => {
                    prop_assert_eq!(at, index);
                    if index == bad_index {
                        // R5-d: it fails to derive a secret received earlier.
                        prop_assert!(conflicts_with > index);
                        prop_assert_eq!(store.get(conflicts_with), Some(reference(seed, conflicts_with)));
                    } else {
                        // R5-d: its parent does not derive it.
                        prop_assert_eq!(conflicts_with, bad_index);
                        prop_assert!(index.trailing_zeros() > bad_index.trailing_zeros());
                    }
                    prop_assert_eq!(&store, &before);
                    break;
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            i += 1;
        }
    }

    /// Arbitrary bytes never panic the store's deserializer.
    #[test]
    fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ShachainStore::from_bytes(&bytes);
    }
}

#[test]
fn a_million_sequential_inserts_stay_within_65_entries() {
    let seed = [7u8; 32];
    // The reference derivation shares the work of the top 44 bits, which are
    // all set for the first 2^20 indices.
    let top = reference_bits(seed, u64::MAX, 63, 20);
    let mut store = ShachainStore::new();
    let mut most = 0;
    for i in 0..1_000_000u64 {
        let index = u64::MAX - i;
        store.insert(index, reference_bits(top, index, 19, 0)).unwrap();
        most = most.max(store.len());
    }
    // R5-d
    assert!(most <= 65, "store grew to {most} entries");
    for i in [0u64, 1, 2, 1023, 65_536, 999_999, 123_457] {
        let index = u64::MAX - i;
        assert_eq!(store.get(index), Some(reference_bits(top, index, 19, 0)), "index {index}");
    }
}

#[test]
fn inserts_must_be_sequential_from_the_top() {
    let seed = [9u8; 32];
    let mut store = ShachainStore::new();
    // R5-b: the first secret is index 2^64-1.
    assert_eq!(
        store.insert(u64::MAX - 1, reference(seed, u64::MAX - 1)),
        Err(ShachainError::OutOfOrder { expected: u64::MAX, got: u64::MAX - 1 })
    );
    assert!(store.is_empty());
    store.insert(u64::MAX, reference(seed, u64::MAX)).unwrap();
    // Repeating or skipping an index is refused and changes nothing.
    let before = store.clone();
    assert!(store.insert(u64::MAX, reference(seed, u64::MAX)).is_err());
    assert!(store.insert(u64::MAX - 2, reference(seed, u64::MAX - 2)).is_err());
    assert_eq!(store, before);
    assert_eq!(store.next_index(), Some(u64::MAX - 1));
}

#[test]
fn serialized_store_is_checked() {
    let seed = [3u8; 32];
    let mut store = ShachainStore::new();
    for i in 0..10 {
        store.insert(u64::MAX - i, reference(seed, u64::MAX - i)).unwrap();
    }
    let bytes = store.to_bytes();
    assert!(ShachainStore::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    assert!(ShachainStore::from_bytes(&wrong_version).is_err());
    // An entry moved away from the position its index implies.
    let mut misplaced = bytes.clone();
    misplaced[10 + 7] ^= 0x02; // the first entry's index loses bit 1
    assert!(ShachainStore::from_bytes(&misplaced).is_err());
    let empty = ShachainStore::new();
    assert_eq!(ShachainStore::from_bytes(&empty.to_bytes()), Ok(empty));
}

#[test]
fn the_seed_is_never_printed() {
    let seed = [0xab; 32];
    let printed = format!("{:?}", RevocationSecrets::new(seed));
    // R5-a: the seed is never revealed, not even in debug output.
    assert!(!printed.to_lowercase().contains("abab"), "{printed}");
    // R5-a: what is revealed (preimages) does not give the seed back.
    assert_ne!(RevocationSecrets::new(seed).preimage(0).0, seed);
}

#[test]
fn a_corrupted_serialized_store_is_refused() {
    let seed = [5u8; 32];
    let mut store = ShachainStore::new();
    for i in 0..100 {
        store.insert(u64::MAX - i, reference(seed, u64::MAX - i)).unwrap();
    }
    let bytes = store.to_bytes();
    // Flip one bit of the secret of each entry in turn: every flip that the
    // store could detect (an entry some higher entry derives) is refused.
    let entries = bytes[1] as usize;
    let mut refused = 0;
    for e in 0..entries {
        let mut bad = bytes.clone();
        bad[10 + e * 40 + 8] ^= 1;
        if ShachainStore::from_bytes(&bad).is_err() {
            refused += 1;
        } else {
            // R5-d: what the store accepts, it can still serve only if
            // nothing derives that entry; its own secret is then wrong.
            let index = u64::from_be_bytes(bad[10 + e * 40..18 + e * 40].try_into().unwrap());
            assert_ne!(ShachainStore::from_bytes(&bad).unwrap().get(index), Some(reference(seed, index)));
        }
    }
    assert!(refused > 0, "no corruption detected");
}
