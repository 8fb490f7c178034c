//! Every number the FUSE iomap series (v7, Feb 2026) adds, in one place.
//!
//! Source: `docs/fuse-iomap-protocol.md` (sections cited per item). The series is not merged;
//! its placeholder minor 99 and possibly other numbers will change at merge time, so nothing
//! outside this module may spell them out.

use crate::consts::{io, ior, iow, FUSE_DEV_IOC_MAGIC};
use crate::structs::{IomapBackingInfo, IomapSupport};

/// Protocol minor of the iomap series (placeholder "7.99", §2). A server must reply with at
/// least this minor to get iomap inodes. The one constant to change at merge time.
pub const IOMAP_MINOR: u32 = 99;

// ---- opcodes (§1.1) -----------------------------------------------------------------------

/// Filesystem frozen (after data is frozen); in `fuse_freezefs_in`.
pub const FUSE_FREEZE_FS: u32 = 4089;
/// Filesystem thawed; no argument.
pub const FUSE_UNFREEZE_FS: u32 = 4090;
/// Filesystem or block device shut down; in `fuse_shutdownfs_in`.
pub const FUSE_SHUTDOWN_FS: u32 = 4091;
/// Post-INIT configuration exchange, sent with nodeid 0.
pub const FUSE_IOMAP_CONFIG: u32 = 4092;
/// Write completion.
pub const FUSE_IOMAP_IOEND: u32 = 4093;
/// Ask the server for a mapping.
pub const FUSE_IOMAP_BEGIN: u32 = 4094;
/// Kernel is done with a mapping.
pub const FUSE_IOMAP_END: u32 = 4095;

// ---- notification codes (§1.2) --------------------------------------------------------------

/// Drop a range of a backing device's page cache; payload `fuse_iomap_dev_inval_out` (24 B).
pub const FUSE_NOTIFY_IOMAP_DEV_INVAL: i32 = 99;
/// Insert mappings into the kernel's cache; payload `fuse_iomap_upsert_mappings_out` (80 B).
pub const FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS: i32 = 100;
/// Remove ranges from the kernel's cache; payload `fuse_iomap_inval_mappings_out` (48 B).
pub const FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS: i32 = 101;

// ---- INIT (§2) ----------------------------------------------------------------------------

/// INIT flag: client supports iomap for regular files (flags2 bit 11). Mainline 7.3 (minor
/// 46) gave the same bit to `FUSE_HAS_IO_URING_BUFPOOL`, so the bit means iomap only from a
/// kernel speaking [`IOMAP_MINOR`]: use [`offers_iomap`], never the bit alone.
pub const FUSE_IOMAP: u64 = 1 << 43;

/// Whether a kernel's INIT (its `minor` and joined `flags`) offers FUSE iomap: the bit, from
/// a kernel that speaks the series' minor. The one rule the server and the kernel model share.
pub const fn offers_iomap(minor: u32, flags: u64) -> bool {
    minor >= IOMAP_MINOR && flags & FUSE_IOMAP != 0
}

/// What INIT bit 43 means from a kernel speaking 7.`minor`, for messages.
pub fn init_bit43_meaning(minor: u32) -> &'static str {
    if minor >= IOMAP_MINOR {
        "FUSE_IOMAP"
    } else if minor >= crate::consts::IO_URING_BUFPOOL_MINOR {
        "FUSE_HAS_IO_URING_BUFPOOL (mainline Linux 7.3)"
    } else {
        "nothing defined"
    }
}

// ---- fuse_attr.flags (§6) -----------------------------------------------------------------

/// Only this mount modifies the file; needed for iomap, honoured only at minor ≥ 99.
pub const FUSE_ATTR_EXCLUSIVE: u32 = 1 << 2;
/// Use iomap for this inode (requires EXCLUSIVE; regular files only).
pub const FUSE_ATTR_IOMAP: u32 = 1 << 3;
/// Untorn (atomic) single-block writes.
pub const FUSE_ATTR_ATOMIC: u32 = 1 << 4;
/// Synchronous writes (S_SYNC).
pub const FUSE_ATTR_SYNC: u32 = 1 << 5;
/// Immutable (S_IMMUTABLE).
pub const FUSE_ATTR_IMMUTABLE: u32 = 1 << 6;
/// Append-only (S_APPEND).
pub const FUSE_ATTR_APPEND: u32 = 1 << 7;

// ---- mapping types (§4.1), fuse_iomap_io.type -------------------------------------------------

/// No storage; dev 0, addr NULL.
pub const FUSE_IOMAP_TYPE_HOLE: u16 = 0;
/// Reserved, not yet allocated; dev 0, addr NULL.
pub const FUSE_IOMAP_TYPE_DELALLOC: u16 = 1;
/// Written blocks; dev and addr required.
pub const FUSE_IOMAP_TYPE_MAPPED: u16 = 2;
/// Allocated, reads as zeroes; dev and addr required.
pub const FUSE_IOMAP_TYPE_UNWRITTEN: u16 = 3;
/// Inline data accessed through FUSE_READ/FUSE_WRITE; dev 0, addr NULL.
pub const FUSE_IOMAP_TYPE_INLINE: u16 = 4;
/// Cache series: "do not upsert this slot" (upsert notifications only).
pub const FUSE_IOMAP_TYPE_NOCACHE: u16 = 253;
/// Cache series: server populated the cache, kernel retries the lookup.
pub const FUSE_IOMAP_TYPE_RETRY_CACHE: u16 = 254;
/// Write slot only: writes use the read mapping.
pub const FUSE_IOMAP_TYPE_PURE_OVERWRITE: u16 = 255;

// ---- mapping flags (§4.2), fuse_iomap_io.flags --------------------------------------------

/// Freshly allocated.
pub const FUSE_IOMAP_F_NEW: u16 = 1 << 0;
/// Inode metadata needs a flush for data integrity.
pub const FUSE_IOMAP_F_DIRTY: u16 = 1 << 1;
/// Shared (COW) blocks.
pub const FUSE_IOMAP_F_SHARED: u16 = 1 << 2;
/// Merged from several records.
pub const FUSE_IOMAP_F_MERGED: u16 = 1 << 3;
/// Don't merge I/O across this mapping.
pub const FUSE_IOMAP_F_BOUNDARY: u16 = 1 << 4;
/// Write location chosen at submission.
pub const FUSE_IOMAP_F_ANON_WRITE: u16 = 1 << 5;
/// Issue as an atomic (untorn) bio.
pub const FUSE_IOMAP_F_ATOMIC_BIO: u16 = 1 << 6;
/// Ask the kernel to send FUSE_IOMAP_END for this mapping.
pub const FUSE_IOMAP_F_WANT_IOMAP_END: u16 = 1 << 7;
/// Kernel→server only (in iomap_end's map): the write changed i_size.
pub const FUSE_IOMAP_F_SIZE_CHANGED: u16 = 1 << 8;
/// Kernel→server only: the mapping went stale.
pub const FUSE_IOMAP_F_STALE: u16 = 1 << 9;
/// Flags a server may set in a mapping; the kernel rejects anything else (§4.2, §7.1 rule 1).
/// (Name ours; the header has no such macro.)
pub const FUSE_IOMAP_F_SERVER_MASK: u16 = 0x00ff;
/// Flags only the kernel sets.
pub const FUSE_IOMAP_F_KERNEL_ONLY: u16 = FUSE_IOMAP_F_SIZE_CHANGED | FUSE_IOMAP_F_STALE;

// ---- operation flags (§4.3), opflags ------------------------------------------------------

/// Write (buffered, direct, page_mkwrite).
pub const FUSE_IOMAP_OP_WRITE: u32 = 1 << 0;
/// Zeroing.
pub const FUSE_IOMAP_OP_ZERO: u32 = 1 << 1;
/// FIEMAP, SEEK_DATA/HOLE, bmap, swapfile scan.
pub const FUSE_IOMAP_OP_REPORT: u32 = 1 << 2;
/// Page fault.
pub const FUSE_IOMAP_OP_FAULT: u32 = 1 << 3;
/// O_DIRECT.
pub const FUSE_IOMAP_OP_DIRECT: u32 = 1 << 4;
/// IOCB_NOWAIT.
pub const FUSE_IOMAP_OP_NOWAIT: u32 = 1 << 5;
/// Only pure overwrites allowed.
pub const FUSE_IOMAP_OP_OVERWRITE_ONLY: u32 = 1 << 6;
/// Unshare (COW break).
pub const FUSE_IOMAP_OP_UNSHARE: u32 = 1 << 7;
/// DAX (not expected from fuse).
pub const FUSE_IOMAP_OP_DAX: u32 = 1 << 8;
/// RWF_ATOMIC write.
pub const FUSE_IOMAP_OP_ATOMIC: u32 = 1 << 9;
/// Uncached buffered I/O.
pub const FUSE_IOMAP_OP_DONTCACHE: u32 = 1 << 10;
/// Fuse-private: swapfile activation.
pub const FUSE_IOMAP_OP_SWAPFILE: u32 = 1 << 30;
/// Fuse-private: pagecache writeback (post-v7 derivation may differ; wire value kept).
pub const FUSE_IOMAP_OP_WRITEBACK: u32 = 1 << 31;
/// Ops that count as writes (libfuse `fuse_iomap_is_write`).
pub const FUSE_IOMAP_OP_IS_WRITE: u32 =
    FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_ZERO | FUSE_IOMAP_OP_UNSHARE | FUSE_IOMAP_OP_WRITEBACK;
/// Every defined opflag.
pub const FUSE_IOMAP_OP_ALL: u32 = 0x7ff | FUSE_IOMAP_OP_SWAPFILE | FUSE_IOMAP_OP_WRITEBACK;

/// True if `opflags` describe a write (WRITE, ZERO, UNSHARE or WRITEBACK).
pub const fn is_write_op(opflags: u32) -> bool {
    opflags & FUSE_IOMAP_OP_IS_WRITE != 0
}

// ---- ioend flags (§4.4) -------------------------------------------------------------------

/// Out-of-place (COW) write extent.
pub const FUSE_IOMAP_IOEND_SHARED: u32 = 1 << 0;
/// Wrote into an unwritten extent: convert.
pub const FUSE_IOMAP_IOEND_UNWRITTEN: u32 = 1 << 1;
/// Don't merge into the previous ioend.
pub const FUSE_IOMAP_IOEND_BOUNDARY: u32 = 1 << 2;
/// Direct I/O completion.
pub const FUSE_IOMAP_IOEND_DIRECT: u32 = 1 << 3;
/// The write extends the on-disk size.
pub const FUSE_IOMAP_IOEND_APPEND: u32 = 1 << 4;
/// Pagecache writeback completion.
pub const FUSE_IOMAP_IOEND_WRITEBACK: u32 = 1 << 5;
/// Swapfile deactivation or failed activation.
pub const FUSE_IOMAP_IOEND_SWAPOFF: u32 = 1 << 6;
/// Every defined ioend flag.
pub const FUSE_IOMAP_IOEND_ALL: u32 = 0x7f;

// ---- misc (§4.5) --------------------------------------------------------------------------

/// "No disk address".
pub const FUSE_IOMAP_NULL_ADDR: u64 = u64::MAX;
/// "No device".
pub const FUSE_IOMAP_DEV_NULL: u32 = 0;
/// Invalidate-mappings length meaning "to EOF".
pub const FUSE_IOMAP_INVAL_TO_EOF: u64 = u64::MAX;

/// Config reply field: `s_id` valid.
pub const FUSE_IOMAP_CONFIG_SID: u64 = 1 << 0;
/// Config reply field: `s_uuid`/`s_uuid_len` valid.
pub const FUSE_IOMAP_CONFIG_UUID: u64 = 1 << 1;
/// Config reply field: `s_blocksize` valid.
pub const FUSE_IOMAP_CONFIG_BLOCKSIZE: u64 = 1 << 2;
/// Config reply field: `s_max_links` valid.
pub const FUSE_IOMAP_CONFIG_MAX_LINKS: u64 = 1 << 3;
/// Config reply field: `s_time_gran/min/max` valid.
pub const FUSE_IOMAP_CONFIG_TIME: u64 = 1 << 4;
/// Config reply field: `s_maxbytes` valid.
pub const FUSE_IOMAP_CONFIG_MAXBYTES: u64 = 1 << 5;
/// Config reply field: `cache_maxbytes` valid (cache series).
pub const FUSE_IOMAP_CONFIG_CACHE_MAXBYTES: u64 = 1 << 6;
/// Every config flag the kernel (with the cache series) knows; others → EINVAL (§4.5, §7.10).
pub const FUSE_IOMAP_CONFIG_ALL: u64 = 0x7f;

/// `FUSE_DEV_IOC_IOMAP_SUPPORT`: file I/O through iomap is possible.
pub const FUSE_IOMAP_SUPPORT_FILEIO: u64 = 1 << 0;
/// `FUSE_DEV_IOC_IOMAP_SUPPORT`: atomic writes are possible.
pub const FUSE_IOMAP_SUPPORT_ATOMIC: u64 = 1 << 1;

/// Low 8 bits of `fuse_backing_map.flags` select the backing type.
pub const FUSE_BACKING_TYPE_MASK: u32 = 0xff;
/// Backing file for passthrough I/O (the mainline meaning, flags = 0).
pub const FUSE_BACKING_TYPE_PASSTHROUGH: u32 = 0;
/// Backing block device for iomap.
pub const FUSE_BACKING_TYPE_IOMAP: u32 = 1;
/// Highest backing type.
pub const FUSE_BACKING_MAX_TYPE: u32 = FUSE_BACKING_TYPE_IOMAP;
/// Every valid `fuse_backing_map.flags` bit.
pub const FUSE_BACKING_FLAGS_ALL: u32 = FUSE_BACKING_TYPE_MASK;
/// Highest iomap backing id the kernel hands out (ids are cyclic in 1..=1024, §5).
pub const FUSE_IOMAP_MAX_BACKING_ID: u32 = 1024;

/// Kernel default mapping-cache size per fork (kernel-internal, §4.5).
pub const FUSE_IOMAP_CACHE_DEFAULT_MAXBYTES: u32 = 256 << 10;
/// Kernel upper clamp of the mapping-cache size (kernel-internal, §4.5).
pub const FUSE_IOMAP_CACHE_MAX_MAXBYTES: u32 = 2 << 20;
/// `s_time_gran` upper bound, 1 s in ns (§7.10).
pub const FUSE_IOMAP_MAX_TIME_GRAN: u32 = 1_000_000_000;
/// Kernel `MAX_LFS_FILESIZE` on 64-bit, what `fuse_iomap_config_in.maxbytes` carries.
pub const MAX_LFS_FILESIZE: i64 = i64::MAX;

// ---- ioctls (§5) ---------------------------------------------------------------------------

/// Does this fd/caller support iomap: `_IOR(229, 99, struct fuse_iomap_support)`.
pub const FUSE_DEV_IOC_IOMAP_SUPPORT: u32 =
    ior(FUSE_DEV_IOC_MAGIC, 99, core::mem::size_of::<IomapSupport>());
/// Set/clear NOFS on the calling thread: `_IOW(229, 100, uint32_t)`.
pub const FUSE_DEV_IOC_SET_NOFS: u32 = iow(FUSE_DEV_IOC_MAGIC, 100, 4);
/// Pre-approve iomap for this fd (needs CAP_SYS_RAWIO): `_IO(229, 101)`.
pub const FUSE_DEV_IOC_ADD_IOMAP: u32 = io(FUSE_DEV_IOC_MAGIC, 101);
/// Set a backing device's block size: `_IOW(229, 102, struct fuse_iomap_backing_info)`.
pub const FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE: u32 = iow(
    FUSE_DEV_IOC_MAGIC,
    102,
    core::mem::size_of::<IomapBackingInfo>(),
);
