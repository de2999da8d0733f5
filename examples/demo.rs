//! The full life of a channel between two in-memory peers: open, anchor
//! confirmations, 100 payments in both directions (some failing), a fee
//! change, and a cooperative close. Prints the messages as a sequence
//! diagram in the style of the protocol text, the final balances and the
//! close transaction.
//!
//! Run with `cargo run --example demo`.

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::Amount;
use paychan::channel::{Event, Side};
use paychan::sim::{Dir, Pair};
use paychan::{MilliSats, Preimage};

/// Prints trace entries `from..` as diagram rows numbered from `from + 1`.
fn diagram(p: &Pair, from: usize, title: &str) -> usize {
    println!("  {title}");
    for (i, (dir, name)) in p.trace.iter().enumerate().skip(from) {
        let n = format!("({})", i + 1);
        match dir {
            Dir::AToB => println!("    |   A   |--{n:-<6}- {name:-<22}-->|   B   |"),
            Dir::BToA => println!("    |   A   |<-{n:-<6}- {name:-<22}---|   B   |"),
        }
    }
    p.trace.len()
}

fn summary(p: &Pair, from: usize, what: &str) -> usize {
    let n = p.trace.len() - from;
    let text = format!(" ... {n} messages: {what}");
    println!("    |   A   |{text:<35}|   B   |");
    p.trace.len()
}

fn main() {
    println!("A opens a 1,000,000 sat channel to B.\n");
    println!("    +-------+                                   +-------+");
    let mut p = Pair::default_pair();
    p.block(100);
    p.deliver_all();
    // The anchor confirms; both send open_complete at their min_depth.
    p.confirm(3);
    p.deliver_all();
    let mut shown = diagram(&p, 0, "Channel establishment (section 2)");

    let expiry = LockTime::from_height(2000).expect("a height");
    let (mut paid, mut failed) = (0u32, 0u32);
    for i in 0..100u32 {
        // 60 payments A -> B, then 40 B -> A; every seventh is refused.
        let (payer, payee) = if i < 60 { ('A', 'B') } else { ('B', 'A') };
        let amount = MilliSats::from_msat(1_000_000 + u64::from(i) * 10_000);
        let r = Preimage(sha256::Hash::hash(&i.to_le_bytes()).to_byte_array());
        let id = p.node(payer).ch.offer_htlc(amount, r.hash(), expiry, vec![]).expect("affordable");
        p.settle();
        if i % 7 == 6 {
            p.node(payee).ch.fail_htlc(id, b"no route".to_vec()).expect("incoming");
            failed += 1;
        } else {
            p.node(payee).ch.fulfill_htlc(id, r).expect("incoming");
            paid += 1;
        }
        p.settle();
        if i == 0 {
            shown =
                diagram(&p, shown, "First payment (section 3): add, commit/revoke both ways, fulfill, commit/revoke");
        }
    }
    shown = summary(&p, shown, "payments 2-100");

    p.a.ch.update_fee(12_000).expect("open");
    p.settle();
    shown = diagram(&p, shown, "A raises its commitment fee rate (section 3.4)");

    p.a.ch.close().expect("open");
    p.settle();
    diagram(&p, shown, "Cooperative close (section 4)");
    println!("    +-------+                                   +-------+\n");

    let close = p.a.events.iter().find_map(|e| match e {
        Event::ChannelClosed { tx } => Some(tx.clone()),
        _ => None,
    });
    let close = close.expect("the channel closed");
    assert_eq!(Some(&close), p.b.broadcasts.last(), "both broadcast the same close");
    println!("{paid} payments fulfilled, {failed} failed, {} messages in all.", p.trace.len());
    println!(
        "Final balances: A {} msat, B {} msat.",
        p.a.ch.balance(Side::Local).to_msat(),
        p.b.ch.balance(Side::Local).to_msat()
    );
    let fee = Amount::from_sat(1_000_000) - close.output.iter().map(|o| o.value).sum::<Amount>();
    println!("Close transaction {} (fee {} sat):", close.compute_txid(), fee.to_sat());
    for (i, out) in close.output.iter().enumerate() {
        println!("  output {i}: {} sat to {}", out.value.to_sat(), out.script_pubkey);
    }
    println!("{}", serialize_hex(&close));
}
