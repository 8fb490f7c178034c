//! Mount types for test suites that name the filesystem by it (fstests' FSTYP), and the
//! per-source lock, iomapfs only:
//! - the helper name picks the type: `mount.fuse.SUB` → `fuse.SUB`, `mount.fuseblk.SUB` →
//!   `fuseblk.SUB`, `mount.fuse.iomapfs` → automatic (`fuseblk.iomapfs` on a block
//!   device), through mount(8) and run directly; `-o` from the user wins;
//! - with the `fuse` flavor umount returns before the server has flushed; `flock DEV`
//!   waits for it, and a second server on the same source fails after `lock_timeout`.
//!
//! mount(8) only looks for helpers in /sbin, so the mount(8) cases link
//! /sbin/mount.{fuse,fuseblk}.iomapfs-test-PID for the test's duration; the fstests names
//! (`mount.fuse.ext4`, ...) are links in a temporary directory, run directly.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use test_support::bins::iomapfs_bins;
use test_support::cmd::{self, find_tool};
use test_support::e2fs::{e2fsck_clean, mkfs_ext4};
use test_support::mount::{lazy_unmount, mount_fstype, umount};
use test_support::oracle::verify_image;
use test_support::sys::pattern;
use test_support::{Expected, Iomapfs, Target};

#[test]
fn helper_names_pick_the_mount_type() {
    test_support::run(&Iomapfs::default(), mount_types_body);
}

#[test]
fn fuse_flavor_umount_then_flock_waits_for_the_server() {
    test_support::run(&Iomapfs::default(), flock_after_umount_body);
}

#[test]
fn second_server_on_a_locked_source_fails_after_lock_timeout() {
    test_support::run(&Iomapfs::default(), second_server_body);
}

/// A loop device over a fresh ext4 image, a mount point, and helper links, in a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    dev: LoopDev,
    mnt: PathBuf,
}

impl Fixture {
    fn new(size_mib: u64) -> Result<Self> {
        ensure!(
            find_tool("flock").is_some(),
            "flock(1) (util-linux) is not installed"
        );
        let dir = tempfile::Builder::new().prefix("e2e-types-").tempdir()?;
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)?.set_len(size_mib << 20)?;
        mkfs_ext4(&image, 4096, &[])?;
        let dev = cmd::run(
            "losetup",
            &[Path::new("--find"), Path::new("--show"), &image],
        )?;
        let dev = LoopDev(PathBuf::from(dev.trim()));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        Ok(Fixture { dir, dev, mnt })
    }

    /// A link named `name` (e.g. `mount.fuse.ext4`) to the built server, in the temp dir.
    fn helper(&self, name: &str) -> Result<PathBuf> {
        let link = self.dir.path().join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(&iomapfs_bins()?.server, &link)?;
        }
        Ok(link)
    }

    fn log_option(&self) -> String {
        format!("log={}", self.dir.path().join("server.log").display())
    }

    /// Runs `helper DEV MNT -o OPTS` the way mount(8) would; the mount is live on success.
    fn mount_with(&self, helper: &str, opts: &str) -> Result<MountGuard> {
        let mut command = Command::new(self.helper(helper)?);
        command
            .arg(&self.dev.0)
            .arg(&self.mnt)
            .arg("-o")
            .arg(format!("{opts},{}", self.log_option()));
        cmd::run_cmd(&mut command)?;
        Ok(MountGuard(self.mnt.clone(), true))
    }

    /// `flock -w 60 DEV true`: returns once no server holds the source.
    fn wait_for_lock(&self) -> Result<()> {
        cmd::run(
            "flock",
            &[
                Path::new("-w"),
                Path::new("60"),
                &self.dev.0,
                Path::new("true"),
            ],
        )
        .context("flock on the device after umount")?;
        Ok(())
    }
}

struct LoopDev(PathBuf);
impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = cmd::run("losetup", &[Path::new("-d"), &self.0]);
    }
}

/// Unmounts lazily if the test fails while mounted.
struct MountGuard(PathBuf, bool);
impl MountGuard {
    fn unmount(mut self) -> Result<()> {
        self.1 = false;
        umount(&self.0)
    }
}
impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.1 {
            lazy_unmount(&self.0);
        }
    }
}

/// /sbin/mount.NAME → the built server while the test runs; removed on drop. The name is
/// unique to this process, so it never replaces anything installed.
struct SbinLink(PathBuf);
impl SbinLink {
    fn new(name: &str) -> Result<Self> {
        let link = Path::new("/sbin").join(name);
        ensure!(
            link.symlink_metadata().is_err(),
            "{} already exists",
            link.display()
        );
        std::os::unix::fs::symlink(&iomapfs_bins()?.server, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
        Ok(SbinLink(link))
    }
}
impl Drop for SbinLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The type column of `df -T -P MNT` (what fstests reads besides /proc/mounts).
fn df_type(mnt: &Path) -> Result<String> {
    let out = cmd::run("df", &[Path::new("-T"), Path::new("-P"), mnt])?;
    let row = out.lines().nth(1).context("df printed no row")?;
    Ok(row
        .split_whitespace()
        .nth(1)
        .context("df row without a type")?
        .to_string())
}

/// The pid of the server process whose command line names `mnt`.
fn server_pid(mnt: &Path) -> Option<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(e.path().join("exe")).ok()?;
        // "iomapfs", or "iomapfs (deleted)" if it was rebuilt meanwhile.
        let is_server = exe.file_name()?.to_str()?.starts_with("iomapfs");
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (is_server && cmdline.split(|b| *b == 0).any(|a| a == want)).then_some(pid)
    })
}

/// True when `pid` has exited (a zombie counts: its fds are closed).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

fn mount_types_body(_t: &dyn Target) -> Result<()> {
    let fx = Fixture::new(64)?;
    let sub = format!("iomapfs-test-{}", std::process::id());
    let _links = [
        SbinLink::new(&format!("mount.fuse.{sub}"))?,
        SbinLink::new(&format!("mount.fuseblk.{sub}"))?,
    ];
    // (how to mount, -o, the type /proc/mounts and df must show)
    let cases: Vec<(Via, &str, String)> = vec![
        (Via::Helper("mount.fuse.ext4"), "rw", "fuse.ext4".into()),
        (
            Via::Helper("mount.fuseblk.ext4"),
            "rw",
            "fuseblk.ext4".into(),
        ),
        (
            Via::Helper("mount.fuse.iomapfs"),
            "rw",
            "fuseblk.iomapfs".into(),
        ),
        (
            Via::Mount8(format!("fuse.{sub}")),
            "rw",
            format!("fuse.{sub}"),
        ),
        (
            Via::Mount8(format!("fuseblk.{sub}")),
            "rw",
            format!("fuseblk.{sub}"),
        ),
        // The user's -o beats what the helper name implies.
        (
            Via::Mount8(format!("fuseblk.{sub}")),
            "flavor=fuse,subtype=mine",
            "fuse.mine".into(),
        ),
    ];
    let mut expected = Expected::default();
    for (i, (via, opts, want)) in cases.iter().enumerate() {
        let guard = match via {
            Via::Helper(name) => fx.mount_with(name, opts)?,
            Via::Mount8(fstype) => {
                let o = format!("{opts},{}", fx.log_option());
                cmd::run(
                    "mount",
                    &[
                        Path::new("-t"),
                        Path::new(fstype),
                        Path::new("-o"),
                        Path::new(&o),
                        &fx.dev.0,
                        &fx.mnt,
                    ],
                )?;
                MountGuard(fx.mnt.clone(), true)
            }
        };
        let what = format!("{via:?} -o {opts}");
        assert_eq!(
            mount_fstype(&fx.mnt).as_deref(),
            Some(want.as_str()),
            "/proc mount type after {what}"
        );
        assert_eq!(df_type(&fx.mnt)?, *want, "df -T type after {what}");
        let name = format!("f{i}");
        let data = pattern(300 + i as u64, 100_000);
        std::fs::write(fx.mnt.join(&name), &data)?;
        expected.file(&name, data);
        guard.unmount()?;
        // A fuse-flavor server may still be flushing: wait for it before the next mount.
        fx.wait_for_lock()?;
    }
    e2fsck_clean(&fx.dev.0)?;
    verify_image(&fx.dev.0, &expected).context("every mount's file on the device")
}

#[derive(Debug)]
enum Via {
    /// Run a link with this name directly, as mount(8) would.
    Helper(&'static str),
    /// `mount -t TYPE`, through the /sbin link.
    Mount8(String),
}

fn flock_after_umount_body(_t: &dyn Target) -> Result<()> {
    let fx = Fixture::new(256)?;
    let guard = fx.mount_with("mount.fuse.ext4", "rw")?;
    assert_eq!(mount_fstype(&fx.mnt).as_deref(), Some("fuse.ext4"));
    let pid = server_pid(&fx.mnt).context("no iomapfs process serves the mount")?;
    // The daemon (not the helper process that exited) holds the lock.
    let busy = Command::new("flock")
        .arg("-n")
        .arg(&fx.dev.0)
        .arg("true")
        .status()?;
    ensure!(
        !busy.success(),
        "flock -n on the device succeeded while the server runs"
    );

    // No fsync: the server writes the rest after umount has returned.
    let data = pattern(400, 48 << 20);
    std::fs::write(fx.mnt.join("big"), &data)?;
    std::fs::create_dir(fx.mnt.join("dir"))?;
    std::fs::write(fx.mnt.join("dir/small"), b"small")?;
    guard.unmount()?;
    fx.wait_for_lock()?;
    // The lock goes with the server's last descriptor, at exit; allow for the instant
    // between closing files and becoming a zombie.
    let start = Instant::now();
    while !exited(pid) {
        ensure!(
            start.elapsed() < Duration::from_secs(1),
            "flock returned while the server (pid {pid}) still runs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    e2fsck_clean(&fx.dev.0).context("e2fsck right after the lock was free")?;
    let mut expected = Expected::default();
    expected.file("big", data);
    expected.file("dir/small", b"small".to_vec());
    verify_image(&fx.dev.0, &expected)
}

fn second_server_body(_t: &dyn Target) -> Result<()> {
    let fx = Fixture::new(64)?;
    let guard = fx.mount_with("mount.fuse.ext4", "rw")?;
    let pid = server_pid(&fx.mnt).context("no iomapfs process serves the mount")?;
    let mnt2 = fx.dir.path().join("mnt2");
    std::fs::create_dir(&mnt2)?;

    let start = Instant::now();
    let out = Command::new(&iomapfs_bins()?.server)
        .args(["-o", "lock_timeout=2,flavor=fuse"])
        .arg(&fx.dev.0)
        .arg(&mnt2)
        .output()?;
    let waited = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        lazy_unmount(&mnt2);
        bail!("a second server mounted the source another server serves");
    }
    ensure!(
        waited >= Duration::from_secs(2),
        "gave up after {waited:?}, before lock_timeout=2"
    );
    ensure!(
        waited < Duration::from_secs(20),
        "took {waited:?} with lock_timeout=2"
    );
    let holder = format!("is locked by pid {pid} ");
    ensure!(
        stderr.contains(&holder) && stderr.contains("lock_timeout"),
        "the error should say `{holder}` and name lock_timeout; it says:\n{stderr}"
    );
    ensure!(
        mount_fstype(&mnt2).is_none(),
        "nothing is mounted on the second mount point"
    );

    // The first server is untouched.
    std::fs::write(fx.mnt.join("after"), b"still served")?;
    assert_eq!(std::fs::read(fx.mnt.join("after"))?, b"still served");
    guard.unmount()?;
    fx.wait_for_lock()?;
    e2fsck_clean(&fx.dev.0)?;
    let mut expected = Expected::default();
    expected.file("after", b"still served".to_vec());
    verify_image(&fx.dev.0, &expected)
}
