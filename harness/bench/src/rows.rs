//! One pass of every row on one mounted target: fio for the streaming and random rows,
//! plain syscalls for appends, fsync latency and the metadata rows.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use plumbing::ui::Ui;

use crate::flames::Flames;

/// What one pass measures.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Size of the streaming files, MiB.
    pub size_mib: u64,
    /// Seconds of each random-I/O row.
    pub runtime: u64,
    /// Files in the create+stat+unlink rows (split between the threads in the 4-thread one).
    pub files: u64,
    /// Entries in the metadata-mix directory.
    pub entries: u64,
    /// Bytes the four appenders write together, MiB.
    pub append_mib: u64,
    /// Write+fsync rounds of the latency row.
    pub fsyncs: u64,
}

/// (row, unit, lower is better, value).
pub type Figure = (&'static str, &'static str, bool, f64);

fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Runs one fio job and returns (MB/s, IOPS) of its read or write side. The rows compare
/// buffered with O_DIRECT I/O on one file, which the job files of `workloads::fio` do not
/// cover, so the job is given on the command line; its report is read by
/// `workloads::fio::parse`, the one reader of fio's JSON.
fn fio(dir: &Path, name: &str, args: &[&str], extra: &[String]) -> Result<(f64, f64)> {
    let mut argv = vec![
        format!("--name={name}"),
        format!("--directory={}", dir.display()),
        "--output-format=json".into(),
        "--ioengine=psync".into(),
        "--group_reporting".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend_from_slice(extra);
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

pub fn measure(s: &Sizes, mnt: &Path, ui: &Ui, flames: Option<&Flames>) -> Result<Vec<Figure>> {
    let size = vec![format!("--size={}M", s.size_mib)];
    let timed = vec![
        format!("--size={}M", s.size_mib),
        format!("--runtime={}", s.runtime),
        "--time_based".into(),
    ];
    let mut out: Vec<Figure> = Vec::new();
    let mut row = |name: &'static str, unit: &'static str, lower: bool, v: f64| {
        ui.note(format!("{name}: {v:.1} {unit}"));
        out.push((name, unit, lower, v));
    };
    // Each phase runs under its own flame graph when asked for; a fio job is its phase.
    let job = |name: &str, args: &[&str], extra: &[String]| {
        Flames::profile(flames, name, || fio(mnt, name, args, extra))
    };
    let seq = ["--bs=1M", "--filename=seq"];
    let (bw, _) = job(
        "seqwrite",
        &[&seq[..], &["--rw=write", "--end_fsync=1"]].concat(),
        &size,
    )?;
    row("seq write 1M buffered", "MB/s", false, bw);
    drop_caches();
    let (bw, _) = job("seqread", &[&seq[..], &["--rw=read"]].concat(), &size)?;
    row("seq read 1M buffered", "MB/s", false, bw);
    let dseq = ["--bs=1M", "--direct=1", "--filename=dseq"];
    let (bw, _) = job(
        "dwrite",
        &[&dseq[..], &["--rw=write", "--end_fsync=1"]].concat(),
        &size,
    )?;
    row("seq write 1M O_DIRECT", "MB/s", false, bw);
    let (bw, _) = job("dread", &[&dseq[..], &["--rw=read"]].concat(), &size)?;
    row("seq read 1M O_DIRECT", "MB/s", false, bw);
    let rand = ["--bs=4k", "--direct=1", "--filename=dseq"];
    let (_, iops) = job(
        "randread",
        &[&rand[..], &["--rw=randread"]].concat(),
        &timed,
    )?;
    row("rand read 4k O_DIRECT", "IOPS", false, iops);
    let (_, iops) = job(
        "randwrite",
        &[&rand[..], &["--rw=randwrite"]].concat(),
        &timed,
    )?;
    row("rand write 4k O_DIRECT", "IOPS", false, iops);
    let rate = Flames::profile(flames, "appenders", || {
        appenders(mnt, 4, 64 << 10, (s.append_mib as usize) << 20)
    })?;
    row("4 appenders 64k + fsync", "MB/s", false, rate);
    let (p50, p99) = Flames::profile(flames, "fsync", || fsync_latency(mnt, s.fsyncs))?;
    row("4k write+fsync p50", "us", true, p50);
    row("4k write+fsync p99", "us", true, p99);
    let rate = Flames::profile(flames, "create-stat-unlink", || {
        create_stat_unlink(mnt, s.files, 1)
    })?;
    row("create+stat+unlink", "files/s", false, rate);
    let rate = Flames::profile(flames, "create-stat-unlink-4", || {
        create_stat_unlink(mnt, s.files, 4)
    })?;
    row("4 threads create+stat+unlink", "files/s", false, rate);
    let mix = Flames::profile(flames, "mix", || metadata_mix(mnt, s.entries))?;
    row("mix: create+mkdir", "ops/s", false, mix.create);
    row("mix: rename", "ops/s", false, mix.rename);
    row("mix: readdir", "entries/s", false, mix.readdir);
    row("mix: unlink+rmdir", "ops/s", false, mix.remove);
    Ok(out)
}

/// Runs `work(0)` to `work(threads - 1)` on threads of their own, all at once; the first
/// error, or a panic, is the result.
fn in_threads(what: &str, threads: usize, work: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || work(t))).collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("{what} thread panicked"))??;
        }
        Ok(())
    })
}

/// `writers` threads append `record`-byte records with O_APPEND until `total` bytes.
fn appenders(mnt: &Path, writers: usize, record: usize, total: usize) -> Result<f64> {
    let path = mnt.join("appends");
    let per_writer = total / writers / record;
    let start = Instant::now();
    in_threads("appender", writers, |w| {
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
    })?;
    let secs = start.elapsed().as_secs_f64();
    let written = std::fs::metadata(&path)?.len();
    std::fs::remove_file(&path)?;
    if written != (per_writer * writers * record) as u64 {
        bail!(
            "appenders wrote {written} bytes, expected {}",
            per_writer * writers * record
        );
    }
    Ok(written as f64 / 1e6 / secs)
}

/// `rounds` of a 4 KiB append then fsync, each timed: (p50, p99) in microseconds. The
/// filesystem holds the streaming files too, so an fsync that flushes more than its file
/// shows here.
fn fsync_latency(mnt: &Path, rounds: u64) -> Result<(f64, f64)> {
    let path = mnt.join("fsyncs");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)?;
    let buf = vec![7u8; 4096];
    let mut lat = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_all()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    match (pct(0.50), pct(0.99)) {
        (Some(&a), Some(&b)) => Ok((a, b)),
        _ => bail!("no fsync rounds"),
    }
}

/// `threads` threads each create, stat and unlink `n / threads` files in a directory of
/// their own; returns files per second. With more than one thread, the requests of
/// different directories meet in the filesystem's locks.
fn create_stat_unlink(mnt: &Path, n: u64, threads: u64) -> Result<f64> {
    let per_thread = n / threads;
    let dirs: Vec<_> = (0..threads)
        .map(|t| mnt.join(format!("meta-{t}")))
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
    }
    let start = Instant::now();
    in_threads("create+stat+unlink", dirs.len(), |t| {
        let dir = &dirs[t];
        for i in 0..per_thread {
            File::create(dir.join(format!("f{i}")))?;
        }
        for i in 0..per_thread {
            std::fs::metadata(dir.join(format!("f{i}")))?;
        }
        for i in 0..per_thread {
            std::fs::remove_file(dir.join(format!("f{i}")))?;
        }
        Ok(())
    })?;
    let rate = (per_thread * threads) as f64 / start.elapsed().as_secs_f64();
    for dir in &dirs {
        std::fs::remove_dir(dir)?;
    }
    Ok(rate)
}

/// Rates of the metadata mix's phases.
struct Mix {
    create: f64,
    rename: f64,
    readdir: f64,
    remove: f64,
}

/// One directory of `n` entries (a tenth of them directories): create them, rename every
/// one, list the directory twice (the count is checked), remove them all.
fn metadata_mix(mnt: &Path, n: u64) -> Result<Mix> {
    let dir = mnt.join("mix");
    std::fs::create_dir(&dir)?;
    let is_dir = |i: u64| i.is_multiple_of(10);
    let rate = |ops: u64, t: Instant| ops as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        let p = dir.join(format!("entry-{i}"));
        if is_dir(i) {
            std::fs::create_dir(&p)?;
        } else {
            File::create(&p)?;
        }
    }
    let create = rate(n, t);
    let t = Instant::now();
    for i in 0..n {
        std::fs::rename(
            dir.join(format!("entry-{i}")),
            dir.join(format!("renamed-{i}")),
        )?;
    }
    let rename = rate(n, t);
    let t = Instant::now();
    for _ in 0..2 {
        let listed = std::fs::read_dir(&dir)?.count() as u64;
        if listed != n {
            bail!("readdir listed {listed} entries, expected {n}");
        }
    }
    let readdir = rate(2 * n, t);
    let t = Instant::now();
    for i in 0..n {
        let p = dir.join(format!("renamed-{i}"));
        if is_dir(i) {
            std::fs::remove_dir(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    let remove = rate(n, t);
    std::fs::remove_dir(&dir)?;
    Ok(Mix {
        create,
        rename,
        readdir,
        remove,
    })
}
