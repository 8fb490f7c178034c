//! The byte ranges of the device libext2fs wrote, so that an fsync can write back the
//! metadata that changed (inodes, directories, extent blocks, bitmaps, descriptors, the
//! superblock) and leave the rest of the device's dirty pages (other files' data) alone.
//!
//! The handle's I/O channel keeps the unix manager's functions, except that its three
//! write functions go through `logged_*`, which note the range once the write succeeded.
//! With `cache=off` every write libext2fs makes to the page cache goes through them, at
//! once. Its zeroing (`io_channel_zeroout`: fallocate or BLKZEROOUT) bypasses the page
//! cache and is done when it returns; the flush that ends a sync makes it durable.

use std::collections::BTreeMap;
use std::ffi::{c_int, c_ulong, c_ulonglong, c_void};
use std::sync::OnceLock;

use crate::fs::Fs;
use crate::sys;

/// More distinct ranges than this between two takes are not tracked: the caller syncs
/// the whole device instead.
const MAX_RANGES: usize = 1 << 16;

/// Byte ranges `(offset, length)` of a device written since they were last taken, for a
/// sync of those ranges alone. Overlapping and touching ranges merge as they are noted.
/// Bounded: past `MAX_RANGES` separate ranges it keeps none and says so, and the caller
/// syncs the whole device.
#[derive(Default)]
pub struct ByteRanges {
    /// Start to end (exclusive), disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
    overflowed: bool,
}

impl ByteRanges {
    pub fn note(&mut self, offset: u64, len: u64) {
        if len == 0 || self.overflowed {
            return;
        }
        let (mut start, mut end) = (offset, offset.saturating_add(len));
        // Every kept range that overlaps or touches [start, end] starts at or before
        // `end`; going down from there, the first that ends before `start` ends the run.
        while let Some((&s, &e)) = self.ranges.range(..=end).next_back() {
            if e < start {
                break;
            }
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        if self.ranges.len() > MAX_RANGES {
            self.overflowed = true;
            self.ranges.clear();
        }
    }

    /// The ranges, sorted and merged; `None` if there were too many to keep. Noting
    /// starts again from nothing.
    pub fn take(&mut self) -> Option<Vec<(u64, u64)>> {
        let ranges = std::mem::take(&mut self.ranges);
        if std::mem::take(&mut self.overflowed) {
            return None;
        }
        Some(ranges.into_iter().map(|(s, e)| (s, e - s)).collect())
    }
}

/// The unix manager with logged writes; the channel's `manager` points here.
struct LoggingManager(sys::struct_io_manager);
// SAFETY: a table of function pointers and a static name, never written after it is built.
unsafe impl Sync for LoggingManager {}
unsafe impl Send for LoggingManager {}

static LOGGING: OnceLock<LoggingManager> = OnceLock::new();

fn unix() -> &'static sys::struct_io_manager {
    // SAFETY: libext2fs's unix manager: a static table, never written.
    unsafe { &*sys::unix_io_manager }
}

/// The log of the handle `channel` belongs to (libext2fs points the channel's
/// `app_data` at its handle), if it logs.
unsafe fn log_of(channel: sys::io_channel) -> Option<&'static mut ByteRanges> {
    // SAFETY: the channel is the open channel of a handle whose app_data is that handle.
    unsafe {
        let fs = (*channel).app_data as sys::ext2_filsys;
        if fs.is_null() {
            return None;
        }
        crate::freed::device_writes_of(fs)
    }
}

/// Notes `len` bytes at `offset` in the log of `channel`'s handle, if it logs.
unsafe fn note(channel: sys::io_channel, offset: u64, len: u64) {
    // SAFETY: as for `log_of`.
    if let Some(log) = unsafe { log_of(channel) } {
        log.note(offset, len);
    }
}

/// Notes the blocks of a write that returned `rc`, if it succeeded: `count` blocks, or
/// `-count` bytes when negative, as libext2fs's channels count. Returns `rc`.
unsafe fn noted(
    channel: sys::io_channel,
    block: u64,
    count: c_int,
    rc: sys::errcode_t,
) -> sys::errcode_t {
    if rc == 0 {
        // SAFETY: the caller's open channel.
        let block_size = unsafe { (*channel).block_size } as u64;
        let len = if count < 0 {
            count.unsigned_abs() as u64
        } else {
            count as u64 * block_size
        };
        // SAFETY: as above.
        unsafe { note(channel, block * block_size, len) };
    }
    rc
}

unsafe extern "C" fn logged_write_blk(
    channel: sys::io_channel,
    block: c_ulong,
    count: c_int,
    data: *const c_void,
) -> sys::errcode_t {
    let write = unix().write_blk.expect("the unix manager writes blocks");
    // SAFETY: the caller's arguments, passed on.
    unsafe { noted(channel, block, count, write(channel, block, count, data)) }
}

unsafe extern "C" fn logged_write_blk64(
    channel: sys::io_channel,
    block: c_ulonglong,
    count: c_int,
    data: *const c_void,
) -> sys::errcode_t {
    let write = unix()
        .write_blk64
        .expect("the unix manager writes 64-bit blocks");
    // SAFETY: the caller's arguments, passed on.
    unsafe { noted(channel, block, count, write(channel, block, count, data)) }
}

unsafe extern "C" fn logged_write_byte(
    channel: sys::io_channel,
    offset: c_ulong,
    size: c_int,
    data: *const c_void,
) -> sys::errcode_t {
    let write = unix().write_byte.expect("the unix manager writes bytes");
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { write(channel, offset, size, data) };
    if rc == 0 {
        // SAFETY: the caller's open channel.
        unsafe { note(channel, offset, u64::try_from(size).unwrap_or(0)) };
    }
    rc
}

impl Fs {
    /// Routes the channel's writes through the logging functions (the handle's log must
    /// be installed: `install_freed_log`).
    pub(crate) fn log_device_writes(&mut self) {
        let manager = LOGGING.get_or_init(|| {
            let mut m = *unix();
            m.write_blk = Some(logged_write_blk);
            m.write_blk64 = Some(logged_write_blk64);
            m.write_byte = Some(logged_write_byte);
            LoggingManager(m)
        });
        // SAFETY: open handle; libext2fs only reads through `manager`.
        unsafe {
            let io = (*self.ptr()).io;
            (*io).manager = &manager.0 as *const sys::struct_io_manager as sys::io_manager;
        }
    }

    /// The device byte ranges `(offset, length)` libext2fs wrote since the last call,
    /// sorted and merged: what must be written back for the metadata to be durable. `None`
    /// when there were too many to track: then only a sync of the whole device will do.
    pub fn take_device_writes(&mut self) -> Option<Vec<(u64, u64)>> {
        // SAFETY: open handle.
        match unsafe { crate::freed::device_writes_of(self.ptr()) } {
            Some(log) => log.take(),
            None => Some(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_merged_and_an_overflow_asks_for_everything() {
        let mut w = ByteRanges::default();
        w.note(4096, 4096);
        w.note(0, 4096);
        w.note(4096, 4096);
        w.note(1024, 1024);
        w.note(16384, 512);
        w.note(20000, 100);
        w.note(0, 0);
        // Bridges the last two, touching both.
        w.note(16896, 3104);
        assert_eq!(w.take(), Some(vec![(0, 8192), (16384, 3716)]));
        // Sequential writes stay one range, however many.
        for i in 0..2 * MAX_RANGES as u64 {
            w.note(i * 4096, 4096);
        }
        assert_eq!(w.take(), Some(vec![(0, 2 * MAX_RANGES as u64 * 4096)]));
        assert_eq!(w.take(), Some(vec![]));
        for i in 0..=MAX_RANGES as u64 {
            w.note(i * 8192, 4096);
        }
        assert_eq!(w.take(), None);
        w.note(0, 1);
        assert_eq!(
            w.take(),
            Some(vec![(0, 1)]),
            "tracking starts again after a take"
        );
    }
}
