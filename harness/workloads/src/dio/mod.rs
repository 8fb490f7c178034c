//! The direct-I/O workload: self-describing blocks (see [`crate::block`]) written with
//! O_DIRECT sequentially, at random aligned offsets (sparse files, overwrites, writes into
//! holes and preallocated ranges, past EOF, truncates, punched holes), with 512-byte
//! sector alignment, several at once (io_uring), and mixed with buffered and mmap access;
//! then synced, remounted through a hook, and re-verified in full against the model.
//!
//! Everything lives in `DIR/wl-dio/`, which a run recreates.

mod inflight;
pub mod io;
pub mod model;
mod phases;
mod random;

pub use model::{FileModel, Manifest};

use crate::finding::{Finding, Findings, Kind};
use crate::summary::{PhaseSummary, Summary};
use crate::{Error, RemountHook, Result};
use io::Step;
use nix::fcntl::OFlag;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory a run owns inside the target directory.
pub const SUBDIR: &str = "wl-dio";

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Wall-clock bound of the writing phases (verification always completes).
    pub duration: Duration,
    /// The most file space the run occupies; it writes at most about twice that.
    pub max_bytes: u64,
    /// Files of the random phase.
    pub files: u32,
    /// Operations of the random phase (other phases scale from it).
    pub ops: u64,
    /// Requests in flight in the in-flight phase (at least 2).
    pub queue_depth: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 0,
            duration: Duration::from_secs(30),
            max_bytes: 64 << 20,
            files: 4,
            ops: 2000,
            queue_depth: 8,
        }
    }
}

pub struct Report {
    pub summary: Summary,
    /// The model of every file, for `verify` later.
    pub manifest: Manifest,
}

pub fn parse_seed(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?} is not a seed (decimal or 0x-hex): {e}"))
}

/// A file of the workload: its model and an O_DIRECT descriptor.
pub(crate) struct DioFile {
    pub model: FileModel,
    pub fd: OwnedFd,
}

/// State shared by the phases of one run.
pub(crate) struct Ctx {
    pub seed: u64,
    pub root: PathBuf,
    pub findings: Findings,
    pub notes: Vec<String>,
    pub phase: PhaseSummary,
    phase_start: Instant,
    deadline: Instant,
    bytes_budget: u64,
}

impl Ctx {
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A generator for one phase, independent of how far earlier phases got.
    pub fn rng(&self, tag: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(crate::fill::mix(&[self.seed, tag]))
    }

    /// Why the current phase must stop now, if it must.
    pub fn exhausted(&self) -> Option<String> {
        if Instant::now() >= self.deadline {
            Some(format!("time limit after {} ops", self.phase.ops))
        } else if self.phase.bytes_written >= self.bytes_budget {
            Some(format!("byte budget after {} ops", self.phase.ops))
        } else {
            None
        }
    }

    /// Creates (truncating) a workload file opened O_DIRECT read-write.
    pub fn create(&self, id: u32, name: &str, unit: u32) -> Step<DioFile> {
        let fd = io::open(
            &self.path(name),
            OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_RDWR | OFlag::O_DIRECT,
        )
        .map_err(|e| Finding::io(&rel(name), 0, "create with O_DIRECT", e))?;
        Ok(DioFile {
            model: FileModel::new(id, &rel(name), unit),
            fd,
        })
    }

    fn begin(&mut self, name: &str, deadline: Instant, bytes_budget: u64) {
        self.phase = PhaseSummary::new(name);
        self.phase_start = Instant::now();
        self.deadline = deadline;
        self.bytes_budget = bytes_budget;
    }

    fn end(&mut self, result: Step<()>, summary: &mut Summary) {
        if let Err(f) = result {
            self.phase.cut_short = Some(format!("stopped by an error: {}", f.detail));
            self.findings.push(f);
        }
        self.phase.duration_s =
            (self.phase_start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        eprintln!(
            "dio: {} done: {} ops, {} findings so far{}",
            self.phase.name,
            self.phase.ops,
            self.findings.total,
            self.phase
                .cut_short
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
        summary.add_phase(std::mem::take(&mut self.phase));
    }
}

/// A file name as findings report it: relative to the target directory.
fn rel(name: &str) -> String {
    format!("{SUBDIR}/{name}")
}

/// Share of the time and of `max_bytes` each writing phase gets, in order.
const PHASES: [(&str, f64); 5] = [
    ("sequential", 0.15),
    ("random", 0.40),
    ("sector", 0.05),
    ("inflight", 0.25),
    ("coherence", 0.05),
];

/// Runs the workload in `dir` (which must exist). `remount`, if given, is called once
/// everything is synced and closed; the files are verified in full before and after it.
pub fn run(dir: &Path, cfg: &Config, remount: Option<RemountHook>) -> Result<Report> {
    if cfg.queue_depth < 2 || cfg.files == 0 || cfg.max_bytes < (4 << 20) {
        return Err(Error::Config(
            "dio needs --queue-depth >= 2, --files >= 1, --max-bytes >= 4 MiB".into(),
        ));
    }
    let start = Instant::now();
    let root = prepare_dir(dir)?;
    let mut summary = Summary::new("dio", Some(cfg.seed));
    let mut ctx = Ctx {
        seed: cfg.seed,
        root,
        findings: Findings::default(),
        notes: Vec::new(),
        phase: PhaseSummary::default(),
        phase_start: start,
        deadline: start,
        bytes_budget: 0,
    };
    let max_bytes = fit_budget(&ctx.root, cfg.max_bytes, &mut ctx.notes)?;
    phases::probe(&mut ctx)?;

    let mut files: Vec<DioFile> = Vec::new();
    let mut elapsed_share = 0.0;
    for (i, (name, share)) in PHASES.iter().enumerate() {
        elapsed_share += share;
        let deadline = start + cfg.duration.mul_f64(elapsed_share);
        let space = (max_bytes as f64 * share) as u64;
        ctx.begin(name, deadline, 2 * space);
        let result = match i {
            0 => phases::sequential(&mut ctx, space, &mut files),
            1 => random::random_files(&mut ctx, cfg, space, &mut files),
            2 => random::sector_file(&mut ctx, cfg, space.min(1 << 20), &mut files),
            3 => phases::inflight(&mut ctx, cfg, space, &mut files),
            _ => phases::coherence(&mut ctx, &mut files),
        };
        ctx.end(result, &mut summary);
    }

    // Durability: sync everything, close it, verify, remount, verify again.
    ctx.begin("sync", start + cfg.duration, u64::MAX);
    let result = phases::sync_all(&mut ctx, &files);
    ctx.end(result, &mut summary);
    let manifest = Manifest {
        seed: format!("{:#x}", cfg.seed),
        files: files.into_iter().map(|f| f.model).collect(),
    };

    ctx.begin("verify", start + cfg.duration, u64::MAX);
    let bytes = verify_into(&ctx.root, &manifest, cfg.seed, &mut ctx.findings)?;
    ctx.phase.bytes_read = bytes;
    ctx.phase.ops = manifest.files.len() as u64;
    ctx.end(Ok(()), &mut summary);

    match remount {
        Some(hook) => {
            ctx.begin("remount", start + cfg.duration, u64::MAX);
            hook().map_err(|e| Error::Remount(e.to_string()))?;
            let bytes = verify_into(&ctx.root, &manifest, cfg.seed, &mut ctx.findings)?;
            ctx.phase.bytes_read = bytes;
            ctx.phase.ops = manifest.files.len() as u64;
            ctx.end(Ok(()), &mut summary);
        }
        None => ctx
            .notes
            .push("no remount hook: the data was verified through the same mount only".into()),
    }

    summary.notes = ctx.notes;
    summary.set_findings(ctx.findings);
    summary.set_duration(start.elapsed());
    Ok(Report { summary, manifest })
}

/// Verifies every file of `manifest` in `dir` (the directory given to [`run`]) and that
/// nothing else is in the workload's directory.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<Summary> {
    let start = Instant::now();
    let seed = manifest.seed()?;
    manifest.validate()?;
    let mut summary = Summary::new("verify-dio", Some(seed));
    let mut findings = Findings::default();
    let mut phase = PhaseSummary::new("verify");
    phase.bytes_read = verify_into(&dir.join(SUBDIR), manifest, seed, &mut findings)?;
    phase.ops = manifest.files.len() as u64;
    phase.duration_s = start.elapsed().as_secs_f64();
    summary.add_phase(phase);
    summary.set_findings(findings);
    summary.set_duration(start.elapsed());
    Ok(summary)
}

fn verify_into(
    root: &Path,
    manifest: &Manifest,
    seed: u64,
    findings: &mut Findings,
) -> Result<u64> {
    let mut bytes = 0;
    for m in &manifest.files {
        let name = m
            .name
            .strip_prefix(&format!("{SUBDIR}/"))
            .unwrap_or(&m.name);
        let path = root.join(name);
        // O_DIRECT when the target allows it, buffered otherwise.
        let fd = match io::open(&path, OFlag::O_RDONLY | OFlag::O_DIRECT) {
            Err(nix::errno::Errno::EINVAL) => io::open(&path, OFlag::O_RDONLY),
            r => r,
        };
        match fd {
            Ok(fd) => match io::check_file(&fd, m, seed, findings) {
                Ok(n) => bytes += n,
                Err(f) => findings.push(f),
            },
            Err(e) => findings.push(Finding::new(
                Kind::MissingFile,
                &m.name,
                0,
                format!("open: {e}"),
            )),
        }
    }
    // Nothing the run did not create.
    let entries = std::fs::read_dir(root).map_err(|e| Error::at("readdir", root, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::at("readdir", root, e))?;
        let name = rel(&e.file_name().to_string_lossy());
        if !manifest.files.iter().any(|m| m.name == name) && !name.ends_with("/probe") {
            findings.push(Finding::new(
                Kind::UnexpectedFile,
                &name,
                0,
                "not created by this run",
            ));
        }
    }
    Ok(bytes)
}

/// Recreates `DIR/wl-dio` (it belongs to this workload).
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
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
    Ok(root)
}

/// Shrinks the space budget to half the free space, saying so.
fn fit_budget(root: &Path, max_bytes: u64, notes: &mut Vec<String>) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(root).map_err(|e| Error::at("statvfs", root, e))?;
    let free = st.blocks_available() * st.fragment_size();
    if max_bytes > free / 2 {
        let fit = (free / 2) & !((1 << 20) - 1);
        notes.push(format!(
            "--max-bytes {max_bytes} lowered to {fit}: only {free} bytes are free"
        ));
        if fit < (4 << 20) {
            return Err(Error::Config(format!(
                "only {free} bytes free in {}",
                root.display()
            )));
        }
        return Ok(fit);
    }
    Ok(max_bytes)
}
