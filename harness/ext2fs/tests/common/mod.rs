//! Shared helpers: make images with mkfs.ext4, check them with e2fsck, read them with debugfs.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext2fs::{FileType, Fs, Ino, Inode, MapKind, Timestamp};

pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;

/// Returns from the test when e2fsprogs' tools are missing (a failure under CI, see
/// `test_support::needs`).
#[macro_export]
macro_rules! require_tools {
    () => {
        if !common::have_tools() {
            return;
        }
    };
}

/// Whether mkfs.ext4, e2fsck and debugfs are installed (through `test_support::needs`).
pub fn have_tools() -> bool {
    test_support::needs_all(
        ["mkfs.ext4", "e2fsck", "debugfs"].map(|t| test_support::needs::tool_from(t, "e2fsprogs")),
    )
}

/// A filesystem image in its own temporary directory.
pub struct Image {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// `mkfs.ext4 -F -q -O ^inline_data <extra> IMAGE` on a sparse file of `size_mib`.
pub fn mkfs(size_mib: u64, extra: &[&str]) -> Image {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fs.img");
    let file = std::fs::File::create(&path).expect("create image");
    file.set_len(size_mib << 20).expect("size image");
    drop(file);
    let out = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-O", "^inline_data"])
        .args(extra)
        .arg(&path)
        .output()
        .expect("run mkfs.ext4");
    assert!(
        out.status.success(),
        "mkfs.ext4 {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Image { _dir: dir, path }
}

/// Asserts `e2fsck -fn` finds nothing to fix.
pub fn fsck_clean(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .expect("run e2fsck");
    assert!(
        out.status.success(),
        "e2fsck -fn exited {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one debugfs request (read-only) and returns its stdout.
pub fn debugfs(path: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(request)
        .arg(path)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one debugfs request and returns its raw stdout (for `cat`).
pub fn debugfs_bytes(path: &Path, request: &str) -> Vec<u8> {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(path)
        .output()
        .expect("run debugfs")
        .stdout
}

/// Creates an empty regular file `name` in `dir` the way a server would.
pub fn create_file(fs: &mut Fs, dir: Ino, name: &[u8], perm: u32) -> Ino {
    let ino = fs.new_inode(dir, S_IFREG | perm).expect("new_inode");
    let mut inode = Inode::new(S_IFREG | perm);
    inode.set_links(1);
    inode.set_uid(1000);
    inode.set_gid(1000);
    let now = Timestamp::now();
    inode.set_atime(now);
    inode.set_mtime(now);
    inode.set_ctime(now);
    fs.write_new_inode(ino, &inode).expect("write_new_inode");
    fs.link(dir, name, ino, FileType::Regular).expect("link");
    ino
}

/// Writes `data` at byte 0 of file `ino` through the mapping primitives and `pwrite` on the
/// image, as the server's data path does; sets the size.
pub fn write_data(fs: &mut Fs, image: &Path, ino: Ino, data: &[u8]) {
    let bs = u64::from(fs.block_size());
    let nblocks = (data.len() as u64).div_ceil(bs);
    let mut inode = fs.read_inode(ino).unwrap();
    fs.allocate_unwritten(ino, &mut inode, 0, nblocks)
        .expect("allocate_unwritten");
    let dev = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    for m in fs.map(ino, &inode, 0, nblocks).unwrap() {
        let pblk = match m.kind {
            MapKind::Unwritten { pblk } | MapKind::Mapped { pblk } => pblk,
            MapKind::Hole => panic!("hole after allocate_unwritten: {m:?}"),
        };
        let start = (m.lblk * bs) as usize;
        let end = ((m.end() * bs) as usize).min(data.len());
        let mut chunk = data[start..end].to_vec();
        chunk.resize((m.len * bs) as usize, 0);
        dev.write_all_at(&chunk, pblk * bs).unwrap();
    }
    dev.sync_data().unwrap();
    fs.mark_written(ino, &mut inode, 0, nblocks)
        .expect("mark_written");
    inode.set_size(data.len() as u64);
    fs.write_inode(ino, &inode).unwrap();
}

/// All entries of a directory (name, ino), via read_dir in one pass.
pub fn list(fs: &Fs, dir: Ino) -> Vec<(Vec<u8>, Ino)> {
    let mut out = Vec::new();
    fs.read_dir(dir, 0, |e| {
        out.push((e.name.to_vec(), e.ino));
        true
    })
    .expect("read_dir");
    out
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
