//! The one error type of the operations, and the one place other errors become an errno.

/// A POSIX error number to answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<ext2fs::Error> for Errno {
    fn from(e: ext2fs::Error) -> Self {
        tracing::debug!("libext2fs: {e}");
        Errno(e.errno())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Self {
        Errno(e as i32)
    }
}
