//! The on-chain monitor: recognising a revoked commitment among a million
//! revoked states and building its penalty (with 0 and with 1,500 HTLCs),
//! and the bytes it keeps (ruling D11, C1-h), printed next to what one
//! record per revoked state (the former `Watch::RevokedCommitment`) cost.

use bitcoin::hashes::Hash as _;
use bitcoin::{absolute, BlockHash, FeeRate, Transaction};
use criterion::{criterion_group, criterion_main, Criterion};
use paychan::chain::{Monitor, MonitorOutput, MonitorUpdate, SpendKind};
use paychan::channel::{Htlc, Side};
use paychan::shachain::RevocationSecrets;
use paychan::sim::{Pair, Store};
use paychan::tx::commitment::{self, CommitmentNumber, CommitmentSpec, HtlcDirection, HtlcSpec};
use paychan::types::HtlcMsat;
use paychan::MilliSats;
use paychan::Preimage;

const STATES: u64 = 1_000_000;

fn drain(m: &mut Monitor, store: &mut Store) -> usize {
    let mut broadcasts = 0;
    while let Some(o) = m.poll_output() {
        match o {
            MonitorOutput::Persist(p) => {
                store.apply(&p);
                m.handle_persisted(p.seq());
            }
            MonitorOutput::Broadcast(_) => broadcasts += 1,
            _ => {}
        }
    }
    broadcasts
}

/// A's monitor of a fresh channel, fed B's revocations of `states`
/// commitments and `htlcs` HTLC records held from commitment 0 on; and B's
/// revoked commitment `states / 2` holding them.
fn setup(states: u64, htlcs: u64) -> (Monitor, Store, Transaction) {
    let p = Pair::open();
    let mut m = Monitor::new(p.a.monitor.config().clone(), p.a.signer.clone());
    let mut store = Store::default();
    for u in &p.a.monitor_updates {
        m.update(u.clone()).expect("the channel's updates");
    }
    let params = m.params().expect("set up").clone();
    let secrets = RevocationSecrets::new([0xb2; 32]);
    let amount = HtlcMsat::from_msat(600_000);
    let mut specs = Vec::new();
    for id in 0..htlcs {
        let offerer = if id % 2 == 0 { Side::Remote } else { Side::Local };
        let htlc = Htlc {
            offerer,
            id,
            amount,
            r_hash: Preimage(bitcoin::hashes::sha256::Hash::hash(&id.to_le_bytes()).to_byte_array()).hash(),
            expiry: absolute::LockTime::from_height(900_000 + id as u32).expect("a height"),
        };
        m.update(MonitorUpdate::HtlcAdded { side: Side::Remote, number: 0, htlc }).expect("a record");
        let direction = if offerer == Side::Remote { HtlcDirection::Offered } else { HtlcDirection::Received };
        specs.push(HtlcSpec::new(direction, id, amount.msat(), htlc.r_hash, htlc.expiry));
    }
    drain(&mut m, &mut store);
    for n in 0..states {
        m.update(MonitorUpdate::Revoked { number: n, preimage: secrets.preimage(n) }).expect("in order");
        drain(&mut m, &mut store);
    }
    let number = states / 2;
    let in_htlcs = MilliSats::from_msat(600_000 * htlcs);
    let rest = MilliSats::from_sat(params.funding.value()).expect("small").checked_sub(in_htlcs).expect("fits");
    let half = MilliSats::from_msat(rest.to_msat() / 2);
    let revoked = commitment::build(&CommitmentSpec {
        funding: &params.funding,
        owner_final: params.their_final,
        other_final: params.our_final,
        to_owner: half,
        to_other: rest.checked_sub(half).expect("half"),
        htlcs: &specs,
        fee_rate_per_kb: 2_000,
        revocation_hash: secrets.hash(number),
        delay: params.their_delay,
        number: CommitmentNumber { number, obscuring: params.obscuring },
    })
    .expect("a valid commitment");
    (m, store, revoked.tx().clone())
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("monitor");
    group.sample_size(10);
    for htlcs in [0u64, 1500] {
        let (mut m, mut store, revoked) = setup(STATES, htlcs);
        let height = m.best_block().map_or(1, |(h, _)| h + 1);
        // D11, C1-h: what is kept, against one record per revoked state of
        // the former format (286 bytes plus 53 per HTLC).
        let per_state = STATES * (286 + 53 * htlcs);
        println!(
            "monitor kept after {STATES} revoked states, {htlcs} HTLCs: {} bytes stored ({} in a snapshot); \
             one record per state: {per_state} bytes",
            store.len(),
            m.kept_bytes()
        );
        let mut rate = 1u64;
        group.bench_function(format!("revoked_among_a_million_states/{htlcs}_htlcs"), |b| {
            b.iter(|| {
                // A new rate each time: the penalty is signed anew.
                rate = rate % 3 + 1;
                m.handle_fee_estimate(FeeRate::from_sat_per_vb_u32(rate as u32));
                m.block_connected(height, BlockHash::all_zeros(), 1_700_000_000, std::slice::from_ref(&revoked))
                    .expect("next");
                assert!(matches!(m.spend(), Some((_, SpendKind::RevokedCommitment { .. }))));
                let broadcasts = drain(&mut m, &mut store);
                // R6.1-c: 1,500 HTLC inputs need several transactions.
                assert!(broadcasts > (htlcs as usize) / 400, "{broadcasts}");
                m.block_disconnected(height).expect("the tip");
                drain(&mut m, &mut store);
            })
        });
    }
    group.finish();

    // 10,000 states with 20 HTLCs live in each.
    let (mut m, mut store, _) = setup(0, 0);
    let secrets = RevocationSecrets::new([0xb2; 32]);
    let htlc = |id: u64| Htlc {
        offerer: if id % 2 == 0 { Side::Local } else { Side::Remote },
        id,
        amount: HtlcMsat::from_msat(1_000_000),
        r_hash: Preimage([id as u8; 32]).hash(),
        expiry: absolute::LockTime::from_height(500_000).expect("a height"),
    };
    for c in 0..10_000u64 {
        m.update(MonitorUpdate::HtlcAdded { side: Side::Remote, number: c + 1, htlc: htlc(c) }).expect("ok");
        if c >= 20 {
            let old = htlc(c - 20);
            m.update(MonitorUpdate::HtlcRemoved {
                side: Side::Remote,
                number: c + 1,
                offerer: old.offerer,
                id: old.id,
            })
            .expect("ok");
        }
        m.update(MonitorUpdate::Revoked { number: c, preimage: secrets.preimage(c) }).expect("in order");
        drain(&mut m, &mut store);
    }
    println!(
        "monitor kept after 10000 states with 20 live HTLCs: {} bytes stored ({} in a snapshot); \
         one record per state: {} bytes",
        store.len(),
        m.kept_bytes(),
        10_000 * (286 + 53 * 20)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
