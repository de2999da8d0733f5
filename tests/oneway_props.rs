//! Random orders, invoice amounts, fee rates, crashes and restores of either
//! side, dropped, duplicated and replayed messages: the merchant's best
//! total only grows, equals the sum of the orders it acked, is always a
//! transaction Bitcoin Core's interpreter accepts; the client never signs
//! more than it was invoiced. (M3-a..g, M5-a..c.)

mod common;

use std::collections::BTreeMap;

use bitcoin::{Amount, FeeRate, ScriptBuf};
use common::chain::verify_input;
use paychan::oneway::client::ClientConfig;
use paychan::oneway::merchant::MerchantEvent;
use paychan::oneway::script::OutputKind;
use paychan::sim::oneway::Shop;
use proptest::prelude::*;

fn p2wpkh(n: u64) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&common::pubkey(n).wpubkey_hash())
}

#[derive(Clone, Debug)]
enum Op {
    /// An order of this many satoshis.
    Order(u64),
    /// The merchant crashes and restarts from its store.
    CrashMerchant,
    /// The client crashes and restarts from its store.
    CrashClient,
    /// The connection drops with messages in flight; both sides resend.
    Drop,
    /// The last message the client sent reaches the merchant again.
    Duplicate,
    /// A message delivered before is delivered again (either way).
    Replay(usize),
    /// A block.
    Mine,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..60_000).prop_map(Op::Order),
        1 => Just(Op::CrashMerchant),
        1 => Just(Op::CrashClient),
        1 => Just(Op::Drop),
        1 => Just(Op::Duplicate),
        2 => any::<usize>().prop_map(Op::Replay),
        1 => Just(Op::Mine),
    ]
}

fn run(ops: &[Op], kind: OutputKind, fee_sat_per_vb: u32) -> Result<(), TestCaseError> {
    let config = paychan::sim::oneway::merchant_config(kind, p2wpkh(99), 1);
    let mut shop = Shop::new(config, common::chain::verified_chain());
    let client = ClientConfig {
        fee_rate: FeeRate::from_sat_per_vb_u32(fee_sat_per_vb),
        ..paychan::sim::oneway::client_config(Amount::from_sat(1_000_000), 400, p2wpkh(501))
    };
    shop.add_client(client, 1);
    let Some(id) = shop.merchant.channels().next().copied() else {
        return Err(TestCaseError::fail(format!("no channel: {:?}", shop.log)));
    };
    let channel = shop.clients[0].client.channel().unwrap().clone();
    let mut best = Amount::ZERO;
    let mut invoiced = Amount::ZERO;
    for op in ops {
        match op {
            Op::Order(sat) => {
                if let Ok(invoice) = shop.merchant.invoice(id, Amount::from_sat(*sat)) {
                    shop.pump();
                    let ev = shop.clients[0].events.iter().rev().find_map(|e| match e {
                        paychan::oneway::client::ClientEvent::Invoice { invoice_id, total, .. }
                            if *invoice_id == invoice =>
                        {
                            Some(*total)
                        }
                        _ => None,
                    });
                    if let Some(total) = ev {
                        invoiced = invoiced.max(total);
                        let _ = shop.clients[0].client.pay(invoice);
                        shop.pump();
                    }
                }
            }
            Op::CrashMerchant => shop.restart_merchant(),
            Op::CrashClient => shop.restart_client(0),
            Op::Drop => {
                shop.wire.clear();
                let _ = shop.clients[0].client.resend();
                let _ = shop.merchant.resend_invoice(id);
                shop.pump();
            }
            Op::Duplicate => {
                let _ = shop.clients[0].client.resend();
                shop.pump();
                let _ = shop.clients[0].client.resend();
                shop.pump();
            }
            Op::Replay(k) => shop.replay(*k),
            Op::Mine => shop.mine(),
        }
        // The merchant's best total only grows...
        let now = shop.merchant.best_total(&id).unwrap_or(best);
        prop_assert!(now >= best, "best went from {best} to {now}");
        best = now;
        // ...is a transaction the interpreter accepts...
        if best > Amount::ZERO {
            let tx = shop.merchant.best_transaction(&id).unwrap();
            prop_assert!(verify_input(&tx, 0, &channel.txout()).is_ok());
            prop_assert!(tx.output.iter().any(|o| o.script_pubkey == p2wpkh(99) && o.value == best));
        }
        // ...and the client never signs more than it was invoiced.
        prop_assert!(shop.clients[0].client.signed_total() <= invoiced);
        prop_assert!(shop.refused.is_empty(), "{:?}", shop.refused);
    }
    // The best total is the sum of the orders acked (M3-g: each reported
    // once stored; a restored merchant reports again, so by invoice id).
    let mut acked: BTreeMap<u64, Amount> = BTreeMap::new();
    for e in &shop.merchant_events {
        if let MerchantEvent::PaymentReceived { invoice_id, amount, .. } = e {
            acked.insert(*invoice_id, *amount);
        }
    }
    prop_assert_eq!(acked.values().copied().sum::<Amount>(), best);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_merchant_s_best_only_grows_and_is_always_valid(
        ops in proptest::collection::vec(op(), 1..20),
        p2sh in any::<bool>(),
        fee in 1u32..20,
    ) {
        run(&ops, if p2sh { OutputKind::P2sh } else { OutputKind::P2wsh }, fee)?;
    }
}
