//! The ext4 image around a session: making it, checking it with `e2fsck -fn`, and reading
//! every file back with an independent reader (the pure-Rust ext4-view crate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::oracle::SparseFile;

/// Finds a system tool in PATH or the sbin directories (where e2fsprogs lives).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from(name)
}

/// Creates an ext4 image of `size` bytes with `block_size`-byte blocks and no inline
/// data (so every file is block-mapped and every mapping is MAPPED/UNWRITTEN/HOLE).
pub fn mkfs(image: &Path, size: u64, block_size: u32) -> Result<()> {
    mkfs_with(image, size, block_size, "^inline_data")
}

/// Like [`mkfs`] with `-O features` (e.g. `^inline_data,^extent,^64bit` for block-mapped
/// files).
pub fn mkfs_with(image: &Path, size: u64, block_size: u32, features: &str) -> Result<()> {
    let file = std::fs::File::create(image)
        .map_err(|e| Error::io(format!("create {}", image.display()), e))?;
    file.set_len(size)
        .map_err(|e| Error::io(format!("size {}", image.display()), e))?;
    drop(file);
    let out = Command::new(tool("mkfs.ext4"))
        .args(["-F", "-q", "-O", features, "-b", &block_size.to_string()])
        .arg(image)
        .output()
        .map_err(|e| Error::io("run mkfs.ext4 (is e2fsprogs installed?)", e))?;
    if !out.status.success() {
        return Err(Error::Server(format!(
            "mkfs.ext4 -b {block_size} {} failed: {}{}",
            image.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// `e2fsck -fn IMAGE` must exit 0.
pub fn fsck(image: &Path) -> Result<()> {
    let out = Command::new(tool("e2fsck"))
        .arg("-fn")
        .arg(image)
        .output()
        .map_err(|e| Error::io("run e2fsck", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Fsck {
        image: image.display().to_string(),
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Reads the image with ext4-view and compares it with the oracle: every expected file
/// with its size and bytes, and no directory holding names the oracle does not know.
pub fn independent_check(
    image: &Path,
    files: &BTreeMap<String, SparseFile>,
    dirs: &BTreeSet<String>,
) -> Result<()> {
    let fs = ext4_view::Ext4::load_from_path(image)
        .map_err(|e| Error::Independent(format!("cannot load {}: {e}", image.display())))?;
    for (path, oracle) in files {
        let abs = format!("/{path}");
        let size = fs
            .metadata(abs.as_str())
            .map_err(|e| Error::Independent(format!("cannot stat {abs}: {e}")))?
            .len();
        oracle
            .check_size(path, "size as read by ext4-view", size)
            .map_err(|e| Error::Independent(e.to_string()))?;
        let verdict = fs
            .read(abs.as_str())
            .map_err(|e| Error::Independent(format!("cannot read {abs}: {e}")))
            .and_then(|data| {
                oracle
                    .check(path, "contents as read by ext4-view", 0, &data)
                    .map_err(|e| Error::Independent(e.to_string()))
            });
        // ext4-view 1.0 ignores the unwritten flag of extents (it reads their stale blocks
        // and takes the flag bit as length), so files with unwritten extents are read
        // with debugfs instead, whose reader returns zeroes for them.
        if verdict.is_err() && has_unwritten_extents(image, &abs)? {
            let data = debugfs_dump(image, &abs)?;
            oracle
                .check(
                    path,
                    "contents as read by debugfs (file has unwritten extents)",
                    0,
                    &data,
                )
                .map_err(|e| Error::Independent(e.to_string()))?;
        } else {
            verdict?;
        }
    }
    // Directory listings: exactly the expected names (plus lost+found in the root).
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    expected.entry(String::new()).or_default();
    for d in dirs {
        expected.entry(d.clone()).or_default();
    }
    for path in files.keys().chain(dirs.iter()) {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        expected
            .entry(parent.to_string())
            .or_default()
            .insert(name.to_string());
    }
    for (dir, want) in expected {
        let abs = format!("/{dir}");
        let mut got = BTreeSet::new();
        let entries = fs
            .read_dir(abs.as_str())
            .map_err(|e| Error::Independent(format!("cannot list {abs}: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::Independent(format!("cannot list {abs}: {e}")))?;
            let name = entry.file_name().display().to_string();
            if name != "." && name != ".." && !(dir.is_empty() && name == "lost+found") {
                got.insert(name);
            }
        }
        if got != want {
            return Err(Error::Independent(format!(
                "directory {abs} holds {got:?}, expected {want:?}"
            )));
        }
    }
    Ok(())
}

fn debugfs(image: &Path, command: &str) -> Result<String> {
    let out = Command::new(tool("debugfs"))
        .arg("-R")
        .arg(command)
        .arg(image)
        .output()
        .map_err(|e| Error::io("run debugfs", e))?;
    if !out.status.success() {
        return Err(Error::Independent(format!(
            "debugfs -R '{command}' failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True if `debugfs ex` lists an unwritten ("Uninit") extent for the file.
fn has_unwritten_extents(image: &Path, abs: &str) -> Result<bool> {
    Ok(debugfs(image, &format!("ex {abs}"))?
        .lines()
        .any(|l| l.contains("Uninit")))
}

/// The file's contents as libext2fs's file reader returns them (`debugfs dump`).
fn debugfs_dump(image: &Path, abs: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("create a temporary directory", e))?;
    let out = dir.path().join("dump");
    debugfs(image, &format!("dump {abs} {}", out.display()))?;
    std::fs::read(&out)
        .map_err(|e| Error::Independent(format!("debugfs could not dump {abs}: {e}")))
}
