//! Proof that the model can fail (issue item 4): iomapfs started with each test-only fault
//! switch (`-o fault=NAME`) must be caught by kmodel, with the failure that fault causes.
//!
//! Each fault gets a small deterministic scenario (asserting the exact kind of failure) and
//! a short random run with a fixed seed, whose fault-free control run must pass.

mod common;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use kmodel::{Error, RunConfig, SparseFile};

const SEED: u64 = 11;
const OPS: u64 = 400;

fn run(options: Vec<String>) -> Result<kmodel::RunReport, Box<kmodel::RunFailure>> {
    let mut cfg = RunConfig::new(common::server_binary(), SEED, OPS);
    cfg.server_options = options;
    cfg.remount_every = 150;
    kmodel::run(&cfg)
}

/// The random run with `fault` fails, the same run without it passes.
fn random_run_catches(fault: &str, expected: impl Fn(&Error) -> bool) {
    match run(Vec::new()) {
        Ok(report) => println!("control run without a fault passed: {report}"),
        Err(failure) => panic!("the control run failed, so nothing can be concluded:\n{failure}"),
    }
    match run(vec![format!("fault={fault}")]) {
        Ok(report) => panic!("fault {fault} went unnoticed by a random run: {report}"),
        Err(failure) => {
            println!(
                "fault {fault} caught at step {} ({}):\n{}",
                failure.step, failure.op, failure.error
            );
            assert!(
                expected(&failure.error),
                "fault {fault} caught, but not as expected:\n{failure}"
            );
        }
    }
}

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

#[test]
fn map_off_by_one_block_is_caught() {
    // Reads and writes are both shifted, so the model's own read-back agrees with itself;
    // the independent reader, which follows the real extent tree, does not.
    let fx = Fixture::new(64 << 20, 4096, &["fault=map_off_by_one_block"]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    let data = pattern(2 * 4096);
    k.write_direct(f, 0, &data, 0).unwrap();
    k.destroy().unwrap();
    let mut oracle = SparseFile::new();
    oracle.write(0, &data);
    let files = [("f".to_string(), oracle)].into_iter().collect();
    let err =
        kmodel::image::independent_check(&fx.spec.image, &files, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Independent(_)), "{err}");
    println!("caught: {err}");

    random_run_catches("map_off_by_one_block", |e| {
        matches!(e, Error::Independent(_) | Error::Mismatch(_) | Error::Fsck { .. } | Error::Violation { .. })
            // Shifted data can land on the server's own metadata, which it then finds corrupt.
            || e.errno() == Some(117)
    });
}

#[test]
fn skip_unwritten_conversion_is_caught() {
    // A direct write into a hole goes to an unwritten extent; without conversion at IOEND
    // the data reads back as zeroes.
    let fx = Fixture::new(64 << 20, 4096, &["fault=skip_unwritten_conversion"]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    let data = pattern(4096);
    k.write_direct(f, 8192, &data, 0).unwrap();
    let mut oracle = SparseFile::new();
    oracle.write(8192, &data);
    let got = k.read_direct(f, 8192, 4096).unwrap();
    let err = oracle
        .check("f", "direct read after direct write", 8192, &got)
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    println!("caught: {err}");
    k.destroy().unwrap();

    random_run_catches("skip_unwritten_conversion", |e| {
        matches!(e, Error::Mismatch(_) | Error::Independent(_))
    });
}

#[test]
fn lose_append_size_is_caught() {
    // Appends complete with APPEND ioends (and END with SIZE_CHANGED); a server that drops
    // the size loses the tail on remount, and says so right after fsync.
    let fx = Fixture::new(64 << 20, 4096, &["fault=lose_append_size"]);
    let mut k = fx.mount();
    let f = k.create(FUSE_ROOT_ID, "f", 0o644).unwrap();
    let mut oracle = SparseFile::new();
    for _ in 0..3 {
        let at = k.append(f, b"appended line\n").unwrap();
        oracle.write(at, b"appended line\n");
    }
    k.fsync(f).unwrap();
    let attr = k.getattr(f).unwrap();
    let err = oracle
        .check_size("f", "size after fsync", attr.size)
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    println!("caught: {err}");
    k.destroy().unwrap();
    let mut k = fx.mount();
    let f = k.lookup(FUSE_ROOT_ID, "f").unwrap();
    let err = oracle
        .check_size("f", "size after remount", k.inode(f).unwrap().i_size)
        .unwrap_err();
    println!("caught again after remount: {err}");
    k.destroy().unwrap();

    random_run_catches("lose_append_size", |e| {
        matches!(e, Error::Mismatch(m) if m.what.contains("size"))
            || matches!(e, Error::Independent(s) if s.contains("size"))
    });
}
