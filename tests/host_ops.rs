//! Every operation iomapfs serves, through real syscalls, with the same assertions against
//! kernel ext4 on a loop device (`ext4::*`, the control) and iomapfs on FUSE (`iomapfs::*`).
//! Where FUSE legitimately differs from ext4, the test asserts each behaviour explicitly
//! and says why.

use anyhow::{ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, FallocateFlags, OFlag, RenameFlags, AT_FDCWD};
use nix::sys::mman::{mmap, msync, munmap, MapFlags, MsFlags, ProtFlags};
use nix::sys::stat::{fstat, Mode, SFlag, UtimensatFlags};
use nix::sys::statfs::statfs;
use nix::sys::time::TimeSpec;
use nix::unistd::{fsync, ftruncate, lseek, Gid, Uid, Whence};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use test_support::sys::{
    aligned_copy, as_user, drop_caches, expect_errno, expect_io_errno, pattern, pread_vec,
    pwrite_all, statx, AlignedBuf, Link, SetXattr, UserOp, STATX_BASIC_STATS, STATX_BTIME,
};
use test_support::{Expect, FsSpec, SparseData, Target, TestFs};

test_support::target_tests!(
    lookup_and_getattr,
    setattr_mode_and_owner,
    truncate_up_and_down,
    utimens_ns_now_omit,
    times_set_over_cached_writes,
    reads_update_atime_by_relatime,
    mknod_all_types,
    mkdir_rmdir_nlink,
    unlink_open_file,
    symlink_fast_and_slow,
    rename_variants,
    hard_links,
    open_create_flags,
    buffered_read_write,
    blocks_and_times_follow_cached_writes,
    direct_io,
    append_writes,
    fsync_family,
    readdir_10000_entries,
    forget_after_drop_caches,
    statfs_counts,
    xattr_namespaces,
    posix_acls,
    fallocate_modes,
    writes_and_truncates_drop_setid,
    seek_data_hole,
    statx_fields,
    large_sparse_file,
    inode_generation,
    file_handles_outlive_the_inode_cache,
    enospc_small_fs,
    read_only_mount,
    permissions_other_user,
    mmap_shared,
    block_1k_filesystem,
);

const MIB: u64 = 1 << 20;
const NOBODY: u32 = 65534;

fn open(p: &Path, flags: OFlag, mode: u32) -> nix::Result<OwnedFd> {
    nix::fcntl::open(p, flags | OFlag::O_CLOEXEC, Mode::from_bits_retain(mode))
}

/// A file offset or length as off_t (every one in these tests fits).
fn to_off(v: u64) -> i64 {
    i64::try_from(v).expect("an offset below 2^63")
}

fn meta(p: &Path) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(p).with_context(|| format!("lstat {}", p.display()))
}

fn perm(p: &Path) -> Result<u32> {
    Ok(meta(p)?.mode() & 0o7777)
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("read {}", p.display()))
}

fn write(p: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(p, data).with_context(|| format!("write {}", p.display()))
}

fn truncate_path(p: &Path, len: u64) -> Result<()> {
    nix::unistd::truncate(p, to_off(len)).context("truncate")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn get_xattr(p: &Path, name: &str) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = test_support::sys::getxattr(p, name, &mut buf[..], Link::NoFollow)?;
    buf.truncate(n);
    Ok(buf)
}

fn list_xattrs(p: &Path) -> Result<BTreeSet<String>> {
    let mut buf = vec![0u8; 65536];
    let n = test_support::sys::listxattr(p, &mut buf[..], Link::NoFollow).context("listxattr")?;
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let uts = nix::sys::utsname::uname().expect("uname(2) does not fail");
    let release = uts.release().to_string_lossy().into_owned();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0)) >= (major, minor)
}

// ---------------------------------------------------------------------------------------

fn lookup_and_getattr(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let root = meta(fs.mnt())?;
    ensure!(
        root.is_dir() && root.mode() & 0o7777 == 0o755,
        "root mode {:o}",
        root.mode()
    );
    assert_eq!(root.ino(), 2, "ext4's root is inode 2");
    assert_eq!(root.nlink(), 3, "root holds ., .. and lost+found");

    let data = pattern(1, 1234);
    write(&fs.path("a"), &data)?;
    std::fs::create_dir(fs.path("d"))?;
    let a = meta(&fs.path("a"))?;
    ensure!(a.file_type().is_file(), "a is a regular file");
    assert_eq!((a.len(), a.nlink(), a.uid(), a.gid()), (1234, 1, 0, 0));
    assert_eq!(a.blksize(), 4096);
    ensure!(
        a.blocks() >= 8,
        "1234 bytes occupy a 4 KiB block, st_blocks={}",
        a.blocks()
    );
    let d = meta(&fs.path("d"))?;
    ensure!(
        d.is_dir() && d.nlink() == 2 && d.ino() != a.ino(),
        "d: {d:?}"
    );
    let fd = open(&fs.path("a"), OFlag::O_RDONLY, 0)?;
    assert_eq!(fstat(&fd)?.st_ino, a.ino(), "fstat and lstat agree");
    drop(fd);

    expect_io_errno(
        std::fs::metadata(fs.path("missing")),
        Errno::ENOENT,
        "stat of a missing name",
    )?;
    expect_io_errno(
        std::fs::metadata(fs.path("a/x")),
        Errno::ENOTDIR,
        "stat through a file",
    )?;
    let long = "n".repeat(255);
    write(&fs.path(&long), b"255")?;
    expect_io_errno(
        std::fs::write(fs.path(&"n".repeat(256)), b"x"),
        Errno::ENAMETOOLONG,
        "256-byte name",
    )?;
    expect_io_errno(
        std::fs::metadata(fs.path(&"m".repeat(256))),
        Errno::ENAMETOOLONG,
        "lookup of a 256-byte name",
    )?;

    fs.remount()?;
    let again = meta(&fs.path("a"))?;
    assert_eq!(
        (again.ino(), again.len()),
        (a.ino(), 1234),
        "stable after remount"
    );
    assert_eq!(meta(&fs.path(&long))?.len(), 3);
    fs.expected.file("a", data);
    fs.expected.dir("d");
    fs.expected.file(&long, b"255".to_vec());
    fs.finish()
}

fn setattr_mode_and_owner(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let (f, g, d) = (fs.path("f"), fs.path("g"), fs.path("d"));
    write(&f, b"x")?;
    write(&g, b"y")?;
    std::fs::create_dir(&d)?;

    std::fs::set_permissions(&f, PermissionsExt::from_mode(0o4755))?;
    assert_eq!(perm(&f)?, 0o4755);
    std::fs::set_permissions(&d, PermissionsExt::from_mode(0o1777))?;
    assert_eq!(perm(&d)?, 0o1777);

    std::os::unix::fs::chown(&f, Some(1234), Some(5678))?;
    let m = meta(&f)?;
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    // chown clears set-user-ID even when root does it (the kernel asks via ATTR_KILL_SUID).
    assert_eq!(m.mode() & 0o7777, 0o755, "chown cleared S_ISUID");

    std::fs::set_permissions(&g, PermissionsExt::from_mode(0o2755))?;
    std::os::unix::fs::chown(&g, None, Some(42))?;
    let m = meta(&g)?;
    assert_eq!((m.uid(), m.gid()), (0, 42));
    assert_eq!(
        m.mode() & 0o7777,
        0o755,
        "chgrp cleared S_ISGID of a group-executable file"
    );
    std::os::unix::fs::chown(&g, None, None)?;
    assert_eq!(
        (meta(&g)?.uid(), meta(&g)?.gid()),
        (0, 42),
        "chown(-1, -1) changes nothing"
    );

    let fd = open(&g, OFlag::O_RDWR, 0)?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_retain(0o600))?;
    nix::unistd::fchown(&fd, Some(nix::unistd::Uid::from_raw(7)), None)?;
    drop(fd);
    let m = meta(&g)?;
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 7, 42));

    fs.remount()?;
    let (mf, mg) = (meta(&f)?, meta(&g)?);
    assert_eq!(
        (mf.mode() & 0o7777, mf.uid(), mf.gid()),
        (0o755, 1234, 5678)
    );
    assert_eq!((mg.mode() & 0o7777, mg.uid(), mg.gid()), (0o600, 7, 42));
    assert_eq!(perm(&d)?, 0o1777);
    fs.expected.file("f", b"x".to_vec());
    fs.expected.mode("f", 0o755);
    fs.expected.file("g", b"y".to_vec());
    fs.expected.mode("g", 0o600);
    fs.expected.dir("d");
    fs.expected.mode("d", 0o1777);
    fs.finish()
}

fn truncate_up_and_down(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let mut model = SparseData::from(pattern(2, 10000));
    write(&f, &model.to_vec())?;
    truncate_path(&f, 5000)?; // truncate(2) by path; ftruncate(2) below
    model.truncate(5000);
    assert_eq!(read(&f)?, model.to_vec());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)?
        .set_len(MIB)?;
    model.truncate(MIB);
    assert_eq!(read(&f)?, model.to_vec());
    ensure!(
        meta(&f)?.blocks() * 512 <= 64 * 1024,
        "extending truncate must not allocate: {} blocks",
        meta(&f)?.blocks()
    );

    // Shrinking into a block and growing again must expose zeroes, not the old tail.
    let g = fs.path("g");
    let fd = open(&g, OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    pwrite_all(&fd, &[0xAA; 8192], 0)?;
    ftruncate(&fd, 100)?;
    ftruncate(&fd, 8192)?;
    let mut gm = SparseData::from(vec![0xAA; 100]);
    gm.truncate(8192);
    assert_eq!(
        pread_vec(&fd, 8192, 0)?,
        gm.to_vec(),
        "bytes past a shrink read as zero"
    );
    drop(fd);

    let h = fs.path("h");
    write(&h, &pattern(3, 3 * 4096))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&h)?
        .set_len(0)?;
    assert_eq!((meta(&h)?.len(), meta(&h)?.blocks()), (0, 0));

    fs.remount()?;
    assert_eq!(read(&f)?, model.to_vec());
    assert_eq!(read(&g)?, gm.to_vec());
    assert_eq!(meta(&h)?.len(), 0);
    fs.expected.file("f", model);
    fs.expected.file("g", gm);
    fs.expected.file("h", Vec::new());
    fs.finish()
}

fn ts(sec: i64, nsec: i64) -> TimeSpec {
    TimeSpec::new(sec, nsec)
}

/// utimensat(2) relative to the working directory, following symlinks.
fn utimens(p: &Path, atime: TimeSpec, mtime: TimeSpec) -> nix::Result<()> {
    nix::sys::stat::utimensat(AT_FDCWD, p, &atime, &mtime, UtimensatFlags::FollowSymlink)
}

fn utimens_ns_now_omit(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    write(&f, b"t")?;
    let set = |atime: TimeSpec, mtime: TimeSpec| utimens(&f, atime, mtime);
    // Past 2038 and before 1970: both fit ext4's 256-byte inodes (extra epoch bits).
    set(
        ts(1_000_000_000, 123_456_789),
        ts(2_500_000_000, 987_654_321),
    )?;
    let m = meta(&f)?;
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((m.mtime(), m.mtime_nsec()), (2_500_000_000, 987_654_321));
    ensure!(
        m.ctime() >= now_secs() - 5,
        "utimensat sets ctime to now, not to the given times"
    );

    set(TimeSpec::UTIME_OMIT, ts(-31_536_000, 1))?;
    let m = meta(&f)?;
    assert_eq!(
        (m.atime(), m.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "UTIME_OMIT keeps atime"
    );
    assert_eq!((m.mtime(), m.mtime_nsec()), (-31_536_000, 1));

    let before = now_secs();
    set(TimeSpec::UTIME_NOW, TimeSpec::UTIME_NOW)?;
    let m = meta(&f)?;
    let after = now_secs();
    for (what, s) in [("atime", m.atime()), ("mtime", m.mtime())] {
        ensure!(
            s >= before - 1 && s <= after + 1,
            "UTIME_NOW {what}={s} outside [{before}, {after}]"
        );
    }

    let fd = open(&f, OFlag::O_RDWR, 0)?;
    nix::sys::stat::futimens(&fd, &ts(5, 6), &ts(7, 8))?;
    drop(fd);
    fs.remount()?;
    let m = meta(&f)?;
    assert_eq!(
        (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()),
        (5, 6, 7, 8),
        "after remount"
    );
    fs.expected.file("f", b"t".to_vec());
    fs.finish()
}

/// Times set while buffered writes may still sit in the kernel's cache (FUSE's writeback
/// cache sends them later, and a WRITE moves mtime): the set times win, and the data and
/// size reach the disk. A write after the times moves mtime again.
fn times_set_over_cached_writes(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let data = pattern(61, 3 * MIB as usize + 100);
    let fd = open(&f, OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    let mut done = 0;
    while done < data.len() {
        done += nix::unistd::write(&fd, &data[done..])?;
    }
    nix::sys::stat::futimens(&fd, &ts(1000, 1), &ts(2000, 2))?;
    drop(fd);
    let g = fs.path("g");
    write(&g, b"g")?;
    utimens(&g, ts(1000, 0), ts(1000, 0))?;
    let before = now_secs();
    let fd = open(&g, OFlag::O_WRONLY | OFlag::O_APPEND, 0)?;
    nix::unistd::write(&fd, b"h")?;
    drop(fd);
    fs.remount()?;
    let m = meta(&f)?;
    assert_eq!((m.mtime(), m.mtime_nsec()), (2000, 2), "the set mtime");
    assert_eq!(m.len(), data.len() as u64);
    ensure!(read(&f)? == data, "the data written before the times");
    let m = meta(&g)?;
    ensure!(
        m.mtime() >= before - 1,
        "a write after utimensat moves mtime: {}",
        m.mtime()
    );
    fs.expected.file("f", data);
    fs.expected.file("g", b"gh".to_vec());
    fs.finish()
}

/// A read updates atime when it is not after mtime or ctime (relatime, the default), and
/// not again while it is (fstests generic/003). FUSE leaves this to the server.
fn reads_update_atime_by_relatime(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    write(&f, b"atime")?;
    utimens(&f, ts(1000, 0), ts(1000, 0))?;
    // From the disk, not the page cache, so the read reaches the filesystem.
    fs.remount()?;
    let before = now_secs();
    std::fs::read(&f)?;
    // Past the attribute cache time the kernel was granted.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let first = meta(&f)?;
    ensure!(
        first.atime() >= before - 1,
        "the first read left atime at {}",
        first.atime()
    );
    assert_eq!(first.mtime(), 1000, "a read does not touch mtime");
    fs.remount()?;
    std::fs::read(&f)?;
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let second = meta(&f)?;
    assert_eq!(
        (second.atime(), second.atime_nsec()),
        (first.atime(), first.atime_nsec()),
        "atime is already after mtime and ctime: relatime leaves it"
    );
    // A change (ctime now after atime) makes the next read due again, even one the page
    // cache could serve: FUSE only sees reads that miss the cache.
    utimens(&f, TimeSpec::UTIME_OMIT, ts(2000, 0))?;
    let changed = meta(&f)?.ctime();
    std::fs::read(&f)?;
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let third = meta(&f)?;
    ensure!(
        (third.atime(), third.atime_nsec()) >= (changed, 0) && third.atime() > second.atime() - 1,
        "a cached read after a change left atime at {} (ctime {changed})",
        third.atime()
    );
    ensure!(
        (third.atime(), third.atime_nsec()) != (second.atime(), second.atime_nsec()),
        "a cached read after a change did not update atime"
    );
    fs.expected.file("f", b"atime".to_vec());
    fs.finish()
}

fn mknod_all_types(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let chr = nix::sys::stat::makedev(1, 3);
    // A large major/minor needs ext4's new device encoding.
    let blk = nix::sys::stat::makedev(259, 65537);
    let mnt = fs.mnt().to_path_buf();
    let mk = |name: &str, kind: SFlag, dev| {
        let perm = Mode::from_bits_retain(0o640);
        nix::sys::stat::mknodat(AT_FDCWD, &mnt.join(name), kind, perm, dev)
    };
    mk("reg", SFlag::S_IFREG, 0)?;
    mk("fifo", SFlag::S_IFIFO, 0)?;
    mk("chr", SFlag::S_IFCHR, chr)?;
    mk("blk", SFlag::S_IFBLK, blk)?;
    expect_errno(
        mk("fifo", SFlag::S_IFIFO, 0),
        Errno::EEXIST,
        "mknod over an existing name",
    )?;
    let listener = std::os::unix::net::UnixListener::bind(fs.path("sock"))?;
    // The socket inode lives on the filesystem: connecting finds the listener through it.
    let client = std::os::unix::net::UnixStream::connect(fs.path("sock"))?;
    let (server, _) = listener.accept()?;
    // Both ends hold the socket's path: close them before unmounting.
    drop((client, server, listener));

    let check = |fs: &TestFs| -> Result<()> {
        let m = meta(&fs.path("reg"))?;
        ensure!(
            m.file_type().is_file() && m.len() == 0 && m.mode() & 0o7777 == 0o640,
            "reg {m:?}"
        );
        ensure!(meta(&fs.path("fifo"))?.file_type().is_fifo(), "fifo");
        let c = meta(&fs.path("chr"))?;
        ensure!(
            c.file_type().is_char_device() && c.rdev() == chr,
            "chr rdev {:#x}",
            c.rdev()
        );
        let b = meta(&fs.path("blk"))?;
        ensure!(
            b.file_type().is_block_device() && b.rdev() == blk,
            "blk rdev {:#x}",
            b.rdev()
        );
        ensure!(meta(&fs.path("sock"))?.file_type().is_socket(), "sock");
        Ok(())
    };
    check(&fs)?;
    fs.remount()?;
    check(&fs)?;
    fs.expected.file("reg", Vec::new());
    fs.expected.set("fifo", Expect::Fifo);
    fs.expected.set("chr", Expect::CharDev);
    fs.expected.set("blk", Expect::BlockDev);
    fs.expected.set("sock", Expect::Socket);
    fs.finish()
}

fn mkdir_rmdir_nlink(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mnt = fs.mnt().to_path_buf();
    let nl = |p: &str| meta(&mnt.join(p)).map(|m| m.nlink());
    let root0 = nl("")?;
    std::fs::create_dir(fs.path("d"))?;
    assert_eq!(
        (nl("")?, nl("d")?, perm(&fs.path("d"))?),
        (root0 + 1, 2, 0o755)
    );
    std::fs::create_dir(fs.path("d/e"))?;
    std::fs::create_dir(fs.path("d/f"))?;
    assert_eq!(nl("d")?, 4);
    write(&fs.path("d/e/x"), b"x")?;
    expect_io_errno(
        std::fs::remove_dir(fs.path("d/e")),
        Errno::ENOTEMPTY,
        "rmdir of a non-empty dir",
    )?;
    expect_io_errno(
        std::fs::remove_dir(fs.path("d/e/x")),
        Errno::ENOTDIR,
        "rmdir of a file",
    )?;
    expect_io_errno(
        std::fs::remove_file(fs.path("d/e")),
        Errno::EISDIR,
        "unlink of a dir",
    )?;
    expect_io_errno(
        std::fs::create_dir(fs.path("d")),
        Errno::EEXIST,
        "mkdir over a dir",
    )?;
    expect_io_errno(
        std::fs::remove_dir(fs.path("nope")),
        Errno::ENOENT,
        "rmdir of nothing",
    )?;
    std::fs::remove_file(fs.path("d/e/x"))?;
    std::fs::remove_dir(fs.path("d/e"))?;
    assert_eq!(nl("d")?, 3);
    fs.remount()?;
    assert_eq!((nl("")?, nl("d")?, nl("d/f")?), (root0 + 1, 3, 2));
    fs.expected.dir("d/f");
    fs.expected.absent("d/e");
    fs.finish()
}

fn unlink_open_file(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let data = pattern(4, 100 * 1024);
    write(&fs.path("f"), &data)?;
    let fd = open(&fs.path("f"), OFlag::O_RDWR, 0)?;
    std::fs::remove_file(fs.path("f"))?;
    expect_io_errno(
        std::fs::metadata(fs.path("f")),
        Errno::ENOENT,
        "stat after unlink",
    )?;
    assert_eq!(fstat(&fd)?.st_nlink, 0);
    assert_eq!(
        pread_vec(&fd, data.len(), 0)?,
        data,
        "an unlinked open file stays readable"
    );
    pwrite_all(&fd, b"more", data.len() as u64)?;
    assert_eq!(pread_vec(&fd, 4, data.len() as u64)?, b"more");

    // Renaming over an open file: the open file keeps its contents.
    write(&fs.path("g"), b"old g")?;
    write(&fs.path("h"), b"new g")?;
    let gfd = open(&fs.path("g"), OFlag::O_RDONLY, 0)?;
    std::fs::rename(fs.path("h"), fs.path("g"))?;
    assert_eq!(pread_vec(&gfd, 100, 0)?, b"old g");
    assert_eq!(read(&fs.path("g"))?, b"new g");
    drop((fd, gfd));
    fs.remount()?;
    fs.expected.absent("f");
    fs.expected.absent("h");
    fs.expected.file("g", b"new g".to_vec());
    fs.finish()
}

fn symlink_target(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i % 10 == 9 {
                b'/'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

fn symlink_fast_and_slow(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let to_os = OsStr::from_bytes;
    // ext4 keeps targets shorter than 60 bytes in the inode ("fast"), longer ones in a block.
    let lens = [1usize, 59, 60, 61, 200, 4095];
    for len in lens {
        let target = symlink_target(len);
        std::os::unix::fs::symlink(to_os(&target), fs.path(&format!("l{len}")))?;
    }
    let too_long = symlink_target(4096);
    expect_io_errno(
        std::os::unix::fs::symlink(to_os(&too_long), fs.path("toolong")),
        Errno::ENAMETOOLONG,
        "4096-byte target",
    )?;
    write(&fs.path("f"), b"through the link")?;
    std::os::unix::fs::symlink("f", fs.path("lf"))?;
    std::os::unix::fs::symlink("nowhere", fs.path("dangling"))?;
    expect_io_errno(
        std::fs::read(fs.path("dangling")),
        Errno::ENOENT,
        "open through a dangling link",
    )?;
    expect_errno(
        open(
            &fs.path("dangling"),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
            0o644,
        ),
        Errno::EEXIST,
        "O_EXCL on a dangling link",
    )?;

    let check = |fs: &TestFs| -> Result<()> {
        for len in lens {
            let p = fs.path(&format!("l{len}"));
            let got = std::fs::read_link(&p)?;
            assert_eq!(
                got.as_os_str().as_encoded_bytes(),
                symlink_target(len).as_slice(),
                "readlink l{len}"
            );
            let m = meta(&p)?;
            ensure!(
                m.file_type().is_symlink() && m.len() == len as u64,
                "l{len}: {m:?}"
            );
        }
        assert_eq!(read(&fs.path("lf"))?, b"through the link");
        assert_eq!(
            std::fs::metadata(fs.path("lf"))?.len(),
            16,
            "stat follows the link"
        );
        Ok(())
    };
    check(&fs)?;
    fs.remount()?;
    check(&fs)?;
    for len in lens {
        fs.expected
            .symlink(&format!("l{len}"), &symlink_target(len));
    }
    fs.expected.symlink("lf", b"f");
    fs.expected.symlink("dangling", b"nowhere");
    fs.finish()
}

fn rename_variants(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mnt = fs.mnt().to_path_buf();
    let p = |s: &str| mnt.join(s);
    let rename2 = |a: &str, b: &str, flags| {
        nix::fcntl::renameat2(AT_FDCWD, &mnt.join(a), AT_FDCWD, &mnt.join(b), flags)
    };
    write(&p("a"), b"A")?;
    write(&p("b"), b"B")?;
    std::fs::rename(p("a"), p("c"))?;
    expect_io_errno(
        std::fs::metadata(p("a")),
        Errno::ENOENT,
        "old name after rename",
    )?;
    let c_ino = meta(&p("c"))?.ino();
    std::fs::rename(p("c"), p("b"))?;
    assert_eq!(
        (read(&p("b"))?, meta(&p("b"))?.ino()),
        (b"A".to_vec(), c_ino),
        "rename over a file"
    );

    write(&p("x"), b"X")?;
    expect_errno(
        rename2("x", "b", RenameFlags::RENAME_NOREPLACE),
        Errno::EEXIST,
        "RENAME_NOREPLACE onto a file",
    )?;
    assert_eq!(
        (read(&p("x"))?, read(&p("b"))?),
        (b"X".to_vec(), b"A".to_vec())
    );
    rename2("x", "y", RenameFlags::RENAME_NOREPLACE)?;

    // RENAME_EXCHANGE of a file in / and a directory in /p: both parents' link counts move.
    write(&p("f"), b"F")?;
    std::fs::create_dir_all(p("p/d"))?;
    write(&p("p/d/child"), b"child")?;
    let (root_nl, p_nl) = (meta(&p(""))?.nlink(), meta(&p("p"))?.nlink());
    rename2("f", "p/d", RenameFlags::RENAME_EXCHANGE)?;
    ensure!(
        meta(&p("f"))?.is_dir() && read(&p("f/child"))? == b"child",
        "f is now the dir"
    );
    assert_eq!(read(&p("p/d"))?, b"F", "p/d is now the file");
    assert_eq!(
        (meta(&p(""))?.nlink(), meta(&p("p"))?.nlink()),
        (root_nl + 1, p_nl - 1)
    );
    assert_eq!(
        meta(&p("f/.."))?.ino(),
        meta(&p(""))?.ino(),
        "the moved dir's .. is updated"
    );
    expect_errno(
        rename2("y", "missing", RenameFlags::RENAME_EXCHANGE),
        Errno::ENOENT,
        "exchange with nothing",
    )?;

    // Moving a directory to another parent.
    std::fs::create_dir_all(p("q/r"))?;
    std::fs::rename(p("q/r"), p("p/r"))?;
    assert_eq!(meta(&p("p/r/.."))?.ino(), meta(&p("p"))?.ino());
    assert_eq!((meta(&p("q"))?.nlink(), meta(&p("p"))?.nlink()), (2, p_nl));

    expect_io_errno(
        std::fs::rename(p("p"), p("p/r/x")),
        Errno::EINVAL,
        "dir into its own subtree",
    )?;
    write(&p("f/child2"), b"")?;
    expect_io_errno(
        std::fs::rename(p("q"), p("f")),
        Errno::ENOTEMPTY,
        "dir over a non-empty dir",
    )?;
    expect_io_errno(
        std::fs::rename(p("q"), p("y")),
        Errno::ENOTDIR,
        "dir over a file",
    )?;
    expect_io_errno(
        std::fs::rename(p("y"), p("q")),
        Errno::EISDIR,
        "file over a dir",
    )?;
    std::fs::rename(p("y"), p("y"))?;
    std::fs::rename(p("p/r"), p("q"))?; // dir over an empty dir
    ensure!(meta(&p("q"))?.is_dir(), "q replaced by r");

    fs.remount()?;
    assert_eq!(read(&p("p/d"))?, b"F");
    assert_eq!(read(&p("f/child"))?, b"child");
    assert_eq!(
        meta(&p(""))?.nlink(),
        root_nl + 2,
        "root holds lost+found, p, f and q"
    );
    for (path, data) in [
        ("b", &b"A"[..]),
        ("y", b"X"),
        ("p/d", b"F"),
        ("f/child", b"child"),
        ("f/child2", b""),
    ] {
        fs.expected.file(path, data.to_vec());
    }
    for path in ["a", "c", "x", "p/r"] {
        fs.expected.absent(path);
    }
    fs.expected.dir("q");
    fs.finish()
}

fn hard_links(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mnt = fs.mnt().to_path_buf();
    let p = |s: &str| mnt.join(s);
    write(&p("f"), b"shared")?;
    std::fs::create_dir(p("sub"))?;
    std::fs::hard_link(p("f"), p("g"))?;
    std::fs::hard_link(p("f"), p("sub/h"))?;
    let ino = meta(&p("f"))?.ino();
    for name in ["f", "g", "sub/h"] {
        let m = meta(&p(name))?;
        assert_eq!((m.ino(), m.nlink()), (ino, 3), "{name}");
    }
    let fd = open(&p("g"), OFlag::O_WRONLY, 0)?;
    pwrite_all(&fd, b"SH", 0)?;
    drop(fd);
    assert_eq!(
        read(&p("sub/h"))?,
        b"SHared",
        "a write through one name shows in the others"
    );
    std::fs::remove_file(p("f"))?;
    assert_eq!(meta(&p("g"))?.nlink(), 2);
    expect_io_errno(
        std::fs::hard_link(p("sub"), p("sub2")),
        Errno::EPERM,
        "link to a directory",
    )?;
    expect_io_errno(
        std::fs::hard_link(p("g"), p("sub/h")),
        Errno::EEXIST,
        "link over a name",
    )?;
    std::os::unix::fs::symlink("g", p("s"))?;
    // link(2) does not follow symlinks: the new name is a second link to the symlink.
    nix::unistd::linkat(AT_FDCWD, &p("s"), AT_FDCWD, &p("s2"), AtFlags::empty())?;
    let s2 = meta(&p("s2"))?;
    ensure!(s2.file_type().is_symlink() && s2.nlink() == 2, "s2 {s2:?}");

    fs.remount()?;
    assert_eq!((meta(&p("g"))?.nlink(), meta(&p("sub/h"))?.ino()), (2, ino));
    assert_eq!(meta(&p("s"))?.nlink(), 2);
    fs.expected.file("g", b"SHared".to_vec());
    fs.expected.file("sub/h", b"SHared".to_vec());
    fs.expected.absent("f");
    fs.expected.symlink("s2", b"g");
    fs.finish()
}

fn open_create_flags(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let n = fs.path("n");
    let fd = open(&n, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY, 0o640)?;
    let m = meta(&n)?;
    assert_eq!((m.mode() & 0o7777, m.len(), m.uid()), (0o640, 0, 0));
    pwrite_all(&fd, b"content", 0)?;
    expect_errno(
        nix::unistd::read(&fd, &mut [0u8; 4]),
        Errno::EBADF,
        "read on O_WRONLY",
    )?;
    drop(fd);
    expect_errno(
        open(&n, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY, 0o640),
        Errno::EEXIST,
        "O_EXCL on an existing file",
    )?;
    let fd = open(&n, OFlag::O_CREAT | OFlag::O_RDONLY, 0o600)?;
    assert_eq!(
        pread_vec(&fd, 100, 0)?,
        b"content",
        "O_CREAT without O_EXCL opens the file"
    );
    expect_errno(
        nix::unistd::write(&fd, b"x"),
        Errno::EBADF,
        "write on O_RDONLY",
    )?;
    drop(fd);
    std::fs::create_dir(fs.path("d"))?;
    expect_errno(
        open(&fs.path("missing"), OFlag::O_RDONLY, 0),
        Errno::ENOENT,
        "open of a missing file",
    )?;
    expect_errno(
        open(&n, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0),
        Errno::ENOTDIR,
        "O_DIRECTORY on a file",
    )?;
    expect_errno(
        open(&fs.path("d"), OFlag::O_WRONLY, 0),
        Errno::EISDIR,
        "a directory opened for writing",
    )?;
    expect_errno(
        open(&fs.path("n/x"), OFlag::O_CREAT | OFlag::O_WRONLY, 0o644),
        Errno::ENOTDIR,
        "create under a file",
    )?;
    write(&fs.path("t"), b"to be truncated")?;
    drop(open(&fs.path("t"), OFlag::O_WRONLY | OFlag::O_TRUNC, 0)?);
    assert_eq!(meta(&fs.path("t"))?.len(), 0, "O_TRUNC");
    fs.remount()?;
    fs.expected.file("n", b"content".to_vec());
    fs.expected.mode("n", 0o640);
    fs.expected.file("t", Vec::new());
    fs.finish()
}

fn buffered_read_write(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let fd = open(&f, OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    let mut model = SparseData::new();
    let writes: [(u64, usize); 6] = [
        (0, 100),
        (4095, 2),
        (8191, 8194),
        (MIB - 1, 3),
        (123_456, 70_000),
        (50, 5000),
    ];
    for (i, (off, len)) in writes.into_iter().enumerate() {
        let data = pattern(10 + i as u64, len);
        pwrite_all(&fd, &data, off)?;
        model.write(off, &data);
        assert_eq!(
            pread_vec(&fd, len, off)?,
            data,
            "read back the write at {off}"
        );
    }
    assert_eq!(
        pread_vec(&fd, model.len() as usize, 0)?,
        model.to_vec(),
        "whole file"
    );
    assert_eq!(pread_vec(&fd, 10, model.len())?, b"", "read at EOF");
    assert_eq!(
        pread_vec(&fd, 10, model.len() - 4)?.len(),
        4,
        "short read across EOF"
    );
    drop(fd);
    let big = pattern(20, 3 * MIB as usize + 17);
    write(&fs.path("big"), &big)?;
    assert_eq!(read(&fs.path("big"))?, big);
    fs.remount()?;
    assert_eq!(read(&f)?, model.to_vec());
    assert_eq!(read(&fs.path("big"))?, big);
    fs.expected.file("f", model);
    fs.expected.file("big", big);
    fs.finish()
}

/// With the writeback cache the kernel keeps size and times itself and sends the bytes
/// later; st_blocks comes from the server, which tells the kernel when a write allocated.
/// So once written back (fsync), st_blocks counts the data, as on ext4, and mtime is the
/// time of the write(2), not of the later WRITE (checked against a time set in between).
fn blocks_and_times_follow_cached_writes(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let data = pattern(62, 2 * MIB as usize);
    let fd = open(&f, OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    // The attributes are cached before the write: only a notification can refresh them.
    ensure!(fstat(&fd)?.st_blocks == 0, "a new file has no blocks");
    pwrite_all(&fd, &data, 0)?;
    let written = fstat(&fd)?;
    assert_eq!(written.st_size, data.len() as i64, "the size at once");
    fsync(&fd)?;
    let synced = fstat(&fd)?;
    ensure!(
        synced.st_blocks >= to_off(2 * MIB / 512),
        "st_blocks after fsync: {} (of 512 bytes), for {} bytes written",
        synced.st_blocks,
        data.len()
    );
    assert_eq!(
        (synced.st_mtime, synced.st_mtime_nsec),
        (written.st_mtime, written.st_mtime_nsec),
        "the write's mtime, unchanged by writing back"
    );
    // Appending in small writes allocates block by block.
    let before = synced.st_blocks;
    pwrite_all(&fd, &data[..10_000], data.len() as u64)?;
    fsync(&fd)?;
    ensure!(
        fstat(&fd)?.st_blocks > before,
        "st_blocks grows with an appended, synced write"
    );
    drop(fd);
    // Written and closed without a sync, a tick after the write(2): the WRITE reaches the
    // server later than the time the kernel gave the file, which must stay (generic/003).
    let g = fs.path("g");
    let fd = open(&g, OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    pwrite_all(&fd, b"aaa", 0)?;
    let stamped = fstat(&fd)?;
    std::thread::sleep(std::time::Duration::from_millis(30));
    drop(fd);
    let mut model = SparseData::new();
    model.write(0, &data);
    model.write(data.len() as u64, &data[..10_000]);
    fs.remount()?;
    ensure!(
        meta(&f)?.blocks() >= before as u64,
        "st_blocks after a remount"
    );
    let m = meta(&g)?;
    assert_eq!(
        (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()),
        (
            stamped.st_mtime,
            stamped.st_mtime_nsec,
            stamped.st_ctime,
            stamped.st_ctime_nsec
        ),
        "the times of the write(2), after a remount"
    );
    fs.expected.file("g", b"aaa".to_vec());
    fs.expected.file("f", model);
    fs.finish()
}

fn direct_io(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let dio = open(&f, OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_DIRECT, 0o644)?;
    let buffered = open(&f, OFlag::O_RDWR, 0)?;
    let mut model = SparseData::new();
    for (tag, off) in [(30u64, 0u64), (31, MIB), (32, 2 * MIB + 65536)] {
        let buf = aligned_copy(&pattern(tag, 65536));
        pwrite_all(&dio, &buf, off)?;
        model.write(off, &buf);
        let mut back = AlignedBuf::new(65536);
        assert_eq!(
            nix::sys::uio::pread(&dio, &mut back[..], to_off(off))?,
            65536
        );
        assert_eq!(&back[..], &buf[..], "O_DIRECT read back at {off}");
    }
    assert_eq!(
        pread_vec(&buffered, model.len() as usize, 0)?,
        model.to_vec(),
        "buffered read of direct writes"
    );

    // A buffered write is visible to a following direct read, and a direct write to a
    // following buffered read (the page cache is flushed/invalidated around direct I/O).
    let b = pattern(33, 4096);
    pwrite_all(&buffered, &b, 8192)?;
    model.write(8192, &b);
    let mut back = AlignedBuf::new(4096);
    nix::sys::uio::pread(&dio, &mut back[..], 8192)?;
    assert_eq!(&back[..], &b[..], "direct read after buffered write");
    let d = aligned_copy(&pattern(34, 4096));
    pwrite_all(&dio, &d, 0)?;
    model.write(0, &d);
    assert_eq!(
        pread_vec(&buffered, 4096, 0)?,
        &d[..],
        "buffered read after direct write"
    );

    // Misaligned direct I/O: ext4 refuses it. Classic FUSE does not check alignment
    // (fs/fuse/file.c fuse_direct_IO hands any iovec to the server), so there it must work
    // and write exactly those bytes.
    let odd = aligned_copy(&pattern(35, 1024));
    let r = nix::sys::uio::pwrite(&dio, &odd[1..513], 3);
    if fs.is_fuse() {
        assert_eq!(r?, 512, "FUSE: misaligned O_DIRECT write");
        model.write(3, &odd[1..513]);
    } else {
        expect_errno(r, Errno::EINVAL, "ext4: misaligned O_DIRECT write")?;
    }
    drop((dio, buffered));
    fs.remount()?;
    assert_eq!(read(&f)?, model.to_vec());
    fs.expected.file("f", model);
    fs.finish()
}

fn append_writes(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let fd = open(
        &f,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_APPEND,
        0o644,
    )?;
    nix::unistd::write(&fd, b"one")?;
    lseek(&fd, 0, Whence::SeekSet)?;
    nix::unistd::write(&fd, b"two")?;
    // Linux: pwrite on an O_APPEND descriptor appends, whatever the offset.
    nix::sys::uio::pwrite(&fd, b"three", 0)?;
    let other = open(&f, OFlag::O_WRONLY | OFlag::O_APPEND, 0)?;
    nix::unistd::write(&other, b"|4")?;
    nix::unistd::write(&fd, b"|5")?;
    drop((fd, other));
    assert_eq!(read(&f)?, b"onetwothree|4|5");

    let g = fs.path("g");
    let dio = open(
        &g,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_DIRECT,
        0o644,
    )?;
    let mut expect = Vec::new();
    for tag in 40..43 {
        let buf = aligned_copy(&pattern(tag, 4096));
        assert_eq!(nix::unistd::write(&dio, &buf)?, 4096);
        expect.extend_from_slice(&buf);
    }
    drop(dio);
    assert_eq!(read(&g)?, expect, "O_APPEND|O_DIRECT");
    fs.remount()?;
    assert_eq!(read(&f)?, b"onetwothree|4|5");
    fs.expected.file("f", b"onetwothree|4|5".to_vec());
    fs.expected.file("g", expect);
    fs.finish()
}

fn fsync_family(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let data = pattern(50, 300_000);
    let fd = open(&fs.path("f"), OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    pwrite_all(&fd, &data, 0)?;
    fsync(&fd)?;
    pwrite_all(&fd, b"tail", data.len() as u64)?;
    nix::unistd::fdatasync(&fd)?;
    // close(2) is where FLUSH errors surface; dropping an OwnedFd would ignore them.
    nix::unistd::close(fd).context("close")?;
    std::fs::create_dir(fs.path("d"))?;
    write(&fs.path("d/x"), b"x")?;
    let dir = open(&fs.path("d"), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    fsync(&dir)?; // FUSE_FSYNCDIR
    nix::unistd::fdatasync(&dir)?;
    nix::unistd::syncfs(&dir)?;
    let ro = open(&fs.path("f"), OFlag::O_RDONLY, 0)?;
    fsync(&ro)?;
    drop((dir, ro));
    fs.remount()?;
    let mut all = data;
    all.extend_from_slice(b"tail");
    assert_eq!(read(&fs.path("f"))?, all);
    fs.expected.file("f", all);
    fs.expected.file("d/x", b"x".to_vec());
    fs.finish()
}

fn readdir_10000_entries(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    std::fs::create_dir(fs.path("big"))?;
    let name = |i: usize| format!("entry-{i:05}");
    for i in 0..10_000 {
        nix::sys::stat::mknodat(
            AT_FDCWD,
            &fs.path(&format!("big/{}", name(i))),
            SFlag::S_IFREG,
            Mode::from_bits_retain(0o644),
            0,
        )?;
    }
    for i in (0..10_000).step_by(1000) {
        write(
            &fs.path(&format!("big/{}", name(i))),
            &pattern(i as u64, i + 1),
        )?;
    }
    let removed = |i: usize| i % 10 == 7;
    let check = |fs: &TestFs, after_removal: bool| -> Result<()> {
        let mut seen = BTreeSet::new();
        for e in std::fs::read_dir(fs.path("big"))? {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            ensure!(
                e.file_type()?.is_file(),
                "{n}: d_type is not a regular file"
            );
            ensure!(seen.insert(n.clone()), "readdir returned {n} twice");
        }
        let want: BTreeSet<String> = (0..10_000)
            .filter(|i| !(after_removal && removed(*i)))
            .map(name)
            .collect();
        ensure!(
            seen == want,
            "readdir: {} names, expected {}; first missing {:?}, first extra {:?}",
            seen.len(),
            want.len(),
            want.difference(&seen).next(),
            seen.difference(&want).next()
        );
        // readdirplus: the attributes that came with the names are right.
        for i in (0..10_000).step_by(1000) {
            assert_eq!(
                meta(&fs.path(&format!("big/{}", name(i))))?.len(),
                i as u64 + 1
            );
        }
        Ok(())
    };
    check(&fs, false)?;
    for i in (0..10_000).filter(|i| removed(*i)) {
        std::fs::remove_file(fs.path(&format!("big/{}", name(i))))?;
    }
    check(&fs, true)?;
    fs.remount()?;
    check(&fs, true)?;
    for i in (0..10_000).step_by(1000) {
        fs.expected
            .file(&format!("big/{}", name(i)), pattern(i as u64, i + 1));
    }
    fs.expected.absent(&format!("big/{}", name(9_997)));
    fs.finish()
}

fn forget_after_drop_caches(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mnt = fs.mnt().to_path_buf();
    let path = |d: usize, i: usize| mnt.join(format!("d{d}/f{i}"));
    for d in 0..3 {
        std::fs::create_dir(fs.path(&format!("d{d}")))?;
        for i in 0..100 {
            write(&path(d, i), &pattern((d * 1000 + i) as u64, 100 + i))?;
        }
    }
    // An open file keeps its inode through the eviction; all the others are forgotten.
    let kept = open(&path(0, 0), OFlag::O_RDWR, 0)?;
    drop_caches()?;
    for d in 0..3 {
        for i in 0..100 {
            assert_eq!(
                read(&path(d, i))?,
                pattern((d * 1000 + i) as u64, 100 + i),
                "d{d}/f{i}"
            );
        }
    }
    pwrite_all(&kept, b"KEPT", 0)?;
    drop_caches()?;
    assert_eq!(&read(&path(0, 0))?[..4], b"KEPT");
    drop(kept);
    for i in (0..100).step_by(2) {
        std::fs::remove_file(path(1, i))?;
    }
    drop_caches()?;
    for i in 0..100 {
        let r = std::fs::metadata(path(1, i));
        if i % 2 == 0 {
            expect_io_errno(r, Errno::ENOENT, "removed file after eviction")?;
        } else {
            assert_eq!(r?.len(), 100 + i as u64);
        }
    }
    let mut first = pattern(0, 100);
    first[..4].copy_from_slice(b"KEPT");
    fs.remount()?;
    fs.expected.file("d0/f0", first);
    fs.finish()
}

fn statfs_counts(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let s0 = statfs(fs.mnt())?;
    // nix's Statfs has no f_frsize; statvfs(3) is the same statfs(2) and reports it.
    let frsize = nix::sys::statvfs::statvfs(fs.mnt())?.fragment_size();
    assert_eq!(
        (
            s0.block_size() as u64,
            frsize as u64,
            s0.maximum_name_length() as u64
        ),
        (4096, 4096, 255)
    );
    let total = s0.blocks() * 4096;
    ensure!(
        total > 200 * MIB && total <= 256 * MIB,
        "f_blocks={} for a 256 MiB image",
        s0.blocks()
    );
    ensure!(
        s0.blocks_available() <= s0.blocks_free() && s0.blocks_free() <= s0.blocks(),
        "{s0:?}"
    );
    ensure!(s0.files() > 0 && s0.files_free() < s0.files(), "{s0:?}");
    // The magic differs legitimately: a FUSE mount reports FUSE_SUPER_MAGIC, not ext4's.
    let magic = if fs.is_fuse() { 0x6573_5546 } else { 0xEF53 };
    assert_eq!(s0.filesystem_type().0 as u64, magic, "f_type");

    let fd = open(&fs.path("f"), OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    pwrite_all(&fd, &pattern(60, 16 * MIB as usize), 0)?;
    fsync(&fd)?;
    drop(fd);
    let s1 = statfs(fs.mnt())?;
    ensure!(
        s1.blocks_free() + 4096 <= s0.blocks_free(),
        "16 MiB written: f_bfree {} -> {}",
        s0.blocks_free(),
        s1.blocks_free()
    );
    ensure!(
        s1.files_free() < s0.files_free(),
        "a new inode: f_ffree {} -> {}",
        s0.files_free(),
        s1.files_free()
    );
    std::fs::remove_file(fs.path("f"))?;
    nix::unistd::syncfs(open(fs.mnt(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?)?;
    let s2 = statfs(fs.mnt())?;
    ensure!(
        s2.blocks_free() + 16 >= s0.blocks_free(),
        "after unlink: f_bfree {} (was {})",
        s2.blocks_free(),
        s0.blocks_free()
    );
    assert_eq!(s2.files_free(), s0.files_free(), "the inode is free again");
    fs.expected.absent("f");
    fs.finish()
}

fn xattr_namespaces(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    write(&f, b"x")?;
    std::fs::create_dir(fs.path("d"))?;
    std::os::unix::fs::symlink("f", fs.path("l"))?;
    let set = |p: &Path, n: &str, v: &[u8], how| {
        test_support::sys::setxattr(p, n, v, how, Link::NoFollow)
    };
    set(&f, "user.a", b"1", SetXattr::Either)?;
    assert_eq!(get_xattr(&f, "user.a")?, b"1");
    set(&f, "user.b", b"bee", SetXattr::Create)?;
    expect_errno(
        set(&f, "user.b", b"again", SetXattr::Create),
        Errno::EEXIST,
        "XATTR_CREATE on an existing name",
    )?;
    expect_errno(
        set(&f, "user.zz", b"v", SetXattr::Replace),
        Errno::ENODATA,
        "XATTR_REPLACE on a missing name",
    )?;
    set(&f, "user.a", b"22", SetXattr::Replace)?;
    assert_eq!(get_xattr(&f, "user.a")?, b"22");
    expect_errno(
        get_xattr(&f, "user.none"),
        Errno::ENODATA,
        "get of a missing name",
    )?;
    expect_errno(
        test_support::sys::removexattr(&f, "user.none", Link::NoFollow),
        Errno::ENODATA,
        "remove of a missing name",
    )?;
    set(&f, "trusted.t", b"trusted value", SetXattr::Either)?;
    set(&f, "security.s", b"security value", SetXattr::Either)?;
    set(&f, "user.empty", b"", SetXattr::Either)?;
    let big = pattern(61, 3000);
    set(&f, "user.big", &big, SetXattr::Either)?;
    assert_eq!(
        test_support::sys::getxattr(&f, "user.big", &mut [], Link::NoFollow)?,
        3000,
        "size query"
    );
    expect_errno(
        test_support::sys::getxattr(&f, "user.big", &mut [0u8; 16], Link::NoFollow),
        Errno::ERANGE,
        "buffer too small",
    )?;
    set(&fs.path("d"), "user.d", b"on a dir", SetXattr::Either)?;
    // user.* is only for regular files and directories (fs/xattr.c xattr_permission).
    expect_errno(
        set(&fs.path("l"), "user.x", b"v", SetXattr::Either),
        Errno::EPERM,
        "user.* on a symlink",
    )?;
    // ext4 knows no such namespace. The kernel passes unknown prefixes to a FUSE server
    // (one catch-all xattr handler), so the server has to refuse them the same way.
    expect_errno(
        set(&f, "bogus.x", b"v", SetXattr::Either),
        Errno::EOPNOTSUPP,
        "unknown namespace",
    )?;
    test_support::sys::removexattr(&f, "user.b", Link::NoFollow)?;

    let check = |fs: &TestFs| -> Result<()> {
        let names = list_xattrs(&f)?;
        let want: BTreeSet<String> = [
            "user.a",
            "user.big",
            "user.empty",
            "trusted.t",
            "security.s",
        ]
        .map(String::from)
        .into();
        assert_eq!(names, want, "listxattr");
        assert_eq!(get_xattr(&f, "user.a")?, b"22");
        assert_eq!(get_xattr(&f, "user.big")?, big);
        assert_eq!(get_xattr(&f, "user.empty")?, b"");
        assert_eq!(get_xattr(&f, "trusted.t")?, b"trusted value");
        assert_eq!(get_xattr(&f, "security.s")?, b"security value");
        assert_eq!(get_xattr(&fs.path("d"), "user.d")?, b"on a dir");
        expect_errno(get_xattr(&f, "user.b"), Errno::ENODATA, "removed name")?;
        Ok(())
    };
    check(&fs)?;
    fs.remount()?;
    check(&fs)?;
    fs.expected.file("f", b"x".to_vec());
    fs.finish()
}

fn getfacl(p: &Path) -> Result<Vec<String>> {
    let out = test_support::cmd::run(
        "getfacl",
        &[
            std::ffi::OsStr::new("-n"),
            "-p".as_ref(),
            "-E".as_ref(),
            "--omit-header".as_ref(),
            p.as_os_str(),
        ],
    )?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn setfacl(args: &[&str], p: &Path) -> Result<()> {
    let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
    a.push(p.as_os_str());
    test_support::cmd::run("setfacl", &a).map(drop)
}

fn posix_acls(t: &dyn Target) -> Result<()> {
    use test_support::needs::tool_from;
    if !test_support::needs_all([tool_from("setfacl", "acl"), tool_from("getfacl", "acl")]) {
        return Ok(());
    }
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    write(&f, b"acl")?;
    std::fs::set_permissions(&f, PermissionsExt::from_mode(0o640))?;
    setfacl(&["-m", "u:1234:rw,g:2345:r"], &f)?;
    let want_f = [
        "user::rw-",
        "user:1234:rw-",
        "group::r--",
        "group:2345:r--",
        "mask::rw-",
        "other::---",
    ];
    assert_eq!(getfacl(&f)?, want_f);
    assert_eq!(perm(&f)?, 0o660, "the group bits show the ACL mask");
    // 4-byte header + 6 entries of 8 bytes.
    assert_eq!(get_xattr(&f, "system.posix_acl_access")?.len(), 52);

    // The ACL is enforced (with default_permissions the kernel checks it on FUSE too).
    assert_eq!(
        as_user(1234, 1234, UserOp::OpenWrite(f.clone()))?,
        Ok(()),
        "named user may write"
    );
    assert_eq!(
        as_user(3000, 2345, UserOp::OpenRead(f.clone()))?,
        Ok(()),
        "named group may read"
    );
    assert_eq!(
        as_user(3000, 2345, UserOp::OpenWrite(f.clone()))?,
        Err(Errno::EACCES),
        "named group may not write"
    );
    assert_eq!(
        as_user(1235, 1235, UserOp::OpenRead(f.clone()))?,
        Err(Errno::EACCES),
        "others have ---"
    );

    // A default ACL is inherited by new files (and ignores the umask).
    let d = fs.path("d");
    std::fs::create_dir(&d)?;
    setfacl(&["-d", "-m", "u:1234:rwx"], &d)?;
    drop(open(
        &fs.path("d/new"),
        OFlag::O_CREAT | OFlag::O_WRONLY,
        0o666,
    )?);
    std::fs::create_dir(fs.path("d/sub"))?;
    let want_new = [
        "user::rw-",
        "user:1234:rwx",
        "group::r-x",
        "mask::rw-",
        "other::r--",
    ];
    assert_eq!(
        getfacl(&fs.path("d/new"))?,
        want_new,
        "inherited access ACL"
    );
    assert_eq!(perm(&fs.path("d/new"))?, 0o664);
    ensure!(
        get_xattr(&fs.path("d/sub"), "system.posix_acl_default").is_ok(),
        "a new subdir inherits the default ACL"
    );

    let g = fs.path("g");
    write(&g, b"g")?;
    setfacl(&["-m", "u:1234:r"], &g)?;
    setfacl(&["-b"], &g)?;
    expect_errno(
        get_xattr(&g, "system.posix_acl_access"),
        Errno::ENODATA,
        "ACL removed by setfacl -b",
    )?;

    // Setting an access ACL drops setgid when the caller is neither in the file's group nor
    // privileged (posix_acl_update_mode); the kernel decides, the server must apply it.
    let acl = get_xattr(&f, "system.posix_acl_access")?;
    for (name, caller_gid, keeps) in [("sgid-out", 3000, false), ("sgid-in", 2000, true)] {
        let p = fs.path(name);
        write(&p, b"s")?;
        nix::unistd::chown(&p, Some(Uid::from_raw(1234)), Some(Gid::from_raw(2000)))?;
        std::fs::set_permissions(&p, PermissionsExt::from_mode(0o2770))?;
        let op = UserOp::SetXattr(p.clone(), "system.posix_acl_access".into(), acl.clone());
        assert_eq!(
            as_user(1234, caller_gid, op)?,
            Ok(()),
            "the owner sets {name}'s ACL"
        );
        let mode = std::fs::metadata(&p)?.permissions().mode();
        assert_eq!(
            mode & 0o2000 != 0,
            keeps,
            "{name}: setgid after setfacl by a caller of gid {caller_gid} (mode {mode:o})"
        );
        std::fs::remove_file(&p)?;
    }

    fs.remount()?;
    assert_eq!(getfacl(&f)?, want_f, "after remount");
    assert_eq!(getfacl(&fs.path("d/new"))?, want_new, "after remount");
    assert_eq!(
        as_user(1234, 1234, UserOp::OpenWrite(f.clone()))?,
        Ok(()),
        "after remount"
    );
    fs.expected.file("f", b"acl".to_vec());
    fs.expected.mode("f", 0o660);
    fs.finish()
}

type SetidCase = (
    &'static str,
    u32,
    fn(std::path::PathBuf) -> UserOp,
    (u32, u32),
    u32,
);

/// A write or an O_TRUNC open by a user without CAP_FSETID drops setuid, and setgid when
/// the file is group-executable or the user is not in its group; root keeps both. iomapfs
/// does it itself (FUSE_HANDLE_KILLPRIV_V2) and tells the kernel, so a stat right after
/// already shows it, and so does the disk after a remount.
fn writes_and_truncates_drop_setid(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    // (name, mode, how, by whom (uid, gid), the mode left)
    let cases: [SetidCase; 6] = [
        ("exec", 0o6755, UserOp::Write, (1234, 1234), 0o755),
        ("noexec", 0o6644, UserOp::Write, (1234, 1234), 0o2644),
        ("outsider", 0o6666, UserOp::Write, (3000, 3000), 0o666),
        ("trunc", 0o6755, UserOp::OpenTrunc, (1234, 1234), 0o755),
        (
            "trunc-noexec",
            0o6644,
            UserOp::OpenTrunc,
            (1234, 1234),
            0o2644,
        ),
        ("plain", 0o644, UserOp::Write, (1234, 1234), 0o644),
    ];
    for (name, mode, _, _, _) in &cases {
        let p = fs.path(name);
        write(&p, b"data")?;
        std::os::unix::fs::chown(&p, Some(1234), Some(1234))?;
        std::fs::set_permissions(&p, PermissionsExt::from_mode(*mode))?;
        assert_eq!(perm(&p)?, *mode, "{name}: set up");
    }
    let root = fs.path("root");
    write(&root, b"data")?;
    std::fs::set_permissions(&root, PermissionsExt::from_mode(0o6755))?;
    for (name, _, op, (uid, gid), _) in &cases {
        assert_eq!(as_user(*uid, *gid, op(fs.path(name)))?, Ok(()), "{name}");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&root)?
        .write_all_at(b"w", 0)?;
    let check = |fs: &TestFs<'_>, when: &str| -> Result<()> {
        for (name, _, _, _, left) in &cases {
            assert_eq!(perm(&fs.path(name))?, *left, "{name} {when}");
        }
        assert_eq!(perm(&fs.path("root"))?, 0o6755, "root {when}");
        Ok(())
    };
    check(&fs, "at once")?;
    fs.remount()?;
    check(&fs, "after a remount")?;
    fs.finish()
}

fn fallocate_modes(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let f = fs.path("f");
    let fd = open(&f, OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    let mut model = SparseData::from(pattern(70, MIB as usize));
    pwrite_all(&fd, &model.to_vec(), 0)?;
    fsync(&fd)?;
    let blocks = |fd: &OwnedFd| fstat(fd).map(|s| s.st_blocks as u64);
    let check = |fd: &OwnedFd, model: &SparseData, what: &str| -> Result<()> {
        assert_eq!(fstat(fd)?.st_size as u64, model.len(), "{what}: size");
        ensure!(
            pread_vec(fd, model.len() as usize, 0)? == model.to_vec(),
            "{what}: contents differ"
        );
        Ok(())
    };
    let sectors = |bytes: u64| bytes / 512;

    let b0 = blocks(&fd)?;
    nix::fcntl::fallocate(&fd, FallocateFlags::empty(), to_off(2 * MIB), to_off(MIB))?;
    model.truncate(3 * MIB);
    check(&fd, &model, "fallocate default mode")?;
    ensure!(
        blocks(&fd)? >= b0 + sectors(MIB),
        "fallocate allocates: {} -> {}",
        b0,
        blocks(&fd)?
    );

    let b1 = blocks(&fd)?;
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        to_off(4 * MIB),
        to_off(MIB),
    )?;
    check(&fd, &model, "KEEP_SIZE")?;
    ensure!(
        blocks(&fd)? >= b1 + sectors(MIB),
        "KEEP_SIZE allocates past EOF: {} -> {}",
        b1,
        blocks(&fd)?
    );

    let b2 = blocks(&fd)?;
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        256 * 1024,
        256 * 1024,
    )?;
    model.zero_range(256 * 1024, 256 * 1024);
    check(&fd, &model, "PUNCH_HOLE")?;
    ensure!(
        blocks(&fd)? + sectors(256 * 1024) <= b2,
        "punching frees blocks: {} -> {}",
        b2,
        blocks(&fd)?
    );
    // The VFS insists on KEEP_SIZE with PUNCH_HOLE.
    expect_errno(
        nix::fcntl::fallocate(&fd, FallocateFlags::FALLOC_FL_PUNCH_HOLE, 0, 4096),
        Errno::EOPNOTSUPP,
        "PUNCH_HOLE without KEEP_SIZE",
    )?;
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        100_000,
        10_000,
    )?;
    model.zero_range(100_000, 10_000);
    check(&fd, &model, "misaligned PUNCH_HOLE")?;

    nix::fcntl::fallocate(&fd, FallocateFlags::FALLOC_FL_ZERO_RANGE, 600_000, 5000)?;
    model.zero_range(600_000, 5000);
    check(&fd, &model, "ZERO_RANGE")?;
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_ZERO_RANGE,
        to_off(3 * MIB - 10),
        100,
    )?;
    model.truncate(3 * MIB + 90);
    check(&fd, &model, "ZERO_RANGE past EOF extends")?;

    let refill = pattern(71, 8192);
    pwrite_all(&fd, &refill, 256 * 1024)?;
    model.write(256 * 1024, &refill);
    check(&fd, &model, "write into a punched hole")?;
    drop(fd);
    fs.remount()?;
    let fd = open(&f, OFlag::O_RDONLY, 0)?;
    check(&fd, &model, "after remount")?;
    drop(fd);
    fs.expected.file("f", model);
    fs.finish()
}

fn seek_data_hole(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let fd = open(&fs.path("f"), OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    pwrite_all(&fd, &pattern(80, 4096), 0)?;
    pwrite_all(&fd, &pattern(81, 4096), MIB)?;
    ftruncate(&fd, to_off(2 * MIB))?;
    // Unwritten (preallocated) extents read as zero, so SEEK_DATA skips them like holes.
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        to_off(MIB + 65536),
        65536,
    )?;
    let check = |fd: &OwnedFd, when: &str| -> Result<()> {
        let seek = |at: u64, whence| lseek(fd, to_off(at), whence).map(|o| o as u64);
        let data = |at| seek(at, Whence::SeekData);
        let hole = |at| seek(at, Whence::SeekHole);
        assert_eq!(data(0)?, 0, "{when}");
        assert_eq!(hole(0)?, 4096, "{when}");
        assert_eq!(data(4096)?, MIB, "{when}");
        assert_eq!(hole(MIB)?, MIB + 4096, "{when}");
        expect_errno(data(MIB + 4096), Errno::ENXIO, when)?;
        assert_eq!(hole(2 * MIB - 1)?, 2 * MIB - 1, "{when}: already in a hole");
        assert_eq!(hole(MIB + 100)?, MIB + 4096, "{when}");
        expect_errno(data(2 * MIB), Errno::ENXIO, when)?;
        expect_errno(hole(2 * MIB), Errno::ENXIO, when)?;
        Ok(())
    };
    // ext4 answers from its page cache too. FUSE_LSEEK is sent without writing back dirty
    // pages first (fs/fuse/file.c fuse_lseek), so with the writeback cache iomapfs has the
    // kernel write them back before it answers: data just written is data, not a hole.
    check(&fd, "before fsync")?;
    // Only written (a truncate or fallocate would have written the pages back first).
    let fresh = open(&fs.path("fresh"), OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    pwrite_all(&fresh, &pattern(82, 8192), 0)?;
    pwrite_all(&fresh, &pattern(83, 4096), MIB)?;
    assert_eq!(lseek(&fresh, 0, Whence::SeekHole)?, 8192, "fresh: the hole");
    assert_eq!(
        lseek(&fresh, 8192, Whence::SeekData)? as u64,
        MIB,
        "fresh: the data after the hole"
    );
    drop(fresh);
    fsync(&fd)?;
    check(&fd, "after fsync")?;
    drop(fd);
    fs.remount()?;
    check(&open(&fs.path("f"), OFlag::O_RDONLY, 0)?, "after remount")?;
    let mut fresh = SparseData::new();
    fresh.write(0, &pattern(82, 8192));
    fresh.write(MIB, &pattern(83, 4096));
    fs.expected.file("fresh", fresh);
    let mut model = SparseData::new();
    model.write(0, &pattern(80, 4096));
    model.write(MIB, &pattern(81, 4096));
    model.truncate(2 * MIB);
    fs.expected.file("f", model);
    fs.finish()
}

fn statx_fields(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let t0 = now_secs();
    write(&fs.path("f"), &pattern(90, 5000))?;
    std::fs::create_dir(fs.path("d"))?;
    let want = STATX_BASIC_STATS | STATX_BTIME;
    let mnt = fs.mnt().to_path_buf();
    let sx = |p: &str| statx(&mnt.join(p), AtFlags::AT_SYMLINK_NOFOLLOW, want);
    let x = sx("f")?;
    let st = meta(&fs.path("f"))?;
    ensure!(
        x.stx_mask & STATX_BASIC_STATS == STATX_BASIC_STATS,
        "mask {:#x}",
        x.stx_mask
    );
    assert_eq!(
        (x.stx_ino, x.stx_size, x.stx_nlink, x.stx_mode as u32),
        (st.ino(), 5000, 1, st.mode())
    );
    assert_eq!(
        (x.stx_blocks, x.stx_uid, x.stx_blksize),
        (st.blocks(), 0, 4096)
    );
    assert_eq!(
        (x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec as i64),
        (st.mtime(), st.mtime_nsec())
    );
    // ext4 always has a birth time. A FUSE server can only report one through FUSE_STATX,
    // which kernels send from 6.6 on; older kernels never return STATX_BTIME on FUSE.
    let has_btime = x.stx_mask & STATX_BTIME == STATX_BTIME;
    let kernel_sends_statx = !fs.is_fuse() || kernel_at_least(6, 6);
    assert_eq!(has_btime, kernel_sends_statx, "STATX_BTIME in the mask");
    let btime = x.stx_btime.tv_sec;
    if has_btime {
        ensure!(
            btime >= t0 - 2 && btime <= now_secs() + 1,
            "btime {btime} is not around {t0}"
        );
        ensure!(
            (btime, x.stx_btime.tv_nsec) <= (x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec),
            "born after its last write"
        );
    }
    let xd = sx("d")?;
    ensure!(
        u32::from(xd.stx_mode) & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() && xd.stx_nlink == 2,
        "dir statx: mode {:o}, nlink {}",
        xd.stx_mode,
        xd.stx_nlink
    );
    fs.remount()?;
    let y = sx("f")?;
    if has_btime {
        assert_eq!(
            (y.stx_btime.tv_sec, y.stx_btime.tv_nsec),
            (btime, x.stx_btime.tv_nsec),
            "btime persists"
        );
    }
    fs.expected.file("f", pattern(90, 5000));
    fs.finish()
}

fn large_sparse_file(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let five_g = 5u64 << 30;
    let fd = open(&fs.path("big"), OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    let mut model = SparseData::new();
    let data = pattern(100, 65536);
    pwrite_all(&fd, &data, five_g)?;
    model.write(five_g, &data);
    // Straddling 4 GiB catches 32-bit offset truncation.
    pwrite_all(&fd, b"ABCD", (4u64 << 30) - 2)?;
    model.write((4u64 << 30) - 2, b"ABCD");
    fsync(&fd)?;
    let check = |fd: &OwnedFd| -> Result<()> {
        let st = fstat(fd)?;
        assert_eq!(st.st_size as u64, five_g + 65536);
        ensure!(
            (st.st_blocks as u64) * 512 <= MIB,
            "sparse: {} blocks",
            st.st_blocks
        );
        assert_eq!(pread_vec(fd, 65536, five_g)?, data);
        assert_eq!(pread_vec(fd, 8, (4u64 << 30) - 4)?, b"\0\0ABCD\0\0");
        assert_eq!(
            pread_vec(fd, 4096, 3u64 << 30)?,
            vec![0u8; 4096],
            "hole at 3 GiB"
        );
        assert_eq!(lseek(fd, 0, Whence::SeekData)? as u64, (4u64 << 30) - 4096);
        assert_eq!(
            lseek(fd, to_off(4u64 << 30 | 4096), Whence::SeekData)? as u64,
            five_g
        );
        Ok(())
    };
    check(&fd)?;
    drop(fd);
    fs.remount()?;
    check(&open(&fs.path("big"), OFlag::O_RDONLY, 0)?)?;
    fs.expected.file("big", model);
    fs.finish()
}

// FS_IOC_GETVERSION, _IOR('v', 1, long): 0x80087601 on 64-bit Linux.
nix::ioctl_read!(fs_ioc_getversion, b'v', 1, std::ffi::c_long);

fn generation(p: &Path) -> Result<std::result::Result<u64, Errno>> {
    let fd = open(p, OFlag::O_RDONLY, 0)?;
    let mut gen: std::ffi::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one long to the pointer.
    let r = unsafe { fs_ioc_getversion(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut gen) };
    Ok(r.map(|_| gen as u64))
}

fn inode_generation(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    write(&fs.path("f"), b"f")?;
    let ino = meta(&fs.path("f"))?.ino();
    // FUSE forwards the ioctl to the server; iomapfs answers it as ext4 does.
    let gen =
        generation(&fs.path("f"))?.map_err(|e| anyhow::anyhow!("FS_IOC_GETVERSION: {e:?}"))?;
    std::fs::remove_file(fs.path("f"))?;
    // Reuse the inode number: ext4 hands out the lowest free inode of the group.
    write(&fs.path("g"), b"g")?;
    let g_ino = meta(&fs.path("g"))?.ino();
    let g_gen = generation(&fs.path("g"))?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if g_ino == ino {
        ensure!(
            g_gen != gen,
            "a reused inode number must get a new generation ({gen})"
        );
    } else {
        eprintln!(
            "inode {ino} was not reused (got {g_ino}): the new-generation check did not apply"
        );
    }
    fs.remount()?;
    assert_eq!(
        generation(&fs.path("g"))?.map_err(|e| anyhow::anyhow!("{e:?}"))?,
        g_gen,
        "generation is stable across remount"
    );
    fs.expected.file("g", b"g".to_vec());
    fs.finish()
}

fn enospc_small_fs(t: &dyn Target) -> Result<()> {
    // No root reserve, so root and a FUSE server see the same limit.
    let spec = FsSpec {
        size_mib: 32,
        mkfs_args: vec!["-m".into(), "0".into()],
        ..FsSpec::default()
    };
    let mut fs = TestFs::new(t, spec)?;
    let fd = open(&fs.path("fill"), OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    let chunk = pattern(110, MIB as usize);
    let mut accepted = 0u64;
    let write_err = loop {
        match nix::sys::uio::pwrite(&fd, &chunk, to_off(accepted)) {
            Ok(n) => accepted += n as u64,
            Err(e) => break Some(e),
        }
        if accepted > 64 * MIB {
            break None;
        }
    };
    let sync = fsync(&fd);
    match write_err {
        Some(e) => {
            assert_eq!(e, Errno::ENOSPC, "the failing write");
            sync.context("fsync of the accepted data")?;
            assert_eq!(fstat(&fd)?.st_size as u64, accepted);
        }
        // ext4 reserves blocks at write time (delayed allocation accounting), so the write
        // fails. A FUSE server behind the kernel's writeback cache only sees the data at
        // writeback, so there the error may surface at fsync instead.
        None if fs.is_fuse() => expect_errno(sync, Errno::ENOSPC, "fsync after filling the fs")?,
        None => anyhow::bail!("64 MiB fit into a 32 MiB filesystem"),
    }
    ensure!(accepted > 16 * MIB, "only {accepted} bytes fit");
    drop(fd);
    if write_err.is_some() {
        let size = meta(&fs.path("fill"))?.len();
        let back = read(&fs.path("fill"))?;
        for (i, c) in back.chunks(MIB as usize).enumerate() {
            ensure!(
                c == &chunk[..c.len()],
                "accepted data is intact (MiB {i} of {size})"
            );
        }
    }
    fs.remount()?;
    std::fs::remove_file(fs.path("fill"))?;
    nix::unistd::syncfs(open(fs.mnt(), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?)?;
    let again = pattern(111, 4 * MIB as usize);
    let fd = open(&fs.path("again"), OFlag::O_CREAT | OFlag::O_WRONLY, 0o644)?;
    pwrite_all(&fd, &again, 0).context("writing after freeing space")?;
    fsync(&fd)?;
    drop(fd);
    fs.expected.file("again", again);
    fs.expected.absent("fill");
    fs.finish()
}

fn read_only_mount(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    write(&fs.path("f"), b"read me")?;
    std::fs::create_dir(fs.path("d"))?;
    fs.remount_with(true)?;
    let mnt = fs.mnt().to_path_buf();
    let p = |s: &str| mnt.join(s);
    assert_eq!(read(&p("f"))?, b"read me");
    let st = nix::sys::statvfs::statvfs(fs.mnt())?;
    ensure!(
        st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
        "statvfs flags {:?}",
        st.flags()
    );
    expect_errno(
        open(&p("f"), OFlag::O_WRONLY, 0),
        Errno::EROFS,
        "open for writing",
    )?;
    expect_errno(
        open(&p("new"), OFlag::O_CREAT | OFlag::O_WRONLY, 0o644),
        Errno::EROFS,
        "create",
    )?;
    expect_io_errno(std::fs::create_dir(p("d2")), Errno::EROFS, "mkdir")?;
    expect_io_errno(std::fs::remove_file(p("f")), Errno::EROFS, "unlink")?;
    expect_io_errno(std::fs::rename(p("f"), p("g")), Errno::EROFS, "rename")?;
    expect_io_errno(
        std::fs::set_permissions(p("f"), PermissionsExt::from_mode(0o600)),
        Errno::EROFS,
        "chmod",
    )?;
    expect_errno(
        test_support::sys::setxattr(&p("f"), "user.x", b"v", SetXattr::Either, Link::Follow),
        Errno::EROFS,
        "setxattr",
    )?;
    expect_errno(
        utimens(&p("f"), ts(1, 0), ts(1, 0)),
        Errno::EROFS,
        "utimensat",
    )?;
    fs.expected.file("f", b"read me".to_vec());
    fs.expected.dir("d");
    fs.expected.absent("new");
    fs.finish()
}

fn permissions_other_user(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let mnt = fs.mnt().to_path_buf();
    let p = |s: &str| mnt.join(s);
    write(&p("pub"), b"public")?;
    std::fs::set_permissions(p("pub"), PermissionsExt::from_mode(0o644))?;
    std::fs::create_dir(p("priv"))?;
    std::fs::set_permissions(p("priv"), PermissionsExt::from_mode(0o700))?;
    write(&p("priv/f"), b"secret")?;
    std::fs::create_dir(p("shared"))?;
    std::fs::set_permissions(p("shared"), PermissionsExt::from_mode(0o777))?;
    std::fs::create_dir(p("sticky"))?;
    std::fs::set_permissions(p("sticky"), PermissionsExt::from_mode(0o1777))?;
    write(&p("sticky/roots"), b"r")?;

    let nobody = |op| as_user(NOBODY, NOBODY, op);
    assert_eq!(
        nobody(UserOp::OpenRead(p("pub")))?,
        Ok(()),
        "read a 0644 file"
    );
    assert_eq!(
        nobody(UserOp::OpenWrite(p("pub")))?,
        Err(Errno::EACCES),
        "write a 0644 root file"
    );
    assert_eq!(
        nobody(UserOp::OpenRead(p("priv/f")))?,
        Err(Errno::EACCES),
        "open in a 0700 dir"
    );
    assert_eq!(
        nobody(UserOp::Stat(p("priv/f")))?,
        Err(Errno::EACCES),
        "lookup in a 0700 dir"
    );
    assert_eq!(
        nobody(UserOp::Create(p("mine")))?,
        Err(Errno::EACCES),
        "create in a 0755 root dir"
    );
    assert_eq!(
        nobody(UserOp::Unlink(p("pub")))?,
        Err(Errno::EACCES),
        "unlink in a 0755 root dir"
    );
    assert_eq!(
        nobody(UserOp::Chmod(p("pub"), 0o666))?,
        Err(Errno::EPERM),
        "chmod of another's file"
    );
    assert_eq!(
        nobody(UserOp::Chown(p("pub"), NOBODY, NOBODY))?,
        Err(Errno::EPERM),
        "chown by non-root"
    );
    assert_eq!(
        nobody(UserOp::Unlink(p("sticky/roots")))?,
        Err(Errno::EPERM),
        "unlink another's file in a sticky dir"
    );
    assert_eq!(
        nobody(UserOp::Create(p("shared/mine")))?,
        Ok(()),
        "create in a 0777 dir"
    );
    assert_eq!(
        nobody(UserOp::Mkdir(p("shared/mydir")))?,
        Ok(()),
        "mkdir in a 0777 dir"
    );
    for name in ["shared/mine", "shared/mydir"] {
        let m = meta(&p(name))?;
        assert_eq!(
            (m.uid(), m.gid()),
            (NOBODY, NOBODY),
            "{name} belongs to its creator"
        );
    }
    assert_eq!(
        nobody(UserOp::Chmod(p("shared/mine"), 0o600))?,
        Ok(()),
        "chmod of one's own file"
    );
    assert_eq!(perm(&p("shared/mine"))?, 0o600);
    fs.remount()?;
    assert_eq!(
        nobody(UserOp::OpenRead(p("priv/f")))?,
        Err(Errno::EACCES),
        "after remount"
    );
    assert_eq!(meta(&p("shared/mine"))?.uid(), NOBODY);
    fs.expected.file("shared/mine", Vec::new());
    fs.expected.mode("shared/mine", 0o600);
    fs.expected.file("priv/f", b"secret".to_vec());
    fs.finish()
}

fn mmap_shared(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    let len = 65536usize;
    let fd = open(&fs.path("m"), OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    ftruncate(&fd, to_off(len as u64))?;
    let data = pattern(120, len);
    let size = NonZeroUsize::new(len).expect("a nonempty mapping");
    // SAFETY: a fresh shared mapping of `len` bytes of our file, unmapped below.
    unsafe {
        let p = mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
        .context("mmap")?;
        std::slice::from_raw_parts_mut(p.cast::<u8>().as_ptr(), len).copy_from_slice(&data);
        let synced = msync(p, len, MsFlags::MS_SYNC);
        munmap(p, len).context("munmap")?;
        synced.context("msync")?;
    }
    assert_eq!(pread_vec(&fd, len, 0)?, data, "read sees the mapped writes");
    drop(fd);
    fs.remount()?;
    let fd = open(&fs.path("m"), OFlag::O_RDONLY, 0)?;
    // SAFETY: as above, read-only.
    let mapped = unsafe {
        let p = mmap(
            None,
            size,
            ProtFlags::PROT_READ,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
        .context("mmap")?;
        let v = std::slice::from_raw_parts(p.cast::<u8>().as_ptr(), len).to_vec();
        munmap(p, len).context("munmap")?;
        v
    };
    assert_eq!(mapped, data, "mapping after remount");
    drop(fd);
    fs.expected.file("m", data);
    fs.finish()
}

fn block_1k_filesystem(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::block_1k())?;
    let s = statfs(fs.mnt())?;
    assert_eq!(s.block_size() as u64, 1024, "f_bsize");
    let f = fs.path("f");
    let fd = open(&f, OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    let mut model = SparseData::new();
    let d = pattern(130, 3000);
    pwrite_all(&fd, &d, 500)?;
    model.write(500, &d);
    ftruncate(&fd, 1500)?;
    model.truncate(1500);
    ftruncate(&fd, 5000)?;
    model.truncate(5000);
    assert_eq!(
        pread_vec(&fd, 6000, 0)?,
        model.to_vec(),
        "truncate within a 1 KiB block"
    );
    drop(fd);

    let g = fs.path("g");
    let fd = open(&g, OFlag::O_CREAT | OFlag::O_RDWR, 0o644)?;
    let gd = pattern(131, 3072);
    pwrite_all(&fd, &gd, 0)?;
    fsync(&fd)?;
    let b0 = fstat(&fd)?.st_blocks;
    nix::fcntl::fallocate(
        &fd,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        1024,
        1024,
    )?;
    fsync(&fd)?;
    let mut gm = SparseData::from(gd);
    gm.zero_range(1024, 1024);
    assert_eq!(pread_vec(&fd, 3072, 0)?, gm.to_vec());
    assert_eq!(fstat(&fd)?.st_blocks, b0 - 2, "one 1 KiB block freed");
    assert_eq!(
        lseek(&fd, 0, Whence::SeekHole)? as u64,
        1024,
        "holes have block granularity"
    );
    assert_eq!(lseek(&fd, 1024, Whence::SeekData)? as u64, 2048);
    drop(fd);

    // A slow symlink must fit one block: 1023 bytes + NUL.
    let ok = symlink_target(1023);
    std::os::unix::fs::symlink(OsStr::from_bytes(&ok), fs.path("l"))?;
    let long = symlink_target(1024);
    expect_io_errno(
        std::os::unix::fs::symlink(OsStr::from_bytes(&long), fs.path("l2")),
        Errno::ENAMETOOLONG,
        "symlink longer than a block",
    )?;
    let xv = pattern(132, 800);
    test_support::sys::setxattr(&f, "user.v", &xv, SetXattr::Either, Link::Follow)?;

    fs.remount()?;
    assert_eq!(read(&f)?, model.to_vec());
    assert_eq!(read(&g)?, gm.to_vec());
    assert_eq!(get_xattr(&f, "user.v")?, xv);
    fs.expected.file("f", model);
    fs.expected.file("g", gm);
    fs.expected.symlink("l", &ok);
    fs.finish()
}

/// The rule for missing preconditions holds on the real host-mount tests: run as an
/// unprivileged user with CI set, a mount test fails naming what is missing; without CI it
/// prints one SKIP line and passes. (Runs this test binary again through setpriv.)
#[test]
fn without_root_a_host_mount_test_fails_under_ci() {
    use test_support::needs::{root, tool_from};
    if !test_support::needs_all([root(), tool_from("setpriv", "util-linux")]) {
        return;
    }
    let me = std::env::current_exe().unwrap();
    let run = |ci: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&me)
            .args(["--exact", "iomapfs::truncate_up_and_down", "--nocapture"])
            .env("CI", ci)
            .current_dir("/")
            .output()
            .unwrap()
    };
    let ci = run("true");
    let stderr = String::from_utf8_lossy(&ci.stderr);
    assert!(
        !ci.status.success(),
        "passed without root under CI: {stderr}"
    );
    assert!(
        stderr.contains("missing precondition under CI") && stderr.contains("needs root"),
        "{stderr}"
    );
    let local = run("");
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{stderr}");
    assert!(
        stderr.contains("SKIP: iomapfs::truncate_up_and_down: iomapfs: needs root"),
        "{stderr}"
    );
}

/// A file handle (name_to_handle_at) for `p`, as the bytes of a struct file_handle.
fn file_handle(p: &Path) -> Result<Vec<u8>> {
    // struct file_handle: u32 handle_bytes, i32 handle_type, then MAX_HANDLE_SZ bytes.
    let mut buf = vec![0u8; 8 + 128];
    buf[..4].copy_from_slice(&128u32.to_ne_bytes());
    let path = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    let mut mount_id = 0;
    // SAFETY: buf holds a file_handle with room for the 128 bytes it announces.
    let r = unsafe {
        nix::libc::name_to_handle_at(
            nix::libc::AT_FDCWD,
            path.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            0,
        )
    };
    Errno::result(r).context("name_to_handle_at")?;
    Ok(buf)
}

/// Opens a file handle on the filesystem mounted at `mnt`.
fn open_handle(mnt: &Path, handle: &mut [u8]) -> std::result::Result<OwnedFd, Errno> {
    let mnt = open(mnt, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    // SAFETY: handle is a file_handle filled by name_to_handle_at.
    let fd = unsafe {
        nix::libc::open_by_handle_at(
            std::os::fd::AsRawFd::as_raw_fd(&mnt),
            handle.as_mut_ptr().cast(),
            nix::libc::O_RDONLY,
        )
    };
    // SAFETY: a file descriptor open_by_handle_at just returned is ours.
    Errno::result(fd).map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// fstests generic/426 and 477: a handle still opens its file after the kernel forgot
/// the inode (a remount here), and a deleted file's handle is stale.
fn file_handles_outlive_the_inode_cache(t: &dyn Target) -> Result<()> {
    let mut fs = TestFs::new(t, FsSpec::default())?;
    write(&fs.path("f"), b"handle")?;
    std::fs::create_dir(fs.path("d"))?;
    write(&fs.path("gone"), b"x")?;
    let (mut f, mut d, mut gone) = (
        file_handle(&fs.path("f"))?,
        file_handle(&fs.path("d"))?,
        file_handle(&fs.path("gone"))?,
    );
    std::fs::remove_file(fs.path("gone"))?;
    fs.remount()?;
    let fd = open_handle(fs.mnt(), &mut f).map_err(|e| anyhow::anyhow!("file: {e}"))?;
    let mut content = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut content)?;
    ensure!(content == "handle", "read {content:?} through the handle");
    open_handle(fs.mnt(), &mut d).map_err(|e| anyhow::anyhow!("directory: {e}"))?;
    ensure!(
        open_handle(fs.mnt(), &mut gone).err() == Some(Errno::ESTALE),
        "a deleted file's handle must be stale"
    );
    fs.expected.file("f", b"handle".to_vec());
    fs.expected.dir("d");
    fs.finish()
}
