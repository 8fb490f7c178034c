//! The on-disk orphan list, as ext4 keeps it and e2fsprogs reads it: the superblock's
//! `s_last_orphan` names the first orphan inode, each orphan's `i_dtime` the next one.
//!
//! An inode goes on the list before it loses its last name (unlinked but still open, or
//! removed), so that whatever interrupts freeing it — a crash, an error, a server that
//! stops — leaves it where the next mount (or e2fsck) finds and frees it. A mount
//! processes the list the way `ext4_orphan_cleanup` does.

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::inode::{Ino, Timestamp};
use crate::sys;

impl Fs {
    /// The orphan list, head first, as it is on disk.
    pub fn orphans(&self) -> Result<Vec<Ino>> {
        let mut out = Vec::new();
        let mut ino = self.sb().s_last_orphan;
        while ino != 0 {
            if !self.is_valid_ino(ino) || out.len() as u64 > u64::from(self.sb().s_inodes_count) {
                return Err(Error::new(
                    i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
                    format!("the orphan list is corrupt (inode {ino} after {out:?})"),
                ));
            }
            if out.contains(&ino) {
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

    /// Puts `ino` at the head of the orphan list (nothing if it is there already). The
    /// inode is written pointing at the old head first, then the superblock, at once.
    pub fn orphan_add(&mut self, ino: Ino) -> Result<()> {
        self.check_rw("adding an orphan")?;
        self.check_ino(ino, "adding an orphan")?;
        if self.orphans()?.contains(&ino) {
            return Ok(());
        }
        let mut inode = self.read_inode(ino)?;
        inode.raw.i_dtime = self.sb().s_last_orphan;
        self.put_inode(ino, &inode)?;
        self.sb_mut().s_last_orphan = ino;
        self.mark_super_dirty();
        self.write_super()
    }

    /// Takes `ino` off the orphan list (nothing if it is not on it).
    pub fn orphan_del(&mut self, ino: Ino) -> Result<()> {
        self.check_rw("removing an orphan")?;
        self.orphan_unlink(ino)
    }

    /// `orphan_del` without the step: a part of freeing an inode.
    pub(crate) fn orphan_unlink(&mut self, ino: Ino) -> Result<()> {
        let list = self.orphans()?;
        let Some(pos) = list.iter().position(|&o| o == ino) else {
            return Ok(());
        };
        let next = list.get(pos + 1).copied().unwrap_or(0);
        if pos == 0 {
            self.sb_mut().s_last_orphan = next;
            self.mark_super_dirty();
            self.write_super()?;
        } else {
            let prev = list[pos - 1];
            let mut p = self.read_inode(prev)?;
            p.raw.i_dtime = next;
            self.put_inode(prev, &p)?;
        }
        let mut inode = self.read_inode(ino)?;
        inode.raw.i_dtime = 0;
        self.put_inode(ino, &inode)
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
