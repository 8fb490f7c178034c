//! `TestFs`: a fresh ext4 image in a private temp dir, mounted on a target. `finish` is the
//! end of every test: unmount, `e2fsck -fn` clean, ext4-view comparison with `expected`.

use crate::e2fs::{e2fsck_clean, mkfs_ext4};
use crate::mount::read_log;
use crate::oracle::{verify_image, Expected};
use crate::target::{MountOptions, Mounted, Target};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct FsSpec {
    pub size_mib: u64,
    pub block_size: u32,
    /// Extra mkfs.ext4 arguments (e.g. `-m 0`).
    pub mkfs_args: Vec<String>,
    pub mount: MountOptions,
}

impl Default for FsSpec {
    /// 256 MiB, 4 KiB blocks, read-write; FUSE mounts get allow_other and
    /// default_permissions, the options real users and fstests mount with.
    fn default() -> Self {
        Self {
            size_mib: 256,
            block_size: 4096,
            mkfs_args: Vec::new(),
            mount: MountOptions {
                read_only: false,
                fuse_opts: vec!["default_permissions".into(), "allow_other".into()],
            },
        }
    }
}

impl FsSpec {
    /// `size_mib`, 4 KiB blocks, read-write, no extra FUSE options (the workload tests).
    pub fn plain(size_mib: u64) -> Self {
        Self {
            size_mib,
            block_size: 4096,
            mkfs_args: Vec::new(),
            mount: MountOptions::default(),
        }
    }

    pub fn block_1k() -> Self {
        Self {
            block_size: 1024,
            ..Self::default()
        }
    }
}

pub struct TestFs<'t> {
    target: &'t dyn Target,
    spec: FsSpec,
    image: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    mount: Option<Box<dyn Mounted>>,
    finished: bool,
    /// What `finish` expects to find in the image.
    pub expected: Expected,
    /// Declared last: removed after the mount is gone.
    dir: tempfile::TempDir,
}

impl<'t> TestFs<'t> {
    /// mkfs a new image and mount it.
    pub fn new(target: &'t dyn Target, spec: FsSpec) -> Result<Self> {
        let mut fs = Self::unmounted(target, spec)?;
        fs.mount()?;
        Ok(fs)
    }

    /// mkfs a new image, not mounted yet.
    pub fn unmounted(target: &'t dyn Target, spec: FsSpec) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("e2e-")
            .tempdir()
            .context("create temp dir")?;
        // Other users (the permission tests) must be able to reach the mountpoint.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        std::fs::File::create(&image)?.set_len(spec.size_mib << 20)?;
        mkfs_ext4(&image, spec.block_size, &spec.mkfs_args)?;
        let log = dir.path().join("server.log");
        Ok(Self {
            target,
            spec,
            image,
            mnt,
            log,
            mount: None,
            finished: false,
            expected: Expected::default(),
            dir,
        })
    }

    pub fn target(&self) -> &'t dyn Target {
        self.target
    }
    pub fn is_fuse(&self) -> bool {
        self.target.is_fuse()
    }
    pub fn mnt(&self) -> &Path {
        &self.mnt
    }
    pub fn image(&self) -> &Path {
        &self.image
    }
    pub fn spec(&self) -> &FsSpec {
        &self.spec
    }
    /// A path inside the mounted filesystem.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel.trim_start_matches('/'))
    }
    /// Where the server writes its log (nothing is written there for the kernel target).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// The tail of the server's log (empty for the kernel target).
    pub fn server_log(&self) -> String {
        read_log(&self.log)
    }
    /// A scratch directory outside the mount (for sockets' peers, fixtures, ...).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Unmount, check with e2fsck, mount again with the same options: every cache is gone,
    /// so what the test reads next comes from the image.
    pub fn remount(&mut self) -> Result<()> {
        let ro = self.spec.mount.read_only;
        self.remount_with(ro)
    }

    pub fn remount_with(&mut self, read_only: bool) -> Result<()> {
        self.unmount_and_check()?;
        self.spec.mount.read_only = read_only;
        self.mount()
    }

    /// The end of a test: unmount, `e2fsck -fn` clean, ext4-view finds what was recorded.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.unmount_and_check()?;
        verify_image(&self.image, &self.expected)
            .with_context(|| format!("{}: independent check of the image", self.target.name()))
    }

    /// Mounts the image with the spec's options (after `unmounted` or `unmount`).
    pub fn mount(&mut self) -> Result<()> {
        let m = self
            .target
            .mount(&self.image, &self.mnt, &self.spec.mount, &self.log)?;
        self.mount = Some(m);
        Ok(())
    }

    /// Unmounts, if mounted, so the test can touch the image behind the filesystem's back.
    pub fn unmount(&mut self) -> Result<()> {
        if let Some(m) = self.mount.take() {
            m.unmount()
                .with_context(|| format!("{}: unmount", self.target.name()))?;
        }
        Ok(())
    }

    fn unmount_and_check(&mut self) -> Result<()> {
        self.unmount()?;
        e2fsck_clean(&self.image).with_context(|| format!("{}: after unmount", self.target.name()))
    }
}

impl Drop for TestFs<'_> {
    fn drop(&mut self) {
        // Last-resort cleanup (the mount's own Drop unmounts lazily and kills the server).
        let was_mounted = self.mount.take().is_some();
        if was_mounted && !self.finished && !std::thread::panicking() {
            // Either the test failed with an error (reported by `run`) or it forgot finish().
            eprintln!(
                "{}: TestFs dropped without finish(): the image was not checked",
                self.target.name()
            );
            if self.target.is_fuse() {
                eprintln!("{}", self.server_log());
            }
        }
    }
}
