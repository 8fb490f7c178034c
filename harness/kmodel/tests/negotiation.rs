//! INIT negotiation against iomapfs (issue 18 item 1): iomap only when the kernel speaks the
//! iomap minor AND offers the bit. Mainline 7.3 (minor 46) sets INIT bit 43 meaning
//! FUSE_HAS_IO_URING_BUFPOOL; a server that took it for FUSE_IOMAP would stop moving file
//! data on a kernel that does no iomap (seen on Debian's 7.3 as stale blocks in the dio suite).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::iomap::*;
use kmodel::{InitOffer, Kernel};

const TIMEOUT: Duration = Duration::from_secs(60);
const EPROTO: i32 = 71;

/// A fixture whose server writes the mode it negotiated to a file.
fn fixture(options: &[&str]) -> (Fixture, PathBuf) {
    let mut fx = Fixture::new(32 << 20, 4096, options);
    let mode = fx.dir.path().join("mode");
    fx.spec
        .options
        .push(format!("mode_file={}", mode.display()));
    (fx, mode)
}

fn mode_of(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .expect("the server writes its mode file at INIT")
        .trim()
        .to_string()
}

#[test]
fn mainline_7_3_init_with_bit_43_stays_classic() {
    let (fx, mode) = fixture(&[]);
    let offer = InitOffer::MAINLINE_7_3_URING;
    assert_eq!(offer.minor, 46);
    assert_ne!(offer.flags & FUSE_IOMAP, 0, "7.3 with io_uring sets bit 43");
    // kmodel itself rejects a reply that takes the bit for FUSE_IOMAP (a violation).
    let mut k = Kernel::mount_offering(&fx.spec, TIMEOUT, offer)
        .unwrap_or_else(|e| panic!("mount as mainline 7.3: {e}"));
    assert!(!k.conn.iomap, "classic connection");
    assert_eq!(
        k.conn.flags & FUSE_IOMAP,
        0,
        "the reply does not echo bit 43"
    );
    assert!(k.conn.minor < IOMAP_MINOR, "reply minor {}", k.conn.minor);
    assert_eq!(mode_of(&mode), "classic");
    // kmodel also rejects FUSE_ATTR_IOMAP on a classic connection; check it directly too.
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).expect("create");
    let flags = k.inode(f).unwrap().attr.flags;
    assert_eq!(
        flags & (FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
        0,
        "create attr flags {flags:#x}"
    );
    let attr = k.getattr(f).expect("getattr");
    assert_eq!(
        attr.flags & FUSE_ATTR_IOMAP,
        0,
        "getattr attr flags {:#x}",
        attr.flags
    );
    k.destroy().expect("unmount");
    let log = fx.server_logs();
    assert!(
        log.contains("7.46") && log.contains("FUSE_HAS_IO_URING_BUFPOOL"),
        "the server says why it stays classic:\n{log}"
    );
}

#[test]
fn iomap_minor_with_the_bit_negotiates_iomap() {
    let (fx, mode) = fixture(&[]);
    let mut k = Kernel::mount_offering(&fx.spec, TIMEOUT, InitOffer::IOMAP).expect("mount");
    assert!(k.conn.iomap);
    assert_ne!(k.conn.flags & FUSE_IOMAP, 0);
    assert_eq!(k.conn.minor, IOMAP_MINOR);
    assert_eq!(mode_of(&mode), "iomap");
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).expect("create");
    let flags = k.inode(f).unwrap().attr.flags;
    assert_eq!(
        flags & (FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
        FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE
    );
    k.destroy().expect("unmount");
}

#[test]
fn iomap_minor_without_the_bit_stays_classic() {
    let (fx, mode) = fixture(&[]);
    let offer = InitOffer {
        minor: IOMAP_MINOR,
        flags: InitOffer::IOMAP.flags & !FUSE_IOMAP,
    };
    let k = Kernel::mount_offering(&fx.spec, TIMEOUT, offer).expect("mount");
    assert!(!k.conn.iomap);
    assert_eq!(mode_of(&mode), "classic");
    k.destroy().expect("unmount");
}

#[test]
fn iomap_on_refuses_a_mainline_7_3_kernel_clearly() {
    let (fx, mode) = fixture(&["iomap=on"]);
    let err = match Kernel::mount_offering(&fx.spec, TIMEOUT, InitOffer::MAINLINE_7_3_URING) {
        Ok(_) => panic!("iomap=on must refuse a kernel without the iomap series"),
        Err(e) => e,
    };
    assert_eq!(err.errno(), Some(EPROTO), "INIT answered EPROTO: {err}");
    assert!(!mode.exists(), "no mode was negotiated");
    let log = fx.server_logs();
    assert!(
        log.contains("iomap=on")
            && log.contains("FUSE 7.46")
            && log.contains("bit 43 means FUSE_HAS_IO_URING_BUFPOOL"),
        "the refusal names the kernel's minor and what bit 43 means there:\n{log}"
    );
}

/// Every server appends what it negotiated to `IOMAPFS_MODE_LOG` (how the guest agent
/// learns the mode of each mount a test made, fstests' included).
#[test]
fn every_session_appends_its_mode_to_the_mode_log() {
    let (mut fx, _) = fixture(&[]);
    let log = fx.dir.path().join("modes");
    // Set for these servers only: other tests' servers may start meanwhile (cargo test
    // runs the tests as threads of one process).
    fx.spec
        .env
        .push(("IOMAPFS_MODE_LOG".into(), log.clone().into()));
    let k =
        Kernel::mount_offering(&fx.spec, TIMEOUT, InitOffer::MAINLINE_7_3_URING).expect("mount");
    k.destroy().expect("unmount");
    let k = Kernel::mount_offering(&fx.spec, TIMEOUT, InitOffer::IOMAP).expect("mount");
    k.destroy().expect("unmount");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "classic\niomap\n");
}

/// Classic mode asks for what makes FUSE fast where it is safe because the server is the
/// filesystem's only writer: parallel directory operations, readdirplus when it pays, 1 MiB
/// requests, entries and attributes the kernel may cache for a minute, and the writeback
/// cache (unless `nowriteback_cache`).
#[test]
fn classic_mode_negotiates_the_fast_paths() {
    use fuse_wire::consts::*;
    let (fx, _) = fixture(&[]);
    let offer = InitOffer {
        minor: IOMAP_MINOR,
        flags: InitOffer::IOMAP.flags & !FUSE_IOMAP,
    };
    let mut k = Kernel::mount_offering(&fx.spec, TIMEOUT, offer).expect("mount");
    assert!(!k.conn.iomap);
    for (bit, name) in [
        (FUSE_PARALLEL_DIROPS, "FUSE_PARALLEL_DIROPS"),
        (FUSE_READDIRPLUS_AUTO, "FUSE_READDIRPLUS_AUTO"),
        (FUSE_DO_READDIRPLUS, "FUSE_DO_READDIRPLUS"),
        (FUSE_MAX_PAGES, "FUSE_MAX_PAGES"),
        (FUSE_BIG_WRITES, "FUSE_BIG_WRITES"),
        (FUSE_WRITEBACK_CACHE, "FUSE_WRITEBACK_CACHE"),
    ] {
        assert_ne!(k.conn.flags & bit, 0, "{name} in {:#x}", k.conn.flags);
    }
    assert_eq!(k.conn.max_write, 1 << 20);
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).expect("create");
    let valid = k.inode(f).expect("created").entry_valid;
    assert!(valid >= 60, "entries valid for {valid} s");
    k.destroy().expect("unmount");

    let (fx, _) = fixture(&["nowriteback_cache"]);
    let k = Kernel::mount_offering(&fx.spec, TIMEOUT, offer).expect("mount");
    assert_eq!(
        k.conn.flags & FUSE_WRITEBACK_CACHE,
        0,
        "{:#x}",
        k.conn.flags
    );
    k.destroy().expect("unmount");
}
