//! The primitive steps of the direct-I/O workload: write units of self-describing blocks,
//! read a range back and check every unit against the model.

use super::model::FileModel;
use crate::align::AlignedBuf;
use crate::block::{check_unit, write_block};
use crate::finding::{Finding, Findings, Kind};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A step that stops its phase when the filesystem fails an operation.
pub type Step<T> = std::result::Result<T, Finding>;

pub fn open(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
}

/// pwrite until all of `buf` is written; a zero-length write is an error.
pub fn pwrite_all<Fd: AsFd>(fd: Fd, mut buf: &[u8], mut off: u64) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::sys::uio::pwrite(&fd, buf, offset(off)?) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file offset as the syscalls take it; EFBIG past `off_t`.
pub fn offset(off: u64) -> nix::Result<i64> {
    i64::try_from(off).map_err(|_| Errno::EFBIG)
}

/// pread into `buf` until it is full or EOF; returns the bytes read.
pub fn pread_full<Fd: AsFd>(fd: Fd, buf: &mut [u8], off: u64) -> nix::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match nix::sys::uio::pread(&fd, &mut buf[done..], offset(off + done as u64)?) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A buffer of `len` bytes starting `misalign` bytes past a page boundary (0 for page
/// aligned, 512 for sector-aligned-only memory).
pub struct IoBuf {
    buf: AlignedBuf,
    misalign: usize,
}

impl IoBuf {
    pub fn new(len: usize, misalign: usize) -> Self {
        Self {
            buf: AlignedBuf::new(len + misalign),
            misalign,
        }
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.misalign..]
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.misalign..]
    }
}

/// Fills `buf` with units `offset, offset+unit, ...` of `model`'s file at the generations
/// the next write will get.
pub fn fill_units(buf: &mut [u8], model: &FileModel, seed: u64, offset: u64) {
    let unit = model.unit as usize;
    let generations = model.generations((buf.len() / unit) as u64);
    for (i, (chunk, generation)) in buf.chunks_mut(unit).zip(generations).enumerate() {
        write_block(
            chunk,
            model.block_id(seed, offset + (i * unit) as u64, generation),
        );
    }
}

/// Writes `units` units at `offset` through `fd` (O_DIRECT or not) and records them.
pub fn write_units<Fd: AsFd>(
    fd: Fd,
    model: &mut FileModel,
    seed: u64,
    offset: u64,
    units: u64,
    misalign: usize,
) -> Step<u64> {
    let len = (units * model.unit()) as usize;
    let mut buf = IoBuf::new(len, misalign);
    fill_units(&mut buf, model, seed, offset);
    pwrite_all(fd, &buf, offset)
        .map_err(|e| Finding::io(&model.name, offset, &format!("pwrite of {len} bytes"), e))?;
    model.wrote(offset, units);
    Ok(len as u64)
}

/// Checks `found` (read at `offset`, `offset` unit-aligned) unit by unit against the model.
pub fn check_bytes(
    model: &FileModel,
    seed: u64,
    offset: u64,
    found: &[u8],
    findings: &mut Findings,
) {
    let unit = model.unit as usize;
    for (i, chunk) in found.chunks(unit).enumerate() {
        let off = offset + (i * unit) as u64;
        if let Some(f) = check_unit(
            &model.name,
            chunk,
            unit,
            model.block_id(seed, off, 0),
            model.expected(off),
        ) {
            findings.push(f);
        }
    }
}

/// Reads `units` units at `offset` through `fd` and checks them, including that the read
/// ends exactly where the model's size says the file ends. Returns the bytes read.
pub fn check_range<Fd: AsFd>(
    fd: Fd,
    model: &FileModel,
    seed: u64,
    offset: u64,
    units: u64,
    misalign: usize,
    findings: &mut Findings,
) -> Step<u64> {
    let len = (units * model.unit()) as usize;
    let mut buf = IoBuf::new(len, misalign);
    let got = pread_full(fd, &mut buf, offset)
        .map_err(|e| Finding::io(&model.name, offset, &format!("pread of {len} bytes"), e))?;
    let want = model.size.saturating_sub(offset).min(len as u64) as usize;
    if got != want {
        findings.push(Finding::new(
            if got > want {
                Kind::Size
            } else {
                Kind::ShortIo
            },
            &model.name,
            offset + got.min(want) as u64,
            format!(
                "a read of {len} bytes at {offset} returned {got}; the file should be {} bytes",
                model.size
            ),
        ));
    }
    check_bytes(model, seed, offset, &buf[..got], findings);
    Ok(got as u64)
}

/// The size the filesystem reports must be the model's.
pub fn check_size<Fd: AsFd>(fd: Fd, model: &FileModel, findings: &mut Findings) -> Step<()> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| Finding::io(&model.name, 0, "fstat", e))?;
    if st.st_size as u64 != model.size {
        findings.push(Finding::new(
            Kind::Size,
            &model.name,
            (st.st_size as u64).min(model.size),
            format!("size is {}, expected {}", st.st_size, model.size),
        ));
    }
    Ok(())
}

/// Reads the whole file (and a little past the model's end) and checks every unit.
pub fn check_file<Fd: AsFd>(
    fd: Fd,
    model: &FileModel,
    seed: u64,
    findings: &mut Findings,
) -> Step<u64> {
    check_size(&fd, model, findings)?;
    const CHUNK: u64 = 1 << 20;
    let end = model.size + model.unit();
    let mut off = 0;
    let mut read = 0;
    while off < end {
        let units = (CHUNK.min(end - off)) / model.unit();
        let got = check_range(&fd, model, seed, off, units, 0, findings)?;
        read += got;
        // The file ended: a shorter file than the model was reported already.
        if got < units * model.unit() {
            break;
        }
        off += units * model.unit();
    }
    Ok(read)
}
