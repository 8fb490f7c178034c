//! Extended attributes through the libext2fs `ext2fs_xattrs_*` handle API.
//!
//! Names are full Linux names ("user.foo", "security.selinux", "system.posix_acl_access").
//! POSIX ACL values use the Linux VFS format at this API and ext4's format on disk (converted
//! in `acl.rs`, with libext2fs' own conversion disabled by `XATTR_HANDLE_FLAG_RAW`).
//! Setting or removing an attribute sets the inode's ctime and may change its `i_file_acl`
//! and `i_blocks`: re-read the inode afterwards before writing a copy of it.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use crate::acl;
use crate::error::{check, Error, Result};
use crate::fs::Fs;
use crate::inode::{Ino, Timestamp};
use crate::sys;

/// How `xattr_set` treats an existing attribute (the `XATTR_CREATE` / `XATTR_REPLACE` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrSetMode {
    /// Create or replace.
    Any,
    /// Fail with EEXIST if it exists.
    Create,
    /// Fail with ENODATA if it does not exist.
    Replace,
}

/// Largest value the Linux VFS passes (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: usize = 65536;
/// Longest full name (`XATTR_NAME_MAX`).
const XATTR_NAME_MAX: usize = 255;
const PREFIXES: &[&[u8]] = &[b"user.", b"trusted.", b"security."];

/// Checks a name: a known namespace with a non-empty suffix, or one of the ACL names.
fn xattr_name(name: &[u8]) -> Result<CString> {
    if name.len() > XATTR_NAME_MAX {
        return Err(Error::from_errno(
            libc::ERANGE,
            "xattr name longer than 255 bytes",
        ));
    }
    let known = acl::is_acl_name(name)
        || PREFIXES
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len());
    if !known {
        let errno = if PREFIXES.contains(&name) {
            libc::EINVAL
        } else {
            libc::EOPNOTSUPP
        };
        return Err(Error::from_errno(
            errno,
            "xattr name outside the supported namespaces",
        ));
    }
    CString::new(name).map_err(|_| Error::from_errno(libc::EINVAL, "xattr name contains NUL"))
}

/// An open, loaded xattr handle of one inode.
struct Handle {
    h: *mut sys::ext2_xattr_handle,
    ino: Ino,
}

impl Handle {
    fn open(fs: &Fs, ino: Ino) -> Result<Handle> {
        // The xattr block is read, and rewritten in place when it is not shared: it must
        // be a block this inode may own, never metadata (a corrupt i_file_acl).
        let acl_block = fs.read_inode(ino)?.file_acl();
        if acl_block != 0 {
            fs.check_meta_block(acl_block, ino)?;
        }
        let mut h = ptr::null_mut();
        // SAFETY: open filesystem; `h` receives an owned handle.
        check(
            unsafe { sys::ext2fs_xattrs_open(fs.ptr(), ino, &mut h) },
            format!("opening xattrs of inode {ino}"),
        )?;
        let handle = Handle { h, ino };
        let mut flags = sys::XATTR_HANDLE_FLAG_RAW;
        // SAFETY: open handle; RAW disables libext2fs' ACL conversion (we convert ourselves).
        check(
            unsafe { sys::ext2fs_xattrs_flags(h, &mut flags, ptr::null_mut()) },
            "setting xattr flags",
        )?;
        // SAFETY: open handle.
        check(
            unsafe { sys::ext2fs_xattrs_read(h) },
            format!("reading xattrs of inode {ino}"),
        )?;
        Ok(handle)
    }

    fn get(&self, name: &CStr) -> Result<Option<Vec<u8>>> {
        let mut value: *mut c_void = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: open handle; on success `value` is a malloc'ed buffer of `len` bytes.
        let rc = unsafe { sys::ext2fs_xattr_get(self.h, name.as_ptr(), &mut value, &mut len) };
        if rc == i64::from(sys::EXT2_ET_EA_KEY_NOT_FOUND) {
            return Ok(None);
        }
        check(rc, format!("reading an xattr of inode {}", self.ino))?;
        let out = if value.is_null() {
            Vec::new()
        } else {
            // SAFETY: `value` holds `len` bytes; we copy them, then free the buffer.
            let v = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec();
            unsafe { libc::free(value) };
            v
        };
        Ok(Some(out))
    }

    fn set(&mut self, name: &CStr, value: &[u8]) -> Result<()> {
        // SAFETY: open handle; value valid for its length; the call writes the inode/EA block.
        let rc = unsafe {
            sys::ext2fs_xattr_set(self.h, name.as_ptr(), value.as_ptr().cast(), value.len())
        };
        check(rc, format!("setting an xattr of inode {}", self.ino))
    }

    fn remove(&mut self, name: &CStr) -> Result<()> {
        // SAFETY: open handle.
        let rc = unsafe { sys::ext2fs_xattr_remove(self.h, name.as_ptr()) };
        check(rc, format!("removing an xattr of inode {}", self.ino))
    }

    fn names(&self) -> Result<Vec<Vec<u8>>> {
        unsafe extern "C" fn collect(
            name: *mut c_char,
            _v: *mut c_char,
            _len: usize,
            data: *mut c_void,
        ) -> i32 {
            // SAFETY: `data` is the Vec passed below; `name` is a NUL-terminated string.
            let names = unsafe { &mut *data.cast::<Vec<Vec<u8>>>() };
            if !name.is_null() {
                names.push(unsafe { CStr::from_ptr(name) }.to_bytes().to_vec());
            }
            0
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        // SAFETY: the callback only pushes into `names`, which outlives the call; returning 0
        // never asks libext2fs to write anything.
        let rc = unsafe {
            sys::ext2fs_xattrs_iterate(
                self.h,
                Some(collect),
                (&mut names as *mut Vec<Vec<u8>>).cast(),
            )
        };
        check(rc, format!("listing xattrs of inode {}", self.ino))?;
        Ok(names)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: closes the handle we opened.
        unsafe { sys::ext2fs_xattrs_close(&mut self.h) };
    }
}

impl Fs {
    /// The value of attribute `name`, or `None` if it is not set.
    pub fn xattr_get(&self, ino: Ino, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let cname = xattr_name(name)?;
        let Some(value) = Handle::open(self, ino)?.get(&cname)? else {
            return Ok(None);
        };
        if acl::is_acl_name(name) {
            let converted = acl::from_disk(&value).ok_or_else(|| {
                Error::new(
                    i64::from(sys::EXT2_ET_EA_BAD_VALUE_SIZE),
                    format!("malformed ACL on inode {ino}"),
                )
            })?;
            return Ok(Some(converted));
        }
        Ok(Some(value))
    }

    /// Sets attribute `name`. Values above 64 KiB are E2BIG; values that do not fit (in the
    /// inode or one xattr block, or an EA inode when that feature is on) are ENOSPC.
    pub fn xattr_set(
        &mut self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrSetMode,
    ) -> Result<()> {
        self.check_rw("setting an xattr")?;
        let cname = xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::from_errno(
                libc::E2BIG,
                "xattr value larger than 64 KiB",
            ));
        }
        let mut h = Handle::open(self, ino)?;
        let exists = h.get(&cname)?.is_some();
        match mode {
            XattrSetMode::Create if exists => {
                return Err(Error::from_errno(libc::EEXIST, "xattr exists"))
            }
            XattrSetMode::Replace if !exists => {
                return Err(Error::from_errno(libc::ENODATA, "xattr not set"))
            }
            _ => {}
        }
        if acl::is_acl_name(name) {
            match acl::vfs_entry_count(value) {
                None => return Err(Error::from_errno(libc::EINVAL, "malformed POSIX ACL")),
                // An empty ACL means "no ACL", as in the kernel.
                Some(0) => {
                    if exists {
                        h.remove(&cname)?;
                    }
                }
                Some(_) => {
                    let disk = acl::to_disk(value)
                        .ok_or_else(|| Error::from_errno(libc::EINVAL, "malformed POSIX ACL"))?;
                    h.set(&cname, &disk)?;
                }
            }
        } else {
            h.set(&cname, value)?;
        }
        drop(h);
        self.touch_ctime(ino)
    }

    /// Removes attribute `name` (ENODATA if it is not set).
    pub fn xattr_remove(&mut self, ino: Ino, name: &[u8]) -> Result<()> {
        self.check_rw("removing an xattr")?;
        let cname = xattr_name(name)?;
        let mut h = Handle::open(self, ino)?;
        if h.get(&cname)?.is_none() {
            return Err(Error::from_errno(
                libc::ENODATA,
                format!("removing an xattr of inode {ino}"),
            ));
        }
        h.remove(&cname)?;
        drop(h);
        self.touch_ctime(ino)
    }

    /// Full names of all attributes of the inode.
    pub fn xattr_list(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        Handle::open(self, ino)?.names()
    }

    /// Drops every attribute (releasing EA-inode references); used when freeing an inode.
    pub(crate) fn remove_all_xattrs(&mut self, ino: Ino) -> Result<()> {
        let mut h = Handle::open(self, ino)?;
        for name in h.names()? {
            let cname = CString::new(name)
                .map_err(|_| Error::from_errno(libc::EINVAL, "xattr name contains NUL"))?;
            h.remove(&cname)?;
        }
        Ok(())
    }

    fn touch_ctime(&mut self, ino: Ino) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        inode.set_ctime(Timestamp::now());
        self.put_inode(ino, &inode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(xattr_name(b"user.foo").is_ok());
        assert!(xattr_name(b"security.selinux").is_ok());
        assert!(xattr_name(b"system.posix_acl_default").is_ok());
        assert_eq!(xattr_name(b"user.").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(
            xattr_name(b"foo.bar").unwrap_err().errno(),
            libc::EOPNOTSUPP
        );
        assert_eq!(
            xattr_name(b"system.data").unwrap_err().errno(),
            libc::EOPNOTSUPP
        );
        let long = [b"user.".as_slice(), &[b'a'; 251]].concat();
        assert_eq!(xattr_name(&long).unwrap_err().errno(), libc::ERANGE);
    }
}
