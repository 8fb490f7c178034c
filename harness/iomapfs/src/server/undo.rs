//! Undoing the finished steps of a multi-step change that failed midway.
//!
//! There is no journal: a rename, link or unlink is several writes, and a failure between
//! two of them (ENOSPC growing a directory, an I/O error) must not leave a name lost, a
//! link count too low or an inode nothing names. Each operation orders its steps so that
//! every intermediate state is safe for e2fsck (link counts go up before names appear and
//! down after they go; an inode loses its last name only once it is on the orphan list),
//! and records here how to take each finished step back. If an undo fails too, the
//! filesystem is errored, so it is checked before anything changes it again.

use ext2fs::{FileType, Ino};

use super::{Errno, Meta, Server};
use crate::attr::now;

/// One finished step, and how to take it back.
pub(crate) enum Undo {
    /// Add `delta` back to an inode's link count.
    Links(Ino, i32),
    /// Remove a name that was added.
    Unlink(Ino, Vec<u8>),
    /// Add back a name that was removed.
    Link(Ino, Vec<u8>, Ino, FileType),
    /// Point a name back at the inode it named.
    SetEntry(Ino, Vec<u8>, Ino, FileType),
    /// Point a directory's ".." back at its old parent.
    Dotdot(Ino, Ino),
    /// Take an inode back off the orphan list.
    OrphanDel(Ino),
}

/// The steps of one operation done so far, most recent last.
#[derive(Default)]
pub(crate) struct Undos(Vec<Undo>);

impl Undos {
    pub(crate) fn push(&mut self, undo: Undo) {
        self.0.push(undo);
    }

    /// Takes the finished steps back, newest first. Directory indexes of the directories
    /// involved are dropped (they are rebuilt from disk). If a step cannot be taken back,
    /// the filesystem is errored.
    pub(crate) fn rollback(self, server: &Server, meta: &mut Meta, what: &str) {
        for undo in self.0.into_iter().rev() {
            let dir = match &undo {
                Undo::Unlink(d, _) | Undo::Link(d, ..) | Undo::SetEntry(d, ..) => Some(*d),
                _ => None,
            };
            if let Some(d) = dir {
                meta.dircache.forget_dir(d);
            }
            if let Err(e) = apply(meta, undo) {
                server.mark_errored(
                    meta,
                    &format!("a failed {what} could not be undone ({e:?})"),
                );
            }
        }
    }
}

fn apply(meta: &mut Meta, undo: Undo) -> Result<(), Errno> {
    let fs = meta.fs()?;
    match undo {
        Undo::Links(ino, delta) => {
            let mut inode = fs.read_inode(ino)?;
            let links = (i32::from(inode.links()) + delta).clamp(0, i32::from(u16::MAX));
            inode.set_links(links as u16);
            inode.set_ctime(now());
            fs.write_inode(ino, &inode)?;
        }
        Undo::Unlink(dir, name) => fs.unlink(dir, &name)?,
        Undo::Link(dir, name, ino, ftype) => fs.link(dir, &name, ino, ftype)?,
        Undo::SetEntry(dir, name, ino, ftype) => fs.set_entry(dir, &name, ino, ftype)?,
        Undo::Dotdot(dir, parent) => fs.set_dotdot(dir, parent)?,
        Undo::OrphanDel(ino) => fs.orphan_del(ino)?,
    }
    Ok(())
}
