//! Every wire struct, `#[repr(C)]` with explicit padding so zerocopy can prove there is none.
//!
//! Names are the uapi names in CamelCase without `fuse_` (`fuse_entry_out` → [`EntryOut`]);
//! field names are the uapi ones, `__spare`-style names included (`type` is spelled `type_`). All integers are host-endian
//! (little-endian on every machine FUSE runs on here). Read them from unaligned buffers with
//! `zerocopy::FromBytes::read_from_prefix`, write them with `zerocopy::IntoBytes::as_bytes`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

macro_rules! wire_structs {
    ($($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* })*) => {$(
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }

        impl Fields for $name {
            const FIELDS: &'static [Field] = &[$(Field {
                name: stringify!($f),
                offset: core::mem::offset_of!($name, $f),
                size: core::mem::size_of::<$t>(),
                nested: <$t as Fields>::FIELDS,
            },)*];
        }
    )*};
}

/// One field of a wire struct, for tools that name the field at a byte offset (a replay
/// that reports which field of a reply differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The uapi field name.
    pub name: &'static str,
    /// Byte offset in the struct.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// The fields of a struct-typed field (empty for integers and arrays).
    pub nested: &'static [Field],
}

/// The field table of a wire struct, in declaration order (integers and arrays have none).
pub trait Fields {
    const FIELDS: &'static [Field];
}

macro_rules! no_fields {
    ($($t:ty),*) => {$(impl Fields for $t { const FIELDS: &'static [Field] = &[]; })*};
}
no_fields!(u8, u16, u32, u64, i32, i64);

impl<T, const N: usize> Fields for [T; N] {
    const FIELDS: &'static [Field] = &[];
}

/// The dotted path of the innermost field that holds byte `offset` of a `fields` struct
/// (`attr.mtime`), with the byte range it covers; `None` past the last field or in padding.
pub fn field_at(
    fields: &'static [Field],
    offset: usize,
) -> Option<(String, core::ops::Range<usize>)> {
    let f = fields
        .iter()
        .find(|f| (f.offset..f.offset + f.size).contains(&offset))?;
    match field_at(f.nested, offset - f.offset) {
        Some((inner, range)) => Some((
            format!("{}.{inner}", f.name),
            range.start + f.offset..range.end + f.offset,
        )),
        None => Some((f.name.to_string(), f.offset..f.offset + f.size)),
    }
}

/// The byte range of the field at dotted `path` (`attr.mtime`) of a `fields` struct.
pub fn field_range(fields: &'static [Field], path: &str) -> Option<core::ops::Range<usize>> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let f = fields.iter().find(|f| f.name == head)?;
    match rest {
        None => Some(f.offset..f.offset + f.size),
        Some(rest) => {
            let inner = field_range(f.nested, rest)?;
            Some(inner.start + f.offset..inner.end + f.offset)
        }
    }
}

wire_structs! {
    // ---- headers -------------------------------------------------------------------------

    /// `fuse_in_header` (40 B): in front of every request.
    pub struct InHeader {
        /// Total request length including this header.
        pub len: u32,
        pub opcode: u32,
        pub unique: u64,
        pub nodeid: u64,
        pub uid: u32,
        pub gid: u32,
        pub pid: u32,
        /// Length of the extensions at the end of the request, in 8-byte units (7.38).
        pub total_extlen: u16,
        pub padding: u16,
    }

    /// `fuse_out_header` (16 B): in front of every reply and notification.
    pub struct OutHeader {
        /// Total reply length including this header.
        pub len: u32,
        /// 0 or a negative errno; for notifications (unique 0) the notify code.
        pub error: i32,
        pub unique: u64,
    }

    // ---- INIT ----------------------------------------------------------------------------

    /// `fuse_init_in` (64 B, 7.36+). Kernels before 7.36 send only the first 16 bytes.
    pub struct InitIn {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub flags2: u32,
        pub unused: [u32; 11],
    }

    /// The 16-byte `fuse_init_in` of kernels before 7.36 (not a uapi name).
    pub struct InitInLegacy {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
    }

    /// `fuse_init_out` (64 B).
    pub struct InitOut {
        pub major: u32,
        pub minor: u32,
        pub max_readahead: u32,
        pub flags: u32,
        pub max_background: u16,
        pub congestion_threshold: u16,
        pub max_write: u32,
        pub time_gran: u32,
        pub max_pages: u16,
        pub map_alignment: u16,
        pub flags2: u32,
        pub max_stack_depth: u32,
        /// Request timeout in seconds with `FUSE_REQUEST_TIMEOUT` (7.43).
        pub request_timeout: u16,
        pub unused: [u16; 11],
    }

    /// `cuse_init_in` (16 B).
    pub struct CuseInitIn {
        pub major: u32,
        pub minor: u32,
        pub unused: u32,
        pub flags: u32,
    }

    /// `cuse_init_out` (72 B).
    pub struct CuseInitOut {
        pub major: u32,
        pub minor: u32,
        pub unused: u32,
        pub flags: u32,
        pub max_read: u32,
        pub max_write: u32,
        pub dev_major: u32,
        pub dev_minor: u32,
        pub spare: [u32; 10],
    }

    // ---- attributes and entries ----------------------------------------------------------

    /// `fuse_attr` (88 B).
    pub struct Attr {
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub rdev: u32,
        pub blksize: u32,
        /// `FUSE_ATTR_*` (mainline in `consts`, iomap bits in `iomap`).
        pub flags: u32,
    }

    /// `fuse_entry_out` (128 B): reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK; part of CREATE.
    pub struct EntryOut {
        pub nodeid: u64,
        pub generation: u64,
        pub entry_valid: u64,
        pub attr_valid: u64,
        pub entry_valid_nsec: u32,
        pub attr_valid_nsec: u32,
        pub attr: Attr,
    }

    /// `fuse_attr_out` (104 B): reply to GETATTR and SETATTR.
    pub struct AttrOut {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub dummy: u32,
        pub attr: Attr,
    }

    /// `fuse_getattr_in` (16 B).
    pub struct GetattrIn {
        /// `FUSE_GETATTR_FH`.
        pub getattr_flags: u32,
        pub dummy: u32,
        pub fh: u64,
    }

    /// `fuse_setattr_in` (88 B).
    pub struct SetattrIn {
        /// `FATTR_*`: which fields are valid.
        pub valid: u32,
        pub padding: u32,
        pub fh: u64,
        pub size: u64,
        pub lock_owner: u64,
        pub atime: u64,
        pub mtime: u64,
        pub ctime: u64,
        pub atimensec: u32,
        pub mtimensec: u32,
        pub ctimensec: u32,
        pub mode: u32,
        pub unused4: u32,
        pub uid: u32,
        pub gid: u32,
        pub unused5: u32,
    }

    /// `fuse_sx_time` (16 B).
    pub struct SxTime {
        pub tv_sec: i64,
        pub tv_nsec: u32,
        pub __reserved: i32,
    }

    /// `fuse_statx` (256 B), with the tail laid out like `struct statx` as the iomap series
    /// does (K-v7 28/33); those fields were `__spare2[14]` before, so the layout is compatible.
    pub struct Statx {
        pub mask: u32,
        pub blksize: u32,
        pub attributes: u64,
        pub nlink: u32,
        pub uid: u32,
        pub gid: u32,
        pub mode: u16,
        pub __spare0: [u16; 1],
        pub ino: u64,
        pub size: u64,
        pub blocks: u64,
        pub attributes_mask: u64,
        pub atime: SxTime,
        pub btime: SxTime,
        pub ctime: SxTime,
        pub mtime: SxTime,
        pub rdev_major: u32,
        pub rdev_minor: u32,
        pub dev_major: u32,
        pub dev_minor: u32,
        pub mnt_id: u64,
        pub dio_mem_align: u32,
        pub dio_offset_align: u32,
        pub subvol: u64,
        pub atomic_write_unit_min: u32,
        pub atomic_write_unit_max: u32,
        pub atomic_write_segments_max: u32,
        pub dio_read_offset_align: u32,
        pub atomic_write_unit_max_opt: u32,
        pub __spare2: [u32; 1],
        pub __spare3: [u64; 8],
    }

    /// `fuse_statx_in` (24 B).
    pub struct StatxIn {
        pub getattr_flags: u32,
        pub reserved: u32,
        pub fh: u64,
        pub sx_flags: u32,
        pub sx_mask: u32,
    }

    /// `fuse_statx_out` (288 B).
    pub struct StatxOut {
        pub attr_valid: u64,
        pub attr_valid_nsec: u32,
        pub flags: u32,
        pub spare: [u64; 2],
        pub stat: Statx,
    }

    // ---- namespace operations ------------------------------------------------------------

    /// `fuse_forget_in` (8 B).
    pub struct ForgetIn {
        pub nlookup: u64,
    }

    /// `fuse_forget_one` (16 B): one item of BATCH_FORGET.
    pub struct ForgetOne {
        pub nodeid: u64,
        pub nlookup: u64,
    }

    /// `fuse_batch_forget_in` (8 B), followed by `count` [`ForgetOne`].
    pub struct BatchForgetIn {
        pub count: u32,
        pub dummy: u32,
    }

    /// `fuse_mknod_in` (16 B), followed by the name.
    pub struct MknodIn {
        pub mode: u32,
        pub rdev: u32,
        pub umask: u32,
        pub padding: u32,
    }

    /// `fuse_mkdir_in` (8 B), followed by the name.
    pub struct MkdirIn {
        pub mode: u32,
        pub umask: u32,
    }

    /// `fuse_rename_in` (8 B), followed by old and new names.
    pub struct RenameIn {
        pub newdir: u64,
    }

    /// `fuse_rename2_in` (16 B), followed by old and new names.
    pub struct Rename2In {
        pub newdir: u64,
        /// `RENAME_*`.
        pub flags: u32,
        pub padding: u32,
    }

    /// `fuse_link_in` (8 B), followed by the new name.
    pub struct LinkIn {
        pub oldnodeid: u64,
    }

    // ---- files ---------------------------------------------------------------------------

    /// `fuse_open_in` (8 B): OPEN and OPENDIR.
    pub struct OpenIn {
        /// open(2) flags.
        pub flags: u32,
        /// `FUSE_OPEN_*`.
        pub open_flags: u32,
    }

    /// `fuse_create_in` (16 B), followed by the name: CREATE and TMPFILE.
    pub struct CreateIn {
        pub flags: u32,
        pub mode: u32,
        pub umask: u32,
        pub open_flags: u32,
    }

    /// `fuse_open_out` (16 B).
    pub struct OpenOut {
        pub fh: u64,
        /// `FOPEN_*`.
        pub open_flags: u32,
        pub backing_id: i32,
    }

    /// `fuse_release_in` (24 B): RELEASE and RELEASEDIR.
    pub struct ReleaseIn {
        pub fh: u64,
        pub flags: u32,
        pub release_flags: u32,
        pub lock_owner: u64,
    }

    /// `fuse_flush_in` (24 B).
    pub struct FlushIn {
        pub fh: u64,
        pub unused: u32,
        pub padding: u32,
        pub lock_owner: u64,
    }

    /// `fuse_read_in` (40 B): READ, READDIR, READDIRPLUS.
    pub struct ReadIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub read_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }

    /// `fuse_write_in` (40 B), followed by `size` bytes of data.
    pub struct WriteIn {
        pub fh: u64,
        pub offset: u64,
        pub size: u32,
        pub write_flags: u32,
        pub lock_owner: u64,
        pub flags: u32,
        pub padding: u32,
    }

    /// `fuse_write_out` (8 B): reply to WRITE and COPY_FILE_RANGE.
    pub struct WriteOut {
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_fsync_in` (16 B): FSYNC and FSYNCDIR.
    pub struct FsyncIn {
        pub fh: u64,
        pub fsync_flags: u32,
        pub padding: u32,
    }

    /// `fuse_kstatfs` (80 B).
    pub struct Kstatfs {
        pub blocks: u64,
        pub bfree: u64,
        pub bavail: u64,
        pub files: u64,
        pub ffree: u64,
        pub bsize: u32,
        pub namelen: u32,
        pub frsize: u32,
        pub padding: u32,
        pub spare: [u32; 6],
    }

    /// `fuse_statfs_out` (80 B).
    pub struct StatfsOut {
        pub st: Kstatfs,
    }

    /// `fuse_setxattr_in` in its 8-byte form (`FUSE_COMPAT_SETXATTR_IN_SIZE`), followed by
    /// name and value; with `FUSE_SETXATTR_EXT`, by [`SetxattrInExt`] first.
    pub struct SetxattrIn {
        /// Length of the value.
        pub size: u32,
        /// setxattr(2) flags.
        pub flags: u32,
    }

    /// The last 8 bytes of the 16-byte `fuse_setxattr_in` (`FUSE_SETXATTR_EXT`).
    pub struct SetxattrInExt {
        /// `FUSE_SETXATTR_ACL_KILL_SGID`: the caller may not keep the setgid bit.
        pub setxattr_flags: u32,
        pub padding: u32,
    }

    /// `fuse_getxattr_in` (8 B): GETXATTR (followed by the name) and LISTXATTR.
    pub struct GetxattrIn {
        /// Buffer size of the caller; 0 asks for the needed size.
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_getxattr_out` (8 B): the needed size when the request's size was 0.
    pub struct GetxattrOut {
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_file_lock` (24 B).
    pub struct FileLock {
        pub start: u64,
        pub end: u64,
        pub type_: u32,
        pub pid: u32,
    }

    /// `fuse_lk_in` (48 B): GETLK, SETLK, SETLKW.
    pub struct LkIn {
        pub fh: u64,
        pub owner: u64,
        pub lk: FileLock,
        pub lk_flags: u32,
        pub padding: u32,
    }

    /// `fuse_lk_out` (24 B).
    pub struct LkOut {
        pub lk: FileLock,
    }

    /// `fuse_access_in` (8 B).
    pub struct AccessIn {
        pub mask: u32,
        pub padding: u32,
    }

    /// `fuse_interrupt_in` (8 B).
    pub struct InterruptIn {
        pub unique: u64,
    }

    /// `fuse_bmap_in` (16 B).
    pub struct BmapIn {
        pub block: u64,
        pub blocksize: u32,
        pub padding: u32,
    }

    /// `fuse_bmap_out` (8 B).
    pub struct BmapOut {
        pub block: u64,
    }

    /// `fuse_ioctl_in` (32 B), followed by `in_size` bytes.
    pub struct IoctlIn {
        pub fh: u64,
        pub flags: u32,
        pub cmd: u32,
        pub arg: u64,
        pub in_size: u32,
        pub out_size: u32,
    }

    /// `fuse_ioctl_iovec` (16 B).
    pub struct IoctlIovec {
        pub base: u64,
        pub len: u64,
    }

    /// `fuse_ioctl_out` (16 B).
    pub struct IoctlOut {
        pub result: i32,
        pub flags: u32,
        pub in_iovs: u32,
        pub out_iovs: u32,
    }

    /// `fuse_poll_in` (24 B).
    pub struct PollIn {
        pub fh: u64,
        pub kh: u64,
        pub flags: u32,
        pub events: u32,
    }

    /// `fuse_poll_out` (8 B).
    pub struct PollOut {
        pub revents: u32,
        pub padding: u32,
    }

    /// `fuse_fallocate_in` (32 B).
    pub struct FallocateIn {
        pub fh: u64,
        pub offset: u64,
        pub length: u64,
        /// fallocate(2) mode.
        pub mode: u32,
        pub padding: u32,
    }

    /// `fuse_lseek_in` (24 B).
    pub struct LseekIn {
        pub fh: u64,
        pub offset: u64,
        pub whence: u32,
        pub padding: u32,
    }

    /// `fuse_lseek_out` (8 B).
    pub struct LseekOut {
        pub offset: u64,
    }

    /// `fuse_copy_file_range_in` (56 B): COPY_FILE_RANGE and COPY_FILE_RANGE_64.
    pub struct CopyFileRangeIn {
        pub fh_in: u64,
        pub off_in: u64,
        pub nodeid_out: u64,
        pub fh_out: u64,
        pub off_out: u64,
        pub len: u64,
        pub flags: u64,
    }

    /// `fuse_copy_file_range_out` (8 B): reply to COPY_FILE_RANGE_64 (7.45).
    pub struct CopyFileRangeOut {
        pub bytes_copied: u64,
    }

    /// `fuse_syncfs_in` (8 B).
    pub struct SyncfsIn {
        pub padding: u64,
    }

    /// `fuse_setupmapping_in` (40 B, DAX).
    pub struct SetupmappingIn {
        pub fh: u64,
        pub foffset: u64,
        pub len: u64,
        pub flags: u64,
        pub moffset: u64,
    }

    /// `fuse_removemapping_in` (4 B, DAX), followed by `count` [`RemovemappingOne`].
    pub struct RemovemappingIn {
        pub count: u32,
    }

    /// `fuse_removemapping_one` (16 B).
    pub struct RemovemappingOne {
        pub moffset: u64,
        pub len: u64,
    }

    // ---- directories ---------------------------------------------------------------------

    /// `fuse_dirent` header (24 B); `namelen` name bytes follow, padded to 8.
    pub struct Dirent {
        pub ino: u64,
        pub off: u64,
        pub namelen: u32,
        /// `DT_*`.
        pub type_: u32,
    }

    /// `fuse_direntplus` header (152 B); `dirent.namelen` name bytes follow, padded to 8.
    pub struct Direntplus {
        pub entry_out: EntryOut,
        pub dirent: Dirent,
    }

    // ---- notifications and extensions ----------------------------------------------------

    /// `fuse_notify_poll_wakeup_out` (8 B).
    pub struct NotifyPollWakeupOut {
        pub kh: u64,
    }

    /// `fuse_notify_inval_inode_out` (24 B).
    pub struct NotifyInvalInodeOut {
        pub ino: u64,
        /// Start of the data range; negative = attributes only.
        pub off: i64,
        /// Length of the data range; 0 = to EOF.
        pub len: i64,
    }

    /// `fuse_notify_inval_entry_out` (16 B), followed by the name and a NUL.
    pub struct NotifyInvalEntryOut {
        pub parent: u64,
        pub namelen: u32,
        /// `FUSE_EXPIRE_ONLY`.
        pub flags: u32,
    }

    /// `fuse_notify_delete_out` (24 B), followed by the name and a NUL.
    pub struct NotifyDeleteOut {
        pub parent: u64,
        pub child: u64,
        pub namelen: u32,
        pub padding: u32,
    }

    /// `fuse_notify_store_out` (24 B), followed by `size` bytes.
    pub struct NotifyStoreOut {
        pub nodeid: u64,
        pub offset: u64,
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_notify_retrieve_out` (32 B).
    pub struct NotifyRetrieveOut {
        pub notify_unique: u64,
        pub nodeid: u64,
        pub offset: u64,
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_notify_retrieve_in` (40 B): argument of NOTIFY_REPLY, followed by `size` bytes.
    pub struct NotifyRetrieveIn {
        pub dummy1: u64,
        pub offset: u64,
        pub size: u32,
        pub dummy2: u32,
        pub dummy3: u64,
        pub dummy4: u64,
    }

    /// `fuse_notify_prune_out` (16 B), followed by `count` u64 nodeids (7.45).
    pub struct NotifyPruneOut {
        pub count: u32,
        pub padding: u32,
        pub spare: u64,
    }

    /// `fuse_backing_map` (16 B): argument of `FUSE_DEV_IOC_BACKING_OPEN`.
    pub struct BackingMap {
        pub fd: i32,
        /// Backing type in the low 8 bits (`FUSE_BACKING_TYPE_*`).
        pub flags: u32,
        pub padding: u64,
    }

    /// `fuse_secctx` (8 B).
    pub struct Secctx {
        pub size: u32,
        pub padding: u32,
    }

    /// `fuse_secctx_header` (8 B).
    pub struct SecctxHeader {
        pub size: u32,
        pub nr_secctx: u32,
    }

    /// `fuse_ext_header` (8 B).
    pub struct ExtHeader {
        pub size: u32,
        pub type_: u32,
    }

    // ---- iomap (protocol doc §3) -----------------------------------------------------------

    /// `fuse_iomap_io` (32 B, §3.1): one mapping.
    pub struct IomapIo {
        /// File offset, bytes.
        pub offset: u64,
        /// Length, bytes.
        pub length: u64,
        /// Disk offset, bytes; `FUSE_IOMAP_NULL_ADDR` if none.
        pub addr: u64,
        /// `FUSE_IOMAP_TYPE_*`.
        pub type_: u16,
        /// `FUSE_IOMAP_F_*`.
        pub flags: u16,
        /// Backing device id; `FUSE_IOMAP_DEV_NULL` if none.
        pub dev: u32,
    }

    /// `fuse_iomap_begin_in` (32 B, §3.2).
    pub struct IomapBeginIn {
        /// `FUSE_IOMAP_OP_*`.
        pub opflags: u32,
        pub reserved: u32,
        /// The `fuse_attr.ino` the server reported for this inode.
        pub attr_ino: u64,
        pub pos: u64,
        pub count: u64,
    }

    /// `fuse_iomap_begin_out` (64 B, §3.3): the reply must be exactly this size.
    pub struct IomapBeginOut {
        /// Where file data is read from.
        pub read: IomapIo,
        /// Where file data is written to (`PURE_OVERWRITE` = use `read`).
        pub write: IomapIo,
    }

    /// `fuse_iomap_end_in` (72 B, §3.4).
    pub struct IomapEndIn {
        pub opflags: u32,
        pub reserved: u32,
        pub attr_ino: u64,
        pub pos: u64,
        pub count: u64,
        /// Bytes processed.
        pub written: i64,
        /// The mapping the kernel acted on (may carry SIZE_CHANGED/STALE).
        pub map: IomapIo,
    }

    /// `fuse_iomap_ioend_in` (48 B, §3.5).
    pub struct IomapIoendIn {
        /// `FUSE_IOMAP_IOEND_*`.
        pub flags: u32,
        /// 0 or a negative errno.
        pub error: i32,
        pub attr_ino: u64,
        pub pos: u64,
        /// "Disk offset of new mapping"; unreliable units (§7.6).
        pub new_addr: u64,
        pub written: u64,
        pub dev: u32,
        pub pad: u32,
    }

    /// `fuse_iomap_ioend_out` (8 B, §3.6): the reply must be exactly this size.
    pub struct IomapIoendOut {
        /// New on-disk size.
        pub newsize: u64,
    }

    /// `fuse_iomap_config_in` (64 B, §3.7, cache-series layout).
    pub struct IomapConfigIn {
        /// Supported `FUSE_IOMAP_CONFIG_*` bits.
        pub flags: u64,
        /// Kernel's maximum file size (`MAX_LFS_FILESIZE`).
        pub maxbytes: i64,
        /// Mapping-cache size the kernel will use (cache series; 0 without it).
        pub cache_maxbytes: u32,
        pub zero: u32,
        pub padding: [u64; 5],
    }

    /// `fuse_iomap_config_out` (104 B, §3.8); replies may stop after `s_maxbytes` (96 B).
    pub struct IomapConfigOut {
        /// Which fields are valid: `FUSE_IOMAP_CONFIG_*`.
        pub flags: u64,
        pub s_id: [u8; 32],
        pub s_uuid: [u8; 16],
        /// At most 16.
        pub s_uuid_len: u8,
        /// Must be zero.
        pub s_pad: [u8; 3],
        pub s_blocksize: u32,
        pub s_max_links: u32,
        /// Nanoseconds, 1..=1e9.
        pub s_time_gran: u32,
        pub s_time_min: i64,
        pub s_time_max: i64,
        pub s_maxbytes: i64,
        /// Cache series only.
        pub cache_maxbytes: u32,
        /// Tail padding of the C struct (implicit there).
        pub tail_pad: u32,
    }

    /// `fuse_range` (16 B, §3.9).
    pub struct Range {
        pub offset: u64,
        pub length: u64,
    }

    /// `fuse_iomap_dev_inval_out` (24 B, §3.9): payload of `FUSE_NOTIFY_IOMAP_DEV_INVAL`.
    pub struct IomapDevInvalOut {
        pub dev: u32,
        /// Must be 0.
        pub reserved: u32,
        /// Byte range of the device page cache to drop.
        pub range: Range,
    }

    /// `fuse_iomap_inval_mappings_out` (48 B, §3.9).
    pub struct IomapInvalMappingsOut {
        pub nodeid: u64,
        pub attr_ino: u64,
        /// Length 0 = skip this fork, `FUSE_IOMAP_INVAL_TO_EOF` = to EOF.
        pub read: Range,
        pub write: Range,
    }

    /// `fuse_iomap_upsert_mappings_out` (80 B, §3.9).
    pub struct IomapUpsertMappingsOut {
        pub nodeid: u64,
        pub attr_ino: u64,
        /// Type `NOCACHE` = skip this slot.
        pub read: IomapIo,
        pub write: IomapIo,
    }

    /// `fuse_freezefs_in` (8 B, §3.10).
    pub struct FreezefsIn {
        /// Count of open-but-unlinked inodes.
        pub unlinked: u64,
    }

    /// `fuse_shutdownfs_in` (8 B, §3.10).
    pub struct ShutdownfsIn {
        /// Currently always 0.
        pub flags: u64,
    }

    /// `fuse_iomap_support` (16 B, §3.11): result of `FUSE_DEV_IOC_IOMAP_SUPPORT`.
    pub struct IomapSupport {
        /// `FUSE_IOMAP_SUPPORT_*`.
        pub flags: u64,
        pub padding: u64,
    }

    /// `fuse_iomap_backing_info` (8 B, §3.11): argument of `FUSE_DEV_IOC_IOMAP_SET_BLOCKSIZE`.
    pub struct IomapBackingInfo {
        pub backing_id: u32,
        pub blocksize: u32,
    }
}

/// Size of [`InHeader`].
pub const IN_HEADER_LEN: usize = core::mem::size_of::<InHeader>();
/// Size of [`OutHeader`].
pub const OUT_HEADER_LEN: usize = core::mem::size_of::<OutHeader>();
/// Offset of the name in a `fuse_dirent` (`FUSE_NAME_OFFSET`).
pub const FUSE_NAME_OFFSET: usize = core::mem::size_of::<Dirent>();
/// Offset of the name in a `fuse_direntplus` (`FUSE_NAME_OFFSET_DIRENTPLUS`).
pub const FUSE_NAME_OFFSET_DIRENTPLUS: usize = core::mem::size_of::<Direntplus>();
/// Length of an `IOMAP_CONFIG` reply without the cache-series field (`offsetofend(s_maxbytes)`).
pub const IOMAP_CONFIG_OUT_SHORT_LEN: usize = core::mem::offset_of!(IomapConfigOut, cache_maxbytes);

/// Round a record length up to 8 bytes (`FUSE_REC_ALIGN`).
pub const fn rec_align(len: usize) -> usize {
    (len + 7) & !7
}

impl InitIn {
    /// The 64-bit init flag word (`flags | flags2 << 32`).
    pub const fn flags64(&self) -> u64 {
        crate::consts::join_init_flags(self.flags, self.flags2)
    }
}

impl InitOut {
    /// The 64-bit init flag word (`flags | flags2 << 32`).
    pub const fn flags64(&self) -> u64 {
        crate::consts::join_init_flags(self.flags, self.flags2)
    }

    /// Store a 64-bit init flag word; adds `FUSE_INIT_EXT` when any flags2 bit is set, since
    /// the kernel ignores `flags2` without it.
    pub fn set_flags64(&mut self, flags: u64) {
        let flags = if flags >> 32 != 0 {
            flags | crate::consts::FUSE_INIT_EXT
        } else {
            flags
        };
        let (lo, hi) = crate::consts::split_init_flags(flags);
        self.flags = lo;
        self.flags2 = hi;
    }
}

impl IomapIo {
    /// The write slot for an in-place write (libfuse `fuse_iomap_pure_overwrite`).
    pub const fn pure_overwrite(read: &IomapIo) -> IomapIo {
        IomapIo {
            offset: read.offset,
            length: read.length,
            addr: crate::iomap::FUSE_IOMAP_NULL_ADDR,
            type_: crate::iomap::FUSE_IOMAP_TYPE_PURE_OVERWRITE,
            flags: 0,
            dev: crate::iomap::FUSE_IOMAP_DEV_NULL,
        }
    }
}

impl IomapConfigOut {
    /// Decode a CONFIG reply payload: up to 104 bytes, missing tail zero-filled as the kernel
    /// does (§1.1). `None` if longer than the struct.
    pub fn from_reply(payload: &[u8]) -> Option<IomapConfigOut> {
        let mut buf = [0u8; core::mem::size_of::<IomapConfigOut>()];
        buf.get_mut(..payload.len())?.copy_from_slice(payload);
        IomapConfigOut::read_from_bytes(&buf).ok()
    }

    /// `s_id` up to its first NUL.
    pub fn s_id_bytes(&self) -> &[u8] {
        let end = self
            .s_id
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.s_id.len());
        &self.s_id[..end]
    }
}
