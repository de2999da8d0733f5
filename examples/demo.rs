//! A tour of paychan's foundation: the establishment message sequence of
//! section 2, framed, sent through a byte stream in uneven chunks and decoded
//! again; the first revocation preimages of a shachain; and the fee example
//! of section 3.6.
//!
//! Run with `cargo run --example demo`.

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message as SecpMessage, Secp256k1, SecretKey};
use bitcoin::{Amount, CompressedPublicKey, Txid};
use paychan::fees::{commitment_bytecount, commitment_fee, split_fee};
use paychan::shachain::{RevocationSecrets, ShachainStore};
use paychan::wire::frame::{encode_frame, FrameDecoder};
use paychan::wire::{AnchorOffer, Message, OpenAnchor, OpenChannel, OpenCommitSig};
use paychan::Delay;

fn main() {
    let secp = Secp256k1::new();
    let key = |n: u8| SecretKey::from_slice(&[n; 32]).expect("a valid scalar");
    let public = |n: u8| CompressedPublicKey(key(n).public_key(&secp));
    // The transaction layer is not part of this foundation yet: the commitment
    // signatures below sign stand-in digests.
    let sign = |n: u8, what: &[u8]| {
        let digest = bitcoin::hashes::sha256::Hash::hash(what).to_byte_array();
        secp.sign_ecdsa(&SecpMessage::from_digest(digest), &key(n))
    };
    let a_secrets = RevocationSecrets::new([0xa1; 32]);
    let b_secrets = RevocationSecrets::new([0xb2; 32]);
    let open = |secrets: &RevocationSecrets, commit: u8, fin: u8, anch| {
        Message::OpenChannel(OpenChannel {
            delay: Delay::Blocks(144),
            revocation_hash: secrets.hash(0),
            next_revocation_hash: secrets.hash(1),
            commit_key: public(commit),
            final_key: public(fin),
            anch,
            min_depth: 3,
            initial_fee_rate: 10_000,
        })
    };
    let sequence = [
        ("A", open(&a_secrets, 1, 2, AnchorOffer::WillCreate)),
        ("B", open(&b_secrets, 3, 4, AnchorOffer::WontCreate)),
        (
            "A",
            Message::OpenAnchor(OpenAnchor {
                txid: Txid::from_byte_array([0x77; 32]),
                output_index: 0,
                amount: Amount::from_sat(1_000_000),
                commit_sig: sign(1, b"B's first commitment"),
            }),
        ),
        ("B", Message::OpenCommitSig(OpenCommitSig { sig: sign(3, b"A's first commitment") })),
        ("A", Message::OpenComplete),
        ("B", Message::OpenComplete),
    ];

    println!("Channel establishment (section 2), framed per ruling D8:\n");
    println!("    +-------+                                    +-------+");
    let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
    let (mut a_ack, mut b_ack) = (0u64, 0u64);
    for (step, (from, msg)) in sequence.iter().enumerate() {
        let (stream, ack) = if *from == "A" { (&mut a_to_b, a_ack) } else { (&mut b_to_a, b_ack) };
        let before = stream.len();
        encode_frame(ack, msg, stream);
        let bytes = stream.len() - before;
        let label = format!("{} ({bytes} B) ", msg.name());
        if *from == "A" {
            println!("    |   A   |--({})-- {label:-<28}>|   B   |", step + 1);
            b_ack += 1; // B processes it
        } else {
            println!("    |   A   |<-({})-- {label:-<28}-|   B   |", step + 1);
            a_ack += 1;
        }
    }
    println!("    +-------+                                    +-------+\n");

    // Each side's stream arrives in 7-byte pieces and decodes to the same
    // messages.
    for (name, stream, from) in [("A -> B", &a_to_b, "A"), ("B -> A", &b_to_a, "B")] {
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(7) {
            dec.push(piece);
            while let Some(frame) = dec.next_frame().expect("our own frames decode") {
                got.push(frame);
            }
        }
        let sent: Vec<&Message> = sequence.iter().filter(|(f, _)| *f == from).map(|(_, m)| m).collect();
        assert_eq!(got.iter().map(|f| &f.message).collect::<Vec<_>>(), sent);
        let acks: Vec<u64> = got.iter().map(|f| f.acknowledge).collect();
        println!("{name}: {} bytes, {} frames decoded, acknowledge values {acks:?}", stream.len(), got.len());
    }

    println!("\nRevocation preimages of A (shachain, section 5, first index 2^64-1):");
    let mut store = ShachainStore::new();
    for n in 0..4 {
        let preimage = a_secrets.preimage(n);
        println!(
            "  commitment {n}: index {:#018x}  hash {}  preimage {}",
            RevocationSecrets::index(n),
            a_secrets.hash(n),
            hex(&preimage.0)
        );
        store.insert(RevocationSecrets::index(n), preimage.0).expect("A's secrets are consistent");
    }
    println!("  B's store after 4 revocations: {} entries", store.len());

    let fee = commitment_fee(1112, 2);
    println!("\nFee example of section 3.6: {} bytes at 1112 sat/kB -> {} sat", commitment_bytecount(2), fee.to_sat());
    let split = split_fee(fee, Amount::from_sat(10_000), Amount::from_sat(150));
    println!(
        "  split between 10000 sat and 150 sat: local pays {} sat, remote pays {} sat; \
         outputs {} sat and {} (dust, left out)",
        split.local_paid.to_sat(),
        split.remote_paid.to_sat(),
        split.local.to_sat(),
        if split.remote_output().is_none() { "none" } else { "one" }
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
