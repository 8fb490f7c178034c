//! Names and inodes: lookup, attributes, creating, linking, renaming, removing.

use ext2fs::{FileType, Ino, Inode, Timestamp};
use fuse_wire::consts::*;
use fuse_wire::request::Request;
use fuse_wire::structs::SetattrIn;

use super::{bytes, Errno, Meta, Reply, Server};
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
    pub(crate) fn touch_atime(&self, meta: &mut Meta, ino: Ino, inode: &mut Inode, dir: bool) -> Result<(), Errno> {
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

    /// Adjusts a directory's link count (and times) when a subdirectory comes or goes;
    /// libext2fs already dated the directory for the name change itself.
    fn touch_dir(meta: &mut Meta, dir: Ino, links_delta: i32) -> Result<(), Errno> {
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(dir)?;
        let t = now();
        inode.set_mtime(t);
        inode.set_ctime(t);
        if links_delta != 0 {
            inode.set_links((inode.links() as i32 + links_delta).clamp(0, u16::MAX as i32) as u16);
        }
        fs.write_inode(dir, &inode)?;
        Ok(())
    }

    pub(super) fn lookup(&self, parent: Ino, name: &[u8]) -> Reply {
        if name.len() > NAME_MAX {
            return Err(Errno(libc::ENAMETOOLONG));
        }
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        let Some(ino) = meta.find(parent, name)? else {
            // A negative entry the kernel may cache: only this mount changes names.
            return Ok(bytes(&fuse_wire::structs::EntryOut {
                entry_valid: self.opts.attr_timeout,
                ..Default::default()
            }));
        };
        let inode = meta.fs()?.read_inode(ino)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(bytes(&out))
    }

    pub(super) fn getattr(&self, ino: Ino) -> Reply {
        let mut meta = self.meta();
        let inode = meta.fs()?.read_inode(ino)?;
        Ok(self.attr_out(ino, &inode))
    }

    pub(super) fn setattr(&self, ino: Ino, arg: &SetattrIn) -> Reply {
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
            inode.set_atime(Timestamp { sec: arg.atime as i64, nsec: arg.atimensec });
        }
        if valid & FATTR_MTIME_NOW != 0 {
            inode.set_mtime(t);
        } else if valid & FATTR_MTIME != 0 {
            inode.set_mtime(Timestamp { sec: arg.mtime as i64, nsec: arg.mtimensec });
        }
        if valid & FATTR_SIZE != 0 {
            if s_isdir(inode.mode()) {
                return Err(Errno(libc::EISDIR));
            }
            self.truncate(&mut meta, ino, &mut inode, arg.size)?;
            inode.set_mtime(t);
        }
        if valid & FATTR_CTIME != 0 {
            inode.set_ctime(Timestamp { sec: arg.ctime as i64, nsec: arg.ctimensec });
        } else {
            inode.set_ctime(t);
        }
        meta.fs()?.write_inode(ino, &inode)?;
        Ok(self.attr_out(ino, &inode))
    }

    pub(super) fn readlink(&self, ino: Ino) -> Reply {
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
    fn new_owner(meta: &mut Meta, req: &Request<'_>, parent: Ino, mode: u32) -> Result<(u32, u32, u32), Errno> {
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
        let fs = meta.writable()?;
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
        fs.write_new_inode(ino, &inode)?;
        set_acls(fs, ino, &acls)?;
        if let Some(name) = name {
            if let Err(e) = fs.link(parent, name, ino, FileType::from_mode(mode)) {
                inode.set_links(0);
                let _ = fs.write_inode(ino, &inode);
                let _ = fs.free_inode(ino);
                return Err(e.into());
            }
            meta.dircache.added(parent, name, ino);
        }
        let inode = meta.fs()?.read_inode(ino)?;
        Ok((ino, inode))
    }

    pub(super) fn mknod(&self, req: &Request<'_>, parent: Ino, name: &[u8], mode: u32, rdev: u32, umask: u32) -> Reply {
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {}
            _ => return Err(Errno(libc::EINVAL)),
        }
        let mut meta = self.meta();
        let (ino, inode) = self.make_node(&mut meta, req, parent, Some(name), mode, umask, rdev)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(bytes(&out))
    }

    pub(super) fn mkdir(&self, req: &Request<'_>, parent: Ino, name: &[u8], mode: u32, umask: u32) -> Reply {
        check_name(name)?;
        let mut meta = self.meta();
        let (uid, gid, mode) = Self::new_owner(&mut meta, req, parent, libc::S_IFDIR | (mode & 0o7777))?;
        if meta.find(parent, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let fs = meta.writable()?;
        let parent_inode = fs.read_inode(parent)?;
        if parent_inode.links() >= LINK_MAX {
            return Err(Errno(libc::EMLINK));
        }
        let (mode, acls) = inherit_acls(fs, parent, mode, umask)?;
        let ino = fs.mkdir(parent, name, mode, uid, gid)?;
        set_acls(fs, ino, &acls)?;
        meta.dircache.added(parent, name, ino);
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(ino)?;
        let t = now();
        inode.set_atime(t);
        inode.set_mtime(t);
        inode.set_ctime(t);
        inode.set_crtime(t);
        // The generation seeds the checksums of the blocks mkdir already wrote: keep it.
        fs.write_inode(ino, &inode)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(bytes(&out))
    }

    pub(super) fn symlink(&self, req: &Request<'_>, parent: Ino, name: &[u8], target: &[u8]) -> Reply {
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
        let ino = fs.symlink(parent, name, target, uid, gid)?;
        meta.dircache.added(parent, name, ino);
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(ino)?;
        let ctime = inode.ctime();
        inode.set_crtime(ctime);
        fs.write_inode(ino, &inode)?;
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(bytes(&out))
    }

    /// Drops one link to `ino`; an inode left with no links is freed now, or when the
    /// kernel forgets it if it still holds references.
    fn drop_link(&self, meta: &mut Meta, ino: Ino, is_dir: bool) -> Result<(), Errno> {
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(ino)?;
        let links = if is_dir { 0 } else { inode.links().saturating_sub(1) };
        inode.set_links(links);
        inode.set_ctime(now());
        fs.write_inode(ino, &inode)?;
        if links == 0 {
            meta.orphans.insert(ino);
            self.free_if_orphan(meta, ino)?;
        }
        Ok(())
    }

    pub(super) fn unlink(&self, parent: Ino, name: &[u8]) -> Reply {
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        let ino = meta.find(parent, name)?.ok_or(Errno(libc::ENOENT))?;
        let fs = meta.writable()?;
        if s_isdir(fs.read_inode(ino)?.mode()) {
            return Err(Errno(libc::EISDIR));
        }
        fs.unlink(parent, name)?;
        meta.dircache.removed(parent, name);
        self.drop_link(&mut meta, ino, false)?;
        Ok(Vec::new())
    }

    pub(super) fn rmdir(&self, parent: Ino, name: &[u8]) -> Reply {
        if name == b"." {
            return Err(Errno(libc::EINVAL));
        }
        if name == b".." {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        let ino = meta.find(parent, name)?.ok_or(Errno(libc::ENOENT))?;
        let fs = meta.writable()?;
        if !s_isdir(fs.read_inode(ino)?.mode()) {
            return Err(Errno(libc::ENOTDIR));
        }
        if !fs.is_dir_empty(ino)? {
            return Err(Errno(libc::ENOTEMPTY));
        }
        fs.unlink(parent, name)?;
        meta.dircache.removed(parent, name);
        meta.dircache.forget_dir(ino);
        // The removed directory's ".." no longer links the parent.
        Self::touch_dir(&mut meta, parent, -1)?;
        self.drop_link(&mut meta, ino, true)?;
        Ok(Vec::new())
    }

    pub(super) fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Reply {
        check_name(name)?;
        let mut meta = self.meta();
        Self::read_dir_inode(&mut meta, parent)?;
        if meta.find(parent, name)?.is_some() {
            return Err(Errno(libc::EEXIST));
        }
        let fs = meta.writable()?;
        let mut inode = fs.read_inode(ino)?;
        if s_isdir(inode.mode()) {
            return Err(Errno(libc::EPERM));
        }
        if inode.links() >= LINK_MAX {
            return Err(Errno(libc::EMLINK));
        }
        fs.link(parent, name, ino, FileType::from_mode(inode.mode()))?;
        meta.dircache.added(parent, name, ino);
        let fs = meta.fs()?;
        inode.set_links(inode.links() + 1);
        inode.set_ctime(now());
        fs.write_inode(ino, &inode)?;
        meta.orphans.remove(&ino);
        let out = self.entry_out(&mut meta, ino, &inode);
        Ok(bytes(&out))
    }

    pub(super) fn rename(&self, old_dir: Ino, old_name: &[u8], new_dir: Ino, new_name: &[u8], flags: u32) -> Reply {
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
        let fs = meta.writable()?;
        let src_inode = fs.read_inode(src)?;
        let src_is_dir = s_isdir(src_inode.mode());
        let src_type = FileType::from_mode(src_inode.mode());

        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Errno(libc::ENOENT))?;
            let dst_inode = fs.read_inode(dst)?;
            let dst_is_dir = s_isdir(dst_inode.mode());
            fs.unlink(old_dir, old_name)?;
            fs.unlink(new_dir, new_name)?;
            fs.link(old_dir, old_name, dst, FileType::from_mode(dst_inode.mode()))?;
            fs.link(new_dir, new_name, src, src_type)?;
            meta.dircache.added(old_dir, old_name, dst);
            meta.dircache.added(new_dir, new_name, src);
            let fs = meta.fs()?;
            if old_dir != new_dir {
                if src_is_dir {
                    fs.set_dotdot(src, new_dir)?;
                }
                if dst_is_dir {
                    fs.set_dotdot(dst, old_dir)?;
                }
                let delta = src_is_dir as i32 - dst_is_dir as i32;
                Self::touch_dir(&mut meta, old_dir, -delta)?;
                Self::touch_dir(&mut meta, new_dir, delta)?;
            }
            for ino in [src, dst] {
                let fs = meta.fs()?;
                let mut inode = fs.read_inode(ino)?;
                inode.set_ctime(now());
                fs.write_inode(ino, &inode)?;
            }
            return Ok(Vec::new());
        }

        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Errno(libc::EEXIST));
            }
            if dst == src {
                return Ok(Vec::new());
            }
            let dst_is_dir = s_isdir(fs.read_inode(dst)?.mode());
            match (src_is_dir, dst_is_dir) {
                (true, false) => return Err(Errno(libc::ENOTDIR)),
                (false, true) => return Err(Errno(libc::EISDIR)),
                (true, true) if !fs.is_dir_empty(dst)? => return Err(Errno(libc::ENOTEMPTY)),
                _ => {}
            }
            fs.unlink(new_dir, new_name)?;
            meta.dircache.removed(new_dir, new_name);
            if dst_is_dir {
                meta.dircache.forget_dir(dst);
                Self::touch_dir(&mut meta, new_dir, -1)?;
            }
            self.drop_link(&mut meta, dst, dst_is_dir)?;
        }
        let fs = meta.fs()?;
        fs.unlink(old_dir, old_name)?;
        fs.link(new_dir, new_name, src, src_type)?;
        meta.dircache.removed(old_dir, old_name);
        meta.dircache.added(new_dir, new_name, src);
        let fs = meta.fs()?;
        if src_is_dir && old_dir != new_dir {
            fs.set_dotdot(src, new_dir)?;
            Self::touch_dir(&mut meta, old_dir, -1)?;
            Self::touch_dir(&mut meta, new_dir, 1)?;
        }
        let fs = meta.fs()?;
        let mut inode = fs.read_inode(src)?;
        inode.set_ctime(now());
        fs.write_inode(src, &inode)?;
        Ok(Vec::new())
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
fn inherit_acls(fs: &ext2fs::Fs, parent: Ino, mode: u32, umask: u32) -> Result<(u32, InheritedAcls), Errno> {
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
