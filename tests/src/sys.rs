//! Syscall helpers the test bodies share: aligned buffers for O_DIRECT, full-length
//! pread/pwrite, errno assertions, running a syscall as another user, data patterns.

use anyhow::{bail, Context, Result};
use rustix::fd::AsFd;
use rustix::io::Errno;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::CString;
use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const DIO_ALIGN: usize = 4096;

/// A zeroed buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), DIO_ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Self { ptr, len }
    }
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::new(data.len());
        b.copy_from_slice(data);
        b
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live allocation of len bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(1), DIO_ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this same layout.
        unsafe { dealloc(self.ptr, layout) }
    }
}

// SAFETY: AlignedBuf owns its allocation like a Vec<u8> does.
unsafe impl Send for AlignedBuf {}

/// pwrite until all of `buf` is written.
pub fn pwrite_all<Fd: AsFd>(fd: Fd, mut buf: &[u8], mut off: u64) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        let n = rustix::io::pwrite(&fd, buf, off)?;
        if n == 0 {
            return Err(Errno::IO);
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

/// pread up to `len` bytes at `off`; shorter only at EOF.
pub fn pread_vec<Fd: AsFd>(fd: Fd, len: usize, off: u64) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = rustix::io::pread(&fd, &mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Fails unless `r` is the error `want`.
pub fn expect_errno<T: Debug>(r: rustix::io::Result<T>, want: Errno, what: &str) -> Result<()> {
    match r {
        Err(e) if e == want => Ok(()),
        Err(e) => bail!("{what}: expected {want:?}, got {e:?}"),
        Ok(v) => bail!("{what}: expected {want:?}, but it succeeded ({v:?})"),
    }
}

/// Same for std::io results.
pub fn expect_io_errno<T: Debug>(r: std::io::Result<T>, want: Errno, what: &str) -> Result<()> {
    expect_errno(
        r.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)),
        want,
        what,
    )
}

/// Bytes that differ per `tag` and per position, so misplaced data is caught.
pub fn pattern(tag: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_pattern(&mut out, tag);
    out
}

pub fn fill_pattern(buf: &mut [u8], tag: u64) {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        // xorshift64*: cheap even in debug builds.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Evicts clean dentries and inodes host-wide: a FUSE mount then receives FORGET and
/// BATCH_FORGET for everything not in use, and the next access looks everything up again.
pub fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "2").context("write /proc/sys/vm/drop_caches")
}

/// One filesystem call made by another user (see `as_user`).
#[derive(Debug)]
pub enum UserOp {
    OpenRead(PathBuf),
    OpenWrite(PathBuf),
    /// O_CREAT|O_EXCL, mode 0644.
    Create(PathBuf),
    Unlink(PathBuf),
    Stat(PathBuf),
    Chmod(PathBuf, u32),
    Chown(PathBuf, u32, u32),
    Mkdir(PathBuf),
}

/// Runs `op` in a forked child with uid/gid set to `uid`/`gid` and no supplementary
/// groups. Returns `Ok(())` or the errno the call failed with.
pub fn as_user(uid: u32, gid: u32, op: UserOp) -> Result<std::result::Result<(), Errno>> {
    let path = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths");
    // Everything the child needs is prepared before fork: after fork in a threaded process
    // the child may only make raw syscalls (no allocation, no locks).
    let (code, c_path, arg1, arg2) = match &op {
        UserOp::OpenRead(p) => (0, path(p), 0, 0),
        UserOp::OpenWrite(p) => (1, path(p), 0, 0),
        UserOp::Create(p) => (2, path(p), 0, 0),
        UserOp::Unlink(p) => (3, path(p), 0, 0),
        UserOp::Stat(p) => (4, path(p), 0, 0),
        UserOp::Chmod(p, m) => (5, path(p), *m, 0),
        UserOp::Chown(p, u, g) => (6, path(p), *u, *g),
        UserOp::Mkdir(p) => (7, path(p), 0, 0),
    };
    // SAFETY: the child only calls async-signal-safe libc functions and then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw syscalls on prepared, NUL-terminated data; _exit never returns.
        unsafe {
            let p = c_path.as_ptr();
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0;
            if !ok {
                libc::_exit(250);
            }
            let r = match code {
                0 | 1 => {
                    let fd = libc::open(
                        p,
                        if code == 0 {
                            libc::O_RDONLY
                        } else {
                            libc::O_WRONLY
                        },
                    );
                    let mut b = [0u8; 16];
                    if fd >= 0 && code == 0 && libc::read(fd, b.as_mut_ptr().cast(), b.len()) < 0 {
                        -1
                    } else {
                        fd
                    }
                }
                2 => libc::open(p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644),
                3 => libc::unlink(p),
                4 => {
                    let mut st: libc::stat = std::mem::zeroed();
                    libc::stat(p, &mut st)
                }
                5 => libc::chmod(p, arg1),
                6 => libc::chown(p, arg1, arg2),
                _ => libc::mkdir(p, 0o755),
            };
            let errno = if r < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(errno.min(249));
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) == 250 {
        bail!("child for {op:?} as uid {uid} failed to run (status {status:#x})");
    }
    Ok(match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        e => Err(Errno::from_raw_os_error(e)),
    })
}

/// Reads a directory's names (without . and ..), as readdir returns them.
pub fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("readdir {}", dir.display()))? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}
