//! What a test mounts its image with: the kernel's own ext4 on a loop device (the control,
//! so the expectations are real ext4 behaviour) or iomapfs on the host kernel's FUSE; and
//! fuse2fs on FUSE, which the bench measures iomapfs against.

use crate::bins::iomapfs_bins;
use crate::cmd::{self, find_tool};
use crate::mount::{lazy_unmount, mount_fstype, read_log, umount, wait_timeout};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    pub read_only: bool,
    /// Extra `-o` options for FUSE targets only (allow_other, default_permissions, ...).
    pub fuse_opts: Vec<String>,
}

pub trait Target: Sync {
    fn name(&self) -> &'static str;
    fn is_fuse(&self) -> bool;
    /// Why this machine cannot run the target at all, if it cannot (the only reason to skip).
    fn missing_prerequisite(&self) -> Option<String>;
    /// Mounts `image` on `mnt`; `log` receives the server's output, if there is a server.
    fn mount(
        &self,
        image: &Path,
        mnt: &Path,
        opts: &MountOptions,
        log: &Path,
    ) -> Result<Box<dyn Mounted>>;
}

/// A live mount. `unmount` is the clean path: afterwards the image is complete and can be
/// checked. Dropping without `unmount` is the last-resort cleanup of a failed test.
pub trait Mounted {
    fn unmount(self: Box<Self>) -> Result<()>;
}

fn common_prerequisites() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (mount, losetup, mknod)".into());
    }
    ["mkfs.ext4", "e2fsck", "mount", "umount", "losetup"]
        .into_iter()
        .find(|t| find_tool(t).is_none())
        .map(|t| format!("`{t}` is not installed"))
}

// ---------------------------------------------------------------------------------------
// The control: kernel ext4 on a loop device.

pub struct KernelExt4;

impl Target for KernelExt4 {
    fn name(&self) -> &'static str {
        "kernel-ext4"
    }
    fn is_fuse(&self) -> bool {
        false
    }
    fn missing_prerequisite(&self) -> Option<String> {
        common_prerequisites().or_else(|| {
            let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            let has_ext4 = fs
                .lines()
                .any(|l| l.split_whitespace().last() == Some("ext4"));
            // ext4 may be a module that mount(8) loads on demand.
            let release = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            let module = Path::new("/lib/modules")
                .join(release)
                .join("kernel/fs/ext4");
            (!has_ext4 && !module.exists()).then(|| "the kernel has no ext4".into())
        })
    }
    fn mount(
        &self,
        image: &Path,
        mnt: &Path,
        opts: &MountOptions,
        _log: &Path,
    ) -> Result<Box<dyn Mounted>> {
        let dev = cmd::run(
            "losetup",
            &[Path::new("--find"), Path::new("--show"), image],
        )?
        .trim()
        .to_string();
        let mut m = LoopMount {
            dev: PathBuf::from(dev),
            mnt: mnt.to_owned(),
            mounted: false,
        };
        let mode = if opts.read_only { "ro" } else { "rw" };
        cmd::run(
            "mount",
            &[
                Path::new("-t"),
                Path::new("ext4"),
                Path::new("-o"),
                Path::new(mode),
                &m.dev,
                mnt,
            ],
        )?;
        m.mounted = true;
        Ok(Box::new(m))
    }
}

struct LoopMount {
    dev: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl Mounted for LoopMount {
    fn unmount(mut self: Box<Self>) -> Result<()> {
        umount(&self.mnt)?;
        self.mounted = false;
        // Detaching here (not in Drop) so the image is released before e2fsck.
        let r = cmd::run("losetup", &[Path::new("-d"), &self.dev]);
        self.dev = PathBuf::new();
        r.map(drop)
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            lazy_unmount(&self.mnt);
        }
        if !self.dev.as_os_str().is_empty() {
            let _ = cmd::run("losetup", &[Path::new("-d"), &self.dev]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// FUSE servers on the host kernel: iomapfs, and fuse2fs as the bench's baseline.

fn fuse_prerequisites() -> Option<String> {
    common_prerequisites()
        .or_else(|| (!Path::new("/dev/fuse").exists()).then(|| "/dev/fuse does not exist".into()))
}

/// iomapfs on the host kernel's FUSE. `Iomapfs::default()` runs the tests' build (debug,
/// with fault injection, built on first use); [`Iomapfs::with_server`] runs a given binary,
/// such as the bench's release build.
#[derive(Clone, Debug, Default)]
pub struct Iomapfs {
    server: Option<PathBuf>,
}

impl Iomapfs {
    pub fn with_server(server: impl Into<PathBuf>) -> Self {
        Iomapfs {
            server: Some(server.into()),
        }
    }
}

impl Target for Iomapfs {
    fn name(&self) -> &'static str {
        "iomapfs"
    }
    fn is_fuse(&self) -> bool {
        true
    }
    fn missing_prerequisite(&self) -> Option<String> {
        fuse_prerequisites()
    }
    fn mount(
        &self,
        image: &Path,
        mnt: &Path,
        opts: &MountOptions,
        log: &Path,
    ) -> Result<Box<dyn Mounted>> {
        let server = match &self.server {
            Some(server) => server,
            None => &iomapfs_bins()?.server,
        };
        let mut o = vec![if opts.read_only { "ro" } else { "rw" }.to_string()];
        o.extend(opts.fuse_opts.iter().cloned());
        // Extra server options for debugging or fault injection, e.g. `debug,threads=1`.
        if let Ok(extra) = std::env::var("IOMAPFS_E2E_OPTS") {
            o.extend(extra.split(',').filter(|s| !s.is_empty()).map(String::from));
        }
        let mut cmd = Command::new(server);
        cmd.arg("-f")
            .arg("-o")
            .arg(o.join(","))
            .arg(image)
            .arg(mnt)
            .env("NO_COLOR", "1"); // plain text in the log that failures quote
        let m = FuseMount::start(cmd, "iomapfs", mnt, log)?;
        match mount_fstype(mnt).as_deref() {
            Some("fuse.iomapfs") => Ok(Box::new(m)),
            other => {
                bail!("an image file must be mounted as fuse.iomapfs, mountinfo says {other:?}")
            }
        }
    }
}

/// Debian's fuse2fs (e2fsprogs) on the host kernel's FUSE, run as the bench compares it:
/// `fuse2fs IMAGE MNT -f -o fakeroot`.
pub struct Fuse2fs;

impl Target for Fuse2fs {
    fn name(&self) -> &'static str {
        "fuse2fs"
    }
    fn is_fuse(&self) -> bool {
        true
    }
    fn missing_prerequisite(&self) -> Option<String> {
        fuse_prerequisites().or_else(|| {
            find_tool("fuse2fs")
                .is_none()
                .then(|| "`fuse2fs` is not installed".into())
        })
    }
    fn mount(
        &self,
        image: &Path,
        mnt: &Path,
        opts: &MountOptions,
        log: &Path,
    ) -> Result<Box<dyn Mounted>> {
        let mut o = vec!["fakeroot".to_string()];
        if opts.read_only {
            o.push("ro".into());
        }
        o.extend(opts.fuse_opts.iter().cloned());
        let mut cmd = Command::new("fuse2fs");
        cmd.arg(image).arg(mnt).arg("-f").arg("-o").arg(o.join(","));
        Ok(Box::new(FuseMount::start(cmd, "fuse2fs", mnt, log)?))
    }
}

/// A FUSE server in the foreground (`-f`), its output in `log`.
struct FuseMount {
    child: Child,
    /// The server's name, for messages.
    server: &'static str,
    mnt: PathBuf,
    log: PathBuf,
    mounted: bool,
}

impl FuseMount {
    /// Starts `cmd` and waits until its mount appears on `mnt`.
    fn start(mut cmd: Command, server: &'static str, mnt: &Path, log: &Path) -> Result<Self> {
        let log_file = File::create(log).with_context(|| format!("create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let line = cmd::describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", cmd.get_program().to_string_lossy()))?;
        let mut m = FuseMount {
            child,
            server,
            mnt: mnt.to_owned(),
            log: log.to_owned(),
            mounted: false,
        };
        m.wait_until_mounted(&line)?;
        m.mounted = true;
        Ok(m)
    }

    fn wait_until_mounted(&mut self, line: &str) -> Result<()> {
        let start = Instant::now();
        while mount_fstype(&self.mnt).is_none() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "`{line}` exited ({status}) before mounting:\n{}",
                    read_log(&self.log)
                );
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                bail!(
                    "`{line}` did not mount within {MOUNT_TIMEOUT:?}:\n{}",
                    read_log(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Mounted for FuseMount {
    fn unmount(mut self: Box<Self>) -> Result<()> {
        umount(&self.mnt)?;
        self.mounted = false;
        // An image file is mounted as plain FUSE (not fuseblk), for which the kernel sends
        // no DESTROY: the server flushes and exits on its own after umount, and only then is
        // the image complete. So wait for the process.
        let status = wait_timeout(&mut self.child, EXIT_TIMEOUT)?;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!(
                "{} exited with {s} after umount:\n{}",
                self.server,
                read_log(&self.log)
            ),
            None => bail!(
                "{} did not exit within {EXIT_TIMEOUT:?} of umount:\n{}",
                self.server,
                read_log(&self.log)
            ),
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.mounted {
            lazy_unmount(&self.mnt);
        }
        if let Ok(None) = wait_timeout(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
