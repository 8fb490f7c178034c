//! What a READDIRPLUS reply carries: attributes (and a lookup reference) only for the
//! inodes the kernel does not hold yet. For one it holds, the record has node id 0, so the
//! kernel lists the name and leaves its dentry and inode as they are.

mod common;

use common::{have_mkfs, Kernel};
use fuse_wire::consts::FUSE_ROOT_ID;
use fuse_wire::reply::parse_dirents;
use fuse_wire::structs::{EntryOut, OpenIn, ReadIn};
use fuse_wire::Opcode;
use iomapfs::options::MountOptions;
use iomapfs::reply::Reply;
use zerocopy::IntoBytes;

/// READDIRPLUS of the root from the start: (name, entry) of every record.
fn list_plus(k: &mut Kernel) -> Vec<(String, EntryOut)> {
    k.call(
        Opcode::Opendir,
        FUSE_ROOT_ID,
        &[OpenIn::default().as_bytes()],
    )
    .expect("OPENDIR");
    let arg = ReadIn {
        size: 65_536,
        ..Default::default()
    };
    let Ok(Reply::Dirents(buf)) = k.call(Opcode::Readdirplus, FUSE_ROOT_ID, &[arg.as_bytes()])
    else {
        panic!("READDIRPLUS failed");
    };
    parse_dirents(buf.as_bytes(), true)
        .expect("well-formed records")
        .into_iter()
        .map(|d| {
            let entry = d.entry.expect("a plus record");
            assert_eq!(entry.attr.ino, d.dirent.ino, "the record's inode number");
            (String::from_utf8_lossy(d.name).into_owned(), entry)
        })
        .collect()
}

fn entry<'a>(listed: &'a [(String, EntryOut)], name: &str) -> &'a EntryOut {
    &listed
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} listed: {listed:?}"))
        .1
}

#[test]
fn attributes_only_for_inodes_the_kernel_does_not_hold() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kernel::new(dir.path(), MountOptions::default());
    let (held, _) = k.create("held");
    let (forgotten, _) = k.create("forgotten");
    k.forget(forgotten, 1);

    let first = list_plus(&mut k);
    let held_entry = entry(&first, "held");
    assert_eq!(held_entry.nodeid, 0, "the kernel holds it: no attributes");
    assert_eq!(held_entry.attr.ino, held, "but its inode number is listed");
    let again = entry(&first, "forgotten");
    assert_eq!(
        again.nodeid, forgotten,
        "forgotten: attributes and a reference"
    );
    assert_eq!(again.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_ne!(again.attr_valid, 0, "attributes the kernel may cache");
    let lost = entry(&first, "lost+found");
    assert_ne!(lost.nodeid, 0, "never looked up: attributes");
    assert_eq!(lost.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    for dot in [".", ".."] {
        assert_eq!(entry(&first, dot).nodeid, 0, "{dot} takes no reference");
    }

    // The listing took one reference on each inode it gave attributes for: the kernel
    // holds them all now, and a second listing gives none.
    let second = list_plus(&mut k);
    for (name, e) in &second {
        assert_eq!(e.nodeid, 0, "{name} is held after the first listing");
    }
    // Once the kernel forgets an inode (all its references), a listing gives it again.
    k.forget(forgotten, 1);
    let third = list_plus(&mut k);
    assert_eq!(entry(&third, "forgotten").nodeid, forgotten);
    assert_eq!(entry(&third, "held").nodeid, 0);
}
