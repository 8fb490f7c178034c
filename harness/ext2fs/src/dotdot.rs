//! Re-pointing a directory's ".." entry, for renames that move a directory.

use crate::error::{check, Error, Result};
use crate::fs::Fs;
use crate::inode::Ino;
use crate::sys;

struct Repoint {
    parent: Ino,
    done: bool,
}

unsafe extern "C" fn repoint_dotdot(
    _dir: sys::ext2_ino_t,
    entry: core::ffi::c_int,
    dirent: *mut sys::ext2_dir_entry,
    _offset: core::ffi::c_int,
    _blocksize: core::ffi::c_int,
    _buf: *mut core::ffi::c_char,
    priv_data: *mut core::ffi::c_void,
) -> core::ffi::c_int {
    // SAFETY: libext2fs passes back the pointer we gave it and a valid entry.
    let state = unsafe { &mut *(priv_data as *mut Repoint) };
    if entry as u32 != sys::DIRENT_DOT_DOT_FILE {
        return 0;
    }
    unsafe { (*dirent).inode = state.parent };
    state.done = true;
    (sys::DIRENT_CHANGED | sys::DIRENT_ABORT) as core::ffi::c_int
}

impl Fs {
    /// Makes the ".." entry of directory `dir` name `parent`. Link counts are the caller's.
    pub fn set_dotdot(&mut self, dir: Ino, parent: Ino) -> Result<()> {
        self.check_rw("rewriting \"..\"")?;
        let mut state = Repoint {
            parent,
            done: false,
        };
        // SAFETY: the callback only touches `state` and the entry libext2fs hands it.
        let rc = unsafe {
            sys::ext2fs_dir_iterate2(
                self.ptr(),
                dir,
                sys::DIRENT_FLAG_INCLUDE_EMPTY as core::ffi::c_int,
                std::ptr::null_mut(),
                Some(repoint_dotdot),
                &mut state as *mut Repoint as *mut core::ffi::c_void,
            )
        };
        check(rc, format!("rewriting \"..\" of directory {dir}"))?;
        if !state.done {
            return Err(Error::new(
                i64::from(sys::EXT2_ET_DIR_CORRUPTED),
                format!("directory {dir} has no \"..\" entry"),
            ));
        }
        Ok(())
    }
}
