//! Seeded image-mutation fuzzing of iomapfs (issue 17, item 4).
//!
//! Small populated ext4 images are built once (mkfs, then files, directories, an indexed
//! directory, symlinks, xattrs and a fragmented file through debugfs); every image of a run
//! is one of them with a few bytes of its metadata blocks changed (superblock, group
//! descriptors, bitmaps, inode tables, directory, extent, xattr and symlink blocks), chosen
//! by a seed. Each is served by a fresh iomapfs, alternately in iomap and classic mode:
//! the model walks it, reads every file it finds, and changes some (writes, truncates,
//! creates, renames, unlinks), then unmounts.
//!
//! Findings: a panic (the server logs it), a crash (killed by a signal), a hang (no reply
//! within the deadline), a protocol violation the model catches, a file data write onto
//! metadata (iomap mode: every data write the model makes is checked against the system
//! zone), and any block of the image that changed although no bitmap marks it in use and
//! it is not metadata (compared before and after the session). Errors are expected.

mod layout;

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::structs::{GetxattrIn, ReadIn, SetattrIn};
use fuse_wire::Opcode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::Error;
use crate::image::{mkfs_with, tool};
use crate::kernel::{InitOffer, Kernel, NodeId};
use crate::session::ServerSpec;
use crate::wire::Request;
pub use layout::Geometry;

/// What to run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    /// The `iomapfs` binary.
    pub server: PathBuf,
    pub seed: u64,
    /// Images to try.
    pub count: u64,
    /// Images served at once.
    pub jobs: usize,
    /// A request with no reply within this long is a hang.
    pub reply_timeout: Duration,
    /// Where base images, work images and kept findings go.
    pub workdir: PathBuf,
}

/// Counts of what happened.
#[derive(Debug, Default, Clone)]
pub struct FuzzReport {
    pub images: u64,
    /// Refused at open (the server said why and exited).
    pub refused: u64,
    /// Served: walked, read and written.
    pub served: u64,
    /// Served images the server found corrupt (errored, changes refused).
    pub errored: u64,
    /// Requests answered.
    pub requests: u64,
    /// Each finding, with the seed of its image and where the image was kept.
    pub findings: Vec<String>,
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} images: {} refused at open, {} served ({} found corrupt while serving), {} requests; {} findings",
            self.images,
            self.refused,
            self.served,
            self.errored,
            self.requests,
            self.findings.len()
        )?;
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}

/// A base image and where its metadata lives.
struct Base {
    name: &'static str,
    bytes: Vec<u8>,
    geometry: Geometry,
    /// Metadata blocks to mutate, by kind: superblock, descriptors, the rest.
    superblock: u64,
    descriptors: Vec<u64>,
    other: Vec<u64>,
    /// Blocks a write may land on in the unmutated image.
    allowed: Vec<bool>,
    /// The system zone of the unmutated image.
    zone: Vec<(u64, u64)>,
}

/// The first bytes of every 1 KiB of file data, so metadata blocks can be told apart.
const DATA_MARK: &[u8; 4] = b"FZDT";

fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    for chunk in v.chunks_mut(1024) {
        let n = chunk.len().min(4);
        chunk[..n].copy_from_slice(&DATA_MARK[..n]);
    }
    v
}

fn debugfs_script(dir: &Path) -> std::io::Result<String> {
    let put = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes);
    put("small", data(700, 1))?;
    put("multi", data(40 << 10, 2))?;
    put("big", data(300 << 10, 3))?;
    put("block", data(4096, 4))?;
    put("value", vec![b'v'; 1800])?;
    let p = |name: &str| dir.join(name).display().to_string();
    let mut s = String::new();
    s += "mkdir d1\nmkdir d1/d2\nmkdir many\nmkdir frag\n";
    s += &format!("write {} small\n", p("small"));
    s += &format!("write {} d1/multi\n", p("multi"));
    s += &format!("write {} d1/d2/big\n", p("big"));
    s += "symlink fast /a/short/target\n";
    s += &format!("symlink d1/slow /{}\n", "long/".repeat(40));
    s += "ln small d1/hardlink\nsif small links_count 2\n";
    s += "ea_set small user.a hello\n";
    s += &format!("ea_set -f {} d1/multi user.big\n", p("value"));
    for i in 0..120 {
        s += &format!("write {} many/entry-{i:03}\n", p("small"));
    }
    // Holes for a fragmented file: every other one-block file goes.
    for i in 0..40 {
        s += &format!("write {} frag/b{i:02}\n", p("block"));
    }
    for i in (0..40).step_by(2) {
        s += &format!("rm frag/b{i:02}\n");
    }
    s += &format!("write {} frag/fragmented\n", p("multi"));
    Ok(s)
}

fn build_base(
    dir: &Path,
    name: &'static str,
    size: u64,
    bs: u32,
    features: &str,
) -> Result<Base, String> {
    let image = dir.join(format!("{name}.img"));
    mkfs_with(&image, size, bs, features).map_err(|e| e.to_string())?;
    let script = debugfs_script(dir).map_err(|e| e.to_string())?;
    let cmds = dir.join(format!("{name}.debugfs"));
    std::fs::write(&cmds, script).map_err(|e| e.to_string())?;
    let out = Command::new(tool("debugfs"))
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&image)
        .output()
        .map_err(|e| format!("debugfs: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "debugfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Index the big directory, fix the counts debugfs leaves.
    let out = Command::new(tool("e2fsck"))
        .arg("-fyD")
        .arg(&image)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.code().is_none_or(|c| c > 1) {
        return Err(format!(
            "e2fsck -fyD {name}: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let bytes = std::fs::read(&image).map_err(|e| e.to_string())?;
    let g = Geometry::read(&bytes).ok_or("the base image has no readable superblock")?;
    let used = g.in_use(&bytes);
    let zone = g.zone(&bytes);
    let bsz = g.block_size as usize;
    let superblock = 1024 / g.block_size;
    let desc_start = superblock + 1;
    let descriptors: Vec<u64> = (desc_start..desc_start + 1).collect();
    let other: Vec<u64> = (0..g.blocks)
        .filter(|&b| b != superblock && b != desc_start)
        .filter(|&b| used[b as usize] || zone.iter().any(|&(s, e)| s <= b && b < e))
        .filter(|&b| {
            let blk = &bytes[b as usize * bsz..(b as usize + 1) * bsz];
            !blk.starts_with(DATA_MARK) && blk.iter().any(|&x| x != 0)
        })
        .collect();
    let allowed = g.allowed(&bytes);
    Ok(Base {
        name,
        bytes,
        geometry: g,
        superblock,
        descriptors,
        other,
        allowed,
        zone,
    })
}

/// Builds the base images in `dir`.
fn bases(dir: &Path) -> Result<Vec<Base>, String> {
    Ok(vec![
        build_base(dir, "ext4-4k-nocsum", 8 << 20, 4096, "^inline_data,^metadata_csum")?,
        build_base(dir, "ext4-1k-csum", 16 << 20, 1024, "^inline_data")?,
        build_base(
            dir,
            "ext3-1k",
            8 << 20,
            1024,
            "^inline_data,^extent,^64bit,^flex_bg,^metadata_csum,^huge_file,^dir_nlink,^extra_isize",
        )?,
    ])
}

/// Changes a few bytes of a few metadata blocks.
fn mutate(base: &Base, rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let mut img = base.bytes.clone();
    let bs = base.geometry.block_size as usize;
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let block = match rng.random_range(0..10) {
            0..=2 => base.superblock,
            3 => base.descriptors[rng.random_range(0..base.descriptors.len())],
            _ if !base.other.is_empty() => base.other[rng.random_range(0..base.other.len())],
            _ => base.superblock,
        };
        // The superblock is 1 KiB at byte 1024, whatever the block size.
        let (start, len) = if block == base.superblock {
            (1024, 1024)
        } else {
            (block as usize * bs, bs)
        };
        for _ in 0..rng.random_range(1..=6) {
            let at = start + rng.random_range(0..len);
            let old = img[at];
            img[at] = match rng.random_range(0..6) {
                0 => rng.random(),
                1 => old ^ (1 << rng.random_range(0..8)),
                2 => 0,
                3 => 0xff,
                4 => old.wrapping_add(1),
                _ => old.wrapping_sub(1),
            };
            what.push(format!("{at:#x}:{old:02x}->{:02x}", img[at]));
        }
    }
    (img, what.join(" "))
}

/// How one image went.
enum Outcome {
    Refused,
    Served { errored: bool, requests: u64 },
}

/// A kmodel error that is a finding (not an errno the server may answer with).
fn finding(e: &Error) -> Option<String> {
    match e {
        Error::Errno { .. } | Error::Unsupported(_) => None,
        other => Some(other.to_string()),
    }
}

/// Walks the tree, reads what it finds, changes some of it.
fn exercise(k: &mut Kernel, rng: &mut ChaCha8Rng, classic: bool) -> Result<u64, String> {
    let mut requests = 0u64;
    let mut count = |r: Result<(), Error>| -> Result<(), String> {
        requests += 1;
        match r {
            Err(e) => finding(&e).map_or(Ok(()), Err),
            Ok(()) => Ok(()),
        }
    };
    let mut files: Vec<NodeId> = Vec::new();
    let mut dirs: Vec<NodeId> = vec![FUSE_ROOT_ID];
    let mut queue = VecDeque::from([FUSE_ROOT_ID]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        let names = match k.readdir(dir) {
            Ok(names) => names,
            Err(e) => {
                count(Err(e))?;
                continue;
            }
        };
        for name in names.into_iter().take(24) {
            seen += 1;
            if seen > 80 {
                break;
            }
            let node = match k.lookup(dir, &name) {
                Ok(n) => n,
                Err(e) => {
                    count(Err(e))?;
                    continue;
                }
            };
            let attr = match k.getattr(node) {
                Ok(a) => a,
                Err(e) => {
                    count(Err(e))?;
                    continue;
                }
            };
            let list = Request::new(Opcode::Listxattr, node).arg(&GetxattrIn {
                size: 4096,
                padding: 0,
            });
            count(k.call_raw(&list).map(drop))?;
            match attr.mode & 0o170000 {
                0o040000 => {
                    dirs.push(node);
                    queue.push_back(node);
                }
                0o100000 => {
                    files.push(node);
                    let len = attr.size.min(64 << 10);
                    if classic {
                        let fh = match k.ensure_open(node) {
                            Ok(fh) => fh,
                            Err(e) => {
                                count(Err(e))?;
                                continue;
                            }
                        };
                        let read = Request::new(Opcode::Read, node).arg(&ReadIn {
                            fh,
                            offset: 0,
                            size: len.min(32 << 10) as u32,
                            ..Default::default()
                        });
                        count(k.call_raw(&read).map(drop))?;
                    } else {
                        count(k.read(node, 0, len).map(drop))?;
                    }
                }
                0o120000 => count(k.call_raw(&Request::new(Opcode::Readlink, node)).map(drop))?,
                _ => {}
            }
        }
    }
    // Changes: first what frees blocks the image held, then what allocates new ones, so
    // that no block is both allocated and freed within the session (the write oracle
    // compares the image before and after, and could not tell that from a stray write).
    let bs = k.block_size();
    let pick = |rng: &mut ChaCha8Rng, v: &[NodeId]| v[rng.random_range(0..v.len())];
    let mut written: Vec<NodeId> = Vec::new();
    for _ in 0..rng.random_range(0..=2) {
        match rng.random_range(0..3) {
            0 if !files.is_empty() => {
                let f = pick(rng, &files);
                let fh = k.ensure_open(f).unwrap_or(0);
                let size = rng.random_range(0..200_000u64);
                let req = Request::new(Opcode::Setattr, f).arg(&SetattrIn {
                    valid: fuse_wire::consts::FATTR_SIZE | fuse_wire::consts::FATTR_FH,
                    fh,
                    size,
                    ..Default::default()
                });
                count(k.call_raw(&req).map(drop))?;
            }
            1 if dirs.len() > 1 => {
                let d = pick(rng, &dirs);
                if let Ok(names) = k.readdir(d) {
                    if let Some(n) = names.first() {
                        count(k.rename(d, n, FUSE_ROOT_ID, "renamed", 0))?;
                    }
                }
            }
            _ => {
                let d = pick(rng, &dirs);
                if let Ok(names) = k.readdir(d) {
                    if let Some(n) = names.last() {
                        count(k.unlink(d, n))?;
                    }
                }
            }
        }
    }
    for _ in 0..rng.random_range(1..=3) {
        if rng.random_range(0..3) < 2 && !files.is_empty() {
            let f = pick(rng, &files);
            if !k.inode(f).is_ok_and(|i| i.nlookup > 0) {
                continue;
            }
            let at = rng.random_range(0..64u64) * bs;
            let bytes = data((bs * rng.random_range(1..3)) as usize, 9);
            written.push(f);
            if classic {
                count(k.fuse_write(f, at, &bytes).map(drop))?;
            } else {
                count(k.write_direct(f, at, &bytes, 0).map(drop))?;
            }
        } else {
            let d = pick(rng, &dirs);
            let name = format!("new{}", rng.random_range(0..1000));
            match k.create(d, &name, 0o644) {
                Ok(f) if classic => count(k.fuse_write(f, 0, &data(3 * bs as usize, 5)).map(drop))?,
                Ok(f) => count(k.write_direct(f, 0, &data(3 * bs as usize, 5), 0).map(drop))?,
                Err(e) => count(Err(e))?,
            }
            count(k.mkdir(d, &format!("{name}.d"), 0o755).map(drop))?;
        }
    }
    let _ = written;
    count(k.syncfs())?;
    Ok(requests)
}

fn log_of(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".log") {
            text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    text
}

/// Changed blocks no view of the image allows a write to.
fn stray_writes(base: &Base, input: &[u8], output: &[u8]) -> Vec<u64> {
    let bs = base.geometry.block_size as usize;
    let after = Geometry::read(output).map(|g| g.allowed(output));
    let before = Geometry::read(input).map(|g| g.allowed(input));
    (0..base.geometry.blocks)
        .filter(|&b| {
            let r = b as usize * bs..(b as usize + 1) * bs;
            input.get(r.clone()) != output.get(r)
        })
        .filter(|&b| {
            let ok = |v: &Option<Vec<bool>>| {
                v.as_ref()
                    .and_then(|a| a.get(b as usize).copied())
                    .unwrap_or(false)
            };
            !(base.allowed[b as usize] || ok(&after) || ok(&before))
        })
        .collect()
}

/// Serves one mutated image; `Err` is a finding.
fn run_one(cfg: &FuzzConfig, base: &Base, seed: u64, dir: &Path) -> Result<Outcome, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (input, mutation) = mutate(base, &mut rng);
    let image = dir.join("image");
    std::fs::write(&image, &input).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("input"), &input).map_err(|e| e.to_string())?;
    let spec = ServerSpec {
        binary: cfg.server.clone(),
        image: image.clone(),
        options: vec![],
        workdir: dir.to_path_buf(),
        env: Vec::new(),
    };
    let classic = seed % 2 == 1;
    let offer = if classic {
        InitOffer::MAINLINE_7_3_URING
    } else {
        InitOffer::IOMAP
    };
    let context = |what: String| format!("{} image, seed {seed} ({mutation}): {what}", base.name);
    let start = Instant::now();
    let mounted = Kernel::mount_offering(&spec, cfg.reply_timeout, offer);
    let outcome = match mounted {
        Err(e) => {
            let text = e.to_string();
            if text.contains("signal") || text.contains("within the reply timeout") {
                return Err(context(format!("the server died or hung at mount: {text}")));
            }
            Outcome::Refused
        }
        Ok(mut k) => {
            let result = exercise(&mut k, &mut rng, classic);
            let writes = k.data_writes();
            let destroyed = k.destroy_despite_errors();
            let requests = result.map_err(context)?;
            if let Err(e) = destroyed {
                let text = e.to_string();
                if finding(&e).is_some() && !text.contains("exited with exit status") {
                    return Err(context(format!("unmount: {text}")));
                }
                if text.contains("signal") {
                    return Err(context(format!("the server crashed at unmount: {text}")));
                }
            }
            let mut zones = base.zone.clone();
            zones.extend(
                Geometry::read(&input)
                    .map(|g| g.zone(&input))
                    .unwrap_or_default(),
            );
            for (addr, len) in writes {
                let (first, end) = (
                    addr / base.geometry.block_size,
                    (addr + len).div_ceil(base.geometry.block_size),
                );
                if let Some(z) = zones.iter().find(|&&(s, e)| first < e && s < end) {
                    return Err(context(format!(
                        "a data write to blocks {first}..{end} lands on metadata {z:?}"
                    )));
                }
            }
            let log = log_of(dir);
            Outcome::Served {
                errored: log.contains("is errored"),
                requests,
            }
        }
    };
    let log = log_of(dir);
    if log.contains("panicked") {
        return Err(context(format!("the server panicked:\n{log}")));
    }
    if start.elapsed() > cfg.reply_timeout * 20 {
        return Err(context(format!("took {:?}", start.elapsed())));
    }
    let output = std::fs::read(&image).map_err(|e| e.to_string())?;
    let stray = stray_writes(base, &input, &output);
    if !stray.is_empty() {
        return Err(context(format!(
            "blocks changed that no bitmap marks in use and that are not metadata: {stray:?}"
        )));
    }
    Ok(outcome)
}

/// Runs `cfg.count` images; findings are collected (their images kept in the workdir).
pub fn fuzz(cfg: &FuzzConfig) -> Result<FuzzReport, String> {
    std::fs::create_dir_all(&cfg.workdir).map_err(|e| e.to_string())?;
    let bases = Arc::new(bases(&cfg.workdir)?);
    let next = Arc::new(AtomicU64::new(0));
    let report = Arc::new(Mutex::new(FuzzReport::default()));
    std::thread::scope(|scope| {
        for job in 0..cfg.jobs.max(1) {
            let (bases, next, report) = (bases.clone(), next.clone(), report.clone());
            scope.spawn(move || {
                let dir = cfg.workdir.join(format!("job{job}"));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cfg.count {
                        return;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    if std::fs::create_dir_all(&dir).is_err() {
                        return;
                    }
                    let seed = cfg.seed.wrapping_add(i);
                    let base = &bases[(seed % bases.len() as u64) as usize];
                    let outcome = run_one(cfg, base, seed, &dir);
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    r.images += 1;
                    match outcome {
                        Ok(Outcome::Refused) => r.refused += 1,
                        Ok(Outcome::Served { errored, requests }) => {
                            r.served += 1;
                            r.errored += u64::from(errored);
                            r.requests += requests;
                        }
                        Err(f) => {
                            let kept = cfg.workdir.join(format!("finding-{seed}.img"));
                            let _ = std::fs::copy(dir.join("input"), &kept);
                            r.findings
                                .push(format!("{f} [input kept as {}]", kept.display()));
                        }
                    }
                }
            });
        }
    });
    let report = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(report)
}
