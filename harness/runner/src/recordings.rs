//! The FUSE server's recorded sessions of a run (every iomapfs a test starts records into
//! `tests/<test>/recordings/`, with a snapshot of the filesystem it opened; see
//! `iomapfs::record::harness`): after the run the host keeps those of the tests that fail
//! the run and deletes the rest ([`settle`]), and `cargo xtask replay RUN TEST` replays a
//! kept test's sessions on the host ([`replay_main`]).
//!
//! The recordings are the guest's files: nothing here follows a link the guest planted.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use report::RunResult;
use vm::rundir::real_dirs;
use vm::RunDir;

/// Deepest test directory looked at (`[vm-K/]tests/<name with slashes>`).
const MAX_DEPTH: usize = 10;

/// What [`settle`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Recording directories kept (relative to the run directory), for failing tests.
    pub kept: Vec<String>,
    /// Recording directories deleted: every test that used them passed (or was skipped).
    pub deleted: Vec<String>,
}

/// Keeps the recordings of the tests that fail the run (`report::policy::fails_run`) and
/// deletes the others, dropping them from the tests' artifacts; rewrites results.json and
/// junit.xml when an artifact went. A recording directory belongs to the test directory
/// it is in (`[vm-K/]tests/<test>/recordings`): it is kept when a failing test lists an
/// artifact in that test directory (an fstests test lists files of its batch's).
pub fn settle(run: &Path, result: &mut RunResult) -> Result<Settled> {
    let mut dirs = vec![];
    find_dirs(run, Path::new(""), 0, &mut dirs);
    let mut settled = Settled::default();
    let mut changed = false;
    for rel in dirs {
        let test_dir = format!("{}/", rel.parent().unwrap_or(Path::new("")).display());
        let name = rel.display().to_string();
        let mut kept = false;
        for t in result.tests.iter_mut() {
            if report::policy::fails_run(t) && t.artifacts.iter().any(|a| a.starts_with(&test_dir))
            {
                kept = true;
                // fstests lists only its own files: the batch's recordings are listed here.
                for f in recording_files(run, &rel) {
                    if !t.artifacts.contains(&f) {
                        t.artifacts.push(f);
                        changed = true;
                    }
                }
            }
        }
        if kept {
            settled.kept.push(name);
            continue;
        }
        // remove_dir_all removes links, never what they point at.
        std::fs::remove_dir_all(run.join(&rel))
            .with_context(|| format!("deleting {}", run.join(&rel).display()))?;
        settled.deleted.push(name);
    }
    if !settled.deleted.is_empty() {
        let gone: Vec<String> = settled.deleted.iter().map(|d| format!("{d}/")).collect();
        for t in &mut result.tests {
            t.artifacts
                .retain(|a| !gone.iter().any(|g| a.starts_with(g.as_str())));
        }
        changed = true;
    }
    if changed {
        report::write_json(result, &run.join("results.json"))?;
        report::write_junit(result, &run.join("junit.xml"))?;
    }
    Ok(settled)
}

/// The regular files of the recording directory `rel` (relative to the run), sorted.
fn recording_files(run: &Path, rel: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(run.join(rel)) else {
        return vec![];
    };
    let mut files: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| rel.join(e.file_name()).display().to_string())
        .collect();
    files.sort();
    files
}

/// Every `recordings` directory under a `tests` directory, through real directories only.
fn find_dirs(root: &Path, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for e in rd.flatten() {
        // DirEntry::file_type does not follow links.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let sub = rel.join(e.file_name());
        let under_tests = sub.components().any(|c| c.as_os_str() == "tests");
        if under_tests && e.file_name() == events::RECORDINGS_DIR {
            out.push(sub);
        } else {
            find_dirs(root, &sub, depth + 1, out);
        }
    }
    out.sort();
}

/// One recorded session of a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `session-NNN`, or `vm-K/session-NNN` in a `--jobs` run.
    pub name: String,
    pub recording: PathBuf,
    /// The filesystem as the server opened it.
    pub snapshot: PathBuf,
}

/// The recorded sessions of `test` in the run directory `run`, in order; an error saying
/// why when there are none. Files behind links, and anything but regular files, are
/// refused.
pub fn sessions(run: &Path, test: &str) -> Result<Vec<Session>> {
    events::check_test_name(test).map_err(|e| anyhow::anyhow!("test `{test}`: {e}"))?;
    let mut roots = vec![(String::new(), PathBuf::new())];
    if let Ok(rd) = std::fs::read_dir(run) {
        let mut jobs: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vm-"))
            .collect();
        jobs.sort();
        roots.extend(
            jobs.into_iter()
                .map(|j| (format!("{j}/"), PathBuf::from(j))),
        );
    }
    let mut found = vec![];
    let mut test_seen = false;
    for (prefix, root) in roots {
        let test_dir = root.join("tests").join(test);
        let dir = test_dir.join(events::RECORDINGS_DIR);
        if !real_dirs(run, &test_dir) {
            continue;
        }
        test_seen |= run.join(&test_dir).is_dir();
        if !real_dirs(run, &dir) {
            continue;
        }
        for n in 1..=iomapfs::record::harness::MAX_SESSIONS {
            let (rec, img) = iomapfs::record::harness::session_files(&run.join(&dir), n);
            let Ok(meta) = std::fs::symlink_metadata(&rec) else {
                break;
            };
            if !meta.is_file() {
                bail!(
                    "{}: not a regular file (planted by the guest?)",
                    rec.display()
                );
            }
            match std::fs::symlink_metadata(&img) {
                Ok(m) if m.is_file() => {}
                Ok(_) => bail!(
                    "{}: not a regular file (planted by the guest?)",
                    img.display()
                ),
                Err(_) => bail!(
                    "{} has no snapshot {}: the server could not save the filesystem",
                    rec.display(),
                    img.display()
                ),
            }
            found.push(Session {
                name: format!("{prefix}session-{n:03}"),
                recording: rec,
                snapshot: img,
            });
        }
    }
    if found.is_empty() {
        if !test_seen {
            bail!("run {} has no test `{test}`", run.display());
        }
        bail!(
            "test `{test}` of run {} has no recording: its recordings were deleted because \
             it passed, or it started no iomapfs",
            run.display()
        );
    }
    Ok(found)
}

/// `cargo xtask replay`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReplayArgs {
    /// The run: an id, `latest`, or a run directory.
    pub run: String,
    /// The test, as results.json names it (e.g. `smoke/mount`, `run/1`).
    pub test: String,
    /// Replay only this session (`1` for session-001); default: all, in order.
    #[arg(long, value_name = "N")]
    pub session: Option<u32>,
}

/// Replays the test's sessions in order, each on its snapshot, until one differs.
/// Returns the exit code: 0 no difference, 1 a difference, 2 nothing could be replayed.
pub fn replay_main(args: &ReplayArgs) -> i32 {
    match replay(args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

fn replay(args: &ReplayArgs) -> Result<bool> {
    let runs = crate::vm_test::runs_root();
    let by_id = runs.join(&args.run);
    let path = if !args.run.contains('/') && by_id.exists() {
        by_id
    } else {
        PathBuf::from(&args.run)
    };
    let run = RunDir::open(&path).with_context(|| {
        format!(
            "no run `{}` ({}); runs are in {}",
            args.run,
            path.display(),
            runs.display()
        )
    })?;
    let mut sessions = sessions(&run.path, &args.test)?;
    if let Some(n) = args.session {
        let want = format!("session-{n:03}");
        sessions.retain(|s| s.name.ends_with(&want));
        if sessions.is_empty() {
            bail!("test `{}` has no {want}", args.test);
        }
    }
    for s in &sessions {
        println!("{}: {}", s.name, s.recording.display());
        let cfg = iomapfs::replay::Config {
            recording: s.recording.clone(),
            image: s.snapshot.clone(),
            options: vec![],
            workdir: None,
        };
        let report = iomapfs::replay::replay(&cfg)
            .with_context(|| format!("replaying {}", s.recording.display()))?;
        println!("{report}");
        if report.finding.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::{TestResult, Verdict};

    fn test(run: &Path, dir: &str, n: u32) {
        let d = run.join(dir).join(events::RECORDINGS_DIR);
        std::fs::create_dir_all(&d).unwrap();
        for k in 1..=n {
            let (rec, img) = iomapfs::record::harness::session_files(&d, k);
            std::fs::write(rec, "r").unwrap();
            std::fs::write(img, "i").unwrap();
        }
        std::fs::write(run.join(dir).join("stdout.log"), "").unwrap();
    }

    fn result(run: &Path, tests: &[(&str, Verdict)]) -> RunResult {
        let d = RunDir::open(run).unwrap();
        let mut r = RunResult::empty("t");
        for (name, v) in tests {
            let mut t = TestResult::new(*name, *v);
            t.artifacts = d.artifacts_of(name);
            r.tests.push(t);
        }
        r
    }

    #[test]
    fn failing_tests_keep_their_recordings_passing_ones_lose_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        test(run, "tests/smoke/pass", 2);
        test(run, "tests/smoke/fail", 1);
        test(run, "tests/run/1", 1);
        let mut r = result(
            run,
            &[
                ("smoke/pass", Verdict::Passed),
                ("smoke/fail", Verdict::Failed),
                ("run/1", Verdict::Crashed),
            ],
        );
        let s = settle(run, &mut r).unwrap();
        assert_eq!(
            s.kept,
            ["tests/run/1/recordings", "tests/smoke/fail/recordings"]
        );
        assert_eq!(s.deleted, ["tests/smoke/pass/recordings"]);
        assert!(!run.join("tests/smoke/pass/recordings").exists());
        assert!(run.join("tests/smoke/pass/stdout.log").exists());
        assert_eq!(r.tests[0].artifacts, ["tests/smoke/pass/stdout.log"]);
        assert!(r.tests[1]
            .artifacts
            .contains(&"tests/smoke/fail/recordings/session-001.rec.zst".to_string()));
        // The rewritten results say the same.
        let written = report::read_json(&run.join("results.json")).unwrap();
        assert_eq!(written.tests[0].artifacts, ["tests/smoke/pass/stdout.log"]);

        // Found by test name, with clear errors otherwise.
        let found = sessions(run, "smoke/fail").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "session-001");
        assert!(found[0].snapshot.ends_with("session-001.img.zst"));
        let e = format!("{:#}", sessions(run, "smoke/pass").unwrap_err());
        assert!(e.contains("has no recording"), "{e}");
        let e = format!("{:#}", sessions(run, "smoke/none").unwrap_err());
        assert!(e.contains("has no test"), "{e}");
        assert!(sessions(run, "../../etc").is_err());
    }

    #[test]
    fn jobs_runs_are_searched_per_vm() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        test(run, "vm-2/tests/fstests/batch-001", 2);
        let found = sessions(run, "fstests/batch-001").unwrap();
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vm-2/session-001", "vm-2/session-002"]);
        // An fstests test of that batch fails: the batch's recordings stay.
        let mut r = RunResult::empty("t");
        let mut t = TestResult::new("generic/001", Verdict::Failed);
        t.artifacts = vec!["vm-2/tests/fstests/batch-001/stdout.log".into()];
        r.tests.push(t);
        let s = settle(run, &mut r).unwrap();
        assert_eq!(s.kept, ["vm-2/tests/fstests/batch-001/recordings"]);
        // fstests lists only its own files; the batch's recordings are added to the test.
        assert!(r.tests[0]
            .artifacts
            .contains(&"vm-2/tests/fstests/batch-001/recordings/session-002.rec.zst".into()));
    }

    /// What a hostile guest can leave: links to host files and directories.
    #[test]
    fn links_planted_by_the_guest_are_refused_and_never_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("precious"), "host").unwrap();
        let run = dir.path();
        // A linked recordings directory: not a recording, and deleting it spares the target.
        std::fs::create_dir_all(run.join("tests/a")).unwrap();
        symlink(outside.path(), run.join("tests/a/recordings")).unwrap();
        // A linked recording file.
        let d = run.join("tests/b/recordings");
        std::fs::create_dir_all(&d).unwrap();
        let (rec, img) = iomapfs::record::harness::session_files(&d, 1);
        symlink(outside.path().join("precious"), &rec).unwrap();
        std::fs::write(img, "i").unwrap();
        // A linked test directory.
        std::fs::create_dir_all(run.join("tests")).unwrap();
        symlink(run.join("tests/b"), run.join("tests/c")).unwrap();

        assert!(sessions(run, "a").is_err());
        let e = format!("{:#}", sessions(run, "b").unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
        let e = format!("{:#}", sessions(run, "c").unwrap_err());
        assert!(e.contains("has no test"), "{e}");

        let mut r = RunResult::empty("t");
        r.tests.push(TestResult::new("b", Verdict::Passed));
        let s = settle(run, &mut r).unwrap();
        assert_eq!(s.deleted, ["tests/b/recordings"]);
        assert_eq!(
            std::fs::read_to_string(outside.path().join("precious")).unwrap(),
            "host"
        );
    }
}
