//! Block mapping: unwritten allocation, conversion with extent splits and merges, punching,
//! huge sparse files, block-mapped files, the data path, and running out of space.

mod common;

use std::path::Path;

use common::{
    create_file, debugfs, debugfs_bytes, fsck_clean, have_tools, mkfs, write_data, Rng, S_IFREG,
};
use ext2fs::{Fs, Inode, MapKind, Mapping, ROOT_INO};

/// Leaf extents as debugfs shows them: (logical start, length, physical start, unwritten).
fn debugfs_extents(path: &Path, file: &str) -> Vec<(u64, u64, u64, bool)> {
    debugfs(path, &format!("ex -l {file}"))
        .lines()
        .skip(1)
        .filter_map(|line| {
            let t: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == '/')
                .filter(|s| !s.is_empty())
                .collect();
            // level max idx count lstart - lend pstart - pend len [Uninit]
            if t.len() < 11 || t[5] != "-" || t[8] != "-" {
                return None;
            }
            let n = |i: usize| t[i].parse::<u64>().unwrap();
            Some((n(4), n(10), n(7), t.get(11) == Some(&"Uninit")))
        })
        .collect()
}

/// Our view of the same thing: allocated runs of `map` over the whole file.
fn allocated_runs(maps: &[Mapping]) -> Vec<(u64, u64, u64, bool)> {
    maps.iter()
        .filter_map(|m| match m.kind {
            MapKind::Hole => None,
            MapKind::Mapped { pblk } => Some((m.lblk, m.len, pblk, false)),
            MapKind::Unwritten { pblk } => Some((m.lblk, m.len, pblk, true)),
        })
        .collect()
}

fn kinds(maps: &[Mapping]) -> Vec<(u64, u64, char)> {
    maps.iter()
        .map(|m| {
            let k = match m.kind {
                MapKind::Hole => 'H',
                MapKind::Mapped { .. } => 'M',
                MapKind::Unwritten { .. } => 'U',
            };
            (m.lblk, m.len, k)
        })
        .collect()
}

fn pblk(m: &Mapping) -> u64 {
    match m.kind {
        MapKind::Mapped { pblk } | MapKind::Unwritten { pblk } => pblk,
        MapKind::Hole => panic!("hole"),
    }
}

fn split_and_merge(extra: &[&str]) {
    let img = mkfs(32, extra);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let bs = u64::from(fs.block_size());
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();

    fs.allocate_unwritten(ino, &mut inode, 0, 100).unwrap();
    let m = fs.map(ino, &inode, 0, 100).unwrap();
    assert_eq!(kinds(&m), [(0, 100, 'U')]);
    let p0 = pblk(&m[0]);
    assert_eq!(inode.blocks_512(), 100 * bs / 512);
    assert_eq!(
        fs.read_inode(ino).unwrap().blocks_512(),
        inode.blocks_512(),
        "inode written"
    );

    fs.mark_written(ino, &mut inode, 10, 10).unwrap();
    let m = fs.map(ino, &inode, 0, 100).unwrap();
    assert_eq!(kinds(&m), [(0, 10, 'U'), (10, 10, 'M'), (20, 80, 'U')]);
    assert_eq!(
        m.iter().map(pblk).collect::<Vec<_>>(),
        [p0, p0 + 10, p0 + 20],
        "blocks never move"
    );

    fs.mark_written(ino, &mut inode, 0, 10).unwrap();
    assert_eq!(
        kinds(&fs.map(ino, &inode, 0, 100).unwrap()),
        [(0, 20, 'M'), (20, 80, 'U')]
    );
    fs.mark_written(ino, &mut inode, 90, 20).unwrap();
    fs.allocate_unwritten(ino, &mut inode, 95, 20).unwrap();
    let m = fs.map(ino, &inode, 0, 120).unwrap();
    assert_eq!(
        kinds(&m),
        [
            (0, 20, 'M'),
            (20, 70, 'U'),
            (90, 10, 'M'),
            (100, 15, 'U'),
            (115, 5, 'H')
        ]
    );
    assert_eq!(
        pblk(&m[2]),
        p0 + 90,
        "existing mapping untouched by allocate_unwritten"
    );

    fs.punch(ino, &mut inode, 30, Some(39)).unwrap();
    let m = fs.map(ino, &inode, 0, 120).unwrap();
    assert_eq!(
        kinds(&m),
        [
            (0, 20, 'M'),
            (20, 10, 'U'),
            (30, 10, 'H'),
            (40, 50, 'U'),
            (90, 10, 'M'),
            (100, 15, 'U'),
            (115, 5, 'H')
        ]
    );
    assert_eq!(
        fs.map(ino, &inode, 35, 10)
            .unwrap()
            .iter()
            .map(|m| (m.lblk, m.len))
            .collect::<Vec<_>>(),
        [(35, 5), (40, 5)]
    );
    assert!(fs.map(ino, &inode, 7, 0).unwrap().is_empty());
    assert_eq!(fs.next_hole(ino, &inode, 0).unwrap(), 30);
    assert_eq!(fs.next_hole(ino, &inode, 40).unwrap(), 115);
    let d = fs.next_data(ino, &inode, 30).unwrap().unwrap();
    assert_eq!(
        (d.lblk, d.len, d.kind),
        (40, 50, MapKind::Unwritten { pblk: p0 + 40 })
    );
    assert_eq!(fs.next_data(ino, &inode, 115).unwrap(), None);
    // 105 data blocks, plus one extent tree block once five extents overflowed the root.
    assert_eq!(inode.blocks_512(), 106 * bs / 512);

    inode.set_size(115 * bs);
    fs.write_inode(ino, &inode).unwrap();
    let ours = allocated_runs(&fs.map(ino, &inode, 0, 115).unwrap());
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert_eq!(debugfs_extents(&img.path, "/f"), ours);
}

#[test]
fn split_and_merge_4k() {
    require_tools!();
    split_and_merge(&["-b", "4096"]);
}

#[test]
fn split_and_merge_1k() {
    require_tools!();
    split_and_merge(&["-b", "1024"]);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Blk {
    Hole,
    Unwritten(u64),
    Written(u64),
}

/// Random allocate / convert / punch against a per-block model, checking `map` after every
/// step; many small conversions grow the extent tree past its root.
#[test]
fn random_ops_match_a_model() {
    require_tools!();
    let img = mkfs(16, &["-b", "1024"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    const N: u64 = 3000;
    let mut model = vec![Blk::Hole; N as usize];
    let mut rng = Rng(42);
    let mut saw_depth = false;
    for step in 0..300 {
        let start = rng.below(N);
        let max_len = if rng.below(4) == 0 { 400 } else { 8 };
        let len = 1 + rng.below(max_len).min(N - start - 1);
        match rng.below(10) {
            0..=3 => {
                fs.allocate_unwritten(ino, &mut inode, start, len).unwrap();
                for (i, m) in fs.map(ino, &inode, start, len).unwrap().iter().enumerate() {
                    assert_ne!(m.kind, MapKind::Hole, "step {step}: hole left at {i}");
                }
                for l in start..start + len {
                    if model[l as usize] == Blk::Hole {
                        let m = fs.map(ino, &inode, l, 1).unwrap();
                        model[l as usize] = Blk::Unwritten(pblk(&m[0]));
                    }
                }
            }
            4..=7 => {
                fs.mark_written(ino, &mut inode, start, len).unwrap();
                for b in &mut model[start as usize..(start + len) as usize] {
                    if let Blk::Unwritten(p) = *b {
                        *b = Blk::Written(p);
                    }
                }
            }
            _ => {
                fs.punch(ino, &mut inode, start, Some(start + len - 1))
                    .unwrap();
                model[start as usize..(start + len) as usize].fill(Blk::Hole);
            }
        }
        // Compare block by block, and check runs are maximal and cover exactly.
        let maps = fs.map(ino, &inode, 0, N).unwrap();
        assert_eq!(maps.first().unwrap().lblk, 0);
        assert_eq!(maps.last().unwrap().end(), N);
        for w in maps.windows(2) {
            assert_eq!(w[0].end(), w[1].lblk, "step {step}: runs are contiguous");
        }
        for m in &maps {
            for i in 0..m.len {
                let got = match m.kind {
                    MapKind::Hole => Blk::Hole,
                    MapKind::Unwritten { pblk } => Blk::Unwritten(pblk + i),
                    MapKind::Mapped { pblk } => Blk::Written(pblk + i),
                };
                assert_eq!(
                    got,
                    model[(m.lblk + i) as usize],
                    "step {step} block {}",
                    m.lblk + i
                );
            }
        }
        if step % 50 == 49 {
            saw_depth |= debugfs_extents(&img.path, "/f").len() > 4
                && debugfs(&img.path, "ex /f").contains(" 1/ 1 ");
        }
    }
    // Written blocks past EOF are an error for e2fsck; the server always sets the size.
    inode.set_size(N * 1024);
    fs.write_inode(ino, &inode).unwrap();
    let allocated = model.iter().filter(|b| **b != Blk::Hole).count() as u64;
    assert!(
        inode.blocks_512() >= allocated * 2,
        "i_blocks counts data (and tree) blocks"
    );
    assert!(inode.blocks_512() <= (allocated + 8) * 2);
    let ours = allocated_runs(&fs.map(ino, &inode, 0, N).unwrap());
    fs.close().unwrap();
    fsck_clean(&img.path);
    let theirs = debugfs_extents(&img.path, "/f");
    // debugfs lists extents; ours merges physically contiguous runs of the same kind.
    let expand = |v: &[(u64, u64, u64, bool)]| -> Vec<(u64, u64, bool)> {
        v.iter()
            .flat_map(|&(l, n, p, u)| (0..n).map(move |i| (l + i, p + i, u)))
            .collect()
    };
    assert_eq!(expand(&theirs), expand(&ours));
    assert!(
        saw_depth || theirs.len() > 4,
        "the tree grew beyond the inode root"
    );
}

#[test]
fn sequential_conversions_merge_into_one_extent() {
    require_tools!();
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    // Append-style: allocate and convert block by block.
    for l in 0..300 {
        fs.allocate_unwritten(ino, &mut inode, l, 1).unwrap();
        fs.mark_written(ino, &mut inode, l, 1).unwrap();
    }
    inode.set_size(300 * 4096);
    fs.write_inode(ino, &inode).unwrap();
    let m = fs.map(ino, &inode, 0, 300).unwrap();
    assert_eq!(kinds(&m), [(0, 300, 'M')]);
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert_eq!(
        debugfs_extents(&img.path, "/f").len(),
        1,
        "one extent, not 300"
    );
}

#[test]
fn data_written_at_mapped_blocks_reads_back() {
    require_tools!();
    for bs in ["1024", "4096"] {
        let img = mkfs(16, &["-b", bs]);
        let mut fs = Fs::open(&img.path, true).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let a = create_file(&mut fs, ROOT_INO, b"a", 0o644);
        let b = create_file(&mut fs, ROOT_INO, b"b", 0o644);
        // Interleave allocations so that each file gets several extents.
        for _ in data.chunks(50_000) {
            let mut ia = fs.read_inode(a).unwrap();
            let off = (ia.size() / u64::from(fs.block_size())) as u64;
            fs.allocate_unwritten(a, &mut ia, off, 1).unwrap();
            let mut ib = fs.read_inode(b).unwrap();
            fs.allocate_unwritten(b, &mut ib, 0, 1 + off).unwrap();
        }
        write_data(&mut fs, &img.path, a, &data);
        write_data(&mut fs, &img.path, b, &data[..12_345]);
        fs.close().unwrap();
        fsck_clean(&img.path);
        assert_eq!(debugfs_bytes(&img.path, "cat /a"), data, "bs {bs}");
        assert_eq!(
            debugfs_bytes(&img.path, "cat /b"),
            &data[..12_345],
            "bs {bs}"
        );
    }
}

#[test]
fn huge_sparse_files() {
    require_tools!();
    let img = mkfs(64, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"sparse", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    let at = (5u64 << 30) / 4096; // 5 GiB
    fs.allocate_unwritten(ino, &mut inode, at, 16).unwrap();
    inode.set_size((5 << 30) + 16 * 4096);
    fs.write_inode(ino, &inode).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(
        kinds(&fs.map(ino, &inode, 0, at + 16).unwrap()),
        [(0, at, 'H'), (at, 16, 'U')]
    );
    assert_eq!(
        fs.next_data(ino, &inode, 0)
            .unwrap()
            .map(|m| (m.lblk, m.len)),
        Some((at, 16))
    );
    assert_eq!(fs.next_hole(ino, &inode, at).unwrap(), at + 16);
    fs.mark_written(ino, &mut inode, at, 16).unwrap();

    // The far end: the last addressable blocks of a 16 TiB file.
    // The last block below the maximum file size ((2^32 - 1) blocks).
    let last = (1u64 << 32) - 9;
    fs.allocate_unwritten(ino, &mut inode, last, 8).unwrap();
    assert_eq!(
        fs.allocate_unwritten(ino, &mut inode, last + 4, 8)
            .unwrap_err()
            .errno(),
        libc::EFBIG
    );
    inode.set_size(last * 4096 + 8 * 4096);
    fs.write_inode(ino, &inode).unwrap();
    assert_eq!(
        kinds(&fs.map(ino, &inode, 0, 1 << 32).unwrap()),
        [
            (0, at, 'H'),
            (at, 16, 'M'),
            (at + 16, last - at - 16, 'H'),
            (last, 8, 'U'),
            (last + 8, 1, 'H')
        ]
    );
    assert_eq!(
        fs.next_data(ino, &inode, at + 16).unwrap().map(|m| m.lblk),
        Some(last)
    );
    assert!(
        t.elapsed().as_millis() < 2000,
        "no per-block walking over holes: {:?}",
        t.elapsed()
    );
    assert!(inode.size() <= fs.info().max_file_size);
    fs.close().unwrap();
    fsck_clean(&img.path);
    let stat = debugfs(&img.path, "stat /sparse");
    assert!(
        stat.contains(&format!("Size: {}", last * 4096 + 8 * 4096)),
        "{stat}"
    );
    assert_eq!(
        debugfs_extents(&img.path, "/sparse")
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        [at, last]
    );
}

#[test]
fn block_mapped_files() {
    require_tools!();
    let img = mkfs(32, &["-t", "ext3", "-b", "1024", "-O", "^metadata_csum"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    assert!(!fs.info().has_extents);
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    assert!(!inode.uses_extents());
    // Block-mapped files have no unwritten state: holes get zeroed, written blocks.
    fs.allocate_unwritten(ino, &mut inode, 0, 40).unwrap();
    fs.allocate_unwritten(ino, &mut inode, 70_000, 10).unwrap(); // double-indirect range
    fs.mark_written(ino, &mut inode, 0, 100).unwrap();
    let m = fs.map(ino, &inode, 0, 70_010).unwrap();
    let k = kinds(&m);
    assert_eq!(k.iter().filter(|r| r.2 == 'U').count(), 0);
    assert_eq!(
        k.iter().filter(|r| r.2 == 'M').map(|r| r.1).sum::<u64>(),
        50
    );
    assert_eq!(k.first().map(|r| (r.0, r.2)), Some((0, 'M')));
    assert_eq!(
        k.last().copied().map(|r| (r.0, r.1, r.2)),
        Some((70_000, 10, 'M'))
    );
    assert_eq!(fs.next_hole(ino, &inode, 0).unwrap(), 40);
    assert_eq!(
        fs.next_data(ino, &inode, 40).unwrap().map(|m| m.lblk),
        Some(70_000)
    );
    assert_eq!(fs.next_data(ino, &inode, 70_010).unwrap(), None);
    fs.punch(ino, &mut inode, 0, Some(9)).unwrap();
    // Blocks 10-11 are direct, 12+ follow the indirect block: two physical runs.
    let after_punch = kinds(&fs.map(ino, &inode, 0, 40).unwrap());
    assert_eq!(after_punch[0], (0, 10, 'H'));
    assert!(
        after_punch[1..].iter().all(|r| r.2 == 'M')
            && after_punch.last().unwrap().0 + after_punch.last().unwrap().1 == 40
    );
    inode.set_size(70_010 * 1024);
    fs.write_inode(ino, &inode).unwrap();

    // One block in the double-indirect range (1 KiB blocks: 12 direct + 256 indirect, then
    // 256 per double-indirect child): only that block goes.
    let h = create_file(&mut fs, ROOT_INO, b"h", 0o644);
    let mut hi = fs.read_inode(h).unwrap();
    fs.allocate_unwritten(h, &mut hi, 0, 800).unwrap();
    let one = 12 + 256 + 256;
    fs.punch(h, &mut hi, one, Some(one)).unwrap();
    let holes: Vec<_> = kinds(&fs.map(h, &hi, 0, 800).unwrap())
        .into_iter()
        .filter(|r| r.2 == 'H')
        .collect();
    assert_eq!(holes, [(one, 1, 'H')]);
    hi.set_size(800 * 1024);
    fs.write_inode(h, &hi).unwrap();

    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
    let g = create_file(&mut fs, ROOT_INO, b"g", 0o644);
    write_data(&mut fs, &img.path, g, &data);
    fs.close().unwrap();
    fsck_clean(&img.path);
    assert_eq!(debugfs_bytes(&img.path, "cat /g"), data);
}

/// Fill a tiny filesystem: every failure is ENOSPC and leaves it consistent.
#[test]
fn enospc_is_clean() {
    require_tools!();
    let img = mkfs(2, &["-b", "1024", "-O", "^has_journal", "-N", "64"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"big", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    let mut lblk = 0;
    let err = loop {
        // Leave a gap after each chunk so that the file gets many extents.
        match fs.allocate_unwritten(ino, &mut inode, lblk, 37) {
            Ok(()) => lblk += 40,
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert!(lblk > 500, "allocated {lblk} blocks before running out");
    // Converting every other block needs extent splits, which need blocks: refused cleanly.
    let mut refused = 0;
    for l in (0..lblk).step_by(2) {
        if let Err(e) = fs.mark_written(ino, &mut inode, l, 1) {
            assert_eq!(e.errno(), libc::ENOSPC, "{e}");
            refused += 1;
        }
    }
    assert!(refused > 0, "splits ran out of space");
    assert_eq!(inode.blocks_512(), fs.read_inode(ino).unwrap().blocks_512());
    inode.set_size(lblk * 1024);
    fs.write_inode(ino, &inode).unwrap();

    // Namespace operations fail cleanly too.
    let mut made = 0;
    let err = loop {
        let name = format!("d{made}");
        match fs.mkdir(ROOT_INO, name.as_bytes(), 0o755, 0, 0) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    let slow = vec![b's'; 200];
    let symlink_err = fs.symlink(ROOT_INO, b"slow", &slow, 0, 0).unwrap_err();
    assert_eq!(symlink_err.errno(), libc::ENOSPC);
    let n = fs.new_inode(ROOT_INO, S_IFREG | 0o600);
    if let Ok(n) = n {
        fs.free_inode(n).unwrap();
    }
    fs.close().unwrap();
    fsck_clean(&img.path);

    // Freeing the big file gives the space back.
    let mut fs = Fs::open(&img.path, true).unwrap();
    fs.unlink(ROOT_INO, b"big").unwrap();
    fs.free_inode(ino).unwrap();
    assert!(fs.info().free_blocks > 500);
    let _: Inode = fs.read_inode(ino).unwrap();
    fs.close().unwrap();
    fsck_clean(&img.path);
}

#[test]
fn freed_blocks_are_logged_for_invalidation() {
    if !have_tools() {
        return;
    }
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    fs.allocate_unwritten(ino, &mut inode, 0, 64).unwrap();
    let first = pblk(&fs.map(ino, &inode, 0, 1).unwrap()[0]);
    let _ = fs.take_freed();
    fs.punch(ino, &mut inode, 0, None).unwrap();
    let freed = fs.take_freed();
    let total: u64 = freed.iter().map(|r| r.1).sum();
    assert_eq!(total, 64, "every punched block is logged: {freed:?}");
    assert!(
        freed
            .iter()
            .any(|&(start, n)| start <= first && first < start + n),
        "{freed:?} misses {first}"
    );
    assert!(fs.take_freed().is_empty(), "taking empties the log");
    // A metadata block: an xattr too big for the inode goes to its own block.
    fs.xattr_set(
        ino,
        b"user.big",
        &vec![7u8; 3000],
        ext2fs::XattrSetMode::Any,
    )
    .unwrap();
    let xblock = fs.read_inode(ino).unwrap().file_acl();
    assert_ne!(xblock, 0, "the xattr went to an external block");
    let _ = fs.take_freed();
    // libext2fs keeps an emptied xattr block; freeing the inode releases it.
    fs.unlink(ROOT_INO, b"f").unwrap();
    let mut gone = fs.read_inode(ino).unwrap();
    gone.set_links(0);
    fs.write_inode(ino, &gone).unwrap();
    fs.free_inode(ino).unwrap();
    let freed = fs.take_freed();
    assert!(
        freed.contains(&(xblock, 1)),
        "the xattr block {xblock} is logged: {freed:?}"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// Where an inode lives on the device (debugfs `imap` is the oracle), and how deep its
/// extent tree is: the write path orders the size before conversions in a separate tree.
#[test]
fn written_inodes_are_logged_for_caches() {
    if !have_tools() {
        return;
    }
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    assert!(fs.take_written_inodes().contains(&ino), "a new inode");
    assert!(
        fs.take_written_inodes().is_empty(),
        "taking empties the log"
    );
    let _ = fs.read_inode(ino).unwrap();
    assert!(fs.take_written_inodes().is_empty(), "reads are not logged");
    let mut inode = fs.read_inode(ino).unwrap();
    inode.set_uid(1000);
    fs.write_inode(ino, &inode).unwrap();
    assert_eq!(fs.take_written_inodes(), vec![ino]);
    // libext2fs's own inode writes: an in-inode xattr is written by ext2fs_xattrs_write.
    fs.xattr_set(ino, b"user.small", b"v", ext2fs::XattrSetMode::Any)
        .unwrap();
    assert!(
        fs.take_written_inodes().contains(&ino),
        "the xattr write of {ino} is logged"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

/// Every metadata write reaches the device-write log, libext2fs's own included, so an
/// fsync that writes back only the logged ranges misses nothing.
#[test]
fn device_writes_cover_the_metadata_that_changed() {
    if !have_tools() {
        return;
    }
    let img = mkfs(16, &["-b", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    fs.take_device_writes().unwrap();
    let covers = |ranges: &[(u64, u64)], (offset, len): (u64, u64)| {
        ranges
            .iter()
            .any(|&(o, l)| o <= offset && offset + len <= o + l)
    };
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let written = fs.take_device_writes().unwrap();
    let slot = fs.inode_byte_range(ino).unwrap();
    assert!(
        covers(&written, slot),
        "{slot:?} (the new inode) in {written:?}"
    );
    let root = fs.inode_byte_range(ROOT_INO).unwrap();
    assert!(covers(&written, root), "the parent's inode in {written:?}");
    assert!(
        written.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0),
        "sorted and merged: {written:?}"
    );
    assert_eq!(
        fs.take_device_writes(),
        Some(vec![]),
        "taking empties the log"
    );
    let _ = fs.read_inode(ino).unwrap();
    assert_eq!(
        fs.take_device_writes(),
        Some(vec![]),
        "reads are not logged"
    );
    // A commit writes bitmaps, descriptors and the primary superblock (bytes 1024..2048).
    assert!(fs.commit().unwrap() > 0);
    let written = fs.take_device_writes().unwrap();
    assert!(
        covers(&written, (1024, 1024)),
        "the superblock in {written:?}"
    );
    fs.close().unwrap();
    fsck_clean(&img.path);
}

#[test]
fn inode_location_and_extent_depth() {
    if !have_tools() {
        return;
    }
    let img = mkfs(64, &["-b", "1024", "-N", "4096"]);
    let mut fs = Fs::open(&img.path, true).unwrap();
    let ino = create_file(&mut fs, ROOT_INO, b"f", 0o644);
    let mut inode = fs.read_inode(ino).unwrap();
    assert_eq!(
        inode.extent_depth(),
        Some(0),
        "a new file keeps its extents in the inode"
    );
    // Every other block: more extents than the inode holds (4), so the tree grows a level.
    for b in (0..40).step_by(2) {
        fs.allocate_unwritten(ino, &mut inode, b, 1).unwrap();
    }
    assert!(
        inode.extent_depth().unwrap() >= 1,
        "{:?}",
        inode.extent_depth()
    );
    fs.close().unwrap();
    let fs = Fs::open(&img.path, false).unwrap();
    for n in [2, ino, 4096] {
        let (offset, len) = fs.inode_byte_range(n).unwrap();
        let oracle = test_support::e2fs::inode_offset(&img.path, u64::from(n), 1024);
        assert_eq!(offset, oracle, "inode {n}");
        assert_eq!(len, 256);
    }
    assert_eq!(fs.inode_byte_range(0), None);
    assert_eq!(fs.inode_byte_range(4097), None);
}
