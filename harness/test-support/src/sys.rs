//! Syscall helpers the test bodies share: aligned buffers for O_DIRECT, full-length
//! pread/pwrite, errno assertions, running a syscall as another user, data patterns, and
//! the few calls nix does not wrap (xattrs, statx).

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, AtFlags, OFlag, AT_FDCWD};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setgroups, setresgid, setresuid, ForkResult, Gid, Uid};
use nix::NixPath;
use std::ffi::{CStr, CString};
use std::fmt::Debug;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The O_DIRECT buffer is workloads' (one implementation for the workloads and the tests).
pub use workloads::align::{AlignedBuf, ALIGN as DIO_ALIGN};

/// An aligned copy of `data`.
pub fn aligned_copy(data: &[u8]) -> AlignedBuf {
    let mut b = AlignedBuf::new(data.len());
    b.copy_from_slice(data);
    b
}

/// pwrite until all of `buf` is written.
pub fn pwrite_all<Fd: AsFd>(fd: Fd, mut buf: &[u8], mut off: u64) -> nix::Result<()> {
    while !buf.is_empty() {
        let n = nix::sys::uio::pwrite(&fd, buf, offset(off)?)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

/// pread up to `len` bytes at `off`; shorter only at EOF.
pub fn pread_vec<Fd: AsFd>(fd: Fd, len: usize, off: u64) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = nix::sys::uio::pread(&fd, &mut buf[done..], offset(off + done as u64)?)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// A file offset as off_t; EOVERFLOW past its range, as the kernel would answer.
fn offset(off: u64) -> nix::Result<i64> {
    i64::try_from(off).map_err(|_| Errno::EOVERFLOW)
}

/// The errno of a std::io error; EIO for an error that carries none.
pub fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Fails unless `r` is the error `want`.
pub fn expect_errno<T: Debug>(r: nix::Result<T>, want: Errno, what: &str) -> Result<()> {
    match r {
        Err(e) if e == want => Ok(()),
        Err(e) => bail!("{what}: expected {want:?}, got {e:?}"),
        Ok(v) => bail!("{what}: expected {want:?}, but it succeeded ({v:?})"),
    }
}

/// Same for std::io results.
pub fn expect_io_errno<T: Debug>(r: std::io::Result<T>, want: Errno, what: &str) -> Result<()> {
    expect_errno(r.map_err(|e| errno_of(&e)), want, what)
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
    nix::unistd::sync();
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
    /// setxattr(path, name, value, 0).
    SetXattr(PathBuf, String, Vec<u8>),
    /// O_WRONLY, then write(2) of one byte at offset 0.
    Write(PathBuf),
    /// O_WRONLY|O_TRUNC.
    OpenTrunc(PathBuf),
}

/// Runs `op` in a forked child with uid/gid set to `uid`/`gid` and no supplementary
/// groups. Returns `Ok(())` or the errno the call failed with.
pub fn as_user(uid: u32, gid: u32, op: UserOp) -> Result<std::result::Result<(), Errno>> {
    let path = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths");
    // Everything the child needs is prepared before fork: after fork in a threaded process
    // the child may only make raw syscalls (no allocation, no locks).
    let c_name = match &op {
        UserOp::SetXattr(_, name, _) => CString::new(name.as_bytes()).context("xattr name")?,
        _ => CString::default(),
    };
    let value: &[u8] = match &op {
        UserOp::SetXattr(_, _, v) => v,
        _ => &[],
    };
    let (code, c_path, arg1, arg2) = match &op {
        UserOp::OpenRead(p) => (0, path(p), 0, 0),
        UserOp::OpenWrite(p) => (1, path(p), 0, 0),
        UserOp::Create(p) => (2, path(p), 0, 0),
        UserOp::Unlink(p) => (3, path(p), 0, 0),
        UserOp::Stat(p) => (4, path(p), 0, 0),
        UserOp::Chmod(p, m) => (5, path(p), *m, 0),
        UserOp::Chown(p, u, g) => (6, path(p), *u, *g),
        UserOp::Mkdir(p) => (7, path(p), 0, 0),
        UserOp::SetXattr(p, _, _) => (8, path(p), 0, 0),
        UserOp::Write(p) => (9, path(p), 0, 0),
        UserOp::OpenTrunc(p) => (10, path(p), 0, 0),
    };
    // SAFETY: the child makes only raw syscalls on data prepared before the fork, then _exit.
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let call = Call {
                code,
                path: &c_path,
                arg1,
                arg2,
                name: &c_name,
                value,
            };
            let code = match as_user_child(uid, gid, call) {
                Ok(()) => 0,
                Err(e) => e,
            };
            // SAFETY: _exit (which nix does not wrap) ends the child without running the
            // parent's atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let status = waitpid(child, None).context("waitpid")?;
    match status {
        WaitStatus::Exited(_, 0) => Ok(Ok(())),
        WaitStatus::Exited(_, e) if e < 250 => Ok(Err(Errno::from_raw(e))),
        other => bail!("child for {op:?} as uid {uid} failed to run ({other:?})"),
    }
}

/// One [`UserOp`], flattened before fork so the child allocates nothing.
struct Call<'a> {
    code: u8,
    path: &'a CStr,
    arg1: u32,
    arg2: u32,
    name: &'a CStr,
    value: &'a [u8],
}

/// The child's side of [`as_user`]: drop to `uid`/`gid`, make one call. `Err(250)` means the
/// credentials could not be set; any other error is the call's errno.
fn as_user_child(uid: u32, gid: u32, call: Call<'_>) -> Result<(), i32> {
    use nix::sys::stat::Mode;
    let Call {
        code,
        path: p,
        arg1,
        arg2,
        name,
        value,
    } = call;
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let creds = setgroups(&[])
        .and(setresgid(g, g, g))
        .and(setresuid(u, u, u));
    creds.map_err(|_| 250)?;
    let r = match code {
        0 => open(p, OFlag::O_RDONLY, Mode::empty())
            .and_then(|fd| nix::unistd::read(&fd, &mut [0u8; 16]).map(drop)),
        1 => open(p, OFlag::O_WRONLY, Mode::empty()).map(drop),
        2 => open(
            p,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
        3 => nix::unistd::unlink(p),
        4 => nix::sys::stat::stat(p).map(drop),
        5 => nix::sys::stat::fchmodat(
            AT_FDCWD,
            p,
            Mode::from_bits_truncate(arg1),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        ),
        6 => nix::unistd::chown(p, Some(Uid::from_raw(arg1)), Some(Gid::from_raw(arg2))),
        7 => nix::unistd::mkdir(p, Mode::from_bits_truncate(0o755)),
        9 => open(p, OFlag::O_WRONLY, Mode::empty())
            .and_then(|fd| nix::unistd::write(&fd, b"w").map(drop)),
        10 => open(p, OFlag::O_WRONLY | OFlag::O_TRUNC, Mode::empty()).map(drop),
        // SAFETY: NUL-terminated path and name; `value` is valid for its length.
        _ => Errno::result(unsafe {
            libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
        .map(drop),
    };
    r.map_err(|e| (e as i32).min(249))
}

/// Reads a directory's names (without . and ..), as readdir returns them.
pub fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("readdir {}", dir.display()))? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

// Calls nix does not wrap: the xattr family and statx. With `_exit` above, these are the
// tests' only raw libc calls; each makes exactly the named syscall, errno as nix's.

/// Whether an xattr call follows a final symlink (getxattr) or acts on the link itself
/// (lgetxattr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Follow,
    NoFollow,
}

/// setxattr's flags argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetXattr {
    /// 0: create or replace.
    Either,
    /// XATTR_CREATE: fail with EEXIST if the name exists.
    Create,
    /// XATTR_REPLACE: fail with ENODATA if it does not.
    Replace,
}

/// getxattr/lgetxattr into `buf`; an empty `buf` asks for the value's size (size 0).
pub fn getxattr(p: &Path, name: &str, buf: &mut [u8], link: Link) -> nix::Result<usize> {
    let (ptr, len) = out_buf(buf);
    let n = p.with_nix_path(|p| {
        name.with_nix_path(|n| {
            // SAFETY: NUL-terminated path and name; `ptr` is valid for `len` bytes.
            unsafe {
                match link {
                    Link::Follow => libc::getxattr(p.as_ptr(), n.as_ptr(), ptr, len),
                    Link::NoFollow => libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, len),
                }
            }
        })
    })??;
    Errno::result(n).map(|n| n as usize)
}

/// listxattr/llistxattr into `buf` (NUL-separated names); an empty `buf` asks for the size.
pub fn listxattr(p: &Path, buf: &mut [u8], link: Link) -> nix::Result<usize> {
    let (ptr, len) = out_buf(buf);
    let n = p.with_nix_path(|p| {
        // SAFETY: a NUL-terminated path; `ptr` is valid for `len` bytes.
        unsafe {
            match link {
                Link::Follow => libc::listxattr(p.as_ptr(), ptr.cast(), len),
                Link::NoFollow => libc::llistxattr(p.as_ptr(), ptr.cast(), len),
            }
        }
    })?;
    Errno::result(n).map(|n| n as usize)
}

/// setxattr/lsetxattr.
pub fn setxattr(p: &Path, name: &str, value: &[u8], how: SetXattr, link: Link) -> nix::Result<()> {
    let flags = match how {
        SetXattr::Either => 0,
        SetXattr::Create => libc::XATTR_CREATE,
        SetXattr::Replace => libc::XATTR_REPLACE,
    };
    let v = value.as_ptr().cast();
    let r = p.with_nix_path(|p| {
        name.with_nix_path(|n| {
            // SAFETY: NUL-terminated path and name; `value` is valid for its length.
            unsafe {
                match link {
                    Link::Follow => libc::setxattr(p.as_ptr(), n.as_ptr(), v, value.len(), flags),
                    Link::NoFollow => {
                        libc::lsetxattr(p.as_ptr(), n.as_ptr(), v, value.len(), flags)
                    }
                }
            }
        })
    })??;
    Errno::result(r).map(drop)
}

/// removexattr/lremovexattr.
pub fn removexattr(p: &Path, name: &str, link: Link) -> nix::Result<()> {
    let r = p.with_nix_path(|p| {
        name.with_nix_path(|n| {
            // SAFETY: NUL-terminated path and name.
            unsafe {
                match link {
                    Link::Follow => libc::removexattr(p.as_ptr(), n.as_ptr()),
                    Link::NoFollow => libc::lremovexattr(p.as_ptr(), n.as_ptr()),
                }
            }
        })
    })??;
    Errno::result(r).map(drop)
}

/// An output buffer for the kernel; NULL with size 0 for an empty one (a size query).
fn out_buf(buf: &mut [u8]) -> (*mut libc::c_void, usize) {
    if buf.is_empty() {
        (std::ptr::null_mut(), 0)
    } else {
        (buf.as_mut_ptr().cast(), buf.len())
    }
}

/// What statx(2) returns, and the mask bits the tests ask for.
pub use libc::{statx as Statx, STATX_BASIC_STATS, STATX_BTIME};

/// statx(2) of `p` relative to the working directory.
pub fn statx(p: &Path, flags: AtFlags, mask: u32) -> nix::Result<Statx> {
    let mut out = std::mem::MaybeUninit::<Statx>::zeroed();
    let r = p.with_nix_path(|p| {
        // SAFETY: a NUL-terminated path and a buffer of statx's size.
        unsafe {
            libc::statx(
                libc::AT_FDCWD,
                p.as_ptr(),
                flags.bits(),
                mask,
                out.as_mut_ptr(),
            )
        }
    })?;
    Errno::result(r)?;
    // SAFETY: zero-initialised, and statx succeeded and filled it.
    Ok(unsafe { out.assume_init() })
}
