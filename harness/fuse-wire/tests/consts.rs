//! Numbers: opcodes, flags, notify codes and ioctls against the uapi header and the iomap doc.
//!
//! The `*_uapi_6_12` tables were produced by compiling the 6.12 `include/uapi/linux/fuse.h`
//! with gcc and printing every macro and enum value; the rest cite their source inline.

// Generated table: the constants have mixed integer types, so every value is cast.
#![allow(clippy::unnecessary_cast)]

use fuse_wire::consts::*;
use fuse_wire::iomap::*;
use fuse_wire::{consts, opcode, NotifyCode, Opcode, UnknownOpcode};

#[test]
fn classic_constants_match_uapi_6_12() {
    assert_eq!(consts::FUSE_ROOT_ID as u64, 1, "FUSE_ROOT_ID");
    assert_eq!(consts::FATTR_MODE as u64, 1, "FATTR_MODE");
    assert_eq!(consts::FATTR_UID as u64, 2, "FATTR_UID");
    assert_eq!(consts::FATTR_GID as u64, 4, "FATTR_GID");
    assert_eq!(consts::FATTR_SIZE as u64, 8, "FATTR_SIZE");
    assert_eq!(consts::FATTR_ATIME as u64, 16, "FATTR_ATIME");
    assert_eq!(consts::FATTR_MTIME as u64, 32, "FATTR_MTIME");
    assert_eq!(consts::FATTR_FH as u64, 64, "FATTR_FH");
    assert_eq!(consts::FATTR_ATIME_NOW as u64, 128, "FATTR_ATIME_NOW");
    assert_eq!(consts::FATTR_MTIME_NOW as u64, 256, "FATTR_MTIME_NOW");
    assert_eq!(consts::FATTR_LOCKOWNER as u64, 512, "FATTR_LOCKOWNER");
    assert_eq!(consts::FATTR_CTIME as u64, 1024, "FATTR_CTIME");
    assert_eq!(
        consts::FATTR_KILL_SUIDGID as u64,
        2048,
        "FATTR_KILL_SUIDGID"
    );
    assert_eq!(consts::FOPEN_DIRECT_IO as u64, 1, "FOPEN_DIRECT_IO");
    assert_eq!(consts::FOPEN_KEEP_CACHE as u64, 2, "FOPEN_KEEP_CACHE");
    assert_eq!(consts::FOPEN_NONSEEKABLE as u64, 4, "FOPEN_NONSEEKABLE");
    assert_eq!(consts::FOPEN_CACHE_DIR as u64, 8, "FOPEN_CACHE_DIR");
    assert_eq!(consts::FOPEN_STREAM as u64, 16, "FOPEN_STREAM");
    assert_eq!(consts::FOPEN_NOFLUSH as u64, 32, "FOPEN_NOFLUSH");
    assert_eq!(
        consts::FOPEN_PARALLEL_DIRECT_WRITES as u64,
        64,
        "FOPEN_PARALLEL_DIRECT_WRITES"
    );
    assert_eq!(consts::FOPEN_PASSTHROUGH as u64, 128, "FOPEN_PASSTHROUGH");
    assert_eq!(consts::FUSE_ASYNC_READ as u64, 1, "FUSE_ASYNC_READ");
    assert_eq!(consts::FUSE_POSIX_LOCKS as u64, 2, "FUSE_POSIX_LOCKS");
    assert_eq!(consts::FUSE_FILE_OPS as u64, 4, "FUSE_FILE_OPS");
    assert_eq!(consts::FUSE_ATOMIC_O_TRUNC as u64, 8, "FUSE_ATOMIC_O_TRUNC");
    assert_eq!(
        consts::FUSE_EXPORT_SUPPORT as u64,
        16,
        "FUSE_EXPORT_SUPPORT"
    );
    assert_eq!(consts::FUSE_BIG_WRITES as u64, 32, "FUSE_BIG_WRITES");
    assert_eq!(consts::FUSE_DONT_MASK as u64, 64, "FUSE_DONT_MASK");
    assert_eq!(consts::FUSE_SPLICE_WRITE as u64, 128, "FUSE_SPLICE_WRITE");
    assert_eq!(consts::FUSE_SPLICE_MOVE as u64, 256, "FUSE_SPLICE_MOVE");
    assert_eq!(consts::FUSE_SPLICE_READ as u64, 512, "FUSE_SPLICE_READ");
    assert_eq!(consts::FUSE_FLOCK_LOCKS as u64, 1024, "FUSE_FLOCK_LOCKS");
    assert_eq!(
        consts::FUSE_HAS_IOCTL_DIR as u64,
        2048,
        "FUSE_HAS_IOCTL_DIR"
    );
    assert_eq!(
        consts::FUSE_AUTO_INVAL_DATA as u64,
        4096,
        "FUSE_AUTO_INVAL_DATA"
    );
    assert_eq!(
        consts::FUSE_DO_READDIRPLUS as u64,
        8192,
        "FUSE_DO_READDIRPLUS"
    );
    assert_eq!(
        consts::FUSE_READDIRPLUS_AUTO as u64,
        16384,
        "FUSE_READDIRPLUS_AUTO"
    );
    assert_eq!(consts::FUSE_ASYNC_DIO as u64, 32768, "FUSE_ASYNC_DIO");
    assert_eq!(
        consts::FUSE_WRITEBACK_CACHE as u64,
        65536,
        "FUSE_WRITEBACK_CACHE"
    );
    assert_eq!(
        consts::FUSE_NO_OPEN_SUPPORT as u64,
        131072,
        "FUSE_NO_OPEN_SUPPORT"
    );
    assert_eq!(
        consts::FUSE_PARALLEL_DIROPS as u64,
        262144,
        "FUSE_PARALLEL_DIROPS"
    );
    assert_eq!(
        consts::FUSE_HANDLE_KILLPRIV as u64,
        524288,
        "FUSE_HANDLE_KILLPRIV"
    );
    assert_eq!(consts::FUSE_POSIX_ACL as u64, 1048576, "FUSE_POSIX_ACL");
    assert_eq!(consts::FUSE_ABORT_ERROR as u64, 2097152, "FUSE_ABORT_ERROR");
    assert_eq!(consts::FUSE_MAX_PAGES as u64, 4194304, "FUSE_MAX_PAGES");
    assert_eq!(
        consts::FUSE_CACHE_SYMLINKS as u64,
        8388608,
        "FUSE_CACHE_SYMLINKS"
    );
    assert_eq!(
        consts::FUSE_NO_OPENDIR_SUPPORT as u64,
        16777216,
        "FUSE_NO_OPENDIR_SUPPORT"
    );
    assert_eq!(
        consts::FUSE_EXPLICIT_INVAL_DATA as u64,
        33554432,
        "FUSE_EXPLICIT_INVAL_DATA"
    );
    assert_eq!(
        consts::FUSE_MAP_ALIGNMENT as u64,
        67108864,
        "FUSE_MAP_ALIGNMENT"
    );
    assert_eq!(consts::FUSE_SUBMOUNTS as u64, 134217728, "FUSE_SUBMOUNTS");
    assert_eq!(
        consts::FUSE_HANDLE_KILLPRIV_V2 as u64,
        268435456,
        "FUSE_HANDLE_KILLPRIV_V2"
    );
    assert_eq!(
        consts::FUSE_SETXATTR_EXT as u64,
        536870912,
        "FUSE_SETXATTR_EXT"
    );
    assert_eq!(consts::FUSE_INIT_EXT as u64, 1073741824, "FUSE_INIT_EXT");
    assert_eq!(consts::FUSE_INIT_RESERVED, 1 << 31); // C int (1 << 31) sign-extends; we keep the bit
    assert_eq!(
        consts::FUSE_SECURITY_CTX as u64,
        4294967296,
        "FUSE_SECURITY_CTX"
    );
    assert_eq!(
        consts::FUSE_HAS_INODE_DAX as u64,
        8589934592,
        "FUSE_HAS_INODE_DAX"
    );
    assert_eq!(
        consts::FUSE_CREATE_SUPP_GROUP as u64,
        17179869184,
        "FUSE_CREATE_SUPP_GROUP"
    );
    assert_eq!(
        consts::FUSE_HAS_EXPIRE_ONLY as u64,
        34359738368,
        "FUSE_HAS_EXPIRE_ONLY"
    );
    assert_eq!(
        consts::FUSE_DIRECT_IO_ALLOW_MMAP as u64,
        68719476736,
        "FUSE_DIRECT_IO_ALLOW_MMAP"
    );
    assert_eq!(
        consts::FUSE_PASSTHROUGH as u64,
        137438953472,
        "FUSE_PASSTHROUGH"
    );
    assert_eq!(
        consts::FUSE_NO_EXPORT_SUPPORT as u64,
        274877906944,
        "FUSE_NO_EXPORT_SUPPORT"
    );
    assert_eq!(
        consts::FUSE_HAS_RESEND as u64,
        549755813888,
        "FUSE_HAS_RESEND"
    );
    assert_eq!(
        consts::FUSE_DIRECT_IO_RELAX as u64,
        68719476736,
        "FUSE_DIRECT_IO_RELAX"
    );
    assert_eq!(
        consts::FUSE_ALLOW_IDMAP as u64,
        1099511627776,
        "FUSE_ALLOW_IDMAP"
    );
    assert_eq!(
        consts::CUSE_UNRESTRICTED_IOCTL as u64,
        1,
        "CUSE_UNRESTRICTED_IOCTL"
    );
    assert_eq!(consts::FUSE_RELEASE_FLUSH as u64, 1, "FUSE_RELEASE_FLUSH");
    assert_eq!(
        consts::FUSE_RELEASE_FLOCK_UNLOCK as u64,
        2,
        "FUSE_RELEASE_FLOCK_UNLOCK"
    );
    assert_eq!(consts::FUSE_GETATTR_FH as u64, 1, "FUSE_GETATTR_FH");
    assert_eq!(consts::FUSE_LK_FLOCK as u64, 1, "FUSE_LK_FLOCK");
    assert_eq!(consts::FUSE_WRITE_CACHE as u64, 1, "FUSE_WRITE_CACHE");
    assert_eq!(
        consts::FUSE_WRITE_LOCKOWNER as u64,
        2,
        "FUSE_WRITE_LOCKOWNER"
    );
    assert_eq!(
        consts::FUSE_WRITE_KILL_SUIDGID as u64,
        4,
        "FUSE_WRITE_KILL_SUIDGID"
    );
    assert_eq!(
        consts::FUSE_WRITE_KILL_PRIV as u64,
        4,
        "FUSE_WRITE_KILL_PRIV"
    );
    assert_eq!(consts::FUSE_READ_LOCKOWNER as u64, 2, "FUSE_READ_LOCKOWNER");
    assert_eq!(consts::FUSE_IOCTL_COMPAT as u64, 1, "FUSE_IOCTL_COMPAT");
    assert_eq!(
        consts::FUSE_IOCTL_UNRESTRICTED as u64,
        2,
        "FUSE_IOCTL_UNRESTRICTED"
    );
    assert_eq!(consts::FUSE_IOCTL_RETRY as u64, 4, "FUSE_IOCTL_RETRY");
    assert_eq!(consts::FUSE_IOCTL_32BIT as u64, 8, "FUSE_IOCTL_32BIT");
    assert_eq!(consts::FUSE_IOCTL_DIR as u64, 16, "FUSE_IOCTL_DIR");
    assert_eq!(
        consts::FUSE_IOCTL_COMPAT_X32 as u64,
        32,
        "FUSE_IOCTL_COMPAT_X32"
    );
    assert_eq!(consts::FUSE_IOCTL_MAX_IOV as u64, 256, "FUSE_IOCTL_MAX_IOV");
    assert_eq!(
        consts::FUSE_POLL_SCHEDULE_NOTIFY as u64,
        1,
        "FUSE_POLL_SCHEDULE_NOTIFY"
    );
    assert_eq!(
        consts::FUSE_FSYNC_FDATASYNC as u64,
        1,
        "FUSE_FSYNC_FDATASYNC"
    );
    assert_eq!(consts::FUSE_ATTR_SUBMOUNT as u64, 1, "FUSE_ATTR_SUBMOUNT");
    assert_eq!(consts::FUSE_ATTR_DAX as u64, 2, "FUSE_ATTR_DAX");
    assert_eq!(
        consts::FUSE_OPEN_KILL_SUIDGID as u64,
        1,
        "FUSE_OPEN_KILL_SUIDGID"
    );
    assert_eq!(
        consts::FUSE_SETXATTR_ACL_KILL_SGID as u64,
        1,
        "FUSE_SETXATTR_ACL_KILL_SGID"
    );
    assert_eq!(consts::FUSE_EXPIRE_ONLY as u64, 1, "FUSE_EXPIRE_ONLY");
    assert_eq!(
        consts::FUSE_MIN_READ_BUFFER as u64,
        8192,
        "FUSE_MIN_READ_BUFFER"
    );
    assert_eq!(
        consts::FUSE_COMPAT_ENTRY_OUT_SIZE as u64,
        120,
        "FUSE_COMPAT_ENTRY_OUT_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_ATTR_OUT_SIZE as u64,
        96,
        "FUSE_COMPAT_ATTR_OUT_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_MKNOD_IN_SIZE as u64,
        8,
        "FUSE_COMPAT_MKNOD_IN_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_WRITE_IN_SIZE as u64,
        24,
        "FUSE_COMPAT_WRITE_IN_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_STATFS_SIZE as u64,
        48,
        "FUSE_COMPAT_STATFS_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_SETXATTR_IN_SIZE as u64,
        8,
        "FUSE_COMPAT_SETXATTR_IN_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_INIT_OUT_SIZE as u64,
        8,
        "FUSE_COMPAT_INIT_OUT_SIZE"
    );
    assert_eq!(
        consts::FUSE_COMPAT_22_INIT_OUT_SIZE as u64,
        24,
        "FUSE_COMPAT_22_INIT_OUT_SIZE"
    );
    assert_eq!(
        consts::CUSE_INIT_INFO_MAX as u64,
        4096,
        "CUSE_INIT_INFO_MAX"
    );
    assert_eq!(
        consts::FUSE_SETUPMAPPING_FLAG_WRITE as u64,
        1,
        "FUSE_SETUPMAPPING_FLAG_WRITE"
    );
    assert_eq!(
        consts::FUSE_SETUPMAPPING_FLAG_READ as u64,
        2,
        "FUSE_SETUPMAPPING_FLAG_READ"
    );
    assert_eq!(consts::FUSE_MAX_NR_SECCTX as u64, 31, "FUSE_MAX_NR_SECCTX");
    assert_eq!(consts::FUSE_EXT_GROUPS as u64, 32, "FUSE_EXT_GROUPS");
    assert_eq!(opcode::FUSE_INIT_BSWAP_RESERVED, 436207616);
    assert_eq!(
        consts::FUSE_DEV_IOC_CLONE as u64,
        2147804416,
        "FUSE_DEV_IOC_CLONE"
    );
    assert_eq!(
        consts::FUSE_DEV_IOC_BACKING_OPEN as u64,
        1074849025,
        "FUSE_DEV_IOC_BACKING_OPEN"
    );
    assert_eq!(
        consts::FUSE_DEV_IOC_BACKING_CLOSE as u64,
        1074062594,
        "FUSE_DEV_IOC_BACKING_CLOSE"
    );
    assert_eq!(
        consts::FUSE_UNIQUE_RESEND as u64,
        9223372036854775808,
        "FUSE_UNIQUE_RESEND"
    );
    assert_eq!(
        consts::FUSE_INVALID_UIDGID as u64,
        4294967295,
        "FUSE_INVALID_UIDGID"
    );
    assert_eq!(consts::KERNEL_VERSION as u64, 7);
}

#[test]
fn opcodes_match_uapi_6_12() {
    assert_eq!(Opcode::Lookup as u32, 1, "FUSE_LOOKUP");
    assert_eq!(Opcode::Forget as u32, 2, "FUSE_FORGET");
    assert_eq!(Opcode::Getattr as u32, 3, "FUSE_GETATTR");
    assert_eq!(Opcode::Setattr as u32, 4, "FUSE_SETATTR");
    assert_eq!(Opcode::Readlink as u32, 5, "FUSE_READLINK");
    assert_eq!(Opcode::Symlink as u32, 6, "FUSE_SYMLINK");
    assert_eq!(Opcode::Mknod as u32, 8, "FUSE_MKNOD");
    assert_eq!(Opcode::Mkdir as u32, 9, "FUSE_MKDIR");
    assert_eq!(Opcode::Unlink as u32, 10, "FUSE_UNLINK");
    assert_eq!(Opcode::Rmdir as u32, 11, "FUSE_RMDIR");
    assert_eq!(Opcode::Rename as u32, 12, "FUSE_RENAME");
    assert_eq!(Opcode::Link as u32, 13, "FUSE_LINK");
    assert_eq!(Opcode::Open as u32, 14, "FUSE_OPEN");
    assert_eq!(Opcode::Read as u32, 15, "FUSE_READ");
    assert_eq!(Opcode::Write as u32, 16, "FUSE_WRITE");
    assert_eq!(Opcode::Statfs as u32, 17, "FUSE_STATFS");
    assert_eq!(Opcode::Release as u32, 18, "FUSE_RELEASE");
    assert_eq!(Opcode::Fsync as u32, 20, "FUSE_FSYNC");
    assert_eq!(Opcode::Setxattr as u32, 21, "FUSE_SETXATTR");
    assert_eq!(Opcode::Getxattr as u32, 22, "FUSE_GETXATTR");
    assert_eq!(Opcode::Listxattr as u32, 23, "FUSE_LISTXATTR");
    assert_eq!(Opcode::Removexattr as u32, 24, "FUSE_REMOVEXATTR");
    assert_eq!(Opcode::Flush as u32, 25, "FUSE_FLUSH");
    assert_eq!(Opcode::Init as u32, 26, "FUSE_INIT");
    assert_eq!(Opcode::Opendir as u32, 27, "FUSE_OPENDIR");
    assert_eq!(Opcode::Readdir as u32, 28, "FUSE_READDIR");
    assert_eq!(Opcode::Releasedir as u32, 29, "FUSE_RELEASEDIR");
    assert_eq!(Opcode::Fsyncdir as u32, 30, "FUSE_FSYNCDIR");
    assert_eq!(Opcode::Getlk as u32, 31, "FUSE_GETLK");
    assert_eq!(Opcode::Setlk as u32, 32, "FUSE_SETLK");
    assert_eq!(Opcode::Setlkw as u32, 33, "FUSE_SETLKW");
    assert_eq!(Opcode::Access as u32, 34, "FUSE_ACCESS");
    assert_eq!(Opcode::Create as u32, 35, "FUSE_CREATE");
    assert_eq!(Opcode::Interrupt as u32, 36, "FUSE_INTERRUPT");
    assert_eq!(Opcode::Bmap as u32, 37, "FUSE_BMAP");
    assert_eq!(Opcode::Destroy as u32, 38, "FUSE_DESTROY");
    assert_eq!(Opcode::Ioctl as u32, 39, "FUSE_IOCTL");
    assert_eq!(Opcode::Poll as u32, 40, "FUSE_POLL");
    assert_eq!(Opcode::NotifyReply as u32, 41, "FUSE_NOTIFY_REPLY");
    assert_eq!(Opcode::BatchForget as u32, 42, "FUSE_BATCH_FORGET");
    assert_eq!(Opcode::Fallocate as u32, 43, "FUSE_FALLOCATE");
    assert_eq!(Opcode::Readdirplus as u32, 44, "FUSE_READDIRPLUS");
    assert_eq!(Opcode::Rename2 as u32, 45, "FUSE_RENAME2");
    assert_eq!(Opcode::Lseek as u32, 46, "FUSE_LSEEK");
    assert_eq!(Opcode::CopyFileRange as u32, 47, "FUSE_COPY_FILE_RANGE");
    assert_eq!(Opcode::SetupMapping as u32, 48, "FUSE_SETUPMAPPING");
    assert_eq!(Opcode::RemoveMapping as u32, 49, "FUSE_REMOVEMAPPING");
    assert_eq!(Opcode::Syncfs as u32, 50, "FUSE_SYNCFS");
    assert_eq!(Opcode::Tmpfile as u32, 51, "FUSE_TMPFILE");
    assert_eq!(Opcode::Statx as u32, 52, "FUSE_STATX");
    assert_eq!(Opcode::CuseInit as u32, 4096, "CUSE_INIT");
}

#[test]
fn notify_codes_match_uapi_6_12() {
    assert_eq!(opcode::FUSE_NOTIFY_POLL, 1, "FUSE_NOTIFY_POLL");
    assert_eq!(
        opcode::FUSE_NOTIFY_INVAL_INODE,
        2,
        "FUSE_NOTIFY_INVAL_INODE"
    );
    assert_eq!(
        opcode::FUSE_NOTIFY_INVAL_ENTRY,
        3,
        "FUSE_NOTIFY_INVAL_ENTRY"
    );
    assert_eq!(opcode::FUSE_NOTIFY_STORE, 4, "FUSE_NOTIFY_STORE");
    assert_eq!(opcode::FUSE_NOTIFY_RETRIEVE, 5, "FUSE_NOTIFY_RETRIEVE");
    assert_eq!(opcode::FUSE_NOTIFY_DELETE, 6, "FUSE_NOTIFY_DELETE");
    assert_eq!(opcode::FUSE_NOTIFY_RESEND, 7, "FUSE_NOTIFY_RESEND");
}

#[test]
fn numbers_added_after_7_41() {
    assert_eq!(KERNEL_MINOR_VERSION, 45);
    assert_eq!(Opcode::CopyFileRange64 as u32, 53); // 7.45
    assert_eq!(opcode::FUSE_NOTIFY_INC_EPOCH, 8); // 7.44
    assert_eq!(opcode::FUSE_NOTIFY_PRUNE, 9); // 7.45
    assert_eq!(FUSE_OVER_IO_URING, 1 << 41); // 7.42
    assert_eq!(FUSE_REQUEST_TIMEOUT, 1 << 42); // 7.43
    assert_eq!(FUSE_DEV_IOC_SYNC_INIT, 0xe503); // _IO(229, 3)
    assert_eq!(opcode::CUSE_INIT_BSWAP_RESERVED, 4096 << 8);
    assert_eq!(opcode::FUSE_INIT_BSWAP_RESERVED, 26 << 24);
    assert_eq!(RENAME_NOREPLACE, 1);
    assert_eq!(RENAME_EXCHANGE, 2);
    assert_eq!(RENAME_WHITEOUT, 4);
    assert_eq!(MIN_SUPPORTED_MINOR, 31);
}

#[test]
fn iomap_opcodes_and_notify_codes() {
    // §1.1
    assert_eq!(Opcode::FreezeFs as u32, 4089);
    assert_eq!(Opcode::UnfreezeFs as u32, 4090);
    assert_eq!(Opcode::ShutdownFs as u32, 4091);
    assert_eq!(Opcode::IomapConfig as u32, 4092);
    assert_eq!(Opcode::IomapIoend as u32, 4093);
    assert_eq!(Opcode::IomapBegin as u32, 4094);
    assert_eq!(Opcode::IomapEnd as u32, 4095);
    assert_eq!(Opcode::CuseInit as u32, 4096);
    // §1.2
    assert_eq!(NotifyCode::IomapDevInval as i32, 99);
    assert_eq!(NotifyCode::IomapUpsertMappings as i32, 100);
    assert_eq!(NotifyCode::IomapInvalMappings as i32, 101);
    assert_eq!(IOMAP_MINOR, 99);
}

#[test]
fn opcode_conversions() {
    for &op in Opcode::ALL {
        assert_eq!(Opcode::from_u32(op as u32), Some(op));
        assert_eq!(Opcode::try_from(op as u32), Ok(op));
        assert_eq!(u32::from(op), op as u32);
    }
    // Numeric order, no duplicates.
    assert!(Opcode::ALL
        .windows(2)
        .all(|w| (w[0] as u32) < (w[1] as u32)));
    assert_eq!(Opcode::ALL.len(), 51 + 7 + 1); // 1..=53 without 7 and 19, iomap, CUSE_INIT
    let known: Vec<u32> = Opcode::ALL.iter().map(|&o| o as u32).collect();
    for v in (0..5000).chain([u32::MAX, opcode::FUSE_INIT_BSWAP_RESERVED]) {
        if !known.contains(&v) {
            assert_eq!(Opcode::from_u32(v), None, "{v}");
            assert_eq!(Opcode::try_from(v), Err(UnknownOpcode(v)));
        }
    }
    assert!(!Opcode::Forget.needs_reply() && !Opcode::BatchForget.needs_reply());
    assert!(Opcode::Interrupt.needs_reply() && Opcode::IomapEnd.needs_reply());
    for &c in NotifyCode::ALL {
        assert_eq!(NotifyCode::from_i32(c as i32), Some(c));
    }
    assert_eq!(NotifyCode::from_i32(0), None);
    assert_eq!(NotifyCode::from_i32(10), None);
}

#[test]
fn init_flags_split_and_join() {
    // §2: FUSE_IOMAP is bit 43 = flags2 bit 11.
    assert_eq!(FUSE_IOMAP, 1 << 43);
    assert_eq!(split_init_flags(FUSE_IOMAP), (0, 0x800));
    assert_eq!(split_init_flags(FUSE_SECURITY_CTX), (0, 1));
    assert_eq!(
        split_init_flags(FUSE_INIT_EXT | FUSE_ASYNC_READ),
        (0x4000_0001, 0)
    );
    for f in [
        0,
        u64::MAX,
        FUSE_IOMAP | FUSE_INIT_EXT | FUSE_MAX_PAGES,
        0x1234_5678_9abc_def0,
    ] {
        let (lo, hi) = split_init_flags(f);
        assert_eq!(join_init_flags(lo, hi), f);
    }
    let mut out = fuse_wire::InitOut::default();
    out.set_flags64(FUSE_IOMAP | FUSE_ASYNC_READ);
    assert_eq!(
        out.flags,
        (FUSE_ASYNC_READ | FUSE_INIT_EXT) as u32,
        "INIT_EXT added for flags2"
    );
    assert_eq!(out.flags2, 0x800);
    assert_eq!(out.flags64(), FUSE_IOMAP | FUSE_ASYNC_READ | FUSE_INIT_EXT);
    out.set_flags64(FUSE_ASYNC_READ);
    assert_eq!((out.flags, out.flags2), (FUSE_ASYNC_READ as u32, 0));
    let init = fuse_wire::InitIn {
        flags: 1,
        flags2: 0x800,
        ..Default::default()
    };
    assert_eq!(init.flags64(), FUSE_IOMAP | 1);
}

#[test]
fn iomap_flag_values() {
    // §6 attr flags
    assert_eq!(
        [
            FUSE_ATTR_SUBMOUNT,
            FUSE_ATTR_DAX,
            FUSE_ATTR_EXCLUSIVE,
            FUSE_ATTR_IOMAP,
            FUSE_ATTR_ATOMIC,
            FUSE_ATTR_SYNC,
            FUSE_ATTR_IMMUTABLE,
            FUSE_ATTR_APPEND
        ],
        [1, 2, 4, 8, 16, 32, 64, 128]
    );
    // §4.1 types
    assert_eq!(
        [
            FUSE_IOMAP_TYPE_HOLE,
            FUSE_IOMAP_TYPE_DELALLOC,
            FUSE_IOMAP_TYPE_MAPPED,
            FUSE_IOMAP_TYPE_UNWRITTEN,
            FUSE_IOMAP_TYPE_INLINE,
            FUSE_IOMAP_TYPE_NOCACHE,
            FUSE_IOMAP_TYPE_RETRY_CACHE,
            FUSE_IOMAP_TYPE_PURE_OVERWRITE
        ],
        [0, 1, 2, 3, 4, 253, 254, 255]
    );
    // §4.2 mapping flags
    let f = [
        FUSE_IOMAP_F_NEW,
        FUSE_IOMAP_F_DIRTY,
        FUSE_IOMAP_F_SHARED,
        FUSE_IOMAP_F_MERGED,
        FUSE_IOMAP_F_BOUNDARY,
        FUSE_IOMAP_F_ANON_WRITE,
        FUSE_IOMAP_F_ATOMIC_BIO,
        FUSE_IOMAP_F_WANT_IOMAP_END,
        FUSE_IOMAP_F_SIZE_CHANGED,
        FUSE_IOMAP_F_STALE,
    ];
    for (bit, v) in f.iter().enumerate() {
        assert_eq!(*v, 1 << bit);
    }
    assert_eq!(FUSE_IOMAP_F_SERVER_MASK, 0xff);
    assert_eq!(FUSE_IOMAP_F_KERNEL_ONLY & FUSE_IOMAP_F_SERVER_MASK, 0);
    // §4.3 op flags
    let ops = [
        FUSE_IOMAP_OP_WRITE,
        FUSE_IOMAP_OP_ZERO,
        FUSE_IOMAP_OP_REPORT,
        FUSE_IOMAP_OP_FAULT,
        FUSE_IOMAP_OP_DIRECT,
        FUSE_IOMAP_OP_NOWAIT,
        FUSE_IOMAP_OP_OVERWRITE_ONLY,
        FUSE_IOMAP_OP_UNSHARE,
        FUSE_IOMAP_OP_DAX,
        FUSE_IOMAP_OP_ATOMIC,
        FUSE_IOMAP_OP_DONTCACHE,
    ];
    for (bit, v) in ops.iter().enumerate() {
        assert_eq!(*v, 1 << bit);
    }
    assert_eq!(FUSE_IOMAP_OP_SWAPFILE, 1 << 30);
    assert_eq!(FUSE_IOMAP_OP_WRITEBACK, 1 << 31);
    assert!(is_write_op(FUSE_IOMAP_OP_ZERO) && is_write_op(FUSE_IOMAP_OP_WRITEBACK));
    assert!(
        is_write_op(FUSE_IOMAP_OP_UNSHARE)
            && is_write_op(FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT)
    );
    assert!(!is_write_op(
        FUSE_IOMAP_OP_DIRECT | FUSE_IOMAP_OP_REPORT | FUSE_IOMAP_OP_FAULT
    ));
    // §4.4 ioend flags
    let io = [
        FUSE_IOMAP_IOEND_SHARED,
        FUSE_IOMAP_IOEND_UNWRITTEN,
        FUSE_IOMAP_IOEND_BOUNDARY,
        FUSE_IOMAP_IOEND_DIRECT,
        FUSE_IOMAP_IOEND_APPEND,
        FUSE_IOMAP_IOEND_WRITEBACK,
        FUSE_IOMAP_IOEND_SWAPOFF,
    ];
    for (bit, v) in io.iter().enumerate() {
        assert_eq!(*v, 1 << bit);
    }
    assert_eq!(io.iter().fold(0, |a, b| a | b), FUSE_IOMAP_IOEND_ALL);
    // §4.5
    assert_eq!(FUSE_IOMAP_NULL_ADDR, u64::MAX);
    assert_eq!(FUSE_IOMAP_DEV_NULL, 0);
    assert_eq!(FUSE_IOMAP_INVAL_TO_EOF, !0u64);
    let cfg = [
        FUSE_IOMAP_CONFIG_SID,
        FUSE_IOMAP_CONFIG_UUID,
        FUSE_IOMAP_CONFIG_BLOCKSIZE,
        FUSE_IOMAP_CONFIG_MAX_LINKS,
        FUSE_IOMAP_CONFIG_TIME,
        FUSE_IOMAP_CONFIG_MAXBYTES,
        FUSE_IOMAP_CONFIG_CACHE_MAXBYTES,
    ];
    assert_eq!(cfg, [1, 2, 4, 8, 16, 32, 64]);
    assert_eq!(cfg.iter().fold(0, |a, b| a | b), FUSE_IOMAP_CONFIG_ALL);
    assert_eq!(
        (FUSE_IOMAP_SUPPORT_FILEIO, FUSE_IOMAP_SUPPORT_ATOMIC),
        (1, 2)
    );
    assert_eq!(
        (
            FUSE_BACKING_TYPE_MASK,
            FUSE_BACKING_TYPE_PASSTHROUGH,
            FUSE_BACKING_TYPE_IOMAP
        ),
        (0xff, 0, 1)
    );
    assert_eq!((FUSE_BACKING_MAX_TYPE, FUSE_BACKING_FLAGS_ALL), (1, 0xff));
}

#[test]
fn ioctl_numbers() {
    // Literal values from §5 (x86_64) and from the uapi header via gcc.
    assert_eq!(FUSE_DEV_IOC_CLONE, 0x8004_e500);
    assert_eq!(FUSE_DEV_IOC_BACKING_OPEN, 0x4010_e501);
    assert_eq!(FUSE_DEV_IOC_BACKING_CLOSE, 0x4004_e502);
    assert_eq!(FUSE_DEV_IOC_SYNC_INIT, 0xe503);
    assert_eq!(FUSE_DEV_IOC_IOMAP_SUPPORT, 0x8010_e563);
    assert_eq!(FUSE_DEV_IOC_SET_NOFS, 0x4004_e564);
    assert_eq!(FUSE_DEV_IOC_ADD_IOMAP, 0xe565);
    assert_eq!(FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE, 0x4008_e566);
    // The encoder itself.
    assert_eq!(io(FUSE_DEV_IOC_MAGIC, 0), 0xe500);
    assert_eq!(ior(0x12, 114, 8), 0x8008_1272); // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    assert_eq!(iow(0x12, 113, 8), 0x4008_1271); // BLKBSZSET = _IOW(0x12, 113, size_t)
}

#[test]
fn sizes_and_defaults() {
    assert_eq!(FUSE_MIN_READ_BUFFER, 8192);
    assert_eq!(request_buffer_size(0), FUSE_MIN_READ_BUFFER);
    assert_eq!(request_buffer_size(DEFAULT_MAX_WRITE), (1 << 20) + 4096);
    assert!(DEFAULT_MAX_WRITE <= u32::from(MAX_MAX_PAGES) * 4096);
    assert!(
        REQUEST_HEADROOM >= fuse_wire::IN_HEADER_LEN + core::mem::size_of::<fuse_wire::WriteIn>()
    );
    assert_eq!(dirent_type(0o100644), 8); // DT_REG
    assert_eq!(dirent_type(0o040755), 4); // DT_DIR
    assert_eq!(dirent_type(0o120777), 10); // DT_LNK
}

#[test]
fn iomap_is_offered_only_at_the_iomap_minor() {
    // §2: mainline 7.3 (minor 46) sends INIT bit 43 as FUSE_HAS_IO_URING_BUFPOOL.
    assert_eq!(
        FUSE_HAS_IO_URING_BUFPOOL, FUSE_IOMAP,
        "the two meanings share the bit"
    );
    assert_eq!(IO_URING_BUFPOOL_MINOR, 46);
    let mainline_7_3 = FUSE_INIT_EXT | FUSE_HAS_IO_URING_BUFPOOL;
    assert!(!offers_iomap(46, mainline_7_3));
    assert!(!offers_iomap(IOMAP_MINOR - 1, mainline_7_3));
    assert!(!offers_iomap(45, mainline_7_3));
    assert!(offers_iomap(IOMAP_MINOR, FUSE_INIT_EXT | FUSE_IOMAP));
    assert!(offers_iomap(IOMAP_MINOR + 1, FUSE_IOMAP));
    assert!(
        !offers_iomap(IOMAP_MINOR, FUSE_INIT_EXT),
        "the minor alone is not an offer"
    );
    assert_eq!(
        init_bit43_meaning(46),
        "FUSE_HAS_IO_URING_BUFPOOL (mainline Linux 7.3)"
    );
    assert_eq!(init_bit43_meaning(IOMAP_MINOR), "FUSE_IOMAP");
    assert_eq!(init_bit43_meaning(41), "nothing defined");
}
