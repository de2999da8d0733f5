//! The transaction layer, proven by Bitcoin Core's script interpreter: every
//! transaction the crate builds, on every spending path, with negative cases
//! the interpreter must reject; hand-assembled script templates; golden
//! vectors; properties over random commitments; 1500-HTLC commitments and
//! penalties.

mod common;

use bitcoin::hashes::{ripemd160, sha256, Hash};
use bitcoin::{absolute, Amount, CompressedPublicKey, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxOut};
use common::chain::{funding_tx, resign, set_witness_element, verify_input};
use common::{pubkey, secret};
use paychan::fees::{commitment_fee, DUST_LIMIT};
use paychan::tx::closing::{build_close, CloseSpec};
use paychan::tx::commitment::{
    self, to_self_script, Commitment, CommitmentNumber, CommitmentSpec, HtlcDirection, HtlcSpec, OutputKind,
};
use paychan::tx::funding::{anchor_witness_script, validate_funding, FundingError, FundingOutput};
use paychan::tx::htlc::{offered_htlc_script, received_htlc_script, success_sweep, timeout_sweep};
use paychan::tx::penalty::{build_penalty, PenaltyError, MAX_PENALTY_TX_SIZE};
use paychan::tx::sweep::{to_self_sweep, SweepError};
use paychan::tx::{InMemorySigner, KeyRole, Signer};
use paychan::{Delay, MilliSats, Preimage};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Fixture: A owns the commitment, B is the other side.
// ---------------------------------------------------------------------------

/// Node A: commit key secret(1), final key secret(2). Node B: 3 and 4.
fn signer_a() -> InMemorySigner {
    InMemorySigner::new(secret(1), secret(2))
}
fn signer_b() -> InMemorySigner {
    InMemorySigner::new(secret(3), secret(4))
}
/// A stranger's key, for wrong-key cases.
const STRANGER: u64 = 99;

const FUNDING_SAT: u64 = 1_000_000;
const DELAY: Delay = Delay::Blocks(144);
/// The test channel's obscuring factor (D10): the last six bytes of
/// SHA256(pubkey(1) || pubkey(3)), computed outside the crate
/// (`hashlib.sha256(bytes.fromhex("0279be…1798" "02f930…36f9"))`).
const OBSCURING: u64 = 0x5253_382d_acf5;
/// The vectors' commitments are number 42.
const NUMBER: CommitmentNumber = CommitmentNumber { number: 42, obscuring: OBSCURING };

fn funding() -> (FundingOutput, TxOut) {
    funding_of(FUNDING_SAT)
}

fn funding_of(sat: u64) -> (FundingOutput, TxOut) {
    let (a, b) = (pubkey(1), pubkey(3));
    let spk = ScriptBuf::new_p2wsh(&anchor_witness_script(&a, &b).wscript_hash());
    let tx = funding_tx(spk, Amount::from_sat(sat));
    let f = validate_funding(&tx, 0, &a, &b, Amount::from_sat(sat)).unwrap();
    (f, tx.output[0].clone())
}

fn rev_preimage(n: u8) -> Preimage {
    Preimage([0xe0 | n; 32])
}

fn r(n: u8) -> Preimage {
    Preimage([n; 32])
}

fn height(h: u32) -> absolute::LockTime {
    absolute::LockTime::from_height(h).unwrap()
}

fn htlc(direction: HtlcDirection, id: u64, msat: u64, preimage: u8, expiry: absolute::LockTime) -> HtlcSpec {
    HtlcSpec::new(direction, id, MilliSats::from_msat(msat), r(preimage).hash(), expiry)
}

/// The standard test commitment of A: balances plus one offered, one
/// received and one dust HTLC, at 10 000 sat/kB.
fn standard_htlcs() -> Vec<HtlcSpec> {
    vec![
        htlc(HtlcDirection::Offered, 0, 50_000_000, 1, height(500_100)),
        htlc(HtlcDirection::Received, 0, 30_000_000, 2, height(500_200)),
        htlc(HtlcDirection::Offered, 1, 400_000, 3, height(500_300)), // 400 sat: dust
    ]
}

fn build_a(f: &FundingOutput, htlcs: &[HtlcSpec], delay: Delay, rate: u32) -> Commitment {
    // A holds 60% of the channel before its HTLCs, B the rest.
    let total = f.value().to_sat() * 1000;
    let in_htlcs: u64 = htlcs.iter().map(|h| h.amount.to_msat()).sum();
    let to_owner = total / 10 * 6 - in_htlcs;
    commitment::build(&CommitmentSpec {
        funding: f,
        owner_final: pubkey(2),
        other_final: pubkey(4),
        to_owner: MilliSats::from_msat(to_owner),
        to_other: MilliSats::from_msat(total - total / 10 * 6),
        htlcs,
        fee_rate_per_kb: rate,
        revocation_hash: rev_preimage(0).hash(),
        delay,
        number: NUMBER,
    })
    .unwrap()
}

/// A's commitment, signed by B and finalized by A, checked by the
/// interpreter; returns it with the output it spends.
fn broadcast_a(f: &FundingOutput, spent: &TxOut, c: &Commitment) -> Transaction {
    let b_sig = c.sign(f, &signer_b()).unwrap();
    c.verify(f, &pubkey(3), &b_sig).unwrap();
    let tx = c.finalize(f, &signer_a(), &pubkey(3), &b_sig).unwrap();
    verify_input(&tx, 0, spent).expect("signed commitment spends the anchor");
    tx
}

fn output_of(c: &Commitment, kind: impl Fn(&OutputKind) -> bool) -> u32 {
    c.outputs().iter().find(|o| kind(&o.kind)).expect("output present").vout
}

fn is_htlc(direction: HtlcDirection, id: u64) -> impl Fn(&OutputKind) -> bool {
    move |k| matches!(k, OutputKind::Htlc(h) if h.direction == direction && h.id == id)
}

fn dest() -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&pubkey(50).wpubkey_hash())
}

fn rate() -> FeeRate {
    FeeRate::from_sat_per_vb(10).unwrap()
}

/// Checks input 0 of a one-input sweep against the commitment output.
fn spends(sweep: &Transaction, c: &Commitment) -> Result<(), bitcoinconsensus::Error> {
    let vout = sweep.input[0].previous_output.vout;
    verify_input(sweep, 0, &c.tx().output[vout as usize])
}

fn witness_script(c: &Commitment, vout: u32) -> ScriptBuf {
    c.output(vout).unwrap().witness_script.clone().unwrap()
}

// ---------------------------------------------------------------------------
// Script templates, assembled byte by byte here from docs/transactions.md.
// ---------------------------------------------------------------------------

fn push(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

fn ripemd(h: &sha256::Hash) -> [u8; 20] {
    ripemd160::Hash::hash(h.as_byte_array()).to_byte_array()
}

#[test]
fn script_templates_match_the_specification() {
    let (owner, other) = (pubkey(2), pubkey(4));
    let rev = rev_preimage(0).hash();
    let rh = r(1).hash();
    // 144 blocks = 0x90 0x00 as a minimal script number (0x90 alone would be
    // negative: the 2016 encoder's pitfall).
    let delay144 = [0x02, 0x90, 0x00];
    // Height 500100 = 0x07a184: little-endian 84 a1 07.
    let expiry = [0x03, 0x84, 0xa1, 0x07];

    // Anchor: 2 <lesser> <greater> 2 CHECKMULTISIG.
    let (k1, k2) = (pubkey(1).to_bytes(), pubkey(3).to_bytes());
    let (lo, hi) = if k1 < k2 { (k1, k2) } else { (k2, k1) };
    let anchor = [vec![0x52], push(&lo), push(&hi), vec![0x52, 0xae]].concat();
    assert_eq!(anchor_witness_script(&pubkey(3), &pubkey(1)).as_bytes(), &anchor[..]);

    // To-self: HASH160 <rip(rev)> EQUAL IF <other> ELSE <delay> CSV DROP <owner> ENDIF CHECKSIG.
    let to_self = [
        vec![0xa9],
        push(&ripemd(&rev)),
        vec![0x87, 0x63],
        push(&other.to_bytes()),
        vec![0x67],
        delay144.to_vec(),
        vec![0xb2, 0x75],
        push(&owner.to_bytes()),
        vec![0x68, 0xac],
    ]
    .concat();
    assert_eq!(to_self_script(&rev, &other, DELAY, &owner).as_bytes(), &to_self[..]);

    // Offered: SIZE 32 EQUALVERIFY HASH160 DUP <rip(r)> EQUAL SWAP <rip(rev)>
    // EQUAL BOOLOR IF <other> ELSE <expiry> CLTV <delay> CSV 2DROP <owner> ENDIF CHECKSIG.
    let offered = [
        vec![0x82, 0x01, 0x20, 0x88, 0xa9, 0x76],
        push(&ripemd(&rh)),
        vec![0x87, 0x7c],
        push(&ripemd(&rev)),
        vec![0x87, 0x9b, 0x63],
        push(&other.to_bytes()),
        vec![0x67],
        expiry.to_vec(),
        vec![0xb1],
        delay144.to_vec(),
        vec![0xb2, 0x6d],
        push(&owner.to_bytes()),
        vec![0x68, 0xac],
    ]
    .concat();
    assert_eq!(offered_htlc_script(&rh, &rev, &owner, &other, height(500_100), DELAY).as_bytes(), &offered[..]);

    // Received: SIZE 32 EQUALVERIFY HASH160 DUP <rip(r)> EQUAL IF <delay> CSV
    // 2DROP <owner> ELSE <rip(rev)> EQUAL NOTIF <expiry> CLTV DROP ENDIF
    // <other> ENDIF CHECKSIG.
    let received = [
        vec![0x82, 0x01, 0x20, 0x88, 0xa9, 0x76],
        push(&ripemd(&rh)),
        vec![0x87, 0x63],
        delay144.to_vec(),
        vec![0xb2, 0x6d],
        push(&owner.to_bytes()),
        vec![0x67],
        push(&ripemd(&rev)),
        vec![0x87, 0x64],
        expiry.to_vec(),
        vec![0xb1, 0x75, 0x68],
        push(&other.to_bytes()),
        vec![0x68, 0xac],
    ]
    .concat();
    assert_eq!(received_htlc_script(&rh, &rev, &owner, &other, height(500_100), DELAY).as_bytes(), &received[..]);

    // A delay in seconds: 1000 s = 2 units of 512 s, type flag 1 << 22:
    // 0x400002 as a script number is 02 00 40.
    let secs = to_self_script(&rev, &other, Delay::Seconds(1000), &owner);
    assert!(secs.as_bytes().windows(4).any(|w| w == [0x03, 0x02, 0x00, 0x40]));
}

// ---------------------------------------------------------------------------
// Funding.
// ---------------------------------------------------------------------------

#[test]
fn funding_validation() {
    let (a, b) = (pubkey(1), pubkey(3));
    let spk = ScriptBuf::new_p2wsh(&anchor_witness_script(&a, &b).wscript_hash());
    let good = funding_tx(spk.clone(), Amount::from_sat(FUNDING_SAT));
    let f = validate_funding(&good, 0, &b, &a, Amount::from_sat(FUNDING_SAT)).unwrap();
    assert_eq!(f.outpoint(), OutPoint { txid: good.compute_txid(), vout: 0 });
    assert_eq!(f.script_pubkey(), spk);

    assert_eq!(
        validate_funding(&good, 1, &a, &b, Amount::from_sat(FUNDING_SAT)),
        Err(FundingError::NoSuchOutput { vout: 1, outputs: 1 })
    );
    assert_eq!(
        validate_funding(&good, 0, &a, &pubkey(STRANGER), Amount::from_sat(FUNDING_SAT)),
        Err(FundingError::WrongScript { vout: 0 })
    );
    assert_eq!(
        validate_funding(&good, 0, &a, &b, Amount::from_sat(FUNDING_SAT + 1)),
        Err(FundingError::WrongAmount {
            expected: Amount::from_sat(FUNDING_SAT + 1),
            found: Amount::from_sat(FUNDING_SAT)
        })
    );
    // R2.2-c: an anchor above 4294967 sat is refused.
    let big = funding_tx(spk.clone(), Amount::from_sat(4_294_968));
    assert_eq!(
        validate_funding(&big, 0, &a, &b, Amount::from_sat(4_294_968)),
        Err(FundingError::TooLarge(Amount::from_sat(4_294_968)))
    );
    let max = funding_tx(spk.clone(), Amount::from_sat(4_294_967));
    assert!(validate_funding(&max, 0, &a, &b, Amount::from_sat(4_294_967)).is_ok());
    // D4: a legacy input would let anyone change the txid.
    let mut legacy = good.clone();
    legacy.input[0].witness.clear();
    legacy.input[0].script_sig = ScriptBuf::from_bytes(vec![0x00]);
    assert_eq!(
        validate_funding(&legacy, 0, &a, &b, Amount::from_sat(FUNDING_SAT)),
        Err(FundingError::MalleableInput(0))
    );
}

// ---------------------------------------------------------------------------
// The commitment and the anchor spend.
// ---------------------------------------------------------------------------

#[test]
fn commitment_spends_the_anchor_only_with_both_signatures() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    let tx = broadcast_a(&f, &spent, &c);

    // The other side's signature by a stranger's key neither verifies nor
    // spends.
    let stranger = InMemorySigner::new(secret(STRANGER), secret(STRANGER + 1));
    let bad = c.sign(&f, &stranger).unwrap();
    assert!(c.verify(&f, &pubkey(3), &bad).is_err());
    assert!(c.verify(&f, &pubkey(STRANGER), &bad).is_err(), "not an anchor key");
    let forged = c.finalize(&f, &signer_a(), &pubkey(3), &bad).unwrap();
    assert!(verify_input(&forged, 0, &spent).is_err());

    // A signature for another commitment (one more satoshi to B) does not
    // sign this one.
    let other = commitment::build(&CommitmentSpec {
        funding: &f,
        owner_final: pubkey(2),
        other_final: pubkey(4),
        to_owner: MilliSats::from_msat(600_000_000 - 80_400_000 - 1000),
        to_other: MilliSats::from_msat(400_001_000),
        htlcs: &standard_htlcs(),
        fee_rate_per_kb: 10_000,
        revocation_hash: rev_preimage(0).hash(),
        delay: DELAY,
        number: NUMBER,
    })
    .unwrap();
    let other_sig = other.sign(&f, &signer_b()).unwrap();
    assert!(c.verify(&f, &pubkey(3), &other_sig).is_err());

    // Swapping the two signatures in the witness breaks the key order.
    let mut swapped = tx.clone();
    let items: Vec<Vec<u8>> = swapped.input[0].witness.iter().map(|w| w.to_vec()).collect();
    swapped.input[0].witness =
        bitcoin::Witness::from_slice(&[items[0].clone(), items[2].clone(), items[1].clone(), items[3].clone()]);
    assert!(verify_input(&swapped, 0, &spent).is_err());
}

#[test]
fn commitment_layout() {
    let (f, _) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    // D9: the 400-sat HTLC has no output; two HTLC outputs and two balances.
    assert_eq!(c.tx().output.len(), 4);
    assert_eq!(c.trimmed_htlcs().len(), 1);
    assert!(c.htlc_output(HtlcDirection::Offered, 1).is_none());
    // R3.6-a, R3.6-b: the fee counts only the two non-dust HTLCs.
    assert_eq!(c.fee_split().fee, commitment_fee(10_000, 2));
    assert_eq!(c.fee_split().fee, Amount::from_sat((338 + 64) * 10));
    // R3.6-c: both can afford half.
    assert_eq!(c.fee_split().local_paid, Amount::from_sat(2010));
    assert_eq!(c.fee_split().remote_paid, Amount::from_sat(2010));
    // R3.6-e: both paid their share, so either may add HTLCs.
    assert!(c.fee_split().local_paid_share() && c.fee_split().remote_paid_share());
    // D4: every output is segwit v0 (P2WSH, or P2WPKH for to-other).
    assert!(c.tx().output.iter().all(|o| o.script_pubkey.is_p2wsh() || o.script_pubkey.is_p2wpkh()));
    // Value: outputs + fee paid + dust HTLC = funding.
    let outs: Amount = c.tx().output.iter().map(|o| o.value).sum();
    assert_eq!(outs + Amount::from_sat(4020) + Amount::from_sat(400), Amount::from_sat(FUNDING_SAT));
    assert_eq!(c.absolute_fee(&f), Amount::from_sat(4420));
    // Version 2; the lock fields carry commitment 42, obscured (D10).
    assert_eq!(c.tx().version, bitcoin::transaction::Version::TWO);
    assert_eq!(c.tx().lock_time, absolute::LockTime::from_consensus(0x202d_acdf));
    assert_eq!(c.tx().input[0].sequence, Sequence(0x8052_5338));
}

// ---------------------------------------------------------------------------
// Every spending path of every commitment output, with negatives.
// ---------------------------------------------------------------------------

#[test]
fn to_self_delayed_path() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    let vout = output_of(&c, |k| *k == OutputKind::ToOwner);
    let sweep = to_self_sweep(&c, vout, dest(), rate(), &signer_a()).unwrap();
    assert_eq!(sweep.input[0].sequence, Sequence(144));
    spends(&sweep, &c).expect("owner sweeps after the delay");

    // nSequence one below the delay fails CSV.
    let mut early = sweep.clone();
    early.input[0].sequence = Sequence(143);
    resign(&mut early, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(2));
    assert!(spends(&early, &c).is_err(), "CSV must reject nSequence below the delay");
    // Transaction version 1 disables BIP68: CSV fails.
    let mut v1 = sweep.clone();
    v1.version = bitcoin::transaction::Version::ONE;
    resign(&mut v1, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(2));
    assert!(spends(&v1, &c).is_err());
    // The other side's key cannot use the delayed path.
    let mut wrong_key = sweep.clone();
    resign(&mut wrong_key, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(4));
    assert!(spends(&wrong_key, &c).is_err());
    // Only the owner's to-self output takes this claim.
    let htlc_vout = output_of(&c, is_htlc(HtlcDirection::Offered, 0));
    assert!(matches!(to_self_sweep(&c, htlc_vout, dest(), rate(), &signer_a()), Err(SweepError::WrongClaim { .. })));
}

#[test]
fn to_self_delayed_path_in_seconds() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), Delay::Seconds(3600), 10_000);
    broadcast_a(&f, &spent, &c);
    let vout = output_of(&c, |k| *k == OutputKind::ToOwner);
    let sweep = to_self_sweep(&c, vout, dest(), rate(), &signer_a()).unwrap();
    // 3600 s rounds up to 8 units of 512 s.
    assert_eq!(sweep.input[0].sequence, Sequence::from_512_second_intervals(8));
    spends(&sweep, &c).expect("time-based CSV");
    let mut early = sweep.clone();
    early.input[0].sequence = Sequence::from_512_second_intervals(7);
    resign(&mut early, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(2));
    assert!(spends(&early, &c).is_err());
    // A block-based nSequence does not satisfy a time-based CSV.
    let mut blocks = sweep.clone();
    blocks.input[0].sequence = Sequence(60_000);
    resign(&mut blocks, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(2));
    assert!(spends(&blocks, &c).is_err());
}

#[test]
fn revocation_paths() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    // R6.1-b: B takes every output of A's revoked commitment at once.
    let penalty = build_penalty(&c, rev_preimage(0), dest(), rate(), &signer_b()).unwrap();
    assert_eq!(penalty.txs.len(), 1);
    let tx = &penalty.txs[0];
    assert_eq!(tx.input.len(), 3, "to-self and both HTLCs");
    for (i, input) in tx.input.iter().enumerate() {
        verify_input(tx, i, &c.tx().output[input.previous_output.vout as usize]).expect("revocation path");
    }
    assert_eq!(penalty.already_ours.map(|(o, _)| o.vout), Some(output_of(&c, |k| *k == OutputKind::ToOther)));

    // With a hash that was not revoked (any other 32 bytes), each script
    // falls to a path B cannot use yet.
    for i in 0..tx.input.len() {
        let mut bad = tx.clone();
        set_witness_element(&mut bad, i, 1, vec![0x55; 32]);
        let vout = bad.input[i].previous_output.vout;
        resign(&mut bad, i, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(4));
        assert!(verify_input(&bad, i, &c.tx().output[vout as usize]).is_err(), "input {i} with a non-revoked hash");
    }
    // The owner's key cannot use the revocation path.
    let mut wrong = tx.clone();
    let vout = wrong.input[0].previous_output.vout;
    resign(&mut wrong, 0, &witness_script(&c, vout), c.output(vout).unwrap().value, &secret(2));
    assert!(verify_input(&wrong, 0, &c.tx().output[vout as usize]).is_err());
    // The API refuses a wrong preimage outright.
    assert_eq!(
        build_penalty(&c, rev_preimage(1), dest(), rate(), &signer_b()),
        Err(PenaltyError::WrongPreimage(rev_preimage(0).hash()))
    );
}

#[test]
fn offered_htlc_paths() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    let vout = output_of(&c, is_htlc(HtlcDirection::Offered, 0));
    let script = witness_script(&c, vout);
    let value = c.output(vout).unwrap().value;

    // R6.2-c: B (the other side) takes it with R at once.
    let success = success_sweep(&c, vout, r(1), dest(), rate(), &signer_b()).unwrap();
    spends(&success, &c).expect("other side's success path");
    let mut wrong_r = success.clone();
    set_witness_element(&mut wrong_r, 0, 1, vec![9; 32]);
    resign(&mut wrong_r, 0, &script, value, &secret(4));
    assert!(spends(&wrong_r, &c).is_err(), "wrong preimage");
    let mut short = success.clone();
    set_witness_element(&mut short, 0, 1, vec![1; 31]);
    resign(&mut short, 0, &script, value, &secret(4));
    assert!(spends(&short, &c).is_err(), "a preimage must be 32 bytes");
    let mut wrong_key = success.clone();
    resign(&mut wrong_key, 0, &script, value, &secret(2));
    assert!(spends(&wrong_key, &c).is_err(), "owner cannot take the success path");
    assert!(matches!(
        success_sweep(&c, vout, r(9), dest(), rate(), &signer_b()),
        Err(SweepError::WrongPreimage { .. })
    ));

    // R6.2-b, D6: A (the owner) spends the HTLC output directly (no
    // second-stage transaction) after expiry and the CSV delay.
    let timeout = timeout_sweep(&c, vout, dest(), rate(), &signer_a()).unwrap();
    assert_eq!((timeout.lock_time, timeout.input[0].sequence), (height(500_100), Sequence(144)));
    spends(&timeout, &c).expect("owner's timeout path");
    let mut early = timeout.clone();
    early.lock_time = height(500_099);
    resign(&mut early, 0, &script, value, &secret(2));
    assert!(spends(&early, &c).is_err(), "nLockTime before expiry");
    let mut no_delay = timeout.clone();
    no_delay.input[0].sequence = Sequence(143);
    resign(&mut no_delay, 0, &script, value, &secret(2));
    assert!(spends(&no_delay, &c).is_err(), "nSequence below the delay");
    let mut final_seq = timeout.clone();
    final_seq.input[0].sequence = Sequence::MAX;
    resign(&mut final_seq, 0, &script, value, &secret(2));
    assert!(spends(&final_seq, &c).is_err(), "a final nSequence disables CLTV");
    let mut wrong_key = timeout.clone();
    resign(&mut wrong_key, 0, &script, value, &secret(4));
    assert!(spends(&wrong_key, &c).is_err(), "other side cannot take the timeout path");
}

#[test]
fn received_htlc_paths() {
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    let vout = output_of(&c, is_htlc(HtlcDirection::Received, 0));
    let script = witness_script(&c, vout);
    let value = c.output(vout).unwrap().value;

    // R6.2-c: A (the owner) takes it with R after the CSV delay.
    let success = success_sweep(&c, vout, r(2), dest(), rate(), &signer_a()).unwrap();
    assert_eq!(success.input[0].sequence, Sequence(144));
    spends(&success, &c).expect("owner's success path");
    let mut early = success.clone();
    early.input[0].sequence = Sequence(143);
    resign(&mut early, 0, &script, value, &secret(2));
    assert!(spends(&early, &c).is_err(), "nSequence below the delay");
    let mut wrong_r = success.clone();
    set_witness_element(&mut wrong_r, 0, 1, vec![9; 32]);
    resign(&mut wrong_r, 0, &script, value, &secret(2));
    assert!(spends(&wrong_r, &c).is_err(), "wrong preimage");
    let mut wrong_key = success.clone();
    resign(&mut wrong_key, 0, &script, value, &secret(4));
    assert!(spends(&wrong_key, &c).is_err());

    // R6.2-b: B (the other side, which offered it) gets it back after expiry.
    let timeout = timeout_sweep(&c, vout, dest(), rate(), &signer_b()).unwrap();
    assert_eq!(timeout.lock_time, height(500_200));
    spends(&timeout, &c).expect("other side's timeout path");
    let mut early = timeout.clone();
    early.lock_time = height(500_199);
    resign(&mut early, 0, &script, value, &secret(4));
    assert!(spends(&early, &c).is_err(), "nLockTime before expiry");
    let mut time_lock = timeout.clone();
    time_lock.lock_time = absolute::LockTime::from_time(1_900_000_000).unwrap();
    resign(&mut time_lock, 0, &script, value, &secret(4));
    assert!(spends(&time_lock, &c).is_err(), "a time lock does not satisfy a height expiry");
    let mut wrong_key = timeout.clone();
    resign(&mut wrong_key, 0, &script, value, &secret(2));
    assert!(spends(&wrong_key, &c).is_err());
}

#[test]
fn htlc_paths_with_time_expiry() {
    let (f, spent) = funding();
    let t = absolute::LockTime::from_time(1_700_000_000).unwrap();
    let htlcs =
        vec![htlc(HtlcDirection::Offered, 7, 20_000_000, 4, t), htlc(HtlcDirection::Received, 8, 20_000_000, 5, t)];
    let c = build_a(&f, &htlcs, DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    let offered = output_of(&c, is_htlc(HtlcDirection::Offered, 7));
    let received = output_of(&c, is_htlc(HtlcDirection::Received, 8));
    let a_timeout = timeout_sweep(&c, offered, dest(), rate(), &signer_a()).unwrap();
    assert_eq!(a_timeout.lock_time, t);
    spends(&a_timeout, &c).unwrap();
    let b_timeout = timeout_sweep(&c, received, dest(), rate(), &signer_b()).unwrap();
    spends(&b_timeout, &c).unwrap();
    let mut early = b_timeout.clone();
    early.lock_time = absolute::LockTime::from_time(1_699_999_999).unwrap();
    resign(&mut early, 0, &witness_script(&c, received), c.output(received).unwrap().value, &secret(4));
    assert!(spends(&early, &c).is_err());
}

#[test]
fn one_sweep_for_several_timeouts() {
    use paychan::tx::sweep::{build_sweep, Claim, SweepInput};
    let (f, spent) = funding();
    let t = absolute::LockTime::from_time(1_700_000_000).unwrap();
    let htlcs = vec![
        htlc(HtlcDirection::Offered, 1, 20_000_000, 4, height(500_000)),
        htlc(HtlcDirection::Offered, 2, 21_000_000, 5, height(500_050)),
        htlc(HtlcDirection::Offered, 3, 22_000_000, 6, t),
    ];
    let c = build_a(&f, &htlcs, DELAY, 10_000);
    broadcast_a(&f, &spent, &c);
    let input = |id| {
        SweepInput::from_commitment(&c, output_of(&c, is_htlc(HtlcDirection::Offered, id)), Claim::Timeout).unwrap()
    };
    // Two height expiries: nLockTime is the later one and both inputs spend.
    let tx = build_sweep(vec![input(1), input(2)], dest(), rate(), &signer_a()).unwrap();
    assert_eq!(tx.lock_time, height(500_050));
    for (i, txin) in tx.input.iter().enumerate() {
        verify_input(&tx, i, &c.tx().output[txin.previous_output.vout as usize]).expect("timeout input");
    }
    // R6.2-b: a height and a time cannot share one nLockTime.
    assert_eq!(build_sweep(vec![input(1), input(3)], dest(), rate(), &signer_a()), Err(SweepError::MixedLockTimeUnits));
    assert_eq!(build_sweep(vec![], dest(), rate(), &signer_a()), Err(SweepError::Empty));
}

#[test]
fn sweep_fee_and_dust() {
    let (f, _) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    let vout = output_of(&c, |k| *k == OutputKind::ToOwner);
    let sweep = to_self_sweep(&c, vout, dest(), rate(), &signer_a()).unwrap();
    let fee = c.output(vout).unwrap().value - sweep.output[0].value;
    // The fee covers the real weight at the asked rate (signatures here are
    // at most 72 bytes; the estimate allows 73).
    assert!(fee >= rate().fee_wu(sweep.weight()).unwrap());
    assert!(fee <= rate().fee_wu(sweep.weight() + bitcoin::Weight::from_wu(4)).unwrap());
    // A fee rate that eats the output is refused, not paid.
    let huge = FeeRate::from_sat_per_vb(100_000).unwrap();
    assert!(matches!(to_self_sweep(&c, vout, dest(), huge, &signer_a()), Err(SweepError::NotWorthSweeping { .. })));
}

// ---------------------------------------------------------------------------
// Mutual close.
// ---------------------------------------------------------------------------

fn close_spec(
    f: &FundingOutput,
    local_final: CompressedPublicKey,
    remote_final: CompressedPublicKey,
    to_local: u64,
    close_fee: u64,
) -> CloseSpec<'_> {
    CloseSpec {
        funding: f,
        local_final,
        remote_final,
        to_local: MilliSats::from_msat(to_local),
        to_remote: MilliSats::from_msat(FUNDING_SAT * 1000 - to_local),
        close_fee: Amount::from_sat(close_fee),
    }
}

#[test]
fn close_transaction() {
    let (f, spent) = funding();
    let ours = build_close(&close_spec(&f, pubkey(2), pubkey(4), 700_000_500, 3000)).unwrap();
    // Both sides build the same bytes.
    let theirs = build_close(&close_spec(&f, pubkey(4), pubkey(2), 299_999_500, 3000)).unwrap();
    assert_eq!(ours.tx(), theirs.tx());
    // R4.2-c: the fee is divided as in Fee Calculation; the 500 msat go too.
    let values: Vec<u64> = ours.tx().output.iter().map(|o| o.value.to_sat()).collect();
    assert_eq!(values, vec![299_999 - 1500, 700_000 - 1500]);
    let sig_b = theirs.sign(&f, &signer_b()).unwrap();
    // R4.2-d: the signature checks against the close transaction.
    ours.verify(&f, &pubkey(3), &sig_b).unwrap();
    let tx = ours.finalize(&f, &signer_a(), &pubkey(3), &sig_b).unwrap();
    verify_input(&tx, 0, &spent).expect("close spends the anchor");

    // R4.2-d: a signature for another fee does not sign this close.
    let other_fee = build_close(&close_spec(&f, pubkey(4), pubkey(2), 299_999_500, 3002)).unwrap();
    let wrong = other_fee.sign(&f, &signer_b()).unwrap();
    assert!(ours.verify(&f, &pubkey(3), &wrong).is_err());
    let forged = ours.finalize(&f, &signer_a(), &pubkey(3), &wrong).unwrap();
    assert!(verify_input(&forged, 0, &spent).is_err());

    // R4.2-b: an odd fee would split unevenly, so it is refused.
    assert_eq!(
        build_close(&close_spec(&f, pubkey(2), pubkey(4), 700_000_500, 3001)).unwrap_err(),
        paychan::tx::closing::CloseError::OddFee(Amount::from_sat(3001))
    );

    // R3.6-d: a dust balance has no output.
    let dusty = build_close(&close_spec(&f, pubkey(2), pubkey(4), FUNDING_SAT * 1000 - 500_000, 1000)).unwrap();
    assert_eq!(dusty.tx().output.len(), 1);
    assert_eq!(dusty.tx().output[0].value, Amount::from_sat(FUNDING_SAT - 500 - 500));
}

// ---------------------------------------------------------------------------
// Golden vectors.
// ---------------------------------------------------------------------------

/// Compares `tx` with the hex in `tests/vectors/{name}.hex`. Set
/// `PAYCHAN_BLESS=1` to write the file instead (after reviewing a deliberate
/// format change).
fn golden(name: &str, description: &str, tx: &Transaction) {
    let path = format!("{}/tests/vectors/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex = bitcoin::consensus::encode::serialize_hex(tx);
    if std::env::var_os("PAYCHAN_BLESS").is_some() {
        let body: Vec<String> = hex.as_bytes().chunks(64).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        std::fs::write(&path, format!("# {description}\n# txid {}\n{}\n", tx.compute_txid(), body.join("\n"))).unwrap();
        return;
    }
    let expected = common::read_hex_vector(&path);
    assert_eq!(hex, expected.iter().map(|b| format!("{b:02x}")).collect::<String>(), "{name} changed");
}

#[test]
fn golden_vectors() {
    let (f, spent) = funding();
    let none = build_a(&f, &[], DELAY, 10_000);
    golden(
        "tx_commitment_no_htlcs",
        "A's commitment, no HTLCs: to_owner 600000000 msat, to_other 400000000 msat, 10000 sat/kB, delay 144 blocks, signed by B and A",
        &broadcast_a(&f, &spent, &none),
    );
    let with = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    let with_tx = broadcast_a(&f, &spent, &with);
    golden(
        "tx_commitment_htlcs",
        "A's commitment with offered HTLC 0 (50000000 msat, R=01*32, height 500100), received HTLC 0 (30000000 msat, R=02*32, height 500200), dust offered HTLC 1 (400000 msat)",
        &with_tx,
    );
    let close = build_close(&close_spec(&f, pubkey(2), pubkey(4), 700_000_500, 3000)).unwrap();
    let sig_b = close.sign(&f, &signer_b()).unwrap();
    golden(
        "tx_close",
        "mutual close: A 700000500 msat, B 299999500 msat, close_fee 3000 sat",
        &close.finalize(&f, &signer_a(), &pubkey(3), &sig_b).unwrap(),
    );
    let penalty = build_penalty(&with, rev_preimage(0), dest(), rate(), &signer_b()).unwrap();
    golden(
        "tx_penalty",
        "B's penalty on the commitment with HTLCs, revocation preimage e0*32, 10 sat/vB, to P2WPKH of secret(50)",
        &penalty.txs[0],
    );
    let sweep =
        to_self_sweep(&with, output_of(&with, |k| *k == OutputKind::ToOwner), dest(), rate(), &signer_a()).unwrap();
    golden("tx_to_self_sweep", "A's delayed to-self sweep of the commitment with HTLCs, 10 sat/vB", &sweep);
}

// ---------------------------------------------------------------------------
// Properties over random commitments.
// ---------------------------------------------------------------------------

fn arb_commitment() -> impl Strategy<Value = (Vec<HtlcSpec>, u64, u32, u16)> {
    (
        proptest::collection::vec((any::<bool>(), 1u64..3_000_000, 0u8..8, 400_000u32..400_100), 0..40),
        0u64..=1000,
        0u32..100_000,
        1u16..2000,
    )
        .prop_map(|(raw, owner_share, rate, delay)| {
            let htlcs = raw
                .into_iter()
                .enumerate()
                .map(|(i, (offered, msat, p, h))| {
                    HtlcSpec::new(
                        if offered { HtlcDirection::Offered } else { HtlcDirection::Received },
                        i as u64,
                        MilliSats::from_msat(msat),
                        r(p).hash(),
                        height(h),
                    )
                })
                .collect();
            (htlcs, owner_share, rate, delay)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn commitment_properties((htlcs, owner_share, rate, delay) in arb_commitment()) {
        let (f, _) = funding();
        let in_htlcs: u64 = htlcs.iter().map(|h| h.amount.to_msat()).sum();
        let rest = FUNDING_SAT * 1000 - in_htlcs;
        let to_owner = rest / 1000 * owner_share;
        let spec = CommitmentSpec {
            funding: &f,
            owner_final: pubkey(2),
            other_final: pubkey(4),
            to_owner: MilliSats::from_msat(to_owner),
            to_other: MilliSats::from_msat(rest - to_owner),
            htlcs: &htlcs,
            fee_rate_per_kb: rate,
            revocation_hash: rev_preimage(0).hash(),
            delay: Delay::Blocks(delay),
            number: NUMBER,
        };
        let Ok(c) = commitment::build(&spec) else {
            // Only possible when every output is dust, impossible here.
            return Err(TestCaseError::fail("build failed"));
        };
        let tx = c.tx();
        let non_dust: Vec<&HtlcSpec> = htlcs.iter().filter(|h| h.amount.to_msat() / 1000 >= 546).collect();

        // R3.6-a, R3.6-b: the fee is the normative one for the non-dust count.
        prop_assert_eq!(c.fee_split().fee, commitment_fee(rate, non_dust.len()));
        // Value is conserved: outputs + fee paid + truncated msat + dust = funding.
        let outs: Amount = tx.output.iter().map(|o| o.value).sum();
        let truncated = (to_owner % 1000 + (rest - to_owner) % 1000 + non_dust.iter().map(|h| h.amount.to_msat() % 1000).sum::<u64>()) / 1000;
        let dust_htlcs: u64 = htlcs.iter().filter(|h| h.amount.to_msat() / 1000 < 546).map(|h| h.amount.to_msat()).sum();
        prop_assert_eq!(outs + c.absolute_fee(&f), Amount::from_sat(FUNDING_SAT));
        let split = c.fee_split();
        let balances_kept = split.local_output().unwrap_or(Amount::ZERO) + split.remote_output().unwrap_or(Amount::ZERO);
        let htlc_outs: u64 = non_dust.iter().map(|h| h.amount.to_msat() / 1000).sum();
        prop_assert_eq!(outs, balances_kept + Amount::from_sat(htlc_outs));
        // R3.6-c: nobody pays more than their balance, and the fee is paid in full when possible.
        prop_assert!(split.local_paid <= MilliSats::from_msat(to_owner).to_sat_floor());
        prop_assert!(split.remote_paid <= MilliSats::from_msat(rest - to_owner).to_sat_floor());
        let _ = (truncated, dust_htlcs);
        // D9, R3.6-d: no dust output.
        prop_assert!(tx.output.iter().all(|o| o.value >= DUST_LIMIT));
        // BIP69: sorted by value then script.
        prop_assert!(tx.output.windows(2).all(|w| (w[0].value, w[0].script_pubkey.as_bytes()) <= (w[1].value, w[1].script_pubkey.as_bytes())));
        // Every non-dust HTLC has exactly one output, with the right script;
        // every dust one has none.
        for h in &htlcs {
            let outs: Vec<_> = c.outputs().iter().filter(|o| matches!(o.kind, OutputKind::Htlc(x) if x.direction == h.direction && x.id == h.id)).collect();
            if h.amount.to_msat() / 1000 >= 546 {
                prop_assert_eq!(outs.len(), 1);
                let script = match h.direction {
                    HtlcDirection::Offered => offered_htlc_script(&h.r_hash, &spec.revocation_hash, &pubkey(2), &pubkey(4), h.expiry, spec.delay),
                    HtlcDirection::Received => received_htlc_script(&h.r_hash, &spec.revocation_hash, &pubkey(2), &pubkey(4), h.expiry, spec.delay),
                };
                prop_assert_eq!(outs[0].witness_script.as_ref(), Some(&script));
                prop_assert_eq!(outs[0].value, h.amount.to_sat_floor());
            } else {
                prop_assert!(outs.is_empty());
            }
        }
        // The output map describes the transaction exactly.
        prop_assert_eq!(c.outputs().len(), tx.output.len());
        for (o, txout) in c.outputs().iter().zip(&tx.output) {
            prop_assert_eq!(o.value, txout.value);
            let spk = match &o.witness_script {
                Some(ws) => ScriptBuf::new_p2wsh(&ws.wscript_hash()),
                None => ScriptBuf::new_p2wpkh(&pubkey(4).wpubkey_hash()),
            };
            prop_assert_eq!(&spk, &txout.script_pubkey);
        }
        // Deterministic: the HTLC list's order does not matter.
        let mut reversed = htlcs.clone();
        reversed.reverse();
        let again = commitment::build(&CommitmentSpec { htlcs: &reversed, ..spec }).unwrap();
        prop_assert_eq!(again.tx(), tx);
        prop_assert_eq!(again.outputs(), c.outputs());
        // The txid and the signature hash, which the crate computes from the
        // outputs serialized once, are rust-bitcoin's.
        prop_assert_eq!(c.txid(), tx.compute_txid());
        prop_assert_eq!(c.sighash(&f), f.sighash(tx));
    }

    /// The scripts the crate writes byte by byte are those rust-bitcoin's
    /// `Builder` assembles from docs/transactions.md, for any keys, expiry
    /// (every integer push size, heights and times) and delay.
    #[test]
    fn scripts_match_builder(
        owner in 1u64..1000,
        other in 1u64..1000,
        r_seed: [u8; 32],
        rev_seed: [u8; 32],
        expiry in prop_oneof![0u32..=20, 100u32..300, 32_000u32..33_000, 8_000_000u32..8_400_000, any::<u32>()],
        delay in prop_oneof![(0u16..=20).prop_map(Delay::Blocks), any::<u16>().prop_map(Delay::Blocks), (0u32..=Delay::MAX_SECONDS).prop_map(Delay::Seconds)],
    ) {
        use bitcoin::opcodes::all::*;
        use bitcoin::script::Builder;
        let (owner, other) = (pubkey(owner), pubkey(other));
        let (r_hash, rev) = (sha256::Hash::hash(&r_seed), sha256::Hash::hash(&rev_seed));
        let expiry = absolute::LockTime::from_consensus(expiry);
        let prefix = || Builder::new()
            .push_opcode(OP_SIZE).push_int(32).push_opcode(OP_EQUALVERIFY)
            .push_opcode(OP_HASH160).push_opcode(OP_DUP).push_slice(ripemd(&r_hash)).push_opcode(OP_EQUAL);
        let offered = prefix()
            .push_opcode(OP_SWAP).push_slice(ripemd(&rev)).push_opcode(OP_EQUAL).push_opcode(OP_BOOLOR)
            .push_opcode(OP_IF).push_slice(other.to_bytes())
            .push_opcode(OP_ELSE).push_lock_time(expiry).push_opcode(OP_CLTV)
            .push_sequence(delay.to_sequence()).push_opcode(OP_CSV).push_opcode(OP_2DROP).push_slice(owner.to_bytes())
            .push_opcode(OP_ENDIF).push_opcode(OP_CHECKSIG)
            .into_script();
        let received = prefix()
            .push_opcode(OP_IF).push_sequence(delay.to_sequence()).push_opcode(OP_CSV).push_opcode(OP_2DROP)
            .push_slice(owner.to_bytes())
            .push_opcode(OP_ELSE).push_slice(ripemd(&rev)).push_opcode(OP_EQUAL)
            .push_opcode(OP_NOTIF).push_lock_time(expiry).push_opcode(OP_CLTV).push_opcode(OP_DROP).push_opcode(OP_ENDIF)
            .push_slice(other.to_bytes())
            .push_opcode(OP_ENDIF).push_opcode(OP_CHECKSIG)
            .into_script();
        let to_self = Builder::new()
            .push_opcode(OP_HASH160).push_slice(ripemd(&rev)).push_opcode(OP_EQUAL)
            .push_opcode(OP_IF).push_slice(other.to_bytes())
            .push_opcode(OP_ELSE).push_sequence(delay.to_sequence()).push_opcode(OP_CSV).push_opcode(OP_DROP)
            .push_slice(owner.to_bytes())
            .push_opcode(OP_ENDIF).push_opcode(OP_CHECKSIG)
            .into_script();
        prop_assert_eq!(offered_htlc_script(&r_hash, &rev, &owner, &other, expiry, delay), offered);
        prop_assert_eq!(received_htlc_script(&r_hash, &rev, &owner, &other, expiry, delay), received);
        prop_assert_eq!(to_self_script(&rev, &other, delay, &owner), to_self);
    }
}

// ---------------------------------------------------------------------------
// 1500 HTLCs.
// ---------------------------------------------------------------------------

fn many_htlcs(n: u64) -> Vec<HtlcSpec> {
    (0..n)
        .map(|i| {
            HtlcSpec::new(
                if i % 2 == 0 { HtlcDirection::Offered } else { HtlcDirection::Received },
                i,
                MilliSats::from_msat(600_000 + i),
                sha256::Hash::hash(&i.to_le_bytes()),
                height(600_000 + i as u32),
            )
        })
        .collect()
}

#[test]
fn a_1500_htlc_commitment_builds_signs_and_verifies() {
    let (f, spent) = funding_of(4_000_000);
    let htlcs = many_htlcs(1500);
    // R3.2-c: 1500 HTLCs, every one with its own output.
    let c = build_a(&f, &htlcs, DELAY, 1000);
    assert_eq!(c.tx().output.len(), 1502);
    assert!(c.tx().total_size() < 100_000, "{} bytes", c.tx().total_size());
    let tx = broadcast_a(&f, &spent, &c);
    assert_eq!(tx.compute_txid(), c.txid());
    // More than 252 outputs: a three-byte output count in the txid and
    // hashOutputs serializations.
    assert_eq!(c.sighash(&f), f.sighash(c.tx()));
}

#[test]
fn commitments_stay_within_the_standard_weight() {
    use paychan::tx::commitment::{CommitmentError, MAX_HTLC_OUTPUTS};
    let (f, spent) = funding_of(4_000_000);
    // The most HTLC outputs that fit: built, signed and valid.
    let c = build_a(&f, &many_htlcs(MAX_HTLC_OUTPUTS as u64), DELAY, 1000);
    let tx = broadcast_a(&f, &spent, &c);
    assert!(tx.weight().to_wu() <= 400_000, "{}", tx.weight());
    // One more is refused rather than built non-standard.
    let in_htlcs = MAX_HTLC_OUTPUTS as u64 + 1;
    let htlcs = many_htlcs(in_htlcs);
    let total = f.value().to_sat() * 1000;
    let sum: u64 = htlcs.iter().map(|h| h.amount.to_msat()).sum();
    let spec = CommitmentSpec {
        funding: &f,
        owner_final: pubkey(2),
        other_final: pubkey(4),
        to_owner: MilliSats::from_msat(total / 10 * 6 - sum),
        to_other: MilliSats::from_msat(total - total / 10 * 6),
        htlcs: &htlcs,
        fee_rate_per_kb: 1000,
        revocation_hash: rev_preimage(0).hash(),
        delay: DELAY,
        number: NUMBER,
    };
    assert!(matches!(commitment::build(&spec), Err(CommitmentError::TooHeavy(w)) if w > 400_000));
}

#[test]
fn a_revoked_1500_htlc_commitment_is_swept_completely() {
    let (f, spent) = funding_of(4_000_000);
    let c = build_a(&f, &many_htlcs(1500), DELAY, 1000);
    broadcast_a(&f, &spent, &c);
    let low = FeeRate::from_sat_per_vb(1).unwrap();
    let penalty = build_penalty(&c, rev_preimage(0), dest(), low, &signer_b()).unwrap();
    assert!(penalty.uneconomical.is_empty());
    assert!(penalty.txs.len() > 1, "too big for one transaction");
    let mut swept = std::collections::BTreeSet::new();
    for tx in &penalty.txs {
        // R6.1-c: each penalty transaction is under 100,000 bytes.
        assert!(tx.total_size() < MAX_PENALTY_TX_SIZE, "{} bytes", tx.total_size());
        for (i, input) in tx.input.iter().enumerate() {
            assert_eq!(input.previous_output.txid, c.txid());
            // R6.1-b: every input really spends its output.
            verify_input(tx, i, &c.tx().output[input.previous_output.vout as usize]).expect("penalty input");
            assert!(swept.insert(input.previous_output.vout), "swept twice");
        }
    }
    // R6.1-b: every output but the one already ours is swept.
    let to_other = output_of(&c, |k| *k == OutputKind::ToOther);
    let expected: std::collections::BTreeSet<u32> =
        (0..c.tx().output.len() as u32).filter(|v| *v != to_other).collect();
    assert_eq!(swept, expected);
}

#[test]
fn uneconomical_penalty_outputs_are_reported() {
    let (f, _) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    // At 400 sat/vB an HTLC input (about 104 vbytes) costs about 41 600 sat:
    // more than the 30 000-sat HTLC, less than the 50 000-sat one.
    let high = FeeRate::from_sat_per_vb(400).unwrap();
    let penalty = build_penalty(&c, rev_preimage(0), dest(), high, &signer_b()).unwrap();
    let skipped: Vec<u32> = penalty.uneconomical.iter().map(|(o, _, _)| o.vout).collect();
    assert_eq!(skipped, vec![output_of(&c, is_htlc(HtlcDirection::Received, 0))]);
    let (_, value, cost) = penalty.uneconomical[0];
    assert!(cost >= value && cost < Amount::from_sat(50_000));
    assert_eq!(penalty.txs.len(), 1);
    assert_eq!(penalty.txs[0].input.len(), 2);
    // Nothing is lost silently: every output is swept, reported, or ours.
    assert_eq!(penalty.txs[0].input.len() + skipped.len() + 1, c.tx().output.len());
}

#[test]
fn commitment_rejects_inconsistent_specs() {
    let (f, _) = funding();
    let spec = CommitmentSpec {
        funding: &f,
        owner_final: pubkey(2),
        other_final: pubkey(4),
        to_owner: MilliSats::from_msat(1),
        to_other: MilliSats::from_msat(FUNDING_SAT * 1000),
        htlcs: &[],
        fee_rate_per_kb: 1000,
        revocation_hash: rev_preimage(0).hash(),
        delay: DELAY,
        number: NUMBER,
    };
    assert!(matches!(commitment::build(&spec), Err(commitment::CommitmentError::ValueMismatch { .. })));
    let dup = [
        htlc(HtlcDirection::Offered, 5, 1_000_000, 1, height(1)),
        htlc(HtlcDirection::Offered, 5, 2_000_000, 2, height(1)),
    ];
    let spec = CommitmentSpec {
        to_owner: MilliSats::from_msat(0),
        to_other: MilliSats::from_msat(FUNDING_SAT * 1000 - 3_000_000),
        htlcs: &dup,
        ..spec
    };
    assert!(matches!(commitment::build(&spec), Err(commitment::CommitmentError::DuplicateHtlc { id: 5, .. })));
    // R3.6-c, R3.6-e: an owner with 300 sat cannot pay half of a 4020-sat
    // fee: it pays all it has, the other side the rest, and the owner has
    // not paid its share.
    let poor = CommitmentSpec {
        to_owner: MilliSats::from_msat(300_000),
        to_other: MilliSats::from_msat(FUNDING_SAT * 1000 - 300_000 - 80_400_000),
        htlcs: &standard_htlcs(),
        fee_rate_per_kb: 10_000,
        ..spec
    };
    let c = commitment::build(&poor).unwrap();
    assert_eq!((c.fee_split().local_paid, c.fee_split().remote_paid), (Amount::from_sat(300), Amount::from_sat(3720)));
    assert!(!c.fee_split().local_paid_share());
    assert!(c.fee_split().remote_paid_share());
    assert!(c.outputs().iter().all(|o| o.kind != OutputKind::ToOwner), "R3.6-d: nothing left for the owner");
    // The signer's public keys are what the scripts use.
    assert_eq!(signer_a().public_key(KeyRole::Final), pubkey(2));
    assert_eq!(signer_a().public_key(KeyRole::Commit), pubkey(1));
}

/// docs/transactions.md shows every transaction vector as a worked example,
/// and they must stay the same bytes.
#[test]
fn the_specification_shows_the_vectors() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/transactions.md")).unwrap();
    let doc_hex: String = doc.split_whitespace().collect();
    for name in ["tx_commitment_no_htlcs", "tx_commitment_htlcs", "tx_close", "tx_penalty", "tx_to_self_sweep"] {
        let bytes = common::read_hex_vector(&format!("{}/tests/vectors/{name}.hex", env!("CARGO_MANIFEST_DIR")));
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(doc_hex.contains(&hex), "docs/transactions.md does not show {name}");
    }
}

// ---------------------------------------------------------------------------
// The commitment number on chain (ruling D10).
// ---------------------------------------------------------------------------

#[test]
fn commitments_carry_their_obscured_number_in_the_lock_fields() {
    // D10: the obscuring factor is the lower 48 bits of SHA256(funder
    // commit_key || fundee commit_key); OBSCURING was computed outside the
    // crate.
    assert_eq!(commitment::obscuring_factor(&pubkey(1), &pubkey(3)), OBSCURING);
    assert_ne!(commitment::obscuring_factor(&pubkey(3), &pubkey(1)), OBSCURING, "the order is funder, fundee");
    let (f, spent) = funding();
    let c = build_a(&f, &standard_htlcs(), DELAY, 10_000);
    // 42 XOR 0x5253382dacf5 = 0x5253382dacdf: nLockTime 0x20 | 2dacdf,
    // nSequence 0x80 | 525338 (computed by hand).
    assert_eq!(c.tx().lock_time.to_consensus_u32(), 0x202d_acdf);
    assert_eq!(c.tx().input[0].sequence.0, 0x8052_5338);
    // Read back in O(1).
    assert_eq!(commitment::commitment_number(c.tx(), OBSCURING), Some(42));
    // The lock time is a timestamp in 1987, below any block's median time
    // past, and bit 31 of nSequence disables relative locks (BIP 68): the
    // signed commitment is valid at once (the interpreter checks the whole
    // spend, lock fields included).
    assert!(c.tx().lock_time.is_block_time());
    assert!(!c.tx().input[0].sequence.is_relative_lock_time());
    broadcast_a(&f, &spent, &c);
    // A close carries no number.
    let close = build_close(&close_spec(&f, pubkey(2), pubkey(4), 700_000_500, 3000)).unwrap();
    assert_eq!(commitment::commitment_number(close.tx(), OBSCURING), None);
}

proptest! {
    /// D10: every number below 2^48 survives the lock fields, whatever the
    /// factor.
    #[test]
    fn any_commitment_number_reads_back(number in 0u64..(1 << 48), obscuring in 0u64..(1 << 48)) {
        let (lock, sequence) = CommitmentNumber { number, obscuring }.lock_fields();
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: lock,
            input: vec![bitcoin::TxIn { sequence, ..Default::default() }],
            output: vec![],
        };
        prop_assert_eq!(commitment::commitment_number(&tx, obscuring), Some(number));
        prop_assert_eq!(lock.to_consensus_u32() >> 24, 0x20);
        prop_assert_eq!(sequence.0 >> 24, 0x80);
    }
}
