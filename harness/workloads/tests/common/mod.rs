//! A fresh ext4 image mounted on a target (kernel ext4 on a loop device, or iomapfs on the
//! host kernel's FUSE), with the steps the workload tests need separately: unmount (to
//! touch the image behind the filesystem's back), mount, remount with `e2fsck -fn`, and the
//! final check (clean e2fsck, every file readable by ext4-view).

#![allow(dead_code)] // each test binary uses part of it

use anyhow::{bail, Context, Result};
use e2e::cmd::{e2fsck_clean, mkfs_ext4};
use e2e::oracle::verify_image;
use e2e::target::{read_log, Mounted};
use e2e::{Expected, MountOptions, Target};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Fx<'t> {
    pub target: &'t dyn Target,
    pub image: PathBuf,
    pub mnt: PathBuf,
    pub log: PathBuf,
    mount: Option<Box<dyn Mounted>>,
    /// Declared last: removed after the mount is gone.
    pub dir: tempfile::TempDir,
}

impl<'t> Fx<'t> {
    pub fn new(target: &'t dyn Target, size_mib: u64) -> Result<Self> {
        let mut fx = Self::unmounted(target, size_mib)?;
        fx.mount()?;
        Ok(fx)
    }

    /// A fresh image with 4 KiB blocks, not mounted yet.
    pub fn unmounted(target: &'t dyn Target, size_mib: u64) -> Result<Self> {
        Self::unmounted_with(target, size_mib, 4096)
    }

    pub fn with_block_size(target: &'t dyn Target, size_mib: u64, block_size: u32) -> Result<Self> {
        let mut fx = Self::unmounted_with(target, size_mib, block_size)?;
        fx.mount()?;
        Ok(fx)
    }

    fn unmounted_with(target: &'t dyn Target, size_mib: u64, block_size: u32) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("wl-").tempdir()?;
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        std::fs::File::create(&image)?.set_len(size_mib << 20)?;
        mkfs_ext4(&image, block_size, &[])?;
        let log = dir.path().join("server.log");
        Ok(Self {
            target,
            image,
            mnt,
            log,
            mount: None,
            dir,
        })
    }

    pub fn mount(&mut self) -> Result<()> {
        let m = self
            .target
            .mount(&self.image, &self.mnt, &MountOptions::default(), &self.log)?;
        self.mount = Some(m);
        Ok(())
    }

    pub fn unmount(&mut self) -> Result<()> {
        if let Some(m) = self.mount.take() {
            m.unmount()
                .with_context(|| format!("{}: unmount", self.target.name()))?;
        }
        Ok(())
    }

    /// Unmount, `e2fsck -fn` clean, mount: what is read next comes from the image.
    pub fn remount(&mut self) -> Result<()> {
        self.unmount()?;
        e2fsck_clean(&self.image)?;
        self.mount()
    }

    /// A path outside the filesystem under test.
    pub fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn server_log(&self) -> String {
        if self.target.is_fuse() {
            read_log(&self.log)
        } else {
            String::new()
        }
    }

    /// Unmount, `e2fsck -fn` clean, and ext4-view reads every file of the image.
    pub fn finish(mut self) -> Result<()> {
        self.unmount()?;
        e2fsck_clean(&self.image)?;
        verify_image(&self.image, &Expected::default())
            .context("ext4-view read-through of the image")
    }
}

/// The physical block (of `block_size` bytes) holding logical block `n` of `path` (absolute
/// in the filesystem), from `debugfs -R "bmap PATH N"` on the unmounted image.
pub fn physical_block(image: &Path, path: &str, n: u64) -> Result<u64> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("bmap {path} {n}"))
        .arg(image)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
    {
        Some(b) if out.status.success() && b != 0 => Ok(b),
        _ => bail!(
            "debugfs bmap {path} {n} said: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `e2fsck -fy IMAGE`: repairs; returns its exit code and report. Fails if e2fsck could
/// not fix everything (exit 4 or more).
pub fn e2fsck_repair(image: &Path) -> Result<(i32, String)> {
    let out = Command::new("e2fsck")
        .arg("-fy")
        .arg(image)
        .output()
        .context("run e2fsck")?;
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !(0..4).contains(&code) {
        bail!(
            "e2fsck -fy {} left errors (exit {code}):\n{text}",
            image.display()
        );
    }
    Ok((code, text))
}

/// The lines of an e2fsck report that describe problems it fixed (not its pass banners).
pub fn fsck_fixes(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty()
                && !l.starts_with("Pass ")
                && !l.starts_with("e2fsck ")
                && !l.contains("files (")
                && !l.contains("***** FILE SYSTEM WAS MODIFIED")
        })
        .map(String::from)
        .collect()
}
