//! Inodes (fields, allocation, freeing) and extended attributes, including POSIX ACLs.

mod common;

use std::process::Command;

use common::{create_file, debugfs, fsck_clean, mkfs, write_data, S_IFREG};
use ext2fs::{FileType, Fs, Inode, Timestamp, XattrSetMode, ROOT_INO};

#[test]
fn inode_fields_round_trip() {
    require_tools!();
    let img = mkfs(32, &[]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o640);
    let mut inode = fs.read_inode(ino).unwrap();
    inode.set_uid(70_000);
    inode.set_gid(65_539);
    inode.set_size(5 << 30);
    inode.set_generation(0xdead_beef);
    let t_2040 = Timestamp {
        sec: 2_208_988_800,
        nsec: 999_999_999,
    };
    let t_1969 = Timestamp { sec: -100, nsec: 5 };
    inode.set_mtime(t_2040);
    inode.set_atime(t_1969);
    inode.set_ctime(Timestamp {
        sec: 1_700_000_000,
        nsec: 1,
    });
    inode.set_crtime(Timestamp {
        sec: 1_600_000_000,
        nsec: 2,
    });
    fs.write_inode(ino, &inode).unwrap();
    let back = fs.read_inode(ino).unwrap();
    assert_eq!(
        (back.uid(), back.gid(), back.size(), back.generation()),
        (70_000, 65_539, 5 << 30, 0xdead_beef)
    );
    assert_eq!((back.mtime(), back.atime()), (t_2040, t_1969));
    assert_eq!(
        back.crtime(),
        Some(Timestamp {
            sec: 1_600_000_000,
            nsec: 2
        })
    );
    assert!(back.is_reg() && !back.is_dir() && back.uses_extents());
    assert_eq!(back.file_type(), FileType::Regular);

    // Devices: old and new encodings.
    let dev = |major: u32, minor: u32| (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    for (name, mode, major, minor) in [
        (b"blk".as_slice(), 0o060600, 8, 1),
        (b"chr", 0o020600, 259, 70_000),
    ] {
        let d = fs.new_inode(ROOT_INO, mode).unwrap();
        let mut node = Inode::new(mode);
        node.set_links(1);
        node.set_rdev(dev(major, minor));
        fs.write_new_inode(d, &node).unwrap();
        fs.link(ROOT_INO, name, d, FileType::from_mode(mode))
            .unwrap();
        let node = fs.read_inode(d).unwrap();
        assert_eq!(node.rdev(), dev(major, minor));
        assert!(
            !node.uses_extents(),
            "device inodes keep i_block for the device number"
        );
    }

    // An inode allocated and freed without ever being written leaves nothing behind.
    let free_before = fs.info().free_inodes;
    let unused = fs.new_inode(ROOT_INO, S_IFREG | 0o600).unwrap();
    assert_eq!(fs.info().free_inodes, free_before - 1);
    fs.free_inode(unused).unwrap();
    assert_eq!(fs.info().free_inodes, free_before);
    fs.close().unwrap();
    fsck_clean(&img.path);

    let stat = debugfs(&img.path, "stat /f");
    assert!(
        stat.contains("User: 70000") || stat.contains("User:  70000"),
        "{stat}"
    );
    assert!(stat.contains("Size: 5368709120"), "{stat}");
    assert!(stat.contains("Generation: 3735928559"), "{stat}");
    // 2040 is past 2038: low 32 bits 0x83aa7e80, epoch bits 01, nsec 999999999 << 2.
    assert!(
        stat.contains("mtime: 0x83aa7e80:ee6b27fd -- Sun Jan  1 00:00:00 2040"),
        "{stat}"
    );
    assert!(debugfs(&img.path, "stat /blk").contains("Device major/minor number: 08:01"));
    assert!(debugfs(&img.path, "stat /chr").contains("Device major/minor number: 259:70000"));
}

#[test]
fn hard_links_and_freeing_return_space() {
    require_tools!();
    let img = mkfs(32, &["-b", "1024"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let before = fs.info();
    let ino = create_file(&mut fs, ROOT_INO, b"a", 0o644);
    write_data(&mut fs, &img.path, ino, &vec![7u8; 100_000]);
    fs.xattr_set(ino, b"user.big", &vec![1u8; 800], XattrSetMode::Create)
        .unwrap();
    fs.link(ROOT_INO, b"b", ino, FileType::Regular).unwrap();
    let mut inode = fs.read_inode(ino).unwrap();
    inode.set_links(2);
    fs.write_inode(ino, &inode).unwrap();
    assert!(fs.info().free_blocks < before.free_blocks - 98);

    fs.unlink(ROOT_INO, b"a").unwrap();
    let mut inode = fs.read_inode(ino).unwrap();
    inode.set_links(1);
    fs.write_inode(ino, &inode).unwrap();
    fs.unlink(ROOT_INO, b"b").unwrap();
    fs.free_inode(ino).unwrap();
    let freed = fs.read_inode(ino).unwrap();
    assert_eq!(freed.links(), 0);
    assert!(freed.dtime() > 0);
    let after = fs.info();
    assert_eq!(after.free_inodes, before.free_inodes);
    // The root directory may have grown by a block; everything else is back.
    assert!(
        after.free_blocks + 1 >= before.free_blocks,
        "{} vs {}",
        after.free_blocks,
        before.free_blocks
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

fn ea_hex(path: &std::path::Path, file: &str, name: &str, raw: bool) -> Vec<u8> {
    let out = debugfs(
        path,
        &format!("ea_get -x {} {file} {name}", if raw { "-r" } else { "" }),
    );
    let hex = out
        .split(" = ")
        .nth(1)
        .unwrap_or_else(|| panic!("ea_get output: {out}"));
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn xattrs_inline_block_and_errors() {
    require_tools!();
    let img = mkfs(32, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    assert_eq!(fs.xattr_list(ino).unwrap(), Vec::<Vec<u8>>::new());
    fs.xattr_set(ino, b"user.small", b"hello", XattrSetMode::Any)
        .unwrap();
    fs.xattr_set(ino, b"user.empty", b"", XattrSetMode::Create)
        .unwrap();
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    fs.xattr_set(ino, b"user.big", &big, XattrSetMode::Any)
        .unwrap();
    fs.xattr_set(
        ino,
        b"security.label",
        b"system_u:object_r",
        XattrSetMode::Any,
    )
    .unwrap();
    fs.xattr_set(ino, b"trusted.t", b"x", XattrSetMode::Any)
        .unwrap();
    assert_eq!(
        fs.xattr_get(ino, b"user.small").unwrap().as_deref(),
        Some(b"hello".as_slice())
    );
    assert_eq!(
        fs.xattr_get(ino, b"user.empty").unwrap().as_deref(),
        Some(b"".as_slice())
    );
    assert_eq!(fs.xattr_get(ino, b"user.big").unwrap(), Some(big.clone()));
    assert_eq!(fs.xattr_get(ino, b"user.none").unwrap(), None);
    let mut names = fs.xattr_list(ino).unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            b"security.label".to_vec(),
            b"trusted.t".to_vec(),
            b"user.big".to_vec(),
            b"user.empty".to_vec(),
            b"user.small".to_vec()
        ]
    );
    assert_ne!(
        fs.read_inode(ino).unwrap().blocks_512(),
        0,
        "the big value went to an xattr block"
    );

    let errno = |r: ext2fs::Result<()>| r.unwrap_err().errno();
    assert_eq!(
        errno(fs.xattr_set(ino, b"user.small", b"x", XattrSetMode::Create)),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.xattr_set(ino, b"user.nope", b"x", XattrSetMode::Replace)),
        libc::ENODATA
    );
    assert_eq!(errno(fs.xattr_remove(ino, b"user.nope")), libc::ENODATA);
    assert_eq!(
        errno(fs.xattr_set(ino, b"user.huge", &vec![0; 70_000], XattrSetMode::Any)),
        libc::E2BIG
    );
    assert_eq!(
        errno(fs.xattr_set(ino, b"user.toolarge", &vec![0; 5000], XattrSetMode::Any)),
        libc::ENOSPC
    );
    assert_eq!(
        errno(fs.xattr_set(ino, b"bogus.ns", b"x", XattrSetMode::Any)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(fs.xattr_set(ino, b"system.posix_acl_access", b"junk", XattrSetMode::Any)),
        libc::EINVAL
    );
    fs.xattr_set(ino, b"user.small", b"replaced", XattrSetMode::Replace)
        .unwrap();
    fs.xattr_remove(ino, b"trusted.t").unwrap();
    assert_eq!(fs.xattr_get(ino, b"trusted.t").unwrap(), None);
    fs.close().unwrap();
    fsck_clean(&img.path);

    assert_eq!(ea_hex(&img.path, "/f", "user.small", false), b"replaced");
    let dumped = tempfile::NamedTempFile::new().unwrap();
    debugfs(
        &img.path,
        &format!("ea_get -f {} /f user.big", dumped.path().display()),
    );
    assert_eq!(std::fs::read(dumped.path()).unwrap(), big);
    assert!(
        !debugfs(&img.path, "stat /f").contains("File ACL: 0\n"),
        "external xattr block in use"
    );
}

#[test]
fn posix_acl_round_trip() {
    require_tools!();
    let img = mkfs(32, &[]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    // What `setfacl -m u:1000:r-x,g:100:rw` passes through the VFS (as getfattr shows it).
    let hex = "0200000001000600ffffffff02000500e803000004000400ffffffff080006006400000010000700ffffffff20000400ffffffff";
    let vfs: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    fs.xattr_set(ino, b"system.posix_acl_access", &vfs, XattrSetMode::Any)
        .unwrap();
    assert_eq!(
        fs.xattr_get(ino, b"system.posix_acl_access").unwrap(),
        Some(vfs.clone())
    );
    fs.close().unwrap();
    fsck_clean(&img.path);

    // On disk: ext4's compact format (4-byte entries without ids, 8-byte with).
    let disk = ea_hex(&img.path, "/f", "system.posix_acl_access", true);
    let expected_disk: Vec<u8> = [
        &[1, 0, 0, 0][..],
        &[1, 0, 6, 0],
        &[2, 0, 5, 0, 0xe8, 3, 0, 0],
        &[4, 0, 4, 0],
        &[8, 0, 6, 0, 100, 0, 0, 0],
        &[0x10, 0, 7, 0],
        &[0x20, 0, 4, 0],
    ]
    .concat();
    assert_eq!(disk, expected_disk);
    // libext2fs' own conversion reads it back as the same ACL (it reports id 0 for *_OBJ).
    let converted = ea_hex(&img.path, "/f", "system.posix_acl_access", false);
    assert_eq!(converted.len(), vfs.len());
    assert_eq!(converted[..4], vfs[..4], "version");
    for (a, b) in converted[4..].chunks(8).zip(vfs[4..].chunks(8)) {
        assert_eq!(a[..4], b[..4], "tag and perm");
        if matches!(b[0], 2 | 8) {
            assert_eq!(a[4..], b[4..], "id of a named user/group");
        }
    }

    // An ACL written by libext2fs (as the kernel would store it) reads back in VFS format.
    let blob = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blob.path(), &vfs).unwrap();
    let out = Command::new("debugfs")
        .args([
            "-w",
            "-R",
            &format!(
                "ea_set -f {} /f system.posix_acl_default",
                blob.path().display()
            ),
        ])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let fs = Fs::open(&img.path, false).unwrap();
    assert_eq!(
        fs.xattr_get(ino, b"system.posix_acl_default").unwrap(),
        Some(vfs)
    );
    fs.close().unwrap();
}

#[test]
fn ea_inode_values_are_released_on_free() {
    require_tools!();
    let img = mkfs(32, &["-O", "ea_inode"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let before = fs.info();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let value: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    fs.xattr_set(ino, b"user.huge", &value, XattrSetMode::Any)
        .unwrap();
    assert_eq!(fs.xattr_get(ino, b"user.huge").unwrap(), Some(value));
    assert!(
        fs.info().free_inodes < before.free_inodes - 1,
        "value stored in its own inode"
    );
    fs.unlink(ROOT_INO, b"f").unwrap();
    fs.free_inode(ino).unwrap();
    assert_eq!(fs.info().free_inodes, before.free_inodes);
    fs.close().unwrap();
    fsck_clean(&img.path);
}
