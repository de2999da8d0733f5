//! The one-way channel's messages (E3): hand-assembled encodings (not made
//! by the code under test) decode to the values they mean; the peer
//! protocol's odd/even and required-field rules hold (R1-a, R1-b, R1-d);
//! amounts above 21 million bitcoin (E5) and time lock times (E4) are
//! refused; every message round-trips.

mod common;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use common::pb;
use paychan::oneway::script::OutputKind;
use paychan::oneway::wire::{decode, encode, Code, Message, Policy, Refusal, SessionId};
use paychan::wire::DecodeErrorKind;
use proptest::prelude::*;

fn outpoint(txid: [u8; 32], vout: u64) -> Vec<u8> {
    pb::msg(&[pb::bytes(1, &txid), pb::uint(2, vout)])
}

#[test]
fn a_hand_assembled_invoice_decodes() {
    let body = pb::msg(&[
        pb::bytes(1, &outpoint([7; 32], 1)),
        pb::uint(2, 3),
        pb::uint(3, 1_000),
        pb::uint(4, 21_000),
        pb::bytes(5, &[0x00, 0x14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]),
    ]);
    let bytes = pb::pkt(12, &body);
    let m = decode(&bytes).unwrap();
    assert_eq!(
        m,
        Message::Invoice {
            channel_id: OutPoint { txid: Txid::from_byte_array([7; 32]), vout: 1 },
            invoice_id: 3,
            amount: Amount::from_sat(1_000),
            total: Amount::from_sat(21_000),
            payout_script: ScriptBuf::from_bytes(bytes[bytes.len() - 22..].to_vec()),
        }
    );
    // E3: the encoder writes the same bytes.
    assert_eq!(encode(&m), bytes);
}

#[test]
fn odd_and_even_unknown_fields_and_members() {
    let request = pb::msg(&[pb::bytes(1, b"regtest")]);
    // R1-a: an unknown odd field is ignored; an unknown odd member too.
    let mut odd = request.clone();
    odd.extend(pb::uint(7, 1));
    assert_eq!(decode(&pb::pkt(2, &odd)).unwrap(), Message::RequestChannel { network: "regtest".into() });
    assert_eq!(decode(&pb::pkt(99, &[])).unwrap(), Message::Unknown { number: 99 });
    // R1-b: an unknown even field or member is refused.
    let mut even = request.clone();
    even.extend(pb::uint(8, 1));
    assert!(matches!(decode(&pb::pkt(2, &even)).unwrap_err().kind(), DecodeErrorKind::UnknownEvenField(8)));
    assert!(matches!(decode(&pb::pkt(98, &[])).unwrap_err().kind(), DecodeErrorKind::UnknownEvenField(98)));
    // R1-d: a missing required field is refused.
    assert!(matches!(decode(&pb::pkt(2, &[])).unwrap_err().kind(), DecodeErrorKind::MissingRequired));
}

#[test]
fn amounts_above_21_million_bitcoin_and_time_lock_times_are_refused() {
    // E5
    let body = pb::msg(&[pb::bytes(1, &outpoint([7; 32], 0)), pb::uint(2, 1), pb::uint(3, 2_100_000_000_000_001)]);
    let err = decode(&pb::pkt(16, &body)).unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::OutOfRange(_)), "{err}");
    // E4
    let body =
        pb::msg(&[pb::bytes(1, &outpoint([7; 32], 0)), pb::uint(2, 1_000), pb::uint(3, 500_000_000), pb::uint(4, 100)]);
    let err = decode(&pb::pkt(8, &body)).unwrap_err();
    assert!(matches!(err.kind(), DecodeErrorKind::OutOfRange(_)), "{err}");
    // A txid of another length.
    let body =
        pb::msg(&[pb::bytes(1, &pb::msg(&[pb::bytes(1, &[1; 31]), pb::uint(2, 0)])), pb::uint(2, 1), pb::uint(3, 5)]);
    assert!(decode(&pb::pkt(16, &body)).is_err());
}

#[test]
fn refusal_codes_keep_their_numbers() {
    // Unknown codes survive as numbers; known ones map both ways.
    for n in 0..200 {
        assert_eq!(Code::from_u32(n).to_u32(), n);
    }
    assert_eq!(Code::FeeTooLow.to_u32(), 52);
    assert_eq!(Code::from_u32(21), Code::OutpointUsed);
}

fn message() -> impl Strategy<Value = Message> {
    let amount = (0u64..=2_100_000_000_000_000).prop_map(Amount::from_sat);
    let op = (any::<[u8; 32]>(), any::<u32>()).prop_map(|(t, vout)| OutPoint { txid: Txid::from_byte_array(t), vout });
    let height = (0u32..500_000_000).prop_map(|h| bitcoin::absolute::Height::from_consensus(h).unwrap());
    let bytes = proptest::collection::vec(any::<u8>(), 0..80);
    prop_oneof![
        "[a-z]{0,12}".prop_map(|network| Message::RequestChannel { network }),
        (any::<[u8; 16]>(), bytes.clone(), amount.clone(), amount.clone(), any::<u32>(), any::<bool>(), bytes.clone())
            .prop_map(|(s, key, min, max, d, p2sh, script)| Message::ChannelKey {
                session_id: SessionId(s),
                merchant_key: key,
                policy: Policy {
                    min_capacity: min,
                    max_capacity: max,
                    min_lock_delta: d,
                    max_lock_delta: d,
                    min_depth: d,
                    accept_margin: d,
                    settle_margin: d,
                    min_fee_rate: u64::from(d),
                    max_fee_rate: u64::from(d) * 2,
                    kind: if p2sh { OutputKind::P2sh } else { OutputKind::P2wsh },
                },
                payout_script: ScriptBuf::from_bytes(script),
            }),
        (any::<[u8; 16]>(), bytes.clone()).prop_map(|(s, psbt)| Message::Announce { session_id: SessionId(s), psbt }),
        (op.clone(), amount.clone(), height.clone(), height).prop_map(|(channel_id, capacity, locktime, deadline)| {
            Message::Accept { channel_id, capacity, locktime, deadline }
        }),
        (any::<u32>(), "[ -~]{0,40}", proptest::option::of(any::<u64>()))
            .prop_map(|(c, e, x)| Message::Reject(Refusal { code: Code::from_u32(c), explanation: e, expected: x })),
        (op.clone(), any::<u64>(), amount.clone(), amount.clone(), bytes.clone()).prop_map(
            |(channel_id, invoice_id, amount, total, s)| {
                Message::Invoice { channel_id, invoice_id, amount, total, payout_script: ScriptBuf::from_bytes(s) }
            }
        ),
        (op.clone(), any::<u64>(), bytes).prop_map(|(channel_id, invoice_id, psbt)| Message::Payment {
            channel_id,
            invoice_id,
            psbt
        }),
        (op.clone(), any::<u64>(), amount).prop_map(|(channel_id, invoice_id, total)| Message::PaymentAck {
            channel_id,
            invoice_id,
            total
        }),
        op.prop_map(|channel_id| Message::Close { channel_id, tx: None }),
        (any::<u32>(), "[ -~]{0,40}", any::<bool>()).prop_map(|(c, e, transient)| Message::Error {
            refusal: Refusal { code: Code::from_u32(c), explanation: e, expected: None },
            transient
        }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
    }
}
