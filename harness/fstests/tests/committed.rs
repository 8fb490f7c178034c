//! What is committed under images/ for fstests: the expunge lists parse (each entry with a
//! reason and a link: the loader refuses entries without them), and the baseline is a
//! results.json that `--baseline` reads.

use std::path::Path;

use fstests::{Context, ExpungeList, Kind, Mode};

#[test]
fn every_images_expunge_list_loads() {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
    let mut loaded = 0;
    for image in std::fs::read_dir(&images).unwrap() {
        let dir = image.unwrap().path().join("expunge");
        if dir.is_dir() {
            let list =
                ExpungeList::load_dir(&dir).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
            loaded += list.entries.len();
        }
    }
    assert!(loaded > 0, "no expunge entries under {}", images.display());
}

/// The environment's expunges hold for the configuration they were found in.
#[test]
fn generic_347_is_expunged_on_iomapfs_4k() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/default/expunge");
    let list = ExpungeList::load_dir(&dir).unwrap();
    let ctx = Context {
        kernel_release: "6.12.118",
        mode: Mode::Classic,
        section: "iomapfs-4k",
    };
    assert!(list.lookup("generic/347", &ctx, Kind::Skip).is_some());
    assert!(list.lookup("generic/001", &ctx, Kind::Skip).is_none());
}

/// The `-g quick` baseline (images/default/baseline/README.md): every quick test of the
/// fstests tree it was made with, once, in section iomapfs-4k.
#[test]
fn the_quick_baseline_reads_as_results() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../images/default/baseline/quick-iomapfs-4k.json");
    let run = report::read_json(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let names: std::collections::BTreeSet<&str> =
        run.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), run.tests.len(), "a test twice");
    assert_eq!(names.len(), 633);
    assert!(names
        .iter()
        .all(|n| n.starts_with("fstests/iomapfs-4k/generic/")));
    let decided = run
        .tests
        .iter()
        .filter(|t| !matches!(t.verdict, report::Verdict::NotRun))
        .count();
    assert!(decided > 0, "a baseline with no verdicts");
}
