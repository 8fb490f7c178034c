//! Reply encoding, notifications and directory packing, checked through the kernel-side
//! decoders and by hand.

use fuse_wire::consts::{dirent_type, FUSE_NAME_MAX};
use fuse_wire::iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL;
use fuse_wire::opcode::FUSE_NOTIFY_INVAL_ENTRY;
use fuse_wire::reply::{out_header, valid_entry_name, wire_error, DirentError, ReplyError};
use fuse_wire::*;
use zerocopy::{FromBytes, IntoBytes};

fn header_of(buf: &[u8]) -> OutHeader {
    OutHeader::read_from_prefix(buf).unwrap().0
}

#[test]
fn ok_replies() {
    let r = reply_ok(7, &[b"abc", b"", b"de"]);
    assert_eq!(
        header_of(&r),
        OutHeader {
            len: 21,
            error: 0,
            unique: 7
        }
    );
    assert_eq!(&r[16..], b"abcde");
    let v = parse_reply(&r).unwrap();
    assert_eq!((v.payload, v.is_notification()), (&b"abcde"[..], false));

    let out = IomapIoendOut { newsize: 1 << 33 };
    let r = reply_struct(9, &out);
    assert_eq!(
        header_of(&r),
        OutHeader {
            len: 24,
            error: 0,
            unique: 9
        }
    );
    assert_eq!(
        IomapIoendOut::read_from_bytes(parse_reply(&r).unwrap().payload).unwrap(),
        out
    );

    let empty = reply_ok(3, &[]);
    assert_eq!(empty.len(), OUT_HEADER_LEN);
    assert_eq!(parse_reply(&empty).unwrap().payload, b"");
}

#[test]
fn error_replies() {
    let r = reply_err(11, 2);
    assert_eq!(r.len(), OUT_HEADER_LEN);
    assert_eq!(
        header_of(&r),
        OutHeader {
            len: 16,
            error: -2,
            unique: 11
        }
    );
    assert_eq!(parse_reply(&r).unwrap().header.error, -2);
    // Already negative errnos are kept, 0 is success (libfuse's fuse_reply_err(req, 0)).
    assert_eq!(header_of(&reply_err(1, -38)).error, -38);
    assert_eq!(header_of(&reply_err(1, 0)).error, 0);
    // Out of the kernel's range -> EIO, so the reply is never rejected.
    for bad in [512, 4095, i32::MAX, i32::MIN, -512] {
        assert_eq!(wire_error(bad), -errno::EIO, "{bad}");
        assert!(parse_reply(&reply_err(1, bad)).is_ok());
    }
    assert_eq!(wire_error(511), -511);
}

#[test]
fn notifications() {
    let inval = IomapDevInvalOut {
        dev: 1,
        reserved: 0,
        range: Range {
            offset: 4096,
            length: 8192,
        },
    };
    let n = notify(FUSE_NOTIFY_IOMAP_DEV_INVAL, inval.as_bytes());
    assert_eq!(
        header_of(&n),
        OutHeader {
            len: 16 + 24,
            error: 99,
            unique: 0
        }
    );
    let v = parse_reply(&n).unwrap();
    assert!(v.is_notification());
    assert_eq!(
        NotifyCode::from_i32(v.header.error),
        Some(NotifyCode::IomapDevInval)
    );
    assert_eq!(IomapDevInvalOut::read_from_bytes(v.payload).unwrap(), inval);

    let entry = NotifyInvalEntryOut {
        parent: 1,
        namelen: 3,
        flags: 0,
    };
    let n = notify_parts(FUSE_NOTIFY_INVAL_ENTRY, &[entry.as_bytes(), b"abc", b"\0"]);
    assert_eq!(n.len(), 16 + 16 + 4);
    assert_eq!(&n[32..], b"abc\0");
}

#[test]
fn reply_buf_is_reusable() {
    let mut rb = ReplyBuf::new();
    let a = rb.ok(1, &[&[1u8; 100]]).to_vec();
    let b = rb.err(2, 5).to_vec();
    assert_eq!(a, reply_ok(1, &[&[1u8; 100]]));
    assert_eq!(b, reply_err(2, 5));
    assert_eq!(rb.as_bytes(), &b[..]);
    let s = rb
        .ok_struct(
            3,
            &WriteOut {
                size: 10,
                padding: 0,
            },
        )
        .to_vec();
    assert_eq!(
        s,
        reply_struct(
            3,
            &WriteOut {
                size: 10,
                padding: 0
            }
        )
    );
    assert_eq!(rb.notify(2, &[b"x"]).len(), 17);
}

#[test]
fn header_length_limits() {
    assert_eq!(
        out_header(1, 0, 0),
        Some(OutHeader {
            len: 16,
            error: 0,
            unique: 1
        })
    );
    assert_eq!(
        out_header(1, 0, u32::MAX as usize - 16).map(|h| h.len),
        Some(u32::MAX)
    );
    assert_eq!(out_header(1, 0, u32::MAX as usize - 15), None);
    assert_eq!(out_header(1, 0, usize::MAX), None);
}

#[test]
fn kernel_rejects_malformed_replies() {
    let good = reply_ok(5, &[b"data"]);
    assert_eq!(
        parse_reply(&good[..10]),
        Err(ReplyError::TruncatedHeader { len: 10 })
    );
    assert!(matches!(
        parse_reply(&good[..18]),
        Err(ReplyError::LengthMismatch {
            header_len: 20,
            buf_len: 18
        })
    ));
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&(-2i32).to_ne_bytes());
    assert_eq!(
        parse_reply(&bad),
        Err(ReplyError::ErrorWithPayload { error: -2, len: 4 })
    );
    let mut bad = reply_err(5, 1);
    bad[4..8].copy_from_slice(&3i32.to_ne_bytes());
    assert_eq!(
        parse_reply(&bad),
        Err(ReplyError::ErrorOutOfRange { error: 3 })
    );
}

fn entry(ino: u64) -> EntryOut {
    EntryOut {
        nodeid: ino,
        generation: 1,
        entry_valid: 1,
        attr_valid: 1,
        attr: Attr {
            ino,
            mode: 0o100644,
            nlink: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn readdir_packing() {
    // One-byte name: 24 + 1 padded to 32. Eight-byte name: exactly 32.
    let mut d = DirentBuf::new(64);
    assert!(d.is_empty());
    assert!(d.push(10, 1, dirent_type(0o040755), b"."));
    assert_eq!(d.len(), 32);
    assert!(d.push(11, 2, dirent_type(0o100644), b"12345678"));
    assert_eq!(d.len(), 64);
    assert!(!d.push(12, 3, 8, b"x"), "buffer is full");
    assert_eq!(d.len(), 64, "a refused entry adds nothing");
    let bytes = d.as_bytes().to_vec();
    assert_eq!(&bytes[24..32], b".\0\0\0\0\0\0\0");
    let ents = parse_dirents(&bytes, false).unwrap();
    assert_eq!(ents.len(), 2);
    assert_eq!(
        (
            ents[0].dirent.ino,
            ents[0].dirent.off,
            ents[0].dirent.type_,
            ents[0].name
        ),
        (10, 1, 4, &b"."[..])
    );
    assert_eq!(
        (ents[1].dirent.ino, ents[1].dirent.namelen, ents[1].name),
        (11, 8, &b"12345678"[..])
    );
    assert!(ents.iter().all(|e| e.entry.is_none()));

    // The padded size must fit, not just the unpadded one.
    let mut d = DirentBuf::new(31);
    assert!(!d.push(1, 1, 8, b"a"));
    let mut d = DirentBuf::new(32);
    assert!(d.push(1, 1, 8, b"a"));
    d.reset(0);
    assert!(d.is_empty() && !d.push(1, 1, 8, b"a"));
    // A huge limit from the kernel does not allocate up front.
    let d = DirentBuf::new(usize::MAX);
    assert!(d.into_bytes().capacity() <= 64 << 10);
}

#[test]
fn record_size_is_what_a_push_adds() {
    for len in [1, 7, 8, 9, 255] {
        let name = vec![b'n'; len];
        let mut d = DirentBuf::new(4096);
        assert!(d.push(1, 1, 8, &name));
        assert_eq!(DirentBuf::record_size(len, false), d.len(), "{len}");
        let mut d = DirentBuf::new(4096);
        assert!(d.push_plus(&entry(1), 1, 8, &name));
        assert_eq!(DirentBuf::record_size(len, true), d.len(), "{len} plus");
    }
}

#[test]
fn readdirplus_packing() {
    let mut d = DirentBuf::new(4096);
    assert!(d.push_plus(&entry(20), 1, 8, b"file"));
    assert_eq!(d.len(), 152 + 8);
    assert!(d.push_plus(&entry(21), 2, 8, b"second-file"));
    let ents = parse_dirents(d.as_bytes(), true).unwrap();
    assert_eq!(ents.len(), 2);
    assert_eq!(ents[0].entry, Some(entry(20)));
    assert_eq!(ents[0].dirent.ino, 20, "dirent.ino mirrors attr.ino");
    assert_eq!((ents[1].dirent.off, ents[1].name), (2, &b"second-file"[..]));
    // Exactly one record of room.
    let mut d = DirentBuf::new(160);
    assert!(d.push_plus(&entry(1), 1, 8, b"abc"));
    assert!(!d.push_plus(&entry(2), 2, 8, b"d"));
}

#[test]
fn dirent_decoding_rules() {
    let mut d = DirentBuf::new(4096);
    d.push(1, 1, 8, b"ok");
    d.push(2, 2, 8, b"a/b");
    assert_eq!(
        parse_dirents(d.as_bytes(), false),
        Err(DirentError::BadName { at: 32 })
    );
    let mut d = DirentBuf::new(4096);
    d.push(1, 1, 8, b"");
    assert_eq!(
        parse_dirents(d.as_bytes(), false),
        Err(DirentError::BadName { at: 0 })
    );
    let long = vec![b'x'; FUSE_NAME_MAX + 1];
    let mut d = DirentBuf::new(4096);
    d.push(1, 1, 8, &long);
    assert_eq!(
        parse_dirents(d.as_bytes(), false),
        Err(DirentError::BadName { at: 0 })
    );
    let mut d = DirentBuf::new(4096);
    d.push(1, 1, 8, b"abc");
    let b = d.as_bytes();
    for cut in 1..b.len() {
        assert_eq!(
            parse_dirents(&b[..cut], false),
            Err(DirentError::Truncated { at: 0 }),
            "cut {cut}"
        );
    }
    assert_eq!(parse_dirents(&[], true), Ok(vec![]));

    assert!(valid_entry_name(b"a") && valid_entry_name(&vec![b'x'; FUSE_NAME_MAX]));
    assert!(!valid_entry_name(b"") && !valid_entry_name(b"a/b") && !valid_entry_name(b"a\0"));
}
