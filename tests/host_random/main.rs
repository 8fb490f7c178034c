//! Seeded random operations against an in-memory model (`model.rs`), on both targets.
//! Every operation's outcome (data or errno) is compared with the model at once; every
//! REMOUNT_EVERY operations the filesystem is remounted and checked file by file; at the end
//! it is unmounted, e2fsck'd and read back with ext4-view.
//!
//! Seeds: two fixed ones plus one from the clock (or IOMAPFS_RANDOM_SEED, to replay).
//! IOMAPFS_RANDOM_OPS sets the operations per seed (default 3,500: 10,500 per target).

use anyhow::{bail, ensure, Context, Result};
mod model;

use model::{Kind, Model, Res, XattrFlag};
use nix::fcntl::{FallocateFlags, OFlag, RenameFlags, AT_FDCWD};
use nix::sys::stat::Mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use test_support::sys::{
    aligned_copy, errno_of, fill_pattern, pread_vec, pwrite_all, AlignedBuf, Link, SetXattr,
};
use test_support::{FsSpec, Target, TestFs};

test_support::target_tests!(random_fixed_seed_1, random_fixed_seed_2, random_time_seed);

const FIXED_SEEDS: [u64; 2] = [0x1a9f_5eed_0000_0001, 0x1a9f_5eed_0000_0002];
const DEFAULT_OPS: usize = 3500;
const REMOUNT_EVERY: usize = 500;
/// Bounds that keep a run well under a minute and the 256 MiB filesystem from filling up:
/// at most MAX_FILES files of at most MAX_FILE bytes (allocations included).
const MAX_FILE: u64 = 8 << 20;
const MAX_FILES: usize = 20;
const MAX_DIRS: usize = 10;
const MAX_SYMLINKS: usize = 10;
const MAX_DEPTH: usize = 3;
const XATTR_NAMES: [&str; 4] = ["user.a", "user.b", "user.c", "user.long.attribute.name"];
const LOG_LEN: usize = 30;

fn random_fixed_seed_1(t: &dyn Target) -> Result<()> {
    run_seed(t, FIXED_SEEDS[0])
}

fn random_fixed_seed_2(t: &dyn Target) -> Result<()> {
    run_seed(t, FIXED_SEEDS[1])
}

/// A new seed each run (so CI keeps exploring), or IOMAPFS_RANDOM_SEED to replay one.
fn random_time_seed(t: &dyn Target) -> Result<()> {
    let seed = match std::env::var("IOMAPFS_RANDOM_SEED") {
        Ok(s) => parse_u64(&s).with_context(|| format!("IOMAPFS_RANDOM_SEED={s}"))?,
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    };
    run_seed(t, seed)
}

fn parse_u64(s: &str) -> Result<u64> {
    let s = s.trim().replace('_', "");
    Ok(match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16)?,
        None => s.parse()?,
    })
}

fn ops_per_seed() -> Result<usize> {
    match std::env::var("IOMAPFS_RANDOM_OPS") {
        Ok(s) => Ok(parse_u64(&s).with_context(|| format!("IOMAPFS_RANDOM_OPS={s}"))? as usize),
        Err(_) => Ok(DEFAULT_OPS),
    }
}

fn run_seed(t: &dyn Target, seed: u64) -> Result<()> {
    let ops = ops_per_seed()?;
    eprintln!("{}: seed={seed:#x} ops={ops}", t.name());
    let start = Instant::now();
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mut w = Workload {
        rng: ChaCha8Rng::seed_from_u64(seed),
        model: Model::new(),
        mnt: fs.mnt().to_path_buf(),
        log: VecDeque::new(),
        counts: BTreeMap::new(),
        expected_errors: 0,
    };
    let mut run = || -> Result<()> {
        for i in 0..ops {
            w.step(i)?;
            if (i + 1) % REMOUNT_EVERY == 0 {
                fs.remount()
                    .with_context(|| format!("remount after op {i}"))?;
                w.verify_all()
                    .with_context(|| format!("full check after remount at op {i}"))?;
            }
        }
        fs.remount()?;
        w.verify_all().context("final full check")?;
        fs.expected = w.model.expected();
        Ok(())
    };
    let result = run().and_then(|()| fs.finish());
    if let Err(e) = result {
        let module = if t.is_fuse() { "iomapfs" } else { "ext4" };
        let log: Vec<&str> = w.log.iter().map(String::as_str).collect();
        bail!(
            "{e:#}\nseed={seed:#x} ops={ops}. Replay with:\n  IOMAPFS_RANDOM_SEED={seed:#x} IOMAPFS_RANDOM_OPS={ops} \
             cargo test -p e2e --test host_random -- {module}::random_time_seed --exact\nlast operations:\n  {}",
            log.join("\n  ")
        );
    }
    eprintln!(
        "{}: seed={seed:#x} ops={ops} passed in {:.1?}; {} failed with the predicted errno; op mix {:?}",
        t.name(),
        start.elapsed(),
        w.expected_errors,
        w.counts
    );
    Ok(())
}

struct Workload {
    rng: ChaCha8Rng,
    model: Model,
    mnt: PathBuf,
    /// The last operations, for the failure report.
    log: VecDeque<String>,
    counts: BTreeMap<&'static str, usize>,
    /// Operations that failed with the errno the model predicted.
    expected_errors: usize,
}

/// open(2) with O_CLOEXEC: tests run in parallel threads, and a descriptor inherited by
/// another test's child (mount, e2fsck, the server) would keep this mount busy.
fn open(p: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    nix::fcntl::open(p, flags | OFlag::O_CLOEXEC, mode)
}

fn to_res<T>(r: nix::Result<T>) -> Res {
    r.map(drop)
}

fn io_res<T>(r: std::io::Result<T>) -> Res {
    r.map(drop).map_err(|e| errno_of(&e))
}

impl Workload {
    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn note(&mut self, i: usize, what: String) {
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(format!("#{i} {what}"));
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.random_range(0..items.len())].clone())
    }

    fn paths_where(&self, pred: impl Fn(&Kind) -> bool) -> Vec<String> {
        self.model
            .paths()
            .into_iter()
            .filter(|(_, id)| pred(&self.model.node(*id).kind))
            .map(|(p, _)| p)
            .collect()
    }

    fn files(&self) -> Vec<String> {
        self.paths_where(|k| matches!(k, Kind::File(_)))
    }

    /// Directories (the root is "") not deeper than `max_depth`.
    fn dirs(&self, max_depth: usize) -> Vec<String> {
        let mut d = vec![String::new()];
        d.extend(
            self.paths_where(|k| matches!(k, Kind::Dir(_)))
                .into_iter()
                .filter(|p| p.split('/').count() <= max_depth),
        );
        d
    }

    /// A name in an existing directory; it may exist already (the model knows the errno).
    fn new_path(&mut self, max_depth: usize) -> String {
        let dirs = self.dirs(max_depth);
        let dir = self.pick(&dirs).unwrap_or_default();
        let name = format!("n{}", self.rng.random_range(0..12));
        if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        }
    }

    fn any_path(&mut self) -> Option<String> {
        let all: Vec<String> = self.model.paths().into_iter().map(|(p, _)| p).collect();
        self.pick(&all)
    }

    fn size_of(&self, path: &str) -> u64 {
        match &self
            .model
            .node(self.model.lookup(path).expect("picked from the model"))
            .kind
        {
            Kind::File(d) => d.len(),
            _ => 0,
        }
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill_pattern(&mut v, self.rng.random());
        v
    }

    /// Mostly small I/O, sometimes large.
    fn io_len(&mut self, max: u64) -> u64 {
        let cap = match self.rng.random_range(0..100) {
            0..50 => 4096,
            50..85 => 65536,
            _ => 262_144,
        };
        self.rng.random_range(1..=cap.min(max).max(1))
    }

    /// Offsets near the current end of the file half the time, anywhere below MAX_FILE else.
    fn offset(&mut self, size: u64, len: u64) -> u64 {
        let limit = MAX_FILE - len;
        if self.rng.random_bool(0.5) {
            self.rng.random_range(0..=(size + 65536).min(limit))
        } else {
            self.rng.random_range(0..=limit)
        }
    }

    fn expect(&mut self, what: &str, want: Res, got: Res) -> Result<()> {
        ensure!(
            want == got,
            "{what}: the model says {want:?}, the filesystem says {got:?}"
        );
        if want.is_err() {
            self.expected_errors += 1;
        }
        Ok(())
    }

    fn step(&mut self, i: usize) -> Result<()> {
        let files = self.model.count(|n| matches!(n.kind, Kind::File(_)));
        let op = match self.rng.random_range(0..115) {
            _ if files == 0 => "create",
            0..8 => "create",
            8..28 => "write",
            28..34 => "write_direct",
            34..40 => "append",
            40..46 => "truncate",
            46..52 => "fallocate",
            52..66 => "read",
            66..72 => "rename",
            72..76 => "link",
            76..81 => "unlink",
            81..84 => "mkdir",
            84..87 => "rmdir",
            87..90 => "symlink",
            90..95 => "setxattr",
            95..97 => "removexattr",
            97..100 => "chmod",
            _ => "stat",
        };
        *self.counts.entry(op).or_default() += 1;
        let r = match op {
            "create" if files < MAX_FILES => self.create(i),
            "create" | "stat" => self.stat(i),
            "write" | "write_direct" | "append" | "truncate" | "fallocate" | "read" => {
                self.data_op(i, op)
            }
            "rename" => self.rename(i),
            "link" => self.link(i),
            "unlink" => self.unlink(i),
            "mkdir" => self.mkdir(i),
            "rmdir" => self.rmdir(i),
            "symlink" => self.symlink(i),
            "setxattr" | "removexattr" => self.xattr(i, op),
            "chmod" => self.chmod(i),
            _ => unreachable!("every op is handled"),
        };
        r.with_context(|| {
            format!(
                "operation #{i}: {}",
                self.log.back().map(String::as_str).unwrap_or("")
            )
        })
    }

    fn create(&mut self, i: usize) -> Result<()> {
        let path = self.new_path(MAX_DEPTH);
        self.note(i, format!("create {path}"));
        let want = self.model.create(&path, 0o644);
        let got = to_res(open(
            &self.p(&path),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
            Mode::from_bits_retain(0o644),
        ));
        self.expect("create", want, got)
    }

    fn data_op(&mut self, i: usize, op: &str) -> Result<()> {
        let files = self.files();
        let path = self.pick(&files).expect("files exist");
        let size = self.size_of(&path);
        let full = self.p(&path);
        match op {
            "write" => {
                let len = self.io_len(MAX_FILE);
                let off = self.offset(size, len);
                self.note(i, format!("write {path} off={off} len={len}"));
                let data = self.data(len as usize);
                let fd = open(&full, OFlag::O_WRONLY, Mode::empty())?;
                pwrite_all(&fd, &data, off)?;
                self.model
                    .file_mut(&path)
                    .expect("a file")
                    .write(off, &data);
            }
            "write_direct" => {
                let blocks = self.rng.random_range(1..=16u64);
                let len = blocks * 4096;
                let off = self.offset(size, len) / 4096 * 4096;
                self.note(i, format!("write O_DIRECT {path} off={off} len={len}"));
                let data = self.data(len as usize);
                let buf = aligned_copy(&data);
                let fd = open(&full, OFlag::O_WRONLY | OFlag::O_DIRECT, Mode::empty())?;
                pwrite_all(&fd, &buf, off)?;
                self.model
                    .file_mut(&path)
                    .expect("a file")
                    .write(off, &data);
            }
            "append" => {
                let len = self.io_len(16384).min(MAX_FILE - size);
                self.note(i, format!("append {path} len={len} (size {size})"));
                if len == 0 {
                    return Ok(());
                }
                let data = self.data(len as usize);
                let fd = open(&full, OFlag::O_WRONLY | OFlag::O_APPEND, Mode::empty())?;
                let mut done = 0;
                while done < data.len() {
                    done += nix::unistd::write(&fd, &data[done..])?;
                }
                self.model
                    .file_mut(&path)
                    .expect("a file")
                    .write(size, &data);
            }
            "truncate" => {
                let new = if self.rng.random_bool(0.5) {
                    let delta = self.rng.random_range(0..65536u64);
                    if self.rng.random_bool(0.5) {
                        size.saturating_sub(delta)
                    } else {
                        (size + delta).min(MAX_FILE)
                    }
                } else {
                    self.rng.random_range(0..=MAX_FILE)
                };
                self.note(i, format!("truncate {path} {size} -> {new}"));
                let fd = open(&full, OFlag::O_WRONLY, Mode::empty())?;
                nix::unistd::ftruncate(&fd, i64::try_from(new)?)?;
                self.model.file_mut(&path).expect("a file").truncate(new);
            }
            "fallocate" => self.fallocate(i, &path, size)?,
            _ => self.read_check(i, &path, size)?,
        }
        Ok(())
    }

    fn fallocate(&mut self, i: usize, path: &str, size: u64) -> Result<()> {
        let modes = [
            ("default", FallocateFlags::empty()),
            ("KEEP_SIZE", FallocateFlags::FALLOC_FL_KEEP_SIZE),
            (
                "PUNCH_HOLE|KEEP_SIZE",
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            ),
            ("ZERO_RANGE", FallocateFlags::FALLOC_FL_ZERO_RANGE),
            (
                "ZERO_RANGE|KEEP_SIZE",
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            ),
        ];
        let (name, mode) = modes[self.rng.random_range(0..modes.len())];
        let len = self.io_len(MAX_FILE);
        let off = self.offset(size, len);
        self.note(
            i,
            format!("fallocate {name} {path} off={off} len={len} (size {size})"),
        );
        let fd = open(&self.p(path), OFlag::O_WRONLY, Mode::empty())?;
        nix::fcntl::fallocate(&fd, mode, i64::try_from(off)?, i64::try_from(len)?)?;
        let d = self.model.file_mut(path).expect("a file");
        if mode
            .intersects(FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_ZERO_RANGE)
        {
            d.zero_range(off, len);
        }
        if !mode.contains(FallocateFlags::FALLOC_FL_KEEP_SIZE) && off + len > d.len() {
            d.truncate(off + len);
        }
        Ok(())
    }

    fn read_check(&mut self, i: usize, path: &str, size: u64) -> Result<()> {
        let direct = self.rng.random_bool(0.25);
        let (off, len) = if direct {
            let blocks = self.rng.random_range(1..=16u64);
            (
                self.rng.random_range(0..=(size / 4096)) * 4096,
                blocks * 4096,
            )
        } else {
            let len = self.io_len(262_144);
            (self.rng.random_range(0..=size + 4096), len)
        };
        self.note(
            i,
            format!(
                "read{} {path} off={off} len={len} (size {size})",
                if direct { " O_DIRECT" } else { "" }
            ),
        );
        let want = self.model.file_mut(path).expect("a file").read(off, len);
        let got = if direct {
            let fd: OwnedFd = open(
                &self.p(path),
                OFlag::O_RDONLY | OFlag::O_DIRECT,
                Mode::empty(),
            )?;
            let mut buf = AlignedBuf::new(len as usize);
            let mut done = 0usize;
            while done < buf.len() {
                let n =
                    nix::sys::uio::pread(&fd, &mut buf[done..], i64::try_from(off + done as u64)?)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf[..done].to_vec()
        } else {
            let fd = open(&self.p(path), OFlag::O_RDONLY, Mode::empty())?;
            pread_vec(&fd, len as usize, off)?
        };
        compare_bytes(&got, &want, off)
    }

    fn rename(&mut self, i: usize) -> Result<()> {
        let Some(from) = self.any_path() else {
            return self.create(i);
        };
        let to = if self.rng.random_bool(0.7) {
            self.new_path(MAX_DEPTH)
        } else {
            self.any_path().expect("paths exist")
        };
        let noreplace = self.rng.random_bool(0.1);
        self.note(
            i,
            format!(
                "rename {from} -> {to}{}",
                if noreplace { " NOREPLACE" } else { "" }
            ),
        );
        // Keep the tree shallow: moving a directory deeper than MAX_DEPTH levels is skipped.
        let depth_after = to.split('/').count() + self.subtree_depth(&from);
        if depth_after > MAX_DEPTH + 1 {
            return Ok(());
        }
        let want = self.model.rename(&from, &to, noreplace);
        let flags = if noreplace {
            RenameFlags::RENAME_NOREPLACE
        } else {
            RenameFlags::empty()
        };
        let got = to_res(nix::fcntl::renameat2(
            AT_FDCWD,
            &self.p(&from),
            AT_FDCWD,
            &self.p(&to),
            flags,
        ));
        self.expect("rename", want, got)
    }

    fn subtree_depth(&self, path: &str) -> usize {
        self.model
            .paths()
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{path}/")))
            .map(|(p, _)| p[path.len()..].split('/').count() - 1)
            .max()
            .unwrap_or(0)
    }

    fn link(&mut self, i: usize) -> Result<()> {
        let non_dirs = self.paths_where(|k| !matches!(k, Kind::Dir(_)));
        let from = if self.rng.random_bool(0.1) {
            self.any_path()
        } else {
            self.pick(&non_dirs)
        };
        let Some(from) = from else {
            return self.create(i);
        };
        let to = if self.rng.random_bool(0.9) {
            self.new_path(MAX_DEPTH)
        } else {
            self.any_path().expect("paths exist")
        };
        self.note(i, format!("link {from} -> {to}"));
        let want = self.model.link(&from, &to);
        let got = to_res(nix::unistd::linkat(
            AT_FDCWD,
            &self.p(&from),
            AT_FDCWD,
            &self.p(&to),
            nix::fcntl::AtFlags::empty(),
        ));
        self.expect("link", want, got)
    }

    fn unlink(&mut self, i: usize) -> Result<()> {
        let non_dirs = self.paths_where(|k| !matches!(k, Kind::Dir(_)));
        let path = if self.rng.random_bool(0.1) {
            self.any_path()
        } else {
            self.pick(&non_dirs)
        };
        let Some(path) = path else {
            return self.create(i);
        };
        self.note(i, format!("unlink {path}"));
        let want = self.model.unlink(&path);
        let got = io_res(std::fs::remove_file(self.p(&path)));
        self.expect("unlink", want, got)
    }

    fn mkdir(&mut self, i: usize) -> Result<()> {
        if self.model.count(|n| n.is_dir()) > MAX_DIRS {
            return self.stat(i);
        }
        let path = self.new_path(MAX_DEPTH - 1);
        self.note(i, format!("mkdir {path}"));
        let want = self.model.mkdir(&path, 0o755);
        let got = to_res(nix::unistd::mkdir(
            &self.p(&path),
            Mode::from_bits_retain(0o755),
        ));
        self.expect("mkdir", want, got)
    }

    fn rmdir(&mut self, i: usize) -> Result<()> {
        let dirs = self.paths_where(|k| matches!(k, Kind::Dir(_)));
        let path = if self.rng.random_bool(0.1) {
            self.any_path()
        } else {
            self.pick(&dirs)
        };
        let Some(path) = path else {
            return self.mkdir(i);
        };
        self.note(i, format!("rmdir {path}"));
        let want = self.model.rmdir(&path);
        let got = io_res(std::fs::remove_dir(self.p(&path)));
        self.expect("rmdir", want, got)
    }

    fn symlink(&mut self, i: usize) -> Result<()> {
        if self.model.count(|n| matches!(n.kind, Kind::Symlink(_))) >= MAX_SYMLINKS {
            return self.stat(i);
        }
        let path = self.new_path(MAX_DEPTH);
        // Fast (< 60 bytes, in the inode) or slow (a block) symlinks.
        let len = if self.rng.random_bool(0.5) {
            self.rng.random_range(1..60)
        } else {
            self.rng.random_range(60..400)
        };
        let target: Vec<u8> = (0..len)
            .map(|_| b"abcdefghij./"[self.rng.random_range(0..12)])
            .collect();
        self.note(i, format!("symlink {path} ({len} bytes)"));
        let want = self.model.symlink(&target, &path);
        let got = to_res(nix::unistd::symlinkat(
            std::ffi::OsStr::from_bytes(&target),
            AT_FDCWD,
            &self.p(&path),
        ));
        self.expect("symlink", want, got)
    }

    fn xattr(&mut self, i: usize, op: &str) -> Result<()> {
        // user.* xattrs exist on regular files and directories only.
        let targets = self.paths_where(|k| !matches!(k, Kind::Symlink(_)));
        let Some(path) = self.pick(&targets) else {
            return self.create(i);
        };
        let name = XATTR_NAMES[self.rng.random_range(0..XATTR_NAMES.len())];
        if op == "removexattr" {
            self.note(i, format!("removexattr {path} {name}"));
            let want = self.model.removexattr(&path, name);
            let got = to_res(test_support::sys::removexattr(
                &self.p(&path),
                name,
                Link::Follow,
            ));
            return self.expect("removexattr", want, got);
        }
        // Four values of at most 700 bytes always fit one xattr block.
        let len = if self.rng.random_bool(0.1) {
            self.rng.random_range(300..=700)
        } else {
            self.rng.random_range(0..64)
        };
        let value = self.data(len);
        let (flag, flags) = match self.rng.random_range(0..3) {
            0 => (XattrFlag::Any, SetXattr::Either),
            1 => (XattrFlag::Create, SetXattr::Create),
            _ => (XattrFlag::Replace, SetXattr::Replace),
        };
        self.note(i, format!("setxattr {path} {name} len={len} {flag:?}"));
        let want = self.model.setxattr(&path, name, &value, flag);
        let got = to_res(test_support::sys::setxattr(
            &self.p(&path),
            name,
            &value,
            flags,
            Link::Follow,
        ));
        self.expect("setxattr", want, got)
    }

    fn chmod(&mut self, i: usize) -> Result<()> {
        let targets = self.paths_where(|k| !matches!(k, Kind::Symlink(_)));
        let Some(path) = self.pick(&targets) else {
            return self.create(i);
        };
        let is_dir = self
            .model
            .node(self.model.lookup(&path).expect("exists"))
            .is_dir();
        let mut mode = self.rng.random_range(0..=0o777u32);
        if is_dir {
            mode |= 0o700;
        }
        self.note(i, format!("chmod {path} {mode:o}"));
        let want = self.model.chmod(&path, mode);
        let got = to_res(nix::sys::stat::fchmodat(
            AT_FDCWD,
            &self.p(&path),
            Mode::from_bits_retain(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        ));
        self.expect("chmod", want, got)
    }

    fn stat(&mut self, i: usize) -> Result<()> {
        let Some(path) = self.any_path() else {
            return Ok(());
        };
        self.note(i, format!("stat {path}"));
        self.check_node(&path, self.model.lookup(&path).expect("exists"), false)
            .map(drop)
    }

    /// lstat (and readlink, contents and xattrs when `deep`) of one path against the model.
    fn check_node(&self, path: &str, id: usize, deep: bool) -> Result<std::fs::Metadata> {
        let full = self.p(path);
        let m = std::fs::symlink_metadata(&full).with_context(|| format!("lstat {path}"))?;
        let node = self.model.node(id);
        let ft = m.file_type();
        let nlink = self.model.nlink(id);
        ensure!(
            m.nlink() == u64::from(nlink),
            "{path}: nlink {} but the model says {nlink}",
            m.nlink()
        );
        match &node.kind {
            Kind::File(d) => {
                ensure!(ft.is_file(), "{path}: not a regular file ({ft:?})");
                ensure!(
                    m.len() == d.len(),
                    "{path}: size {} but the model says {}",
                    m.len(),
                    d.len()
                );
                if deep {
                    let got = std::fs::read(&full).with_context(|| format!("read {path}"))?;
                    compare_bytes(&got, &d.to_vec(), 0)
                        .with_context(|| format!("contents of {path}"))?;
                }
            }
            Kind::Dir(_) => ensure!(ft.is_dir(), "{path}: not a directory ({ft:?})"),
            Kind::Symlink(t) => {
                ensure!(ft.is_symlink(), "{path}: not a symlink ({ft:?})");
                let got = std::fs::read_link(&full)?;
                ensure!(
                    got.as_os_str().as_bytes() == t.as_slice(),
                    "{path}: symlink target {got:?}"
                );
            }
        }
        if !matches!(node.kind, Kind::Symlink(_)) {
            ensure!(
                m.mode() & 0o7777 == node.mode,
                "{path}: mode {:o} but the model says {:o}",
                m.mode() & 0o7777,
                node.mode
            );
            if deep {
                self.check_xattrs(path, &node.xattrs)?;
            }
        }
        Ok(m)
    }

    fn check_xattrs(&self, path: &str, want: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let full = self.p(path);
        let mut buf = vec![0u8; 65536];
        let n = test_support::sys::listxattr(&full, &mut buf[..], Link::Follow)
            .with_context(|| format!("listxattr {path}"))?;
        let names: BTreeSet<String> = buf[..n]
            .split(|b| *b == 0)
            .filter(|s| s.starts_with(b"user."))
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let want_names: BTreeSet<String> = want.keys().cloned().collect();
        ensure!(
            names == want_names,
            "{path}: xattrs {names:?} but the model says {want_names:?}"
        );
        for (name, value) in want {
            let n = test_support::sys::getxattr(&full, name, &mut buf[..], Link::Follow)
                .with_context(|| format!("getxattr {path} {name}"))?;
            ensure!(
                &buf[..n] == value.as_slice(),
                "{path}: xattr {name} differs ({n} bytes, model {})",
                value.len()
            );
        }
        Ok(())
    }

    /// Walks the real tree and checks every path, type, size, content, link count, mode,
    /// symlink target and xattr against the model, and that hard links share an inode.
    fn verify_all(&self) -> Result<()> {
        let mut real = BTreeSet::new();
        walk(&self.mnt, "", &mut real)?;
        real.remove("lost+found");
        let paths = self.model.paths();
        let model: BTreeSet<String> = paths.iter().map(|(p, _)| p.clone()).collect();
        ensure!(
            real == model,
            "tree differs: only on disk {:?}, only in the model {:?}",
            real.difference(&model).collect::<Vec<_>>(),
            model.difference(&real).collect::<Vec<_>>()
        );
        let mut inos: BTreeMap<usize, u64> = BTreeMap::new();
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        for (path, id) in &paths {
            let m = self.check_node(path, *id, true)?;
            let ino = *inos.entry(*id).or_insert(m.ino());
            ensure!(
                ino == m.ino(),
                "{path}: inode {} but its hard link has {ino}",
                m.ino()
            );
            let owner = *seen.entry(m.ino()).or_insert(*id);
            ensure!(
                owner == *id,
                "{path}: inode {} is shared with a different file",
                m.ino()
            );
        }
        Ok(())
    }
}

fn walk(root: &Path, rel: &str, out: &mut BTreeSet<String>) -> Result<()> {
    for e in std::fs::read_dir(root.join(rel)).with_context(|| format!("readdir /{rel}"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type()?.is_dir() && path != "lost+found" {
            walk(root, &path, out)?;
        }
        out.insert(path);
    }
    Ok(())
}

fn compare_bytes(got: &[u8], want: &[u8], base: u64) -> Result<()> {
    if got == want {
        return Ok(()); // memcmp; the byte search below is slow in debug builds
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        bail!(
            "byte {} is {:#04x}, the model says {:#04x}",
            base + i as u64,
            got[i],
            want[i]
        );
    }
    ensure!(
        got.len() == want.len(),
        "read {} bytes at {base}, the model says {}",
        got.len(),
        want.len()
    );
    Ok(())
}
