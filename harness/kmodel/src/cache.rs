//! The part of the page cache the model keeps: dirty blocks, not yet written back.
//!
//! Clean pages are not cached (every read of a non-dirty block asks the server for a
//! mapping), which is the same as a kernel whose clean page cache was just dropped; dirty
//! data is what makes writeback, WRITEBACK mappings and writeback ioends happen.

use std::collections::BTreeMap;

/// Dirty blocks of one inode, keyed by their byte offset in the file (block aligned).
#[derive(Debug, Default, Clone)]
pub struct DirtyBlocks {
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl DirtyBlocks {
    pub fn get(&self, offset: u64) -> Option<&Vec<u8>> {
        self.blocks.get(&offset)
    }

    pub fn get_mut(&mut self, offset: u64) -> Option<&mut Vec<u8>> {
        self.blocks.get_mut(&offset)
    }

    pub fn insert(&mut self, offset: u64, data: Vec<u8>) {
        self.blocks.insert(offset, data);
    }

    pub fn remove(&mut self, offset: u64) -> Option<Vec<u8>> {
        self.blocks.remove(&offset)
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.blocks.contains_key(&offset)
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Offsets of the dirty blocks starting in `[start, end)`, in order.
    pub fn offsets_in(&self, start: u64, end: u64) -> Vec<u64> {
        if start >= end {
            return Vec::new();
        }
        self.blocks.range(start..end).map(|(&o, _)| o).collect()
    }

    /// The first dirty block starting in `[start, end)`.
    pub fn first_in(&self, start: u64, end: u64) -> Option<u64> {
        if start >= end {
            return None;
        }
        self.blocks.range(start..end).next().map(|(&o, _)| o)
    }

    /// Drops every dirty block starting at or after `start` (truncate, eviction).
    pub fn drop_from(&mut self, start: u64) {
        self.blocks.split_off(&start);
    }

    /// Drops everything (eviction of an unlinked inode).
    pub fn clear(&mut self) {
        self.blocks.clear();
    }
}
