//! The crate's error type: a libext2fs `errcode_t` (or a plain errno) plus what we were doing.

use std::borrow::Cow;
use std::ffi::CStr;
use std::sync::Once;

use crate::sys;

/// A failed libext2fs call or a refused request.
///
/// `code` is a libext2fs/com_err `errcode_t`; values below 256 are plain `errno` values (that is
/// what libext2fs returns for failed system calls, and what this crate uses for its own checks).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {}", describe(*.code))]
pub struct Error {
    code: i64,
    context: Cow<'static, str>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(code: i64, context: impl Into<Cow<'static, str>>) -> Error {
        Error {
            code,
            context: context.into(),
        }
    }

    /// An error carrying a plain `errno` value.
    pub fn from_errno(errno: i32, context: impl Into<Cow<'static, str>>) -> Error {
        Error::new(i64::from(errno), context)
    }

    /// The raw libext2fs error code (or errno, when below 256).
    pub fn code(&self) -> i64 {
        self.code
    }

    /// What the crate was doing when the error happened.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The com_err message for the code (e.g. "Could not allocate block in ext2 filesystem").
    pub fn message(&self) -> String {
        describe(self.code)
    }

    /// The POSIX errno a filesystem server should return for this error.
    pub fn errno(&self) -> i32 {
        errno_of(self.code)
    }
}

/// Turns a libext2fs return value into a `Result`.
pub(crate) fn check(code: sys::errcode_t, context: impl Into<Cow<'static, str>>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::new(code, context))
    }
}

static ERROR_TABLE: Once = Once::new();

/// Registers the ext2 com_err table so `error_message` knows our codes. Called by `Fs::open`.
pub(crate) fn init_error_table() {
    // SAFETY: registers a static table once; no arguments.
    ERROR_TABLE.call_once(|| unsafe { sys::initialize_ext2_error_table() });
}

const ET_BASE: i64 = sys::EXT2_ET_BASE as i64;
const ET_LAST: i64 = sys::EXT2_ET_EXTERNAL_JOURNAL_NOSUPP as i64;

fn describe(code: i64) -> String {
    if (1..256).contains(&code) {
        return std::io::Error::from_raw_os_error(code as i32).to_string();
    }
    if (ET_BASE..=ET_LAST).contains(&code) {
        init_error_table();
        // SAFETY: for codes of a registered table com_err returns a pointer into that static,
        // NUL-terminated message table (never its shared scratch buffer, used for unknown codes).
        let msg = unsafe { sys::error_message(code as sys::errcode_t) };
        if !msg.is_null() {
            // SAFETY: non-null, NUL-terminated, static.
            return unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned();
        }
    }
    format!("error code {code}")
}

fn errno_of(code: i64) -> i32 {
    use libc::*;
    if (1..256).contains(&code) {
        return code as i32;
    }
    let Ok(code) = u32::try_from(code) else {
        return EIO;
    };
    match code {
        sys::EXT2_ET_BLOCK_ALLOC_FAIL
        | sys::EXT2_ET_INODE_ALLOC_FAIL
        | sys::EXT2_ET_DIR_NO_SPACE
        | sys::EXT2_ET_DIR_NO_SPACE_FOR_CSUM
        | sys::EXT2_ET_EA_NO_SPACE
        | sys::EXT2_ET_INLINE_DATA_NO_SPACE
        | sys::EXT2_ET_EXTENT_NO_SPACE
        | sys::EXT2_ET_TOOSMALL => ENOSPC,
        sys::EXT2_ET_FILE_EXISTS | sys::EXT2_ET_DIR_EXISTS => EEXIST,
        sys::EXT2_ET_FILE_NOT_FOUND => ENOENT,
        sys::EXT2_ET_NO_DIRECTORY => ENOTDIR,
        sys::EXT2_ET_RO_FILSYS | sys::EXT2_ET_FILE_RO => EROFS,
        sys::EXT2_ET_FILE_TOO_BIG | sys::EXT2_ET_CANT_INSERT_EXTENT => EFBIG,
        sys::EXT2_ET_EA_KEY_NOT_FOUND => ENODATA,
        sys::EXT2_ET_EA_BAD_NAME_LEN => ERANGE,
        sys::EXT2_ET_MISSING_EA_FEATURE
        | sys::EXT2_ET_OP_NOT_SUPPORTED
        | sys::EXT2_ET_UNIMPLEMENTED
        | sys::EXT2_ET_UNSUPP_FEATURE
        | sys::EXT2_ET_RO_UNSUPP_FEATURE
        | sys::EXT2_ET_EXTENT_NOT_SUPPORTED
        | sys::EXT2_ET_DIRHASH_UNSUPP
        | sys::EXT2_ET_EXTERNAL_JOURNAL_NOSUPP => EOPNOTSUPP,
        sys::EXT2_ET_NO_MEMORY => ENOMEM,
        sys::EXT2_ET_INVALID_ARGUMENT
        | sys::EXT2_ET_BAD_INODE_NUM
        | sys::EXT2_ET_BAD_BLOCK_NUM
        | sys::EXT2_ET_EXTENT_INVALID_LENGTH => EINVAL,
        sys::EXT2_ET_TOO_MANY_REFS => EMLINK,
        sys::EXT2_ET_SYMLINK_LOOP => ELOOP,
        sys::EXT2_ET_BAD_MAGIC
        | sys::EXT2_ET_DIR_CORRUPTED
        | sys::EXT2_ET_CORRUPT_SUPERBLOCK
        | sys::EXT2_ET_GDESC_BAD_BLOCK_MAP
        | sys::EXT2_ET_GDESC_BAD_INODE_MAP
        | sys::EXT2_ET_GDESC_BAD_INODE_TABLE
        | sys::EXT2_ET_MISSING_INODE_TABLE
        | sys::EXT2_ET_BAD_IND_BLOCK
        | sys::EXT2_ET_BAD_DIND_BLOCK
        | sys::EXT2_ET_BAD_TIND_BLOCK
        | sys::EXT2_ET_BAD_EA_BLOCK_NUM
        | sys::EXT2_ET_BAD_EA_HASH
        | sys::EXT2_ET_BAD_EA_HEADER
        | sys::EXT2_ET_EA_BAD_VALUE_SIZE
        | sys::EXT2_ET_EA_BAD_VALUE_OFFSET
        | sys::EXT2_ET_EA_INODE_CORRUPTED
        | sys::EXT2_ET_EXTENT_HEADER_BAD
        | sys::EXT2_ET_EXTENT_INDEX_BAD
        | sys::EXT2_ET_EXTENT_LEAF_BAD
        | sys::EXT2_ET_EXTENT_CYCLE
        | sys::EXT2_ET_INODE_CSUM_INVALID
        | sys::EXT2_ET_INODE_BITMAP_CSUM_INVALID
        | sys::EXT2_ET_BLOCK_BITMAP_CSUM_INVALID
        | sys::EXT2_ET_EXTENT_CSUM_INVALID
        | sys::EXT2_ET_DIR_CSUM_INVALID
        | sys::EXT2_ET_EXT_ATTR_CSUM_INVALID
        | sys::EXT2_ET_SB_CSUM_INVALID
        | sys::EXT2_ET_MMP_CSUM_INVALID
        | sys::EXT2_ET_UNKNOWN_CSUM
        | sys::EXT2_ET_INODE_IS_GARBAGE
        | sys::EXT2_ET_INODE_CORRUPTED
        | sys::EXT2_ET_FILESYSTEM_CORRUPTED
        | sys::EXT2_ET_RESIZE_INODE_CORRUPT => EUCLEAN,
        _ => EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let e = |c: u32| Error::new(i64::from(c), "t").errno();
        assert_eq!(e(sys::EXT2_ET_BLOCK_ALLOC_FAIL), libc::ENOSPC);
        assert_eq!(e(sys::EXT2_ET_FILE_NOT_FOUND), libc::ENOENT);
        assert_eq!(e(sys::EXT2_ET_RO_FILSYS), libc::EROFS);
        assert_eq!(e(sys::EXT2_ET_EA_KEY_NOT_FOUND), libc::ENODATA);
        assert_eq!(e(sys::EXT2_ET_DIR_CSUM_INVALID), libc::EUCLEAN);
        assert_eq!(e(sys::EXT2_ET_MAGIC_EXTENT_HANDLE), libc::EIO);
        assert_eq!(
            Error::from_errno(libc::ENOTEMPTY, "t").errno(),
            libc::ENOTEMPTY
        );
        assert_eq!(Error::new(-5, "t").errno(), libc::EIO);
    }

    #[test]
    fn display_uses_com_err_text() {
        let e = Error::new(i64::from(sys::EXT2_ET_BLOCK_ALLOC_FAIL), "allocating");
        let s = e.to_string();
        assert!(s.starts_with("allocating: "), "{s}");
        assert!(s.contains("allocate block"), "{s}");
        let e = Error::from_errno(libc::ENOENT, "x");
        assert!(e.to_string().contains("No such file"), "{e}");
    }
}
