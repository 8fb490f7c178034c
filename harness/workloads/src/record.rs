//! Appended records and the parser that checks a file of them.
//!
//! Layout (little-endian): magic[4] writer:u32 seq:u64 len:u32 seed_lo:u32 payload_crc:u32
//! header_crc:u32, then `len - 32` payload bytes derived from (seed, writer, seq). A record's
//! length is itself derived from (seed, writer, seq), so a verifier knows every record's
//! exact bytes without having kept them.

use crate::fill::{fill, mix};
use crate::finding::{Finding, Kind};

pub const MAGIC: [u8; 4] = *b"APR1";
pub const HEADER: usize = 32;
/// The longest record any style makes; a header claiming more is garbage.
pub const MAX_LEN: u32 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub writer: u32,
    pub seq: u64,
}

/// How long records are, per scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// 64..=6000 bytes: records straddle pages and blocks.
    Buffered,
    /// 1..=3 whole multiples of `align`, for O_DIRECT|O_APPEND.
    Direct { align: u32 },
    /// 40..=1500 bytes, for many small files.
    Small,
}

pub fn record_len(seed: u64, id: RecordId, style: Style) -> usize {
    let h = mix(&[seed, 0x1e9, id.writer as u64, id.seq]);
    match style {
        Style::Buffered => 64 + (h % 5937) as usize,
        Style::Direct { align } => align as usize * (1 + (h % 3) as usize),
        Style::Small => 40 + (h % 1461) as usize,
    }
}

/// Writes record `id` into `buf` (its length is the record's length, HEADER..=MAX_LEN).
pub fn write_record(buf: &mut [u8], seed: u64, id: RecordId) {
    let (head, payload) = buf.split_at_mut(HEADER);
    fill(payload, mix(&[seed, id.writer as u64, id.seq]));
    head[0..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&id.writer.to_le_bytes());
    head[8..16].copy_from_slice(&id.seq.to_le_bytes());
    head[16..20].copy_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
    head[20..24].copy_from_slice(&(seed as u32).to_le_bytes());
    head[24..28].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let hcrc = crc32c::crc32c(&head[..28]);
    head[28..32].copy_from_slice(&hcrc.to_le_bytes());
}

pub fn make_record(seed: u64, id: RecordId, style: Style) -> Vec<u8> {
    let mut b = vec![0u8; record_len(seed, id, style)];
    write_record(&mut b, seed, id);
    b
}

/// A valid header at the start of `b`: (id, length). The payload is not checked.
pub fn header(b: &[u8], seed: u64) -> Option<(RecordId, usize)> {
    if b.len() < HEADER || b[0..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&b[..28]) != u32_at(28) || u32_at(20) != seed as u32 {
        return None;
    }
    let len = u32_at(16);
    if (len as usize) < HEADER || len > MAX_LEN {
        return None;
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    Some((
        RecordId {
            writer: u32_at(4),
            seq,
        },
        len as usize,
    ))
}

/// A whole, intact record found in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub id: RecordId,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Found>,
    /// Torn records (with the id their header names) and garbage (no id).
    pub findings: Vec<(Option<RecordId>, Finding)>,
    /// Bytes that were neither whole records nor prefixes cut by a truncation.
    pub bad_bytes: u64,
}

/// Parses `data` (the contents of `file`) as back-to-back records. `cuts` are offsets
/// where a truncation may have cut a record short (ascending); the bytes before a cut must
/// still be exactly a prefix of the record that was there. Unparseable bytes are reported
/// once per run and skipped until the next valid header.
pub fn scan(file: &str, data: &[u8], seed: u64, cuts: &[u64]) -> Scan {
    let mut s = Scan::default();
    let mut pos = 0usize;
    let mut cuts = cuts
        .iter()
        .map(|c| *c as usize)
        .filter(|c| *c > 0 && *c <= data.len())
        .peekable();
    while pos < data.len() {
        while cuts.peek().is_some_and(|c| *c <= pos) {
            cuts.next();
        }
        let next_cut = cuts.peek().copied();
        match header(&data[pos..], seed) {
            Some((id, len)) => {
                let end = pos + len;
                if let Some(c) = next_cut.filter(|c| *c < end) {
                    // Cut by a truncation: the surviving prefix must be the record's own bytes.
                    check_bytes(
                        &mut s,
                        file,
                        data,
                        pos,
                        c,
                        seed,
                        id,
                        "record cut by a truncation",
                    );
                    pos = c;
                    continue;
                }
                if end > data.len() {
                    s.bad_bytes += (data.len() - pos) as u64;
                    s.findings.push((
                        Some(id),
                        Finding::new(
                            Kind::TornRecord,
                            file,
                            pos as u64,
                            format!(
                                "writer {} seq {}: {len}-byte record, but the file ends {} bytes into it",
                                id.writer,
                                id.seq,
                                data.len() - pos
                            ),
                        )
                        .bytes(&[], &[]),
                    ));
                    break;
                }
                if check_bytes(&mut s, file, data, pos, end, seed, id, "record") {
                    s.records.push(Found {
                        offset: pos as u64,
                        id,
                        len,
                    });
                }
                pos = end;
            }
            None => {
                // A header cut by a truncation: its bytes are checked only for the magic.
                if let Some(c) = next_cut.filter(|c| *c < pos + HEADER) {
                    let n = (c - pos).min(MAGIC.len());
                    if data[pos..pos + n] == MAGIC[..n] {
                        pos = c;
                        continue;
                    }
                }
                let stop = resync(data, pos + 1, seed, next_cut);
                s.bad_bytes += (stop - pos) as u64;
                s.findings.push((
                    None,
                    Finding::new(
                        Kind::Garbage,
                        file,
                        pos as u64,
                        format!(
                            "{} bytes that are not records (expected a record header)",
                            stop - pos
                        ),
                    )
                    .bytes(&MAGIC, &data[pos..]),
                ));
                pos = stop;
            }
        }
    }
    s
}

/// Compares `data[from..to]` with the same bytes of record `id` (which starts at `from`).
/// Returns true when they match; otherwise records a torn-record finding.
#[allow(clippy::too_many_arguments)]
fn check_bytes(
    s: &mut Scan,
    file: &str,
    data: &[u8],
    from: usize,
    to: usize,
    seed: u64,
    id: RecordId,
    what: &str,
) -> bool {
    let len = header(&data[from..], seed)
        .map(|(_, l)| l)
        .unwrap_or(to - from);
    let mut want = vec![0u8; len];
    write_record(&mut want, seed, id);
    let found = &data[from..to];
    match Finding::compare(
        Kind::TornRecord,
        file,
        from as u64,
        &want[..to - from],
        found,
        || {
            format!(
                "writer {} seq {}: {what} with wrong bytes",
                id.writer, id.seq
            )
        },
    ) {
        None => true,
        Some(f) => {
            s.bad_bytes += (to - from) as u64;
            s.findings.push((Some(id), f));
            false
        }
    }
}

/// The next offset at or after `from` where a valid header starts, or the cut, or EOF.
fn resync(data: &[u8], from: usize, seed: u64, cut: Option<usize>) -> usize {
    let end = cut.unwrap_or(data.len()).min(data.len());
    (from..end)
        .find(|p| data[*p] == MAGIC[0] && header(&data[*p..], seed).is_some())
        .unwrap_or(end)
}

/// The truncation points that still shape a file after all of `truncations` (in the
/// order they happened): a cut survives only if no later truncation went below it.
pub fn surviving_cuts(truncations: &[u64]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut min_after = u64::MAX;
    for t in truncations.iter().rev() {
        if *t < min_after {
            out.push(*t);
            min_after = *t;
        }
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 0xabcdef;

    fn rec(w: u32, s: u64) -> Vec<u8> {
        make_record(SEED, RecordId { writer: w, seq: s }, Style::Buffered)
    }

    #[test]
    fn parses_back_to_back_records() {
        let data = [rec(0, 0), rec(1, 0), rec(0, 1)].concat();
        let s = scan("f", &data, SEED, &[]);
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        let ids: Vec<_> = s.records.iter().map(|r| (r.id.writer, r.id.seq)).collect();
        assert_eq!(ids, vec![(0, 0), (1, 0), (0, 1)]);
        assert_eq!(s.records[1].offset, rec(0, 0).len() as u64);
    }

    #[test]
    fn reports_torn_and_garbage_then_resyncs() {
        let (a, b, c) = (rec(0, 0), rec(0, 1), rec(0, 2));
        let mut data = [a.clone(), b.clone(), c.clone()].concat();
        data[a.len() + 100] ^= 1; // payload of b
        let s = scan("f", &data, SEED, &[]);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.findings.len(), 1);
        assert_eq!(s.findings[0].1.kind, Kind::TornRecord);
        assert_eq!(s.findings[0].1.offset, (a.len() + 100) as u64);

        let data = [a.clone(), vec![0u8; 77], c.clone()].concat();
        let s = scan("f", &data, SEED, &[]);
        assert_eq!(s.records.len(), 2);
        assert_eq!(
            (s.findings[0].1.kind, s.findings[0].1.offset, s.bad_bytes),
            (Kind::Garbage, a.len() as u64, 77)
        );

        // A record that runs past EOF.
        let s = scan("f", &[a.clone(), b[..50].to_vec()].concat(), SEED, &[]);
        assert_eq!(s.findings[0].1.kind, Kind::TornRecord);
    }

    #[test]
    fn truncation_cuts_are_allowed_only_as_exact_prefixes() {
        let (a, b, c) = (rec(0, 0), rec(1, 0), rec(0, 1));
        // b was cut 10 bytes in, then c was appended at the cut.
        let cut = (a.len() + 10) as u64;
        let data = [a.clone(), b[..10].to_vec(), c.clone()].concat();
        let s = scan("f", &data, SEED, &[cut]);
        assert!(s.findings.is_empty(), "{:?}", s.findings);
        assert_eq!(s.records.len(), 2);
        // A cut inside the header (2 bytes: magic prefix only) is fine too.
        let cut = (a.len() + 2) as u64;
        let data = [a.clone(), b[..2].to_vec(), c.clone()].concat();
        assert!(scan("f", &data, SEED, &[cut]).findings.is_empty());
        // The same bytes without the cut recorded are torn/garbage.
        assert!(!scan("f", &data, SEED, &[]).findings.is_empty());
        // A prefix with a wrong byte is torn.
        let cut = (a.len() + 100) as u64;
        let mut bad = b[..100].to_vec();
        bad[60] ^= 0xff;
        let s = scan("f", &[a, bad, c].concat(), SEED, &[cut]);
        assert_eq!(s.findings.len(), 1);
        assert_eq!(s.findings[0].1.kind, Kind::TornRecord);
    }

    #[test]
    fn surviving_cuts_are_the_suffix_minima() {
        assert_eq!(
            surviving_cuts(&[500, 200, 900, 300, 1000]),
            vec![200, 300, 1000]
        );
        assert_eq!(surviving_cuts(&[]), Vec::<u64>::new());
        assert_eq!(surviving_cuts(&[5, 5]), vec![5]);
    }

    #[test]
    fn lengths_follow_the_style() {
        for s in 0..200 {
            let id = RecordId { writer: 3, seq: s };
            let b = record_len(SEED, id, Style::Buffered);
            assert!((64..=6000).contains(&b));
            let d = record_len(SEED, id, Style::Direct { align: 4096 });
            assert_eq!(d % 4096, 0);
            assert!((4096..=12288).contains(&d));
            assert!((40..=1500).contains(&record_len(SEED, id, Style::Small)));
        }
    }
}
