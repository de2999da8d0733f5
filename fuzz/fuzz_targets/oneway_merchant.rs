//! Arbitrary bytes against the one-way merchant and client: as wire
//! messages, as PSBTs inside `announce` and `payment` (mutations of an
//! honest payment and raw bytes), and as stored states to restore. Nothing
//! may panic, and a refused payment never changes the best total.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::psbt::Psbt;
use paychan::bitcoin::{Amount, OutPoint, ScriptBuf};
use paychan::oneway::client::{Client, ClientConfig, ClientOutput};
use paychan::oneway::merchant::{Merchant, MerchantConfig, MerchantOutput};
use paychan::oneway::script::OutputKind;
use paychan::oneway::wire::{self, Message, SessionId};
use paychan::sim::chain::SimChain;
use paychan::sim::oneway::Shop;
use paychan::tx::InMemorySigner;

struct Base {
    config: MerchantConfig,
    client: ClientConfig,
    signer: Arc<InMemorySigner>,
    client_signer: Arc<InMemorySigner>,
    stored: Vec<u8>,
    channel: OutPoint,
    invoice: u64,
    payment: Vec<u8>,
}

fn p2wpkh(n: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&paychan::bitcoin::WPubkeyHash::from_byte_array([n; 20]))
}

use paychan::bitcoin::hashes::Hash as _;

static BASE: LazyLock<Base> = LazyLock::new(|| {
    let config = paychan::sim::oneway::merchant_config(OutputKind::P2wsh, p2wpkh(99), 1);
    let client = paychan::sim::oneway::client_config(Amount::from_sat(1_000_000), 400, p2wpkh(5));
    let mut shop = Shop::new(config.clone(), SimChain::new());
    shop.add_client(client.clone(), 1);
    let channel = *shop.merchant.channels().next().expect("open");
    let invoice = shop.merchant.invoice(channel, Amount::from_sat(10_000)).expect("payable");
    shop.pump();
    shop.clients[0].client.pay(invoice).expect("invoiced");
    let mut payment = Vec::new();
    while let Some(o) = shop.clients[0].client.poll_output() {
        match o {
            ClientOutput::Persist { version, .. } => shop.clients[0].client.handle_persisted(version),
            ClientOutput::Send(Message::Payment { psbt, .. }) => payment = psbt,
            _ => {}
        }
    }
    Base {
        config,
        client,
        signer: shop.merchant_signer.clone(),
        client_signer: shop.clients[0].signer.clone(),
        stored: shop.merchant_stored.clone(),
        channel,
        invoice,
        payment,
    }
});

fuzz_target!(|data: &[u8]| {
    let base = &*BASE;
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 6 {
        0 => {
            let _ = Merchant::restore(base.config.clone(), base.signer.clone(), rest);
        }
        1 => {
            let _ = Client::restore(base.client.clone(), base.client_signer.clone(), rest);
        }
        _ => {
            let mut m = Merchant::restore(base.config.clone(), base.signer.clone(), &base.stored).expect("restores");
            while let Some(o) = m.poll_output() {
                if let MerchantOutput::Persist { version, .. } = o {
                    m.handle_persisted(version);
                }
            }
            let before = m.best_total(&base.channel);
            let message = match mode % 6 {
                2 => match wire::decode(rest) {
                    Ok(message) => message,
                    Err(e) => {
                        m.handle_malformed(1, &e);
                        return;
                    }
                },
                3 => Message::Payment { channel_id: base.channel, invoice_id: base.invoice, psbt: rest.to_vec() },
                4 => Message::Announce { session_id: SessionId([0; 16]), psbt: rest.to_vec() },
                _ => {
                    // The honest payment with bytes flipped and fields cut.
                    let mut bytes = base.payment.clone();
                    for (i, b) in rest.chunks(3).enumerate() {
                        if let [at_hi, at_lo, v] = *b {
                            let at = usize::from(at_hi) << 8 | usize::from(at_lo);
                            let len = bytes.len().max(1);
                            if let Some(x) = bytes.get_mut(at % len) {
                                *x ^= v;
                            }
                        } else if i > 0 {
                            bytes.truncate(bytes.len().saturating_sub(usize::from(b[0])));
                        }
                    }
                    if let Ok(p) = Psbt::deserialize(&bytes) {
                        let _ = p.serialize();
                    }
                    Message::Payment { channel_id: base.channel, invoice_id: base.invoice, psbt: bytes }
                }
            };
            m.handle_message(1, message);
            let mut acked = false;
            while let Some(o) = m.poll_output() {
                match o {
                    MerchantOutput::Persist { version, .. } => m.handle_persisted(version),
                    MerchantOutput::Send { message: Message::PaymentAck { .. }, .. } => acked = true,
                    _ => {}
                }
            }
            if !acked {
                assert_eq!(m.best_total(&base.channel), before);
            }
        }
    }
});
