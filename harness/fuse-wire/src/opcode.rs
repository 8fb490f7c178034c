//! Request opcodes and notification codes.

use crate::iomap;

/// An opcode value this crate does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown FUSE opcode {0}")]
pub struct UnknownOpcode(pub u32);

macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $val:expr,)*) => {
        /// `enum fuse_opcode`: every request the kernel can send.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Opcode {
            $($(#[$doc])* $name = $val,)*
        }

        impl Opcode {
            /// Every known opcode, in numeric order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)*];

            /// The opcode for a wire value, or `None` if unknown.
            pub const fn from_u32(v: u32) -> Option<Opcode> {
                $(if v == $val { return Some(Opcode::$name); })*
                None
            }
        }
    };
}

opcodes! {
    /// Look up a name in a directory.
    Lookup = 1,
    /// Drop lookup references (no reply).
    Forget = 2,
    /// Get attributes.
    Getattr = 3,
    /// Set attributes.
    Setattr = 4,
    /// Read a symlink.
    Readlink = 5,
    /// Create a symlink.
    Symlink = 6,
    /// Create a node.
    Mknod = 8,
    /// Create a directory.
    Mkdir = 9,
    /// Remove a file.
    Unlink = 10,
    /// Remove a directory.
    Rmdir = 11,
    /// Rename.
    Rename = 12,
    /// Hard link.
    Link = 13,
    /// Open a file.
    Open = 14,
    /// Read.
    Read = 15,
    /// Write.
    Write = 16,
    /// Filesystem statistics.
    Statfs = 17,
    /// Close a file.
    Release = 18,
    /// Sync a file.
    Fsync = 20,
    /// Set an xattr.
    Setxattr = 21,
    /// Get an xattr.
    Getxattr = 22,
    /// List xattrs.
    Listxattr = 23,
    /// Remove an xattr.
    Removexattr = 24,
    /// Flush on close(2).
    Flush = 25,
    /// Session start.
    Init = 26,
    /// Open a directory.
    Opendir = 27,
    /// Read a directory.
    Readdir = 28,
    /// Close a directory.
    Releasedir = 29,
    /// Sync a directory.
    Fsyncdir = 30,
    /// Test a POSIX lock.
    Getlk = 31,
    /// Set a POSIX lock.
    Setlk = 32,
    /// Set a POSIX lock, waiting.
    Setlkw = 33,
    /// Check access.
    Access = 34,
    /// Create and open.
    Create = 35,
    /// Interrupt a request.
    Interrupt = 36,
    /// Map a file block to a device block.
    Bmap = 37,
    /// Session end.
    Destroy = 38,
    /// ioctl.
    Ioctl = 39,
    /// poll.
    Poll = 40,
    /// Reply to a retrieve notification.
    NotifyReply = 41,
    /// Drop many lookup references (no reply).
    BatchForget = 42,
    /// fallocate.
    Fallocate = 43,
    /// Read a directory with attributes.
    Readdirplus = 44,
    /// Rename with flags.
    Rename2 = 45,
    /// SEEK_DATA/SEEK_HOLE.
    Lseek = 46,
    /// copy_file_range (32-bit result).
    CopyFileRange = 47,
    /// DAX: set up a mapping.
    SetupMapping = 48,
    /// DAX: remove mappings.
    RemoveMapping = 49,
    /// syncfs.
    Syncfs = 50,
    /// O_TMPFILE.
    Tmpfile = 51,
    /// statx.
    Statx = 52,
    /// copy_file_range with a 64-bit result (7.45).
    CopyFileRange64 = 53,
    /// iomap: freeze.
    FreezeFs = iomap::FUSE_FREEZE_FS,
    /// iomap: thaw.
    UnfreezeFs = iomap::FUSE_UNFREEZE_FS,
    /// iomap: shutdown.
    ShutdownFs = iomap::FUSE_SHUTDOWN_FS,
    /// iomap: configuration exchange.
    IomapConfig = iomap::FUSE_IOMAP_CONFIG,
    /// iomap: write completion.
    IomapIoend = iomap::FUSE_IOMAP_IOEND,
    /// iomap: get a mapping.
    IomapBegin = iomap::FUSE_IOMAP_BEGIN,
    /// iomap: done with a mapping.
    IomapEnd = iomap::FUSE_IOMAP_END,
    /// CUSE session start.
    CuseInit = 4096,
}

/// `CUSE_INIT << 8`: reserved to detect byte-swapped requests.
pub const CUSE_INIT_BSWAP_RESERVED: u32 = 1_048_576;
/// `FUSE_INIT << 24`: reserved to detect byte-swapped requests.
pub const FUSE_INIT_BSWAP_RESERVED: u32 = 436_207_616;

impl Opcode {
    /// False for the requests the kernel expects no reply to (FORGET, BATCH_FORGET).
    pub const fn needs_reply(self) -> bool {
        !matches!(self, Opcode::Forget | Opcode::BatchForget)
    }
}

impl TryFrom<u32> for Opcode {
    type Error = UnknownOpcode;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Opcode::from_u32(v).ok_or(UnknownOpcode(v))
    }
}

impl From<Opcode> for u32 {
    fn from(op: Opcode) -> u32 {
        op as u32
    }
}

// ---- notification codes (written in fuse_out_header.error with unique 0) -----------------

/// Poll wakeup; payload `fuse_notify_poll_wakeup_out`.
pub const FUSE_NOTIFY_POLL: i32 = 1;
/// Invalidate an inode's attributes/data; payload `fuse_notify_inval_inode_out`.
pub const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
/// Invalidate a directory entry; payload `fuse_notify_inval_entry_out` + name + NUL.
pub const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
/// Store data into the page cache; payload `fuse_notify_store_out` + data.
pub const FUSE_NOTIFY_STORE: i32 = 4;
/// Retrieve page cache data; payload `fuse_notify_retrieve_out`.
pub const FUSE_NOTIFY_RETRIEVE: i32 = 5;
/// An entry was deleted; payload `fuse_notify_delete_out` + name + NUL.
pub const FUSE_NOTIFY_DELETE: i32 = 6;
/// Ask the kernel to resend pending requests (7.40).
pub const FUSE_NOTIFY_RESEND: i32 = 7;
/// Bump the connection epoch, invalidating all dentries (7.44; not in the 6.12 copy).
pub const FUSE_NOTIFY_INC_EPOCH: i32 = 8;
/// Prune unused inodes; payload `fuse_notify_prune_out` + nodeids (7.45; not in the 6.12 copy).
pub const FUSE_NOTIFY_PRUNE: i32 = 9;

/// `enum fuse_notify_code`: every notification a server can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum NotifyCode {
    /// See [`FUSE_NOTIFY_POLL`].
    Poll = FUSE_NOTIFY_POLL,
    /// See [`FUSE_NOTIFY_INVAL_INODE`].
    InvalInode = FUSE_NOTIFY_INVAL_INODE,
    /// See [`FUSE_NOTIFY_INVAL_ENTRY`].
    InvalEntry = FUSE_NOTIFY_INVAL_ENTRY,
    /// See [`FUSE_NOTIFY_STORE`].
    Store = FUSE_NOTIFY_STORE,
    /// See [`FUSE_NOTIFY_RETRIEVE`].
    Retrieve = FUSE_NOTIFY_RETRIEVE,
    /// See [`FUSE_NOTIFY_DELETE`].
    Delete = FUSE_NOTIFY_DELETE,
    /// See [`FUSE_NOTIFY_RESEND`].
    Resend = FUSE_NOTIFY_RESEND,
    /// See [`FUSE_NOTIFY_INC_EPOCH`].
    IncEpoch = FUSE_NOTIFY_INC_EPOCH,
    /// See [`FUSE_NOTIFY_PRUNE`].
    Prune = FUSE_NOTIFY_PRUNE,
    /// See [`iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL`].
    IomapDevInval = iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL,
    /// See [`iomap::FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS`].
    IomapUpsertMappings = iomap::FUSE_NOTIFY_IOMAP_UPSERT_MAPPINGS,
    /// See [`iomap::FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS`].
    IomapInvalMappings = iomap::FUSE_NOTIFY_IOMAP_INVAL_MAPPINGS,
}

impl NotifyCode {
    /// Every known notification code.
    pub const ALL: &'static [NotifyCode] = &[
        NotifyCode::Poll,
        NotifyCode::InvalInode,
        NotifyCode::InvalEntry,
        NotifyCode::Store,
        NotifyCode::Retrieve,
        NotifyCode::Delete,
        NotifyCode::Resend,
        NotifyCode::IncEpoch,
        NotifyCode::Prune,
        NotifyCode::IomapDevInval,
        NotifyCode::IomapUpsertMappings,
        NotifyCode::IomapInvalMappings,
    ];

    /// The code for a wire value, or `None` if unknown.
    pub fn from_i32(v: i32) -> Option<NotifyCode> {
        NotifyCode::ALL.iter().copied().find(|c| *c as i32 == v)
    }
}
