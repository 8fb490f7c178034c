//! The independent check at the end of every test: after unmount, the pure-Rust `ext4-view`
//! reader walks the image (no kernel, no libext2fs) and every file the test recorded must be
//! there with the recorded contents, size, symlink target and mode.

use crate::sparse::SparseData;
use anyhow::{anyhow, bail, ensure, Context, Result};
use ext4_view::{Ext4, FileType};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    File(SparseData),
    Symlink(Vec<u8>),
    Dir,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
    /// The path must not exist.
    Absent,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub what: Expect,
    /// Permission bits (`& 0o7777`), checked when recorded.
    pub mode: Option<u32>,
}

/// What a test expects to find in the image, by path relative to the filesystem root.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    entries: BTreeMap<String, Entry>,
    /// When set, the image may hold nothing besides the recorded paths (and lost+found).
    pub exact: bool,
}

impl Expected {
    pub fn set(&mut self, path: &str, what: Expect) {
        let path = path.trim_matches('/').to_string();
        let mode = self.entries.get(&path).and_then(|e| e.mode);
        self.entries.insert(path, Entry { what, mode });
    }
    pub fn file(&mut self, path: &str, data: impl Into<SparseData>) {
        self.set(path, Expect::File(data.into()));
    }
    pub fn symlink(&mut self, path: &str, target: &[u8]) {
        self.set(path, Expect::Symlink(target.to_vec()));
    }
    pub fn dir(&mut self, path: &str) {
        self.set(path, Expect::Dir);
    }
    pub fn absent(&mut self, path: &str) {
        self.set(path, Expect::Absent);
    }
    pub fn mode(&mut self, path: &str, mode: u32) {
        if let Some(e) = self.entries.get_mut(path.trim_matches('/')) {
            e.mode = Some(mode & 0o7777);
        }
    }
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_matches('/'))
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

struct Found {
    kind: FileType,
    mode: u32,
    len: u64,
}

/// Walks the image with ext4-view and compares it with `expected`. Every regular file is
/// read through, recorded or not, so unreadable extents show up too.
pub fn verify_image(image: &Path, expected: &Expected) -> Result<()> {
    let fs = Ext4::load_from_path(image)
        .map_err(|e| anyhow!("ext4-view cannot load {}: {e}", image.display()))?;
    let mut found = BTreeMap::new();
    walk(&fs, "", &mut found)?;

    for (path, entry) in &expected.entries {
        let got = found.get(path);
        let ctx = || format!("ext4-view check of /{path}");
        match (&entry.what, got) {
            (Expect::Absent, None) => continue,
            (Expect::Absent, Some(f)) => bail!("/{path} should not exist but is a {:?}", f.kind),
            (_, None) => bail!(
                "/{path} is missing from the image (expected {:?})",
                kind_of(&entry.what)
            ),
            (what, Some(f)) => {
                ensure!(
                    Some(f.kind) == kind_of(what),
                    "/{path} is a {:?}, expected {:?}",
                    f.kind,
                    kind_of(what)
                );
                if let Some(mode) = entry.mode {
                    ensure!(
                        f.mode == mode,
                        "/{path} has mode {:o}, expected {mode:o}",
                        f.mode
                    );
                }
                match what {
                    Expect::File(data) => {
                        if let Err(e) = compare_file(&fs, path, f.len, data) {
                            // ext4-view 1.0 ignores the unwritten flag of extents (it takes
                            // the flagged length as a block count and reads stale blocks),
                            // so for such files debugfs (libext2fs) reads the data instead.
                            if !has_unwritten_extents(image, path)? {
                                return Err(e).with_context(ctx);
                            }
                            compare_with_debugfs(image, path, data).with_context(|| {
                                format!("/{path} has unwritten extents, which ext4-view cannot read ({e:#}); debugfs")
                            })?;
                        }
                    }
                    Expect::Symlink(target) => {
                        let got = fs
                            .read_link(format!("/{path}").as_str())
                            .map_err(|e| anyhow!("{e}"))
                            .with_context(ctx)?;
                        let got: std::path::PathBuf = got.into();
                        ensure!(
                            got.as_os_str().as_encoded_bytes() == target.as_slice(),
                            "/{path} points to {got:?}, expected {:?}",
                            String::from_utf8_lossy(target)
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    for (path, f) in &found {
        if expected.entries.contains_key(path) {
            continue;
        }
        ensure!(
            !expected.exact || path == "lost+found",
            "unexpected /{path} ({:?}) in the image",
            f.kind
        );
        // Empty files need no read (and a path lookup per file is slow in huge
        // directories without an htree index).
        if f.kind == FileType::Regular && f.len > 0 {
            read_through(&fs, path, f.len)
                .with_context(|| format!("reading /{path} with ext4-view"))?;
        }
    }
    Ok(())
}

fn kind_of(e: &Expect) -> Option<FileType> {
    Some(match e {
        Expect::File(_) => FileType::Regular,
        Expect::Symlink(_) => FileType::Symlink,
        Expect::Dir => FileType::Directory,
        Expect::Fifo => FileType::Fifo,
        Expect::Socket => FileType::Socket,
        Expect::CharDev => FileType::CharacterDevice,
        Expect::BlockDev => FileType::BlockDevice,
        Expect::Absent => return None,
    })
}

fn walk(fs: &Ext4, dir: &str, found: &mut BTreeMap<String, Found>) -> Result<()> {
    let entries = fs
        .read_dir(format!("/{dir}").as_str())
        .map_err(|e| anyhow!("read_dir /{dir}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("read_dir /{dir}: {e}"))?;
        let name = entry.file_name();
        let name = name
            .as_str()
            .map_err(|e| anyhow!("non-UTF-8 name in /{dir}: {e}"))?;
        if name == "." || name == ".." {
            continue;
        }
        let path = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        let md = entry
            .metadata()
            .map_err(|e| anyhow!("metadata of /{path}: {e}"))?;
        let kind = md.file_type();
        found.insert(
            path.clone(),
            Found {
                kind,
                mode: u32::from(md.mode()),
                len: md.len(),
            },
        );
        if kind == FileType::Directory {
            walk(fs, &path, found)?;
        }
    }
    Ok(())
}

const WINDOW: u64 = 1 << 20;
/// Up to this size every byte is compared; past it, holes are sampled at their edges only
/// (a 5 GiB sparse file would otherwise take seconds of zero-comparison in a debug build).
const FULL_COMPARE_LIMIT: u64 = 64 << 20;

fn compare_file(fs: &Ext4, path: &str, len: u64, want: &SparseData) -> Result<()> {
    ensure!(len == want.len(), "size is {len}, expected {}", want.len());
    let mut windows: Vec<u64> = if len <= FULL_COMPARE_LIMIT {
        (0..len.div_ceil(WINDOW)).collect()
    } else {
        let mut w = vec![0, (len - 1) / WINDOW];
        for (start, end) in want.data_ranges() {
            let (first, last) = (start / WINDOW, (end - 1) / WINDOW);
            w.extend(first.saturating_sub(1)..=last + 1);
        }
        w
    };
    windows.sort_unstable();
    windows.dedup();
    let mut file = fs
        .open(format!("/{path}").as_str())
        .map_err(|e| anyhow!("open: {e}"))?;
    let mut buf = vec![0u8; WINDOW as usize];
    for w in windows {
        let off = w * WINDOW;
        if off >= len {
            continue;
        }
        let n = WINDOW.min(len - off) as usize;
        file.seek(SeekFrom::Start(off))?;
        file.read_exact(&mut buf[..n])
            .with_context(|| format!("read {n} bytes at {off}"))?;
        let expect = want.read(off, n as u64);
        if buf[..n] != expect[..] {
            let i = buf[..n]
                .iter()
                .zip(&expect)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "contents differ at byte {}: image has {:#04x}, expected {:#04x}",
                off + i as u64,
                buf[i],
                expect[i]
            );
        }
    }
    Ok(())
}

fn read_through(fs: &Ext4, path: &str, len: u64) -> Result<()> {
    let mut file = fs
        .open(format!("/{path}").as_str())
        .map_err(|e| anyhow!("open: {e}"))?;
    let mut buf = vec![0u8; WINDOW as usize];
    let mut total = 0u64;
    // Bounded like compare_file: huge sparse files are sampled at both ends.
    if len > FULL_COMPARE_LIMIT {
        file.read_exact(&mut buf)?;
        file.seek(SeekFrom::Start(len - WINDOW))?;
        file.read_exact(&mut buf)?;
        return Ok(());
    }
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    ensure!(total == len, "read {total} bytes, size is {len}");
    Ok(())
}

fn has_unwritten_extents(image: &Path, path: &str) -> Result<bool> {
    let out = crate::cmd::run(
        "debugfs",
        &[
            OsStr::new("-R"),
            format!("ex \"/{path}\"").as_ref(),
            image.as_os_str(),
        ],
    )?;
    Ok(out.lines().any(|l| l.trim_end().ends_with("Uninit")))
}

fn compare_with_debugfs(image: &Path, path: &str, want: &SparseData) -> Result<()> {
    ensure!(
        want.len() <= FULL_COMPARE_LIMIT,
        "too large to dump ({} bytes)",
        want.len()
    );
    let out = tempfile::NamedTempFile::new()?;
    let cmd = format!("dump \"/{path}\" \"{}\"", out.path().display());
    crate::cmd::run(
        "debugfs",
        &[OsStr::new("-R"), cmd.as_ref(), image.as_os_str()],
    )?;
    let got = std::fs::read(out.path())?;
    let expect = want.to_vec();
    ensure!(
        got.len() == expect.len(),
        "debugfs dumped {} bytes, expected {}",
        got.len(),
        expect.len()
    );
    if let Some(i) = got.iter().zip(&expect).position(|(a, b)| a != b) {
        bail!(
            "contents differ at byte {i}: image has {:#04x}, expected {:#04x}",
            got[i],
            expect[i]
        );
    }
    Ok(())
}
