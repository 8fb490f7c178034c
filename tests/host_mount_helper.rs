//! The server's own entry points, iomapfs only (the kernel control has no equivalent):
//! `mount -t fuse.iomapfs /dev/loopN MNT` through /sbin/mount.fuse.iomapfs, where umount
//! must not return before the server has flushed and closed the device (FUSE DESTROY), and
//! `iomapfs IMG MNT` without -f, which must return only once the mount is live.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_support::bins::iomapfs_bins;
use test_support::cmd;
use test_support::e2fs::{e2fsck_clean, mkfs_ext4};
use test_support::mount::{lazy_unmount, mount_fstype};
use test_support::oracle::verify_image;
use test_support::sys::pattern;
use test_support::{Expected, Iomapfs, Target};

const HELPER_LINK: &str = "/sbin/mount.fuse.iomapfs";

#[test]
fn mount_helper_block_device() {
    test_support::run(&Iomapfs::default(), mount_helper_body);
}

#[test]
fn remount_read_only_and_back() {
    test_support::run(&Iomapfs::default(), remount_body);
}

#[test]
fn daemonized_image_mount() {
    test_support::run(&Iomapfs::default(), daemonized_body);
}

#[test]
fn preen_repairs_an_unclean_filesystem() {
    test_support::run(&Iomapfs::default(), preen_body);
}

/// A filesystem a crash left "not clean" is refused read-write, unless `-o preen` runs
/// `e2fsck -p` first (fstests' crash tests mount that way).
fn preen_body(_t: &dyn Target) -> Result<()> {
    let bins = iomapfs_bins()?;
    let (_dir, image, mnt) = scratch_image(64)?;
    // What a crash leaves: the on-disk state still says "mounted" (not valid).
    cmd::run(
        "debugfs",
        &[
            Path::new("-w"),
            Path::new("-R"),
            Path::new("ssv state 0"),
            &image,
        ],
    )?;
    let mount = |opts: &str| {
        std::process::Command::new(&bins.server)
            .args(["-o", opts])
            .arg(&image)
            .arg(&mnt)
            .output()
    };
    let refused = mount("rw")?;
    ensure!(
        !refused.status.success(),
        "an unclean filesystem was mounted read-write"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        err.contains("not cleanly unmounted") && err.contains("e2fsck"),
        "{err}"
    );
    ensure!(
        mount_fstype(&mnt).is_none(),
        "nothing is mounted after the refusal"
    );

    let preened = mount("rw,preen")?;
    ensure!(
        preened.status.success(),
        "-o preen: {}",
        String::from_utf8_lossy(&preened.stderr)
    );
    let mut guard = MountGuard(mnt.clone(), true);
    let pid = server_pid(&mnt).context("no iomapfs daemon serves the mount")?;
    std::fs::write(mnt.join("after"), b"preened")?;
    test_support::mount::umount(&mnt)?;
    guard.1 = false;
    wait_exit(pid, Duration::from_secs(20))?;
    e2fsck_clean(&image)?;
    let mut expected = Expected::default();
    expected.file("after", b"preened".to_vec());
    verify_image(&image, &expected)
}

/// A scratch dir (0755 so allow_other mounts in it are reachable) with an ext4 image.
fn scratch_image(size_mib: u64) -> Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("e2e-helper-").tempdir()?;
    let image = dir.path().join("fs.img");
    std::fs::File::create(&image)?.set_len(size_mib << 20)?;
    mkfs_ext4(&image, 4096, &[])?;
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt)?;
    Ok((dir, image, mnt))
}

/// Points /sbin/mount.fuse.iomapfs at the helper just built, saying so when it changes
/// anything. A regular file there is someone's installation: left alone, the test fails.
fn ensure_helper_link(helper: &Path) -> Result<()> {
    let link = Path::new(HELPER_LINK);
    match std::fs::read_link(link) {
        Ok(target) if target == helper => return Ok(()),
        Ok(target) => {
            eprintln!(
                "{HELPER_LINK} pointed to {}; repointing it to {}",
                target.display(),
                helper.display()
            );
            std::fs::remove_file(link)?;
        }
        Err(_) if link.symlink_metadata().is_ok() => {
            bail!("{HELPER_LINK} is not a symlink (an installed helper?); remove it to let the test link the built one")
        }
        Err(_) => eprintln!(
            "{HELPER_LINK} did not exist; linking it to {}",
            helper.display()
        ),
    }
    std::os::unix::fs::symlink(helper, link).with_context(|| format!("symlink {HELPER_LINK}"))
}

/// The pid of the iomapfs process serving `mnt`, found by its command line.
fn server_pid(mnt: &Path) -> Option<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let argv0 = args.next()?;
        (argv0.ends_with(b"iomapfs") && args.any(|a| a == want)).then_some(pid)
    })
}

fn wait_exit(pid: u32, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie counts as exited: its parent (init, for a daemon) reaps it eventually.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "iomapfs (pid {pid}) still runs {timeout:?} after unmount"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

struct LoopDev(PathBuf);
impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = cmd::run("losetup", &[Path::new("-d"), &self.0]);
    }
}

/// Unmounts lazily if the test fails while mounted.
struct MountGuard(PathBuf, bool);
impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.1 {
            lazy_unmount(&self.0);
        }
    }
}

fn mount_helper_body(_t: &dyn Target) -> Result<()> {
    let bins = iomapfs_bins()?;
    ensure_helper_link(&bins.helper)?;
    let (_dir, image, mnt) = scratch_image(128)?;
    let dev = cmd::run(
        "losetup",
        &[Path::new("--find"), Path::new("--show"), &image],
    )?
    .trim()
    .to_string();
    let dev = LoopDev(PathBuf::from(dev));
    cmd::run(
        "mount",
        &[Path::new("-t"), Path::new("fuse.iomapfs"), &dev.0, &mnt],
    )?;
    let mut guard = MountGuard(mnt.clone(), true);
    assert_eq!(
        mount_fstype(&mnt).as_deref(),
        Some("fuseblk.iomapfs"),
        "a block device is mounted as fuseblk"
    );
    let pid = server_pid(&mnt).context("no iomapfs process serves the mount")?;

    // No fsync: only the unmount may make these durable.
    let data = pattern(200, 3 << 20);
    std::fs::write(mnt.join("hello"), &data)?;
    std::fs::create_dir(mnt.join("dir"))?;
    std::fs::write(mnt.join("dir/small"), b"small file")?;
    std::os::unix::fs::symlink("hello", mnt.join("link"))?;

    test_support::mount::umount(&mnt)?;
    guard.1 = false;
    // Immediately: the kernel waited for the server's DESTROY reply, which comes only after
    // everything is flushed and the device closed.
    e2fsck_clean(&dev.0).context("e2fsck right after umount")?;
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /dir/small"])
        .arg(&dev.0)
        .output()?;
    assert_eq!(cat.stdout, b"small file", "debugfs reads the file back");
    let mut expected = Expected::default();
    expected.file("hello", data);
    expected.file("dir/small", b"small file".to_vec());
    expected.symlink("link", b"hello");
    verify_image(&dev.0, &expected).context("ext4-view on the loop device")?;
    wait_exit(pid, Duration::from_secs(10))?;
    drop(dev);
    Ok(())
}

/// `mount -o remount,ro DIR` runs the helper too (fstests' _scratch_remount): it changes the
/// live mount, starts no second server, and leaves the data on the disk.
fn remount_body(_t: &dyn Target) -> Result<()> {
    let bins = iomapfs_bins()?;
    ensure_helper_link(&bins.helper)?;
    let (_dir, image, mnt) = scratch_image(64)?;
    let dev = cmd::run(
        "losetup",
        &[Path::new("--find"), Path::new("--show"), &image],
    )?
    .trim()
    .to_string();
    let dev = LoopDev(PathBuf::from(dev));
    cmd::run(
        "mount",
        &[Path::new("-t"), Path::new("fuse.iomapfs"), &dev.0, &mnt],
    )?;
    let mut guard = MountGuard(mnt.clone(), true);
    let pid = server_pid(&mnt).context("no iomapfs process serves the mount")?;
    std::fs::write(mnt.join("before"), b"written rw")?;
    let read_only = |mnt: &Path| -> Result<bool> {
        let flags = nix::sys::statvfs::statvfs(mnt)?.flags();
        Ok(flags.contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    };

    cmd::run("mount", &[Path::new("-o"), Path::new("remount,ro"), &mnt])?;
    ensure!(read_only(&mnt)?, "statvfs says rw after remount,ro");
    let err = std::fs::write(mnt.join("new"), b"x").unwrap_err();
    ensure!(
        err.raw_os_error() == Some(nix::errno::Errno::EROFS as i32),
        "create on the read-only mount: {err}"
    );
    ensure!(
        server_pid(&mnt) == Some(pid),
        "the remount must keep the one server"
    );
    // Read-only means written out: the file is on the disk while still mounted.
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /before"])
        .arg(&dev.0)
        .output()?;
    assert_eq!(
        cat.stdout, b"written rw",
        "debugfs reads the file during the ro mount"
    );

    cmd::run("mount", &[Path::new("-o"), Path::new("remount,rw"), &mnt])?;
    ensure!(!read_only(&mnt)?, "statvfs says ro after remount,rw");
    std::fs::write(mnt.join("after"), b"written again")?;
    test_support::mount::umount(&mnt)?;
    guard.1 = false;
    e2fsck_clean(&dev.0).context("e2fsck after umount")?;
    let mut expected = Expected::default();
    expected.file("before", b"written rw".to_vec());
    expected.file("after", b"written again".to_vec());
    verify_image(&dev.0, &expected).context("ext4-view on the loop device")?;
    wait_exit(pid, Duration::from_secs(10))?;
    Ok(())
}

fn daemonized_body(_t: &dyn Target) -> Result<()> {
    let bins = iomapfs_bins()?;
    let (_dir, image, mnt) = scratch_image(64)?;
    let out = std::process::Command::new(&bins.server)
        .args(["-o", "rw,allow_other,default_permissions"])
        .arg(&image)
        .arg(&mnt)
        .output()?;
    ensure!(
        out.status.success(),
        "iomapfs without -f failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut guard = MountGuard(mnt.clone(), true);
    // No waiting: the parent exits only after the mount is live.
    assert_eq!(
        mount_fstype(&mnt).as_deref(),
        Some("fuse.iomapfs"),
        "mounted when the command returns"
    );
    let pid = server_pid(&mnt).context("no iomapfs daemon serves the mount")?;
    let data = pattern(201, 1 << 20);
    std::fs::write(mnt.join("f"), &data)?;

    // fusermount3 -u is the other way users unmount; fall back to umount without it.
    let unmount = if cmd::find_tool("fusermount3").is_some() {
        ("fusermount3", vec!["-u"])
    } else {
        ("umount", vec![])
    };
    let mut args: Vec<&std::ffi::OsStr> = unmount.1.iter().map(|s| s.as_ref()).collect();
    args.push(mnt.as_os_str());
    // Busy for a moment while another process (an image build's mount namespace, a
    // scanner) holds the mount: retry as test_support::mount::umount does.
    let start = std::time::Instant::now();
    loop {
        match cmd::run(unmount.0, &args) {
            Err(e)
                if format!("{e:#}").contains("busy")
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => break r.map(drop)?,
        }
    }
    guard.1 = false;
    // An image file gets no DESTROY: the image is complete once the daemon has exited.
    wait_exit(pid, Duration::from_secs(20))?;
    e2fsck_clean(&image)?;
    let mut expected = Expected::default();
    expected.file("f", data);
    verify_image(&image, &expected)
}
