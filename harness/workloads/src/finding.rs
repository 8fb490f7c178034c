//! A finding: one place where the filesystem returned something other than what the
//! workload wrote, or failed an operation it should have completed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How many bytes of expected and found data a finding quotes, from the first difference.
pub const WINDOW: usize = 16;
/// Findings kept in full; past this only the count grows (a broken target can produce
/// millions, and the first ones explain the rest).
pub const MAX_KEPT: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Bytes that match nothing the workload wrote there.
    Corrupt,
    /// The right block's header, but the payload fails its CRC-32C.
    BadChecksum,
    /// An older generation of the right block: a lost overwrite or a stale read.
    Stale,
    /// A block that belongs to another file or offset.
    Misplaced,
    /// Zeroes where data was written.
    Zeroed,
    /// Data where the file must read as zeroes (hole, preallocated or punched range).
    NonZero,
    /// Direct, buffered and mmap access to the same bytes disagree.
    Incoherent,
    /// The file's size differs from what the workload's writes imply.
    Size,
    /// A read or write transferred fewer bytes than asked without an error.
    ShortIo,
    /// An operation failed with an error it should not have.
    Io,
    /// An appended record is missing.
    MissingRecord,
    /// An appended record appears more than once.
    DuplicateRecord,
    /// A record whose header is intact but whose bytes are not what was appended.
    TornRecord,
    /// Bytes that do not parse as records where records must be.
    Garbage,
    /// A writer's records are not in the order it appended them.
    Reordered,
    /// A file the workload created is gone.
    MissingFile,
    /// A file the workload did not create.
    UnexpectedFile,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: Kind,
    /// Path relative to the workload's directory.
    pub file: String,
    /// Byte offset in the file of the first wrong byte (or of the event).
    pub offset: u64,
    /// Up to [`WINDOW`] bytes from `offset`: what should be there...
    #[serde(with = "hex_bytes")]
    pub expected: Vec<u8>,
    /// ...and what the filesystem returned.
    #[serde(with = "hex_bytes")]
    pub found: Vec<u8>,
    /// What the found bytes are, decoded (e.g. "generation 3 of this block, expected 5").
    pub detail: String,
}

impl Finding {
    pub fn new(kind: Kind, file: &str, offset: u64, detail: impl Into<String>) -> Self {
        Self {
            kind,
            file: file.to_string(),
            offset,
            expected: Vec::new(),
            found: Vec::new(),
            detail: detail.into(),
        }
    }

    pub fn bytes(mut self, expected: &[u8], found: &[u8]) -> Self {
        self.expected = expected[..expected.len().min(WINDOW)].to_vec();
        self.found = found[..found.len().min(WINDOW)].to_vec();
        self
    }

    /// A failed system call on `file` at `offset`.
    pub fn io(file: &str, offset: u64, what: &str, err: impl fmt::Display) -> Self {
        Self::new(Kind::Io, file, offset, format!("{what}: {err}"))
    }

    /// Compares `found` with `expected` (same start offset `base` in `file`); on the first
    /// differing byte returns a finding of `kind` with windows of both from there.
    pub fn compare(
        kind: Kind,
        file: &str,
        base: u64,
        expected: &[u8],
        found: &[u8],
        detail: impl FnOnce() -> String,
    ) -> Option<Self> {
        let d = first_difference(expected, found)?;
        let wrong = expected
            .iter()
            .zip(found)
            .skip(d)
            .filter(|(a, b)| a != b)
            .count();
        let mut f = Self::new(kind, file, base + d as u64, detail());
        f.detail.push_str(&format!(
            " ({wrong} of {} bytes differ)",
            expected.len().min(found.len())
        ));
        Some(f.bytes(&expected[d..], found.get(d..).unwrap_or(&[])))
    }
}

/// The index of the first byte where the slices differ, or where the shorter one ends.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} @ {} ({:#x}): {}",
            self.kind, self.file, self.offset, self.offset, self.detail
        )?;
        if !self.expected.is_empty() || !self.found.is_empty() {
            write!(
                f,
                "; expected [{}] found [{}]",
                hex(&self.expected),
                hex(&self.found)
            )?;
        }
        Ok(())
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Findings of a run: the first [`MAX_KEPT`] in full, and the total count.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Findings {
    pub list: Vec<Finding>,
    pub total: u64,
}

impl Findings {
    pub fn push(&mut self, f: Finding) {
        self.total += 1;
        if self.list.len() < MAX_KEPT {
            self.list.push(f);
        }
    }
    pub fn extend(&mut self, other: impl IntoIterator<Item = Finding>) {
        for f in other {
            self.push(f);
        }
    }
    pub fn merge(&mut self, other: Findings) {
        let dropped = other.total - other.list.len() as u64;
        self.extend(other.list);
        self.total += dropped;
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(b).replace(' ', ""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_points_at_the_first_difference() {
        let want = [1u8, 2, 3, 4, 5];
        let got = [1u8, 2, 9, 4, 7];
        let f = Finding::compare(Kind::Corrupt, "f", 100, &want, &got, || "x".into()).unwrap();
        assert_eq!(f.offset, 102);
        assert_eq!(f.expected, vec![3, 4, 5]);
        assert_eq!(f.found, vec![9, 4, 7]);
        assert!(f.detail.contains("2 of 5 bytes differ"), "{}", f.detail);
        assert!(Finding::compare(Kind::Corrupt, "f", 0, &want, &want, || "x".into()).is_none());
        // A short read differs where it ends.
        let f = Finding::compare(Kind::ShortIo, "f", 0, &want, &want[..2], String::new).unwrap();
        assert_eq!((f.offset, f.found.len()), (2, 0));
    }

    #[test]
    fn json_round_trip_with_hex_bytes() {
        let f = Finding::new(Kind::Stale, "a/b", 4096, "gen 1").bytes(&[0xde, 0xad], &[0xbe, 0xef]);
        let j = serde_json::to_string(&f).unwrap();
        assert!(
            j.contains("\"kind\":\"stale\"") && j.contains("\"dead\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Finding>(&j).unwrap(), f);
        assert!(f
            .to_string()
            .starts_with("stale a/b @ 4096 (0x1000): gen 1; expected [de ad]"));
    }

    #[test]
    fn findings_cap_keeps_the_count() {
        let mut all = Findings::default();
        for i in 0..(MAX_KEPT as u64 + 5) {
            all.push(Finding::new(Kind::Io, "f", i, "e"));
        }
        assert_eq!((all.list.len(), all.total), (MAX_KEPT, MAX_KEPT as u64 + 5));
        let mut other = Findings::default();
        other.merge(all);
        assert_eq!(other.total, MAX_KEPT as u64 + 5);
    }
}
