//! SHA-256 and double SHA-256 by the `sha2` crate, for the hashes a
//! payment takes: every commitment's P2WSH scripts, hashOutputs, txid and
//! signature hash, every preimage checked and the shachain's derivations.
//! With the CPU's SHA extensions it took about 15% less time per block than
//! `bitcoin_hashes` on the machine the crate is measured on. (Hashes taken
//! once per channel or per close keep `bitcoin_hashes`.)

use sha2::{Digest, Sha256};

/// A SHA-256 in progress.
pub(crate) type Engine = Sha256;

/// `SHA256(data)`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `SHA256(SHA256(data))`.
pub(crate) fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// `SHA256(SHA256(m))`, where `engine` has taken `m`.
pub(crate) fn finish_double(engine: Engine) -> [u8; 32] {
    Sha256::digest(engine.finalize()).into()
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::{sha256, sha256d, Hash as _};
    use sha2::Digest as _;

    // Against bitcoin_hashes, on every length around the block and padding
    // boundaries.
    #[test]
    fn agrees_with_bitcoin_hashes() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let m = &data[..len];
            assert_eq!(super::sha256(m), sha256::Hash::hash(m).to_byte_array());
            assert_eq!(super::sha256d(m), sha256d::Hash::hash(m).to_byte_array());
            let mut engine = super::Engine::new();
            let (a, b) = m.split_at(len / 3);
            engine.update(a);
            engine.update(b);
            assert_eq!(super::finish_double(engine), sha256d::Hash::hash(m).to_byte_array());
        }
    }
}
