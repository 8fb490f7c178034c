//! ext4 inodes as FUSE attributes, and the clock.

use std::sync::atomic::{AtomicU64, Ordering};

use ext2fs::{Ino, Inode, Timestamp};
use fuse_wire::structs::Attr;

/// FUSE's root nodeid (1) is ext4's root inode (2); every other nodeid is the inode number.
pub const EXT4_ROOT_INO: Ino = 2;

/// The ext4 inode a FUSE nodeid names, if it can name one.
pub fn ino_of(nodeid: u64) -> Option<Ino> {
    match nodeid {
        fuse_wire::consts::FUSE_ROOT_ID => Some(EXT4_ROOT_INO),
        // Inode 2 is only ever reachable as nodeid 1; 0 and 1 are not inodes we serve.
        0 | 2 => None,
        n => Ino::try_from(n).ok(),
    }
}

/// The FUSE nodeid for an ext4 inode.
pub fn nodeid_of(ino: Ino) -> u64 {
    if ino == EXT4_ROOT_INO {
        fuse_wire::consts::FUSE_ROOT_ID
    } else {
        ino as u64
    }
}

/// Nanoseconds since the epoch that `now` answers while a recording is replayed (0: the
/// real clock). See `set_replay_clock`.
static REPLAY_CLOCK_NS: AtomicU64 = AtomicU64::new(0);

/// A replay serves each request at the time it was recorded, so the times the server sets
/// keep their order against times the recorded kernel sent (SETATTR from the writeback
/// cache, utimensat), as atime decisions need. `None` goes back to the real clock.
pub fn set_replay_clock(ns_since_epoch: Option<u64>) {
    REPLAY_CLOCK_NS.store(ns_since_epoch.unwrap_or(0), Ordering::Relaxed);
}

/// Now, as an ext4 timestamp, from the clock the kernel stamps inodes with (coarse: the
/// last tick). With the writeback cache the kernel sets a written file's mtime itself; a
/// finer clock here would give a file created just before a write a birth time after it.
pub fn now() -> Timestamp {
    use nix::time::{clock_gettime, ClockId};
    let replayed = REPLAY_CLOCK_NS.load(Ordering::Relaxed);
    if replayed != 0 {
        return Timestamp {
            sec: (replayed / 1_000_000_000) as i64,
            nsec: (replayed % 1_000_000_000) as u32,
        };
    }
    let t = clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .or_else(|_| clock_gettime(ClockId::CLOCK_REALTIME))
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    Timestamp {
        sec: t.tv_sec(),
        nsec: t.tv_nsec() as u32,
    }
}

/// The FUSE view of an inode. `flags` carries FUSE_ATTR_* bits (iomap mode sets some).
pub fn to_attr(ino: Ino, inode: &Inode, block_size: u32, flags: u32) -> Attr {
    let (a, m, c) = (inode.atime(), inode.mtime(), inode.ctime());
    Attr {
        ino: ino as u64,
        size: inode.size(),
        blocks: inode.blocks_512(),
        atime: a.sec as u64,
        mtime: m.sec as u64,
        ctime: c.sec as u64,
        atimensec: a.nsec,
        mtimensec: m.nsec,
        ctimensec: c.nsec,
        mode: inode.mode(),
        nlink: inode.links() as u32,
        uid: inode.uid(),
        gid: inode.gid(),
        rdev: inode.rdev(),
        blksize: block_size,
        flags,
    }
}
