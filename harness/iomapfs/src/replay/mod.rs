//! `iomapfs replay`: plays a recording (`-o record=FILE`) back against a fresh server on a
//! copy of the image, in process, and reports the first reply or notification that
//! differs from the recorded one, or that breaks the kernel's iomap rules.
//!
//! `schedule` turns the recording into exchanges (request, notifications, reply);
//! `compare` compares messages field by field; `check` applies the kernel's rules. The
//! requests are replayed one at a time in the order the server read them: exactly what a
//! one-thread server did, and for a session served by several threads a serial order that
//! may differ where requests overlapped (a difference there is flagged as such).
//!
//! A recording may hold several mounts one after the other (a virtio-fs backend's: the
//! guest unmounts, DESTROY closes the filesystem, the next INIT opens it again); the
//! replay does the same on its copy.

pub mod check;
pub mod compare;
pub mod schedule;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

use crate::options::MountOptions;
use crate::record::{Meta, Reader};
use crate::server::{IomapReach, Server};
use crate::transport::Transport;
use compare::{compare_notification, compare_reply};
pub use schedule::Ending;

/// What to replay, on what.
#[derive(Debug, Clone)]
pub struct Config {
    /// The recording (plain or `.zst`).
    pub recording: PathBuf,
    /// The image the recorded server started from, or its snapshot
    /// (`record::snapshot`). It is copied (a snapshot expanded); never changed.
    pub image: PathBuf,
    /// `-o` words for the replay's server after the recorded ones (later words win),
    /// e.g. a fault to check that the replay notices it.
    pub options: Vec<String>,
    /// Where the copy of the image goes (default: the system's temporary directory).
    pub workdir: Option<PathBuf>,
}

/// The first thing that went wrong in a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Position of the request among the recorded ones, from 1.
    pub seq: u64,
    pub unique: u64,
    /// The opcode's name (`IomapBegin`), or its number when unknown.
    pub opcode: String,
    pub nodeid: u64,
    /// What differs: `reply error`, `reply field entry_out.attr.size`, `notification 2`,
    /// `kernel rule`...
    pub what: String,
    /// The values or the rule.
    pub detail: String,
    /// The request overlapped others in the recording (several server threads).
    pub overlapped: bool,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request #{} (unique {}, {}, node {}): {}: {}",
            self.seq, self.unique, self.opcode, self.nodeid, self.what, self.detail
        )?;
        if self.overlapped {
            write!(
                f,
                "\n  note: in the recording this request overlapped others (a server with \
                 several threads); the replay serves them one by one, so an ordering \
                 difference is possible (record with threads=1 for an exact replay)"
            )?;
        }
        Ok(())
    }
}

/// What a replay did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests fed to the server.
    pub requests: u64,
    /// Replies compared.
    pub replies: u64,
    /// Notifications compared.
    pub notifications: u64,
    /// Requests the recording has no reply for (it ended first): not replayed.
    pub unanswered: u64,
    /// How the recording ended; `None` when the replay stopped at a finding before the end.
    pub ending: Option<Ending>,
    /// `None`: the replay matches the recording.
    pub finding: Option<Finding>,
    /// Things worth knowing that are not differences (recorded faults, ...).
    pub notes: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let ending = match &self.ending {
            Some(Ending::Complete) => "the recording is complete".to_string(),
            Some(Ending::Stopped(max)) => {
                format!("the recording stopped at record_max={max} bytes")
            }
            Some(Ending::Unfinished) => {
                "the recording has no end marker (the server did not finish it)".into()
            }
            Some(Ending::Truncated(what)) => what.clone(),
            None => "stopped at the first difference".into(),
        };
        write!(
            f,
            "replayed {} requests: {} replies and {} notifications compared, {} unanswered in the recording; {ending}",
            self.requests, self.replies, self.notifications, self.unanswered
        )?;
        match &self.finding {
            None => write!(f, "\nno differences"),
            Some(finding) => write!(f, "\nFIRST DIFFERENCE: {finding}"),
        }
    }
}

/// Words of the recorded `-o` list that must not apply to the replay's server: where
/// its output goes. (`preen` does apply: the copy is preened as the source was.)
const NOT_REPLAYED: &[&str] = &["record", "record_max", "record_flush", "log", "mode_file"];

/// Replays `cfg.recording` against a fresh server on a copy of `cfg.image`. `Err` means
/// the replay could not run (unreadable or corrupt recording, wrong image, ...); a
/// difference is a `Report` with a `finding`.
pub fn replay(cfg: &Config) -> Result<Report> {
    let reader = Reader::open(&cfg.recording)
        .with_context(|| format!("cannot read the recording {}", cfg.recording.display()))?;
    let meta = reader.meta().clone();
    let mut notes = Vec::new();
    let opts = replay_options(&meta, &cfg.options, &mut notes)?;
    // What the recorded server could reach decides what it negotiated at INIT (iomap,
    // and what needs notifications, which virtio-fs lacks).
    let reach = if meta.get("transport") == Some(crate::record::TRANSPORT_VHOST_USER) {
        IomapReach::VirtioFs
    } else {
        IomapReach::from(meta.get("iomap_capable") == Some("1"))
    };

    let dir = match &cfg.workdir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let copy = tempfile::Builder::new()
        .prefix("iomapfs-replay-")
        .suffix(".img")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a copy of the image in {}", dir.display()))?;
    if crate::record::snapshot::is_snapshot(&cfg.image) {
        crate::record::snapshot::expand(&cfg.image, copy.path())
            .with_context(|| format!("cannot expand the snapshot {}", cfg.image.display()))?;
    } else {
        std::fs::copy(&cfg.image, copy.path()).with_context(|| {
            format!(
                "cannot copy {} to {}",
                cfg.image.display(),
                copy.path().display()
            )
        })?;
    }
    if opts.preen && !opts.read_only {
        crate::preen::preen(copy.path())?;
    }
    let capture = Arc::new(Capture::default());
    // The server on the copy: the first, and one for each mount after a DESTROY.
    let open = || -> Result<(Server, ext2fs::FsInfo)> {
        let fs = ext2fs::Fs::open(copy.path(), !opts.read_only).with_context(|| {
            format!("cannot open the ext4 filesystem of {}", cfg.image.display())
        })?;
        let info = fs.info();
        let data = std::fs::OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(copy.path())
            .with_context(|| format!("cannot open {} for data I/O", copy.path().display()))?;
        let server = Server::new(fs, data, opts.clone());
        server.attach(capture.clone(), reach);
        Ok((server, info))
    };
    let (server, info) = open()?;
    same_image(&meta, &info, &cfg.image)?;

    let mut run = Run {
        server,
        open: &|| open().map(|(server, _)| server),
        capture: &capture,
        view: check::KernelView::new(info.block_size),
        started_ns: None,
        report: Report {
            requests: 0,
            replies: 0,
            notifications: 0,
            unanswered: 0,
            ending: None,
            finding: None,
            notes,
        },
    };
    let mut schedule = schedule::Schedule::new(reader);
    run.started_ns = meta.get("started").and_then(parse_wall_clock);
    let read = run.all(&mut schedule);
    crate::attr::set_replay_clock(None);
    // Close the filesystem whatever happened; at the end of a complete recording its
    // notifications (orphans freed at close) are compared too.
    capture.take();
    let closed = run.server.shutdown();
    let at_close = capture.take();
    read.with_context(|| format!("replaying {}", cfg.recording.display()))?;
    if run.report.finding.is_none() {
        run.report.ending = Some(schedule.ending.clone().unwrap_or(Ending::Unfinished));
    }
    if run.report.finding.is_none() && run.report.ending == Some(Ending::Complete) {
        run.report.finding =
            run.compare_notifications(&schedule.outside, &at_close)
                .map(|(what, detail)| Finding {
                    seq: run.report.requests,
                    unique: 0,
                    opcode: "the end of the session".into(),
                    nodeid: 0,
                    what,
                    detail,
                    overlapped: false,
                });
    }
    if let Err(e) = closed {
        run.report
            .notes
            .push(format!("closing the replayed filesystem failed: {e:?}"));
    }
    Ok(run.report)
}

/// `SECONDS.NANOSECONDS` (the header's `started`) as nanoseconds since the epoch.
fn parse_wall_clock(text: &str) -> Option<u64> {
    let (secs, nanos) = text.split_once('.')?;
    let (secs, nanos): (u64, u64) = (secs.parse().ok()?, nanos.parse().ok()?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The recorded `-o` words, less those that do not apply, then the caller's.
fn replay_options(meta: &Meta, extra: &[String], notes: &mut Vec<String>) -> Result<MountOptions> {
    let recorded = meta.get("options").unwrap_or_default();
    let mut words: Vec<&str> = Vec::new();
    for word in recorded.split(',').filter(|w| !w.is_empty()) {
        let key = word.split_once('=').map_or(word, |(k, _)| k);
        if NOT_REPLAYED.contains(&key) {
            continue;
        }
        if key == "fault" {
            notes.push(format!(
                "the recorded server ran with {word}; the replay does not (give -o {word} to replay with it)"
            ));
            continue;
        }
        words.push(word);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut opts = MountOptions::parse(words.into_iter().chain(extra))
        .map_err(|e| anyhow::anyhow!("the replay's options: {e}"))?;
    if opts.record.take().is_some() {
        notes.push("record= is ignored by replay".into());
    }
    Ok(opts)
}

/// Refuses an image other than the one the recorded server opened.
fn same_image(meta: &Meta, info: &ext2fs::FsInfo, image: &Path) -> Result<()> {
    let checks = [
        ("fs_uuid", crate::record::hex(&info.uuid)),
        ("fs_block_size", info.block_size.to_string()),
        ("fs_free_blocks", info.free_blocks.to_string()),
        ("fs_free_inodes", info.free_inodes.to_string()),
    ];
    for (key, found) in checks {
        if let Some(recorded) = meta.get(key) {
            if recorded != found {
                bail!(
                    "{} is not the image the recorded server started from: {key} is {found}, \
                     the recording says {recorded} (give the image as it was before the session)",
                    image.display()
                );
            }
        }
    }
    Ok(())
}

struct Run<'a> {
    server: Server,
    /// A new server on the copy, for a mount after a DESTROY.
    open: &'a dyn Fn() -> Result<Server>,
    capture: &'a Capture,
    view: check::KernelView,
    /// The recording's wall-clock start (`started`), nanoseconds since the epoch.
    started_ns: Option<u64>,
    report: Report,
}

impl Run<'_> {
    fn all(&mut self, schedule: &mut schedule::Schedule) -> Result<()> {
        while let Some(ex) = schedule.next_exchange()? {
            self.capture
                .ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(schedule.backing_ids.drain(..));
            if ex.unanswered {
                self.report.unanswered += 1;
                continue;
            }
            let init = fuse_wire::parse_header(&ex.request)
                .is_ok_and(|h| h.opcode == fuse_wire::Opcode::Init as u32);
            if init && self.server.is_finished() {
                // A new mount after DESTROY, as the recorded backend saw it.
                self.server = (self.open)().context("opening the copy again for a new mount")?;
            }
            if let Some(finding) = self.one(&ex) {
                self.report.finding = Some(finding);
                break;
            }
        }
        Ok(())
    }

    /// Replays one exchange; the first finding, if any.
    fn one(&mut self, ex: &schedule::Exchange) -> Option<Finding> {
        self.report.requests += 1;
        let at = self.started_ns.map(|t| t.saturating_add(ex.received_ns));
        crate::attr::set_replay_clock(at);
        if let Err(e) = crate::dispatch::handle_one(&self.server, self.capture, &ex.request) {
            tracing::warn!("replay: sending the answer failed: {e}");
        }
        let sent = self.capture.take();
        self.view.devices.extend(
            self.capture
                .opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        let (replies, notifications): (Vec<_>, Vec<_>) =
            sent.into_iter().partition(|m| unique_of(m) != 0);
        let req = fuse_wire::parse(&ex.request).ok();
        let header = fuse_wire::parse_header(&ex.request).ok();
        let finding = |what: String, detail: String| Finding {
            seq: ex.seq,
            unique: ex.unique,
            opcode: match header.map(|h| (h.opcode, fuse_wire::Opcode::from_u32(h.opcode))) {
                Some((_, Some(op))) => format!("{op:?}"),
                Some((n, None)) => format!("opcode {n}"),
                None => "malformed request".into(),
            },
            nodeid: header.map_or(0, |h| h.nodeid),
            what,
            detail,
            overlapped: ex.overlapped,
        };
        if let Some((what, detail)) = self.compare_notifications(&ex.notifications, &notifications)
        {
            return Some(finding(what, detail));
        }
        let reply = match (&ex.reply, replies.as_slice()) {
            (None, []) => return None,
            (Some(recorded), [replayed]) => (recorded, replayed),
            (Some(_), []) => {
                return Some(finding(
                    "reply".into(),
                    "recorded a reply, the replay sent none".into(),
                ))
            }
            (None, [_]) => {
                return Some(finding(
                    "reply".into(),
                    "the recording has no reply, the replay sent one".into(),
                ))
            }
            (_, more) => {
                return Some(finding(
                    "reply".into(),
                    format!("the replay sent {} replies to one request", more.len()),
                ))
            }
        };
        self.report.replies += 1;
        if let Some(req) = &req {
            if let Err(rule) = self.view.check(&req.op, reply.1) {
                return Some(finding(
                    "kernel rule".into(),
                    format!("the replayed reply breaks {rule}"),
                ));
            }
        }
        compare_reply(req.as_ref().map(|r| &r.op), reply.0, reply.1).map(|d| {
            finding(
                format!("reply {}", d.field),
                format!("recorded {}, replayed {}", d.recorded, d.replayed),
            )
        })
    }

    /// Compares the notifications sent for one request (or at the end of the session):
    /// what differs and how, if anything.
    fn compare_notifications(
        &mut self,
        recorded: &[Vec<u8>],
        replayed: &[Vec<u8>],
    ) -> Option<(String, String)> {
        for (i, (a, b)) in recorded.iter().zip(replayed).enumerate() {
            if let Some(d) = compare_notification(a, b) {
                return Some((
                    format!("notification {} {}", i + 1, d.field),
                    format!("recorded {}, replayed {}", d.recorded, d.replayed),
                ));
            }
        }
        if recorded.len() != replayed.len() {
            return Some((
                "notifications".into(),
                format!(
                    "recorded {} notifications, the replay sent {}",
                    recorded.len(),
                    replayed.len()
                ),
            ));
        }
        self.report.notifications += recorded.len() as u64;
        None
    }
}

/// The `unique` of a message the server wrote (0 for notifications and runts).
fn unique_of(msg: &[u8]) -> u64 {
    msg.get(8..16)
        .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
}

/// The replay's transport: keeps what the server sends, and hands out the recorded
/// backing ids (replies name them).
#[derive(Default)]
struct Capture {
    sent: Mutex<Vec<Vec<u8>>>,
    /// Recorded backing ids not handed out yet.
    ids: Mutex<VecDeque<u32>>,
    /// Ids handed out since the last look.
    opened: Mutex<Vec<u32>>,
}

impl Capture {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Transport for Capture {
    fn receive(&self, _: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }

    fn send(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let msg = parts.iter().flat_map(|p| p.iter().copied()).collect();
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        Ok(())
    }

    fn for_worker(&self) -> io::Result<Arc<dyn Transport>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a replay has one thread",
        ))
    }

    /// The id the kernel gave in the recording (a kernel's first id if none was recorded).
    fn backing_open(&self, _fd: std::os::fd::RawFd) -> io::Result<u32> {
        let id = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or(1);
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_start_is_read_as_nanoseconds_or_not_at_all() {
        assert_eq!(
            parse_wall_clock("1796665412.000000007"),
            Some(1_796_665_412_000_000_007)
        );
        for bad in [
            "",
            "12",
            "x.1",
            "1.x",
            "1.1000000000",
            "99999999999999999999.0",
        ] {
            assert_eq!(parse_wall_clock(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_recorded_options_apply_less_outputs_and_faults() {
        let mut meta = Meta::default();
        meta.set(
            "options",
            "ro,record=/x.rec,record_max=1G,log=/l,mode_file=/m,preen,attr_timeout=7,fault=late_dev_inval",
        );
        let mut notes = Vec::new();
        let opts = replay_options(&meta, &["threads=2".into()], &mut notes).unwrap();
        assert!(
            opts.read_only && opts.preen,
            "the copy is preened as the source was"
        );
        assert_eq!((opts.attr_timeout, opts.threads), (7, 2));
        assert_eq!((opts.record, opts.log, opts.mode_file), (None, None, None));
        assert_eq!(opts.fault, None);
        assert!(notes[0].contains("fault=late_dev_inval"), "{notes:?}");

        let opts = replay_options(&meta, &["rw".into(), "record=/y".into()], &mut notes).unwrap();
        assert!(!opts.read_only, "the caller's words win");
        assert_eq!(opts.record, None);
        assert!(replay_options(&meta, &["bogus".into()], &mut notes).is_err());
    }
}
