//! `cargo xtask bisect` for real: a small git repository made from the
//! default profile's kernel tree (Debian's linux-source-6.12) with four
//! commits, one of which breaks every FUSE mount; the bisect must name
//! exactly that commit. QEMU (TCG here), real kernel builds, the smoke suite.
//!
//! The fixture repository is cached in `<cache>/bisect-fixtures/`, keyed by
//! the source, and the bisect keeps its clone and build directory between
//! runs, so a second run only rebuilds the files the commits change.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bisect::{Role, State, StepVerdict};
use kernel::{source, KernelArgs, KernelOptions};
use plumbing::ui::Ui;
use plumbing::util::{sha256_hex, short, Lock};

/// Bump when the fixture's commits change.
const FIXTURE_VERSION: &str = "bisect-fixture-v1";

/// The change that breaks FUSE: `fuse_fill_super` refuses a mount that
/// passes rootmode (every real mount does), where it should refuse one that
/// lacks it.
const GOOD_CHECK: &str = "\tif (!ctx->file || !ctx->rootmode_present ||";
const BROKEN_CHECK: &str = "\tif (!ctx->file || ctx->rootmode_present ||";

struct Fixture {
    repo: PathBuf,
    key: String,
    base: String,
    harmless: String,
    breaking: String,
    tip: String,
}

fn git(git_dir: &Path, args: &[&str], input: Option<&[u8]>) -> String {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .envs([
            ("GIT_AUTHOR_NAME", "harness"),
            ("GIT_AUTHOR_EMAIL", "harness@localhost"),
            ("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z"),
            ("GIT_COMMITTER_NAME", "harness"),
            ("GIT_COMMITTER_EMAIL", "harness@localhost"),
            ("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z"),
        ])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    if let Some(bytes) = input {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commit the index of a bare repository on top of `parent`.
fn commit(repo: &Path, parent: Option<&str>, subject: &str) -> String {
    let tree = git(repo, &["write-tree"], None);
    let mut args = vec!["commit-tree", tree.as_str(), "-m", subject];
    if let Some(p) = parent {
        args.extend(["-p", p]);
    }
    git(repo, &args, None)
}

/// Replace one file in the index with `edit` applied to its committed text.
fn change(repo: &Path, path: &str, edit: impl Fn(&str) -> String) {
    let old = git(repo, &["cat-file", "blob", &format!("HEAD:{path}")], None);
    let new = edit(&old);
    assert_ne!(new, old, "{path} unchanged");
    let blob = git(
        repo,
        &["hash-object", "-w", "--stdin"],
        Some(new.as_bytes()),
    );
    git(
        repo,
        &[
            "update-index",
            "--cacheinfo",
            &format!("100644,{blob},{path}"),
        ],
        None,
    );
}

/// A change to one file's text.
type Edit = Box<dyn Fn(&str) -> String>;

/// The fixture repository (bare): base = the Debian tree as it is, then a
/// harmless code change, the breaking change, a harmless doc change.
fn build_fixture(tree: &Path, repo: &Path) {
    let _ = std::fs::remove_dir_all(repo);
    std::fs::create_dir_all(repo).unwrap();
    git(repo, &["init", "-q", "--bare"], None);
    // The source tree is only read: the index lives in the bare repository.
    let t = Instant::now();
    let st = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .arg("--work-tree")
        .arg(tree)
        .args(["add", "-A", "-f", "."])
        .status()
        .unwrap();
    assert!(st.success(), "git add of {}", tree.display());
    let mut head = commit(repo, None, "base: Debian's kernel tree as packaged");
    git(repo, &["update-ref", "HEAD", &head], None);
    git(repo, &["tag", "fixture-base", &head], None);
    let steps: [(&str, &str, &str, Edit); 3] = [
        (
            "fixture-harmless",
            "fuse: a comment at the end of dev.c (harmless)",
            "fs/fuse/dev.c",
            Box::new(|s| format!("{s}\n/* bisect fixture: a comment-only change */\n")),
        ),
        (
            "fixture-breaking",
            "fuse: refuse mounts that pass rootmode (breaks every FUSE mount)",
            "fs/fuse/inode.c",
            Box::new(|s| {
                assert_eq!(s.matches(GOOD_CHECK).count(), 1, "the rootmode check moved");
                s.replacen(GOOD_CHECK, BROKEN_CHECK, 1)
            }),
        ),
        (
            "fixture-tip",
            "Documentation: fuse: a note (harmless)",
            "Documentation/filesystems/fuse.rst",
            Box::new(|s| format!("{s}\n.. bisect fixture: a documentation-only change\n")),
        ),
    ];
    for (tag, subject, path, edit) in steps {
        change(repo, path, edit);
        head = commit(repo, Some(&head), subject);
        git(repo, &["update-ref", "HEAD", &head], None);
        git(repo, &["tag", tag, &head], None);
    }
    eprintln!("fixture repository built in {:.0?}", t.elapsed());
}

/// The cached fixture for the default profile's kernel tree.
fn fixture() -> Fixture {
    let ui = Ui::plain();
    let opts = KernelOptions::resolve(None, &KernelArgs::default()).unwrap();
    let cache = opts.cache_dir.clone();
    let src = {
        let _l = Lock::acquire(&cache.join("sources/.lock"), || {}).unwrap();
        source::prepare(&opts.source, None, &cache, &ui).expect("the default kernel tree")
    };
    let key = short(&sha256_hex(
        format!("{FIXTURE_VERSION}\n{}", src.identity).as_bytes(),
    ))
    .to_string();
    let dir = cache.join("bisect-fixtures");
    let repo = dir.join(format!("{key}.git"));
    let ready = dir.join(format!("{key}.ready"));
    {
        let _l = Lock::acquire(&dir.join(".lock"), || {}).unwrap();
        if !ready.is_file() {
            build_fixture(&src.tree, &repo);
            std::fs::write(&ready, format!("{}\n", src.identity)).unwrap();
        }
    }
    let rev = |tag: &str| git(&repo, &["rev-parse", &format!("{tag}^{{commit}}")], None);
    Fixture {
        base: rev("fixture-base"),
        harmless: rev("fixture-harmless"),
        breaking: rev("fixture-breaking"),
        tip: rev("fixture-tip"),
        repo,
        key,
    }
}

fn have_qemu() -> bool {
    test_support::needs(test_support::needs::tool_from(
        "qemu-system-x86_64",
        "qemu-system-x86",
    ))
}

/// Run the real xtask binary; stderr is echoed as it comes (progress) and
/// collected. `interrupt_after` sends SIGINT to the whole process group once
/// a stderr line contains that text (and a few seconds have passed).
fn xtask(args: &[&str], interrupt_after: Option<&str>) -> (i32, String, String, Duration) {
    use std::os::unix::process::CommandExt;
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CI", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("xtask runs");
    let pgid = child.id() as i32;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if let Some(text) = interrupt_after {
        let seen = rx.iter().any(|l| l.contains(text));
        if seen {
            std::thread::sleep(Duration::from_secs(5));
            eprintln!("test: sending SIGINT to the bisect's process group");
            // A process group this test created.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    (status.code().unwrap_or(-1), stdout, stderr, t.elapsed())
}

fn load_state(name: &str) -> State {
    let dir = plumbing::paths::cache_dir().join("bisect").join(name);
    State::load(&dir).unwrap().expect("state.json")
}

fn print_steps(s: &State) {
    eprintln!(
        "step  role           commit        verdict  attempts  build s  boot s  test s  total s"
    );
    for (i, r) in s.steps.iter().enumerate() {
        eprintln!(
            "{:<5} {:<14} {:<13} {:<8} {:<9} {:>7.1} {:>7.1} {:>7.1} {:>8.1}",
            i + 1,
            r.role.label(),
            &r.commit[..12],
            r.verdict.as_str(),
            r.attempts.len(),
            r.build_s,
            r.boot_s,
            r.test_s,
            r.total_s
        );
    }
    let total: f64 = s.steps.iter().map(|r| r.total_s).sum();
    eprintln!("time in steps: {total:.0} s");
}

#[test]
fn bisect_finds_the_commit_that_breaks_fuse_mounts_and_resumes_after_an_interrupt() {
    if !have_qemu() {
        return;
    }
    let f = fixture();
    let refs_before = git(&f.repo, &["for-each-ref"], None);
    let name = format!("e2e-{}", f.key);
    let repo = f.repo.to_str().unwrap();
    let cmd = [
        "bisect",
        "--source-dir",
        repo,
        "--good",
        "fixture-base",
        "--bad",
        "fixture-tip",
        "--name",
        &name,
        "--",
        "--suite",
        "smoke",
    ];

    // 1. A fresh bisect, interrupted (Ctrl-C) during its first git-driven step.
    let mut fresh: Vec<&str> = cmd.to_vec();
    fresh.insert(1, "--reset");
    let (code, _, err1, took1) = xtask(&fresh, Some("bisect step 3 (bisect)"));
    assert_ne!(code, 0, "the interrupted bisect must not report success");
    let s = load_state(&name);
    assert_eq!(
        s.steps.len(),
        2,
        "only the endpoints finished before the interrupt"
    );
    assert_eq!(
        (s.steps[0].role, s.steps[0].verdict),
        (Role::GoodEndpoint, StepVerdict::Good)
    );
    assert_eq!(s.steps[0].commit, f.base);
    assert_eq!(
        (s.steps[1].role, s.steps[1].verdict),
        (Role::BadEndpoint, StepVerdict::Bad)
    );
    assert_eq!(s.steps[1].commit, f.tip);
    // Failing commits are retried once (default --retries 1): bad only if both fail.
    assert_eq!(s.steps[1].attempts.len(), 2, "{:?}", s.steps[1]);
    assert!(s.first_bad.is_none());
    assert!(err1.contains("checking the good endpoint"), "{err1}");

    // 2. The same command resumes: the endpoints are not tested again.
    let (code, out2, err2, took2) = xtask(&cmd, None);
    assert_eq!(code, 0, "{err2}");
    assert!(err2.contains("resuming bisect"), "{err2}");
    assert!(!err2.contains("checking the good endpoint"), "{err2}");
    let s = load_state(&name);
    print_steps(&s);
    let first_bad = s.first_bad.as_ref().expect("a first bad commit");
    assert_eq!(first_bad.sha, f.breaking, "{out2}");
    assert!(
        out2.contains(&format!(
            "first bad commit: {} fuse: refuse mounts that pass rootmode",
            f.breaking
        )),
        "{out2}"
    );
    assert_eq!(s.steps.iter().filter(|r| r.role != Role::Bisect).count(), 2);
    // git had two commits to decide between; both were tested, with the right verdicts.
    let bisected: Vec<_> = s.steps.iter().filter(|r| r.role == Role::Bisect).collect();
    assert_eq!(bisected.len(), 2, "{bisected:?}");
    for r in &bisected {
        let want = if r.commit == f.breaking {
            StepVerdict::Bad
        } else {
            assert_eq!(r.commit, f.harmless);
            StepVerdict::Good
        };
        assert_eq!(r.verdict, want, "{r:?}");
        assert!(r.attempts.iter().all(|a| a
            .run_dir
            .as_ref()
            .is_some_and(|d| d.join("results.json").is_file())));
    }
    let bad = bisected.iter().find(|r| r.commit == f.breaking).unwrap();
    assert_eq!(bad.attempts.len(), 2);
    assert!(
        bad.reason.as_deref().unwrap_or("").contains("smoke/mount"),
        "{bad:?}"
    );
    let report = std::fs::read_to_string(
        plumbing::paths::cache_dir()
            .join("bisect")
            .join(&name)
            .join("report.md"),
    )
    .unwrap();
    assert!(report.contains(&f.breaking), "{report}");
    assert_eq!(report.matches("| bisect |").count(), 2, "{report}");

    // 3. Once more: a finished bisect only prints its report.
    let (code, out3, err3, took3) = xtask(&cmd, None);
    assert_eq!(code, 0, "{err3}");
    assert!(
        out3.contains(&format!("first bad commit: {}", f.breaking)),
        "{out3}"
    );
    assert_eq!(load_state(&name).steps.len(), s.steps.len());
    assert!(took3 < Duration::from_secs(60), "took {took3:?}");

    // The fixture repository was only read.
    assert_eq!(git(&f.repo, &["for-each-ref"], None), refs_before);
    assert!(!f.repo.join("worktrees").exists());
    assert!(!f.repo.join("BISECT_LOG").exists());
    eprintln!(
        "bisect wall time: interrupted run {:.0} s, resumed run {:.0} s, report-only run {:.1} s",
        took1.as_secs_f64(),
        took2.as_secs_f64(),
        took3.as_secs_f64()
    );
}

/// A tree that does not build: the endpoint check stops with exit 3 and a
/// clear message; a different command does not silently replace the state;
/// --reset does; the repository is untouched. No VM, seconds.
#[test]
fn unbuildable_endpoint_and_state_conflicts_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let (tree, cache) = (d.path().join("linux"), d.path().join("cache"));
    for (p, text) in [
        (
            "Makefile",
            "%:\n\t@echo 'this tree does not build' >&2; exit 2\n",
        ),
        ("Kconfig", "config FUSE_FS\n\ttristate \"FUSE\"\n"),
        ("scripts/kconfig/merge_config.sh", "exit 1\n"),
    ] {
        std::fs::create_dir_all(tree.join(p).parent().unwrap()).unwrap();
        std::fs::write(tree.join(p), text).unwrap();
    }
    let repo = test_support::git::GitRepo::init(&tree);
    repo.commit_all("one");
    std::fs::write(tree.join("README"), "two\n").unwrap();
    repo.commit_all("two");
    let g = |args: &[&str]| repo.git(args);
    let before = (
        g(&["for-each-ref"]),
        g(&["status", "--porcelain"]),
        g(&["rev-parse", "HEAD"]),
    );

    let run = |extra: &[&str], bad: &str| {
        let mut args = vec![
            "bisect",
            "--source-dir",
            tree.to_str().unwrap(),
            "--good",
            "HEAD~1",
            "--bad",
            bad,
            "--name",
            "t",
        ];
        args.extend_from_slice(extra);
        args.extend(["--", "--run", "true", "--no-server"]);
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(&args)
            .env("FUSE_IOMAP_HARNESS_CACHE", &cache)
            .env("CI", "true")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code().unwrap_or(-1), err)
    };
    let (code, err) = run(&[], "HEAD");
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cannot test the good endpoint HEAD~1"),
        "{err}"
    );
    assert!(err.contains("build failed"), "{err}");
    let s = State::load(&cache.join("bisect/t")).unwrap().unwrap();
    assert_eq!(s.steps.len(), 1);
    assert_eq!(s.steps[0].verdict, StepVerdict::Skip);
    assert!(
        s.steps[0].attempts.is_empty(),
        "no VM for an unbuilt kernel"
    );

    // The same command again resumes (and retests the endpoint that was not good).
    let (code, err) = run(&[], "HEAD");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("resuming bisect"), "{err}");
    // Another command (the same commits, named differently) is refused until --reset.
    let head = g(&["rev-parse", "HEAD"]);
    let (code, err) = run(&[], &head);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--reset"), "{err}");
    let (code, err) = run(&["--reset"], &head);
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        State::load(&cache.join("bisect/t"))
            .unwrap()
            .unwrap()
            .steps
            .len(),
        1
    );

    let after = (
        g(&["for-each-ref"]),
        g(&["status", "--porcelain"]),
        g(&["rev-parse", "HEAD"]),
    );
    assert_eq!(after, before, "the user's repository is untouched");

    // Usage errors come before any work.
    let (code, err) = run(&[], "no-such-rev");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`no-such-rev` is not a commit"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bisect", "--script"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("vm-test --bisect-exit-codes --source-dir ."),
        "{script}"
    );
}

/// `vm-test --bisect-exit-codes` answers plain `git bisect run` correctly:
/// pass 0, test failure 1, infrastructure failure 125 (skip), usage 128 (stop).
#[test]
fn vm_test_bisect_exit_codes_follow_git_bisect_run() {
    if !have_qemu() {
        return;
    }
    let kernel = match std::env::var("HARNESS_KERNEL_IMAGE") {
        Ok(k) => PathBuf::from(k),
        Err(_) => {
            let opts = KernelOptions::resolve(None, &KernelArgs::default()).unwrap();
            kernel::ensure_kernel(&opts, &Ui::plain())
                .expect("the default kernel")
                .vmlinux
        }
    };
    let k = kernel.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut argv = vec!["vm-test", "--bisect-exit-codes", "--accel", "tcg"];
        argv.extend_from_slice(args);
        let (code, _, err, _) = xtask(&argv, None);
        (code, err)
    };
    let (code, err) = run(&["--kernel-image", k, "--run", "true", "--no-server"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = run(&["--kernel-image", k, "--run", "false", "--no-server"]);
    assert_eq!(code, 1, "{err}");
    // Not a kernel: QEMU cannot boot it, an infrastructure failure (vm-test's 3).
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("not-a-kernel");
    std::fs::write(&junk, "this is no kernel\n").unwrap();
    let (code, err) = run(&[
        "--kernel-image",
        junk.to_str().unwrap(),
        "--run",
        "true",
        "--no-server",
    ]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("infrastructure failure"), "{err}");
    let (code, err) = run(&["--kernel-image", k, "--suite", "nope"]);
    assert_eq!(code, 128, "{err}");
}
