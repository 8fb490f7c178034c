//! File data on the device, moved with pread/pwrite outside the metadata lock.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use ext2fs::{ByteRanges, Ino};

use crate::engine::{Backing, Piece};

/// Zeroes for padding partial blocks (ext4 blocks are at most 64 KiB).
static ZEROES: [u8; 65536] = [0; 65536];

/// Most parts a mapped READ reply is sent in (writev takes at most 1024).
const MAX_MAPPED_PARTS: usize = 512;

/// The server's own descriptor of the device, used only for file data.
pub struct DataDevice {
    file: File,
    block_size: u64,
    /// The whole device mapped read-only, when that worked.
    map: Option<Mapping>,
    /// Whether a sync of ranges works on `file` (`ranges_sync`); if not, every sync is
    /// a sync of the whole device.
    ranged_sync: bool,
    /// The device ranges each inode's data dirtied since it, or the whole device, was
    /// last synced: what an fsync of that inode must write back.
    unsynced: Mutex<Unsynced>,
    /// The ring `flush_cache` syncs a clean range through; `None` when io_uring is not
    /// available here (`kernel.io_uring_disabled`, seccomp), set up on first use.
    flush_ring: std::sync::OnceLock<Option<Mutex<FlushRing>>>,
}

/// An io_uring for one ranged fsync at a time, with the tag of the last one sent (a
/// completion left behind by an interrupted wait is told apart by it).
struct FlushRing {
    ring: io_uring::IoUring,
    tag: u64,
}

/// More inodes than this written between two syncs of the whole device are not tracked:
/// their fsyncs sync the whole device (`commit=` can space those syncs out a lot).
const MAX_UNSYNCED_INODES: usize = 1 << 16;

#[derive(Default)]
struct Unsynced {
    by_inode: HashMap<Ino, ByteRanges>,
    /// Too many inodes: only a sync of the whole device will do, until the next one.
    overflowed: bool,
}

/// A shared read-only mapping of the device: a READ reply can point into it, and the
/// kernel then copies the data once, from the device's page cache into the reader's
/// pages (pread then writev copy it twice).
struct Mapping {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the mapping is only read, by the kernel, through slices handed to writev.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File) -> Option<Mapping> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        use std::io::{Seek, SeekFrom};
        // A block device's metadata length is 0: its size is where a seek to the end lands
        // (data I/O is positioned, so the offset is not used otherwise).
        let len = (&*file).seek(SeekFrom::End(0)).ok()?;
        let len = std::num::NonZeroUsize::new(usize::try_from(len).ok()?)?;
        // SAFETY: a new shared read-only mapping of our own descriptor; it is only ever
        // read by the kernel (see `DataDevice::mapped`) and unmapped once, in `drop`.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                file,
                0,
            )
        };
        match ptr {
            Ok(ptr) => Some(Mapping {
                ptr,
                len: len.get(),
            }),
            Err(e) => {
                tracing::debug!("the device cannot be mapped ({e}): READ replies are copied");
                None
            }
        }
    }

    /// The device bytes `[addr, addr + len)`, if the mapping holds them.
    fn slice(&self, addr: u64, len: u64) -> Option<&[u8]> {
        let end = addr.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: within the mapping, which lives as long as `self`. The bytes may change
        // under a concurrent write (the device's page cache); callers only hand them to
        // the kernel to copy, and never read them here.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<u8>().add(addr as usize),
                len as usize,
            )
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length; no slice of it outlives the device.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

/// The file bytes `[pos, end)` as consecutive segments in file order: `(len, Some(device
/// address))` where written data backs them, `(len, None)` where they read as zeroes
/// (holes, unwritten pieces, ranges no piece covers). Overlapping data pieces would be a
/// corrupt mapping; each byte is still taken once.
fn segments(pieces: &[Piece], pos: u64, end: u64) -> Vec<(u64, Option<u64>)> {
    let mut data: Vec<(u64, u64, u64)> = pieces
        .iter()
        .filter_map(|p| match p.backing {
            Backing::Data { addr } => {
                let (from, to) = (p.offset.max(pos), p.end().min(end));
                (from < to).then_some((from, to, addr + (from - p.offset)))
            }
            _ => None,
        })
        .collect();
    data.sort_unstable_by_key(|&(from, ..)| from);
    let mut out = Vec::new();
    let mut done = pos;
    for (start, to, addr) in data {
        let from = start.max(done);
        if from >= to {
            continue;
        }
        if from > done {
            out.push((from - done, None));
        }
        out.push((to - from, Some(addr + (from - start))));
        done = to;
    }
    if end > done {
        out.push((end - done, None));
    }
    out
}

/// Whether `sync_file_range` and a ranged fsync act on `file` itself: on a block device,
/// and on an image file of a filesystem known to do them. Not through overlayfs, for one:
/// its file's page cache is empty (the bytes are in the file below), so a sync of ranges
/// writes nothing back.
fn ranges_sync(file: &File) -> bool {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    use std::os::unix::fs::FileTypeExt;
    if file
        .metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
    {
        return true;
    }
    fstatfs(file).is_ok_and(|fs| {
        [
            EXT4_SUPER_MAGIC,
            XFS_SUPER_MAGIC,
            BTRFS_SUPER_MAGIC,
            TMPFS_MAGIC,
        ]
        .contains(&fs.filesystem_type())
    })
}

impl DataDevice {
    pub fn new(file: File, block_size: u32) -> Self {
        let map = Mapping::new(&file);
        let ranged_sync = ranges_sync(&file);
        Self {
            file,
            block_size: block_size as u64,
            map,
            ranged_sync,
            unsynced: Mutex::default(),
            flush_ring: std::sync::OnceLock::new(),
        }
    }

    /// From now on until the next sync of the whole device, syncs of one inode sync the
    /// whole device: something they need (ranges taken by a sync that failed) is no longer
    /// tracked.
    pub fn need_full_sync(&self) {
        let mut unsynced = self.unsynced();
        unsynced.overflowed = true;
        unsynced.by_inode.clear();
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, Unsynced> {
        // Every change is one insert or remove: consistent whatever panicked.
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `ino`'s data went to the device ranges `wrote`.
    fn note(&self, ino: Ino, wrote: &[(u64, u64)]) {
        if wrote.is_empty() {
            return;
        }
        let mut unsynced = self.unsynced();
        if unsynced.overflowed {
            return;
        }
        if unsynced.by_inode.len() >= MAX_UNSYNCED_INODES && !unsynced.by_inode.contains_key(&ino) {
            unsynced.overflowed = true;
            unsynced.by_inode.clear();
            return;
        }
        let ranges = unsynced.by_inode.entry(ino).or_default();
        for &(addr, len) in wrote {
            ranges.note(addr, len);
        }
    }

    /// The file bytes `[pos, pos + len)` as parts of the device mapping and zeroes, for a
    /// reply the kernel copies (never read here: a device page that fails to read would
    /// be SIGBUS here, where the kernel's copy gets EFAULT). `None` without a mapping, or
    /// when a piece lies outside it (a corrupt mapping: `read` reports it), or when there
    /// are too many parts.
    pub fn mapped(&self, pieces: &[Piece], pos: u64, len: u64) -> Option<Vec<&[u8]>> {
        let map = self.map.as_ref()?;
        let mut parts = Vec::new();
        for (bytes, addr) in segments(pieces, pos, pos + len) {
            match addr {
                Some(addr) => parts.push(map.slice(addr, bytes)?),
                None => {
                    // The zero buffer as often as it takes.
                    let mut left = bytes;
                    while left > 0 {
                        let chunk = left.min(ZEROES.len() as u64);
                        parts.push(&ZEROES[..chunk as usize]);
                        left -= chunk;
                    }
                }
            }
        }
        (parts.len() <= MAX_MAPPED_PARTS).then_some(parts)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Fills `buf` with the file bytes `[pos, pos + buf.len())`; holes and unwritten
    /// pieces read as zeroes. Every byte of `buf` is written (it may hold old bytes).
    pub fn read(&self, pieces: &[Piece], pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut at = 0;
        for (bytes, addr) in segments(pieces, pos, pos + buf.len() as u64) {
            let dst = &mut buf[at..at + bytes as usize];
            match addr {
                Some(addr) => self.file.read_exact_at(dst, addr)?,
                None => dst.fill(0),
            }
            at += bytes as usize;
        }
        Ok(())
    }

    /// Writes `data` at `ino`'s file offset `pos`. Unwritten pieces are written in whole
    /// blocks, padded with zeroes, because converting them makes the whole block readable.
    pub fn write(&self, ino: Ino, pieces: &[Piece], pos: u64, data: &[u8]) -> io::Result<()> {
        let mut wrote = Vec::new();
        let result = self.write_pieces(pieces, pos, data, &mut wrote);
        self.note(ino, &wrote);
        result
    }

    /// `write`, noting each device range written in `wrote` (even if a later one fails).
    fn write_pieces(
        &self,
        pieces: &[Piece],
        pos: u64,
        data: &[u8],
        wrote: &mut Vec<(u64, u64)>,
    ) -> io::Result<()> {
        // Noted even when it fails: part of it may be in the page cache.
        let mut write_at = |buf: &[u8], addr: u64| {
            wrote.push((addr, buf.len() as u64));
            self.file.write_all_at(buf, addr)
        };
        let end = pos + data.len() as u64;
        let bs = self.block_size;
        for p in pieces {
            let (from, to) = (p.offset.max(pos), p.end().min(end));
            if from >= to {
                continue;
            }
            let src = &data[(from - pos) as usize..(to - pos) as usize];
            match p.backing {
                Backing::Data { addr } => write_at(src, addr + (from - p.offset))?,
                Backing::Unwritten { addr } => {
                    // The payload as it is, and zeroes only for the partial blocks at
                    // either end: no copy of the payload into a padded buffer.
                    let (b_from, b_to) = (from / bs * bs, to.div_ceil(bs) * bs);
                    let at = |off: u64| addr + (off - p.offset);
                    if b_from < from {
                        write_at(&ZEROES[..(from - b_from) as usize], at(b_from))?;
                    }
                    write_at(src, at(from))?;
                    if to < b_to {
                        write_at(&ZEROES[..(b_to - to) as usize], at(to))?;
                    }
                }
                Backing::Hole => {
                    return Err(io::Error::other(
                        "write into a hole that begin_write did not fill",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Writes zeroes over `ino`'s bytes `[from, to)` where they are backed by written data.
    pub fn zero(&self, ino: Ino, pieces: &[Piece], from: u64, to: u64) -> io::Result<()> {
        let mut wrote = Vec::new();
        let mut result = Ok(());
        for p in pieces {
            let Backing::Data { addr } = p.backing else {
                continue;
            };
            let (a, b) = (p.offset.max(from), p.end().min(to));
            if a < b {
                let zeros = vec![0u8; (b - a) as usize];
                let addr = addr + (a - p.offset);
                // Noted even when it fails: part of it may be in the page cache.
                wrote.push((addr, b - a));
                result = self.file.write_all_at(&zeros, addr);
                if result.is_err() {
                    break;
                }
            }
        }
        self.note(ino, &wrote);
        result
    }

    /// Waits until the blocks a write filled in unwritten pieces of `[pos, end)` are on
    /// the device (written and acknowledged, `sync_file_range`): only then may their
    /// conversion to written extents be written, or a crash could expose what the blocks
    /// held before (another file's deleted data). Overwrites of written data need no wait.
    /// The device cache is flushed by the next sync (fsync, commit, unmount).
    pub fn sync_unwritten(&self, pieces: &[Piece], pos: u64, end: u64) -> io::Result<()> {
        let bs = self.block_size;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for p in pieces {
            let Backing::Unwritten { addr } = p.backing else {
                continue;
            };
            let (from, to) = (p.offset.max(pos), p.end().min(end));
            if from >= to {
                continue;
            }
            // The whole blocks `write` wrote, padding included.
            let start = addr + (from / bs * bs - p.offset);
            let stop = addr + (to.div_ceil(bs) * bs - p.offset);
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = stop,
                _ => ranges.push((start, stop)),
            }
        }
        for (start, stop) in ranges {
            self.sync_range(start, stop - start)?;
        }
        Ok(())
    }

    /// Writes the device's dirty pages in `[start, start + len)` and waits for them (the
    /// device cache is flushed by the next sync). Metadata written through libext2fs shares
    /// the device's page cache, so this orders metadata writes too.
    pub fn sync_range(&self, start: u64, len: u64) -> io::Result<()> {
        self.sync_file_range(
            start,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    }

    fn sync_file_range(&self, start: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
        let (start, len) = (
            i64::try_from(start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        );
        // libc, not nix: nix has no sync_file_range.
        // SAFETY: plain syscall on our own descriptor.
        let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), start, len, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes everything written to the device durable.
    pub fn sync(&self) -> io::Result<()> {
        // Taken before the sync starts: a range noted later may be carried or not, and
        // stays noted.
        *self.unsynced() = Unsynced::default();
        self.file.sync_data()
    }

    /// Makes `ino`'s data and the device ranges `metadata` durable, and nothing else that
    /// is dirty: its ranges and `metadata` are written back and waited for, then the
    /// device's write cache is flushed. The whole device is synced instead when `metadata`
    /// is `None`, when more ranges or inodes were written than are kept, or when the
    /// device is an image file on a filesystem not known to sync ranges (`ranges_sync`).
    ///
    /// Like `fsync(2)`, every range is tried and the cache flushed even after an error,
    /// and the first error is returned; the next syncs are then of the whole device.
    pub fn sync_file(&self, ino: Ino, metadata: Option<Vec<(u64, u64)>>) -> io::Result<()> {
        let data = {
            let mut unsynced = self.unsynced();
            match unsynced.by_inode.remove(&ino) {
                _ if unsynced.overflowed || !self.ranged_sync => None,
                Some(mut ranges) => ranges.take(),
                None => Some(Vec::new()),
            }
        };
        let (Some(metadata), Some(data)) = (metadata, data) else {
            return self.sync();
        };
        let mut ranges = ByteRanges::default();
        for (addr, len) in metadata.into_iter().chain(data) {
            ranges.note(addr, len);
        }
        let Some(ranges) = ranges.take() else {
            return self.sync();
        };
        let mut first_error = None;
        // All write-backs are started before any is waited for.
        for &(addr, len) in &ranges {
            if let Err(e) = self.sync_file_range(addr, len, libc::SYNC_FILE_RANGE_WRITE) {
                first_error.get_or_insert(e);
            }
        }
        for &(addr, len) in &ranges {
            if let Err(e) = self.sync_range(addr, len) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.flush_cache() {
            first_error.get_or_insert(e);
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                self.need_full_sync();
                Err(e)
            }
        }
    }

    /// Flushes the device's write cache, writing back nothing else (`fdatasync` would:
    /// every dirty page of the device). Linux has no call for a flush alone, but a ranged
    /// fsync (`vfs_fsync_range`) writes back its range and then flushes: `blkdev_fsync`
    /// for a device, the filesystem's fsync for an image file. io_uring's IORING_OP_FSYNC
    /// takes a range: the first sector, which ext4 never uses (the boot sector), so it is
    /// clean and the flush is all that happens. Without io_uring, a write of that sector
    /// with its own bytes and RWF_DSYNC runs the same ranged fsync, after writing it.
    fn flush_cache(&self) -> io::Result<()> {
        let ring = self
            .flush_ring
            .get_or_init(|| match io_uring::IoUring::new(2) {
                Ok(ring) => Some(Mutex::new(FlushRing { ring, tag: 0 })),
                Err(e) => {
                    tracing::info!("no io_uring ({e}): fsync flushes by rewriting the boot sector");
                    None
                }
            });
        match ring {
            Some(ring) => ring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .fsync_first_sector(self.file.as_raw_fd()),
            None => self.rewrite_first_sector(),
        }
    }

    fn rewrite_first_sector(&self) -> io::Result<()> {
        let mut sector = [0u8; 512];
        self.file.read_exact_at(&mut sector, 0)?;
        let iov = libc::iovec {
            iov_base: sector.as_mut_ptr().cast(),
            iov_len: sector.len(),
        };
        // libc, not nix: nix has no pwritev2.
        // SAFETY: one iovec over our own buffer, on our own descriptor.
        let n = unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, 0, libc::RWF_DSYNC) };
        match n {
            512 => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
        }
    }
}

impl FlushRing {
    /// fdatasync of bytes 0..512 of `fd`, through the ring.
    fn fsync_first_sector(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        use io_uring::{opcode, types};
        self.tag += 1;
        let entry = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .offset(0)
            .len(512)
            .build()
            .user_data(self.tag);
        // SAFETY: the entry points at no memory; `fd` stays open until it completes (we
        // wait for it below, and the device outlives its ring).
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            for done in self.ring.completion() {
                if done.user_data() == self.tag {
                    return match done.result() {
                        r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
                        _ => Ok(()),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(bytes: usize) -> DataDevice {
        let f = tempfile::tempfile().unwrap();
        f.set_len(bytes as u64).unwrap();
        f.write_all_at(&vec![0xAA; bytes], 0).unwrap();
        DataDevice::new(f, 1024)
    }

    /// Both ways of flushing leave the device's bytes as they were, and the io_uring one
    /// can be used again (each completion is matched to its submission).
    #[test]
    fn the_cache_flush_changes_no_byte() {
        let dev = device(8192);
        for _ in 0..3 {
            dev.flush_cache().unwrap();
        }
        assert!(
            dev.flush_ring.get().is_some_and(Option::is_some) || !test_support::needs::in_ci(),
            "io_uring is available on the CI machines"
        );
        dev.rewrite_first_sector().unwrap();
        let mut back = vec![0; 8192];
        dev.file.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 0xAA));
    }

    /// An inode's fsync takes its own ranges and leaves the others'; past the inodes
    /// kept, fsyncs sync everything until a sync of the whole device starts afresh.
    #[test]
    fn unsynced_ranges_are_kept_per_inode_and_bounded() {
        let dev = device(64 * 1024);
        let data = |addr| Piece {
            offset: 0,
            len: 1024,
            backing: Backing::Data { addr },
        };
        let tracked = |dev: &DataDevice| {
            let u = dev.unsynced();
            let mut inos: Vec<Ino> = u.by_inode.keys().copied().collect();
            inos.sort_unstable();
            (inos, u.overflowed)
        };
        dev.write(12, &[data(4096)], 0, &[1; 1024]).unwrap();
        dev.zero(13, &[data(8192)], 0, 512).unwrap();
        assert_eq!(tracked(&dev), (vec![12, 13], false));
        dev.sync_file(12, Some(vec![(1024, 1024)])).unwrap();
        assert_eq!(tracked(&dev), (vec![13], false), "12's ranges were taken");
        dev.sync().unwrap();
        assert_eq!(tracked(&dev), (vec![], false));

        for ino in 0..=MAX_UNSYNCED_INODES as Ino {
            dev.note(ino + 100, &[(4096, 1024)]);
        }
        assert_eq!(tracked(&dev), (vec![], true));
        dev.note(7, &[(4096, 1024)]);
        assert_eq!(
            tracked(&dev),
            (vec![], true),
            "nothing is tracked once overflowed"
        );
        dev.sync_file(7, Some(vec![])).unwrap();
        assert_eq!(
            tracked(&dev),
            (vec![], false),
            "the whole device was synced"
        );
    }

    /// Ranges kept apart (each within the bound) that together pass it make a sync of
    /// the whole device, not of none of them.
    #[test]
    fn too_many_ranges_together_sync_the_whole_device() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 30).unwrap();
        let dev = DataDevice::new(f, 1024);
        dev.note(13, &[(0, 1024)]);
        // 40,000 data ranges and 30,000 metadata ranges, none touching: 70,000 in all,
        // past the 65,536 a set of ranges keeps.
        let data: Vec<(u64, u64)> = (0..40_000).map(|i| (i * 8192 + 4096, 1024)).collect();
        dev.note(12, &data);
        let metadata: Vec<(u64, u64)> = (0..30_000).map(|i| (i * 8192 + 6144, 512)).collect();
        dev.sync_file(12, Some(metadata)).unwrap();
        assert!(
            dev.unsynced().by_inode.is_empty(),
            "a sync of the whole device forgets every inode's ranges"
        );
    }

    #[test]
    fn reads_zero_for_holes_and_unwritten() {
        let dev = device(8192);
        let pieces = [
            Piece {
                offset: 0,
                len: 1024,
                backing: Backing::Data { addr: 4096 },
            },
            Piece {
                offset: 1024,
                len: 1024,
                backing: Backing::Hole,
            },
            Piece {
                offset: 2048,
                len: 1024,
                backing: Backing::Unwritten { addr: 5120 },
            },
        ];
        let mut buf = vec![1u8; 3000];
        dev.read(&pieces, 10, &mut buf).unwrap();
        assert!(buf[..1014].iter().all(|&b| b == 0xAA));
        assert!(buf[1014..].iter().all(|&b| b == 0));
    }

    #[test]
    fn every_byte_outside_data_is_zeroed_in_a_reused_buffer() {
        let dev = device(8192);
        dev.file.write_all_at(&[0xBB; 1024], 6144).unwrap();
        // Out of order, and a range no piece covers: the buffer holds old bytes (1s).
        let pieces = [
            Piece {
                offset: 3072,
                len: 1024,
                backing: Backing::Data { addr: 6144 },
            },
            Piece {
                offset: 0,
                len: 1024,
                backing: Backing::Hole,
            },
            Piece {
                offset: 1024,
                len: 1024,
                backing: Backing::Data { addr: 4096 },
            },
        ];
        let mut buf = vec![1u8; 3600];
        dev.read(&pieces, 500, &mut buf).unwrap();
        let at = |off: usize| off - 500;
        assert!(buf[..at(1024)].iter().all(|&b| b == 0), "hole");
        assert!(buf[at(1024)..at(2048)].iter().all(|&b| b == 0xAA), "data");
        assert!(buf[at(2048)..at(3072)].iter().all(|&b| b == 0), "uncovered");
        assert!(buf[at(3072)..at(4096)].iter().all(|&b| b == 0xBB), "data");
        assert!(buf[at(4096)..].iter().all(|&b| b == 0), "past the pieces");
    }

    #[test]
    fn mapped_parts_hold_what_read_reads() {
        let size = 256 * 1024;
        let f = tempfile::tempfile().unwrap();
        let pattern: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        f.write_all_at(&pattern, 0).unwrap();
        let dev = DataDevice::new(f, 1024);
        let piece = |offset: u64, len: u64, backing| Piece {
            offset,
            len,
            backing,
        };
        let layouts = [
            // Out of order, with a hole, an unwritten piece and a gap no piece covers.
            vec![
                piece(3072, 1024, Backing::Data { addr: 6144 }),
                piece(0, 1024, Backing::Hole),
                piece(1024, 1024, Backing::Data { addr: 4096 }),
                piece(4096, 1024, Backing::Unwritten { addr: 9216 }),
            ],
            // A hole longer than the zero buffer between two data pieces.
            vec![
                piece(0, 2048, Backing::Data { addr: 100 * 1024 }),
                piece(2048, 150 * 1024, Backing::Hole),
                piece(152 * 1024, 8192, Backing::Data { addr: 8192 }),
            ],
        ];
        for pieces in &layouts {
            for (pos, len) in [(0, 5000), (500, 3600), (1000, 160 * 1024), (7, 1)] {
                let mut want = vec![1u8; len as usize];
                dev.read(pieces, pos, &mut want).unwrap();
                let parts = dev.mapped(pieces, pos, len).expect("mapped");
                assert_eq!(parts.concat(), want, "{pieces:?} at {pos}+{len}");
            }
        }
        // A piece past the end of the device is left to `read`, which reports it.
        let outside = [piece(0, 4096, Backing::Data { addr: size as u64 })];
        assert!(dev.mapped(&outside, 0, 4096).is_none());
    }

    #[test]
    fn unwritten_writes_are_zero_padded_to_blocks() {
        let dev = device(8192);
        let pieces = [Piece {
            offset: 0,
            len: 2048,
            backing: Backing::Unwritten { addr: 2048 },
        }];
        dev.write(12, &pieces, 100, &[7u8; 1000]).unwrap();
        let mut raw = vec![0u8; 8192];
        dev.file.read_exact_at(&mut raw, 0).unwrap();
        assert!(
            raw[..2048].iter().all(|&b| b == 0xAA),
            "outside the mapping untouched"
        );
        assert!(raw[2048..2148].iter().all(|&b| b == 0), "head padding");
        assert!(raw[2148..3148].iter().all(|&b| b == 7), "payload");
        assert!(raw[3148..4096].iter().all(|&b| b == 0), "tail padding");
        assert!(
            raw[4096..].iter().all(|&b| b == 0xAA),
            "past the blocks untouched"
        );
    }

    #[test]
    fn written_data_is_patched_in_place() {
        let dev = device(8192);
        let pieces = [Piece {
            offset: 0,
            len: 1024,
            backing: Backing::Data { addr: 1024 },
        }];
        dev.write(12, &pieces, 10, &[5u8; 4]).unwrap();
        let mut raw = vec![0u8; 1024];
        dev.file.read_exact_at(&mut raw, 1024).unwrap();
        assert_eq!(&raw[8..16], &[0xAA, 0xAA, 5, 5, 5, 5, 0xAA, 0xAA]);
    }

    #[test]
    fn a_hole_in_a_write_is_an_error_not_a_panic() {
        let dev = device(4096);
        let pieces = [Piece {
            offset: 0,
            len: 1024,
            backing: Backing::Hole,
        }];
        assert!(dev.write(12, &pieces, 0, &[1u8; 10]).is_err());
    }
}
