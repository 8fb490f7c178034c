//! The oracle: what every file must contain, kept as a sparse byte map independent of any
//! mapping or block size, plus the checks that compare observations against it.

use std::collections::BTreeMap;

use crate::error::{Error, Mismatch, Result};

/// Granularity of the sparse map (unrelated to the filesystem block size).
const CHUNK: u64 = 64 << 10;

/// Zeroes to compare against: slice equality is a memcmp, fast even in debug builds.
static ZEROES: [u8; CHUNK as usize] = [0; CHUNK as usize];

/// True if every byte is zero.
pub fn all_zero(mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let n = data.len().min(ZEROES.len());
        if data[..n] != ZEROES[..n] {
            return false;
        }
        data = &data[n..];
    }
    true
}

/// The expected contents of one file: a size and the bytes that may be non-zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseFile {
    size: u64,
    /// Chunk index → CHUNK bytes. Absent chunks are zero.
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl SparseFile {
    pub fn new() -> SparseFile {
        SparseFile::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `data` at `pos`, growing the size as a write does.
    pub fn write(&mut self, pos: u64, data: &[u8]) {
        self.store(pos, data);
        self.size = self.size.max(pos + data.len() as u64);
    }

    fn store(&mut self, pos: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = pos + done as u64;
            let (idx, off) = (at / CHUNK, (at % CHUNK) as usize);
            let n = (CHUNK as usize - off).min(data.len() - done);
            let part = &data[done..done + n];
            if !all_zero(part) || self.chunks.contains_key(&idx) {
                let chunk = self
                    .chunks
                    .entry(idx)
                    .or_insert_with(|| vec![0; CHUNK as usize]);
                chunk[off..off + n].copy_from_slice(part);
            }
            done += n;
        }
    }

    /// Zeroes `[pos, pos + len)` without changing the size (punch hole, zero range).
    pub fn zero(&mut self, pos: u64, len: u64) {
        let end = pos.saturating_add(len);
        let first = pos / CHUNK;
        let last = end.div_ceil(CHUNK);
        let idxs: Vec<u64> = self.chunks.range(first..last).map(|(&i, _)| i).collect();
        for idx in idxs {
            let cstart = idx * CHUNK;
            let (a, b) = (pos.max(cstart) - cstart, end.min(cstart + CHUNK) - cstart);
            if a == 0 && b == CHUNK {
                self.chunks.remove(&idx);
            } else if let Some(chunk) = self.chunks.get_mut(&idx) {
                chunk[a as usize..b as usize].fill(0);
            }
        }
    }

    /// Sets the size; bytes past a shrunk size are gone (and read as zero if it grows again).
    pub fn set_size(&mut self, size: u64) {
        if size < self.size {
            self.zero(size, self.size - size);
        }
        self.size = size;
    }

    /// The bytes `[pos, pos + len)`, clamped at the size.
    pub fn read(&self, pos: u64, len: u64) -> Vec<u8> {
        let end = pos.saturating_add(len).min(self.size);
        if pos >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - pos) as usize];
        for (&idx, chunk) in self.chunks.range(pos / CHUNK..end.div_ceil(CHUNK)) {
            let cstart = idx * CHUNK;
            let (a, b) = (pos.max(cstart), end.min(cstart + CHUNK));
            out[(a - pos) as usize..(b - pos) as usize]
                .copy_from_slice(&chunk[(a - cstart) as usize..(b - cstart) as usize]);
        }
        out
    }

    /// True if every byte of `[pos, pos + len)` (within the size) is zero.
    pub fn is_zero(&self, pos: u64, len: u64) -> bool {
        all_zero(&self.read(pos, len))
    }

    /// Start offsets of the `block`-sized blocks below the size that hold a non-zero byte.
    pub fn nonzero_blocks(&self, block: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for (&idx, chunk) in &self.chunks {
            let cstart = idx * CHUNK;
            // Blocks are powers of two, so they either divide a chunk or contain several.
            let step = block.min(CHUNK) as usize;
            for (i, piece) in chunk.chunks(step).enumerate() {
                let at = cstart + (i * step) as u64;
                if at < self.size && !all_zero(piece) {
                    let blk = at / block * block;
                    if out.last() != Some(&blk) {
                        out.push(blk);
                    }
                }
            }
        }
        out
    }

    /// Compares an observation of `[pos, pos + got.len())` with the oracle. The caller
    /// already clamped the observation at the size it expects.
    pub fn check(&self, file: &str, what: &str, pos: u64, got: &[u8]) -> Result<()> {
        let want = self.read(pos, got.len() as u64);
        if want.len() != got.len() {
            return Err(mismatch(
                file,
                what,
                None,
                format!("{} bytes", want.len()),
                format!("{} bytes", got.len()),
            ));
        }
        if want == got {
            return Ok(());
        }
        if let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) {
            let run = want[i..]
                .iter()
                .zip(&got[i..])
                .take_while(|(a, b)| a != b)
                .count();
            return Err(mismatch(
                file,
                &format!("{what} ({run} differing bytes from here)"),
                Some(pos + i as u64),
                format!("{:#04x}", want[i]),
                format!("{:#04x}", got[i]),
            ));
        }
        Ok(())
    }

    /// Compares an observed size with the oracle's.
    pub fn check_size(&self, file: &str, what: &str, got: u64) -> Result<()> {
        if got != self.size {
            return Err(mismatch(
                file,
                what,
                None,
                format!("size {}", self.size),
                format!("size {got}"),
            ));
        }
        Ok(())
    }
}

/// Builds an oracle mismatch error.
pub fn mismatch(
    file: &str,
    what: &str,
    offset: Option<u64>,
    expected: String,
    got: String,
) -> Error {
    Error::Mismatch(Mismatch {
        file: file.to_string(),
        what: what.to_string(),
        offset,
        expected,
        got,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reads_and_sizes() {
        let mut f = SparseFile::new();
        f.write(100, b"hello");
        assert_eq!(f.size(), 105);
        assert_eq!(f.read(98, 10), b"\0\0hello");
        f.write(CHUNK - 2, b"abcd");
        assert_eq!(f.read(CHUNK - 3, 10), b"\0abcd");
        f.set_size(102);
        assert_eq!(f.read(0, 200).len(), 102);
        f.set_size(200);
        assert_eq!(&f.read(100, 10)[..], b"he\0\0\0\0\0\0\0\0");
        assert!(f.check("f", "t", 100, b"he").is_ok());
        let err = f.check("f", "t", 100, b"hx").unwrap_err().to_string();
        assert!(err.contains("at byte 101"), "{err}");
    }

    #[test]
    fn zero_and_nonzero_blocks() {
        let mut f = SparseFile::new();
        f.write(5000, &[1; 10]);
        f.write(3 * CHUNK, &[2; 4096]);
        assert_eq!(f.nonzero_blocks(4096), vec![4096, 3 * CHUNK]);
        f.zero(3 * CHUNK, 4096);
        assert_eq!(f.nonzero_blocks(4096), vec![4096]);
        assert_eq!(f.size(), 3 * CHUNK + 4096);
        assert!(f.is_zero(3 * CHUNK, 4096));
        f.check_size("f", "s", 3 * CHUNK + 4096).unwrap();
        assert!(f.check_size("f", "s", 1).is_err());
    }
}
