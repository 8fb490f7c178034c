//! File data on the device, moved with pread/pwrite outside the metadata lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::engine::{Backing, Piece};

/// Zeroes for padding partial blocks (ext4 blocks are at most 64 KiB).
static ZEROES: [u8; 65536] = [0; 65536];

/// The server's own descriptor of the device, used only for file data.
pub struct DataDevice {
    file: File,
    block_size: u64,
}

impl DataDevice {
    pub fn new(file: File, block_size: u32) -> Self {
        Self {
            file,
            block_size: block_size as u64,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Fills `buf` with the file bytes `[pos, pos + buf.len())`; holes and unwritten
    /// pieces read as zeroes. Every byte of `buf` is written (it may hold old bytes).
    pub fn read(&self, pieces: &[Piece], pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = pos + buf.len() as u64;
        let mut data: Vec<(u64, u64, u64)> = pieces
            .iter()
            .filter_map(|p| match p.backing {
                Backing::Data { addr } => {
                    let (from, to) = (p.offset.max(pos), p.end().min(end));
                    (from < to).then_some((from, to, addr + (from - p.offset)))
                }
                _ => None,
            })
            .collect();
        data.sort_unstable_by_key(|&(from, ..)| from);
        // Zeroes only between the data pieces: pread fills the rest.
        let mut done = pos;
        for (start, to, addr) in data {
            // Overlapping pieces would be corrupt mappings; read each byte once anyway.
            let from = start.max(done);
            if from >= to {
                continue;
            }
            buf[(done - pos) as usize..(from - pos) as usize].fill(0);
            let dst = &mut buf[(from - pos) as usize..(to - pos) as usize];
            self.file.read_exact_at(dst, addr + (from - start))?;
            done = to;
        }
        buf[(done - pos) as usize..].fill(0);
        Ok(())
    }

    /// Writes `data` at file offset `pos`. Unwritten pieces are written in whole blocks,
    /// padded with zeroes, because converting them makes the whole block readable.
    pub fn write(&self, pieces: &[Piece], pos: u64, data: &[u8]) -> io::Result<()> {
        let end = pos + data.len() as u64;
        let bs = self.block_size;
        for p in pieces {
            let (from, to) = (p.offset.max(pos), p.end().min(end));
            if from >= to {
                continue;
            }
            let src = &data[(from - pos) as usize..(to - pos) as usize];
            match p.backing {
                Backing::Data { addr } => self.file.write_all_at(src, addr + (from - p.offset))?,
                Backing::Unwritten { addr } => {
                    // The payload as it is, and zeroes only for the partial blocks at
                    // either end: no copy of the payload into a padded buffer.
                    let (b_from, b_to) = (from / bs * bs, to.div_ceil(bs) * bs);
                    let at = |off: u64| addr + (off - p.offset);
                    if b_from < from {
                        self.file
                            .write_all_at(&ZEROES[..(from - b_from) as usize], at(b_from))?;
                    }
                    self.file.write_all_at(src, at(from))?;
                    if to < b_to {
                        self.file
                            .write_all_at(&ZEROES[..(b_to - to) as usize], at(to))?;
                    }
                }
                Backing::Hole => {
                    return Err(io::Error::other(
                        "write into a hole that begin_write did not fill",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Writes zeroes over the file bytes `[from, to)` where they are backed by written data.
    pub fn zero(&self, pieces: &[Piece], from: u64, to: u64) -> io::Result<()> {
        for p in pieces {
            let Backing::Data { addr } = p.backing else {
                continue;
            };
            let (a, b) = (p.offset.max(from), p.end().min(to));
            if a < b {
                let zeros = vec![0u8; (b - a) as usize];
                self.file.write_all_at(&zeros, addr + (a - p.offset))?;
            }
        }
        Ok(())
    }

    /// Waits until the blocks a write filled in unwritten pieces of `[pos, end)` are on
    /// the device (written and acknowledged, `sync_file_range`): only then may their
    /// conversion to written extents be written, or a crash could expose what the blocks
    /// held before (another file's deleted data). Overwrites of written data need no wait.
    /// The device cache is flushed by the next sync (fsync, commit, unmount).
    pub fn sync_unwritten(&self, pieces: &[Piece], pos: u64, end: u64) -> io::Result<()> {
        let bs = self.block_size;
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for p in pieces {
            let Backing::Unwritten { addr } = p.backing else {
                continue;
            };
            let (from, to) = (p.offset.max(pos), p.end().min(end));
            if from >= to {
                continue;
            }
            // The whole blocks `write` wrote, padding included.
            let start = addr + (from / bs * bs - p.offset);
            let stop = addr + (to.div_ceil(bs) * bs - p.offset);
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = stop,
                _ => ranges.push((start, stop)),
            }
        }
        for (start, stop) in ranges {
            self.sync_range(start, stop - start)?;
        }
        Ok(())
    }

    /// Writes the device's dirty pages in `[start, start + len)` and waits for them (the
    /// device cache is flushed by the next sync). Metadata written through libext2fs shares
    /// the device's page cache, so this orders metadata writes too.
    pub fn sync_range(&self, start: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let (start, len) = (
            i64::try_from(start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        );
        // libc, not nix: nix has no sync_file_range.
        // SAFETY: plain syscall on our own descriptor.
        let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), start, len, flags) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes written data durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(bytes: usize) -> DataDevice {
        let f = tempfile::tempfile().unwrap();
        f.set_len(bytes as u64).unwrap();
        f.write_all_at(&vec![0xAA; bytes], 0).unwrap();
        DataDevice::new(f, 1024)
    }

    #[test]
    fn reads_zero_for_holes_and_unwritten() {
        let dev = device(8192);
        let pieces = [
            Piece {
                offset: 0,
                len: 1024,
                backing: Backing::Data { addr: 4096 },
            },
            Piece {
                offset: 1024,
                len: 1024,
                backing: Backing::Hole,
            },
            Piece {
                offset: 2048,
                len: 1024,
                backing: Backing::Unwritten { addr: 5120 },
            },
        ];
        let mut buf = vec![1u8; 3000];
        dev.read(&pieces, 10, &mut buf).unwrap();
        assert!(buf[..1014].iter().all(|&b| b == 0xAA));
        assert!(buf[1014..].iter().all(|&b| b == 0));
    }

    #[test]
    fn every_byte_outside_data_is_zeroed_in_a_reused_buffer() {
        let dev = device(8192);
        dev.file.write_all_at(&[0xBB; 1024], 6144).unwrap();
        // Out of order, and a range no piece covers: the buffer holds old bytes (1s).
        let pieces = [
            Piece {
                offset: 3072,
                len: 1024,
                backing: Backing::Data { addr: 6144 },
            },
            Piece {
                offset: 0,
                len: 1024,
                backing: Backing::Hole,
            },
            Piece {
                offset: 1024,
                len: 1024,
                backing: Backing::Data { addr: 4096 },
            },
        ];
        let mut buf = vec![1u8; 3600];
        dev.read(&pieces, 500, &mut buf).unwrap();
        let at = |off: usize| off - 500;
        assert!(buf[..at(1024)].iter().all(|&b| b == 0), "hole");
        assert!(buf[at(1024)..at(2048)].iter().all(|&b| b == 0xAA), "data");
        assert!(buf[at(2048)..at(3072)].iter().all(|&b| b == 0), "uncovered");
        assert!(buf[at(3072)..at(4096)].iter().all(|&b| b == 0xBB), "data");
        assert!(buf[at(4096)..].iter().all(|&b| b == 0), "past the pieces");
    }

    #[test]
    fn unwritten_writes_are_zero_padded_to_blocks() {
        let dev = device(8192);
        let pieces = [Piece {
            offset: 0,
            len: 2048,
            backing: Backing::Unwritten { addr: 2048 },
        }];
        dev.write(&pieces, 100, &[7u8; 1000]).unwrap();
        let mut raw = vec![0u8; 8192];
        dev.file.read_exact_at(&mut raw, 0).unwrap();
        assert!(
            raw[..2048].iter().all(|&b| b == 0xAA),
            "outside the mapping untouched"
        );
        assert!(raw[2048..2148].iter().all(|&b| b == 0), "head padding");
        assert!(raw[2148..3148].iter().all(|&b| b == 7), "payload");
        assert!(raw[3148..4096].iter().all(|&b| b == 0), "tail padding");
        assert!(
            raw[4096..].iter().all(|&b| b == 0xAA),
            "past the blocks untouched"
        );
    }

    #[test]
    fn written_data_is_patched_in_place() {
        let dev = device(8192);
        let pieces = [Piece {
            offset: 0,
            len: 1024,
            backing: Backing::Data { addr: 1024 },
        }];
        dev.write(&pieces, 10, &[5u8; 4]).unwrap();
        let mut raw = vec![0u8; 1024];
        dev.file.read_exact_at(&mut raw, 1024).unwrap();
        assert_eq!(&raw[8..16], &[0xAA, 0xAA, 5, 5, 5, 5, 0xAA, 0xAA]);
    }

    #[test]
    fn a_hole_in_a_write_is_an_error_not_a_panic() {
        let dev = device(4096);
        let pieces = [Piece {
            offset: 0,
            len: 1024,
            backing: Backing::Hole,
        }];
        assert!(dev.write(&pieces, 0, &[1u8; 10]).is_err());
    }
}
