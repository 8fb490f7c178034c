//! Classic-mode write ordering (issue 17, item 2): the data a WRITE puts into unwritten
//! blocks is on the device before the conversion that makes it readable is written.
//! Otherwise a power cut could leave the conversion on disk and the data not, exposing
//! what the blocks held before (another file's deleted data).
//!
//! The test makes the conversion itself fail (an injected failure at that step): at that
//! moment the data must already have left the page cache. `cachestat(2)` tells whether
//! pages of the image are dirty or under writeback.

mod common;

use std::path::Path;
use std::process::Command;

use ext2fs::{FailPlan, FileType, Fs, Inode, MapKind, ROOT_INO};
use fuse_wire::structs::{InHeader, WriteIn};
use iomapfs::options::MountOptions;
use iomapfs::server::Server;
use zerocopy::IntoBytes;

use common::unclean_pages;

const BS: u64 = 4096;

fn write_request(nodeid: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let arg = WriteIn {
        fh: 1,
        offset,
        size: data.len() as u32,
        ..Default::default()
    };
    let len = std::mem::size_of::<InHeader>() + std::mem::size_of::<WriteIn>() + data.len();
    let header = InHeader {
        len: len as u32,
        opcode: fuse_wire::Opcode::Write as u32,
        unique: 2,
        nodeid,
        ..Default::default()
    };
    [header.as_bytes(), arg.as_bytes(), data].concat()
}

fn write(server: &Server, ino: u32, offset: u64, data: &[u8]) -> Result<(), i32> {
    let bytes = write_request(u64::from(ino), offset, data);
    let req = fuse_wire::request::parse(&bytes).expect("a well-formed WRITE");
    match iomapfs::dispatch::handle(server, &req).expect("WRITE gets a reply") {
        Ok(_) => Ok(()),
        Err(e) => Err(e.0),
    }
}

/// The file's first extent as the image holds it now.
fn first_extent(image: &Path, ino: u32) -> MapKind {
    let fs = Fs::open(image, false).unwrap();
    let inode = fs.read_inode(ino).unwrap();
    fs.map(ino, &inode, 0, 1).unwrap()[0].kind
}

#[test]
fn data_reaches_the_device_before_its_conversion() {
    if !test_support::needs(test_support::needs::tool_from("mkfs.ext4", "e2fsprogs")) {
        return;
    }
    // The image must be on a filesystem with writeback (not tmpfs): next to the target dir.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let image = dir.path().join("fs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let ok = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-O", "^inline_data", "-b", "4096"])
        .arg(&image)
        .status()
        .unwrap();
    assert!(ok.success());
    let probe = std::fs::File::open(&image).unwrap();
    let missing = unclean_pages(&probe, 0, BS)
        .is_none()
        .then(|| "cachestat(2) (Linux 6.5 or newer)".to_string());
    if !test_support::needs(missing) {
        return;
    }

    let mut fs = Fs::open(&image, true).unwrap();
    let ino = fs.new_inode(ROOT_INO, libc::S_IFREG | 0o644).unwrap();
    let mut inode = Inode::new(libc::S_IFREG | 0o644);
    inode.set_links(1);
    fs.write_new_inode(ino, &inode).unwrap();
    fs.link(ROOT_INO, b"f", ino, FileType::Regular).unwrap();
    // The WRITE's steps: 1 allocates the unwritten blocks, 2 converts them. Step 2 fails.
    fs.inject_failure(FailPlan {
        step: 2,
        errno: libc::EIO,
        sticky: false,
    });
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    let server = Server::new(fs, data, MountOptions::default());

    let payload = vec![0x5au8; 3 * BS as usize];
    assert_eq!(
        write(&server, ino, 0, &payload),
        Err(libc::EIO),
        "the conversion fails"
    );
    // Which blocks of the image are dirty now (before anything else opens the image:
    // libext2fs syncs it on close).
    let blocks = 64 << 20 >> 12;
    let dirty: Vec<u64> = (0..blocks)
        .filter(|&b| unclean_pages(&probe, b * BS, BS) != Some(0))
        .collect();
    let MapKind::Unwritten { pblk } = first_extent(&image, ino) else {
        panic!("the blocks are allocated and still unwritten")
    };
    let data_blocks = pblk..pblk + 3;
    assert!(
        !dirty.iter().any(|b| data_blocks.contains(b)),
        "when the conversion was attempted, data blocks {data_blocks:?} were still dirty in the page cache (dirty: {dirty:?})"
    );

    // The same WRITE again succeeds and converts; an overwrite of written blocks needs no
    // wait, so its pages stay dirty: the probe sees dirty pages when there are some.
    assert_eq!(write(&server, ino, 0, &payload), Ok(()));
    assert_eq!(first_extent(&image, ino), MapKind::Mapped { pblk });
    assert_eq!(write(&server, ino, 0, &vec![0xa5u8; BS as usize]), Ok(()));
    assert!(
        unclean_pages(&probe, pblk * BS, BS).unwrap() > 0,
        "the probe sees dirty pages"
    );
    assert!(
        !dirty.is_empty(),
        "metadata written through the page cache was seen dirty"
    );
    server.shutdown().unwrap();
}
