//! The one-way channel's script and transactions (rulings E1, E2), proven by
//! Bitcoin Core's script interpreter: the script against hand-assembled
//! bytes, its parser against every malformed variant and random bytes, every
//! spending path of both output kinds with negative cases the interpreter
//! must reject, fees measured on really signed transactions, dust change
//! (E6), the announce and payment PSBTs through BIP 174 bytes, and golden
//! vectors.

mod common;

use bitcoin::consensus::serialize;
use bitcoin::hashes::{hash160, sha256, Hash};
use bitcoin::psbt::{self, Psbt, PsbtSighashType};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, CompressedPublicKey, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Witness,
};
use common::chain::{funding_tx, verify_input};
use common::{pubkey, secret};
use paychan::oneway::script::{ChannelScript, OutputKind, Party, ScriptError};
use paychan::oneway::tx::{
    dust_threshold, is_standard_payout, ChannelOutput, DustPolicy, TxError, MAX_SIGNATURE_SIZE, REFUND_SEQUENCE,
};
use paychan::tx::{InMemorySigner, KeyRole, Sighash, Signer, SignerError, SigningInput};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Fixture: the client A is 1·G, the merchant B is 3·G, T = 900000.
// ---------------------------------------------------------------------------

/// A signer whose one-way key `n` is the scalar `n`, so that the fixture's
/// keys are known points: `Oneway(1)` is the client, `Oneway(3)` the merchant.
struct Scalars;

fn scalar(role: KeyRole) -> u64 {
    match role {
        KeyRole::Oneway(n) => n,
        KeyRole::Commit => 1000,
        KeyRole::Final => 1001,
    }
}

impl Signer for Scalars {
    fn public_key(&self, role: KeyRole) -> CompressedPublicKey {
        pubkey(scalar(role))
    }
    fn sign(&self, input: &SigningInput<'_>) -> Result<Signature, SignerError> {
        Ok(common::sig(scalar(input.role), input.sighash.to_byte_array()))
    }
}

/// A signer that returns the high-S twin of every signature.
struct HighS;

impl Signer for HighS {
    fn public_key(&self, role: KeyRole) -> CompressedPublicKey {
        Scalars.public_key(role)
    }
    fn sign(&self, input: &SigningInput<'_>) -> Result<Signature, SignerError> {
        Ok(high_s(&Scalars.sign(input)?))
    }
}

const CLIENT: KeyRole = KeyRole::Oneway(1);
const MERCHANT: KeyRole = KeyRole::Oneway(3);
const STRANGER: KeyRole = KeyRole::Oneway(99);
const T: u32 = 900_000;
const CAPACITY: u64 = 1_000_000;

/// 1·G, 2·G and 3·G compressed, and 1·G uncompressed (well-known points,
/// typed in rather than computed).
const KEY_1: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const KEY_2: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
const KEY_3: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
const KEY_1_UNCOMPRESSED: &str = "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";

/// The E2 script for A = 1·G, B = 3·G, T = 900000 = 0x0dbba0, assembled by
/// hand: `<T>` is the 3-byte push `03 a0 bb 0d`.
fn hand_script() -> String {
    format!("63 03a0bb0d b1 75 21{KEY_1} ac 67 52 21{KEY_1} 21{KEY_3} 52 ae 68")
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn height(h: u32) -> absolute::Height {
    absolute::Height::from_consensus(h).unwrap()
}

fn channel_script() -> ChannelScript {
    ChannelScript::new(pubkey(1), pubkey(3), height(T)).unwrap()
}

/// The channel output of `kind`, funded at output 0 of a stand-in wallet
/// transaction, and that transaction.
fn channel(kind: OutputKind) -> (ChannelOutput, Transaction) {
    let script = channel_script();
    let funding = funding_tx(script.script_pubkey(kind), Amount::from_sat(CAPACITY));
    let out = ChannelOutput {
        outpoint: OutPoint { txid: funding.compute_txid(), vout: 0 },
        value: Amount::from_sat(CAPACITY),
        script,
        kind,
    };
    (out, funding)
}

const KINDS: [OutputKind; 2] = [OutputKind::P2wsh, OutputKind::P2sh];

/// Where payments go: the payee (the merchant's payout) and the client's
/// change: P2WPKH for P2WSH channels, P2PKH for P2SH ones (a chain without
/// segwit).
fn payee(kind: OutputKind) -> ScriptBuf {
    payout(kind, 50)
}
fn change(kind: OutputKind) -> ScriptBuf {
    payout(kind, 51)
}
fn payout(kind: OutputKind, n: u64) -> ScriptBuf {
    match kind {
        OutputKind::P2wsh => ScriptBuf::new_p2wpkh(&pubkey(n).wpubkey_hash()),
        OutputKind::P2sh => ScriptBuf::new_p2pkh(&bitcoin::PublicKey::from(pubkey(n)).pubkey_hash()),
    }
}

fn rate(sat_vb: u64) -> FeeRate {
    FeeRate::from_sat_per_vb(sat_vb).unwrap()
}

fn dust() -> DustPolicy {
    DustPolicy::default()
}

fn sats(n: u64) -> Amount {
    Amount::from_sat(n)
}

/// The digest of input 0, computed here with rust-bitcoin directly rather
/// than by the code under test.
fn digest(out: &ChannelOutput, tx: &Transaction) -> [u8; 32] {
    let script = ScriptBuf::from_bytes(hex(&hand_script()));
    assert_eq!(script, out.script.to_script());
    match out.kind {
        OutputKind::P2wsh => SighashCache::new(tx)
            .p2wsh_signature_hash(0, &script, out.value, EcdsaSighashType::All)
            .unwrap()
            .to_byte_array(),
        OutputKind::P2sh => SighashCache::new(tx).legacy_signature_hash(0, &script, 1).unwrap().to_byte_array(),
    }
}

/// A signature by `secret(n)` on input 0 of `tx` as it is now, DER + 01.
fn der(n: u64, out: &ChannelOutput, tx: &Transaction) -> Vec<u8> {
    bitcoin::ecdsa::Signature::sighash_all(common::sig(n, digest(out, tx))).serialize().to_vec()
}

/// A minimal push of `item` (MINIMALDATA), assembled by hand.
fn minimal_push(item: &[u8]) -> Vec<u8> {
    match item {
        [] => vec![0x00],
        [n @ 1..=16] => vec![0x50 + n],
        [0x81] => vec![0x4f],
        _ if item.len() <= 75 => [&[item.len() as u8][..], item].concat(),
        _ => [&[0x4c, item.len() as u8][..], item].concat(),
    }
}

/// Puts the stack `items` (bottom to top; the script last) into input 0:
/// as the witness (P2WSH) or as a scriptSig of minimal pushes (P2SH).
fn set_spend(tx: &mut Transaction, kind: OutputKind, items: &[Vec<u8>]) {
    match kind {
        OutputKind::P2wsh => {
            tx.input[0].script_sig = ScriptBuf::new();
            tx.input[0].witness = Witness::from_slice(items);
        }
        OutputKind::P2sh => {
            tx.input[0].script_sig = ScriptBuf::from_bytes(items.iter().flat_map(|i| minimal_push(i)).collect());
            tx.input[0].witness = Witness::new();
        }
    }
}

/// The high-S twin of `sig`: s replaced by n - s.
fn high_s(sig: &Signature) -> Signature {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae,
        0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
    ];
    let mut compact = sig.serialize_compact();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(compact[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        compact[32 + i] = d.rem_euclid(256) as u8;
    }
    Signature::from_compact(&compact).unwrap()
}

/// An honest payment of 400,000 sat at 10 sat/vB, signed by both and
/// finalised by the crate.
fn signed_payment(out: &ChannelOutput) -> Transaction {
    let mut tx = out.payment_tx(payee(out.kind), sats(400_000), change(out.kind), rate(10), &dust()).unwrap();
    let a = out.sign(&tx, &Scalars, CLIENT).unwrap();
    let b = out.sign(&tx, &Scalars, MERCHANT).unwrap();
    out.finalize_cooperative(&mut tx, &a, &b);
    tx
}

fn fee_of(out: &ChannelOutput, tx: &Transaction) -> Amount {
    out.value - tx.output.iter().map(|o| o.value).sum::<Amount>()
}

/// The least fee at `rate` for `vsize` vbytes: what Bitcoin Core asks for.
fn min_fee(rate: FeeRate, vsize: usize) -> Amount {
    sats((rate.to_sat_per_kwu() * 4 * vsize as u64).div_ceil(1000))
}

// ---------------------------------------------------------------------------
// The script (E2).
// ---------------------------------------------------------------------------

#[test]
fn the_script_is_e2_byte_for_byte() {
    let s = channel_script();
    // E2: OP_IF <T> OP_CLTV OP_DROP <A> OP_CHECKSIG OP_ELSE OP_2 <A> <B> OP_2
    // OP_CHECKMULTISIG OP_ENDIF, T a minimal push.
    assert_eq!(to_hex(s.to_script().as_bytes()), to_hex(&hex(&hand_script())));
    assert_eq!(s.to_script().len(), 115);
    assert_eq!((s.client(), s.merchant(), s.locktime()), (pubkey(1), pubkey(3), height(T)));
    // E1: the two output kinds.
    let script_hash = sha256::Hash::hash(&hex(&hand_script())).to_byte_array();
    assert_eq!(to_hex(s.script_pubkey(OutputKind::P2wsh).as_bytes()), format!("0020{}", to_hex(&script_hash)));
    let h160 = hash160::Hash::hash(&hex(&hand_script())).to_byte_array();
    assert_eq!(to_hex(s.script_pubkey(OutputKind::P2sh).as_bytes()), format!("a914{}87", to_hex(&h160)));
    assert_eq!(ChannelScript::parse(&s.to_script()), Ok(s));

    // E2: T is a minimal CScriptNum push (hand-encoded, as in
    // docs/transactions.md): OP_N up to 16, then the shortest push with a
    // sign byte where the top bit is set.
    for (t, push) in [
        (1, "51"),
        (16, "60"),
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (32_768, "03008000"),
        (8_388_608, "0400008000"),
        (499_999_999, "04ff64cd1d"),
    ] {
        let s = ChannelScript::new(pubkey(1), pubkey(3), height(t)).unwrap();
        let expected = format!("63 {push} b1 75 21{KEY_1} ac 67 52 21{KEY_1} 21{KEY_3} 52 ae 68");
        assert_eq!(to_hex(s.to_script().as_bytes()), to_hex(&hex(&expected)), "T = {t}");
        assert_eq!(ChannelScript::parse(&s.to_script()), Ok(s), "T = {t}");
    }

    // E2: A != B, 1 <= T.
    assert_eq!(ChannelScript::new(pubkey(1), pubkey(1), height(T)), Err(ScriptError::SameKeys));
    assert_eq!(ChannelScript::new(pubkey(1), pubkey(3), height(0)), Err(ScriptError::ZeroLocktime));
}

/// The fixture's script with `from` replaced by `to` (each written as in
/// [`hand_script`]).
fn mutated(from: &str, to: &str) -> ScriptBuf {
    let text = hand_script();
    assert!(text.contains(from), "{from}");
    ScriptBuf::from_bytes(hex(&text.replacen(from, to, 1)))
}

#[test]
fn parse_refuses_every_malformed_variant_with_its_own_error() {
    let parse = |s: ScriptBuf| ChannelScript::parse(&s);
    // E2: T must be a minimal push.
    assert_eq!(parse(mutated("03a0bb0d", "04a0bb0d00")), Err(ScriptError::NonMinimalLocktime));
    assert_eq!(parse(mutated("03a0bb0d", "4c03a0bb0d")), Err(ScriptError::NonMinimalLocktime));
    assert_eq!(parse(mutated("03a0bb0d", "0105")), Err(ScriptError::NonMinimalLocktime), "5 is OP_5");
    assert_eq!(parse(mutated("03a0bb0d", "0100")), Err(ScriptError::NonMinimalLocktime));
    // E2: 1 <= T.
    assert_eq!(parse(mutated("03a0bb0d", "00")), Err(ScriptError::ZeroLocktime));
    assert_eq!(parse(mutated("03a0bb0d", "4f")), Err(ScriptError::NegativeLocktime));
    assert_eq!(parse(mutated("03a0bb0d", "03a0bb8d")), Err(ScriptError::NegativeLocktime));
    // E2, E4: T < 500,000,000 = 0x1dcd6500, a height, not a time.
    assert_eq!(parse(mutated("03a0bb0d", "040065cd1d")), Err(ScriptError::TimeLocktime(500_000_000)));
    assert_eq!(parse(mutated("03a0bb0d", "0500000000ff")), Err(ScriptError::NegativeLocktime));
    assert_eq!(parse(mutated("03a0bb0d", "050000008000")), Err(ScriptError::TimeLocktime(1 << 31)));
    assert_eq!(parse(mutated("03a0bb0d", "06000000000001")), Err(ScriptError::LocktimeTooLong { len: 6 }));
    // E2: 33-byte compressed valid keys.
    assert_eq!(
        parse(mutated(&format!("21{KEY_1}"), &format!("41{KEY_1_UNCOMPRESSED}"))),
        Err(ScriptError::UncompressedKey { party: Party::Client })
    );
    assert_eq!(
        parse(mutated(&format!("21{KEY_3}"), &format!("41{KEY_1_UNCOMPRESSED}"))),
        Err(ScriptError::UncompressedKey { party: Party::Merchant })
    );
    assert_eq!(
        parse(mutated(&format!("21{KEY_3}"), &format!("20{}", &KEY_3[2..]))),
        Err(ScriptError::KeyLength { party: Party::Merchant, len: 32 })
    );
    let not_a_point = format!("02{}", "ff".repeat(32)); // x >= p
    assert_eq!(
        parse(mutated(&format!("21{KEY_1}"), &format!("21{not_a_point}"))),
        Err(ScriptError::InvalidKey { party: Party::Client })
    );
    let bad_prefix = format!("05{}", &KEY_3[2..]);
    assert_eq!(
        parse(mutated(&format!("21{KEY_3}"), &format!("21{bad_prefix}"))),
        Err(ScriptError::InvalidKey { party: Party::Merchant })
    );
    // E2: A != B, and both A's are the same key.
    assert_eq!(parse(mutated(&format!("21{KEY_3}"), &format!("21{KEY_1}"))), Err(ScriptError::SameKeys));
    assert_eq!(parse(mutated(&format!("52 21{KEY_1}"), &format!("52 21{KEY_2}"))), Err(ScriptError::ClientKeyMismatch));
    // E2: every opcode, and nothing more.
    assert_eq!(parse(mutated("52 ae 68", "52 ae 68 75")), Err(ScriptError::TrailingBytes { position: 115, count: 1 }));
    assert_eq!(
        parse(mutated("b1 75", "b1 75 75")),
        Err(ScriptError::UnexpectedOpcode { position: 7, found: 0x75, expected: "a 33-byte key push" })
    );
    assert_eq!(
        parse(mutated("63 03", "64 03")),
        Err(ScriptError::UnexpectedOpcode { position: 0, found: 0x64, expected: "OP_IF" })
    );
    assert_eq!(
        parse(mutated("52 ae", "53 ae")),
        Err(ScriptError::UnexpectedOpcode { position: 112, found: 0x53, expected: "OP_2" })
    );
    assert_eq!(
        parse(mutated("b1 75", "b2 75")),
        Err(ScriptError::UnexpectedOpcode { position: 5, found: 0xb2, expected: "OP_CHECKLOCKTIMEVERIFY" })
    );
    // Truncated: at the end, and inside a push.
    let full = hex(&hand_script());
    assert_eq!(
        ChannelScript::parse(ScriptBuf::from_bytes(full[..114].to_vec()).as_script()),
        Err(ScriptError::Truncated { position: 114, expected: "OP_ENDIF" })
    );
    assert_eq!(
        ChannelScript::parse(ScriptBuf::from_bytes(full[..20].to_vec()).as_script()),
        Err(ScriptError::Truncated { position: 20, expected: "a 33-byte key push" })
    );
    assert_eq!(
        ChannelScript::parse(ScriptBuf::new().as_script()),
        Err(ScriptError::Truncated { position: 0, expected: "OP_IF" })
    );
    // Every refusal names its rule in a lower-case message.
    let e = parse(mutated("03a0bb0d", "040065cd1d")).unwrap_err().to_string();
    assert!(e.starts_with("locktime 500000000 is a time") && e.contains("E4"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// E2: parse never panics, and what it accepts is exactly the script it
    /// builds.
    #[test]
    fn parse_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(s) = ChannelScript::parse(ScriptBuf::from_bytes(bytes.clone()).as_script()) {
            prop_assert_eq!(s.to_script().into_bytes(), bytes);
        }
    }

    /// The same on valid scripts with a byte changed, inserted or removed,
    /// which reach the deeper checks.
    #[test]
    fn parse_never_panics_on_mutated_scripts(at in 0usize..120, byte in any::<u8>(), how in 0u8..3) {
        let mut bytes = hex(&hand_script());
        let at = at % (bytes.len() + 1);
        match how {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
        if let Ok(s) = ChannelScript::parse(ScriptBuf::from_bytes(bytes.clone()).as_script()) {
            prop_assert_eq!(s.to_script().into_bytes(), bytes);
        }
    }

    /// E2: every valid script round-trips.
    #[test]
    fn random_valid_scripts_round_trip(a in 1u64.., b in 1u64.., t in 1u32..500_000_000) {
        prop_assume!(a != b);
        let s = ChannelScript::new(pubkey(a), pubkey(b), height(t)).unwrap();
        prop_assert_eq!(ChannelScript::parse(&s.to_script()), Ok(s));
    }
}

// ---------------------------------------------------------------------------
// Every spending path through Bitcoin Core's interpreter (E1, E2).
// ---------------------------------------------------------------------------

fn every_spending_path(kind: OutputKind) {
    let (out, _) = channel(kind);
    let spent = out.txout();
    let script = out.script.to_script().into_bytes();

    // M3-b, M4-a: the cooperative spend with both signatures.
    let unsigned = out.payment_tx(payee(kind), sats(400_000), change(kind), rate(10), &dust()).unwrap();
    let tx = signed_payment(&out);
    assert_eq!(verify_input(&tx, 0, &spent), Ok(()), "{kind:?} cooperative");
    // The crate's digest is the one computed here, and its finalised spend is
    // the hand-assembled E2 stack [<>, sigA, sigB, <>, script].
    assert_eq!(out.sighash(&unsigned).unwrap().to_byte_array(), digest(&out, &unsigned));
    let (sig_a, sig_b) = (der(1, &out, &unsigned), der(3, &out, &unsigned));
    let mut hand = unsigned.clone();
    set_spend(&mut hand, kind, &[vec![], sig_a.clone(), sig_b.clone(), vec![], script.clone()]);
    assert_eq!(serialize(&hand), serialize(&tx), "{kind:?}: E2 cooperative stack");

    // Cooperative with one signature fails: the other replaced by nothing,
    // or missing.
    for items in [
        vec![vec![], sig_a.clone(), vec![], vec![], script.clone()],
        vec![vec![], vec![], sig_b.clone(), vec![], script.clone()],
        vec![vec![], sig_a.clone(), vec![], script.clone()],
        vec![vec![], sig_a.clone(), sig_a.clone(), vec![], script.clone()],
    ] {
        let mut bad = unsigned.clone();
        set_spend(&mut bad, kind, &items);
        assert!(verify_input(&bad, 0, &spent).is_err(), "{kind:?}: one signature must not spend the 2-of-2");
    }
    // Swapped signatures fail (OP_CHECKMULTISIG takes them in key order).
    let mut swapped = unsigned.clone();
    set_spend(&mut swapped, kind, &[vec![], sig_b.clone(), sig_a.clone(), vec![], script.clone()]);
    assert!(verify_input(&swapped, 0, &spent).is_err(), "{kind:?}: swapped signatures");
    // A stranger's signature in place of the merchant's fails.
    let mut stranger = unsigned.clone();
    set_spend(&mut stranger, kind, &[vec![], sig_a.clone(), der(99, &out, &unsigned), vec![], script.clone()]);
    assert!(verify_input(&stranger, 0, &spent).is_err(), "{kind:?}: stranger");
    // The client's signature alone on the refund branch before T fails:
    // selecting OP_IF with nLockTime 0.
    let mut early = unsigned.clone();
    set_spend(&mut early, kind, &[sig_a.clone(), vec![1], script.clone()]);
    assert!(verify_input(&early, 0, &spent).is_err(), "{kind:?}: refund branch with nLockTime 0");

    // M4-d: the refund at nLockTime = T.
    let refund = out.refund(change(kind), rate(10), &Scalars, CLIENT).unwrap();
    assert_eq!(refund.lock_time, absolute::LockTime::Blocks(height(T)));
    assert_eq!(refund.input[0].sequence, REFUND_SEQUENCE);
    assert_eq!(refund.input[0].sequence, Sequence(0xFFFF_FFFD));
    assert_eq!(refund.version, transaction::Version::TWO);
    assert_eq!(verify_input(&refund, 0, &spent), Ok(()), "{kind:?} refund at T");
    // Its spend is the hand-assembled E2 stack [sigA, 01, script].
    let mut unsigned_refund = refund.clone();
    unsigned_refund.input[0].script_sig = ScriptBuf::new();
    unsigned_refund.input[0].witness = Witness::new();
    let resigned = |lock: u32, sequence: Sequence, n: u64| {
        let mut tx = unsigned_refund.clone();
        tx.lock_time = absolute::LockTime::from_consensus(lock);
        tx.input[0].sequence = sequence;
        let sig = der(n, &out, &tx);
        set_spend(&mut tx, kind, &[sig, vec![1], script.clone()]);
        tx
    };
    assert_eq!(serialize(&resigned(T, REFUND_SEQUENCE, 1)), serialize(&refund), "{kind:?}: E2 refund stack");
    // After T it stays valid.
    assert_eq!(verify_input(&resigned(T + 1000, REFUND_SEQUENCE, 1), 0, &spent), Ok(()));
    // M4-d: one block early, CLTV refuses it (re-signed, so only nLockTime differs).
    assert!(verify_input(&resigned(T - 1, REFUND_SEQUENCE, 1), 0, &spent).is_err(), "{kind:?}: nLockTime T - 1");
    // A final sequence disables nLockTime, so CLTV refuses it too.
    assert!(verify_input(&resigned(T, Sequence::MAX, 1), 0, &spent).is_err(), "{kind:?}: nSequence 0xFFFFFFFF");
    // 0xFFFFFFFE (no RBF) is fine too (E2: 0xFFFFFFFE or lower).
    assert_eq!(verify_input(&resigned(T, Sequence(0xFFFF_FFFE), 1), 0, &spent), Ok(()));
    // A time-based nLockTime is of the wrong kind for the height T.
    assert!(verify_input(&resigned(1_700_000_000, REFUND_SEQUENCE, 1), 0, &spent).is_err());
    // The merchant's key cannot take the refund path.
    assert!(verify_input(&resigned(T, REFUND_SEQUENCE, 3), 0, &spent).is_err(), "{kind:?}: merchant refund");
    assert_eq!(out.refund(change(kind), rate(10), &Scalars, MERCHANT), Err(TxError::NotTheClient(pubkey(3))));
    // The refund branch with the 2-of-2 selector (empty) fails.
    let mut wrong_branch = resigned(T, REFUND_SEQUENCE, 1);
    let sig = der(1, &out, &wrong_branch);
    set_spend(&mut wrong_branch, kind, &[sig, vec![], script.clone()]);
    assert!(verify_input(&wrong_branch, 0, &spent).is_err());
}

#[test]
fn p2wsh_every_spending_path() {
    every_spending_path(OutputKind::P2wsh);
}

#[test]
fn p2sh_every_spending_path() {
    every_spending_path(OutputKind::P2sh);
}

#[test]
fn spends_use_minimal_if_selectors() {
    // E2: MINIMALIF-clean on P2WSH. libbitcoinconsensus has no MINIMALIF
    // flag (it is relay policy, not consensus), so the interpreter above
    // would also take other true values; the node's policy check is in the
    // regtest suite (issue 10). Here: the selectors are exactly [] and [01].
    let (out, _) = channel(OutputKind::P2wsh);
    let pay = signed_payment(&out);
    let w: Vec<Vec<u8>> = pay.input[0].witness.iter().map(|e| e.to_vec()).collect();
    assert_eq!(w.len(), 5);
    assert_eq!((w[0].as_slice(), w[3].as_slice()), (&[][..], &[][..]), "dummy and selector empty");
    assert_eq!(w[4], out.script.to_script().into_bytes());
    assert!(pay.input[0].script_sig.is_empty());
    let refund = out.refund(change(OutputKind::P2wsh), rate(10), &Scalars, CLIENT).unwrap();
    let w: Vec<Vec<u8>> = refund.input[0].witness.iter().map(|e| e.to_vec()).collect();
    assert_eq!(w.len(), 3);
    assert_eq!(w[1], vec![0x01], "the refund selector is exactly 01");

    // P2SH: OP_0 <sigA> <sigB> OP_0 <script> and <sigA> OP_1 <script>.
    let (out, _) = channel(OutputKind::P2sh);
    let pay = signed_payment(&out);
    let s = pay.input[0].script_sig.as_bytes();
    assert!(pay.input[0].witness.is_empty());
    assert_eq!(s[0], 0x00);
    let sig_a_len = usize::from(s[1]);
    let sig_b_len = usize::from(s[2 + sig_a_len]);
    let rest = &s[3 + sig_a_len + sig_b_len..];
    assert_eq!(rest[..3], [0x00, 0x4c, 115], "OP_0, then OP_PUSHDATA1 of the 115-byte script");
    assert_eq!(rest[3..], out.script.to_script().into_bytes()[..]);
    let refund = out.refund(change(OutputKind::P2sh), rate(10), &Scalars, CLIENT).unwrap();
    let s = refund.input[0].script_sig.as_bytes();
    let sig_len = usize::from(s[0]);
    assert_eq!(s[1 + sig_len..1 + sig_len + 3], [0x51, 0x4c, 115], "OP_1, then the script");
}

#[test]
fn signing_and_verification() {
    for kind in KINDS {
        let (out, _) = channel(kind);
        let tx = out.payment_tx(payee(kind), sats(400_000), change(kind), rate(10), &dust()).unwrap();
        let a = out.sign(&tx, &Scalars, CLIENT).unwrap();
        assert_eq!(out.verify(&tx, &pubkey(1), &a), Ok(()));
        assert!(matches!(out.verify(&tx, &pubkey(3), &a), Err(TxError::Verify(_))));
        assert_eq!(out.verify(&tx, &pubkey(99), &a), Err(TxError::NotAChannelKey(pubkey(99))));
        // Only the two keys of the script sign.
        assert_eq!(out.sign(&tx, &Scalars, STRANGER), Err(TxError::NotAChannelKey(pubkey(99))));
        // An external signer's high-S signature is normalised; a high-S
        // signature does not verify.
        assert_eq!(out.sign(&tx, &HighS, CLIENT), Ok(a));
        assert!(matches!(out.verify(&tx, &pubkey(1), &high_s(&a)), Err(TxError::Verify(_))));
        // The sighash kind follows the output kind.
        match (kind, out.sighash(&tx).unwrap()) {
            (OutputKind::P2wsh, Sighash::SegwitV0(_)) | (OutputKind::P2sh, Sighash::Legacy(_)) => {}
            other => panic!("{other:?}"),
        }
        // Input 0 must spend the channel; no index is trusted.
        let mut none = tx.clone();
        none.input.clear();
        assert_eq!(out.sighash(&none), Err(TxError::NoInput));
        assert_eq!(out.sign(&none, &Scalars, CLIENT), Err(TxError::NoInput));
        out.finalize_cooperative(&mut none, &a, &a); // no input: nothing to do, no panic
        assert!(out.finalized_size(&none) > 0);
        let mut other = tx.clone();
        other.input[0].previous_output.vout = 1;
        assert!(matches!(out.sighash(&other), Err(TxError::WrongInput { .. })));
        // A signature over another transaction does not verify.
        let mut changed = tx.clone();
        changed.output[0].value = sats(400_001);
        assert!(matches!(out.verify(&changed, &pubkey(1), &a), Err(TxError::Verify(_))));
    }
}

#[test]
fn the_in_memory_signer_signs_for_its_one_way_keys() {
    // M1-c: a fresh key per channel from the caller's signer.
    let client = InMemorySigner::new(secret(11), secret(12));
    let merchant = InMemorySigner::new(secret(13), secret(14));
    let script =
        ChannelScript::new(client.public_key(KeyRole::Oneway(7)), merchant.public_key(KeyRole::Oneway(9)), height(T))
            .unwrap();
    for kind in KINDS {
        let funding = funding_tx(script.script_pubkey(kind), sats(CAPACITY));
        let out = ChannelOutput {
            outpoint: OutPoint { txid: funding.compute_txid(), vout: 0 },
            value: sats(CAPACITY),
            script,
            kind,
        };
        let mut tx = out.payment_tx(payee(kind), sats(5_000), change(kind), rate(3), &dust()).unwrap();
        let a = out.sign(&tx, &client, KeyRole::Oneway(7)).unwrap();
        let b = out.sign(&tx, &merchant, KeyRole::Oneway(9)).unwrap();
        assert_eq!(
            out.sign(&tx, &client, KeyRole::Oneway(8)),
            Err(TxError::NotAChannelKey(client.public_key(KeyRole::Oneway(8))))
        );
        out.finalize_cooperative(&mut tx, &a, &b);
        assert_eq!(verify_input(&tx, 0, &out.txout()), Ok(()));
        let refund = out.refund(change(kind), rate(3), &client, KeyRole::Oneway(7)).unwrap();
        assert_eq!(verify_input(&refund, 0, &out.txout()), Ok(()));
    }
}

// ---------------------------------------------------------------------------
// Fees and dust (M3-b, E6).
// ---------------------------------------------------------------------------

#[test]
fn payments_and_refunds_pay_at_least_the_rate_on_their_real_size() {
    for kind in KINDS {
        let (out, _) = channel(kind);
        for r in [FeeRate::ZERO, rate(1), rate(2), rate(10), rate(57), FeeRate::from_sat_per_kwu(333)] {
            // M3-b: signed for real, finalised, measured.
            let unsigned = out.payment_tx(payee(kind), sats(400_000), change(kind), r, &dust()).unwrap();
            let mut tx = unsigned.clone();
            let (a, b) = (out.sign(&tx, &Scalars, CLIENT).unwrap(), out.sign(&tx, &Scalars, MERCHANT).unwrap());
            out.finalize_cooperative(&mut tx, &a, &b);
            assert_eq!(verify_input(&tx, 0, &out.txout()), Ok(()));
            assert!(fee_of(&out, &tx) >= min_fee(r, tx.vsize()), "{kind:?} {r}: fee below the rate");
            // The fee is computed on the worst case, which is never smaller
            // than the real size and, since a low-S signature with its
            // sighash byte takes 71 or 72 bytes (unless r is unusually
            // small), at most 4 bytes larger.
            let estimate = out.finalized_size(&unsigned);
            assert!(estimate >= tx.vsize() && estimate <= tx.vsize() + 4, "{kind:?}: {estimate} vs {}", tx.vsize());
            assert_eq!(fee_of(&out, &tx), min_fee(r, estimate), "{kind:?} {r}: fee on the finalised size");
            assert_eq!(tx.output.len(), 2);
            assert_eq!(
                tx.output[0],
                TxOut { value: sats(400_000), script_pubkey: payee(kind) },
                "M3-b: output 0 pays total"
            );
            assert_eq!(tx.output[1].script_pubkey, change(kind));
            // M3-b: version 2, final.
            assert_eq!(tx.version, transaction::Version::TWO);
            assert_eq!(tx.lock_time, absolute::LockTime::ZERO);
            assert_eq!(tx.input[0].sequence, Sequence::MAX);
            assert_eq!(tx.input.len(), 1);

            // M4-d: the refund likewise.
            let refund = out.refund(change(kind), r, &Scalars, CLIENT).unwrap();
            assert_eq!(verify_input(&refund, 0, &out.txout()), Ok(()));
            assert!(fee_of(&out, &refund) >= min_fee(r, refund.vsize()), "{kind:?} {r}: refund fee");
            assert!(fee_of(&out, &refund) <= min_fee(r, refund.vsize() + 2));
        }
    }
}

#[test]
fn dust_change_goes_to_the_fee() {
    for kind in KINDS {
        let (out, _) = channel(kind);
        let threshold = dust_threshold(&change(kind), &dust());
        assert_eq!(threshold, sats(if kind == OutputKind::P2wsh { 294 } else { 546 }));
        let probe = out.payment_tx(payee(kind), sats(100_000), change(kind), rate(10), &dust()).unwrap();
        let fee_with_change = fee_of(&out, &probe);
        // E6: change one satoshi below the threshold is left out; the fee
        // takes it.
        let total = out.value - fee_with_change - threshold + sats(1);
        let tx = out.payment_tx(payee(kind), total, change(kind), rate(10), &dust()).unwrap();
        assert_eq!(tx.output.len(), 1, "{kind:?}: E6 dust change dropped");
        assert_eq!(fee_of(&out, &tx), fee_with_change + threshold - sats(1));
        // At the threshold it is kept.
        let total = out.value - fee_with_change - threshold;
        let tx = out.payment_tx(payee(kind), total, change(kind), rate(10), &dust()).unwrap();
        assert_eq!(tx.output.len(), 2);
        assert_eq!(tx.output[1].value, threshold);
        // Paying everything but the fee: no change at all.
        let fee_alone = min_fee(rate(10), out.finalized_size(&tx) - serialize(&tx.output[1]).len());
        let tx = out.payment_tx(payee(kind), out.value - fee_alone, change(kind), rate(10), &dust()).unwrap();
        assert_eq!(tx.output.len(), 1);
        assert_eq!(fee_of(&out, &tx), fee_alone);
        // One more satoshi and the fee no longer fits.
        assert_eq!(
            out.payment_tx(payee(kind), out.value - fee_alone + sats(1), change(kind), rate(10), &dust()),
            Err(TxError::InsufficientCapacity {
                total: out.value - fee_alone + sats(1),
                fee: fee_alone,
                capacity: out.value
            })
        );
        // The dust policy is configuration (E1): at 0 sat/vB any change stays.
        let free = DustPolicy { dust_relay_fee: FeeRate::ZERO };
        let total = out.value - fee_with_change - sats(1);
        let tx = out.payment_tx(payee(kind), total, change(kind), rate(10), &free).unwrap();
        assert_eq!(tx.output[1].value, sats(1));
    }
}

#[test]
fn payment_errors() {
    let kind = OutputKind::P2wsh;
    let (out, _) = channel(kind);
    let pay = |payee_script: ScriptBuf, total: u64, change_script: ScriptBuf, r: FeeRate| {
        out.payment_tx(payee_script, sats(total), change_script, r, &dust())
    };
    // M3-b: within capacity, total and total + fee.
    assert_eq!(
        pay(payee(kind), CAPACITY + 1, change(kind), rate(1)),
        Err(TxError::TotalAboveCapacity { total: sats(CAPACITY + 1), capacity: sats(CAPACITY) })
    );
    assert!(matches!(pay(payee(kind), CAPACITY, change(kind), rate(1)), Err(TxError::InsufficientCapacity { .. })));
    assert!(matches!(pay(payee(kind), 1000, change(kind), rate(1_000_000)), Err(TxError::InsufficientCapacity { .. })));
    // The payee's output must not be dust.
    assert_eq!(
        pay(payee(kind), 293, change(kind), rate(1)),
        Err(TxError::PayeeBelowDust { value: sats(293), threshold: sats(294) })
    );
    assert!(pay(payee(kind), 294, change(kind), rate(1)).is_ok());
    // E5: nothing above 21M BTC, and no overflow.
    assert_eq!(
        pay(payee(kind), Amount::MAX_MONEY.to_sat() + 1, change(kind), rate(1)),
        Err(TxError::TotalAboveMaxMoney(Amount::MAX_MONEY + sats(1)))
    );
    // The largest rate computes without overflow (in 128 bits) and asks
    // for more than the channel holds.
    assert!(matches!(
        pay(payee(kind), 1000, change(kind), FeeRate::from_sat_per_kwu(u64::MAX)),
        Err(TxError::InsufficientCapacity { .. })
    ));
    assert!(matches!(
        out.refund(change(kind), FeeRate::from_sat_per_kwu(u64::MAX), &Scalars, CLIENT),
        Err(TxError::InsufficientCapacity { .. })
    ));
    let mut huge = out.clone();
    huge.value = Amount::MAX_MONEY + sats(1);
    assert_eq!(
        huge.payment_tx(payee(kind), sats(1000), change(kind), rate(1), &dust()),
        Err(TxError::CapacityAboveMaxMoney(huge.value))
    );
    huge.value = Amount::MAX;
    assert!(huge.refund(change(kind), rate(1), &Scalars, CLIENT).is_err());
    // Standard payout scripts only (M3-c would refuse anything else).
    let bare_multisig = bitcoin::script::Builder::new()
        .push_int(1)
        .push_key(&pubkey(5).into())
        .push_int(1)
        .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
        .into_script();
    let op_true = ScriptBuf::from_bytes(vec![0x51]);
    let op_return = ScriptBuf::new_op_return([1u8; 4]);
    for bad in [bare_multisig, op_true, op_return] {
        assert_eq!(pay(bad.clone(), 1000, change(kind), rate(1)), Err(TxError::NonStandardPayee(bad.clone())));
        assert_eq!(pay(payee(kind), 1000, bad.clone(), rate(1)), Err(TxError::NonStandardChange(bad.clone())));
        assert_eq!(
            out.refund(bad.clone(), rate(1), &Scalars, CLIENT),
            Err(TxError::NonStandardDestination(bad.clone()))
        );
    }
    // M3-c: exactly one output pays the total to the payee.
    assert_eq!(pay(payee(kind), 1000, payee(kind), rate(1)), Err(TxError::ChangeIsPayee));

    // The refund: the fee must leave a non-dust output.
    let mut small = out.clone();
    let refund_fee = fee_of(&out, &out.refund(change(kind), rate(10), &Scalars, CLIENT).unwrap());
    small.value = refund_fee + sats(293);
    assert_eq!(
        small.refund(change(kind), rate(10), &Scalars, CLIENT),
        Err(TxError::RefundBelowDust { value: sats(293), threshold: sats(294) })
    );
    small.value = refund_fee - sats(1);
    assert!(matches!(
        small.refund(change(kind), rate(10), &Scalars, CLIENT),
        Err(TxError::InsufficientCapacity { .. })
    ));
    small.value = refund_fee + sats(294);
    assert!(small.refund(change(kind), rate(10), &Scalars, CLIENT).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// M3-b over random totals and rates: every payment built is valid
    /// under the interpreter, pays at least the rate on its real size and
    /// conserves value; every refusal is one of the named reasons.
    #[test]
    fn random_payments_are_valid(p2sh in any::<bool>(), total in 0u64..=CAPACITY + 10, sat_kwu in 0u64..100_000) {
        let kind = if p2sh { OutputKind::P2sh } else { OutputKind::P2wsh };
        let (out, _) = channel(kind);
        let r = FeeRate::from_sat_per_kwu(sat_kwu);
        match out.payment_tx(payee(kind), sats(total), change(kind), r, &dust()) {
            Ok(mut tx) => {
                let (a, b) = (out.sign(&tx, &Scalars, CLIENT).unwrap(), out.sign(&tx, &Scalars, MERCHANT).unwrap());
                out.finalize_cooperative(&mut tx, &a, &b);
                prop_assert_eq!(verify_input(&tx, 0, &out.txout()), Ok(()));
                prop_assert!(fee_of(&out, &tx) >= min_fee(r, tx.vsize()));
                prop_assert_eq!(tx.output[0].value, sats(total));
                for o in &tx.output {
                    prop_assert!(o.value >= dust_threshold(&o.script_pubkey, &dust()));
                }
            }
            Err(TxError::TotalAboveCapacity { .. } | TxError::InsufficientCapacity { .. } | TxError::PayeeBelowDust { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}

#[test]
fn dust_thresholds_are_bitcoin_cores() {
    let p2pkh = payout(OutputKind::P2sh, 5);
    let p2sh = channel_script().script_pubkey(OutputKind::P2sh);
    let p2wpkh = payout(OutputKind::P2wsh, 5);
    let p2wsh = channel_script().script_pubkey(OutputKind::P2wsh);
    let p2tr = ScriptBuf::from_bytes([&[0x51, 0x20][..], &[7u8; 32]].concat());
    let op_return = ScriptBuf::new_op_return([1u8; 4]);
    // Bitcoin Core's GetDustThreshold at the default 3 sat/vB.
    for (script, expected) in
        [(&p2pkh, 546), (&p2sh, 540), (&p2wpkh, 294), (&p2wsh, 330), (&p2tr, 330), (&op_return, 0)]
    {
        assert_eq!(dust_threshold(script, &dust()), sats(expected), "{script}");
        assert_eq!(dust_threshold(script, &dust()), script.minimal_non_dust(), "rust-bitcoin agrees on {script}");
    }
    // At 1 sat/vB (-dustrelayfee=0.00001000): a third.
    let one = DustPolicy { dust_relay_fee: rate(1) };
    assert_eq!(dust_threshold(&p2pkh, &one), sats(182));
    assert_eq!(dust_threshold(&p2wpkh, &one), sats(98));
    assert_eq!(dust_threshold(&p2wpkh, &DustPolicy { dust_relay_fee: FeeRate::ZERO }), Amount::ZERO);
    // The largest rate does not overflow: (4 (2^64 - 1) sat/kvB) × 98 bytes.
    let largest = (u128::from(u64::MAX) * 4 * 98).div_ceil(1000);
    assert_eq!(
        dust_threshold(&p2wpkh, &DustPolicy { dust_relay_fee: FeeRate::from_sat_per_kwu(u64::MAX) }).to_sat(),
        u64::try_from(largest).unwrap()
    );

    for s in [&p2pkh, &p2sh, &p2wpkh, &p2wsh, &p2tr] {
        assert!(is_standard_payout(s), "{s}");
    }
    let witness_v2 = ScriptBuf::from_bytes([&[0x52, 0x20][..], &[7u8; 32]].concat());
    let p2pk = bitcoin::script::Builder::new()
        .push_key(&pubkey(5).into())
        .push_opcode(bitcoin::opcodes::all::OP_CHECKSIG)
        .into_script();
    for s in [
        &op_return,
        &witness_v2,
        &p2pk,
        &ScriptBuf::from_bytes(vec![0x51]),
        &ScriptBuf::new(),
        &channel_script().to_script(),
    ] {
        assert!(!is_standard_payout(s), "{s}");
    }
}

// ---------------------------------------------------------------------------
// PSBTs (messages [3] and [6]).
// ---------------------------------------------------------------------------

/// The input map E2's PSBTs carry, assembled here field by field.
fn expected_input(out: &ChannelOutput, funding: &Transaction) -> psbt::Input {
    let mut input = psbt::Input { non_witness_utxo: Some(funding.clone()), ..Default::default() };
    let script = ScriptBuf::from_bytes(hex(&hand_script()));
    match out.kind {
        OutputKind::P2wsh => {
            input.witness_utxo = Some(funding.output[0].clone());
            input.witness_script = Some(script);
        }
        OutputKind::P2sh => input.redeem_script = Some(script),
    }
    input
}

#[test]
fn the_announce_psbt_has_exactly_its_fields() {
    for kind in KINDS {
        let (out, funding) = channel(kind);
        let psbt = out.announce_psbt(&funding).unwrap();
        // M2-a: one input, no outputs, no signatures; M2-b: the funding
        // transaction, and for P2WSH the witness UTXO.
        let unsigned = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: out.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![],
        };
        assert_eq!(psbt.unsigned_tx, unsigned);
        assert_eq!(psbt.inputs, vec![expected_input(&out, &funding)]);
        assert!(psbt.outputs.is_empty());
        assert_eq!(psbt.version, 0);
        assert!(psbt.xpub.is_empty() && psbt.proprietary.is_empty() && psbt.unknown.is_empty());
        // E3: it travels as BIP 174 bytes and comes back the same.
        let bytes = psbt.serialize();
        assert_eq!(&bytes[..5], b"psbt\xff");
        assert_eq!(Psbt::deserialize(&bytes).unwrap(), psbt);
    }
}

#[test]
fn the_announce_psbt_checks_the_funding_transaction() {
    let (out, funding) = channel(OutputKind::P2wsh);
    // M2-b: another transaction than the outpoint's.
    let other = funding_tx(out.txout().script_pubkey, sats(CAPACITY + 1));
    assert!(matches!(out.announce_psbt(&other), Err(TxError::FundingTxid { .. })));
    // M2-b: an index out of range is refused, never indexed.
    for vout in [1, 7, u32::MAX] {
        let mut far = out.clone();
        far.outpoint.vout = vout;
        assert_eq!(far.announce_psbt(&funding), Err(TxError::FundingVout { vout, outputs: 1 }));
        let sig = common::sig(1, [1; 32]);
        assert_eq!(far.payment_psbt(&funding, funding.clone(), &sig), Err(TxError::FundingVout { vout, outputs: 1 }));
    }
    // M2-c: the output pays the script as the other kind.
    let mut p2sh = out.clone();
    p2sh.kind = OutputKind::P2sh;
    assert_eq!(p2sh.announce_psbt(&funding), Err(TxError::FundingScript { vout: 0 }));
    // M2-e: another value.
    let mut more = out.clone();
    more.value = sats(CAPACITY + 1);
    assert_eq!(
        more.announce_psbt(&funding),
        Err(TxError::FundingValue { expected: sats(CAPACITY + 1), found: sats(CAPACITY) })
    );
    // E5.
    more.value = Amount::MAX_MONEY + sats(1);
    assert_eq!(more.announce_psbt(&funding), Err(TxError::CapacityAboveMaxMoney(more.value)));
}

#[test]
fn the_payment_psbt_has_exactly_its_fields_and_closes_the_channel() {
    for kind in KINDS {
        let (out, funding) = channel(kind);
        let tx = out.payment_tx(payee(kind), sats(400_000), change(kind), rate(10), &dust()).unwrap();
        let a = out.sign(&tx, &Scalars, CLIENT).unwrap();
        let psbt = out.payment_psbt(&funding, tx.clone(), &a).unwrap();
        // M3-b, M3-e: the announce fields, the outputs, exactly the client's
        // signature with SIGHASH_ALL, and sighash_type ALL.
        let mut input = expected_input(&out, &funding);
        input.partial_sigs.insert(pubkey(1).into(), bitcoin::ecdsa::Signature::sighash_all(a));
        input.sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
        assert_eq!(psbt.unsigned_tx, tx);
        assert_eq!(psbt.inputs, vec![input]);
        assert_eq!(psbt.outputs, vec![psbt::Output::default(); 2]);
        assert!(psbt.xpub.is_empty() && psbt.proprietary.is_empty() && psbt.unknown.is_empty());
        let bytes = psbt.serialize();
        let back = Psbt::deserialize(&bytes).unwrap();
        assert_eq!(back, psbt);

        // M4-a: the merchant countersigns what it received, finalises, and
        // Core's interpreter accepts it.
        let received = back.inputs[0].partial_sigs[&pubkey(1).into()].signature;
        let mut close = back.unsigned_tx.clone();
        let b = out.sign(&close, &Scalars, MERCHANT).unwrap();
        out.finalize_cooperative(&mut close, &received, &b);
        assert_eq!(verify_input(&close, 0, &out.txout()), Ok(()));

        // The client's signature is checked: the merchant's in its place,
        // or one over other outputs, is refused.
        assert!(matches!(out.payment_psbt(&funding, tx.clone(), &b), Err(TxError::Verify(_))));
        let mut other = tx.clone();
        other.output[0].value = sats(400_001);
        assert!(matches!(out.payment_psbt(&funding, other, &a), Err(TxError::Verify(_))));
        // An unsigned transaction of one input, the channel's (E7).
        assert_eq!(out.payment_psbt(&funding, close, &a), Err(TxError::SignedInput));
        let mut two = tx.clone();
        two.input.push(two.input[0].clone());
        assert_eq!(out.payment_psbt(&funding, two, &a), Err(TxError::InputCount(2)));
        let mut none = tx.clone();
        none.input.clear();
        assert_eq!(out.payment_psbt(&funding, none, &a), Err(TxError::InputCount(0)));
        let mut elsewhere = tx.clone();
        elsewhere.input[0].previous_output.vout = 5;
        assert!(matches!(out.payment_psbt(&funding, elsewhere, &a), Err(TxError::WrongInput { .. })));
    }
}

// ---------------------------------------------------------------------------
// Golden vectors.
// ---------------------------------------------------------------------------

/// Compares `bytes` with the hex in `tests/vectors/{name}.hex`. Set
/// `PAYCHAN_BLESS=1` to write the file instead (after reviewing a deliberate
/// format change).
fn golden(name: &str, description: &str, bytes: &[u8]) {
    let path = format!("{}/tests/vectors/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex = to_hex(bytes);
    if std::env::var_os("PAYCHAN_BLESS").is_some() {
        let body: Vec<String> = hex.as_bytes().chunks(64).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        std::fs::write(&path, format!("# {description}\n{}\n", body.join("\n"))).unwrap();
        return;
    }
    let expected = common::read_hex_vector(&path);
    assert_eq!(hex, to_hex(&expected), "{name} changed");
}

fn vector_name(kind: OutputKind, what: &str) -> String {
    let kind = match kind {
        OutputKind::P2wsh => "p2wsh",
        OutputKind::P2sh => "p2sh",
    };
    format!("oneway_{kind}_{what}")
}

const VECTORS: [&str; 4] = ["script", "funding_output", "payment", "refund"];

#[test]
fn golden_vectors() {
    for kind in KINDS {
        let (out, _) = channel(kind);
        let k = match kind {
            OutputKind::P2wsh => "P2WSH",
            OutputKind::P2sh => "P2SH",
        };
        // Independently: the script is the hand-assembled one, the funding
        // output hashes it, each transaction passes Core's interpreter.
        let script = out.script.to_script();
        assert_eq!(script.as_bytes(), hex(&hand_script()));
        golden(&vector_name(kind, "script"), "E2 script: A = 1G, B = 3G, T = 900000", script.as_bytes());
        let txout = out.txout();
        let program = match kind {
            OutputKind::P2wsh => format!("220020{}", to_hex(&sha256::Hash::hash(&hex(&hand_script())).to_byte_array())),
            OutputKind::P2sh => {
                format!("17a914{}87", to_hex(&hash160::Hash::hash(&hex(&hand_script())).to_byte_array()))
            }
        };
        assert_eq!(to_hex(&serialize(&txout)), format!("40420f0000000000{program}"));
        golden(
            &vector_name(kind, "funding_output"),
            &format!("{k} channel output (serialized TxOut): 1000000 sat"),
            &serialize(&txout),
        );
        let payment = signed_payment(&out);
        assert_eq!(verify_input(&payment, 0, &txout), Ok(()));
        // The fees docs/oneway-transactions.md works out by hand: 181 vbytes
        // (P2WSH) and 388 bytes (P2SH) at 10 sat/vB.
        let unsigned = out.payment_tx(payee(kind), sats(400_000), change(kind), rate(10), &dust()).unwrap();
        let (size, fee) = if kind == OutputKind::P2wsh { (181, 1810) } else { (388, 3880) };
        assert_eq!((out.finalized_size(&unsigned), fee_of(&out, &payment)), (size, sats(fee)));
        golden(
            &vector_name(kind, "payment"),
            &format!(
                "{k} payment, signed by A and B: total 400000 sat to secret(50), change to secret(51), 10 sat/vB; txid {}",
                payment.compute_txid()
            ),
            &serialize(&payment),
        );
        let refund = out.refund(change(kind), rate(10), &Scalars, CLIENT).unwrap();
        assert_eq!(verify_input(&refund, 0, &txout), Ok(()));
        // 131 vbytes and 277 bytes at 10 sat/vB.
        assert_eq!(fee_of(&out, &refund), sats(if kind == OutputKind::P2wsh { 1310 } else { 2770 }));
        golden(
            &vector_name(kind, "refund"),
            &format!(
                "{k} refund, signed by A: nLockTime 900000, to secret(51), 10 sat/vB; txid {}",
                refund.compute_txid()
            ),
            &serialize(&refund),
        );
    }
}

/// docs/oneway-transactions.md shows every vector, and they must stay the
/// same bytes.
#[test]
fn the_specification_shows_the_vectors() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/oneway-transactions.md")).unwrap();
    let doc_hex: String = doc.split_whitespace().collect();
    for kind in KINDS {
        for what in VECTORS {
            let name = vector_name(kind, what);
            let bytes = common::read_hex_vector(&format!("{}/tests/vectors/{name}.hex", env!("CARGO_MANIFEST_DIR")));
            assert!(doc_hex.contains(&to_hex(&bytes)), "docs/oneway-transactions.md does not show {name}");
        }
    }
    // The signature size the fee assumes is the one the page states.
    assert!(doc.contains(&format!("{MAX_SIGNATURE_SIZE}-byte")));
}
