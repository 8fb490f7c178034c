//! Mounting and unmounting through mount(2) and /dev/fuse (root only).
//!
//! A block device is mounted as `fuseblk.iomapfs`: the kernel then sends FUSE_DESTROY at
//! unmount and waits for the answer, so the server can flush and close the device before
//! umount(8) returns. An image file is mounted as `fuse.iomapfs`; there the kernel sends no
//! DESTROY and the server flushes when /dev/fuse reports the unmount.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::options::MountOptions;

/// The filesystem subtype shown in /proc/mounts (`fuse.iomapfs` / `fuseblk.iomapfs`).
pub const SUBTYPE: &str = "iomapfs";

/// What kind of mount a source gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// An image file: plain `fuse`.
    Fuse,
    /// A block device: `fuseblk`, with a synchronous DESTROY at unmount.
    Fuseblk,
}

impl Flavor {
    pub fn of(source: &Path) -> Result<Self> {
        let meta = std::fs::metadata(source)
            .with_context(|| format!("cannot stat the source {}", source.display()))?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            Ok(Flavor::Fuseblk)
        } else if ft.is_file() {
            Ok(Flavor::Fuse)
        } else {
            bail!("{} is neither a block device nor a regular file", source.display())
        }
    }

    pub fn fstype(self) -> String {
        match self {
            Flavor::Fuse => format!("fuse.{SUBTYPE}"),
            Flavor::Fuseblk => format!("fuseblk.{SUBTYPE}"),
        }
    }
}

/// A mount that is in place, with the /dev/fuse connection that serves it.
pub struct Mounted {
    pub dev_fuse: File,
    pub mountpoint: PathBuf,
    pub flavor: Flavor,
}

/// Opens /dev/fuse and mounts `source` on `mountpoint`.
pub fn mount(
    source: &Path,
    mountpoint: &Path,
    block_size: u32,
    opts: &MountOptions,
) -> Result<Mounted> {
    let flavor = Flavor::of(source)?;
    let dev_fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("cannot open /dev/fuse (is the fuse module loaded? `modprobe fuse`)")?;
    let mountpoint = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mount point {} does not exist", mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }

    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev_fuse.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    if flavor == Flavor::Fuseblk {
        data.push_str(&format!(",blksize={block_size}"));
    }
    let mut flags = nix::mount::MsFlags::from_bits_truncate(opts.ms_flags as libc::c_ulong);
    if opts.read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    let fsname = opts
        .fsname
        .clone()
        .unwrap_or_else(|| source.display().to_string());
    let mount_source: &str = match flavor {
        // fuseblk opens the source itself, so it must be the device path.
        Flavor::Fuseblk => source.to_str().context("device path is not UTF-8")?,
        Flavor::Fuse => &fsname,
    };
    nix::mount::mount(
        Some(mount_source),
        &mountpoint,
        Some(flavor.fstype().as_str()),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| match e {
        nix::errno::Errno::EPERM => anyhow::anyhow!(
            "mount(2) of {} on {} was refused (EPERM): iomapfs mounts directly and must run as root",
            source.display(),
            mountpoint.display()
        ),
        e => anyhow::anyhow!(
            "mount(2) of {} on {} as {} failed: {e}",
            source.display(),
            mountpoint.display(),
            flavor.fstype()
        ),
    })?;
    Ok(Mounted { dev_fuse, mountpoint, flavor })
}

/// Lazily detaches a mount; used when the server gives up after mounting.
pub fn detach(mountpoint: &Path) {
    let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
}
