//! Mounting and unmounting through mount(2) and /dev/fuse (root only).
//!
//! By default a block device is mounted as `fuseblk.SUBTYPE`: the kernel then sends
//! FUSE_DESTROY at unmount and waits for the answer, so the server can flush and close the
//! device before umount(8) returns. An image file is mounted as `fuse.SUBTYPE`; there the
//! kernel sends no DESTROY and the server flushes when /dev/fuse reports the unmount.
//! `-o flavor=fuse` forces the latter on a block device too (then umount returns before
//! the flush: see `lock`); `-o subtype=` renames SUBTYPE (default `iomapfs`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::options::{FlavorChoice, MountOptions};

/// What kind of mount a source gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// An image file: plain `fuse`.
    Fuse,
    /// A block device: `fuseblk`, with a synchronous DESTROY at unmount.
    Fuseblk,
}

impl Flavor {
    /// The flavor `-o flavor=` asks for, checked against the source.
    pub fn choose(source: &Path, choice: FlavorChoice) -> Result<Self> {
        let natural = Self::of(source)?;
        match choice {
            FlavorChoice::Auto => Ok(natural),
            FlavorChoice::Fuse => Ok(Flavor::Fuse),
            FlavorChoice::Fuseblk if natural == Flavor::Fuseblk => Ok(Flavor::Fuseblk),
            FlavorChoice::Fuseblk => bail!(
                "flavor=fuseblk needs a block device, and {} is a regular file \
                 (use flavor=fuse or auto, or attach it to a loop device)",
                source.display()
            ),
        }
    }

    /// `Fuseblk` for a block device, `Fuse` for a regular file.
    pub fn of(source: &Path) -> Result<Self> {
        let meta = std::fs::metadata(source)
            .with_context(|| format!("cannot stat the source {}", source.display()))?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            Ok(Flavor::Fuseblk)
        } else if ft.is_file() {
            Ok(Flavor::Fuse)
        } else {
            bail!(
                "{} is neither a block device nor a regular file",
                source.display()
            )
        }
    }

    /// The mount type string, as /proc/mounts shows it.
    pub fn fstype(self, subtype: &str) -> String {
        let base = match self {
            Flavor::Fuse => "fuse",
            Flavor::Fuseblk => "fuseblk",
        };
        if subtype.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{subtype}")
        }
    }
}

/// A mount that is in place, with the /dev/fuse connection that serves it.
pub struct Mounted {
    pub dev_fuse: File,
    pub mountpoint: PathBuf,
    pub flavor: Flavor,
    /// The mount type given to mount(2).
    pub fstype: String,
}

/// Opens /dev/fuse and mounts `source` on `mountpoint`.
pub fn mount(
    source: &Path,
    mountpoint: &Path,
    block_size: u32,
    opts: &MountOptions,
) -> Result<Mounted> {
    let flavor = Flavor::choose(source, opts.flavor)?;
    let fstype = flavor.fstype(&opts.subtype);
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
        Some(fstype.as_str()),
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
            fstype
        ),
    })?;
    Ok(Mounted {
        dev_fuse,
        mountpoint,
        flavor,
        fstype,
    })
}

/// `mount -o remount,...`: applies ro/rw and the generic flags to the mount on
/// `mountpoint` (the kernel ignores FUSE's own options on a remount). Going read-only
/// ends with an fsync of the root directory, which makes the server write out everything
/// it holds, as a read-only remount of a kernel filesystem does.
pub fn remount(mountpoint: &Path, opts: &MountOptions) -> Result<()> {
    let mut flags = nix::mount::MsFlags::from_bits_truncate(opts.ms_flags as libc::c_ulong)
        | nix::mount::MsFlags::MS_REMOUNT;
    if opts.read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    nix::mount::mount(None::<&str>, mountpoint, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("remounting {}", mountpoint.display()))?;
    if opts.read_only {
        std::fs::File::open(mountpoint)
            .and_then(|d| d.sync_all())
            .with_context(|| {
                format!(
                    "flushing {} after the read-only remount",
                    mountpoint.display()
                )
            })?;
    }
    Ok(())
}

/// Lazily detaches a mount; used when the server gives up after mounting.
pub fn detach(mountpoint: &Path) {
    let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
}

/// Unmounts on a stop signal: a plain unmount (which for `fuseblk` waits for DESTROY, that
/// the worker threads answer), or, if files are still open, a lazy one: the mount leaves
/// the namespace now and the session ends when the last user is gone.
pub fn unmount_for_stop(mountpoint: &Path) {
    match nix::mount::umount2(mountpoint, nix::mount::MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => {
            tracing::warn!(
                "{} is busy: detached; serving goes on until its last open file is closed",
                mountpoint.display()
            );
            detach(mountpoint);
        }
        Err(e) => tracing::error!("cannot unmount {}: {e}", mountpoint.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_choice_against_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::write(&img, b"x").unwrap();
        assert_eq!(
            Flavor::choose(&img, FlavorChoice::Auto).unwrap(),
            Flavor::Fuse
        );
        assert_eq!(
            Flavor::choose(&img, FlavorChoice::Fuse).unwrap(),
            Flavor::Fuse
        );
        let err = Flavor::choose(&img, FlavorChoice::Fuseblk)
            .unwrap_err()
            .to_string();
        assert!(err.contains("flavor=fuseblk needs a block device"), "{err}");
        assert!(
            Flavor::choose(dir.path(), FlavorChoice::Fuse).is_err(),
            "a directory"
        );
        assert_eq!(Flavor::Fuse.fstype("ext4"), "fuse.ext4");
        assert_eq!(Flavor::Fuseblk.fstype("iomapfs"), "fuseblk.iomapfs");
        assert_eq!(Flavor::Fuse.fstype(""), "fuse");
    }
}
