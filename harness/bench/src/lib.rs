//! `cargo xtask bench server`: iomapfs against Debian's fuse2fs on the same image and
//! host kernel, with kernel ext4 on a loop device as the ceiling.
//!
//! Each target gets a fresh image made the same way; fio drives the streaming and random
//! rows, the append and metadata rows are measured here with plain syscalls.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

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
    /// Size of the streaming files, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Seconds for each random-I/O row.
    #[arg(long, default_value_t = 10)]
    runtime: u64,
    /// Files in the create+stat+unlink row.
    #[arg(long, default_value_t = 10_000)]
    files: u64,
    /// Targets to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "iomapfs,fuse2fs,ext4")]
    targets: Vec<Target>,
    /// Where images and mounts go (needs 2×size + 1 GiB free).
    #[arg(long)]
    work_dir: Option<PathBuf>,
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

/// One measured figure: MB/s for streaming rows, IOPS or ops/s otherwise.
#[derive(Serialize, Clone, Debug)]
struct Row {
    name: &'static str,
    unit: &'static str,
    values: Vec<(Target, f64)>,
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

    let mut rows: Vec<Row> = Vec::new();
    for (target, fs) in &targets {
        let target = *target;
        ui.step(format!("measuring {}", target.name()));
        let image = work.join(format!("{}.img", target.name()));
        let mnt = work.join(format!("{}.mnt", target.name()));
        // The FUSE server's output; a failed mount or unmount quotes its tail.
        let log = work.join(format!("{}.log", target.name()));
        std::fs::create_dir_all(&mnt)?;
        make_image(&image, b.size_mib * 2 + 1024)?;
        let mount = fs.mount(&image, &mnt, &MountOptions::default(), &log)?;
        let results = measure(b, &mnt, ui);
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
        for (name, unit, value) in results {
            match rows.iter_mut().find(|r| r.name == name) {
                Some(r) => r.values.push((target, value)),
                None => rows.push(Row {
                    name,
                    unit,
                    values: vec![(target, value)],
                }),
            }
        }
    }
    print_table(&rows, &b.targets);
    let json = work.join("server-bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rows)?)?;
    ui.note(format!("figures saved to {}", json.display()));
    Ok(())
}

/// A fresh image of `mib` MiB, its inode tables and journal written out now so that no
/// lazy init runs during the measurements.
fn make_image(path: &Path, mib: u64) -> Result<()> {
    let _ = std::fs::remove_file(path);
    File::create(path)?.set_len(mib << 20)?;
    let lazy_init_off = ["-E", "lazy_itable_init=0,lazy_journal_init=0"].map(String::from);
    mkfs_ext4(path, 4096, &lazy_init_off)
}

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Runs one fio job and returns (MB/s, IOPS) of its read or write side. The rows compare
/// buffered with O_DIRECT I/O on one file, which the job files of `workloads::fio` do not
/// cover, so the job is given on the command line; its report is read by
/// `workloads::fio::parse`, the one reader of fio's JSON.
fn fio(dir: &Path, name: &str, args: &[String]) -> Result<(f64, f64)> {
    let mut argv = vec![
        format!("--name={name}"),
        format!("--directory={}", dir.display()),
        "--output-format=json".into(),
        "--ioengine=psync".into(),
        "--group_reporting".into(),
    ];
    argv.extend_from_slice(args);
    // A job runs for seconds to minutes: a supervised child (duct).
    let out = duct::cmd("fio", argv)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running fio")?;
    if !out.status.success() {
        bail!(
            "fio {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = workloads::fio::parse(name, &String::from_utf8_lossy(&out.stdout))?;
    Ok((r.mb_s, r.iops))
}

type Figures = Vec<(&'static str, &'static str, f64)>;

fn measure(b: &ServerBench, mnt: &Path, ui: &Ui) -> Result<Figures> {
    let size = format!("--size={}M", b.size_mib);
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    let mut out: Figures = Vec::new();
    let mut row = |name: &'static str, unit: &'static str, v: f64| {
        ui.note(format!("{name}: {v:.1} {unit}"));
        out.push((name, unit, v));
    };
    let (bw, _) = fio(
        mnt,
        "seqwrite",
        &[
            s(&["--rw=write", "--bs=1M", "--end_fsync=1", "--filename=seq"]),
            vec![size.clone()],
        ]
        .concat(),
    )?;
    row("seq write 1M buffered", "MB/s", bw);
    drop_caches();
    let (bw, _) = fio(
        mnt,
        "seqread",
        &[
            s(&["--rw=read", "--bs=1M", "--filename=seq"]),
            vec![size.clone()],
        ]
        .concat(),
    )?;
    row("seq read 1M buffered", "MB/s", bw);
    let (bw, _) = fio(
        mnt,
        "dwrite",
        &[
            s(&[
                "--rw=write",
                "--bs=1M",
                "--direct=1",
                "--end_fsync=1",
                "--filename=dseq",
            ]),
            vec![size.clone()],
        ]
        .concat(),
    )?;
    row("seq write 1M O_DIRECT", "MB/s", bw);
    let (bw, _) = fio(
        mnt,
        "dread",
        &[
            s(&["--rw=read", "--bs=1M", "--direct=1", "--filename=dseq"]),
            vec![size.clone()],
        ]
        .concat(),
    )?;
    row("seq read 1M O_DIRECT", "MB/s", bw);
    let rt = format!("--runtime={}", b.runtime);
    let (_, iops) = fio(
        mnt,
        "randread",
        &[
            s(&[
                "--rw=randread",
                "--bs=4k",
                "--direct=1",
                "--time_based",
                "--filename=dseq",
            ]),
            vec![size.clone(), rt.clone()],
        ]
        .concat(),
    )?;
    row("rand read 4k O_DIRECT", "IOPS", iops);
    let (_, iops) = fio(
        mnt,
        "randwrite",
        &[
            s(&[
                "--rw=randwrite",
                "--bs=4k",
                "--direct=1",
                "--time_based",
                "--filename=dseq",
            ]),
            vec![size, rt],
        ]
        .concat(),
    )?;
    row("rand write 4k O_DIRECT", "IOPS", iops);
    row(
        "4 appenders 64k + fsync",
        "MB/s",
        appenders(mnt, 4, 64 << 10, 256 << 20)?,
    );
    row(
        "create+stat+unlink",
        "files/s",
        create_stat_unlink(mnt, b.files)?,
    );
    Ok(out)
}

/// `writers` threads append `record`-byte records with O_APPEND until `total` bytes.
fn appenders(mnt: &Path, writers: usize, record: usize, total: usize) -> Result<f64> {
    let path = mnt.join("appends");
    let per_writer = total / writers / record;
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let path = path.clone();
                scope.spawn(move || -> Result<()> {
                    let mut f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o644)
                        .open(&path)?;
                    let buf = vec![w as u8; record];
                    for _ in 0..per_writer {
                        f.write_all(&buf)?;
                    }
                    f.sync_all()?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("appender panicked"))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let written = std::fs::metadata(&path)?.len();
    if written != (per_writer * writers * record) as u64 {
        bail!(
            "appenders wrote {written} bytes, expected {}",
            per_writer * writers * record
        );
    }
    Ok(written as f64 / 1e6 / secs)
}

/// Creates, stats and unlinks `n` files; returns files per second.
fn create_stat_unlink(mnt: &Path, n: u64) -> Result<f64> {
    let dir = mnt.join("meta");
    std::fs::create_dir_all(&dir)?;
    let start = Instant::now();
    for i in 0..n {
        File::create(dir.join(format!("f{i}")))?;
    }
    for i in 0..n {
        std::fs::metadata(dir.join(format!("f{i}")))?;
    }
    for i in 0..n {
        std::fs::remove_file(dir.join(format!("f{i}")))?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn print_table(rows: &[Row], targets: &[Target]) {
    let get = |r: &Row, t: Target| r.values.iter().find(|(x, _)| *x == t).map(|(_, v)| *v);
    let mut header = format!("{:<26} {:>8}", "row", "unit");
    for t in targets {
        header += &format!(" {:>10}", t.name());
    }
    let ratios = targets.contains(&Target::Iomapfs);
    if ratios && targets.contains(&Target::Fuse2fs) {
        header += &format!(" {:>12}", "vs fuse2fs");
    }
    if ratios && targets.contains(&Target::Ext4) {
        header += &format!(" {:>10}", "vs ext4");
    }
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<26} {:>8}", r.name, r.unit);
        for &t in targets {
            line += &match get(r, t) {
                Some(v) => format!(" {v:>10.1}"),
                None => format!(" {:>10}", "-"),
            };
        }
        let ours = get(r, Target::Iomapfs);
        for (peer, width) in [(Target::Fuse2fs, 12), (Target::Ext4, 10)] {
            if ratios && targets.contains(&peer) {
                line += &match (ours, get(r, peer)) {
                    (Some(a), Some(b)) if b > 0.0 => {
                        format!(" {:>width$}", format!("{:.2}x", a / b))
                    }
                    _ => format!(" {:>width$}", "-"),
                };
            }
        }
        println!("{line}");
    }
}
