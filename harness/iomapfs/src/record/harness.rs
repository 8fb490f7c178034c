//! How a test harness has every server it starts record its session, whoever starts it
//! (a test's own mounts, fstests' mount helper): with `IOMAPFS_RECORD_DIR` set and no
//! `record=` option, the server saves the filesystem it is about to open to a new
//! `session-NNN.img.zst` there (`snapshot`), then records to `session-NNN.rec.zst`.
//! `iomapfs replay session-NNN.rec.zst --image session-NNN.img.zst` replays it.
//! Recording this way is best effort: a server that cannot record still serves.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::snapshot;
use crate::options::MountOptions;

/// The directory every server records into.
pub const RECORD_DIR_ENV: &str = "IOMAPFS_RECORD_DIR";
/// Its `record_max` (default: the option's default).
pub const RECORD_MAX_ENV: &str = "IOMAPFS_RECORD_MAX";
/// `record_flush` of a harness's recordings (unless the options say otherwise).
pub const HARNESS_FLUSH_MS: u64 = 250;
/// Sessions in one directory at most (a test that mounts more records the first ones).
pub const MAX_SESSIONS: u32 = 999;

/// The recording and the snapshot of session `n`.
pub fn session_files(dir: &Path, n: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("session-{n:03}.rec.zst")),
        dir.join(format!("session-{n:03}.img.zst")),
    )
}

/// With `IOMAPFS_RECORD_DIR` set and no `record=`, saves `source` and points
/// `opts.record` at the new session's recording. Call it once the source is locked
/// (and preened), before opening it read-write: the snapshot is what the server opens.
pub fn prepare(source: &Path, opts: &mut MountOptions) {
    if opts.record.is_some() {
        return;
    }
    // Unset or empty: no recording (`vm-test --no-record` sets it empty).
    let Some(dir) = std::env::var_os(RECORD_DIR_ENV).filter(|d| !d.is_empty()) else {
        return;
    };
    if let Err(e) = record_into(Path::new(&dir), source, opts) {
        tracing::warn!("not recording this session ({RECORD_DIR_ENV}): {e:#}");
    }
}

fn record_into(dir: &Path, source: &Path, opts: &mut MountOptions) -> Result<()> {
    let max = match std::env::var(RECORD_MAX_ENV) {
        Ok(v) => crate::options::parse_bytes(&v)
            .filter(|m| *m >= super::MIN_RECORD_MAX)
            .with_context(|| {
                format!("{RECORD_MAX_ENV}={v}: expected bytes (K, M, G), at least 64K")
            })?,
        Err(_) => opts.record_max,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (recording, image) = reserve(dir)?;
    let started = Instant::now();
    let fs = ext2fs::Fs::open(source, false)
        .with_context(|| format!("opening {} to save it", source.display()))?;
    let runs = fs.used_block_runs()?;
    let block_size = fs.block_size();
    drop(fs);
    let stats = snapshot::save(source, &image, block_size, &runs).inspect_err(|_| {
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_file(&recording);
    })?;
    tracing::info!(
        "saved {} ({} of {} bytes in use, {} not zero) in {} ms; recording to {}",
        image.display(),
        stats.used_bytes,
        stats.device_bytes,
        stats.saved_bytes,
        started.elapsed().as_millis(),
        recording.display()
    );
    opts.record = Some(recording);
    opts.record_max = max;
    // A flush per frame is a write per FUSE message; on a test harness's 9p share that
    // slowed vm-test's smoke suite 2.5 times.
    if opts.record_flush_ms == 0 {
        opts.record_flush_ms = HARNESS_FLUSH_MS;
    }
    Ok(())
}

/// Claims the next free session number by creating its recording (empty until the
/// recorder writes it): concurrent servers never share one.
fn reserve(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    for n in 1..=MAX_SESSIONS {
        let (rec, img) = session_files(dir, n);
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&rec)
        {
            Ok(_) => return Ok((rec, img)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", rec.display())),
        }
    }
    anyhow::bail!(
        "{MAX_SESSIONS} sessions already recorded in {}",
        dir.display()
    )
}
