//! Which blocks of a filesystem hold anything, from the block bitmap: what a copy of the
//! filesystem must contain (iomapfs saves them before a recorded session, so the session
//! can be replayed on the same filesystem elsewhere).

use crate::error::{check, Result};
use crate::fs::Fs;
use crate::sys;

impl Fs {
    /// The blocks in use, as sorted runs `[start, end)` in block numbers: the blocks before
    /// the first data block (boot block) and every block the block bitmap marks. Reads the
    /// bitmaps when they are not loaded (a read-only open).
    pub fn used_block_runs(&self) -> Result<Vec<(u64, u64)>> {
        // SAFETY: open handle; block_map is null until ext2fs_read_bitmaps.
        if unsafe { (*self.ptr()).block_map }.is_null() {
            // SAFETY: open handle.
            check(
                unsafe { sys::ext2fs_read_block_bitmap(self.ptr()) },
                "reading the block bitmap",
            )?;
        }
        // SAFETY: loaded above; owned by the handle.
        let map = unsafe { (*self.ptr()).block_map };
        let first = u64::from(self.sb().s_first_data_block);
        let end = self.blocks_count();
        let mut runs = vec![];
        if first > 0 {
            runs.push((0, first));
        }
        let mut at = first;
        while at < end {
            let mut set = 0u64;
            // SAFETY: valid bitmap, range inside the filesystem; 0 means found.
            if unsafe { sys::ext2fs_find_first_set_generic_bmap(map, at, end - 1, &mut set) } != 0 {
                break;
            }
            let mut clear = end;
            let mut out = 0u64;
            // SAFETY: as above.
            if unsafe { sys::ext2fs_find_first_zero_generic_bmap(map, set, end - 1, &mut out) } == 0
            {
                clear = out;
            }
            match runs.last_mut() {
                Some((_, e)) if *e == set => *e = clear,
                _ => runs.push((set, clear)),
            }
            at = clear;
        }
        Ok(runs)
    }
}
