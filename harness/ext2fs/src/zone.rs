//! The system zone, as ext4's block_validity keeps it: every block that holds filesystem
//! metadata no file may map — superblocks and their backups, group descriptors and the
//! reserved descriptor blocks, block and inode bitmaps, inode tables, and the journal.
//! `check_pblk` refuses mappings that touch it, so a corrupt extent can never direct a
//! data write (ours or the kernel's) or a metadata update onto it.

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::map::MapKind;
use crate::sys;

/// Sorted, merged, non-overlapping block ranges `[start, end)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SystemZone {
    ranges: Vec<(u64, u64)>,
}

impl SystemZone {
    /// Collects the zone from the group descriptors (checked by `ext2fs_check_desc` first)
    /// and the journal inode's mapping.
    pub(crate) fn build(fs: &Fs) -> Result<SystemZone> {
        let raw = fs.ptr();
        let mut ranges = Vec::new();
        // SAFETY: open handle; plain reads of its fields and descriptors.
        let (groups, itable_blocks, first_data) = unsafe {
            (
                (*raw).group_desc_count,
                u64::from((*raw).inode_blocks_per_group),
                u64::from(fs.sb().s_first_data_block),
            )
        };
        // The boot block (1 KiB blocks) and the primary superblock.
        ranges.push((0, first_data + 1));
        for g in 0..groups {
            let (mut sb_blk, mut old_desc, mut new_desc, mut used) = (0u64, 0u64, 0u64, 0u32);
            // SAFETY: open handle, group in range; outputs are plain integers.
            let rc = unsafe {
                sys::ext2fs_super_and_bgd_loc2(
                    raw,
                    g,
                    &mut sb_blk,
                    &mut old_desc,
                    &mut new_desc,
                    &mut used,
                )
            };
            crate::error::check(rc, format!("locating the superblock of group {g}"))?;
            // SAFETY: as above.
            let has_super = unsafe { sys::ext2fs_bg_has_super(raw, g) } != 0;
            if has_super {
                ranges.push((sb_blk, sb_blk + 1));
            }
            if old_desc != 0 {
                let sb = fs.sb();
                // SAFETY: open handle. (`c_ulong` is 64 bits wide on Linux/x86_64.)
                #[allow(clippy::useless_conversion)]
                let desc_blocks = u64::from(unsafe { (*raw).desc_blocks });
                let old_blocks = if sb.s_feature_incompat & sys::EXT2_FEATURE_INCOMPAT_META_BG != 0
                {
                    u64::from(sb.s_first_meta_bg)
                } else {
                    // SAFETY: open handle.
                    desc_blocks + u64::from(sb.s_reserved_gdt_blocks)
                };
                ranges.push((old_desc, old_desc + old_blocks));
            }
            if new_desc != 0 {
                ranges.push((new_desc, new_desc + 1));
            }
            // SAFETY: open handle, group in range.
            let (bb, ib, it) = unsafe {
                (
                    sys::ext2fs_block_bitmap_loc(raw, g),
                    sys::ext2fs_inode_bitmap_loc(raw, g),
                    sys::ext2fs_inode_table_loc(raw, g),
                )
            };
            ranges.extend([(bb, bb + 1), (ib, ib + 1), (it, it + itable_blocks)]);
        }
        ranges.extend(journal_blocks(fs)?);
        Ok(SystemZone::from_ranges(ranges))
    }

    pub(crate) fn from_ranges(mut ranges: Vec<(u64, u64)>) -> SystemZone {
        ranges.retain(|&(s, e)| e > s);
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        SystemZone { ranges: merged }
    }

    /// Whether any block of `[start, start + len)` is in the zone.
    pub(crate) fn overlaps(&self, start: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let end = start.saturating_add(len);
        // The first range ending after `start` is the only candidate.
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges.get(i).is_some_and(|&(s, _)| s < end)
    }

    pub(crate) fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// The internal journal's data blocks (ext4 protects them the same way).
fn journal_blocks(fs: &Fs) -> Result<Vec<(u64, u64)>> {
    let sb = fs.sb();
    let jino = sb.s_journal_inum;
    if sb.s_feature_compat & sys::EXT3_FEATURE_COMPAT_HAS_JOURNAL == 0 || jino == 0 {
        return Ok(Vec::new());
    }
    let inode = fs.read_inode_unchecked(jino)?;
    let bs = u64::from(fs.block_size());
    let blocks = inode.size().div_ceil(bs);
    if blocks > fs.blocks_count() {
        return Err(Error::new(
            i64::from(sys::EXT2_ET_FILESYSTEM_CORRUPTED),
            format!("the journal inode {jino} is larger than the filesystem"),
        ));
    }
    let mut out = Vec::new();
    for m in fs.map(jino, &inode, 0, blocks)? {
        if let MapKind::Mapped { pblk } | MapKind::Unwritten { pblk } = m.kind {
            out.push((pblk, pblk + m.len));
        }
    }
    Ok(out)
}

impl Fs {
    /// At a read-write open: every zone block must be marked in use, or the allocator
    /// could hand it out. A bitmap that says otherwise is corrupt: the blocks are marked
    /// (in memory) and the filesystem is errored, as ext4's bitmap validation does.
    pub(crate) fn protect_system_zone(&mut self) {
        // SAFETY: open read-write handle with bitmaps loaded.
        let map = unsafe { (*self.ptr()).block_map };
        if map.is_null() {
            return;
        }
        let mut corrupt = false;
        let end = self.blocks_count();
        let first = u64::from(self.sb().s_first_data_block);
        for &(s, e) in self.zone.ranges() {
            let (s, e) = (s.max(first), e.min(end));
            if s >= e {
                continue;
            }
            let mut out = 0u64;
            // SAFETY: valid bitmap, range inside the filesystem.
            let some_free =
                unsafe { sys::ext2fs_find_first_zero_generic_bmap(map, s, e - 1, &mut out) } == 0;
            if some_free {
                corrupt = true;
                // SAFETY: as above.
                unsafe { sys::ext2fs_mark_block_bitmap_range2(map, s, (e - s) as u32) };
            }
        }
        if corrupt {
            self.mark_error();
        }
    }

    /// The system zone's ranges `[start, end)` (for tests and diagnostics).
    pub fn system_zone(&self) -> Vec<(u64, u64)> {
        self.zone.ranges().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_overlap() {
        let z = SystemZone::from_ranges(vec![(10, 12), (0, 2), (11, 20), (30, 31), (5, 5)]);
        assert_eq!(z.ranges(), &[(0, 2), (10, 20), (30, 31)]);
        assert!(z.overlaps(0, 1));
        assert!(z.overlaps(19, 5));
        assert!(z.overlaps(2, 9), "[2, 11) reaches 10");
        assert!(!z.overlaps(2, 8), "[2, 10) stops short");
        assert!(!z.overlaps(20, 10));
        assert!(z.overlaps(25, 6));
        assert!(!z.overlaps(31, u64::MAX));
        assert!(!z.overlaps(5, 0));
    }
}
