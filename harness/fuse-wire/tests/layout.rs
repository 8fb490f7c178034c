//! Every struct's size and every field's offset, against the uapi header and the iomap doc.
//!
//! The classic table was produced by compiling the 6.12 `include/uapi/linux/fuse.h` with gcc
//! (x86_64) and printing `sizeof`/`offsetof`; the iomap table is copied from
//! `docs/fuse-iomap-protocol.md` §3; the rest cite their source inline.

use core::mem::{offset_of, size_of};
use fuse_wire::*;

macro_rules! layout {
    ($t:ty, $size:expr, { $($f:ident : $off:expr),* $(,)? }) => {{
        assert_eq!(size_of::<$t>(), $size, "sizeof {}", stringify!($t));
        $(assert_eq!(offset_of!($t, $f), $off, "offsetof {}.{}", stringify!($t), stringify!($f));)*
    }};
}

#[test]
fn classic_structs_match_uapi_6_12() {
    layout!(InHeader, 40, { len: 0, opcode: 4, unique: 8, nodeid: 16, uid: 24, gid: 28, pid: 32, total_extlen: 36, padding: 38 });
    layout!(OutHeader, 16, { len: 0, error: 4, unique: 8 });
    layout!(InitIn, 64, { major: 0, minor: 4, max_readahead: 8, flags: 12, flags2: 16, unused: 20 });
    layout!(CuseInitIn, 16, { major: 0, minor: 4, unused: 8, flags: 12 });
    layout!(CuseInitOut, 72, { major: 0, minor: 4, unused: 8, flags: 12, max_read: 16, max_write: 20, dev_major: 24, dev_minor: 28, spare: 32 });
    layout!(Attr, 88, { ino: 0, size: 8, blocks: 16, atime: 24, mtime: 32, ctime: 40, atimensec: 48, mtimensec: 52, ctimensec: 56, mode: 60, nlink: 64, uid: 68, gid: 72, rdev: 76, blksize: 80, flags: 84 });
    layout!(EntryOut, 128, { nodeid: 0, generation: 8, entry_valid: 16, attr_valid: 24, entry_valid_nsec: 32, attr_valid_nsec: 36, attr: 40 });
    layout!(AttrOut, 104, { attr_valid: 0, attr_valid_nsec: 8, dummy: 12, attr: 16 });
    layout!(GetattrIn, 16, { getattr_flags: 0, dummy: 4, fh: 8 });
    layout!(SetattrIn, 88, { valid: 0, padding: 4, fh: 8, size: 16, lock_owner: 24, atime: 32, mtime: 40, ctime: 48, atimensec: 56, mtimensec: 60, ctimensec: 64, mode: 68, unused4: 72, uid: 76, gid: 80, unused5: 84 });
    layout!(SxTime, 16, { tv_sec: 0, tv_nsec: 8, __reserved: 12 });
    layout!(StatxIn, 24, { getattr_flags: 0, reserved: 4, fh: 8, sx_flags: 16, sx_mask: 20 });
    layout!(ForgetIn, 8, { nlookup: 0 });
    layout!(ForgetOne, 16, { nodeid: 0, nlookup: 8 });
    layout!(BatchForgetIn, 8, { count: 0, dummy: 4 });
    layout!(MknodIn, 16, { mode: 0, rdev: 4, umask: 8, padding: 12 });
    layout!(MkdirIn, 8, { mode: 0, umask: 4 });
    layout!(RenameIn, 8, { newdir: 0 });
    layout!(Rename2In, 16, { newdir: 0, flags: 8, padding: 12 });
    layout!(LinkIn, 8, { oldnodeid: 0 });
    layout!(OpenIn, 8, { flags: 0, open_flags: 4 });
    layout!(CreateIn, 16, { flags: 0, mode: 4, umask: 8, open_flags: 12 });
    layout!(OpenOut, 16, { fh: 0, open_flags: 8, backing_id: 12 });
    layout!(ReleaseIn, 24, { fh: 0, flags: 8, release_flags: 12, lock_owner: 16 });
    layout!(FlushIn, 24, { fh: 0, unused: 8, padding: 12, lock_owner: 16 });
    layout!(ReadIn, 40, { fh: 0, offset: 8, size: 16, read_flags: 20, lock_owner: 24, flags: 32, padding: 36 });
    layout!(WriteIn, 40, { fh: 0, offset: 8, size: 16, write_flags: 20, lock_owner: 24, flags: 32, padding: 36 });
    layout!(WriteOut, 8, { size: 0, padding: 4 });
    layout!(FsyncIn, 16, { fh: 0, fsync_flags: 8, padding: 12 });
    layout!(Kstatfs, 80, { blocks: 0, bfree: 8, bavail: 16, files: 24, ffree: 32, bsize: 40, namelen: 44, frsize: 48, padding: 52, spare: 56 });
    layout!(StatfsOut, 80, { st: 0 });
    layout!(GetxattrIn, 8, { size: 0, padding: 4 });
    layout!(GetxattrOut, 8, { size: 0, padding: 4 });
    layout!(FileLock, 24, { start: 0, end: 8, type_: 16, pid: 20 });
    layout!(LkIn, 48, { fh: 0, owner: 8, lk: 16, lk_flags: 40, padding: 44 });
    layout!(LkOut, 24, { lk: 0 });
    layout!(AccessIn, 8, { mask: 0, padding: 4 });
    layout!(InterruptIn, 8, { unique: 0 });
    layout!(BmapIn, 16, { block: 0, blocksize: 8, padding: 12 });
    layout!(BmapOut, 8, { block: 0 });
    layout!(IoctlIn, 32, { fh: 0, flags: 8, cmd: 12, arg: 16, in_size: 24, out_size: 28 });
    layout!(IoctlIovec, 16, { base: 0, len: 8 });
    layout!(IoctlOut, 16, { result: 0, flags: 4, in_iovs: 8, out_iovs: 12 });
    layout!(PollIn, 24, { fh: 0, kh: 8, flags: 16, events: 20 });
    layout!(PollOut, 8, { revents: 0, padding: 4 });
    layout!(FallocateIn, 32, { fh: 0, offset: 8, length: 16, mode: 24, padding: 28 });
    layout!(LseekIn, 24, { fh: 0, offset: 8, whence: 16, padding: 20 });
    layout!(LseekOut, 8, { offset: 0 });
    layout!(CopyFileRangeIn, 56, { fh_in: 0, off_in: 8, nodeid_out: 16, fh_out: 24, off_out: 32, len: 40, flags: 48 });
    layout!(SyncfsIn, 8, { padding: 0 });
    layout!(SetupmappingIn, 40, { fh: 0, foffset: 8, len: 16, flags: 24, moffset: 32 });
    layout!(RemovemappingIn, 4, { count: 0 });
    layout!(RemovemappingOne, 16, { moffset: 0, len: 8 });
    layout!(Dirent, 24, { ino: 0, off: 8, namelen: 16, type_: 20 });
    layout!(Direntplus, 152, { entry_out: 0, dirent: 128 });
    layout!(NotifyPollWakeupOut, 8, { kh: 0 });
    layout!(NotifyInvalInodeOut, 24, { ino: 0, off: 8, len: 16 });
    layout!(NotifyInvalEntryOut, 16, { parent: 0, namelen: 8, flags: 12 });
    layout!(NotifyDeleteOut, 24, { parent: 0, child: 8, namelen: 16, padding: 20 });
    layout!(NotifyStoreOut, 24, { nodeid: 0, offset: 8, size: 16, padding: 20 });
    layout!(NotifyRetrieveOut, 32, { notify_unique: 0, nodeid: 8, offset: 16, size: 24, padding: 28 });
    layout!(NotifyRetrieveIn, 40, { dummy1: 0, offset: 8, size: 16, dummy2: 20, dummy3: 24, dummy4: 32 });
    layout!(BackingMap, 16, { fd: 0, flags: 4, padding: 8 });
    layout!(Secctx, 8, { size: 0, padding: 4 });
    layout!(SecctxHeader, 8, { size: 0, nr_secctx: 4 });
    layout!(ExtHeader, 8, { size: 0, type_: 4 });
}

#[test]
fn structs_changed_after_7_41() {
    // fuse_init_out: 7.43 split unused[6] (u32) into request_timeout (u16) + unused[11] (u16).
    layout!(InitOut, 64, {
        major: 0, minor: 4, max_readahead: 8, flags: 12, max_background: 16,
        congestion_threshold: 18, max_write: 20, time_gran: 24, max_pages: 28,
        map_alignment: 30, flags2: 32, max_stack_depth: 36, request_timeout: 40, unused: 42,
    });
    // fuse_statx: the prefix is the 6.12 header's; the tail (formerly __spare2[14] at 144)
    // follows struct statx as the iomap series re-lays it out (K-v7 28/33).
    layout!(Statx, 256, {
        mask: 0, blksize: 4, attributes: 8, nlink: 16, uid: 20, gid: 24, mode: 28, __spare0: 30,
        ino: 32, size: 40, blocks: 48, attributes_mask: 56, atime: 64, btime: 80, ctime: 96,
        mtime: 112, rdev_major: 128, rdev_minor: 132, dev_major: 136, dev_minor: 140,
        mnt_id: 144, dio_mem_align: 152, dio_offset_align: 156, subvol: 160,
        atomic_write_unit_min: 168, atomic_write_unit_max: 172, atomic_write_segments_max: 176,
        dio_read_offset_align: 180, atomic_write_unit_max_opt: 184, __spare2: 188, __spare3: 192,
    });
    layout!(StatxOut, 288, { attr_valid: 0, attr_valid_nsec: 8, flags: 12, spare: 16, stat: 32 });
    // 7.45.
    layout!(CopyFileRangeOut, 8, { bytes_copied: 0 });
    layout!(NotifyPruneOut, 16, { count: 0, padding: 4, spare: 8 });
    // The 8-byte setxattr form (FUSE_COMPAT_SETXATTR_IN_SIZE) and the pre-7.36 init_in.
    layout!(SetxattrIn, 8, { size: 0, flags: 4 });
    assert_eq!(
        size_of::<SetxattrIn>(),
        consts::FUSE_COMPAT_SETXATTR_IN_SIZE
    );
    layout!(InitInLegacy, 16, { major: 0, minor: 4, max_readahead: 8, flags: 12 });
    assert_eq!(size_of::<InitInLegacy>(), consts::INIT_IN_LEGACY_SIZE);
}

#[test]
fn iomap_structs_match_protocol_doc() {
    layout!(IomapIo, 32, { offset: 0, length: 8, addr: 16, type_: 24, flags: 26, dev: 28 }); // §3.1
    layout!(IomapBeginIn, 32, { opflags: 0, reserved: 4, attr_ino: 8, pos: 16, count: 24 }); // §3.2
    layout!(IomapBeginOut, 64, { read: 0, write: 32 }); // §3.3
    layout!(IomapEndIn, 72, {
        opflags: 0, reserved: 4, attr_ino: 8, pos: 16, count: 24, written: 32, map: 40,
    }); // §3.4
    layout!(IomapIoendIn, 48, {
        flags: 0, error: 4, attr_ino: 8, pos: 16, new_addr: 24, written: 32, dev: 40, pad: 44,
    }); // §3.5
    layout!(IomapIoendOut, 8, { newsize: 0 }); // §3.6
    layout!(IomapConfigIn, 64, {
        flags: 0, maxbytes: 8, cache_maxbytes: 16, zero: 20, padding: 24,
    }); // §3.7
    layout!(IomapConfigOut, 104, {
        flags: 0, s_id: 8, s_uuid: 40, s_uuid_len: 56, s_pad: 57, s_blocksize: 60,
        s_max_links: 64, s_time_gran: 68, s_time_min: 72, s_time_max: 80, s_maxbytes: 88,
        cache_maxbytes: 96, tail_pad: 100,
    }); // §3.8
    assert_eq!(IOMAP_CONFIG_OUT_SHORT_LEN, 96); // libfuse's offsetofend(s_maxbytes)
    layout!(Range, 16, { offset: 0, length: 8 }); // §3.9
    layout!(IomapDevInvalOut, 24, { dev: 0, reserved: 4, range: 8 });
    layout!(IomapInvalMappingsOut, 48, { nodeid: 0, attr_ino: 8, read: 16, write: 32 });
    layout!(IomapUpsertMappingsOut, 80, { nodeid: 0, attr_ino: 8, read: 16, write: 48 });
    layout!(FreezefsIn, 8, { unlinked: 0 }); // §3.10
    layout!(ShutdownfsIn, 8, { flags: 0 });
    layout!(IomapSupport, 16, { flags: 0, padding: 8 }); // §3.11
    layout!(IomapBackingInfo, 8, { backing_id: 0, blocksize: 4 });
}

#[test]
fn derived_offsets() {
    assert_eq!(IN_HEADER_LEN, 40);
    assert_eq!(OUT_HEADER_LEN, 16);
    // FUSE_NAME_OFFSET and FUSE_NAME_OFFSET_DIRENTPLUS from gcc on the uapi header.
    assert_eq!(FUSE_NAME_OFFSET, 24);
    assert_eq!(FUSE_NAME_OFFSET_DIRENTPLUS, 152);
    assert_eq!(offset_of!(Direntplus, dirent.namelen), 144);
    assert_eq!(rec_align(0), 0);
    assert_eq!(rec_align(1), 8);
    assert_eq!(rec_align(8), 8);
    assert_eq!(rec_align(25), 32);
    // Compat sizes are prefixes of the full structs.
    assert_eq!(
        consts::FUSE_COMPAT_ENTRY_OUT_SIZE,
        size_of::<EntryOut>() - 8
    );
    assert_eq!(consts::FUSE_COMPAT_ATTR_OUT_SIZE, size_of::<AttrOut>() - 8);
    assert_eq!(
        consts::FUSE_COMPAT_WRITE_IN_SIZE,
        offset_of!(WriteIn, lock_owner)
    );
    assert_eq!(
        consts::FUSE_COMPAT_MKNOD_IN_SIZE,
        offset_of!(MknodIn, umask)
    );
    assert_eq!(consts::FUSE_COMPAT_STATFS_SIZE, offset_of!(Kstatfs, frsize));
}

/// The field tables tools name reply fields with: contiguous, covering the whole struct,
/// nested structs resolved to their innermost field.
#[test]
fn field_tables_cover_the_structs_and_name_nested_fields() {
    fn covers<T: Fields>() {
        let mut at = 0;
        for f in T::FIELDS {
            assert_eq!(
                f.offset, at,
                "{} starts where the previous field ends",
                f.name
            );
            at += f.size;
        }
        assert_eq!(
            at,
            size_of::<T>(),
            "the fields cover {}",
            std::any::type_name::<T>()
        );
    }
    covers::<EntryOut>();
    covers::<AttrOut>();
    covers::<StatxOut>();
    covers::<Direntplus>();
    covers::<IomapBeginOut>();
    covers::<IomapConfigOut>();
    covers::<InitOut>();

    assert_eq!(
        field_at(
            EntryOut::FIELDS,
            offset_of!(EntryOut, attr) + offset_of!(Attr, mtime) + 3
        ),
        Some(("attr.mtime".to_string(), 72..80))
    );
    assert_eq!(
        field_at(StatxOut::FIELDS, 288 - 1).map(|(name, _)| name),
        Some("stat.__spare3".to_string())
    );
    assert_eq!(field_at(OpenOut::FIELDS, 16), None, "past the end");
    assert_eq!(
        field_range(Direntplus::FIELDS, "entry_out.attr.ctimensec"),
        Some(56 + 40..60 + 40)
    );
    assert_eq!(
        field_range(IomapBeginOut::FIELDS, "write.addr"),
        Some(48..56)
    );
    assert_eq!(field_range(EntryOut::FIELDS, "attr.nope"), None);
    assert_eq!(field_range(EntryOut::FIELDS, "nodeid.x"), None);
}
