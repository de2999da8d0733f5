//! The fault harness (`paychan::sim::faults`) over many seeded schedules:
//! two channels over a lossy link, with transport drops, crashes between a
//! write and its confirmation, pipelined writes, crossing messages, fee
//! changes and closes. Every schedule is honest, so the channel must never
//! fail, and every invariant of the harness must hold after every step.
//!
//! `PAYCHAN_FAULT_SCHEDULES` sets the number of schedules per test (each of
//! the four tests runs its own range of seeds, shifted by
//! `PAYCHAN_FAULT_BASE`).

use paychan::sim::faults::{Harness, Report, Rng};

const STEPS: usize = 200;

fn schedules() -> u64 {
    std::env::var("PAYCHAN_FAULT_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_500)
}

fn run_range(first: u64) {
    let n = schedules();
    let mut total = Report::default();
    // PAYCHAN_FAULT_BASE shifts every range, to explore other schedules.
    let base = std::env::var("PAYCHAN_FAULT_BASE").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let start = base + first * 1_000_000;
    let mut seeds = start..start + n;
    // To replay one schedule: PAYCHAN_FAULT_SEED=<seed> (with
    // PAYCHAN_FAULT_TRACE=1 to print its operations).
    if let Some(seed) = std::env::var("PAYCHAN_FAULT_SEED").ok().and_then(|v| v.parse::<u64>().ok()) {
        if (seed - base.min(seed)) / 1_000_000 != first {
            return;
        }
        seeds = seed..seed + 1;
    }
    for seed in seeds {
        // R1.2-a, R1.2-b, R1.2-c, R1.2-d, R1.2-e, R6.3-a: no schedule of
        // drops, crashes and restores fails the channel or loses anything.
        let report = Harness::run(&mut Rng::new(seed), STEPS).unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        total.steps += report.steps;
        total.offered += report.offered;
        total.fulfilled += report.fulfilled;
        total.failed += report.failed;
        total.crashes += report.crashes;
        total.drops += report.drops;
        total.opened |= report.opened;
        total.closed |= report.closed;
    }
    if n < 100 || std::env::var_os("PAYCHAN_FAULT_SEED").is_some() {
        return;
    }
    // The schedules really exercise what they claim to.
    assert!(total.opened && total.closed, "{total:?}");
    assert!(total.fulfilled > 0 && total.failed > 0 && total.crashes > 0 && total.drops > 0, "{total:?}");
    eprintln!("seeds {start}..{}: {total:?}", start + n);
}

#[test]
fn fault_schedules_0() {
    run_range(0);
}

#[test]
fn fault_schedules_1() {
    run_range(1);
}

#[test]
fn fault_schedules_2() {
    run_range(2);
}

#[test]
fn fault_schedules_3() {
    run_range(3);
}
