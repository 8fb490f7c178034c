//! The inodes the kernel holds, readable without the metadata lock: GETATTR and STATX,
//! the commonest requests, are answered from here while other requests hold that lock
//! for libext2fs work.
//!
//! The cache is exact. Entries are added only under the metadata lock, from a fresh read;
//! every inode written under that lock (libext2fs's write hook logs them all, its own
//! writes included) is read again, or dropped, before the lock is released. A reader
//! outside the lock therefore sees an inode as it was before or after a concurrent
//! change, never an older one once that change's reply is sent.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockWriteGuard};

use ext2fs::{Ino, Inode};

use super::Meta;

/// Entries kept at most; beyond that the cache starts again empty.
const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub(crate) struct InodeCache {
    map: RwLock<HashMap<Ino, Inode>>,
}

impl InodeCache {
    pub fn get(&self, ino: Ino) -> Option<Inode> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&ino).copied()
    }

    /// Adds `inode`, just read under the metadata lock (`_held` shows it is held).
    pub fn insert(&self, _held: &Meta, ino: Ino, inode: Inode) {
        put(&mut self.write(), ino, inode);
    }

    /// Replaces each inode written under the metadata lock (still held) with its fresh
    /// copy, or drops it when there is none.
    pub fn refresh(&self, fresh: Vec<(Ino, Option<Inode>)>) {
        let mut map = self.write();
        for (ino, inode) in fresh {
            match inode {
                Some(inode) => put(&mut map, ino, inode),
                None => {
                    map.remove(&ino);
                }
            }
        }
    }

    /// Drops inodes that the kernel forgot.
    pub fn remove(&self, inos: &[Ino]) {
        if !inos.is_empty() {
            let mut map = self.write();
            for ino in inos {
                map.remove(ino);
            }
        }
    }

    pub fn clear(&self) {
        self.write().clear();
    }

    /// The map for a change. Nothing panics while holding it (plain map operations), so
    /// a poisoned lock still guards a whole map.
    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Ino, Inode>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Adds an entry, starting the map afresh when it is full.
fn put(map: &mut HashMap<Ino, Inode>, ino: Ino, inode: Inode) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(ino, inode);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use ext2fs::ROOT_INO;

    use crate::options::MountOptions;
    use crate::server::Server;

    fn server(dir: &std::path::Path) -> Server {
        let image = test_support::e2fs::new_ext4_image(dir, 16).unwrap();
        Server::open_image(&image, MountOptions::default()).unwrap()
    }

    #[test]
    fn getattr_is_answered_while_the_metadata_lock_is_held_and_never_stale() {
        if !test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let server = server(dir.path());
        let before = server.getattr(ROOT_INO).unwrap().attr.mode;
        std::thread::scope(|scope| {
            let mut meta = server.meta();
            let (tx, rx) = mpsc::channel();
            let server = &server;
            scope.spawn(move || tx.send(server.getattr(ROOT_INO).map(|a| a.attr.mode)));
            let answered = rx.recv_timeout(Duration::from_secs(10));
            assert_eq!(answered, Ok(Ok(before)), "answered without the lock");
            // A change under the lock: once it is released, no reader sees the old mode.
            let fs = meta.fs().unwrap();
            let mut root = fs.read_inode(ROOT_INO).unwrap();
            root.set_mode(libc::S_IFDIR | 0o700);
            fs.write_inode(ROOT_INO, &root).unwrap();
        });
        assert_eq!(
            server.getattr(ROOT_INO).unwrap().attr.mode,
            libc::S_IFDIR | 0o700
        );
        // The written inode was read again as the lock was released: the next GETATTR
        // is answered while another request holds the lock, with the new mode.
        std::thread::scope(|scope| {
            let _meta = server.meta();
            let (tx, rx) = mpsc::channel();
            let server = &server;
            scope.spawn(move || tx.send(server.getattr(ROOT_INO).map(|a| a.attr.mode)));
            let answered = rx.recv_timeout(Duration::from_secs(10));
            assert_eq!(
                answered,
                Ok(Ok(libc::S_IFDIR | 0o700)),
                "a written inode is answered from the cache, fresh"
            );
        });
    }
}
