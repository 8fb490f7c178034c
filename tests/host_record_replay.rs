//! A session of iomapfs on the host kernel's FUSE, recorded with `-o record=FILE`, replays
//! with no difference against a fresh server on a copy of the starting image; with an
//! injected failure the replay reports the first reply that differs (issue 15, parts 4-5).
//!
//! The server runs with `threads=1`, so the recording is the order it served requests in
//! and the serial replay is exact (see harness/iomapfs/RECORD.md on several threads).

use anyhow::{ensure, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use test_support::{FsSpec, Iomapfs, Target, TestFs};

use iomapfs::replay::{self, Ending};

#[test]
fn a_host_fuse_session_replays_with_no_difference() {
    test_support::run(&Iomapfs::default(), record_and_replay_body);
}

/// Creates, writes, reads, renames, links, truncates, syncs and removes through the
/// kernel, as any program would.
fn workload(mnt: &Path) -> Result<()> {
    let dir = mnt.join("d");
    std::fs::create_dir(&dir)?;
    let a = dir.join("a");
    let mut f = std::fs::File::create(&a)?;
    f.write_all(&vec![0x5a; 300_000])?;
    f.sync_all()?;
    f.seek(SeekFrom::Start(4096 * 20))?;
    f.write_all(b"in the middle")?;
    f.set_len(200_000)?;
    drop(f);
    let mut back = Vec::new();
    std::fs::File::open(&a)?.read_to_end(&mut back)?;
    ensure!(back.len() == 200_000, "read back {} bytes", back.len());
    std::fs::rename(&a, mnt.join("b"))?;
    std::fs::hard_link(mnt.join("b"), dir.join("b2"))?;
    std::os::unix::fs::symlink("b", mnt.join("s"))?;
    for i in 0..20 {
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}"))?;
    }
    let names = std::fs::read_dir(&dir)?.count();
    ensure!(names == 21, "{names} names in d");
    std::fs::remove_file(dir.join("f3"))?;
    std::fs::remove_file(mnt.join("b"))?;
    nix::unistd::sync();
    Ok(())
}

fn record_and_replay_body(target: &dyn Target) -> Result<()> {
    let rec_dir = tempfile::Builder::new().prefix("e2e-record-").tempdir()?;
    let recording = rec_dir.path().join("session.rec");
    let mut spec = FsSpec::plain(64);
    spec.mount.fuse_opts = vec![
        format!("record={}", recording.display()),
        "threads=1".into(),
        // The replay preens its copy as the server did its source.
        "preen".into(),
        // The replay's clock is the recording's start plus each request's time, finer
        // than the coarse clock the recorded server stamped with: a tie between a time it
        // stamped and one the kernel sent can break the other way, and with it an atime
        // decision (an OPEN's FOPEN_KEEP_CACHE). See RECORD.md.
        "noatime".into(),
    ];
    let mut fs = TestFs::unmounted(target, spec)?;
    let before = rec_dir.path().join("before.img");
    std::fs::copy(fs.image(), &before)?;
    fs.mount()?;
    workload(fs.mnt()).with_context(|| fs.server_log())?;
    // Waits for the server to exit: the recording is complete then.
    fs.unmount()?;

    let run = |options: &[&str]| {
        replay::replay(&replay::Config {
            recording: recording.clone(),
            image: before.clone(),
            options: options.iter().map(|s| s.to_string()).collect(),
            workdir: Some(rec_dir.path().to_path_buf()),
        })
    };
    let report = run(&[])?;
    println!("{report}");
    ensure!(report.finding.is_none(), "{report}");
    ensure!(report.ending == Some(Ending::Complete), "{report}");
    ensure!(report.requests > 50, "{report}");

    // The 40th change libext2fs is asked to make fails: some reply that succeeded in the
    // recording is an error in the replay, and the replay says which.
    let report = run(&["fault=fail_step:40:enospc"])?;
    println!("{report}");
    let finding = report
        .finding
        .context("an injected ENOSPC is a difference")?;
    ensure!(finding.what == "reply error", "{finding}");
    ensure!(finding.detail.contains("ENOSPC"), "{finding}");
    Ok(())
}
