//! Descriptor chains as a guest could build them, well-formed and not, and a real server
//! answering INIT and DESTROY through them.

use fuse_wire::structs::{InHeader, InitIn, InitOut, OutHeader, IN_HEADER_LEN, OUT_HEADER_LEN};
use fuse_wire::Opcode;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::{FromBytes, IntoBytes};

use super::*;

const MEM_SIZE: usize = 0x40_0000;
/// Buffers live above the queue's own structures.
const BUF: u64 = 0x10_0000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

fn readable(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, 0, 0))
}

fn writable(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(
        addr,
        len,
        VRING_DESC_F_WRITE as u16,
        0,
    ))
}

fn request(opcode: Opcode, unique: u64, arg: &[u8]) -> Vec<u8> {
    let header = InHeader {
        opcode: opcode as u32,
        unique,
        nodeid: 1,
        ..Default::default()
    };
    fuse_wire::encode_request(&header, &[arg])
}

/// A handler that answers with the request's unique and `payload`, recording what it saw.
fn echo(
    payload: Vec<u8>,
    seen: &mut Option<Vec<u8>>,
) -> impl FnOnce(&[u8], Arc<dyn Transport>) + '_ {
    move |bytes, reply| {
        let header = fuse_wire::parse_header(bytes).unwrap();
        *seen = Some(bytes.to_vec());
        let msg = fuse_wire::reply::reply_ok(header.unique, &[&payload]);
        reply.send(&[IoSlice::new(&msg)]).unwrap();
    }
}

#[test]
fn a_request_split_over_descriptors_is_answered_across_the_writable_ones() {
    let mem = memory();
    let vq = MockSplitQueue::new(&mem, 16);
    let req = request(Opcode::Getattr, 42, &[7u8; 16]);
    // The header itself straddles two descriptors.
    mem.write_slice(&req[..20], GuestAddress(BUF)).unwrap();
    mem.write_slice(&req[20..], GuestAddress(BUF + 0x1000))
        .unwrap();
    let chain = vq
        .build_desc_chain(&[
            readable(BUF, 20),
            readable(BUF + 0x1000, (req.len() - 20) as u32),
            writable(BUF + 0x2000, 10),
            writable(BUF + 0x3000, 100),
        ])
        .unwrap();
    let mut seen = None;
    let used = serve_chain(chain, 4096, echo(vec![9u8; 50], &mut seen)).unwrap();
    assert_eq!(seen.as_deref(), Some(&req[..]));
    assert_eq!(used as usize, OUT_HEADER_LEN + 50);
    let mut out = vec![0u8; used as usize];
    mem.read_slice(&mut out[..10], GuestAddress(BUF + 0x2000))
        .unwrap();
    mem.read_slice(&mut out[10..], GuestAddress(BUF + 0x3000))
        .unwrap();
    let (header, rest) = OutHeader::read_from_prefix(&out).unwrap();
    assert_eq!((header.unique, header.error, header.len), (42, 0, used));
    assert_eq!(rest, &[9u8; 50][..]);
}

#[test]
fn malformed_chains_are_refused_without_calling_the_server() {
    let mem = memory();
    let req = request(Opcode::Getattr, 1, &[0u8; 16]);
    mem.write_slice(&req, GuestAddress(BUF)).unwrap();
    let len = req.len() as u32;
    type Expect = fn(&ChainError) -> bool;
    let cases: Vec<(&str, Vec<RawDescriptor>, Expect)> = vec![
        (
            "readable after writable",
            vec![writable(BUF + 0x1000, 64), readable(BUF, len)],
            |e| *e == ChainError::ReadableAfterWritable,
        ),
        (
            "longer than the largest request",
            vec![readable(BUF, len), readable(BUF, 4096)],
            |e| matches!(e, ChainError::TooLong { max: 4096, .. }),
        ),
        (
            "a descriptor of 4 GiB",
            vec![readable(BUF, u32::MAX)],
            |e| matches!(e, ChainError::TooLong { .. }),
        ),
        (
            "readable outside guest memory",
            vec![readable(MEM_SIZE as u64 - 8, len)],
            |e| matches!(e, ChainError::Memory(_)),
        ),
        (
            "writable outside guest memory",
            vec![readable(BUF, len), writable(u64::MAX - 16, 64)],
            |e| matches!(e, ChainError::Memory(_)),
        ),
        (
            "shorter than a header",
            vec![readable(BUF, IN_HEADER_LEN as u32 - 1)],
            |e| *e == ChainError::Short(IN_HEADER_LEN - 1),
        ),
        ("only writable descriptors", vec![writable(BUF, 64)], |e| {
            *e == ChainError::Short(0)
        }),
    ];
    for (what, descs, expected) in cases {
        let vq = MockSplitQueue::new(&mem, 16);
        let chain = vq.build_desc_chain(&descs).unwrap();
        let mut called = false;
        let got = serve_chain(chain, 4096, |_, _| called = true);
        match got {
            Err(e) => assert!(expected(&e), "{what}: {e}"),
            Ok(n) => panic!("{what}: served, {n} bytes"),
        }
        assert!(!called, "{what}: the server saw it");
    }
}

#[test]
fn a_looping_or_broken_indirect_chain_ends() {
    let mem = memory();
    let req = request(Opcode::Getattr, 1, &[0u8; 16]);
    mem.write_slice(&req, GuestAddress(BUF)).unwrap();
    // Descriptor 0 names itself as next: the chain stops after the queue size.
    let vq = MockSplitQueue::new(&mem, 16);
    let looping = RawDescriptor::from(SplitDescriptor::new(
        BUF,
        req.len() as u32,
        virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
        0,
    ));
    vq.add_desc_chains(&[looping], 0).unwrap();
    let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
    let chain = q.pop_descriptor_chain(&mem).unwrap();
    let mut saw = 0;
    let got = serve_chain(chain, 1 << 20, |bytes, _| saw = bytes.len());
    // Sixteen copies of the request make one malformed request: no reply, no panic.
    assert_eq!(got, Ok(0));
    assert_eq!(saw, 16 * req.len());

    // An indirect table whose length is not a whole number of descriptors.
    let vq = MockSplitQueue::new(&mem, 16);
    let indirect = RawDescriptor::from(SplitDescriptor::new(
        BUF,
        17,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    let chain = vq.build_desc_chain(&[indirect]).unwrap();
    let got = serve_chain(chain, 4096, |_, _| panic!("the server saw it"));
    assert_eq!(got, Err(ChainError::Short(0)));
}

#[test]
fn replies_that_do_not_fit_become_eio_or_nothing() {
    let mem = memory();
    let req = request(Opcode::Read, 77, &[0u8; 40]);
    mem.write_slice(&req, GuestAddress(BUF)).unwrap();
    let len = req.len() as u32;

    let vq = MockSplitQueue::new(&mem, 16);
    let chain = vq
        .build_desc_chain(&[readable(BUF, len), writable(BUF + 0x1000, 64)])
        .unwrap();
    let mut seen = None;
    let used = serve_chain(chain, 4096, echo(vec![1u8; 100], &mut seen)).unwrap();
    assert_eq!(used as usize, OUT_HEADER_LEN);
    let mut out = [0u8; OUT_HEADER_LEN];
    mem.read_slice(&mut out, GuestAddress(BUF + 0x1000))
        .unwrap();
    let header = OutHeader::read_from_bytes(&out).unwrap();
    assert_eq!((header.unique, header.error), (77, -libc::EIO));

    // Not even room for a header.
    let vq = MockSplitQueue::new(&mem, 16);
    let chain = vq
        .build_desc_chain(&[readable(BUF, len), writable(BUF + 0x1000, 8)])
        .unwrap();
    let used = serve_chain(chain, 4096, echo(vec![], &mut seen)).unwrap();
    assert_eq!(used, 0);

    // No reply (FORGET): nothing written.
    let vq = MockSplitQueue::new(&mem, 16);
    let chain = vq.build_desc_chain(&[readable(BUF, len)]).unwrap();
    assert_eq!(serve_chain(chain, 4096, |_, _| {}), Ok(0));
}

/// Opens a server on a fresh ext4 image in `dir`.
fn opener(dir: &Path) -> OpenServer {
    let image = test_support::e2fs::new_ext4_image(dir, 32).unwrap();
    Box::new(move || Server::open_image(&image, crate::options::MountOptions::default()))
}

/// That server behind `Sessions`, as the backend uses it.
fn sessions(dir: &Path) -> Sessions {
    Sessions::start(opener(dir), None).unwrap()
}

fn call(sessions: &Sessions, req: &[u8]) -> Vec<u8> {
    let reply = Arc::new(ReplyBuf::default());
    sessions.handle(req, reply.clone());
    reply.take().unwrap_or_default()
}

fn init(sessions: &Sessions, unique: u64) -> InitOut {
    use fuse_wire::consts::{split_init_flags, FUSE_ASYNC_READ, FUSE_INIT_EXT};
    use fuse_wire::iomap::{FUSE_IOMAP, IOMAP_MINOR};
    // A kernel with the iomap series offers it on every connection, virtio-fs included.
    let (flags, flags2) = split_init_flags(FUSE_ASYNC_READ | FUSE_INIT_EXT | FUSE_IOMAP);
    let arg = InitIn {
        major: 7,
        minor: IOMAP_MINOR,
        max_readahead: 1 << 17,
        flags,
        flags2,
        ..Default::default()
    };
    let out = call(sessions, &request(Opcode::Init, unique, arg.as_bytes()));
    let (header, payload) = OutHeader::read_from_prefix(&out).unwrap();
    assert_eq!(header.error, 0, "INIT refused");
    InitOut::read_from_prefix(payload).unwrap().0
}

#[test]
fn init_over_virtio_fs_is_classic_and_a_remount_reopens_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = sessions(dir.path());
    let out = init(&sessions, 1);
    let flags = fuse_wire::consts::join_init_flags(out.flags, out.flags2);
    assert_eq!(
        flags & fuse_wire::iomap::FUSE_IOMAP,
        0,
        "iomap accepted over virtio-fs"
    );
    assert!(out.minor < fuse_wire::iomap::IOMAP_MINOR, "{out:?}");

    let statfs = call(&sessions, &request(Opcode::Statfs, 2, &[]));
    assert_eq!(OutHeader::read_from_prefix(&statfs).unwrap().0.error, 0);
    // DESTROY (umount in the guest) closes the filesystem: the image is clean now.
    let destroyed = call(&sessions, &request(Opcode::Destroy, 3, &[]));
    assert_eq!(OutHeader::read_from_prefix(&destroyed).unwrap().0.error, 0);
    assert!(sessions.lock().is_none());
    test_support::e2fs::e2fsck_clean(&dir.path().join("fs.img")).unwrap();
    // A late FORGET from the high-priority queue does not reopen it; anything else but
    // INIT is refused.
    let forget = call(&sessions, &request(Opcode::Forget, 0, &1u64.to_ne_bytes()));
    assert!(forget.is_empty());
    assert!(
        sessions.lock().is_none(),
        "a FORGET reopened the filesystem"
    );
    let statfs = call(&sessions, &request(Opcode::Statfs, 6, &[]));
    assert_eq!(
        OutHeader::read_from_prefix(&statfs).unwrap().0.error,
        -libc::EIO
    );
    // The next mount's INIT opens it again.
    init(&sessions, 4);
    let statfs = call(&sessions, &request(Opcode::Statfs, 5, &[]));
    assert_eq!(OutHeader::read_from_prefix(&statfs).unwrap().0.error, 0);
    sessions.close().unwrap();
}

#[test]
fn request_queues_are_capped_and_each_has_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    // threads=64 is a valid option; 65 queues would not fit the thread masks.
    let fs = VirtioFs::new(opener(dir.path()), 64, None).unwrap();
    let handlers = fs.daemon.get_epoll_handlers();
    assert_eq!(
        handlers.len(),
        1 + MAX_REQUEST_QUEUES,
        "one thread per queue"
    );
    fs.sessions.close().unwrap();
}

/// A request to node `nodeid` with its argument parts.
fn request_to(opcode: Opcode, unique: u64, nodeid: u64, parts: &[&[u8]]) -> Vec<u8> {
    let header = InHeader {
        opcode: opcode as u32,
        unique,
        nodeid,
        ..Default::default()
    };
    fuse_wire::encode_request(&header, parts)
}

/// A recorded backend records what each mount's filesystem served, one mount after the
/// other in one recording, and `iomapfs replay` plays both back on the image as it was,
/// reopening it after the DESTROY as the backend did.
#[test]
fn a_recorded_backend_with_two_mounts_replays_without_differences() {
    use fuse_wire::structs::{CreateIn, EntryOut, MkdirIn, WriteIn};
    let dir = tempfile::tempdir().unwrap();
    let open = opener(dir.path());
    let image = dir.path().join("fs.img");
    let before = dir.path().join("before.img");
    std::fs::copy(&image, &before).unwrap();
    let info = ext2fs::Fs::open(&image, false).unwrap().info();
    let meta = crate::record::SessionInfo {
        transport: crate::record::TRANSPORT_VHOST_USER,
        iomap_capable: false,
        source: &image,
        options: &[],
        fs: &info,
    }
    .meta();
    let recording = dir.path().join("s.rec");
    let recorder = Recorder::create(&recording, 1 << 20, &meta).unwrap();
    let sessions = Sessions::start(open, Some(recorder.clone())).unwrap();
    let ok = |out: &[u8]| assert_eq!(OutHeader::read_from_prefix(out).unwrap().0.error, 0);

    init(&sessions, 1);
    let mkdir = MkdirIn {
        mode: 0o40755,
        umask: 0o022,
    };
    ok(&call(
        &sessions,
        &request_to(Opcode::Mkdir, 2, 1, &[mkdir.as_bytes(), b"d\0"]),
    ));
    let create = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o100644,
        umask: 0o022,
        open_flags: 0,
    };
    let created = call(
        &sessions,
        &request_to(Opcode::Create, 3, 1, &[create.as_bytes(), b"f\0"]),
    );
    ok(&created);
    let entry = EntryOut::read_from_prefix(&created[OUT_HEADER_LEN..])
        .unwrap()
        .0;
    let fh = u64::from_ne_bytes(
        created[OUT_HEADER_LEN + size_of::<EntryOut>()..][..8]
            .try_into()
            .unwrap(),
    );
    let data = vec![0x5au8; 8192];
    let write = WriteIn {
        fh,
        offset: 4096,
        size: data.len() as u32,
        ..Default::default()
    };
    ok(&call(
        &sessions,
        &request_to(Opcode::Write, 4, entry.nodeid, &[write.as_bytes(), &data]),
    ));
    ok(&call(&sessions, &request(Opcode::Destroy, 5, &[])));
    // Between the mounts: answered EIO by the backend, no filesystem serves it.
    call(&sessions, &request(Opcode::Statfs, 6, &[]));
    init(&sessions, 7);
    let found = call(&sessions, &request_to(Opcode::Lookup, 8, 1, &[b"f\0"]));
    ok(&found);
    let attr = EntryOut::read_from_prefix(&found[OUT_HEADER_LEN..])
        .unwrap()
        .0
        .attr;
    assert_eq!(attr.size, 4096 + 8192, "the first mount's write");
    ok(&call(&sessions, &request(Opcode::Destroy, 9, &[])));
    recorder.finish();

    let mut frames = crate::record::Reader::open(&recording).unwrap();
    let mut requests = vec![];
    while let Some(f) = frames.next_frame().unwrap() {
        if f.kind == crate::record::Kind::Request {
            requests.push(f.unique);
        }
    }
    assert_eq!(
        requests,
        [1, 2, 3, 4, 5, 7, 8, 9],
        "what the filesystems served"
    );
    let report = crate::replay::replay(&crate::replay::Config {
        recording,
        image: before,
        options: vec![],
        workdir: Some(dir.path().into()),
    })
    .unwrap();
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(crate::replay::Ending::Complete));
    assert_eq!(report.requests, 8, "{report}");
}
