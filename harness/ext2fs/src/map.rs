//! File block mapping: lookups (`map`, `next_data`, `next_hole`) and the write-path
//! primitives (`allocate_unwritten`, `mark_written`, `punch`).
//!
//! Extent-mapped files are walked with the libext2fs extent handle (one lookup, then leaf to
//! leaf); block-mapped (ext2/ext3) files with `ext2fs_bmap2` for short ranges and
//! `ext2fs_block_iterate3` (which skips holes) for long ones. Allocation and conversion are
//! done extent by extent, keeping a small reserve of free blocks so that an extent tree split
//! can never fail half-way for lack of space.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr;

use crate::error::{check, Error, Result};
use crate::fs::Fs;
use crate::inode::{Ino, Inode};
use crate::sys;

/// What a run of logical blocks maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// Not allocated: reads as zeros.
    Hole,
    /// Allocated and written, starting at physical block `pblk`.
    Mapped { pblk: u64 },
    /// Allocated but unwritten (reads as zeros), starting at physical block `pblk`.
    Unwritten { pblk: u64 },
}

/// A run of logical blocks `[lblk, lblk + len)` of a file (units: filesystem blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub lblk: u64,
    pub len: u64,
    pub kind: MapKind,
}

impl Mapping {
    /// One past the last logical block.
    pub fn end(&self) -> u64 {
        self.lblk + self.len
    }
}

/// Longest initialized / unwritten extent (ext4 on-disk encoding limits).
const EXT_INIT_MAX_LEN: u64 = 1 << 15;
const EXT_UNINIT_MAX_LEN: u64 = EXT_INIT_MAX_LEN - 1;
/// Extents address logical blocks below 2^32.
const EXTENT_LBLK_LIMIT: u64 = 1 << 32;
/// Below this many blocks, block-mapped ranges are looked up block by block.
const BMAP_PER_BLOCK_MAX: u64 = 1024;
const EXT3_EXT_MAGIC: u16 = sys::EXT3_EXT_MAGIC as u16;

/// Writes an extent tree root (depth 0) holding `extents` (lblk, len, pblk) into `i_block`.
pub(crate) fn init_extent_root(i_block: &mut [u32; 15], extents: &[(u32, u16, u64)]) {
    let mut bytes = [0u8; 60];
    let max_entries = (bytes.len() - 12) / 12;
    let n = extents.len().min(max_entries);
    bytes[0..2].copy_from_slice(&EXT3_EXT_MAGIC.to_le_bytes());
    bytes[2..4].copy_from_slice(&(n as u16).to_le_bytes());
    bytes[4..6].copy_from_slice(&(max_entries as u16).to_le_bytes());
    // eh_depth and eh_generation stay zero.
    for (i, &(lblk, len, pblk)) in extents[..n].iter().enumerate() {
        let e = &mut bytes[12 + 12 * i..24 + 12 * i];
        e[0..4].copy_from_slice(&lblk.to_le_bytes());
        e[4..6].copy_from_slice(&len.to_le_bytes());
        e[6..8].copy_from_slice(&((pblk >> 32) as u16).to_le_bytes());
        e[8..12].copy_from_slice(&(pblk as u32).to_le_bytes());
    }
    for (word, chunk) in i_block.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

/// One leaf extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ext {
    lblk: u64,
    len: u64,
    pblk: u64,
    uninit: bool,
}

impl Ext {
    fn end(&self) -> u64 {
        self.lblk + self.len
    }

    fn from_raw(e: &sys::ext2fs_extent) -> Ext {
        Ext {
            lblk: e.e_lblk,
            len: u64::from(e.e_len),
            pblk: e.e_pblk,
            uninit: e.e_flags & sys::EXT2_EXTENT_FLAGS_UNINIT != 0,
        }
    }

    fn to_raw(self) -> sys::ext2fs_extent {
        sys::ext2fs_extent {
            e_pblk: self.pblk,
            e_lblk: self.lblk,
            e_len: self.len as u32,
            e_flags: if self.uninit {
                sys::EXT2_EXTENT_FLAGS_UNINIT
            } else {
                0
            },
        }
    }
}

/// An open libext2fs extent handle on an inode we own (the handle edits it in place).
struct Handle<'a> {
    h: sys::ext2_extent_handle_t,
    inode: *mut sys::ext2_inode,
    _inode: PhantomData<&'a mut Inode>,
}

impl<'a> Handle<'a> {
    fn open(fs: &Fs, ino: Ino, inode: &'a mut Inode) -> Result<Handle<'a>> {
        let mut h: sys::ext2_extent_handle_t = ptr::null_mut();
        let inode = inode.as_mut_ptr();
        // SAFETY: `inode` outlives the handle ('a); the handle keeps a pointer to it.
        let rc = unsafe { sys::ext2fs_extent_open2(fs.ptr(), ino, inode, &mut h) };
        check(rc, format!("reading the extent tree of inode {ino}"))?;
        Ok(Handle {
            h,
            inode,
            _inode: PhantomData,
        })
    }

    /// Positions the handle at the leaf extent containing `lblk` (true), or near it (false).
    fn goto(&mut self, lblk: u64) -> Result<bool> {
        // SAFETY: open handle.
        match unsafe { sys::ext2fs_extent_goto2(self.h, 0, lblk) } {
            0 => Ok(true),
            rc if rc == i64::from(sys::EXT2_ET_EXTENT_NOT_FOUND) => Ok(false),
            rc => Err(Error::new(rc, "walking the extent tree")),
        }
    }

    /// One movement of the handle; `None` when there is nothing in that direction.
    fn get_raw(&mut self, op: u32) -> Result<Option<sys::ext2fs_extent>> {
        let mut e = sys::ext2fs_extent::default();
        // SAFETY: open handle; `e` receives the extent.
        let rc = unsafe { sys::ext2fs_extent_get(self.h, op as i32, &mut e) };
        let end_codes = [
            sys::EXT2_ET_EXTENT_NO_NEXT,
            sys::EXT2_ET_EXTENT_NO_PREV,
            sys::EXT2_ET_EXTENT_NO_UP,
            sys::EXT2_ET_NO_CURRENT_NODE,
        ];
        if end_codes.iter().any(|&c| rc == i64::from(c)) {
            return Ok(None);
        }
        check(rc, "reading the extent tree")?;
        Ok(Some(e))
    }

    /// The current leaf extent.
    fn current(&mut self) -> Result<Option<Ext>> {
        match self.get_raw(sys::EXT2_EXTENT_CURRENT)? {
            Some(e) if e.e_flags & sys::EXT2_EXTENT_FLAGS_LEAF != 0 => Ok(Some(Ext::from_raw(&e))),
            Some(_) => Err(Error::new(
                i64::from(sys::EXT2_ET_EXTENT_LEAF_BAD),
                "extent walk left the leaves",
            )),
            None => Ok(None),
        }
    }

    /// The first leaf extent ending after `lblk` (it may start after `lblk`).
    fn first_from(&mut self, lblk: u64) -> Result<Option<Ext>> {
        let found = self.goto(lblk)?;
        let Some(cur) = self.current()? else {
            return Ok(None);
        };
        if found || cur.end() > lblk {
            return Ok(Some(cur));
        }
        self.next_leaf()
    }

    /// Moves to the next leaf extent, crossing into the next leaf block when needed.
    ///
    /// libext2fs' own `EXT2_EXTENT_NEXT_LEAF`/`PREV_LEAF` depend on per-level "visited"
    /// marks that `ext2fs_extent_goto` does not set, so after a goto they can return the
    /// same leaf again. This walks with sibling/up/down moves only, which have no such state.
    fn next_leaf(&mut self) -> Result<Option<Ext>> {
        self.step(sys::EXT2_EXTENT_NEXT_SIB, sys::EXT2_EXTENT_DOWN)
    }

    /// Moves to the previous leaf extent (see `next_leaf`).
    fn prev_leaf(&mut self) -> Result<Option<Ext>> {
        self.step(sys::EXT2_EXTENT_PREV_SIB, sys::EXT2_EXTENT_DOWN_AND_LAST)
    }

    fn step(&mut self, sibling: u32, down: u32) -> Result<Option<Ext>> {
        // Climb until some level has a sibling in that direction.
        while self.get_raw(sibling)?.is_none() {
            if self.get_raw(sys::EXT2_EXTENT_UP)?.is_none() {
                return Ok(None);
            }
        }
        // Descend to the nearest leaf extent below it.
        loop {
            let Some(e) = self.get_raw(sys::EXT2_EXTENT_CURRENT)? else {
                return Ok(None);
            };
            if e.e_flags & sys::EXT2_EXTENT_FLAGS_LEAF != 0 {
                return Ok(Some(Ext::from_raw(&e)));
            }
            if self.get_raw(down)?.is_none() {
                return Err(Error::new(
                    i64::from(sys::EXT2_ET_EXTENT_INDEX_BAD),
                    "empty extent tree node",
                ));
            }
        }
    }

    fn replace(&mut self, e: Ext) -> Result<()> {
        let mut raw = e.to_raw();
        // SAFETY: open handle positioned at a leaf extent.
        check(
            unsafe { sys::ext2fs_extent_replace(self.h, 0, &mut raw) },
            "updating an extent",
        )
    }

    fn insert(&mut self, after: bool, e: Ext) -> Result<()> {
        let mut raw = e.to_raw();
        let flags = if after {
            sys::EXT2_EXTENT_INSERT_AFTER as i32
        } else {
            0
        };
        // SAFETY: open handle.
        check(
            unsafe { sys::ext2fs_extent_insert(self.h, flags, &mut raw) },
            "inserting an extent",
        )?;
        self.fix_parents()
    }

    fn delete(&mut self) -> Result<()> {
        // SAFETY: open handle positioned at a leaf extent.
        check(
            unsafe { sys::ext2fs_extent_delete(self.h, 0) },
            "deleting an extent",
        )?;
        self.fix_parents()
    }

    /// Propagates a changed first logical block up the index (no-op when nothing is current).
    fn fix_parents(&mut self) -> Result<()> {
        // SAFETY: open handle.
        let rc = unsafe { sys::ext2fs_extent_fix_parents(self.h) };
        if rc == i64::from(sys::EXT2_ET_NO_CURRENT_NODE) {
            return Ok(());
        }
        check(rc, "updating the extent index")
    }

    fn max_depth(&mut self) -> Result<u64> {
        let mut info = sys::ext2_extent_info::default();
        // SAFETY: open handle.
        check(
            unsafe { sys::ext2fs_extent_get_info(self.h, &mut info) },
            "reading the extent tree",
        )?;
        Ok(u64::try_from(info.max_depth).unwrap_or(0))
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        // SAFETY: frees the handle we opened (not the inode it points to).
        unsafe { sys::ext2fs_extent_free(self.h) };
    }
}

/// Appends `m`, merging it into the previous run when both are contiguous of the same kind.
fn push_run(out: &mut Vec<Mapping>, m: Mapping) {
    if m.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.end() == m.lblk {
            let merged = match (last.kind, m.kind) {
                (MapKind::Hole, MapKind::Hole) => true,
                (MapKind::Mapped { pblk: a }, MapKind::Mapped { pblk: b })
                | (MapKind::Unwritten { pblk: a }, MapKind::Unwritten { pblk: b }) => {
                    a + last.len == b
                }
                _ => false,
            };
            if merged {
                last.len += m.len;
                return;
            }
        }
    }
    out.push(m);
}

/// Runs `(lblk, pblk, len)` of a block-mapped file, merged while logically and physically
/// contiguous; memory grows with fragmentation, not with file size.
struct Runs {
    start: u64,
    end: u64,
    max_runs: usize,
    runs: Vec<(u64, u64, u64)>,
}

impl Runs {
    /// Adds one block; false when it would start a run beyond `max_runs`.
    fn add(&mut self, lblk: u64, pblk: u64) -> bool {
        if let Some(last) = self.runs.last_mut() {
            if last.0 + last.2 == lblk && last.1 + last.2 == pblk {
                last.2 += 1;
                return true;
            }
        }
        if self.runs.len() >= self.max_runs {
            return false;
        }
        self.runs.push((lblk, pblk, 1));
        true
    }
}

unsafe extern "C" fn collect_blocks(
    _fs: sys::ext2_filsys,
    blocknr: *mut sys::blk64_t,
    blockcnt: sys::e2_blkcnt_t,
    _ref_blk: sys::blk64_t,
    _ref_offset: i32,
    priv_data: *mut c_void,
) -> i32 {
    // SAFETY: `priv_data` is the `Runs` passed by `Fs::block_runs`, alive for the call.
    let r = unsafe { &mut *priv_data.cast::<Runs>() };
    let Ok(lblk) = u64::try_from(blockcnt) else {
        return 0;
    };
    if lblk >= r.end {
        return sys::BLOCK_ABORT as i32;
    }
    // SAFETY: libext2fs passes a valid pointer to the block number.
    if lblk >= r.start && !r.add(lblk, unsafe { *blocknr }) {
        return sys::BLOCK_ABORT as i32;
    }
    0
}

impl Fs {
    /// Refuses a mapping no file can have: outside the filesystem, over the system zone
    /// (superblocks, descriptors, bitmaps, inode tables, journal; ext4's block_validity),
    /// or, when the bitmaps are loaded, over blocks they mark free. So a corrupt extent can
    /// never make data or a metadata update land on metadata or on free space.
    pub(crate) fn check_pblk(&self, pblk: u64, len: u64, ino: Ino) -> Result<()> {
        let first = u64::from(self.sb().s_first_data_block);
        let end = pblk.checked_add(len);
        let bad = |why: &str| {
            Err(Error::new(
                i64::from(sys::EXT2_ET_EXTENT_LEAF_BAD),
                format!("inode {ino} maps blocks {pblk}+{len} {why}"),
            ))
        };
        if pblk < first || end.is_none_or(|e| e > self.blocks_count()) {
            return bad("outside the filesystem");
        }
        if self.zone.overlaps(pblk, len) {
            return bad(
                "over filesystem metadata (superblock, descriptors, bitmaps or inode table)",
            );
        }
        if !self.blocks_in_use(pblk, len) {
            return bad("that the block bitmap marks free");
        }
        Ok(())
    }

    /// Whether every block of the run is marked in use (true when bitmaps are not loaded).
    fn blocks_in_use(&self, pblk: u64, len: u64) -> bool {
        // SAFETY: open handle; block_map is null until ext2fs_read_bitmaps.
        let map = unsafe { (*self.ptr()).block_map };
        if map.is_null() || len == 0 {
            return true;
        }
        let mut out = 0u64;
        // SAFETY: a valid bitmap and an in-range run (checked by the caller).
        let rc = unsafe {
            sys::ext2fs_find_first_zero_generic_bmap(map, pblk, pblk + len - 1, &mut out)
        };
        rc != 0
    }

    /// Checks a single metadata block an inode points at (its xattr block).
    pub(crate) fn check_meta_block(&self, blk: u64, ino: Ino) -> Result<()> {
        self.check_pblk(blk, 1, ino).map_err(|e| {
            Error::new(
                i64::from(sys::EXT2_ET_BAD_EA_BLOCK_NUM),
                format!("inode {ino}: xattr block {blk} is invalid: {}", e.context()),
            )
        })
    }

    fn has_valid_blocks(&self, inode: &Inode) -> bool {
        let mut copy = *inode;
        // SAFETY: reads the inode copy only.
        unsafe { sys::ext2fs_inode_has_valid_blocks2(self.ptr(), copy.as_mut_ptr()) != 0 }
    }

    /// Mappings covering exactly `[lblk, lblk + len)`, in order, contiguous runs merged.
    ///
    /// For block-mapped files `inode` must be the current on-disk inode.
    pub fn map(&self, ino: Ino, inode: &Inode, lblk: u64, len: u64) -> Result<Vec<Mapping>> {
        let end = lblk
            .checked_add(len)
            .ok_or_else(|| Error::from_errno(libc::EINVAL, "mapping range overflows"))?;
        let mut out = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        if !self.has_valid_blocks(inode) {
            push_run(
                &mut out,
                Mapping {
                    lblk,
                    len,
                    kind: MapKind::Hole,
                },
            );
            return Ok(out);
        }
        if inode.raw.i_flags & sys::EXT4_INLINE_DATA_FL != 0 {
            return Err(Error::from_errno(
                libc::EOPNOTSUPP,
                format!("inode {ino} has inline data"),
            ));
        }
        let mut cursor = lblk;
        if inode.uses_extents() {
            let mut copy = *inode;
            let mut h = Handle::open(self, ino, &mut copy)?;
            let mut next = h.first_from(lblk)?;
            let mut prev_end = None;
            while let Some(e) = next {
                // Leaves must come in increasing, non-overlapping order; anything else is
                // corruption, and mapping it could hand out the same block twice.
                if prev_end.is_some_and(|p| e.lblk < p) {
                    return Err(extent_order_error(ino));
                }
                prev_end = Some(e.end());
                if e.lblk >= end {
                    break;
                }
                if e.len == 0 || e.end() <= cursor {
                    next = h.next_leaf()?;
                    continue;
                }
                self.check_pblk(e.pblk, e.len, ino)?;
                push_run(
                    &mut out,
                    Mapping {
                        lblk: cursor,
                        len: e.lblk.saturating_sub(cursor),
                        kind: MapKind::Hole,
                    },
                );
                let s = e.lblk.max(cursor);
                let t = e.end().min(end);
                let pblk = e.pblk + (s - e.lblk);
                let kind = if e.uninit {
                    MapKind::Unwritten { pblk }
                } else {
                    MapKind::Mapped { pblk }
                };
                push_run(
                    &mut out,
                    Mapping {
                        lblk: s,
                        len: t - s,
                        kind,
                    },
                );
                cursor = t;
                if cursor >= end {
                    break;
                }
                next = h.next_leaf()?;
            }
        } else {
            for (l, p, n) in self.block_runs(ino, inode, lblk, end, usize::MAX)? {
                push_run(
                    &mut out,
                    Mapping {
                        lblk: cursor,
                        len: l - cursor,
                        kind: MapKind::Hole,
                    },
                );
                push_run(
                    &mut out,
                    Mapping {
                        lblk: l,
                        len: n,
                        kind: MapKind::Mapped { pblk: p },
                    },
                );
                cursor = l + n;
            }
        }
        push_run(
            &mut out,
            Mapping {
                lblk: cursor,
                len: end - cursor,
                kind: MapKind::Hole,
            },
        );
        Ok(out)
    }

    /// Allocated runs `(lblk, pblk, len)` of a block-mapped file within `[start, end)`, in
    /// order, at most `max_runs` of them.
    fn block_runs(
        &self,
        ino: Ino,
        inode: &Inode,
        start: u64,
        end: u64,
        max_runs: usize,
    ) -> Result<Vec<(u64, u64, u64)>> {
        self.check_indirect_roots(ino, inode)?;
        let ppb = u64::from(self.block_size() / 4);
        let addressable = 12 + ppb + ppb * ppb + ppb * ppb * ppb;
        let end = end.min(addressable);
        let mut r = Runs {
            start,
            end,
            max_runs,
            runs: Vec::new(),
        };
        if start >= end {
            return Ok(r.runs);
        }
        if end - start <= BMAP_PER_BLOCK_MAX {
            let mut copy = *inode;
            for l in start..end {
                let mut pblk: sys::blk64_t = 0;
                // SAFETY: read-only lookup on our inode copy.
                let rc = unsafe {
                    sys::ext2fs_bmap2(
                        self.ptr(),
                        ino,
                        copy.as_mut_ptr(),
                        ptr::null_mut(),
                        0,
                        l,
                        ptr::null_mut(),
                        &mut pblk,
                    )
                };
                check(rc, format!("mapping block {l} of inode {ino}"))?;
                if pblk != 0 && !r.add(l, pblk) {
                    break;
                }
            }
        } else {
            let flags = (sys::BLOCK_FLAG_READ_ONLY | sys::BLOCK_FLAG_DATA_ONLY) as i32;
            // SAFETY: the callback only touches `r`, which outlives the call.
            let rc = unsafe {
                sys::ext2fs_block_iterate3(
                    self.ptr(),
                    ino,
                    flags,
                    ptr::null_mut(),
                    Some(collect_blocks),
                    (&mut r as *mut Runs).cast(),
                )
            };
            check(rc, format!("walking the blocks of inode {ino}"))?;
        }
        // The block tree is walked in logical order; anything else is corruption.
        if r.runs.windows(2).any(|w| w[0].0 + w[0].2 > w[1].0) {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_BAD_IND_BLOCK),
                format!("block map of inode {ino} is out of order"),
            ));
        }
        for &(_, p, n) in &r.runs {
            self.check_pblk(p, n, ino)?;
        }
        Ok(r.runs)
    }

    /// The first allocated run (written or unwritten) at or after `lblk`, clipped to start at
    /// `lblk` or later; `None` when only holes follow. Cost is per extent, never per block.
    pub fn next_data(&self, ino: Ino, inode: &Inode, lblk: u64) -> Result<Option<Mapping>> {
        if !self.has_valid_blocks(inode) {
            return Ok(None);
        }
        if inode.uses_extents() {
            let mut copy = *inode;
            let mut h = Handle::open(self, ino, &mut copy)?;
            let mut next = h.first_from(lblk)?;
            while let Some(e) = next {
                if e.len > 0 && e.end() > lblk {
                    self.check_pblk(e.pblk, e.len, ino)?;
                    let s = e.lblk.max(lblk);
                    let pblk = e.pblk + (s - e.lblk);
                    let kind = if e.uninit {
                        MapKind::Unwritten { pblk }
                    } else {
                        MapKind::Mapped { pblk }
                    };
                    return Ok(Some(Mapping {
                        lblk: s,
                        len: e.end() - s,
                        kind,
                    }));
                }
                next = h.next_leaf()?;
            }
            return Ok(None);
        }
        // Block-mapped: walk only allocated blocks, stopping after the first run.
        let runs = self.block_runs(ino, inode, lblk, u64::MAX, 1)?;
        Ok(runs.first().map(|&(l, p, n)| Mapping {
            lblk: l,
            len: n,
            kind: MapKind::Mapped { pblk: p },
        }))
    }

    /// The first logical block at or after `lblk` that is a hole (unwritten extents count as
    /// allocated). Past the last extent everything is a hole.
    pub fn next_hole(&self, ino: Ino, inode: &Inode, lblk: u64) -> Result<u64> {
        if !self.has_valid_blocks(inode) {
            return Ok(lblk);
        }
        let mut cursor = lblk;
        if inode.uses_extents() {
            let mut copy = *inode;
            let mut h = Handle::open(self, ino, &mut copy)?;
            let mut next = h.first_from(lblk)?;
            while let Some(e) = next {
                if e.lblk > cursor {
                    break;
                }
                cursor = cursor.max(e.end());
                next = h.next_leaf()?;
            }
            return Ok(cursor);
        }
        // Block-mapped: step through allocated blocks until the first gap.
        let mut start = cursor;
        loop {
            let end = start.saturating_add(BMAP_PER_BLOCK_MAX * 64);
            for (l, _, n) in self.block_runs(ino, inode, start, end, usize::MAX)? {
                if l != cursor {
                    return Ok(cursor);
                }
                cursor += n;
            }
            if cursor < end || end == u64::MAX {
                return Ok(cursor);
            }
            start = end;
        }
    }

    /// Blocks an extent tree change may need for node splits (depth + a new root level + 1).
    fn split_reserve(h: &mut Handle<'_>) -> Result<u64> {
        Ok(h.max_depth()? + 2)
    }

    fn enospc(&self, what: impl Into<std::borrow::Cow<'static, str>>) -> Error {
        Error::new(i64::from(sys::EXT2_ET_BLOCK_ALLOC_FAIL), what)
    }

    /// Fills every hole in `[lblk, lblk + len)` with unwritten extents (existing mappings are
    /// left alone), updates `i_blocks` in `inode` and writes it.
    ///
    /// Block-mapped files have no unwritten state: their holes get zeroed, written blocks.
    /// On `ENOSPC` the blocks allocated so far stay mapped (and accounted); the filesystem
    /// remains consistent.
    pub fn allocate_unwritten(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        lblk: u64,
        len: u64,
    ) -> Result<()> {
        self.check_rw("allocating blocks")?;
        let end = lblk
            .checked_add(len)
            .ok_or_else(|| Error::from_errno(libc::EINVAL, "range overflows"))?;
        if len == 0 {
            return Ok(());
        }
        if !inode.uses_extents() {
            return self.allocate_block_mapped(ino, inode, lblk, len);
        }
        if end > EXTENT_LBLK_LIMIT {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_FILE_TOO_BIG),
                "allocating beyond the extent limit",
            ));
        }
        let res = self.fill_holes(ino, inode, lblk, end);
        let written = self.put_inode(ino, inode);
        res.and(written)
    }

    fn fill_holes(&mut self, ino: Ino, inode: &mut Inode, start: u64, end: u64) -> Result<()> {
        let group_goal = self.inode_group_first_block(ino);
        let mut h = Handle::open(self, ino, inode)?;
        let mut cursor = start;
        while cursor < end {
            // Find the hole at or after the cursor and its neighbours.
            let found = h.goto(cursor)?;
            let cur = h.current()?;
            if found {
                let e = cur.ok_or_else(|| extent_order_error(ino))?;
                cursor = e.end();
                continue;
            }
            let (left, right) = match cur {
                None => (None, None),
                Some(e) if e.lblk > cursor => (None, Some(e)),
                Some(e) => (Some(e), h.next_leaf()?),
            };
            let hole_end = right.map_or(end, |r| r.lblk.min(end));
            if let Some(r) = right {
                if r.lblk <= cursor {
                    // Corrupt or overlapping tree: refuse to allocate over it.
                    return Err(extent_order_error(ino));
                }
            }
            let want = (hole_end - cursor).min(EXT_UNINIT_MAX_LEN);
            let reserve = Self::split_reserve(&mut h)?;
            let avail = self.free_blocks().saturating_sub(reserve);
            let want = want.min(avail);
            if want == 0 {
                return Err(self.enospc(format!("allocating blocks for inode {ino}")));
            }
            let goal = match (left, right) {
                (Some(l), _) => l.pblk + l.len + (cursor - l.end()),
                (None, Some(r)) if r.pblk > r.lblk - cursor => r.pblk - (r.lblk - cursor),
                _ => group_goal,
            };
            let (pblk, plen) = self.new_range(goal, want)?;
            self.claim(h.inode, pblk, plen)?;
            let new = Ext {
                lblk: cursor,
                len: plen,
                pblk,
                uninit: true,
            };
            let res = match left {
                Some(l)
                    if l.uninit
                        && l.end() == cursor
                        && l.pblk + l.len == pblk
                        && l.len + plen <= EXT_UNINIT_MAX_LEN =>
                {
                    h.goto(l.lblk)?;
                    h.replace(Ext {
                        len: l.len + plen,
                        ..l
                    })
                }
                _ => {
                    h.goto(cursor)?;
                    let after = matches!(h.current()?, Some(c) if c.lblk < cursor);
                    h.insert(after, new)
                }
            };
            if let Err(e) = res {
                self.unclaim(h.inode, pblk, plen);
                return Err(e);
            }
            cursor += plen;
        }
        Ok(())
    }

    /// First block of the inode's block group: the allocation goal for a file's first data.
    pub(crate) fn inode_group_first_block(&self, ino: Ino) -> u64 {
        let sb = self.sb();
        let group = u64::from((ino - 1) / sb.s_inodes_per_group.max(1));
        u64::from(sb.s_first_data_block) + group * u64::from(sb.s_blocks_per_group)
    }

    /// A free run of up to `len` blocks near `goal` (not yet marked in use).
    fn new_range(&self, goal: u64, len: u64) -> Result<(u64, u64)> {
        let (mut pblk, mut plen) = (0, 0);
        // SAFETY: open handle; outputs are plain integers.
        let rc = unsafe {
            sys::ext2fs_new_range(
                self.ptr(),
                0,
                goal,
                len,
                ptr::null_mut(),
                &mut pblk,
                &mut plen,
            )
        };
        check(rc, "finding free blocks")?;
        Ok((pblk, plen.min(len)))
    }

    /// Marks a run in use and charges it to the inode's `i_blocks`.
    fn claim(&self, inode: *mut sys::ext2_inode, pblk: u64, len: u64) -> Result<()> {
        // SAFETY: the run came from new_range; `inode` is the inode being extended.
        unsafe {
            sys::ext2fs_block_alloc_stats_range(self.ptr(), pblk, len as u32, 1);
            self.note_block_groups(pblk, len);
            let rc = sys::ext2fs_iblk_add_blocks(self.ptr(), inode, len);
            if rc != 0 {
                sys::ext2fs_block_alloc_stats_range(self.ptr(), pblk, len as u32, -1);
            }
            check(rc, "accounting allocated blocks")
        }
    }

    fn unclaim(&self, inode: *mut sys::ext2_inode, pblk: u64, len: u64) {
        // SAFETY: undoes `claim` for a run that was not mapped.
        unsafe {
            sys::ext2fs_block_alloc_stats_range(self.ptr(), pblk, len as u32, -1);
            sys::ext2fs_iblk_sub_blocks(self.ptr(), inode, len);
        }
        self.log_freed(pblk, len);
    }

    /// The single, double and triple indirect blocks of a block-mapped inode: libext2fs
    /// reads and rewrites them when it maps, allocates or frees, so they must be blocks
    /// the inode may own (never metadata). (Pointers inside them are data blocks, checked
    /// where they are mapped.)
    fn check_indirect_roots(&self, ino: Ino, inode: &Inode) -> Result<()> {
        if inode.uses_extents() || !self.has_valid_blocks(inode) {
            return Ok(());
        }
        for &blk in &inode.raw.i_block[sys::EXT2_IND_BLOCK as usize..sys::EXT2_N_BLOCKS as usize] {
            if blk != 0 {
                self.check_pblk(u64::from(blk), 1, ino)?;
            }
        }
        Ok(())
    }

    fn allocate_block_mapped(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        lblk: u64,
        len: u64,
    ) -> Result<()> {
        self.check_indirect_roots(ino, inode)?;
        if inode.raw.i_flags & sys::EXT4_INLINE_DATA_FL != 0 {
            return Err(Error::from_errno(
                libc::EOPNOTSUPP,
                format!("inode {ino} has inline data"),
            ));
        }
        let avail = self.free_blocks();
        if avail == 0 {
            return Err(self.enospc(format!("allocating blocks for inode {ino}")));
        }
        // SAFETY: our inode copy; libext2fs allocates, zeroes and maps the missing blocks,
        // writing the inode as it goes.
        let rc =
            unsafe { sys::ext2fs_fallocate(self.ptr(), 0, ino, inode.as_mut_ptr(), !0, lblk, len) };
        let written = self.put_inode(ino, inode);
        check(rc, format!("allocating blocks for inode {ino}"))?;
        written
    }

    /// Converts every unwritten extent piece inside `[lblk, lblk + len)` to written, splitting
    /// extents at the range edges and merging the result with written neighbours that are
    /// contiguous. Updates and writes `inode`. A no-op for block-mapped files.
    pub fn mark_written(&mut self, ino: Ino, inode: &mut Inode, lblk: u64, len: u64) -> Result<()> {
        self.check_rw("converting unwritten extents")?;
        let end = lblk
            .checked_add(len)
            .ok_or_else(|| Error::from_errno(libc::EINVAL, "range overflows"))?;
        if len == 0 || !inode.uses_extents() {
            return Ok(());
        }
        let res = self.convert_range(ino, inode, lblk, end.min(EXTENT_LBLK_LIMIT));
        let written = self.put_inode(ino, inode);
        res.and(written)
    }

    fn convert_range(&mut self, ino: Ino, inode: &mut Inode, start: u64, end: u64) -> Result<()> {
        let mut h = Handle::open(self, ino, inode)?;
        let mut cursor = start;
        while cursor < end {
            // Next unwritten extent overlapping [cursor, end).
            let mut next = h.first_from(cursor)?;
            let e = loop {
                match next {
                    Some(e) if e.lblk >= end => return Ok(()),
                    Some(e) if e.uninit && e.len > 0 && e.end() > cursor => break e,
                    Some(e) => {
                        if e.end() > cursor {
                            cursor = e.end();
                        }
                        next = h.next_leaf()?;
                    }
                    None => return Ok(()),
                }
            };
            let a = e.lblk.max(cursor);
            let b = e.end().min(end);
            let written = Ext {
                lblk: a,
                len: b - a,
                pblk: e.pblk + (a - e.lblk),
                uninit: false,
            };
            let left = Ext {
                lblk: e.lblk,
                len: a - e.lblk,
                pblk: e.pblk,
                uninit: true,
            };
            let right = Ext {
                lblk: b,
                len: e.end() - b,
                pblk: e.pblk + (b - e.lblk),
                uninit: true,
            };
            if left.len > 0 || right.len > 0 {
                let reserve = Self::split_reserve(&mut h)?;
                if self.free_blocks() < reserve {
                    return Err(self.enospc(format!("splitting an extent of inode {ino}")));
                }
            }
            // Shrink first, then insert: a failure leaves unreferenced blocks, never two
            // extents mapping the same blocks.
            h.goto(e.lblk)?;
            match (left.len > 0, right.len > 0) {
                (false, false) => h.replace(written)?,
                (false, true) => {
                    h.replace(written)?;
                    h.insert(true, right)?;
                }
                (true, false) => {
                    h.replace(left)?;
                    h.insert(true, written)?;
                }
                (true, true) => {
                    h.replace(left)?;
                    h.insert(true, written)?;
                    h.insert(true, right)?;
                }
            }
            merge_written(&mut h, written)?;
            cursor = b;
        }
        Ok(())
    }

    /// Frees the blocks of `[start, end]` (inclusive; `None` = to the end of the file) and
    /// unmaps them; updates and writes `inode`. The file size is not changed.
    ///
    /// Extent-mapped files are punched here rather than by `ext2fs_punch`, whose 1.47.0
    /// version refuses extents ending at the filesystem's last block (fixed upstream in
    /// "libext2fs: fix off-by-one bug in punch_extent_blocks"); bounded ranges of
    /// block-mapped files are unmapped block by block, avoiding its indirect-tree range bug
    /// (fixed upstream in "libext2fs: fix ind_punch recursive block computation").
    pub fn punch(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        start: u64,
        end: Option<u64>,
    ) -> Result<()> {
        self.check_rw("punching blocks")?;
        self.punch_blocks(ino, inode, start, end)
    }

    /// `punch` as a part of a larger change (no fault step of its own).
    pub(crate) fn punch_blocks(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        start: u64,
        end: Option<u64>,
    ) -> Result<()> {
        let last = end.unwrap_or(u64::MAX);
        if start > last {
            return Err(Error::from_errno(libc::EINVAL, "punch range is empty"));
        }
        if !self.has_valid_blocks(inode) {
            return Ok(());
        }
        if inode.raw.i_flags & sys::EXT4_INLINE_DATA_FL != 0 {
            return Err(Error::from_errno(
                libc::EOPNOTSUPP,
                format!("inode {ino} has inline data"),
            ));
        }
        let res = if inode.uses_extents() {
            self.punch_extents(
                ino,
                inode,
                start,
                last.saturating_add(1).min(EXTENT_LBLK_LIMIT),
            )
        } else if end.is_some() {
            self.punch_block_mapped(ino, inode, start, last.saturating_add(1))
        } else {
            self.check_indirect_roots(ino, inode)?;
            // Truncation: ext2fs_punch is correct for an open-ended range.
            // SAFETY: our inode; libext2fs frees blocks and edits the mapping in it.
            let rc = unsafe {
                sys::ext2fs_punch(
                    self.ptr(),
                    ino,
                    inode.as_mut_ptr(),
                    ptr::null_mut(),
                    start,
                    !0,
                )
            };
            check(rc, format!("truncating inode {ino}"))
        };
        let written = self.put_inode(ino, inode);
        res.and(written)
    }

    fn punch_extents(&mut self, ino: Ino, inode: &mut Inode, start: u64, end: u64) -> Result<()> {
        let mut h = Handle::open(self, ino, inode)?;
        let mut cursor = start;
        while cursor < end {
            let Some(e) = h.first_from(cursor)? else {
                break;
            };
            if e.lblk >= end {
                break;
            }
            if e.len == 0 || e.end() <= cursor {
                return Err(extent_order_error(ino));
            }
            // Never free blocks a corrupt extent points outside the filesystem.
            self.check_pblk(e.pblk, e.len, ino)?;
            let a = e.lblk.max(cursor);
            let b = e.end().min(end);
            let left = Ext {
                len: a - e.lblk,
                ..e
            };
            let right = Ext {
                lblk: b,
                len: e.end() - b,
                pblk: e.pblk + (b - e.lblk),
                ..e
            };
            h.goto(e.lblk)?;
            // Change the tree first, free after: a failure leaks blocks, never reuses them.
            match (left.len > 0, right.len > 0) {
                (false, false) => h.delete()?,
                (true, false) => h.replace(left)?,
                (false, true) => {
                    h.replace(right)?;
                    h.fix_parents()?;
                }
                (true, true) => {
                    if self.free_blocks() < Self::split_reserve(&mut h)? {
                        return Err(self.enospc(format!("splitting an extent of inode {ino}")));
                    }
                    h.replace(left)?;
                    h.insert(true, right)?;
                }
            }
            self.unclaim(h.inode, e.pblk + (a - e.lblk), b - a);
            cursor = b;
        }
        Ok(())
    }

    /// Unmaps the allocated blocks of `[start, end)` of a block-mapped file one by one.
    /// Indirect blocks that become empty stay allocated (and counted), which is valid.
    fn punch_block_mapped(
        &mut self,
        ino: Ino,
        inode: &mut Inode,
        start: u64,
        end: u64,
    ) -> Result<()> {
        let blocks = self.block_runs(ino, inode, start, end, usize::MAX)?;
        for (lblk, pblk) in blocks
            .into_iter()
            .flat_map(|(l, p, n)| (0..n).map(move |i| (l + i, p + i)))
        {
            let mut zero: sys::blk64_t = 0;
            // SAFETY: our inode; BMAP_SET with 0 clears the block pointer (and writes the inode).
            let rc = unsafe {
                sys::ext2fs_bmap2(
                    self.ptr(),
                    ino,
                    inode.as_mut_ptr(),
                    ptr::null_mut(),
                    sys::BMAP_SET as i32,
                    lblk,
                    ptr::null_mut(),
                    &mut zero,
                )
            };
            check(rc, format!("unmapping block {lblk} of inode {ino}"))?;
            self.unclaim(inode.as_mut_ptr(), pblk, 1);
        }
        Ok(())
    }
}

/// Merges the written extent `w` (just converted) with contiguous written neighbours.
/// Deletes first and extends after, so a failure can only leak blocks, not map them twice.
fn merge_written(h: &mut Handle<'_>, mut w: Ext) -> Result<()> {
    // Left neighbour.
    if !h.goto(w.lblk)? {
        return Ok(());
    }
    if let Some(p) = h.prev_leaf()? {
        if !p.uninit
            && p.end() == w.lblk
            && p.pblk + p.len == w.pblk
            && p.len + w.len <= EXT_INIT_MAX_LEN
        {
            h.goto(w.lblk)?;
            h.delete()?;
            h.goto(p.lblk)?;
            let merged = Ext {
                len: p.len + w.len,
                ..p
            };
            h.replace(merged)?;
            w = merged;
        }
    }
    // Right neighbour.
    if !h.goto(w.lblk)? {
        return Ok(());
    }
    if let Some(n) = h.next_leaf()? {
        if !n.uninit
            && w.end() == n.lblk
            && w.pblk + w.len == n.pblk
            && w.len + n.len <= EXT_INIT_MAX_LEN
        {
            h.delete()?;
            h.goto(w.lblk)?;
            h.replace(Ext {
                len: w.len + n.len,
                ..w
            })?;
        }
    }
    Ok(())
}

fn extent_order_error(ino: Ino) -> Error {
    Error::new(
        i64::from(sys::EXT2_ET_EXTENT_LEAF_BAD),
        format!("extents of inode {ino} overlap or are out of order"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_only_when_contiguous() {
        let mut v = Vec::new();
        push_run(
            &mut v,
            Mapping {
                lblk: 0,
                len: 2,
                kind: MapKind::Hole,
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 2,
                len: 3,
                kind: MapKind::Hole,
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 5,
                len: 1,
                kind: MapKind::Mapped { pblk: 100 },
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 6,
                len: 1,
                kind: MapKind::Mapped { pblk: 101 },
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 7,
                len: 1,
                kind: MapKind::Mapped { pblk: 200 },
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 8,
                len: 1,
                kind: MapKind::Unwritten { pblk: 201 },
            },
        );
        push_run(
            &mut v,
            Mapping {
                lblk: 9,
                len: 0,
                kind: MapKind::Hole,
            },
        );
        assert_eq!(
            v,
            vec![
                Mapping {
                    lblk: 0,
                    len: 5,
                    kind: MapKind::Hole
                },
                Mapping {
                    lblk: 5,
                    len: 2,
                    kind: MapKind::Mapped { pblk: 100 }
                },
                Mapping {
                    lblk: 7,
                    len: 1,
                    kind: MapKind::Mapped { pblk: 200 }
                },
                Mapping {
                    lblk: 8,
                    len: 1,
                    kind: MapKind::Unwritten { pblk: 201 }
                },
            ]
        );
    }

    #[test]
    fn extent_root_layout() {
        let mut ib = [0u32; 15];
        init_extent_root(&mut ib, &[(0, 1, 0x1_0000_0005)]);
        assert_eq!(ib[0], 0x0001_f30a, "magic + 1 entry");
        assert_eq!(ib[1], 4, "max 4 entries, depth 0");
        assert_eq!(ib[3], 0, "ee_block");
        assert_eq!(ib[4], 1 | (1 << 16), "ee_len 1, start_hi 1");
        assert_eq!(ib[5], 5, "start_lo");
    }
}
