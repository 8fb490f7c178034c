//! The expunge lists committed under images/ parse, and each entry names what it expunges
//! with a reason and a link (the loader refuses entries without them).

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
