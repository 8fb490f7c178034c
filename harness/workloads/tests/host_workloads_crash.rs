//! The crash variant of the append workload. Appenders fsync every 8 records and log each
//! acknowledged record outside the mount; mid-run the filesystem dies — iomapfs by SIGKILL
//! of its server, kernel ext4 (the control) by FS_IOC_SHUTDOWN without flushing its journal.
//! Then: unmount, `e2fsck -fy` (iomapfs must refuse the unclean filesystem read-write until
//! then), mount, every acknowledged record present once and intact, `e2fsck -fn` clean.
//! "Acknowledged" means logged before the crash began; for iomapfs also every ack logged
//! at all (see the end of the test for why the control differs).

use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::bins::iomapfs_bins;
use test_support::e2fs::{e2fsck_repair, fsck_fixes};
use test_support::mount::{lazy_unmount, mount_fstype, umount};
use test_support::{FsSpec, TestFs};
use test_support::{Iomapfs, MountOptions, Target};
use workloads::{append, Summary};

test_support::target_tests!(crash_keeps_acknowledged_appends);

const SEED: u64 = 0xc4a5_0001;
/// Acknowledgements to wait for before the crash.
const ACKS_BEFORE_CRASH: usize = 60;

fn crash_keeps_acknowledged_appends(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::unmounted(t, FsSpec::plain(128))?;
    let ack = fx.scratch().join("ack.log");
    let before = fx.scratch().join("ack-before-crash.log");
    let cfg = append::Config {
        seed: SEED,
        writers: 4,
        records: 20_000,
        fsync_every: Some(8),
        ack_log: Some(ack.clone()),
        crash_tolerant: true,
        duration: Duration::from_secs(30),
        ..append::Config::default()
    };
    let start = Instant::now();
    // The mount that will die: a server we own (iomapfs), or the kernel's ext4.
    let mut server = if t.is_fuse() {
        Some(spawn_server(&fx)?)
    } else {
        None
    };
    if server.is_none() {
        fx.mount()?;
    }
    let mnt = fx.mnt().to_path_buf();
    let run = std::thread::scope(|s| -> Result<Summary> {
        let writers = s.spawn(|| append::run(&mnt, &cfg, None));
        let acks = wait_for_acks(&ack, ACKS_BEFORE_CRASH, Duration::from_secs(20));
        // What was acknowledged before the crash began: fsyncs that returned before it.
        std::fs::copy(&ack, &before)?;
        match server.as_mut() {
            Some(child) => {
                child.kill().context("SIGKILL the server")?;
                child.wait()?;
            }
            None => shutdown_fs(&mnt)?,
        }
        eprintln!(
            "{}: crashed after {acks} acknowledgements ({:.1?})",
            t.name(),
            start.elapsed()
        );
        Ok(writers
            .join()
            .map_err(|_| anyhow::anyhow!("the append run panicked"))??)
    })?;
    eprintln!("{}", run.render());
    ensure!(
        run.notes.iter().any(|n| n.contains("crash mode")),
        "the writers finished before the crash:\n{}",
        run.render()
    );
    ensure!(run.passed, "findings before the crash:\n{}", run.render());

    // Unmount what is left.
    match server {
        Some(_) => {
            if umount(fx.mnt()).is_err() {
                lazy_unmount(fx.mnt());
            }
            ensure!(
                mount_fstype(fx.mnt()).is_none(),
                "the dead mount is still there"
            );
            let reason = refuses_unclean(&fx)?;
            if reason.contains("checksum") {
                eprintln!("NOTE: the kill tore the primary superblock (its checksum does not match); e2fsck must repair it");
            }
        }
        None => fx.unmount()?,
    }
    let (code, report) = e2fsck_repair(fx.image())?;
    let fixes = fsck_fixes(&report);
    eprintln!(
        "{}: e2fsck -fy exit {code}, {} lines of repairs:\n  {}",
        t.name(),
        fixes.len(),
        fixes.join("\n  ")
    );
    eprintln!("{report}");

    fx.mount()?;
    let v = append::verify_acked(fx.mnt(), &before, false)?;
    eprintln!(
        "{} after recovery ({:.1?}), acknowledged before the crash:\n{}",
        t.name(),
        start.elapsed(),
        v.render()
    );
    ensure!(
        v.passed,
        "records acknowledged before the crash are lost:\n{}",
        v.render()
    );
    // Every acknowledgement, including those logged while the crash was under way. A FUSE
    // fsync returns success only once the server replied, so for iomapfs all must hold.
    // Kernel ext4 may return success from an fsync racing FS_IOC_SHUTDOWN(NOLOGFLUSH) (the
    // journal is aborted under it), so for the control this is reported, not asserted.
    let all = append::verify_acked(fx.mnt(), &ack, false)?;
    eprintln!(
        "{}: every acknowledgement, including those logged during the crash:\n{}",
        t.name(),
        all.render()
    );
    if t.is_fuse() {
        ensure!(
            all.passed,
            "records acknowledged by iomapfs are lost:\n{}",
            all.render()
        );
    }
    fx.finish()
}

/// `iomapfs -f IMG MNT` as our own child, so the test can kill it.
fn spawn_server(fx: &TestFs) -> Result<Child> {
    let server = &iomapfs_bins()?.server;
    let log = File::create(fx.log_path())?;
    let mut child = Command::new(server)
        .args(["-f", "-o", "rw"])
        .arg(fx.image())
        .arg(fx.mnt())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", server.display()))?;
    let start = Instant::now();
    while mount_fstype(fx.mnt()).as_deref() != Some("fuse.iomapfs") {
        if let Some(st) = child.try_wait()? {
            bail!(
                "iomapfs exited ({st}) before mounting:\n{}",
                fx.server_log()
            );
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            bail!("iomapfs did not mount within 10 s:\n{}", fx.server_log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}

/// Waits until the ack log holds `n` acknowledgements (or `timeout`); returns how many.
fn wait_for_acks(ack: &Path, n: usize, timeout: Duration) -> usize {
    let start = Instant::now();
    loop {
        let count = std::fs::read_to_string(ack)
            .map(|t| {
                t.lines()
                    .filter(|l| !l.starts_with('#') && !l.contains('='))
                    .count()
            })
            .unwrap_or(0);
        if count >= n || start.elapsed() > timeout {
            return count;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// FS_IOC_SHUTDOWN with FS_SHUTDOWN_FLAGS_NOLOGFLUSH: ext4 stops at once, as at a power
/// cut, without committing its running transaction.
fn shutdown_fs(mnt: &Path) -> Result<()> {
    const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d; // _IOR('X', 125, __u32)
    const NOLOGFLUSH: u32 = 2;
    let dir = File::open(mnt)?;
    let flags = NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 from a valid pointer.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            FS_IOC_SHUTDOWN,
            &flags,
        )
    };
    ensure!(
        r == 0,
        "FS_IOC_SHUTDOWN: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// iomapfs must not mount read-write a filesystem its killed server left unclean. Usually
/// it refuses because the superblock says "not clean"; a kill in the middle of a superblock
/// update can also leave the superblock's checksum wrong (libext2fs rewrites only the
/// changed fields, in several writes), which it refuses too. Returns the reason.
fn refuses_unclean(fx: &TestFs) -> Result<String> {
    let log = fx.scratch().join("refused.log");
    match Iomapfs::default().mount(fx.image(), fx.mnt(), &MountOptions::default(), &log) {
        Ok(m) => {
            let _ = m.unmount();
            bail!("iomapfs mounted read-write a filesystem left unclean by a killed server (before e2fsck)")
        }
        Err(e) => {
            let msg = format!("{e:#}");
            let reason = msg.lines().last().unwrap_or("").to_string();
            ensure!(
                msg.contains("e2fsck") || msg.contains("checksum"),
                "refused, but not because the filesystem is unclean: {msg}"
            );
            eprintln!("iomapfs refused the unclean filesystem, as it must: {reason}");
            Ok(reason)
        }
    }
}
