//! `Fs`: opening, checking, mount state, flushing and closing a filesystem; inode I/O and
//! inode allocation.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::error::{check, init_error_table, Error, Result};
use crate::inode::{Ino, Inode, Timestamp, FULL_EXTRA_ISIZE};
use crate::sys;

/// Incompatible features this crate refuses even read-only: we would serve wrong data or names.
const REFUSED_INCOMPAT: &[(u32, &str, &str)] = &[
    (
        sys::EXT4_FEATURE_INCOMPAT_INLINE_DATA,
        "inline_data",
        "make the filesystem with `mkfs.ext4 -O ^inline_data`",
    ),
    (
        sys::EXT4_FEATURE_INCOMPAT_ENCRYPT,
        "encrypt",
        "use a filesystem without fscrypt support (`mkfs.ext4 -O ^encrypt`)",
    ),
    (
        sys::EXT4_FEATURE_INCOMPAT_CASEFOLD,
        "casefold",
        "use a filesystem without case-insensitive directories (`mkfs.ext4 -O ^casefold`)",
    ),
    (
        sys::EXT3_FEATURE_INCOMPAT_JOURNAL_DEV,
        "journal_dev",
        "this is an external journal device, not a filesystem",
    ),
];

/// Features refused for read-write use only: we would corrupt or desynchronise them.
const REFUSED_RW_INCOMPAT: &[(u32, &str, &str)] = &[(
    sys::EXT4_FEATURE_INCOMPAT_MMP,
    "mmp",
    "multi-mount protection needs a heartbeat we do not run; `tune2fs -O ^mmp`",
)];

const REFUSED_RW_RO_COMPAT: &[(u32, &str, &str)] = &[
    (
        sys::EXT4_FEATURE_RO_COMPAT_QUOTA,
        "quota",
        "quota files are not updated by libext2fs allocations; `tune2fs -O ^quota`",
    ),
    (
        sys::EXT4_FEATURE_RO_COMPAT_BIGALLOC,
        "bigalloc",
        "cluster allocation is not supported for writing; mount read-only",
    ),
    (
        sys::EXT4_FEATURE_RO_COMPAT_VERITY,
        "verity",
        "fs-verity files must not be written; mount read-only",
    ),
    (
        sys::EXT4_FEATURE_RO_COMPAT_READONLY,
        "read-only",
        "the filesystem is marked read-only; mount read-only",
    ),
    (
        sys::EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS,
        "shared_blocks",
        "blocks are shared between files; mount read-only",
    ),
    (
        sys::EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT,
        "orphan_present",
        "orphan inodes are pending; run `e2fsck -fy` first",
    ),
];

/// Summary of a filesystem (superblock figures; counts are live while it is open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    pub uuid: [u8; 16],
    /// Volume label (raw bytes, without trailing NULs).
    pub label: Vec<u8>,
    pub block_size: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    /// Blocks reserved for the superuser (`s_r_blocks_count`).
    pub reserved_blocks: u64,
    pub inodes_count: u32,
    pub free_inodes: u32,
    /// On-disk inode size in bytes (128, 256, ...).
    pub inode_size: u32,
    /// First inode number available to ordinary files.
    pub first_ino: Ino,
    /// Largest file size in bytes, by the kernel's ext4 rules.
    pub max_file_size: u64,
    pub has_extents: bool,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
}

/// An open ext2/3/4 filesystem.
///
/// Invariants the users of this crate rely on:
/// - **No block cache.** The unix I/O channel is opened with `cache=off`, so every metadata
///   block libext2fs writes (inodes, directories, extent tree nodes, xattr blocks) is handed
///   to the kernel with `pwrite` immediately. A block freed by metadata and then reused as file
///   data (written by the server with its own `pwrite`) can therefore never be overwritten
///   later by a stale cached copy. Only the allocation bitmaps, group descriptors and the
///   superblock live in memory until [`Fs::flush`] / [`Fs::close`]; the server never writes
///   those blocks as data, because they are never free.
/// - **Send, not Sync.** libext2fs keeps per-filesystem state (inode cache, bitmaps) without
///   locks; hold `Fs` behind one mutex and do file data I/O outside it.
/// - **Mounted state.** Opening read-write increments `s_mnt_count`, sets `s_mtime` and clears
///   `EXT2_VALID_FS` on disk (as the kernel and fuse2fs do); a clean [`Fs::close`] sets it
///   again, so `e2fsck -fn` passes afterwards and a crash leaves "not clean" behind.
/// - **No journal.** The journal is neither replayed nor written; a filesystem that needs
///   recovery is refused for read-write.
pub struct Fs {
    raw: Option<NonNull<sys::struct_ext2_filsys>>,
    read_only: bool,
    /// The on-disk state was changed to "mounted" and must be restored at close.
    mounted: bool,
    /// Corruption was found or a change could not be completed nor undone: EXT2_ERROR_FS is
    /// set, changes are refused, and close leaves the filesystem marked not clean.
    errored: bool,
    /// Blocks no file may map: superblocks, descriptors, bitmaps, inode tables, journal.
    pub(crate) zone: crate::zone::SystemZone,
    /// What `commit` wrote last, per group (see `commit.rs`).
    pub(crate) committed: Vec<crate::commit::GroupState>,
    /// The on-disk orphan list, linked both ways in memory once read (see `orphan.rs`).
    pub(crate) orphan_chain: Option<crate::orphan::Chain>,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(crate) faults: crate::fault::Faults,
}

// SAFETY: the ext2_filsys and everything it points to are owned by this handle and only used
// through it; libext2fs keeps no thread-local state. `Fs` is deliberately not `Sync`.
unsafe impl Send for Fs {}

impl Fs {
    /// Opens the filesystem on `path` (image file or block device).
    ///
    /// Read-write opening refuses (with an error saying what to do): a journal needing
    /// recovery, an unclean or erroneous filesystem, pending orphans and the features listed
    /// in the crate documentation.
    pub fn open(path: &Path, read_write: bool) -> Result<Fs> {
        init_error_table();
        let ctx = || format!("opening {}", path.display());
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::from_errno(libc::EINVAL, ctx()))?;
        let mut flags = sys::EXT2_FLAG_64BITS as i32;
        if read_write {
            // Not EXCLUSIVE (O_EXCL): a fuseblk mount of the same device must be able to
            // claim it after we opened it.
            flags |= sys::EXT2_FLAG_RW as i32;
        }
        let mut raw: sys::ext2_filsys = ptr::null_mut();
        // SAFETY: valid C strings; `raw` receives an owned handle on success. The options string
        // is applied to the I/O channel before the superblock is read: no block cache at all.
        let rc = unsafe {
            sys::ext2fs_open2(
                cpath.as_ptr(),
                c"cache=off".as_ptr(),
                flags,
                0,
                0,
                sys::unix_io_manager,
                &mut raw,
            )
        };
        check(rc, ctx())?;
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno(libc::EIO, ctx()))?;
        let mut fs = Fs {
            raw: Some(raw),
            read_only: !read_write,
            mounted: false,
            errored: false,
            zone: Default::default(),
            committed: Vec::new(),
            orphan_chain: None,
            faults: Default::default(),
        };
        fs.install_freed_log();
        fs.log_device_writes();
        let with_ctx = |e: Error| Error::new(e.code(), format!("{}: {}", ctx(), e.context()));

        fs.check_openable(read_write).map_err(with_ctx)?;
        fs.check_device_size(&cpath).map_err(with_ctx)?;
        // Like ext4_check_descriptors: bitmaps and inode tables where they may be, not
        // overlapping, before anything is read through them or written to them.
        // SAFETY: open handle.
        check(
            unsafe { sys::ext2fs_check_desc(fs.ptr()) },
            "the group descriptors are corrupt; run `e2fsck -f`",
        )
        .map_err(with_ctx)?;
        fs.zone = crate::zone::SystemZone::build(&fs).map_err(with_ctx)?;
        if read_write {
            // SAFETY: open handle.
            check(
                unsafe { sys::ext2fs_read_bitmaps(fs.ptr()) },
                format!("{}: reading bitmaps", ctx()),
            )?;
            fs.mark_mounted().map_err(with_ctx)?;
            fs.committed = fs.group_states();
            fs.protect_system_zone();
            fs.process_orphans().map_err(with_ctx)?;
        }
        Ok(fs)
    }

    /// Refuses what we cannot serve; the error context says what to do.
    fn check_openable(&self, read_write: bool) -> Result<()> {
        let sb = self.sb();
        let refuse = |what: String| Err(Error::from_errno(libc::EOPNOTSUPP, what));
        for &(bit, name, advice) in REFUSED_INCOMPAT {
            if sb.s_feature_incompat & bit != 0 {
                return refuse(format!(
                    "filesystem feature `{name}` is not supported: {advice}"
                ));
            }
        }
        if !read_write {
            return Ok(());
        }
        for &(bit, name, advice) in REFUSED_RW_INCOMPAT {
            if sb.s_feature_incompat & bit != 0 {
                return refuse(format!(
                    "feature `{name}` is not supported read-write: {advice}"
                ));
            }
        }
        for &(bit, name, advice) in REFUSED_RW_RO_COMPAT {
            if sb.s_feature_ro_compat & bit != 0 {
                return refuse(format!(
                    "feature `{name}` is not supported read-write: {advice}"
                ));
            }
        }
        let needs_fsck = |why: &str| {
            Err(Error::from_errno(
                libc::EUCLEAN,
                format!("{why}; run `e2fsck -fy` on it first (or open it read-only)"),
            ))
        };
        if sb.s_feature_incompat & sys::EXT3_FEATURE_INCOMPAT_RECOVER != 0 {
            return needs_fsck("the journal needs recovery, which this server does not do");
        }
        if u32::from(sb.s_state) & sys::EXT2_ERROR_FS != 0 {
            return needs_fsck("the filesystem has errors recorded");
        }
        if u32::from(sb.s_state) & sys::EXT2_VALID_FS == 0 {
            return needs_fsck("the filesystem was not cleanly unmounted");
        }
        Ok(())
    }

    /// Like ext4's "bad geometry" check: a filesystem larger than its device would have
    /// blocks allocated (and written) past the device's end.
    fn check_device_size(&self, path: &std::ffi::CStr) -> Result<()> {
        let mut device_blocks: sys::blk64_t = 0;
        // SAFETY: a valid C string; the result is a plain integer.
        let rc = unsafe {
            sys::ext2fs_get_device_size2(
                path.as_ptr(),
                self.block_size() as i32,
                &mut device_blocks,
            )
        };
        check(rc, "reading the device size")?;
        if self.blocks_count() > device_blocks {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                format!(
                    "the superblock claims {} blocks, but the device holds {device_blocks}; run `e2fsck -f`",
                    self.blocks_count()
                ),
            ));
        }
        Ok(())
    }

    /// Records "mounted" on disk: one more mount, mount time, not clean until closed.
    fn mark_mounted(&mut self) -> Result<()> {
        let sb = self.sb_mut();
        sb.s_mnt_count = sb.s_mnt_count.wrapping_add(1);
        sb.s_mtime = Timestamp::now().sec as u32;
        sb.s_state &= !(sys::EXT2_VALID_FS as u16);
        self.mark_super_dirty();
        self.mounted = true;
        // SAFETY: open read-write handle.
        check(
            unsafe { sys::ext2fs_flush2(self.ptr(), 0) },
            "writing the mounted state",
        )
    }

    pub(crate) fn ptr(&self) -> sys::ext2_filsys {
        // `raw` is only None after close, which consumes self.
        self.raw.map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    pub(crate) fn sb(&self) -> &sys::ext2_super_block {
        // SAFETY: an open filesystem always has a superblock, owned by the handle.
        unsafe { &*(*self.ptr()).super_ }
    }

    pub(crate) fn sb_mut(&mut self) -> &mut sys::ext2_super_block {
        // SAFETY: as in `sb`; `&mut self` gives exclusive access.
        unsafe { &mut *(*self.ptr()).super_ }
    }

    /// `ext2fs_mark_super_dirty` (an inline function in the headers).
    pub(crate) fn mark_super_dirty(&self) {
        // SAFETY: open handle; plain flag update.
        unsafe { (*self.ptr()).flags |= (sys::EXT2_FLAG_DIRTY | sys::EXT2_FLAG_CHANGED) as i32 };
    }

    pub(crate) fn has_incompat(&self, bit: u32) -> bool {
        self.sb().s_feature_incompat & bit != 0
    }

    pub(crate) fn has_ro_compat(&self, bit: u32) -> bool {
        self.sb().s_feature_ro_compat & bit != 0
    }

    pub(crate) fn has_compat(&self, bit: u32) -> bool {
        self.sb().s_feature_compat & bit != 0
    }

    /// Refuses a change on a read-only or errored filesystem; otherwise one fault step.
    pub(crate) fn check_rw(&self, what: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::new(i64::from(sys::EXT2_ET_RO_FILSYS), what));
        }
        if self.errored {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_RO_FILSYS),
                format!("{what}: the filesystem has errors and is read-only until `e2fsck -f` repairs it"),
            ));
        }
        self.step(what)
    }

    /// Records an error the way ext4 does with errors=remount-ro: EXT2_ERROR_FS, the error
    /// count and times in the superblock, written at once (best effort), and every later
    /// change refused. Close then leaves the filesystem not clean, so it is checked.
    pub fn mark_error(&mut self) {
        if self.errored {
            return;
        }
        self.errored = true;
        let now = Timestamp::now().sec as u32;
        let sb = self.sb_mut();
        sb.s_state |= sys::EXT2_ERROR_FS as u16;
        sb.s_error_count = sb.s_error_count.saturating_add(1);
        if sb.s_first_error_time == 0 {
            sb.s_first_error_time = now;
        }
        sb.s_last_error_time = now;
        self.mark_super_dirty();
        if !self.read_only {
            // If this fails too, close writes it again.
            let _ = self.write_super();
        }
    }

    /// Whether [`Fs::mark_error`] was called (or the filesystem was opened with errors).
    pub fn is_errored(&self) -> bool {
        self.errored
    }

    /// Writes the primary superblock as it is in memory (checksum updated), and records it
    /// as written so a later `ext2fs_flush` (which writes only the bytes that changed since
    /// the last write) stays correct.
    pub(crate) fn write_super(&mut self) -> Result<()> {
        let fs = self.ptr();
        // SAFETY: open read-write handle; the superblock and orig_super are owned by it and
        // SUPERBLOCK_SIZE (1024) bytes long. The channel's block size is restored after the
        // 1 KiB write at byte 1024, as libext2fs' write_primary_superblock does.
        unsafe {
            check(
                sys::ext2fs_superblock_csum_set(fs, (*fs).super_),
                "checksumming the superblock",
            )?;
            let io = (*fs).io;
            let set_blksize = (*(*io).manager).set_blksize;
            if let Some(set) = set_blksize {
                check(set(io, 1024), "writing the superblock")?;
            }
            let rc = sys::io_channel_write_blk64(io, 1, -1024, (*fs).super_ as *const _);
            if let Some(set) = set_blksize {
                set(io, (*fs).blocksize as i32);
            }
            check(rc, "writing the superblock")?;
            if !(*fs).orig_super.is_null() {
                ptr::copy_nonoverlapping(
                    (*fs).super_ as *const u8,
                    (*fs).orig_super as *mut u8,
                    1024,
                );
            }
        }
        Ok(())
    }

    /// Writes the superblock, group descriptors and bitmaps if they changed, then asks the
    /// kernel to sync the device (`fsync`).
    pub fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let fs = self.ptr();
        // SAFETY: open read-write handle.
        unsafe {
            let dirty =
                (sys::EXT2_FLAG_DIRTY | sys::EXT2_FLAG_IB_DIRTY | sys::EXT2_FLAG_BB_DIRTY) as i32;
            if (*fs).flags & dirty != 0 {
                check(sys::ext2fs_flush2(fs, 0), "flushing filesystem metadata")
            } else {
                // io_channel_flush is a macro: call the manager's flush hook.
                let io = (*fs).io;
                match (*(*io).manager).flush {
                    Some(flush) => check(flush(io), "syncing the device"),
                    None => Ok(()),
                }
            }
        }
    }

    /// Flushes and closes. A read-write filesystem is marked clean again.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.raw.is_some() {
            self.drop_freed_log();
        }
        let Some(raw) = self.raw.take() else {
            return Ok(());
        };
        let fs = raw.as_ptr();
        // SAFETY: we own the handle; after this block it is freed exactly once.
        unsafe {
            if !self.mounted {
                // Nothing was changed on disk (refused or read-only open).
                sys::ext2fs_free(fs);
                return Ok(());
            }
            let sb = &mut *(*fs).super_;
            // An errored filesystem is never marked clean: the next mount must check it.
            if !self.errored {
                sb.s_state |= sys::EXT2_VALID_FS as u16;
            }
            (*fs).flags |= (sys::EXT2_FLAG_DIRTY | sys::EXT2_FLAG_CHANGED) as i32;
            let rc = sys::ext2fs_close2(fs, 0);
            if rc != 0 {
                // close2 leaves the handle allocated when flushing fails.
                sys::ext2fs_free(fs);
            }
            check(rc, "closing the filesystem")
        }
    }

    pub fn block_size(&self) -> u32 {
        // SAFETY: open handle.
        unsafe { (*self.ptr()).blocksize }
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Where inode `ino` lives on the device: (byte offset, length), so a caller can wait
    /// for that inode's write alone (`sync_file_range`). `None` for a number out of range.
    pub fn inode_byte_range(&self, ino: Ino) -> Option<(u64, u64)> {
        let sb = self.sb();
        let per_group = u64::from(sb.s_inodes_per_group);
        let index = u64::from(ino).checked_sub(1)?;
        if per_group == 0 || u64::from(ino) > u64::from(sb.s_inodes_count) {
            return None;
        }
        let group = u32::try_from(index / per_group).ok()?;
        let size = self.inode_size() as u64;
        // SAFETY: open handle, group below the group count (ino <= s_inodes_count).
        let table = unsafe { sys::ext2fs_inode_table_loc(self.ptr(), group) };
        let offset = table
            .checked_mul(u64::from(self.block_size()))?
            .checked_add((index % per_group).checked_mul(size)?)?;
        Some((offset, size))
    }

    pub(crate) fn inode_size(&self) -> usize {
        let sb = self.sb();
        if sb.s_rev_level == 0 {
            sys::EXT2_GOOD_OLD_INODE_SIZE as usize
        } else {
            usize::from(sb.s_inode_size)
        }
    }

    pub(crate) fn blocks_count(&self) -> u64 {
        // SAFETY: reads the superblock of an open handle.
        unsafe { sys::ext2fs_blocks_count((*self.ptr()).super_) }
    }

    /// Free blocks right now (cheap; `info` gathers everything).
    pub fn free_blocks(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::ext2fs_free_blocks_count((*self.ptr()).super_) }
    }

    pub fn info(&self) -> FsInfo {
        let sb = self.sb();
        let label_len = sb
            .s_volume_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(sb.s_volume_name.len());
        let has_extents = sb.s_feature_incompat & sys::EXT3_FEATURE_INCOMPAT_EXTENTS != 0;
        let huge = sb.s_feature_ro_compat & sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE != 0;
        FsInfo {
            uuid: sb.s_uuid,
            label: sb.s_volume_name[..label_len].to_vec(),
            block_size: self.block_size(),
            blocks_count: self.blocks_count(),
            free_blocks: self.free_blocks(),
            // SAFETY: reads the superblock of an open handle.
            reserved_blocks: unsafe { sys::ext2fs_r_blocks_count((*self.ptr()).super_) },
            inodes_count: sb.s_inodes_count,
            free_inodes: sb.s_free_inodes_count,
            inode_size: self.inode_size() as u32,
            first_ino: if sb.s_rev_level == 0 {
                sys::EXT2_GOOD_OLD_FIRST_INO
            } else {
                sb.s_first_ino
            },
            max_file_size: max_file_size(self.block_size(), has_extents, huge),
            has_extents,
            feature_compat: sb.s_feature_compat,
            feature_incompat: sb.s_feature_incompat,
            feature_ro_compat: sb.s_feature_ro_compat,
        }
    }

    /// Whether an inode number may name a file, as ext4's `ext4_valid_inum`: the root, or
    /// one from the first non-reserved inode to the last. The reserved ones (bad blocks,
    /// the journal, the resize inode, ...) are never served, whoever names them.
    pub fn is_valid_ino(&self, ino: Ino) -> bool {
        let sb = self.sb();
        ino == crate::inode::ROOT_INO || (ino >= self.first_ino() && ino <= sb.s_inodes_count)
    }

    fn first_ino(&self) -> Ino {
        let sb = self.sb();
        if sb.s_rev_level == 0 {
            sys::EXT2_GOOD_OLD_FIRST_INO
        } else {
            sb.s_first_ino
        }
    }

    /// Refuses an inode number no file can have: a corrupt directory entry or orphan list
    /// (EUCLEAN), like ext4's "iget: illegal inode #".
    pub(crate) fn check_ino(&self, ino: Ino, what: &'static str) -> Result<()> {
        if !self.is_valid_ino(ino) {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                format!("{what}: inode {ino} is reserved or out of range"),
            ));
        }
        Ok(())
    }

    /// Reads the whole large inode (fields beyond a 128-byte on-disk inode read as zero).
    pub fn read_inode(&self, ino: Ino) -> Result<Inode> {
        self.check_ino(ino, "reading inode")?;
        self.read_inode_unchecked(ino)
    }

    /// `read_inode` for the crate's own use of reserved inodes (the journal's mapping).
    pub(crate) fn read_inode_unchecked(&self, ino: Ino) -> Result<Inode> {
        if ino == 0 || ino > self.sb().s_inodes_count {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_BAD_INODE_NUM),
                format!("reading inode {ino}"),
            ));
        }
        let mut inode = Inode::zeroed();
        let size = std::mem::size_of::<sys::ext2_inode_large>() as i32;
        // SAFETY: the buffer is a whole ext2_inode_large; libext2fs copies at most `size` bytes.
        let rc = unsafe { sys::ext2fs_read_inode_full(self.ptr(), ino, inode.as_mut_ptr(), size) };
        check(rc, format!("reading inode {ino}"))?;
        inode.block_size = self.block_size();
        Ok(inode)
    }

    /// Writes an inode read earlier (and possibly modified). Only the fixed fields covered by
    /// the inode's `i_extra_isize` are written; in-inode extended attributes are preserved.
    pub fn write_inode(&mut self, ino: Ino, inode: &Inode) -> Result<()> {
        self.check_rw("writing inode")?;
        self.put_inode(ino, inode)
    }

    /// `write_inode` as a part of a larger change (no fault step of its own).
    pub(crate) fn put_inode(&mut self, ino: Ino, inode: &Inode) -> Result<()> {
        self.check_ino(ino, "writing inode")?;
        let mut copy = *inode;
        let len = copy.fixed_len().min(self.inode_size()) as i32;
        // SAFETY: `copy` is a whole ext2_inode_large; libext2fs reads `len` bytes of it.
        let rc = unsafe { sys::ext2fs_write_inode_full(self.ptr(), ino, copy.as_mut_ptr(), len) };
        check(rc, format!("writing inode {ino}"))
    }

    /// Allocates an inode number near `dir` and marks it in use. The on-disk inode is zeroed,
    /// so that [`Fs::free_inode`] can always undo this; fill it with [`Fs::write_new_inode`].
    pub fn new_inode(&mut self, dir: Ino, mode: u32) -> Result<Ino> {
        self.check_rw("allocating an inode")?;
        let mut ino: sys::ext2_ino_t = 0;
        // SAFETY: open read-write handle; `ino` receives the result.
        let rc = unsafe {
            sys::ext2fs_new_inode(self.ptr(), dir, mode as i32, ptr::null_mut(), &mut ino)
        };
        check(rc, "allocating an inode")?;
        self.check_ino(ino, "allocating an inode")?;
        // A corrupt bitmap must not hand out a live inode (that would cross-link two files).
        let old = self.read_inode(ino)?;
        if old.links() != 0 && old.mode() != 0 && old.dtime() == 0 {
            // SAFETY: open read-write handle; `ino` is in range.
            unsafe { sys::ext2fs_mark_generic_bmap((*self.ptr()).inode_map, u64::from(ino)) };
            return Err(Error::new(
                i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                format!("the inode bitmap marks inode {ino} free, but it is in use"),
            ));
        }
        // Zero links and no blocks, but the mode, so that freeing it fixes the right counters.
        let mut blank = Inode::zeroed();
        blank.set_mode(mode);
        if self.inode_size() > sys::EXT2_GOOD_OLD_INODE_SIZE as usize {
            blank.raw.i_extra_isize = FULL_EXTRA_ISIZE;
        }
        self.write_full_inode(ino, &blank)?;
        let is_dir = i32::from(mode & sys::LINUX_S_IFMT == sys::LINUX_S_IFDIR);
        // SAFETY: `ino` is a valid, currently free inode number.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.ptr(), ino, 1, is_dir) };
        self.note_inode_group(ino);
        Ok(ino)
    }

    /// Writes a freshly allocated inode in full (zeroing the in-inode xattr area). Sets
    /// `i_extra_isize`, a creation time (if unset: the ctime), and for regular files and
    /// directories on extent filesystems an empty extent tree.
    pub fn write_new_inode(&mut self, ino: Ino, inode: &Inode) -> Result<()> {
        self.check_rw("writing a new inode")?;
        self.check_ino(ino, "writing a new inode")?;
        let mut new = *inode;
        if self.inode_size() > sys::EXT2_GOOD_OLD_INODE_SIZE as usize {
            new.raw.i_extra_isize = FULL_EXTRA_ISIZE;
            if new.raw.i_crtime == 0 && new.raw.i_crtime_extra == 0 {
                new.set_crtime(new.ctime());
            }
        } else {
            new.raw.i_extra_isize = 0;
        }
        let wants_extents = (new.is_reg() || new.is_dir())
            && self.has_incompat(sys::EXT3_FEATURE_INCOMPAT_EXTENTS)
            && new.raw.i_flags & sys::EXT4_INLINE_DATA_FL == 0
            && new.raw.i_block.iter().all(|&b| b == 0);
        if wants_extents {
            new.raw.i_flags |= sys::EXT4_EXTENTS_FL;
            crate::map::init_extent_root(&mut new.raw.i_block, &[]);
        }
        self.write_full_inode(ino, &new)
    }

    /// Writes all `inode_size` bytes: the large inode followed by zeros.
    fn write_full_inode(&mut self, ino: Ino, inode: &Inode) -> Result<()> {
        let size = self.inode_size();
        let mut buf = vec![0u8; size.max(std::mem::size_of::<sys::ext2_inode_large>())];
        let n = size.min(std::mem::size_of::<sys::ext2_inode_large>());
        // SAFETY: copies the first n bytes of a plain-data struct into a buffer at least that long.
        unsafe {
            ptr::copy_nonoverlapping(
                (&inode.raw as *const sys::ext2_inode_large).cast::<u8>(),
                buf.as_mut_ptr(),
                n,
            )
        };
        // SAFETY: `buf` holds `size` bytes (at least one ext2_inode_large).
        let rc = unsafe {
            sys::ext2fs_write_inode_full(self.ptr(), ino, buf.as_mut_ptr().cast(), size as i32)
        };
        check(rc, format!("writing new inode {ino}"))
    }

    /// Frees an inode whose last link is gone: all its blocks, its extended attributes (EA
    /// block reference, EA inodes), its place on the orphan list, and the inode itself
    /// (links 0, dtime set). Works for directories too; the caller unlinks names and fixes
    /// the parent's link count. Interrupted, it can be called again to finish.
    pub fn free_inode(&mut self, ino: Ino) -> Result<()> {
        self.check_rw("freeing an inode")?;
        self.check_ino(ino, "freeing an inode")?;
        if self.has_incompat(sys::EXT4_FEATURE_INCOMPAT_EA_INODE) {
            // Values stored in EA inodes hold references that only the xattr code drops.
            self.remove_all_xattrs(ino)?;
        }
        self.release_inode(ino)
    }

    /// Marks `blk` in use (bitmap, group and superblock counters).
    pub(crate) fn block_alloc_stats(&self, blk: u64, delta: i32) {
        // SAFETY: open read-write handle, block number from the allocator.
        unsafe { sys::ext2fs_block_alloc_stats2(self.ptr(), blk, delta) };
    }
}

impl Drop for Fs {
    /// Best-effort close; use [`Fs::close`] to see errors.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Largest file size by the kernel's ext4 rules (`ext4_max_size` / `ext4_max_bitmap_size`).
fn max_file_size(block_size: u32, extents: bool, huge_file: bool) -> u64 {
    let bits = block_size.trailing_zeros();
    if bits < 10 {
        return 0;
    }
    // Without huge_file, i_blocks counts 512-byte sectors in 32 bits: a limit in fs blocks.
    let sector_limit_blocks = ((1u64 << 32) - 1) >> (bits - 9);
    let lfs_max = i64::MAX as u64;
    if extents {
        // Logical block numbers are 32 bits; the last block is kept free so that
        // e_lblk + e_len never overflows.
        let mut blocks = (1u64 << 32) - 1;
        if !huge_file {
            blocks = blocks.min(sector_limit_blocks);
        }
        return (blocks << bits).min(lfs_max);
    }
    // Block-mapped: 12 direct blocks plus single, double and triple indirect trees.
    let ppb = u64::from(block_size / 4);
    let addressable = 12 + ppb + ppb * ppb + ppb * ppb * ppb;
    let meta_full = 1 + (1 + ppb) + (1 + ppb + ppb * ppb);
    let limit = if huge_file {
        (1u64 << 48) - 1
    } else {
        sector_limit_blocks
    };
    let blocks = if addressable + meta_full <= limit {
        addressable
    } else {
        // i_blocks counts the indirect blocks too: take out those needed to map `limit`.
        let mut rest = limit - 12 - ppb;
        let mut meta = 1;
        if rest < ppb * ppb {
            meta += 1 + rest.div_ceil(ppb);
        } else {
            meta += 1 + ppb;
            rest -= ppb * ppb;
            meta += 1 + rest.div_ceil(ppb) + rest.div_ceil(ppb * ppb);
        }
        limit - meta
    };
    (blocks << bits).min(lfs_max)
}

#[cfg(test)]
mod tests {
    use super::max_file_size;

    #[test]
    fn max_sizes_match_ext4() {
        // ext4 with extents + huge_file, 4 KiB blocks: 16 TiB - 4 KiB.
        assert_eq!(max_file_size(4096, true, true), ((1u64 << 32) - 1) * 4096);
        // Without huge_file: i_blocks limit of 2^32 sectors = 2 TiB.
        assert_eq!(
            max_file_size(4096, true, false),
            (((1u64 << 32) - 1) >> 3) << 12
        );
        // ext3-style 1 KiB blocks: the block tree limits first (~16 GiB).
        let ext3_1k = max_file_size(1024, false, false);
        assert!(ext3_1k > 16 << 30 && ext3_1k < 17 << 30, "{ext3_1k}");
        // 4 KiB block-mapped without huge_file: the 2 TiB sector limit, minus metadata.
        let ext3_4k = max_file_size(4096, false, false);
        assert!(
            ext3_4k < 2 << 40 && ext3_4k > (2 << 40) - (8 << 30),
            "{ext3_4k}"
        );
    }
}
