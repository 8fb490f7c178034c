//! Where requests come from and replies go: /dev/fuse, or a Unix socket that plays the
//! kernel (for the kernel model and for replaying recorded sessions).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// One FUSE connection as the server sees it.
pub trait Transport: Send + Sync {
    /// Reads one request into `buf`. `Ok(None)` means the session is over (unmounted,
    /// aborted, or the peer hung up).
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Writes one reply or notification, given as parts of one message.
    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()>;
    /// A handle for another reader thread (a cloned /dev/fuse fd, or the same socket).
    fn for_worker(&self) -> io::Result<Arc<dyn Transport>>;
    /// Registers a backing device for iomap; returns the device id the kernel will use.
    fn backing_open(&self, fd: RawFd) -> io::Result<u32>;
    /// Marks the calling thread so memory reclaim does not call back into this
    /// filesystem (iomap mode).
    fn set_nofs(&self) -> io::Result<()> {
        Ok(())
    }
    /// Wakes every thread blocked in `receive` once the session is over.
    fn close(&self) {}
}

/// The kernel's /dev/fuse.
pub struct DevFuse {
    file: File,
}

impl DevFuse {
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

impl Transport for DevFuse {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match nix::unistd::read(&self.file, buf) {
                Ok(n) => return Ok(Some(n)),
                // The request was interrupted before we read it, or a signal arrived.
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ENODEV) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        match nix::sys::uio::writev(&self.file, parts) {
            Ok(_) => Ok(()),
            // The request was interrupted and the kernel no longer waits for it.
            Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn set_nofs(&self) -> io::Result<()> {
        let on: u32 = 1;
        // SAFETY: SET_NOFS reads one u32 (0 or 1) from the pointer.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                fuse_wire::iomap::FUSE_DEV_IOC_SET_NOFS as _,
                &on as *const u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        let clone = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?;
        let session_fd: u32 = self.file.as_raw_fd() as u32;
        // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the session's fd) from the pointer.
        let rc = unsafe {
            libc::ioctl(
                clone.as_raw_fd(),
                fuse_wire::consts::FUSE_DEV_IOC_CLONE as _,
                &session_fd as *const u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(DevFuse { file: clone }))
    }

    fn backing_open(&self, fd: RawFd) -> io::Result<u32> {
        let map = fuse_wire::structs::BackingMap {
            fd,
            flags: fuse_wire::iomap::FUSE_BACKING_TYPE_IOMAP,
            padding: 0,
        };
        // SAFETY: BACKING_OPEN reads a fuse_backing_map and returns the id or -1.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                fuse_wire::consts::FUSE_DEV_IOC_BACKING_OPEN as _,
                &map as *const fuse_wire::structs::BackingMap,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as u32)
    }
}

/// Asks the kernel which iomap features this process could use (`FUSE_DEV_IOC_IOMAP_SUPPORT`);
/// `None` when the kernel does not know the ioctl (no FUSE iomap series).
pub fn probe_iomap_support(dev_fuse: &File) -> Option<u64> {
    let mut out = fuse_wire::structs::IomapSupport {
        flags: 0,
        padding: 0,
    };
    // SAFETY: IOMAP_SUPPORT writes one fuse_iomap_support through the pointer.
    let rc = unsafe {
        libc::ioctl(
            dev_fuse.as_raw_fd(),
            fuse_wire::iomap::FUSE_DEV_IOC_IOMAP_SUPPORT as _,
            &mut out as *mut fuse_wire::structs::IomapSupport,
        )
    };
    (rc == 0).then_some(out.flags)
}

/// A Unix SOCK_SEQPACKET connection whose peer plays the kernel: each packet it sends is one
/// request exactly as /dev/fuse would deliver it, each packet back is one reply or
/// notification. Used by the kernel model and for replaying recorded sessions.
pub struct KernelSocket {
    conn: Arc<std::os::fd::OwnedFd>,
}

impl KernelSocket {
    /// Creates the socket at `path`, waits for one peer and returns the connection.
    pub fn accept_one(path: &std::path::Path) -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let bytes = path.as_os_str().as_bytes();
        // SAFETY: plain socket calls on descriptors we own; sockaddr_un is zeroed and the
        // path length is checked against its buffer.
        unsafe {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            if bytes.len() >= addr.sun_path.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "socket path too long",
                ));
            }
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let listener = std::os::fd::OwnedFd::from_raw_fd(fd);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
                || libc::listen(fd, 1) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let conn = libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            if conn < 0 {
                return Err(io::Error::last_os_error());
            }
            drop(listener);
            Ok(Self {
                conn: Arc::new(std::os::fd::OwnedFd::from_raw_fd(conn)),
            })
        }
    }
}

impl Transport for KernelSocket {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: recv into a buffer we own, bounded by its length.
            let n =
                unsafe { libc::recv(self.conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                return Ok(Some(n as usize));
            }
            if n == 0 {
                return Ok(None);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECONNRESET | libc::ENOTCONN | libc::ESHUTDOWN) => return Ok(None),
                _ => return Err(err),
            }
        }
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        // SAFETY: msghdr points at the caller's IoSlices (layout-compatible with iovec).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = parts.len() as _;
        let n = unsafe { libc::sendmsg(self.conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // The peer is gone: the same as an unmounted /dev/fuse.
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => {
                    Err(io::Error::from_raw_os_error(libc::ENODEV))
                }
                _ => Err(err),
            };
        }
        Ok(())
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Ok(Arc::new(KernelSocket {
            conn: self.conn.clone(),
        }))
    }

    /// The model has no kernel to register with: answer as a kernel's first id would.
    fn backing_open(&self, _fd: RawFd) -> io::Result<u32> {
        Ok(1)
    }

    fn close(&self) {
        // SAFETY: shutdown on our own descriptor; wakes threads blocked in recv.
        unsafe { libc::shutdown(self.conn.as_raw_fd(), libc::SHUT_RDWR) };
    }
}
