//! Directories and symlinks: lookup, link/unlink, readdir with stable cookies, mkdir/rmdir,
//! symlink/readlink.
//!
//! Name-changing operations set the parent directory's mtime and ctime to now and write it:
//! libext2fs may have grown the directory (size, blocks, mapping) underneath, so callers
//! should never write back an older copy of a directory inode after calling them.
//!
//! Readdir cookies (FUSE offsets) stay valid while the directory changes between calls:
//! - linear directories: `(logical block << 32) | byte offset` just past the entry; entries
//!   never move inside a linear directory, so a position is stable;
//! - hashed (htree) directories, whose entries move when a leaf splits: `1` after ".",
//!   `2` after "..", otherwise `3 + ((major_hash >> 1) << 32 | minor_hash)`, entries being
//!   returned in hash order, found through the index. All cookies are below 2^63.

use std::ffi::{c_char, CString};
use std::ptr;

use crate::error::{check, Error, Result};
use crate::fs::Fs;
use crate::inode::{FileType, Ino, Inode, Timestamp, I_BLOCK_BYTES};
use crate::map::{init_extent_root, MapKind};
use crate::sys;

/// One directory entry passed to the `read_dir` callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub ino: Ino,
    pub name: &'a [u8],
    pub ftype: FileType,
    /// Pass this to `read_dir` to continue after this entry.
    pub next_cookie: u64,
    /// The logical block holding the entry in a linear directory (a hint for
    /// `link_new` and `unlink_hinted`); `None` in a hashed directory.
    pub block: Option<u64>,
}

const NAME_MAX: usize = 255;
/// Link count limit without (and overflow marker with) the dir_nlink feature.
const LINK_MAX: u32 = sys::EXT2_LINK_MAX;

fn corrupt(dir: Ino, what: &str) -> Error {
    Error::new(
        i64::from(sys::EXT2_ET_DIR_CORRUPTED),
        format!("directory inode {dir}: {what}"),
    )
}

/// Checks a name for lookup/unlink: 1..=255 bytes, no '/' or NUL.
fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::from_errno(libc::ENOENT, "empty file name"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::from_errno(
            libc::ENAMETOOLONG,
            "file name longer than 255 bytes",
        ));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(Error::from_errno(
            libc::EINVAL,
            "file name contains '/' or NUL",
        ));
    }
    Ok(())
}

/// Checks a name for a new entry (not "." or "..") and makes the C string libext2fs wants.
fn new_name(name: &[u8]) -> Result<CString> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(Error::from_errno(
            libc::EEXIST,
            "\".\" and \"..\" always exist",
        ));
    }
    CString::new(name).map_err(|_| Error::from_errno(libc::EINVAL, "file name contains NUL"))
}

/// One raw entry of a directory block.
struct Raw<'a> {
    off: usize,
    rec_len: usize,
    ino: u32,
    name: &'a [u8],
    ftype: u8,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// `ext2fs_get_rec_len`: 64 KiB blocks encode a full-block record specially.
fn rec_len(raw: u16, block_size: usize) -> usize {
    let len = usize::from(raw);
    if block_size < 65536 {
        len
    } else if raw == 65535 || raw == 0 {
        block_size
    } else {
        (len & 65532) | ((len & 3) << 16)
    }
}

/// Walks the entries of a directory block (including empty ones), validating every length.
/// `f` returns false to stop.
fn parse_block<'a>(
    buf: &'a [u8],
    filetype: bool,
    mut f: impl FnMut(Raw<'a>) -> bool,
) -> Result<(), &'static str> {
    let bs = buf.len();
    let mut off = 0;
    while off < bs {
        if off + 8 > bs {
            return Err("entry header crosses the block end");
        }
        let ino = le32(buf, off);
        let rec_len = rec_len(le16(buf, off + 4), bs);
        let name_len = usize::from(buf[off + 6]);
        let ftype = if filetype { buf[off + 7] } else { 0 };
        if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > bs || 8 + name_len > rec_len {
            return Err("bad record length");
        }
        if !f(Raw {
            off,
            rec_len,
            ino,
            name: &buf[off + 8..off + 8 + name_len],
            ftype,
        }) {
            return Ok(());
        }
        off += rec_len;
    }
    Ok(())
}

/// The dx root/node entry list at `off`: (hash, block) pairs; entry 0's hash is implied.
fn dx_entries(buf: &[u8], off: usize, implied_hash: u32) -> Result<Vec<(u32, u32)>, &'static str> {
    if off + 8 > buf.len() {
        return Err("index header crosses the block end");
    }
    let limit = usize::from(le16(buf, off));
    let count = usize::from(le16(buf, off + 2));
    if count == 0 || count > limit || off + count * 8 > buf.len() {
        return Err("bad index entry count");
    }
    Ok((0..count)
        .map(|i| {
            let e = off + i * 8;
            let hash = if i == 0 { implied_hash } else { le32(buf, e) };
            (hash, le32(buf, e + 4) & 0x0fff_ffff)
        })
        .collect())
}

/// Where a name lives: its inode, directory block and byte offset.
struct Found {
    ino: Ino,
    /// Logical block (linear directories; 0 in hashed ones, where it is not used).
    lblk: u64,
    pblk: u64,
    off: usize,
}

/// `ext2fs_set_rec_len`: the inverse of `rec_len`.
fn set_rec_len(len: usize, block_size: usize) -> u16 {
    if block_size < 65536 {
        len as u16
    } else if len == block_size {
        65535
    } else {
        ((len & 65532) | ((len >> 16) & 3)) as u16
    }
}

/// An entry gathered from an htree leaf, with its cookie.
struct Hashed {
    cookie: u64,
    ino: Ino,
    name: Vec<u8>,
    ftype: FileType,
}

impl Fs {
    fn has_filetype(&self) -> bool {
        self.has_incompat(sys::EXT2_FEATURE_INCOMPAT_FILETYPE)
    }

    /// Looks `name` up in directory `dir` (through the index for hashed directories).
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
        check_name(name)?;
        let inode = self.dir_inode(dir)?;
        if self.is_hashed(&inode) {
            return Ok(self.find_hashed(dir, &inode, name)?.map(|f| f.ino));
        }
        // Linear directory: libext2fs' scan.
        let mut ino: sys::ext2_ino_t = 0;
        // SAFETY: `name` is valid for `len` bytes; libext2fs does not need NUL termination here.
        let rc = unsafe {
            sys::ext2fs_lookup(
                self.ptr(),
                dir,
                name.as_ptr().cast::<c_char>(),
                name.len() as i32,
                ptr::null_mut(),
                &mut ino,
            )
        };
        if rc == i64::from(sys::EXT2_ET_FILE_NOT_FOUND) {
            return Ok(None);
        }
        check(rc, format!("looking up a name in directory {dir}"))?;
        Ok(Some(ino))
    }

    /// Finds `name` in a hashed directory through its index (libext2fs 1.47 has no indexed
    /// lookup): its inode and where the entry is stored.
    fn find_hashed(&self, dir: Ino, inode: &Inode, name: &[u8]) -> Result<Option<Found>> {
        let blocks = self.dir_blocks(dir, inode)?;
        let candidates = self.dx_candidate_leaves(dir, &blocks, name)?;
        let filetype = self.has_filetype();
        let mut buf = vec![0u8; self.block_size() as usize];
        for lblk in candidates {
            let Some(pblk) = blocks.get(lblk).copied().flatten() else {
                continue;
            };
            self.read_dir_block(dir, pblk, &mut buf)?;
            let mut found = None;
            parse_block(&buf, filetype, |e| {
                if e.ino != 0 && e.name == name {
                    found = Some(Found {
                        ino: e.ino,
                        lblk: lblk as u64,
                        pblk,
                        off: e.off,
                    });
                }
                found.is_none()
            })
            .map_err(|what| corrupt(dir, what))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn is_hashed(&self, inode: &Inode) -> bool {
        inode.flags() & sys::EXT2_INDEX_FL != 0
            && self.has_compat(sys::EXT2_FEATURE_COMPAT_DIR_INDEX)
    }

    /// The leaves of an htree that may hold `name`: the one its hash selects, plus the
    /// following leaves that continue the same hash value.
    fn dx_candidate_leaves(
        &self,
        dir: Ino,
        blocks: &[Option<u64>],
        name: &[u8],
    ) -> Result<Vec<usize>> {
        let mut root = vec![0u8; self.block_size() as usize];
        let root_pblk = blocks
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| corrupt(dir, "no root block"))?;
        self.read_dir_block(dir, root_pblk, &mut root)?;
        let (hash_version, leaves) = self.dx_leaves(dir, blocks, &root)?;
        let (major, _) = self.dirhash(dir, hash_version, name)?;
        let i = leaves
            .partition_point(|&(k, _)| k <= major)
            .saturating_sub(1);
        let mut out = Vec::new();
        if let Some(&(_, lblk)) = leaves.get(i) {
            out.push(lblk as usize);
        }
        out.extend(
            leaves
                .iter()
                .skip(i + 1)
                .take_while(|&&(k, _)| k & 1 == 1 && k & !1 == major)
                .map(|&(_, l)| l as usize),
        );
        Ok(out)
    }

    /// The directory hash of a name: (major with the low bit clear, minor).
    fn dirhash(&self, dir: Ino, hash_version: i32, name: &[u8]) -> Result<(u32, u32)> {
        let seed = self.sb().s_hash_seed;
        let (mut major, mut minor) = (0u32, 0u32);
        // SAFETY: name valid for its length; seed is 4 words; outputs are plain integers.
        let rc = unsafe {
            sys::ext2fs_dirhash2(
                hash_version,
                name.as_ptr().cast::<c_char>(),
                name.len() as i32,
                ptr::null(),
                0,
                seed.as_ptr(),
                &mut major,
                &mut minor,
            )
        };
        check(rc, format!("hashing a name in directory {dir}"))?;
        Ok((major, minor))
    }

    /// Adds the entry `name` → `ino` to `dir` (EEXIST if the name exists), expanding the
    /// directory when it is full. Link counts are the caller's business.
    pub fn link(&mut self, dir: Ino, name: &[u8], ino: Ino, ftype: FileType) -> Result<()> {
        self.check_rw("linking")?;
        let cname = new_name(name)?;
        if self.lookup(dir, name)?.is_some() {
            return Err(Error::from_errno(
                libc::EEXIST,
                format!("linking into directory {dir}"),
            ));
        }
        self.link_raw(dir, &cname, ino, ftype)?;
        // The entry changed; the directory's times are not worth failing for.
        let _ = self.touch_dir(dir);
        Ok(())
    }

    fn link_raw(&mut self, dir: Ino, name: &CString, ino: Ino, ftype: FileType) -> Result<()> {
        self.step("adding a directory entry")?;
        self.check_dir_mapping(dir)?;
        let code = ftype.dirent_code() as i32;
        // SAFETY: NUL-terminated name; open read-write handle.
        let mut rc = unsafe { sys::ext2fs_link(self.ptr(), dir, name.as_ptr(), ino, code) };
        if rc == i64::from(sys::EXT2_ET_DIR_NO_SPACE) {
            let d = self.read_inode(dir)?;
            if d.flags() & sys::EXT2_INDEX_FL != 0 {
                // The htree code already tried to grow the index; an appended block would not
                // be referenced by it.
                return Err(Error::new(rc, format!("directory {dir} index is full")));
            }
            // SAFETY: as above.
            check(
                unsafe { sys::ext2fs_expand_dir(self.ptr(), dir) },
                format!("expanding directory {dir}"),
            )?;
            // SAFETY: as above.
            rc = unsafe { sys::ext2fs_link(self.ptr(), dir, name.as_ptr(), ino, code) };
        }
        check(rc, format!("adding an entry to directory {dir}"))
    }

    /// Removes the entry `name` from `dir` (ENOENT if absent). Link counts are the caller's
    /// business.
    pub fn unlink(&mut self, dir: Ino, name: &[u8]) -> Result<()> {
        self.unlink_hinted(dir, name, None).map(drop)
    }

    /// `unlink`, looking first in logical block `hint` of a linear directory (where the
    /// caller's index last saw the name) before scanning the whole directory. Returns the
    /// logical block the entry was removed from (linear directories only), which now has
    /// room for a new entry.
    pub fn unlink_hinted(
        &mut self,
        dir: Ino,
        name: &[u8],
        hint: Option<u64>,
    ) -> Result<Option<u64>> {
        self.check_rw("unlinking")?;
        check_name(name)?;
        if name == b"." || name == b".." {
            return Err(Error::from_errno(
                libc::EINVAL,
                "cannot unlink \".\" or \"..\"",
            ));
        }
        let inode = self.dir_inode(dir)?;
        self.check_dir_mapping(dir)?;
        let not_found =
            || Error::from_errno(libc::ENOENT, format!("unlinking from directory {dir}"));
        let found = if self.is_hashed(&inode) {
            self.find_hashed(dir, &inode, name)?
        } else {
            let hinted = match hint {
                Some(lblk) => self.find_in_block(dir, &inode, lblk, name)?,
                None => None,
            };
            match hinted {
                Some(f) => Some(f),
                None => self.find_linear(dir, &inode, name)?,
            }
        };
        let found = found.ok_or_else(not_found)?;
        self.remove_entry(dir, &found)?;
        // The entry changed; the directory's times are not worth failing for.
        let _ = self.touch_dir(dir);
        Ok((!self.is_hashed(&inode)).then_some(found.lblk))
    }

    /// Finds `name` in logical block `lblk` of a linear directory.
    fn find_in_block(
        &self,
        dir: Ino,
        inode: &Inode,
        lblk: u64,
        name: &[u8],
    ) -> Result<Option<Found>> {
        let Some(pblk) = self.dir_block(dir, inode, lblk)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; self.block_size() as usize];
        self.read_dir_block(dir, pblk, &mut buf)?;
        let mut found = None;
        parse_block(&buf, self.has_filetype(), |e| {
            if e.ino != 0 && e.name == name {
                found = Some(Found {
                    ino: e.ino,
                    lblk,
                    pblk,
                    off: e.off,
                });
            }
            found.is_none()
        })
        .map_err(|what| corrupt(dir, what))?;
        Ok(found)
    }

    /// The physical block of logical block `lblk` of a directory, if it has one.
    fn dir_block(&self, dir: Ino, inode: &Inode, lblk: u64) -> Result<Option<u64>> {
        let bs = u64::from(self.block_size());
        if lblk >= inode.size().div_ceil(bs) {
            return Ok(None);
        }
        Ok(self
            .map(dir, inode, lblk, 1)?
            .into_iter()
            .find_map(|m| match m.kind {
                MapKind::Mapped { pblk } if m.lblk == lblk => Some(pblk),
                _ => None,
            }))
    }

    /// Adds `name` → `ino` to `dir` when the caller knows the name is not there (it keeps
    /// an exact index of the directory), without libext2fs' scan of every block. In a
    /// linear directory the entry goes into the first of the blocks in `room` that fits it
    /// (blocks the caller saw entries leave; those found full are taken out of `room`),
    /// else the last block, else a new block; returns the logical block that took it.
    /// Hashed directories go through libext2fs' index insert (`None`).
    pub fn link_new(
        &mut self,
        dir: Ino,
        name: &[u8],
        ino: Ino,
        ftype: FileType,
        room: &mut std::collections::BTreeSet<u64>,
    ) -> Result<Option<u64>> {
        self.check_rw("linking")?;
        let cname = new_name(name)?;
        self.link_new_raw(dir, &cname, ino, ftype, room)
    }

    fn link_new_raw(
        &mut self,
        dir: Ino,
        cname: &CString,
        ino: Ino,
        ftype: FileType,
        room: &mut std::collections::BTreeSet<u64>,
    ) -> Result<Option<u64>> {
        let name = cname.as_bytes();
        let inode = self.dir_inode(dir)?;
        let bs = self.block_size() as usize;
        if self.is_hashed(&inode) || bs >= 65536 {
            self.link_raw(dir, cname, ino, ftype)?;
            let _ = self.touch_dir(dir);
            return Ok(None);
        }
        self.step("adding a directory entry")?;
        self.check_ino(ino, "adding a directory entry")?;
        let nblocks = inode.size().div_ceil(bs as u64);
        let mut tried: Vec<u64> = room.iter().copied().collect();
        if let Some(last) = nblocks.checked_sub(1) {
            tried.push(last);
        }
        let mut buf = vec![0u8; bs];
        let code = if self.has_filetype() {
            ftype.dirent_code() as u8
        } else {
            0
        };
        for lblk in tried {
            let Some(pblk) = self.dir_block(dir, &inode, lblk)? else {
                room.remove(&lblk);
                continue;
            };
            self.read_dir_block(dir, pblk, &mut buf)?;
            if self.insert_entry(dir, &mut buf, name, ino, code)? {
                self.write_dir_block(dir, pblk, &mut buf)?;
                let _ = self.touch_dir(dir);
                return Ok(Some(lblk));
            }
            room.remove(&lblk);
        }
        // Full: a new empty block at the end (libext2fs writes it and grows i_size).
        // SAFETY: open read-write handle.
        check(
            unsafe { sys::ext2fs_expand_dir(self.ptr(), dir) },
            format!("expanding directory {dir}"),
        )?;
        let inode = self.dir_inode(dir)?;
        let lblk = inode.size().div_ceil(bs as u64).saturating_sub(1);
        let pblk = self
            .dir_block(dir, &inode, lblk)?
            .ok_or_else(|| corrupt(dir, "the block expand_dir added is not mapped"))?;
        self.read_dir_block(dir, pblk, &mut buf)?;
        if !self.insert_entry(dir, &mut buf, name, ino, code)? {
            return Err(corrupt(dir, "no room in the block expand_dir added"));
        }
        self.write_dir_block(dir, pblk, &mut buf)?;
        let _ = self.touch_dir(dir);
        Ok(Some(lblk))
    }

    /// Puts a new entry into the first gap of `buf` (one directory block) that fits, as
    /// ext2fs_link does: an unused record, or the slack after a used one. The checksum
    /// tail of metadata_csum blocks is never touched. Returns false if nothing fits.
    fn insert_entry(
        &self,
        dir: Ino,
        buf: &mut [u8],
        name: &[u8],
        ino: Ino,
        code: u8,
    ) -> Result<bool> {
        let record = |name_len: usize| (8 + name_len).div_ceil(4) * 4;
        let need = record(name.len());
        let tail = if self.has_ro_compat(sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) {
            12
        } else {
            0
        };
        let usable = buf.len() - tail;
        // (where the new record goes, its length, the used record it is split from)
        let mut gap = None;
        parse_block(&buf[..usable], self.has_filetype(), |e| {
            let used = record(e.name.len());
            if e.ino == 0 && e.rec_len >= need {
                gap = Some((e.off, e.rec_len, None));
            } else if e.ino != 0 && e.rec_len >= used + need {
                gap = Some((e.off + used, e.rec_len - used, Some((e.off, used))));
            }
            gap.is_none()
        })
        .map_err(|what| corrupt(dir, what))?;
        let Some((off, len, split)) = gap else {
            return Ok(false);
        };
        let bs = buf.len();
        if let Some((prev, used)) = split {
            buf[prev + 4..prev + 6].copy_from_slice(&set_rec_len(used, bs).to_le_bytes());
        }
        buf[off..off + 4].copy_from_slice(&ino.to_le_bytes());
        buf[off + 4..off + 6].copy_from_slice(&set_rec_len(len, bs).to_le_bytes());
        buf[off + 6] = name.len() as u8;
        buf[off + 7] = code;
        buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
        Ok(true)
    }

    fn write_dir_block(&mut self, dir: Ino, pblk: u64, buf: &mut [u8]) -> Result<()> {
        // SAFETY: `buf` is one block long; libext2fs sets the block checksum.
        let rc = unsafe {
            sys::ext2fs_write_dir_block4(self.ptr(), pblk, buf.as_mut_ptr().cast(), 0, dir)
        };
        check(rc, format!("writing a block of directory {dir}"))
    }

    /// Removes an entry from its block as libext2fs does: the previous entry absorbs its
    /// space, or, first in the block, it is marked unused. Entries never move.
    fn remove_entry(&mut self, dir: Ino, found: &Found) -> Result<()> {
        let bs = self.block_size() as usize;
        let mut buf = vec![0u8; bs];
        self.read_dir_block(dir, found.pblk, &mut buf)?;
        let mut prev = None;
        let mut target = None;
        parse_block(&buf, self.has_filetype(), |e| {
            if e.off == found.off {
                target = Some(e.rec_len);
                return false;
            }
            prev = Some((e.off, e.rec_len));
            true
        })
        .map_err(|what| corrupt(dir, what))?;
        let rec_len = target.ok_or_else(|| corrupt(dir, "entry moved while unlinking"))?;
        match prev {
            Some((off, len)) => {
                let merged = set_rec_len(len + rec_len, bs);
                buf[off + 4..off + 6].copy_from_slice(&merged.to_le_bytes());
            }
            None => buf[found.off..found.off + 4].copy_from_slice(&0u32.to_le_bytes()),
        }
        // SAFETY: `buf` is one block long; libext2fs recomputes the block checksum.
        let rc = unsafe {
            sys::ext2fs_write_dir_block4(self.ptr(), found.pblk, buf.as_mut_ptr().cast(), 0, dir)
        };
        check(rc, format!("writing a block of directory {dir}"))
    }

    /// Sets a directory's mtime and ctime to now.
    fn touch_dir(&mut self, dir: Ino) -> Result<()> {
        let mut d = self.read_inode(dir)?;
        let now = Timestamp::now();
        d.set_mtime(now);
        d.set_ctime(now);
        self.put_inode(dir, &d)
    }

    /// libext2fs walks and rewrites directory blocks through the directory's own mapping:
    /// check it (system zone, bitmap) before handing it a directory to change.
    fn check_dir_mapping(&self, dir: Ino) -> Result<()> {
        let inode = self.dir_inode(dir)?;
        let blocks = self.dir_blocks(dir, &inode)?;
        if self.is_hashed(&inode) {
            // The index too: libext2fs follows it to insert and remove entries.
            let root_pblk = blocks
                .first()
                .copied()
                .flatten()
                .ok_or_else(|| corrupt(dir, "no root block"))?;
            let mut root = vec![0u8; self.block_size() as usize];
            self.read_dir_block(dir, root_pblk, &mut root)?;
            self.dx_leaves(dir, &blocks, &root)?;
        }
        Ok(())
    }

    /// Points the existing entry `name` of `dir` at `ino` (of type `ftype`) in place: one
    /// directory block write, so the name never disappears (rename over an existing name,
    /// RENAME_EXCHANGE). Link counts are the caller's business.
    pub fn set_entry(&mut self, dir: Ino, name: &[u8], ino: Ino, ftype: FileType) -> Result<()> {
        self.check_rw("replacing a directory entry")?;
        check_name(name)?;
        if name == b"." || name == b".." {
            return Err(Error::from_errno(
                libc::EINVAL,
                "cannot retarget \".\" or \"..\"",
            ));
        }
        self.check_ino(ino, "replacing a directory entry")?;
        let inode = self.dir_inode(dir)?;
        let found = if self.is_hashed(&inode) {
            self.find_hashed(dir, &inode, name)?
        } else {
            self.find_linear(dir, &inode, name)?
        };
        let found = found.ok_or_else(|| {
            Error::from_errno(
                libc::ENOENT,
                format!("replacing an entry of directory {dir}"),
            )
        })?;
        let mut buf = vec![0u8; self.block_size() as usize];
        self.read_dir_block(dir, found.pblk, &mut buf)?;
        buf[found.off..found.off + 4].copy_from_slice(&ino.to_le_bytes());
        if self.has_filetype() {
            buf[found.off + 7] = ftype.dirent_code() as u8;
        }
        // SAFETY: `buf` is one block long; libext2fs recomputes the block checksum.
        let rc = unsafe {
            sys::ext2fs_write_dir_block4(self.ptr(), found.pblk, buf.as_mut_ptr().cast(), 0, dir)
        };
        check(rc, format!("writing a block of directory {dir}"))?;
        // The entry changed; the directory's times are not worth failing for.
        let _ = self.touch_dir(dir);
        Ok(())
    }

    /// Finds `name` in a linear directory by scanning its blocks.
    fn find_linear(&self, dir: Ino, inode: &Inode, name: &[u8]) -> Result<Option<Found>> {
        let filetype = self.has_filetype();
        let mut buf = vec![0u8; self.block_size() as usize];
        for (lblk, pblk) in self.dir_blocks(dir, inode)?.into_iter().enumerate() {
            let Some(pblk) = pblk else { continue };
            self.read_dir_block(dir, pblk, &mut buf)?;
            let mut found = None;
            parse_block(&buf, filetype, |e| {
                if e.ino != 0 && e.name == name {
                    found = Some(Found {
                        ino: e.ino,
                        lblk: lblk as u64,
                        pblk,
                        off: e.off,
                    });
                }
                found.is_none()
            })
            .map_err(|what| corrupt(dir, what))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn dir_inode(&self, dir: Ino) -> Result<Inode> {
        let inode = self.read_inode(dir)?;
        if !inode.is_dir() {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_NO_DIRECTORY),
                format!("inode {dir}"),
            ));
        }
        if inode.flags() & sys::EXT4_INLINE_DATA_FL != 0 {
            return Err(Error::from_errno(
                libc::EOPNOTSUPP,
                format!("directory {dir} has inline data"),
            ));
        }
        Ok(inode)
    }

    /// Physical block of each logical block of a directory (`None` for holes).
    fn dir_blocks(&self, dir: Ino, inode: &Inode) -> Result<Vec<Option<u64>>> {
        let bs = u64::from(self.block_size());
        let nblocks = inode.size().div_ceil(bs);
        // A directory larger than the filesystem is corrupt; do not allocate for it.
        if nblocks > self.blocks_count() {
            return Err(corrupt(dir, "size larger than the filesystem"));
        }
        // Directories have no holes: never look past the blocks it owns (bounds memory on a
        // corrupt i_size).
        let nblocks = nblocks.min(inode.blocks_512() * 512 / bs);
        let mut out = vec![None; nblocks as usize];
        for m in self.map(dir, inode, 0, nblocks)? {
            if let MapKind::Mapped { pblk } = m.kind {
                for i in 0..m.len {
                    out[(m.lblk + i) as usize] = Some(pblk + i);
                }
            }
        }
        Ok(out)
    }

    /// Reads a directory block, verifying its checksum.
    fn read_dir_block(&self, dir: Ino, pblk: u64, buf: &mut [u8]) -> Result<()> {
        // SAFETY: `buf` is one block long.
        let rc = unsafe {
            sys::ext2fs_read_dir_block4(self.ptr(), pblk, buf.as_mut_ptr().cast(), 0, dir)
        };
        check(rc, format!("reading a block of directory {dir}"))
    }

    /// Calls `f` for the entries of `dir` after `cookie` (0 = from the start, "." and ".."
    /// included) until it returns false. See the module docs for the cookie scheme.
    pub fn read_dir(
        &self,
        dir: Ino,
        cookie: u64,
        mut f: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let inode = self.dir_inode(dir)?;
        let blocks = self.dir_blocks(dir, &inode)?;
        if self.is_hashed(&inode) {
            return self.read_dir_hashed(dir, &blocks, cookie, &mut f);
        }
        let filetype = self.has_filetype();
        let bs = self.block_size() as usize;
        let mut buf = vec![0u8; bs];
        let (start_lblk, start_off) = ((cookie >> 32) as usize, (cookie & 0xffff_ffff) as usize);
        for (lblk, pblk) in blocks.iter().enumerate().skip(start_lblk) {
            let Some(pblk) = *pblk else { continue };
            self.read_dir_block(dir, pblk, &mut buf)?;
            let min_off = if lblk == start_lblk { start_off } else { 0 };
            let mut stopped = false;
            parse_block(&buf, filetype, |e| {
                if e.off < min_off || e.ino == 0 || e.name.is_empty() {
                    return true;
                }
                let next = e.off + e.rec_len;
                let next_cookie = if next >= bs {
                    ((lblk as u64) + 1) << 32
                } else {
                    (lblk as u64) << 32 | next as u64
                };
                let go_on = f(DirEntry {
                    ino: e.ino,
                    name: e.name,
                    ftype: FileType::from_dirent(e.ftype),
                    next_cookie,
                    block: Some(lblk as u64),
                });
                stopped = !go_on;
                go_on
            })
            .map_err(|what| corrupt(dir, what))?;
            if stopped {
                break;
            }
        }
        Ok(())
    }

    fn read_dir_hashed(
        &self,
        dir: Ino,
        blocks: &[Option<u64>],
        cookie: u64,
        f: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let bs = self.block_size() as usize;
        let mut root = vec![0u8; bs];
        let root_pblk = blocks
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| corrupt(dir, "no root block"))?;
        self.read_dir_block(dir, root_pblk, &mut root)?;

        // "." and ".." are the first two entries of the root block.
        let mut dots = Vec::with_capacity(2);
        parse_block(&root, self.has_filetype(), |e| {
            dots.push((e.ino, e.name.to_vec(), e.ftype));
            dots.len() < 2
        })
        .map_err(|what| corrupt(dir, what))?;
        if dots.len() != 2 || dots[0].1 != b"." || dots[1].1 != b".." {
            return Err(corrupt(dir, "index root lacks \".\" and \"..\""));
        }
        for (i, (ino, name, ft)) in dots.iter().enumerate() {
            let next_cookie = i as u64 + 1;
            if cookie < next_cookie
                && !f(DirEntry {
                    ino: *ino,
                    name,
                    ftype: FileType::from_dirent(*ft),
                    next_cookie,
                    block: None,
                })
            {
                return Ok(());
            }
        }

        let (hash_version, leaves) = self.dx_leaves(dir, blocks, &root)?;
        // Start at the group of leaves that may hold hashes at or after the cookie's.
        let mut i = 0;
        if cookie >= 3 {
            let major = (((cookie - 3) >> 32) as u32) << 1;
            i = leaves
                .partition_point(|&(k, _)| k & !1 < major)
                .saturating_sub(1);
            while i > 0 && leaves[i].0 & 1 == 1 {
                i -= 1;
            }
        }
        let mut buf = vec![0u8; bs];
        while i < leaves.len() {
            // A group is a leaf plus the following leaves continuing its last hash value.
            let mut j = i + 1;
            while j < leaves.len() && leaves[j].0 & 1 == 1 {
                j += 1;
            }
            let mut entries = Vec::new();
            for &(_, lblk) in &leaves[i..j] {
                let pblk = blocks
                    .get(lblk as usize)
                    .copied()
                    .flatten()
                    .ok_or_else(|| corrupt(dir, "index points outside"))?;
                self.read_dir_block(dir, pblk, &mut buf)?;
                self.hashed_entries(dir, &buf, hash_version, &mut entries)?;
            }
            entries
                .sort_unstable_by(|a, b| a.cookie.cmp(&b.cookie).then_with(|| a.name.cmp(&b.name)));
            for e in entries.iter().filter(|e| e.cookie > cookie) {
                if !f(DirEntry {
                    ino: e.ino,
                    name: &e.name,
                    ftype: e.ftype,
                    next_cookie: e.cookie,
                    block: None,
                }) {
                    return Ok(());
                }
            }
            i = j;
        }
        Ok(())
    }

    /// The hash version and the leaves `(hash key, logical block)` of an htree, in index order.
    fn dx_leaves(
        &self,
        dir: Ino,
        blocks: &[Option<u64>],
        root: &[u8],
    ) -> Result<(i32, Vec<(u32, u32)>)> {
        // Root: "." (12 bytes), ".." header (12 bytes), dx_root_info (8 bytes), entries.
        const INFO: usize = 24;
        if root.len() < INFO + 16 {
            return Err(corrupt(dir, "block too small for an index"));
        }
        let mut hash_version = i32::from(root[INFO + 4]);
        let info_len = usize::from(root[INFO + 5]);
        let levels = root[INFO + 6];
        let unused_flags = root[INFO + 7];
        let reserved_zero = le32(root, INFO);
        // e2fsck's "invalid root node" rules: libext2fs' indexed insert trusts the root.
        let max_levels = if self.has_incompat(sys::EXT4_FEATURE_INCOMPAT_LARGEDIR) {
            3
        } else {
            2
        };
        let known_hash = [
            sys::EXT2_HASH_LEGACY,
            sys::EXT2_HASH_HALF_MD4,
            sys::EXT2_HASH_TEA,
            sys::EXT2_HASH_SIPHASH,
        ]
        .contains(&(hash_version as u32));
        if info_len != 8
            || levels >= max_levels
            || reserved_zero != 0
            || unused_flags & 1 != 0
            || !known_hash
        {
            return Err(corrupt(dir, "bad index root"));
        }
        if hash_version <= sys::EXT2_HASH_TEA as i32
            && self.sb().s_flags & sys::EXT2_FLAGS_UNSIGNED_HASH != 0
        {
            hash_version += 3;
        }
        let top = dx_entries(root, INFO + info_len, 0).map_err(|w| corrupt(dir, w))?;
        let mut leaves = Vec::new();
        let mut reads = 0;
        self.dx_walk(dir, blocks, top, levels, &mut leaves, &mut reads)?;
        Ok((hash_version, leaves))
    }

    fn dx_walk(
        &self,
        dir: Ino,
        blocks: &[Option<u64>],
        entries: Vec<(u32, u32)>,
        levels: u8,
        leaves: &mut Vec<(u32, u32)>,
        reads: &mut usize,
    ) -> Result<()> {
        if levels == 0 {
            // Every leaf must be a block the directory has: libext2fs' indexed insert
            // trusts the index (and allocates before it finds a bad pointer).
            if entries
                .iter()
                .any(|&(_, lblk)| blocks.get(lblk as usize).copied().flatten().is_none())
            {
                return Err(corrupt(dir, "index points outside"));
            }
            leaves.extend(entries);
            if leaves.len() > blocks.len() {
                return Err(corrupt(
                    dir,
                    "index has more leaves than the directory has blocks",
                ));
            }
            return Ok(());
        }
        let mut buf = vec![0u8; self.block_size() as usize];
        for (hash, lblk) in entries {
            *reads += 1;
            if *reads > blocks.len() {
                return Err(corrupt(dir, "index loops"));
            }
            let pblk = blocks
                .get(lblk as usize)
                .copied()
                .flatten()
                .ok_or_else(|| corrupt(dir, "index points outside"))?;
            self.read_dir_block(dir, pblk, &mut buf)?;
            // An index node is one empty entry spanning the block, then the entry list.
            let children = dx_entries(&buf, 8, hash).map_err(|w| corrupt(dir, w))?;
            self.dx_walk(dir, blocks, children, levels - 1, leaves, reads)?;
        }
        Ok(())
    }

    fn hashed_entries(
        &self,
        dir: Ino,
        buf: &[u8],
        hash_version: i32,
        out: &mut Vec<Hashed>,
    ) -> Result<()> {
        let mut err = None;
        parse_block(buf, self.has_filetype(), |e| {
            if e.ino == 0 || e.name.is_empty() {
                return true;
            }
            match self.dirhash(dir, hash_version, e.name) {
                Ok((major, minor)) => {
                    let cookie = 3 + ((u64::from(major >> 1) << 32) | u64::from(minor));
                    out.push(Hashed {
                        cookie,
                        ino: e.ino,
                        name: e.name.to_vec(),
                        ftype: FileType::from_dirent(e.ftype),
                    });
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        })
        .map_err(|what| corrupt(dir, what))?;
        err.map_or(Ok(()), Err)
    }

    /// Does `dir` contain nothing but "." and ".."?
    pub fn is_dir_empty(&self, dir: Ino) -> Result<bool> {
        let inode = self.dir_inode(dir)?;
        let filetype = self.has_filetype();
        let mut buf = vec![0u8; self.block_size() as usize];
        for pblk in self.dir_blocks(dir, &inode)?.into_iter().flatten() {
            self.read_dir_block(dir, pblk, &mut buf)?;
            let mut empty = true;
            parse_block(&buf, filetype, |e| {
                empty = e.ino == 0 || e.name == b"." || e.name == b"..";
                empty
            })
            .map_err(|what| corrupt(dir, what))?;
            if !empty {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A parent's link count after adding a subdirectory (dir_nlink: 1 means "many").
    fn links_after_mkdir(&self, parent: &Inode) -> Result<u16> {
        let nlink_feature = self.has_ro_compat(sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK);
        let links = u32::from(parent.links());
        if links == 1 && nlink_feature {
            return Ok(1);
        }
        if links + 1 > LINK_MAX {
            return if nlink_feature {
                Ok(1)
            } else {
                Err(Error::from_errno(libc::EMLINK, "too many subdirectories"))
            };
        }
        Ok((links + 1) as u16)
    }

    /// Allocates one block near the inode's group and marks it in use.
    fn alloc_block(&mut self, ino: Ino) -> Result<u64> {
        self.step("allocating a block")?;
        let goal = self.inode_group_first_block(ino);
        let mut blk: sys::blk64_t = 0;
        // SAFETY: open read-write handle; `blk` receives the result.
        check(
            unsafe { sys::ext2fs_new_block2(self.ptr(), goal, ptr::null_mut(), &mut blk) },
            "allocating a block",
        )?;
        self.block_alloc_stats(blk, 1);
        Ok(blk)
    }

    /// Points a new inode's logical block 0 at `blk` and charges one block to it.
    fn map_first_block(&self, inode: &mut Inode, blk: u64) -> Result<()> {
        if self.has_incompat(sys::EXT3_FEATURE_INCOMPAT_EXTENTS) {
            inode.raw.i_flags |= sys::EXT4_EXTENTS_FL;
            init_extent_root(&mut inode.raw.i_block, &[(0, 1, blk)]);
        } else {
            inode.raw.i_block[0] = u32::try_from(blk)
                .map_err(|_| Error::from_errno(libc::EFBIG, "block number too large"))?;
        }
        // SAFETY: our inode; sets i_blocks for one filesystem block.
        check(
            unsafe { sys::ext2fs_iblk_set(self.ptr(), inode.as_mut_ptr(), 1) },
            "accounting a block",
        )
    }

    /// Creates directory `name` in `parent` with the given permission bits and owner; the
    /// parent's link count and times are updated. Returns the new inode number.
    pub fn mkdir(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Ino> {
        self.mkdir_in(parent, name, mode, uid, gid, None)
            .map(|(ino, _)| ino)
    }

    /// `mkdir` when the caller knows `name` is not in `parent` (it keeps an exact index):
    /// the entry goes in as `link_new` puts it. Returns the inode and the logical block of
    /// the entry (`None` in a hashed directory).
    pub fn mkdir_new(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        room: &mut std::collections::BTreeSet<u64>,
    ) -> Result<(Ino, Option<u64>)> {
        self.mkdir_in(parent, name, mode, uid, gid, Some(room))
    }

    fn mkdir_in(
        &mut self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        room: Option<&mut std::collections::BTreeSet<u64>>,
    ) -> Result<(Ino, Option<u64>)> {
        self.check_rw("mkdir")?;
        let cname = new_name(name)?;
        let pinode = self.dir_inode(parent)?;
        if room.is_none() && self.lookup(parent, name)?.is_some() {
            return Err(Error::from_errno(
                libc::EEXIST,
                format!("mkdir in directory {parent}"),
            ));
        }
        let parent_links = self.links_after_mkdir(&pinode)?;
        let mode = sys::LINUX_S_IFDIR | (mode & 0o7777);
        let ino = self.new_inode(parent, mode)?;
        if let Err(e) = self.mkdir_contents(ino, parent, mode, uid, gid) {
            self.undo_new_inode(ino);
            return Err(e);
        }
        // The parent counts the new ".." before a name points at the directory: a failure
        // in between leaves a link too many (what e2fsck repairs), never one too few.
        let mut p = self.read_inode(parent)?;
        let old_links = p.links();
        p.set_links(parent_links);
        let now = Timestamp::now();
        p.set_mtime(now);
        p.set_ctime(now);
        if let Err(e) = self.write_inode(parent, &p) {
            self.undo_new_inode(ino);
            return Err(e);
        }
        let linked = match room {
            Some(room) => self.link_new_raw(parent, &cname, ino, FileType::Dir, room),
            None => self
                .link_raw(parent, &cname, ino, FileType::Dir)
                .map(|()| None),
        };
        let block = match linked {
            Ok(block) => block,
            Err(e) => {
                // Re-read: a failed link may still have grown the directory.
                let undone = self.read_inode(parent).and_then(|mut p| {
                    p.set_links(old_links);
                    self.put_inode(parent, &p)
                });
                if undone.is_err() {
                    self.mark_error();
                }
                self.undo_new_inode(ino);
                return Err(e);
            }
        };
        Ok((ino, block))
    }

    /// Frees an inode a failed create allocated; if even that fails, the filesystem holds
    /// an inode nothing names and is marked errored for e2fsck.
    pub(crate) fn undo_new_inode(&mut self, ino: Ino) {
        if self.free_inode(ino).is_err() {
            self.mark_error();
        }
    }

    fn mkdir_contents(
        &mut self,
        ino: Ino,
        parent: Ino,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let blk = self.alloc_block(ino)?;
        let mut inode = new_inode_now(mode, uid, gid);
        inode.set_links(2);
        inode.set_size(u64::from(self.block_size()));
        let written = self
            .map_first_block(&mut inode, blk)
            .and_then(|()| self.write_new_inode(ino, &inode));
        if let Err(e) = written {
            self.block_alloc_stats(blk, -1);
            return Err(e);
        }
        // The block checksum covers the inode's generation, so the inode goes first.
        self.step("writing a directory block")?;
        let mut block: *mut c_char = ptr::null_mut();
        // SAFETY: libext2fs allocates a block-sized buffer with "." and ".." for us.
        check(
            unsafe { sys::ext2fs_new_dir_block(self.ptr(), ino, parent, &mut block) },
            "building a directory block",
        )?;
        // SAFETY: `block` is a directory block we free right after writing it.
        let rc = unsafe { sys::ext2fs_write_dir_block4(self.ptr(), blk, block.cast(), 0, ino) };
        // SAFETY: allocated by ext2fs_get_mem (malloc).
        unsafe { libc::free(block.cast()) };
        check(rc, format!("writing the first block of directory {ino}"))
    }

    /// Removes the empty subdirectory `name` of `parent`: unlinks it, drops the parent's link
    /// count, and sets the directory's link count to 0. Returns its inode number; call
    /// [`Fs::free_inode`] when nothing uses it any more.
    pub fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<Ino> {
        self.check_rw("rmdir")?;
        check_name(name)?;
        if name == b"." {
            return Err(Error::from_errno(libc::EINVAL, "rmdir of \".\""));
        }
        if name == b".." {
            return Err(Error::from_errno(libc::ENOTEMPTY, "rmdir of \"..\""));
        }
        let Some(ino) = self.lookup(parent, name)? else {
            return Err(Error::from_errno(
                libc::ENOENT,
                format!("rmdir in directory {parent}"),
            ));
        };
        let mut child = self.dir_inode(ino)?;
        if !self.is_dir_empty(ino)? {
            return Err(Error::from_errno(
                libc::ENOTEMPTY,
                format!("rmdir of directory {ino}"),
            ));
        }
        self.unlink(parent, name)?;
        let mut p = self.read_inode(parent)?;
        if p.links() > 2 {
            p.set_links(p.links() - 1);
        }
        self.write_inode(parent, &p)?;
        child.set_links(0);
        child.set_ctime(Timestamp::now());
        self.write_inode(ino, &child)?;
        Ok(ino)
    }

    /// Creates symlink `name` → `target` in `parent`: a fast symlink (target in the inode)
    /// below 60 bytes, otherwise one data block. Returns the new inode number.
    pub fn symlink(
        &mut self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Ino> {
        self.check_rw("symlink")?;
        let cname = new_name(name)?;
        if target.is_empty() {
            return Err(Error::from_errno(libc::ENOENT, "empty symlink target"));
        }
        if target.contains(&0) {
            return Err(Error::from_errno(
                libc::EINVAL,
                "symlink target contains NUL",
            ));
        }
        if target.len() >= self.block_size() as usize {
            return Err(Error::from_errno(
                libc::ENAMETOOLONG,
                "symlink target longer than a block",
            ));
        }
        self.dir_inode(parent)?;
        if self.lookup(parent, name)?.is_some() {
            return Err(Error::from_errno(
                libc::EEXIST,
                format!("symlink in directory {parent}"),
            ));
        }
        let mode = sys::LINUX_S_IFLNK | 0o777;
        let ino = self.new_inode(parent, mode)?;
        let res = self
            .symlink_contents(ino, target, uid, gid)
            .and_then(|()| self.link_raw(parent, &cname, ino, FileType::Symlink));
        if let Err(e) = res {
            self.undo_new_inode(ino);
            return Err(e);
        }
        // The name is in place: the directory's times are not worth failing for.
        let _ = self.touch_dir(parent);
        Ok(ino)
    }

    fn symlink_contents(&mut self, ino: Ino, target: &[u8], uid: u32, gid: u32) -> Result<()> {
        let mut inode = new_inode_now(sys::LINUX_S_IFLNK | 0o777, uid, gid);
        inode.set_links(1);
        inode.set_size(target.len() as u64);
        if target.len() < I_BLOCK_BYTES {
            let mut bytes = [0u8; I_BLOCK_BYTES];
            bytes[..target.len()].copy_from_slice(target);
            for (word, chunk) in inode.raw.i_block.iter_mut().zip(bytes.chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            return self.write_new_inode(ino, &inode);
        }
        let blk = self.alloc_block(ino)?;
        let mut data = vec![0u8; self.block_size() as usize];
        data[..target.len()].copy_from_slice(target);
        if let Err(e) = self.step("writing a symlink block") {
            self.block_alloc_stats(blk, -1);
            return Err(e);
        }
        // SAFETY: `data` is one block long.
        let rc =
            unsafe { sys::io_channel_write_blk64((*self.ptr()).io, blk, 1, data.as_ptr().cast()) };
        let res = check(rc, "writing a symlink block")
            .and_then(|()| self.map_first_block(&mut inode, blk))
            .and_then(|()| self.write_new_inode(ino, &inode));
        if res.is_err() {
            self.block_alloc_stats(blk, -1);
        }
        res
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.read_inode(ino)?;
        if !inode.is_symlink() {
            return Err(Error::from_errno(
                libc::EINVAL,
                format!("inode {ino} is not a symlink"),
            ));
        }
        let size = inode.size();
        let bad = || {
            Error::new(
                i64::from(sys::EXT2_ET_INODE_CORRUPTED),
                format!("symlink inode {ino}"),
            )
        };
        if size == 0 || size >= u64::from(self.block_size()) {
            return Err(bad());
        }
        let size = size as usize;
        let mut copy = inode;
        // SAFETY: reads our inode copy.
        let data_blocks = unsafe { sys::ext2fs_inode_data_blocks2(self.ptr(), copy.as_mut_ptr()) };
        if data_blocks == 0 {
            // Fast symlink: the target lives in i_block.
            if size >= I_BLOCK_BYTES {
                return Err(bad());
            }
            let bytes: Vec<u8> = inode
                .raw
                .i_block
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect();
            return Ok(bytes[..size].to_vec());
        }
        let map = self.map(ino, &inode, 0, 1)?;
        let Some(MapKind::Mapped { pblk }) = map.first().map(|m| m.kind) else {
            return Err(bad());
        };
        let mut buf = vec![0u8; self.block_size() as usize];
        // SAFETY: `buf` is one block long.
        let rc = unsafe {
            sys::io_channel_read_blk64((*self.ptr()).io, pblk, 1, buf.as_mut_ptr().cast())
        };
        check(rc, format!("reading symlink {ino}"))?;
        buf.truncate(size);
        Ok(buf)
    }
}

/// A blank inode with mode, owner and all four times set to now.
fn new_inode_now(mode: u32, uid: u32, gid: u32) -> Inode {
    let mut inode = Inode::new(mode);
    inode.set_uid(uid);
    inode.set_gid(gid);
    let now = Timestamp::now();
    inode.set_atime(now);
    inode.set_mtime(now);
    inode.set_ctime(now);
    inode.set_crtime(now);
    inode
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(buf: &mut [u8], off: usize, ino: u32, rec_len: u16, name: &[u8]) {
        buf[off..off + 4].copy_from_slice(&ino.to_le_bytes());
        buf[off + 4..off + 6].copy_from_slice(&rec_len.to_le_bytes());
        buf[off + 6] = name.len() as u8;
        buf[off + 7] = 1;
        buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
    }

    #[test]
    fn parse_valid_and_corrupt_blocks() {
        let mut b = vec![0u8; 1024];
        entry(&mut b, 0, 2, 12, b".");
        entry(&mut b, 12, 2, 12, b"..");
        entry(&mut b, 24, 13, 1000, b"file");
        let mut names = Vec::new();
        parse_block(&b, true, |e| {
            names.push((e.off, e.name.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            names,
            vec![
                (0, b".".to_vec()),
                (12, b"..".to_vec()),
                (24, b"file".to_vec())
            ]
        );

        // rec_len running past the block, too short for the name, zero: all rejected.
        for bad in [1004u16, 8, 0] {
            let mut c = b.clone();
            entry(&mut c, 24, 13, bad, b"file");
            assert!(parse_block(&c, true, |_| true).is_err(), "rec_len {bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(new_name(b"").unwrap_err().errno(), libc::ENOENT);
        assert_eq!(
            new_name(&[b'a'; 256]).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert_eq!(new_name(b"a/b").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(new_name(b"a\0b").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(new_name(b"..").unwrap_err().errno(), libc::EEXIST);
        assert!(new_name(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn dx_entry_counts_are_checked() {
        let mut b = vec![0u8; 64];
        b[8..10].copy_from_slice(&6u16.to_le_bytes()); // limit
        b[10..12].copy_from_slice(&2u16.to_le_bytes()); // count
        b[12..16].copy_from_slice(&1u32.to_le_bytes()); // block of entry 0
        b[16..20].copy_from_slice(&0x100u32.to_le_bytes()); // hash of entry 1
        b[20..24].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(dx_entries(&b, 8, 7).unwrap(), vec![(7, 1), (0x100, 2)]);
        b[10..12].copy_from_slice(&9u16.to_le_bytes());
        assert!(dx_entries(&b, 8, 0).is_err(), "count above limit");
    }
}
