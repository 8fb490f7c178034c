//! Where requests come from and replies go: /dev/fuse, or a Unix socket that plays the
//! kernel (for the kernel model and for replaying recorded sessions).

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr,
};

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
    /// Whether the kernel itself copies what `send` is given, ending the request EIO when
    /// a part cannot be read: then a READ reply may point into the device mapping (a page
    /// that fails to read is an error for the kernel's copy, where reading it here would
    /// be SIGBUS).
    fn copies_in_kernel(&self) -> bool {
        false
    }
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

/// The /dev/fuse ioctls, with the request numbers from `fuse_wire` (the one place they
/// are defined). Each reads or writes exactly the type named.
mod ioctl {
    use fuse_wire::structs::{BackingMap, IomapSupport};
    nix::ioctl_write_ptr_bad!(set_nofs, fuse_wire::iomap::FUSE_DEV_IOC_SET_NOFS, u32);
    nix::ioctl_write_ptr_bad!(clone, fuse_wire::consts::FUSE_DEV_IOC_CLONE, u32);
    nix::ioctl_write_ptr_bad!(
        backing_open,
        fuse_wire::consts::FUSE_DEV_IOC_BACKING_OPEN,
        BackingMap
    );
    nix::ioctl_read_bad!(
        iomap_support,
        fuse_wire::iomap::FUSE_DEV_IOC_IOMAP_SUPPORT,
        IomapSupport
    );
}

impl Transport for DevFuse {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match nix::unistd::read(&self.file, buf) {
                Ok(n) => return Ok(Some(n)),
                // The request was interrupted before we read it, or a signal arrived.
                Err(Errno::ENOENT | Errno::EINTR) => continue,
                // The session is over: unmounted (ENODEV), or unmounted while this read
                // was taking a request (the kernel's fuse_dev_do_read answers
                // ECONNABORTED then, also when nobody aborted the connection), or aborted.
                Err(Errno::ENODEV | Errno::ECONNABORTED) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        match nix::sys::uio::writev(&self.file, parts) {
            Ok(_) => Ok(()),
            // The request was interrupted and the kernel no longer waits for it.
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn copies_in_kernel(&self) -> bool {
        true
    }

    fn set_nofs(&self) -> io::Result<()> {
        // SAFETY: SET_NOFS reads one u32 (0 or 1) from the pointer, which lives for the call.
        unsafe { ioctl::set_nofs(self.file.as_raw_fd(), &1u32) }?;
        Ok(())
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        let clone = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?;
        let session_fd: u32 = self.file.as_raw_fd() as u32;
        // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the session's fd) from the pointer.
        unsafe { ioctl::clone(clone.as_raw_fd(), &session_fd) }?;
        Ok(Arc::new(DevFuse { file: clone }))
    }

    fn backing_open(&self, fd: RawFd) -> io::Result<u32> {
        let map = fuse_wire::structs::BackingMap {
            fd,
            flags: fuse_wire::iomap::FUSE_BACKING_TYPE_IOMAP,
            padding: 0,
        };
        // SAFETY: BACKING_OPEN reads a fuse_backing_map and returns the id.
        let id = unsafe { ioctl::backing_open(self.file.as_raw_fd(), &map) }?;
        Ok(id as u32)
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
    let rc = unsafe { ioctl::iomap_support(dev_fuse.as_raw_fd(), &mut out) };
    rc.is_ok().then_some(out.flags)
}

/// A Unix SOCK_SEQPACKET connection whose peer plays the kernel: each packet it sends is one
/// request exactly as /dev/fuse would deliver it, each packet back is one reply or
/// notification. Used by the kernel model and for replaying recorded sessions.
pub struct KernelSocket {
    conn: Arc<OwnedFd>,
}

impl KernelSocket {
    /// Creates the socket at `path`, waits for one peer and returns the connection.
    pub fn accept_one(path: &std::path::Path) -> io::Result<Self> {
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
        let addr = UnixAddr::new(path).map_err(|e| match e {
            Errno::ENAMETOOLONG => {
                io::Error::new(io::ErrorKind::InvalidInput, "socket path too long")
            }
            e => e.into(),
        })?;
        let listener = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::bind(listener.as_raw_fd(), &addr)?;
        socket::listen(&listener, Backlog::new(1)?)?;
        let conn = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        Ok(Self {
            conn: Arc::new(conn),
        })
    }
}

impl Transport for KernelSocket {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match socket::recv(self.conn.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET | Errno::ENOTCONN | Errno::ESHUTDOWN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let sent = socket::sendmsg::<UnixAddr>(
            self.conn.as_raw_fd(),
            parts,
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Ok(_) => Ok(()),
            // The peer is gone: the same as an unmounted /dev/fuse.
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                Err(io::Error::from_raw_os_error(Errno::ENODEV as i32))
            }
            Err(e) => Err(e.into()),
        }
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
        // Wakes threads blocked in recv.
        let _ = socket::shutdown(self.conn.as_raw_fd(), Shutdown::Both);
    }
}
