//! `workloads`: data-integrity workloads for a mounted directory.
//!
//! Exit status: 0 clean, 1 findings (the filesystem misbehaved), 2 usage error (bad
//! arguments, manifest or ack log),
//! 3 the workload could not run (setup, remount hook, fio missing).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use workloads::{append, churn, dio, fio, Summary};

#[derive(Parser)]
#[command(
    version,
    about = "Direct-I/O and append-write workloads that prove data integrity on a mounted directory"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Self-describing blocks through O_DIRECT: sequential, random sparse, sector-aligned,
    /// in flight (io_uring), coherent with buffered and mmap access; synced, remounted
    /// (--remount-cmd) and re-verified.
    Dio(DioArgs),
    /// Concurrent O_APPEND writers on a shared log; optional fsync acknowledgements for the
    /// crash variant, appends racing with truncate, many small files.
    Append(AppendArgs),
    /// Files of self-describing blocks created, rewritten and deleted (freed blocks get
    /// reused), each durable state acknowledged in --ack-log: for power-cut tests.
    Churn(ChurnArgs),
    /// Re-verify a directory later (after a remount, a reboot, a crash).
    #[command(subcommand)]
    Verify(VerifyCmd),
    /// Throughput: the built-in fio job files (MB/s, IOPS, latency percentiles).
    Fio(FioArgs),
}

#[derive(Args)]
struct Common {
    /// Seed (decimal or 0x-hex); random if omitted, and printed for replay.
    #[arg(long, value_parser = dio::parse_seed)]
    seed: Option<u64>,
    /// Bound on the writing phases' wall-clock time, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Shell command run once everything is synced and closed, e.g.
    /// "umount /mnt && mount -t fuse.iomapfs /dev/vdb /mnt"; the data is verified again after it.
    #[arg(long)]
    remount_cmd: Option<String>,
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct DioArgs {
    dir: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Most file space used (suffixes k, m, g); about twice that is written.
    #[arg(long, default_value = "64m", value_parser = parse_size)]
    max_bytes: u64,
    /// Files of the random phase.
    #[arg(long, default_value_t = 4)]
    files: u32,
    /// Operations of the random phase (the other phases scale from it).
    #[arg(long, default_value_t = 2000)]
    ops: u64,
    /// Direct I/Os in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=256))]
    queue_depth: u32,
    /// Save the model of every file, for `workloads verify dio`.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(Args)]
struct AppendArgs {
    dir: PathBuf,
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    writers: u32,
    /// Records per writer.
    #[arg(long, default_value_t = 500)]
    records: u64,
    /// O_DIRECT|O_APPEND with records of whole 4 KiB blocks.
    #[arg(long)]
    direct: bool,
    /// With --direct: record sizes are multiples of this (the target must accept it).
    #[arg(long, default_value_t = 4096)]
    direct_align: u32,
    /// fsync every K records and acknowledge them in --ack-log.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    fsync_every: Option<u64>,
    /// Acknowledgement log, OUTSIDE the filesystem under test.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// The server will be killed mid-run: write errors end writers quietly; verify later
    /// with `workloads verify append DIR --ack-log PATH`.
    #[arg(long)]
    crash_tolerant: bool,
    /// Also race appends with a truncating thread.
    #[arg(long)]
    truncate: bool,
    /// Also create this many small appended files.
    #[arg(long, default_value_t = 0)]
    small_files: u64,
}

#[derive(Args)]
struct ChurnArgs {
    dir: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Acknowledgement log, OUTSIDE the filesystem under test.
    #[arg(long)]
    ack_log: PathBuf,
    /// Live files kept around.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    files: u32,
    /// Most 4 KiB units per file.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_units: u32,
    /// The filesystem will go away mid-run: an I/O error ends the run quietly; verify later
    /// with `workloads verify churn DIR --ack-log PATH`.
    #[arg(long)]
    crash_tolerant: bool,
}

#[derive(Subcommand)]
enum VerifyCmd {
    /// Check DIR against a manifest saved by `workloads dio --manifest`.
    Dio {
        dir: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Check DIR's churn files against its acknowledgement log: every acknowledged file
    /// intact, no deleted file back, no other file's (freed) blocks in any file.
    Churn {
        dir: PathBuf,
        #[arg(long)]
        ack_log: PathBuf,
        /// The run was not interrupted: nothing beyond the log may be there.
        #[arg(long)]
        exact: bool,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Check DIR's shared log against an acknowledgement log: every acknowledged record
    /// present once and intact.
    Append {
        dir: PathBuf,
        #[arg(long)]
        ack_log: PathBuf,
        /// Also nothing but the acknowledged records (a run that was not interrupted).
        #[arg(long)]
        exact: bool,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Args)]
struct FioArgs {
    dir: PathBuf,
    /// Seconds per job.
    #[arg(long, default_value_t = 5)]
    runtime: u32,
    /// File size per job, fio syntax.
    #[arg(long, default_value = "256m")]
    size: String,
    /// Run only these jobs (repeatable): seq-write, seq-read, rand-write, rand-read, append, append-direct.
    #[arg(long = "job")]
    jobs: Vec<String>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a number with k, m or g)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("workloads: error: {e:#}");
            let usage = e.downcast_ref::<workloads::Error>().is_some_and(|e| {
                matches!(
                    e,
                    workloads::Error::Config(_) | workloads::Error::Parse { .. }
                )
            });
            ExitCode::from(if usage { 2 } else { 3 })
        }
    }
}

/// Runs a command; true when no findings.
fn run(cmd: Cmd) -> Result<bool> {
    let summary = match cmd {
        Cmd::Dio(a) => {
            let seed = announce_seed("dio", &a.dir, a.common.seed);
            let cfg = dio::Config {
                seed,
                duration: Duration::from_secs(a.common.duration),
                max_bytes: a.max_bytes,
                files: a.files,
                ops: a.ops,
                queue_depth: a.queue_depth,
            };
            let mut hook = a.common.remount_cmd.as_deref().map(remount_hook);
            let report = dio::run(
                &a.dir,
                &cfg,
                hook.as_mut().map(|h| h as workloads::RemountHook),
            )?;
            if let Some(p) = &a.manifest {
                let text = serde_json::to_string(&report.manifest)?;
                std::fs::write(p, text).with_context(|| format!("write {}", p.display()))?;
            }
            finish(report.summary, a.common.json.as_deref())?
        }
        Cmd::Append(a) => {
            let seed = announce_seed("append", &a.dir, a.common.seed);
            let cfg = append::Config {
                seed,
                writers: a.writers,
                records: a.records,
                direct: a.direct,
                direct_align: a.direct_align,
                fsync_every: a.fsync_every,
                ack_log: a.ack_log,
                crash_tolerant: a.crash_tolerant,
                truncate: a.truncate,
                small_files: a.small_files,
                duration: Duration::from_secs(a.common.duration),
            };
            let mut hook = a.common.remount_cmd.as_deref().map(remount_hook);
            let summary = append::run(
                &a.dir,
                &cfg,
                hook.as_mut().map(|h| h as workloads::RemountHook),
            )?;
            finish(summary, a.common.json.as_deref())?
        }
        Cmd::Churn(a) => {
            let seed = announce_seed("churn", &a.dir, a.common.seed);
            let cfg = churn::Config {
                seed,
                duration: Duration::from_secs(a.common.duration),
                files: a.files,
                max_units: a.max_units,
                ack_log: a.ack_log,
                crash_tolerant: a.crash_tolerant,
            };
            finish(churn::run(&a.dir, &cfg)?, a.common.json.as_deref())?
        }
        Cmd::Verify(VerifyCmd::Churn {
            dir,
            ack_log,
            exact,
            json,
        }) => finish(churn::verify(&dir, &ack_log, exact)?, json.as_deref())?,
        Cmd::Verify(VerifyCmd::Dio {
            dir,
            manifest,
            json,
        }) => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("read {}", manifest.display()))?;
            let m: dio::Manifest = serde_json::from_str(&text)
                .with_context(|| format!("parse {}", manifest.display()))?;
            finish(dio::verify(&dir, &m)?, json.as_deref())?
        }
        Cmd::Verify(VerifyCmd::Append {
            dir,
            ack_log,
            exact,
            json,
        }) => finish(
            append::verify_acked(&dir, &ack_log, exact)?,
            json.as_deref(),
        )?,
        Cmd::Fio(a) => {
            let opts = fio::FioOptions {
                runtime: a.runtime,
                size: a.size,
                jobs: a.jobs,
            };
            let start = std::time::Instant::now();
            let results = fio::run(&a.dir, &opts)?;
            let mut s = Summary::new("fio", None);
            s.ops = results.len() as u64;
            s.set_duration(start.elapsed());
            for r in &results {
                println!(
                    "{:<14} {:<5} {:>9.1} MB/s {:>10.0} IOPS  clat p50 {:>8.1} us  p99 {:>9.1} us  p99.9 {:>9.1} us",
                    r.job, r.op, r.mb_s, r.iops, r.clat_p50_us, r.clat_p99_us, r.clat_p99_9_us
                );
            }
            s.fio = results;
            if let Some(p) = &a.json {
                s.write_json(p)?;
            }
            true
        }
    };
    Ok(summary)
}

fn announce_seed(what: &str, dir: &Path, seed: Option<u64>) -> u64 {
    let seed = seed.unwrap_or_else(rand::random);
    eprintln!(
        "workloads {what}: seed {seed:#x} (replay: workloads {what} {} --seed {seed:#x} ...)",
        dir.display()
    );
    seed
}

fn remount_hook(cmd: &str) -> impl FnMut() -> std::result::Result<(), workloads::BoxError> + '_ {
    move || {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{cmd}` exited with {status}").into())
        }
    }
}

fn finish(summary: Summary, json: Option<&Path>) -> Result<bool> {
    print!("{}", summary.render());
    if let Some(p) = json {
        summary.write_json(p)?;
    }
    Ok(summary.passed)
}
