//! Appends racing with truncate: writers append records while a truncater cuts the file
//! at random sizes (often mid-record). Afterwards the file must parse as whole records,
//! except for exact prefixes ending at surviving cut points; no record appears twice; and
//! every record whose write began after the last truncation returned is there.

use crate::fill::mix;
use crate::finding::{Finding, Findings, Kind};
use crate::record::{record_len, scan, surviving_cuts, write_record, RecordId, Style};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What happened during the race, which the check needs.
#[derive(Debug, Default)]
pub struct Race {
    pub writers: u32,
    /// Records each writer appended.
    pub written: Vec<u64>,
    /// Every truncation size, in the order they happened.
    pub truncations: Vec<u64>,
    /// For each writer and seq: how many truncations had completed before its write began.
    pub epochs: Vec<Vec<u64>>,
    /// An operation that failed (ends the race).
    pub failure: Option<Finding>,
}

pub fn race(
    path: &Path,
    name: &str,
    seed: u64,
    writers: u32,
    records: u64,
    deadline: Instant,
) -> Race {
    let epoch = AtomicU64::new(0);
    let appended = AtomicU64::new(0);
    let running = AtomicU64::new(writers as u64);
    let total = writers as u64 * records;
    let mut race = Race {
        writers,
        ..Race::default()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (epoch, appended, running) = (&epoch, &appended, &running);
                s.spawn(move || {
                    let r = append(path, name, seed, w, records, deadline, epoch, appended);
                    running.fetch_sub(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let truncater = s.spawn(|| -> Result<Vec<u64>, Finding> {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, 0x7c]));
            let fd = nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| Finding::io(name, 0, "open for truncate", e))?;
            let mut cuts = Vec::new();
            // Stop early enough that records follow the last cut.
            while appended.load(Ordering::SeqCst) < total * 7 / 10
                && running.load(Ordering::SeqCst) > 0
            {
                std::thread::sleep(Duration::from_micros(rng.random_range(0..=2000)));
                let size = nix::sys::stat::fstat(&fd)
                    .map_err(|e| Finding::io(name, 0, "fstat", e))?
                    .st_size as u64;
                let to = if rng.random_bool(0.25) {
                    0
                } else {
                    rng.random_range(0..=size)
                };
                nix::unistd::ftruncate(&fd, to as i64)
                    .map_err(|e| Finding::io(name, to, "ftruncate", e))?;
                cuts.push(to);
                epoch.fetch_add(1, Ordering::SeqCst);
            }
            Ok(cuts)
        });
        for h in handles {
            match h.join() {
                Ok((written, epochs, failure)) => {
                    race.written.push(written);
                    race.epochs.push(epochs);
                    race.failure = race.failure.take().or(failure);
                }
                Err(_) => {
                    race.failure = Some(Finding::new(Kind::Io, name, 0, "a writer thread panicked"))
                }
            }
        }
        match truncater.join() {
            Ok(Ok(cuts)) => race.truncations = cuts,
            Ok(Err(f)) => race.failure = race.failure.take().or(Some(f)),
            Err(_) => {
                race.failure = Some(Finding::new(Kind::Io, name, 0, "the truncater panicked"))
            }
        }
    });
    race
}

#[allow(clippy::too_many_arguments)]
fn append(
    path: &Path,
    name: &str,
    seed: u64,
    w: u32,
    records: u64,
    deadline: Instant,
    epoch: &AtomicU64,
    appended: &AtomicU64,
) -> (u64, Vec<u64>, Option<Finding>) {
    let mut epochs = Vec::new();
    let fd = match nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return (0, epochs, Some(Finding::io(name, 0, "open O_APPEND", e))),
    };
    for seq in 0..records {
        if Instant::now() >= deadline {
            break;
        }
        let id = RecordId { writer: w, seq };
        let mut buf = vec![0u8; record_len(seed, id, Style::Buffered)];
        write_record(&mut buf, seed, id);
        epochs.push(epoch.load(Ordering::SeqCst));
        match nix::unistd::write(&fd, &buf) {
            Ok(n) if n == buf.len() => {}
            Ok(n) => {
                epochs.pop();
                let f = Finding::new(
                    Kind::ShortIo,
                    name,
                    0,
                    format!("writer {w} seq {seq}: wrote {n} of {}", buf.len()),
                );
                return (seq, epochs, Some(f));
            }
            Err(e) => {
                epochs.pop();
                return (
                    seq,
                    epochs,
                    Some(Finding::io(
                        name,
                        0,
                        &format!("append of writer {w} seq {seq}"),
                        e,
                    )),
                );
            }
        }
        appended.fetch_add(1, Ordering::SeqCst);
    }
    (epochs.len() as u64, epochs, None)
}

/// Checks the raced file's contents.
pub fn check(data: &[u8], name: &str, seed: u64, race: &Race) -> Findings {
    let mut out = Findings::default();
    let cuts = surviving_cuts(&race.truncations);
    let s = scan(name, data, seed, &cuts);
    out.extend(s.findings.into_iter().map(|(_, f)| f));
    let mut seen = HashSet::new();
    let mut last: Vec<Option<u64>> = vec![None; race.writers as usize];
    for r in &s.records {
        let w = r.id.writer as usize;
        if w >= race.writers as usize || r.id.seq >= race.written[w] {
            out.push(Finding::new(
                Kind::Corrupt,
                name,
                r.offset,
                format!("writer {w} seq {} was never appended", r.id.seq),
            ));
            continue;
        }
        if !seen.insert(r.id) {
            out.push(Finding::new(
                Kind::DuplicateRecord,
                name,
                r.offset,
                format!("writer {w} seq {} again", r.id.seq),
            ));
            continue;
        }
        if last[w].is_some_and(|p| r.id.seq < p) {
            out.push(Finding::new(
                Kind::Reordered,
                name,
                r.offset,
                format!("writer {w} seq {} after seq {:?}", r.id.seq, last[w]),
            ));
        }
        last[w] = Some(r.id.seq);
    }
    let n = race.truncations.len() as u64;
    for (w, epochs) in race.epochs.iter().enumerate() {
        for (seq, e) in epochs.iter().enumerate() {
            let id = RecordId {
                writer: w as u32,
                seq: seq as u64,
            };
            if *e == n && !seen.contains(&id) {
                out.push(Finding::new(
                    Kind::MissingRecord,
                    name,
                    data.len() as u64,
                    format!("writer {w} seq {seq} was appended after the last truncation but is missing"),
                ));
            }
        }
    }
    out
}
