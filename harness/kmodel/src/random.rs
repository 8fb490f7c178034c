//! Seeded random operation sequences (fsx-style) across several files, each step checked
//! against the oracle, with remounts (full verification, e2fsck, ext4-view) every few
//! hundred operations and at the end. [`concurrent`] runs several of them at once, one per
//! kernel thread, on one connection.

pub mod concurrent;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::image;
use crate::iomap::*;
use crate::kernel::{Kernel, NodeId};
use crate::oracle::{mismatch, SparseFile};
use crate::session::ServerSpec;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Random operations (remounts and periodic full checks come on top).
    pub ops: u64,
    /// `mkfs.ext4 -b`.
    pub block_size: u32,
    pub image_size: u64,
    /// The `iomapfs` binary.
    pub server: PathBuf,
    /// `-o` words for the server (e.g. a fault switch).
    pub server_options: Vec<String>,
    /// Remount (with full verification) after this many operations.
    pub remount_every: u64,
    /// Read back every file after this many operations.
    pub verify_every: u64,
    /// Files never grow past this offset.
    pub max_file_size: u64,
    /// At most this many files at once.
    pub max_files: usize,
    /// Run e2fsck at every remount, not only at the end.
    pub fsck_on_remount: bool,
    pub reply_timeout: Duration,
    /// Where the image, socket and logs go; a temporary directory when `None` (kept on
    /// failure).
    pub workdir: Option<PathBuf>,
    /// Print each operation.
    pub verbose: bool,
    /// Debug aid: after every operation, SYNCFS and `e2fsck -fn` the live image, to find
    /// the first request that corrupts metadata.
    pub fsck_each_op: bool,
}

/// The block size a seed runs with unless told otherwise: every third seed uses 1 KiB
/// blocks (sub-page blocks), the others 4 KiB. Replays get the same block size.
pub fn block_size_for(seed: u64) -> u32 {
    if seed.is_multiple_of(3) {
        1024
    } else {
        4096
    }
}

impl RunConfig {
    pub fn new(server: PathBuf, seed: u64, ops: u64) -> RunConfig {
        RunConfig {
            seed,
            ops,
            block_size: block_size_for(seed),
            image_size: 256 << 20,
            server,
            server_options: Vec::new(),
            remount_every: 400,
            verify_every: 100,
            max_file_size: 6 << 20,
            max_files: 8,
            fsck_on_remount: true,
            reply_timeout: Duration::from_secs(60),
            workdir: None,
            verbose: false,
            fsck_each_op: false,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub seed: u64,
    pub ops: u64,
    pub block_size: u32,
    pub remounts: u64,
    pub elapsed: Duration,
    pub op_counts: BTreeMap<&'static str, u64>,
    pub requests: BTreeMap<String, u64>,
    /// Notifications the server sent, by code.
    pub notifications: BTreeMap<i32, u64>,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} (block size {}): {} ops, {} remounts, {:.1?}",
            self.seed, self.block_size, self.ops, self.remounts, self.elapsed
        )?;
        let ops: Vec<String> = self
            .op_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  ops: {}", ops.join(", "))?;
        let reqs: Vec<String> = self
            .requests
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  requests: {}", reqs.join(", "))?;
        let notes: Vec<String> = self
            .notifications
            .iter()
            .map(|(k, v)| format!("code {k}: {v}"))
            .collect();
        write!(
            f,
            "  notifications: {}",
            if notes.is_empty() {
                "none".to_string()
            } else {
                notes.join(", ")
            }
        )
    }
}

/// A failed run: where, what, and how to replay it.
#[derive(Debug)]
pub struct RunFailure {
    pub seed: u64,
    /// Operations the run was asked for.
    pub ops: u64,
    /// Index of the failing operation (or `ops` for the final checks).
    pub step: u64,
    pub op: String,
    pub error: Error,
    /// The operations before it, oldest first.
    pub recent: Vec<String>,
    /// The kept work directory (image, server logs).
    pub workdir: Option<PathBuf>,
    /// Kernel threads of a concurrent run (`None`: the sequential run).
    pub threads: Option<usize>,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kmodel seed {} failed at step {} ({}):\n{}",
            self.seed, self.step, self.op, self.error
        )?;
        writeln!(f, "recent operations:")?;
        for op in &self.recent {
            writeln!(f, "  {op}")?;
        }
        if let Some(dir) = &self.workdir {
            writeln!(f, "work directory kept: {}", dir.display())?;
        }
        match self.threads {
            Some(n) => write!(
                f,
                "replay: kmodel --threads {n} --seed {} --ops {} (each thread's operations \
                 repeat; their interleaving differs from run to run)",
                self.seed, self.ops
            ),
            None => write!(
                f,
                "replay: KMODEL_SEED={} KMODEL_OPS={} cargo test -p kmodel --test random -- --nocapture \
                 (or: kmodel --seed {} --ops {})",
                self.seed, self.ops, self.seed, self.ops
            ),
        }
    }
}

impl std::error::Error for RunFailure {}

/// One file of the run: what it must contain and the kernel's node for it (if looked up).
struct FileState {
    oracle: SparseFile,
    node: Option<NodeId>,
}

/// The random operations.
#[derive(Debug, Clone)]
enum Op {
    Create {
        path: String,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
    },
    Write {
        path: String,
        pos: u64,
        len: u64,
    },
    DirectWrite {
        path: String,
        pos: u64,
        len: u64,
    },
    Append {
        path: String,
        len: u64,
    },
    DirectAppend {
        path: String,
        len: u64,
    },
    MmapWrite {
        path: String,
        pos: u64,
        len: u64,
    },
    Read {
        path: String,
        pos: u64,
        len: u64,
    },
    DirectRead {
        path: String,
        pos: u64,
        len: u64,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Fallocate {
        path: String,
        mode: u32,
        offset: u64,
        len: u64,
    },
    Fiemap {
        path: String,
        sync: bool,
    },
    Seek {
        path: String,
        pos: u64,
    },
    Writeback {
        path: String,
    },
    Fsync {
        path: String,
    },
    Syncfs,
    FreezeThaw,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Unlink { .. } => "unlink",
            Op::Mkdir { .. } => "mkdir",
            Op::Write { .. } => "write",
            Op::DirectWrite { .. } => "direct-write",
            Op::Append { .. } => "append",
            Op::DirectAppend { .. } => "direct-append",
            Op::MmapWrite { .. } => "mmap-write",
            Op::Read { .. } => "read",
            Op::DirectRead { .. } => "direct-read",
            Op::Truncate { .. } => "truncate",
            Op::Fallocate { .. } => "fallocate",
            Op::Fiemap { .. } => "fiemap",
            Op::Seek { .. } => "seek",
            Op::Writeback { .. } => "writeback",
            Op::Fsync { .. } => "fsync",
            Op::Syncfs => "syncfs",
            Op::FreezeThaw => "freeze",
        }
    }
}

/// Runs one seeded sequence. The seed is printed first so any run can be replayed.
pub fn run(cfg: &RunConfig) -> std::result::Result<RunReport, Box<RunFailure>> {
    println!(
        "kmodel: seed {} ({} ops, block size {})",
        cfg.seed, cfg.ops, cfg.block_size
    );
    let started = Instant::now();
    let temp = match &cfg.workdir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("kmodel-")
                .tempdir()
                .map_err(|e| {
                    Box::new(RunFailure {
                        seed: cfg.seed,
                        ops: cfg.ops,
                        step: 0,
                        op: "setup".into(),
                        error: Error::io("create a work directory", e),
                        recent: Vec::new(),
                        workdir: None,
                        threads: None,
                    })
                })?,
        ),
    };
    let workdir = cfg
        .workdir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("made above").path().to_path_buf());
    let mut runner = Runner::new(cfg, workdir.clone());
    let result = runner.run_all();
    let mut report = runner.report;
    report.elapsed = started.elapsed();
    match result {
        Ok(()) => Ok(report),
        Err(error) => {
            // Keep the evidence.
            let kept = match temp {
                Some(t) => t.keep(),
                None => workdir,
            };
            Err(Box::new(RunFailure {
                seed: cfg.seed,
                ops: cfg.ops,
                step: runner.step,
                op: runner.current.clone(),
                error,
                recent: runner.recent.into_iter().collect(),
                workdir: Some(kept),
                threads: None,
            }))
        }
    }
}

struct Runner<'a> {
    cfg: &'a RunConfig,
    /// Prefix of every name this runner creates (one per thread of a concurrent run).
    prefix: String,
    /// Set by another thread of a concurrent run that failed: stop early.
    stop: Option<&'a AtomicBool>,
    rng: ChaCha8Rng,
    spec: ServerSpec,
    kernel: Option<Kernel>,
    files: BTreeMap<String, FileState>,
    dirs: BTreeSet<String>,
    next_name: u64,
    step: u64,
    current: String,
    recent: VecDeque<String>,
    report: RunReport,
}

impl<'a> Runner<'a> {
    fn new(cfg: &'a RunConfig, workdir: PathBuf) -> Runner<'a> {
        let spec = ServerSpec {
            binary: cfg.server.clone(),
            image: workdir.join("image.ext4"),
            options: cfg.server_options.clone(),
            workdir,
            env: Vec::new(),
        };
        Runner {
            cfg,
            prefix: String::new(),
            stop: None,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            spec,
            kernel: None,
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            next_name: 0,
            step: 0,
            current: "setup".into(),
            recent: VecDeque::new(),
            report: RunReport {
                seed: cfg.seed,
                block_size: cfg.block_size,
                ..Default::default()
            },
        }
    }

    fn k(&mut self) -> &mut Kernel {
        self.kernel.as_mut().expect("mounted")
    }

    fn run_all(&mut self) -> Result<()> {
        image::mkfs(&self.spec.image, self.cfg.image_size, self.cfg.block_size)?;
        self.kernel = Some(Kernel::mount(&self.spec, self.cfg.reply_timeout)?);
        self.ops_loop()?;
        self.current = "final verification, unmount, e2fsck, ext4-view".into();
        self.verify_all(true)?;
        self.unmount(true)?;
        self.report.ops = self.step;
        Ok(())
    }

    /// Three files, then the random operations with periodic remounts and checks.
    fn ops_loop(&mut self) -> Result<()> {
        for _ in 0..3 {
            let path = self.new_path(false);
            self.apply(Op::Create { path })?;
        }
        while self.step < self.cfg.ops {
            if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                break;
            }
            if self.step > 0 && self.step.is_multiple_of(self.cfg.remount_every) {
                self.current = "remount".into();
                self.remount(self.cfg.fsck_on_remount)?;
            } else if self.step > 0 && self.step.is_multiple_of(self.cfg.verify_every) {
                self.current = "verify all files".into();
                self.verify_all(false)?;
            }
            let op = self.choose();
            self.current = format!("{op:?}");
            if self.cfg.verbose {
                println!("{:6} {op:?}", self.step);
            }
            *self.report.op_counts.entry(op.kind()).or_default() += 1;
            self.apply(op)?;
            if self.cfg.fsck_each_op {
                self.k().syncfs()?;
                image::fsck(&self.spec.image)?;
            }
            self.recent
                .push_back(format!("{:6} {}", self.step, self.current));
            if self.recent.len() > 25 {
                self.recent.pop_front();
            }
            self.step += 1;
        }
        Ok(())
    }

    // ---- choosing operations ---------------------------------------------------------------

    fn new_path(&mut self, allow_dir: bool) -> String {
        self.next_name += 1;
        let n = self.next_name;
        let dirs: Vec<&String> = self.dirs.iter().collect();
        if allow_dir && !dirs.is_empty() && self.rng.random_bool(0.5) {
            let d = dirs[self.rng.random_range(0..dirs.len())].clone();
            format!("{d}/{}f{n}", self.prefix)
        } else {
            format!("{}f{n}", self.prefix)
        }
    }

    fn pick_file(&mut self) -> String {
        let i = self.rng.random_range(0..self.files.len());
        self.files.keys().nth(i).expect("index in range").clone()
    }

    fn size_of(&self, path: &str) -> u64 {
        self.files[path].oracle.size()
    }

    /// A position: inside, around EOF, past EOF or anywhere, within max_file_size.
    fn gen_pos(&mut self, size: u64) -> u64 {
        let max = self.cfg.max_file_size;
        let bs = self.cfg.block_size as u64;
        let pos = match self.rng.random_range(0..100) {
            0..35 => self.rng.random_range(0..=size),
            35..55 => (size + self.rng.random_range(0..16384)).saturating_sub(8192),
            55..70 => size + self.rng.random_range(0..(256 << 10)),
            70..80 => self.rng.random_range(0..max) / bs * bs,
            _ => self.rng.random_range(0..max),
        };
        pos.min(max - 1)
    }

    fn gen_len(&mut self, pos: u64) -> u64 {
        let len = match self.rng.random_range(0..100) {
            0..50 => self.rng.random_range(1..=4096),
            50..80 => self.rng.random_range(1..=32 << 10),
            80..95 => self.rng.random_range(1..=256 << 10),
            _ => self.rng.random_range(1..=1 << 20),
        };
        len.min(self.cfg.max_file_size - pos).max(1)
    }

    fn aligned(&self, pos: u64, len: u64) -> (u64, u64) {
        let bs = self.cfg.block_size as u64;
        let p = pos / bs * bs;
        let l = len.div_ceil(bs).max(1) * bs;
        (p, l.min((self.cfg.max_file_size - p) / bs * bs).max(bs))
    }

    fn choose(&mut self) -> Op {
        if self.files.is_empty() {
            return Op::Create {
                path: self.new_path(true),
            };
        }
        let path = self.pick_file();
        let size = self.size_of(&path);
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..200 => {
                let pos = self.gen_pos(size);
                let len = self.gen_len(pos);
                Op::Write { path, pos, len }
            }
            200..300 => {
                let pos = self.gen_pos(size);
                let len = self.gen_len(pos);
                let (pos, len) = self.aligned(pos, len);
                Op::DirectWrite { path, pos, len }
            }
            300..370 => {
                let len = self
                    .gen_len(size.min(self.cfg.max_file_size - 1))
                    .min(64 << 10);
                if size + len > self.cfg.max_file_size {
                    return Op::Truncate {
                        path,
                        size: size / 2,
                    };
                }
                Op::Append { path, len }
            }
            370..400 => {
                let len = self.gen_len(0).min(128 << 10);
                let len = self.aligned(0, len).1;
                if size + len > self.cfg.max_file_size {
                    return Op::Truncate {
                        path,
                        size: size / 3,
                    };
                }
                Op::DirectAppend { path, len }
            }
            400..440 if size > 0 => {
                let pos = self.rng.random_range(0..size);
                let len = self.rng.random_range(1..=(size - pos).min(20 << 10));
                Op::MmapWrite { path, pos, len }
            }
            440..540 => {
                let pos = self.gen_pos(size);
                let len = self.gen_len(pos);
                Op::Read { path, pos, len }
            }
            540..600 => {
                let pos = self.gen_pos(size);
                let len = self.gen_len(pos);
                let (pos, len) = self.aligned(pos, len);
                Op::DirectRead { path, pos, len }
            }
            600..660 => {
                let bs = self.cfg.block_size as u64;
                let new = match self.rng.random_range(0..10) {
                    0..4 => self.rng.random_range(0..=size),
                    4..8 => size + self.rng.random_range(0..(512 << 10)),
                    _ => self.rng.random_range(0..self.cfg.max_file_size) / bs * bs,
                };
                Op::Truncate {
                    path,
                    size: new.min(self.cfg.max_file_size),
                }
            }
            660..740 => {
                let modes = [
                    0,
                    FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    FALLOC_FL_ZERO_RANGE,
                    FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                ];
                let mode = modes[self.rng.random_range(0..modes.len())];
                let offset = self.gen_pos(size);
                let len = self.gen_len(offset);
                Op::Fallocate {
                    path,
                    mode,
                    offset,
                    len,
                }
            }
            740..770 => Op::Fiemap {
                sync: self.rng.random_bool(0.5),
                path,
            },
            770..810 => {
                let pos = if size == 0 {
                    0
                } else {
                    self.rng.random_range(0..size)
                };
                Op::Seek { path, pos }
            }
            810..860 => Op::Writeback { path },
            860..900 => Op::Fsync { path },
            900..910 => Op::Syncfs,
            910..918 => Op::FreezeThaw,
            918..960 if self.files.len() < self.cfg.max_files => Op::Create {
                path: self.new_path(true),
            },
            960..975 if self.files.len() > 2 => Op::Unlink { path },
            975..980 if self.dirs.len() < 3 => {
                self.next_name += 1;
                Op::Mkdir {
                    path: format!("{}d{}", self.prefix, self.next_name),
                }
            }
            _ => Op::Read {
                path,
                pos: 0,
                len: size.max(1),
            },
        }
    }

    // ---- applying and checking -------------------------------------------------------------

    /// Pseudo-random bytes, never zero (zero would be indistinguishable from a hole): a
    /// xorshift stream seeded from the run's generator, 8 bytes per step.
    fn data(&mut self, len: u64) -> Vec<u8> {
        let mut x = self.rng.next_u64() | 1;
        let mut buf = Vec::with_capacity(len as usize + 8);
        while buf.len() < len as usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&(x | 0x0101_0101_0101_0101).to_le_bytes());
        }
        buf.truncate(len as usize);
        buf
    }

    fn node(&mut self, path: &str) -> Result<NodeId> {
        if let Some(node) = self.files.get(path).and_then(|f| f.node) {
            return Ok(node);
        }
        let node = self.k().lookup_path(path)?;
        if let Some(f) = self.files.get_mut(path) {
            f.node = Some(node);
        }
        Ok(node)
    }

    fn parent_and_name(&mut self, path: &str) -> Result<(NodeId, String)> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (String::new(), path.to_string()),
        };
        let parent = self.k().lookup_path(&dir)?;
        Ok((parent, name))
    }

    /// The kernel's size must be the oracle's.
    fn check_size(&mut self, path: &str, what: &str) -> Result<()> {
        let node = self.node(path)?;
        let size = self.k().inode(node)?.i_size;
        self.files[path].oracle.check_size(path, what, size)
    }

    /// Reads `[pos, pos + len)` back through the page cache and compares it.
    fn check_range(&mut self, path: &str, what: &str, pos: u64, len: u64) -> Result<()> {
        let node = self.node(path)?;
        let got = self.k().read(node, pos, len)?;
        self.files[path].oracle.check(path, what, pos, &got)
    }

    /// Reads back a written range with some margin on each side.
    fn check_around(&mut self, path: &str, what: &str, pos: u64, len: u64) -> Result<()> {
        self.check_size(path, what)?;
        let from = pos.saturating_sub(100);
        self.check_range(path, what, from, len + (pos - from) + 100)
    }

    fn apply(&mut self, op: Op) -> Result<()> {
        let bs = self.cfg.block_size as u64;
        match op {
            Op::Create { path } => {
                let (parent, name) = self.parent_and_name(&path)?;
                let node = self.k().create(parent, &name, 0o644)?;
                self.files.insert(
                    path,
                    FileState {
                        oracle: SparseFile::new(),
                        node: Some(node),
                    },
                );
            }
            Op::Unlink { path } => {
                let (parent, name) = self.parent_and_name(&path)?;
                self.k().unlink(parent, &name)?;
                self.files.remove(&path);
            }
            Op::Mkdir { path } => {
                self.k()
                    .mkdir(fuse_wire::consts::FUSE_ROOT_ID, &path, 0o755)?;
                self.dirs.insert(path);
            }
            Op::Write { path, pos, len } => {
                let node = self.node(&path)?;
                let data = self.data(len);
                let n = self.k().write(node, pos, &data)?;
                if n != len {
                    return Err(mismatch(
                        &path,
                        "bytes written",
                        None,
                        len.to_string(),
                        n.to_string(),
                    ));
                }
                self.oracle(&path).write(pos, &data);
                self.check_around(&path, "read after buffered write", pos, len)?;
            }
            Op::DirectWrite { path, pos, len } => {
                let node = self.node(&path)?;
                let data = self.data(len);
                let n = self.k().write_direct(node, pos, &data, 0)?;
                if n != len {
                    return Err(mismatch(
                        &path,
                        "bytes written by a direct write",
                        None,
                        len.to_string(),
                        n.to_string(),
                    ));
                }
                self.oracle(&path).write(pos, &data);
                self.check_size(&path, "size after direct write")?;
                let got = self.k().read_direct(node, pos, len)?;
                self.files[&path].oracle.check(
                    &path,
                    "direct read after direct write",
                    pos,
                    &got,
                )?;
                self.check_around(&path, "read after direct write", pos, len)?;
            }
            Op::Append { path, len } => {
                let node = self.node(&path)?;
                let data = self.data(len);
                let at = self.k().append(node, &data)?;
                if self.k().inode(node)?.i_size != at + len {
                    return Err(mismatch(
                        &path,
                        "size after append",
                        None,
                        (at + len).to_string(),
                        "a short write".into(),
                    ));
                }
                let want = self.size_of(&path);
                if at != want {
                    return Err(mismatch(
                        &path,
                        "O_APPEND position",
                        None,
                        want.to_string(),
                        at.to_string(),
                    ));
                }
                self.oracle(&path).write(at, &data);
                self.check_around(&path, "read after append", at, len)?;
            }
            Op::DirectAppend { path, len } => {
                let size = self.size_of(&path);
                if !size.is_multiple_of(bs) {
                    // O_DIRECT needs an aligned EOF here; append through the page cache.
                    return self.apply(Op::Append { path, len });
                }
                let node = self.node(&path)?;
                let data = self.data(len);
                let n = self.k().write_direct(node, size, &data, 0)?;
                if n != len {
                    return Err(mismatch(
                        &path,
                        "bytes written by a direct append",
                        None,
                        len.to_string(),
                        n.to_string(),
                    ));
                }
                self.oracle(&path).write(size, &data);
                self.check_around(&path, "read after direct append", size, len)?;
            }
            Op::MmapWrite { path, pos, len } => {
                let node = self.node(&path)?;
                let data = self.data(len);
                self.k().mmap_write(node, pos, &data)?;
                self.oracle(&path).write(pos, &data);
                self.check_around(&path, "read after mmap store", pos, len)?;
            }
            Op::Read { path, pos, len } => {
                self.check_size(&path, "size before read")?;
                self.check_range(&path, "buffered read", pos, len)?;
            }
            Op::DirectRead { path, pos, len } => {
                let node = self.node(&path)?;
                let got = self.k().read_direct(node, pos, len)?;
                self.files[&path]
                    .oracle
                    .check(&path, "direct read", pos, &got)?;
            }
            Op::Truncate { path, size } => {
                let node = self.node(&path)?;
                self.k().truncate(node, size)?;
                self.oracle(&path).set_size(size);
                self.check_around(
                    &path,
                    "read around EOF after truncate",
                    size.saturating_sub(2 * bs),
                    4 * bs,
                )?;
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let node = self.node(&path)?;
                self.k().fallocate(node, mode, offset, len)?;
                let o = self.oracle(&path);
                if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
                    o.zero(offset, len);
                }
                if mode & FALLOC_FL_KEEP_SIZE == 0 && offset + len > o.size() {
                    o.set_size(offset + len);
                }
                self.check_around(&path, "read after fallocate", offset, len.min(1 << 20))?;
            }
            Op::Fiemap { path, sync } => self.check_fiemap(&path, sync)?,
            Op::Seek { path, pos } => self.check_seek(&path, pos)?,
            Op::Writeback { path } => {
                let node = self.node(&path)?;
                self.k().writeback(node)?;
            }
            Op::Fsync { path } => {
                let node = self.node(&path)?;
                self.k().fsync(node)?;
                // fsync promises the size is durable: the server must report it now.
                let attr = self.k().getattr(node)?;
                self.files[&path].oracle.check_size(
                    &path,
                    "size the server reports after fsync",
                    attr.size,
                )?;
            }
            Op::Syncfs => self.k().syncfs()?,
            Op::FreezeThaw => {
                self.k().freeze()?;
                self.k().unfreeze()?;
            }
        }
        Ok(())
    }

    fn oracle(&mut self, path: &str) -> &mut SparseFile {
        &mut self.files.get_mut(path).expect("file exists").oracle
    }

    /// FIEMAP must be sorted, aligned, non-overlapping and cover every non-zero block; after
    /// a sync, those blocks must be written (not unwritten) extents.
    fn check_fiemap(&mut self, path: &str, sync: bool) -> Result<()> {
        let bs = self.cfg.block_size as u64;
        let node = self.node(path)?;
        let size = self.size_of(path);
        let extents = self
            .k()
            .fiemap(node, 0, size.div_ceil(bs) * bs + 16 * bs, sync)?;
        let bad = |what: String| {
            mismatch(
                path,
                "FIEMAP",
                None,
                "a consistent extent list".into(),
                what,
            )
        };
        let mut prev_end = 0;
        for (i, e) in extents.iter().enumerate() {
            if e.logical % bs != 0 || e.length % bs != 0 || e.length == 0 || e.logical < prev_end {
                return Err(bad(format!(
                    "extent {i} {e:?} unaligned, empty or overlapping (previous end {prev_end})"
                )));
            }
            if (e.flags & FIEMAP_EXTENT_LAST != 0) != (i + 1 == extents.len()) {
                return Err(bad(format!(
                    "extent {i} {e:?}: FIEMAP_EXTENT_LAST on the wrong extent"
                )));
            }
            prev_end = e.logical + e.length;
        }
        for blk in self.files[path].oracle.nonzero_blocks(bs) {
            let ext = extents
                .iter()
                .find(|e| e.logical <= blk && blk < e.logical + e.length);
            match ext {
                None => {
                    return Err(bad(format!(
                        "block at {blk} holds data but no extent covers it"
                    )))
                }
                Some(e) if sync && e.flags & FIEMAP_EXTENT_UNWRITTEN != 0 => {
                    return Err(bad(format!(
                        "block at {blk} holds synced data but its extent {e:?} is still unwritten"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// SEEK_DATA never skips data, SEEK_HOLE only stops where the file reads as zeroes.
    fn check_seek(&mut self, path: &str, pos: u64) -> Result<()> {
        let bs = self.cfg.block_size as u64;
        let node = self.node(path)?;
        let size = self.size_of(path);
        let data = self.k().seek_data(node, pos)?;
        let hole = self.k().seek_hole(node, pos)?;
        let oracle = &self.files[path].oracle;
        if pos >= size {
            if data.is_some() || hole.is_some() {
                return Err(mismatch(
                    path,
                    "lseek at or past EOF",
                    Some(pos),
                    "ENXIO".into(),
                    format!("{data:?}/{hole:?}"),
                ));
            }
            return Ok(());
        }
        let data_end = data.unwrap_or(size);
        if data_end < pos || data_end > size || !oracle.is_zero(pos, data_end - pos) {
            return Err(mismatch(
                path,
                "SEEK_DATA skipped data (or left the file)",
                Some(pos),
                "the first non-zero byte at or after the result".into(),
                format!("{data:?}"),
            ));
        }
        match hole {
            Some(h) if h >= pos && h <= size => {
                let block_end = ((h / bs) + 1) * bs;
                if h < size && !oracle.is_zero(h, block_end.min(size) - h) {
                    return Err(mismatch(
                        path,
                        "SEEK_HOLE stopped in data",
                        Some(h),
                        "zeroes from the hole on".into(),
                        "data".into(),
                    ));
                }
            }
            other => {
                return Err(mismatch(
                    path,
                    "SEEK_HOLE",
                    Some(pos),
                    format!("a hole in [{pos}, {size}]"),
                    format!("{other:?}"),
                ))
            }
        }
        Ok(())
    }

    /// Every file: size and all bytes; `direct` alternates files between direct and
    /// buffered reads.
    fn verify_all(&mut self, direct: bool) -> Result<()> {
        let bs = self.cfg.block_size as u64;
        let paths: Vec<String> = self.files.keys().cloned().collect();
        for (i, path) in paths.iter().enumerate() {
            self.check_size(path, "size")?;
            let size = self.size_of(path);
            if direct && i % 2 == 0 {
                let node = self.node(path)?;
                let got = self
                    .k()
                    .read_direct(node, 0, size.div_ceil(bs).max(1) * bs)?;
                self.files[path]
                    .oracle
                    .check(path, "full direct read", 0, &got)?;
            } else {
                self.check_range(path, "full read", 0, size.max(1))?;
            }
        }
        Ok(())
    }

    /// DESTROY, e2fsck and ext4-view against the oracle.
    fn unmount(&mut self, fsck: bool) -> Result<()> {
        let kernel = self.kernel.take().expect("mounted");
        for (op, n) in kernel.request_counts() {
            *self.report.requests.entry(op.clone()).or_default() += n;
        }
        for (code, n) in kernel.notification_counts() {
            *self.report.notifications.entry(code).or_default() += n;
        }
        kernel.destroy()?;
        if fsck {
            image::fsck(&self.spec.image)?;
        }
        let files: BTreeMap<String, SparseFile> = self
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.oracle.clone()))
            .collect();
        image::independent_check(&self.spec.image, &files, &self.dirs)
    }

    /// Unmount, check the image, mount a fresh server, and verify every file.
    fn remount(&mut self, fsck: bool) -> Result<()> {
        self.unmount(fsck)?;
        self.kernel = Some(Kernel::mount(&self.spec, self.cfg.reply_timeout)?);
        self.report.remounts += 1;
        for f in self.files.values_mut() {
            f.node = None;
        }
        let paths: Vec<String> = self.files.keys().cloned().collect();
        for path in &paths {
            let node = self.node(path)?;
            let size = self.k().inode(node)?.i_size;
            self.files[path]
                .oracle
                .check_size(path, "size after remount", size)?;
        }
        self.verify_all(true)
    }
}
