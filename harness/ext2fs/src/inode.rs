//! `Inode`: a copy of one on-disk inode (`struct ext2_inode_large`) with typed accessors.

use std::fmt;

use crate::sys;

/// An inode number.
pub type Ino = u32;

/// The root directory's inode number.
pub const ROOT_INO: Ino = sys::EXT2_ROOT_INO;

const GOOD_OLD_INODE_SIZE: usize = sys::EXT2_GOOD_OLD_INODE_SIZE as usize;
/// `i_extra_isize` for a fresh large inode: every field of `ext2_inode_large` is present.
pub(crate) const FULL_EXTRA_ISIZE: u16 =
    (std::mem::size_of::<sys::ext2_inode_large>() - GOOD_OLD_INODE_SIZE) as u16;

/// Size of `i_block` in bytes: the space a fast symlink target may use (minus its NUL).
pub(crate) const I_BLOCK_BYTES: usize = 4 * sys::EXT2_N_BLOCKS as usize;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    /// The current time of the system clock.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

/// The type of a file, as in a mode or a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Unknown,
    Regular,
    Dir,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
    Symlink,
}

impl FileType {
    /// The type encoded in the `S_IFMT` bits of `mode`.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & sys::LINUX_S_IFMT {
            sys::LINUX_S_IFREG => FileType::Regular,
            sys::LINUX_S_IFDIR => FileType::Dir,
            sys::LINUX_S_IFCHR => FileType::CharDev,
            sys::LINUX_S_IFBLK => FileType::BlockDev,
            sys::LINUX_S_IFIFO => FileType::Fifo,
            sys::LINUX_S_IFSOCK => FileType::Socket,
            sys::LINUX_S_IFLNK => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    /// The type stored in a directory entry (`EXT2_FT_*`).
    pub(crate) fn from_dirent(ft: u8) -> FileType {
        match u32::from(ft) {
            sys::EXT2_FT_REG_FILE => FileType::Regular,
            sys::EXT2_FT_DIR => FileType::Dir,
            sys::EXT2_FT_CHRDEV => FileType::CharDev,
            sys::EXT2_FT_BLKDEV => FileType::BlockDev,
            sys::EXT2_FT_FIFO => FileType::Fifo,
            sys::EXT2_FT_SOCK => FileType::Socket,
            sys::EXT2_FT_SYMLINK => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }

    /// The `EXT2_FT_*` code for a directory entry.
    pub(crate) fn dirent_code(self) -> u32 {
        match self {
            FileType::Unknown => sys::EXT2_FT_UNKNOWN,
            FileType::Regular => sys::EXT2_FT_REG_FILE,
            FileType::Dir => sys::EXT2_FT_DIR,
            FileType::CharDev => sys::EXT2_FT_CHRDEV,
            FileType::BlockDev => sys::EXT2_FT_BLKDEV,
            FileType::Fifo => sys::EXT2_FT_FIFO,
            FileType::Socket => sys::EXT2_FT_SOCK,
            FileType::Symlink => sys::EXT2_FT_SYMLINK,
        }
    }

    /// The `S_IFMT` bits of this type (0 for `Unknown`).
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Unknown => 0,
            FileType::Regular => sys::LINUX_S_IFREG,
            FileType::Dir => sys::LINUX_S_IFDIR,
            FileType::CharDev => sys::LINUX_S_IFCHR,
            FileType::BlockDev => sys::LINUX_S_IFBLK,
            FileType::Fifo => sys::LINUX_S_IFIFO,
            FileType::Socket => sys::LINUX_S_IFSOCK,
            FileType::Symlink => sys::LINUX_S_IFLNK,
        }
    }
}

/// One inode, as read from disk (all of `struct ext2_inode_large`).
///
/// It is a plain copy: after an `Fs` operation that allocates or frees blocks or extended
/// attributes of an inode given only by number, re-read the inode before writing a copy back.
#[derive(Clone, Copy)]
pub struct Inode {
    pub(crate) raw: sys::ext2_inode_large,
    /// Filesystem block size, for `blocks_512` of huge files (0 if never read from a filesystem).
    pub(crate) block_size: u32,
}

impl Default for Inode {
    /// A blank large inode: every field zero except `i_extra_isize`, so that the
    /// nanosecond and creation-time fields can be set before `Fs::write_new_inode`.
    fn default() -> Inode {
        // SAFETY: ext2_inode_large is plain integers (and unions of them): all-zero is valid.
        let mut raw: sys::ext2_inode_large = unsafe { std::mem::zeroed() };
        raw.i_extra_isize = FULL_EXTRA_ISIZE;
        Inode { raw, block_size: 0 }
    }
}

impl Inode {
    /// A blank inode with the given mode (type and permission bits).
    pub fn new(mode: u32) -> Inode {
        let mut inode = Inode::default();
        inode.set_mode(mode);
        inode
    }

    pub(crate) fn zeroed() -> Inode {
        // SAFETY: as in `default`.
        Inode {
            raw: unsafe { std::mem::zeroed() },
            block_size: 0,
        }
    }

    /// Pointer for libext2fs calls taking `struct ext2_inode *` (the large inode starts with it).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut sys::ext2_inode {
        (&mut self.raw as *mut sys::ext2_inode_large).cast()
    }

    fn linux2(&self) -> &sys::ext2_inode_large__bindgen_ty_2__bindgen_ty_1 {
        // SAFETY: both union variants are plain integers of the same size; Linux uses linux2.
        unsafe { &self.raw.osd2.linux2 }
    }

    fn linux2_mut(&mut self) -> &mut sys::ext2_inode_large__bindgen_ty_2__bindgen_ty_1 {
        // SAFETY: as above.
        unsafe { &mut self.raw.osd2.linux2 }
    }

    /// Does the on-disk inode have room for the extra field ending at byte `end`?
    fn has_extra(&self, end: usize) -> bool {
        GOOD_OLD_INODE_SIZE + usize::from(self.raw.i_extra_isize) >= end
    }

    /// Bytes of this inode that hold fixed fields: 128 + `i_extra_isize`, clamped to the struct.
    pub(crate) fn fixed_len(&self) -> usize {
        (GOOD_OLD_INODE_SIZE + usize::from(self.raw.i_extra_isize))
            .min(std::mem::size_of::<sys::ext2_inode_large>())
    }

    pub fn mode(&self) -> u32 {
        u32::from(self.raw.i_mode)
    }

    /// Sets type and permission bits (16 bits on disk; higher bits are dropped).
    pub fn set_mode(&mut self, mode: u32) {
        self.raw.i_mode = mode as u16;
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode())
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Dir
    }

    pub fn is_reg(&self) -> bool {
        self.file_type() == FileType::Regular
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    pub fn is_chr(&self) -> bool {
        self.file_type() == FileType::CharDev
    }

    pub fn is_blk(&self) -> bool {
        self.file_type() == FileType::BlockDev
    }

    pub fn is_fifo(&self) -> bool {
        self.file_type() == FileType::Fifo
    }

    pub fn is_sock(&self) -> bool {
        self.file_type() == FileType::Socket
    }

    pub fn uid(&self) -> u32 {
        u32::from(self.raw.i_uid) | u32::from(self.linux2().l_i_uid_high) << 16
    }

    pub fn set_uid(&mut self, uid: u32) {
        self.raw.i_uid = uid as u16;
        self.linux2_mut().l_i_uid_high = (uid >> 16) as u16;
    }

    pub fn gid(&self) -> u32 {
        u32::from(self.raw.i_gid) | u32::from(self.linux2().l_i_gid_high) << 16
    }

    pub fn set_gid(&mut self, gid: u32) {
        self.raw.i_gid = gid as u16;
        self.linux2_mut().l_i_gid_high = (gid >> 16) as u16;
    }

    /// File size in bytes (`i_size` + `i_size_high`).
    pub fn size(&self) -> u64 {
        u64::from(self.raw.i_size) | u64::from(self.raw.i_size_high) << 32
    }

    pub fn set_size(&mut self, size: u64) {
        self.raw.i_size = size as u32;
        self.raw.i_size_high = (size >> 32) as u32;
    }

    pub fn links(&self) -> u16 {
        self.raw.i_links_count
    }

    pub fn set_links(&mut self, links: u16) {
        self.raw.i_links_count = links;
    }

    /// The block holding this inode's external xattrs (0 = none).
    pub fn file_acl(&self) -> u64 {
        // SAFETY: osd2 is plain integers in every variant; Linux uses `linux2`.
        let high = unsafe { self.raw.osd2.linux2.l_i_file_acl_high };
        self.raw.i_file_acl as u64 | ((high as u64) << 32)
    }

    pub fn generation(&self) -> u32 {
        self.raw.i_generation
    }

    /// Sets `i_generation`. Set it before the inode owns blocks: with metadata_csum the
    /// checksums of its directory and extent-tree blocks are seeded with it.
    pub fn set_generation(&mut self, generation: u32) {
        self.raw.i_generation = generation;
    }

    /// `i_flags` (`EXT4_*_FL`).
    pub fn flags(&self) -> u32 {
        self.raw.i_flags
    }

    /// Sets `i_flags`. Do not toggle `EXT4_EXTENTS_FL` or `EXT4_INLINE_DATA_FL` on a file that
    /// has data: they describe how `i_block` is interpreted.
    pub fn set_flags(&mut self, flags: u32) {
        self.raw.i_flags = flags;
    }

    /// Is the file's data mapped by an extent tree (rather than block pointers)?
    pub fn uses_extents(&self) -> bool {
        self.raw.i_flags & sys::EXT4_EXTENTS_FL != 0
    }

    /// Depth of the extent tree (0: every extent in the inode itself; more: the extents
    /// live in separate blocks), or `None` when the file does not use extents.
    pub fn extent_depth(&self) -> Option<u16> {
        if !self.uses_extents() {
            return None;
        }
        // ext3_extent_header: magic, entries, max, depth (little-endian u16s) in i_block.
        let header = self.raw.i_block[1];
        let magic = (self.raw.i_block[0] & 0xffff) as u16;
        (magic == 0xf30a).then_some((header >> 16) as u16)
    }

    /// Deletion time (seconds), set when the inode is freed.
    pub fn dtime(&self) -> u32 {
        self.raw.i_dtime
    }

    /// Space used, in 512-byte units (`i_blocks` with `huge_file` semantics).
    pub fn blocks_512(&self) -> u64 {
        let blocks = u64::from(self.raw.i_blocks) | u64::from(self.linux2().l_i_blocks_hi) << 32;
        if self.raw.i_flags & sys::EXT4_HUGE_FILE_FL != 0 && self.block_size >= 512 {
            // With EXT4_HUGE_FILE_FL the count is in filesystem blocks.
            blocks.saturating_mul(u64::from(self.block_size / 512))
        } else {
            blocks
        }
    }

    /// Device number of a character or block device, in the Linux "new" 32-bit encoding
    /// (`(minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)`, as FUSE's `rdev`).
    pub fn rdev(&self) -> u32 {
        let old = self.raw.i_block[0];
        if old != 0 {
            // Old 16-bit encoding: major in bits 8..16, minor in bits 0..8.
            let (major, minor) = ((old >> 8) & 0xff, old & 0xff);
            encode_dev(major, minor)
        } else {
            self.raw.i_block[1]
        }
    }

    /// Stores a device number (same encoding as `rdev`), using the old encoding when it fits,
    /// as the kernel does.
    pub fn set_rdev(&mut self, rdev: u32) {
        let (major, minor) = decode_dev(rdev);
        if major < 256 && minor < 256 {
            self.raw.i_block[0] = (major << 8) | minor;
            self.raw.i_block[1] = 0;
        } else {
            self.raw.i_block[0] = 0;
            self.raw.i_block[1] = rdev;
            self.raw.i_block[2] = 0;
        }
    }

    pub fn atime(&self) -> Timestamp {
        self.time(
            self.raw.i_atime,
            self.raw.i_atime_extra,
            offset_end::ATIME_EXTRA,
        )
    }

    pub fn mtime(&self) -> Timestamp {
        self.time(
            self.raw.i_mtime,
            self.raw.i_mtime_extra,
            offset_end::MTIME_EXTRA,
        )
    }

    pub fn ctime(&self) -> Timestamp {
        self.time(
            self.raw.i_ctime,
            self.raw.i_ctime_extra,
            offset_end::CTIME_EXTRA,
        )
    }

    /// Creation time, if the inode has room for it (large inodes only).
    pub fn crtime(&self) -> Option<Timestamp> {
        if !self.has_extra(offset_end::CRTIME) {
            return None;
        }
        Some(self.time(
            self.raw.i_crtime,
            self.raw.i_crtime_extra,
            offset_end::CRTIME_EXTRA,
        ))
    }

    pub fn set_atime(&mut self, t: Timestamp) {
        let (lo, extra) = encode_time(t, self.has_extra(offset_end::ATIME_EXTRA));
        self.raw.i_atime = lo;
        if let Some(extra) = extra {
            self.raw.i_atime_extra = extra;
        }
    }

    pub fn set_mtime(&mut self, t: Timestamp) {
        let (lo, extra) = encode_time(t, self.has_extra(offset_end::MTIME_EXTRA));
        self.raw.i_mtime = lo;
        if let Some(extra) = extra {
            self.raw.i_mtime_extra = extra;
        }
    }

    pub fn set_ctime(&mut self, t: Timestamp) {
        let (lo, extra) = encode_time(t, self.has_extra(offset_end::CTIME_EXTRA));
        self.raw.i_ctime = lo;
        if let Some(extra) = extra {
            self.raw.i_ctime_extra = extra;
        }
    }

    /// Sets the creation time; ignored when the inode has no room for it.
    pub fn set_crtime(&mut self, t: Timestamp) {
        if !self.has_extra(offset_end::CRTIME) {
            return;
        }
        let (lo, extra) = encode_time(t, self.has_extra(offset_end::CRTIME_EXTRA));
        self.raw.i_crtime = lo;
        if let Some(extra) = extra {
            self.raw.i_crtime_extra = extra;
        }
    }

    fn time(&self, lo: u32, extra: u32, extra_end: usize) -> Timestamp {
        let extra = if self.has_extra(extra_end) {
            Some(extra)
        } else {
            None
        };
        decode_time(lo, extra)
    }
}

/// End offsets (in the large inode) of the fields whose presence depends on `i_extra_isize`.
mod offset_end {
    use std::mem::offset_of;

    use crate::sys::ext2_inode_large as I;
    pub const CTIME_EXTRA: usize = offset_of!(I, i_ctime_extra) + 4;
    pub const MTIME_EXTRA: usize = offset_of!(I, i_mtime_extra) + 4;
    pub const ATIME_EXTRA: usize = offset_of!(I, i_atime_extra) + 4;
    pub const CRTIME: usize = offset_of!(I, i_crtime) + 4;
    pub const CRTIME_EXTRA: usize = offset_of!(I, i_crtime_extra) + 4;
}

const EPOCH_BITS: u32 = sys::EXT4_EPOCH_BITS;
const EPOCH_MASK: u32 = sys::EXT4_EPOCH_MASK;

/// ext4 time: the low field is a signed 32-bit second count; the extra field adds two epoch
/// bits above it (extending the range to year 2446) and the nanoseconds.
fn decode_time(lo: u32, extra: Option<u32>) -> Timestamp {
    let mut sec = i64::from(lo as i32);
    let mut nsec = 0;
    if let Some(extra) = extra {
        sec += i64::from(extra & EPOCH_MASK) << 32;
        nsec = (extra >> EPOCH_BITS).min(999_999_999);
    }
    Timestamp { sec, nsec }
}

fn encode_time(t: Timestamp, has_extra: bool) -> (u32, Option<u32>) {
    if !has_extra {
        let sec = t.sec.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        return (sec as i32 as u32, None);
    }
    let min = i64::from(i32::MIN);
    let max = min + (1i64 << (32 + EPOCH_BITS)) - 1;
    let sec = t.sec.clamp(min, max);
    let epoch = ((sec - i64::from(sec as i32)) >> 32) as u32 & EPOCH_MASK;
    let nsec = t.nsec.min(999_999_999);
    (sec as u32, Some(epoch | nsec << EPOCH_BITS))
}

fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

impl fmt::Debug for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inode")
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("uid", &self.uid())
            .field("gid", &self.gid())
            .field("size", &self.size())
            .field("links", &self.links())
            .field("flags", &format_args!("{:#x}", self.flags()))
            .field("blocks_512", &self.blocks_512())
            .field("extra_isize", &self.raw.i_extra_isize)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip_with_extra() {
        let mut inode = Inode::default();
        for sec in [
            0,
            1,
            -1,
            1_700_000_000,
            i64::from(i32::MAX) + 10,
            15_000_000_000,
            -2_000_000_000,
        ] {
            let t = Timestamp {
                sec,
                nsec: 123_456_789,
            };
            inode.set_mtime(t);
            assert_eq!(inode.mtime(), t, "sec {sec}");
        }
        // Beyond the representable range: clamped, not wrapped.
        inode.set_mtime(Timestamp {
            sec: i64::MAX,
            nsec: 0,
        });
        assert_eq!(inode.mtime().sec, 15_032_385_535, "year 2446 limit");
    }

    #[test]
    fn time_without_extra_space() {
        let mut inode = Inode::zeroed();
        inode.set_atime(Timestamp {
            sec: 1_700_000_000,
            nsec: 5,
        });
        assert_eq!(
            inode.atime(),
            Timestamp {
                sec: 1_700_000_000,
                nsec: 0
            }
        );
        assert_eq!(inode.crtime(), None);
        inode.set_atime(Timestamp {
            sec: 1 << 40,
            nsec: 0,
        });
        assert_eq!(inode.atime().sec, i64::from(i32::MAX));
    }

    #[test]
    fn ids_sizes_and_devices() {
        let mut inode = Inode::new(0o100644);
        assert!(inode.is_reg());
        inode.set_uid(0x12345);
        inode.set_gid(70000);
        inode.set_size(5 << 30);
        assert_eq!(
            (inode.uid(), inode.gid(), inode.size()),
            (0x12345, 70000, 5 << 30)
        );
        for (major, minor) in [(8, 1), (259, 3), (4, 70000)] {
            let dev = encode_dev(major, minor);
            inode.set_rdev(dev);
            assert_eq!(inode.rdev(), dev);
            assert_eq!(decode_dev(inode.rdev()), (major, minor));
        }
        inode.set_rdev(encode_dev(8, 1));
        assert_eq!(
            inode.raw.i_block[0], 0x801,
            "old encoding used when it fits"
        );
    }
}
