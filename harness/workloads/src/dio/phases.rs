//! The fixed-shape phases of the direct-I/O workload: alignment probes, a sequential
//! fill and read-back, batches of I/Os in flight, direct/buffered/mmap coherence, sync.

use super::inflight::{Engine, Req};
use super::io::{
    check_bytes, check_range, fill_units, open, pread_full, pwrite_all, write_units, IoBuf, Step,
};
use super::{Config, Ctx, DioFile};
use crate::finding::{Finding, Findings, Kind};
use crate::Result;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use rand::Rng;
use std::os::fd::AsFd;

/// Records what the target accepts: the direct-I/O alignment statx reports, and whether a
/// byte-aligned direct write is refused (EINVAL, as block filesystems do) or accepted (as
/// FUSE may), in which case its bytes must still be right.
pub(super) fn probe(ctx: &mut Ctx) -> Result<()> {
    let path = ctx.path("probe");
    let fd =
        open(&path, OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_DIRECT).map_err(|e| match e {
            Errno::EINVAL => crate::Error::Config(format!(
                "{} refuses O_DIRECT (EINVAL at open)",
                ctx.root.display()
            )),
            e => crate::Error::at("create", &path, e),
        })?;
    match statx_dioalign(&fd) {
        Ok(st) if st.stx_mask & STATX_DIOALIGN != 0 && st.stx_dio_offset_align != 0 => {
            ctx.notes.push(format!(
                "statx: direct I/O needs offsets aligned to {} and memory to {}",
                st.stx_dio_offset_align, st.stx_dio_mem_align
            ))
        }
        Ok(_) => ctx
            .notes
            .push("statx: no direct-I/O alignment reported".into()),
        Err(e) => ctx.notes.push(format!("statx DIOALIGN: {e}")),
    }
    // 100 bytes at offset 1000 from memory one byte past a page boundary.
    let mut buf = IoBuf::new(100, 1);
    crate::fill::fill(&mut buf, ctx.seed);
    match nix::sys::uio::pwrite(&fd, &buf, 1000) {
        Ok(n) => {
            ctx.notes.push(format!(
                "byte-aligned direct write (100 bytes at offset 1000): accepted ({n} bytes)"
            ));
            let plain =
                open(&path, OFlag::O_RDONLY).map_err(|e| crate::Error::at("open", &path, e))?;
            let mut back = vec![0u8; 1100];
            let got =
                pread_full(&plain, &mut back, 0).map_err(|e| crate::Error::at("read", &path, e))?;
            let mut want = vec![0u8; 1000];
            want.extend_from_slice(&buf[..n]);
            if let Some(f) = Finding::compare(
                Kind::Corrupt,
                "wl-dio/probe",
                0,
                &want,
                &back[..got],
                || "an accepted byte-aligned direct write did not store its bytes".into(),
            ) {
                ctx.findings.push(f);
            }
        }
        Err(e) => ctx
            .notes
            .push(format!("byte-aligned direct write: refused ({e})")),
    }
    drop(fd);
    std::fs::remove_file(&path).map_err(|e| crate::Error::at("unlink", &path, e))
}

/// One file written front to back in chunks of 1..=64 units, then read back in chunks of
/// other sizes.
pub(super) fn sequential(ctx: &mut Ctx, space: u64, files: &mut Vec<DioFile>) -> Step<()> {
    let mut rng = ctx.rng(0x5e9);
    let mut f = ctx.create(1, "seq", 4096)?;
    let end = (space / 4096).max(16);
    let mut at = 0;
    while at < end {
        if let Some(why) = ctx.exhausted() {
            ctx.phase.cut_short = Some(why);
            break;
        }
        let n = rng.random_range(1..=64).min(end - at);
        ctx.phase.bytes_written += write_units(&f.fd, &mut f.model, ctx.seed, at * 4096, n, 0)?;
        ctx.phase.ops += 1;
        at += n;
    }
    nix::unistd::fdatasync(&f.fd).map_err(|e| Finding::io(&f.model.name, 0, "fdatasync", e))?;
    // Up to one read past EOF, which must come back short.
    let (mut at, total) = (0, f.model.size / 4096);
    while at <= total {
        let n = rng.random_range(1..=128u64);
        ctx.phase.bytes_read += check_range(
            &f.fd,
            &f.model,
            ctx.seed,
            at * 4096,
            n,
            0,
            &mut ctx.findings,
        )?;
        ctx.phase.ops += 1;
        at += n;
    }
    files.push(f);
    Ok(())
}

/// Batches of `queue_depth` direct reads and writes submitted together on one file. The
/// requests of a batch never overlap, and reads stay below the size the file had before
/// the batch, so every result is defined whatever order they complete in.
pub(super) fn inflight(
    ctx: &mut Ctx,
    cfg: &Config,
    space: u64,
    files: &mut Vec<DioFile>,
) -> Step<()> {
    let mut rng = ctx.rng(0x1f1);
    let mut f = ctx.create(3, "inflight", 4096)?;
    let (mut engine, note) = Engine::new(cfg.queue_depth);
    ctx.notes.push(note);
    let span = (space / 4096).max(64);
    let batches = (cfg.ops / 8).max(20);
    for _ in 0..batches {
        if let Some(why) = ctx.exhausted() {
            ctx.phase.cut_short = Some(why);
            break;
        }
        let size_units = f.model.size / 4096;
        let mut taken: Vec<(u64, u64)> = Vec::new();
        let mut reqs = Vec::new();
        let mut gens = Vec::new();
        let mut next_gen = f.model.next_generation;
        for _ in 0..cfg.queue_depth {
            let write = size_units < 8 || rng.random_bool(0.6);
            let n = rng.random_range(1..=8u64);
            let limit = if write { span } else { size_units };
            if limit < n {
                continue;
            }
            let s = rng.random_range(0..=limit - n);
            if taken.iter().any(|(a, b)| s < *b && *a < s + n) {
                continue;
            }
            taken.push((s, s + n));
            let mut buf = IoBuf::new((n * 4096) as usize, 0);
            if write {
                // Generations as if the writes completed in submission order.
                let mut m = f.model.clone();
                m.next_generation = next_gen;
                fill_units(&mut buf, &m, ctx.seed, s * 4096);
                gens.push((s, n, next_gen));
                next_gen += n;
            }
            reqs.push(Req {
                write,
                offset: s * 4096,
                buf,
            });
        }
        let results = engine
            .run(f.fd.as_fd(), &mut reqs)
            .map_err(|e| Finding::io(&f.model.name, 0, "io_uring submit", e))?;
        let mut writes = gens.iter();
        for (r, res) in reqs.iter().zip(results) {
            let len = r.buf.len();
            let n = res.map_err(|e| {
                Finding::io(
                    &f.model.name,
                    r.offset,
                    &format!("in-flight {}", if r.write { "write" } else { "read" }),
                    e,
                )
            })?;
            if n != len {
                ctx.findings.push(Finding::new(
                    Kind::ShortIo,
                    &f.model.name,
                    r.offset + n as u64,
                    format!("in-flight I/O of {len} bytes transferred {n}"),
                ));
            }
            if r.write {
                let (s, units, g) = *writes.next().expect("one generation range per write");
                for i in 0..units {
                    f.model.blocks.insert((s + i) * 4096, g + i);
                }
                f.model.size = f.model.size.max((s + units) * 4096);
                ctx.phase.bytes_written += len as u64;
            } else {
                check_bytes(
                    &f.model,
                    ctx.seed,
                    r.offset,
                    &r.buf[..n.min(len)],
                    &mut ctx.findings,
                );
                ctx.phase.bytes_read += n as u64;
            }
            ctx.phase.ops += 1;
        }
        f.model.next_generation = next_gen;
    }
    files.push(f);
    Ok(())
}

/// The same units written and read through O_DIRECT, buffered I/O and a shared mapping:
/// whatever path wrote last, every path must read it.
pub(super) fn coherence(ctx: &mut Ctx, files: &mut Vec<DioFile>) -> Step<()> {
    const UNITS: u64 = 32;
    let mut rng = ctx.rng(0xc0e);
    let mut f = ctx.create(4, "coherent", 4096)?;
    let len = UNITS * 4096;
    nix::unistd::ftruncate(&f.fd, len as i64)
        .map_err(|e| Finding::io(&f.model.name, 0, "ftruncate", e))?;
    f.model.truncate(len);
    let buffered = open(&ctx.path("coherent"), OFlag::O_RDWR)
        .map_err(|e| Finding::io(&f.model.name, 0, "open", e))?;
    let map = Map::new(&buffered, len as usize)
        .map_err(|e| Finding::io(&f.model.name, 0, "mmap MAP_SHARED", e))?;
    let paths = ["O_DIRECT", "buffered", "mmap"];
    for round in 0..24 {
        let writer = round % 3;
        let u = rng.random_range(0..UNITS);
        let off = u * 4096;
        let mut buf = IoBuf::new(4096, 0);
        fill_units(&mut buf, &f.model, ctx.seed, off);
        match writer {
            0 => pwrite_all(&f.fd, &buf, off),
            1 => pwrite_all(&buffered, &buf, off),
            _ => map.write(off as usize, &buf),
        }
        .map_err(|e| Finding::io(&f.model.name, off, &format!("{} write", paths[writer]), e))?;
        f.model.wrote(off, 1);
        ctx.phase.bytes_written += 4096;
        // Read the written unit and a random other one through every path.
        for v in [u, rng.random_range(0..UNITS)] {
            for (reader, name) in paths.iter().enumerate() {
                let mut back = IoBuf::new(4096, 0);
                let o = v * 4096;
                match reader {
                    0 => pread_full(&f.fd, &mut back, o).map(drop),
                    1 => pread_full(&buffered, &mut back, o).map(drop),
                    _ => {
                        map.read(o as usize, &mut back);
                        Ok(())
                    }
                }
                .map_err(|e| Finding::io(&f.model.name, o, &format!("{name} read"), e))?;
                let mut found = Findings::default();
                check_bytes(&f.model, ctx.seed, o, &back, &mut found);
                for mut x in found.list {
                    x.detail = format!(
                        "written by {} (unit {u}), read by {name}: {}",
                        paths[writer], x.detail
                    );
                    x.kind = Kind::Incoherent;
                    ctx.findings.push(x);
                }
                ctx.phase.bytes_read += 4096;
                ctx.phase.ops += 1;
            }
        }
        ctx.phase.ops += 1;
    }
    drop(map);
    files.push(f);
    Ok(())
}

/// fsync half the files and fdatasync the others.
pub(super) fn sync_all(ctx: &mut Ctx, files: &[DioFile]) -> Step<()> {
    for (i, f) in files.iter().enumerate() {
        let r = if i % 2 == 0 {
            nix::unistd::fsync(&f.fd)
        } else {
            nix::unistd::fdatasync(&f.fd)
        };
        r.map_err(|e| {
            Finding::io(
                &f.model.name,
                0,
                if i % 2 == 0 { "fsync" } else { "fdatasync" },
                e,
            )
        })?;
        ctx.phase.ops += 1;
    }
    Ok(())
}

/// A shared, writable mapping of a whole file. Writes are made durable with msync
/// (MS_SYNC), the point at which POSIX promises other paths see them.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new<Fd: AsFd>(fd: Fd, len: usize) -> nix::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let length = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh shared mapping of `len` bytes of a file we keep at that size;
        // only this struct touches it, and Drop unmaps it.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        };
        Ok(Self {
            ptr: ptr.as_ptr().cast(),
            len,
        })
    }

    fn write(&self, off: usize, data: &[u8]) -> nix::Result<()> {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of the live mapping (asserted above).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len());
            let page = off & !4095;
            let start = std::ptr::NonNull::new_unchecked(self.ptr.add(page)).cast();
            nix::sys::mman::msync(
                start,
                off + data.len() - page,
                nix::sys::mman::MsFlags::MS_SYNC,
            )
        }
    }

    fn read(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= self.len);
        // SAFETY: in bounds of the live mapping (asserted above).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), out.len()) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        if let Some(ptr) = std::ptr::NonNull::new(self.ptr) {
            let _ = unsafe { nix::sys::mman::munmap(ptr.cast(), self.len) };
        }
    }
}

/// `STATX_DIOALIGN` (Linux 6.1): the direct-I/O alignment fields are filled in.
const STATX_DIOALIGN: u32 = 0x2000;

/// statx(2) of an open file asking for the direct-I/O alignment. libc, not nix: nix has
/// no statx.
fn statx_dioalign(fd: &impl AsFd) -> nix::Result<libc::statx> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx is plain data; the kernel fills it for the call below.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty C string with AT_EMPTY_PATH names the descriptor itself, and `st`
    // lives for the call.
    let rc = unsafe {
        libc::statx(
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_DIOALIGN,
            &mut st,
        )
    };
    Errno::result(rc).map(|_| st)
}
