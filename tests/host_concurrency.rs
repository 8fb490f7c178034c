//! Concurrency on both targets: writer threads fill their own files at random offsets while
//! appender threads add fixed-size records to one shared file with O_APPEND. Afterwards
//! (and again after a remount) every writer's file matches its model, and every record is
//! in the shared file exactly once, untorn, in its appender's order, with nothing else.

use anyhow::{anyhow, ensure, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use test_support::sys::{fill_pattern, pread_vec, pwrite_all, AlignedBuf};
use test_support::{FsSpec, SparseData, Target, TestFs};

test_support::target_tests!(writers_and_appenders, threads_fill_one_file_in_whole_blocks);

const SEED: u64 = 0xc0cc_0e11_0000_0001;
const WRITERS: usize = 4;
const WRITES_PER_WRITER: usize = 300;
const WRITER_FILE_MAX: u64 = 4 << 20;
const APPENDERS: usize = 4;
const RECORDS_PER_APPENDER: usize = 400;
/// Not a multiple of 4096 on purpose: records straddle page and block boundaries.
const RECORD: usize = 520;

fn open(p: &Path, flags: OFlag) -> nix::Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(p, flags | OFlag::O_CLOEXEC, Mode::from_bits_retain(0o644))
}

/// Record `seq` of appender `who`: a header naming it, then bytes derived from both.
fn record(who: usize, seq: usize) -> Vec<u8> {
    let mut r = vec![0u8; RECORD];
    r[..4].copy_from_slice(b"REC:");
    r[4..8].copy_from_slice(&(who as u32).to_le_bytes());
    r[8..12].copy_from_slice(&(seq as u32).to_le_bytes());
    fill_pattern(&mut r[12..], ((who as u64) << 32) | seq as u64);
    r
}

fn writer(dir: &Path, who: usize) -> Result<SparseData> {
    let path = dir.join(format!("w{who}"));
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ who as u64);
    let buffered =
        open(&path, OFlag::O_CREAT | OFlag::O_RDWR).with_context(|| format!("create w{who}"))?;
    let direct = open(&path, OFlag::O_RDWR | OFlag::O_DIRECT)
        .with_context(|| format!("open w{who} O_DIRECT"))?;
    let mut model = SparseData::new();
    for _ in 0..WRITES_PER_WRITER {
        if rng.random_bool(0.3) {
            let len = rng.random_range(1..=16u64) * 4096;
            let off = rng.random_range(0..=(WRITER_FILE_MAX - len) / 4096) * 4096;
            let mut buf = AlignedBuf::new(len as usize);
            fill_pattern(&mut buf, rng.random());
            pwrite_all(&direct, &buf, off)
                .with_context(|| format!("writer {who}: O_DIRECT write of {len} at {off}"))?;
            model.write(off, &buf);
        } else {
            let len = rng.random_range(1..=65536u64);
            let off = rng.random_range(0..=WRITER_FILE_MAX - len);
            let mut buf = vec![0u8; len as usize];
            fill_pattern(&mut buf, rng.random());
            pwrite_all(&buffered, &buf, off)
                .with_context(|| format!("writer {who}: write of {len} at {off}"))?;
            model.write(off, &buf);
        }
    }
    let back = pread_vec(&buffered, model.len() as usize + 1, 0)
        .with_context(|| format!("writer {who}: read back"))?;
    ensure!(
        back == model.to_vec(),
        "writer {who}: file differs from its model after the run"
    );
    Ok(model)
}

fn appender(log: &Path, who: usize) -> Result<()> {
    let fd = open(log, OFlag::O_WRONLY | OFlag::O_APPEND)
        .with_context(|| format!("appender {who}: open"))?;
    for seq in 0..RECORDS_PER_APPENDER {
        // One write(2) per record: O_APPEND makes each one atomic with respect to the others.
        let n = nix::unistd::write(&fd, &record(who, seq))
            .with_context(|| format!("appender {who}: record {seq}"))?;
        ensure!(
            n == RECORD,
            "appender {who}: short write of record {seq} ({n} bytes)"
        );
    }
    Ok(())
}

fn check_log(log: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(log).context("read the shared log")?;
    ensure!(
        data.len() == APPENDERS * RECORDS_PER_APPENDER * RECORD,
        "shared log is {} bytes, expected {}",
        data.len(),
        APPENDERS * RECORDS_PER_APPENDER * RECORD
    );
    let mut next = [0usize; APPENDERS];
    for (i, r) in data.chunks(RECORD).enumerate() {
        let who = u32::from_le_bytes(r[4..8].try_into()?) as usize;
        let seq = u32::from_le_bytes(r[8..12].try_into()?) as usize;
        ensure!(
            &r[..4] == b"REC:" && who < APPENDERS,
            "record {i} (offset {}) is torn or foreign",
            i * RECORD
        );
        // Each appender's records appear in its own order, so "exactly once" is seq == next.
        ensure!(
            seq == next[who],
            "record {i}: appender {who} seq {seq}, expected seq {}",
            next[who]
        );
        ensure!(
            r == record(who, seq).as_slice(),
            "record {i} (appender {who} seq {seq}) is corrupted"
        );
        next[who] += 1;
    }
    ensure!(
        next.iter().all(|n| *n == RECORDS_PER_APPENDER),
        "records per appender: {next:?}"
    );
    Ok(data)
}

fn writers_and_appenders(t: &dyn Target) -> Result<()> {
    eprintln!("{}: seed={SEED:#x}", t.name());
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let dir = fs.mnt().to_path_buf();
    let log = dir.join("shared.log");
    std::fs::write(&log, b"")?;
    let start = std::time::Instant::now();
    let models = std::thread::scope(|s| -> Result<Vec<SparseData>> {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                s.spawn({
                    let dir = &dir;
                    move || writer(dir, w)
                })
            })
            .collect();
        let appenders: Vec<_> = (0..APPENDERS)
            .map(|a| {
                s.spawn({
                    let log = &log;
                    move || appender(log, a)
                })
            })
            .collect();
        for a in appenders {
            a.join().map_err(|_| anyhow!("an appender panicked"))??;
        }
        writers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow!("a writer panicked"))?)
            .collect()
    })?;
    eprintln!(
        "{}: {WRITERS} writers and {APPENDERS} appenders took {:.1?}",
        t.name(),
        start.elapsed()
    );
    check_log(&log)?;
    fs.remount()?;
    let data = check_log(&log).context("after remount")?;
    for (w, model) in models.iter().enumerate() {
        let back = std::fs::read(dir.join(format!("w{w}")))?;
        ensure!(
            back == model.to_vec(),
            "writer {w}: file differs after remount"
        );
    }
    for (w, model) in models.into_iter().enumerate() {
        fs.expected.file(&format!("w{w}"), model);
    }
    fs.expected.file("shared.log", data);
    fs.finish()
}

/// Threads fill one new file in interleaved whole-block chunks, buffered, then fsync: with
/// the writeback cache the kernel sends several allocating WRITEs of the file at once,
/// which iomapfs serves side by side (whole-block writes share the inode's data lock).
/// Every chunk reads back, before and after a remount, and e2fsck finds the file sound.
fn threads_fill_one_file_in_whole_blocks(t: &dyn Target) -> Result<()> {
    const THREADS: usize = 4;
    const CHUNK: usize = 256 << 10;
    const CHUNKS: usize = 96;
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let path = fs.path("filled");
    let chunk = |i: usize| {
        let mut buf = vec![0u8; CHUNK];
        fill_pattern(&mut buf, SEED ^ i as u64);
        buf
    };
    std::thread::scope(|s| -> Result<()> {
        let fills: Vec<_> = (0..THREADS)
            .map(|t| {
                let (path, chunk) = (&path, &chunk);
                s.spawn(move || -> Result<()> {
                    let fd = open(path, OFlag::O_CREAT | OFlag::O_WRONLY)?;
                    for i in (t..CHUNKS).step_by(THREADS) {
                        pwrite_all(&fd, &chunk(i), (i * CHUNK) as u64)
                            .with_context(|| format!("chunk {i}"))?;
                    }
                    nix::unistd::fsync(&fd)?;
                    Ok(())
                })
            })
            .collect();
        for f in fills {
            f.join().map_err(|_| anyhow!("a filler panicked"))??;
        }
        Ok(())
    })?;
    let expected: Vec<u8> = (0..CHUNKS).flat_map(chunk).collect();
    let check = |when: &str| -> Result<()> {
        let back = std::fs::read(&path)?;
        ensure!(back.len() == expected.len(), "{when}: {} bytes", back.len());
        if let Some(i) = (0..CHUNKS)
            .find(|&i| back[i * CHUNK..(i + 1) * CHUNK] != expected[i * CHUNK..(i + 1) * CHUNK])
        {
            anyhow::bail!("{when}: chunk {i} differs");
        }
        Ok(())
    };
    check("written")?;
    fs.remount()?;
    check("after remount")?;
    let mut model = SparseData::new();
    model.write(0, &expected);
    fs.expected.file("filled", model);
    fs.finish()
}
