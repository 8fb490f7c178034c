//! FSYNC writes back what its file needs and nothing else (issue 16, item 4): the file's
//! data and the metadata that changed, then a flush of the device's cache. Another file's
//! data stays dirty in the image's page cache until that file is synced; `cachestat(2)`
//! counts the image's dirty pages. The flush that ends an fsync reaches the device: a loop
//! device counts the flushes it completes.

mod common;

use std::path::{Path, PathBuf};

use common::{have_mkfs, unclean_pages, Kernel};
use iomapfs::fault::Fault;
use iomapfs::options::MountOptions;
use test_support::needs;

const MIB: usize = 1 << 20;

/// A count of the image's dirty and under-writeback pages (cachestat(2)); `None`, after a
/// SKIP line or a failure under CI, where the kernel lacks cachestat.
fn dirty_pages_of(image: &Path) -> Option<impl Fn() -> u64> {
    let image = std::fs::File::open(image).unwrap();
    let len = image.metadata().unwrap().len();
    let missing = unclean_pages(&image, 0, len)
        .is_none()
        .then(|| "cachestat(2) (Linux 6.5 or newer)".to_string());
    if !test_support::needs(missing) {
        return None;
    }
    Some(move || unclean_pages(&image, 0, len).unwrap())
}

#[test]
fn fsync_writes_back_its_file_and_the_metadata_not_other_files() {
    if !have_mkfs() {
        return;
    }
    // The image must be on a filesystem with writeback (not tmpfs): next to the target dir.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut k = Kernel::new(dir.path(), MountOptions::default());
    let Some(unclean) = dirty_pages_of(&k.image) else {
        return;
    };
    let (small, s) = k.create("small");
    let (big, b) = k.create("big");
    // Twice: the first writes fill new blocks, whose data is written back before their
    // conversion (tests/ordering.rs); the overwrites stay dirty until a sync.
    for _ in 0..2 {
        k.write(small, s.fh, libc::O_RDWR, 0, 64 << 10);
        for i in 0..4 {
            k.write(big, b.fh, libc::O_RDWR, (i * MIB) as u64, MIB);
        }
    }
    let big_pages = (4 * MIB / 4096) as u64;
    let before = unclean();
    assert!(before >= big_pages + 16, "{before} dirty pages");

    assert_eq!(k.fsync(small, s.fh), Ok(()));
    let after_small = unclean();
    assert!(
        after_small >= big_pages,
        "fsync of the small file wrote back the big one's data: {after_small} dirty pages left of {before}"
    );
    assert!(
        after_small <= before - 16,
        "the small file's 16 pages were written back: {after_small} dirty pages left of {before}"
    );

    // Once the other file is synced too, nothing either changed is left dirty: no
    // metadata write escaped the log of device writes.
    assert_eq!(k.fsync(big, b.fh), Ok(()));
    assert_eq!(
        unclean(),
        0,
        "dirty pages left after both files were synced"
    );
    k.server.shutdown().unwrap();
}

/// A failed fsync loses nothing: the ranges it took from the logs are tracked no more, so
/// the next fsync, of any file, writes back everything.
#[test]
fn after_a_failed_fsync_the_next_one_writes_back_everything() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The first sync of the device fails, as a failed write-back does.
    let opts = MountOptions {
        fault: Some(Fault::FailSync { nth: 1 }),
        ..Default::default()
    };
    let mut k = Kernel::new(dir.path(), opts);
    let Some(unclean) = dirty_pages_of(&k.image) else {
        return;
    };
    let (a, ha) = k.create("a");
    let (other, ho) = k.create("other");
    for _ in 0..2 {
        k.write(a, ha.fh, libc::O_RDWR, 0, 64 << 10);
    }
    assert_eq!(k.fsync(a, ha.fh), Err(libc::EIO));
    assert!(unclean() > 0, "the failed fsync wrote nothing back");
    assert_eq!(k.fsync(other, ho.fh), Ok(()));
    assert_eq!(
        unclean(),
        0,
        "dirty pages left after the fsync that followed a failure"
    );
    k.server.shutdown().unwrap();
}

/// A loop device over an image file, detached when dropped.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let dev = test_support::cmd::run(
            "losetup",
            &[Path::new("--find"), Path::new("--show"), image],
        )
        .unwrap();
        LoopDevice(PathBuf::from(dev.trim()))
    }

    /// The flush requests the device completed (`/sys/block/NAME/stat`, field 16).
    fn flushes(&self) -> u64 {
        let name = self.0.file_name().unwrap().to_str().unwrap();
        let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert!(fields.len() >= 17, "no flush counts in {stat:?}");
        fields[15]
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = test_support::cmd::run("losetup", &[Path::new("-d"), &self.0]);
    }
}

#[test]
fn fsync_flushes_the_device_cache() {
    if !have_mkfs()
        || !test_support::needs_all([needs::root(), needs::tool_from("losetup", "mount")])
    {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let image = test_support::e2fs::new_ext4_image(dir.path(), 16).unwrap();
    // A loop device over a file has a write cache: flushes reach it and are counted.
    let dev = LoopDevice::attach(&image);
    let mut k = Kernel::serving(dev.0.clone(), MountOptions::default());
    let (f, h) = k.create("f");
    for _ in 0..2 {
        k.write(f, h.fh, libc::O_RDWR, 0, 8192);
    }
    let before = dev.flushes();
    assert_eq!(k.fsync(f, h.fh), Ok(()));
    let after = dev.flushes();
    assert!(
        after > before,
        "no flush reached the device ({before} -> {after})"
    );
    k.server.shutdown().unwrap();
}
