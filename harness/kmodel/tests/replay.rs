//! Recorded sessions replay (issue 15, parts 4 and 5): kmodel drives iomapfs over the
//! kernel socket with `-o record=FILE`, and `iomapfs replay` plays the recording back
//! against a fresh server on a copy of the starting image. An unchanged server matches
//! every reply and notification; a server with a deliberate bug does not, and the replay
//! names the request and the field.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Fixture;
use fuse_wire::consts::FUSE_ROOT_ID;
use iomapfs::replay::{self, Ending, Report};

const MIB: u64 = 1 << 20;

/// A fixture whose server records to `session.<ext>`, and a copy of its fresh image.
fn recorded_fixture(ext: &str, extra: &[&str]) -> (Fixture, PathBuf, PathBuf) {
    let fx = Fixture::new(64 * MIB, 4096, &[]);
    let recording = fx.dir.path().join(format!("session.{ext}"));
    let before = fx.dir.path().join("before.img");
    std::fs::copy(&fx.spec.image, &before).expect("copy the fresh image");
    let mut fx = fx;
    fx.spec
        .options
        .push(format!("record={}", recording.display()));
    fx.spec.options.extend(extra.iter().map(|s| s.to_string()));
    (fx, recording, before)
}

/// A session that touches every kind of reply the replay compares: entries, attributes,
/// opens, iomap mappings, conversions, directories, links, xattr-free metadata, a file
/// freed while open (DEV_INVAL), sync, and DESTROY.
fn workload(fx: &Fixture) {
    let mut k = fx.mount();
    let root = FUSE_ROOT_ID;
    let a = k.create(root, "a", 0o644).unwrap();
    k.write(a, 0, &vec![1u8; 10_000]).unwrap();
    k.writeback(a).unwrap();
    k.append(a, b"tail").unwrap();
    k.fsync(a).unwrap();
    k.truncate(a, 5000).unwrap();
    k.fallocate(a, 0, 64 << 10, 64 << 10).unwrap();
    k.seek_data(a, 8192).unwrap();
    let d = k.mkdir(root, "d", 0o755).unwrap();
    k.rename(root, "a", d, "b", 0).unwrap();
    k.symlink(d, "s", "b").unwrap();
    k.link(a, root, "a2").unwrap();
    let big = k.create(root, "big", 0o600).unwrap();
    k.write(big, 0, &vec![7u8; 2 << 20]).unwrap();
    k.writeback(big).unwrap();
    k.unlink(root, "big").unwrap();
    k.readdir(d).unwrap();
    k.readdir(root).unwrap();
    k.getattr(a).unwrap();
    k.syncfs().unwrap();
    k.destroy().unwrap();
}

fn replay(recording: &Path, image: &Path, options: &[&str]) -> Report {
    replay::replay(&replay::Config {
        recording: recording.to_path_buf(),
        image: image.to_path_buf(),
        options: options.iter().map(|s| s.to_string()).collect(),
        workdir: None,
    })
    .unwrap_or_else(|e| panic!("the replay could not run: {e:#}"))
}

#[test]
fn an_unchanged_server_replays_a_recorded_session_with_no_difference() {
    let (fx, recording, before) = recorded_fixture("rec", &[]);
    workload(&fx);
    let before_bytes = std::fs::read(&before).unwrap();
    let report = replay(&recording, &before, &[]);
    println!("{report}");
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(Ending::Complete));
    assert!(report.requests > 50, "{report}");
    assert_eq!(report.unanswered, 0, "{report}");
    assert!(
        report.notifications > 0,
        "freeing the unlinked file sends DEV_INVAL, and the replay compared it: {report}"
    );
    assert_eq!(
        std::fs::read(&before).unwrap(),
        before_bytes,
        "the replay never changes the image it is given"
    );
}

#[test]
fn a_server_with_a_mapping_bug_is_caught_at_the_first_mapping() {
    let (fx, recording, before) = recorded_fixture("rec", &[]);
    workload(&fx);
    let report = replay(&recording, &before, &["fault=map_off_by_one_block"]);
    println!("{report}");
    let finding = report
        .finding
        .expect("the off-by-one mapping is a difference");
    assert_eq!(finding.opcode, "IomapBegin", "{finding}");
    assert!(
        finding.what.starts_with("reply iomap_begin_out.") && finding.what.ends_with(".addr"),
        "the field named is the mapping's address: {finding}"
    );
}

#[test]
fn a_server_that_loses_the_appended_size_is_caught() {
    let (fx, recording, before) = recorded_fixture("rec", &[]);
    workload(&fx);
    let report = replay(&recording, &before, &["fault=lose_append_size"]);
    println!("{report}");
    let finding = report.finding.expect("a lost size is a difference");
    assert!(finding.what.contains("size"), "{finding}");
}

#[test]
fn a_compressed_recording_replays_and_is_smaller() {
    let (fx, recording, before) = recorded_fixture("rec.zst", &[]);
    workload(&fx);
    let report = replay(&recording, &before, &[]);
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(Ending::Complete));
    let magic = std::fs::read(&recording).unwrap()[..4].to_vec();
    assert_eq!(magic, [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");

    // The same session recorded plain.
    let (fx, plain, _) = recorded_fixture("rec", &[]);
    workload(&fx);
    let (zst, plain) = (
        std::fs::metadata(&recording).unwrap().len(),
        std::fs::metadata(&plain).unwrap().len(),
    );
    println!("compressed {zst} bytes, plain {plain} bytes");
    assert!(
        zst * 2 < plain,
        "compressed {zst} bytes, plain {plain} bytes"
    );
}

#[test]
fn a_recording_cut_at_record_max_replays_up_to_the_cut() {
    let (fx, recording, before) = recorded_fixture("rec", &["record_max=64K"]);
    // Some 200 KiB of messages.
    let mut k = fx.mount();
    for i in 0..300 {
        let f = k.create(FUSE_ROOT_ID, &format!("f{i}"), 0o644).unwrap();
        k.write(f, 0, b"x").unwrap();
        k.fsync(f).unwrap();
    }
    k.destroy().unwrap();
    let size = std::fs::metadata(&recording).unwrap().len();
    assert!(
        size <= 64 << 10,
        "the recording stays within record_max: {size}"
    );
    let report = replay(&recording, &before, &[]);
    println!("{report}");
    assert_eq!(report.ending, Some(Ending::Stopped(64 << 10)));
    assert_eq!(report.finding, None, "{report}");
    assert!(report.requests > 10, "{report}");
}

/// The command line: exit 0 and `no differences`; exit 1 and the request on a difference;
/// exit 2 and a reason for a recording that is not one.
#[test]
fn the_replay_command_exits_by_outcome() {
    let (fx, recording, before) = recorded_fixture("rec", &[]);
    workload(&fx);
    let run = |recording: &Path, extra: &[&str]| {
        let out = Command::new(common::server_binary())
            .arg("replay")
            .arg(recording)
            .arg("--image")
            .arg(&before)
            .args(extra)
            .output()
            .expect("run iomapfs replay");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(&recording, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no differences"), "{text}");

    let (code, text) = run(&recording, &["-o", "fault=map_off_by_one_block"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FIRST DIFFERENCE: request #"), "{text}");
    assert!(text.contains("IomapBegin"), "{text}");

    let garbage = fx.dir.path().join("garbage.rec");
    std::fs::write(&garbage, b"not a recording at all").unwrap();
    let (code, text) = run(&garbage, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not an iomapfs recording"), "{text}");

    let other = fx.dir.path().join("other.img");
    kmodel::image::mkfs_with(&other, 64 * MIB, 4096, "^inline_data").unwrap();
    let out = Command::new(common::server_binary())
        .args([
            "replay".as_ref(),
            recording.as_os_str(),
            "--image".as_ref(),
            other.as_os_str(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("is not the image the recorded server started from"),
        "{text}"
    );
}
