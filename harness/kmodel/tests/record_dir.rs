//! `IOMAPFS_RECORD_DIR` (what vm-test's agent sets for every test): every server started
//! with it saves the filesystem it opens as a snapshot and records its session next to
//! it, unasked; the session replays on the snapshot with no difference. Its own test
//! binary: the variable is process-wide.

mod common;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use iomapfs::record::harness::{session_files, RECORD_DIR_ENV};
use iomapfs::replay::{self, Ending};

const MIB: u64 = 1 << 20;

#[test]
fn every_server_records_into_the_directory_and_replays_on_its_snapshot() {
    let fx = Fixture::new(256 * MIB, 4096, &["threads=1"]);
    let dir = fx.dir.path().join("recordings");
    std::env::set_var(RECORD_DIR_ENV, &dir);
    for n in 0..2u8 {
        let mut k = fx.mount();
        let f = k.create(FUSE_ROOT_ID, &format!("f{n}"), 0o644).unwrap();
        k.write(f, 0, &vec![n + 1; 100_000]).unwrap();
        k.writeback(f).unwrap();
        k.mkdir(FUSE_ROOT_ID, &format!("d{n}"), 0o755).unwrap();
        k.destroy().unwrap();
    }
    std::env::remove_var(RECORD_DIR_ENV);

    for n in 1..=2 {
        let (rec, snap) = session_files(&dir, n);
        let image_len = std::fs::metadata(&fx.spec.image).unwrap().len();
        let snap_len = std::fs::metadata(&snap).unwrap().len();
        // A fresh 256 MiB filesystem: its snapshot is metadata, compressed.
        assert!(snap_len < image_len / 100, "snapshot {snap_len} bytes");
        let report = replay::replay(&replay::Config {
            recording: rec,
            image: snap,
            options: vec![],
            workdir: None,
        })
        .unwrap_or_else(|e| panic!("session {n} could not be replayed: {e:#}"));
        println!("session {n}: {report}");
        assert_eq!(report.finding, None, "{report}");
        assert_eq!(report.ending, Some(Ending::Complete));
    }
    // The second session started from what the first left: replayed on the first's
    // snapshot, it is refused (another filesystem state), not compared.
    let (rec2, _) = session_files(&dir, 2);
    let (_, snap1) = session_files(&dir, 1);
    let wrong = replay::replay(&replay::Config {
        recording: rec2,
        image: snap1,
        options: vec![],
        workdir: None,
    });
    assert!(wrong.is_err(), "{wrong:?}");
    assert!(!session_files(&dir, 3).0.exists());
}
