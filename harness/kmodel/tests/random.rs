//! Seeded random sequences against iomapfs in iomap mode (issue item 3).
//!
//! CI runs three fixed seeds and one time-derived seed (all printed), 5,000 operations each
//! by default: 20,000 operations in all, with remounts (full verification, e2fsck,
//! ext4-view) every 400 operations and at the end. Seeds divisible by 3 use 1 KiB blocks,
//! the others 4 KiB. Replay a failure with
//! `KMODEL_SEED=<seed> cargo test -p kmodel --test random -- --nocapture` (only that seed
//! runs); set the number of operations with `KMODEL_OPS`.

mod common;

use kmodel::RunConfig;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

fn run_seed(seed: u64) {
    let ops = env_u64("KMODEL_OPS").unwrap_or(5000);
    let cfg = RunConfig::new(common::server_binary(), seed, ops);
    match kmodel::run(&cfg) {
        Ok(report) => println!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// A fixed seed, unless KMODEL_SEED selects a replay (which `replay_or_time_derived` runs).
fn fixed_seed(seed: u64) {
    match env_u64("KMODEL_SEED") {
        Some(only) => println!("seed {seed} skipped: KMODEL_SEED={only} replays only that seed"),
        None => run_seed(seed),
    }
}

#[test]
fn seed_1() {
    fixed_seed(1);
}

#[test]
fn seed_2() {
    fixed_seed(2);
}

#[test]
fn seed_3_1k_blocks() {
    fixed_seed(3);
}

/// KMODEL_SEED when set (a replay), else a new seed every run (printed).
#[test]
fn replay_or_time_derived() {
    let seed = env_u64("KMODEL_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        now.as_nanos() as u64 % 1_000_000_007
    });
    run_seed(seed);
}
