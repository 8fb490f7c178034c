//! Server behaviour a real kernel depends on (issue 18 item 5), one request at a time:
//! DEV_INVAL for freed data blocks, IOMAP_END after SHUTDOWN_FS, IOMAP_END arithmetic on
//! kernel-supplied numbers, and FUSE_WRITE in iomap mode. (The DEV_INVAL *ordering* needs
//! several kernel threads: tests/concurrent.rs.)

mod common;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::iomap::*;
use fuse_wire::structs::{IomapEndIn, IomapIo};
use kmodel::iomap::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use kmodel::{Kernel, NodeId};

const EIO: i32 = 5;
const EINVAL: i32 = 22;
const EFBIG: i32 = 27;

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) | 1)
        .collect()
}

/// Device byte address of each file block `[0, blocks)`, from FIEMAP.
fn device_blocks(k: &mut Kernel, f: NodeId, blocks: u64) -> Vec<u64> {
    let bs = k.block_size();
    let extents = k.fiemap(f, 0, blocks * bs, true).expect("fiemap");
    (0..blocks)
        .map(|b| {
            let e = extents
                .iter()
                .find(|e| e.logical <= b * bs && b * bs < e.logical + e.length)
                .unwrap_or_else(|| panic!("block {b} is not mapped: {extents:?}"));
            e.physical + (b * bs - e.logical)
        })
        .collect()
}

fn invalidated(k: &Kernel, addr: u64, bs: u64) -> bool {
    k.invalidated()
        .iter()
        .any(|&(off, len)| off <= addr && addr + bs <= off + len)
}

/// Punch and truncate free data blocks; each gets a DEV_INVAL, blocks still in use none.
fn freed_data_blocks_are_invalidated(fx: &Fixture, punch: bool) {
    let mut k = fx.mount();
    let bs = k.block_size();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(16 * bs, 3), 0).unwrap();
    let addrs = device_blocks(&mut k, f, 16);
    let before = k.invalidated().len();
    if punch {
        k.fallocate(
            f,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            2 * bs,
            2 * bs,
        )
        .unwrap();
    }
    k.truncate(f, 8 * bs).unwrap();
    assert!(k.invalidated().len() > before, "no DEV_INVAL at all");
    for (b, &addr) in addrs.iter().enumerate() {
        let freed = b >= 8 || (punch && (2..4).contains(&b));
        assert_eq!(
            invalidated(&k, addr, bs),
            freed,
            "file block {b} at device byte {addr}: freed {freed}; invalidations {:?}",
            k.invalidated()
        );
    }
    k.destroy().unwrap();
    kmodel::image::fsck(&fx.spec.image).unwrap();
}

#[test]
fn punched_and_truncated_extent_blocks_are_invalidated() {
    freed_data_blocks_are_invalidated(&Fixture::new(32 << 20, 4096, &[]), true);
}

#[test]
fn truncated_block_mapped_blocks_are_invalidated() {
    // No extents: truncation goes through libext2fs's own ext2fs_punch.
    let fx = Fixture::with_features(32 << 20, 4096, "^inline_data,^extent,^64bit", &[]);
    freed_data_blocks_are_invalidated(&fx, false);
}

fn end_in(k: &Kernel, f: NodeId, opflags: u32, pos: u64, count: u64, written: i64) -> IomapEndIn {
    let bs = k.block_size();
    IomapEndIn {
        opflags,
        reserved: 0,
        attr_ino: k.inode(f).unwrap().attr_ino,
        pos,
        count,
        written,
        map: IomapIo {
            offset: pos / bs * bs,
            length: bs,
            addr: FUSE_IOMAP_NULL_ADDR,
            type_: FUSE_IOMAP_TYPE_HOLE,
            flags: FUSE_IOMAP_F_SIZE_CHANGED,
            dev: FUSE_IOMAP_DEV_NULL,
        },
    }
}

#[test]
fn iomap_end_is_refused_after_shutdown() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    let bs = k.block_size();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(bs, 1), 0).unwrap();
    assert_eq!(k.getattr(f).unwrap().size, bs);
    k.shutdown_fs().unwrap();
    // An END that would grow the file to two blocks, as a buffered write past EOF sends it.
    let end = end_in(&k, f, FUSE_IOMAP_OP_WRITE, bs, bs, bs as i64);
    let err = k.end_raw(f, end).expect_err("END after SHUTDOWN_FS");
    assert_eq!(err.errno(), Some(EIO), "{err}");
    assert_eq!(
        k.getattr(f).unwrap().size,
        bs,
        "the refused END changed the size"
    );
    k.destroy().unwrap();
}

#[test]
fn iomap_end_rejects_kernel_numbers_that_overflow() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    let bs = k.block_size();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(bs, 2), 0).unwrap();
    let w = FUSE_IOMAP_OP_WRITE;
    let cases = [
        ("count 0", end_in(&k, f, w, 0, 0, 0), EINVAL),
        ("count 0 on a read", end_in(&k, f, 0, 0, 0, 0), EINVAL),
        (
            "pos + count wraps",
            end_in(&k, f, w, u64::MAX - 100, 200, 50),
            EINVAL,
        ),
        (
            "written > count",
            end_in(&k, f, w, 0, bs, 2 * bs as i64),
            EINVAL,
        ),
        // pos + count fits in u64, but rounding it up to a block would not.
        (
            "range at the top of u64",
            end_in(&k, f, w, u64::MAX - bs, bs, 1),
            EFBIG,
        ),
    ];
    for (what, end, errno) in cases {
        let err = k.end_raw(f, end).expect_err(what);
        assert_eq!(err.errno(), Some(errno), "{what}: {err}");
    }
    // The server is alive and the file untouched.
    assert_eq!(k.getattr(f).unwrap().size, bs);
    k.end_raw(f, end_in(&k, f, w, 0, bs, bs as i64))
        .expect("a sane END");
    k.destroy().unwrap();
    kmodel::image::fsck(&fx.spec.image).unwrap();
}

#[test]
fn fuse_write_is_refused_in_iomap_mode() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    let bs = k.block_size();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    let data = pattern(bs, 4);
    k.write_direct(f, 0, &data, 0).unwrap();
    let err = k
        .fuse_write(f, 0, &pattern(bs, 9))
        .expect_err("FUSE_WRITE on an iomap file");
    assert_eq!(err.errno(), Some(EIO), "{err}");
    assert_eq!(
        k.read_direct(f, 0, bs).unwrap(),
        data,
        "the refused write reached the disk"
    );
    k.destroy().unwrap();
    assert!(
        fx.server_logs()
            .contains("FUSE_WRITE in iomap mode refused"),
        "the refusal is logged"
    );
}
