//! Encoding and decoding of the two most common messages.

use bitcoin::absolute;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::CompressedPublicKey;
use criterion::{criterion_group, criterion_main, Criterion};
use paychan::wire::{self, AnchorOffer, Message, OpenChannel, UpdateAddHtlc};
use paychan::{Delay, HtlcMsat};
use std::hint::black_box;

fn messages() -> [(&'static str, Message); 2] {
    let secp = Secp256k1::new();
    let key = |n: u8| CompressedPublicKey(SecretKey::from_slice(&[n; 32]).unwrap().public_key(&secp));
    [
        (
            "update_add_htlc",
            Message::UpdateAddHtlc(UpdateAddHtlc {
                id: 42,
                amount: HtlcMsat::from_msat(1_234_567),
                r_hash: sha256::Hash::hash(b"R"),
                expiry: absolute::LockTime::from_height(800_000).unwrap(),
                // An onion of the size later specifications settled on.
                route: vec![0xab; 1366],
            }),
        ),
        (
            "open_channel",
            Message::OpenChannel(Box::new(OpenChannel {
                delay: Delay::Blocks(144),
                revocation_hash: sha256::Hash::hash(b"rev0"),
                next_revocation_hash: sha256::Hash::hash(b"rev1"),
                commit_key: key(1),
                final_key: key(2),
                anch: AnchorOffer::WillCreate,
                min_depth: 3,
                initial_fee_rate: 20_000,
            })),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, msg) in messages() {
        let bytes = wire::encode(&msg).unwrap();
        c.bench_function(&format!("wire/encode/{name}"), |b| b.iter(|| wire::encode(black_box(&msg))));
        c.bench_function(&format!("wire/decode/{name}"), |b| b.iter(|| wire::decode(black_box(&bytes)).unwrap()));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
