//! Directories, links, symlinks and readdir cookies (linear and htree directories).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use common::{create_file, debugfs, debugfs_bytes, fsck_clean, list, mkfs, Rng};
use ext2fs::{FileType, Fs, Ino, ROOT_INO};

fn dir_ops(extra: &[&str]) {
    let img = mkfs(32, extra);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let bs = fs.block_size() as usize;
    let root_links = fs.read_inode(ROOT_INO).unwrap().links();

    let a = fs.mkdir(ROOT_INO, b"a", 0o750, 1000, 100).unwrap();
    let ai = fs.read_inode(a).unwrap();
    assert!(ai.is_dir());
    assert_eq!(
        (ai.mode() & 0o7777, ai.uid(), ai.gid(), ai.links()),
        (0o750, 1000, 100, 2)
    );
    assert_eq!(ai.size(), bs as u64);
    assert!(ai.crtime().is_some());
    assert_eq!(fs.read_inode(ROOT_INO).unwrap().links(), root_links + 1);
    let b = fs.mkdir(a, b"b", 0o755, 0, 0).unwrap();
    assert_eq!(fs.read_inode(a).unwrap().links(), 3);
    assert_eq!(fs.lookup(ROOT_INO, b"a").unwrap(), Some(a));
    assert_eq!(fs.lookup(a, b"..").unwrap(), Some(ROOT_INO));
    assert_eq!(fs.lookup(a, b"nope").unwrap(), None);
    assert_eq!(
        fs.mkdir(ROOT_INO, b"a", 0o755, 0, 0).unwrap_err().errno(),
        libc::EEXIST
    );

    let f = create_file(&mut fs, a, b"f", 0o644);
    fs.link(a, b"f2", f, FileType::Regular).unwrap();
    let mut fi = fs.read_inode(f).unwrap();
    fi.set_links(2);
    fs.write_inode(f, &fi).unwrap();
    assert_eq!(
        fs.link(a, b"f2", f, FileType::Regular).unwrap_err().errno(),
        libc::EEXIST
    );

    let fast = fs.symlink(a, b"s", b"target", 1000, 1000).unwrap();
    let long_target = vec![b'x'; bs / 2 + 100];
    let slow = fs.symlink(a, b"L", &long_target, 0, 0).unwrap();
    assert_eq!(fs.readlink(fast).unwrap(), b"target");
    assert_eq!(fs.readlink(slow).unwrap(), long_target);
    assert_eq!(fs.read_inode(fast).unwrap().uid(), 1000);
    assert_eq!(
        fs.symlink(a, b"big", &vec![b'y'; bs], 0, 0)
            .unwrap_err()
            .errno(),
        libc::ENAMETOOLONG
    );
    assert_eq!(fs.readlink(f).unwrap_err().errno(), libc::EINVAL);

    let mut entries = list(&fs, a);
    entries.sort();
    let names: Vec<&[u8]> = entries.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(
        names,
        [b".".as_slice(), b"..", b"L", b"b", b"f", b"f2", b"s"]
    );
    let types: HashMap<Vec<u8>, FileType> = {
        let mut m = HashMap::new();
        fs.read_dir(a, 0, |e| {
            m.insert(e.name.to_vec(), e.ftype);
            true
        })
        .unwrap();
        m
    };
    assert_eq!(types[b"b".as_slice()], FileType::Dir);
    assert_eq!(types[b"s".as_slice()], FileType::Symlink);
    assert_eq!(types[b"f".as_slice()], FileType::Regular);
    assert!(entries.contains(&(b"..".to_vec(), ROOT_INO)));

    assert!(!fs.is_dir_empty(a).unwrap());
    assert!(fs.is_dir_empty(b).unwrap());
    assert_eq!(fs.rmdir(a, b"f").unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(
        fs.rmdir(ROOT_INO, b"a").unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    assert_eq!(fs.rmdir(a, b"b").unwrap(), b);
    fs.free_inode(b).unwrap();
    assert_eq!(fs.read_inode(a).unwrap().links(), 2);

    fs.unlink(a, b"f2").unwrap();
    assert_eq!(fs.unlink(a, b"f2").unwrap_err().errno(), libc::ENOENT);
    fi = fs.read_inode(f).unwrap();
    fi.set_links(1);
    fs.write_inode(f, &fi).unwrap();
    fs.close().unwrap();
    fsck_clean(&img.path);

    // Independent reader.
    assert!(debugfs(&img.path, "stat /a/s").contains("Fast link dest: \"target\""));
    assert_eq!(debugfs_bytes(&img.path, "cat /a/L"), long_target);
    let ls = debugfs(&img.path, "ls -l /a");
    assert!(
        ls.contains(" f") && ls.contains(" L") && !ls.contains(" b ") && !ls.contains("f2"),
        "{ls}"
    );
}

/// A rename that moves a directory: new entry, old entry gone, ".." re-pointed, counts fixed.
#[test]
fn moving_a_directory() {
    require_tools!();
    let img = mkfs(16, &[]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, 0).unwrap();
    let b = fs.mkdir(ROOT_INO, b"b", 0o755, 0, 0).unwrap();
    let c = fs.mkdir(a, b"c", 0o755, 0, 0).unwrap();
    fs.link(b, b"c", c, FileType::Dir).unwrap();
    fs.unlink(a, b"c").unwrap();
    fs.set_dotdot(c, b).unwrap();
    for (dir, links) in [(a, 2), (b, 3)] {
        let mut inode = fs.read_inode(dir).unwrap();
        inode.set_links(links);
        fs.write_inode(dir, &inode).unwrap();
    }
    assert_eq!(fs.lookup(c, b"..").unwrap(), Some(b));
    assert_eq!(fs.lookup(b, b"c").unwrap(), Some(c));
    assert_eq!(fs.lookup(a, b"c").unwrap(), None);
    fs.close().unwrap();
    fsck_clean(&img.path);
    let mut ro = Fs::open(&img.path, false).unwrap();
    assert_eq!(ro.set_dotdot(c, a).unwrap_err().errno(), libc::EROFS);
}

#[test]
fn directory_operations_4k() {
    require_tools!();
    dir_ops(&["-b", "4096"]);
}

#[test]
fn directory_operations_1k() {
    require_tools!();
    dir_ops(&["-b", "1024"]);
}

#[test]
fn directory_operations_ext3_no_extents() {
    require_tools!();
    dir_ops(&["-t", "ext3", "-O", "^metadata_csum"]);
}

/// Lists `dir` in chunks through cookies while adding and removing entries between chunks.
/// Entries present all along must be seen exactly once; none may be seen twice.
fn list_with_churn(
    fs: &mut Fs,
    dir: Ino,
    model: &mut BTreeMap<Vec<u8>, Ino>,
    rng: &mut Rng,
    tag: &str,
) {
    let mut stable: Vec<Vec<u8>> = model.keys().cloned().collect();
    stable.extend([b".".to_vec(), b"..".to_vec()]);
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut cookie = 0;
    let mut added = 0;
    loop {
        let mut got = 0;
        let mut next = cookie;
        fs.read_dir(dir, cookie, |e| {
            *seen.entry(e.name.to_vec()).or_default() += 1;
            assert!(
                e.next_cookie > next || got == 0 && e.next_cookie > cookie,
                "cookies increase"
            );
            assert!(e.next_cookie < 1 << 63, "cookie fits a signed offset");
            next = e.next_cookie;
            got += 1;
            got < 97
        })
        .unwrap();
        if got == 0 {
            break;
        }
        cookie = next;
        for _ in 0..3 {
            let victim = random_name(model, rng);
            let ino = model.remove(&victim).unwrap();
            fs.unlink(dir, &victim).unwrap();
            fs.free_inode(ino).unwrap();
            stable.retain(|n| *n != victim);
        }
        for _ in 0..3 {
            let name = format!("{tag}-new-{added}").into_bytes();
            added += 1;
            let ino = create_file(fs, dir, &name, 0o600);
            model.insert(name, ino);
        }
    }
    for name in &stable {
        assert_eq!(
            seen.get(name),
            Some(&1),
            "stable entry {:?}",
            String::from_utf8_lossy(name)
        );
    }
    for (name, n) in &seen {
        assert_eq!(
            *n,
            1,
            "entry {:?} seen {n} times",
            String::from_utf8_lossy(name)
        );
    }
}

fn random_name(model: &BTreeMap<Vec<u8>, Ino>, rng: &mut Rng) -> Vec<u8> {
    let i = rng.below(model.len() as u64) as usize;
    model.keys().nth(i).cloned().expect("non-empty model")
}

fn assert_listing_matches(fs: &Fs, dir: Ino, model: &BTreeMap<Vec<u8>, Ino>) {
    let mut got: BTreeMap<Vec<u8>, Ino> = list(fs, dir).into_iter().collect();
    assert_eq!(got.remove(b".".as_slice()), Some(dir));
    assert!(got.remove(b"..".as_slice()).is_some());
    assert_eq!(&got, model);
}

fn is_htree(path: &Path, dir: &str) -> bool {
    debugfs(path, &format!("htree {dir}")).contains("Root node dump")
}

#[test]
fn ten_thousand_entries_linear_then_htree() {
    require_tools!();
    let img = mkfs(128, &["-b", "1024", "-N", "20000"]);
    let mut rng = Rng(0x5eed_1234);
    let mut model = BTreeMap::new();
    let mut fs = Fs::open(&img.path, true).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap();
    for i in 0..10_000 {
        let name = format!("file-{i:05}").into_bytes();
        let ino = create_file(&mut fs, d, &name, 0o644);
        model.insert(name, ino);
    }
    assert_listing_matches(&fs, d, &model);
    assert_eq!(
        fs.lookup(d, b"file-09999").unwrap(),
        model.get(b"file-09999".as_slice()).copied()
    );
    list_with_churn(&mut fs, d, &mut model, &mut rng, "lin");
    assert_listing_matches(&fs, d, &model);
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert!(
        !is_htree(&img.path, "/d"),
        "libext2fs keeps a new directory linear"
    );

    // Index the directory, then keep using it: dx_link inserts and leaf splits.
    let out = Command::new("e2fsck")
        .arg("-fyD")
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap() <= 1,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(is_htree(&img.path, "/d"), "e2fsck -D indexed the directory");
    assert!(
        debugfs(&img.path, "htree /d").contains("Indirect levels: 1"),
        "a two-level index (1 KiB blocks)"
    );
    let mut fs = Fs::open(&img.path, true).unwrap();
    assert_listing_matches(&fs, d, &model);
    list_with_churn(&mut fs, d, &mut model, &mut rng, "dx");
    for i in 0..2000 {
        let name = format!("more-{i:05}-{}", rng.below(1_000_000)).into_bytes();
        let ino = create_file(&mut fs, d, &name, 0o644);
        model.insert(name, ino);
    }
    for _ in 0..700 {
        let victim = random_name(&model, &mut rng);
        let ino = model.remove(&victim).unwrap();
        fs.unlink(d, &victim).unwrap();
        fs.free_inode(ino).unwrap();
    }
    assert_listing_matches(&fs, d, &model);
    list_with_churn(&mut fs, d, &mut model, &mut rng, "dx2");
    assert!(!fs.is_dir_empty(d).unwrap());
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert!(is_htree(&img.path, "/d"), "still indexed");
    // `ls -p` prints one "/ino/mode/uid/gid/name/size/" line per entry.
    let ls = debugfs(&img.path, "ls -p /d");
    // (Entries emptied in place, first in their block, show up with inode 0.)
    let names: Vec<&str> = ls
        .lines()
        .filter(|l| l.split('/').nth(1).is_some_and(|ino| ino != "0"))
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| *n != "." && *n != "..")
        .collect();
    let listed: std::collections::BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let expected: std::collections::BTreeSet<String> = model
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let missing: Vec<_> = expected.difference(&listed).take(5).collect();
    let extra: Vec<_> = listed.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "debugfs listing: missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(names.len(), model.len(), "no duplicates");
}

/// `link_new` and `unlink_hinted` (the server's index-driven paths): entries land where
/// `room` says, fill the block before growing the directory, are found again by libext2fs'
/// own lookup and by e2fsck, with and without metadata_csum and the filetype feature.
fn hinted_links(extra: &[&str]) {
    use std::collections::BTreeSet;
    let img = mkfs(32, extra);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let bs = u64::from(fs.block_size());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0).unwrap();
    let mut room = BTreeSet::new();
    let mut blocks = BTreeMap::new();
    // Enough names for several blocks, of every length class.
    for i in 0..(bs as usize / 8) {
        let name = format!("n{i}-{}", "x".repeat(i % 40));
        let ino = create_file_unlinked(&mut fs, d);
        let lblk = fs
            .link_new(d, name.as_bytes(), ino, FileType::Regular, &mut room)
            .unwrap()
            .expect("a linear directory says where");
        blocks.insert(name, (lblk, ino));
    }
    let size = fs.read_inode(d).unwrap().size();
    assert!(
        size > 2 * bs,
        "the test wants a directory of several blocks"
    );
    for (name, (lblk, ino)) in &blocks {
        assert_eq!(fs.lookup(d, name.as_bytes()).unwrap(), Some(*ino), "{name}");
        assert!(*lblk < size / bs);
    }
    // Remove every third name with a right hint, a wrong hint, or none; each reports its
    // block, and new names go back into those blocks: the directory does not grow.
    let mut removed = 0;
    for (k, (name, (lblk, ino))) in blocks.iter().enumerate().filter(|(k, _)| k % 3 == 0) {
        let hint = [Some(*lblk), Some(lblk + 1), None][k % 9 / 3];
        let got = fs.unlink_hinted(d, name.as_bytes(), hint).unwrap();
        assert_eq!(got, Some(*lblk), "{name}");
        room.insert(*lblk);
        removed += 1;
        fs.free_inode(*ino).unwrap();
        assert_eq!(fs.lookup(d, name.as_bytes()).unwrap(), None);
        assert_eq!(
            fs.unlink_hinted(d, name.as_bytes(), hint)
                .unwrap_err()
                .errno(),
            libc::ENOENT
        );
    }
    for i in 0..removed {
        let ino = create_file_unlinked(&mut fs, d);
        let name = format!("again-{i}");
        fs.link_new(d, name.as_bytes(), ino, FileType::Regular, &mut room)
            .unwrap();
        assert_eq!(fs.lookup(d, name.as_bytes()).unwrap(), Some(ino));
    }
    assert_eq!(
        fs.read_inode(d).unwrap().size(),
        size,
        "freed room was reused"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// A regular file with one link and no name yet (the caller links it).
fn create_file_unlinked(fs: &mut Fs, dir: Ino) -> Ino {
    let ino = fs.new_inode(dir, libc::S_IFREG | 0o644).unwrap();
    let mut inode = ext2fs::Inode::new(libc::S_IFREG | 0o644);
    inode.set_links(1);
    fs.write_new_inode(ino, &inode).unwrap();
    ino
}

#[test]
fn hinted_links_4k_csum() {
    hinted_links(&["-b", "4096"]);
}

#[test]
fn hinted_links_1k_no_csum_no_filetype() {
    hinted_links(&["-b", "1024", "-O", "^metadata_csum,^filetype"]);
}
