//! The wire codec: golden encodings, round trips, every rejection rule, and
//! decoding arbitrary bytes without panicking.

mod common;

use std::collections::HashMap;

use bitcoin::absolute;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{Amount, Txid};
use common::{pb, pubkey, read_hex_vector, sig};
use paychan::wire::frame::{encode_frame, write_frame, FrameDecoder, FrameError, HEADER_LEN};
use paychan::wire::{self, bounded_error_text, DecodeErrorKind, EncodeError, Message, MAX_ERROR_TEXT, MAX_PKT_LEN};
use paychan::wire::{
    AnchorOffer, Authenticate, CloseSignature, ErrorMessage, OpenAnchor, OpenChannel, OpenCommitSig, UpdateAddHtlc,
    UpdateCommit, UpdateFailHtlc, UpdateFee, UpdateFulfillHtlc, UpdateRevocation,
};
use paychan::{Delay, HtlcMsat, Preimage};
use proptest::prelude::*;

/// The compact signature r = 1, s = 2 (valid and low-S).
fn sig_r1_s2() -> Signature {
    let mut compact = [0u8; 64];
    compact[31] = 1;
    compact[63] = 2;
    Signature::from_compact(&compact).unwrap()
}

fn vector(name: &str) -> Vec<u8> {
    read_hex_vector(&format!("{}/tests/vectors/wire_{name}.hex", env!("CARGO_MANIFEST_DIR")))
}

/// Each golden file was assembled by hand; the crate must decode it to the
/// message described in its header and encode that message to the same bytes.
#[test]
fn golden_encodings() {
    let cases = [
        ("update_fee", Message::UpdateFee(UpdateFee { fee_rate: 1000 })),
        (
            "update_add_htlc",
            Message::UpdateAddHtlc(UpdateAddHtlc {
                id: 1,
                amount: HtlcMsat::from_msat(50_000),
                r_hash: sha256::Hash::from_byte_array(core::array::from_fn(|i| i as u8 + 1)),
                expiry: absolute::LockTime::from_height(500_000).unwrap(),
                route: b"route".to_vec(),
            }),
        ),
        (
            "open_channel",
            Message::OpenChannel(Box::new(OpenChannel {
                delay: Delay::Blocks(144),
                revocation_hash: sha256::Hash::from_byte_array([0x11; 32]),
                next_revocation_hash: sha256::Hash::from_byte_array([0x22; 32]),
                commit_key: pubkey(1),
                final_key: pubkey(2),
                anch: AnchorOffer::WillCreate,
                min_depth: 3,
                initial_fee_rate: 10_000,
            })),
        ),
        ("update_commit", Message::UpdateCommit(UpdateCommit { sig: sig_r1_s2() })),
        (
            "close_signature",
            Message::CloseSignature(CloseSignature { close_fee: Amount::from_sat(4000), sig: sig_r1_s2() }),
        ),
        ("error", Message::Error(ErrorMessage { problem: Some("anchor spent".into()) })),
        ("open_complete", Message::OpenComplete),
    ];
    for (name, msg) in cases {
        let bytes = vector(name);
        assert_eq!(wire::decode(&bytes).as_ref(), Ok(&msg), "{name}: decode");
        assert_eq!(wire::encode(&msg).unwrap(), bytes, "{name}: encode");
    }
}

// ---------------------------------------------------------------------------
// Strategies for every message.
// ---------------------------------------------------------------------------

fn hash() -> impl Strategy<Value = sha256::Hash> {
    any::<[u8; 32]>().prop_map(sha256::Hash::from_byte_array)
}

fn key() -> impl Strategy<Value = bitcoin::CompressedPublicKey> {
    (1u64..u64::MAX).prop_map(pubkey)
}

fn signature() -> impl Strategy<Value = Signature> {
    (1u64..1000, any::<[u8; 32]>()).prop_map(|(k, m)| sig(k, m))
}

fn delay() -> impl Strategy<Value = Delay> {
    prop_oneof![any::<u16>().prop_map(Delay::Blocks), (0..=Delay::MAX_SECONDS).prop_map(Delay::Seconds)]
}

fn expiry() -> impl Strategy<Value = absolute::LockTime> {
    prop_oneof![
        (0u32..500_000_000).prop_map(|h| absolute::LockTime::from_height(h).unwrap()),
        (500_000_000u32..=u32::MAX).prop_map(|t| absolute::LockTime::from_time(t).unwrap()),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (key(), signature())
            .prop_map(|(node_id, session_sig)| Message::Authenticate(Box::new(Authenticate { node_id, session_sig }))),
        (delay(), hash(), hash(), key(), key(), any::<bool>(), any::<u32>(), any::<u32>()).prop_map(
            |(
                delay,
                revocation_hash,
                next_revocation_hash,
                commit_key,
                final_key,
                will,
                min_depth,
                initial_fee_rate,
            )| {
                Message::OpenChannel(Box::new(OpenChannel {
                    delay,
                    revocation_hash,
                    next_revocation_hash,
                    commit_key,
                    final_key,
                    anch: if will { AnchorOffer::WillCreate } else { AnchorOffer::WontCreate },
                    min_depth,
                    initial_fee_rate,
                }))
            }
        ),
        (any::<[u8; 32]>(), any::<u32>(), any::<u64>(), signature()).prop_map(
            |(txid, output_index, amount, commit_sig)| {
                Message::OpenAnchor(Box::new(OpenAnchor {
                    txid: Txid::from_byte_array(txid),
                    output_index,
                    amount: Amount::from_sat(amount),
                    commit_sig,
                }))
            }
        ),
        signature().prop_map(|sig| Message::OpenCommitSig(OpenCommitSig { sig })),
        Just(Message::OpenComplete),
        (any::<u64>(), any::<u32>(), hash(), expiry(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(id, amount, r_hash, expiry, route)| Message::UpdateAddHtlc(UpdateAddHtlc {
                id,
                amount: HtlcMsat::from_msat(amount),
                r_hash,
                expiry,
                route,
            })
        ),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(id, r)| Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id, r: Preimage(r) })),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(id, reason)| Message::UpdateFailHtlc(UpdateFailHtlc { id, reason })),
        signature().prop_map(|sig| Message::UpdateCommit(UpdateCommit { sig })),
        (any::<[u8; 32]>(), hash()).prop_map(|(p, next_revocation_hash)| Message::UpdateRevocation(UpdateRevocation {
            revocation_preimage: Preimage(p),
            next_revocation_hash
        })),
        any::<u32>().prop_map(|fee_rate| Message::UpdateFee(UpdateFee { fee_rate })),
        Just(Message::CloseClearing),
        (any::<u64>(), signature())
            .prop_map(|(fee, sig)| Message::CloseSignature(CloseSignature { close_fee: Amount::from_sat(fee), sig })),
        proptest::option::of(".{0,40}").prop_map(|problem| Message::Error(ErrorMessage { problem })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every message survives encode then decode unchanged, and re-encodes to
    /// the same bytes (what retransmission relies on).
    #[test]
    fn round_trip(msg in message()) {
        let bytes = wire::encode(&msg).unwrap();
        let back = wire::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(wire::encode(&back).unwrap(), bytes);
    }

    /// R1-c: every field number the encoder writes is declared in the proto
    /// file, checked by an independent reading of proto/paychan.proto.
    #[test]
    fn encoder_writes_only_declared_fields(msg in message()) {
        let schema = ProtoText::load();
        let bytes = wire::encode(&msg).unwrap();
        // R1-c
        prop_assert_eq!(schema.undeclared_fields("pkt", &bytes), Vec::<String>::new());
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = wire::decode(&bytes);
    }

    /// Valid encodings with bytes flipped, cut or inserted never panic the
    /// decoder, and whatever it accepts re-encodes and decodes to itself.
    #[test]
    fn mutated_encodings_never_panic(msg in message(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4)) {
        let mut bytes = wire::encode(&msg).unwrap();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] ^= byte | 1,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
        }
        if let Ok(decoded) = wire::decode(&bytes) {
            prop_assert_eq!(wire::decode(&wire::encode(&decoded).unwrap()), Ok(decoded));
        }
    }

    /// The frame decoder yields the same frames however the stream is cut.
    #[test]
    fn frames_survive_any_chunking(msgs in proptest::collection::vec(message(), 1..6), cuts in proptest::collection::vec(1usize..40, 1..50)) {
        let mut stream = Vec::new();
        for (ack, m) in msgs.iter().enumerate() {
            encode_frame(ack as u64, m, &mut stream).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            dec.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(frame) = dec.next_frame().unwrap() {
                got.push(frame);
            }
        }
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert_eq!(got.len(), msgs.len());
        for (i, (frame, m)) in got.iter().zip(&msgs).enumerate() {
            prop_assert_eq!(frame.acknowledge, i as u64);
            prop_assert_eq!(&frame.message, m);
        }
    }
}

// ---------------------------------------------------------------------------
// Rejections, on inputs built by hand.
// ---------------------------------------------------------------------------

fn update_fee_body(extra: &[u8]) -> Vec<u8> {
    pb::msg(&[pb::uint(1, 1000), extra.to_vec()])
}

#[test]
fn unknown_odd_field_is_ignored() {
    // R1-a: field 3 (odd) inside update_fee is skipped, the message accepted.
    let bytes = pb::pkt(8, &update_fee_body(&pb::uint(3, 7)));
    assert_eq!(wire::decode(&bytes), Ok(Message::UpdateFee(UpdateFee { fee_rate: 1000 })));

    // R1-a: also inside a nested helper message, with every wire type,
    // including a group with a nested group.
    let mut odd_everything = pb::msg(&[pb::fixed64(9, 1), pb::bytes(11, b"xyz"), pb::uint(13, 300)]);
    pb::key(15, 5, &mut odd_everything); // fixed32
    odd_everything.extend_from_slice(&[1, 2, 3, 4]);
    pb::key(17, 3, &mut odd_everything); // start group 17
    pb::key(19, 3, &mut odd_everything); // start group 19
    odd_everything.extend(pb::uint(21, 1));
    pb::key(19, 4, &mut odd_everything); // end group 19
    pb::key(17, 4, &mut odd_everything); // end group 17
    let mut commit = pb::signature(&sig_r1_s2().serialize_compact());
    commit.extend_from_slice(&odd_everything);
    let bytes = pb::pkt(5, &pb::bytes(1, &commit));
    assert_eq!(wire::decode(&bytes), Ok(Message::UpdateCommit(UpdateCommit { sig: sig_r1_s2() })));
}

#[test]
fn unknown_even_field_is_rejected() {
    let bytes = pb::pkt(8, &update_fee_body(&pb::uint(2, 7)));
    let err = wire::decode(&bytes).unwrap_err();
    // R1-b
    assert_eq!(err.kind(), &DecodeErrorKind::UnknownEvenField(2));
    assert_eq!((err.message(), err.field(), err.rule()), ("update_fee", "", Some("R1-b")));

    // R1-b: inside a nested message the path names the field.
    let mut hash = pb::hash(&[0; 32]);
    hash.extend(pb::uint(6, 1));
    let fulfill = pb::msg(&[pb::uint(1, 4), pb::bytes(2, &hash)]);
    let err = wire::decode(&pb::pkt(3, &fulfill)).unwrap_err();
    assert_eq!((err.message(), err.field()), ("update_fulfill_htlc", "r"));
    assert_eq!(err.kind(), &DecodeErrorKind::UnknownEvenField(6));
    assert_eq!(err.to_string(), "update_fulfill_htlc.r: unknown even field 6 (R1-b)");
}

#[test]
fn unknown_pkt_variants() {
    // R1-b: an unknown even message type fails.
    let err = wire::decode(&pb::pkt(10, &[])).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::UnknownEvenField(10));
    assert_eq!(err.message(), "pkt");
    // R1-a: an unknown odd one is decoded as a message to ignore.
    match wire::decode(&pb::pkt(11, b"\x08\x01")) {
        Ok(Message::Unknown(u)) => assert_eq!(u.number(), 11),
        other => panic!("expected an ignorable message, got {other:?}"),
    }
    // R1-a: next to a known message, an unknown odd member is ignored.
    let mut both = pb::pkt(8, &update_fee_body(&[]));
    both.extend(pb::pkt(11, &[]));
    assert_eq!(wire::decode(&both), Ok(Message::UpdateFee(UpdateFee { fee_rate: 1000 })));
    // An empty pkt or two messages in one are malformed.
    assert_eq!(wire::decode(&[]).unwrap_err().kind(), &DecodeErrorKind::Empty);
    let mut two = pb::pkt(8, &update_fee_body(&[]));
    two.extend(pb::pkt(30, &[]));
    assert_eq!(wire::decode(&two).unwrap_err().kind(), &DecodeErrorKind::OneofConflict);
}

#[test]
fn missing_required_fields_are_rejected() {
    // R1-d: update_fee without fee_rate (prost alone would read 0).
    let err = wire::decode(&pb::pkt(8, &[])).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::MissingRequired);
    assert_eq!((err.message(), err.field(), err.rule()), ("update_fee", "fee_rate", Some("R1-d")));

    // R1-d: a missing word of a nested hash is named by its path.
    let hash = pb::msg(&[pb::fixed64(1, 0), pb::fixed64(2, 0), pb::fixed64(4, 0)]);
    let rev = pb::msg(&[pb::bytes(1, &hash), pb::bytes(2, &pb::hash(&[0; 32]))]);
    let err = wire::decode(&pb::pkt(6, &rev)).unwrap_err();
    assert_eq!((err.message(), err.field()), ("update_revocation", "revocation_preimage.c"));
    assert_eq!(err.kind(), &DecodeErrorKind::MissingRequired);

    // R1-d: a locktime with neither member set.
    let add = pb::msg(&[
        pb::uint(1, 0),
        pb::uint(2, 1),
        pb::bytes(3, &pb::hash(&[0; 32])),
        pb::bytes(4, &[]),
        pb::bytes(5, &pb::bytes(1, b"")),
    ]);
    let err = wire::decode(&pb::pkt(2, &add)).unwrap_err();
    assert_eq!((err.message(), err.field(), err.rule()), ("update_add_htlc", "expiry", Some("R1-d")));

    // The optional min_depth may be absent and reads as 0.
    let open = open_channel_body(&pubkey(1).to_bytes(), false);
    match wire::decode(&pb::pkt(20, &open)) {
        Ok(Message::OpenChannel(o)) => assert_eq!(o.min_depth, 0),
        other => panic!("{other:?}"),
    }
}

/// An open_channel body whose commit_key is `commit_key` (raw bytes).
fn open_channel_body(commit_key: &[u8], with_min_depth: bool) -> Vec<u8> {
    let mut fields = vec![
        pb::bytes(1, &pb::uint(2, 144)),
        pb::bytes(2, &pb::hash(&[1; 32])),
        pb::bytes(3, &pb::bytes(1, commit_key)),
        pb::bytes(4, &pb::bytes(1, &pubkey(2).to_bytes())),
        pb::uint(5, 2),
        pb::uint(7, 5000),
        pb::bytes(8, &pb::hash(&[2; 32])),
    ];
    if with_min_depth {
        fields.push(pb::uint(6, 1));
    }
    pb::msg(&fields)
}

#[test]
fn bad_public_keys_are_rejected() {
    let good = pubkey(1).to_bytes();
    let uncompressed = pubkey(1).0.serialize_uncompressed();
    // x = p, the field size: not a coordinate at all.
    let mut not_on_curve = [0xff; 33];
    not_on_curve[0] = 0x02;
    not_on_curve[28..].copy_from_slice(&[0xfe, 0xff, 0xff, 0xfc, 0x2f]);
    let mut bad_prefix = good;
    bad_prefix[0] = 0x04;
    let short = &good[..32];
    for (what, key) in [
        ("uncompressed", &uncompressed[..]),
        ("not on curve", &not_on_curve[..]),
        ("prefix 04", &bad_prefix[..]),
        ("32 bytes", short),
    ] {
        let err = wire::decode(&pb::pkt(20, &open_channel_body(key, true))).expect_err(what);
        // R2.1-e
        assert_eq!(err.kind(), &DecodeErrorKind::InvalidPublicKey, "{what}");
        assert_eq!((err.message(), err.field(), err.rule()), ("open_channel", "commit_key", Some("R2.1-e")), "{what}");
    }
    // R2.1-e: the good key is accepted.
    assert!(wire::decode(&pb::pkt(20, &open_channel_body(&good, true))).is_ok());
}

#[test]
fn high_s_and_invalid_signatures_are_rejected() {
    // secp256k1 order n; n - 1 is a valid but high S.
    let n_minus_1: [u8; 32] = hex32("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140");
    let mut compact = [0u8; 64];
    compact[31] = 1;
    compact[32..].copy_from_slice(&n_minus_1);
    let err = wire::decode(&pb::pkt(5, &pb::bytes(1, &pb::signature(&compact)))).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::HighS);
    assert_eq!((err.message(), err.field()), ("update_commit", "sig"));
    // The boundary: S = (n - 1) / 2 is the largest low S, one more is high.
    let half: [u8; 32] = hex32("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0");
    compact[32..].copy_from_slice(&half);
    assert!(wire::decode(&pb::pkt(5, &pb::bytes(1, &pb::signature(&compact)))).is_ok());
    compact[63] += 1;
    let err = wire::decode(&pb::pkt(5, &pb::bytes(1, &pb::signature(&compact)))).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::HighS);

    // R = n is not below the order.
    let mut overflow = [0u8; 64];
    overflow[..32].copy_from_slice(&hex32("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"));
    overflow[63] = 1;
    let err = wire::decode(&pb::pkt(22, &pb::bytes(1, &pb::signature(&overflow)))).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::InvalidSignature);
    assert_eq!((err.message(), err.field()), ("open_commit_sig", "sig"));
}

fn hex32(s: &str) -> [u8; 32] {
    core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

#[test]
fn truncated_and_malformed_input_is_rejected() {
    let full = wire::encode(&Message::UpdateFee(UpdateFee { fee_rate: 1000 })).unwrap();
    for cut in 1..full.len() {
        let err = wire::decode(&full[..cut]).unwrap_err();
        assert!(
            matches!(err.kind(), DecodeErrorKind::Truncated | DecodeErrorKind::MissingRequired),
            "cut at {cut}: {err}"
        );
    }
    // A known field with the wrong wire type.
    let err = wire::decode(&pb::pkt(8, &pb::fixed64(1, 1000))).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::WrongWireType { expected: 0, found: 1 });
    // A uint32 that does not fit in 32 bits.
    let err = wire::decode(&pb::pkt(8, &pb::uint(1, 1 << 32))).unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::OutOfRange(_)));
    // A field twice.
    let err = wire::decode(&pb::pkt(8, &pb::msg(&[pb::uint(1, 1), pb::uint(1, 2)]))).unwrap_err();
    assert_eq!((err.kind(), err.field()), (&DecodeErrorKind::DuplicateField, "fee_rate"));
    // An 11-byte varint.
    let err =
        wire::decode(&[0x42, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadVarint);
    // An error whose text is not UTF-8 is still an error message (R6.3-b:
    // it must not be answered with an error), its text read lossily.
    let got = wire::decode(&pb::pkt(40, &pb::bytes(1, &[b'o', b'k', 0xff]))).unwrap();
    assert_eq!(got, Message::Error(ErrorMessage { problem: Some("ok\u{fffd}".into()) }));
    // An enum value beyond 32 bits is refused, not truncated.
    let mut open = open_channel_body(&pubkey(1).to_bytes(), true);
    let at = open.windows(2).position(|w| w == [0x28, 0x02]).unwrap();
    open.splice(at + 1..at + 2, [0x81, 0x80, 0x80, 0x80, 0x10]); // 2^32 + 1
    let err = wire::decode(&pb::pkt(20, &open)).unwrap_err();
    assert_eq!(err.field(), "anch");
    assert!(matches!(err.kind(), DecodeErrorKind::OutOfRange(_)));
    // Lock times that no transaction could carry.
    let add = |expiry: Vec<u8>| {
        pb::pkt(
            2,
            &pb::msg(&[
                pb::uint(1, 0),
                pb::uint(2, 1),
                pb::bytes(3, &pb::hash(&[0; 32])),
                pb::bytes(4, &expiry),
                pb::bytes(5, &pb::bytes(1, b"")),
            ]),
        )
    };
    assert_eq!(wire::decode(&add(pb::uint(2, 500_000_000))).unwrap_err().field(), "expiry.blocks");
    assert_eq!(wire::decode(&add(pb::uint(1, 499_999_999))).unwrap_err().field(), "expiry.seconds");
    let mut both = pb::uint(1, 600_000_000);
    both.extend(pb::uint(2, 10));
    assert_eq!(wire::decode(&add(both)).unwrap_err().kind(), &DecodeErrorKind::OneofConflict);
    // An anch value that is not declared.
    let mut open = open_channel_body(&pubkey(1).to_bytes(), true);
    let at = open.windows(2).position(|w| w == [0x28, 0x02]).unwrap();
    open[at + 1] = 3;
    let err = wire::decode(&pb::pkt(20, &open)).unwrap_err();
    assert_eq!((err.field(), err.kind()), ("anch", &DecodeErrorKind::UnknownEnumValue(3)));
}

// ---------------------------------------------------------------------------
// Field keys and length prefixes are 32-bit varints of at most 5 bytes.
// ---------------------------------------------------------------------------

/// `update_fee { fee_rate: 1000 }` assembled byte by byte: the `pkt` key of
/// field 8, wire type 2 is 8 << 3 | 2 = 0x42; the body is key 0x08 (field 1,
/// varint) and 1000 = 0x3e8 as the varint `e8 07`, 3 bytes in all.
const UPDATE_FEE_BODY: [u8; 3] = [0x08, 0xe8, 0x07];

fn update_fee_1000() -> Result<Message, wire::DecodeError> {
    Ok(Message::UpdateFee(UpdateFee { fee_rate: 1000 }))
}

/// `parts` concatenated.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn keys_and_lengths_longer_than_five_bytes_are_refused() {
    // The minimal encoding, for reference.
    assert_eq!(wire::decode(&cat(&[&[0x42, 0x03], &UPDATE_FEE_BODY])), update_fee_1000());

    // The pkt key 0x42 padded to 6 bytes with continuation bytes.
    let err = wire::decode(&cat(&[&[0xc2, 0x80, 0x80, 0x80, 0x80, 0x00, 0x03], &UPDATE_FEE_BODY])).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadKeyOrLength);
    assert_eq!((err.message(), err.field(), err.rule()), ("pkt", "", None));
    // ... and to the full 10 bytes a uint64 may take.
    let ten = [0xc2, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x03];
    let err = wire::decode(&cat(&[&ten, &UPDATE_FEE_BODY])).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadKeyOrLength);

    // The key 0x08 inside update_fee in 6 bytes: the error names the message.
    let err = wire::decode(&[0x42, 0x08, 0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0xe8, 0x07]).unwrap_err();
    assert_eq!((err.kind(), err.message(), err.field()), (&DecodeErrorKind::BadKeyOrLength, "update_fee", ""));

    // The body length 3 in 6 bytes.
    let err = wire::decode(&cat(&[&[0x42, 0x83, 0x80, 0x80, 0x80, 0x80, 0x00], &UPDATE_FEE_BODY])).unwrap_err();
    assert_eq!((err.kind(), err.message()), (&DecodeErrorKind::BadKeyOrLength, "update_fee"));

    // The length of an unknown odd field (R1-a would skip it) in 6 bytes:
    // field 3, wire type 2 is key 0x1a; length 1 padded, then one byte.
    let body = cat(&[&UPDATE_FEE_BODY, &[0x1a, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 0x55]]);
    let err = wire::decode(&cat(&[&[0x42, body.len() as u8], &body])).unwrap_err();
    assert_eq!((err.kind(), err.message()), (&DecodeErrorKind::BadKeyOrLength, "update_fee"));
    // R1-a: the same field with its length in one byte is skipped.
    let body = cat(&[&UPDATE_FEE_BODY, &[0x1a, 0x01, 0x55]]);
    assert_eq!(wire::decode(&cat(&[&[0x42, body.len() as u8], &body])), update_fee_1000());

    // The key of an unknown field inside an unknown group (field 5, start
    // 0x2b; field 7 varint, key 0x38 in 6 bytes; end 0x2c) is refused too.
    let body = cat(&[&UPDATE_FEE_BODY, &[0x2b, 0xb8, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 0x2c]]);
    let err = wire::decode(&cat(&[&[0x42, body.len() as u8], &body])).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadKeyOrLength);
    let body = cat(&[&UPDATE_FEE_BODY, &[0x2b, 0x38, 0x01, 0x2c]]);
    assert_eq!(wire::decode(&cat(&[&[0x42, body.len() as u8], &body])), update_fee_1000());
}

#[test]
fn five_byte_keys_and_lengths_must_fit_32_bits() {
    // Length 3 + 2^32 (the fifth byte 0x10 carries bit 32): it does not fit
    // in 32 bits, so it is malformed rather than merely longer than the input.
    let err = wire::decode(&cat(&[&[0x42, 0x83, 0x80, 0x80, 0x80, 0x10], &UPDATE_FEE_BODY])).unwrap_err();
    assert_eq!((err.kind(), err.message()), (&DecodeErrorKind::BadKeyOrLength, "update_fee"));
    // Every bit of the 5 bytes set: 2^35 - 1.
    let err = wire::decode(&[0x42, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x08]).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadKeyOrLength);
    // 2^32 - 1 fits in 32 bits: only the input is too short for it.
    let err = wire::decode(&[0x42, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x08]).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::Truncated);

    // The key 0x42 + 2^32 in 5 bytes.
    let err = wire::decode(&cat(&[&[0xc2, 0x80, 0x80, 0x80, 0x10, 0x03], &UPDATE_FEE_BODY])).unwrap_err();
    assert_eq!((err.kind(), err.message()), (&DecodeErrorKind::BadKeyOrLength, "pkt"));
    // The largest key that fits, 2^32 - 1: field 2^29 - 1 with wire type 7,
    // which protobuf does not define.
    let err = wire::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap_err();
    assert_eq!(err.kind(), &DecodeErrorKind::BadWireType(7));
}

/// Google's protobuf accepts a key or length padded with continuation bytes
/// as long as it stays within 5 bytes, and so does this decoder: the padding
/// is bounded and the value is the same. (The encoder always writes the
/// minimal form.)
#[test]
fn padded_keys_and_lengths_within_five_bytes_are_accepted() {
    // The pkt key 0x42 in 2, 3, 4 and 5 bytes.
    for key in [&[0xc2, 0x00][..], &[0xc2, 0x80, 0x00], &[0xc2, 0x80, 0x80, 0x00], &[0xc2, 0x80, 0x80, 0x80, 0x00]] {
        assert_eq!(wire::decode(&cat(&[key, &[0x03], &UPDATE_FEE_BODY])), update_fee_1000(), "{key:02x?}");
    }
    // The body length 3 in 5 bytes.
    assert_eq!(wire::decode(&cat(&[&[0x42, 0x83, 0x80, 0x80, 0x80, 0x00], &UPDATE_FEE_BODY])), update_fee_1000());
    // The field key 0x08 in 5 bytes inside the body.
    assert_eq!(wire::decode(&[0x42, 0x07, 0x88, 0x80, 0x80, 0x80, 0x00, 0xe8, 0x07]), update_fee_1000());
    // Re-encoding gives the minimal form.
    assert_eq!(wire::encode(&update_fee_1000().unwrap()).unwrap(), cat(&[&[0x42, 0x03], &UPDATE_FEE_BODY]));
}

#[test]
fn uint64_values_keep_ten_bytes() {
    // update_fulfill_htlc (pkt field 3, key 0x1a) with id = 2^64 - 1 in the
    // ten bytes `ff ff ff ff ff ff ff ff ff 01`, and r = 32 zero bytes.
    let mut body = vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    body.extend(pb::bytes(2, &pb::hash(&[0; 32])));
    let got = wire::decode(&cat(&[&[0x1a, body.len() as u8], &body]));
    assert_eq!(got, Ok(Message::UpdateFulfillHtlc(UpdateFulfillHtlc { id: u64::MAX, r: Preimage([0; 32]) })));
    // R1-a: an unknown odd varint field (3, key 0x18) with a 10-byte value is
    // skipped.
    let body = cat(&[&UPDATE_FEE_BODY, &[0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]]);
    assert_eq!(wire::decode(&cat(&[&[0x42, body.len() as u8], &body])), update_fee_1000());
}

// ---------------------------------------------------------------------------
// Error text is bounded so that whatever decodes re-encodes.
// ---------------------------------------------------------------------------

/// An `error` pkt (field 40, wire type 2: key 322 = `c2 02`) whose `problem`
/// (field 1) holds `text`, assembled by the test's own protobuf writer.
fn error_pkt(text: &[u8]) -> Vec<u8> {
    let bytes = pb::pkt(40, &pb::bytes(1, text));
    assert_eq!(&bytes[..2], &[0xc2, 0x02]);
    bytes
}

/// What a receiver keeps of `text`, written independently of the crate:
/// `String::from_utf8_lossy`, then the longest prefix of at most 1024 bytes
/// that ends on a character.
fn reference_error_text(text: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(text);
    let mut end = 0;
    for (at, c) in lossy.char_indices() {
        if at + c.len_utf8() > 1024 {
            break;
        }
        end = at + c.len_utf8();
    }
    lossy[..end].to_string()
}

#[test]
fn a_long_invalid_error_text_decodes_and_re_encodes() {
    assert_eq!(MAX_ERROR_TEXT, 1024);
    // 65,000 bytes of 0xff: each is an invalid sequence of its own and reads
    // as U+FFFD, 3 bytes of UTF-8. 195,000 bytes would not re-encode within
    // 65,536; 1024 / 3 = 341 whole characters are kept (1023 bytes).
    let bytes = error_pkt(&[0xff; 65_000]);
    assert!(bytes.len() <= MAX_PKT_LEN);
    let got = wire::decode(&bytes).unwrap();
    // R6.3-b: still an error message, so it is not answered with one.
    let Message::Error(ErrorMessage { problem: Some(text) }) = &got else { panic!("{got:?}") };
    assert_eq!(text, &"\u{fffd}".repeat(341));
    let again = wire::encode(&got).unwrap();
    assert_eq!(again, error_pkt("\u{fffd}".repeat(341).as_bytes()));
    assert_eq!(wire::decode(&again).as_ref(), Ok(&got));

    // Valid text longer than the limit keeps its first 1024 bytes...
    let got = wire::decode(&error_pkt(&[b'x'; 5000])).unwrap();
    assert_eq!(got, Message::Error(ErrorMessage { problem: Some("x".repeat(1024)) }));
    // ... cut before a character that would straddle byte 1024: 'a' then
    // 'é' (`c3 a9`) a thousand times start characters at 0 and odd offsets.
    let text = format!("a{}", "é".repeat(1000));
    let got = wire::decode(&error_pkt(text.as_bytes())).unwrap();
    assert_eq!(got, Message::Error(ErrorMessage { problem: Some(format!("a{}", "é".repeat(511))) }));
    // A text of exactly 1024 bytes is kept whole.
    let got = wire::decode(&error_pkt(&[b'y'; 1024])).unwrap();
    assert_eq!(got, Message::Error(ErrorMessage { problem: Some("y".repeat(1024)) }));
}

#[test]
fn error_text_above_the_limit_is_not_sent() {
    let long = Message::Error(ErrorMessage { problem: Some("z".repeat(1025)) });
    assert_eq!(wire::encode(&long), Err(EncodeError::ErrorTextTooLong { len: 1025, max: 1024 }));
    let mut out = Vec::new();
    assert!(encode_frame(0, &long, &mut out).is_err());
    assert!(out.is_empty());
    // bounded_error_text makes any text sendable.
    assert_eq!(bounded_error_text(&"z".repeat(1025)), "z".repeat(1024));
    assert_eq!(bounded_error_text("short"), "short");
    // '€' is 3 bytes: 342 of them are 1026 bytes, 341 fit.
    assert_eq!(bounded_error_text(&"€".repeat(342)), "€".repeat(341));
    // A 4-byte character straddling the limit: 1022 bytes, then U+1F600.
    let text = format!("{}\u{1f600}", "q".repeat(1022));
    assert_eq!(bounded_error_text(&text), "q".repeat(1022));
    let msg = Message::Error(ErrorMessage { problem: Some(bounded_error_text(&"€".repeat(5000))) });
    assert_eq!(wire::decode(&wire::encode(&msg).unwrap()), Ok(msg));
}

proptest! {
    /// Whatever bytes an `error` carries, the decoded text is what the
    /// reference keeps, and it re-encodes and decodes to itself.
    #[test]
    fn any_error_text_round_trips(
        text in proptest::collection::vec(prop_oneof![any::<u8>(), 0x80u8..=0xff, Just(b'a'), Just(0xe2)], 0..4000)
    ) {
        let got = wire::decode(&error_pkt(&text)).unwrap();
        // R6.3-b
        let Message::Error(ErrorMessage { problem: Some(kept) }) = &got else { panic!("{got:?}") };
        prop_assert_eq!(kept, &reference_error_text(&text));
        prop_assert!(kept.len() <= 1024);
        prop_assert_eq!(wire::decode(&wire::encode(&got).unwrap()), Ok(got.clone()));
    }

    /// bounded_error_text keeps the longest prefix within 1024 bytes.
    #[test]
    fn bounded_error_text_is_the_longest_prefix(text in "\\PC{0,1200}") {
        let cut = bounded_error_text(&text);
        prop_assert_eq!(&cut, &reference_error_text(text.as_bytes()));
        prop_assert!(text.starts_with(&cut));
    }
}

#[test]
fn oversized_input_is_rejected_up_front() {
    let big = vec![0u8; MAX_PKT_LEN + 1];
    assert_eq!(
        wire::decode(&big).unwrap_err().kind(),
        &DecodeErrorKind::TooLarge { len: MAX_PKT_LEN + 1, max: MAX_PKT_LEN }
    );

    // A frame header announcing 4 GiB fails before any body arrives.
    let mut dec = FrameDecoder::new();
    let mut header = 7u64.to_le_bytes().to_vec();
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    dec.push(&header);
    assert_eq!(dec.next_frame(), Err(FrameError::TooLarge { len: u64::from(u32::MAX) }));
    assert_eq!(dec.buffered(), 0);
    // After that the stream has no framing left.
    dec.push(&[0; HEADER_LEN]);
    assert_eq!(dec.next_frame(), Err(FrameError::Failed));
}

#[test]
fn a_bad_frame_body_does_not_lose_the_next_frame() {
    let mut stream = Vec::new();
    let body = pb::pkt(10, &[]);
    stream.extend_from_slice(&1u64.to_le_bytes());
    stream.extend_from_slice(&(body.len() as u32).to_le_bytes());
    stream.extend_from_slice(&body);
    encode_frame(2, &Message::CloseClearing, &mut stream).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&stream);
    assert!(matches!(dec.next_frame(), Err(FrameError::Decode(e)) if e.rule() == Some("R1-b")));
    let frame = dec.next_frame().unwrap().unwrap();
    assert_eq!((frame.acknowledge, frame.message), (2, Message::CloseClearing));
    assert_eq!(dec.next_frame(), Ok(None));
}

#[test]
fn frame_header_layout_is_ruling_d8() {
    let mut out = Vec::new();
    encode_frame(0x0102_0304_0506_0708, &Message::UpdateFee(UpdateFee { fee_rate: 1000 }), &mut out).unwrap();
    let body = vector("update_fee");
    assert_eq!(&out[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&out[8..12], &(body.len() as u32).to_le_bytes());
    assert_eq!(&out[12..], &body[..]);
    // Framing the message's bytes is the same frame.
    let mut again = Vec::new();
    write_frame(0x0102_0304_0506_0708, &body, &mut again).unwrap();
    assert_eq!(again, out);
}

#[test]
fn a_pkt_above_the_limit_is_not_framed() {
    let mut out = vec![7];
    let big = vec![0u8; MAX_PKT_LEN + 1];
    assert_eq!(
        write_frame(1, &big, &mut out),
        Err(EncodeError::TooLarge { name: "pkt", len: MAX_PKT_LEN + 1, max: MAX_PKT_LEN })
    );
    assert_eq!(out, [7], "left unchanged");
    // At the limit it is framed: the decoder takes it (and reports the
    // body, zeros, as not a pkt).
    write_frame(1, &big[..MAX_PKT_LEN], &mut out).unwrap();
    assert_eq!(out.len(), 1 + HEADER_LEN + MAX_PKT_LEN);
    let mut dec = FrameDecoder::new();
    dec.push(&out[1..]);
    assert!(matches!(dec.next_frame(), Err(FrameError::Decode(_))));
}

// ---------------------------------------------------------------------------
// An independent reading of the proto file, for R1-c.
// ---------------------------------------------------------------------------

/// Field numbers and message types per message, read from the proto text
/// with plain string handling (not through the crate or prost).
struct ProtoText {
    /// message name -> (field number -> type name)
    messages: HashMap<String, HashMap<u32, String>>,
}

impl ProtoText {
    fn load() -> Self {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/paychan.proto")).unwrap();
        let mut messages = HashMap::new();
        let mut stack: Vec<String> = Vec::new();
        for line in text.lines() {
            let line = line.split("//").next().unwrap().trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"message") || words.first() == Some(&"enum") || words.first() == Some(&"oneof") {
                let name = if words[0] == "oneof" { stack.last().unwrap().clone() } else { words[1].to_string() };
                stack.push(name);
                continue;
            }
            if line.starts_with('}') {
                stack.pop();
                continue;
            }
            if let Some(eq) = words.iter().position(|w| *w == "=") {
                let number: u32 = words[eq + 1].trim_end_matches(';').parse().unwrap_or(0);
                let ty = if eq >= 2 { words[eq - 2] } else { "" };
                if let Some(msg) = stack.last() {
                    messages.entry(msg.clone()).or_insert_with(HashMap::new).insert(number, ty.to_string());
                }
            }
        }
        ProtoText { messages }
    }

    /// Every (message, field number) in `bytes` that the proto text does not
    /// declare, recursing into message-typed fields.
    fn undeclared_fields(&self, message: &str, mut bytes: &[u8]) -> Vec<String> {
        let mut bad = Vec::new();
        let fields = &self.messages[message];
        while !bytes.is_empty() {
            let (key, rest) = read_varint(bytes);
            bytes = rest;
            let number = (key >> 3) as u32;
            let (body, rest) = match key & 7 {
                0 => (&[][..], read_varint(bytes).1),
                1 => bytes.split_at(8),
                2 => {
                    let (len, rest) = read_varint(bytes);
                    rest.split_at(len as usize)
                }
                w => panic!("encoder wrote wire type {w}"),
            };
            bytes = rest;
            match fields.get(&number) {
                None => bad.push(format!("{message}.{number}")),
                Some(ty) if self.messages.contains_key(ty) && key & 7 == 2 => {
                    bad.extend(self.undeclared_fields(ty, body));
                }
                Some(_) => {}
            }
        }
        bad
    }
}

fn read_varint(bytes: &[u8]) -> (u64, &[u8]) {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (v, &bytes[i + 1..]);
        }
    }
    panic!("unterminated varint");
}
