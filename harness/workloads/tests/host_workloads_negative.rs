//! The verifiers can fail: damage planted behind the filesystem's back (or a record taken
//! out) must come back as the specific finding, on both targets.

use anyhow::{ensure, Context, Result};
use std::os::unix::fs::FileExt;
use std::time::Duration;
use test_support::e2fs::physical_block;
use test_support::Target;
use test_support::{FsSpec, TestFs};
use workloads::block::{write_block, BlockId};
use workloads::record::{make_record, RecordId};
use workloads::{append, dio, Kind};

test_support::target_tests!(
    corrupt_byte_is_found,
    stale_block_is_found,
    dropped_record_is_found
);

/// A small dio run whose manifest the tests tamper against.
fn small_dio(fx: &TestFs, seed: u64) -> Result<dio::Manifest> {
    let cfg = dio::Config {
        seed,
        duration: Duration::from_secs(20),
        max_bytes: 8 << 20,
        files: 2,
        ops: 200,
        queue_depth: 4,
    };
    let r = dio::run(fx.mnt(), &cfg, None)?;
    ensure!(
        r.summary.passed,
        "the untouched run already has findings:\n{}",
        r.summary.render()
    );
    Ok(r.manifest)
}

/// Overwrites `bytes` at file offset `off` (inside one 4 KiB block) of `/path` directly in
/// the unmounted image.
fn poke_image(fx: &TestFs, path: &str, off: u64, bytes: &[u8]) -> Result<u64> {
    let phys = physical_block(fx.image(), path, off / 4096)?;
    let at = phys * 4096 + off % 4096;
    let img = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.image())?;
    img.write_all_at(bytes, at)
        .with_context(|| format!("pwrite at {at} of {}", fx.image().display()))?;
    img.sync_all()?;
    Ok(at)
}

fn read_image(fx: &TestFs, path: &str, off: u64, len: usize) -> Result<Vec<u8>> {
    let phys = physical_block(fx.image(), path, off / 4096)?;
    let mut b = vec![0u8; len];
    std::fs::File::open(fx.image())?.read_exact_at(&mut b, phys * 4096 + off % 4096)?;
    Ok(b)
}

fn corrupt_byte_is_found(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::new(t, FsSpec::plain(64))?;
    let m = small_dio(&fx, 0xbad_0001)?;
    let f = m
        .files
        .iter()
        .find(|f| f.name == "wl-dio/seq")
        .context("no seq file")?;
    // A written unit in the middle of the file; flip a payload byte of it.
    let (unit_off, _) = f
        .blocks
        .iter()
        .nth(f.blocks.len() / 2)
        .context("seq has no blocks")?;
    let off = unit_off + 1234;
    fx.unmount()?;
    let old = read_image(&fx, "/wl-dio/seq", off, 1)?[0];
    let at = poke_image(&fx, "/wl-dio/seq", off, &[old ^ 0x5a])?;
    eprintln!(
        "{}: flipped the byte of wl-dio/seq at {off} (image offset {at})",
        t.name()
    );
    fx.mount()?;
    let s = dio::verify(fx.mnt(), &m)?;
    eprintln!("{}", s.render());
    ensure!(
        s.findings_total == 1,
        "expected exactly one finding:\n{}",
        s.render()
    );
    let x = &s.findings[0];
    ensure!(
        x.kind == Kind::BadChecksum && x.file == "wl-dio/seq" && x.offset == off,
        "{x}"
    );
    ensure!(x.expected[0] == old && x.found[0] == old ^ 0x5a, "{x}");
    // Put it back: the image must end clean and readable.
    fx.unmount()?;
    poke_image(&fx, "/wl-dio/seq", off, &[old])?;
    fx.mount()?;
    ensure!(dio::verify(fx.mnt(), &m)?.passed);
    fx.finish()
}

fn stale_block_is_found(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::new(t, FsSpec::plain(64))?;
    let m = small_dio(&fx, 0xbad_0002)?;
    // A unit overwritten at least once in the random phase, reverted to an older generation.
    let (f, unit_off, generation) = m
        .files
        .iter()
        .filter(|f| f.name.starts_with("wl-dio/rand-"))
        .flat_map(|f| f.blocks.iter().map(move |(o, g)| (f, *o, *g)))
        .max_by_key(|(_, _, g)| *g)
        .context("no random-phase blocks")?;
    let old_gen = generation / 2;
    let mut stale = vec![0u8; 4096];
    write_block(
        &mut stale,
        BlockId {
            seed: 0xbad_0002,
            file_id: f.id,
            offset: unit_off,
            generation: old_gen,
        },
    );
    fx.unmount()?;
    let path = format!("/{}", f.name);
    poke_image(&fx, &path, unit_off, &stale)?;
    eprintln!(
        "{}: {} at {unit_off} reverted from generation {generation} to {old_gen}",
        t.name(),
        f.name
    );
    fx.mount()?;
    let s = dio::verify(fx.mnt(), &m)?;
    eprintln!("{}", s.render());
    ensure!(
        s.findings_total == 1,
        "expected exactly one finding:\n{}",
        s.render()
    );
    let x = &s.findings[0];
    ensure!(x.kind == Kind::Stale && x.file == f.name, "{x}");
    // The first differing byte is in the header's generation field (offset 24..32).
    ensure!((unit_off + 24..unit_off + 32).contains(&x.offset), "{x}");
    ensure!(
        x.detail.contains(&format!("generation {old_gen} "))
            && x.detail
                .contains(&format!("expected generation {generation}")),
        "{x}"
    );
    // Restore the current generation so the image ends consistent with the model.
    fx.unmount()?;
    let mut current = vec![0u8; 4096];
    write_block(
        &mut current,
        BlockId {
            seed: 0xbad_0002,
            file_id: f.id,
            offset: unit_off,
            generation,
        },
    );
    poke_image(&fx, &path, unit_off, &current)?;
    fx.mount()?;
    ensure!(dio::verify(fx.mnt(), &m)?.passed);
    fx.finish()
}

fn dropped_record_is_found(t: &dyn Target) -> Result<()> {
    let mut fx = TestFs::new(t, FsSpec::plain(64))?;
    let ack = fx.scratch().join("ack.log");
    let seed = 0xbad_0003;
    let cfg = append::Config {
        seed,
        writers: 3,
        records: 40,
        ack_log: Some(ack.clone()),
        ..append::Config::default()
    };
    let s = append::run(fx.mnt(), &cfg, None)?;
    ensure!(s.passed, "{}", s.render());
    let log = fx.mnt().join("wl-append/shared.log");
    let data = std::fs::read(&log)?;
    // Take out a record from the middle of the file, one that is not its writer's last:
    // a fast target can run one writer to its end before the others start.
    let scan = workloads::record::scan("l", &data, seed, &[]);
    let (victim, next_same_writer) = (scan.records.len() / 2..scan.records.len())
        .find_map(|i| {
            let victim = scan.records[i];
            scan.records[i + 1..]
                .iter()
                .find(|r| r.id.writer == victim.id.writer)
                .map(|next| (victim, *next))
        })
        .context("no record in the second half has a later record of its writer")?;
    let mut cut = data[..victim.offset as usize].to_vec();
    cut.extend_from_slice(&data[victim.offset as usize + victim.len..]);
    std::fs::write(&log, &cut)?;
    fx.remount()?;
    let v = append::verify_acked(fx.mnt(), &ack, true)?;
    eprintln!(
        "{}: dropped writer {} seq {} at {}\n{}",
        t.name(),
        victim.id.writer,
        victim.id.seq,
        victim.offset,
        v.render()
    );
    ensure!(
        v.findings_total == 2,
        "expected a missing record and a size finding:\n{}",
        v.render()
    );
    let (missing, size) = (&v.findings[0], &v.findings[1]);
    let want = make_record(
        seed,
        RecordId {
            writer: victim.id.writer,
            seq: victim.id.seq,
        },
        workloads::record::Style::Buffered,
    );
    ensure!(
        missing.kind == Kind::MissingRecord && missing.file == "wl-append/shared.log",
        "{missing}"
    );
    ensure!(
        missing.detail.contains(&format!(
            "writer {} seq {} ",
            victim.id.writer, victim.id.seq
        )),
        "{missing}"
    );
    // Reported where it belongs: just before the writer's next record, which moved up.
    ensure!(
        missing.offset == next_same_writer.offset - victim.len as u64,
        "{missing}"
    );
    ensure!(missing.expected == want[..16], "{missing}");
    ensure!(
        size.kind == Kind::Size && size.detail.contains(&format!("size is {}", cut.len())),
        "{size}"
    );
    // The acknowledged-only check (the crash verifier) finds the same loss.
    let v = append::verify_acked(fx.mnt(), &ack, false)?;
    ensure!(
        v.findings_total == 1 && v.findings[0].kind == Kind::MissingRecord,
        "{}",
        v.render()
    );
    fx.finish()
}
