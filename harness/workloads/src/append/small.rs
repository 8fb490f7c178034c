//! Many small files: thousands of files, each created and given 1..=4 small appended
//! records by one of several threads, some fsynced; afterwards every file is there with
//! exactly its records and nothing else is.

use crate::fill::mix;
use crate::finding::{Finding, Findings, Kind};
use crate::record::{make_record, record_len, scan, RecordId, Style, HEADER};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

const PER_DIR: u64 = 500;

fn records_of(seed: u64, i: u64) -> u64 {
    1 + mix(&[seed, 0x5a, i]) % 4
}

fn place(root: &Path, i: u64) -> (PathBuf, String) {
    let dir = format!("d{:03}", i / PER_DIR);
    let name = format!("f{i:06}");
    (root.join(&dir).join(&name), format!("{dir}/{name}"))
}

/// Creates files `0..count` under `root` with `threads` threads. Returns which were
/// created (a time limit may stop early), the operation count, and a failure if any.
pub fn create(
    root: &Path,
    seed: u64,
    count: u64,
    threads: u32,
    deadline: Instant,
) -> (Vec<bool>, u64, Option<Finding>) {
    let dirs = count.div_ceil(PER_DIR);
    for d in 0..dirs {
        let p = root.join(format!("d{d:03}"));
        if let Err(e) = std::fs::create_dir_all(&p) {
            return (
                vec![false; count as usize],
                0,
                Some(Finding::io(&p.to_string_lossy(), 0, "mkdir", e)),
            );
        }
    }
    let threads = threads.max(1) as u64;
    let results: Vec<(Vec<u64>, u64, Option<Finding>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let (mut done, mut ops) = (Vec::new(), 0);
                    for i in (t..count).step_by(threads as usize) {
                        if Instant::now() >= deadline {
                            break;
                        }
                        match create_one(root, seed, i) {
                            Ok(n) => {
                                done.push(i);
                                ops += n;
                            }
                            Err(f) => return (done, ops, Some(f)),
                        }
                    }
                    (done, ops, None)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (
                        Vec::new(),
                        0,
                        Some(Finding::new(Kind::Io, "small", 0, "thread panicked")),
                    )
                })
            })
            .collect()
    });
    let mut created = vec![false; count as usize];
    let (mut ops, mut failure) = (0, None);
    for (done, n, f) in results {
        for i in done {
            created[i as usize] = true;
        }
        ops += n;
        failure = failure.or(f);
    }
    (created, ops, failure)
}

fn create_one(root: &Path, seed: u64, i: u64) -> Result<u64, Finding> {
    let (path, rel) = place(root, i);
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| Finding::io(&rel, 0, "create", e))?;
    let k = records_of(seed, i);
    for seq in 0..k {
        let rec = make_record(
            seed,
            RecordId {
                writer: i as u32,
                seq,
            },
            Style::Small,
        );
        let n = nix::unistd::write(&fd, &rec).map_err(|e| Finding::io(&rel, 0, "append", e))?;
        if n != rec.len() {
            return Err(Finding::new(
                Kind::ShortIo,
                &rel,
                0,
                format!("wrote {n} of {}", rec.len()),
            ));
        }
    }
    if i & 7 == 0 {
        nix::unistd::fsync(&fd).map_err(|e| Finding::io(&rel, 0, "fsync", e))?;
    }
    Ok(k + 1)
}

/// Checks every created file and that the directories hold nothing else. `name_prefix` is
/// prepended to paths in findings. Returns findings and bytes read.
pub fn check(root: &Path, name_prefix: &str, seed: u64, created: &[bool]) -> (Findings, u64) {
    let mut out = Findings::default();
    let mut bytes = 0;
    let count = created.len() as u64;
    for d in 0..count.div_ceil(PER_DIR) {
        let dir = root.join(format!("d{d:03}"));
        let want: BTreeSet<String> = (d * PER_DIR..((d + 1) * PER_DIR).min(count))
            .filter(|i| created[*i as usize])
            .map(|i| format!("f{i:06}"))
            .collect();
        let mut have = BTreeSet::new();
        match std::fs::read_dir(&dir) {
            Ok(it) => {
                for e in it.flatten() {
                    have.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) => out.push(Finding::io(
                &format!("{name_prefix}d{d:03}"),
                0,
                "readdir",
                e,
            )),
        }
        for extra in have.difference(&want) {
            out.push(Finding::new(
                Kind::UnexpectedFile,
                &format!("{name_prefix}d{d:03}/{extra}"),
                0,
                "not created by this run",
            ));
        }
        for name in want.iter() {
            let i: u64 = name[1..].parse().expect("names are f + digits");
            let (path, rel) = place(root, i);
            let rel = format!("{name_prefix}{rel}");
            if !have.contains(name) {
                out.push(Finding::new(
                    Kind::MissingFile,
                    &rel,
                    0,
                    "created, but readdir does not list it",
                ));
            }
            match std::fs::read(&path) {
                Ok(data) => {
                    bytes += data.len() as u64;
                    check_file(&data, &rel, seed, i, &mut out);
                }
                Err(e) => out.push(Finding::io(&rel, 0, "read", e)),
            }
        }
    }
    (out, bytes)
}

fn check_file(data: &[u8], rel: &str, seed: u64, i: u64, out: &mut Findings) {
    let k = records_of(seed, i);
    let s = scan(rel, data, seed, &[]);
    out.extend(s.findings.into_iter().map(|(_, f)| f));
    let mut off = 0u64;
    for seq in 0..k {
        let id = RecordId {
            writer: i as u32,
            seq,
        };
        let len = record_len(seed, id, Style::Small) as u64;
        match s.records.iter().find(|r| r.offset == off) {
            Some(r) if r.id == id => {}
            Some(r) => out.push(Finding::new(
                Kind::Corrupt,
                rel,
                off,
                format!(
                    "record {seq} of file {i} expected here, found writer {} seq {}",
                    r.id.writer, r.id.seq
                ),
            )),
            None if s.bad_bytes > 0 => {} // already reported as torn or garbage
            None => {
                let want = make_record(seed, id, Style::Small);
                out.push(
                    Finding::new(
                        Kind::MissingRecord,
                        rel,
                        off,
                        format!("record {seq} of {k} is missing"),
                    )
                    .bytes(&want[..HEADER], data.get(off as usize..).unwrap_or(&[])),
                );
            }
        }
        off += len;
    }
    if data.len() as u64 != off {
        out.push(Finding::new(
            Kind::Size,
            rel,
            (data.len() as u64).min(off),
            format!("size is {}, expected {off}", data.len()),
        ));
    }
}
