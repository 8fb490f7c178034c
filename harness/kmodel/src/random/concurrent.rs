//! Concurrent mode: several kernel threads drive one server at once, as a kernel does (many
//! tasks, many requests in flight on one /dev/fuse). Each thread runs its own seeded random
//! sequence on its own files (names prefixed `tN`) through a [`Kernel::handle`] on one
//! shared connection; the server answers them on its own reader threads. What only shows
//! under concurrency is checked where it shows: the device model (`crate::device`) sees
//! every DEV_INVAL and every data bio in the server's order, so an invalidation that reaches
//! the kernel after the block it frees was handed to another thread as file data is a
//! protocol violation; the oracles, e2fsck and ext4-view check the rest at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{RunConfig, RunFailure, RunReport, Runner};
use crate::error::Result;
use crate::image;
use crate::kernel::Kernel;
use crate::oracle::SparseFile;
use crate::session::ServerSpec;

/// What a successful concurrent run did.
#[derive(Debug, Clone, Default)]
pub struct ConcurrentReport {
    pub seed: u64,
    pub threads: usize,
    /// Each thread's operations.
    pub per_thread: Vec<RunReport>,
    pub elapsed: std::time::Duration,
    pub requests: BTreeMap<String, u64>,
    pub notifications: BTreeMap<i32, u64>,
    /// DEV_INVAL notifications and the bytes they covered.
    pub dev_invals: u64,
    pub invalidated_bytes: u64,
}

impl std::fmt::Display for ConcurrentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: u64 = self.per_thread.iter().map(|r| r.ops).sum();
        writeln!(
            f,
            "seed {} ({} threads, block size {}): {ops} ops, {:.1?}",
            self.seed,
            self.threads,
            self.per_thread.first().map_or(0, |r| r.block_size),
            self.elapsed
        )?;
        let mut op_counts: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &self.per_thread {
            for (k, v) in &r.op_counts {
                *op_counts.entry(k).or_default() += v;
            }
        }
        let ops: Vec<String> = op_counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "  ops: {}", ops.join(", "))?;
        let reqs: Vec<String> = self
            .requests
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  requests: {}", reqs.join(", "))?;
        write!(
            f,
            "  DEV_INVAL: {} notifications covering {} KiB, none late",
            self.dev_invals,
            self.invalidated_bytes / 1024
        )
    }
}

/// The seed of thread `i` (thread 0 runs the run's own seed).
fn thread_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// How one thread ended.
struct ThreadEnd {
    index: usize,
    files: BTreeMap<String, SparseFile>,
    dirs: BTreeSet<String>,
    report: RunReport,
    failure: Option<(Instant, RunFailure)>,
}

/// Runs `threads` random sequences of `cfg.ops` operations each at once against one server
/// (no remounts; one final unmount, e2fsck and ext4-view over every thread's files).
pub fn run_concurrent(
    cfg: &RunConfig,
    threads: usize,
) -> std::result::Result<ConcurrentReport, Box<RunFailure>> {
    let threads = threads.max(1);
    println!(
        "kmodel: seed {} ({threads} threads × {} ops, block size {})",
        cfg.seed, cfg.ops, cfg.block_size
    );
    let started = Instant::now();
    let fail = |error, workdir| {
        Box::new(RunFailure {
            seed: cfg.seed,
            ops: cfg.ops,
            step: cfg.ops,
            op: "setup or final checks".into(),
            error,
            recent: Vec::new(),
            workdir,
            threads: Some(threads),
        })
    };
    let temp = tempfile::Builder::new()
        .prefix("kmodel-concurrent-")
        .tempdir()
        .map_err(|e| fail(crate::Error::io("create a work directory", e), None))?;
    let workdir = cfg
        .workdir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let keep = |temp: tempfile::TempDir| {
        if cfg.workdir.is_some() {
            cfg.workdir.clone()
        } else {
            Some(temp.keep())
        }
    };
    // Each thread runs without remounts (a remount would end the others' connection).
    let mut client_cfg = cfg.clone();
    client_cfg.remount_every = u64::MAX;
    client_cfg.fsck_each_op = false;
    let image = workdir.join("image.ext4");
    let spec = ServerSpec {
        binary: cfg.server.clone(),
        image: image.clone(),
        options: cfg.server_options.clone(),
        workdir: workdir.clone(),
        env: Vec::new(),
    };
    let main = match image::mkfs(&image, cfg.image_size, cfg.block_size)
        .and_then(|_| Kernel::mount_shared(&spec, cfg.reply_timeout))
    {
        Ok(k) => k,
        Err(e) => return Err(fail(e, keep(temp))),
    };
    let configs: Vec<RunConfig> = (0..threads)
        .map(|i| RunConfig {
            seed: thread_seed(cfg.seed, i),
            ..client_cfg.clone()
        })
        .collect();
    let stop = AtomicBool::new(false);
    let mut ends: Vec<ThreadEnd> = Vec::new();
    let spawned: Result<()> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, tcfg) in configs.iter().enumerate() {
            let kernel = main.handle()?;
            let (stop, workdir) = (&stop, workdir.clone());
            handles.push(scope.spawn(move || run_thread(i, tcfg, kernel, workdir, stop)));
        }
        for h in handles {
            ends.push(h.join().expect("kmodel threads return their failures"));
        }
        Ok(())
    });
    if let Err(e) = spawned {
        return Err(fail(e, keep(temp)));
    }
    let first = ends
        .iter_mut()
        .filter_map(|e| e.failure.take().map(|f| (e.index, f)))
        .min_by_key(|(_, (at, _))| *at);
    if let Some((index, (_, mut failure))) = first {
        drop(main); // kills the server
        failure.op = format!("thread {index} (its seed {}): {}", failure.seed, failure.op);
        failure.seed = cfg.seed;
        failure.threads = Some(threads);
        failure.workdir = keep(temp);
        return Err(Box::new(failure));
    }
    let mut report = ConcurrentReport {
        seed: cfg.seed,
        threads,
        requests: main.request_counts(),
        notifications: main.notification_counts().into_iter().collect(),
        dev_invals: main.invalidated().len() as u64,
        invalidated_bytes: main.invalidated().iter().map(|r| r.1).sum(),
        ..Default::default()
    };
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for end in ends {
        files.extend(end.files);
        dirs.extend(end.dirs);
        report.per_thread.push(end.report);
    }
    let checked = main
        .destroy()
        .and_then(|_| image::fsck(&image))
        .and_then(|_| image::independent_check(&image, &files, &dirs));
    if let Err(e) = checked {
        return Err(fail(e, keep(temp)));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One kernel thread: its sequence, a full read-back, then its files closed and forgotten.
fn run_thread(
    index: usize,
    cfg: &RunConfig,
    kernel: Kernel,
    workdir: PathBuf,
    stop: &AtomicBool,
) -> ThreadEnd {
    let mut runner = Runner::new(cfg, workdir);
    runner.prefix = format!("t{index}");
    runner.stop = Some(stop);
    runner.kernel = Some(kernel);
    let result = runner.ops_loop().and_then(|_| {
        runner.current = "final verification of this thread's files".into();
        runner.verify_all(true)?;
        runner.k().close_all()
    });
    runner.report.ops = runner.step;
    let failure = result.err().map(|error| {
        stop.store(true, Ordering::Relaxed);
        let failure = RunFailure {
            seed: cfg.seed,
            ops: cfg.ops,
            step: runner.step,
            op: runner.current.clone(),
            error,
            recent: runner.recent.iter().cloned().collect(),
            workdir: None,
            threads: None,
        };
        (Instant::now(), failure)
    });
    ThreadEnd {
        index,
        files: runner
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.oracle.clone()))
            .collect(),
        dirs: runner.dirs.clone(),
        report: runner.report.clone(),
        failure,
    }
}
