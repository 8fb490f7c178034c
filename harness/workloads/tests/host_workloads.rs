//! The workloads against both targets — kernel ext4 on a loop device (the control) and
//! iomapfs on the host kernel's FUSE — each ending with a remount and full re-verification,
//! a clean `e2fsck -fn` and an ext4-view read of the image.

use anyhow::{ensure, Result};
use std::time::{Duration, Instant};
use test_support::Target;
use test_support::{FsSpec, TestFs};
use workloads::{append, dio, fio, BoxError, Summary};

test_support::target_tests!(
    dio_workload,
    dio_workload_1k_blocks,
    append_buffered_truncate_small_files,
    append_direct,
    fio_jobs
);

fn report(t: &dyn Target, what: &str, s: &Summary, took: Duration) -> Result<()> {
    eprintln!("{} {what} ({took:.1?}):\n{}", t.name(), s.render());
    ensure!(
        s.passed,
        "{}: {what} has {} findings:\n{}",
        t.name(),
        s.findings_total,
        s.render()
    );
    Ok(())
}

fn dio_workload(t: &dyn Target) -> Result<()> {
    let cfg = dio::Config {
        seed: 0xd10_0001,
        duration: Duration::from_secs(40),
        max_bytes: 24 << 20,
        files: 3,
        ops: 1200,
        queue_depth: 8,
    };
    dio_on(t, TestFs::new(t, FsSpec::plain(256))?, &cfg)
}

/// 1 KiB blocks: every 4 KiB unit spans four blocks, every sector write is sub-block.
fn dio_workload_1k_blocks(t: &dyn Target) -> Result<()> {
    let cfg = dio::Config {
        seed: 0xd10_0002,
        duration: Duration::from_secs(40),
        max_bytes: 12 << 20,
        files: 2,
        ops: 800,
        queue_depth: 16,
    };
    dio_on(
        t,
        TestFs::new(
            t,
            FsSpec {
                block_size: 1024,
                ..FsSpec::plain(128)
            },
        )?,
        &cfg,
    )
}

fn dio_on(t: &dyn Target, mut fx: TestFs, cfg: &dio::Config) -> Result<()> {
    let start = Instant::now();
    let mnt = fx.mnt().to_path_buf();
    let mut remounts = 0;
    let mut hook = || -> Result<(), BoxError> {
        remounts += 1;
        fx.remount().map_err(|e| e.to_string().into())
    };
    let r = dio::run(&mnt, cfg, Some(&mut hook))?;
    ensure!(remounts == 1, "the remount hook ran {remounts} times");
    report(t, "dio", &r.summary, start.elapsed())?;
    // Every phase ran and did something.
    for p in &r.summary.phases {
        ensure!(
            p.ops > 0
                && p.cut_short
                    .as_deref()
                    .is_none_or(|c| !c.starts_with("stopped")),
            "phase {p:?}"
        );
    }
    ensure!(r
        .summary
        .phases
        .iter()
        .any(|p| p.name == "remount" && p.bytes_read > 0));
    // The manifest re-verifies the same data independently of the run.
    let again = dio::verify(&mnt, &r.manifest)?;
    ensure!(
        again.passed && again.bytes_read == r.summary.phases.last().map_or(0, |p| p.bytes_read)
    );
    fx.finish()
}

fn append_buffered_truncate_small_files(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::new(t, FsSpec::plain(256))?;
    let cfg = append::Config {
        seed: 0xa99_0001,
        writers: 4,
        records: 300,
        truncate: true,
        small_files: 2000,
        ack_log: Some(fx.scratch().join("ack.log")),
        duration: Duration::from_secs(60),
        ..append::Config::default()
    };
    let start = Instant::now();
    let mnt = fx.mnt().to_path_buf();
    let mut hook = || -> Result<(), BoxError> { fx.remount().map_err(|e| e.to_string().into()) };
    let s = append::run(&mnt, &cfg, Some(&mut hook))?;
    report(
        t,
        "append (buffered, truncate race, 2000 small files)",
        &s,
        start.elapsed(),
    )?;
    ensure!(
        s.phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
            == ["shared", "truncate", "small-files", "remount"]
    );
    let shared = &s.phases[0];
    ensure!(shared.ops == 4 * 300, "shared log ops {}", shared.ops);
    // The acknowledgement log (every write acknowledged) agrees, exactly.
    let v = append::verify_acked(&mnt, &cfg.ack_log.clone().unwrap_or_default(), true)?;
    ensure!(v.passed, "verify from the ack log:\n{}", v.render());
    fx.finish()
}

fn append_direct(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::new(t, FsSpec::plain(128))?;
    let cfg = append::Config {
        seed: 0xa99_0002,
        writers: 4,
        records: 100,
        direct: true,
        fsync_every: Some(10),
        duration: Duration::from_secs(60),
        ..append::Config::default()
    };
    let start = Instant::now();
    let mnt = fx.mnt().to_path_buf();
    let mut hook = || -> Result<(), BoxError> { fx.remount().map_err(|e| e.to_string().into()) };
    let s = append::run(&mnt, &cfg, Some(&mut hook))?;
    report(
        t,
        "append (O_DIRECT|O_APPEND, fsync every 10)",
        &s,
        start.elapsed(),
    )?;
    ensure!(s.phases[0].name == "shared-direct" && s.phases[0].ops == 4 * 100 + 4 * 10);
    // Whole blocks only: the file is a multiple of 4 KiB.
    let len = std::fs::metadata(mnt.join("wl-append/shared-direct.log"))?.len();
    ensure!(
        len % 4096 == 0 && len >= 400 * 4096,
        "direct log is {len} bytes"
    );
    fx.finish()
}

/// The fio job files run and report sane numbers (the figures themselves come from a
/// longer manual run: `workloads fio DIR`).
fn fio_jobs(t: &dyn Target) -> Result<()> {
    if !test_support::needs(test_support::needs::tool("fio")) {
        return Ok(());
    }
    let fx = TestFs::new(t, FsSpec::plain(256))?;
    let opts = fio::FioOptions {
        runtime: 1,
        size: "16m".into(),
        jobs: ["seq-write", "rand-read", "append-direct"]
            .map(String::from)
            .to_vec(),
    };
    let start = Instant::now();
    let results = fio::run(fx.mnt(), &opts)?;
    eprintln!("{} fio ({:.1?}): {results:#?}", t.name(), start.elapsed());
    ensure!(results.len() == 3);
    for r in &results {
        ensure!(r.mb_s > 0.0 && r.iops > 0.0, "{r:?}");
        ensure!(
            r.clat_p50_us > 0.0
                && r.clat_p50_us <= r.clat_p99_us
                && r.clat_p99_us <= r.clat_p99_9_us,
            "{r:?}"
        );
    }
    ensure!(results[1].op == "read" && results[0].op == "write");
    fx.finish()
}
