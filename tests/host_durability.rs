//! iomapfs on the host kernel's FUSE (issue 17, items 2 and 7): stop signals sync and
//! unmount cleanly (lazily when the mount is busy), and fsync of one file writes what that
//! file needs — a few blocks, not every bitmap and every superblock backup.

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use test_support::bins::iomapfs_bins;
use test_support::cmd;
use test_support::e2fs::{e2fsck_clean, mkfs_ext4};
use test_support::mount::{lazy_unmount, mount_fstype, wait_timeout};
use test_support::Expected;

/// Whether this machine can run these tests (root, /dev/fuse, e2fsprogs; a failure in CI).
fn can_run(extra: &[&str]) -> bool {
    let mut checks = vec![
        test_support::needs::root(),
        test_support::needs::dev_fuse(),
        test_support::needs::tool_from("mkfs.ext4", "e2fsprogs"),
        test_support::needs::tool_from("dumpe2fs", "e2fsprogs"),
    ];
    checks.extend(extra.iter().map(|t| test_support::needs::tool(t)));
    test_support::needs_all(checks)
}

/// A server started in the foreground on `source`, mounted on `mnt`.
struct Server {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(source: &Path, mnt: &Path, opts: &str, log: &Path) -> Result<Server> {
        let server = &iomapfs_bins()?.server;
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(server)
            .arg("-f")
            .arg("-o")
            .arg(opts)
            .arg(source)
            .arg(mnt)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("start iomapfs")?;
        let s = Server {
            child,
            mnt: mnt.to_owned(),
            log: log.to_owned(),
        };
        let start = Instant::now();
        while mount_fstype(mnt).is_none() {
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "not mounted:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(s)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        // A positive pid only: kill(0) and kill(-n) would signal whole process groups.
        let pid = i32::try_from(self.child.id())
            .ok()
            .filter(|p| *p > 0)
            .context("pid")?;
        kill(Pid::from_raw(pid), sig)?;
        Ok(())
    }

    /// Waits for the server to exit successfully.
    fn wait(&mut self) -> Result<()> {
        match wait_timeout(&mut self.child, Duration::from_secs(30))? {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("iomapfs exited with {s}:\n{}", self.log()),
            None => bail!("iomapfs did not exit:\n{}", self.log()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if mount_fstype(&self.mnt).is_some() {
            lazy_unmount(&self.mnt);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(image: &Path) -> Result<String> {
    let out = cmd::run("dumpe2fs", &[Path::new("-h"), image])?;
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem state:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn fresh(dir: &Path, size_mib: u64, block_size: u32) -> Result<(PathBuf, PathBuf)> {
    let image = dir.join("fs.img");
    std::fs::File::create(&image)?.set_len(size_mib << 20)?;
    mkfs_ext4(&image, block_size, &[])?;
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt)?;
    Ok((image, mnt))
}

#[test]
fn stop_signals_sync_unmount_and_close_cleanly() {
    if !can_run(&[]) {
        return;
    }
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let dir = tempfile::tempdir().unwrap();
        let (image, mnt) = fresh(dir.path(), 64, 4096).unwrap();
        let mut server = Server::start(&image, &mnt, "rw", &dir.path().join("log")).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(mnt.join("f"), &data).unwrap();
        std::fs::create_dir(mnt.join("d")).unwrap();
        server.signal(sig).unwrap();
        server.wait().unwrap_or_else(|e| panic!("{sig:?}: {e:#}"));
        assert!(mount_fstype(&mnt).is_none(), "{sig:?}: still mounted");
        assert_eq!(state(&image).unwrap(), "clean", "{sig:?}");
        e2fsck_clean(&image).unwrap();
        let mut expected = Expected::default();
        expected.file("f", data.clone());
        expected.dir("d");
        test_support::oracle::verify_image(&image, &expected).unwrap();
    }
}

#[test]
fn a_busy_mount_is_detached_and_served_until_its_last_file_closes() {
    if !can_run(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (image, mnt) = fresh(dir.path(), 64, 4096).unwrap();
    let mut server = Server::start(&image, &mnt, "rw", &dir.path().join("log")).unwrap();
    let mut open = std::fs::File::create(mnt.join("held")).unwrap();
    open.write_all(b"before the signal\n").unwrap();
    server.signal(Signal::SIGTERM).unwrap();
    // The mount leaves the namespace at once; the server goes on serving the open file.
    let start = Instant::now();
    while mount_fstype(&mnt).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not detached:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server must still serve:\n{}",
        server.log()
    );
    open.write_all(b"after the signal\n").unwrap();
    open.sync_all().unwrap();
    drop(open);
    server.wait().unwrap();
    assert_eq!(state(&image).unwrap(), "clean");
    e2fsck_clean(&image).unwrap();
    let mut expected = Expected::default();
    expected.file("held", b"before the signal\nafter the signal\n".to_vec());
    test_support::oracle::verify_image(&image, &expected).unwrap();
}

/// Sectors written to a block device so far (/sys/block/NAME/stat, field 7).
fn written_sectors(dev: &Path) -> Result<u64> {
    let name = dev.file_name().context("device name")?.to_string_lossy();
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat"))?;
    stat.split_whitespace()
        .nth(6)
        .context("stat field")?
        .parse()
        .context("sectors")
}

struct Loop(PathBuf);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = cmd::run("losetup", &[Path::new("-d"), &self.0]);
    }
}

/// Appends 4 KiB and fsyncs, `n` times; returns each fsync's latency and the KiB the
/// device was written per append+fsync (median).
fn appends_with_fsync(dev: &Path, file: &Path, n: usize) -> Result<(Vec<Duration>, u64)> {
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    let block = vec![0x42u8; 4096];
    let mut times = Vec::new();
    let mut kib = Vec::new();
    for _ in 0..n {
        let before = written_sectors(dev)?;
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_all()?;
        times.push(t.elapsed());
        kib.push((written_sectors(dev)? - before) / 2);
    }
    kib.sort_unstable();
    Ok((times, kib[kib.len() / 2]))
}

#[test]
fn fsync_of_one_file_writes_what_that_file_needs() {
    if !can_run(&["losetup"]) {
        return;
    }
    // 1 KiB blocks, 512 MiB: 64 groups, so a full flush (every bitmap, every descriptor
    // and superblock copy) is many blocks while one file's change is a handful.
    let dir = tempfile::tempdir().unwrap();
    let (image, mnt) = fresh(dir.path(), 512, 1024).unwrap();
    // Allocations in many groups: a flush then has real bitmaps to write everywhere.
    let dev = cmd::run(
        "losetup",
        &[Path::new("--find"), Path::new("--show"), &image],
    )
    .unwrap();
    let dev = Loop(PathBuf::from(dev.trim()));
    let mut server =
        Server::start(&dev.0, &mnt, "rw,flavor=fuseblk", &dir.path().join("log")).unwrap();
    for g in 0..8 {
        std::fs::write(mnt.join(format!("spread{g}")), vec![1u8; 9 << 20]).unwrap();
    }
    let file = mnt.join("appended");
    std::fs::write(&file, b"start").unwrap();
    nix::unistd::sync();
    let (times, kib) = appends_with_fsync(&dev.0, &file, 50).unwrap();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    println!(
        "fsync after a 4 KiB append: median {:?}, p90 {:?}, max {:?}; device writes {kib} KiB per append+fsync",
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() - 1]
    );
    // The device's page cache writes whole 4 KiB pages: the data, the page holding the
    // inode, a bitmap, a descriptor block, the superblock, some slack. Not the hundreds of
    // KiB a full flush writes on 64 groups (every bitmap, every descriptor and superblock
    // copy).
    assert!(kib <= 32, "an append+fsync wrote {kib} KiB to the device");
    cmd::run("umount", &[&mnt]).unwrap();
    server.wait().unwrap();
    e2fsck_clean(&dev.0).unwrap();
}
