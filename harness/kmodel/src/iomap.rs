//! fs/iomap as fs/fuse drives it (protocol doc §7): every data path asks the server for a
//! mapping with IOMAP_BEGIN, validates it with the kernel's rules, moves the bytes to or
//! from the device itself, and sends IOMAP_END / IOMAP_IOEND exactly when fuse would.
//!
//! Modelled after fuse_iomap.c (v7) and fs/iomap: buffered I/O goes through a page cache
//! of dirty blocks (`crate::cache`) that writeback flushes with WRITEBACK mappings; direct
//! I/O moves data straight to the device and completes with one ioend; zeroing (EOF gaps,
//! truncate, punch) goes through ZERO mappings; FIEMAP and SEEK_DATA/SEEK_HOLE use REPORT.

use fuse_wire::iomap::*;
use fuse_wire::structs::{
    IomapBeginIn, IomapBeginOut, IomapEndIn, IomapIo, IomapIoendIn, IomapIoendOut,
};
use fuse_wire::validate::{validate_begin_reply_with, ValidateCtx};
use fuse_wire::Opcode;

use crate::error::{Error, Result};
use crate::kernel::{Kernel, NodeId};
use crate::wire::{begin_out_str, exact, io_str, ioend_flags_str, opflags_str, Request};

const ENOSYS: i32 = 38;
const EINVAL: i32 = 22;
const EFBIG: i32 = 27;
const EAGAIN: i32 = 11;
const EOPNOTSUPP: i32 = 95;

/// fallocate(2) modes the model knows.
pub const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
pub const FALLOC_FL_COLLAPSE_RANGE: u32 = 0x08;
pub const FALLOC_FL_ZERO_RANGE: u32 = 0x10;
pub const FALLOC_FL_INSERT_RANGE: u32 = 0x20;

/// `struct fiemap_extent` flags.
pub const FIEMAP_EXTENT_LAST: u32 = 0x1;
pub const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
pub const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
pub const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
pub const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
pub const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
pub const FIEMAP_EXTENT_MERGED: u32 = 0x1000;
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// Page size of the modelled machine; large folios are modelled as 64 KiB windows.
const PAGE: u64 = 4096;
const FOLIO: u64 = 64 << 10;

/// One extent as FIEMAP reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiemapExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// One BEGIN answer as iomap uses it.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub opflags: u32,
    pub pos: u64,
    pub count: u64,
    /// The reply as received.
    pub reply: IomapBeginOut,
    /// What iomap acts on: the write slot for an out-of-place write, else the read slot.
    pub iomap: IomapIo,
    /// Where old data comes from (iomap_iter_srcmap): the read slot of an out-of-place
    /// write unless it is a hole, else `iomap` itself.
    pub srcmap: IomapIo,
    /// Request and reply, for error messages.
    pub desc: String,
    /// The reply's position in the server's message stream (see `crate::device`).
    pub seq: u64,
}

impl Mapping {
    /// End of the range this iteration may process (trimmed to the source mapping too).
    pub fn end(&self) -> u64 {
        let end = self.iomap.offset + self.iomap.length;
        if self.srcmap != self.iomap {
            end.min(self.srcmap.offset + self.srcmap.length)
        } else {
            end
        }
    }

    fn violation(&self, rule: impl Into<String>) -> Error {
        Error::Violation {
            rule: rule.into(),
            request: self.desc.clone(),
            reply: begin_out_str(&self.reply),
        }
    }
}

/// A writeback ioend being built: logically and physically contiguous blocks of one kind.
#[derive(Debug, Clone, Copy)]
struct Ioend {
    pos: u64,
    len: u64,
    addr: u64,
    flags: u32,
}

fn round_down(x: u64, a: u64) -> u64 {
    x / a * a
}

fn round_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn is_space(type_: u16) -> bool {
    matches!(type_, FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN)
}

impl Kernel {
    // ---- the three upcalls -------------------------------------------------------------

    /// FUSE_IOMAP_BEGIN, with every §7.1 rule applied to the reply (post-v7 rule 6 too).
    /// Error replies come back as `Error::Errno`.
    pub fn iomap_begin(
        &mut self,
        node: NodeId,
        opflags: u32,
        pos: u64,
        count: u64,
    ) -> Result<Mapping> {
        if !self.conn.iomap {
            return Err(Error::Unsupported(
                "a data path on a classic FUSE connection (the model drives iomap only)".into(),
            ));
        }
        let attr_ino = self.inode(node)?.attr_ino;
        let arg = IomapBeginIn {
            opflags,
            reserved: 0,
            attr_ino,
            pos,
            count,
        };
        let req = Request::new(Opcode::IomapBegin, node)
            .arg(&arg)
            .describe(format!(
                "opflags {}, attr_ino {attr_ino}, pos {pos}, count {count}",
                opflags_str(opflags)
            ));
        let reply = self.call(&req)?;
        if reply.error != 0 {
            return Err(Error::Errno {
                request: req.summary(),
                errno: -reply.error,
            });
        }
        let Some(out) = exact::<IomapBeginOut>(&reply.payload) else {
            return Err(Error::Violation {
                rule: "§1.1: an IOMAP_BEGIN reply must be exactly 64 bytes".into(),
                request: req.summary(),
                reply: reply.summary(),
            });
        };
        let devices = [self.sb.dev];
        let ctx = ValidateCtx {
            blocksize: self.sb.blocksize,
            maxbytes: i64::try_from(self.sb.maxbytes).unwrap_or(i64::MAX),
            has_cache: false,
            devices: Some(&devices),
            post_v7: true,
        };
        validate_begin_reply_with(&arg, &out, &ctx).map_err(|e| Error::Violation {
            rule: format!(
                "§7.1: {e} (the kernel fails the I/O with {})",
                crate::error::errno_name(e.errno())
            ),
            request: req.summary(),
            reply: begin_out_str(&out),
        })?;
        let cow = is_write_op(opflags) && out.write.type_ != FUSE_IOMAP_TYPE_PURE_OVERWRITE;
        let iomap = if cow { out.write } else { out.read };
        let srcmap = if cow && out.read.type_ != FUSE_IOMAP_TYPE_HOLE {
            out.read
        } else {
            iomap
        };
        let m = Mapping {
            opflags,
            pos,
            count,
            reply: out,
            iomap,
            srcmap,
            desc: req.summary(),
            seq: reply.seq,
        };
        if (iomap.type_ == FUSE_IOMAP_TYPE_INLINE || srcmap.type_ == FUSE_IOMAP_TYPE_INLINE)
            && opflags & FUSE_IOMAP_OP_REPORT == 0
        {
            return Err(Error::Unsupported(format!(
                "INLINE mapping (inline data through FUSE_READ/FUSE_WRITE): {}",
                begin_out_str(&out)
            )));
        }
        Ok(m)
    }

    /// iomap's ->iomap_end: FUSE_IOMAP_END when fuse_should_send_iomap_end() says so (§7.4).
    fn iomap_end(
        &mut self,
        node: NodeId,
        m: &Mapping,
        count: u64,
        written: u64,
        size_changed: bool,
    ) -> Result<()> {
        let mut map = m.iomap;
        if size_changed {
            map.flags |= FUSE_IOMAP_F_SIZE_CHANGED;
        }
        if self.conn.no_end {
            return Ok(());
        }
        let wanted = map.flags & FUSE_IOMAP_F_WANT_IOMAP_END != 0;
        let send = wanted || (is_write_op(m.opflags) && (size_changed || written < count));
        if !send {
            return Ok(());
        }
        if written < count && is_write_op(m.opflags) {
            // The server gives back blocks allocated for the part not written.
            self.may_free(node);
        }
        let pos = m.pos;
        let arg = IomapEndIn {
            opflags: m.opflags,
            reserved: 0,
            attr_ino: self.inode(node)?.attr_ino,
            pos,
            count,
            written: written as i64,
            map,
        };
        let req = Request::new(Opcode::IomapEnd, node)
            .arg(&arg)
            .describe(format!(
                "opflags {}, pos {pos}, count {count}, written {written}, map {}",
                opflags_str(m.opflags),
                io_str(&map)
            ));
        let reply = self.call(&req)?;
        match -reply.error {
            0 if reply.payload.is_empty() => Ok(()),
            0 => Err(Error::Violation {
                rule: "§7.4: an IOMAP_END reply carries no payload".into(),
                request: req.summary(),
                reply: reply.summary(),
            }),
            ENOSYS => {
                self.conn.no_end = true;
                Ok(())
            }
            e => Err(Error::Errno {
                request: req.summary(),
                errno: e,
            }),
        }
    }

    /// fuse_iomap_ioend(): computes APPEND from i_disk_size, sends FUSE_IOMAP_IOEND when
    /// §7.5 says so, and on success stores the reply's newsize as i_disk_size.
    #[allow(clippy::too_many_arguments)]
    fn iomap_ioend(
        &mut self,
        node: NodeId,
        pos: u64,
        written: u64,
        error: i32,
        mut flags: u32,
        dev: u32,
        new_addr: u64,
    ) -> Result<()> {
        let inode = self.inode(node)?;
        let (attr_ino, disk_size) = (inode.attr_ino, inode.i_disk_size);
        if pos + written > disk_size {
            flags |= FUSE_IOMAP_IOEND_APPEND;
        }
        let mut newsize = disk_size.max(pos + written);
        let send = !self.conn.no_ioend
            && (error != 0
                || flags & FUSE_IOMAP_IOEND_SWAPOFF != 0
                || (written > 0
                    && flags
                        & (FUSE_IOMAP_IOEND_SHARED
                            | FUSE_IOMAP_IOEND_UNWRITTEN
                            | FUSE_IOMAP_IOEND_APPEND)
                        != 0));
        let mut error = error;
        let mut failed_req = String::new();
        if send {
            let arg = IomapIoendIn {
                flags,
                error,
                attr_ino,
                pos,
                new_addr,
                written,
                dev,
                pad: 0,
            };
            let req = Request::new(Opcode::IomapIoend, node).arg(&arg).describe(format!(
                "flags {}, error {error}, pos {pos}, written {written}, dev {dev}, new_addr {new_addr:#x}",
                ioend_flags_str(flags)
            ));
            let reply = self.call(&req)?;
            match -reply.error {
                0 => {
                    let out =
                        exact::<IomapIoendOut>(&reply.payload).ok_or_else(|| Error::Violation {
                            rule: "§1.1: an IOMAP_IOEND reply must be exactly 8 bytes".into(),
                            request: req.summary(),
                            reply: reply.summary(),
                        })?;
                    newsize = out.newsize;
                }
                ENOSYS => self.conn.no_ioend = true,
                e => {
                    if error == 0 {
                        error = -e;
                    }
                    failed_req = req.summary();
                }
            }
        }
        if error != 0 {
            return Err(Error::Errno {
                request: format!("write completion ({failed_req})"),
                errno: -error,
            });
        }
        let inode = self.inode_mut(node)?;
        inode.i_disk_size = newsize;
        inode.i_size = inode.i_size.max(pos + written);
        Ok(())
    }

    // ---- test hooks: one upcall at a time ----------------------------------------------

    /// One BEGIN, validated, returning the raw reply (targeted tests).
    pub fn begin_raw(
        &mut self,
        node: NodeId,
        opflags: u32,
        pos: u64,
        count: u64,
    ) -> Result<IomapBeginOut> {
        self.iomap_begin(node, opflags, pos, count).map(|m| m.reply)
    }

    /// One IOEND exactly as given (targeted tests); returns the reply.
    pub fn ioend_raw(&mut self, node: NodeId, arg: IomapIoendIn) -> Result<IomapIoendOut> {
        let req = Request::new(Opcode::IomapIoend, node).arg(&arg);
        self.call_struct(&req)
    }

    /// One END exactly as given (targeted tests).
    pub fn end_raw(&mut self, node: NodeId, arg: IomapEndIn) -> Result<()> {
        let req = Request::new(Opcode::IomapEnd, node).arg(&arg);
        self.call_empty(&req)
    }

    /// One FUSE_WRITE of `data` at `pos`, as a kernel that does not treat the file as an
    /// iomap inode would send it (targeted tests); returns the count the server reports.
    pub fn fuse_write(&mut self, node: NodeId, pos: u64, data: &[u8]) -> Result<u32> {
        let fh = self.ensure_open(node)?;
        let arg = fuse_wire::structs::WriteIn {
            fh,
            offset: pos,
            size: data.len() as u32,
            ..Default::default()
        };
        let req = Request::new(Opcode::Write, node).arg(&arg).data(data);
        let out: fuse_wire::structs::WriteOut = self.call_struct(&req)?;
        Ok(out.size)
    }

    // ---- reads ---------------------------------------------------------------------------

    /// Buffered read (read_folio/readahead, opflags 0), clamped at i_size. Dirty blocks come
    /// from the page cache, the rest from the device through read mappings.
    pub fn read(&mut self, node: NodeId, pos: u64, len: u64) -> Result<Vec<u8>> {
        let bs = self.block_size();
        let size = self.inode(node)?.i_size;
        let end = pos.saturating_add(len).min(size);
        if pos >= end {
            return Ok(Vec::new());
        }
        let (first, last) = (round_down(pos, bs), round_up(end, bs));
        let mut buf = vec![0u8; (last - first) as usize];
        let mut cur = first;
        while cur < last {
            if let Some(data) = self.inode(node)?.dirty.get(cur) {
                buf[(cur - first) as usize..(cur - first + bs) as usize].copy_from_slice(data);
                cur += bs;
                continue;
            }
            let run_end = self.inode(node)?.dirty.first_in(cur, last).unwrap_or(last);
            let m = self.iomap_begin(node, 0, cur, run_end - cur)?;
            let to = m.end().min(run_end);
            let zero =
                m.iomap.type_ != FUSE_IOMAP_TYPE_MAPPED || m.iomap.flags & FUSE_IOMAP_F_NEW != 0;
            if !zero {
                let addr = m.iomap.addr + (cur - m.iomap.offset);
                let desc = format!("{} → {}", m.desc, io_str(&m.iomap));
                self.disk_read(
                    addr,
                    &mut buf[(cur - first) as usize..(to - first) as usize],
                    &desc,
                )?;
            }
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            cur = to;
        }
        Ok(buf[(pos - first) as usize..(end - first) as usize].to_vec())
    }

    /// O_DIRECT read (opflags DIRECT) of block-aligned `[pos, pos + len)`, after flushing
    /// dirty pages in the range; the result is clamped at i_size.
    pub fn read_direct(&mut self, node: NodeId, pos: u64, len: u64) -> Result<Vec<u8>> {
        self.require_aligned(pos, len, "direct read")?;
        let size = self.inode(node)?.i_size;
        if pos >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = pos + len;
        self.writeback_range(node, pos, end)?;
        let mut buf = vec![0u8; len as usize];
        let mut cur = pos;
        while cur < end {
            let m = self.iomap_begin(node, FUSE_IOMAP_OP_DIRECT, cur, end - cur)?;
            let to = m.end().min(end);
            match m.iomap.type_ {
                FUSE_IOMAP_TYPE_MAPPED => {
                    let addr = m.iomap.addr + (cur - m.iomap.offset);
                    let desc = format!("{} → {}", m.desc, io_str(&m.iomap));
                    self.disk_read(
                        addr,
                        &mut buf[(cur - pos) as usize..(to - pos) as usize],
                        &desc,
                    )?;
                }
                FUSE_IOMAP_TYPE_HOLE | FUSE_IOMAP_TYPE_UNWRITTEN => {} // zero-filled
                _ => {
                    return Err(m.violation(
                        "iomap_dio_iter: a DELALLOC mapping for a direct read fails with EIO",
                    ))
                }
            }
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            cur = to;
        }
        buf.truncate((size.min(end) - pos) as usize);
        Ok(buf)
    }

    fn require_aligned(&self, pos: u64, len: u64, what: &str) -> Result<()> {
        let bs = self.block_size();
        if !pos.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(Error::Unsupported(format!(
                "{what} of [{pos}, +{len}) is not aligned to the block size {bs}"
            )));
        }
        Ok(())
    }

    // ---- buffered writes -----------------------------------------------------------------

    /// Buffered write at `pos`; returns the bytes written.
    pub fn write(&mut self, node: NodeId, pos: u64, data: &[u8]) -> Result<u64> {
        self.buffered_write(node, Some(pos), data)
    }

    /// O_APPEND buffered write: the position is i_size, taken under the inode lock.
    /// Returns the position written at.
    pub fn append(&mut self, node: NodeId, data: &[u8]) -> Result<u64> {
        let pos = self.inode(node)?.i_size;
        self.buffered_write(node, Some(pos), data)?;
        Ok(pos)
    }

    /// generic_write_checks: EFBIG at or past s_maxbytes, else the count is cut to fit.
    fn write_limit(&self, pos: u64, len: u64, what: &str) -> Result<u64> {
        if pos >= self.sb.maxbytes {
            return Err(Error::Errno {
                request: format!("{what} at {pos} (s_maxbytes {})", self.sb.maxbytes),
                errno: EFBIG,
            });
        }
        Ok(len.min(self.sb.maxbytes - pos))
    }

    /// fuse_iomap_write_checks: a write starting past EOF first zeroes [i_size, pos).
    fn zero_eof_gap(&mut self, node: NodeId, pos: u64) -> Result<()> {
        let size = self.inode(node)?.i_size;
        if pos > size {
            self.zero_range(node, size, pos - size)?;
        }
        Ok(())
    }

    fn buffered_write(&mut self, node: NodeId, pos: Option<u64>, data: &[u8]) -> Result<u64> {
        let pos = match pos {
            Some(p) => p,
            None => self.inode(node)?.i_size,
        };
        if data.is_empty() {
            return Ok(0);
        }
        let len = self.write_limit(pos, data.len() as u64, "buffered write")?;
        self.zero_eof_gap(node, pos)?;
        let bs = self.block_size();
        let end = pos + len;
        let mut cur = pos;
        while cur < end {
            let m = match self.iomap_begin(node, FUSE_IOMAP_OP_WRITE, cur, end - cur) {
                Ok(m) => m,
                // A failure after some progress is a short write, as write(2) reports it.
                Err(e) if cur > pos && e.errno().is_some() => break,
                Err(e) => return Err(e),
            };
            self.check_write_target(&m, false)?;
            let to = m.end().min(end);
            let mut b = round_down(cur, bs);
            while b < to {
                let mut block = self.block_for_rmw(node, &m, b)?;
                let (from, upto) = (b.max(cur), (b + bs).min(to));
                block[(from - b) as usize..(upto - b) as usize]
                    .copy_from_slice(&data[(from - pos) as usize..(upto - pos) as usize]);
                self.inode_mut(node)?.dirty.insert(b, block);
                b += bs;
            }
            // iomap_write_iter: extending i_size marks the mapping SIZE_CHANGED.
            let inode = self.inode_mut(node)?;
            let size_changed = to > inode.i_size;
            if size_changed {
                inode.i_size = to;
            }
            self.iomap_end(node, &m, to - cur, to - cur, size_changed)?;
            cur = to;
        }
        Ok(cur - pos)
    }

    /// A write mapping must be somewhere data can go (§7.2).
    fn check_write_target(&self, m: &Mapping, direct: bool) -> Result<()> {
        match m.iomap.type_ {
            FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN => Ok(()),
            FUSE_IOMAP_TYPE_DELALLOC if !direct => Ok(()),
            FUSE_IOMAP_TYPE_HOLE if direct => {
                Err(m.violation("iomap_dio_iter: a direct write to a HOLE mapping WARNs and fails with EIO"))
            }
            FUSE_IOMAP_TYPE_HOLE => Err(m.violation(
                "§7.2: a WRITE into a HOLE must be allocated by the server (else writeback finds no space and drops the data)",
            )),
            _ => Err(m.violation(format!(
                "a {} mapping cannot take a {}write",
                crate::wire::type_str(m.iomap.type_),
                if direct { "direct " } else { "" }
            ))),
        }
    }

    /// The old contents of block `b` for a partial write (__iomap_write_begin): the dirty
    /// page, or zeroes when iomap_block_needs_zeroing(), or the device through srcmap.
    fn block_for_rmw(&self, node: NodeId, m: &Mapping, b: u64) -> Result<Vec<u8>> {
        let inode = self.inode(node)?;
        if let Some(data) = inode.dirty.get(b) {
            return Ok(data.clone());
        }
        let bs = self.block_size();
        let mut block = vec![0u8; bs as usize];
        let needs_zeroing = m.srcmap.type_ != FUSE_IOMAP_TYPE_MAPPED
            || m.iomap.flags & FUSE_IOMAP_F_NEW != 0
            || b >= inode.i_size;
        if !needs_zeroing {
            let addr = m.srcmap.addr + (b - m.srcmap.offset);
            let desc = format!("{} → read-modify-write from {}", m.desc, io_str(&m.srcmap));
            self.disk_read(addr, &mut block, &desc)?;
        }
        Ok(block)
    }

    /// A write through a shared writable mmap within EOF: the fault reads the pages in
    /// (opflags 0), page_mkwrite maps them for writing (WRITE|FAULT, which allocates), and
    /// the stores dirty them.
    pub fn mmap_write(&mut self, node: NodeId, pos: u64, data: &[u8]) -> Result<()> {
        let bs = self.block_size();
        let size = self.inode(node)?.i_size;
        let end = pos + data.len() as u64;
        if end > size {
            return Err(Error::Unsupported(format!(
                "mmap store at [{pos}, {end}) beyond EOF {size} (SIGBUS)"
            )));
        }
        let page = PAGE.max(bs);
        let mut p = round_down(pos, page);
        while p < end {
            // The folio within EOF (folio_mkwrite_check_truncate), block aligned for I/O.
            let fend = (p + page).min(size);
            let io_end = round_up(fend, bs);
            let old = self.read(node, p, fend - p)?;
            let mut cur = p;
            while cur < fend {
                let m = self.iomap_begin(
                    node,
                    FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_FAULT,
                    cur,
                    fend - cur,
                )?;
                self.check_write_target(&m, false)?;
                let to = m.end().min(fend);
                self.iomap_end(node, &m, to - cur, to - cur, false)?;
                cur = to;
            }
            let mut b = p;
            while b < io_end {
                let mut block = vec![0u8; bs as usize];
                let have = ((fend.min(b + bs)).saturating_sub(b)) as usize;
                block[..have].copy_from_slice(&old[(b - p) as usize..(b - p) as usize + have]);
                let (from, upto) = (b.max(pos), (b + bs).min(end));
                if from < upto {
                    block[(from - b) as usize..(upto - b) as usize]
                        .copy_from_slice(&data[(from - pos) as usize..(upto - pos) as usize]);
                }
                self.inode_mut(node)?.dirty.insert(b, block);
                b += bs;
            }
            p += page;
        }
        Ok(())
    }

    // ---- zeroing ---------------------------------------------------------------------------

    /// iomap_zero_range (opflags ZERO): holes and clean unwritten blocks already read as
    /// zeroes and are skipped; written blocks and dirty pages are zeroed in the page cache.
    pub fn zero_range(&mut self, node: NodeId, pos: u64, len: u64) -> Result<()> {
        let bs = self.block_size();
        let end = pos + len;
        let mut cur = pos;
        while cur < end {
            let m = self.iomap_begin(node, FUSE_IOMAP_OP_ZERO, cur, end - cur)?;
            let to = m.end().min(end);
            // Written space is zeroed block by block; elsewhere only dirty pages need it
            // (a hole may be terabytes long).
            let blocks: Vec<u64> = if m.srcmap.type_ == FUSE_IOMAP_TYPE_MAPPED {
                (round_down(cur, bs)..to).step_by(bs as usize).collect()
            } else {
                self.inode(node)?.dirty.offsets_in(round_down(cur, bs), to)
            };
            for b in blocks {
                let mut block = self.block_for_rmw(node, &m, b)?;
                let (from, upto) = (b.max(cur), (b + bs).min(to));
                block[(from - b) as usize..(upto - b) as usize].fill(0);
                self.inode_mut(node)?.dirty.insert(b, block);
            }
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            cur = to;
        }
        Ok(())
    }

    // ---- writeback -----------------------------------------------------------------------

    /// Writes back every dirty block of the file (the flusher, fsync, sync).
    pub fn writeback(&mut self, node: NodeId) -> Result<()> {
        self.writeback_range(node, 0, u64::MAX)
    }

    /// iomap_writepages for the dirty blocks in `[start, end)`: WRITEBACK mappings (reused
    /// while they cover the next block), block writes with the post-EOF tail zeroed, then
    /// one ioend per contiguous run (WRITEBACK, plus UNWRITTEN/SHARED/APPEND), clamped at
    /// EOF, with the device id and the start sector as `new_addr` (§7.6).
    pub fn writeback_range(&mut self, node: NodeId, start: u64, end: u64) -> Result<()> {
        let bs = self.block_size();
        let offsets = self.inode(node)?.dirty.offsets_in(start, end);
        if offsets.is_empty() {
            return Ok(());
        }
        let size = self.inode(node)?.i_size;
        let mut wpc: Option<Mapping> = None;
        let mut ioends: Vec<Ioend> = Vec::new();
        let mut i = 0;
        while i < offsets.len() {
            let b = offsets[i];
            if b >= size {
                // Entirely past EOF (truncate in progress): dropped, not written.
                self.inode_mut(node)?.dirty.remove(b);
                i += 1;
                continue;
            }
            // The dirty run within this folio, as one writeback_range call.
            let folio_end = round_down(b, FOLIO) + FOLIO;
            let mut run_end = b + bs;
            while i + 1 < offsets.len()
                && offsets[i + 1] == run_end
                && run_end < folio_end
                && run_end < size
            {
                i += 1;
                run_end += bs;
            }
            let mut cur = b;
            while cur < run_end {
                let covered = wpc
                    .as_ref()
                    .is_some_and(|m| m.iomap.offset <= cur && cur < m.end());
                if !covered {
                    let m = self.iomap_begin(node, FUSE_IOMAP_OP_WRITEBACK, cur, run_end - cur)?;
                    match m.iomap.type_ {
                        FUSE_IOMAP_TYPE_MAPPED | FUSE_IOMAP_TYPE_UNWRITTEN => {}
                        FUSE_IOMAP_TYPE_HOLE | FUSE_IOMAP_TYPE_DELALLOC => {
                            return Err(m.violation(
                                "§7.2: a WRITEBACK mapping must give the on-disk location of dirty data; for a HOLE/DELALLOC the kernel skips the range and the data is lost",
                            ))
                        }
                        _ => return Err(m.violation("§7.2: an INLINE mapping for writeback is a protocol error (EIO)")),
                    }
                    wpc = Some(m);
                }
                let m = wpc.as_ref().expect("set above");
                let to = m.end().min(run_end);
                let mut flags = 0;
                if m.iomap.type_ == FUSE_IOMAP_TYPE_UNWRITTEN {
                    flags |= FUSE_IOMAP_IOEND_UNWRITTEN;
                }
                if m.iomap.flags & FUSE_IOMAP_F_SHARED != 0 {
                    flags |= FUSE_IOMAP_IOEND_SHARED;
                }
                let (map_off, map_addr, map_seq, desc) = (
                    m.iomap.offset,
                    m.iomap.addr,
                    m.seq,
                    format!("{} → {}", m.desc, io_str(&m.iomap)),
                );
                let mut blk = cur;
                while blk < to {
                    let mut data = self
                        .inode_mut(node)?
                        .dirty
                        .remove(blk)
                        .unwrap_or_else(|| vec![0; bs as usize]);
                    if blk + bs > size {
                        data[(size - blk) as usize..].fill(0); // iomap zeroes the folio past EOF
                    }
                    let addr = map_addr + (blk - map_off);
                    self.data_bio(node, blk, addr, &data, map_seq, &desc)?;
                    match ioends.last_mut() {
                        Some(last)
                            if last.pos + last.len == blk
                                && last.addr + last.len == addr
                                && last.flags == flags =>
                        {
                            last.len += bs
                        }
                        _ => ioends.push(Ioend {
                            pos: blk,
                            len: bs,
                            addr,
                            flags,
                        }),
                    }
                    blk += bs;
                }
                cur = to;
            }
            i += 1;
        }
        let dev = self.sb.dev;
        for io in ioends {
            let written = io.len.min(size.saturating_sub(io.pos));
            self.iomap_ioend(
                node,
                io.pos,
                written,
                0,
                FUSE_IOMAP_IOEND_WRITEBACK | io.flags,
                dev,
                io.addr / 512,
            )?;
        }
        Ok(())
    }

    // ---- direct writes ----------------------------------------------------------------

    /// O_DIRECT write of block-aligned data (opflags WRITE|DIRECT plus `extra`, e.g. NOWAIT
    /// or ATOMIC), completed by one ioend for the whole write.
    pub fn write_direct(&mut self, node: NodeId, pos: u64, data: &[u8], extra: u32) -> Result<u64> {
        let len = data.len() as u64;
        self.require_aligned(pos, len, "direct write")?;
        if len == 0 {
            return Ok(0);
        }
        if extra & FUSE_IOMAP_OP_ATOMIC != 0 && len != self.block_size() {
            return Err(Error::Errno {
                request: format!("RWF_ATOMIC write of {len} bytes (must be one block)"),
                errno: EINVAL,
            });
        }
        let len = self.write_limit(pos, len, "direct write")?;
        if pos > self.inode(node)?.i_size && extra & FUSE_IOMAP_OP_NOWAIT != 0 {
            return Err(Error::Errno {
                request: "NOWAIT direct write past EOF (needs zeroing)".into(),
                errno: EAGAIN,
            });
        }
        self.zero_eof_gap(node, pos)?;
        let end = pos + len;
        // kiocb_invalidate_pages: flush and drop the page cache over the range.
        self.writeback_range(node, pos, end)?;
        let opflags = FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT | extra;
        let mut ioend_flags = FUSE_IOMAP_IOEND_DIRECT;
        let mut cur = pos;
        while cur < end {
            let m = match self.iomap_begin(node, opflags, cur, end - cur) {
                Ok(m) => m,
                // iomap_dio_rw completes what was done and returns a short count.
                Err(e) if cur > pos && e.errno().is_some() => break,
                Err(e) => return Err(e),
            };
            self.check_write_target(&m, true)?;
            let to = m.end().min(end);
            if extra & FUSE_IOMAP_OP_ATOMIC != 0 && (cur != pos || to != end) {
                return Err(
                    m.violation("an atomic write must be covered by one mapping (iomap: EINVAL)")
                );
            }
            if m.iomap.type_ == FUSE_IOMAP_TYPE_UNWRITTEN {
                ioend_flags |= FUSE_IOMAP_IOEND_UNWRITTEN;
            }
            if m.iomap.flags & FUSE_IOMAP_F_SHARED != 0 {
                ioend_flags |= FUSE_IOMAP_IOEND_SHARED;
            }
            let addr = m.iomap.addr + (cur - m.iomap.offset);
            let desc = format!("{} → {}", m.desc, io_str(&m.iomap));
            self.data_bio(
                node,
                cur,
                addr,
                &data[(cur - pos) as usize..(to - pos) as usize],
                m.seq,
                &desc,
            )?;
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            cur = to;
        }
        let done = cur - pos;
        self.iomap_ioend(
            node,
            pos,
            done,
            0,
            ioend_flags,
            FUSE_IOMAP_DEV_NULL,
            FUSE_IOMAP_NULL_ADDR,
        )?;
        Ok(done)
    }

    // ---- size changes ------------------------------------------------------------------

    /// truncate/ftruncate (fuse_iomap_setsize_start, then SETATTR, then setsize_finish).
    pub fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        if size > self.sb.maxbytes {
            return Err(Error::Errno {
                request: format!("truncate to {size} (s_maxbytes {})", self.sb.maxbytes),
                errno: EFBIG,
            });
        }
        self.setsize_start(node, size)?;
        let attr = self.setattr_size(node, size)?;
        let inode = self.inode_mut(node)?;
        inode.attr = attr;
        inode.i_size = attr.size;
        inode.i_disk_size = attr.size;
        Ok(())
    }

    /// Zero what the size change would expose (or the rest of the new EOF block), set the
    /// in-core size, drop the page cache past it and write back the whole file.
    fn setsize_start(&mut self, node: NodeId, size: u64) -> Result<()> {
        let bs = self.block_size();
        let old = self.inode(node)?.i_size;
        if size > old {
            self.zero_range(node, old, size - old)?;
        } else if !size.is_multiple_of(bs) {
            self.zero_range(node, size, bs - size % bs)?; // iomap_truncate_page
        }
        // truncate_setsize
        let inode = self.inode_mut(node)?;
        inode.i_size = size;
        inode.dirty.drop_from(round_up(size, bs));
        if !size.is_multiple_of(bs) {
            if let Some(block) = inode.dirty.get_mut(round_down(size, bs)) {
                block[(size % bs) as usize..].fill(0);
            }
        }
        self.writeback(node)
    }

    /// fallocate(2) with the kernel's part around the FUSE_FALLOCATE upcall.
    pub fn fallocate(&mut self, node: NodeId, mode: u32, offset: u64, len: u64) -> Result<()> {
        let what = format!("fallocate(mode {mode:#x}, offset {offset}, len {len})");
        if len == 0 {
            return Err(Error::Errno {
                request: what,
                errno: EINVAL,
            });
        }
        if mode & FALLOC_FL_PUNCH_HOLE != 0 && mode & FALLOC_FL_KEEP_SIZE == 0 {
            return Err(Error::Errno {
                request: what,
                errno: EOPNOTSUPP,
            }); // vfs_fallocate
        }
        let end = offset.checked_add(len).filter(|&e| e <= self.sb.maxbytes);
        let Some(end) = end else {
            return Err(Error::Errno {
                request: what,
                errno: EFBIG,
            });
        };
        let fh = self.ensure_open(node)?;
        let bs = self.block_size();
        let size = self.inode(node)?.i_size;
        let newsize = if mode & FALLOC_FL_KEEP_SIZE == 0 && end > size {
            end
        } else {
            0
        };
        let unmaps = FALLOC_FL_PUNCH_HOLE
            | FALLOC_FL_ZERO_RANGE
            | FALLOC_FL_COLLAPSE_RANGE
            | FALLOC_FL_INSERT_RANGE;
        if mode & unmaps != 0 {
            // fuse_iomap_flush_unmap_range: flush and drop the page cache over the range.
            let r = PAGE.max(bs);
            self.writeback_range(node, round_down(offset, r), round_up(end, r))?;
        }
        let arg = fuse_wire::structs::FallocateIn {
            fh,
            offset,
            length: len,
            mode,
            padding: 0,
        };
        self.may_free(node);
        self.call_empty(&Request::new(Opcode::Fallocate, node).arg(&arg))?;
        // fuse_iomap_fallocate
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
            let isize = self.inode(node)?.i_size;
            if offset < isize {
                let l = len.min(isize - offset);
                self.zero_range(node, offset, l)?;
                if offset + l >= isize && !(offset + l).is_multiple_of(PAGE) {
                    self.writeback_range(node, round_down(offset + l, PAGE), u64::MAX)?;
                }
            }
        }
        if newsize != 0 {
            self.setsize_start(node, newsize)?;
            let inode = self.inode_mut(node)?;
            inode.i_disk_size = newsize;
            inode.i_size = inode.i_size.max(newsize);
        }
        Ok(())
    }

    // ---- reporting -----------------------------------------------------------------------

    /// FIEMAP over `[start, start + len)` (iomap_fiemap with REPORT mappings); holes are
    /// skipped, the last extent gets FIEMAP_EXTENT_LAST. `sync` = FIEMAP_FLAG_SYNC.
    pub fn fiemap(
        &mut self,
        node: NodeId,
        start: u64,
        len: u64,
        sync: bool,
    ) -> Result<Vec<FiemapExtent>> {
        if sync {
            self.writeback(node)?;
        }
        let len = len.min(self.sb.maxbytes.saturating_sub(start)); // fiemap_prep
        let end = start + len;
        let mut out: Vec<FiemapExtent> = Vec::new();
        let mut cur = start;
        while cur < end {
            let m = self.iomap_begin(node, FUSE_IOMAP_OP_REPORT, cur, end - cur)?;
            let to = m.end().min(end);
            let io = m.iomap;
            let mut flags = match io.type_ {
                FUSE_IOMAP_TYPE_HOLE => None,
                FUSE_IOMAP_TYPE_MAPPED => Some(0),
                FUSE_IOMAP_TYPE_UNWRITTEN => Some(FIEMAP_EXTENT_UNWRITTEN),
                FUSE_IOMAP_TYPE_DELALLOC => Some(FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN),
                _ => Some(FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED),
            };
            if let Some(f) = flags.as_mut() {
                if io.flags & FUSE_IOMAP_F_MERGED != 0 {
                    *f |= FIEMAP_EXTENT_MERGED;
                }
                if io.flags & FUSE_IOMAP_F_SHARED != 0 {
                    *f |= FIEMAP_EXTENT_SHARED;
                }
                let physical = if is_space(io.type_) { io.addr } else { 0 };
                out.push(FiemapExtent {
                    logical: io.offset,
                    physical,
                    length: io.length,
                    flags: *f,
                });
            }
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            cur = to;
        }
        if let Some(last) = out.last_mut() {
            last.flags |= FIEMAP_EXTENT_LAST;
        }
        Ok(out)
    }

    /// lseek(SEEK_DATA) (iomap_seek_data): `None` is ENXIO. Unwritten extents count as data
    /// only where the page cache holds (dirty) pages.
    pub fn seek_data(&mut self, node: NodeId, pos: u64) -> Result<Option<u64>> {
        self.seek(node, pos, true)
    }

    /// lseek(SEEK_HOLE) (iomap_seek_hole): `None` is ENXIO; EOF counts as a hole.
    pub fn seek_hole(&mut self, node: NodeId, pos: u64) -> Result<Option<u64>> {
        self.seek(node, pos, false)
    }

    fn seek(&mut self, node: NodeId, pos: u64, data: bool) -> Result<Option<u64>> {
        let bs = self.block_size();
        let size = self.inode(node)?.i_size;
        if pos >= size {
            return Ok(None);
        }
        let mut cur = pos;
        while cur < size {
            let m = self.iomap_begin(node, FUSE_IOMAP_OP_REPORT, cur, size - cur)?;
            let to = m.end().min(size);
            let found = match m.iomap.type_ {
                FUSE_IOMAP_TYPE_HOLE => (!data).then_some(cur),
                FUSE_IOMAP_TYPE_UNWRITTEN => {
                    // page_cache_seek_hole_data: cached (dirty) blocks are data, the rest
                    // of an unwritten range is a hole.
                    let dirty = self.inode(node)?.dirty.offsets_in(round_down(cur, bs), to);
                    if data {
                        dirty.first().map(|&b| b.max(cur))
                    } else {
                        let mut b = round_down(cur, bs);
                        for d in dirty {
                            if d != b {
                                break;
                            }
                            b += bs;
                        }
                        (b < to).then_some(b.max(cur))
                    }
                }
                _ => data.then_some(cur),
            };
            self.iomap_end(node, &m, to - cur, to - cur, false)?;
            if let Some(off) = found {
                return Ok(Some(off.min(size)));
            }
            cur = to;
        }
        Ok(if data { None } else { Some(size) })
    }

    // ---- swap --------------------------------------------------------------------------

    /// swapon (iomap_swapfile_activate with SWAPFILE|REPORT): every page of the file must be
    /// written, unshared space. Returns the number of pages. A refused activation ends the
    /// server's layout lease with an IOEND(SWAPOFF) carrying the error.
    pub fn swapon(&mut self, node: NodeId) -> Result<u64> {
        self.fsync(node)?;
        let len = round_down(self.inode(node)?.i_size, PAGE);
        let mut cur = 0;
        let mut refusal = None;
        while cur < len {
            let m = self.iomap_begin(
                node,
                FUSE_IOMAP_OP_SWAPFILE | FUSE_IOMAP_OP_REPORT,
                cur,
                len - cur,
            )?;
            let io = m.iomap;
            if io.type_ != FUSE_IOMAP_TYPE_MAPPED || io.flags & FUSE_IOMAP_F_SHARED != 0 {
                refusal = Some(format!(
                    "swapfile has a {} extent at {}",
                    crate::wire::type_str(io.type_),
                    io.offset
                ));
                break;
            }
            cur = m.end().min(len);
        }
        if let Some(why) = refusal {
            self.iomap_ioend(
                node,
                0,
                0,
                -EINVAL,
                FUSE_IOMAP_IOEND_SWAPOFF,
                FUSE_IOMAP_DEV_NULL,
                FUSE_IOMAP_NULL_ADDR,
            )
            .or_else(|e| {
                if e.errno() == Some(EINVAL) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
            return Err(Error::Errno {
                request: format!("swapon: {why}"),
                errno: EINVAL,
            });
        }
        Ok(len / PAGE)
    }

    /// swapoff: IOEND(SWAPOFF) with pos, written and error 0.
    pub fn swapoff(&mut self, node: NodeId) -> Result<()> {
        self.iomap_ioend(
            node,
            0,
            0,
            0,
            FUSE_IOMAP_IOEND_SWAPOFF,
            FUSE_IOMAP_DEV_NULL,
            FUSE_IOMAP_NULL_ADDR,
        )
    }
}
