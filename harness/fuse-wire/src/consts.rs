//! Classic FUSE numbers: versions, init flags, setattr/open/write/... flags, ioctl numbers.
//!
//! Names are the uapi names from `include/uapi/linux/fuse.h` so they can be grepped for in
//! the kernel. Values up to 7.41 were checked against the 6.12 header; 7.42..7.45 additions
//! are marked with their minor. Everything the iomap series adds lives in [`crate::iomap`].

/// Protocol major version spoken by this crate.
pub const KERNEL_VERSION: u32 = 7;

/// Highest mainline protocol minor this crate knows (Linux 6.18 speaks 7.45).
pub const KERNEL_MINOR_VERSION: u32 = 45;

/// Oldest minor a server built on this crate accepts.
///
/// 7.31 is the protocol of the oldest long-term kernels still in use (5.4 LTS era). Every
/// request and reply struct has had its current size since long before it (the `COMPAT_*`
/// short forms date from 7.9..7.12), so encoders never need compat sizes; the only pre-7.36
/// difference left to handle is the 16-byte legacy `fuse_init_in`, which the parser accepts.
/// Kernels tested here speak 7.38 (6.1), 7.41 (6.12) and 7.45 (6.18).
pub const MIN_SUPPORTED_MINOR: u32 = 31;

/// Node id of the root directory (unless mounted with `root_nodeid=`).
pub const FUSE_ROOT_ID: u64 = 1;

/// The smallest read buffer the kernel accepts for `/dev/fuse` reads.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

/// Kernel default for requests in flight in the background (`FUSE_DEFAULT_MAX_BACKGROUND`).
pub const DEFAULT_MAX_BACKGROUND: u16 = 12;
/// Kernel default congestion threshold (3/4 of the default background limit).
pub const DEFAULT_CONGESTION_THRESHOLD: u16 = 9;
/// Pages per request when `FUSE_MAX_PAGES` is not negotiated (kernel `FUSE_DEFAULT_MAX_PAGES_PER_REQ`).
pub const DEFAULT_MAX_PAGES: u16 = 32;
/// Default upper bound for `fuse_init_out.max_pages` (kernel sysctl `fs.fuse.max_pages_limit`).
pub const MAX_MAX_PAGES: u16 = 256;
/// Default `max_write` we offer: 256 pages of 4 KiB = 1 MiB.
pub const DEFAULT_MAX_WRITE: u32 = 1 << 20;
/// Room for the in-header and the largest fixed argument in front of write data (libfuse uses one page).
pub const REQUEST_HEADROOM: usize = 4096;

/// The size of a `/dev/fuse` read buffer that can hold any request when `max_write` was negotiated.
pub const fn request_buffer_size(max_write: u32) -> usize {
    let want = max_write as usize + REQUEST_HEADROOM;
    if want < FUSE_MIN_READ_BUFFER {
        FUSE_MIN_READ_BUFFER
    } else {
        want
    }
}

/// Longest name the kernel accepts in a directory entry or lookup (kernel-internal `FUSE_NAME_MAX`).
pub const FUSE_NAME_MAX: usize = 1024;

/// Set in `fuse_in_header.unique` when the kernel resends a request (7.40).
pub const FUSE_UNIQUE_RESEND: u64 = 1 << 63;
/// uid/gid value sent when an idmapped mount cannot map the caller (7.41).
pub const FUSE_INVALID_UIDGID: u32 = u32::MAX;

/// Legacy short sizes of structs, from the uapi `FUSE_COMPAT_*` macros.
pub const FUSE_COMPAT_ENTRY_OUT_SIZE: usize = 120;
/// See [`FUSE_COMPAT_ENTRY_OUT_SIZE`].
pub const FUSE_COMPAT_ATTR_OUT_SIZE: usize = 96;
/// See [`FUSE_COMPAT_ENTRY_OUT_SIZE`].
pub const FUSE_COMPAT_MKNOD_IN_SIZE: usize = 8;
/// See [`FUSE_COMPAT_ENTRY_OUT_SIZE`].
pub const FUSE_COMPAT_WRITE_IN_SIZE: usize = 24;
/// See [`FUSE_COMPAT_ENTRY_OUT_SIZE`].
pub const FUSE_COMPAT_STATFS_SIZE: usize = 48;
/// Size of the `fuse_setxattr_in` the kernel sends unless `FUSE_SETXATTR_EXT` was negotiated.
pub const FUSE_COMPAT_SETXATTR_IN_SIZE: usize = 8;
/// Reply size of INIT for minor < 5.
pub const FUSE_COMPAT_INIT_OUT_SIZE: usize = 8;
/// Reply size of INIT for minor < 23.
pub const FUSE_COMPAT_22_INIT_OUT_SIZE: usize = 24;
/// Size of the `fuse_init_in` a kernel older than 7.36 sends (major, minor, max_readahead, flags).
pub const INIT_IN_LEGACY_SIZE: usize = 16;

// ---- INIT flags -------------------------------------------------------------------------
// One u64 namespace: bits 0..31 travel in `flags`, bits 32..63 in `flags2` (shifted down).

/// Asynchronous read requests.
pub const FUSE_ASYNC_READ: u64 = 1 << 0;
/// Remote POSIX locks.
pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
/// Kernel sends file handle for fstat etc. (never implemented).
pub const FUSE_FILE_OPS: u64 = 1 << 2;
/// Server handles O_TRUNC in open.
pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
/// Server handles lookups of "." and "..".
pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
/// Writes larger than 4 KiB.
pub const FUSE_BIG_WRITES: u64 = 1 << 5;
/// Don't apply umask on create.
pub const FUSE_DONT_MASK: u64 = 1 << 6;
/// Kernel supports splice write on the device.
pub const FUSE_SPLICE_WRITE: u64 = 1 << 7;
/// Kernel supports splice move on the device.
pub const FUSE_SPLICE_MOVE: u64 = 1 << 8;
/// Kernel supports splice read on the device.
pub const FUSE_SPLICE_READ: u64 = 1 << 9;
/// Remote BSD flock locks.
pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
/// Kernel supports ioctl on directories.
pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
/// Automatically invalidate cached pages on attribute change.
pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
/// READDIRPLUS.
pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
/// Adaptive READDIRPLUS.
pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
/// Asynchronous direct I/O submission.
pub const FUSE_ASYNC_DIO: u64 = 1 << 15;
/// Writeback cache for buffered writes.
pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
/// Kernel supports zero-message opens.
pub const FUSE_NO_OPEN_SUPPORT: u64 = 1 << 17;
/// Parallel lookups and readdir.
pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
/// Server kills suid/sgid/caps on write/chown/truncate.
pub const FUSE_HANDLE_KILLPRIV: u64 = 1 << 19;
/// Server supports POSIX ACLs.
pub const FUSE_POSIX_ACL: u64 = 1 << 20;
/// Reading the device after abort returns ECONNABORTED.
pub const FUSE_ABORT_ERROR: u64 = 1 << 21;
/// `fuse_init_out.max_pages` is valid.
pub const FUSE_MAX_PAGES: u64 = 1 << 22;
/// Cache READLINK replies.
pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
/// Kernel supports zero-message opendir.
pub const FUSE_NO_OPENDIR_SUPPORT: u64 = 1 << 24;
/// Only invalidate cached pages on explicit request.
pub const FUSE_EXPLICIT_INVAL_DATA: u64 = 1 << 25;
/// `fuse_init_out.map_alignment` is valid (DAX).
pub const FUSE_MAP_ALIGNMENT: u64 = 1 << 26;
/// Kernel supports auto-mounting submounts.
pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
/// Server kills suid/sgid like the VFS (v2 semantics).
pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
/// Server supports the extended `fuse_setxattr_in` (we do not negotiate it).
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
/// Extended `fuse_init_in`/`flags2` are present; a server must set it for `flags2` to be read.
pub const FUSE_INIT_EXT: u64 = 1 << 30;
/// Reserved, do not use.
pub const FUSE_INIT_RESERVED: u64 = 1 << 31;
/// Security context on create/mkdir/symlink/mknod (flags2 bit 0).
pub const FUSE_SECURITY_CTX: u64 = 1 << 32;
/// Per-inode DAX.
pub const FUSE_HAS_INODE_DAX: u64 = 1 << 33;
/// Supplementary group extension on create-like requests.
pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
/// Kernel supports expiry-only entry invalidation.
pub const FUSE_HAS_EXPIRE_ONLY: u64 = 1 << 35;
/// Allow shared mmap with FOPEN_DIRECT_IO.
pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
/// Obsolete alias of [`FUSE_DIRECT_IO_ALLOW_MMAP`].
pub const FUSE_DIRECT_IO_RELAX: u64 = FUSE_DIRECT_IO_ALLOW_MMAP;
/// Passthrough I/O to backing files (7.40).
pub const FUSE_PASSTHROUGH: u64 = 1 << 37;
/// Explicitly disable export support (7.40).
pub const FUSE_NO_EXPORT_SUPPORT: u64 = 1 << 38;
/// Kernel may resend requests (7.40).
pub const FUSE_HAS_RESEND: u64 = 1 << 39;
/// Allow idmapped mounts (7.41).
pub const FUSE_ALLOW_IDMAP: u64 = 1 << 40;
/// Client supports io_uring transport (7.42; value from later headers, not in the 6.12 copy).
pub const FUSE_OVER_IO_URING: u64 = 1 << 41;
/// Kernel times out requests; `init_out.request_timeout` in seconds (7.43; not in the 6.12 copy).
pub const FUSE_REQUEST_TIMEOUT: u64 = 1 << 42;
/// Kernel supports io-uring buffer pools (7.46, Linux 7.3; protocol doc §2). The same bit
/// as the iomap series' `FUSE_IOMAP`: which one a kernel means depends on its minor, see
/// [`crate::iomap::offers_iomap`].
pub const FUSE_HAS_IO_URING_BUFPOOL: u64 = 1 << 43;
/// The minor from which mainline defines INIT bit 43 as [`FUSE_HAS_IO_URING_BUFPOOL`].
pub const IO_URING_BUFPOOL_MINOR: u32 = 46;

/// Split a 64-bit init flag word into the wire's `(flags, flags2)`.
pub const fn split_init_flags(flags: u64) -> (u32, u32) {
    (flags as u32, (flags >> 32) as u32)
}

/// Join the wire's `(flags, flags2)` into one 64-bit init flag word.
pub const fn join_init_flags(flags: u32, flags2: u32) -> u64 {
    (flags as u64) | ((flags2 as u64) << 32)
}

/// CUSE init flag: unrestricted ioctls.
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;
/// Longest CUSE device info string.
pub const CUSE_INIT_INFO_MAX: usize = 4096;

// ---- fuse_setattr_in.valid ------------------------------------------------------------------

/// `mode` is valid.
pub const FATTR_MODE: u32 = 1 << 0;
/// `uid` is valid.
pub const FATTR_UID: u32 = 1 << 1;
/// `gid` is valid.
pub const FATTR_GID: u32 = 1 << 2;
/// `size` is valid (truncate).
pub const FATTR_SIZE: u32 = 1 << 3;
/// `atime` is valid.
pub const FATTR_ATIME: u32 = 1 << 4;
/// `mtime` is valid.
pub const FATTR_MTIME: u32 = 1 << 5;
/// `fh` is valid.
pub const FATTR_FH: u32 = 1 << 6;
/// Set atime to now.
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
/// Set mtime to now.
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
/// `lock_owner` is valid.
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
/// `ctime` is valid.
pub const FATTR_CTIME: u32 = 1 << 10;
/// Kill suid/sgid.
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

// ---- fuse_open_out.open_flags -------------------------------------------------------------

/// Bypass the page cache for this open file.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// Don't invalidate the data cache on open.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// The file is not seekable.
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
/// Allow caching this directory.
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
/// Stream-like file (no position).
pub const FOPEN_STREAM: u32 = 1 << 4;
/// Don't flush the data cache on close.
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
/// Allow concurrent direct writes on the same inode.
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
/// Passthrough read/write to a backing file.
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

// ---- misc request flags ---------------------------------------------------------------------

/// `fuse_release_in.release_flags`: flush before release.
pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
/// `fuse_release_in.release_flags`: drop flock locks.
pub const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
/// `fuse_getattr_in.getattr_flags`: `fh` is valid.
pub const FUSE_GETATTR_FH: u32 = 1 << 0;
/// `fuse_lk_in.lk_flags`: BSD flock.
pub const FUSE_LK_FLOCK: u32 = 1 << 0;
/// `fuse_write_in.write_flags`: delayed write from the page cache.
pub const FUSE_WRITE_CACHE: u32 = 1 << 0;
/// `fuse_write_in.write_flags`: `lock_owner` is valid.
pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
/// `fuse_write_in.write_flags`: kill suid/sgid.
pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// Obsolete alias of [`FUSE_WRITE_KILL_SUIDGID`].
pub const FUSE_WRITE_KILL_PRIV: u32 = FUSE_WRITE_KILL_SUIDGID;
/// `fuse_read_in.read_flags`: `lock_owner` is valid.
pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
/// `fuse_fsync_in.fsync_flags`: data only.
pub const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;
/// `fuse_open_in.open_flags`: kill suid/sgid if executable.
pub const FUSE_OPEN_KILL_SUIDGID: u32 = 1 << 0;
/// `fuse_setxattr_in.setxattr_flags`: clear SGID when setting the access ACL.
pub const FUSE_SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;
/// `fuse_notify_inval_entry_out.flags`: only expire the entry.
pub const FUSE_EXPIRE_ONLY: u32 = 1 << 0;
/// `fuse_poll_in.flags`: request a poll notification.
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

/// 32-bit compat ioctl on a 64-bit kernel.
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
/// Not restricted to well-formed ioctls; retry allowed.
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
/// Retry with new iovecs.
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
/// 32-bit ioctl.
pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
/// The ioctl is on a directory.
pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
/// x32 compat ioctl.
pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
/// Maximum in + out iovecs of an unrestricted ioctl.
pub const FUSE_IOCTL_MAX_IOV: u32 = 256;

/// `fuse_setupmapping_in.flags`: writable mapping.
pub const FUSE_SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
/// `fuse_setupmapping_in.flags`: readable mapping.
pub const FUSE_SETUPMAPPING_FLAG_READ: u64 = 1 << 1;

/// Extension types 0..=31 are security-context counts.
pub const FUSE_MAX_NR_SECCTX: u32 = 31;
/// Supplementary groups extension type.
pub const FUSE_EXT_GROUPS: u32 = 32;

// ---- fuse_attr.flags (mainline part; iomap bits are in crate::iomap) -----------------------

/// The object is a submount root.
pub const FUSE_ATTR_SUBMOUNT: u32 = 1 << 0;
/// Enable DAX for this file (per-inode DAX mode).
pub const FUSE_ATTR_DAX: u32 = 1 << 1;
/// The iomap series' attr flags, re-exported so every `FUSE_ATTR_*` is reachable here; they
/// are defined (once) in [`crate::iomap`].
pub use crate::iomap::{
    FUSE_ATTR_APPEND, FUSE_ATTR_ATOMIC, FUSE_ATTR_EXCLUSIVE, FUSE_ATTR_IMMUTABLE, FUSE_ATTR_IOMAP,
    FUSE_ATTR_SYNC,
};

// ---- rename2 flags (linux/fs.h) -----------------------------------------------------------

/// Don't overwrite the target.
pub const RENAME_NOREPLACE: u32 = 1 << 0;
/// Exchange source and target.
pub const RENAME_EXCHANGE: u32 = 1 << 1;
/// Leave a whiteout at the source.
pub const RENAME_WHITEOUT: u32 = 1 << 2;

// ---- device ioctls --------------------------------------------------------------------------

/// ioctl "type" byte of /dev/fuse.
pub const FUSE_DEV_IOC_MAGIC: u32 = 229;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` in the asm-generic layout (x86, arm, riscv).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}
/// `_IO(type, nr)`.
pub const fn io(ty: u32, nr: u32) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}
/// `_IOR(type, nr, size)`.
pub const fn ior(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}
/// `_IOW(type, nr, size)`.
pub const fn iow(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}

/// Clone a /dev/fuse fd onto a session: `_IOR(229, 0, uint32_t)`.
pub const FUSE_DEV_IOC_CLONE: u32 = ior(FUSE_DEV_IOC_MAGIC, 0, 4);
/// Register a backing file/device: `_IOW(229, 1, struct fuse_backing_map)`; returns the id.
pub const FUSE_DEV_IOC_BACKING_OPEN: u32 = iow(
    FUSE_DEV_IOC_MAGIC,
    1,
    core::mem::size_of::<crate::structs::BackingMap>(),
);
/// Unregister a backing id: `_IOW(229, 2, uint32_t)`.
pub const FUSE_DEV_IOC_BACKING_CLOSE: u32 = iow(FUSE_DEV_IOC_MAGIC, 2, 4);
/// Make INIT synchronous within mount(2): `_IO(229, 3)` (7.45 era header).
pub const FUSE_DEV_IOC_SYNC_INIT: u32 = io(FUSE_DEV_IOC_MAGIC, 3);

/// `DT_*` directory entry type for a `st_mode` (what `fuse_dirent.type` carries).
pub const fn dirent_type(mode: u32) -> u32 {
    (mode & 0o170000) >> 12
}
