//! kmodel's concurrent mode (issue 18 item 6): several kernel threads on one connection, so
//! a FUSE_NOTIFY_IOMAP_DEV_INVAL that reaches the kernel after the freed block was handed to
//! another thread as file data is caught (a stale cached page of it could be written back
//! over that data). `fault=late_dev_inval` restores the server's old order (invalidate after
//! unlocking, here 20 ms late) to show the mode catches it; without the fault the same
//! workloads pass.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use kmodel::{Error, Kernel, NodeId, RunConfig};

const TIMEOUT: Duration = Duration::from_secs(60);
const BLOCKS: u64 = 8;
const ROUNDS: usize = 25;

fn is_late_inval(e: &Error) -> bool {
    e.is_violation_of("FUSE_NOTIFY_IOMAP_DEV_INVAL") && e.is_violation_of("stale page")
}

/// Device block numbers of a file's first `BLOCKS` blocks.
fn device_blocks(k: &mut Kernel, f: NodeId) -> kmodel::Result<Vec<u64>> {
    let bs = k.block_size();
    let extents = k.fiemap(f, 0, BLOCKS * bs, true)?;
    Ok(extents
        .iter()
        .flat_map(|e| (0..e.length / bs).map(move |i| e.physical / bs + i))
        .collect())
}

/// Thread A writes a file and truncates it (freeing its blocks), round after round; thread
/// B creates files and writes them, so new allocations pick up what A just freed. Returns
/// the blocks A freed, the blocks B got, and the first error of each thread.
fn free_and_reuse(fx: &Fixture) -> (BTreeSet<u64>, BTreeSet<u64>, Option<Error>, Option<Error>) {
    let main = Kernel::mount_shared(&fx.spec, TIMEOUT).expect("mount");
    let (mut a, mut b) = (main.handle().unwrap(), main.handle().unwrap());
    let bs = main.block_size();
    let data = vec![0x5au8; (BLOCKS * bs) as usize];
    let (freed, got, err_a, err_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            let mut freed = BTreeSet::new();
            let run = (|| {
                for i in 0..ROUNDS {
                    let f = a.create(FUSE_ROOT_ID, &format!("a{i}"), 0o644)?;
                    a.write_direct(f, 0, &data, 0)?;
                    freed.extend(device_blocks(&mut a, f)?);
                    a.truncate(f, 0)?;
                }
                a.close_all()
            })();
            (freed, run.err())
        });
        let tb = s.spawn(|| {
            let mut got = BTreeSet::new();
            let run = (|| {
                for i in 0..ROUNDS * 2 {
                    let f = b.create(FUSE_ROOT_ID, &format!("b{i}"), 0o644)?;
                    b.write_direct(f, 0, &data, 0)?;
                    got.extend(device_blocks(&mut b, f)?);
                    std::thread::sleep(Duration::from_millis(2));
                }
                b.close_all()
            })();
            (got, run.err())
        });
        let (freed, err_a) = ta.join().unwrap();
        let (got, err_b) = tb.join().unwrap();
        (freed, got, err_a, err_b)
    });
    if err_a.is_none() && err_b.is_none() {
        main.destroy().expect("unmount");
        kmodel::image::fsck(&fx.spec.image).expect("e2fsck -fn");
    }
    (freed, got, err_a, err_b)
}

#[test]
fn freed_blocks_reused_by_another_thread_are_invalidated_in_time() {
    let fx = Fixture::new(64 << 20, 4096, &[]);
    let (freed, got, err_a, err_b) = free_and_reuse(&fx);
    assert!(
        err_a.is_none() && err_b.is_none(),
        "A: {err_a:?}\nB: {err_b:?}"
    );
    let reused = freed.intersection(&got).count();
    println!(
        "A freed {} blocks, B got {}, {reused} of them freed by A first",
        freed.len(),
        got.len()
    );
    assert!(reused > 0, "the scenario must make B reuse blocks A freed");
}

#[test]
fn a_late_invalidation_of_a_reused_block_is_caught() {
    let fx = Fixture::new(64 << 20, 4096, &["fault=late_dev_inval"]);
    let (_, _, err_a, err_b) = free_and_reuse(&fx);
    let caught: Vec<&Error> = [&err_a, &err_b].into_iter().flatten().collect();
    assert!(!caught.is_empty(), "the late invalidation went unnoticed");
    for e in &caught {
        println!("caught: {e}");
    }
    assert!(caught.iter().any(|e| is_late_inval(e)), "{caught:?}");
}

fn random_run(
    seed: u64,
    options: &[&str],
) -> Result<kmodel::ConcurrentReport, Box<kmodel::RunFailure>> {
    let mut cfg = RunConfig::new(common::server_binary(), seed, 300);
    cfg.server_options = options.iter().map(|s| s.to_string()).collect();
    cfg.max_file_size = 2 << 20;
    cfg.max_files = 6;
    kmodel::run_concurrent(&cfg, 4)
}

#[test]
fn concurrent_random_runs_pass() {
    // Seed 3 runs with 1 KiB blocks.
    for seed in [1, 3] {
        match random_run(seed, &[]) {
            Ok(report) => {
                println!("{report}");
                assert!(report.dev_invals > 0, "the run freed no blocks: {report}");
            }
            Err(failure) => panic!("{failure}"),
        }
    }
}

#[test]
fn concurrent_random_run_catches_late_invalidation() {
    match random_run(1, &["fault=late_dev_inval"]) {
        Ok(report) => panic!("the late invalidation went unnoticed: {report}"),
        Err(failure) => {
            println!(
                "caught at step {} ({}):\n{}",
                failure.step, failure.op, failure.error
            );
            assert!(is_late_inval(&failure.error), "{failure}");
            if let Some(dir) = &failure.workdir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
