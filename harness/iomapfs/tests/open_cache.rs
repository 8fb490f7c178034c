//! When an OPEN keeps the kernel's cached pages (FOPEN_KEEP_CACHE) and when it drops them.
//! An O_DIRECT write bypasses the page cache, and after an asynchronous one the kernel
//! drops no pages a concurrent buffered read brought in meanwhile (fstests generic/451:
//! "get stale data from buffer read"), so opens after such a write drop them until the
//! kernel has surely done so once (a request on a handle whose open dropped them).

mod common;

use common::{have_mkfs, Kernel};
use fuse_wire::consts::FOPEN_KEEP_CACHE;
use iomapfs::options::MountOptions;

fn keeps_cache(k: &mut Kernel, nodeid: u64) -> bool {
    k.open(nodeid, libc::O_RDONLY).open_flags & FOPEN_KEEP_CACHE != 0
}

#[test]
fn opens_after_a_direct_write_drop_the_cache_until_a_drop_is_done() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // noatime: an open never drops the cache for an atime update due.
    let opts = MountOptions::parse(["noatime"]).unwrap();
    let mut k = Kernel::new(dir.path(), opts);
    let (f, created) = k.create("f");
    assert!(created.open_flags & FOPEN_KEEP_CACHE != 0, "a new file");
    k.write(f, created.fh, libc::O_RDWR, 0, 65_536);
    assert!(
        keeps_cache(&mut k, f),
        "a buffered write went through the cache"
    );

    let direct = k.open(f, libc::O_RDWR | libc::O_DIRECT);
    let writer = k.open(f, libc::O_RDWR | libc::O_DIRECT);
    k.write(f, direct.fh, libc::O_RDWR | libc::O_DIRECT, 0, 65_536);
    let first = k.open(f, libc::O_RDONLY);
    assert!(
        first.open_flags & FOPEN_KEEP_CACHE == 0,
        "the first open after an O_DIRECT write"
    );
    // The kernel may not have dropped the pages for that open yet: until a request on its
    // handle shows that open(2) returned, opens drop them again.
    assert!(
        !keeps_cache(&mut k, f),
        "an open while the first is unconfirmed"
    );
    // A handle opened before the O_DIRECT write proves nothing. (FLUSH is not served: the
    // kernel stops sending it, so RELEASE is the close.)
    assert_eq!(k.flush(f, first.fh), Err(libc::ENOSYS));
    assert!(!keeps_cache(&mut k, f), "after a FLUSH");
    k.release(f, direct.fh);
    assert!(!keeps_cache(&mut k, f), "after the writer's close");
    k.release(f, first.fh);
    assert!(keeps_cache(&mut k, f), "after the first open's close");

    // Another O_DIRECT write while a handle that dropped the cache is open: that handle's
    // drop came before the write, so its close proves nothing about this write.
    k.write(f, writer.fh, libc::O_RDWR | libc::O_DIRECT, 0, 65_536);
    let before = k.open(f, libc::O_RDONLY);
    assert!(before.open_flags & FOPEN_KEEP_CACHE == 0);
    k.write(f, writer.fh, libc::O_RDWR | libc::O_DIRECT, 0, 65_536);
    k.release(f, before.fh);
    assert!(
        !keeps_cache(&mut k, f),
        "a drop before the last O_DIRECT write"
    );
    k.server.shutdown().unwrap();
}
