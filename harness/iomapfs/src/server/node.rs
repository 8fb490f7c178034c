//! Names and inodes: lookup, attributes, creating, linking, renaming, removing.

use ext2fs::{FileType, Ino, Inode, Timestamp, ROOT_INO};
use fuse_wire::consts::*;
use fuse_wire::request::Request;
use fuse_wire::structs::SetattrIn;

use super::undo::{Undo, Undos};
use fuse_wire::structs::{AttrOut, EntryOut};

use super::{Errno, Meta, Server};
use crate::attr::now;

/// ext4's limit on hard links to one inode.
const LINK_MAX: u16 = 65000;
/// ext4's limit on a name's length.
const NAME_MAX: usize = 255;

fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    if name == b"." || name == b".." {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

fn s_isdir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

impl Server {
    /// Reads an inode that must be a directory.
    pub(crate) fn read_dir_inode(meta: &mut Meta, ino: Ino) -> Result<Inode, Errno> {
        let inode = meta.fs()?.read_inode(ino)?;
        if !s_isdir(inode.mode()) {
            return Err(Errno(libc::ENOTDIR));
        }
        Ok(inode)
    }

    /// A read or readdir updates atime as the kernel would for a local filesystem (FUSE
    /// leaves it to the server): never with noatime (nodiratime for directories) or on a
    /// read-only filesystem, always with strictatime, otherwise by relatime's rule: when
    /// atime is not after mtime or ctime, or is a day old.
    pub(crate) fn touch_atime(
        &self,
        meta: &mut Meta,
        ino: Ino,
        inode: &mut Inode,
        dir: bool,
    ) -> Result<(), Errno> {
        if self.atime_due(meta, inode, dir) {
            inode.set_atime(now());
            meta.writable()?.write_inode(ino, inode)?;
        }
        Ok(())
    }

    /// Whether reading `inode` now should update its atime (see `touch_atime`).
    pub(crate) fn atime_due(&self, meta: &mut Meta, inode: &Inode, dir: bool) -> bool {
        let flags = self.opts.ms_flags;
        let off = libc::MS_NOATIME | if dir { libc::MS_NODIRATIME } else { 0 };
        if flags & off != 0 || meta.writable().is_err() {
            return false;
        }
        let (a, m, c) = (inode.atime(), inode.mtime(), inode.ctime());
        let key = |x: Timestamp| (x.sec, x.nsec);
        flags & libc::MS_STRICTATIME != 0
            || key(a) <= key(m)
            || key(a) <= key(c)
            || now().sec.saturating_sub(a.sec) >= 24 * 3600
    }

    pub(crate) fn lookup(&self, parent: Ino, name: &[u8]) -> Result<EntryOut, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let mut meta = self.meta();
        if name == b"." {
            // The kernel's way back to an inode it no longer caches, from a file handle
            // (FUSE_EXPORT_SUPPORT): "." in any inode, a file's too. A freed inode is
            // gone (ENOENT, which the kernel reports as ESTALE); the kernel checks the
            // generation itself.
            let inode = meta.fs()?.read_inode(parent)?;
            if inode.links() == 0 {
                return Err(Errno(libc::ENOENT));
            }
            let out = self.entry_out(&mut meta, parent, &inode);
            return Ok(out);
        }
        Self::read_dir_inode(&mut meta, parent)?;
        let Some(ino) = meta.find(parent, name)? else {
            // A negative entry the kernel may cache: only this mount changes names.
            return Ok(EntryOut {
                entry_valid: self.opts.attr_timeout,
                ..Default::default()
            });
        };
        let inode = meta.fs()?.read_inode(ino)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(out)
    }

    pub(crate) fn getattr(&self, ino: Ino) -> Result<AttrOut, Errno> {
        let inode = self.attr_inode(ino)?;
        Ok(self.attr_out(ino, &inode))
    }

    /// The inode for GETATTR or STATX: from the cache, without the metadata lock, or read
    /// under it (and cached while the kernel holds the inode).
    pub(crate) fn attr_inode(&self, ino: Ino) -> Result<Inode, Errno> {
        if let Some(inode) = self.inodes.get(ino) {
            return Ok(inode);
        }
        let meta = self.meta();
        let inode = meta.fs.as_ref().ok_or(Errno(libc::EIO))?.read_inode(ino)?;
        if ino == ROOT_INO || meta.lookups.contains_key(&ino) {
            self.inodes.insert(&meta, ino, inode);
        }
        Ok(inode)
    }

    pub(crate) fn setattr(&self, ino: Ino, arg: &SetattrIn) -> Result<AttrOut, Errno> {
        let valid = arg.valid;
        // Size changes move data: hold the inode's data lock before the metadata lock.
        let _data = (valid & FATTR_SIZE != 0).then(|| self.data_lock(ino).write());
        let mut meta = self.meta();
        let fs = meta.writable()?;
        let mut inode = fs.read_inode(ino)?;
        let t = now();
        if valid & FATTR_MODE != 0 {
            inode.set_mode((inode.mode() & libc::S_IFMT) | (arg.mode & 0o7777));
        }
        if valid & FATTR_UID != 0 {
            inode.set_uid(arg.uid);
        }
        if valid & FATTR_GID != 0 {
            inode.set_gid(arg.gid);
        }
        if valid & FATTR_KILL_SUIDGID != 0 {
            let mut mode = inode.mode() & !libc::S_ISUID;
            // setgid without group-exec marks mandatory locking, not privilege: keep it.
            if mode & libc::S_IXGRP != 0 {
                mode &= !libc::S_ISGID;
            }
            inode.set_mode(mode);
        }
        if valid & FATTR_ATIME_NOW != 0 {
            inode.set_atime(t);
        } else if valid & FATTR_ATIME != 0 {
            inode.set_atime(Timestamp {
                sec: arg.atime as i64,
                nsec: arg.atimensec,
            });
        }
        if valid & FATTR_MTIME_NOW != 0 {
            inode.set_mtime(t);
        } else if valid & FATTR_MTIME != 0 {
            inode.set_mtime(Timestamp {
                sec: arg.mtime as i64,
                nsec: arg.mtimensec,
            });
        }
        if valid & FATTR_SIZE != 0 {
            if s_isdir(inode.mode()) {
                return Err(Errno(libc::EISDIR));
            }
            inode.set_mtime(t);
        }
        if valid & FATTR_CTIME != 0 {
            inode.set_ctime(Timestamp {
                sec: arg.ctime as i64,
                nsec: arg.ctimensec,
            });
        } else {
            inode.set_ctime(t);
        }
        // One inode write carries every attribute (the size change writes it itself).
        if valid & FATTR_SIZE != 0 {
            self.truncate(&mut meta, ino, &mut inode, arg.size)?;
        } else {
            meta.fs()?.write_inode(ino, &inode)?;
        }
        Ok(self.attr_out(ino, &inode))
    }

    pub(crate) fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        let mut meta = self.meta();
        let fs = meta.fs()?;
        let inode = fs.read_inode(ino)?;
        if inode.mode() & libc::S_IFMT != libc::S_IFLNK {
            return Err(Errno(libc::EINVAL));
        }
        Ok(fs.readlink(ino)?)
    }

    /// Owner and group of a new inode: the caller's, or the directory's group when the
    /// directory is setgid (and then new directories inherit setgid too).
    fn new_owner(
        meta: &mut Meta,
        req: &Request<'_>,
        parent: Ino,
        mode: u32,
    ) -> Result<(u32, u32, u32), Errno> {
        let dir = Self::read_dir_inode(meta, parent)?;
        let mut mode = mode;
        let gid = if dir.mode() & libc::S_ISGID != 0 {
            if s_isdir(mode) {
                mode |= libc::S_ISGID;
            }
            dir.gid()
        } else {
            req.header.gid
        };
        Ok((req.header.uid, gid, mode))
    }

    /// Allocates, fills and links a new non-directory inode; returns it with one lookup.
    /// Without a name (O_TMPFILE) the inode goes on the orphan list instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_node(
        &self,
        meta: &mut Meta,
        req: &Request<'_>,
        parent: Ino,
        name: Option<&[u8]>,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<(Ino, Inode), Errno> {
        if let Some(name) = name {
            check_name(name)?;
        }
        let (uid, gid, mode) = Self::new_owner(meta, req, parent, mode)?;
        if let Some(name) = name {
            if meta.find(parent, name)?.is_some() {
                return Err(Errno(libc::EEXIST));
            }
        }
        let (fs, cache) = meta.writable_indexed()?;
        let (mode, acls) = inherit_acls(fs, parent, mode, umask)?;
        let ino = fs.new_inode(parent, mode)?;
        let t = now();
        let mut inode = Inode::new(mode);
        inode.set_uid(uid);
        inode.set_gid(gid);
        inode.set_links(if name.is_some() { 1 } else { 0 });
        inode.set_atime(t);
        inode.set_mtime(t);
        inode.set_ctime(t);
        inode.set_crtime(t);
        inode.set_generation(rand_generation());
        if matches!(mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK) {
            inode.set_rdev(rdev);
        }
        // The inode is complete before a name points at it; until then, freeing it undoes all.
        let made = fs
            .write_new_inode(ino, &inode)
            .and_then(|()| {
                set_acls(fs, ino, &acls)
                    .map_err(|Errno(e)| ext2fs::Error::from_errno(e, "setting ACLs"))
            })
            .and_then(|()| match name {
                Some(name) => cache.link(fs, parent, name, ino, FileType::from_mode(mode)),
                None => fs.orphan_add(ino).map(|()| None),
            });
        let block = match made {
            Ok(block) => block,
            Err(e) => {
                if meta.fs()?.free_inode(ino).is_err() {
                    self.mark_errored(meta, "an inode of a failed create could not be freed");
                }
                return Err(e.into());
            }
        };
        if let Some(name) = name {
            meta.dircache.added(parent, name, ino, block);
        }
        let inode = meta.fs()?.read_inode(ino)?;
        Ok((ino, inode))
    }

    pub(crate) fn mknod(
        &self,
        req: &Request<'_>,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<EntryOut, Errno> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {}
            _ => return Err(Errno(libc::EINVAL)),
        }
        let mut meta = self.meta();
        let (ino, inode) = self.make_node(&mut meta, req, parent, Some(name), mode, umask, rdev)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(out)
    }

    pub(crate) fn mkdir(
        &self,
        req: &Request<'_>,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<EntryOut, Errno> {
        check_name(name)?;
        let mut meta = self.meta();
        let (uid, gid, mode) =
            Self::new_owner(&mut meta, req, parent, libc::S_IFDIR | (mode & 0o7777))?;
        if meta.find(parent, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let (fs, cache) = meta.writable_indexed()?;
        let parent_inode = fs.read_inode(parent)?;
        if parent_inode.links() >= LINK_MAX {
            return Err(Errno(libc::EMLINK));
        }
        let (mode, acls) = inherit_acls(fs, parent, mode, umask)?;
        // libext2fs' mkdir undoes itself when one of its steps fails.
        let (ino, block) = cache.mkdir(fs, parent, name, (mode, uid, gid))?;
        if self.fault() == Some(crate::fault::Fault::PanicInMkdir) {
            panic!("fault panic_in_mkdir: mkdir of inode {ino} panics holding the metadata lock");
        }
        if let Err(e) = set_acls(fs, ino, &acls) {
            self.undo_mkdir(&mut meta, parent, name, ino);
            return Err(e);
        }
        meta.dircache.added(parent, name, ino, block);
        let inode = meta.fs()?.read_inode(ino)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(out)
    }

    /// Removes a directory `mkdir` just made (its ACLs could not be set).
    fn undo_mkdir(&self, meta: &mut Meta, parent: Ino, name: &[u8], ino: Ino) {
        let undone = meta.fs().and_then(|fs| {
            fs.unlink(parent, name)?;
            let mut p = fs.read_inode(parent)?;
            if p.links() > 2 {
                p.set_links(p.links() - 1);
            }
            fs.write_inode(parent, &p)?;
            Ok(fs.free_inode(ino)?)
        });
        if undone.is_err() {
            self.mark_errored(meta, "a failed mkdir could not be undone");
        }
    }

    pub(crate) fn symlink(
        &self,
        req: &Request<'_>,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<EntryOut, Errno> {
        check_name(name)?;
        if target.is_empty() {
            return Err(Errno(libc::ENOENT));
        }
        if target.len() >= self.block_size as usize {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let mut meta = self.meta();
        let (uid, gid, _) = Self::new_owner(&mut meta, req, parent, libc::S_IFLNK | 0o777)?;
        if meta.find(parent, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let fs = meta.writable()?;
        // libext2fs' symlink undoes itself when one of its steps fails; it sets all times.
        let ino = fs.symlink(parent, name, target, uid, gid)?;
        meta.dircache.added(parent, name, ino, None);
        let inode = meta.fs()?.read_inode(ino)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(out)
    }

    /// The inode just lost its last name (it is on the orphan list already): it is freed
    /// now, or when the kernel forgets it if the kernel still holds it. A failure to free
    /// is logged, not returned — the name is gone, and the orphan list keeps the inode for
    /// the next attempt (forget, unmount, or the next mount).
    fn orphaned(&self, meta: &mut Meta, ino: Ino) {
        meta.orphans.insert(ino);
        if let Err(e) = self.free_if_orphan(meta, ino) {
            tracing::warn!(
                ino,
                "cannot free an unlinked inode now ({e:?}); it stays on the orphan list"
            );
        }
    }

    pub(crate) fn unlink(&self, parent: Ino, name: &[u8]) -> Result<(), Errno> {
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        let ino = meta.find(parent, name)?.ok_or(Errno(libc::ENOENT))?;
        let (fs, cache) = meta.writable_indexed()?;
        let mut inode = fs.read_inode(ino)?;
        if s_isdir(inode.mode()) {
            return Err(Errno(libc::EISDIR));
        }
        let mut block = None;
        let ftype = FileType::from_mode(inode.mode());
        let last = inode.links() <= 1;
        let mut undo = Undos::default();
        let steps = (|| -> Result<(), ext2fs::Error> {
            // On the orphan list before it can be nameless; the name goes before the count.
            if last {
                fs.orphan_add(ino)?;
                undo.push(Undo::OrphanDel(ino));
            }
            block = cache.unlink(fs, parent, name)?;
            undo.push(Undo::Link(parent, name.to_vec(), ino, ftype));
            inode.set_links(inode.links().saturating_sub(1));
            inode.set_ctime(now());
            fs.write_inode(ino, &inode)
        })();
        if let Err(e) = steps {
            undo.rollback(self, &mut meta, "unlink");
            return Err(e.into());
        }
        meta.dircache.removed(parent, name, block);
        if last {
            self.orphaned(&mut meta, ino);
        }
        Ok(())
    }

    pub(crate) fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<(), Errno> {
        if name == b"." {
            return Err(Errno(libc::EINVAL));
        }
        if name == b".." {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        let ino = meta.find(parent, name)?.ok_or(Errno(libc::ENOENT))?;
        let (fs, cache) = meta.writable_indexed()?;
        let mut inode = fs.read_inode(ino)?;
        let mut block = None;
        if !s_isdir(inode.mode()) {
            return Err(Errno(libc::ENOTDIR));
        }
        if !fs.is_dir_empty(ino)? {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let mut undo = Undos::default();
        let steps = (|| -> Result<(), Errno> {
            fs.orphan_add(ino)?;
            undo.push(Undo::OrphanDel(ino));
            block = cache.unlink(fs, parent, name)?;
            undo.push(Undo::Link(parent, name.to_vec(), ino, FileType::Dir));
            // The removed directory's ".." no longer links the parent.
            adjust_links(fs, parent, -1)?;
            undo.push(Undo::Links(parent, 1));
            inode.set_links(0);
            inode.set_ctime(now());
            Ok(fs.write_inode(ino, &inode)?)
        })();
        if let Err(e) = steps {
            undo.rollback(self, &mut meta, "rmdir");
            return Err(e);
        }
        meta.dircache.removed(parent, name, block);
        meta.dircache.forget_dir(ino);
        self.orphaned(&mut meta, ino);
        Ok(())
    }

    pub(crate) fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<EntryOut, Errno> {
        check_name(name)?;
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        if meta.find(parent, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let (fs, cache) = meta.writable_indexed()?;
        let mut inode = fs.read_inode(ino)?;
        if s_isdir(inode.mode()) {
            return Err(Errno(libc::EPERM));
        }
        let mut block = None;
        if inode.links() >= LINK_MAX {
            return Err(Errno(libc::EMLINK));
        }
        let was_orphan = inode.links() == 0;
        let mut undo = Undos::default();
        let steps = (|| -> Result<(), ext2fs::Error> {
            // The count goes up before the name appears: never fewer links than names.
            inode.set_links(inode.links() + 1);
            inode.set_ctime(now());
            fs.write_inode(ino, &inode)?;
            undo.push(Undo::Links(ino, -1));
            block = cache.link(fs, parent, name, ino, FileType::from_mode(inode.mode()))?;
            Ok(())
        })();
        if let Err(e) = steps {
            undo.rollback(self, &mut meta, "link");
            return Err(e.into());
        }
        if was_orphan {
            // An O_TMPFILE inode gets its first name. Left on the list by a failure here, it
            // is harmless: the next mount sees it has links and only trims it to its size.
            if let Err(e) = fs.orphan_del(ino) {
                tracing::warn!(ino, "cannot take a linked inode off the orphan list: {e}");
            }
        }
        meta.dircache.added(parent, name, ino, block);
        meta.orphans.remove(&ino);
        let inode = meta.fs()?.read_inode(ino)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(out)
    }

    pub(crate) fn rename(
        &self,
        old_dir: Ino,
        old_name: &[u8],
        new_dir: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        check_name(old_name)?;
        check_name(new_name)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0
        {
            return Err(Errno(libc::EINVAL));
        }
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, old_dir)?;
        Self::read_dir_inode(&mut meta, new_dir)?;
        let src = meta.find(old_dir, old_name)?.ok_or(Errno(libc::ENOENT))?;
        let dst = meta.find(new_dir, new_name)?;
        let (fs, cache) = meta.writable_indexed()?;
        let src_inode = fs.read_inode(src)?;
        let src_type = FileType::from_mode(src_inode.mode());
        let src_is_dir = src_type == FileType::Dir;
        let cross = old_dir != new_dir;

        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno(libc::ENOENT))?;
            let dst_type = FileType::from_mode(fs.read_inode(dst)?.mode());
            let mut undo = Undos::default();
            let steps = (|| -> Result<(), Errno> {
                // Each directory gains the other's "..": counts go up first, down last.
                let into_new = i32::from(src_is_dir) - i32::from(dst_type == FileType::Dir);
                let (grows, shrinks) = if into_new > 0 {
                    (new_dir, old_dir)
                } else {
                    (old_dir, new_dir)
                };
                if cross && into_new != 0 {
                    adjust_links(fs, grows, 1)?;
                    undo.push(Undo::Links(grows, -1));
                }
                // The two entries swap inode numbers in place: no name is ever missing.
                fs.set_entry(old_dir, old_name, dst, dst_type)?;
                undo.push(Undo::SetEntry(old_dir, old_name.to_vec(), src, src_type));
                fs.set_entry(new_dir, new_name, src, src_type)?;
                undo.push(Undo::SetEntry(new_dir, new_name.to_vec(), dst, dst_type));
                if cross {
                    if src_is_dir {
                        fs.set_dotdot(src, new_dir)?;
                        undo.push(Undo::Dotdot(src, old_dir));
                    }
                    if dst_type == FileType::Dir {
                        fs.set_dotdot(dst, old_dir)?;
                        undo.push(Undo::Dotdot(dst, new_dir));
                    }
                    if into_new != 0 {
                        adjust_links(fs, shrinks, -1)?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = steps {
                undo.rollback(self, &mut meta, "rename (exchange)");
                return Err(e);
            }
            meta.dircache.retargeted(old_dir, old_name, dst);
            meta.dircache.retargeted(new_dir, new_name, src);
            touch_ctimes(&mut meta, &[src, dst]);
            return Ok(());
        }

        let mut replaced = None;
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno(libc::EEXIST));
            }
            if dst == src {
                return Ok(());
            }
            let dst_inode = fs.read_inode(dst)?;
            let dst_is_dir = s_isdir(dst_inode.mode());
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(Errno(libc::ENOTDIR)),
                (false, true) => return Err(Errno(libc::EISDIR)),
                (true, true) if !fs.is_dir_empty(dst)? => return Err(Errno(libc::ENOTEMPTY)),
                _ => {}
            }
            replaced = Some((dst, dst_inode));
        }
        let mut undo = Undos::default();
        let (mut new_block, mut old_block) = (None, None);
        let steps = (|| -> Result<(), Errno> {
            // A replaced inode that loses its last link is on the orphan list first.
            let dst_last = replaced
                .as_ref()
                .is_some_and(|(_, i)| s_isdir(i.mode()) || i.links() <= 1);
            if let (Some((dst, _)), true) = (&replaced, dst_last) {
                fs.orphan_add(*dst)?;
                undo.push(Undo::OrphanDel(*dst));
            }
            // A directory moving in counts for its new parent before it is there.
            if src_is_dir && cross {
                adjust_links(fs, new_dir, 1)?;
                undo.push(Undo::Links(new_dir, -1));
            }
            // The new name first (or the replaced name retargeted in place), then the old
            // name goes: a failure between leaves both names, never none.
            match &replaced {
                Some((dst, dst_inode)) => {
                    fs.set_entry(new_dir, new_name, src, src_type)?;
                    let dst_type = FileType::from_mode(dst_inode.mode());
                    undo.push(Undo::SetEntry(new_dir, new_name.to_vec(), *dst, dst_type));
                }
                None => {
                    new_block = cache.link(fs, new_dir, new_name, src, src_type)?;
                    undo.push(Undo::Unlink(new_dir, new_name.to_vec()));
                }
            }
            old_block = cache.unlink(fs, old_dir, old_name)?;
            undo.push(Undo::Link(old_dir, old_name.to_vec(), src, src_type));
            if src_is_dir && cross {
                fs.set_dotdot(src, new_dir)?;
                undo.push(Undo::Dotdot(src, old_dir));
                adjust_links(fs, old_dir, -1)?;
                undo.push(Undo::Links(old_dir, 1));
            }
            if let Some((dst, mut dst_inode)) = replaced {
                if s_isdir(dst_inode.mode()) {
                    // The replaced directory's ".." no longer links the new parent.
                    adjust_links(fs, new_dir, -1)?;
                    undo.push(Undo::Links(new_dir, 1));
                    dst_inode.set_links(0);
                } else {
                    dst_inode.set_links(dst_inode.links().saturating_sub(1));
                }
                dst_inode.set_ctime(now());
                fs.write_inode(dst, &dst_inode)?;
            }
            Ok(())
        })();
        if let Err(e) = steps {
            undo.rollback(self, &mut meta, "rename");
            return Err(e);
        }
        meta.dircache.removed(old_dir, old_name, old_block);
        match replaced {
            Some(_) => meta.dircache.retargeted(new_dir, new_name, src),
            None => meta.dircache.added(new_dir, new_name, src, new_block),
        }
        if let Some((dst, dst_inode)) = replaced {
            if s_isdir(dst_inode.mode()) {
                meta.dircache.forget_dir(dst);
            }
            if meta.fs()?.read_inode(dst)?.links() == 0 {
                self.orphaned(&mut meta, dst);
            }
        }
        touch_ctimes(&mut meta, &[src]);
        Ok(())
    }
}

/// Adds `delta` to a directory's link count and dates it (a subdirectory came or went;
/// libext2fs already dated it for the name change itself).
fn adjust_links(fs: &mut ext2fs::Fs, dir: Ino, delta: i32) -> Result<(), Errno> {
    let mut inode = fs.read_inode(dir)?;
    let t = now();
    inode.set_mtime(t);
    inode.set_ctime(t);
    inode.set_links((i32::from(inode.links()) + delta).clamp(0, i32::from(u16::MAX)) as u16);
    fs.write_inode(dir, &inode)?;
    Ok(())
}

/// Sets the ctime of inodes a rename changed. The rename is done: a failure here is logged.
fn touch_ctimes(meta: &mut Meta, inos: &[Ino]) {
    for &ino in inos {
        let done = meta.fs().and_then(|fs| {
            let mut inode = fs.read_inode(ino)?;
            inode.set_ctime(now());
            Ok(fs.write_inode(ino, &inode)?)
        });
        if let Err(e) = done {
            tracing::warn!(ino, "cannot update the ctime after a rename: {e:?}");
        }
    }
}

/// A fresh inode generation, so a reused inode number is a different file to NFS and FUSE.
fn rand_generation() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now().nsec as u64);
    h.finish() as u32
}

/// ACLs a new inode gets from its directory: (access, default).
type InheritedAcls = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The mode and ACLs of a new inode in `parent`: the directory's default ACL when it has
/// one (directories also inherit it as their own default), else the caller's umask.
fn inherit_acls(
    fs: &ext2fs::Fs,
    parent: Ino,
    mode: u32,
    umask: u32,
) -> Result<(u32, InheritedAcls), Errno> {
    let Some(default) = fs.xattr_get(parent, super::acl::DEFAULT)? else {
        return Ok((mode & !(umask & 0o777), (None, None)));
    };
    let Some(mut acl) = super::acl::Acl::parse(&default) else {
        tracing::warn!(parent, "ignoring a malformed default ACL");
        return Ok((mode & !(umask & 0o777), (None, None)));
    };
    let new_mode = acl.create_masq(mode);
    let access = (!acl.is_equivalent_to_mode()).then(|| acl.to_bytes());
    let dir_default = s_isdir(mode).then_some(default);
    Ok((new_mode, (access, dir_default)))
}

fn set_acls(fs: &mut ext2fs::Fs, ino: Ino, acls: &InheritedAcls) -> Result<(), Errno> {
    use ext2fs::XattrSetMode::Any;
    if let Some(a) = &acls.0 {
        fs.xattr_set(ino, super::acl::ACCESS, a, Any)?;
    }
    if let Some(d) = &acls.1 {
        fs.xattr_set(ino, super::acl::DEFAULT, d, Any)?;
    }
    Ok(())
}
