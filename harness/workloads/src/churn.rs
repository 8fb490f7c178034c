//! Churn with acknowledgements, for crash and power-cut tests. Files of self-describing
//! blocks are created, rewritten in place and deleted, so the blocks deleted files free are
//! handed to new files. Every state that reached the disk (fsync of the file and its
//! directory) is acknowledged in a log outside the filesystem under test.
//!
//! After a crash, [`verify`] holds the directory to what the log proves and to what no
//! crash may expose:
//! - an acknowledged file is there with its size, every unit of the acknowledged generation
//!   (or the next one, which was being written when the crash came);
//! - an acknowledged deletion stays deleted;
//! - no unit of any file holds another file's block, an unknown generation or unrecognisable
//!   bytes: that would be a freed block's old contents, exposed because the metadata that
//!   gave the block to the file reached the disk before the file's data.
//!
//! One writer does one operation at a time, so at most one operation is in flight at a crash.
//! Ack log (text, one line per acknowledged operation): a header `churn v1 seed HEX unit N`,
//! then `create ID GEN UNITS`, `write ID GEN UNITS`, `delete ID`.

use crate::block::{decode, write_block, BlockId, Decoded};
use crate::finding::{Finding, Findings, Kind};
use crate::summary::{PhaseSummary, Summary};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Block size of every file.
pub const UNIT: usize = 4096;
const SUBDIR: &str = "wl-churn";
const HEADER: &str = "churn v1";

#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub duration: Duration,
    /// Live files kept around (creates beyond it delete first).
    pub files: u32,
    /// Most units per file.
    pub max_units: u32,
    pub ack_log: PathBuf,
    /// The filesystem will go away mid-run (power cut, killed server): an I/O error ends
    /// the run quietly instead of failing it.
    pub crash_tolerant: bool,
}

/// What the log says about one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Acked {
    generation: u64,
    units: u64,
    deleted: bool,
}

fn name(id: u32) -> String {
    format!("f{id}")
}

fn block_id(seed: u64, id: u32, unit: u64, generation: u64) -> BlockId {
    BlockId {
        seed,
        file_id: id,
        offset: unit * UNIT as u64,
        generation,
    }
}

/// Runs the churn until `duration` ends (or, crash-tolerant, the filesystem goes away).
pub fn run(dir: &Path, cfg: &Config) -> Result<Summary> {
    if cfg.files == 0 || cfg.max_units == 0 {
        return Err(Error::Config(
            "--files and --max-units must be at least 1".into(),
        ));
    }
    let start = Instant::now();
    let root = dir.join(SUBDIR);
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("mkdir {}", root.display()), e))?;
    let mut log = AckLog::create(&cfg.ack_log, cfg.seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut live: BTreeMap<u32, Acked> = BTreeMap::new();
    let mut next_id = 1u32;
    let mut phase = PhaseSummary::new("churn");
    let mut stopped = None;
    while start.elapsed() < cfg.duration {
        let op = if live.len() < cfg.files as usize {
            0
        } else {
            rng.random_range(0..3)
        };
        let step = match op {
            0 => {
                let units = rng.random_range(1..=cfg.max_units) as u64;
                let id = next_id;
                next_id += 1;
                write_file(&root, cfg.seed, id, 1, units, true, rng.random()).map(|()| {
                    live.insert(
                        id,
                        Acked {
                            generation: 1,
                            units,
                            deleted: false,
                        },
                    );
                    phase.bytes_written += units * UNIT as u64;
                    format!("create {id} 1 {units}")
                })
            }
            1 => {
                let (&id, a) = pick(&live, &mut rng);
                let (generation, units) = (a.generation + 1, a.units);
                write_file(&root, cfg.seed, id, generation, units, false, rng.random()).map(|()| {
                    live.insert(
                        id,
                        Acked {
                            generation,
                            units,
                            deleted: false,
                        },
                    );
                    phase.bytes_written += units * UNIT as u64;
                    format!("write {id} {generation} {units}")
                })
            }
            _ => {
                let (&id, _) = pick(&live, &mut rng);
                delete_file(&root, id).map(|()| {
                    live.remove(&id);
                    format!("delete {id}")
                })
            }
        };
        match step {
            Ok(line) => {
                log.ack(&line)?;
                phase.ops += 1;
            }
            Err(e) if cfg.crash_tolerant => {
                stopped = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    phase.duration_s = start.elapsed().as_secs_f64();
    let mut summary = Summary::new("churn", Some(cfg.seed));
    summary.add_phase(phase);
    if let Some(why) = stopped {
        summary
            .notes
            .push(format!("stopped by an I/O error (crash-tolerant): {why}"));
    } else {
        let findings = verify_dir(dir, &log.path, false)?;
        summary.set_findings(findings);
    }
    summary.set_duration(start.elapsed());
    Ok(summary)
}

fn pick<'a>(live: &'a BTreeMap<u32, Acked>, rng: &mut ChaCha8Rng) -> (&'a u32, &'a Acked) {
    let i = rng.random_range(0..live.len());
    live.iter().nth(i).expect("index below len")
}

/// Writes every unit of generation `generation` (buffered or O_DIRECT), then fsyncs the
/// file, and the directory when it is new.
fn write_file(
    root: &Path,
    seed: u64,
    id: u32,
    generation: u64,
    units: u64,
    new: bool,
    direct: bool,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(name(id));
    let open = |flags| {
        OpenOptions::new()
            .write(true)
            .create(new)
            .truncate(false)
            .custom_flags(flags)
            .open(&path)
    };
    // Filesystems without O_DIRECT (tmpfs) refuse it with EINVAL: write buffered there.
    let f = match open(if direct { libc::O_DIRECT } else { 0 }) {
        Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => open(0),
        other => other,
    }
    .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut buf = crate::dio::io::IoBuf::new(UNIT * units as usize, 0);
    for u in 0..units {
        let off = u as usize * UNIT;
        write_block(&mut buf[off..off + UNIT], block_id(seed, id, u, generation));
    }
    f.write_all_at(&buf, 0)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
    if new {
        sync_dir(root)?;
    }
    Ok(())
}

fn delete_file(root: &Path, id: u32) -> Result<()> {
    let path = root.join(name(id));
    std::fs::remove_file(&path).map_err(|e| Error::io(format!("unlink {}", path.display()), e))?;
    sync_dir(root)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

struct AckLog {
    path: PathBuf,
    file: File,
}

impl AckLog {
    fn create(path: &Path, seed: u64) -> Result<AckLog> {
        let mut file =
            File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        writeln!(file, "{HEADER} seed {seed:#x} unit {UNIT}")
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(AckLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one acknowledged operation and makes it durable before the next begins.
    fn ack(&mut self, line: &str) -> Result<()> {
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }
}

/// Reads an ack log: the seed and the last acknowledged state of every file.
fn read_log(path: &Path) -> Result<(u64, BTreeMap<u32, Acked>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let bad = |line: usize, detail: &str| Error::Parse {
        what: format!("{} line {}", path.display(), line + 1),
        detail: detail.to_string(),
    };
    let mut lines = text.lines().enumerate();
    let (_, head) = lines.next().ok_or_else(|| bad(0, "empty ack log"))?;
    let words: Vec<&str> = head.split_whitespace().collect();
    let seed = match words.as_slice() {
        ["churn", "v1", "seed", s, "unit", u] if u.parse::<usize>() == Ok(UNIT) => {
            crate::dio::parse_seed(s).map_err(|e| bad(0, &e))?
        }
        _ => {
            return Err(bad(
                0,
                &format!("not a `{HEADER}` ack log header: {head:?}"),
            ))
        }
    };
    let mut files = BTreeMap::new();
    for (i, line) in lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(i, &format!("not a number: {s:?}")))
        };
        let id = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| bad(i, &format!("not a file id: {s:?}")))
        };
        match w.as_slice() {
            [op @ ("create" | "write"), i_, g, u] => {
                let (generation, units) = (num(g)?, num(u)?);
                if generation == 0 || units == 0 || units > u32::MAX as u64 {
                    return Err(bad(i, "generation and units must be positive"));
                }
                let prev = files.insert(
                    id(i_)?,
                    Acked {
                        generation,
                        units,
                        deleted: false,
                    },
                );
                if (*op == "create") != prev.is_none() {
                    return Err(bad(i, "create of a known file, or write of an unknown one"));
                }
            }
            ["delete", i_] => match files.get_mut(&id(i_)?) {
                Some(a) if !a.deleted => a.deleted = true,
                _ => return Err(bad(i, "delete of an unknown or deleted file")),
            },
            [] => {}
            _ => return Err(bad(i, &format!("unknown line {line:?}"))),
        }
    }
    Ok((seed, files))
}

/// Checks `DIR/wl-churn` against the ack log (see the module comment). `exact`: the run was
/// not interrupted, so nothing beyond the log may be there.
pub fn verify(dir: &Path, ack_log: &Path, exact: bool) -> Result<Summary> {
    let start = Instant::now();
    let (seed, _) = read_log(ack_log)?;
    let findings = verify_dir(dir, ack_log, exact)?;
    let mut s = Summary::new("churn-verify", Some(seed));
    s.set_findings(findings);
    s.set_duration(start.elapsed());
    Ok(s)
}

fn verify_dir(dir: &Path, ack_log: &Path, exact: bool) -> Result<Findings> {
    let (seed, acked) = read_log(ack_log)?;
    let root = dir.join(SUBDIR);
    let mut findings = Findings::default();
    // Effects of an unacknowledged operation: one is expected (the one in flight at the
    // crash, one writer), two or more mean something acknowledged was lost or changed.
    let mut unacked: Vec<Finding> = vec![];
    let mut seen = std::collections::BTreeSet::new();
    let newest = acked.keys().next_back().copied().unwrap_or(0);
    let entries = std::fs::read_dir(&root)
        .map_err(|e| Error::io(format!("readdir {}", root.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("readdir {}", root.display()), e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let id = file
            .strip_prefix('f')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| name(*n) == file);
        let Some(id) = id else {
            findings.push(Finding::new(
                Kind::UnexpectedFile,
                &file,
                0,
                "not a file the churn creates",
            ));
            continue;
        };
        seen.insert(id);
        match acked.get(&id).copied() {
            Some(a) if a.deleted => findings.push(Finding::new(
                Kind::UnexpectedFile,
                &file,
                0,
                "acknowledged as deleted, but present",
            )),
            // Ids are handed out in order: an unknown id can only be the next one, whose
            // create was in flight.
            None if id == newest + 1 => {
                check_file(&root.join(&file), &file, seed, id, None, &mut findings);
                unacked.push(Finding::new(
                    Kind::UnexpectedFile,
                    &file,
                    0,
                    "created but not acknowledged",
                ));
            }
            None => findings.push(Finding::new(
                Kind::UnexpectedFile,
                &file,
                0,
                "never created by this run",
            )),
            Some(a) => {
                if check_file(&root.join(&file), &file, seed, id, Some(a), &mut findings) {
                    unacked.push(Finding::new(
                        Kind::Stale,
                        &file,
                        0,
                        format!("holds generation {} (not acknowledged)", a.generation + 1),
                    ));
                }
            }
        }
    }
    for (id, a) in &acked {
        if !a.deleted && !seen.contains(id) {
            unacked.push(Finding::new(
                Kind::MissingFile,
                &name(*id),
                0,
                format!("acknowledged (generation {}) but gone", a.generation),
            ));
        }
    }
    let allowed = if exact { 0 } else { 1 };
    let n = unacked.len();
    if n > allowed {
        for mut f in unacked {
            f.detail = format!(
                "{}; one of {n} unacknowledged changes, but at most {allowed} operation was in flight",
                f.detail
            );
            findings.push(f);
        }
    }
    Ok(findings)
}

/// One file: acknowledged (`state`) or created when the crash came (`None`). Returns
/// whether it holds the next generation somewhere (an in-flight rewrite's effect).
fn check_file(
    path: &Path,
    file: &str,
    seed: u64,
    id: u32,
    state: Option<Acked>,
    findings: &mut Findings,
) -> bool {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            findings.push(Finding::io(file, 0, "read", e));
            return false;
        }
    };
    if let Some(a) = state {
        let want = a.units * UNIT as u64;
        if data.len() as u64 != want {
            findings.push(Finding::new(
                Kind::Size,
                file,
                0,
                format!("size {} but {want} acknowledged", data.len()),
            ));
        }
    }
    // The generations that may be on disk: the acknowledged one or the one in flight; a
    // file whose create was in flight holds generation 1 or nothing yet.
    let (low, high, zero_ok) = match state {
        Some(a) => (a.generation, a.generation + 1, false),
        None => (1, 1, true),
    };
    let mut next_generation = false;
    for (u, unit) in data.chunks(UNIT).enumerate() {
        let off = (u * UNIT) as u64;
        let problem = match decode(unit) {
            Decoded::Zero if zero_ok => None,
            Decoded::Zero => Some((Kind::Zeroed, "zeroes in an acknowledged file".to_string())),
            Decoded::Block {
                id: b, payload_ok, ..
            } => {
                let mine = b.file_id == id && b.offset == off && b.seed == seed;
                if !mine {
                    Some((Kind::Misplaced, format!(
                        "block of file {} offset {} generation {} (seed {:#x}): another file's data, exposed by a crash",
                        b.file_id, b.offset, b.generation, b.seed
                    )))
                } else if !(low..=high).contains(&b.generation) {
                    Some((
                        Kind::Stale,
                        format!("generation {}, expected {low}..={high}", b.generation),
                    ))
                } else if !payload_ok || unit.len() != UNIT {
                    Some((Kind::BadChecksum, "torn unit".to_string()))
                } else {
                    next_generation |= state.is_some() && b.generation == high;
                    None
                }
            }
            Decoded::Unknown => Some((
                Kind::Corrupt,
                "unrecognisable bytes (not this workload's data)".to_string(),
            )),
        };
        if let Some((kind, detail)) = problem {
            let mut expected = vec![0u8; UNIT];
            write_block(&mut expected, block_id(seed, id, u as u64, low));
            let f = Finding::new(kind, file, off, detail)
                .bytes(&expected[..unit.len().min(16)], &unit[..unit.len().min(16)]);
            findings.push(f);
        }
    }
    next_generation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, seed: u64) -> Config {
        Config {
            seed,
            duration: Duration::from_millis(400),
            files: 6,
            max_units: 4,
            ack_log: dir.join("acks"),
            crash_tolerant: false,
        }
    }

    #[test]
    fn a_clean_run_verifies_and_exactly() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("fs");
        std::fs::create_dir(&target).unwrap();
        let s = run(&target, &cfg(t.path(), 7)).unwrap();
        assert!(s.passed, "{}", s.render());
        assert!(s.ops > 6, "{}", s.render());
        let v = verify(&target, &t.path().join("acks"), true).unwrap();
        assert!(v.passed, "{}", v.render());
    }

    /// The checks catch what a crash must not leave: another file's block in a file (freed
    /// data exposed), an acknowledged file gone, a deleted one back, an old generation.
    #[test]
    fn what_a_crash_must_not_leave_is_found() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("fs");
        std::fs::create_dir(&target).unwrap();
        run(&target, &cfg(t.path(), 9)).unwrap();
        let acks = t.path().join("acks");
        let (_, acked) = read_log(&acks).unwrap();
        let root = target.join(SUBDIR);
        let live: Vec<u32> = acked
            .iter()
            .filter(|(_, a)| !a.deleted)
            .map(|(i, _)| *i)
            .collect();
        let deleted: Vec<u32> = acked
            .iter()
            .filter(|(_, a)| a.deleted)
            .map(|(i, _)| *i)
            .collect();
        assert!(live.len() >= 2 && !deleted.is_empty(), "{acked:?}");
        let kinds = |f: &dyn Fn()| {
            f();
            let s = verify(&target, &acks, false).unwrap();
            s.findings.iter().map(|f| f.kind).collect::<Vec<_>>()
        };
        let a = root.join(name(live[0]));
        let b = root.join(name(live[1]));
        let saved_a = std::fs::read(&a).unwrap();
        // File a's first unit replaced by file b's first unit.
        let b_unit = std::fs::read(&b).unwrap()[..UNIT].to_vec();
        assert!(kinds(&|| File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all_at(&b_unit, 0)
            .unwrap())
        .contains(&Kind::Misplaced));
        std::fs::write(&a, &saved_a).unwrap();
        assert!(verify(&target, &acks, false).unwrap().passed);
        // An older generation of a's own unit: rewrite it as generation 0.
        let mut old = vec![0u8; UNIT];
        write_block(&mut old, block_id(9, live[0], 0, 0));
        assert!(kinds(&|| File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all_at(&old, 0)
            .unwrap())
        .contains(&Kind::Stale));
        std::fs::write(&a, &saved_a).unwrap();
        // One acknowledged file gone is the delete that was in flight; two cannot be.
        assert!(kinds(&|| std::fs::remove_file(&a).unwrap()).is_empty());
        assert!(
            !verify(&target, &acks, true).unwrap().passed,
            "not after a clean run"
        );
        let saved_b = std::fs::read(&b).unwrap();
        assert!(kinds(&|| std::fs::remove_file(&b).unwrap()).contains(&Kind::MissingFile));
        std::fs::write(&b, &saved_b).unwrap();
        // Nor a file gone and a create in flight at once.
        let next = root.join(name(acked.keys().next_back().unwrap() + 1));
        assert!(kinds(&|| std::fs::write(&next, b"").unwrap()).contains(&Kind::MissingFile));
        std::fs::remove_file(&next).unwrap();
        std::fs::write(&a, &saved_a).unwrap();
        assert!(verify(&target, &acks, true).unwrap().passed);
        assert!(
            kinds(&|| std::fs::write(root.join(name(deleted[0])), b"").unwrap())
                .contains(&Kind::UnexpectedFile)
        );
    }

    #[test]
    fn a_bad_ack_log_is_a_parse_error() {
        let t = tempfile::tempdir().unwrap();
        for text in [
            "",
            "churn v2 seed 0x1 unit 4096\n",
            "churn v1 seed 0x1 unit 4096\nwrite 1 2 3\n",
            "churn v1 seed 0x1 unit 4096\ncreate 1 0 3\n",
            "churn v1 seed 0x1 unit 4096\ndelete 4\n",
        ] {
            let p = t.path().join("log");
            std::fs::write(&p, text).unwrap();
            assert!(matches!(read_log(&p), Err(Error::Parse { .. })), "{text:?}");
        }
    }
}
