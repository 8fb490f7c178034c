//! Write errors reported per open file (server/wberr.rs), as fstests' generic/441 checks
//! with dm-error under ext4: after the device fails to write back, FSYNC on every handle
//! that was open reports the error once, later FSYNCs report nothing, and a handle opened
//! after the error was reported sees nothing. The device failure here is injected
//! (`fault=fail_sync:N`: the Nth sync of the device fails once, as a failed write-back
//! does), and the requests go through `dispatch` as the kernel's would.

use std::path::Path;

use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::structs::*;
use fuse_wire::Opcode;
use iomapfs::fault::Fault;
use iomapfs::options::MountOptions;
use iomapfs::reply::Reply;
use iomapfs::server::Server;
use zerocopy::IntoBytes;

const EIO: Result<(), i32> = Err(libc::EIO);

struct Kernel {
    server: Server,
    unique: u64,
}

impl Kernel {
    /// A server on a fresh image whose `fail_sync`th device sync fails.
    fn new(dir: &Path, fail_sync: u64) -> Self {
        let image = dir.join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        test_support::e2fs::mkfs_ext4(&image, 4096, &[]).unwrap();
        let fs = ext2fs::Fs::open(&image, true).unwrap();
        let data = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let opts = MountOptions {
            fault: Some(Fault::FailSync { nth: fail_sync }),
            ..Default::default()
        };
        Self {
            server: Server::new(fs, data, opts),
            unique: 0,
        }
    }

    fn call(&mut self, opcode: Opcode, nodeid: u64, parts: &[&[u8]]) -> Result<Reply, i32> {
        self.unique += 2;
        let header = InHeader {
            opcode: opcode as u32,
            unique: self.unique,
            nodeid,
            ..Default::default()
        };
        let bytes = fuse_wire::encode_request(&header, parts);
        let req = fuse_wire::request::parse(&bytes).expect("a well-formed request");
        let answer = iomapfs::dispatch::handle(&self.server, &req).expect("a reply");
        answer.map_err(|e| e.0)
    }

    /// CREATE: the new file's node id and handle.
    fn create(&mut self, name: &str) -> (u64, u64) {
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
            Ok(Reply::Create(entry, open)) => (entry.nodeid, open.fh),
            other => panic!("CREATE: {other:?}"),
        }
    }

    fn open(&mut self, nodeid: u64) -> u64 {
        let arg = OpenIn {
            flags: libc::O_WRONLY as u32,
            open_flags: 0,
        };
        match self.call(Opcode::Open, nodeid, &[arg.as_bytes()]) {
            Ok(Reply::Open(open)) => open.fh,
            other => panic!("OPEN: {other:?}"),
        }
    }

    fn write(&mut self, nodeid: u64, fh: u64, offset: u64, len: usize) {
        let arg = WriteIn {
            fh,
            offset,
            size: len as u32,
            ..Default::default()
        };
        let payload = vec![0x7cu8; len];
        let written = self.call(Opcode::Write, nodeid, &[arg.as_bytes(), &payload]);
        assert!(
            matches!(written, Ok(Reply::Write(w)) if w.size == len as u32),
            "{written:?}"
        );
    }

    fn fsync(&mut self, nodeid: u64, fh: u64) -> Result<(), i32> {
        let arg = FsyncIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Fsync, nodeid, &[arg.as_bytes()])
            .map(|_| ())
    }

    fn release(&mut self, nodeid: u64, fh: u64) {
        let arg = ReleaseIn {
            fh,
            ..Default::default()
        };
        assert!(self
            .call(Opcode::Release, nodeid, &[arg.as_bytes()])
            .is_ok());
    }

    fn flush(&mut self, nodeid: u64, fh: u64) -> Result<(), i32> {
        let arg = FlushIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Flush, nodeid, &[arg.as_bytes()])
            .map(|_| ())
    }
}

fn have_mkfs() -> bool {
    test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs"))
}

#[test]
fn every_handle_open_at_a_failed_write_back_reports_it_once() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Device syncs (one per FSYNC): 1 to 4, the first round, work; 5 fails.
    let mut k = Kernel::new(dir.path(), 5);
    let (f, first) = k.create("f");
    let mut fhs = vec![first];
    fhs.extend((0..3).map(|_| k.open(f)));
    for (i, &fh) in fhs.iter().enumerate() {
        k.write(f, fh, i as u64 * 66_560, 66_560);
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), Ok(()), "fh {fh}: before the failure");
    }
    // Overwrites (no wait for the device), then the sync that fails.
    for (i, &fh) in fhs.iter().enumerate() {
        k.write(f, fh, i as u64 * 66_560, 66_560);
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), EIO, "fh {fh}: the failure, once per handle");
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), Ok(()), "fh {fh}: reported already");
    }
    // Closing reports nothing, and a handle opened now starts past the reported error.
    for &fh in &fhs {
        assert_eq!(k.flush(f, fh), Ok(()));
        k.release(f, fh);
    }
    let fresh = k.open(f);
    assert_eq!(k.fsync(f, fresh), Ok(()));
    k.server.shutdown().unwrap();
}

#[test]
fn an_error_not_yet_reported_reaches_a_handle_opened_after_it() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kernel::new(dir.path(), 1);
    let (f, fh) = k.create("f");
    k.write(f, fh, 0, 8192);
    // A sync nobody asked for (the commit timer's) fails: no handle has heard of it.
    assert_eq!(k.server.sync(), EIO.map_err(iomapfs::errno::Errno));
    k.release(f, fh);
    let late = k.open(f);
    assert_eq!(k.fsync(f, late), EIO, "the first to ask hears of it");
    assert_eq!(k.fsync(f, late), Ok(()));
    let later = k.open(f);
    assert_eq!(k.fsync(f, later), Ok(()), "reported already");
    k.server.shutdown().unwrap();
}

#[test]
fn a_failure_is_charged_to_the_files_written_not_to_the_others() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kernel::new(dir.path(), 1);
    let (written, w) = k.create("written");
    let (other, o) = k.create("other");
    k.write(written, w, 0, 4096);
    // The fsync of the file not written sees the sync fail, but the failure is the
    // written file's: it hears of it, the other file does not.
    assert_eq!(k.fsync(other, o), Ok(()));
    assert_eq!(k.fsync(written, w), EIO);
    assert_eq!(k.fsync(written, w), Ok(()));
    k.server.shutdown().unwrap();
}

#[test]
fn a_failure_no_file_takes_goes_to_the_fsync_that_saw_it() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kernel::new(dir.path(), 2);
    let (f, fh) = k.create("f");
    k.write(f, fh, 0, 4096);
    assert_eq!(k.fsync(f, fh), Ok(()));
    // Nothing written since: the failure is no file's, so the caller hears it directly.
    assert_eq!(k.fsync(f, fh), EIO);
    assert_eq!(k.fsync(f, fh), Ok(()));
    k.server.shutdown().unwrap();
}
