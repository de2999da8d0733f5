//! The one-way merchant channel end to end, and every check of
//! `oneway.md` with a test of its own: each builds the dishonest message and
//! asserts the exact code; an honest payment is the control.

mod common;

use bitcoin::psbt::Psbt;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use common::chain::verify_input;
use paychan::oneway::client::{ClientConfig, ClientEvent};
use paychan::oneway::merchant::{MerchantConfig, MerchantEvent};
use paychan::oneway::script::OutputKind;
use paychan::oneway::wire::{Code, Message, Policy};
use paychan::sim::chain::SimChain;
use paychan::sim::oneway::Shop;

fn p2wpkh(n: u64) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&common::pubkey(n).wpubkey_hash())
}

use common::chain::verified_chain;

fn merchant_config(kind: OutputKind) -> MerchantConfig {
    paychan::sim::oneway::merchant_config(kind, p2wpkh(99), 3)
}

fn client_config(seed: u64) -> ClientConfig {
    paychan::sim::oneway::client_config(Amount::from_sat(1_000_000), 200, p2wpkh(500 + seed))
}

/// A shop with one client whose channel is open.
fn open_shop(kind: OutputKind) -> (Shop, OutPoint) {
    let mut shop = Shop::new(merchant_config(kind), verified_chain());
    shop.add_client(client_config(1), 1);
    let id = shop.merchant.channels().next().copied().unwrap_or_else(|| panic!("no channel: {:#?}", shop.log));
    assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::ChannelOpen { .. })));
    (shop, id)
}

/// Invoices `sat` and lets the client pay it.
fn order(shop: &mut Shop, id: OutPoint, sat: u64) -> u64 {
    let invoice = shop.merchant.invoice(id, Amount::from_sat(sat)).unwrap();
    shop.pump();
    shop.clients[0].client.pay(invoice).unwrap();
    shop.pump();
    invoice
}

#[test]
fn two_orders_then_the_merchant_closes() {
    for kind in [OutputKind::P2wsh, OutputKind::P2sh] {
        let (mut shop, id) = open_shop(kind);
        order(&mut shop, id, 20_000);
        order(&mut shop, id, 30_000);
        // M3-g: each payment stored, then reported.
        let paid: Vec<Amount> = shop
            .merchant_events
            .iter()
            .filter_map(|e| match e {
                MerchantEvent::PaymentReceived { total, .. } => Some(*total),
                _ => None,
            })
            .collect();
        assert_eq!(paid, vec![Amount::from_sat(20_000), Amount::from_sat(50_000)]);
        assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(50_000)));
        // M4-a: the close is the best payment, countersigned; the chain
        // (Bitcoin Core's interpreter) accepts it.
        shop.merchant.close(id).unwrap();
        shop.pump();
        shop.mine();
        assert!(shop.refused.is_empty(), "{:?}", shop.refused);
        assert_eq!(shop.received(&p2wpkh(99)), Amount::from_sat(50_000));
        // M4-c: the client checked the close it received.
        assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::CloseSeen { problem: None, .. })));
        shop.mine_n(6);
        assert!(shop.merchant_events.iter().any(|e| matches!(e, MerchantEvent::ChannelSettled { ours: true, .. })));
    }
}

#[test]
fn a_merchant_that_never_closes_is_refunded_after_t() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 20_000);
    // The merchant vanishes: its state is gone from the shop.
    let t = shop.clients[0].client.channel().unwrap().script.locktime().to_consensus_u32();
    shop.merchant =
        paychan::oneway::merchant::Merchant::new(merchant_config(OutputKind::P2wsh), shop.merchant_signer.clone());
    while shop.chain.height() < t + 8 {
        shop.mine();
    }
    // M4-d: refunded, and buried.
    assert!(shop.refused.is_empty(), "{:?}", shop.refused);
    assert!(shop.received(&p2wpkh(501)) > Amount::from_sat(990_000));
    assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::Settled { refund: true, .. })));
}

// ---------------------------------------------------------------------------
// Every check, one test each (the list at the end of oneway.md).
// ---------------------------------------------------------------------------

use paychan::oneway::merchant::{Merchant, MerchantOutput};
use paychan::oneway::script::ChannelScript;
use paychan::oneway::tx::ChannelOutput;
use paychan::oneway::wire::SessionId;
use paychan::tx::KeyRole;

/// What the merchant answered to one message: the refusal code, or `None`
/// for an ack, an accept, or a pending chain question.
fn answer(m: &mut Merchant) -> Option<Code> {
    let mut code = None;
    while let Some(o) = m.poll_output() {
        match o {
            MerchantOutput::Persist { version, .. } => m.handle_persisted(version),
            MerchantOutput::Send { message: Message::Error { refusal, .. } | Message::Reject(refusal), .. } => {
                code = Some(refusal.code)
            }
            _ => {}
        }
    }
    code
}

/// The client's next payment of an order of `sat`, signed, not delivered.
fn next_payment(shop: &mut Shop, id: OutPoint, sat: u64) -> (u64, Psbt) {
    let invoice = shop.merchant.invoice(id, Amount::from_sat(sat)).unwrap();
    shop.pump();
    shop.clients[0].client.pay(invoice).unwrap();
    while let Some(o) = shop.clients[0].client.poll_output() {
        match o {
            paychan::oneway::client::ClientOutput::Persist { version, .. } => {
                shop.clients[0].client.handle_persisted(version)
            }
            paychan::oneway::client::ClientOutput::Send(Message::Payment { psbt, .. }) => {
                return (invoice, Psbt::deserialize(&psbt).unwrap());
            }
            _ => {}
        }
    }
    panic!("no payment")
}

fn pay_with(shop: &mut Shop, id: OutPoint, invoice: u64, psbt: &Psbt) -> Option<Code> {
    shop.merchant.handle_message(0, Message::Payment { channel_id: id, invoice_id: invoice, psbt: psbt.serialize() });
    answer(&mut shop.merchant)
}

/// The channel output as the client holds it.
fn channel(shop: &Shop) -> ChannelOutput {
    shop.clients[0].client.channel().unwrap().clone()
}

/// Replaces the client's signature on `psbt` by a fresh one over its
/// transaction as it is now (to isolate one change).
fn resign(shop: &Shop, psbt: &mut Psbt) {
    let c = channel(shop);
    let sig = c.sign(&psbt.unsigned_tx, &*shop.clients[0].signer, KeyRole::Oneway(0)).unwrap();
    let key = bitcoin::PublicKey::new(c.script.client().0);
    psbt.inputs[0].partial_sigs = [(key, bitcoin::ecdsa::Signature::sighash_all(sig))].into();
}

#[test]
fn an_honest_payment_is_accepted() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    let (invoice, psbt) = next_payment(&mut shop, id, 10_000);
    // The control: no refusal, and the total stored (M3-g).
    assert_eq!(pay_with(&mut shop, id, invoice, &psbt), None);
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(10_000)));
    // M3-f: the transaction the merchant would broadcast passes the
    // interpreter.
    let tx = shop.merchant.best_transaction(&id).unwrap();
    verify_input(&tx, 0, &channel(&shop).txout()).unwrap();
}

#[test]
fn a_replayed_payment_is_acked_again_and_an_older_one_refused() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    let (first, old) = next_payment(&mut shop, id, 10_000);
    assert_eq!(pay_with(&mut shop, id, first, &old), None);
    // M5-b: the same payment again is the same ack, counted once.
    assert_eq!(pay_with(&mut shop, id, first, &old), None);
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(10_000)));
    let (second, new) = next_payment(&mut shop, id, 5_000);
    assert_eq!(pay_with(&mut shop, id, second, &new), None);
    // M3-c: the older payment now: for a stale invoice...
    assert_eq!(pay_with(&mut shop, id, first, &old), Some(Code::StaleInvoice));
    // ...and under the current one, not its total.
    let (third, _) = next_payment(&mut shop, id, 1_000);
    assert_eq!(pay_with(&mut shop, id, third, &old), Some(Code::NoPayeeOutput));
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(15_000)));
}

/// One check of oneway.md's list on a payment: the honest payment changed
/// by `change` (and signed again when `resign_it`, so that only the change is
/// judged) is refused with `code`, changes nothing, and the honest payment
/// is still taken afterwards (the control).
fn payment_refused(change: impl Fn(&mut Psbt, &ChannelOutput), resign_it: bool, code: Code) {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    let (invoice, honest) = next_payment(&mut shop, id, 10_000);
    let mut p = honest.clone();
    change(&mut p, &channel(&shop));
    if resign_it {
        resign(&shop, &mut p);
    }
    assert_eq!(pay_with(&mut shop, id, invoice, &p), Some(code));
    // M5-a: nothing stored changed.
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::ZERO));
    assert_eq!(pay_with(&mut shop, id, invoice, &honest), None);
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(10_000)));
}

macro_rules! payment_check {
    ($(#[$doc:meta])* $name:ident, $code:expr, resign: $resign:expr, |$p:ident, $c:ident| $body:block) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            #[allow(unused_variables)]
            payment_refused(|$p: &mut Psbt, $c: &ChannelOutput| $body, $resign, $code);
        }
    };
}

fn client_key(c: &ChannelOutput) -> bitcoin::PublicKey {
    bitcoin::PublicKey::new(c.script.client().0)
}

fn push_output(p: &mut Psbt, value: Amount, script_pubkey: ScriptBuf) {
    p.unsigned_tx.output.push(bitcoin::TxOut { value, script_pubkey });
    p.outputs.push(Default::default());
}

payment_check!(
    /// M3-e: the client's signature missing.
    a_missing_partial_signature_is_refused, Code::SignatureSet, resign: false, |p, c| {
    p.inputs[0].partial_sigs.clear();
});
payment_check!(
    /// M3-e: a signature besides the client's.
    an_extra_partial_signature_is_refused, Code::SignatureSet, resign: false, |p, c| {
    let sig = p.inputs[0].partial_sigs[&client_key(c)];
    p.inputs[0].partial_sigs.insert(bitcoin::PublicKey::new(common::pubkey(77).0), sig);
});
payment_check!(
    /// M3-e: SIGHASH_NONE.
    sighash_none_is_refused, Code::SighashType, resign: false, |p, c| {
    p.inputs[0].partial_sigs.get_mut(&client_key(c)).unwrap().sighash_type = bitcoin::sighash::EcdsaSighashType::None;
});
payment_check!(
    /// M3-e: SIGHASH_SINGLE.
    sighash_single_is_refused, Code::SighashType, resign: false, |p, c| {
    p.inputs[0].partial_sigs.get_mut(&client_key(c)).unwrap().sighash_type = bitcoin::sighash::EcdsaSighashType::Single;
});
payment_check!(
    /// M3-e: SIGHASH_ALL|ANYONECANPAY.
    sighash_anyonecanpay_is_refused, Code::SighashType, resign: false, |p, c| {
    p.inputs[0].partial_sigs.get_mut(&client_key(c)).unwrap().sighash_type =
        bitcoin::sighash::EcdsaSighashType::AllPlusAnyoneCanPay;
});
payment_check!(
    /// M3-e: a PSBT-level sighash type other than ALL.
    a_psbt_sighash_type_other_than_all_is_refused, Code::SighashType, resign: false, |p, c| {
    p.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from(bitcoin::sighash::EcdsaSighashType::None));
});
payment_check!(
    /// M3-e: a high-S signature.
    a_high_s_signature_is_refused, Code::SignatureEncoding, resign: false, |p, c| {
    let s = p.inputs[0].partial_sigs.get_mut(&client_key(c)).unwrap();
    let high = common::high_s(&s.signature.serialize_compact());
    s.signature = bitcoin::secp256k1::ecdsa::Signature::from_compact(&high).unwrap();
});
payment_check!(
    /// M3-e: a signature of another transaction.
    a_signature_of_another_transaction_is_refused, Code::InvalidSignature, resign: false, |p, c| {
    p.unsigned_tx.output[1].value -= Amount::from_sat(1);
});
payment_check!(
    /// M3-c: version 0.
    version_0_is_refused, Code::BadVersion, resign: true, |p, c| {
    p.unsigned_tx.version = bitcoin::transaction::Version(0);
});
payment_check!(
    /// M3-c: version 3.
    version_3_is_refused, Code::BadVersion, resign: true, |p, c| {
    p.unsigned_tx.version = bitcoin::transaction::Version(3);
});
payment_check!(
    /// M3-c: version 0x7fffffff.
    version_0x7fffffff_is_refused, Code::BadVersion, resign: true, |p, c| {
    p.unsigned_tx.version = bitcoin::transaction::Version(0x7fff_ffff);
});
payment_check!(
    /// M3-c: a non-final sequence.
    a_non_final_sequence_is_refused, Code::NotFinal, resign: true, |p, c| {
    p.unsigned_tx.input[0].sequence = bitcoin::Sequence(0xFFFF_FFFE);
});
payment_check!(
    /// M3-c: a future nLockTime.
    a_future_lock_time_is_refused, Code::NotFinal, resign: true, |p, c| {
    p.unsigned_tx.lock_time = bitcoin::absolute::LockTime::from_height(900_000).unwrap();
});
payment_check!(
    /// M3-c: a bare-multisig output.
    a_bare_multisig_output_is_refused, Code::NonStandardOutput, resign: true, |p, c| {
    let bare = bitcoin::script::Builder::new()
        .push_opcode(bitcoin::opcodes::all::OP_PUSHNUM_1)
        .push_key(&bitcoin::PublicKey::new(common::pubkey(5).0))
        .push_opcode(bitcoin::opcodes::all::OP_PUSHNUM_1)
        .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
        .into_script();
    p.unsigned_tx.output[1].value -= Amount::from_sat(1_000);
    push_output(p, Amount::from_sat(1_000), bare);
});
payment_check!(
    /// M3-c: an OP_TRUE output.
    an_op_true_output_is_refused, Code::NonStandardOutput, resign: true, |p, c| {
    p.unsigned_tx.output[1].value -= Amount::from_sat(1_000);
    push_output(p, Amount::from_sat(1_000), ScriptBuf::from_bytes(vec![0x51]));
});
payment_check!(
    /// M3-c: a zero-value OP_RETURN output.
    a_zero_value_op_return_is_refused, Code::NonStandardOutput, resign: true, |p, c| {
    push_output(p, Amount::ZERO, ScriptBuf::new_op_return([0u8; 4]));
});
payment_check!(
    /// M3-c, E5: outputs that overflow when summed.
    outputs_that_overflow_are_refused, Code::OverCapacity, resign: true, |p, c| {
    p.unsigned_tx.output[1].value = Amount::from_sat(u64::MAX / 2);
    push_output(p, Amount::from_sat(u64::MAX / 2), p2wpkh(3));
});
payment_check!(
    /// M3-c: outputs above the capacity.
    outputs_above_the_capacity_are_refused, Code::OverCapacity, resign: true, |p, c| {
    p.unsigned_tx.output[1].value += Amount::from_sat(10_000);
});
payment_check!(
    /// M3-c: dust change.
    dust_change_is_refused, Code::DustOutput, resign: true, |p, c| {
    p.unsigned_tx.output[1].value = Amount::from_sat(100);
});
payment_check!(
    /// M3-c: no output at all.
    no_output_is_refused, Code::OutputCount, resign: true, |p, c| {
    p.unsigned_tx.output.clear();
    p.outputs.clear();
});
payment_check!(
    /// M3-c: five outputs.
    five_outputs_are_refused, Code::OutputCount, resign: true, |p, c| {
    for n in 0..3 {
        push_output(p, Amount::from_sat(1_000), p2wpkh(10 + n));
    }
    p.unsigned_tx.output[1].value -= Amount::from_sat(3_000);
});
payment_check!(
    /// M3-c: the invoiced total paid twice over two outputs.
    two_payee_outputs_are_refused, Code::NoPayeeOutput, resign: true, |p, c| {
    let payee = p.unsigned_tx.output[0].clone();
    p.unsigned_tx.output[1].value -= payee.value;
    push_output(p, payee.value, payee.script_pubkey);
});
payment_check!(
    /// M3-c: another input.
    another_input_is_refused, Code::WrongInput, resign: false, |p, c| {
    p.unsigned_tx.input[0].previous_output.vout += 1;
});
payment_check!(
    /// M3-d: a fee one satoshi under the floor.
    a_fee_one_satoshi_under_the_floor_is_refused, Code::FeeTooLow, resign: true, |p, c| {
    let size = c.finalized_size(&p.unsigned_tx) as u64;
    let floor = Amount::from_sat((1_000 * size).div_ceil(1000));
    let out: Amount = p.unsigned_tx.output.iter().map(|o| o.value).sum();
    p.unsigned_tx.output[1].value += (c.value - out) - floor + Amount::from_sat(1);
});
payment_check!(
    /// M3-d: a fee above the ceiling and a dust change together.
    a_fee_above_the_ceiling_is_refused, Code::FeeTooHigh, resign: true, |p, c| {
    p.unsigned_tx.output[1].value = Amount::from_sat(600);
});

#[test]
fn a_fee_at_the_floor_is_taken() {
    // M3-d: the floor itself passes.
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    let (invoice, mut p) = next_payment(&mut shop, id, 10_000);
    let c = channel(&shop);
    let size = c.finalized_size(&p.unsigned_tx) as u64;
    let floor = Amount::from_sat((1_000 * size).div_ceil(1000));
    let out: Amount = p.unsigned_tx.output.iter().map(|o| o.value).sum();
    p.unsigned_tx.output[1].value += (c.value - out) - floor;
    resign(&shop, &mut p);
    assert_eq!(pay_with(&mut shop, id, invoice, &p), None);
}

#[test]
fn the_deadline_is_enforced_to_the_block() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    let t = channel(&shop).script.locktime().to_consensus_u32();
    // deadline = T - settle_margin - accept_margin.
    let deadline = t - 6 - 6;
    while shop.chain.height() < deadline - 1 {
        shop.mine();
    }
    // M3-c: one block before the deadline, accepted.
    let (invoice, p) = next_payment(&mut shop, id, 1_000);
    assert_eq!(pay_with(&mut shop, id, invoice, &p), None);
    let invoice = shop.merchant.invoice(id, Amount::from_sat(1_000)).unwrap();
    shop.pump();
    shop.mine();
    // At the deadline, refused (the client would refuse to pay too).
    assert!(shop.clients[0].client.pay(invoice).is_err());
    assert_eq!(pay_with(&mut shop, id, invoice, &p), Some(Code::PastDeadline));
}

/// A session of the merchant, opened by hand: (session, merchant key).
fn session(m: &mut Merchant) -> (SessionId, bitcoin::CompressedPublicKey) {
    m.handle_message(7, Message::RequestChannel { network: "regtest".into() });
    let mut out = None;
    while let Some(o) = m.poll_output() {
        match o {
            MerchantOutput::Persist { version, .. } => m.handle_persisted(version),
            MerchantOutput::Send { message: Message::ChannelKey { session_id, merchant_key, .. }, .. } => {
                out = Some((session_id, bitcoin::CompressedPublicKey::from_slice(&merchant_key).unwrap()))
            }
            _ => {}
        }
    }
    out.unwrap()
}

/// A funded channel for `merchant_key`, confirmed 3 deep, and its honest
/// announce PSBT.
fn funded(
    shop: &mut Shop,
    merchant_key: bitcoin::CompressedPublicKey,
    kind: OutputKind,
) -> (ChannelOutput, Transaction, Psbt) {
    let t = bitcoin::absolute::Height::from_consensus(shop.chain.height() + 200).unwrap();
    let script = ChannelScript::new(common::pubkey(300), merchant_key, t).unwrap();
    let funding = shop.chain.fund(Amount::from_sat(500_000), script.script_pubkey(kind));
    shop.chain.mine_empty(2);
    shop.merchant.handle_block(shop.chain.height(), shop.chain.time());
    answer(&mut shop.merchant);
    let output = ChannelOutput {
        outpoint: OutPoint { txid: funding.compute_txid(), vout: 0 },
        value: Amount::from_sat(500_000),
        script,
        kind,
    };
    let psbt = output.announce_psbt(&funding).unwrap();
    (output, funding, psbt)
}

fn announce(shop: &mut Shop, session: SessionId, psbt: &Psbt) -> Option<Code> {
    shop.merchant.handle_message(7, Message::Announce { session_id: session, psbt: psbt.serialize() });
    answer(&mut shop.merchant)
}

/// One check of oneway.md's list on an announce: the honest announce of a
/// fresh session, changed by `change`, is refused with `code`; the honest
/// one of another fresh session goes on to the chain check (the control).
fn announce_refused(change: impl Fn(&mut Psbt, &mut Shop), code: Code) {
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    let (s, key) = session(&mut shop.merchant);
    let (_, _, mut p) = funded(&mut shop, key, OutputKind::P2wsh);
    change(&mut p, &mut shop);
    assert_eq!(announce(&mut shop, s, &p), Some(code));
    assert!(shop.merchant.channels().next().is_none());
    let (s, key) = session(&mut shop.merchant);
    let (_, _, p) = funded(&mut shop, key, OutputKind::P2wsh);
    assert_eq!(announce(&mut shop, s, &p), None);
}

macro_rules! announce_check {
    ($(#[$doc:meta])* $name:ident, $code:expr, |$p:ident, $shop:ident| $body:block) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            #[allow(unused_variables)]
            announce_refused(|$p: &mut Psbt, $shop: &mut Shop| $body, $code);
        }
    };
}

announce_check!(
    /// M2-a: outputs in the announce.
    outputs_in_the_announce_are_refused, Code::HasOutputs, |p, shop| {
    push_output(p, Amount::from_sat(1_000), p2wpkh(1));
});
announce_check!(
    /// M2-a: a witness already in it.
    a_signed_announce_is_refused, Code::HasSignatures, |p, shop| {
    p.inputs[0].final_script_witness = Some(bitcoin::Witness::from_slice(&[vec![1u8]]));
});
announce_check!(
    /// M2-a, E7: two inputs.
    two_inputs_are_refused, Code::InputCount, |p, shop| {
    let extra = p.unsigned_tx.input[0].clone();
    p.unsigned_tx.input.push(extra);
    p.inputs.push(Default::default());
});
announce_check!(
    /// M2-b: no funding transaction.
    a_missing_funding_transaction_is_refused, Code::MissingFundingTx, |p, shop| {
    p.inputs[0].non_witness_utxo = None;
});
announce_check!(
    /// M2-b: a non_witness_utxo with another txid.
    a_funding_transaction_with_another_txid_is_refused, Code::FundingTxidMismatch, |p, shop| {
    let mut other = p.inputs[0].non_witness_utxo.clone().unwrap();
    other.lock_time = bitcoin::absolute::LockTime::from_consensus(1);
    p.inputs[0].non_witness_utxo = Some(other);
});
announce_check!(
    /// M2-b: an output index beyond the funding transaction, refused
    /// without a panic.
    an_out_of_range_output_index_is_refused, Code::OutputIndexOutOfRange, |p, shop| {
    p.unsigned_tx.input[0].previous_output.vout = 7;
});
announce_check!(
    /// M2-b: a witness_utxo that is not the funding output.
    a_witness_utxo_that_differs_is_refused, Code::WitnessUtxoMismatch, |p, shop| {
    p.inputs[0].witness_utxo.as_mut().unwrap().value += Amount::from_sat(1);
});
announce_check!(
    /// M2-c, E2: a script with a non-minimal lock time push.
    a_non_minimal_lock_time_push_is_refused, Code::ScriptMismatch, |p, shop| {
    let mut bytes = p.inputs[0].witness_script.clone().unwrap().to_bytes();
    // OP_IF, then the push of T: one byte longer, zero-padded at its most
    // significant end (the same number, not minimally encoded).
    let len = bytes[1] as usize;
    bytes[1] += 1;
    bytes.insert(2 + len, 0);
    p.inputs[0].witness_script = Some(ScriptBuf::from_bytes(bytes));
});
announce_check!(
    /// M2-c, E4: a time lock time.
    a_time_lock_time_is_refused, Code::ScriptMismatch, |p, shop| {
    let mut bytes = p.inputs[0].witness_script.clone().unwrap().to_bytes();
    let len = bytes[1] as usize;
    let time = bitcoin::script::Builder::new().push_int(1_700_000_000).into_script().to_bytes();
    bytes.splice(1..2 + len, time);
    p.inputs[0].witness_script = Some(ScriptBuf::from_bytes(bytes));
});
announce_check!(
    /// M2-c: the merchant's key missing from the script.
    a_script_without_the_merchant_key_is_refused, Code::WrongMerchantKey, |p, shop| {
    let (_, _, other) = funded(shop, common::pubkey(301), OutputKind::P2wsh);
    *p = other;
});
announce_check!(
    /// M2-e, E5: a capacity above 21 million bitcoin.
    a_capacity_above_21_million_bitcoin_is_refused, Code::CapacityOutOfPolicy, |p, shop| {
    let mut funding = p.inputs[0].non_witness_utxo.clone().unwrap();
    funding.output[0].value = Amount::MAX_MONEY + Amount::from_sat(1);
    p.unsigned_tx.input[0].previous_output.txid = funding.compute_txid();
    p.inputs[0].witness_utxo = Some(funding.output[0].clone());
    p.inputs[0].non_witness_utxo = Some(funding);
});

#[test]
fn bytes_that_are_no_psbt_are_refused() {
    // M2-a
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    let (s, _) = session(&mut shop.merchant);
    shop.merchant.handle_message(7, Message::Announce { session_id: s, psbt: vec![0x70, 0x73, 0x62, 0x74, 0xff, 0] });
    assert_eq!(answer(&mut shop.merchant), Some(Code::MalformedPsbt));
    shop.merchant.handle_message(7, Message::Announce { session_id: s, psbt: vec![0; 300_000] });
    assert_eq!(answer(&mut shop.merchant), Some(Code::MalformedPsbt));
}

/// An open channel and the honest announce of its outpoint.
fn open_with_announce() -> (Shop, OutPoint, Psbt) {
    let (shop, id) = open_shop(OutputKind::P2wsh);
    let c = channel(&shop);
    let funding = (1..=shop.chain.height())
        .filter_map(|h| shop.chain.block(h))
        .flat_map(|b| b.txs.iter())
        .find(|t| t.compute_txid() == id.txid)
        .unwrap()
        .clone();
    let p = c.announce_psbt(&funding).unwrap();
    (shop, id, p)
}

#[test]
fn a_second_session_on_an_open_outpoint_is_refused() {
    // M2-f
    let (mut shop, _, p) = open_with_announce();
    let (s, _) = session(&mut shop.merchant);
    assert_eq!(announce(&mut shop, s, &p), Some(Code::OutpointUsed));
}

#[test]
fn an_announce_of_a_closed_outpoint_is_refused() {
    // M2-f: once closed, never again.
    let (mut shop, id, p) = open_with_announce();
    shop.merchant.close(id).unwrap();
    answer(&mut shop.merchant);
    let (s, _) = session(&mut shop.merchant);
    assert_eq!(announce(&mut shop, s, &p), Some(Code::OutpointUsed));
}

#[test]
fn a_session_is_used_once() {
    // M2-f
    let (mut shop, _, p) = open_with_announce();
    shop.merchant.handle_message(7, Message::Announce { session_id: SessionId([9; 16]), psbt: p.serialize() });
    assert_eq!(answer(&mut shop.merchant), Some(Code::UnknownSession));
}

#[test]
fn announce_checks_of_kind_time_and_chain() {
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    // M2-c: a P2SH output where the policy names P2WSH.
    let (s, key) = session(&mut shop.merchant);
    let (_, _, p) = funded(&mut shop, key, OutputKind::P2sh);
    assert_eq!(announce(&mut shop, s, &p), Some(Code::WrongOutputKind));
    // M2-d: T too near and too far.
    for (delta, code) in [(10, Code::LocktimeTooSoon), (9_000, Code::LocktimeTooLate)] {
        let (s, key) = session(&mut shop.merchant);
        let t = bitcoin::absolute::Height::from_consensus(shop.chain.height() + delta).unwrap();
        let script = ChannelScript::new(common::pubkey(300), key, t).unwrap();
        let funding = shop.chain.fund(Amount::from_sat(500_000), script.script_pubkey(OutputKind::P2wsh));
        let output = ChannelOutput {
            outpoint: OutPoint { txid: funding.compute_txid(), vout: 0 },
            value: Amount::from_sat(500_000),
            script,
            kind: OutputKind::P2wsh,
        };
        assert_eq!(announce(&mut shop, s, &output.announce_psbt(&funding).unwrap()), Some(code));
    }
    // M2-e: the chain's answers, each with its code; a backend failure is
    // transient, never a rejection.
    use paychan::oneway::merchant::FundingStatus;
    let answers = [
        (FundingStatus::Missing, Some(Code::NotConfirmed), false),
        (
            FundingStatus::Found { confirmations: 1, value: Amount::from_sat(500_000), unspent: true },
            Some(Code::NotConfirmed),
            false,
        ),
        (
            FundingStatus::Found { confirmations: 5, value: Amount::from_sat(500_000), unspent: false },
            Some(Code::FundingSpent),
            false,
        ),
        (
            FundingStatus::Found { confirmations: 5, value: Amount::from_sat(400_000), unspent: true },
            Some(Code::ValueMismatch),
            false,
        ),
        (FundingStatus::Unavailable, Some(Code::Transient), true),
    ];
    for (status, code, transient) in answers {
        let (s, key) = session(&mut shop.merchant);
        let (o, _, p) = funded(&mut shop, key, OutputKind::P2wsh);
        assert_eq!(announce(&mut shop, s, &p), None);
        shop.merchant.handle_funding(o.outpoint, status);
        let mut seen = None;
        while let Some(out) = shop.merchant.poll_output() {
            match out {
                MerchantOutput::Persist { version, .. } => shop.merchant.handle_persisted(version),
                MerchantOutput::Send { message: Message::Reject(r), .. } => seen = Some((r.code, false)),
                MerchantOutput::Send { message: Message::Error { refusal, transient }, .. } => {
                    seen = Some((refusal.code, transient))
                }
                _ => {}
            }
        }
        assert_eq!(seen, code.map(|c| (c, transient)), "{status:?}");
        // The session may announce again once the chain agrees (M5-b).
        assert_eq!(announce(&mut shop, s, &p), None);
    }
    // M1-a: a network not served.
    shop.merchant.handle_message(3, Message::RequestChannel { network: "dogecoin".into() });
    assert_eq!(answer(&mut shop.merchant), Some(Code::UnsupportedNetwork));
}

// ---------------------------------------------------------------------------
// The client's checks.
// ---------------------------------------------------------------------------

use paychan::oneway::client::{Client, ClientOutput, SetupRefusal};
use std::sync::Arc;

/// A client handed `channel_key` as the merchant's answer: its refusal, or
/// the funding it asks for.
fn client_with_key(config: ClientConfig, key: Vec<u8>, policy: Policy) -> (Client, Option<SetupRefusal>, bool) {
    let signer = Arc::new(paychan::tx::InMemorySigner::new(common::secret(11), common::secret(12)));
    let mut c = Client::new(config, signer, 0, 1_000);
    while let Some(o) = c.poll_output() {
        if let ClientOutput::Persist { version, .. } = o {
            c.handle_persisted(version);
        }
    }
    let msg =
        Message::ChannelKey { session_id: SessionId([1; 16]), merchant_key: key, policy, payout_script: p2wpkh(99) };
    c.handle_message(msg);
    let mut funds = false;
    while let Some(o) = c.poll_output() {
        match o {
            ClientOutput::Persist { version, .. } => c.handle_persisted(version),
            ClientOutput::FundChannel { .. } => funds = true,
            _ => {}
        }
    }
    let refused = c.setup_refusal().cloned();
    (c, refused, funds)
}

#[test]
fn the_client_refuses_bad_keys_and_terms_before_funding_anything() {
    let policy = merchant_config(OutputKind::P2wsh).policy;
    let good = common::pubkey(40).to_bytes().to_vec();
    // The control.
    let (_, refused, funds) = client_with_key(client_config(1), good.clone(), policy.clone());
    assert_eq!((refused, funds), (None, true));
    // M1-b: an invalid key, an uncompressed one, one other than pinned.
    let uncompressed = bitcoin::PublicKey::new_uncompressed(common::pubkey(40).0).to_bytes();
    for key in [vec![5u8; 33], uncompressed, vec![]] {
        let (_, refused, funds) = client_with_key(client_config(1), key, policy.clone());
        assert_eq!((refused, funds), (Some(SetupRefusal::BadKey), false));
    }
    let pinned = ClientConfig { pinned_merchant_key: Some(common::pubkey(41)), ..client_config(1) };
    let (_, refused, funds) = client_with_key(pinned, good.clone(), policy.clone());
    assert_eq!((refused, funds), (Some(SetupRefusal::NotPinned), false));
    // M1-b: terms it cannot meet: capacity, lock window, fee rate, kind.
    let terms = [
        Policy { min_capacity: Amount::from_sat(2_000_000), ..policy.clone() },
        Policy { max_lock_delta: 100, ..policy.clone() },
        Policy { min_fee_rate: 5_000, ..policy.clone() },
        Policy { kind: OutputKind::P2sh, ..policy.clone() },
    ];
    let only_p2wsh = ClientConfig { kinds: vec![OutputKind::P2wsh], ..client_config(1) };
    for p in terms {
        let (_, refused, funds) = client_with_key(only_p2wsh.clone(), good.clone(), p);
        assert!(matches!(refused, Some(SetupRefusal::Policy(_))), "{refused:?}");
        assert!(!funds);
    }
}

#[test]
fn the_client_stores_its_refund_before_it_announces() {
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    shop.add_client(client_config(1), 1);
    // Replay the client's outputs from the start: the state holding the
    // funded channel output is written before the announce is released.
    let signer = shop.clients[0].signer.clone();
    let mut c = Client::new(client_config(1), signer.clone(), 0, shop.chain.height());
    let mut order = Vec::new();
    let mut funding = None;
    while let Some(o) = c.poll_output() {
        if let ClientOutput::Persist { version, .. } = o {
            c.handle_persisted(version);
        }
    }
    let key = signer_key(&shop);
    c.handle_message(Message::ChannelKey {
        session_id: SessionId([1; 16]),
        merchant_key: key,
        policy: merchant_config(OutputKind::P2wsh).policy,
        payout_script: p2wpkh(99),
    });
    while let Some(o) = c.poll_output() {
        match o {
            ClientOutput::Persist { version, .. } => c.handle_persisted(version),
            ClientOutput::FundChannel { amount, script_pubkey, .. } => {
                funding = Some(shop.chain.fund(amount, script_pubkey))
            }
            _ => {}
        }
    }
    c.provide_funding(funding.unwrap()).unwrap();
    let mut stored = None;
    while let Some(o) = c.poll_output() {
        match o {
            ClientOutput::Persist { state, .. } => {
                // Not confirmed yet: nothing may leave.
                order.push("persist");
                stored = Some(state);
            }
            ClientOutput::Send(Message::Announce { .. }) => order.push("announce"),
            _ => {}
        }
    }
    // M1-c: the write comes out; the announce waits for it.
    assert_eq!(order, vec!["persist"]);
    // And what was written is enough to refund: a restored client holds the
    // channel output.
    let restored = Client::restore(client_config(1), signer, &stored.unwrap()).unwrap();
    assert!(restored.channel().is_some());
    c.handle_persisted(u64::MAX);
    assert!(matches!(c.poll_output(), Some(ClientOutput::Send(Message::Announce { .. }))));
}

fn signer_key(shop: &Shop) -> Vec<u8> {
    paychan::tx::Signer::public_key(&*shop.merchant_signer, KeyRole::Oneway(50)).to_bytes().to_vec()
}

#[test]
fn the_client_never_signs_more_than_invoiced_and_checks_the_close() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 10_000);
    // M3-b: an invoice whose total does not follow the amount, one that
    // decreases, one above the capacity: none is offered for payment.
    let bad = [
        (2, Amount::from_sat(5_000), Amount::from_sat(50_000)),
        (3, Amount::from_sat(1_000), Amount::from_sat(9_000)),
        (4, Amount::from_sat(2_000_000), Amount::from_sat(2_010_000)),
    ];
    for (invoice_id, amount, total) in bad {
        let before = shop.clients[0].events.len();
        shop.clients[0].client.handle_message(Message::Invoice {
            channel_id: id,
            invoice_id,
            amount,
            total,
            payout_script: p2wpkh(99),
        });
        shop.pump();
        assert!(!shop.clients[0].events[before..].iter().any(|e| matches!(e, ClientEvent::Invoice { .. })));
        assert!(shop.clients[0].client.pay(invoice_id).is_err());
    }
    assert_eq!(shop.clients[0].client.signed_total(), Amount::from_sat(10_000));
    // M4-c: a close paying the merchant more than the client signed is
    // reported.
    let mut greedy = shop.merchant.best_transaction(&id).unwrap();
    greedy.output[0].value += Amount::from_sat(1_000);
    greedy.output[1].value -= Amount::from_sat(1_000);
    shop.clients[0].client.handle_message(Message::Close { channel_id: id, tx: Some(greedy) });
    shop.pump();
    assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::CloseSeen { problem: Some(_), .. })));
}

#[test]
fn the_refund_is_refused_before_t_and_accepted_at_t() {
    let (mut shop, _id) = open_shop(OutputKind::P2sh);
    let c = channel(&shop);
    let t = c.script.locktime().to_consensus_u32();
    let refund =
        c.refund(p2wpkh(501), FeeRate::from_sat_per_vb_u32(2), &*shop.clients[0].signer, KeyRole::Oneway(0)).unwrap();
    // M4-d: the merchant is gone; before T the chain refuses the refund.
    shop.merchant = Merchant::new(merchant_config(OutputKind::P2sh), shop.merchant_signer.clone());
    while shop.chain.height() < t - 1 {
        shop.chain.mine();
    }
    assert!(matches!(shop.chain.submit(refund.clone()), Err(paychan::sim::chain::Reject::NonFinal { .. })));
    shop.chain.mine();
    assert!(shop.chain.submit(refund).is_ok());
}

#[test]
fn the_channel_is_stored_before_accept_and_the_client_checks_the_echo() {
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    let (s, key) = session(&mut shop.merchant);
    let (o, _, p) = funded(&mut shop, key, OutputKind::P2wsh);
    assert_eq!(announce(&mut shop, s, &p), None);
    let status = paychan::oneway::merchant::FundingStatus::Found { confirmations: 3, value: o.value, unspent: true };
    shop.merchant.handle_funding(o.outpoint, status);
    // M2-g: the state comes out, the accept waits for it.
    let first = shop.merchant.poll_output();
    let Some(MerchantOutput::Persist { version, state }) = first else { panic!("{first:?}") };
    assert!(shop.merchant.poll_output().is_none());
    let restored = Merchant::restore(merchant_config(OutputKind::P2wsh), shop.merchant_signer.clone(), &state).unwrap();
    assert_eq!(restored.best_total(&o.outpoint), Some(Amount::ZERO));
    shop.merchant.handle_persisted(version);
    assert!(matches!(shop.merchant.poll_output(), Some(MerchantOutput::Send { message: Message::Accept { .. }, .. })));

    // M2-g: a client told another capacity or lock time than it announced
    // does not take the channel as open.
    for lie in [0, 1] {
        let signer = Arc::new(paychan::tx::InMemorySigner::new(common::secret(11), common::secret(12)));
        let mut c = Client::new(client_config(1), signer, 0, shop.chain.height());
        let drain = |c: &mut Client, chain: &mut SimChain| {
            let mut out = Vec::new();
            while let Some(o) = c.poll_output() {
                match o {
                    ClientOutput::Persist { version, .. } => c.handle_persisted(version),
                    ClientOutput::FundChannel { amount, script_pubkey, .. } => {
                        let tx = chain.fund(amount, script_pubkey);
                        c.provide_funding(tx).unwrap();
                    }
                    other => out.push(other),
                }
            }
            out
        };
        drain(&mut c, &mut shop.chain);
        c.handle_message(Message::ChannelKey {
            session_id: SessionId([1; 16]),
            merchant_key: key.to_bytes().to_vec(),
            policy: merchant_config(OutputKind::P2wsh).policy,
            payout_script: p2wpkh(99),
        });
        drain(&mut c, &mut shop.chain);
        let o = c.channel().unwrap().clone();
        let (capacity, locktime) = match lie {
            0 => (o.value + Amount::from_sat(1), o.script.locktime()),
            _ => (
                o.value,
                bitcoin::absolute::Height::from_consensus(o.script.locktime().to_consensus_u32() + 1).unwrap(),
            ),
        };
        let deadline = bitcoin::absolute::Height::from_consensus(100).unwrap();
        c.handle_message(Message::Accept { channel_id: o.outpoint, capacity, locktime, deadline });
        let out = drain(&mut c, &mut shop.chain);
        assert!(!out.iter().any(|o| matches!(o, ClientOutput::Event(ClientEvent::ChannelOpen { .. }))));
        assert!(c.pay(1).is_err());
    }
}

#[test]
fn the_merchant_closes_by_itself_and_rebroadcasts_until_buried() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 40_000);
    let t = channel(&shop).script.locktime().to_consensus_u32();
    // M4-b: nothing before T - settle_margin...
    while shop.chain.height() < t - 6 - 1 {
        shop.mine();
    }
    assert!(!shop.merchant_events.iter().any(|e| matches!(e, MerchantEvent::ChannelClosing { .. })));
    // ...then the close, by itself, which a miner ignores for 3 blocks.
    let close = shop.merchant.best_transaction(&id).unwrap();
    for _ in 0..3 {
        shop.chain.mine_only(|tx| tx.compute_txid() != close.compute_txid());
        let h = shop.chain.height();
        shop.merchant.handle_block(h, shop.chain.time());
        shop.clients[0].client.handle_block(h);
        shop.pump();
    }
    assert!(shop.merchant_events.iter().any(|e| matches!(e, MerchantEvent::ChannelClosing { tx: Some(_), .. })));
    assert!(shop.chain.in_mempool(&close.compute_txid()));
    // A backend that cannot answer never counts as spent.
    shop.merchant.handle_outpoint(id, paychan::oneway::merchant::OutpointStatus::Unavailable);
    assert!(shop.merchant.channels().any(|c| *c == id));
    // Mined, then buried: settled and forgotten.
    shop.mine_n(7);
    assert!(shop.merchant_events.iter().any(|e| matches!(e, MerchantEvent::ChannelSettled { ours: true, .. })));
    assert!(!shop.merchant.channels().any(|c| *c == id));
    assert_eq!(shop.received(&p2wpkh(99)), Amount::from_sat(40_000));
}

#[test]
fn a_refund_that_beats_the_close_is_reported() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 40_000);
    let t = channel(&shop).script.locktime().to_consensus_u32();
    // The merchant is offline from well before its closing height until
    // after T: the client refunds.
    while shop.chain.height() < t + 8 {
        shop.chain.mine();
        let h = shop.chain.height();
        shop.clients[0].client.handle_block(h);
        shop.pump();
    }
    assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::Settled { refund: true, .. })));
    // Back online, it tries to close, finds the output spent by the
    // refund, and (M4-e) reports the loss.
    shop.mine();
    let lost = shop
        .merchant_events
        .iter()
        .any(|e| matches!(e, MerchantEvent::ChannelSettled { ours: false, received, .. } if *received == Amount::ZERO));
    assert!(lost, "{:?}", shop.merchant_events);
    assert!(!shop.merchant.channels().any(|c| *c == id));
}

#[test]
fn one_merchant_serves_many_channels_and_a_restart_resumes_them_all() {
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    for n in 1..=3 {
        shop.add_client(client_config(n), n);
    }
    let ids: Vec<OutPoint> = shop.merchant.channels().copied().collect();
    assert_eq!(ids.len(), 3);
    // Each client pays its own amounts on its own channel.
    for (n, id) in ids.iter().enumerate() {
        let owner = (0..3).find(|&c| shop.clients[c].client.channel().map(|o| o.outpoint) == Some(*id)).unwrap();
        let invoice = shop.merchant.invoice(*id, Amount::from_sat(10_000 * (n as u64 + 1))).unwrap();
        shop.pump();
        shop.clients[owner].client.pay(invoice).unwrap();
        shop.pump();
    }
    let before: Vec<Option<Amount>> = ids.iter().map(|id| shop.merchant.best_total(id)).collect();
    // M5-c: a crash; the restored merchant resumes every channel with its
    // best payment, and reports them again (at least once).
    let events = shop.merchant_events.len();
    shop.restart_merchant();
    let after: Vec<Option<Amount>> = ids.iter().map(|id| shop.merchant.best_total(id)).collect();
    assert_eq!(before, after);
    let again =
        shop.merchant_events[events..].iter().filter(|e| matches!(e, MerchantEvent::PaymentReceived { .. })).count();
    assert_eq!(again, 3);
    // And payments go on.
    let owner = (0..3).find(|&c| shop.clients[c].client.channel().map(|o| o.outpoint) == Some(ids[0])).unwrap();
    let invoice = shop.merchant.invoice(ids[0], Amount::from_sat(5_000)).unwrap();
    shop.pump();
    shop.clients[owner].client.pay(invoice).unwrap();
    shop.pump();
    assert_eq!(shop.merchant.best_total(&ids[0]), Some(Amount::from_sat(15_000)));
}

#[test]
fn t_is_judged_on_a_fresh_tip_only() {
    // E4, M2-d: a tip two hours and a second behind the caller's clock is
    // stale: the announce is refused until a fresh block arrives.
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), verified_chain());
    let (s, key) = session(&mut shop.merchant);
    let (_, _, p) = funded(&mut shop, key, OutputKind::P2wsh);
    shop.merchant.handle_now(shop.chain.time() + 7_201);
    assert_eq!(announce(&mut shop, s, &p), Some(Code::NoFreshTip));
    shop.chain.mine();
    shop.merchant.handle_block(shop.chain.height(), shop.chain.time() + 7_201);
    answer(&mut shop.merchant);
    assert_eq!(announce(&mut shop, s, &p), None);
}

/// A signer that fails while `down` is set.
struct Flaky {
    inner: paychan::tx::InMemorySigner,
    down: std::sync::atomic::AtomicBool,
}

impl paychan::tx::Signer for Flaky {
    fn public_key(&self, role: KeyRole) -> bitcoin::CompressedPublicKey {
        self.inner.public_key(role)
    }
    fn sign(
        &self,
        input: &paychan::tx::SigningInput<'_>,
    ) -> Result<bitcoin::secp256k1::ecdsa::Signature, paychan::tx::SignerError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(paychan::tx::SignerError { reason: "device unplugged".into() });
        }
        self.inner.sign(input)
    }
}

#[test]
fn a_signer_failure_at_the_close_keeps_the_channel_and_its_payment() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 25_000);
    // The merchant, restored with a signer that is offline: it restores
    // (only the client's signature is checked) and keeps the payment.
    let flaky = Arc::new(Flaky {
        inner: paychan::tx::InMemorySigner::new(common::secret(21), common::secret(22)),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let mut m = Merchant::restore(merchant_config(OutputKind::P2wsh), flaky.clone(), &shop.merchant_stored).unwrap();
    answer(&mut m);
    // M4-a: the close cannot be signed: an error, and nothing is lost.
    assert!(matches!(m.close(id), Err(paychan::oneway::merchant::MerchantError::Signer(_))));
    assert_eq!(m.best_total(&id), Some(Amount::from_sat(25_000)));
    // The signer is back: the close goes out.
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    m.close(id).unwrap();
    let mut broadcast = false;
    while let Some(o) = m.poll_output() {
        match o {
            MerchantOutput::Persist { version, .. } => m.handle_persisted(version),
            MerchantOutput::Broadcast(_) => broadcast = true,
            _ => {}
        }
    }
    assert!(broadcast);
}

#[test]
fn versions_go_on_across_a_restore_and_a_restored_tip_is_stale() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 10_000);
    let stored = shop.merchant_stored.clone();
    let mut m = Merchant::restore(merchant_config(OutputKind::P2wsh), shop.merchant_signer.clone(), &stored).unwrap();
    let mut versions = Vec::new();
    while let Some(o) = m.poll_output() {
        if let MerchantOutput::Persist { version, .. } = o {
            versions.push(version);
            m.handle_persisted(version);
        }
    }
    // ADR 0003: a store may refuse to go backwards; versions go on.
    let before = {
        let mut again =
            Merchant::restore(merchant_config(OutputKind::P2wsh), shop.merchant_signer.clone(), &stored).unwrap();
        let mut v = 0;
        while let Some(o) = again.poll_output() {
            if let MerchantOutput::Persist { version, .. } = o {
                v = version;
            }
        }
        v
    };
    assert!(versions.iter().all(|v| *v >= before) && before > 1, "{versions:?} {before}");
    // E4: until a block arrives, the restored tip judges no payment.
    assert!(matches!(
        m.invoice(id, Amount::from_sat(1_000)),
        Err(paychan::oneway::merchant::MerchantError::NoFreshTip)
    ));
    m.handle_block(shop.chain.height(), shop.chain.time());
    assert!(m.invoice(id, Amount::from_sat(1_000)).is_ok());
}

#[test]
fn only_the_channel_s_connection_may_ask_for_its_close() {
    let (mut shop, id) = open_shop(OutputKind::P2wsh);
    order(&mut shop, id, 10_000);
    shop.merchant.handle_message(42, Message::Close { channel_id: id, tx: None });
    assert_eq!(answer(&mut shop.merchant), Some(Code::UnknownChannel));
    assert_eq!(shop.merchant.best_total(&id), Some(Amount::from_sat(10_000)));
    assert!(!shop.merchant_events.iter().any(|e| matches!(e, MerchantEvent::ChannelClosing { .. })));
}
