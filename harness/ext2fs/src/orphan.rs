//! The on-disk orphan list, as ext4 keeps it and e2fsprogs reads it: the superblock's
//! `s_last_orphan` names the first orphan inode, each orphan's `i_dtime` the next one.
//!
//! An inode goes on the list before it loses its last name (unlinked but still open, or
//! removed), so that whatever interrupts freeing it — a crash, an error, a server that
//! stops — leaves it where the next mount (or e2fsck) finds and frees it. A mount
//! processes the list the way `ext4_orphan_cleanup` does.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::inode::{Ino, Timestamp};
use crate::sys;

/// The orphan list as read from disk, linked both ways: adding and removing an orphan then
/// costs a few inode writes, not a walk of the list (fstests generic/531 holds 100,000
/// open O_TMPFILE files). Kept in step with every change this module makes; dropped (and
/// read again) when a change fails midway.
#[derive(Default)]
pub(crate) struct Chain {
    /// Each orphan's neighbours: (previous, next), 0 at the ends.
    links: HashMap<Ino, (Ino, Ino)>,
}

impl Chain {
    fn read(fs: &Fs) -> Result<Chain> {
        let list = fs.orphans()?;
        let mut links = HashMap::with_capacity(list.len());
        for (i, &ino) in list.iter().enumerate() {
            let prev = if i == 0 { 0 } else { list[i - 1] };
            links.insert(ino, (prev, list.get(i + 1).copied().unwrap_or(0)));
        }
        Ok(Chain { links })
    }
}

impl Fs {
    /// The orphan list, head first, as it is on disk.
    pub fn orphans(&self) -> Result<Vec<Ino>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut ino = self.sb().s_last_orphan;
        while ino != 0 {
            if !self.is_valid_ino(ino) || out.len() as u64 > u64::from(self.sb().s_inodes_count) {
                return Err(Error::new(
                    i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                    format!(
                        "the orphan list is corrupt (inode {ino} after {} others)",
                        out.len()
                    ),
                ));
            }
            if !seen.insert(ino) {
                return Err(Error::new(
                    i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                    format!("the orphan list loops at inode {ino}"),
                ));
            }
            out.push(ino);
            ino = self.read_inode(ino)?.dtime();
        }
        Ok(out)
    }

    /// The in-memory chain, read from disk the first time.
    fn chain(&mut self) -> Result<&mut Chain> {
        if self.orphan_chain.is_none() {
            self.orphan_chain = Some(Chain::read(self)?);
        }
        Ok(self.orphan_chain.get_or_insert_with(Chain::default))
    }

    /// Runs a change of the list; if it fails midway the chain is read from disk again.
    fn change_chain(&mut self, change: impl FnOnce(&mut Fs) -> Result<()>) -> Result<()> {
        let r = change(self);
        if r.is_err() {
            self.orphan_chain = None;
        }
        r
    }

    /// Puts `ino` at the head of the orphan list (nothing if it is there already). The
    /// inode is written pointing at the old head first, then the superblock, at once.
    pub fn orphan_add(&mut self, ino: Ino) -> Result<()> {
        self.check_rw("adding an orphan")?;
        self.check_ino(ino, "adding an orphan")?;
        if self.chain()?.links.contains_key(&ino) {
            return Ok(());
        }
        self.change_chain(|fs| {
            let old_head = fs.sb().s_last_orphan;
            let mut inode = fs.read_inode(ino)?;
            inode.raw.i_dtime = old_head;
            fs.put_inode(ino, &inode)?;
            fs.sb_mut().s_last_orphan = ino;
            fs.mark_super_dirty();
            fs.write_super()?;
            let chain = fs.chain()?;
            if let Some(next) = chain.links.get_mut(&old_head) {
                next.0 = ino;
            }
            chain.links.insert(ino, (0, old_head));
            Ok(())
        })
    }

    /// Takes `ino` off the orphan list (nothing if it is not on it).
    pub fn orphan_del(&mut self, ino: Ino) -> Result<()> {
        self.check_rw("removing an orphan")?;
        self.orphan_unlink(ino)
    }

    /// `orphan_del` without the step: a part of freeing an inode.
    pub(crate) fn orphan_unlink(&mut self, ino: Ino) -> Result<()> {
        let Some(&(prev, next)) = self.chain()?.links.get(&ino) else {
            return Ok(());
        };
        self.change_chain(|fs| {
            if prev == 0 {
                fs.sb_mut().s_last_orphan = next;
                fs.mark_super_dirty();
                fs.write_super()?;
            } else {
                let mut p = fs.read_inode(prev)?;
                p.raw.i_dtime = next;
                fs.put_inode(prev, &p)?;
            }
            let mut inode = fs.read_inode(ino)?;
            inode.raw.i_dtime = 0;
            fs.put_inode(ino, &inode)?;
            let chain = fs.chain()?;
            chain.links.remove(&ino);
            if let Some(p) = chain.links.get_mut(&prev) {
                p.1 = next;
            }
            if let Some(n) = chain.links.get_mut(&next) {
                n.0 = prev;
            }
            Ok(())
        })
    }

    /// Mount-time processing, as `ext4_orphan_cleanup`: an orphan without links is freed,
    /// one with links (a truncate that did not finish) loses its blocks past `i_size`.
    pub(crate) fn process_orphans(&mut self) -> Result<()> {
        for ino in self.orphans()? {
            let mut inode = self.read_inode(ino)?;
            // SAFETY: open read-write handle with bitmaps loaded; `ino` is in range.
            let in_use =
                unsafe { sys::ext2fs_test_generic_bmap((*self.ptr()).inode_map, u64::from(ino)) }
                    != 0;
            if !in_use || inode.mode() == 0 {
                // Already free: only the list entry is left.
                self.orphan_unlink(ino)?;
            } else if inode.links() == 0 {
                self.free_inode(ino)?;
            } else {
                let keep = inode.size().div_ceil(u64::from(self.block_size()));
                self.punch_blocks(ino, &mut inode, keep, None)?;
                self.orphan_unlink(ino)?;
            }
        }
        Ok(())
    }

    /// Frees an inode (`free_inode`'s work) and sets its deletion time.
    pub(crate) fn release_inode(&mut self, ino: Ino) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        // Data and tree blocks first (the inode is written with them): whatever stops this
        // midway leaves an inode owning only its own blocks, which freeing again finishes.
        self.punch_blocks(ino, &mut inode, 0, None)?;
        if inode.file_acl() != 0 {
            self.check_meta_block(inode.file_acl(), ino)?;
        }
        // SAFETY: `inode` is a whole large inode; the call updates i_file_acl and i_blocks.
        let rc = unsafe { sys::ext2fs_free_ext_attr(self.ptr(), ino, &mut inode.raw) };
        crate::error::check(rc, format!("freeing the xattr block of inode {ino}"))?;
        self.put_inode(ino, &inode)?;
        self.orphan_unlink(ino)?;
        let mut inode = self.read_inode(ino)?;
        let is_dir = i32::from(inode.is_dir());
        inode.set_links(0);
        inode.raw.i_dtime = Timestamp::now().sec as u32;
        self.put_inode(ino, &inode)?;
        // SAFETY: `ino` is in use and now empty.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.ptr(), ino, -1, is_dir) };
        self.note_inode_group(ino);
        Ok(())
    }
}
