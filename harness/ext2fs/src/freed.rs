//! A log of the blocks libext2fs frees, so the server can tell the kernel to drop them
//! from the block device's page cache (FUSE iomap: file data bypasses that cache, so a
//! stale cached copy of a freed metadata block must not be written back over new data).
//! Only the single-block callback is used: the range callback of libext2fs 1.47.0 reports
//! the end of the run with a count of zero.
//!
//! The same log records which block groups' bitmaps and descriptors changed (allocations
//! and frees of blocks and inodes), so that `commit` writes only those groups, and which
//! inodes were written (libext2fs's `write_inode` hook sees every inode write, its own
//! included), so that a cache of inodes kept beside the handle can drop them, and which
//! device ranges libext2fs wrote (`device_writes`).

use crate::fs::Fs;
use crate::sys;

/// Freed block runs `(first block, count)`, in the order they were freed.
#[derive(Default)]
pub(crate) struct FreedLog {
    runs: Vec<(u64, u64)>,
    /// Groups whose bitmaps or descriptor changed since the last commit.
    pub(crate) groups: std::collections::BTreeSet<u32>,
    /// Inodes written since the last `take_written_inodes`.
    written: Vec<crate::inode::Ino>,
    /// Device ranges written since the last `take_device_writes`.
    device_writes: crate::device_writes::ByteRanges,
}

impl FreedLog {
    fn push(&mut self, blk: u64, num: u64) {
        match self.runs.last_mut() {
            Some((start, len)) if *start + *len == blk => *len += num,
            _ => self.runs.push((blk, num)),
        }
    }
}

unsafe fn log_of(fs: sys::ext2_filsys) -> Option<&'static mut FreedLog> {
    // SAFETY: priv_data is null or points at the FreedLog owned by the `Fs` for `fs`.
    unsafe { ((*fs).priv_data as *mut FreedLog).as_mut() }
}

/// The device-write log of the handle `fs`, if it logs.
pub(crate) unsafe fn device_writes_of(
    fs: sys::ext2_filsys,
) -> Option<&'static mut crate::device_writes::ByteRanges> {
    // SAFETY: as for `log_of`.
    unsafe { log_of(fs) }.map(|log| &mut log.device_writes)
}

unsafe extern "C" fn on_block(fs: sys::ext2_filsys, blk: sys::blk64_t, inuse: core::ffi::c_int) {
    if let Some(log) = unsafe { log_of(fs) } {
        if inuse < 0 {
            log.push(blk, 1);
        }
        // SAFETY: `fs` is the open handle libext2fs calls us for.
        log.groups
            .insert(unsafe { sys::ext2fs_group_of_blk2(fs, blk) });
    }
}

unsafe extern "C" fn on_write_inode(
    fs: sys::ext2_filsys,
    ino: sys::ext2_ino_t,
    _inode: *mut sys::ext2_inode,
) -> sys::errcode_t {
    if let Some(log) = unsafe { log_of(fs) } {
        log.written.push(ino);
    }
    // Only noted: libext2fs goes on to write the inode itself.
    sys::errcode_t::from(sys::EXT2_ET_CALLBACK_NOTHANDLED)
}

impl Fs {
    /// Starts logging freed blocks into `log` (owned by this `Fs`, stable address).
    pub(crate) fn install_freed_log(&mut self) {
        let log = Box::into_raw(Box::<FreedLog>::default());
        // SAFETY: open handle; the Box is reclaimed in `drop_freed_log`.
        unsafe {
            (*self.ptr()).priv_data = log.cast();
            sys::ext2fs_set_block_alloc_stats_callback(
                self.ptr(),
                Some(on_block),
                std::ptr::null_mut(),
            );
            (*self.ptr()).write_inode = Some(on_write_inode);
        }
    }

    /// Stops logging and frees the log (before the handle is closed).
    pub(crate) fn drop_freed_log(&mut self) {
        // SAFETY: open handle; priv_data is ours (or null).
        unsafe {
            let fs = self.ptr();
            sys::ext2fs_set_block_alloc_stats_callback(fs, None, std::ptr::null_mut());
            (*fs).write_inode = None;
            let log = (*fs).priv_data as *mut FreedLog;
            (*fs).priv_data = std::ptr::null_mut();
            if !log.is_null() {
                drop(Box::from_raw(log));
            }
        }
    }

    /// Records a run this crate frees with `ext2fs_block_alloc_stats_range`, whose callback
    /// is useless in libext2fs 1.47.0 (it reports the run's end with a count of zero).
    pub(crate) fn log_freed(&self, blk: u64, num: u64) {
        // SAFETY: open handle.
        if let Some(log) = unsafe { log_of(self.ptr()) } {
            log.push(blk, num);
        }
        self.note_block_groups(blk, num);
    }

    /// Records the groups of a block run this crate allocated or freed as changed.
    pub(crate) fn note_block_groups(&self, blk: u64, num: u64) {
        let fs = self.ptr();
        // SAFETY: open handle.
        if let Some(log) = unsafe { log_of(fs) } {
            if num == 0 {
                return;
            }
            // SAFETY: open handle; block numbers within the filesystem.
            let (first, last) = unsafe {
                (
                    sys::ext2fs_group_of_blk2(fs, blk),
                    sys::ext2fs_group_of_blk2(fs, blk + num - 1),
                )
            };
            log.groups.extend(first..=last);
        }
    }

    /// Records the group of an inode this crate allocated or freed as changed.
    pub(crate) fn note_inode_group(&self, ino: crate::inode::Ino) {
        let per_group = self.sb().s_inodes_per_group.max(1);
        // SAFETY: open handle.
        if let Some(log) = unsafe { log_of(self.ptr()) } {
            log.groups.insert((ino - 1) / per_group);
        }
    }

    /// The groups recorded as changed since the last call.
    pub(crate) fn take_dirty_groups(&mut self) -> std::collections::BTreeSet<u32> {
        // SAFETY: open handle.
        match unsafe { log_of(self.ptr()) } {
            Some(log) => std::mem::take(&mut log.groups),
            None => Default::default(),
        }
    }

    /// The block runs `(first, count)` freed since the last call: every metadata block
    /// (extent tree nodes, directory and xattr blocks are freed one by one through the
    /// single-block callback), the data runs this crate punches (extent files, bounded
    /// block-mapped ranges), and the blocks libext2fs's own `ext2fs_punch` frees when it
    /// truncates a block-mapped file (its `ind_punch` frees them one by one, through the
    /// same callback).
    pub fn take_freed(&mut self) -> Vec<(u64, u64)> {
        // SAFETY: open handle.
        match unsafe { log_of(self.ptr()) } {
            Some(log) => std::mem::take(&mut log.runs),
            None => Vec::new(),
        }
    }

    /// The inodes written since the last call (a number may repeat), by this crate or by
    /// libext2fs itself (directory, extent and xattr changes).
    pub fn take_written_inodes(&mut self) -> Vec<crate::inode::Ino> {
        // SAFETY: open handle.
        match unsafe { log_of(self.ptr()) } {
            Some(log) => std::mem::take(&mut log.written),
            None => Vec::new(),
        }
    }
}
