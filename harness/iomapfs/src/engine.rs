//! The mapping engine: where a byte range of a file lives on the device.
//!
//! One code path serves both modes. In iomap mode the kernel asks for mappings
//! (IOMAP_BEGIN) and reports completions (IOMAP_IOEND); in classic mode the server asks
//! itself, under the metadata lock, then moves the bytes with pread/pwrite on the device
//! outside that lock, then completes. Writes into holes first get unwritten extents, which
//! read as zeroes until the write completes and converts them.

use ext2fs::{Fs, Ino, Inode, MapKind};

/// What a block-aligned piece of a file is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// No storage: reads as zeroes.
    Hole,
    /// Written blocks at this device byte address.
    Data { addr: u64 },
    /// Allocated but never written: reads as zeroes, holds garbage on disk.
    Unwritten { addr: u64 },
}

/// A block-aligned piece of a file: bytes `[offset, offset + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
    pub backing: Backing,
}

impl Piece {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The block range `[first, end)` that covers the bytes `[pos, pos + len)`.
pub fn block_span(pos: u64, len: u64, block_size: u64) -> (u64, u64) {
    let first = pos / block_size;
    let end = (pos.saturating_add(len)).div_ceil(block_size);
    (first, end.max(first))
}

/// Looks up the pieces covering `[pos, pos + len)`, rounded out to whole blocks.
pub fn map(fs: &Fs, ino: Ino, inode: &Inode, pos: u64, len: u64) -> ext2fs::Result<Vec<Piece>> {
    let bs = fs.block_size() as u64;
    let (first, end) = block_span(pos, len, bs);
    if end == first {
        return Ok(Vec::new());
    }
    let maps = fs.map(ino, inode, first, end - first)?;
    Ok(maps
        .into_iter()
        .map(|m| Piece {
            offset: m.lblk * bs,
            len: m.len * bs,
            backing: match m.kind {
                MapKind::Hole => Backing::Hole,
                MapKind::Mapped { pblk } => Backing::Data { addr: pblk * bs },
                MapKind::Unwritten { pblk } => Backing::Unwritten { addr: pblk * bs },
            },
        })
        .collect())
}

/// Blocks kept free for converting unwritten extents: a conversion may split extents and
/// grow the extent tree, and it runs when the data is already on disk, so running out of
/// space there would lose an acknowledged write. (ext4 reserves space the same way.)
pub const CONVERSION_RESERVE_BLOCKS: u64 = 64;

/// Prepares a write of `[pos, pos + len)`: holes become unwritten extents, and the
/// returned pieces all have storage. The inode is updated and written. ENOSPC when the
/// holes cannot be filled without eating into the conversion reserve.
pub fn begin_write(
    fs: &mut Fs,
    ino: Ino,
    inode: &mut Inode,
    pos: u64,
    len: u64,
) -> ext2fs::Result<Vec<Piece>> {
    let bs = fs.block_size() as u64;
    let (first, end) = block_span(pos, len, bs);
    let pieces = map(fs, ino, inode, pos, len)?;
    let hole_blocks: u64 = pieces
        .iter()
        .filter(|p| p.backing == Backing::Hole)
        .map(|p| p.len / bs)
        .sum();
    if hole_blocks > 0 {
        if fs.free_blocks() < hole_blocks + CONVERSION_RESERVE_BLOCKS {
            return Err(ext2fs::Error::from_errno(
                libc::ENOSPC,
                "no room to allocate and later convert the write",
            ));
        }
        fs.allocate_unwritten(ino, inode, first, end - first)?;
        return map(fs, ino, inode, pos, len);
    }
    Ok(pieces)
}

/// Completes a write: the unwritten pieces it filled become written data. Each conversion
/// writes `inode` as it is, so set its size and times first: they reach the disk with the
/// first conversion. Returns whether anything was converted (and so written).
pub fn end_write(
    fs: &mut Fs,
    ino: Ino,
    inode: &mut Inode,
    pieces: &[Piece],
) -> ext2fs::Result<bool> {
    let bs = fs.block_size() as u64;
    let mut converted = false;
    for p in pieces {
        if let Backing::Unwritten { .. } = p.backing {
            fs.mark_written(ino, inode, p.offset / bs, p.len / bs)?;
            converted = true;
        }
    }
    Ok(converted)
}

/// Frees every block wholly past `new_size`. The partial last block is kept; the caller
/// zeroes its tail so the bytes past EOF stay zero on disk.
pub fn truncate_blocks(
    fs: &mut Fs,
    ino: Ino,
    inode: &mut Inode,
    new_size: u64,
) -> ext2fs::Result<()> {
    let bs = fs.block_size() as u64;
    fs.punch(ino, inode, new_size.div_ceil(bs), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_span_rounds_out() {
        assert_eq!(block_span(0, 0, 4096), (0, 0));
        assert_eq!(block_span(0, 1, 4096), (0, 1));
        assert_eq!(block_span(4095, 2, 4096), (0, 2));
        assert_eq!(block_span(8192, 4096, 4096), (2, 3));
        assert_eq!(
            block_span(u64::MAX - 10, 100, 4096).0,
            (u64::MAX - 10) / 4096
        );
    }
}
