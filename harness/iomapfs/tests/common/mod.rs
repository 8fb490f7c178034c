//! A server on a fresh image, sent requests through `dispatch` as the kernel would send
//! them, without a mount.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::structs::*;
use fuse_wire::Opcode;
use iomapfs::options::MountOptions;
use iomapfs::reply::Reply;
use iomapfs::server::Server;
use zerocopy::IntoBytes;

/// False (after a SKIP line, or a failure under CI) when mkfs.ext4 is missing.
pub fn have_mkfs() -> bool {
    test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs"))
}

/// Dirty and under-writeback pages of `[off, off + len)` of the file, by cachestat(2)
/// (Linux 6.5); `None` where the kernel lacks it.
pub fn unclean_pages(file: &std::fs::File, off: u64, len: u64) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off, len };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live for the call.
    let rc = unsafe { libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &range, &mut stat, 0u32) };
    (rc == 0).then_some(stat.nr_dirty + stat.nr_writeback)
}

pub struct Kernel {
    pub server: Server,
    /// The image the server serves.
    pub image: PathBuf,
    unique: u64,
}

impl Kernel {
    /// A server with `opts` on a fresh 16 MiB image in `dir`.
    pub fn new(dir: &Path, opts: MountOptions) -> Self {
        let image = test_support::e2fs::new_ext4_image(dir, 16).unwrap();
        Self::serving(image, opts)
    }

    /// A server with `opts` on the filesystem in `image` (a file or a block device).
    pub fn serving(image: PathBuf, opts: MountOptions) -> Self {
        Self {
            server: Server::open_image(&image, opts).unwrap(),
            image,
            unique: 0,
        }
    }

    /// One request; its reply, or its errno.
    pub fn call(&mut self, opcode: Opcode, nodeid: u64, parts: &[&[u8]]) -> Result<Reply, i32> {
        self.send(opcode, nodeid, parts).expect("a reply")
    }

    /// One request; `None` when it gets no reply (FORGET).
    pub fn send(
        &mut self,
        opcode: Opcode,
        nodeid: u64,
        parts: &[&[u8]],
    ) -> Option<Result<Reply, i32>> {
        self.unique += 2;
        let header = InHeader {
            opcode: opcode as u32,
            unique: self.unique,
            nodeid,
            ..Default::default()
        };
        let bytes = fuse_wire::encode_request(&header, parts);
        let req = fuse_wire::request::parse(&bytes).expect("a well-formed request");
        let answer = iomapfs::dispatch::handle(&self.server, &req)?;
        Some(answer.map_err(|e| e.0))
    }

    /// FORGET of `nlookup` references on `nodeid`.
    pub fn forget(&mut self, nodeid: u64, nlookup: u64) {
        let arg = ForgetIn { nlookup };
        let answer = self.send(Opcode::Forget, nodeid, &[arg.as_bytes()]);
        assert!(answer.is_none(), "FORGET has no reply");
    }

    /// CREATE in the root: the new file's node id and handle.
    pub fn create(&mut self, name: &str) -> (u64, OpenOut) {
        let arg = CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o100644,
            ..Default::default()
        };
        let name = format!("{name}\0");
        match self.call(
            Opcode::Create,
            FUSE_ROOT_ID,
            &[arg.as_bytes(), name.as_bytes()],
        ) {
            Ok(Reply::Create(entry, open)) => (entry.nodeid, open),
            other => panic!("CREATE: {other:?}"),
        }
    }

    /// OPEN with open(2) `flags`.
    pub fn open(&mut self, nodeid: u64, flags: i32) -> OpenOut {
        let arg = OpenIn {
            flags: flags as u32,
            open_flags: 0,
        };
        match self.call(Opcode::Open, nodeid, &[arg.as_bytes()]) {
            Ok(Reply::Open(open)) => open,
            other => panic!("OPEN: {other:?}"),
        }
    }

    /// WRITE of `len` bytes at `offset` through a handle open with open(2) `flags`, as sent:
    /// the bytes written or the errno.
    pub fn try_write(
        &mut self,
        nodeid: u64,
        fh: u64,
        flags: i32,
        offset: u64,
        len: usize,
    ) -> Result<u32, i32> {
        let arg = WriteIn {
            fh,
            offset,
            size: len as u32,
            flags: flags as u32,
            ..Default::default()
        };
        let payload = vec![0x7cu8; len];
        match self.call(Opcode::Write, nodeid, &[arg.as_bytes(), &payload]) {
            Ok(Reply::Write(w)) => Ok(w.size),
            Ok(other) => panic!("WRITE: {other:?}"),
            Err(e) => Err(e),
        }
    }

    /// WRITE of `len` bytes at `offset` through a handle open with open(2) `flags`.
    pub fn write(&mut self, nodeid: u64, fh: u64, flags: i32, offset: u64, len: usize) {
        let written = self.try_write(nodeid, fh, flags, offset, len);
        assert_eq!(written, Ok(len as u32));
    }

    pub fn fsync(&mut self, nodeid: u64, fh: u64) -> Result<(), i32> {
        let arg = FsyncIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Fsync, nodeid, &[arg.as_bytes()])
            .map(|_| ())
    }

    pub fn flush(&mut self, nodeid: u64, fh: u64) -> Result<(), i32> {
        let arg = FlushIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Flush, nodeid, &[arg.as_bytes()])
            .map(|_| ())
    }

    pub fn release(&mut self, nodeid: u64, fh: u64) {
        let arg = ReleaseIn {
            fh,
            ..Default::default()
        };
        assert!(self
            .call(Opcode::Release, nodeid, &[arg.as_bytes()])
            .is_ok());
    }
}
