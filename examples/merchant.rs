//! The one-way merchant channel of the seed diagram, played out in memory
//! on the simulated chain (every input checked by Bitcoin Core's script
//! interpreter): a client opens a channel, makes two orders, the merchant
//! closes with the best payment; then a second client whose merchant never
//! closes takes its refund after `T`.
//!
//! Run with `cargo run --example merchant`.

#[path = "support/interpreter.rs"]
mod interpreter;

use bitcoin::consensus::serialize;
use bitcoin::{Amount, ScriptBuf};
use paychan::oneway::client::ClientConfig;
use paychan::oneway::merchant::{Merchant, MerchantConfig};
use paychan::oneway::script::OutputKind;
use paychan::sim::oneway::Shop;
use paychan::sim::secret;

fn p2wpkh(n: u64) -> ScriptBuf {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let key = bitcoin::CompressedPublicKey(secret(n).public_key(&secp));
    ScriptBuf::new_p2wpkh(&key.wpubkey_hash())
}

fn merchant_config(kind: OutputKind) -> MerchantConfig {
    paychan::sim::oneway::merchant_config(kind, p2wpkh(99), 3)
}

fn client_config(n: u64) -> ClientConfig {
    paychan::sim::oneway::client_config(Amount::from_sat(250_000), 150, p2wpkh(500 + n))
}

/// Prints the shop's log since `from` as lines of the seed's diagram.
fn diagram(shop: &Shop, from: usize) -> usize {
    for line in &shop.log[from..] {
        let (label, text) = if line.ends_with("-> merchant: request_channel") {
            ("[1]", "  |--- request channel ------------------------->|".to_string())
        } else if line.ends_with("-> client 0: channel_key") || line.ends_with("-> client 1: channel_key") {
            ("[2]", "  |<------------------ return public key + terms ---|".to_string())
        } else if line.contains("funds the channel") {
            (
                "[A][B]",
                format!("  | create the channel script, fund it ({})", line.rsplit("with ").next().unwrap_or("")),
            )
        } else if line.ends_with("-> merchant: announce") {
            ("[C][3]", "  |--- announce PSBT (input, no outputs) -------->|".to_string())
        } else if line.ends_with(": accept") {
            ("[D][4]", "  |<------------------- validated: accept channel -|".to_string())
        } else if line.ends_with(": invoice") {
            ("[5]", "  |<------------------------------- send invoice --|".to_string())
        } else if line.ends_with("-> merchant: payment") {
            ("[E][F][6]", "  |--- payment PSBT (outputs, A's signature) ---->|".to_string())
        } else if line.ends_with(": payment_ack") {
            ("[G]", "  |<---------- validated, stored: fulfil the item -|".to_string())
        } else if line.ends_with(": close") {
            ("[H]", "  |<----------- countersigned and broadcast: close -|".to_string())
        } else {
            continue;
        };
        println!("{label:>10} {text}");
    }
    shop.log.len()
}

fn main() {
    println!("== Alice and Bob (P2WSH) ==");
    println!("              [ Alice ]                              [ Bob ]");
    let mut shop = Shop::new(merchant_config(OutputKind::P2wsh), interpreter::verified_chain());
    shop.add_client(client_config(1), 1);
    let mut seen = diagram(&shop, 0);
    let id = *shop.merchant.channels().next().expect("Bob accepted the channel");
    println!("           ******** CHANNEL ESTABLISHED: {id} ********");
    for (n, sat) in [(1, 30_000u64), (2, 45_000)] {
        let invoice = shop.merchant.invoice(id, Amount::from_sat(sat)).expect("payable");
        shop.pump();
        shop.clients[0].client.pay(invoice).expect("invoiced");
        shop.pump();
        seen = diagram(&shop, seen);
        let best = shop.merchant.best_total(&id).expect("open");
        println!("           ******** ORDER {n} DONE: item {sat} sat, total {best} ********");
    }
    shop.merchant.close(id).expect("open");
    shop.pump();
    shop.mine();
    seen = diagram(&shop, seen);
    let _ = seen;
    let close = shop.chain.tip().txs.first().expect("the close is mined").clone();
    println!("           ******** CHANNEL CLOSED ********");
    println!("  the close {}:", close.compute_txid());
    for o in &close.output {
        let who = if o.script_pubkey == p2wpkh(99) { "Bob" } else { "Alice's change" };
        println!("    {} to {who}", o.value);
    }
    println!("  {} bytes, in block {}", serialize(&close).len(), shop.chain.height());

    println!();
    println!("== Carol and a merchant that never closes (P2SH) ==");
    let mut shop = Shop::new(merchant_config(OutputKind::P2sh), interpreter::verified_chain());
    let carol = shop.add_client(client_config(2), 2);
    let id = *shop.merchant.channels().next().expect("accepted");
    let invoice = shop.merchant.invoice(id, Amount::from_sat(20_000)).expect("payable");
    shop.pump();
    shop.clients[carol].client.pay(invoice).expect("invoiced");
    shop.pump();
    let t = shop.clients[carol].client.channel().expect("funded").script.locktime().to_consensus_u32();
    println!("  Carol paid 20000 sat; the merchant goes silent; T is {t}");
    // The merchant loses everything it stored.
    shop.merchant = Merchant::new(merchant_config(OutputKind::P2sh), shop.merchant_signer.clone());
    while shop.chain.height() < t + 7 {
        shop.mine();
    }
    let refund = (1..=shop.chain.height()).filter_map(|h| shop.chain.block(h).map(|b| (h, b.txs.clone()))).find_map(
        |(h, txs)| {
            txs.into_iter().find(|tx| tx.output.iter().any(|o| o.script_pubkey == p2wpkh(502))).map(|tx| (h, tx))
        },
    );
    let (h, refund) = refund.expect("the refund is mined");
    println!(
        "  refund {} mined in block {h} (T = {t}): {} back to Carol",
        refund.compute_txid(),
        refund.output[0].value
    );
    println!("  Carol's channel settled: {}", shop.clients[carol].client.is_settled());
}
