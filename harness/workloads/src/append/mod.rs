//! The append workload: concurrent O_APPEND writers on a shared log (buffered, or
//! O_DIRECT|O_APPEND with aligned records), optionally fsyncing every K records and logging
//! acknowledgements outside the mount for the crash variant; appends racing with truncate;
//! many small appended files. Verified in-process, again after a remount, and later from
//! the acknowledgement log (`workloads verify append`).
//!
//! Everything lives in `DIR/wl-append/`, which a run recreates.

pub mod acklog;
pub mod check;
pub mod small;
pub mod truncate;
pub mod writers;

pub use check::{check_log, Expect, LogStats};

use crate::finding::{Finding, Findings, Kind};
use crate::record::Style;
use crate::summary::{PhaseSummary, Summary};
use crate::{Error, RemountHook, Result};
use acklog::AckHeader;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use writers::{run_writer, WriterPlan};

pub const SUBDIR: &str = "wl-append";

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub writers: u32,
    /// Records per writer on the shared log (and in the truncate race).
    pub records: u64,
    /// O_DIRECT|O_APPEND with records of whole 4 KiB blocks.
    pub direct: bool,
    /// Record sizes are multiples of this with `direct` (4096; 512 suits sector-aligned
    /// targets; FUSE also accepts unaligned direct I/O, e.g. 100).
    pub direct_align: u32,
    /// fsync after every K records (and at the end), acknowledging them.
    pub fsync_every: Option<u64>,
    /// Where acknowledgements go: a path OUTSIDE the filesystem under test.
    pub ack_log: Option<PathBuf>,
    /// The server will be killed: write errors end writers quietly and the in-process
    /// verification is skipped once one happened (verify later from the ack log).
    pub crash_tolerant: bool,
    /// Also run the appends-racing-truncate scenario.
    pub truncate: bool,
    /// Also create this many small appended files (0: no).
    pub small_files: u64,
    /// Wall-clock bound of the writing (verification always completes).
    pub duration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            writers: 4,
            records: 500,
            direct: false,
            direct_align: 4096,
            fsync_every: None,
            ack_log: None,
            crash_tolerant: false,
            truncate: false,
            small_files: 0,
            duration: Duration::from_secs(60),
        }
    }
}

impl Config {
    pub fn style(&self) -> Style {
        if self.direct {
            Style::Direct {
                align: self.direct_align,
            }
        } else {
            Style::Buffered
        }
    }
    /// The shared log's path relative to the target directory.
    pub fn log_name(&self) -> String {
        format!(
            "{SUBDIR}/{}",
            if self.direct {
                "shared-direct.log"
            } else {
                "shared.log"
            }
        )
    }
}

pub fn run(dir: &Path, cfg: &Config, remount: Option<RemountHook>) -> Result<Summary> {
    if cfg.writers == 0
        || cfg.fsync_every == Some(0)
        || !(64..=(256 << 10)).contains(&cfg.direct_align)
    {
        return Err(Error::Config(
            "append needs --writers >= 1, --fsync-every >= 1 and --direct-align in 64..=262144"
                .into(),
        ));
    }
    let start = Instant::now();
    let deadline = start + cfg.duration;
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let root = dir.join(SUBDIR);
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| Error::at("remove the previous run's", &root, e))?;
    }
    std::fs::create_dir(&root).map_err(|e| Error::at("mkdir", &root, e))?;
    let mut summary = Summary::new("append", Some(cfg.seed));
    let mut findings = Findings::default();

    // The shared log.
    let t = Instant::now();
    let name = cfg.log_name();
    let log = dir.join(&name);
    std::fs::write(&log, b"").map_err(|e| Error::at("create", &log, e))?;
    if let Some(ack) = &cfg.ack_log {
        let h = AckHeader {
            seed: cfg.seed,
            writers: cfg.writers,
            style: cfg.style(),
            file: name.clone(),
            durable: cfg.fsync_every.is_some(),
        };
        acklog::create(ack, &h)?;
    }
    let plan = WriterPlan {
        path: &log,
        name: &name,
        seed: cfg.seed,
        style: cfg.style(),
        records: cfg.records,
        fsync_every: cfg.fsync_every,
        ack_log: cfg.ack_log.as_deref(),
        crash_tolerant: cfg.crash_tolerant,
        deadline,
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cfg.writers)
            .map(|w| {
                s.spawn({
                    let plan = &plan;
                    move || run_writer(plan, w)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut phase = PhaseSummary::new(if cfg.direct {
        "shared-direct"
    } else {
        "shared"
    });
    let counts: Vec<u64> = results.iter().map(|r| r.written).collect();
    phase.ops = counts.iter().sum::<u64>() + results.iter().map(|r| r.fsyncs).sum::<u64>();
    let stopped: Vec<String> = results.iter().filter_map(|r| r.stopped.clone()).collect();
    let crashed =
        cfg.crash_tolerant && !stopped.is_empty() && counts.iter().any(|c| *c < cfg.records);
    if !stopped.is_empty() {
        phase.cut_short = Some(stopped.join("; "));
    }
    findings.extend(results.into_iter().filter_map(|r| r.finding));
    if crashed {
        summary.notes.push("writers stopped by errors (crash mode): verify later with `workloads verify append DIR --ack-log PATH`".into());
        phase.duration_s = t.elapsed().as_secs_f64();
        summary.add_phase(phase);
        summary.set_findings(findings);
        summary.set_duration(start.elapsed());
        return Ok(summary);
    }
    let expect = Expect::Exact(counts);
    phase.bytes_read = check_shared(&log, &name, cfg, &expect, &mut findings)?;
    phase.bytes_written = phase.bytes_read;
    phase.duration_s = t.elapsed().as_secs_f64();
    summary.add_phase(phase);

    // Appends racing with truncate.
    let race = if cfg.truncate {
        let t = Instant::now();
        let name = format!("{SUBDIR}/truncate.log");
        let path = dir.join(&name);
        std::fs::write(&path, b"").map_err(|e| Error::at("create", &path, e))?;
        let race = truncate::race(&path, &name, cfg.seed, cfg.writers, cfg.records, deadline);
        findings.extend(race.failure.clone());
        let mut phase = PhaseSummary::new("truncate");
        phase.ops = race.written.iter().sum::<u64>() + race.truncations.len() as u64;
        let data = std::fs::read(&path).map_err(|e| Error::at("read", &path, e))?;
        phase.bytes_read = data.len() as u64;
        findings.merge(truncate::check(&data, &name, cfg.seed, &race));
        summary.notes.push(format!(
            "truncate race: {} truncations, {} records appended, {} bytes left",
            race.truncations.len(),
            race.written.iter().sum::<u64>(),
            data.len()
        ));
        phase.duration_s = t.elapsed().as_secs_f64();
        summary.add_phase(phase);
        Some((path, name, race))
    } else {
        None
    };

    // Many small files.
    let small_root = root.join("small");
    let created = if cfg.small_files > 0 {
        let t = Instant::now();
        let mut phase = PhaseSummary::new("small-files");
        let (created, ops, failure) = small::create(
            &small_root,
            cfg.seed,
            cfg.small_files,
            cfg.writers,
            deadline,
        );
        findings.extend(failure);
        let made = created.iter().filter(|c| **c).count();
        if made < created.len() {
            phase.cut_short = Some(format!("time limit after {made} files"));
        }
        let (f, bytes) = small::check(&small_root, &format!("{SUBDIR}/small/"), cfg.seed, &created);
        findings.merge(f);
        phase.ops = ops;
        phase.bytes_written = bytes;
        phase.bytes_read = bytes;
        phase.duration_s = t.elapsed().as_secs_f64();
        summary.add_phase(phase);
        Some(created)
    } else {
        None
    };

    match remount {
        Some(hook) => {
            let t = Instant::now();
            hook().map_err(|e| Error::Remount(e.to_string()))?;
            let mut phase = PhaseSummary::new("remount");
            phase.bytes_read = check_shared(&log, &name, cfg, &expect, &mut findings)?;
            if let Some((path, name, race)) = &race {
                let data = std::fs::read(path).map_err(|e| Error::at("read", path, e))?;
                phase.bytes_read += data.len() as u64;
                findings.merge(truncate::check(&data, name, cfg.seed, race));
            }
            if let Some(created) = &created {
                let (f, bytes) =
                    small::check(&small_root, &format!("{SUBDIR}/small/"), cfg.seed, created);
                findings.merge(f);
                phase.bytes_read += bytes;
            }
            phase.ops = 1;
            phase.duration_s = t.elapsed().as_secs_f64();
            summary.add_phase(phase);
        }
        None => summary
            .notes
            .push("no remount hook: the data was verified through the same mount only".into()),
    }
    summary.set_findings(findings);
    summary.set_duration(start.elapsed());
    Ok(summary)
}

fn check_shared(
    log: &Path,
    name: &str,
    cfg: &Config,
    expect: &Expect,
    findings: &mut Findings,
) -> Result<u64> {
    match std::fs::read(log) {
        Ok(data) => {
            let (f, _) = check_log(&data, name, cfg.seed, cfg.style(), expect);
            findings.merge(f);
            Ok(data.len() as u64)
        }
        Err(e) => {
            findings.push(Finding::new(
                Kind::MissingFile,
                name,
                0,
                format!("read: {e}"),
            ));
            Ok(0)
        }
    }
}

/// Checks the shared log in `dir` against the acknowledgement log: every acknowledged
/// record present once and intact. With `exact`, also nothing else (a run that was not
/// interrupted, with every record acknowledged).
pub fn verify_acked(dir: &Path, ack_log: &Path, exact: bool) -> Result<Summary> {
    let start = Instant::now();
    let (h, acked) = acklog::read(ack_log)?;
    let mut summary = Summary::new("verify-append", Some(h.seed));
    let mut findings = Findings::default();
    let path = dir.join(&h.file);
    let mut phase = PhaseSummary::new("verify");
    match std::fs::read(&path) {
        Ok(data) => {
            let expect = if exact {
                Expect::Exact(acked.iter().map(|a| a.map_or(0, |s| s + 1)).collect())
            } else {
                Expect::Acked(acked.clone())
            };
            let (f, stats) = check_log(&data, &h.file, h.seed, h.style, &expect);
            findings.merge(f);
            phase.bytes_read = data.len() as u64;
            phase.ops = stats.records;
            let total: u64 = acked.iter().map(|a| a.map_or(0, |s| s + 1)).sum();
            summary.notes.push(format!(
                "{} records acknowledged ({}), {} whole records found, {} bytes not whole records",
                total,
                if h.durable { "by fsync" } else { "by write(2)" },
                stats.records,
                stats.bad_bytes
            ));
        }
        Err(e) => findings.push(Finding::new(
            Kind::MissingFile,
            &h.file,
            0,
            format!("read: {e}"),
        )),
    }
    phase.duration_s = start.elapsed().as_secs_f64();
    summary.add_phase(phase);
    summary.set_findings(findings);
    summary.set_duration(start.elapsed());
    Ok(summary)
}
