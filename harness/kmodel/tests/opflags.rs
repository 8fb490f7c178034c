//! Targeted cases: every op-flag combination the kernel sends (protocol doc §7.2), each
//! reply's exact shape, plus EFBIG, ENOSPC, the CONFIG reply and attr flags.
//!
//! Every BEGIN goes through kmodel's validation (§7.1) before the assertions here look at
//! it, so these tests check what the kernel would not catch: types, flags, positions.

mod common;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::iomap::*;
use fuse_wire::structs::{IomapEndIn, IomapIo};
use kmodel::iomap::*;
use kmodel::{Kernel, NodeId};

const MIB: u64 = 1 << 20;

fn setup(block_size: u32) -> (Fixture, Kernel, NodeId, u64) {
    let fx = Fixture::new(64 * MIB, block_size, &[]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).expect("create");
    let bs = k.block_size();
    (fx, k, f, bs)
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// The mapping starts at or before `pos` on a block boundary and covers it.
fn assert_covers(io: &IomapIo, pos: u64, bs: u64) {
    assert!(
        io.offset <= pos && pos < io.offset + io.length,
        "{io:?} does not cover {pos}"
    );
    assert_eq!(io.offset % bs, 0, "{io:?} offset not block aligned");
    assert_eq!(io.length % bs, 0, "{io:?} length not block aligned");
}

fn assert_pure_overwrite(write: &IomapIo, read: &IomapIo) {
    assert_eq!(
        write.type_, FUSE_IOMAP_TYPE_PURE_OVERWRITE,
        "write slot {write:?}"
    );
    assert_eq!(
        (write.offset, write.length),
        (read.offset, read.length),
        "write slot mirrors read"
    );
}

fn finish(fx: &Fixture, k: Kernel) {
    k.destroy().expect("destroy");
    kmodel::image::fsck(&fx.spec.image).expect("e2fsck -fn after the test");
}

#[test]
fn read_of_a_hole_and_of_written_data() {
    let (fx, mut k, f, bs) = setup(4096);
    // Empty file: a read mapping is a hole covering pos.
    let out = k.begin_raw(f, 0, 3 * bs + 5, bs).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_HOLE);
    assert_covers(&out.read, 3 * bs + 5, bs);
    assert_pure_overwrite(&out.write, &out.read);
    // Written data: MAPPED on device 1, no NEW flag (nothing was allocated by this read).
    let data = pattern(2 * bs, 7);
    k.write_direct(f, 0, &data, 0).unwrap();
    let out = k.begin_raw(f, 0, 100, 2 * bs).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_eq!(out.read.dev, 1);
    assert_eq!(out.read.flags & FUSE_IOMAP_F_NEW, 0, "{:?}", out.read);
    assert_eq!(out.read.addr % bs, 0);
    assert_covers(&out.read, 100, bs);
    // The mapped bytes are the file's: read them at the address the server gave.
    assert_eq!(k.read(f, 0, 2 * bs).unwrap(), data);
    assert_eq!(k.read_direct(f, 0, 2 * bs).unwrap(), data);
    finish(&fx, k);
}

#[test]
fn direct_read_mappings() {
    let (fx, mut k, f, bs) = setup(4096);
    k.write_direct(f, bs, &pattern(bs, 3), 0).unwrap();
    let out = k.begin_raw(f, FUSE_IOMAP_OP_DIRECT, bs, bs).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_covers(&out.read, bs, bs);
    let out = k.begin_raw(f, FUSE_IOMAP_OP_DIRECT, 0, bs).unwrap();
    assert_eq!(
        out.read.type_, FUSE_IOMAP_TYPE_HOLE,
        "block 0 was never written"
    );
    // Direct read of a partly written range: zeroes for the hole, data for the rest.
    let got = k.read_direct(f, 0, 2 * bs).unwrap();
    assert_eq!(&got[..bs as usize], &vec![0u8; bs as usize][..]);
    assert_eq!(&got[bs as usize..], &pattern(bs, 3)[..]);
    finish(&fx, k);
}

#[test]
fn write_into_a_hole_allocates_unwritten_new_dirty_and_end_releases_it() {
    let (fx, mut k, f, bs) = setup(4096);
    let pos = 5 * bs;
    let out = k.begin_raw(f, FUSE_IOMAP_OP_WRITE, pos, 100).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_UNWRITTEN, "{:?}", out.read);
    assert_eq!(
        out.read.flags & (FUSE_IOMAP_F_NEW | FUSE_IOMAP_F_DIRTY),
        FUSE_IOMAP_F_NEW | FUSE_IOMAP_F_DIRTY
    );
    assert_eq!(out.read.dev, 1);
    assert_covers(&out.read, pos, bs);
    assert_pure_overwrite(&out.write, &out.read);
    let report = k.begin_raw(f, FUSE_IOMAP_OP_REPORT, pos, 100).unwrap();
    assert_eq!(
        report.read.type_, FUSE_IOMAP_TYPE_UNWRITTEN,
        "the allocation is visible to REPORT"
    );
    // A write that copied nothing: END (written < count) lets the server drop the blocks.
    let end = IomapEndIn {
        opflags: FUSE_IOMAP_OP_WRITE,
        reserved: 0,
        attr_ino: k.inode(f).unwrap().attr_ino,
        pos,
        count: 100,
        written: 0,
        map: out.read,
    };
    k.end_raw(f, end).unwrap();
    let report = k.begin_raw(f, FUSE_IOMAP_OP_REPORT, pos, 100).unwrap();
    assert_eq!(
        report.read.type_, FUSE_IOMAP_TYPE_HOLE,
        "unused allocation released by END: {:?}",
        report.read
    );
    finish(&fx, k);
}

#[test]
fn buffered_write_then_writeback_converts_and_appends() {
    let (fx, mut k, f, bs) = setup(4096);
    let data = pattern(3 * bs + 123, 9);
    k.write(f, 0, &data).unwrap();
    assert_eq!(k.inode(f).unwrap().i_size, data.len() as u64);
    // Not written back yet: the blocks are allocated but unwritten, and writeback asks for
    // the on-disk location with WRITEBACK.
    let wb = k.begin_raw(f, FUSE_IOMAP_OP_WRITEBACK, 0, bs).unwrap();
    assert_eq!(wb.read.type_, FUSE_IOMAP_TYPE_UNWRITTEN, "{:?}", wb.read);
    assert_pure_overwrite(&wb.write, &wb.read);
    k.writeback(f).unwrap();
    // The ioend (UNWRITTEN|WRITEBACK|APPEND) converted the extent and persisted the size.
    let after = k.begin_raw(f, FUSE_IOMAP_OP_REPORT, 0, 4 * bs).unwrap();
    assert_eq!(after.read.type_, FUSE_IOMAP_TYPE_MAPPED, "{:?}", after.read);
    assert_eq!(
        after.read.addr, wb.read.addr,
        "conversion keeps the blocks where they are"
    );
    assert_eq!(
        k.inode(f).unwrap().i_disk_size,
        data.len() as u64,
        "newsize from the ioend reply"
    );
    assert_eq!(k.getattr(f).unwrap().size, data.len() as u64);
    assert_eq!(k.read(f, 0, data.len() as u64).unwrap(), data);
    finish(&fx, k);
}

#[test]
fn direct_write_into_a_hole_then_ioend() {
    let (fx, mut k, f, bs) = setup(4096);
    let out = k
        .begin_raw(
            f,
            FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT,
            2 * bs,
            2 * bs,
        )
        .unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_UNWRITTEN);
    assert_eq!(out.read.flags & FUSE_IOMAP_F_NEW, FUSE_IOMAP_F_NEW);
    assert_covers(&out.read, 2 * bs, bs);
    // The whole path: BEGIN, data to the device, IOEND(DIRECT|UNWRITTEN|APPEND).
    let data = pattern(2 * bs, 1);
    k.write_direct(f, 2 * bs, &data, 0).unwrap();
    let report = k
        .begin_raw(f, FUSE_IOMAP_OP_REPORT, 2 * bs, 2 * bs)
        .unwrap();
    assert_eq!(report.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_eq!(report.read.flags & FUSE_IOMAP_F_NEW, 0);
    assert_eq!(k.inode(f).unwrap().i_disk_size, 4 * bs);
    // Overwrite in place: MAPPED for WRITE|DIRECT, no allocation flags.
    let out = k
        .begin_raw(f, FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT, 2 * bs, bs)
        .unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_eq!(out.read.flags & FUSE_IOMAP_F_NEW, 0);
    assert_eq!(k.read_direct(f, 2 * bs, 2 * bs).unwrap(), data);
    finish(&fx, k);
}

#[test]
fn write_fault_allocates_and_mmap_stores_land() {
    let (fx, mut k, f, bs) = setup(4096);
    k.truncate(f, 4 * bs).unwrap();
    let out = k
        .begin_raw(f, FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_FAULT, bs, bs)
        .unwrap();
    assert_eq!(
        out.read.type_, FUSE_IOMAP_TYPE_UNWRITTEN,
        "page_mkwrite over a hole allocates"
    );
    assert_eq!(out.read.flags & FUSE_IOMAP_F_NEW, FUSE_IOMAP_F_NEW);
    assert_covers(&out.read, bs, bs);
    let data = pattern(300, 4);
    k.mmap_write(f, bs + 50, &data).unwrap();
    k.fsync(f).unwrap();
    let got = k.read_direct(f, bs, bs).unwrap();
    assert_eq!(&got[50..350], &data[..]);
    assert!(got[..50].iter().chain(&got[350..]).all(|&b| b == 0));
    finish(&fx, k);
}

#[test]
fn zero_never_allocates() {
    let (fx, mut k, f, bs) = setup(4096);
    k.truncate(f, 8 * bs).unwrap();
    let out = k
        .begin_raw(f, FUSE_IOMAP_OP_ZERO, 3 * bs + 7, 2 * bs)
        .unwrap();
    assert_eq!(
        out.read.type_, FUSE_IOMAP_TYPE_HOLE,
        "a hole already reads as zeroes"
    );
    assert_covers(&out.read, 3 * bs + 7, bs);
    let report = k.begin_raw(f, FUSE_IOMAP_OP_REPORT, 3 * bs, bs).unwrap();
    assert_eq!(report.read.type_, FUSE_IOMAP_TYPE_HOLE);
    // Over written data ZERO returns the written mapping, which the kernel zeroes itself.
    k.write_direct(f, 0, &pattern(bs, 2), 0).unwrap();
    let out = k.begin_raw(f, FUSE_IOMAP_OP_ZERO, 10, 100).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    finish(&fx, k);
}

#[test]
fn report_fiemap_and_seek() {
    let (fx, mut k, f, bs) = setup(4096);
    k.write_direct(f, 0, &pattern(2 * bs, 5), 0).unwrap();
    k.fallocate(f, FALLOC_FL_KEEP_SIZE, 4 * bs, 2 * bs).unwrap();
    k.truncate(f, 8 * bs).unwrap();
    let ext = k.fiemap(f, 0, 8 * bs, true).unwrap();
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert_eq!(
        (
            ext[0].logical,
            ext[0].length,
            ext[0].flags & FIEMAP_EXTENT_UNWRITTEN
        ),
        (0, 2 * bs, 0)
    );
    assert_eq!((ext[1].logical, ext[1].length), (4 * bs, 2 * bs));
    assert_eq!(
        ext[1].flags & FIEMAP_EXTENT_UNWRITTEN,
        FIEMAP_EXTENT_UNWRITTEN
    );
    assert_eq!(ext[1].flags & FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_LAST);
    assert_eq!(k.seek_data(f, 0).unwrap(), Some(0));
    assert_eq!(k.seek_hole(f, 0).unwrap(), Some(2 * bs));
    assert_eq!(
        k.seek_data(f, 2 * bs).unwrap(),
        None,
        "unwritten and holes up to EOF: no data"
    );
    assert_eq!(
        k.seek_hole(f, 5 * bs).unwrap(),
        Some(5 * bs),
        "clean unwritten blocks are holes"
    );
    // Past EOF, a REPORT over the rest of the possible file is one hole, not a long walk.
    let maxbytes = k.sb.maxbytes;
    let out = k
        .begin_raw(f, FUSE_IOMAP_OP_REPORT, 8 * bs, maxbytes - 8 * bs)
        .unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_HOLE);
    assert_covers(&out.read, 8 * bs, bs);
    finish(&fx, k);
}

#[test]
fn nowait_direct_write_gets_eagain_or_a_valid_mapping() {
    let (fx, mut k, f, bs) = setup(4096);
    let op = FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT | FUSE_IOMAP_OP_NOWAIT;
    match k.begin_raw(f, op, 0, bs) {
        Err(e) => assert_eq!(e.errno(), Some(11), "a hole under NOWAIT: EAGAIN, got {e}"),
        Ok(out) => assert!(
            matches!(
                out.read.type_,
                FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN
            ),
            "a NOWAIT write mapping must be writable: {:?}",
            out.read
        ),
    }
    k.write_direct(f, 0, &pattern(bs, 6), 0).unwrap();
    let out = k.begin_raw(f, op, 0, bs).unwrap();
    assert_eq!(
        out.read.type_, FUSE_IOMAP_TYPE_MAPPED,
        "an overwrite needs no allocation: no EAGAIN"
    );
    k.write_direct(f, 0, &pattern(bs, 8), FUSE_IOMAP_OP_NOWAIT)
        .unwrap();
    assert_eq!(k.read(f, 0, bs).unwrap(), pattern(bs, 8));
    finish(&fx, k);
}

#[test]
fn atomic_direct_write_gets_an_atomic_bio_mapping() {
    let (fx, mut k, f, bs) = setup(4096);
    let op = FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT | FUSE_IOMAP_OP_ATOMIC;
    let out = k.begin_raw(f, op, bs, bs).unwrap();
    assert_eq!(
        out.read.flags & FUSE_IOMAP_F_ATOMIC_BIO,
        FUSE_IOMAP_F_ATOMIC_BIO,
        "{:?}",
        out.read
    );
    assert_covers(&out.read, bs, bs);
    // The full atomic write path (kmodel applies the post-v7 rule on the way).
    k.write_direct(f, bs, &pattern(bs, 2), FUSE_IOMAP_OP_ATOMIC)
        .unwrap();
    assert_eq!(k.read_direct(f, bs, bs).unwrap(), pattern(bs, 2));
    let out = k.begin_raw(f, op, bs, bs).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_eq!(
        out.read.flags & FUSE_IOMAP_F_ATOMIC_BIO,
        FUSE_IOMAP_F_ATOMIC_BIO
    );
    finish(&fx, k);
}

#[test]
fn swapfile_report_and_swapoff() {
    let (fx, mut k, f, bs) = setup(4096);
    k.write_direct(f, 0, &pattern(4 * bs, 3), 0).unwrap();
    let out = k
        .begin_raw(f, FUSE_IOMAP_OP_SWAPFILE | FUSE_IOMAP_OP_REPORT, 0, 4 * bs)
        .unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_covers(&out.read, 0, bs);
    assert_eq!(k.swapon(f).unwrap(), 4 * bs / 4096);
    k.swapoff(f).unwrap();
    // A file with a hole cannot be a swapfile.
    let g = k.create(FUSE_ROOT_ID, "g", 0o600).unwrap();
    k.write_direct(g, bs, &pattern(bs, 1), 0).unwrap();
    let err = k.swapon(g).unwrap_err();
    assert_eq!(err.errno(), Some(22), "{err}");
    finish(&fx, k);
}

#[test]
fn efbig_past_the_maximum_file_size() {
    let (fx, mut k, f, bs) = setup(4096);
    let config = k.sb.config.expect("the server sends IOMAP_CONFIG");
    // ext4 with extents and 4 KiB blocks: 2^32 - 1 blocks.
    assert_eq!(
        config.s_maxbytes,
        ((1u64 << 32) - 1) as i64 * 4096,
        "{config:?}"
    );
    let max = k.sb.maxbytes;
    let err = k
        .begin_raw(f, FUSE_IOMAP_OP_WRITE, max - bs, 2 * bs)
        .unwrap_err();
    assert_eq!(
        err.errno(),
        Some(27),
        "a write mapping past s_maxbytes: {err}"
    );
    let err = k
        .begin_raw(f, FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT, max, bs)
        .unwrap_err();
    assert_eq!(err.errno(), Some(27), "{err}");
    // The last block itself is writable.
    k.write_direct(f, max - bs, &pattern(bs, 4), 0).unwrap();
    assert_eq!(k.read_direct(f, max - bs, bs).unwrap(), pattern(bs, 4));
    assert_eq!(k.inode(f).unwrap().i_size, max);
    k.truncate(f, 0).unwrap();
    finish(&fx, k);
}

#[test]
fn enospc_on_a_full_tiny_filesystem() {
    let fx = Fixture::new(4 * MIB, 4096, &[]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "big", 0o644).unwrap();
    let bs = k.block_size();
    // Fill it: big direct writes (short once space runs low), then single blocks.
    let mut pos = 0;
    for chunk_blocks in [64, 1] {
        let chunk = pattern(chunk_blocks * bs, 5);
        let err = loop {
            match k.write_direct(f, pos, &chunk, 0) {
                Ok(n) => pos += n,
                Err(e) => break e,
            }
            assert!(pos < 8 * MIB, "a 4 MiB filesystem took {pos} bytes");
        };
        assert_eq!(err.errno(), Some(28), "expected ENOSPC, got {err}");
        // Like ext4 (which keeps reserved clusters for it), unwritten conversion at I/O
        // completion must not run out of space once BEGIN handed out the blocks: the data
        // is on disk by then and would read back as zeroes.
        assert!(
            !err.to_string().contains("IomapIoend"),
            "ENOSPC from IOEND after the data was written (reserve for the conversion at BEGIN): {err}"
        );
    }
    assert!(pos > MIB, "only {pos} bytes fit");
    // Buffered writes needing a new block fail the same way; what was written is intact.
    let err = k.write(f, pos, &pattern(10, 1)).unwrap_err();
    assert_eq!(err.errno(), Some(28), "{err}");
    assert_eq!(k.read_direct(f, 0, 64 * bs).unwrap(), pattern(64 * bs, 5));
    assert_eq!(k.inode(f).unwrap().i_size, pos);
    // Freeing space makes room again.
    k.truncate(f, pos / 2).unwrap();
    k.write(f, pos / 2, &pattern(10, 1)).unwrap();
    finish(&fx, k);
}

#[test]
fn config_reply_and_attr_flags() {
    let (fx, mut k, f, _) = setup(1024);
    let config = k.sb.config.expect("IOMAP_CONFIG reply");
    assert_eq!(k.sb.blocksize, 1024);
    assert_eq!(
        config.flags & FUSE_IOMAP_CONFIG_BLOCKSIZE,
        FUSE_IOMAP_CONFIG_BLOCKSIZE
    );
    let uuid = ext4_view::Ext4::load_from_path(&fx.spec.image)
        .unwrap()
        .uuid();
    assert_eq!(config.s_uuid_len, 16);
    assert_eq!(
        &config.s_uuid,
        uuid.as_bytes(),
        "s_uuid is the filesystem's"
    );
    assert_eq!(config.s_time_gran, 1, "256-byte inodes keep nanoseconds");
    let attr = k.inode(f).unwrap().attr;
    assert_eq!(
        attr.flags & (FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
        FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE
    );
    let d = k.mkdir(FUSE_ROOT_ID, "d", 0o755).unwrap();
    let dattr = k.inode(d).unwrap().attr;
    assert_eq!(
        dattr.flags & FUSE_ATTR_EXCLUSIVE,
        FUSE_ATTR_EXCLUSIVE,
        "{dattr:?}"
    );
    assert_eq!(
        k.getattr(f).unwrap().flags & FUSE_ATTR_IOMAP,
        FUSE_ATTR_IOMAP
    );
    // Sub-page blocks: a write and read back across block boundaries.
    let data = pattern(5000, 3);
    k.write(f, 700, &data).unwrap();
    k.fsync(f).unwrap();
    assert_eq!(k.read(f, 700, 5000).unwrap(), data);
    let out = k.begin_raw(f, 0, 1024, 1024).unwrap();
    assert_eq!(out.read.type_, FUSE_IOMAP_TYPE_MAPPED);
    assert_eq!(out.read.offset % 1024, 0);
    finish(&fx, k);
}

#[test]
fn syncfs_freeze_and_remount_keep_data() {
    let (fx, mut k, f, bs) = setup(4096);
    let data = pattern(10 * bs + 17, 2);
    k.write(f, 3, &data).unwrap();
    k.syncfs().unwrap();
    k.freeze().unwrap();
    k.unfreeze().unwrap();
    k.append(f, b"tail").unwrap();
    k.destroy().unwrap();
    kmodel::image::fsck(&fx.spec.image).unwrap();
    let mut k = fx.mount();
    let f = k.lookup(FUSE_ROOT_ID, "f").unwrap();
    assert_eq!(k.inode(f).unwrap().i_size, 3 + data.len() as u64 + 4);
    let got = k.read(f, 0, 1 << 20).unwrap();
    assert_eq!(&got[3..3 + data.len()], &data[..]);
    assert_eq!(&got[3 + data.len()..], b"tail");
    finish(&fx, k);
}
