//! What the filesystem keeps through errors, interruptions and hostile images: the orphan
//! list, the errored state, reserved inodes, the system zone, commits, and failures
//! injected at every step of the composite operations (mkdir, symlink).

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{create_file, debugfs, fsck_clean, mkfs, write_data, S_IFREG};
use ext2fs::{FailPlan, FileType, Fs, Inode, ROOT_INO};

/// `e2fsck -fn` exit code and report.
fn fsck(path: &Path) -> (i32, String) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .expect("run e2fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn fs_state(path: &Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .expect("run dumpe2fs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Filesystem state:")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn orphans_survive_close_and_are_freed_at_the_next_open() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let mut orphans = Vec::new();
    for i in 0..3 {
        let name = format!("f{i}");
        let ino = create_file(&mut fs, ROOT_INO, name.as_bytes(), 0o644);
        write_data(&mut fs, &img.path, ino, &[7u8; 10000]);
        // Unlinked while "open": on the list with no links, not freed yet.
        fs.orphan_add(ino).unwrap();
        fs.unlink(ROOT_INO, name.as_bytes()).unwrap();
        let mut inode = fs.read_inode(ino).unwrap();
        inode.set_links(0);
        fs.write_inode(ino, &inode).unwrap();
        orphans.push(ino);
    }
    assert_eq!(
        fs.orphans().unwrap(),
        vec![orphans[2], orphans[1], orphans[0]],
        "head first"
    );
    // Taking the middle one off keeps the chain.
    fs.orphan_del(orphans[1]).unwrap();
    assert_eq!(fs.orphans().unwrap(), vec![orphans[2], orphans[0]]);
    fs.orphan_add(orphans[1]).unwrap();
    fs.orphan_add(orphans[1]).unwrap();
    assert_eq!(fs.orphans().unwrap().len(), 3, "adding twice is one entry");
    let free_before = fs.info().free_blocks;
    fs.close().unwrap();

    // e2fsprogs sees the same chain.
    let sb = debugfs(&img.path, "stats");
    let head = sb
        .lines()
        .find_map(|l| l.strip_prefix("First orphan inode:"))
        .map(str::trim);
    assert_eq!(head, Some(orphans[1].to_string().as_str()), "{sb}");
    // A read-only open leaves the list alone.
    let ro = Fs::open(&img.path, false).unwrap();
    assert_eq!(ro.orphans().unwrap().len(), 3);
    drop(ro);
    // A read-write open frees them, as ext4's orphan cleanup does.
    let fs = Fs::open(&img.path, true).unwrap();
    assert!(fs.orphans().unwrap().is_empty());
    assert!(
        fs.info().free_blocks >= free_before + 3 * 3,
        "the orphans' blocks came back"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert!(!debugfs(&img.path, "stats").contains("First orphan inode"));
}

#[test]
fn the_orphan_list_stays_one_chain_through_many_adds_and_removals() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let inos: Vec<_> = (0..200)
        .map(|i| create_file(&mut fs, ROOT_INO, format!("f{i}").as_bytes(), 0o644))
        .collect();
    // The model: head first, as on disk.
    let mut want: Vec<_> = Vec::new();
    for &ino in &inos {
        fs.orphan_add(ino).unwrap();
        want.insert(0, ino);
    }
    assert_eq!(fs.orphans().unwrap(), want);
    // Off the list from the head, the tail and the middle, in a scrambled order, and some
    // back on: after each step the list on disk is the model.
    for step in 0..150usize {
        let ino = inos[(step * 37) % 120];
        match want.iter().position(|&o| o == ino) {
            Some(at) => {
                fs.orphan_del(ino).unwrap();
                want.remove(at);
            }
            None => {
                fs.orphan_add(ino).unwrap();
                want.insert(0, ino);
            }
        }
        if step % 10 == 0 {
            assert_eq!(fs.orphans().unwrap(), want, "after step {step}");
        }
    }
    fs.orphan_del(want[0]).unwrap();
    fs.orphan_del(*want.last().unwrap()).unwrap();
    want.remove(0);
    want.pop();
    assert_eq!(fs.orphans().unwrap(), want);
    fs.close().unwrap();
    let ro = Fs::open(&img.path, false).unwrap();
    assert_eq!(ro.orphans().unwrap(), want, "as the next open reads it");
}

#[test]
fn a_corrupt_orphan_list_is_refused() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let out = Command::new("debugfs")
        .args(["-w", "-R", "ssv last_orphan 7"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = Fs::open(&img.path, true)
        .err()
        .expect("inode 7 cannot be an orphan");
    assert_eq!(err.errno(), libc::EUCLEAN, "{err}");
}

#[test]
fn an_errored_filesystem_refuses_changes_and_is_never_marked_clean() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    assert!(!fs.is_errored());
    fs.mark_error();
    assert!(fs.is_errored());
    // Recorded at once, not only at close.
    assert_eq!(fs_state(&img.path), "not clean with errors");
    let err = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap_err();
    assert_eq!(err.errno(), libc::EROFS, "{err}");
    let mut inode = fs.read_inode(f).unwrap();
    inode.set_size(1);
    assert_eq!(fs.write_inode(f, &inode).unwrap_err().errno(), libc::EROFS);
    assert!(fs.read_inode(f).is_ok(), "reads go on");
    fs.close().unwrap();
    assert_eq!(fs_state(&img.path), "not clean with errors");
    let err = Fs::open(&img.path, true)
        .err()
        .expect("refused until e2fsck");
    assert!(err.to_string().contains("errors recorded"), "{err}");
    assert!(Fs::open(&img.path, false).is_ok(), "read-only is fine");
}

#[test]
fn reserved_inodes_are_never_served() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let first = fs.info().first_ino;
    for ino in [1, 3, 5, 7, 8, first - 1, fs.info().inodes_count + 1] {
        let err = fs.read_inode(ino).unwrap_err();
        assert_eq!(err.errno(), libc::EUCLEAN, "inode {ino}: {err}");
        assert!(
            fs.write_inode(ino, &Inode::new(S_IFREG | 0o644)).is_err(),
            "inode {ino}"
        );
        assert!(fs.free_inode(ino).is_err(), "inode {ino}");
        assert!(!fs.is_valid_ino(ino), "inode {ino}");
    }
    assert!(fs.is_valid_ino(ROOT_INO) && fs.is_valid_ino(first));
    // A name may not be pointed at the journal either.
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    assert!(fs.set_entry(ROOT_INO, b"f", 8, FileType::Regular).is_err());
    assert_eq!(fs.lookup(ROOT_INO, b"f").unwrap(), Some(f));
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// Points `name`'s first extent (depth-0 tree in the inode) at `pblk` with debugfs-free
/// pokes: the inode's i_block starts 40 bytes in; the first extent's start_lo is at 20..24.
fn point_first_extent_at(img: &Path, fs_block_size: u64, ino: u32, pblk: u32) {
    let at = test_support::e2fs::inode_offset(img, u64::from(ino), fs_block_size) + 40 + 20;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&pblk.to_le_bytes(), at).unwrap();
}

#[test]
fn mappings_over_metadata_or_free_blocks_are_refused() {
    require_tools!();
    // No metadata_csum, so the poked inode is read as it is.
    let img = mkfs(16, &["-b", "4096", "-O", "^metadata_csum"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    write_data(&mut fs, &img.path, f, &[1u8; 4096]);
    let zone = fs.system_zone();
    let info = fs.info();
    fs.close().unwrap();
    // The zone covers the superblock and the inode table at least.
    assert!(zone.iter().any(|&(s, _)| s == 0), "{zone:?}");
    let itable = debugfs(&img.path, "stats");
    let it_start: u64 = itable
        .split("inode table at ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        zone.iter().any(|&(s, e)| s <= it_start && it_start < e),
        "{zone:?} lacks {it_start}"
    );

    let free_block = info.blocks_count - 2;
    for (target, what) in [
        (it_start as u32, "the inode table"),
        (free_block as u32, "a free block"),
    ] {
        point_first_extent_at(&img.path, 4096, f, target);
        let mut fs = Fs::open(&img.path, true).unwrap();
        let inode = fs.read_inode(f).unwrap();
        let err = fs.map(f, &inode, 0, 1).unwrap_err();
        assert_eq!(err.errno(), libc::EUCLEAN, "{what}: {err}");
        let mut inode = inode;
        assert!(
            fs.punch(f, &mut inode, 0, None).is_err(),
            "{what}: punching must not free it"
        );
        drop(fs);
    }
    // Read-only opens have no bitmaps, but still refuse the zone.
    point_first_extent_at(&img.path, 4096, f, it_start as u32);
    let fs = Fs::open(&img.path, false).unwrap();
    let inode = fs.read_inode(f).unwrap();
    assert!(fs.map(f, &inode, 0, 1).is_err());
}

#[test]
fn a_bitmap_that_frees_metadata_errors_the_filesystem() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let stats = debugfs(&img.path, "stats");
    let it_start: u64 = stats
        .split("inode table at ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = Command::new("debugfs")
        .args(["-w", "-R", &format!("freeb {it_start} 4")])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut fs = Fs::open(&img.path, true).unwrap();
    assert!(fs.is_errored(), "the inode table is free in the bitmap");
    // Nothing can be allocated over it (changes are refused altogether).
    assert!(fs.new_inode(ROOT_INO, S_IFREG | 0o644).is_err());
}

#[test]
fn commit_writes_only_the_groups_that_changed() {
    require_tools!();
    // 1 KiB blocks: 64 groups in 64 MiB.
    let img = mkfs(64, &["-b", "1024"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let groups = fs.info().blocks_count / 8192;
    assert!(groups >= 8, "{groups} groups");
    assert_eq!(fs.commit().unwrap(), 0, "nothing changed since open");
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    write_data(&mut fs, &img.path, f, &[3u8; 3000]);
    // Before the commit the on-disk bitmaps lag behind.
    let (rc, report) = fsck(&img.path);
    assert_ne!(rc, 0, "bitmaps should differ before commit:\n{report}");
    let written = fs.commit().unwrap();
    assert!(
        (2..=6).contains(&written),
        "{written} blocks for one group's change"
    );
    // Now what is on disk is consistent, though the filesystem is still open.
    let (rc, report) = fsck(&img.path);
    assert_eq!(rc, 0, "after commit:\n{report}");
    assert_eq!(fs.commit().unwrap(), 0, "a second commit has nothing to do");
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// Runs `op` with a one-shot (or sticky) failure at step 1, 2, ... until it succeeds;
/// after each failure the filesystem must be consistent and `name` absent (or the
/// filesystem errored, when a sticky failure also broke the undo).
fn sweep(errno: i32, sticky: bool, op: impl Fn(&mut Fs) -> ext2fs::Result<u32>, name: &[u8]) {
    for step in 1.. {
        let img = mkfs(16, &["-b", "1024"]);
        let mut fs = Fs::open(&img.path, true).unwrap();
        fs.inject_failure(FailPlan {
            step,
            errno,
            sticky,
        });
        let result = op(&mut fs);
        let errored = fs.is_errored();
        fs.close().unwrap();
        let reopened = Fs::open(&img.path, false).unwrap();
        let found = reopened.lookup(ROOT_INO, name).unwrap();
        drop(reopened);
        match result {
            Ok(ino) => {
                assert!(step > 1, "the first step always fails");
                assert_eq!(found, Some(ino));
                fsck_clean(&img.path);
                return;
            }
            Err(e) => {
                assert_eq!(e.errno(), errno, "step {step}: {e}");
                assert_eq!(found, None, "step {step}: a failed create left the name");
                if !errored {
                    let (rc, report) = fsck(&img.path);
                    assert_eq!(
                        rc, 0,
                        "step {step} (errno {errno}, sticky {sticky}):\n{report}"
                    );
                } else {
                    assert!(sticky, "step {step}: a one-shot failure must be undone");
                }
            }
        }
        assert!(step < 100, "the operation never completed");
    }
}

#[test]
fn mkdir_and_symlink_undo_a_failure_at_every_step() {
    require_tools!();
    let long_target = vec![b'x'; 200];
    for errno in [libc::ENOSPC, libc::EIO] {
        for sticky in [false, true] {
            sweep(
                errno,
                sticky,
                |fs| fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0),
                b"d",
            );
            sweep(
                errno,
                sticky,
                |fs| fs.symlink(ROOT_INO, b"s", b"short", 0, 0),
                b"s",
            );
            sweep(
                errno,
                sticky,
                |fs| fs.symlink(ROOT_INO, b"s", &long_target, 0, 0),
                b"s",
            );
        }
    }
}

#[test]
fn set_entry_retargets_a_name_in_place() {
    require_tools!();
    for size in [1024u32, 4096] {
        let img = mkfs(16, &["-b", &size.to_string()]);
        let mut fs = Fs::open(&img.path, true).unwrap();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap();
        let a = create_file(&mut fs, d, b"a", 0o644);
        let b = create_file(&mut fs, d, b"b", 0o644);
        fs.set_entry(d, b"a", b, FileType::Regular).unwrap();
        fs.set_entry(d, b"b", a, FileType::Regular).unwrap();
        assert_eq!(fs.lookup(d, b"a").unwrap(), Some(b));
        assert_eq!(fs.lookup(d, b"b").unwrap(), Some(a));
        assert_eq!(
            fs.set_entry(d, b"c", a, FileType::Regular)
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
        fs.close().unwrap();
        fsck_clean(&img.path);
    }
    // Hashed directories too.
    let img = mkfs(16, &["-b", "1024"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let d = fs.mkdir(ROOT_INO, b"big", 0o755, 0, 0).unwrap();
    let mut inos = Vec::new();
    for i in 0..300 {
        inos.push(create_file(
            &mut fs,
            d,
            format!("file-{i:04}").as_bytes(),
            0o644,
        ));
    }
    fs.close().unwrap();
    let out = Command::new("e2fsck")
        .args(["-fyD"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(8) <= 1,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        debugfs(&img.path, "stat /big").contains("Flags: 0x81000"),
        "indexed after -D"
    );
    let mut fs = Fs::open(&img.path, true).unwrap();
    fs.set_entry(d, b"file-0123", inos[7], FileType::Regular)
        .unwrap();
    fs.set_entry(d, b"file-0007", inos[123], FileType::Regular)
        .unwrap();
    assert_eq!(fs.lookup(d, b"file-0123").unwrap(), Some(inos[7]));
    fs.close().unwrap();
    fsck_clean(&img.path);
}

#[test]
fn a_filesystem_larger_than_its_device_is_refused() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.set_len(12 << 20).unwrap();
    for rw in [false, true] {
        let err = Fs::open(&img.path, rw)
            .err()
            .expect("blocks past the end of the device");
        assert_eq!(err.errno(), libc::EUCLEAN, "{err}");
        assert!(err.to_string().contains("device holds"), "{err}");
    }
}

#[test]
fn an_indirect_block_over_metadata_is_refused() {
    require_tools!();
    let img = mkfs(
        16,
        &["-b", "1024", "-O", "^extent,^64bit,^flex_bg,^metadata_csum"],
    );
    let mut fs = Fs::open(&img.path, true).unwrap();
    let f = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    write_data(&mut fs, &img.path, f, &[5u8; 20 * 1024]);
    fs.close().unwrap();
    let stats = debugfs(&img.path, "stats");
    let itable: u64 = stats
        .split("inode table at ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // i_block[12], the single indirect block, is 40 + 48 bytes into the inode.
    let at = test_support::e2fs::inode_offset(&img.path, u64::from(f), 1024) + 88;
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    dev.write_all_at(&(itable as u32 + 2).to_le_bytes(), at)
        .unwrap();
    let mut fs = Fs::open(&img.path, true).unwrap();
    let mut inode = fs.read_inode(f).unwrap();
    assert_eq!(fs.map(f, &inode, 12, 1).unwrap_err().errno(), libc::EUCLEAN);
    assert_eq!(
        fs.allocate_unwritten(f, &mut inode, 30, 1)
            .unwrap_err()
            .errno(),
        libc::EUCLEAN
    );
    assert_eq!(
        fs.punch(f, &mut inode, 5, None).unwrap_err().errno(),
        libc::EUCLEAN
    );
}
