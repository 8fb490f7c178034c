//! Opening, refusing, mounted state, read-only behaviour and the no-cache invariant.

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{create_file, fsck_clean, mkfs, S_IFREG};
use ext2fs::{Fs, Timestamp, XattrSetMode, ROOT_INO};

fn dumpe2fs_field(path: &std::path::Path, field: &str) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .expect("dumpe2fs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim_start_matches(':').trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in dumpe2fs output"))
}

#[test]
fn info_and_mounted_state() {
    require_tools!();
    let img = mkfs(
        64,
        &[
            "-b",
            "4096",
            "-L",
            "harness",
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
        ],
    );
    let mounts_before: u32 = dumpe2fs_field(&img.path, "Mount count").parse().unwrap();

    let fs = Fs::open(&img.path, false).unwrap();
    let info = fs.info();
    assert!(fs.read_only());
    assert_eq!(info.block_size, 4096);
    assert_eq!(info.blocks_count, 64 << 20 >> 12);
    assert_eq!(info.label, b"harness");
    assert_eq!(info.uuid[..4], [0x01, 0x23, 0x45, 0x67]);
    assert_eq!(info.inode_size, 256);
    assert_eq!(info.first_ino, 11);
    assert!(info.has_extents);
    assert_eq!(info.max_file_size, ((1u64 << 32) - 1) * 4096);
    assert_eq!(
        info.free_blocks.to_string(),
        dumpe2fs_field(&img.path, "Free blocks")
    );
    assert_eq!(
        info.free_inodes.to_string(),
        dumpe2fs_field(&img.path, "Free inodes")
    );
    fs.close().unwrap();
    assert_eq!(dumpe2fs_field(&img.path, "Filesystem state"), "clean");

    let fs = Fs::open(&img.path, true).unwrap();
    assert_eq!(
        dumpe2fs_field(&img.path, "Filesystem state"),
        "not clean",
        "mounted read-write"
    );
    let mounts: u32 = dumpe2fs_field(&img.path, "Mount count").parse().unwrap();
    assert_eq!(mounts, mounts_before + 1);
    fs.close().unwrap();
    assert_eq!(dumpe2fs_field(&img.path, "Filesystem state"), "clean");
    fsck_clean(&img.path);

    // Drop is a best-effort close that also restores the clean state.
    drop(Fs::open(&img.path, true).unwrap());
    assert_eq!(dumpe2fs_field(&img.path, "Filesystem state"), "clean");
}

#[test]
fn refuses_what_it_cannot_serve() {
    require_tools!();
    let inline = common::mkfs(16, &["-O", "inline_data"]);
    for rw in [false, true] {
        let err = Fs::open(&inline.path, rw)
            .err()
            .expect("inline_data refused");
        assert_eq!(err.errno(), libc::EOPNOTSUPP);
        assert!(err.to_string().contains("inline_data"), "{err}");
    }

    let quota = mkfs(16, &["-O", "quota"]);
    let err = Fs::open(&quota.path, true)
        .err()
        .expect("quota refused read-write");
    assert!(err.to_string().contains("quota"), "{err}");
    Fs::open(&quota.path, false)
        .expect("quota fine read-only")
        .close()
        .unwrap();

    let journal = mkfs(16, &[]);
    let out = Command::new("debugfs")
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(&journal.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = Fs::open(&journal.path, true)
        .err()
        .expect("needs_recovery refused read-write");
    assert_eq!(err.errno(), libc::EUCLEAN);
    assert!(
        err.to_string().contains("e2fsck"),
        "tells what to do: {err}"
    );
    Fs::open(&journal.path, false)
        .expect("read-only allowed")
        .close()
        .unwrap();

    let missing = Fs::open(std::path::Path::new("/nonexistent/fs.img"), false)
        .err()
        .unwrap();
    assert_eq!(missing.errno(), libc::ENOENT, "{missing}");
}

#[test]
fn unclean_filesystem_is_refused_read_write() {
    require_tools!();
    let img = mkfs(16, &[]);
    let fs = Fs::open(&img.path, true).unwrap();
    // Simulate a crash: the handle is leaked, so the clean state is never written back.
    std::mem::forget(fs);
    let err = Fs::open(&img.path, true).err().expect("unclean refused");
    assert!(err.to_string().contains("not cleanly unmounted"), "{err}");
    assert!(
        Command::new("e2fsck")
            .arg("-fy")
            .arg(&img.path)
            .status()
            .unwrap()
            .code()
            .unwrap()
            <= 1
    );
    Fs::open(&img.path, true)
        .expect("clean after e2fsck")
        .close()
        .unwrap();
}

#[test]
fn read_only_refuses_writes() {
    require_tools!();
    let img = mkfs(16, &[]);
    let mut fs = Fs::open(&img.path, false).unwrap();
    let mut root = fs.read_inode(ROOT_INO).unwrap();
    let erofs = |e: ext2fs::Error| assert_eq!(e.errno(), libc::EROFS, "{e}");
    erofs(fs.write_inode(ROOT_INO, &root).unwrap_err());
    erofs(fs.new_inode(ROOT_INO, S_IFREG | 0o644).unwrap_err());
    erofs(fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap_err());
    erofs(
        fs.xattr_set(ROOT_INO, b"user.a", b"1", XattrSetMode::Any)
            .unwrap_err(),
    );
    erofs(fs.punch(ROOT_INO, &mut root, 0, None).unwrap_err());
    fs.flush().unwrap();
    fs.close().unwrap();
}

/// Metadata written through libext2fs must reach the device at once (no write-back cache),
/// because the server reuses freed blocks for data written with its own file descriptor.
#[test]
fn metadata_writes_are_not_cached() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o600);
    let mut inode = fs.read_inode(ino).unwrap();
    inode.set_mode(S_IFREG | 0o4751);
    inode.set_mtime(Timestamp {
        sec: 1_234_567_890,
        nsec: 42,
    });
    fs.write_inode(ino, &inode).unwrap();

    // Locate the inode on disk with debugfs, then read it with a plain pread, fs still open.
    let (block, offset) = test_support::e2fs::inode_location(&img.path, u64::from(ino));
    let mut raw = [0u8; 128];
    std::fs::File::open(&img.path)
        .unwrap()
        .read_exact_at(&mut raw, block * 4096 + offset)
        .unwrap();
    assert_eq!(
        u16::from_le_bytes([raw[0], raw[1]]),
        (S_IFREG | 0o4751) as u16,
        "i_mode on disk"
    );
    assert_eq!(
        u32::from_le_bytes(raw[16..20].try_into().unwrap()),
        1_234_567_890,
        "i_mtime on disk"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// The server keeps `Fs` behind a mutex shared between threads: it must be `Send`.
#[test]
fn fs_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Fs>();
    assert_send::<ext2fs::Error>();
}

/// The used runs are what a copy of the filesystem needs: every block the bitmap marks,
/// and the boot block before the first data block of a 1 KiB-block filesystem.
#[test]
fn used_block_runs_are_the_bitmap() {
    require_tools!();
    let img = mkfs(32, &["-b", "1024"]);
    let fs = Fs::open(&img.path, false).unwrap();
    let runs = fs.used_block_runs().unwrap();
    assert_eq!(runs[0].0, 0, "the boot block is included");
    assert!(
        runs.windows(2).all(|w| w[0].1 < w[1].0),
        "sorted and merged"
    );
    let used: u64 = runs.iter().map(|(s, e)| e - s).sum();
    // 32 MiB of 1 KiB blocks: block 0 is outside the bitmap, the rest is used or free.
    assert_eq!(used, 32 * 1024 - fs.free_blocks());
    assert!(runs.last().unwrap().1 <= 32 * 1024);
}
