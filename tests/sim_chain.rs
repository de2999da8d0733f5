//! The simulated chain with Bitcoin Core's script interpreter as its
//! verifier: real P2WSH spends under `OP_CHECKSEQUENCEVERIFY` and
//! `OP_CHECKLOCKTIMEVERIFY`, refused before their delay and accepted after,
//! and refused with a bad signature.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash as _;
use bitcoin::opcodes::all::{OP_CHECKSIG, OP_CLTV, OP_CSV, OP_DROP};
use bitcoin::script::Builder;
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use paychan::sim::{Reject, SimChain};

use common::chain::verify_input;
use common::{pubkey, sig};

const KEY: u64 = 21;
const OTHER: u64 = 22;
const VALUE: Amount = Amount::from_sat(100_000);

fn chain() -> SimChain {
    SimChain::with_verifier(Box::new(|tx: &Transaction, index: usize, spent: &TxOut| {
        verify_input(tx, index, spent).map_err(|e| format!("{e:?}"))
    }))
}

/// `<delay> OP_CSV OP_DROP <KEY> OP_CHECKSIG`.
fn csv_script(delay: u16) -> ScriptBuf {
    Builder::new()
        .push_int(i64::from(delay))
        .push_opcode(OP_CSV)
        .push_opcode(OP_DROP)
        .push_slice(pubkey(KEY).to_bytes())
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// `<height> OP_CLTV OP_DROP <KEY> OP_CHECKSIG`.
fn cltv_script(height: u32) -> ScriptBuf {
    Builder::new()
        .push_int(i64::from(height))
        .push_opcode(OP_CLTV)
        .push_opcode(OP_DROP)
        .push_slice(pubkey(KEY).to_bytes())
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// A sweep of output 0 of `funding` (P2WSH of `script`), signed by `signer`.
fn sweep(
    funding: &Transaction,
    script: &ScriptBuf,
    sequence: Sequence,
    lock_time: LockTime,
    signer: u64,
) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time,
        input: vec![TxIn {
            previous_output: OutPoint { txid: funding.compute_txid(), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: VALUE - Amount::from_sat(1_000),
            script_pubkey: ScriptBuf::new_p2wpkh(&pubkey(OTHER).wpubkey_hash()),
        }],
    };
    let sighash =
        SighashCache::new(&tx).p2wsh_signature_hash(0, script, VALUE, EcdsaSighashType::All).expect("input 0 exists");
    let signature = bitcoin::ecdsa::Signature::sighash_all(sig(signer, sighash.to_byte_array()));
    tx.input[0].witness = Witness::from_slice(&[signature.serialize().to_vec(), script.to_bytes()]);
    tx
}

#[test]
fn csv_sweep_is_refused_before_its_delay_and_accepted_after() {
    let mut chain = chain();
    let script = csv_script(5);
    let funding = chain.fund(VALUE, ScriptBuf::new_p2wsh(&script.wscript_hash()));
    let outpoint = OutPoint { txid: funding.compute_txid(), vout: 0 };
    let tx = sweep(&funding, &script, Sequence::from_height(5), LockTime::ZERO, KEY);

    // The chain's BIP 68 check: the output needs 5 confirmations first.
    for confirmations in 1..5 {
        assert_eq!(chain.confirmations(&funding.compute_txid()), confirmations);
        assert!(matches!(chain.submit(tx.clone()), Err(Reject::RelativeLock { input: 0, .. })));
        chain.mine();
    }
    // The script's OP_CSV: a sequence below the script's delay never passes,
    // whatever the depth.
    let short = sweep(&funding, &script, Sequence::from_height(4), LockTime::ZERO, KEY);
    assert!(matches!(chain.submit(short), Err(Reject::Script { input: 0, .. })));

    let block = chain.confirm(tx.clone()).expect("the delay has passed");
    assert_eq!(block.txs, vec![tx.clone()]);
    assert_eq!(chain.spender(&outpoint), Some(&tx));
    assert_eq!(chain.submit(tx), Err(Reject::AlreadyKnown));
}

#[test]
fn bad_signatures_are_refused() {
    let mut chain = chain();
    let script = csv_script(0);
    let funding = chain.fund(VALUE, ScriptBuf::new_p2wsh(&script.wscript_hash()));

    let wrong_key = sweep(&funding, &script, Sequence::ZERO, LockTime::ZERO, OTHER);
    assert!(matches!(chain.submit(wrong_key), Err(Reject::Script { input: 0, .. })));

    // Signed, then changed: the signature no longer covers the transaction.
    let mut changed = sweep(&funding, &script, Sequence::ZERO, LockTime::ZERO, KEY);
    changed.output[0].value = VALUE - Amount::from_sat(2_000);
    assert!(matches!(chain.submit(changed), Err(Reject::Script { input: 0, .. })));

    let good = sweep(&funding, &script, Sequence::ZERO, LockTime::ZERO, KEY);
    chain.confirm(good).expect("a valid spend");
}

#[test]
fn cltv_sweep_waits_for_its_height() {
    let mut chain = chain();
    let script = cltv_script(10);
    let funding = chain.fund(VALUE, ScriptBuf::new_p2wsh(&script.wscript_hash()));
    let lock = LockTime::from_height(10).expect("a height");
    let tx = sweep(&funding, &script, Sequence::ENABLE_LOCKTIME_NO_RBF, lock, KEY);

    // nLockTime 10 is final from block 11.
    while chain.height() < 10 {
        assert!(matches!(chain.submit(tx.clone()), Err(Reject::NonFinal { .. })));
        chain.mine();
    }
    // The script's OP_CLTV: a lower nLockTime is final but fails the script.
    let early = sweep(&funding, &script, Sequence::ENABLE_LOCKTIME_NO_RBF, LockTime::from_height(9).unwrap(), KEY);
    assert!(matches!(chain.submit(early), Err(Reject::Script { input: 0, .. })));
    chain.confirm(tx).expect("the lock has passed");
}

#[test]
fn a_reorg_below_the_delay_drops_the_sweep() {
    let mut chain = chain();
    let script = csv_script(3);
    let funding = chain.fund(VALUE, ScriptBuf::new_p2wsh(&script.wscript_hash()));
    chain.mine_empty(2);
    let tx = sweep(&funding, &script, Sequence::from_height(3), LockTime::ZERO, KEY);
    chain.confirm(tx.clone()).expect("3 confirmations");
    let txid = tx.compute_txid();
    assert_eq!(chain.confirmations(&txid), 1);

    // Back one block: still valid, back in the mempool.
    chain.reorg(1);
    assert!(chain.in_mempool(&txid));
    // Back one more: the funding has 2 confirmations, the sweep is dropped.
    chain.reorg(1);
    assert!(!chain.in_mempool(&txid));
    assert!(matches!(chain.submit(tx.clone()), Err(Reject::RelativeLock { input: 0, .. })));
    chain.mine();
    chain.confirm(tx).expect("3 confirmations again");
}
