//! Random operations on sparse files against the model: writes into holes, overwrites in
//! place, writes past EOF, fallocate (with and without KEEP_SIZE) and writes into the
//! preallocated ranges, punched holes, truncates both ways, reads checked unit by unit,
//! fsync/fdatasync. The same engine drives 4 KiB units and 512-byte sectors.

use super::io::{check_range, check_size, write_units, Step};
use super::{Config, Ctx, DioFile};
use crate::finding::Finding;
use nix::errno::Errno;
use nix::fcntl::FallocateFlags;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::os::fd::OwnedFd;

/// Which optional operations the target supports (learned on first refusal).
struct Caps {
    fallocate: bool,
    punch: bool,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Write,
    Overwrite,
    Extend,
    Fallocate,
    IntoPrealloc,
    Punch,
    Truncate,
    Read,
    Sync,
}

const WEIGHTS: [(Op, u32); 9] = [
    (Op::Write, 30),
    (Op::Overwrite, 14),
    (Op::Extend, 8),
    (Op::Fallocate, 6),
    (Op::IntoPrealloc, 8),
    (Op::Punch, 4),
    (Op::Truncate, 3),
    (Op::Read, 24),
    (Op::Sync, 3),
];

fn pick(rng: &mut ChaCha8Rng) -> Op {
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (op, w) in WEIGHTS {
        if x < w {
            return op;
        }
        x -= w;
    }
    Op::Read
}

/// Shape of one random-op run.
struct Shape {
    /// File span in units: no operation reaches past it.
    span: u64,
    /// Longest write in units.
    max_units: u64,
    /// Memory misalignment of the buffers (512 for the sector file).
    misalign: usize,
    ops: u64,
}

pub(super) fn random_files(
    ctx: &mut Ctx,
    cfg: &Config,
    space: u64,
    files: &mut Vec<DioFile>,
) -> Step<()> {
    let first = files.len();
    for i in 0..cfg.files {
        files.push(ctx.create(10 + i, &format!("rand-{i}"), 4096)?);
    }
    let span = (space / cfg.files as u64 / 4096).max(64);
    let shape = Shape {
        span,
        max_units: 64,
        misalign: 0,
        ops: cfg.ops,
    };
    run_ops(ctx, &mut files[first..], &shape, 0x7a4d)
}

/// 512-byte units written with 512-aligned (not page-aligned) buffers at sector offsets,
/// when the target accepts sector-aligned direct I/O (see the probe).
pub(super) fn sector_file(
    ctx: &mut Ctx,
    cfg: &Config,
    space: u64,
    files: &mut Vec<DioFile>,
) -> Step<()> {
    if !sector_dio_accepted(ctx)? {
        ctx.phase.cut_short =
            Some("skipped: the target refuses 512-byte-aligned direct I/O".into());
        return Ok(());
    }
    files.push(ctx.create(2, "sector", 512)?);
    let n = files.len();
    let shape = Shape {
        span: (space / 512).max(64),
        max_units: 24,
        misalign: 512,
        ops: (cfg.ops / 4).max(50),
    };
    run_ops(ctx, &mut files[n - 1..], &shape, 0x5ec7)
}

/// Whether a 512-byte direct write at offset 512 from a 512-aligned buffer works.
fn sector_dio_accepted(ctx: &mut Ctx) -> Step<bool> {
    let probe = ctx.create(0, "probe", 512)?;
    let buf = super::io::IoBuf::new(512, 512);
    let r = nix::sys::uio::pwrite(&probe.fd, &buf, 512);
    drop(probe);
    let _ = std::fs::remove_file(ctx.path("probe"));
    match r {
        Ok(_) => {
            ctx.notes
                .push("512-byte-aligned direct writes (offset and memory): accepted".into());
            Ok(true)
        }
        Err(Errno::EINVAL) => {
            ctx.notes
                .push("512-byte-aligned direct writes: refused (EINVAL)".into());
            Ok(false)
        }
        Err(e) => Err(Finding::io(
            "wl-dio/probe",
            512,
            "512-byte O_DIRECT pwrite",
            e,
        )),
    }
}

fn run_ops(ctx: &mut Ctx, files: &mut [DioFile], shape: &Shape, tag: u64) -> Step<()> {
    let mut rng = ctx.rng(tag);
    let mut caps = Caps {
        fallocate: true,
        punch: true,
    };
    // The last preallocated range per file: (offset, units).
    let mut prealloc: Vec<Option<(u64, u64)>> = vec![None; files.len()];
    for _ in 0..shape.ops {
        if let Some(why) = ctx.exhausted() {
            ctx.phase.cut_short = Some(why);
            break;
        }
        let fi = rng.random_range(0..files.len());
        let f = &mut files[fi];
        let unit = f.model.unit();
        let span = shape.span;
        let len_units = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.1) {
                rng.random_range(1..=shape.max_units)
            } else {
                rng.random_range(1..=8.min(shape.max_units))
            }
        };
        // Start and length of a write in units, clipped to the span.
        let clip = |start: u64, n: u64| (start.min(span - 1), n.min(span - start.min(span - 1)));
        let op = pick(&mut rng);
        let write_at = |ctx: &mut Ctx, f: &mut DioFile, start: u64, n: u64| -> Step<()> {
            let (start, n) = clip(start, n);
            let bytes = write_units(
                &f.fd,
                &mut f.model,
                ctx.seed,
                start * unit,
                n,
                shape.misalign,
            )?;
            ctx.phase.bytes_written += bytes;
            Ok(())
        };
        match op {
            Op::Write => {
                let (s, n) = (rng.random_range(0..span), len_units(&mut rng));
                write_at(ctx, f, s, n)?;
            }
            Op::Overwrite => {
                let near = f.model.written_near(rng.random_range(0..span) * unit);
                let s = near
                    .map(|o| o / unit)
                    .unwrap_or_else(|| rng.random_range(0..span));
                let n = rng.random_range(1..=4);
                write_at(ctx, f, s, n)?;
            }
            Op::Extend => {
                let s = f.model.size / unit + rng.random_range(0..=8);
                if s >= span {
                    // Full: shrink instead, so later extends have room.
                    let to = rng.random_range(0..=span / 2) * unit;
                    truncate(f, to)?;
                } else {
                    let n = len_units(&mut rng);
                    write_at(ctx, f, s, n)?;
                }
            }
            Op::Fallocate if caps.fallocate => {
                let (s, n) = clip(rng.random_range(0..span), rng.random_range(1..=64));
                let keep = rng.random_bool(0.5);
                let flags = if keep {
                    FallocateFlags::FALLOC_FL_KEEP_SIZE
                } else {
                    FallocateFlags::empty()
                };
                match fallocate(&f.fd, flags, s * unit, n * unit) {
                    Ok(()) => {
                        f.model.allocate(s * unit, n * unit, keep);
                        prealloc[fi] = Some((s, n));
                    }
                    Err(Errno::EOPNOTSUPP) => {
                        caps.fallocate = false;
                        ctx.notes.push(format!(
                            "{}: fallocate is not supported (EOPNOTSUPP)",
                            f.model.name
                        ));
                    }
                    Err(e) => {
                        return Err(Finding::io(
                            &f.model.name,
                            s * unit,
                            &format!("fallocate {n} units keep_size={keep}"),
                            e,
                        ))
                    }
                }
            }
            Op::IntoPrealloc => match prealloc[fi] {
                Some((s, n)) => {
                    let at = s + rng.random_range(0..n);
                    let k = rng.random_range(1..=(s + n - at));
                    write_at(ctx, f, at, k)?;
                }
                None => {
                    let (s, n) = (rng.random_range(0..span), len_units(&mut rng));
                    write_at(ctx, f, s, n)?;
                }
            },
            Op::Punch if caps.punch => {
                let (s, n) = clip(rng.random_range(0..span), rng.random_range(1..=32));
                let flags =
                    FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                match fallocate(&f.fd, flags, s * unit, n * unit) {
                    Ok(()) => f.model.zero(s * unit, n * unit),
                    Err(Errno::EOPNOTSUPP) => {
                        caps.punch = false;
                        ctx.notes.push(format!(
                            "{}: punching holes is not supported (EOPNOTSUPP)",
                            f.model.name
                        ));
                    }
                    Err(e) => {
                        return Err(Finding::io(
                            &f.model.name,
                            s * unit,
                            &format!("punch {n} units"),
                            e,
                        ))
                    }
                }
            }
            Op::Truncate => {
                let units = f.model.size / unit;
                let to = if rng.random_bool(0.6) {
                    rng.random_range(0..=units)
                } else {
                    (units + rng.random_range(1..=8)).min(span)
                };
                truncate(f, to * unit)?;
            }
            Op::Read | Op::Fallocate | Op::Punch => {
                let s = rng.random_range(0..(f.model.size / unit + 4).min(span));
                let n = rng.random_range(1..=64);
                check_size(&f.fd, &f.model, &mut ctx.findings)?;
                let read = check_range(
                    &f.fd,
                    &f.model,
                    ctx.seed,
                    s * unit,
                    n,
                    shape.misalign,
                    &mut ctx.findings,
                )?;
                ctx.phase.bytes_read += read;
            }
            Op::Sync => {
                let r = if rng.random_bool(0.5) {
                    nix::unistd::fsync(&f.fd)
                } else {
                    nix::unistd::fdatasync(&f.fd)
                };
                r.map_err(|e| Finding::io(&f.model.name, 0, "fsync/fdatasync", e))?;
            }
        }
        ctx.phase.ops += 1;
    }
    Ok(())
}

fn truncate(f: &mut DioFile, size: u64) -> Step<()> {
    super::io::offset(size)
        .and_then(|size| nix::unistd::ftruncate(&f.fd, size))
        .map_err(|e| Finding::io(&f.model.name, size, "ftruncate", e))?;
    f.model.truncate(size);
    Ok(())
}

/// fallocate(2) with the workload's unsigned offsets (EFBIG past `off_t`).
fn fallocate(fd: &OwnedFd, flags: FallocateFlags, off: u64, len: u64) -> nix::Result<()> {
    use super::io::offset;
    nix::fcntl::fallocate(fd, flags, offset(off)?, offset(len)?)
}
