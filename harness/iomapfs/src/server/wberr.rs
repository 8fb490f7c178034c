//! Write errors reported per open file, as the kernel reports a local filesystem's
//! writeback errors (`errseq_t`, `file_check_and_advance_wb_err`).
//!
//! In classic mode the server writes file data through the device's page cache, and a
//! failure to write it back shows up later, once, in whichever sync of the device happens
//! to see it. Which file's data failed is not known then, so the error goes to every inode
//! written since the last sync of the device (more files than failed, never fewer). Each
//! inode keeps a sequence of its errors; each open file handle keeps the sequence it last
//! saw, so FSYNC reports an error once to every handle that was open when it happened, and
//! a handle opened later sees it only if no one has reported it yet (`errseq_sample`).
//!
//! FLUSH (close) reports nothing: it writes nothing back, and reporting there would use up
//! the error of a handle that `dup` shares, so the fsync that matters would miss it (ext4
//! reports nothing at close either).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ext2fs::Ino;

use super::Errno;

/// The latest write error of one inode.
#[derive(Clone, Copy)]
struct InodeError {
    /// Its sequence number: from one counter for all inodes, so a number is never reused.
    seq: u64,
    errno: i32,
    /// Reported to some handle already: handles opened from now on start past it.
    seen: bool,
}

/// One open file.
#[derive(Clone, Copy)]
struct Handle {
    ino: Ino,
    /// The sequence number of the last error this handle reported (0: none).
    seen: u64,
}

#[derive(Default)]
struct State {
    /// The last sequence number handed out.
    last_seq: u64,
    errors: HashMap<Ino, InodeError>,
    handles: HashMap<u64, Handle>,
    /// Inodes whose data was written since the last sync of the device began.
    written: HashSet<Ino>,
}

/// What a sync of the device found, for [`WbErrors::sync_done`].
pub(crate) struct SyncTicket(HashSet<Ino>);

#[derive(Default)]
pub(crate) struct WbErrors(Mutex<State>);

impl WbErrors {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it (every change is
        // one insert or remove).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle `fh` on `ino` was opened: it will report errors from now on, and an error
    /// nobody has reported yet.
    pub fn open(&self, fh: u64, ino: Ino) {
        let mut s = self.state();
        let seen = match s.errors.get(&ino) {
            Some(e) if e.seen => e.seq,
            _ => 0,
        };
        s.handles.insert(fh, Handle { ino, seen });
    }

    /// The kernel released `fh`.
    pub fn release(&self, fh: u64) {
        self.state().handles.remove(&fh);
    }

    /// The kernel forgot `ino` (as an inode leaving the kernel's cache, its errors go).
    pub fn forget(&self, ino: Ino) {
        self.state().errors.remove(&ino);
    }

    /// The filesystem is closed: nothing is open any more.
    pub fn clear(&self) {
        *self.state() = State::default();
    }

    /// `ino`'s data went to the device's page cache. Called before and after writing it:
    /// a sync that starts in between may or may not carry the write, and either way the
    /// inode must be among those a failure of the next one is charged to.
    pub fn wrote(&self, ino: Ino) {
        self.state().written.insert(ino);
    }

    /// A sync of the whole device begins: the inodes written so far are what it carries.
    pub fn sync_started(&self) -> SyncTicket {
        SyncTicket(std::mem::take(&mut self.state().written))
    }

    /// The sync that `ticket` began ended with `result`. A failure is charged to the inodes
    /// it carried and to those written while it ran (it may have carried their data too,
    /// and the device reports a failure only once). Returns whether any inode took it: an
    /// error no inode took must go straight to the caller, or nobody would hear of it.
    pub fn sync_done(&self, ticket: SyncTicket, result: Result<(), Errno>) -> bool {
        let Err(e) = result else { return false };
        let mut s = self.state();
        let mut inodes = ticket.0;
        inodes.extend(s.written.drain());
        for &ino in &inodes {
            s.record(ino, e);
        }
        !inodes.is_empty()
    }

    /// A sync of part of the device (one inode's data and the metadata) ended with
    /// `result`. A failure is charged to the inodes written since the last sync of the
    /// whole device (the device reports a failure once, whoever's write-back it was), and
    /// a success changes nothing: the others' data may still be unwritten. Returns whether
    /// any inode took the failure.
    pub fn partial_sync_done(&self, result: Result<(), Errno>) -> bool {
        self.sync_done(SyncTicket(HashSet::new()), result)
    }

    /// A partial sync (a range of the device, for one write of `ino`) failed: the failure
    /// may be another inode's write-back that this sync happened to see first, so it is
    /// charged as a failed sync of the whole device would be, and to `ino`.
    pub fn range_sync_failed(&self, ino: Ino, e: Errno) {
        let mut s = self.state();
        let mut inodes: HashSet<Ino> = s.written.drain().collect();
        inodes.insert(ino);
        for ino in inodes {
            s.record(ino, e);
        }
    }

    /// FSYNC on `fh`: the error of its inode that it has not reported yet, now reported.
    /// `None` for a handle this server did not hand out.
    pub fn check_and_advance(&self, fh: u64) -> Option<Result<(), Errno>> {
        let mut s = self.state();
        let handle = *s.handles.get(&fh)?;
        let Some(err) = s.errors.get_mut(&handle.ino) else {
            return Some(Ok(()));
        };
        if err.seq == handle.seen {
            return Some(Ok(()));
        }
        err.seen = true;
        let (seq, errno) = (err.seq, err.errno);
        if let Some(h) = s.handles.get_mut(&fh) {
            h.seen = seq;
        }
        Some(Err(Errno(errno)))
    }
}

impl State {
    fn record(&mut self, ino: Ino, e: Errno) {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.errors.insert(
            ino,
            InodeError {
                seq,
                errno: e.0,
                seen: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIO: Result<(), Errno> = Err(Errno(libc::EIO));

    /// A sync of the device that fails, after `written` were written.
    fn failed_sync(wb: &WbErrors, written: &[Ino]) -> bool {
        for &ino in written {
            wb.wrote(ino);
        }
        let ticket = wb.sync_started();
        wb.sync_done(ticket, EIO)
    }

    #[test]
    fn every_handle_open_at_the_failure_reports_it_once() {
        let wb = WbErrors::default();
        for fh in 1..=3 {
            wb.open(fh, 12);
        }
        assert!(failed_sync(&wb, &[12]));
        for fh in 1..=3 {
            assert_eq!(wb.check_and_advance(fh), Some(EIO), "fh {fh}, first fsync");
        }
        for fh in 1..=3 {
            assert_eq!(
                wb.check_and_advance(fh),
                Some(Ok(())),
                "fh {fh}, second fsync"
            );
        }
        // Reported, so a handle opened now starts past it.
        wb.open(4, 12);
        assert_eq!(wb.check_and_advance(4), Some(Ok(())));
        // A new failure reaches every handle again.
        assert!(failed_sync(&wb, &[12]));
        for fh in 1..=4 {
            assert_eq!(
                wb.check_and_advance(fh),
                Some(EIO),
                "fh {fh}, after the second failure"
            );
        }
    }

    #[test]
    fn an_error_nobody_reported_reaches_a_later_open() {
        let wb = WbErrors::default();
        assert!(failed_sync(&wb, &[12]));
        wb.open(1, 12);
        assert_eq!(wb.check_and_advance(1), Some(EIO));
        assert_eq!(wb.check_and_advance(1), Some(Ok(())));
    }

    #[test]
    fn only_inodes_written_since_the_last_sync_take_a_failure() {
        let wb = WbErrors::default();
        wb.open(1, 12);
        wb.open(2, 13);
        wb.wrote(13);
        let ticket = wb.sync_started();
        assert!(!wb.sync_done(ticket, Ok(())));
        // 13 was carried by a sync that worked; only 12 is written before the failure.
        assert!(failed_sync(&wb, &[12]));
        assert_eq!(wb.check_and_advance(1), Some(EIO));
        assert_eq!(wb.check_and_advance(2), Some(Ok(())));
        // Nothing written since: a failure no inode takes is the caller's to report.
        assert!(!failed_sync(&wb, &[]));
    }

    #[test]
    fn a_write_during_a_failing_sync_takes_the_failure() {
        let wb = WbErrors::default();
        wb.open(1, 12);
        wb.open(2, 13);
        wb.wrote(12);
        let ticket = wb.sync_started();
        wb.wrote(13);
        assert!(wb.sync_done(ticket, EIO));
        assert_eq!(wb.check_and_advance(1), Some(EIO));
        assert_eq!(wb.check_and_advance(2), Some(EIO));
    }

    #[test]
    fn a_failed_range_sync_is_charged_to_its_writer_and_the_written() {
        let wb = WbErrors::default();
        for (fh, ino) in [(1, 12), (2, 13), (3, 14)] {
            wb.open(fh, ino);
        }
        wb.wrote(13);
        wb.range_sync_failed(12, Errno(libc::EIO));
        assert_eq!(wb.check_and_advance(1), Some(EIO));
        assert_eq!(wb.check_and_advance(2), Some(EIO));
        assert_eq!(wb.check_and_advance(3), Some(Ok(())));
        // Charged already: the next sync's failure is not theirs.
        assert!(!failed_sync(&wb, &[]));
    }

    #[test]
    fn released_and_unknown_handles_report_nothing() {
        let wb = WbErrors::default();
        wb.open(1, 12);
        assert!(failed_sync(&wb, &[12]));
        wb.release(1);
        assert_eq!(wb.check_and_advance(1), None);
        assert_eq!(wb.check_and_advance(99), None);
        // A forgotten inode's errors go with it.
        wb.forget(12);
        wb.open(2, 12);
        assert_eq!(wb.check_and_advance(2), Some(Ok(())));
    }
}
