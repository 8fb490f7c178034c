//! Recording and replay in process, without a kernel: a session recorded through the
//! `Recording` transport replays with no difference, also cut short anywhere; hostile
//! recordings (garbage messages, replies to nobody, random frames) are reported or refused,
//! never panicked on.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuse_wire::consts::{FUSE_ROOT_ID, KERNEL_MINOR_VERSION, KERNEL_VERSION};
use fuse_wire::structs::*;
use fuse_wire::Opcode;
use iomapfs::options::MountOptions;
use iomapfs::record::format::{frame_head, header};
use iomapfs::record::{Kind, Meta, Recorder, Recording};
use iomapfs::replay::{self, Ending};
use iomapfs::server::Server;
use iomapfs::transport::Transport;
use zerocopy::{FromBytes, IntoBytes};

/// Plays the kernel: hands out the requests given to it, keeps the last message sent.
#[derive(Default)]
struct Kernel {
    requests: Mutex<VecDeque<Vec<u8>>>,
    last: Mutex<Vec<u8>>,
}

impl Transport for Kernel {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.requests.lock().unwrap().pop_front().map(|r| {
            buf[..r.len()].copy_from_slice(&r);
            r.len()
        }))
    }
    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        *self.last.lock().unwrap() = parts.iter().flat_map(|p| p.iter().copied()).collect();
        Ok(())
    }
    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Err(io::Error::other("one thread"))
    }
    fn backing_open(&self, _: RawFd) -> io::Result<u32> {
        Ok(1)
    }
}

fn image(dir: &Path) -> PathBuf {
    test_support::e2fs::new_ext4_image(dir, 16).unwrap()
}

fn request(opcode: Opcode, unique: u64, nodeid: u64, parts: &[&[u8]]) -> Vec<u8> {
    let h = InHeader {
        opcode: opcode as u32,
        unique,
        nodeid,
        ..Default::default()
    };
    fuse_wire::encode_request(&h, parts)
}

/// Serves `requests` one by one through a recording transport, as the session loop does;
/// a request may be built from the reply to the one before it.
fn record_session(image: &Path, recording: &Path) {
    let fs = ext2fs::Fs::open(image, true).unwrap();
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let info = fs.info();
    let opts = MountOptions::parse(["threads=1"]).unwrap();
    let server = Server::new(fs, data, opts);
    let mut meta = Meta::default();
    meta.set("options", "threads=1");
    meta.set("iomap_capable", 0);
    meta.set(
        "fs_uuid",
        info.uuid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let recorder = Recorder::create(recording, 1 << 30, &meta).unwrap();
    let kernel = Arc::new(Kernel::default());
    let t: Arc<dyn Transport> = Arc::new(Recording::new(kernel.clone(), recorder.clone()));
    server.attach(t.clone(), false);
    let mut unique = 0;
    let mut call = |opcode: Opcode, nodeid: u64, parts: &[&[u8]]| -> Vec<u8> {
        unique += 2;
        kernel
            .requests
            .lock()
            .unwrap()
            .push_back(request(opcode, unique, nodeid, parts));
        let mut buf = vec![0u8; 2 << 20];
        let n = t.receive(&mut buf).unwrap().unwrap();
        iomapfs::dispatch::handle_one(&server, t.as_ref(), &buf[..n]).unwrap();
        kernel.last.lock().unwrap().clone()
    };
    let entry = |reply: Vec<u8>| EntryOut::read_from_prefix(&reply[16..]).unwrap().0;
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: KERNEL_MINOR_VERSION,
        max_readahead: 1 << 20,
        ..Default::default()
    };
    call(Opcode::Init, 0, &[init.as_bytes()]);
    call(
        Opcode::Getattr,
        FUSE_ROOT_ID,
        &[GetattrIn::default().as_bytes()],
    );
    call(Opcode::Lookup, FUSE_ROOT_ID, &[b"lost+found\0"]);
    let mkdir = MkdirIn {
        mode: 0o755,
        umask: 0,
    };
    let d = entry(call(
        Opcode::Mkdir,
        FUSE_ROOT_ID,
        &[mkdir.as_bytes(), b"d\0"],
    ))
    .nodeid;
    let create = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o100644,
        ..Default::default()
    };
    let f = entry(call(Opcode::Create, d, &[create.as_bytes(), b"f\0"])).nodeid;
    let payload = vec![0x42u8; 20_000];
    let write = WriteIn {
        size: payload.len() as u32,
        ..Default::default()
    };
    call(Opcode::Write, f, &[write.as_bytes(), &payload]);
    let read = ReadIn {
        size: 8192,
        offset: 4096,
        ..Default::default()
    };
    call(Opcode::Read, f, &[read.as_bytes()]);
    let setattr = SetattrIn {
        valid: fuse_wire::consts::FATTR_SIZE,
        size: 5000,
        ..Default::default()
    };
    call(Opcode::Setattr, f, &[setattr.as_bytes()]);
    call(Opcode::Statfs, FUSE_ROOT_ID, &[]);
    let list = ReadIn {
        size: 4096,
        ..Default::default()
    };
    call(Opcode::Opendir, d, &[OpenIn::default().as_bytes()]);
    call(Opcode::Readdirplus, d, &[list.as_bytes()]);
    call(Opcode::Unlink, d, &[b"f\0"]);
    call(Opcode::Lookup, d, &[b"f\0"]);
    call(Opcode::Destroy, 0, &[]);
    recorder.finish();
}

fn run(recording: &Path, image: &Path, dir: &Path) -> anyhow::Result<replay::Report> {
    replay::replay(&replay::Config {
        recording: recording.to_path_buf(),
        image: image.to_path_buf(),
        options: Vec::new(),
        workdir: Some(dir.to_path_buf()),
    })
}

#[test]
fn an_in_process_session_replays_whole_and_cut_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let before = dir.path().join("before.img");
    std::fs::copy(&image, &before).unwrap();
    let recording = dir.path().join("s.rec");
    record_session(&image, &recording);

    let report = run(&recording, &before, dir.path()).unwrap();
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(Ending::Complete));
    assert_eq!((report.requests, report.replies), (14, 14), "{report}");

    let whole = std::fs::read(&recording).unwrap();
    let cut = dir.path().join("cut.rec");
    let mut replayed = 0;
    for len in (0..whole.len()).step_by(97) {
        std::fs::write(&cut, &whole[..len]).unwrap();
        match run(&cut, &before, dir.path()) {
            Ok(report) => {
                assert_eq!(report.finding, None, "cut at {len}: {report}");
                replayed += 1;
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(
                    e.contains("not an iomapfs recording") || e.contains("in the middle of"),
                    "only a cut header is refused: {e}"
                );
            }
        }
    }
    assert!(replayed > 100, "{replayed} cuts replayed");
}

/// xorshift64: reproducible noise without a dependency.
fn noise(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn hostile_recordings_are_reported_or_refused_never_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let before = dir.path().join("before.img");
    std::fs::copy(&image, &before).unwrap();
    let real = dir.path().join("real.rec");
    record_session(&image, &real);
    let real = std::fs::read(&real).unwrap();
    let recording = dir.path().join("hostile.rec");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut same, mut findings, mut refused) = (0, 0, 0);
    let mut replay = |bytes: &[u8]| {
        std::fs::write(&recording, bytes).unwrap();
        match run(&recording, &before, dir.path()) {
            Ok(report) if report.finding.is_some() => findings += 1,
            Ok(_) => same += 1,
            Err(_) => refused += 1,
        }
    };
    // A real session with a few bytes changed anywhere: header, frame heads, messages.
    for _ in 0..100 {
        let mut bytes = real.clone();
        for _ in 0..1 + noise(&mut seed) % 4 {
            let at = (noise(&mut seed) % bytes.len() as u64) as usize;
            bytes[at] = noise(&mut seed) as u8;
        }
        replay(&bytes);
    }
    // Random frames: requests with a header and a random opcode and node, garbage
    // requests, replies, notifications and backing ids.
    for _ in 0..100 {
        let mut bytes = header(&Meta::default());
        let mut last_unique = 0;
        for _ in 0..noise(&mut seed) % 30 {
            let len = (noise(&mut seed) % 120) as usize;
            let junk: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
            let (kind, unique, data) = match noise(&mut seed) % 6 {
                0 | 1 => {
                    last_unique += 2;
                    let opcode = (noise(&mut seed) % 55) as u32;
                    let nodeid = noise(&mut seed) % 20;
                    let mut req = request(Opcode::Statfs, last_unique, nodeid, &[&junk]);
                    req[4..8].copy_from_slice(&opcode.to_ne_bytes());
                    (Kind::Request, last_unique, req)
                }
                2 => (Kind::Request, noise(&mut seed), junk),
                3 => (Kind::Reply, last_unique, junk),
                4 => (Kind::Notification, 0, junk),
                _ => (Kind::BackingOpen, 0, junk),
            };
            bytes.extend_from_slice(&frame_head(kind, 1, 0, unique, data.len()));
            bytes.extend_from_slice(&data);
        }
        replay(&bytes);
    }
    println!("{same} replayed the same, {findings} with a finding, {refused} refused");
    assert!(
        findings > 10 && refused > 10,
        "{same} same, {findings} findings, {refused} refused"
    );
}
