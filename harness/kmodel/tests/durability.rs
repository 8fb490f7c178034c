//! What the server keeps through panics, crashes, stop signals and hostile images
//! (issue 17, items 2-4), seen from the kernel model.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::Opcode;
use kmodel::image::tool;
use kmodel::wire::Request;
use kmodel::Kernel;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const EIO: i32 = 5;
const EINVAL: i32 = 22;
const EROFS: i32 = 30;
const ESTALE: i32 = 116;
const EUCLEAN: i32 = 117;

fn run(program: &str, args: &[&str], image: &Path) -> (i32, String) {
    let out = Command::new(tool(program))
        .args(args)
        .arg(image)
        .output()
        .expect("run e2fsprogs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + "\n"
        + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// The superblock's "Filesystem state" as dumpe2fs shows it.
fn state(image: &Path) -> String {
    let (_, out) = run("dumpe2fs", &["-h"], image);
    out.lines()
        .find_map(|l| l.strip_prefix("Filesystem state:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// debugfs `stats`: the head of the orphan list, if any.
fn first_orphan(image: &Path) -> Option<u64> {
    let (_, out) = run("debugfs", &["-R", "stats"], image);
    out.lines()
        .find_map(|l| l.strip_prefix("First orphan inode:"))
        .and_then(|s| s.trim().parse().ok())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

fn signal(k: &Kernel, sig: Signal) {
    let pid = k.server_pid().expect("a spawned server");
    // A positive pid only: kill(0) and kill(-n) would signal whole process groups.
    let pid = i32::try_from(pid).ok().filter(|p| *p > 0).expect("a pid");
    kill(Pid::from_raw(pid), sig).expect("signal the server");
}

fn errno(result: kmodel::Result<impl std::fmt::Debug>) -> i32 {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .errno()
            .unwrap_or_else(|| panic!("expected an errno: {e}")),
    }
}

#[test]
fn a_panicking_request_gets_eio_and_errors_the_filesystem() {
    let fx = Fixture::new(32 << 20, 4096, &["fault=panic_in_mkdir"]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "kept", 0o644).unwrap();
    k.write(f, 0, &pattern(10000)).unwrap();
    k.fsync(f).unwrap();
    // The request is answered (no hang), with EIO.
    assert_eq!(errno(k.mkdir(FUSE_ROOT_ID, "boom", 0o755)), EIO);
    let log = fx.server_logs();
    assert!(log.contains("panicked"), "the panic is logged:\n{log}");
    // From now on changes are refused, as after errors=remount-ro; reads go on.
    assert_eq!(errno(k.create(FUSE_ROOT_ID, "new", 0o644)), EROFS);
    assert_eq!(errno(k.write(f, 0, b"more")), EROFS);
    assert_eq!(k.read(f, 0, 10000).unwrap(), pattern(10000));
    assert!(k.lookup(FUSE_ROOT_ID, "kept").is_ok());
    // The error is on disk at once, and unmounting does not mark it clean.
    assert_eq!(state(&fx.spec.image), "not clean with errors");
    k.destroy().unwrap();
    assert_eq!(state(&fx.spec.image), "not clean with errors");
    // A read-write mount is refused until e2fsck; `preen` runs it.
    let plain = Fixture {
        dir: tempfile::tempdir().unwrap(),
        spec: kmodel::ServerSpec {
            options: vec![],
            ..fx.spec.clone()
        },
    };
    assert!(Kernel::mount(&plain.spec, Duration::from_secs(30)).is_err());
    let preen = kmodel::ServerSpec {
        options: vec!["preen".into()],
        ..fx.spec.clone()
    };
    let mut k = Kernel::mount(&preen, Duration::from_secs(30)).unwrap();
    let f = k.lookup(FUSE_ROOT_ID, "kept").unwrap();
    assert_eq!(k.read(f, 0, 10000).unwrap(), pattern(10000));
    k.destroy().unwrap();
    assert_eq!(state(&fx.spec.image), "clean");
}

#[test]
fn an_unlinked_open_file_is_on_the_orphan_list_until_forgotten() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "open", 0o644).unwrap();
    k.write(f, 0, &pattern(100_000)).unwrap();
    k.fsync(f).unwrap();
    let ino = k.inode(f).unwrap().attr.ino;
    // UNLINK alone: the model's kernel keeps the inode, as a process holding it open does.
    let req = Request::new(Opcode::Unlink, FUSE_ROOT_ID).name(b"open");
    assert_eq!(k.call_raw(&req).unwrap().error, 0);
    assert_eq!(first_orphan(&fx.spec.image), Some(ino), "on disk at once");
    assert_eq!(
        k.read(f, 0, 100_000).unwrap(),
        pattern(100_000),
        "still readable"
    );
    // A crash now (SIGKILL) leaves it where e2fsck -p finds and frees it.
    let copy = fx.dir.path().join("crashed.img");
    k.syncfs().unwrap();
    std::fs::copy(&fx.spec.image, &copy).unwrap();
    let (code, out) = run("e2fsck", &["-p"], &copy);
    assert!(
        code <= 1,
        "e2fsck -p after a crash with an orphan ({code}):\n{out}"
    );
    assert_eq!(first_orphan(&copy), None);
    let (code, out) = run("e2fsck", &["-fn"], &copy);
    assert_eq!(code, 0, "{out}");
    // Closing and forgetting it frees it.
    k.release(f).unwrap();
    k.forget(f).unwrap();
    k.syncfs().unwrap();
    assert_eq!(first_orphan(&fx.spec.image), None);
    k.destroy().unwrap();
    let (code, out) = run("e2fsck", &["-fn"], &fx.spec.image);
    assert_eq!(code, 0, "{out}");
}

/// Writes a file, waits `wait`, then kills the server with SIGKILL (what reaches the image
/// is what the server had written by then) and returns e2fsck -fn's verdict.
fn crash_after(commit: &str, wait: Duration) -> (i32, String) {
    let fx = Fixture::new(32 << 20, 4096, &[commit]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(64 << 10), 0).unwrap();
    k.mkdir(FUSE_ROOT_ID, "d", 0o755).unwrap();
    std::thread::sleep(wait);
    signal(&k, Signal::SIGKILL);
    drop(k);
    run("e2fsck", &["-fn"], &fx.spec.image)
}

#[test]
fn metadata_is_committed_every_commit_interval() {
    // Bitmaps and group descriptors lived only in memory until an fsync before: a crash
    // long after the change still lost them. With commit=1 they are on disk a second later.
    let (code, out) = crash_after("commit=1", Duration::from_millis(2500));
    assert_eq!(
        code, 0,
        "a crash after the commit interval leaves a consistent image:\n{out}"
    );
    // The control: without a commit in time, the same crash leaves the bitmaps behind.
    let (code, out) = crash_after("commit=3600", Duration::from_millis(200));
    assert_ne!(
        code, 0,
        "the control crash should find stale bitmaps:\n{out}"
    );
}

#[test]
fn stop_signals_sync_and_close_cleanly() {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let fx = Fixture::new(32 << 20, 4096, &[]);
        let mut k = fx.mount();
        let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
        k.write_direct(f, 0, &pattern(40960), 0).unwrap();
        k.mkdir(FUSE_ROOT_ID, "d", 0o755).unwrap();
        signal(&k, sig);
        k.hang_up()
            .unwrap_or_else(|e| panic!("{sig:?}: the server did not exit cleanly: {e}"));
        assert_eq!(state(&fx.spec.image), "clean", "{sig:?}");
        let (code, out) = run("e2fsck", &["-fn"], &fx.spec.image);
        assert_eq!(code, 0, "{sig:?}:\n{out}");
        let mut oracle = kmodel::SparseFile::new();
        oracle.write(0, &pattern(40960));
        let files = [("f".to_string(), oracle)].into_iter().collect();
        let dirs = ["d".to_string()].into_iter().collect();
        kmodel::image::independent_check(&fx.spec.image, &files, &dirs).unwrap();
    }
}

#[test]
fn a_huge_read_request_is_refused_without_allocating_it() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "sparse", 0o644).unwrap();
    k.truncate(f, 5 << 30).unwrap();
    let fh = k.ensure_open(f).unwrap();
    let read = |size: u32| {
        Request::new(Opcode::Read, f).arg(&fuse_wire::structs::ReadIn {
            fh,
            offset: 0,
            size,
            ..Default::default()
        })
    };
    let reply = k.call_raw(&read(u32::MAX)).unwrap();
    assert_eq!(-reply.error, EINVAL, "a 4 GiB READ");
    // (The model's socket carries smaller messages than /dev/fuse: 64 KiB here.)
    let reply = k.call_raw(&read(64 << 10)).unwrap();
    assert_eq!(
        (reply.error, reply.payload.len()),
        (0, 64 << 10),
        "an ordinary READ"
    );
    assert!(reply.payload.iter().all(|&b| b == 0));
    k.destroy().unwrap();
}

#[test]
fn reserved_inodes_are_never_served() {
    let fx = Fixture::new(32 << 20, 4096, &[]);
    let mut k = fx.mount();
    k.mkdir(FUSE_ROOT_ID, "d", 0o755).unwrap();
    // Node ids the kernel cannot have been given: stale, and nothing is read.
    for nodeid in [3, 5, 7, 8, 10] {
        let req =
            Request::new(Opcode::Getattr, nodeid).arg(&fuse_wire::structs::GetattrIn::default());
        assert_eq!(-k.call_raw(&req).unwrap().error, ESTALE, "nodeid {nodeid}");
    }
    assert!(k.create(FUSE_ROOT_ID, "still-writable", 0o644).is_ok());
    k.destroy().unwrap();
    // A directory entry naming the journal inode is corruption.
    let (code, out) = run("debugfs", &["-w", "-R", "link <8> journal"], &fx.spec.image);
    assert_eq!(code, 0, "{out}");
    let mut k = fx.mount();
    assert_eq!(errno(k.lookup(FUSE_ROOT_ID, "journal")), EUCLEAN);
    assert_eq!(
        errno(k.create(FUSE_ROOT_ID, "after", 0o644)),
        EROFS,
        "errored"
    );
    let names = k.readdir(FUSE_ROOT_ID).unwrap();
    assert!(
        names.contains(&"journal".to_string()),
        "listed, never served: {names:?}"
    );
    k.destroy().unwrap();
    assert_eq!(state(&fx.spec.image), "not clean with errors");
}

/// Byte offset of inode `ino`'s first extent's physical start (depth-0 tree, no csum).
fn first_extent_start(image: &Path, ino: u64, bs: u64) -> u64 {
    let (block, offset) = test_support::e2fs::inode_location(image, ino);
    // i_block is 40 bytes into the inode; the first extent's start_lo 20 bytes into i_block.
    block * bs + offset + 40 + 20
}

#[test]
fn a_corrupt_extent_never_sends_data_onto_metadata() {
    let fx = Fixture::with_features(32 << 20, 4096, "^inline_data,^metadata_csum", &[]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(4096), 0).unwrap();
    let ino = k.inode(f).unwrap().attr.ino;
    k.destroy().unwrap();
    // Point the file's extent at the last block of the inode table.
    let (_, stats) = run("debugfs", &["-R", "stats"], &fx.spec.image);
    let number = |after: &str| -> u64 {
        let rest = stats.split(after).nth(1).unwrap().trim_start();
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let last = number("inode table at ") + number("Inode blocks per group:") - 1;
    let img = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fx.spec.image)
        .unwrap();
    img.write_all_at(
        &(last as u32).to_le_bytes(),
        first_extent_start(&fx.spec.image, ino, 4096),
    )
    .unwrap();
    let mut before = vec![0u8; 4096];
    img.read_exact_at(&mut before, last * 4096).unwrap();

    let mut k = fx.mount();
    let f = k.lookup(FUSE_ROOT_ID, "f").unwrap();
    let err = k.write_direct(f, 0, &pattern(4096), 0).unwrap_err();
    assert_eq!(err.errno(), Some(EUCLEAN), "the mapping is refused: {err}");
    assert_eq!(errno(k.read_direct(f, 0, 4096)), EUCLEAN, "not read either");
    k.destroy().unwrap();
    let mut after = vec![0u8; 4096];
    img.read_exact_at(&mut after, last * 4096).unwrap();
    assert!(before == after, "the inode table block was written");
}

#[test]
fn destroy_closes_even_when_an_orphan_cannot_be_freed() {
    // An orphan that is still open when the filesystem gets errored cannot be freed any
    // more (changes are refused): unmount must close the filesystem all the same, leaving
    // the orphan on the on-disk list for e2fsck or the next mount.
    let fx = Fixture::new(32 << 20, 4096, &["fault=panic_in_mkdir"]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "open", 0o644).unwrap();
    k.write_direct(f, 0, &pattern(8192), 0).unwrap();
    let ino = k.inode(f).unwrap().attr.ino;
    let req = Request::new(Opcode::Unlink, FUSE_ROOT_ID).name(b"open");
    assert_eq!(k.call_raw(&req).unwrap().error, 0);
    assert_eq!(errno(k.mkdir(FUSE_ROOT_ID, "boom", 0o755)), EIO);
    k.destroy()
        .expect("DESTROY is answered and the server exits cleanly");
    assert!(
        fx.server_logs().contains("stays on the orphan list"),
        "{}",
        fx.server_logs()
    );
    assert_eq!(first_orphan(&fx.spec.image), Some(ino));
    assert_eq!(state(&fx.spec.image), "not clean with errors");
    let (code, out) = run("e2fsck", &["-fy"], &fx.spec.image);
    assert!(code <= 1, "{out}");
    assert_eq!(first_orphan(&fx.spec.image), None);
    let (code, out) = run("e2fsck", &["-fn"], &fx.spec.image);
    assert_eq!(code, 0, "{out}");
}
