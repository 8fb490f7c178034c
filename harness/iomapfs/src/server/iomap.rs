//! The FUSE iomap operations: the kernel asks where data lives and moves it itself.
//!
//! Every mapping handed out here is built from engine pieces, which are block-aligned and
//! cover the requested position, so the replies pass the kernel's validation (protocol doc
//! §7.1) by construction; debug builds check that with `fuse_wire::validate`.

use std::sync::atomic::Ordering;

use super::{Errno, Server};
use crate::engine::{self, Backing, Piece};
use crate::fault::Fault;
use ext2fs::Ino;
use fuse_wire::iomap::*;
use fuse_wire::structs::{
    IomapBeginIn, IomapBeginOut, IomapConfigIn, IomapConfigOut, IomapEndIn, IomapIo, IomapIoendIn,
    IomapIoendOut,
};

/// ext4 keeps timestamps from 1901 to 2446 when inodes have the extra time fields.
const EXT4_TIME_MIN: i64 = i32::MIN as i64;
const EXT4_TIME_MAX_EXTRA: i64 = 0x3_7fff_ffff;
const EXT4_TIME_MAX: i64 = i32::MAX as i64;

impl Server {
    fn io_of(&self, p: &Piece, flags: u16) -> IomapIo {
        let dev = self.backing_dev.load(Ordering::Relaxed);
        let (type_, addr, dev) = match p.backing {
            Backing::Hole => (
                FUSE_IOMAP_TYPE_HOLE,
                FUSE_IOMAP_NULL_ADDR,
                FUSE_IOMAP_DEV_NULL,
            ),
            Backing::Data { addr } => (FUSE_IOMAP_TYPE_MAPPED, addr, dev),
            Backing::Unwritten { addr } => (FUSE_IOMAP_TYPE_UNWRITTEN, addr, dev),
        };
        let flags = if p.backing == Backing::Hole { 0 } else { flags };
        IomapIo {
            offset: p.offset,
            length: p.len,
            addr,
            type_,
            flags,
            dev,
        }
    }

    pub(crate) fn iomap_config(&self, _arg: &IomapConfigIn) -> Result<IomapConfigOut, Errno> {
        let dev = {
            let transport = self.transport.get().ok_or(Errno(libc::EIO))?;
            use std::os::fd::AsRawFd;
            transport
                .backing_open(self.data.file().as_raw_fd())
                .map_err(|e| {
                    tracing::error!("cannot register the device for iomap: {e}");
                    Errno(e.raw_os_error().unwrap_or(libc::EIO))
                })?
        };
        self.backing_dev.store(dev, Ordering::Relaxed);
        let mut meta = self.meta();
        let fs = meta.fs()?;
        let info = fs.info();
        let mut out = IomapConfigOut {
            flags: FUSE_IOMAP_CONFIG_SID
                | FUSE_IOMAP_CONFIG_UUID
                | FUSE_IOMAP_CONFIG_BLOCKSIZE
                | FUSE_IOMAP_CONFIG_MAX_LINKS
                | FUSE_IOMAP_CONFIG_TIME
                | FUSE_IOMAP_CONFIG_MAXBYTES,
            s_uuid: info.uuid,
            s_uuid_len: 16,
            s_blocksize: info.block_size,
            s_max_links: 65000,
            s_time_gran: if info.inode_size > 128 {
                1
            } else {
                1_000_000_000
            },
            s_time_min: EXT4_TIME_MIN,
            s_time_max: if info.inode_size > 128 {
                EXT4_TIME_MAX_EXTRA
            } else {
                EXT4_TIME_MAX
            },
            s_maxbytes: info.max_file_size as i64,
            ..Default::default()
        };
        let label = if info.label.is_empty() {
            b"iomapfs".to_vec()
        } else {
            info.label.clone()
        };
        let n = label.len().min(out.s_id.len() - 1);
        out.s_id[..n].copy_from_slice(&label[..n]);
        tracing::info!(
            "iomap: device registered as backing id {dev}, block size {}",
            info.block_size
        );
        Ok(out)
    }

    pub(crate) fn iomap_begin(&self, ino: Ino, arg: &IomapBeginIn) -> Result<IomapBeginOut, Errno> {
        let op = arg.opflags;
        if arg.count == 0 || arg.pos.checked_add(arg.count).is_none() {
            return Err(Errno(libc::EINVAL));
        }
        let mut meta = self.meta();
        let mut inode = Self::regular(&mut meta, ino)?;
        let fs = meta.fs()?;
        let allocate = is_write_op(op) && op & FUSE_IOMAP_OP_ZERO == 0;
        let (pieces, fresh) = if allocate {
            if fs.read_only() {
                return Err(Errno(libc::EROFS));
            }
            if arg.pos + arg.count > self.max_file_size {
                return Err(Errno(libc::EFBIG));
            }
            // Only the first mapping is answered; allocate no further than it reaches.
            let before = engine::map(fs, ino, &inode, arg.pos, arg.count)?;
            let first = before.first().copied().ok_or(Errno(libc::EIO))?;
            if first.backing != Backing::Hole {
                (before, false)
            } else {
                if op & FUSE_IOMAP_OP_NOWAIT != 0 {
                    return Err(Errno(libc::EAGAIN));
                }
                let end = first.end().min(arg.pos + arg.count);
                let pieces = engine::begin_write(fs, ino, &mut inode, arg.pos, end - arg.pos)?;
                (pieces, true)
            }
        } else {
            (engine::map(fs, ino, &inode, arg.pos, arg.count)?, false)
        };
        let first = pieces.first().ok_or(Errno(libc::EIO))?;
        let mut flags = 0;
        if fresh {
            flags |= FUSE_IOMAP_F_NEW | FUSE_IOMAP_F_DIRTY;
        }
        if op & FUSE_IOMAP_OP_ATOMIC != 0 {
            flags |= FUSE_IOMAP_F_ATOMIC_BIO;
        }
        let mut read = self.io_of(first, flags);
        if self.fault() == Some(Fault::MapOffByOneBlock) && read.addr != FUSE_IOMAP_NULL_ADDR {
            read.addr += self.block_size as u64;
        }
        let out = IomapBeginOut {
            read,
            write: IomapIo {
                offset: read.offset,
                length: read.length,
                addr: FUSE_IOMAP_NULL_ADDR,
                type_: FUSE_IOMAP_TYPE_PURE_OVERWRITE,
                flags: 0,
                dev: FUSE_IOMAP_DEV_NULL,
            },
        };
        debug_assert_eq!(
            fuse_wire::validate::validate_begin_reply(arg, &out, self.block_size),
            Ok(()),
            "iomap_begin reply fails the kernel's rules"
        );
        Ok(out)
    }

    pub(crate) fn iomap_end(&self, ino: Ino, arg: &IomapEndIn) -> Result<(), Errno> {
        // As for BEGIN: the kernel never sends an empty or wrapping range; never trust it.
        let Some(range_end) = arg.pos.checked_add(arg.count).filter(|_| arg.count > 0) else {
            return Err(Errno(libc::EINVAL));
        };
        let written = arg.written.max(0) as u64;
        if written > arg.count {
            return Err(Errno(libc::EINVAL));
        }
        if !is_write_op(arg.opflags) {
            return Ok(());
        }
        // A write mapping past the largest file was never handed out (BEGIN: EFBIG); this
        // also keeps the block rounding below far from overflow.
        if range_end > self.max_file_size {
            return Err(Errno(libc::EFBIG));
        }
        let mut meta = self.meta();
        let mut inode = Self::regular(&mut meta, ino)?;
        let fs = meta.fs()?;
        let mut dirty = false;
        let lose_size = self.fault() == Some(Fault::LoseAppendSize);
        if arg.map.flags & FUSE_IOMAP_F_SIZE_CHANGED != 0 && written > 0 && !lose_size {
            let end = arg.pos + written;
            if end > inode.size() {
                inode.set_size(end);
                dirty = true;
            }
        }
        // A short write leaves blocks allocated for it past EOF unused: give them back.
        if written < arg.count && arg.opflags & FUSE_IOMAP_OP_ZERO == 0 {
            let bs = self.block_size as u64;
            let keep = inode.size().max(arg.pos + written).div_ceil(bs) * bs;
            let end = range_end.div_ceil(bs) * bs;
            if keep < end {
                let unused = engine::map(fs, ino, &inode, keep, end - keep)?;
                for p in unused
                    .iter()
                    .filter(|p| matches!(p.backing, Backing::Unwritten { .. }))
                {
                    fs.punch(ino, &mut inode, p.offset / bs, Some(p.end() / bs - 1))?;
                    dirty = true;
                }
            }
        }
        if dirty {
            fs.write_inode(ino, &inode)?;
        }
        Ok(())
    }

    pub(crate) fn iomap_ioend(&self, ino: Ino, arg: &IomapIoendIn) -> Result<IomapIoendOut, Errno> {
        if arg.error != 0 {
            tracing::warn!(
                ino,
                pos = arg.pos,
                "kernel reports a write error {}",
                arg.error
            );
            return Err(Errno(
                arg.error
                    .checked_neg()
                    .filter(|e| *e > 0)
                    .unwrap_or(libc::EIO),
            ));
        }
        if arg.flags & FUSE_IOMAP_IOEND_SHARED != 0 {
            // ext4 never hands out out-of-place (COW) mappings: the request contradicts
            // what we answered (not a corrupt filesystem, so not EUCLEAN).
            return Err(Errno(libc::EINVAL));
        }
        let mut meta = self.meta();
        let mut inode = Self::regular(&mut meta, ino)?;
        let fs = meta.fs()?;
        let end = arg
            .pos
            .checked_add(arg.written)
            .ok_or(Errno(libc::EINVAL))?;
        // The size goes in the same inode write as the conversion (see engine::end_write).
        let lose_size = self.fault() == Some(Fault::LoseAppendSize);
        let grows = arg.flags & FUSE_IOMAP_IOEND_APPEND != 0 && end > inode.size();
        if grows && !lose_size {
            inode.set_size(end);
        }
        let convert = self.fault() != Some(Fault::SkipUnwrittenConversion);
        let mut written = false;
        let converts = arg.written > 0 && arg.flags & FUSE_IOMAP_IOEND_UNWRITTEN != 0;
        // With the extents in their own blocks, the new size reaches the device first (as in
        // the classic write path): converted blocks past i_size would be an inconsistency.
        if grows && converts && inode.extent_depth().is_some_and(|d| d > 0) {
            fs.write_inode(ino, &inode)?;
            if let Some((offset, len)) = fs.inode_byte_range(ino) {
                self.data.sync_range(offset, len)?;
            }
        }
        if converts && convert {
            let pieces = engine::map(fs, ino, &inode, arg.pos, arg.written)?;
            written = engine::end_write(fs, ino, &mut inode, &pieces)?;
        }
        if !written {
            fs.write_inode(ino, &inode)?;
        }
        Ok(IomapIoendOut {
            newsize: inode.size(),
        })
    }

    /// FREEZE_FS: make everything durable; the kernel stops writes meanwhile.
    pub(crate) fn freeze(&self) -> Result<(), Errno> {
        self.sync()
    }

    /// SHUTDOWN_FS: persist what we can, then refuse further changes.
    pub(crate) fn shutdown_fs(&self) -> Result<(), Errno> {
        let _ = self.sync();
        self.shut_down.store(true, Ordering::Relaxed);
        Ok(())
    }
}
