//! An in-memory index of directory entries, so lookups and the "does this name exist"
//! checks of create/link/rename do not rescan a directory's blocks each time (libext2fs
//! searches linear directories block by block). Only this server changes the filesystem,
//! so every change goes through here too and the index stays exact.
//!
//! Because the index is exact, names are added to an indexed linear directory without a
//! scan (`Fs::link_new`: into a block the index saw an entry leave, or the last one) and
//! removed by looking first in the block the index last saw them in.

use std::collections::{BTreeSet, HashMap};

use ext2fs::{FileType, Fs, Ino};

/// One indexed directory.
#[derive(Default)]
struct Dir {
    /// Name → (inode, logical block of the entry in a linear directory).
    names: HashMap<Vec<u8>, (Ino, Option<u64>)>,
    /// Blocks that lost an entry since the index was built: they may have room.
    room: BTreeSet<u64>,
}

/// Directories smaller than this many bytes are scanned directly: indexing costs more.
const INDEX_MIN_DIR_BYTES: u64 = 16 * 1024;
/// Total entries kept across all indexed directories before everything is dropped.
const MAX_ENTRIES: usize = 2_000_000;

#[derive(Default)]
pub struct DirCache {
    dirs: HashMap<Ino, Dir>,
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
        if let Some(d) = self.dirs.get(&dir) {
            return Ok(d.names.get(name).map(|&(ino, _)| ino));
        }
        if dir_size < INDEX_MIN_DIR_BYTES {
            return fs.lookup(dir, name);
        }
        let mut names = HashMap::new();
        fs.read_dir(dir, 0, |e| {
            if e.name != b"." && e.name != b".." {
                names.insert(e.name.to_vec(), (e.ino, e.block));
            }
            true
        })?;
        let found = names.get(name).map(|&(ino, _)| ino);
        self.entries += names.len();
        if self.entries > MAX_ENTRIES {
            self.clear();
        } else {
            let room = BTreeSet::new();
            self.dirs.insert(dir, Dir { names, room });
        }
        Ok(found)
    }

    /// Adds the entry `name` → `ino` to `dir`, which the caller has just found not to
    /// hold `name` (through `lookup`). Indexed directories skip libext2fs' scan. The index
    /// itself changes only at `added`, once the whole operation stands. Returns where the
    /// entry went, for `added`.
    pub fn link(
        &mut self,
        fs: &mut Fs,
        dir: Ino,
        name: &[u8],
        ino: Ino,
        ftype: FileType,
    ) -> ext2fs::Result<Option<u64>> {
        match self.dirs.get_mut(&dir) {
            Some(d) => fs.link_new(dir, name, ino, ftype, &mut d.room),
            None => fs.link(dir, name, ino, ftype).map(|()| None),
        }
    }

    /// `Fs::mkdir` the same way as `link`: returns the inode and where its entry went.
    pub fn mkdir(
        &mut self,
        fs: &mut Fs,
        parent: Ino,
        name: &[u8],
        (mode, uid, gid): (u32, u32, u32),
    ) -> ext2fs::Result<(Ino, Option<u64>)> {
        match self.dirs.get_mut(&parent) {
            Some(d) => fs.mkdir_new(parent, name, mode, uid, gid, &mut d.room),
            None => fs
                .mkdir(parent, name, mode, uid, gid)
                .map(|ino| (ino, None)),
        }
    }

    /// Removes the entry `name` from `dir`, looking first where the index saw it. Returns
    /// the block it left, for `removed`.
    pub fn unlink(&self, fs: &mut Fs, dir: Ino, name: &[u8]) -> ext2fs::Result<Option<u64>> {
        let hint = self
            .dirs
            .get(&dir)
            .and_then(|d| d.names.get(name))
            .and_then(|&(_, block)| block);
        fs.unlink_hinted(dir, name, hint)
    }

    pub fn added(&mut self, dir: Ino, name: &[u8], ino: Ino, block: Option<u64>) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            if d.names.insert(name.to_vec(), (ino, block)).is_none() {
                self.entries += 1;
            }
        }
    }

    /// `name` left `dir`; `block` (where it was) now has room.
    pub fn removed(&mut self, dir: Ino, name: &[u8], block: Option<u64>) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            if d.names.remove(name).is_some() {
                self.entries -= 1;
            }
            d.room.extend(block);
        }
    }

    /// An entry changed its inode in place (rename over a name, exchange).
    pub fn retargeted(&mut self, dir: Ino, name: &[u8], ino: Ino) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            match d.names.get_mut(name) {
                Some(e) => e.0 = ino,
                None => {
                    d.names.insert(name.to_vec(), (ino, None));
                    self.entries += 1;
                }
            }
        }
    }

    /// A directory went away (or can no longer be trusted): forget its index.
    pub fn forget_dir(&mut self, dir: Ino) {
        if let Some(d) = self.dirs.remove(&dir) {
            self.entries -= d.names.len();
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
        c.added(5, b"a", 12, Some(0));
        assert!(c.dirs.is_empty(), "no index is created by a change");
        c.dirs.insert(5, Dir::default());
        c.added(5, b"a", 12, Some(3));
        c.added(5, b"a", 12, Some(3));
        assert_eq!(c.entries, 1);
        c.retargeted(5, b"a", 14);
        assert_eq!(c.dirs[&5].names[b"a".as_slice()], (14, Some(3)));
        c.removed(5, b"a", Some(3));
        c.removed(5, b"a", Some(3));
        assert_eq!(c.entries, 0);
        assert!(
            c.dirs[&5].room.contains(&3),
            "the block an entry left has room"
        );
        c.added(5, b"b", 13, None);
        c.forget_dir(5);
        assert_eq!(c.entries, 0);
        assert!(c.dirs.is_empty());
    }
}
