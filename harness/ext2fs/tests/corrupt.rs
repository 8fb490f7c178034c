//! Corrupt on-disk data yields errors, never panics or out-of-range results.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{create_file, debugfs, mkfs, write_data};
use ext2fs::{Fs, XattrSetMode, ROOT_INO};

fn inode_offset(img: &Path, ino: u32, block_size: u64) -> u64 {
    test_support::e2fs::inode_offset(img, u64::from(ino), block_size)
}

fn poke(img: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn corrupt_metadata_gives_errors() {
    require_tools!();
    // Without metadata_csum, garbage reaches our parsers instead of failing checksums.
    let img = mkfs(16, &["-b", "1024", "-O", "^metadata_csum"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap();
    for i in 0..20 {
        create_file(&mut fs, d, format!("f{i}").as_bytes(), 0o644);
    }
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    write_data(&mut fs, &img.path, f, &[1u8; 5000]);
    let g = create_file(&mut fs, ROOT_INO, b"g", 0o644);
    fs.xattr_set(g, b"user.x", b"1", XattrSetMode::Any).unwrap();
    fs.close().unwrap();

    // A directory entry whose record length runs past the block.
    let dir_block: u64 = debugfs(&img.path, "blocks /d")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    poke(
        &img.path,
        dir_block * 1024 + 24 + 4,
        &0xfff0u16.to_le_bytes(),
    );
    // An extent pointing far beyond the end of the filesystem.
    let f_off = inode_offset(&img.path, f, 1024);
    poke(
        &img.path,
        f_off + 40 + 12 + 8,
        &0xfff0_0000u32.to_le_bytes(),
    );
    // An ACL value that is not in ext4's format, set raw.
    let blob = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blob.path(), [1, 0, 0, 0, 2, 0, 7]).unwrap();
    let out = Command::new("debugfs")
        .args([
            "-w",
            "-R",
            &format!(
                "ea_set -r -f {} /g system.posix_acl_access",
                blob.path().display()
            ),
        ])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.status.success());

    let mut fs = Fs::open(&img.path, true).unwrap();
    let euclean = |e: ext2fs::Error| assert_eq!(e.errno(), libc::EUCLEAN, "{e}");
    euclean(fs.read_dir(d, 0, |_| true).unwrap_err());
    euclean(fs.is_dir_empty(d).unwrap_err());
    assert!(fs.lookup(d, b"f19").is_err());
    let mut inode = fs.read_inode(f).unwrap();
    euclean(fs.map(f, &inode, 0, 10).unwrap_err());
    euclean(fs.next_data(f, &inode, 0).unwrap_err());
    euclean(fs.punch(f, &mut inode, 0, None).unwrap_err());
    euclean(fs.xattr_get(g, b"system.posix_acl_access").unwrap_err());
    assert_eq!(
        fs.xattr_get(g, b"user.x").unwrap().as_deref(),
        Some(b"1".as_slice())
    );

    // A broken extent header.
    let bad = inode_offset(&img.path, g, 1024);
    drop(fs);
    poke(&img.path, bad + 40, &[0xde, 0xad]);
    let fs = Fs::open(&img.path, false).unwrap();
    let inode = fs.read_inode(g).unwrap();
    euclean(fs.map(g, &inode, 0, 1).unwrap_err());
    fs.close().unwrap();
}
