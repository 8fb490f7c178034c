//! The filesystem as a recorded server found it (RECORD.md, "Snapshots"): the blocks in
//! use that are not all zeroes, in one zstd stream, so a replay elsewhere starts from the
//! same filesystem. A fresh 2 GiB filesystem makes a snapshot of a few KiB, where a copy of
//! the device would be 2 GiB.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

/// The first bytes of a snapshot (after decompression).
pub const MAGIC: &[u8; 8] = b"IOMAPIMG";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Longest extent written, and accepted: a corrupt length is caught before allocating.
const MAX_EXTENT: u64 = 4 << 20;
/// The offset of the end marker.
const END: u64 = u64::MAX;
/// zstd level: the data is mostly metadata and compresses well already at 1, which is
/// several times faster than the default under emulation.
const ZSTD_LEVEL: i32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Bytes of the device (what the expanded image is long).
    pub device_bytes: u64,
    /// Bytes of the blocks in use that were read.
    pub used_bytes: u64,
    /// Bytes saved (used blocks that are not all zeroes).
    pub saved_bytes: u64,
}

/// Saves the filesystem on `source` to a new file `dest` (never an existing one): the
/// blocks of `runs` (`[start, end)` in blocks of `block_size`, from
/// `ext2fs::Fs::used_block_runs`) that are not all zeroes.
pub fn save(source: &Path, dest: &Path, block_size: u32, runs: &[(u64, u64)]) -> Result<Stats> {
    let bs = u64::from(block_size);
    ensure!(
        bs.is_power_of_two() && (512..=MAX_EXTENT).contains(&bs),
        "block size {bs} is not a filesystem block size"
    );
    let src = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let device_bytes = device_size(&src)?;
    let out = File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .with_context(|| format!("creating {}", dest.display()))?;
    let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
    enc.write_all(MAGIC)?;
    enc.write_all(&VERSION.to_le_bytes())?;
    enc.write_all(&block_size.to_le_bytes())?;
    enc.write_all(&device_bytes.to_le_bytes())?;
    let mut stats = Stats {
        device_bytes,
        ..Stats::default()
    };
    let mut buf = vec![0u8; MAX_EXTENT as usize];
    for &(start, end) in runs {
        let mut at = start.saturating_mul(bs);
        let stop = end.saturating_mul(bs).min(device_bytes);
        while at < stop {
            let len = (stop - at).min(MAX_EXTENT) as usize;
            let chunk = &mut buf[..len];
            src.read_exact_at(chunk, at)
                .with_context(|| format!("reading {} at {at}", source.display()))?;
            stats.used_bytes += len as u64;
            // Each run of blocks that are not all zeroes is one extent.
            let mut pos = 0;
            while pos < len {
                let zero = |p: usize| is_zero(&chunk[p..(p + bs as usize).min(len)]);
                if zero(pos) {
                    pos += bs as usize;
                    continue;
                }
                let first = pos;
                while pos < len && !zero(pos) {
                    pos += bs as usize;
                }
                let data = &chunk[first..pos.min(len)];
                enc.write_all(&(at + first as u64).to_le_bytes())?;
                enc.write_all(&(data.len() as u64).to_le_bytes())?;
                enc.write_all(data)?;
                stats.saved_bytes += data.len() as u64;
            }
            at += len as u64;
        }
    }
    enc.write_all(&END.to_le_bytes())?;
    enc.write_all(&0u64.to_le_bytes())?;
    enc.finish()?.sync_data()?;
    Ok(stats)
}

/// Whether `path` is a snapshot (rather than an image or a device).
pub fn is_snapshot(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut head = [0u8; 4];
    if file.read_exact_at(&mut head, 0).is_err() || head != super::format::ZSTD_MAGIC {
        return false;
    }
    let Ok(mut dec) = zstd::stream::read::Decoder::new(file) else {
        return false;
    };
    let mut magic = [0u8; 8];
    dec.read_exact(&mut magic).is_ok() && &magic == MAGIC
}

/// Writes the image a snapshot holds to `dest` (created or truncated; sparse: the blocks
/// the snapshot does not hold are holes, which read as zeroes). A snapshot cut short, or
/// one whose extents leave the device, is refused.
pub fn expand(snapshot: &Path, dest: &Path) -> Result<Stats> {
    let file = File::open(snapshot).with_context(|| format!("opening {}", snapshot.display()))?;
    let mut dec = zstd::stream::read::Decoder::new(BufReader::new(file))?;
    let mut magic = [0u8; 8];
    read_exact(&mut dec, &mut magic)?;
    ensure!(&magic == MAGIC, "{} is not a snapshot", snapshot.display());
    let version = u32::from_le_bytes(read_array(&mut dec)?);
    ensure!(
        version == VERSION,
        "snapshot version {version}: this build reads version {VERSION}"
    );
    let _block_size = u32::from_le_bytes(read_array(&mut dec)?);
    let device_bytes = u64::from_le_bytes(read_array(&mut dec)?);
    let out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    out.set_len(device_bytes)
        .with_context(|| format!("sizing {} to {device_bytes} bytes", dest.display()))?;
    let mut stats = Stats {
        device_bytes,
        ..Stats::default()
    };
    let mut buf = vec![];
    loop {
        let offset = u64::from_le_bytes(read_array(&mut dec)?);
        let len = u64::from_le_bytes(read_array(&mut dec)?);
        if offset == END {
            ensure!(len == 0, "corrupt end marker");
            break;
        }
        ensure!(
            len <= MAX_EXTENT && offset.checked_add(len).is_some_and(|e| e <= device_bytes),
            "corrupt snapshot: {len} bytes at {offset} on a {device_bytes}-byte device"
        );
        buf.resize(len as usize, 0);
        read_exact(&mut dec, &mut buf)?;
        out.write_all_at(&buf, offset)?;
        stats.saved_bytes += len;
    }
    stats.used_bytes = stats.saved_bytes;
    Ok(stats)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            bail!("the snapshot is cut short (the server stopped while writing it)")
        }
        Err(e) => Err(e).context("reading the snapshot"),
    }
}

fn read_array<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    let mut a = [0u8; N];
    read_exact(r, &mut a)?;
    Ok(a)
}

/// Bytes of a block device or a file.
fn device_size(file: &File) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    // SEEK_END gives a block device's size as well as a file's.
    let mut f = file;
    Ok(f.seek(SeekFrom::End(0))?)
}

/// OR-folded rather than short-circuited: the compiler vectorizes it.
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a | b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_used_bytes_and_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let bs = 1024u64;
        let mut image = vec![0u8; 64 * bs as usize];
        // Used: blocks 0-3 (block 2 all zeroes), 10-11; unused but non-zero: block 20.
        for b in [0u64, 1, 3, 10, 11, 20] {
            let at = (b * bs) as usize;
            image[at..at + bs as usize].fill(b as u8 + 1);
        }
        std::fs::write(&src, &image).unwrap();
        let snap = dir.path().join("s.img.zst");
        let stats = save(&src, &snap, bs as u32, &[(0, 4), (10, 12)]).unwrap();
        assert_eq!(stats.device_bytes, image.len() as u64);
        assert_eq!(stats.used_bytes, 6 * bs);
        assert_eq!(stats.saved_bytes, 5 * bs);
        assert!(is_snapshot(&snap));
        assert!(!is_snapshot(&src));
        // Never over an existing file.
        assert!(save(&src, &snap, bs as u32, &[]).is_err());

        let out = dir.path().join("out.img");
        expand(&snap, &out).unwrap();
        let mut want = image.clone();
        want[(20 * bs) as usize..(21 * bs) as usize].fill(0);
        assert_eq!(std::fs::read(&out).unwrap(), want);
    }

    #[test]
    fn cut_or_corrupt_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        std::fs::write(&src, vec![7u8; 8192]).unwrap();
        let snap = dir.path().join("s.zst");
        save(&src, &snap, 1024, &[(0, 8)]).unwrap();
        let plain = zstd::decode_all(File::open(&snap).unwrap()).unwrap();
        let out = dir.path().join("out.img");
        for cut in [4, 12, 30, plain.len() - 1] {
            let bad = dir.path().join(format!("cut{cut}"));
            std::fs::write(&bad, zstd::encode_all(&plain[..cut], 1).unwrap()).unwrap();
            assert!(expand(&bad, &out).is_err(), "cut at {cut}");
        }
        // An extent past the device's end.
        let mut past = plain.clone();
        past[24..32].copy_from_slice(&8000u64.to_le_bytes());
        let bad = dir.path().join("past");
        std::fs::write(&bad, zstd::encode_all(&past[..], 1).unwrap()).unwrap();
        let e = expand(&bad, &out).unwrap_err();
        assert!(format!("{e:#}").contains("corrupt snapshot"), "{e:#}");
        // A huge length is refused before it is allocated.
        let mut huge = plain;
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&bad, zstd::encode_all(&huge[..], 1).unwrap()).unwrap();
        assert!(expand(&bad, &out).is_err());
    }
}
