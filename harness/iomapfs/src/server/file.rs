//! Regular files: open, read, write, truncate, fallocate, seek.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{LockResult, RwLockReadGuard, RwLockWriteGuard};

use ext2fs::{Ino, Inode};
use fuse_wire::consts::*;
use fuse_wire::request::Request;
use fuse_wire::structs::{CreateIn, EntryOut, IoctlIn, LseekOut, OpenOut, WriteOut};

use super::{Errno, Meta, Server};
use crate::attr::now;
use crate::engine::{self, Backing, Piece};

const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
const FALLOC_FL_ZERO_RANGE: u32 = 0x10;
const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;

impl Server {
    fn open_out(&self, ino: Ino) -> OpenOut {
        self.open_out_keeping(ino, true)
    }

    /// A new handle on `ino`; write errors are reported to it from now on (`wberr`).
    fn open_out_keeping(&self, ino: Ino, keep_cache: bool) -> OpenOut {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.wb.open(fh, ino);
        OpenOut {
            fh,
            // Only this server changes the filesystem, so cached pages stay valid (but see
            // `open`: atime, O_DIRECT writes).
            open_flags: if keep_cache { FOPEN_KEEP_CACHE } else { 0 },
            ..Default::default()
        }
    }

    /// RELEASE: the kernel closed the handle. If its open dropped the kernel's cached
    /// pages after an O_DIRECT write (see `open`), the drop is done: the kernel drops them
    /// before open(2) returns, so before any request on the handle. Opens may keep the
    /// cache again.
    pub(crate) fn release(&self, ino: Option<Ino>, fh: u64) {
        self.wb.release(fh);
        let Some(ino) = ino else { return };
        let mut direct_written = self.direct_written();
        if direct_written
            .get(&ino)
            .is_some_and(|opened| opened.contains(&fh))
        {
            direct_written.remove(&ino);
        }
    }

    /// FSYNC: `ino` is made durable (`sync_inode`), and the handle hears of a write error
    /// of its file it has not heard of yet, once (`wberr`). A failure the sync charged to
    /// no file is reported here directly.
    pub(crate) fn fsync(&self, ino: Ino, fh: u64) -> Result<(), Errno> {
        let (synced, charged) = self.sync_inode_charged(ino);
        match self.wb.check_and_advance(fh) {
            Some(Err(e)) => Err(e),
            Some(Ok(())) if charged => Ok(()),
            _ => synced,
        }
    }

    pub(super) fn regular(meta: &mut Meta, ino: Ino) -> Result<Inode, Errno> {
        let inode = meta.fs()?.read_inode(ino)?;
        match inode.mode() & libc::S_IFMT {
            libc::S_IFREG => Ok(inode),
            libc::S_IFDIR => Err(Errno(libc::EISDIR)),
            _ => Err(Errno(libc::EINVAL)),
        }
    }

    /// OPEN. `kill_setid`: the kernel asks the server to drop setuid/setgid for an O_TRUNC
    /// open by a caller (in that group) without CAP_FSETID (FUSE_HANDLE_KILLPRIV_V2).
    pub(crate) fn open(
        &self,
        ino: Ino,
        flags: u32,
        kill_setid: Option<u32>,
    ) -> Result<OpenOut, Errno> {
        let trunc = flags & libc::O_TRUNC as u32 != 0;
        let _data = trunc.then(|| self.data_lock(ino).write());
        let mut meta = self.meta();
        let mut inode = meta.fs()?.read_inode(ino)?;
        let writing = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
        if (writing || trunc) && meta.fs()?.read_only() {
            return Err(Errno(libc::EROFS));
        }
        let old_mode = inode.mode();
        let regular = old_mode & libc::S_IFMT == libc::S_IFREG;
        if let (true, true, Some(gid)) = (trunc, regular, kill_setid) {
            inode.set_mode(mode_without_setid(old_mode, inode.gid(), gid));
        }
        if trunc && regular && (inode.size() != 0 || inode.mode() != old_mode) {
            let t = now();
            inode.set_mtime(t);
            inode.set_ctime(t);
            self.truncate(&mut meta, ino, &mut inode, 0)?;
        }
        // Reads served from the page cache never reach us, so when the next read is due
        // to update atime, drop the cache at this open: that read then comes here.
        let atime_due = self.atime_due(&mut meta, &inode, false);
        // An O_DIRECT write bypasses the kernel's page cache. The kernel drops the cached
        // pages before sending it, but after an asynchronous one (AIO) it drops nothing
        // (fs/fuse/file.c: fuse_direct_IO returns -EIOCBQUEUED, and its completion
        // invalidates no pages), so pages a buffered read brought in meanwhile keep the
        // old bytes. Until the kernel has dropped them once since, every open drops them.
        let mut direct_written = self.direct_written();
        let stale = direct_written.contains_key(&ino);
        let out = self.open_out_keeping(ino, !atime_due && !stale);
        if let Some(opened) = direct_written.get_mut(&ino) {
            opened.insert(out.fh);
        }
        drop(direct_written);
        drop(meta);
        // The kernel refreshes only size and times after an O_TRUNC open.
        if inode.mode() != old_mode {
            self.invalidate_attrs(ino);
        }
        Ok(out)
    }

    pub(crate) fn create(
        &self,
        req: &Request<'_>,
        parent: Ino,
        name: &[u8],
        arg: &CreateIn,
    ) -> Result<(EntryOut, OpenOut), Errno> {
        let mut meta = self.meta();
        let mode = libc::S_IFREG | (arg.mode & 0o7777);
        let (ino, inode) =
            self.make_node(&mut meta, req, parent, Some(name), mode, arg.umask, 0)?;
        let entry = self.entry_out(&mut meta, ino, &inode);
        Ok((entry, self.open_out(ino)))
    }

    /// O_TMPFILE: an inode with no name, freed when the kernel forgets it unless linked.
    pub(crate) fn tmpfile(
        &self,
        req: &Request<'_>,
        parent: Ino,
        arg: &CreateIn,
    ) -> Result<(EntryOut, OpenOut), Errno> {
        let mut meta = self.meta();
        let mode = libc::S_IFREG | (arg.mode & 0o7777);
        let (ino, inode) = self.make_node(&mut meta, req, parent, None, mode, arg.umask, 0)?;
        meta.orphans.insert(ino);
        let entry = self.entry_out(&mut meta, ino, &inode);
        Ok((entry, self.open_out(ino)))
    }

    pub(crate) fn read(&self, ino: Ino, pos: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let _data = self.data_lock(ino).read();
        let (pieces, len) = self.read_pieces(ino, pos, size)?;
        let mut buf = crate::bufpool::take(len as usize);
        self.data.read(&pieces, pos, &mut buf)?;
        Ok(buf)
    }

    /// READ whose reply `send` sends while the inode's data lock is still held: the parts
    /// may point into the device mapping (the kernel copies them during `send`), and no
    /// truncate may free and hand out those blocks before it has.
    pub(crate) fn read_then<R>(
        &self,
        ino: Ino,
        pos: u64,
        size: u32,
        send: impl FnOnce(&[&[u8]]) -> R,
    ) -> Result<R, Errno> {
        let _data = self.data_lock(ino).read();
        let (pieces, len) = self.read_pieces(ino, pos, size)?;
        if let Some(parts) = self.data.mapped(&pieces, pos, len) {
            return Ok(send(&parts));
        }
        let mut buf = crate::bufpool::take(len as usize);
        self.data.read(&pieces, pos, &mut buf)?;
        let sent = send(&[&buf]);
        crate::bufpool::give(buf);
        Ok(sent)
    }

    /// The first half of a READ, under the inode's data lock: the pieces of the file to
    /// read and the length the reply has (shorter at EOF).
    fn read_pieces(&self, ino: Ino, pos: u64, size: u32) -> Result<(Vec<Piece>, u64), Errno> {
        // The kernel never asks for more than max_pages at once; a bigger request must not
        // make us allocate up to 4 GiB for its reply.
        if size > super::MAX_READ {
            return Err(Errno(libc::EINVAL));
        }
        let mut meta = self.meta();
        let mut inode = Self::regular(&mut meta, ino)?;
        self.touch_atime(&mut meta, ino, &mut inode, false)?;
        let file_size = inode.size();
        if pos >= file_size {
            return Ok((Vec::new(), 0));
        }
        let len = (file_size - pos).min(size as u64);
        Ok((engine::map(meta.fs()?, ino, &inode, pos, len)?, len))
    }

    /// WRITE of `data` at `pos`; `direct`: the file is open O_DIRECT (the bytes bypassed
    /// the kernel's page cache); `kill_setid`: the writer (in that group) lacks CAP_FSETID,
    /// and the kernel leaves dropping setuid/setgid to the server (FUSE_HANDLE_KILLPRIV_V2).
    pub(crate) fn write(
        &self,
        ino: Ino,
        pos: u64,
        data: &[u8],
        direct: bool,
        kill_setid: Option<u32>,
    ) -> Result<WriteOut, Errno> {
        let len = data.len() as u64;
        let end = pos.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        let bs = self.block_size as u64;
        let writeback = self.writeback_cache();
        // Writes of whole blocks share the inode's data lock, so that several (the
        // writeback cache's WRITEs of one file) wait for the device together; a truncate
        // still waits for them all. A write that shares a block with another (zero-padded
        // into an unwritten block), or must zero the old EOF block's tail, takes it alone.
        let mut alone = !pos.is_multiple_of(bs) || !end.is_multiple_of(bs);
        let (_data, pieces, old_size, old_blocks) = loop {
            let data = if alone {
                DataLock::Alone {
                    _guard: self.data_lock(ino).write(),
                }
            } else {
                DataLock::Shared {
                    _guard: self.data_lock(ino).read(),
                }
            };
            let mut meta = self.meta();
            let mut inode = Self::regular(&mut meta, ino)?;
            let fs = meta.writable()?;
            if end > self.max_file_size {
                return Err(Errno(libc::EFBIG));
            }
            if len == 0 {
                return Ok(WriteOut {
                    size: 0,
                    padding: 0,
                });
            }
            let old_size = inode.size();
            if !alone && pos > old_size && !old_size.is_multiple_of(bs) {
                alone = true;
                continue;
            }
            let old_blocks = inode.blocks_512();
            let pieces = engine::begin_write(fs, ino, &mut inode, pos, len)?;
            break (data, pieces, old_size, old_blocks);
        };
        if pos > old_size {
            self.zero_past_eof(ino, old_size)?;
        }
        self.wb.wrote(ino);
        self.data.write(ino, &pieces, pos, data)?;
        self.wb.wrote(ino);
        // The data must be on the device before a conversion can make it readable.
        self.data
            .sync_unwritten(&pieces, pos, end)
            .map_err(|e| self.range_sync_failed(ino, e))?;
        let mut meta = self.meta();
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(ino)?;
        let grows = end > inode.size();
        if grows {
            inode.set_size(end);
        }
        // With the writeback cache the kernel keeps the times (its write(2) set them) and
        // sends them by SETATTR, which a WRITE still in flight may follow: stamping the
        // WRITE's own time would overwrite the write(2)'s (fstests generic/003).
        if !writeback {
            let t = now();
            inode.set_mtime(t);
            inode.set_ctime(t);
        }
        // Converted blocks past i_size are an inconsistency e2fsck -p refuses to repair. With
        // the extents in the inode, size and conversion go in one inode write; with an
        // extent tree in its own blocks (written apart from the inode, in any order), the
        // new size must be on the device before the conversion is written.
        let converts = pieces
            .iter()
            .any(|p| matches!(p.backing, Backing::Unwritten { .. }));
        if grows && converts && inode.extent_depth().is_some_and(|d| d > 0) {
            fs.write_inode(ino, &inode)?;
            if let Some((offset, len)) = fs.inode_byte_range(ino) {
                self.data
                    .sync_range(offset, len)
                    .map_err(|e| self.range_sync_failed(ino, e))?;
            }
        }
        let old_mode = inode.mode();
        if let Some(gid) = kill_setid {
            inode.set_mode(mode_without_setid(old_mode, inode.gid(), gid));
        }
        if !engine::end_write(fs, ino, &mut inode, &pieces)? {
            fs.write_inode(ino, &inode)?;
        }
        if direct {
            // After the bytes are written: opens from now on drop what was cached, and
            // drops before this write prove nothing.
            self.direct_written().insert(ino, HashSet::new());
        }
        drop(meta);
        // The kernel refreshes only size and times after a write, and with the writeback
        // cache not even those: st_blocks would stay stale for the attribute timeout
        // (`du` of a file just written and synced showing nothing).
        let allocated = writeback && inode.blocks_512() != old_blocks;
        if inode.mode() != old_mode || allocated {
            self.invalidate_attrs(ino);
        }
        Ok(WriteOut {
            size: len as u32,
            padding: 0,
        })
    }

    /// Writes zeroes over `ino`'s bytes `[from, to)` that `pieces` back with data, as a
    /// write of `ino` (so a failure to write them back is reported to its handles).
    fn zero_data(
        &self,
        ino: Ino,
        pieces: &[engine::Piece],
        from: u64,
        to: u64,
    ) -> Result<(), Errno> {
        self.wb.wrote(ino);
        self.data.zero(ino, pieces, from, to)?;
        self.wb.wrote(ino);
        Ok(())
    }

    /// Zeroes the on-disk bytes of the EOF block past `size`, so growing the file never
    /// exposes stale bytes. Caller holds the inode's data lock alone.
    fn zero_past_eof(&self, ino: Ino, size: u64) -> Result<(), Errno> {
        let bs = self.block_size as u64;
        if size.is_multiple_of(bs) || !self.moves_data() {
            return Ok(());
        }
        let block_end = size.div_ceil(bs) * bs;
        let pieces = {
            let mut meta = self.meta();
            let fs = meta.fs()?;
            let inode = fs.read_inode(ino)?;
            engine::map(fs, ino, &inode, size, block_end - size)?
        };
        self.zero_data(ino, &pieces, size, block_end)?;
        Ok(())
    }

    /// Sets the size, freeing blocks past it and zeroing the tail of the new last block,
    /// and writes `inode` (with whatever else the caller changed in it). Caller holds the
    /// inode's data lock exclusively.
    ///
    /// Shrinking is ext4's orphan truncate: the inode goes on the orphan list, the new size
    /// is written, then the blocks past it are freed and the inode leaves the list. A
    /// failure before the size is written changes nothing; after it, the truncate counts as
    /// done, and blocks it could not free are freed by the next mount's orphan processing.
    pub(crate) fn truncate(
        &self,
        meta: &mut Meta,
        ino: Ino,
        inode: &mut Inode,
        size: u64,
    ) -> Result<(), Errno> {
        let fs = meta.writable()?;
        if size > self.max_file_size {
            return Err(Errno(libc::EFBIG));
        }
        let old = inode.size();
        let bs = self.block_size as u64;
        let frees = size < old && fs.next_data(ino, inode, size.div_ceil(bs))?.is_some();
        if frees {
            fs.orphan_add(ino)?;
        }
        // Growing: the old EOF block's tail is zero on disk already (the invariant); it is
        // zeroed again first in case. Shrinking: after the size, the new EOF block's tail.
        // In iomap mode the kernel zeroes partial blocks itself (ZERO mappings).
        if size > old {
            self.zero_tail(fs, ino, inode, old)?;
        }
        inode.set_size(size);
        if let Err(e) = fs.write_inode(ino, inode) {
            if frees {
                let _ = fs.orphan_del(ino);
            }
            return Err(e.into());
        }
        if size < old {
            self.zero_tail(fs, ino, inode, size)?;
        }
        if frees {
            if let Err(e) = engine::truncate_blocks(fs, ino, inode, size) {
                tracing::warn!(
                    ino,
                    "cannot free the blocks a truncate released ({e}); the next mount frees them"
                );
                return Ok(());
            }
            if let Err(e) = fs.orphan_del(ino) {
                tracing::warn!(ino, "a truncated inode stays on the orphan list: {e}");
            }
        }
        Ok(())
    }

    /// Zeroes the on-disk bytes of the block holding `at` from `at` to its end (classic
    /// mode: the server moves the data).
    fn zero_tail(&self, fs: &ext2fs::Fs, ino: Ino, inode: &Inode, at: u64) -> Result<(), Errno> {
        let bs = self.block_size as u64;
        if at.is_multiple_of(bs) || !self.moves_data() {
            return Ok(());
        }
        let block_end = at.div_ceil(bs) * bs;
        let pieces = engine::map(fs, ino, inode, at, block_end - at)?;
        self.zero_data(ino, &pieces, at, block_end)?;
        Ok(())
    }

    /// `caller`: the request's (uid, gid), for the setuid/setgid bits the change drops.
    pub(crate) fn fallocate(
        &self,
        ino: Ino,
        pos: u64,
        len: u64,
        mode: u32,
        caller: (u32, u32),
    ) -> Result<(), Errno> {
        let end = pos.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        if len == 0 {
            return Err(Errno(libc::EINVAL));
        }
        if mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let punch = mode & FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & FALLOC_FL_ZERO_RANGE != 0;
        if punch && (zero || mode & FALLOC_FL_KEEP_SIZE == 0) {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0 || punch;
        let bs = self.block_size as u64;
        let _data = self.data_lock(ino).write();
        let mut meta = self.meta();
        let mut inode = Self::regular(&mut meta, ino)?;
        // Like ext4: without extents there is no unwritten state to preallocate with.
        if !inode.uses_extents() {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        let fs = meta.writable()?;
        if end > self.max_file_size {
            return Err(Errno(libc::EFBIG));
        }
        let old_size = inode.size();
        // Whole blocks inside the range, and the partial blocks at its edges.
        let (full_first, full_end) = (pos.div_ceil(bs), end / bs);
        if punch || zero {
            let pieces = engine::map(fs, ino, &inode, pos, len)?;
            let (head_end, tail_start) = if full_first < full_end {
                (full_first * bs, full_end * bs)
            } else {
                (end, end)
            };
            if self.moves_data() {
                self.zero_data(ino, &pieces, pos, head_end.min(end))?;
                self.zero_data(ino, &pieces, tail_start.max(pos), end)?;
            }
            if full_first < full_end {
                fs.punch(ino, &mut inode, full_first, Some(full_end - 1))?;
                if zero {
                    engine::begin_write(
                        fs,
                        ino,
                        &mut inode,
                        full_first * bs,
                        (full_end - full_first) * bs,
                    )?;
                }
            }
        } else {
            if pos > old_size && !keep_size {
                drop(meta);
                self.zero_past_eof(ino, old_size)?;
                meta = self.meta();
            }
            engine::begin_write(meta.fs()?, ino, &mut inode, pos, len)?;
        }
        if !keep_size && end > old_size {
            inode.set_size(end);
        }
        let t = now();
        inode.set_ctime(t);
        if punch || zero || !keep_size {
            inode.set_mtime(t);
        }
        let old_mode = inode.mode();
        inode.set_mode(mode_after_data_change(old_mode, inode.gid(), caller));
        meta.fs()?.write_inode(ino, &inode)?;
        drop(meta);
        // The kernel refreshes only size and times after a fallocate.
        if inode.mode() != old_mode {
            self.invalidate_attrs(ino);
        }
        Ok(())
    }

    pub(crate) fn lseek(&self, ino: Ino, pos: u64, whence: u32) -> Result<LseekOut, Errno> {
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return Err(Errno(libc::EINVAL));
        }
        // The kernel asks without writing back its dirty pages first (fs/fuse/file.c
        // fuse_lseek): data just written would look like a hole, and `cp` would copy
        // zeroes for it. Before any lock: the WRITEs this causes take them.
        self.write_back_kernel_pages(ino, pos);
        let _data = self.data_lock(ino).read();
        let mut meta = self.meta();
        let inode = Self::regular(&mut meta, ino)?;
        let size = inode.size();
        if pos >= size {
            return Err(Errno(libc::ENXIO));
        }
        let pieces = engine::map(meta.fs()?, ino, &inode, pos, size - pos)?;
        // Unwritten extents read as zeroes: like ext4 without cached pages, they are holes.
        let is_data = |b: &Backing| matches!(b, Backing::Data { .. });
        let found = pieces
            .iter()
            .find(|p| p.end() > pos && is_data(&p.backing) == (whence == SEEK_DATA))
            .map(|p| p.offset.max(pos));
        let offset = match (found, whence) {
            (Some(off), _) => off.min(size),
            (None, SEEK_HOLE) => size,
            (None, _) => return Err(Errno(libc::ENXIO)),
        };
        if whence == SEEK_DATA && offset >= size {
            return Err(Errno(libc::ENXIO));
        }
        Ok(LseekOut { offset })
    }

    /// FUSE_IOCTL: only FS_IOC_GETVERSION, the inode generation (as ext4 answers it). The
    /// kernel sends file ioctls "restricted": the argument's size comes from the command
    /// number, so the reply is the 8-byte `long` (returned here) right after `fuse_ioctl_out`.
    pub(crate) fn ioctl(&self, ino: Ino, arg: &IoctlIn) -> Result<u64, Errno> {
        const FS_IOC_GETVERSION: u32 = 0x8008_7601; // _IOR('v', 1, long)
        if arg.cmd != FS_IOC_GETVERSION || arg.flags & FUSE_IOCTL_UNRESTRICTED != 0 {
            return Err(Errno(libc::ENOTTY));
        }
        if (arg.out_size as usize) < std::mem::size_of::<u64>() {
            return Err(Errno(libc::EINVAL));
        }
        let mut meta = self.meta();
        let generation = meta.fs()?.read_inode(ino)?.generation();
        Ok(u64::from(generation))
    }
}

/// An inode's data lock (`Server::data_lock`), held shared or alone.
enum DataLock<'a> {
    Shared {
        _guard: LockResult<RwLockReadGuard<'a, ()>>,
    },
    Alone {
        _guard: LockResult<RwLockWriteGuard<'a, ()>>,
    },
}

/// The mode a data change (fallocate) by `caller` (uid, gid) leaves, by the rule the kernel
/// applies for local filesystems (`file_remove_privs`): setuid goes, and setgid goes when it
/// marks a group-executable file or the caller is not in the file's group. The 6.12 FUSE
/// client applies only the group-executable half itself, so the server completes it. The
/// server sees neither capabilities nor supplementary groups: uid 0 stands for CAP_FSETID
/// and only the caller's own gid counts as membership (the safe direction: more setgid
/// bits dropped, never fewer).
pub(crate) fn mode_after_data_change(mode: u32, file_gid: u32, (uid, gid): (u32, u32)) -> u32 {
    if uid == 0 {
        return mode;
    }
    mode_without_setid(mode, file_gid, gid)
}

/// The mode once a caller without CAP_FSETID (in group `caller_gid`) changed the file's
/// data: setuid goes, and setgid goes when it marks a group-executable file or the caller
/// is not in the file's group (`setattr_should_drop_suidgid`).
pub(crate) fn mode_without_setid(mode: u32, file_gid: u32, caller_gid: u32) -> u32 {
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 || caller_gid != file_gid {
        mode &= !libc::S_ISGID;
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::mode_after_data_change;

    #[test]
    fn a_data_change_drops_setuid_and_setgid_as_the_kernel_does_for_ext4() {
        let (root, member, outsider) = ((0, 0), (1000, 50), (1000, 60));
        // generic/683-685: a non-executable 6666 file by a user outside its group.
        assert_eq!(mode_after_data_change(0o106666, 50, outsider), 0o100666);
        // In its group: setgid without group-exec stays (it is not a privilege there).
        assert_eq!(mode_after_data_change(0o106666, 50, member), 0o102666);
        // Group-executable: setgid goes for everyone without CAP_FSETID.
        assert_eq!(mode_after_data_change(0o106676, 50, member), 0o100676);
        // Root keeps both; a file without the bits is left alone.
        assert_eq!(mode_after_data_change(0o106777, 50, root), 0o106777);
        assert_eq!(mode_after_data_change(0o100777, 50, outsider), 0o100777);
    }
}
