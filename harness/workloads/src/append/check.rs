//! Checking a shared log of appended records against what the writers did.

use crate::finding::{Finding, Findings, Kind};
use crate::record::{header, make_record, record_len, scan, RecordId, Style, HEADER};
use std::collections::HashMap;

/// What a log must contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly the records writer `w` appended: seqs `0..counts[w]`, nothing else, and the
    /// file's size is the sum of their lengths.
    Exact(Vec<u64>),
    /// At least the acknowledged records: writer `w`'s seqs `0..=acked[w]` (none when
    /// `None`), each once and intact. Anything after them may be lost or torn (a crash).
    Acked(Vec<Option<u64>>),
}

impl Expect {
    fn writers(&self) -> usize {
        match self {
            Expect::Exact(c) => c.len(),
            Expect::Acked(a) => a.len(),
        }
    }
    /// Seqs of writer `w` that must be present.
    fn required(&self, w: usize) -> u64 {
        match self {
            Expect::Exact(c) => c[w],
            Expect::Acked(a) => a[w].map_or(0, |s| s + 1),
        }
    }
}

/// Facts about a checked log, for the summary.
#[derive(Clone, Debug, Default)]
pub struct LogStats {
    pub records: u64,
    /// Bytes that were not whole records (only tolerated after a crash).
    pub bad_bytes: u64,
}

/// Checks `data`, the contents of the log `file`, against `expect`.
pub fn check_log(
    data: &[u8],
    file: &str,
    seed: u64,
    style: Style,
    expect: &Expect,
) -> (Findings, LogStats) {
    let mut out = Findings::default();
    let s = scan(file, data, seed, &[]);
    let crash = matches!(expect, Expect::Acked(_));
    for (id, f) in s.findings {
        // After a crash only damage to acknowledged records counts; missing ones are
        // reported below in any case.
        let acked = id.is_some_and(|id| {
            (id.writer as usize) < expect.writers() && id.seq < expect.required(id.writer as usize)
        });
        if !crash || acked {
            out.push(f);
        }
    }
    let stats = LogStats {
        records: s.records.len() as u64,
        bad_bytes: s.bad_bytes,
    };

    let writers = expect.writers();
    let mut seen: HashMap<RecordId, u64> = HashMap::new();
    let mut last: Vec<Option<(u64, u64)>> = vec![None; writers];
    let at = |o: u64| &data[o as usize..(o as usize + HEADER).min(data.len())];
    for r in &s.records {
        let w = r.id.writer as usize;
        if w >= writers {
            out.push(
                Finding::new(
                    Kind::Corrupt,
                    file,
                    r.offset,
                    format!("a record of writer {w}, but there are only {writers} writers"),
                )
                .bytes(&[], at(r.offset)),
            );
            continue;
        }
        if let Expect::Exact(counts) = expect {
            if r.id.seq >= counts[w] {
                out.push(
                    Finding::new(
                        Kind::Corrupt,
                        file,
                        r.offset,
                        format!(
                            "writer {w} seq {} was never appended (the writer made {})",
                            r.id.seq, counts[w]
                        ),
                    )
                    .bytes(&[], at(r.offset)),
                );
                continue;
            }
        }
        if let Some(first) = seen.insert(r.id, r.offset) {
            out.push(
                Finding::new(
                    Kind::DuplicateRecord,
                    file,
                    r.offset,
                    format!(
                        "writer {w} seq {} again (first at offset {first})",
                        r.id.seq
                    ),
                )
                .bytes(at(first), at(r.offset)),
            );
            continue;
        }
        // A writer appends one record after another, so its records are in seq order.
        if let Some((prev_seq, prev_off)) = last[w] {
            if r.id.seq < prev_seq {
                out.push(Finding::new(
                    Kind::Reordered,
                    file,
                    r.offset,
                    format!(
                        "writer {w} seq {} comes after its seq {prev_seq} (at offset {prev_off})",
                        r.id.seq
                    ),
                ));
            }
        }
        last[w] = Some((r.id.seq, r.offset));
    }

    // Every required record, once; report a missing one where it should have been: just
    // before the writer's next record that is there (or at EOF).
    let mut by_writer: Vec<Vec<(u64, u64)>> = vec![Vec::new(); writers];
    for (id, off) in &seen {
        by_writer[id.writer as usize].push((id.seq, *off));
    }
    let mut want_size = 0u64;
    for (w, present) in by_writer.iter_mut().enumerate() {
        present.sort_unstable();
        for seq in 0..expect.required(w) {
            let id = RecordId {
                writer: w as u32,
                seq,
            };
            want_size += record_len(seed, id, style) as u64;
            if seen.contains_key(&id) {
                continue;
            }
            let where_ = present
                .iter()
                .find(|(s, _)| *s > seq)
                .map_or(data.len() as u64, |(_, o)| *o);
            let want = make_record(seed, id, style);
            out.push(
                Finding::new(
                    Kind::MissingRecord,
                    file,
                    where_,
                    format!("writer {w} seq {seq} ({} bytes) is missing", want.len()),
                )
                .bytes(&want[..HEADER], data.get(where_ as usize..).unwrap_or(&[])),
            );
        }
    }
    if let Expect::Exact(_) = expect {
        if data.len() as u64 != want_size {
            out.push(Finding::new(
                Kind::Size,
                file,
                (data.len() as u64).min(want_size),
                format!(
                    "size is {}, the appended records add up to {want_size}",
                    data.len()
                ),
            ));
        }
    }
    (out, stats)
}

/// The id and length of the record at the start of `b`, if it is one.
pub fn record_at(b: &[u8], seed: u64) -> Option<(RecordId, usize)> {
    header(b, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 77;

    fn log(ids: &[(u32, u64)]) -> Vec<u8> {
        ids.iter()
            .flat_map(|(w, s)| {
                make_record(
                    SEED,
                    RecordId {
                        writer: *w,
                        seq: *s,
                    },
                    Style::Buffered,
                )
            })
            .collect()
    }

    #[test]
    fn exact_accepts_interleavings_and_rejects_the_rest() {
        let good = log(&[(0, 0), (1, 0), (1, 1), (0, 1)]);
        let (f, st) = check_log(
            &good,
            "l",
            SEED,
            Style::Buffered,
            &Expect::Exact(vec![2, 2]),
        );
        assert!(f.is_empty(), "{:?}", f.list);
        assert_eq!(st.records, 4);

        let missing = log(&[(0, 0), (1, 0), (0, 1)]);
        let (f, _) = check_log(
            &missing,
            "l",
            SEED,
            Style::Buffered,
            &Expect::Exact(vec![2, 2]),
        );
        let kinds: Vec<_> = f.list.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, vec![Kind::MissingRecord, Kind::Size]);
        assert!(f.list[0].detail.contains("writer 1 seq 1"));
        assert_eq!(f.list[0].offset, missing.len() as u64);

        let dup = log(&[(0, 0), (0, 0), (0, 1)]);
        let (f, _) = check_log(&dup, "l", SEED, Style::Buffered, &Expect::Exact(vec![2]));
        assert_eq!(f.list[0].kind, Kind::DuplicateRecord);

        let reordered = log(&[(0, 1), (0, 0)]);
        let (f, _) = check_log(
            &reordered,
            "l",
            SEED,
            Style::Buffered,
            &Expect::Exact(vec![2]),
        );
        assert_eq!(f.list[0].kind, Kind::Reordered);
    }

    #[test]
    fn acked_tolerates_a_damaged_unacknowledged_tail() {
        let mut data = log(&[(0, 0), (1, 0), (0, 1), (1, 1)]);
        let cut = data.len() - 10;
        data.truncate(cut);
        data.extend_from_slice(&[0u8; 300]);
        let (f, st) = check_log(
            &data,
            "l",
            SEED,
            Style::Buffered,
            &Expect::Acked(vec![Some(1), Some(0)]),
        );
        assert!(f.is_empty(), "{:?}", f.list);
        assert!(st.bad_bytes > 0);
        // ...but not a lost acknowledged one.
        let (f, _) = check_log(
            &data,
            "l",
            SEED,
            Style::Buffered,
            &Expect::Acked(vec![Some(1), Some(1)]),
        );
        assert_eq!(
            f.list.iter().filter(|x| x.kind == Kind::TornRecord).count(),
            1
        );
        assert_eq!(
            f.list
                .iter()
                .filter(|x| x.kind == Kind::MissingRecord)
                .count(),
            1
        );
    }
}
