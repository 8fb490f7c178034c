//! kmodel against a scripted fake server: every kernel rule kmodel enforces must fire on a
//! reply that breaks it, and IOMAP_END / IOMAP_IOEND must be sent exactly when fuse sends
//! them (§7.4, §7.5) — no more, no less, with the flags the kernel sets.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse_wire::consts::*;
use fuse_wire::iomap::*;
use fuse_wire::request::Op;
use fuse_wire::structs::*;
use kmodel::{Error, InitOffer, Kernel, NodeId, Session};
use nix::sys::socket::{recv, send, MsgFlags};
use zerocopy::IntoBytes;

const BS: u64 = 4096;
const FILE: NodeId = 5;
const FILE_SIZE: u64 = 1 << 20;
const DISK: u64 = 16 << 20;

/// What the fake received, for the iomap opcodes.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Begin(IomapBeginIn),
    End(IomapEndIn),
    Ioend(IomapIoendIn),
}

type Answer = Option<Result<Vec<u8>, i32>>;
type Handler = Box<dyn FnMut(&Op<'_>) -> Answer + Send>;

/// Notifications for a fake to send ahead of its next reply.
type Notes = Arc<Mutex<Vec<Vec<u8>>>>;

/// Runs a fake server on one end of a socket pair: `handler` answers first, defaults after.
fn fake(handler: Handler, log: Arc<Mutex<Vec<Seen>>>) -> OwnedFd {
    fake_with_notes(handler, log, Notes::default())
}

/// Like `fake`, sending whatever `notes` holds just before each reply.
fn fake_with_notes(mut handler: Handler, log: Arc<Mutex<Vec<Seen>>>, notes: Notes) -> OwnedFd {
    let (ours, theirs) = kmodel::session::socket_pair().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 21];
        loop {
            let n = match recv(theirs.as_raw_fd(), &mut buf[..], MsgFlags::empty()) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let req = fuse_wire::parse(&buf[..n]).expect("kmodel sends well-formed requests");
            match &req.op {
                Op::IomapBegin(a) => log.lock().unwrap().push(Seen::Begin(*a)),
                Op::IomapEnd(a) => log.lock().unwrap().push(Seen::End(*a)),
                Op::IomapIoend(a) => log.lock().unwrap().push(Seen::Ioend(*a)),
                Op::Forget(_) => continue,
                _ => {}
            }
            let answer = handler(&req.op).unwrap_or_else(|| default_answer(&req.op));
            let unique = req.header.unique;
            let msg = match answer {
                Ok(payload) => fuse_wire::reply_ok(unique, &[&payload]),
                Err(errno) => fuse_wire::reply_err(unique, errno),
            };
            for note in std::mem::take(&mut *notes.lock().unwrap()) {
                let _ = send(theirs.as_raw_fd(), &note, MsgFlags::empty());
            }
            let _ = send(theirs.as_raw_fd(), &msg, MsgFlags::empty());
            if matches!(req.op, Op::Destroy) {
                return;
            }
        }
    });
    ours
}

fn file_attr(flags: u32) -> Attr {
    Attr {
        ino: FILE,
        size: FILE_SIZE,
        mode: 0o100644,
        nlink: 1,
        blksize: BS as u32,
        flags,
        ..Default::default()
    }
}

fn good_config() -> IomapConfigOut {
    IomapConfigOut {
        flags: FUSE_IOMAP_CONFIG_BLOCKSIZE
            | FUSE_IOMAP_CONFIG_MAXBYTES
            | FUSE_IOMAP_CONFIG_UUID
            | FUSE_IOMAP_CONFIG_TIME,
        s_uuid: [7; 16],
        s_uuid_len: 16,
        s_blocksize: BS as u32,
        s_time_gran: 1,
        s_maxbytes: 1 << 40,
        ..Default::default()
    }
}

/// Written data at device address = file offset (within the small disk).
fn mapped(pos: u64) -> IomapIo {
    let offset = pos / BS * BS;
    IomapIo {
        offset,
        length: BS,
        addr: offset,
        type_: FUSE_IOMAP_TYPE_MAPPED,
        flags: 0,
        dev: 1,
    }
}

fn reply(read: IomapIo) -> Answer {
    Some(Ok(IomapBeginOut {
        read,
        write: IomapIo::pure_overwrite(&read),
    }
    .as_bytes()
    .to_vec()))
}

fn default_answer(op: &Op<'_>) -> Result<Vec<u8>, i32> {
    match op {
        Op::Init(_) => {
            let mut out = InitOut {
                major: 7,
                minor: IOMAP_MINOR,
                max_write: 1 << 20,
                ..Default::default()
            };
            out.set_flags64(FUSE_INIT_EXT | FUSE_IOMAP);
            Ok(out.as_bytes().to_vec())
        }
        Op::IomapConfig(_) => Ok(good_config().as_bytes()[..96].to_vec()),
        Op::Create { .. } => {
            let entry = EntryOut {
                nodeid: FILE,
                attr: file_attr(FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
                ..Default::default()
            };
            let open = OpenOut {
                fh: 1,
                ..Default::default()
            };
            Ok([entry.as_bytes(), open.as_bytes()].concat())
        }
        Op::Getattr(_) => Ok(AttrOut {
            attr: file_attr(FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
            ..Default::default()
        }
        .as_bytes()
        .to_vec()),
        Op::IomapBegin(a) => Ok(IomapBeginOut {
            read: mapped(a.pos),
            write: IomapIo::pure_overwrite(&mapped(a.pos)),
        }
        .as_bytes()
        .to_vec()),
        Op::IomapIoend(a) => Ok(IomapIoendOut {
            newsize: a.pos + a.written,
        }
        .as_bytes()
        .to_vec()),
        Op::IomapEnd(_)
        | Op::Flush(_)
        | Op::Release(_)
        | Op::Fsync(_)
        | Op::Syncfs(_)
        | Op::Destroy => Ok(Vec::new()),
        _ => Err(38),
    }
}

struct Fake {
    kernel: kmodel::Result<Kernel>,
    log: Arc<Mutex<Vec<Seen>>>,
    _disk: tempfile::NamedTempFile,
}

fn mount_fake(handler: impl FnMut(&Op<'_>) -> Answer + Send + 'static) -> Fake {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sock = fake(Box::new(handler), log.clone());
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(DISK).unwrap();
    let session = Session::with_socket(sock, Duration::from_secs(10)).unwrap();
    let kernel = Kernel::over(session, disk.reopen().unwrap());
    Fake {
        kernel,
        log,
        _disk: disk,
    }
}

/// Mounts and creates the file (size 1 MiB, so reads reach BEGIN).
fn with_file(
    handler: impl FnMut(&Op<'_>) -> Answer + Send + 'static,
) -> (
    Kernel,
    NodeId,
    Arc<Mutex<Vec<Seen>>>,
    tempfile::NamedTempFile,
) {
    let Fake { kernel, log, _disk } = mount_fake(handler);
    let mut k = kernel.expect("mount the fake");
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).expect("create");
    (k, f, log, _disk)
}

fn begin_violation(opflags: u32, pos: u64, bad: IomapBeginOut, rule: &str) {
    let (mut k, f, _, _d) = with_file(move |op| match op {
        Op::IomapBegin(_) => Some(Ok(bad.as_bytes().to_vec())),
        _ => None,
    });
    let err = k.begin_raw(f, opflags, pos, BS).unwrap_err();
    assert!(
        err.is_violation_of(rule),
        "expected a violation of '{rule}', got: {err}"
    );
}

fn with_write(read: IomapIo, write: IomapIo) -> IomapBeginOut {
    IomapBeginOut { read, write }
}

#[test]
fn every_mapping_rule_fires() {
    let ok = mapped(0);
    let po = IomapIo::pure_overwrite(&ok);
    let hole = IomapIo {
        addr: FUSE_IOMAP_NULL_ADDR,
        dev: 0,
        type_: FUSE_IOMAP_TYPE_HOLE,
        ..ok
    };
    let cases: Vec<(&str, u32, u64, IomapBeginOut, &str)> = vec![
        (
            "unknown type",
            0,
            0,
            with_write(IomapIo { type_: 9, ..ok }, po),
            "unknown type 9",
        ),
        (
            "kernel-only flag",
            0,
            0,
            with_write(
                IomapIo {
                    flags: FUSE_IOMAP_F_SIZE_CHANGED,
                    ..ok
                },
                po,
            ),
            "outside the server mask",
        ),
        (
            "zero length",
            0,
            0,
            with_write(IomapIo { length: 0, ..ok }, po),
            "zero length",
        ),
        (
            "misaligned offset",
            0,
            600,
            with_write(IomapIo { offset: 512, ..ok }, IomapIo { offset: 512, ..po }),
            "not aligned",
        ),
        (
            "misaligned length",
            0,
            0,
            with_write(IomapIo { length: 100, ..ok }, IomapIo { length: 100, ..po }),
            "not aligned",
        ),
        (
            "past maxbytes",
            0,
            0,
            with_write(
                IomapIo {
                    offset: 1 << 41,
                    ..ok
                },
                po,
            ),
            "maxbytes",
        ),
        (
            "mapped without device",
            0,
            0,
            with_write(IomapIo { dev: 0, ..ok }, po),
            "needs a device",
        ),
        (
            "mapped without address",
            0,
            0,
            with_write(
                IomapIo {
                    addr: FUSE_IOMAP_NULL_ADDR,
                    ..ok
                },
                po,
            ),
            "needs a disk address",
        ),
        (
            "unregistered device",
            0,
            0,
            with_write(IomapIo { dev: 7, ..ok }, po),
            "not a registered iomap device",
        ),
        (
            "hole with a device",
            0,
            0,
            with_write(IomapIo { dev: 1, ..hole }, po),
            "must have dev 0",
        ),
        (
            "hole with an address",
            0,
            0,
            with_write(IomapIo { addr: 0, ..hole }, po),
            "NULL address",
        ),
        (
            "pure overwrite as read",
            0,
            0,
            with_write(po, po),
            "PURE_OVERWRITE is only valid in the write slot",
        ),
        (
            "read slot misses pos",
            0,
            2 * BS,
            with_write(ok, po),
            "does not cover pos",
        ),
        (
            "write slot misses pos",
            0,
            0,
            with_write(ok, IomapIo { offset: BS, ..po }),
            "does not cover pos",
        ),
        (
            "address overflow",
            0,
            0,
            with_write(
                IomapIo {
                    addr: u64::MAX - 10,
                    ..ok
                },
                po,
            ),
            "overflows",
        ),
        (
            "nocache in begin",
            0,
            0,
            with_write(
                IomapIo {
                    type_: FUSE_IOMAP_TYPE_NOCACHE,
                    ..hole
                },
                po,
            ),
            "NOCACHE",
        ),
        (
            "retry without cache",
            0,
            0,
            with_write(
                IomapIo {
                    type_: FUSE_IOMAP_TYPE_RETRY_CACHE,
                    ..hole
                },
                po,
            ),
            "RETRY_CACHE",
        ),
        (
            "atomic without atomic bio",
            FUSE_IOMAP_OP_WRITE | FUSE_IOMAP_OP_DIRECT | FUSE_IOMAP_OP_ATOMIC,
            0,
            with_write(ok, po),
            "atomic write needs",
        ),
    ];
    for (name, opflags, pos, bad, rule) in cases {
        println!("case: {name}");
        begin_violation(opflags, pos, bad, rule);
    }
}

#[test]
fn reply_sizes_are_exact() {
    let (mut k, f, _, _d) = with_file(|op| match op {
        Op::IomapBegin(_) => Some(Ok(vec![0u8; 63])),
        _ => None,
    });
    let err = k.begin_raw(f, 0, 0, BS).unwrap_err();
    assert!(err.is_violation_of("exactly 64 bytes"), "{err}");

    // An IOEND reply must be 8 bytes: a direct write into unwritten space completes with one.
    let (mut k, f, _, _d) = with_file(|op| match op {
        Op::IomapBegin(a) => reply(IomapIo {
            type_: FUSE_IOMAP_TYPE_UNWRITTEN,
            ..mapped(a.pos)
        }),
        Op::IomapIoend(_) => Some(Ok(vec![0u8; 4])),
        _ => None,
    });
    let err = k.write_direct(f, 0, &[1u8; BS as usize], 0).unwrap_err();
    assert!(err.is_violation_of("exactly 8 bytes"), "{err}");
}

#[test]
fn data_paths_check_what_iomap_would_refuse() {
    // Mapped space past the end of the device: the bio fails.
    let (mut k, f, _, _d) = with_file(|op| match op {
        Op::IomapBegin(a) => reply(IomapIo {
            addr: DISK,
            ..mapped(a.pos)
        }),
        _ => None,
    });
    let err = k.read(f, 0, 10).unwrap_err();
    assert!(err.is_violation_of("beyond the end of the device"), "{err}");

    // A direct write to a hole.
    let (mut k, f, _, _d) = with_file(|op| match op {
        Op::IomapBegin(a) => reply(IomapIo {
            addr: FUSE_IOMAP_NULL_ADDR,
            dev: 0,
            type_: FUSE_IOMAP_TYPE_HOLE,
            ..mapped(a.pos)
        }),
        _ => None,
    });
    let err = k.write_direct(f, 0, &[1u8; BS as usize], 0).unwrap_err();
    assert!(err.is_violation_of("direct write to a HOLE"), "{err}");
    let err = k.write(f, 0, b"x").unwrap_err();
    assert!(
        err.is_violation_of("must be allocated by the server"),
        "{err}"
    );

    // Writeback that lands in a hole would silently drop dirty data.
    let (mut k, f, _, _d) = with_file(|op| match op {
        Op::IomapBegin(a) if a.opflags & FUSE_IOMAP_OP_WRITEBACK != 0 => reply(IomapIo {
            addr: FUSE_IOMAP_NULL_ADDR,
            dev: 0,
            type_: FUSE_IOMAP_TYPE_HOLE,
            ..mapped(a.pos)
        }),
        _ => None,
    });
    k.write(f, 0, b"dirty").unwrap();
    let err = k.fsync(f).unwrap_err();
    assert!(err.is_violation_of("WRITEBACK mapping"), "{err}");
}

#[test]
fn config_init_and_attr_rules() {
    let bad_configs: Vec<(IomapConfigOut, &str)> = vec![
        (
            IomapConfigOut {
                flags: 1 << 7,
                ..good_config()
            },
            "unknown config flags",
        ),
        (
            IomapConfigOut {
                s_uuid_len: 17,
                ..good_config()
            },
            "s_uuid_len",
        ),
        (
            IomapConfigOut {
                s_pad: [0, 1, 0],
                ..good_config()
            },
            "s_pad",
        ),
        (
            IomapConfigOut {
                s_time_gran: 0,
                ..good_config()
            },
            "s_time_gran",
        ),
        (
            IomapConfigOut {
                s_time_gran: 2_000_000_000,
                ..good_config()
            },
            "s_time_gran",
        ),
        (
            IomapConfigOut {
                s_blocksize: 3000,
                ..good_config()
            },
            "not a valid block size",
        ),
        (
            IomapConfigOut {
                s_maxbytes: -1,
                ..good_config()
            },
            "s_maxbytes",
        ),
    ];
    for (config, rule) in bad_configs {
        let fake = mount_fake(move |op| match op {
            Op::IomapConfig(_) => Some(Ok(config.as_bytes().to_vec())),
            _ => None,
        });
        let err = fake.kernel.err().expect("the mount must fail");
        assert!(err.is_violation_of(rule), "expected '{rule}': {err}");
    }
    // CONFIG answered ENOSYS: accepted, defaults stay.
    let fake = mount_fake(|op| match op {
        Op::IomapConfig(_) => Some(Err(38)),
        _ => None,
    });
    let k = fake.kernel.expect("ENOSYS to CONFIG is accepted");
    assert!(k.sb.config.is_none());

    // A server that declines iomap, or accepts it at a minor below 99.
    let fake = mount_fake(|op| match op {
        Op::Init(_) => {
            let out = InitOut {
                major: 7,
                minor: 45,
                max_write: 1 << 20,
                ..Default::default()
            };
            Some(Ok(out.as_bytes().to_vec()))
        }
        _ => None,
    });
    assert!(matches!(fake.kernel, Err(Error::Unsupported(_))));
    let fake = mount_fake(|op| match op {
        Op::Init(_) => {
            let mut out = InitOut {
                major: 7,
                minor: 45,
                max_write: 1 << 20,
                ..Default::default()
            };
            out.set_flags64(FUSE_INIT_EXT | FUSE_IOMAP);
            Some(Ok(out.as_bytes().to_vec()))
        }
        _ => None,
    });
    assert!(fake
        .kernel
        .err()
        .expect("minor 45 with iomap")
        .is_violation_of("minor 45"));

    // A regular file instantiated without FUSE_ATTR_IOMAP|EXCLUSIVE.
    let fake = mount_fake(|op| match op {
        Op::Create { .. } => {
            let entry = EntryOut {
                nodeid: FILE,
                attr: file_attr(FUSE_ATTR_IOMAP),
                ..Default::default()
            };
            Some(Ok(
                [entry.as_bytes(), OpenOut::default().as_bytes()].concat()
            ))
        }
        _ => None,
    });
    let err = fake
        .kernel
        .unwrap()
        .create(FUSE_ROOT_ID, "f", 0o644)
        .unwrap_err();
    assert!(err.is_violation_of("§6"), "{err}");

    // An iomap file opened with FOPEN_STREAM.
    let fake = mount_fake(|op| match op {
        Op::Create { .. } => {
            let entry = EntryOut {
                nodeid: FILE,
                attr: file_attr(FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE),
                ..Default::default()
            };
            let open = OpenOut {
                fh: 1,
                open_flags: FOPEN_STREAM,
                ..Default::default()
            };
            Some(Ok([entry.as_bytes(), open.as_bytes()].concat()))
        }
        _ => None,
    });
    let err = fake
        .kernel
        .unwrap()
        .create(FUSE_ROOT_ID, "f", 0o644)
        .unwrap_err();
    assert!(err.is_violation_of("FOPEN_STREAM"), "{err}");
}

#[test]
fn dev_inval_notifications_are_checked() {
    // The fake sends a DEV_INVAL with a nonzero reserved field before answering GETATTR.
    let (ours, theirs) = kmodel::session::socket_pair().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let inner = fake(Box::new(|_| None), log);
    std::thread::spawn(move || {
        // A relay that injects the notification in front of the GETATTR reply.
        let mut buf = vec![0u8; 1 << 21];
        loop {
            let Ok(n) = recv(theirs.as_raw_fd(), &mut buf[..], MsgFlags::empty()) else {
                return;
            };
            if n == 0 {
                return;
            }
            let is_getattr = fuse_wire::parse(&buf[..n])
                .map(|r| matches!(r.op, Op::Getattr(_)))
                .unwrap_or(false);
            let forget = fuse_wire::parse(&buf[..n])
                .map(|r| matches!(r.op, Op::Forget(_)))
                .unwrap_or(false);
            send(inner.as_raw_fd(), &buf[..n], MsgFlags::empty()).unwrap();
            if forget {
                continue;
            }
            if is_getattr {
                let inval = IomapDevInvalOut {
                    dev: 1,
                    reserved: 1,
                    range: Range {
                        offset: 0,
                        length: BS,
                    },
                };
                let note = fuse_wire::notify(FUSE_NOTIFY_IOMAP_DEV_INVAL, inval.as_bytes());
                send(theirs.as_raw_fd(), &note, MsgFlags::empty()).unwrap();
            }
            let Ok(m) = recv(inner.as_raw_fd(), &mut buf[..], MsgFlags::empty()) else {
                return;
            };
            send(theirs.as_raw_fd(), &buf[..m], MsgFlags::empty()).unwrap();
        }
    });
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(DISK).unwrap();
    let mut k = Kernel::over(
        Session::with_socket(ours, Duration::from_secs(10)).unwrap(),
        disk.reopen().unwrap(),
    )
    .unwrap();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    let err = k.getattr(f).unwrap_err();
    assert!(err.is_violation_of("reserved must be 0"), "{err}");
}

/// A fake server over a fresh disk, mounted by a kernel offering `offer`.
fn mount_offering(
    handler: impl FnMut(&Op<'_>) -> Answer + Send + 'static,
    offer: InitOffer,
) -> kmodel::Result<Kernel> {
    let sock = fake(Box::new(handler), Arc::new(Mutex::new(Vec::new())));
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(DISK).unwrap();
    let session = Session::with_socket(sock, Duration::from_secs(10)).unwrap();
    Kernel::over_offering(session, disk.reopen().unwrap(), offer)
}

#[test]
fn iomap_from_a_kernel_below_the_iomap_minor_is_a_violation() {
    // The default fake accepts FUSE_IOMAP whatever the kernel offered.
    let err = mount_offering(|_| None, InitOffer::MAINLINE_7_3_URING)
        .err()
        .expect("a server taking bit 43 from a minor-46 kernel");
    assert!(err.is_violation_of("bit 43"), "{err}");
    assert!(err.is_violation_of("FUSE_HAS_IO_URING_BUFPOOL"), "{err}");
    // Unoffered altogether.
    let offer = InitOffer {
        minor: IOMAP_MINOR,
        flags: InitOffer::IOMAP.flags & !FUSE_IOMAP,
    };
    let err = mount_offering(|_| None, offer)
        .err()
        .expect("a server replying FUSE_IOMAP that was not offered");
    assert!(err.is_violation_of("did not offer"), "{err}");
}

#[test]
fn attr_iomap_on_a_classic_connection_is_a_violation() {
    // A server that answers INIT classic but still marks files FUSE_ATTR_IOMAP.
    let mut k = mount_offering(
        |op| match op {
            Op::Init(_) => {
                let out = InitOut {
                    major: 7,
                    minor: 45,
                    max_write: 1 << 20,
                    ..Default::default()
                };
                Some(Ok(out.as_bytes().to_vec()))
            }
            _ => None,
        },
        InitOffer::MAINLINE_7_3_URING,
    )
    .expect("a classic mount");
    assert!(!k.conn.iomap);
    let err = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap_err();
    assert!(
        err.is_violation_of("FUSE_ATTR_IOMAP on a connection that did not negotiate iomap"),
        "{err}"
    );
}

/// DEV_INVAL of the first device block (where the fake maps file block 0).
fn inval_block_0() -> Vec<u8> {
    let inval = IomapDevInvalOut {
        dev: 1,
        reserved: 0,
        range: Range {
            offset: 0,
            length: BS,
        },
    };
    fuse_wire::notify(FUSE_NOTIFY_IOMAP_DEV_INVAL, inval.as_bytes())
}

/// A fake that maps file offset N to device byte N and answers truncates.
fn mount_with_notes() -> (Kernel, NodeId, Notes, tempfile::NamedTempFile) {
    let notes = Notes::default();
    let sock = fake_with_notes(
        Box::new(|op| match op {
            Op::Setattr(a) => Some(Ok(AttrOut {
                attr: Attr {
                    size: a.size,
                    ..file_attr(FUSE_ATTR_IOMAP | FUSE_ATTR_EXCLUSIVE)
                },
                ..Default::default()
            }
            .as_bytes()
            .to_vec())),
            _ => None,
        }),
        Arc::new(Mutex::new(Vec::new())),
        notes.clone(),
    );
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(DISK).unwrap();
    let session = Session::with_socket(sock, Duration::from_secs(10)).unwrap();
    let mut k = Kernel::over(session, disk.reopen().unwrap()).unwrap();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    (k, f, notes, disk)
}

#[test]
fn dev_inval_after_the_block_became_file_data_is_a_hazard() {
    let (mut k, f, notes, _d) = mount_with_notes();
    k.write_direct(f, 0, &vec![7u8; BS as usize], 0).unwrap();
    // The invalidation of a free from before the block was handed out arrives late.
    notes.lock().unwrap().push(inval_block_0());
    let err = k.getattr(f).unwrap_err();
    assert!(
        err.is_violation_of("arrived as message") && err.is_violation_of("stale page"),
        "{err}"
    );
}

#[test]
fn dev_inval_in_time_or_after_the_file_freed_the_block_is_fine() {
    let (mut k, f, notes, _d) = mount_with_notes();
    // Freed and invalidated before the BEGIN reply hands the block out: in time.
    notes.lock().unwrap().push(inval_block_0());
    k.write_direct(f, 0, &vec![7u8; BS as usize], 0).unwrap();
    k.getattr(f).unwrap();
    // The file's own truncate frees it: an invalidation is expected from then on.
    notes.lock().unwrap().push(inval_block_0());
    k.truncate(f, 0).unwrap();
    k.getattr(f).unwrap();
    assert_eq!(k.invalidated(), vec![(0, BS), (0, BS)]);
}

fn ends(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<IomapEndIn> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|s| if let Seen::End(e) = s { Some(*e) } else { None })
        .collect()
}

fn ioends(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<IomapIoendIn> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|s| {
            if let Seen::Ioend(e) = s {
                Some(*e)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn iomap_end_is_sent_exactly_when_fuse_sends_it() {
    let (mut k, f, log, _d) = with_file(|op| match op {
        // WANT_IOMAP_END on reads only; everything is written space.
        Op::IomapBegin(a) if a.opflags == 0 => reply(IomapIo {
            flags: FUSE_IOMAP_F_WANT_IOMAP_END,
            ..mapped(a.pos)
        }),
        _ => None,
    });
    // Overwrite inside i_size: no END.
    k.write(f, 100, b"inside").unwrap();
    assert!(ends(&log).is_empty(), "{:?}", ends(&log));
    // A write across EOF: its first mapping ends at the old EOF (no END), the second
    // extends i_size: END with SIZE_CHANGED, written == count.
    k.write(f, FILE_SIZE - 10, &[1u8; 30]).unwrap();
    let e = ends(&log);
    assert_eq!(e.len(), 1, "only the mapping that extends i_size: {e:?}");
    assert_eq!(e[0].opflags, FUSE_IOMAP_OP_WRITE);
    assert_eq!(
        e[0].map.flags & FUSE_IOMAP_F_SIZE_CHANGED,
        FUSE_IOMAP_F_SIZE_CHANGED,
        "{e:?}"
    );
    assert_eq!((e[0].pos, e[0].count, e[0].written), (FILE_SIZE, 20, 20));
    assert_eq!(
        (e[0].map.offset, e[0].map.dev),
        (FILE_SIZE, 1),
        "the map is the mapping, with the backing id"
    );
    // WANT_IOMAP_END on a read mapping: END for a read (opflags 0).
    log.lock().unwrap().clear();
    k.read(f, 8192, 10).unwrap();
    let e = ends(&log);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].opflags, e[0].written), (0, BS as i64));
}

#[test]
fn end_enosys_stops_ends() {
    let (mut k, f, log, _d) = with_file(|op| match op {
        Op::IomapEnd(_) => Some(Err(38)),
        _ => None,
    });
    k.write(f, FILE_SIZE, &[1u8; 10]).unwrap();
    k.write(f, FILE_SIZE + 10, &[1u8; 10]).unwrap();
    assert_eq!(
        ends(&log).len(),
        1,
        "ENOSYS to END means no more ENDs on this connection"
    );
}

#[test]
fn ioend_is_sent_exactly_when_fuse_sends_it() {
    // Blocks below 64 KiB are written space, the rest unwritten.
    let (mut k, f, log, _d) = with_file(|op| match op {
        Op::IomapBegin(a) if a.pos >= 65536 => reply(IomapIo {
            type_: FUSE_IOMAP_TYPE_UNWRITTEN,
            ..mapped(a.pos)
        }),
        _ => None,
    });
    // Direct overwrite of written space inside the on-disk size: no IOEND.
    k.write_direct(f, 0, &[1u8; BS as usize], 0).unwrap();
    assert!(ioends(&log).is_empty(), "{:?}", ioends(&log));
    // Direct write into unwritten space: DIRECT|UNWRITTEN, dev 0, NULL address.
    k.write_direct(f, 65536, &[2u8; 2 * BS as usize], 0)
        .unwrap();
    let io = ioends(&log);
    assert_eq!(io.len(), 1, "{io:?}");
    assert_eq!(
        io[0].flags,
        FUSE_IOMAP_IOEND_DIRECT | FUSE_IOMAP_IOEND_UNWRITTEN
    );
    assert_eq!(
        (io[0].pos, io[0].written, io[0].dev, io[0].new_addr),
        (65536, 2 * BS, 0, FUSE_IOMAP_NULL_ADDR)
    );
    // A direct append past the on-disk size: APPEND too; newsize is taken from the reply.
    log.lock().unwrap().clear();
    k.write_direct(f, FILE_SIZE, &[3u8; BS as usize], 0)
        .unwrap();
    let io = ioends(&log);
    assert_eq!(
        io[0].flags,
        FUSE_IOMAP_IOEND_DIRECT | FUSE_IOMAP_IOEND_UNWRITTEN | FUSE_IOMAP_IOEND_APPEND
    );
    assert_eq!(k.inode(f).unwrap().i_disk_size, FILE_SIZE + BS);
    // Buffered writes complete at writeback: WRITEBACK (+UNWRITTEN), the device id and the
    // start sector; an overwrite of written space inside the disk size sends nothing.
    log.lock().unwrap().clear();
    k.write(f, 10, b"written space").unwrap();
    k.write(f, 65536 + 4 * BS + 5, b"unwritten space").unwrap();
    k.fsync(f).unwrap();
    let wb: Vec<IomapBeginIn> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Begin(b) if b.opflags == FUSE_IOMAP_OP_WRITEBACK => Some(*b),
            _ => None,
        })
        .collect();
    assert_eq!(
        wb.len(),
        2,
        "one WRITEBACK mapping per dirty block here: {wb:?}"
    );
    assert!(
        wb.iter().all(|b| b.attr_ino == FILE && b.count == BS),
        "{wb:?}"
    );
    let io = ioends(&log);
    assert_eq!(io.len(), 1, "{io:?}");
    assert_eq!(
        io[0].flags,
        FUSE_IOMAP_IOEND_WRITEBACK | FUSE_IOMAP_IOEND_UNWRITTEN
    );
    let addr = 65536 + 4 * BS;
    assert_eq!(
        (io[0].pos, io[0].written, io[0].dev, io[0].new_addr),
        (addr, BS, 1, addr / 512)
    );
    // The EOF block of an extended file: the ioend stops at EOF and carries APPEND.
    log.lock().unwrap().clear();
    let size = k.inode(f).unwrap().i_size;
    k.append(f, b"tail").unwrap();
    k.fsync(f).unwrap();
    let io = ioends(&log);
    assert_eq!(io.len(), 1, "{io:?}");
    assert_eq!(
        io[0].flags & FUSE_IOMAP_IOEND_APPEND,
        FUSE_IOMAP_IOEND_APPEND
    );
    assert_eq!(
        io[0].pos + io[0].written,
        size + 4,
        "written is clamped at EOF"
    );
}
