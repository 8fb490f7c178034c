//! Concurrent appenders on one shared log: each writer appends its records with one
//! write(2) each through its own O_APPEND (or O_APPEND|O_DIRECT) descriptor, fsyncs every K
//! records when asked and logs what was acknowledged.

use super::acklog::Acker;
use crate::align::AlignedBuf;
use crate::finding::{Finding, Kind};
use crate::record::{record_len, write_record, RecordId, Style};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::path::Path;
use std::time::Instant;

pub struct WriterPlan<'a> {
    pub path: &'a Path,
    /// The log's name in findings.
    pub name: &'a str,
    pub seed: u64,
    pub style: Style,
    pub records: u64,
    pub fsync_every: Option<u64>,
    pub ack_log: Option<&'a Path>,
    /// Errors end the writer quietly (the server was killed on purpose).
    pub crash_tolerant: bool,
    pub deadline: Instant,
}

#[derive(Debug, Default)]
pub struct WriterResult {
    /// Records whose write(2) completed in full.
    pub written: u64,
    pub fsyncs: u64,
    /// Why the writer stopped early, if it did.
    pub stopped: Option<String>,
    pub finding: Option<Finding>,
}

pub fn run_writer(plan: &WriterPlan, writer: u32) -> WriterResult {
    let mut out = WriterResult::default();
    if let Err(e) = write_all(plan, writer, &mut out) {
        if plan.crash_tolerant {
            out.stopped = Some(format!(
                "writer {writer}: {e} after {} records",
                out.written
            ));
        } else {
            out.finding = Some(e);
        }
    }
    out
}

fn write_all(plan: &WriterPlan, writer: u32, out: &mut WriterResult) -> Result<(), Finding> {
    let direct = matches!(plan.style, Style::Direct { .. });
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CLOEXEC
        | if direct {
            OFlag::O_DIRECT
        } else {
            OFlag::empty()
        };
    let fd = nix::fcntl::open(plan.path, flags, Mode::empty())
        .map_err(|e| Finding::io(plan.name, 0, "open O_APPEND", e))?;
    let mut acker = match plan.ack_log {
        Some(p) => {
            Some(Acker::open(p).map_err(|e| Finding::io(plan.name, 0, "open the ack log", e))?)
        }
        None => None,
    };
    let ack = |seq: u64, acker: &mut Option<Acker>| -> Result<(), Finding> {
        match acker {
            Some(a) => a
                .ack(writer, seq)
                .map_err(|e| Finding::io(plan.name, 0, "ack log", e)),
            None => Ok(()),
        }
    };
    let mut buf = AlignedBuf::new(0);
    for seq in 0..plan.records {
        if Instant::now() >= plan.deadline {
            out.stopped = Some(format!("writer {writer}: time limit after {seq} records"));
            break;
        }
        let id = RecordId { writer, seq };
        let len = record_len(plan.seed, id, plan.style);
        if buf.len() != len {
            buf = AlignedBuf::new(len);
        }
        write_record(&mut buf, plan.seed, id);
        // One write(2) per record: O_APPEND makes each atomic with respect to the others.
        let n = loop {
            match nix::unistd::write(&fd, &buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => {
                    break r.map_err(|e| {
                        Finding::io(
                            plan.name,
                            0,
                            &format!("append of writer {writer} seq {seq}"),
                            e,
                        )
                    })?
                }
            }
        };
        if n != len {
            return Err(Finding::new(
                Kind::ShortIo,
                plan.name,
                0,
                format!("writer {writer} seq {seq}: wrote {n} of {len} bytes"),
            ));
        }
        out.written = seq + 1;
        match plan.fsync_every {
            Some(k) if (seq + 1) % k == 0 => {
                nix::unistd::fsync(&fd).map_err(|e| {
                    Finding::io(
                        plan.name,
                        0,
                        &format!("fsync after writer {writer} seq {seq}"),
                        e,
                    )
                })?;
                out.fsyncs += 1;
                ack(seq, &mut acker)?;
            }
            Some(_) => {}
            None => ack(seq, &mut acker)?,
        }
    }
    if let (Some(k), n) = (plan.fsync_every, out.written) {
        if n > 0 && n % k != 0 {
            nix::unistd::fsync(&fd).map_err(|e| {
                Finding::io(plan.name, 0, &format!("final fsync of writer {writer}"), e)
            })?;
            out.fsyncs += 1;
            ack(n - 1, &mut acker)?;
        }
    }
    Ok(())
}
