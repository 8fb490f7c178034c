//! Extended attributes, including POSIX ACLs stored as system.posix_acl_* xattrs.

use ext2fs::{Ino, XattrSetMode};
use fuse_wire::structs::GetxattrOut;

use super::{Errno, Server};
use crate::attr::now;
use crate::reply::Xattr;

/// The kernel's limits (XATTR_NAME_MAX, XATTR_SIZE_MAX).
const NAME_MAX: usize = 255;
const SIZE_MAX: usize = 65536;

fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Errno(libc::ERANGE));
    }
    // ext4 stores only these namespaces.
    const KNOWN: [&[u8]; 4] = [b"user.", b"trusted.", b"security.", b"system."];
    if !KNOWN
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
    {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    Ok(())
}

/// Answers a get/list request: the size when the caller asked with size 0, the bytes when
/// they fit, ERANGE otherwise.
fn sized(value: Vec<u8>, size: u32) -> Result<Xattr, Errno> {
    if size == 0 {
        Ok(Xattr::Size(GetxattrOut {
            size: value.len() as u32,
            padding: 0,
        }))
    } else if value.len() > size as usize {
        Err(Errno(libc::ERANGE))
    } else {
        Ok(Xattr::Value(value))
    }
}

impl Server {
    pub(crate) fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: u32,
        kill_sgid: bool,
    ) -> Result<(), Errno> {
        check_name(name)?;
        if value.len() > SIZE_MAX {
            return Err(Errno(libc::E2BIG));
        }
        let mode = match flags as i32 {
            0 => XattrSetMode::Any,
            libc::XATTR_CREATE => XattrSetMode::Create,
            libc::XATTR_REPLACE => XattrSetMode::Replace,
            _ => return Err(Errno(libc::EINVAL)),
        };
        let mut meta = self.meta();
        let fs = meta.writable()?;
        if name == super::acl::ACCESS || name == super::acl::DEFAULT {
            return self.set_acl(fs, ino, name, value, mode, kill_sgid);
        }
        fs.xattr_set(ino, name, value, mode)?;
        self.touch_ctime(fs, ino)?;
        Ok(())
    }

    pub(crate) fn getxattr(&self, ino: Ino, name: &[u8], size: u32) -> Result<Xattr, Errno> {
        check_name(name)?;
        let mut meta = self.meta();
        let value = meta
            .fs()?
            .xattr_get(ino, name)?
            .ok_or(Errno(libc::ENODATA))?;
        sized(value, size)
    }

    pub(crate) fn listxattr(&self, ino: Ino, size: u32) -> Result<Xattr, Errno> {
        let mut meta = self.meta();
        let mut list = Vec::new();
        for name in meta.fs()?.xattr_list(ino)? {
            list.extend_from_slice(&name);
            list.push(0);
        }
        sized(list, size)
    }

    pub(crate) fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<(), Errno> {
        check_name(name)?;
        let mut meta = self.meta();
        let fs = meta.writable()?;
        fs.xattr_remove(ino, name)?;
        self.touch_ctime(fs, ino)?;
        Ok(())
    }

    /// Stores an ACL and keeps the mode in step with an access ACL (which is not stored
    /// at all when the mode says everything it says).
    fn set_acl(
        &self,
        fs: &mut ext2fs::Fs,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrSetMode,
        kill_sgid: bool,
    ) -> Result<(), Errno> {
        let acl = super::acl::Acl::parse(value).ok_or(Errno(libc::EINVAL))?;
        let is_dir = fs.read_inode(ino)?.mode() & libc::S_IFMT == libc::S_IFDIR;
        if name == super::acl::DEFAULT && !is_dir {
            return Err(Errno(libc::EACCES));
        }
        if name == super::acl::ACCESS && acl.is_equivalent_to_mode() {
            match fs.xattr_remove(ino, name) {
                Err(e) if e.errno() == libc::ENODATA => {}
                other => other?,
            }
        } else {
            fs.xattr_set(ino, name, value, mode)?;
        }
        // Re-read: storing the xattr may have changed the inode (xattr block, sizes).
        let mut inode = fs.read_inode(ino)?;
        if name == super::acl::ACCESS {
            let mut mode = (inode.mode() & !0o777) | acl.mode_bits();
            // The caller is neither in the file's group nor CAP_FSETID (the kernel's
            // judgement): setgid goes, as ext4's posix_acl_update_mode does.
            if kill_sgid {
                mode &= !libc::S_ISGID;
            }
            inode.set_mode(mode);
        }
        inode.set_ctime(now());
        fs.write_inode(ino, &inode)?;
        Ok(())
    }

    fn touch_ctime(&self, fs: &mut ext2fs::Fs, ino: Ino) -> Result<(), Errno> {
        let mut inode = fs.read_inode(ino)?;
        inode.set_ctime(now());
        fs.write_inode(ino, &inode)?;
        Ok(())
    }
}
