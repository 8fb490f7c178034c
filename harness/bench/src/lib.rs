//! `cargo xtask bench server`: iomapfs against Debian's fuse2fs on the same image and
//! host kernel, with kernel ext4 on a loop device as the ceiling.
//!
//! Each target gets a fresh image made the same way for each pass of the rows (`rows`);
//! the targets take turns, `--reps` times, and the table gives medians and the worst run
//! (`stats`).

mod flames;
mod rows;
mod stats;

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use rows::{Figure, Sizes};
use stats::Row;

use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::which;
use test_support::e2fs::{e2fsck_clean, mkfs_ext4};
use test_support::{Fuse2fs, Iomapfs, KernelExt4, MountOptions};

#[derive(clap::Args, Debug)]
pub struct BenchCommand {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(clap::Subcommand, Debug)]
enum BenchWhat {
    /// iomapfs vs fuse2fs vs kernel ext4 on the host kernel.
    Server(ServerBench),
}

#[derive(clap::Args, Debug)]
pub struct ServerBench {
    /// Size of the streaming files, MiB [default: 1024, quick: 256].
    #[arg(long)]
    size_mib: Option<u64>,
    /// Seconds for each random-I/O row [default: 10, quick: 3].
    #[arg(long)]
    runtime: Option<u64>,
    /// Files in the create+stat+unlink rows [default: 10000, quick: 2000].
    #[arg(long)]
    files: Option<u64>,
    /// Entries in the metadata-mix directory [default: 100000, quick: 10000].
    #[arg(long)]
    entries: Option<u64>,
    /// Write+fsync rounds of the fsync latency rows [default: 1000, quick: 200].
    #[arg(long)]
    fsyncs: Option<u64>,
    /// Repetitions; the targets take turns within each.
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Smaller defaults, so that three repetitions of three targets take minutes.
    #[arg(long)]
    quick: bool,
    /// Targets to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "ext4,fuse2fs,iomapfs")]
    targets: Vec<Target>,
    /// Draw a flame graph of each phase of each pass into DIR (`perf record -a -g` of the
    /// whole machine while the phase runs; REP-TARGET-PHASE.svg).
    #[arg(long, value_name = "DIR")]
    flamegraphs: Option<PathBuf>,
    /// Where images and mounts go (needs 2×size + 1 GiB free).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

impl ServerBench {
    fn sizes(&self) -> Sizes {
        let pick = |given: Option<u64>, full: u64, quick: u64| {
            given.unwrap_or(if self.quick { quick } else { full })
        };
        Sizes {
            size_mib: pick(self.size_mib, 1024, 256),
            runtime: pick(self.runtime, 10, 3),
            files: pick(self.files, 10_000, 2_000),
            entries: pick(self.entries, 100_000, 10_000),
            append_mib: if self.quick { 64 } else { 256 },
            fsyncs: pick(self.fsyncs, 1000, 200),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
enum Target {
    Iomapfs,
    Fuse2fs,
    Ext4,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Iomapfs => "iomapfs",
            Target::Fuse2fs => "fuse2fs",
            Target::Ext4 => "ext4",
        }
    }

    /// test-support's target for this column; iomapfs runs the release build at `iomapfs`.
    fn mount_target(self, iomapfs: &Path) -> Box<dyn test_support::Target> {
        match self {
            Target::Iomapfs => Box::new(Iomapfs::with_server(iomapfs)),
            Target::Fuse2fs => Box::new(Fuse2fs),
            Target::Ext4 => Box::new(KernelExt4),
        }
    }
}

pub fn run(cmd: &BenchCommand, ui: &Ui) -> Result<()> {
    match &cmd.what {
        BenchWhat::Server(b) => server(b, ui),
    }
}

fn server(b: &ServerBench, ui: &Ui) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(usage(
            "bench server mounts filesystems and must run as root",
        ));
    }
    for tool in ["fio", "mkfs.ext4", "losetup"] {
        if which(tool).is_none() {
            return Err(usage(format!(
                "{tool} is missing: apt-get install fio e2fsprogs util-linux"
            )));
        }
    }
    if b.targets.contains(&Target::Fuse2fs) && which("fuse2fs").is_none() {
        return Err(usage("fuse2fs is missing: apt-get install fuse2fs"));
    }
    if b.flamegraphs.is_some() && which("perf").is_none() {
        return Err(usage(
            "--flamegraphs needs perf: apt-get install linux-perf",
        ));
    }
    if b.reps == 0 {
        return Err(usage("--reps must be at least 1"));
    }
    let sizes = b.sizes();
    let root = plumbing::paths::workspace_root();
    let work = b
        .work_dir
        .clone()
        .unwrap_or_else(|| root.join("target/harness/bench"));
    std::fs::create_dir_all(&work)?;
    // Canonical: mountinfo, where test-support looks for the mounts, names them that way.
    let work = std::fs::canonicalize(&work)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let iomapfs = target_dir.join("release/iomapfs");
    let targets: Vec<_> = b
        .targets
        .iter()
        .map(|&t| (t, t.mount_target(&iomapfs)))
        .collect();
    for (target, fs) in &targets {
        if let Some(why) = fs.missing_prerequisite() {
            return Err(usage(format!("{}: {why}", target.name())));
        }
    }
    ui.step("building iomapfs (release)");
    // A release build takes minutes: a supervised child (duct).
    let built = duct::cmd!(env!("CARGO"), "build", "--release", "-q", "-p", "iomapfs")
        .dir(&root)
        .unchecked()
        .run()?;
    if !built.status.success() {
        bail!("cargo build --release -p iomapfs failed");
    }

    let flames_dir = match &b.flamegraphs {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Some(std::fs::canonicalize(dir)?)
        }
        None => None,
    };
    let mut rows: Vec<Row> = Vec::new();
    // The targets take turns within each repetition, so that a change in the machine's
    // load during the run falls on all of them alike.
    for rep in 1..=b.reps {
        for (target, fs) in &targets {
            let target = *target;
            ui.step(format!("{} ({rep}/{})", target.name(), b.reps));
            let flames = flames_dir.as_ref().map(|dir| flames::Flames {
                dir: dir.clone(),
                prefix: format!("{rep}-{}", target.name()),
            });
            for figure in one_pass(&sizes, &work, target, fs.as_ref(), ui, flames.as_ref())? {
                stats::record(&mut rows, target, figure);
            }
        }
    }
    println!(
        "{} repetitions; medians, with the worst run in parentheses; ratios of medians, above 1 is iomapfs ahead",
        b.reps
    );
    print!("{}", stats::table(&rows, &b.targets));
    let json = work.join("server-bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rows)?)?;
    ui.note(format!("figures saved to {}", json.display()));
    Ok(())
}

/// One target on a fresh image: mount, every row once, unmount, e2fsck.
fn one_pass(
    sizes: &Sizes,
    work: &Path,
    target: Target,
    fs: &dyn test_support::Target,
    ui: &Ui,
    flames: Option<&flames::Flames>,
) -> Result<Vec<Figure>> {
    let image = work.join(format!("{}.img", target.name()));
    let mnt = work.join(format!("{}.mnt", target.name()));
    // The FUSE server's output; a failed mount or unmount quotes its tail.
    let log = work.join(format!("{}.log", target.name()));
    std::fs::create_dir_all(&mnt)?;
    make_image(&image, sizes.size_mib * 2 + 1024)?;
    let mount = fs.mount(&image, &mnt, &MountOptions::default(), &log)?;
    let results = rows::measure(sizes, &mnt, ui, flames);
    let unmounted = mount.unmount();
    let results = results?;
    unmounted?;
    if e2fsck_clean(&image).is_err() {
        ui.warn(format!(
            "e2fsck -fn found problems after the {} run",
            target.name()
        ));
    }
    std::fs::remove_file(&image)?;
    Ok(results)
}

/// A fresh image of `mib` MiB, its inode tables and journal written out now so that no
/// lazy init runs during the measurements.
fn make_image(path: &Path, mib: u64) -> Result<()> {
    let _ = std::fs::remove_file(path);
    File::create(path)?.set_len(mib << 20)?;
    let lazy_init_off = ["-E", "lazy_itable_init=0,lazy_journal_init=0"].map(String::from);
    mkfs_ext4(path, 4096, &lazy_init_off)
}
