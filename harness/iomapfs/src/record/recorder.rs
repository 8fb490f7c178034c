//! Writing a recording: [`Recorder`] takes every message at the transport boundary and
//! appends it as a frame; [`Recording`] is the transport wrapper that feeds it, so every
//! transport (/dev/fuse, the kernel socket, ...) records the same way.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::format::{frame_head, header, Kind, Meta, FRAME_OVERHEAD};
use crate::transport::Transport;

/// Appends frames to a recording, from any thread. A write error stops the recording
/// (logged once); it never disturbs serving.
pub struct Recorder {
    start: Instant,
    state: Mutex<State>,
}

struct State {
    /// `None` once the recording stopped (limit, error, or finished).
    out: Option<Sink>,
    /// Bytes of the plain recording so far (header and frames, before compression).
    written: u64,
    /// Stop before the plain recording would pass this many bytes.
    max: u64,
}

/// Where the bytes go: the file, or a zstd stream into it.
enum Sink {
    Plain(File),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[&[u8]]) -> io::Result<()> {
        match self {
            Sink::Plain(file) => {
                // One write per frame: a crash leaves whole frames, or one cut short.
                let joined: Vec<u8> = bytes.concat();
                file.write_all(&joined)
            }
            Sink::Zstd(enc) => {
                for b in bytes {
                    enc.write_all(b)?;
                }
                // A flushed block keeps the frame readable after a crash; the window is
                // kept, so the ratio barely suffers.
                enc.flush()
            }
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(file) => file.sync_data(),
            Sink::Zstd(enc) => enc.finish()?.sync_data(),
        }
    }
}

/// zstd level: fast, and still several times smaller than the plain recording.
const ZSTD_LEVEL: i32 = 3;

/// The smallest `record_max`: the header (its metadata is at most `MAX_META`) and the
/// stop marker always fit.
pub const MIN_RECORD_MAX: u64 = 64 << 10;
/// The stop marker: a frame carrying the limit as a u64.
const STOP_FRAME_LEN: usize = FRAME_OVERHEAD + 8;

impl Recorder {
    /// Creates (or truncates) `path` and writes the header. A path ending in `.zst` gets a
    /// zstd-compressed recording. `max` bounds the plain bytes (see RECORD.md).
    pub fn create(path: &Path, max: u64, meta: &Meta) -> io::Result<Arc<Recorder>> {
        let file = File::create(path)?;
        let mut sink = if path.extension().is_some_and(|e| e == "zst") {
            Sink::Zstd(zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?)
        } else {
            Sink::Plain(file)
        };
        let head = header(meta);
        sink.write_all(&[&head])?;
        Ok(Arc::new(Recorder {
            start: Instant::now(),
            state: Mutex::new(State {
                out: Some(sink),
                written: head.len() as u64,
                max: max.max(MIN_RECORD_MAX),
            }),
        }))
    }

    /// A request as the transport delivered it.
    pub fn request(&self, bytes: &[u8]) {
        // Bytes 8..16 of the in header; a request too short for it is recorded as is.
        let unique = bytes
            .get(8..16)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
        self.frame(Kind::Request, unique, &[bytes]);
    }

    /// A reply or notification, as the parts of one message the server writes.
    pub fn reply(&self, parts: &[IoSlice<'_>]) {
        let mut first = [0u8; 16];
        let mut filled = 0;
        for p in parts {
            let n = (first.len() - filled).min(p.len());
            first[filled..filled + n].copy_from_slice(&p[..n]);
            filled += n;
        }
        let unique = u64::from_ne_bytes(first[8..16].try_into().expect("8 bytes"));
        let kind = if unique == 0 {
            Kind::Notification
        } else {
            Kind::Reply
        };
        let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        self.frame(kind, unique, &slices);
    }

    /// The id the kernel gave the backing device: replies name it, so a replay must too.
    pub fn backing_open(&self, id: u32) {
        self.frame(Kind::BackingOpen, 0, &[&id.to_le_bytes()]);
    }

    /// Marks the recording complete and closes it. Later frames are dropped.
    pub fn finish(&self) {
        let mut state = self.lock();
        if state.out.is_none() {
            return;
        }
        self.write_locked(&mut state, Kind::End, 0, &[]);
        if let Some(sink) = state.out.take() {
            if let Err(e) = sink.finish() {
                tracing::warn!("cannot finish the recording: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while recording leaves nothing half done that matters: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn frame(&self, kind: Kind, unique: u64, parts: &[&[u8]]) {
        let mut state = self.lock();
        if state.out.is_none() {
            return;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // Room for this frame and, after it, the stop marker (the end marker is smaller).
        let needed = (FRAME_OVERHEAD + len + STOP_FRAME_LEN) as u64;
        if state.written.saturating_add(needed) > state.max {
            let max = state.max;
            self.write_locked(&mut state, Kind::Stopped, 0, &[&max.to_le_bytes()]);
            if let Some(sink) = state.out.take() {
                let _ = sink.finish();
            }
            tracing::warn!("the recording reached record_max={max} bytes: recording stopped");
            return;
        }
        self.write_locked(&mut state, kind, unique, parts);
    }

    fn write_locked(&self, state: &mut State, kind: Kind, unique: u64, parts: &[&[u8]]) {
        let Some(sink) = state.out.as_mut() else {
            return;
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // The time is taken under the lock, so frames are in time order in the file.
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let thread = nix::unistd::gettid().as_raw() as u32;
        let head = frame_head(kind, thread, time_ns, unique, len);
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&head);
        all.extend_from_slice(parts);
        match sink.write_all(&all) {
            Ok(()) => state.written += (FRAME_OVERHEAD + len) as u64,
            Err(e) => {
                tracing::warn!("cannot write the recording ({e}): recording stopped");
                state.out = None;
            }
        }
    }
}

/// A transport that records what passes through it: each request after it is read, each
/// reply or notification before it is written (so a reply is in the file before any
/// request the kernel sends in answer to it), and the backing ids the kernel hands out.
pub struct Recording {
    inner: Arc<dyn Transport>,
    recorder: Arc<Recorder>,
}

impl Recording {
    pub fn new(inner: Arc<dyn Transport>, recorder: Arc<Recorder>) -> Self {
        Self { inner, recorder }
    }
}

impl Transport for Recording {
    fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let got = self.inner.receive(buf)?;
        if let Some(n) = got {
            self.recorder.request(&buf[..n]);
        }
        Ok(got)
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        self.recorder.reply(parts);
        self.inner.send(parts)
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Ok(Arc::new(Recording {
            inner: self.inner.for_worker()?,
            recorder: self.recorder.clone(),
        }))
    }

    fn backing_open(&self, fd: RawFd) -> io::Result<u32> {
        let id = self.inner.backing_open(fd)?;
        self.recorder.backing_open(id);
        Ok(id)
    }

    fn set_nofs(&self) -> io::Result<()> {
        self.inner.set_nofs()
    }

    fn close(&self) {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::record::format::{Frame, Reader};

    /// A transport that delivers the given requests and swallows what is sent.
    struct Fake {
        requests: Mutex<VecDeque<Vec<u8>>>,
    }

    impl Transport for Fake {
        fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            Ok(self.requests.lock().unwrap().pop_front().map(|r| {
                buf[..r.len()].copy_from_slice(&r);
                r.len()
            }))
        }
        fn send(&self, _: &[IoSlice<'_>]) -> io::Result<()> {
            Ok(())
        }
        fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
            Ok(Arc::new(Fake {
                requests: Mutex::new(VecDeque::new()),
            }))
        }
        fn backing_open(&self, _: RawFd) -> io::Result<u32> {
            Ok(3)
        }
    }

    fn frames(path: &Path) -> (Vec<Frame>, Meta) {
        let mut reader = Reader::open(path).unwrap();
        let mut out = Vec::new();
        while let Some(f) = reader.next_frame().unwrap() {
            out.push(f);
        }
        (out, reader.meta().clone())
    }

    fn request(unique: u64) -> Vec<u8> {
        let header = fuse_wire::structs::InHeader {
            opcode: fuse_wire::Opcode::Getattr as u32,
            unique,
            nodeid: 1,
            ..Default::default()
        };
        fuse_wire::encode_request(&header, &[&[0u8; 16]])
    }

    #[test]
    fn the_wrapper_records_every_message_with_thread_time_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.rec");
        let mut meta = Meta::default();
        meta.set("transport", "fake");
        let recorder = Recorder::create(&path, 1 << 20, &meta).unwrap();
        let fake = Arc::new(Fake {
            requests: Mutex::new(VecDeque::from([request(2), request(4)])),
        });
        let t = Recording::new(fake, recorder.clone());
        let mut buf = vec![0u8; 4096];
        let n = t.receive(&mut buf).unwrap().unwrap();
        assert_eq!(t.backing_open(9).unwrap(), 3);
        let notify = fuse_wire::notify(fuse_wire::iomap::FUSE_NOTIFY_IOMAP_DEV_INVAL, &[5u8; 24]);
        t.send(&[IoSlice::new(&notify)]).unwrap();
        let reply = fuse_wire::reply_ok(2, &[&[6u8; 10]]);
        // A reply in two parts, split inside the header: recorded as one message.
        t.send(&[IoSlice::new(&reply[..5]), IoSlice::new(&reply[5..])])
            .unwrap();
        // Another thread, through a worker's handle.
        let worker = t.for_worker().unwrap();
        std::thread::spawn(move || {
            let r = fuse_wire::reply_err(4, libc::ENOENT);
            worker.send(&[IoSlice::new(&r)]).unwrap();
        })
        .join()
        .unwrap();
        recorder.finish();
        // Nothing after the end marker.
        recorder.request(&request(6));

        let (frames, meta) = frames(&path);
        assert_eq!(meta.get("transport"), Some("fake"));
        let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.unique)).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Request, 2),
                (Kind::BackingOpen, 0),
                (Kind::Notification, 0),
                (Kind::Reply, 2),
                (Kind::Reply, 4),
                (Kind::End, 0),
            ]
        );
        assert_eq!(frames[0].data, request(2)[..n]);
        assert_eq!(frames[1].data, 3u32.to_le_bytes());
        assert_eq!(frames[3].data, reply);
        let me = nix::unistd::gettid().as_raw() as u32;
        assert_eq!(frames[0].thread, me);
        assert_ne!(frames[4].thread, me, "the worker's own thread id");
        assert!(frames.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    }

    #[test]
    fn recording_stops_with_a_marker_within_record_max() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["s.rec", "s.rec.zst"] {
            let path = dir.path().join(name);
            let recorder = Recorder::create(&path, MIN_RECORD_MAX, &Meta::default()).unwrap();
            let big = vec![0xabu8; 4000];
            for i in 0..100u64 {
                let mut req = request(2 * i + 2);
                req.extend_from_slice(&big);
                recorder.request(&req);
            }
            recorder.finish();
            let (frames, _) = frames(&path);
            let last = frames.last().unwrap();
            assert_eq!(last.kind, Kind::Stopped, "{name}");
            assert_eq!(last.data, MIN_RECORD_MAX.to_le_bytes());
            assert!(
                frames.len() > 10 && frames.len() < 100,
                "{name}: {}",
                frames.len()
            );
            let plain: usize = 16
                + frames
                    .iter()
                    .map(|f| FRAME_OVERHEAD + f.data.len())
                    .sum::<usize>();
            assert!(plain as u64 <= MIN_RECORD_MAX, "{name}: {plain}");
            let on_disk = std::fs::metadata(&path).unwrap().len();
            assert!(on_disk <= MIN_RECORD_MAX, "{name}: {on_disk}");
        }
    }
}
