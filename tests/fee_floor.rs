//! Fee floors proven on real transactions: commitments with every HTLC count
//! from 0 to `MAX_HTLC_OUTPUTS`, and the close transaction, built by the
//! crate's transaction layer, given the largest anchor witness (73-byte
//! signatures), and measured with rust-bitcoin's weight. The worst-case
//! sizes of `paychan::fees` must match the measurements, and the derived
//! fee floors must pay Bitcoin Core's relay fee rate on them (fee ≥
//! ⌈rate × vsize / 1000⌉) and be the lowest that do.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{absolute, Amount, ScriptBuf, TxOut, Witness};
use common::chain::{funding_tx, verify_input};
use common::{pubkey, secret};
use paychan::fees::{
    close_max_vsize, commitment_fee, commitment_max_vsize, min_close_fee, min_commitment_fee_rate,
    DEFAULT_MIN_CLOSE_FEE, DEFAULT_MIN_FEE_RATE, DEFAULT_MIN_RELAY_FEE_RATE,
};
use paychan::tx::closing::{build_close, CloseSpec};
use paychan::tx::commitment::{self, CommitmentSpec, HtlcDirection, HtlcSpec, OutputKind, MAX_HTLC_OUTPUTS};
use paychan::tx::funding::{anchor_witness_script, validate_funding, FundingOutput};
use paychan::tx::InMemorySigner;
use paychan::{Delay, MilliSats};

/// Relay fee rates (sat per 1000 vbytes) the floors are checked at.
const RELAY_RATES: [u32; 10] = [1, 100, 253, 999, 1000, 1001, 2000, 5000, 25_000, 100_000];

/// A's keys are secret(1) (commit) and secret(2) (final); B's 3 and 4.
fn signers() -> (InMemorySigner, InMemorySigner) {
    (InMemorySigner::new(secret(1), secret(2)), InMemorySigner::new(secret(3), secret(4)))
}

/// The anchor: 4,000,000 sat at output 0 of a funding transaction with one
/// segwit input, validated by the crate.
fn funding() -> (FundingOutput, TxOut) {
    let value = Amount::from_sat(4_000_000);
    let spk = ScriptBuf::new_p2wsh(&anchor_witness_script(&pubkey(1), &pubkey(3)).wscript_hash());
    let tx = funding_tx(spk, value);
    let f = validate_funding(&tx, 0, &pubkey(1), &pubkey(3), value).unwrap();
    (f, tx.output[0].clone())
}

/// The largest anchor witness: the empty dummy, two 73-byte signatures
/// (`30 46 02 21 00 <32> 02 21 00 <32> 01`: DER with 33-byte R and S, then
/// SIGHASH_ALL) and the real 71-byte 2-of-2 script.
fn worst_case_witness(f: &FundingOutput) -> Witness {
    let mut sig = vec![0x30, 0x46, 0x02, 0x21, 0x00];
    sig.extend([0x7f; 32]);
    sig.extend([0x02, 0x21, 0x00]);
    sig.extend([0x7f; 32]);
    sig.push(0x01);
    assert_eq!(sig.len(), 73);
    assert_eq!(f.witness_script().len(), 71);
    Witness::from_slice(&[vec![], sig.clone(), sig, f.witness_script().to_bytes()])
}

/// `n` HTLCs of at least 600 sat each: not dust, so each has an output and
/// counts in the bytecount (D9).
fn htlcs(n: usize) -> Vec<HtlcSpec> {
    (0..n as u64)
        .map(|i| {
            HtlcSpec::new(
                if i % 2 == 0 { HtlcDirection::Offered } else { HtlcDirection::Received },
                i,
                MilliSats::from_msat(600_000 + i),
                sha256::Hash::hash(&i.to_le_bytes()),
                absolute::LockTime::from_height(600_000 + i as u32).unwrap(),
            )
        })
        .collect()
}

/// The R3.6-a bytecount and R3.6-b fee, written out independently:
/// ⌊(338 + 32n) × rate / 1000⌋ rounded down to even.
fn normative_fee(rate: u32, n: usize) -> u64 {
    let fee = (338 + 32 * n as u64) * u64::from(rate) / 1000;
    fee - fee % 2
}

/// Bitcoin Core's relay rule: `fee ≥ ⌈relay × vsize / 1000⌉`.
fn relays(fee: u64, relay: u32, vsize: u64) -> bool {
    fee * 1000 >= u64::from(relay) * vsize
}

/// The real virtual size of the worst-case commitment with `n` HTLC outputs,
/// for every n from 0 to MAX_HTLC_OUTPUTS: one real commitment with the most
/// HTLCs is built, and its two balance outputs are kept with the first `n`
/// of its HTLC outputs.
fn measured_commitment_vsizes() -> Vec<u64> {
    let (f, spent) = funding();
    let all = htlcs(MAX_HTLC_OUTPUTS);
    let in_htlcs: u64 = all.iter().map(|h| h.amount.to_msat()).sum();
    let c = commitment::build(&CommitmentSpec {
        funding: &f,
        owner_final: pubkey(2),
        other_final: pubkey(4),
        to_owner: MilliSats::from_msat(2_400_000_000 - in_htlcs),
        to_other: MilliSats::from_msat(1_600_000_000),
        htlcs: &all,
        fee_rate_per_kb: DEFAULT_MIN_FEE_RATE,
        revocation_hash: sha256::Hash::hash(b"revocation"),
        delay: Delay::Blocks(144),
        number: paychan::tx::commitment::CommitmentNumber::default(),
    })
    .unwrap();
    // R3.6-a, R3.6-b: the commitment's fee is the normative one.
    assert_eq!(c.fee_split().fee, Amount::from_sat(normative_fee(DEFAULT_MIN_FEE_RATE, MAX_HTLC_OUTPUTS)));
    assert_eq!(c.tx().output.len(), MAX_HTLC_OUTPUTS + 2, "both balance outputs and every HTLC output");

    // The real thing, signed by both sides and run through Core's
    // interpreter, is no larger than the worst case (its low-S signatures
    // are at most 72 bytes).
    let (a, b) = signers();
    let signed = c.finalize(&f, &a, &pubkey(3), &c.sign(&f, &b).unwrap()).unwrap();
    verify_input(&signed, 0, &spent).expect("the commitment spends the anchor");
    assert!(signed.vsize() as u64 <= commitment_max_vsize(MAX_HTLC_OUTPUTS));

    let (balances, htlc_outputs): (Vec<_>, Vec<_>) = c
        .outputs()
        .iter()
        .map(|o| (matches!(o.kind, OutputKind::ToOwner | OutputKind::ToOther), c.tx().output[o.vout as usize].clone()))
        .partition(|(balance, _)| *balance);
    assert_eq!(balances.len(), 2);
    let mut tx = c.tx().clone();
    tx.input[0].witness = worst_case_witness(&f);
    tx.output = balances.into_iter().map(|(_, o)| o).collect();
    let mut sizes = Vec::with_capacity(MAX_HTLC_OUTPUTS + 1);
    for n in 0..=MAX_HTLC_OUTPUTS {
        if n > 0 {
            tx.output.push(htlc_outputs[n - 1].1.clone());
        }
        sizes.push(tx.vsize() as u64);
    }
    sizes
}

#[test]
fn commitment_fee_floor_pays_the_relay_rate_at_every_htlc_count() {
    let sizes = measured_commitment_vsizes();

    // D4: the worst-case size derived from the layout is the measured one.
    for (n, &vsize) in sizes.iter().enumerate() {
        assert_eq!(commitment_max_vsize(n), vsize, "{n} HTLC outputs");
    }
    // By hand: 4 + 1 + 41 + 4 + 43 + 31 = 124 bytes, the output count (1
    // byte up to 252 outputs, 3 from 253) and 43 per HTLC output, plus the
    // 224-byte witness, a quarter of it: 56 vbytes.
    assert_eq!(sizes[0], 124 + 1 + 56);
    assert_eq!(sizes[250], 124 + 1 + 43 * 250 + 56); // 252 outputs
    assert_eq!(sizes[251], 124 + 3 + 43 * 251 + 56); // 253 outputs
    assert_eq!(sizes[MAX_HTLC_OUTPUTS], 99_986);

    // At n = 2321 the bytecount is 338 + 32 × 2321 = 74,610: at 1340 it pays
    // ⌊99,977.4⌋ → 99,976 < 99,986, at 1341 ⌊100,052.01⌋ = 100,052.
    assert_eq!(DEFAULT_MIN_FEE_RATE, 1341);
    assert_eq!(DEFAULT_MIN_RELAY_FEE_RATE, 1000);
    for (n, &vsize) in sizes.iter().enumerate() {
        let fee = commitment_fee(DEFAULT_MIN_FEE_RATE, n);
        // R3.6-a, R3.6-b
        assert_eq!(fee.to_sat(), normative_fee(DEFAULT_MIN_FEE_RATE, n));
        // 1 sat per real vbyte at every count.
        assert!(fee.to_sat() >= vsize, "{n} HTLC outputs: fee {fee} below {vsize} vbytes");
    }
    // Minimal: one less fails somewhere (first at 2242 HTLC outputs).
    let short: Vec<usize> =
        (0..sizes.len()).filter(|&n| normative_fee(DEFAULT_MIN_FEE_RATE - 1, n) < sizes[n]).collect();
    assert_eq!(short.first(), Some(&2242));

    // Every relay rate: the derived rate suffices at every count, and the
    // rate below it does not.
    let ok = |rate: u32, relay: u32| sizes.iter().enumerate().all(|(n, &v)| relays(normative_fee(rate, n), relay, v));
    for relay in RELAY_RATES {
        let rate = min_commitment_fee_rate(relay);
        assert!(ok(rate, relay), "{rate} at relay {relay}");
        assert!(!ok(rate - 1, relay), "{} also suffices at relay {relay}", rate - 1);
    }
    assert_eq!(min_commitment_fee_rate(DEFAULT_MIN_RELAY_FEE_RATE), DEFAULT_MIN_FEE_RATE);
}

#[test]
fn close_fee_floor_pays_the_relay_rate() {
    let (f, spent) = funding();
    let (a, b) = signers();
    let spec = |close_fee: Amount, to_local: MilliSats, to_remote: MilliSats, local, remote| CloseSpec {
        funding: &f,
        local_final: local,
        remote_final: remote,
        to_local,
        to_remote,
        close_fee,
    };
    let (local, remote) = (MilliSats::from_msat(2_400_000_000), MilliSats::from_msat(1_600_000_000));
    let ours = build_close(&spec(DEFAULT_MIN_CLOSE_FEE, local, remote, pubkey(2), pubkey(4))).unwrap();
    let theirs = build_close(&spec(DEFAULT_MIN_CLOSE_FEE, remote, local, pubkey(4), pubkey(2))).unwrap();
    assert_eq!(ours.tx().output.len(), 2, "both outputs");
    let signed = ours.finalize(&f, &a, &pubkey(3), &theirs.sign(&f, &b).unwrap()).unwrap();
    verify_input(&signed, 0, &spent).expect("the close spends the anchor");
    assert!(signed.vsize() as u64 <= close_max_vsize());

    // D4: the worst case, measured: 4 + 1 + 41 + 1 + 2 × 31 + 4 = 113 bytes
    // and the 224-byte witness: (4 × 113 + 224) / 4 = 169 vbytes.
    let mut worst = ours.tx().clone();
    worst.input[0].witness = worst_case_witness(&f);
    assert_eq!(worst.vsize() as u64, close_max_vsize());
    assert_eq!(close_max_vsize(), 169);

    // The close pays exactly close_fee (whole-satoshi balances).
    let paid = f.value() - ours.tx().output.iter().map(|o| o.value).sum::<Amount>();
    assert_eq!(paid, DEFAULT_MIN_CLOSE_FEE);
    // 169 vbytes at 1 sat/vB need 169 sat; the fee is even (R4.2-b): 170.
    assert_eq!(DEFAULT_MIN_CLOSE_FEE, Amount::from_sat(170));
    for relay in RELAY_RATES {
        let fee = min_close_fee(relay).to_sat();
        assert_eq!(fee % 2, 0, "R4.2-b");
        assert!(relays(fee, relay, 169), "{fee} at relay {relay}");
        assert!(fee == 0 || !relays(fee - 2, relay, 169), "{} also suffices at relay {relay}", fee - 2);
    }
    assert_eq!(min_close_fee(DEFAULT_MIN_RELAY_FEE_RATE), DEFAULT_MIN_CLOSE_FEE);
}
