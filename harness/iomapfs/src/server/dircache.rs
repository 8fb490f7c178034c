//! An in-memory index of directory entries, so lookups and the "does this name exist"
//! checks of create/link/rename do not rescan a directory's blocks each time (libext2fs
//! searches linear directories block by block). Only this server changes the filesystem,
//! so every change goes through here too and the index stays exact.

use std::collections::HashMap;

use ext2fs::{Fs, Ino};

/// Directories smaller than this many bytes are scanned directly: indexing costs more.
const INDEX_MIN_DIR_BYTES: u64 = 16 * 1024;
/// Total entries kept across all indexed directories before everything is dropped.
const MAX_ENTRIES: usize = 2_000_000;

#[derive(Default)]
pub struct DirCache {
    dirs: HashMap<Ino, HashMap<Vec<u8>, Ino>>,
    entries: usize,
}

impl DirCache {
    /// Looks `name` up in `dir`, through the index when the directory has (or deserves) one.
    pub fn lookup(
        &mut self,
        fs: &Fs,
        dir: Ino,
        dir_size: u64,
        name: &[u8],
    ) -> ext2fs::Result<Option<Ino>> {
        if let Some(names) = self.dirs.get(&dir) {
            return Ok(names.get(name).copied());
        }
        if dir_size < INDEX_MIN_DIR_BYTES {
            return fs.lookup(dir, name);
        }
        let mut names = HashMap::new();
        fs.read_dir(dir, 0, |e| {
            if e.name != b"." && e.name != b".." {
                names.insert(e.name.to_vec(), e.ino);
            }
            true
        })?;
        let found = names.get(name).copied();
        self.entries += names.len();
        if self.entries > MAX_ENTRIES {
            self.clear();
        } else {
            self.dirs.insert(dir, names);
        }
        Ok(found)
    }

    pub fn added(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        if let Some(names) = self.dirs.get_mut(&dir) {
            if names.insert(name.to_vec(), ino).is_none() {
                self.entries += 1;
            }
        }
    }

    pub fn removed(&mut self, dir: Ino, name: &[u8]) {
        if let Some(names) = self.dirs.get_mut(&dir) {
            if names.remove(name).is_some() {
                self.entries -= 1;
            }
        }
    }

    /// A directory went away (or can no longer be trusted): forget its index.
    pub fn forget_dir(&mut self, dir: Ino) {
        if let Some(names) = self.dirs.remove(&dir) {
            self.entries -= names.len();
        }
    }

    pub fn clear(&mut self) {
        self.dirs.clear();
        self.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_tracked_only_for_indexed_directories() {
        let mut c = DirCache::default();
        c.added(5, b"a", 12);
        assert!(c.dirs.is_empty(), "no index is created by a change");
        c.dirs.insert(5, HashMap::new());
        c.added(5, b"a", 12);
        c.added(5, b"a", 12);
        assert_eq!(c.entries, 1);
        c.removed(5, b"a");
        c.removed(5, b"a");
        assert_eq!(c.entries, 0);
        c.added(5, b"b", 13);
        c.forget_dir(5);
        assert_eq!(c.entries, 0);
        assert!(c.dirs.is_empty());
    }
}
