//! Request decoding: a hand-encoded sample of every opcode round-trips, malformed requests
//! give the right error, and no input makes the parser panic.

use core::mem::size_of;
use fuse_wire::iomap::FUSE_IOMAP;
use fuse_wire::*;
use zerocopy::{FromBytes, IntoBytes};

/// A struct with every byte different, so swapped or misplaced fields show up.
fn pat<T: FromBytes>(seed: u8) -> T {
    let bytes: Vec<u8> = (0..size_of::<T>())
        .map(|i| {
            seed.wrapping_add((i as u8).wrapping_mul(31))
                .wrapping_add(1)
        })
        .collect();
    T::read_from_bytes(&bytes).expect("exact size")
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn header(opcode: u32) -> InHeader {
    InHeader {
        len: 0,
        opcode,
        unique: 0x5eed_0000 + u64::from(opcode),
        nodeid: 42,
        uid: 1000,
        gid: 100,
        pid: 4242,
        total_extlen: 0,
        padding: 0,
    }
}

/// The arguments the kernel would send for `op`, and what they must decode to.
fn sample(op: Opcode) -> (Vec<u8>, Op<'static>) {
    macro_rules! fixed {
        ($variant:ident, $t:ty, $seed:expr) => {{
            let a: $t = pat($seed);
            (a.as_bytes().to_vec(), Op::$variant(a))
        }};
    }
    match op {
        Opcode::Lookup => (b"file.txt\0".to_vec(), Op::Lookup { name: b"file.txt" }),
        Opcode::Forget => fixed!(Forget, ForgetIn, 1),
        Opcode::Getattr => fixed!(Getattr, GetattrIn, 2),
        Opcode::Setattr => fixed!(Setattr, SetattrIn, 3),
        Opcode::Readlink => (vec![], Op::Readlink),
        Opcode::Symlink => (
            b"link\0../some/target\0".to_vec(),
            Op::Symlink {
                name: b"link",
                target: b"../some/target",
            },
        ),
        Opcode::Mknod => {
            let a: MknodIn = pat(4);
            (
                cat(&[a.as_bytes(), b"fifo\0"]),
                Op::Mknod {
                    arg: a,
                    name: b"fifo",
                },
            )
        }
        Opcode::Mkdir => {
            let a: MkdirIn = pat(5);
            (
                cat(&[a.as_bytes(), b"dir\0"]),
                Op::Mkdir {
                    arg: a,
                    name: b"dir",
                },
            )
        }
        Opcode::Unlink => (b"gone\0".to_vec(), Op::Unlink { name: b"gone" }),
        Opcode::Rmdir => (b"d\0".to_vec(), Op::Rmdir { name: b"d" }),
        Opcode::Rename => {
            let a = RenameIn { newdir: 77 };
            (
                cat(&[a.as_bytes(), b"old\0new\0"]),
                Op::Rename {
                    newdir: 77,
                    flags: 0,
                    oldname: b"old",
                    newname: b"new",
                },
            )
        }
        Opcode::Rename2 => {
            let a = Rename2In {
                newdir: 78,
                flags: consts::RENAME_EXCHANGE,
                padding: 0,
            };
            (
                cat(&[a.as_bytes(), b"a\0b\0"]),
                Op::Rename {
                    newdir: 78,
                    flags: consts::RENAME_EXCHANGE,
                    oldname: b"a",
                    newname: b"b",
                },
            )
        }
        Opcode::Link => {
            let a: LinkIn = pat(6);
            (
                cat(&[a.as_bytes(), b"hard\0"]),
                Op::Link {
                    arg: a,
                    name: b"hard",
                },
            )
        }
        Opcode::Open => fixed!(Open, OpenIn, 7),
        Opcode::Read => fixed!(Read, ReadIn, 8),
        Opcode::Write => {
            let mut a: WriteIn = pat(9);
            a.size = 5;
            (
                cat(&[a.as_bytes(), b"hello"]),
                Op::Write {
                    arg: a,
                    data: b"hello",
                },
            )
        }
        Opcode::Statfs => (vec![], Op::Statfs),
        Opcode::Release => fixed!(Release, ReleaseIn, 10),
        Opcode::Fsync => fixed!(Fsync, FsyncIn, 11),
        Opcode::Setxattr => {
            let a = SetxattrIn { size: 4, flags: 1 };
            (
                cat(&[a.as_bytes(), b"user.k/v\0", b"v\0al"]),
                Op::Setxattr {
                    arg: a,
                    setxattr_flags: 0,
                    name: b"user.k/v",
                    value: b"v\0al",
                },
            )
        }
        Opcode::Getxattr => {
            let a: GetxattrIn = pat(12);
            (
                cat(&[a.as_bytes(), b"user.x\0"]),
                Op::Getxattr {
                    arg: a,
                    name: b"user.x",
                },
            )
        }
        Opcode::Listxattr => fixed!(Listxattr, GetxattrIn, 13),
        Opcode::Removexattr => (b"user.y\0".to_vec(), Op::Removexattr { name: b"user.y" }),
        Opcode::Flush => fixed!(Flush, FlushIn, 14),
        Opcode::Init => {
            let a = InitIn {
                major: 7,
                minor: 45,
                max_readahead: 1 << 17,
                flags: 0x7000_0001,
                flags2: 0x800,
                ..Default::default()
            };
            (a.as_bytes().to_vec(), Op::Init(a))
        }
        Opcode::Opendir => fixed!(Opendir, OpenIn, 15),
        Opcode::Readdir => fixed!(Readdir, ReadIn, 16),
        Opcode::Releasedir => fixed!(Releasedir, ReleaseIn, 17),
        Opcode::Fsyncdir => fixed!(Fsyncdir, FsyncIn, 18),
        Opcode::Getlk => fixed!(Getlk, LkIn, 19),
        Opcode::Setlk => fixed!(Setlk, LkIn, 20),
        Opcode::Setlkw => fixed!(Setlkw, LkIn, 21),
        Opcode::Access => fixed!(Access, AccessIn, 22),
        Opcode::Create => {
            let a: CreateIn = pat(23);
            (
                cat(&[a.as_bytes(), b"new.txt\0"]),
                Op::Create {
                    arg: a,
                    name: b"new.txt",
                },
            )
        }
        Opcode::Interrupt => fixed!(Interrupt, InterruptIn, 24),
        Opcode::Bmap => fixed!(Bmap, BmapIn, 25),
        Opcode::Destroy => (vec![], Op::Destroy),
        Opcode::Ioctl => {
            let mut a: IoctlIn = pat(26);
            a.in_size = 3;
            (
                cat(&[a.as_bytes(), b"abc"]),
                Op::Ioctl {
                    arg: a,
                    data: b"abc",
                },
            )
        }
        Opcode::Poll => fixed!(Poll, PollIn, 27),
        Opcode::NotifyReply => {
            let mut a: NotifyRetrieveIn = pat(28);
            a.size = 2;
            (
                cat(&[a.as_bytes(), b"xy"]),
                Op::NotifyReply {
                    arg: a,
                    data: b"xy",
                },
            )
        }
        Opcode::BatchForget => {
            let items = [
                ForgetOne {
                    nodeid: 3,
                    nlookup: 1,
                },
                ForgetOne {
                    nodeid: 9,
                    nlookup: 1 << 40,
                },
            ];
            let a = BatchForgetIn { count: 2, dummy: 0 };
            (
                cat(&[a.as_bytes(), items.as_bytes()]),
                Op::BatchForget {
                    forgets: items.to_vec(),
                },
            )
        }
        Opcode::Fallocate => fixed!(Fallocate, FallocateIn, 29),
        Opcode::Readdirplus => fixed!(Readdirplus, ReadIn, 30),
        Opcode::Lseek => fixed!(Lseek, LseekIn, 31),
        Opcode::CopyFileRange => fixed!(CopyFileRange, CopyFileRangeIn, 32),
        Opcode::SetupMapping => fixed!(SetupMapping, SetupmappingIn, 33),
        Opcode::RemoveMapping => {
            let items = [RemovemappingOne { moffset: 1, len: 2 }];
            (
                cat(&[RemovemappingIn { count: 1 }.as_bytes(), items.as_bytes()]),
                Op::RemoveMapping {
                    mappings: items.to_vec(),
                },
            )
        }
        Opcode::Syncfs => fixed!(Syncfs, SyncfsIn, 34),
        Opcode::Tmpfile => {
            let a: CreateIn = pat(35);
            (
                cat(&[a.as_bytes(), b"/\0"]),
                Op::Tmpfile { arg: a, name: b"/" },
            )
        }
        Opcode::Statx => fixed!(Statx, StatxIn, 36),
        Opcode::CopyFileRange64 => fixed!(CopyFileRange64, CopyFileRangeIn, 37),
        Opcode::FreezeFs => fixed!(FreezeFs, FreezefsIn, 38),
        Opcode::UnfreezeFs => (vec![], Op::UnfreezeFs),
        Opcode::ShutdownFs => fixed!(ShutdownFs, ShutdownfsIn, 39),
        Opcode::IomapConfig => fixed!(IomapConfig, IomapConfigIn, 40),
        Opcode::IomapIoend => fixed!(IomapIoend, IomapIoendIn, 41),
        Opcode::IomapBegin => fixed!(IomapBegin, IomapBeginIn, 42),
        Opcode::IomapEnd => fixed!(IomapEnd, IomapEndIn, 43),
        Opcode::CuseInit => fixed!(CuseInit, CuseInitIn, 44),
    }
}

fn request(op: Opcode) -> (Vec<u8>, Op<'static>) {
    let (args, expected) = sample(op);
    (encode_request(&header(op as u32), &[&args]), expected)
}

/// Set the header's len field to the buffer length, so decoding goes past the header check.
fn fix_len(buf: &mut [u8]) {
    if buf.len() >= 4 {
        let len = (buf.len() as u32).to_ne_bytes();
        buf[..4].copy_from_slice(&len);
    }
}

#[test]
fn every_opcode_round_trips() {
    for &op in Opcode::ALL {
        let (buf, expected) = request(op);
        let req = parse(&buf).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        let mut h = header(op as u32);
        h.len = buf.len() as u32;
        assert_eq!(
            req,
            Request {
                header: h,
                op: expected.clone(),
                extensions: &[]
            },
            "{op:?}"
        );
        assert_eq!(req.opcode(), Some(op));
        assert_eq!(req.unique(), h.unique);
        assert_eq!(req.nodeid(), 42);
        assert_eq!(req.op.needs_reply(), op.needs_reply());

        // Unaligned buffers decode the same.
        let mut shifted = vec![0u8; buf.len() + 1];
        shifted[1..].copy_from_slice(&buf);
        assert_eq!(
            parse(&shifted[1..]).as_ref().map(|r| &r.op),
            Ok(&expected),
            "{op:?} unaligned"
        );
    }
}

#[test]
fn header_errors() {
    let (buf, _) = request(Opcode::Getattr);
    for n in 0..IN_HEADER_LEN {
        let e = parse(&buf[..n]).unwrap_err();
        assert_eq!(e, DecodeError::TruncatedHeader { len: n });
        assert_eq!((e.errno(), e.unique()), (errno::EIO, None));
    }
    // Header says more or less than was read.
    let unique = header(Opcode::Getattr as u32).unique;
    for n in [IN_HEADER_LEN, buf.len() - 1] {
        let e = parse(&buf[..n]).unwrap_err();
        assert!(
            matches!(e, DecodeError::LengthMismatch { header_len, buf_len, .. } if header_len as usize == buf.len() && buf_len == n)
        );
        assert_eq!((e.errno(), e.unique()), (errno::EIO, Some(unique)));
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert!(matches!(
        parse(&longer),
        Err(DecodeError::LengthMismatch { .. })
    ));
    assert_eq!(
        parse_header(&buf).map(|h| h.opcode),
        Ok(Opcode::Getattr as u32)
    );
}

#[test]
fn argument_size_errors() {
    let unique = |op: Opcode| header(op as u32).unique;
    // Fixed arguments must be exact.
    for (op, size) in [
        (Opcode::Getattr, 16),
        (Opcode::IomapBegin, 32),
        (Opcode::IomapEnd, 72),
        (Opcode::Read, 40),
    ] {
        for got in [0, size - 1, size + 1, size + 8] {
            let buf = encode_request(&header(op as u32), &[&vec![0u8; got]]);
            let e = parse(&buf).unwrap_err();
            assert_eq!(
                e,
                DecodeError::ArgSize {
                    unique: unique(op),
                    opcode: op as u32,
                    expected: size,
                    got
                },
                "{op:?}"
            );
            assert_eq!(e.errno(), errno::EINVAL);
        }
    }
    // No-argument requests must have none.
    for op in [
        Opcode::Readlink,
        Opcode::Statfs,
        Opcode::Destroy,
        Opcode::UnfreezeFs,
    ] {
        let buf = encode_request(&header(op as u32), &[&[0u8; 8]]);
        assert!(
            matches!(
                parse(&buf),
                Err(DecodeError::ArgSize {
                    expected: 0,
                    got: 8,
                    ..
                })
            ),
            "{op:?}"
        );
    }
    // Variable requests report the fixed part's minimum.
    let buf = encode_request(&header(Opcode::Write as u32), &[&[0u8; 39]]);
    assert!(matches!(
        parse(&buf),
        Err(DecodeError::ArgTooShort {
            min: 40,
            got: 39,
            ..
        })
    ));
}

#[test]
fn init_accepts_legacy_and_modern_forms() {
    let legacy = InitInLegacy {
        major: 7,
        minor: 31,
        max_readahead: 65536,
        flags: 0x1234,
    };
    let buf = encode_request(&header(Opcode::Init as u32), &[legacy.as_bytes()]);
    let expect = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 65536,
        flags: 0x1234,
        ..Default::default()
    };
    assert_eq!(parse(&buf).unwrap().op, Op::Init(expect));

    let modern = InitIn {
        major: 7,
        minor: 45,
        flags: consts::FUSE_INIT_EXT as u32,
        flags2: (FUSE_IOMAP >> 32) as u32,
        ..Default::default()
    };
    let buf = encode_request(&header(Opcode::Init as u32), &[modern.as_bytes()]);
    match parse(&buf).unwrap().op {
        Op::Init(i) => assert_ne!(i.flags64() & FUSE_IOMAP, 0),
        other => panic!("{other:?}"),
    }
    // A future, longer init_in is read by its known prefix.
    let buf = encode_request(
        &header(Opcode::Init as u32),
        &[modern.as_bytes(), &[0xff; 16]],
    );
    assert_eq!(parse(&buf).unwrap().op, Op::Init(modern));
    // Shorter than the legacy form is an error.
    let buf = encode_request(&header(Opcode::Init as u32), &[&legacy.as_bytes()[..15]]);
    assert!(matches!(
        parse(&buf),
        Err(DecodeError::ArgTooShort {
            min: 16,
            got: 15,
            ..
        })
    ));
}

fn name_error(op: Opcode, args: &[&[u8]]) -> Option<NameError> {
    match parse(&encode_request(&header(op as u32), args)) {
        Err(DecodeError::BadName {
            reason,
            unique,
            opcode,
        }) => {
            assert_eq!((unique, opcode), (header(op as u32).unique, op as u32));
            Some(reason)
        }
        Err(e) => panic!("{op:?}: unexpected {e}"),
        Ok(r) => {
            let _ = r;
            None
        }
    }
}

#[test]
fn name_rules() {
    use NameError::*;
    assert_eq!(name_error(Opcode::Lookup, &[b"abc"]), Some(Unterminated));
    assert_eq!(name_error(Opcode::Lookup, &[b"\0"]), Some(Empty));
    assert_eq!(name_error(Opcode::Lookup, &[b"a/b\0"]), Some(Slash));
    assert_eq!(
        name_error(Opcode::Lookup, &[b"ab\0c\0"]),
        Some(TrailingBytes)
    ); // embedded NUL
    assert_eq!(
        name_error(Opcode::Lookup, &[b"ab\0\0"]),
        Some(TrailingBytes)
    );
    assert_eq!(name_error(Opcode::Lookup, &[b"..\0"]), None);
    assert_eq!(name_error(Opcode::Unlink, &[b"/\0"]), Some(Slash));
    assert_eq!(name_error(Opcode::Rmdir, &[b""]), Some(Unterminated));
    let mk = MkdirIn::default();
    assert_eq!(
        name_error(Opcode::Mkdir, &[mk.as_bytes(), b"x/\0"]),
        Some(Slash)
    );
    assert_eq!(
        name_error(Opcode::Mkdir, &[mk.as_bytes()]),
        Some(Unterminated)
    );
    let rn = RenameIn { newdir: 1 };
    assert_eq!(
        name_error(Opcode::Rename, &[rn.as_bytes(), b"old\0"]),
        Some(Unterminated)
    );
    assert_eq!(
        name_error(Opcode::Rename, &[rn.as_bytes(), b"\0new\0"]),
        Some(Empty)
    );
    assert_eq!(
        name_error(Opcode::Rename, &[rn.as_bytes(), b"old\0n/w\0"]),
        Some(Slash)
    );
    assert_eq!(
        name_error(Opcode::Rename, &[rn.as_bytes(), b"old\0new\0x"]),
        Some(TrailingBytes)
    );
    // Symlink targets may contain '/', but not be empty.
    assert_eq!(name_error(Opcode::Symlink, &[b"l\0/abs/path\0"]), None);
    assert_eq!(name_error(Opcode::Symlink, &[b"l\0\0"]), Some(Empty));
    assert_eq!(name_error(Opcode::Symlink, &[b"l/\0t\0"]), Some(Slash));
    // xattr names may contain '/', not be empty.
    let gx = GetxattrIn::default();
    assert_eq!(
        name_error(Opcode::Getxattr, &[gx.as_bytes(), b"user.a/b\0"]),
        None
    );
    assert_eq!(name_error(Opcode::Removexattr, &[b"\0"]), Some(Empty));
    // TMPFILE carries the VFS placeholder "/".
    let cr = CreateIn::default();
    assert_eq!(name_error(Opcode::Tmpfile, &[cr.as_bytes(), b"/\0"]), None);
    assert_eq!(
        name_error(Opcode::Create, &[cr.as_bytes(), b"/\0"]),
        Some(Slash)
    );
}

#[test]
fn data_length_rules() {
    let data_err =
        |op: Opcode, args: &[&[u8]]| match parse(&encode_request(&header(op as u32), args)) {
            Err(DecodeError::DataLength { declared, got, .. }) => Some((declared, got)),
            Err(e) => panic!("{op:?}: {e}"),
            Ok(_) => None,
        };
    let w = WriteIn {
        size: 4,
        ..Default::default()
    };
    assert_eq!(
        data_err(Opcode::Write, &[w.as_bytes(), b"abc"]),
        Some((4, 3))
    );
    assert_eq!(
        data_err(Opcode::Write, &[w.as_bytes(), b"abcde"]),
        Some((4, 5))
    );
    assert_eq!(data_err(Opcode::Write, &[w.as_bytes(), b"abcd"]), None);
    let w0 = WriteIn {
        size: 0,
        ..Default::default()
    };
    assert_eq!(data_err(Opcode::Write, &[w0.as_bytes()]), None);
    let sx = SetxattrIn { size: 2, flags: 0 };
    assert_eq!(
        data_err(Opcode::Setxattr, &[sx.as_bytes(), b"user.a\0", b"x"]),
        Some((2, 1))
    );
    assert_eq!(
        data_err(Opcode::Setxattr, &[sx.as_bytes(), b"user.a\0", b"xy"]),
        None
    );
    let io = IoctlIn {
        in_size: 8,
        ..Default::default()
    };
    assert_eq!(data_err(Opcode::Ioctl, &[io.as_bytes()]), Some((8, 0)));
    let nr = NotifyRetrieveIn {
        size: u32::MAX,
        ..Default::default()
    };
    assert_eq!(
        data_err(Opcode::NotifyReply, &[nr.as_bytes(), b"z"]),
        Some((u64::from(u32::MAX), 1))
    );
}

#[test]
fn batch_forget_counts_are_checked_before_allocating() {
    let one = ForgetOne {
        nodeid: 1,
        nlookup: 1,
    };
    for count in [u32::MAX, 1 << 28, 3, 1] {
        let arg = BatchForgetIn { count, dummy: 0 };
        let buf = encode_request(
            &header(Opcode::BatchForget as u32),
            &[arg.as_bytes(), one.as_bytes(), one.as_bytes()],
        );
        match parse(&buf) {
            Err(DecodeError::DataLength {
                declared, got: 32, ..
            }) => assert_eq!(declared, u64::from(count) * 16),
            other => panic!("count {count}: {other:?}"),
        }
    }
    let arg = BatchForgetIn { count: 0, dummy: 0 };
    let buf = encode_request(&header(Opcode::BatchForget as u32), &[arg.as_bytes()]);
    assert_eq!(parse(&buf).unwrap().op, Op::BatchForget { forgets: vec![] });
    // Same for REMOVEMAPPING.
    let buf = encode_request(
        &header(Opcode::RemoveMapping as u32),
        &[RemovemappingIn { count: u32::MAX }.as_bytes()],
    );
    assert!(matches!(parse(&buf), Err(DecodeError::DataLength { .. })));
}

#[test]
fn extensions_are_split_off() {
    let a = CreateIn::default();
    let ext = ExtHeader {
        size: 8,
        type_: consts::FUSE_EXT_GROUPS,
    };
    let mut h = header(Opcode::Create as u32);
    h.total_extlen = 1;
    let buf = encode_request(&h, &[a.as_bytes(), b"f\0", ext.as_bytes()]);
    let req = parse(&buf).unwrap();
    assert_eq!(req.op, Op::Create { arg: a, name: b"f" });
    assert_eq!(req.extensions, ext.as_bytes());

    h.total_extlen = 10; // 80 bytes, more than the body
    let buf = encode_request(&h, &[a.as_bytes(), b"f\0", ext.as_bytes()]);
    let e = parse(&buf).unwrap_err();
    assert!(matches!(
        e,
        DecodeError::ExtensionsTooLong {
            ext_len: 80,
            body_len: 26,
            ..
        }
    ));
    assert_eq!(e.errno(), errno::EIO);
}

/// With FUSE_SETXATTR_EXT the kernel sends the 16-byte fuse_setxattr_in; parsed in the
/// wrong layout, the name and value would shift.
#[test]
fn setxattr_layout_follows_the_negotiation() {
    let a = SetxattrIn { size: 3, flags: 0 };
    let ext = SetxattrInExt {
        setxattr_flags: consts::FUSE_SETXATTR_ACL_KILL_SGID,
        padding: 0,
    };
    let h = header(Opcode::Setxattr as u32);
    let name = b"system.posix_acl_access\0";
    let long = encode_request(&h, &[a.as_bytes(), ext.as_bytes(), name, b"acl"]);
    let layout = Layout { setxattr_ext: true };
    match parse_with(&long, layout).unwrap().op {
        Op::Setxattr {
            setxattr_flags,
            name,
            value,
            ..
        } => {
            assert_eq!(setxattr_flags, consts::FUSE_SETXATTR_ACL_KILL_SGID);
            assert_eq!(name, b"system.posix_acl_access");
            assert_eq!(value, b"acl");
        }
        other => panic!("{other:?}"),
    }
    // Without the negotiation the kernel sends the 8-byte form, and nothing is killed.
    let short = encode_request(&h, &[a.as_bytes(), name, b"acl"]);
    assert!(matches!(
        parse(&short).unwrap().op,
        Op::Setxattr {
            setxattr_flags: 0,
            ..
        }
    ));
}

#[test]
fn unknown_opcodes_are_not_errors() {
    for opcode in [
        0,
        7,
        19,
        54,
        4088,
        4097,
        opcode::FUSE_INIT_BSWAP_RESERVED,
        u32::MAX,
    ] {
        let buf = encode_request(&header(opcode), &[b"whatever \0 bytes"]);
        let req = parse(&buf).unwrap();
        assert_eq!(req.op, Op::Unknown(opcode));
        assert_eq!(req.opcode(), None);
    }
}

// ---- robustness ----------------------------------------------------------------------------

/// xorshift64*: a tiny seeded generator, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn every_prefix_of_every_request() {
    for &op in Opcode::ALL {
        let (buf, _) = request(op);
        for k in 0..=buf.len() {
            // As received: the header length disagrees unless k is the whole request.
            let r = parse(&buf[..k]);
            assert_eq!(r.is_ok(), k == buf.len(), "{op:?} prefix {k}");
            // With the header length fixed up, the argument checks must catch it.
            let mut p = buf[..k].to_vec();
            fix_len(&mut p);
            let r = parse(&p);
            let init_legacy_ok =
                op == Opcode::Init && k >= IN_HEADER_LEN + consts::INIT_IN_LEGACY_SIZE;
            if k < IN_HEADER_LEN {
                assert!(matches!(r, Err(DecodeError::TruncatedHeader { .. })));
            } else if k < buf.len() && !init_legacy_ok {
                let e = r.expect_err(&format!("{op:?} truncated to {k} must fail"));
                assert_eq!(e.errno(), errno::EINVAL, "{op:?} {k}: {e}");
                assert_eq!(e.unique(), Some(header(op as u32).unique));
            } else {
                assert!(r.is_ok(), "{op:?} {k}");
            }
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng(0x00C0_FFEE_1234_5678);
    let known: Vec<u32> = Opcode::ALL.iter().map(|&o| o as u32).collect();
    let mut ok = 0;
    for i in 0..30_000 {
        let len = rng.below(320);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most buffers get a plausible header so the argument decoders are exercised.
        if i % 4 != 0 && len >= IN_HEADER_LEN {
            fix_len(&mut buf);
            let op = known[rng.below(known.len())];
            buf[4..8].copy_from_slice(&op.to_ne_bytes());
            if rng.below(2) == 0 {
                buf[36..38].copy_from_slice(&0u16.to_ne_bytes()); // no extensions
            }
        }
        if let Ok(req) = parse(&buf) {
            assert_eq!(req.header.len as usize, buf.len());
            ok += 1;
        }
    }
    assert!(ok > 0, "some random requests should decode");
}

#[test]
fn mutated_requests_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF_0BAD_F00D);
    for &op in Opcode::ALL {
        let (buf, _) = request(op);
        for _ in 0..300 {
            let mut m = buf.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len());
                match rng.below(4) {
                    0 => m[at] ^= 1 << rng.below(8),
                    1 => m[at] = 0,
                    2 => m[at] = 0xff,
                    _ => m.truncate(at.max(1)),
                }
            }
            // Lengths, counts and sizes inside the arguments become huge or zero.
            if m.len() >= IN_HEADER_LEN + 8 && rng.below(3) == 0 {
                let at = IN_HEADER_LEN + rng.below(m.len() - IN_HEADER_LEN - 3);
                m[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
            }
            if rng.below(2) == 0 {
                fix_len(&mut m);
            }
            let _ = parse(&m);
        }
    }
}
