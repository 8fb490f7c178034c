//! Write errors reported per open file (server/wberr.rs), as fstests' generic/441 checks
//! with dm-error under ext4: after the device fails to write back, FSYNC on every handle
//! that was open reports the error once, later FSYNCs report nothing, and a handle opened
//! after the error was reported sees nothing. The device failure here is injected
//! (`fault=fail_sync:N`: the Nth sync of the device fails once, as a failed write-back
//! does), and the requests go through `dispatch` as the kernel's would.

mod common;

use common::{have_mkfs, Kernel};
use iomapfs::fault::Fault;
use iomapfs::options::MountOptions;

const EIO: Result<(), i32> = Err(libc::EIO);
const RW: i32 = libc::O_RDWR;

/// A server whose `nth` sync of the device fails.
fn failing(dir: &std::path::Path, nth: u64) -> Kernel {
    let opts = MountOptions {
        fault: Some(Fault::FailSync { nth }),
        ..Default::default()
    };
    Kernel::new(dir, opts)
}

/// An O_DSYNC write is durable before it is acknowledged: it syncs the device itself (the
/// kernel sends no FSYNC after an asynchronous direct write), and a failed sync fails it,
/// reported to the writer's handle once, as an FSYNC on it would be.
#[test]
fn an_o_dsync_write_syncs_before_it_is_acknowledged() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Device syncs: the first fails.
    let mut k = failing(dir.path(), 1);
    let (f, h) = k.create("f");
    assert_eq!(k.try_write(f, h.fh, RW, 0, 4096), Ok(4096), "no sync asked");
    let dsync = RW | libc::O_DIRECT | libc::O_DSYNC;
    assert_eq!(k.try_write(f, h.fh, dsync, 0, 4096), EIO.map(|_| 0));
    // The writer heard of it, as from an FSYNC on its handle: once.
    assert_eq!(k.fsync(f, h.fh), Ok(()), "reported already");
    assert_eq!(
        k.try_write(f, h.fh, dsync, 0, 4096),
        Ok(4096),
        "sync 3 works"
    );
    assert_eq!(k.try_write(f, h.fh, RW | libc::O_SYNC, 0, 4096), Ok(4096));
}

#[test]
fn every_handle_open_at_a_failed_write_back_reports_it_once() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Device syncs (one per FSYNC): 1 to 4, the first round, work; 5 fails.
    let mut k = failing(dir.path(), 5);
    let (f, first) = k.create("f");
    let mut fhs = vec![first.fh];
    fhs.extend((0..3).map(|_| k.open(f, libc::O_WRONLY).fh));
    for (i, &fh) in fhs.iter().enumerate() {
        k.write(f, fh, RW, i as u64 * 66_560, 66_560);
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), Ok(()), "fh {fh}: before the failure");
    }
    // Overwrites (no wait for the device), then the sync that fails.
    for (i, &fh) in fhs.iter().enumerate() {
        k.write(f, fh, RW, i as u64 * 66_560, 66_560);
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), EIO, "fh {fh}: the failure, once per handle");
    }
    for &fh in &fhs {
        assert_eq!(k.fsync(f, fh), Ok(()), "fh {fh}: reported already");
    }
    // Closing reports nothing (there is no FLUSH, as ext4 has no flush operation), and a
    // handle opened now starts past the reported error.
    for &fh in &fhs {
        assert_eq!(k.flush(f, fh), Err(libc::ENOSYS));
        k.release(f, fh);
    }
    let fresh = k.open(f, libc::O_WRONLY).fh;
    assert_eq!(k.fsync(f, fresh), Ok(()));
    k.server.shutdown().unwrap();
}

#[test]
fn an_error_not_yet_reported_reaches_a_handle_opened_after_it() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = failing(dir.path(), 1);
    let (f, open) = k.create("f");
    k.write(f, open.fh, RW, 0, 8192);
    // A sync nobody asked for (the commit timer's) fails: no handle has heard of it.
    assert_eq!(k.server.sync(), EIO.map_err(iomapfs::errno::Errno));
    k.release(f, open.fh);
    let late = k.open(f, libc::O_WRONLY).fh;
    assert_eq!(k.fsync(f, late), EIO, "the first to ask hears of it");
    assert_eq!(k.fsync(f, late), Ok(()));
    let later = k.open(f, libc::O_WRONLY).fh;
    assert_eq!(k.fsync(f, later), Ok(()), "reported already");
    k.server.shutdown().unwrap();
}

#[test]
fn a_failure_is_charged_to_the_files_written_not_to_the_others() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = failing(dir.path(), 1);
    let (written, w) = k.create("written");
    let (other, o) = k.create("other");
    let (w, o) = (w.fh, o.fh);
    k.write(written, w, RW, 0, 4096);
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
    let mut k = failing(dir.path(), 2);
    let (f, open) = k.create("f");
    let fh = open.fh;
    k.write(f, fh, RW, 0, 4096);
    assert_eq!(k.fsync(f, fh), Ok(()));
    // Nothing written since: the failure is no file's, so the caller hears it directly.
    assert_eq!(k.fsync(f, fh), EIO);
    assert_eq!(k.fsync(f, fh), Ok(()));
    k.server.shutdown().unwrap();
}
