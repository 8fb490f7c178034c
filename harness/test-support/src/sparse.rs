//! `SparseData`: the expected contents of a file, stored as 4 KiB pages so that a 5 GiB
//! sparse file or a fleet of 8 MiB random-test files cost only the pages that hold data.
//! Bytes without a page read as zero, exactly like holes and unwritten extents.

use std::collections::BTreeMap;

const PAGE: u64 = 4096;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct SparseData {
    size: u64,
    /// Page index -> page contents. A missing page is all zeroes.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for SparseData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SparseData {{ size: {}, pages: {} }}",
            self.size,
            self.pages.len()
        )
    }
}

impl From<&[u8]> for SparseData {
    fn from(bytes: &[u8]) -> Self {
        let mut d = SparseData::new();
        d.write(0, bytes);
        d
    }
}

impl From<Vec<u8>> for SparseData {
    fn from(bytes: Vec<u8>) -> Self {
        SparseData::from(bytes.as_slice())
    }
}

impl SparseData {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Writes `data` at `off`, extending the size when it ends past EOF.
    pub fn write(&mut self, off: u64, data: &[u8]) {
        self.copy_in(off, data);
        self.size = self.size.max(off + data.len() as u64);
    }

    /// Sets the size. Shrinking forgets the bytes past the new end, so a later extension
    /// reads zeroes there (what truncate(2) promises).
    pub fn truncate(&mut self, size: u64) {
        if size < self.size {
            self.zero_range(size, self.size - size);
            self.pages.split_off(&size.div_ceil(PAGE));
        }
        self.size = size;
    }

    /// Zeroes `[off, off+len)` without changing the size (punch hole, zero range).
    pub fn zero_range(&mut self, off: u64, len: u64) {
        let end = off.saturating_add(len);
        let mut pos = off;
        while pos < end {
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE - pos % PAGE).min(end - pos)) as usize;
            if in_page == 0 && n == PAGE as usize {
                self.pages.remove(&index);
            } else if let Some(page) = self.pages.get_mut(&index) {
                page[in_page..in_page + n].fill(0);
            }
            pos += n as u64;
        }
    }

    /// Reads `[off, off+len)` clipped at EOF, holes as zeroes.
    pub fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - off) as usize];
        let first = off / PAGE;
        let last = (end - 1) / PAGE;
        for (&index, page) in self.pages.range(first..=last) {
            let page_start = index * PAGE;
            let from = off.max(page_start);
            let to = end.min(page_start + PAGE);
            out[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        out
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.size)
    }

    /// Byte ranges `[start, end)` (page granular, clipped to the size) that may hold non-zero
    /// data; everything else is known to be zero.
    pub fn data_ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &index in self.pages.keys() {
            let (start, end) = (index * PAGE, ((index + 1) * PAGE).min(self.size));
            if start >= end {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }

    fn copy_in(&mut self, off: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let pos = off + done as u64;
            let index = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = (PAGE as usize - in_page).min(data.len() - done);
            let chunk = &data[done..done + n];
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| vec![0u8; PAGE as usize].into());
            page[in_page..in_page + n].copy_from_slice(chunk);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_truncate_punch() {
        let mut d = SparseData::new();
        d.write(5000, &[7u8; 10000]);
        assert_eq!(d.len(), 15000);
        assert_eq!(d.read(0, 5000), vec![0u8; 5000]);
        assert_eq!(d.read(4999, 3), vec![0, 7, 7]);
        d.truncate(6000);
        d.truncate(20000);
        assert_eq!(d.read(5999, 2), vec![7, 0]);
        assert_eq!(d.read(6000, 14000), vec![0u8; 14000]);
        d.zero_range(5500, 100);
        assert_eq!(
            d.read(5499, 102),
            [&[7u8][..], &[0u8; 100][..], &[7u8][..]].concat()
        );
        assert_eq!(d.data_ranges(), vec![(4096, 8192)]);
        let big = 5u64 << 30;
        d.write(big, b"xyz");
        assert_eq!(d.len(), big + 3);
        assert_eq!(d.read(big - 1, 10), b"\0xyz".to_vec());
        d.truncate(0);
        assert!(d.is_empty() && d.data_ranges().is_empty());
    }
}
