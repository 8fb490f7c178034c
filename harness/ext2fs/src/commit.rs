//! `commit`: write what changed in the allocation metadata libext2fs keeps in memory —
//! the bitmaps and descriptors of the groups that changed, and the primary superblock —
//! without `ext2fs_flush`'s full write of every bitmap block, every descriptor copy and
//! every superblock backup. Inodes, directories and extent blocks need nothing here: with
//! no block cache they reached the OS when they were changed. Backups are written at close.

use std::collections::BTreeSet;

use crate::error::{check, Result};
use crate::fs::Fs;
use crate::inode::Timestamp;
use crate::sys;

/// A group's descriptor fields an allocation or free changes; a group whose state differs
/// from what the last commit wrote has changed even if the change went unrecorded (an
/// allocation inside libext2fs that reports to no callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupState {
    free_blocks: u32,
    free_inodes: u32,
    used_dirs: u32,
    itable_unused: u32,
    flags: u16,
}

impl Fs {
    pub(crate) fn group_states(&self) -> Vec<GroupState> {
        let fs = self.ptr();
        // SAFETY: open handle; descriptor reads for groups in range.
        unsafe {
            (0..(*fs).group_desc_count)
                .map(|g| GroupState {
                    free_blocks: sys::ext2fs_bg_free_blocks_count(fs, g),
                    free_inodes: sys::ext2fs_bg_free_inodes_count(fs, g),
                    used_dirs: sys::ext2fs_bg_used_dirs_count(fs, g),
                    itable_unused: sys::ext2fs_bg_itable_unused(fs, g),
                    flags: sys::ext2fs_bg_flags(fs, g),
                })
                .collect()
        }
    }

    /// Writes the bitmaps and descriptor blocks of the groups changed since the last commit,
    /// and the primary superblock, to the device (its page cache: the caller syncs).
    /// Returns how many blocks it wrote. The full flush at close still writes everything.
    pub fn commit(&mut self) -> Result<usize> {
        if self.read_only() {
            return Ok(0);
        }
        let states = self.group_states();
        let mut dirty: BTreeSet<u32> = self.take_dirty_groups();
        dirty.extend(
            states
                .iter()
                .enumerate()
                .filter(|&(g, now)| self.committed.get(g) != Some(now))
                .map(|(g, _)| g as u32),
        );
        if dirty.is_empty() && !self.super_dirty() {
            return Ok(0);
        }
        let mut written = 0;
        let per_block = self.descs_per_block();
        let mut desc_blocks = BTreeSet::new();
        for &g in &dirty {
            written += self.write_group_bitmaps(g)?;
            desc_blocks.insert(g / per_block);
        }
        for d in desc_blocks {
            self.write_desc_block(d)?;
            written += 1;
        }
        self.sb_mut().s_wtime = Timestamp::now().sec as u32;
        self.write_super()?;
        written += 1;
        self.committed = self.group_states();
        Ok(written)
    }

    fn super_dirty(&self) -> bool {
        // SAFETY: open handle.
        let (sb, orig) = unsafe { ((*self.ptr()).super_, (*self.ptr()).orig_super) };
        if orig.is_null() {
            return true;
        }
        // SAFETY: both are SUPERBLOCK_SIZE (1024) bytes owned by the handle.
        unsafe {
            std::slice::from_raw_parts(sb as *const u8, 1024)
                != std::slice::from_raw_parts(orig as *const u8, 1024)
        }
    }

    fn descs_per_block(&self) -> u32 {
        let sb = self.sb();
        let desc_size = if sb.s_feature_incompat & sys::EXT4_FEATURE_INCOMPAT_64BIT != 0 {
            u32::from(sb.s_desc_size).max(sys::EXT2_MIN_DESC_SIZE_64BIT)
        } else {
            sys::EXT2_MIN_DESC_SIZE
        };
        self.block_size() / desc_size
    }

    /// Writes group `g`'s block and inode bitmaps as `ext2fs_write_bitmaps` does for each
    /// group (checksums into the descriptor, padding past the last block, uninit groups
    /// skipped). Returns the blocks written.
    fn write_group_bitmaps(&mut self, g: u32) -> Result<usize> {
        let fs = self.ptr();
        let bs = self.block_size() as usize;
        let sb = self.sb();
        let csum = sb.s_feature_ro_compat
            & (sys::EXT4_FEATURE_RO_COMPAT_GDT_CSUM | sys::EXT4_FEATURE_RO_COMPAT_METADATA_CSUM)
            != 0;
        // SAFETY: open read-write handle; cluster ratio bits are 0 (bigalloc is refused
        // read-write).
        let ratio = unsafe { (*fs).cluster_ratio_bits } as u32;
        let clusters_per_group = sb.s_clusters_per_group;
        let inodes_per_group = sb.s_inodes_per_group;
        let first_data = u64::from(sb.s_first_data_block);
        let blocks_per_group = u64::from(sb.s_blocks_per_group);
        let blocks = self.blocks_count();
        // SAFETY: open handle; group in range.
        let last_group = g + 1 == unsafe { (*fs).group_desc_count };
        let mut written = 0;
        let mut buf = vec![0xffu8; bs];
        // SAFETY (whole block): open read-write handle with loaded bitmaps; `buf` is one
        // block long and the ranges read are one group's bits.
        unsafe {
            if !(csum && sys::ext2fs_bg_flags_test(fs, g, sys::EXT2_BG_BLOCK_UNINIT as u16) != 0) {
                let nbytes = (clusters_per_group / 8) as usize;
                let start = (first_data >> ratio) + u64::from(g) * u64::from(clusters_per_group);
                check(
                    sys::ext2fs_get_block_bitmap_range2(
                        (*fs).block_map,
                        start,
                        nbytes * 8,
                        buf.as_mut_ptr().cast(),
                    ),
                    format!("reading the block bitmap of group {g}"),
                )?;
                if last_group {
                    let nbits = ((blocks - first_data) % blocks_per_group) >> ratio;
                    if nbits != 0 {
                        for bit in nbits as usize..bs * 8 {
                            buf[bit / 8] |= 1 << (bit % 8);
                        }
                    }
                }
                check(
                    sys::ext2fs_block_bitmap_csum_set(
                        fs,
                        g,
                        buf.as_mut_ptr().cast(),
                        nbytes as i32,
                    ),
                    "checksumming a block bitmap",
                )?;
                sys::ext2fs_group_desc_csum_set(fs, g);
                let blk = sys::ext2fs_block_bitmap_loc(fs, g);
                if blk != 0 && blk < blocks {
                    check(
                        sys::io_channel_write_blk64((*fs).io, blk, 1, buf.as_ptr().cast()),
                        format!("writing the block bitmap of group {g}"),
                    )?;
                    written += 1;
                }
            }
            if !(csum && sys::ext2fs_bg_flags_test(fs, g, sys::EXT2_BG_INODE_UNINIT as u16) != 0) {
                buf.fill(0xff);
                let nbytes = inodes_per_group.div_ceil(8) as usize;
                let start = 1 + u64::from(g) * u64::from(inodes_per_group);
                check(
                    sys::ext2fs_get_inode_bitmap_range2(
                        (*fs).inode_map,
                        start,
                        nbytes * 8,
                        buf.as_mut_ptr().cast(),
                    ),
                    format!("reading the inode bitmap of group {g}"),
                )?;
                check(
                    sys::ext2fs_inode_bitmap_csum_set(
                        fs,
                        g,
                        buf.as_mut_ptr().cast(),
                        nbytes as i32,
                    ),
                    "checksumming an inode bitmap",
                )?;
                sys::ext2fs_group_desc_csum_set(fs, g);
                let blk = sys::ext2fs_inode_bitmap_loc(fs, g);
                if blk != 0 && blk < blocks {
                    check(
                        sys::io_channel_write_blk64((*fs).io, blk, 1, buf.as_ptr().cast()),
                        format!("writing the inode bitmap of group {g}"),
                    )?;
                    written += 1;
                }
            }
        }
        Ok(written)
    }

    /// Writes the primary copy of descriptor block `d` from memory.
    fn write_desc_block(&mut self, d: u32) -> Result<()> {
        let fs = self.ptr();
        let bs = self.block_size() as usize;
        // SAFETY: open handle; `group_desc` holds `desc_blocks` whole blocks and `d` is
        // below that (it is the block of a group in range).
        unsafe {
            let loc = sys::ext2fs_descriptor_block_loc2(
                fs,
                u64::from(self.sb().s_first_data_block),
                d as _,
            );
            let data = ((*fs).group_desc as *const u8).add(d as usize * bs);
            check(
                sys::io_channel_write_blk64((*fs).io, loc, 1, data.cast()),
                format!("writing group descriptor block {d}"),
            )
        }
    }
}
