use super::origin::Origin;
use super::*;
use plumbing::error::{exit_code, EXIT_USAGE};
use std::process::{Command, Stdio};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BisectArgs,
}

fn parse(argv: &[&str]) -> BisectArgs {
    Cli::try_parse_from(std::iter::once("bisect").chain(argv.iter().copied()))
        .unwrap()
        .args
}

#[test]
fn argv_replays_to_the_same_command_with_absolute_paths() {
    let a = parse(&[
        "--good",
        "v6.11",
        "--bad",
        "HEAD",
        "--source-dir",
        "linux",
        "--fragment",
        "x.config",
        "--debug",
        "--iomap",
        "off",
        "--make-jobs",
        "3",
        "--retries",
        "2",
        "--",
        "--suite",
        "smoke",
        "--env",
        "A=b",
    ]);
    let argv = a.to_argv();
    let cwd = std::env::current_dir().unwrap();
    let at = |flag: &str| argv[argv.iter().position(|x| x == flag).unwrap() + 1].clone();
    assert_eq!(at("--source-dir"), cwd.join("linux").display().to_string());
    assert_eq!(at("--fragment"), cwd.join("x.config").display().to_string());
    assert_eq!(at("--iomap"), "off");
    assert_eq!(at("--make-jobs"), "3");
    assert_eq!(at("--retries"), "2");
    assert!(argv.contains(&"--debug".to_string()));
    assert_eq!(
        argv[argv.len() - 5..],
        ["--", "--suite", "smoke", "--env", "A=b"]
    );
    // The step parses it back to the same command.
    let again = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(again.to_argv(), argv);
    assert_eq!(again.retries, 2);
    assert!(!again.reset && !again.script);
}

#[test]
fn vm_test_selection_excludes_kernel_choices() {
    let ok = vm_test_args(&[
        "--suite".into(),
        "smoke".into(),
        "--timeout".into(),
        "30".into(),
        "--expect-mode".into(),
        "iomap".into(),
    ])
    .unwrap();
    assert_eq!(ok.suites, ["smoke"]);
    assert_eq!(ok.timeout, Some(30));
    // A bisect of an iomap regression can demand iomap at every step.
    assert_eq!(ok.expect_mode, Some(runner::vm_test::ExpectModeArg::Iomap));
    for bad in [
        &["--kernel-image", "/boot/vmlinuz"][..],
        &["--source-dir", "."],
        &["--profile", "default"],
        &["--fragment", "x.config"],
        &["--no-such-flag"],
    ] {
        let argv: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        let e = vm_test_args(&argv).unwrap_err();
        assert_eq!(exit_code(&e), EXIT_USAGE, "{bad:?}: {e:#}");
    }
}

#[test]
fn origin_needs_git_history() {
    let d = tempfile::tempdir().unwrap();
    // The default profile is Debian's source package: no history to bisect.
    let e = origin(&parse(&["--good", "a", "--bad", "b"])).unwrap_err();
    assert_eq!(exit_code(&e), EXIT_USAGE);
    assert!(
        format!("{e:#}").contains("bisect needs a git source"),
        "{e:#}"
    );
    let dir = d.path().to_str().unwrap();
    let e = origin(&parse(&["--good", "a", "--bad", "b", "--source-dir", dir])).unwrap_err();
    assert!(
        format!("{e:#}").contains("is not a git repository"),
        "{e:#}"
    );
    let e = origin(&parse(&[
        "--good",
        "a",
        "--bad",
        "b",
        "--source-dir",
        dir,
        "--ref",
        "x",
    ]))
    .unwrap_err();
    assert!(format!("{e:#}").contains("leave out --ref"), "{e:#}");

    test_support::git::GitRepo::open(d.path()).git(&["init", "-q", "--bare"]);
    let o = origin(&parse(&["--good", "a", "--bad", "b", "--source-dir", dir])).unwrap();
    assert_eq!(o, Origin::Local(d.path().canonicalize().unwrap()));
    let name = o.default_name();
    assert!(
        name.starts_with(&sanitize(&d.path().file_name().unwrap().to_string_lossy())),
        "{name}"
    );
    assert_eq!(sanitize(&name), name);
    let url =
        Origin::Url("https://git.kernel.org/pub/scm/linux/kernel/git/djwong/xfs-linux.git".into());
    assert!(
        url.default_name().starts_with("xfs-linux-"),
        "{}",
        url.default_name()
    );
}

#[test]
fn kernel_options_build_the_worktree_under_its_own_name() {
    let a = parse(&["--good", "a", "--bad", "b", "--iomap", "off"]);
    let o = kernel_options(&a, Path::new("/c/bisect/x/worktree"), "x").unwrap();
    assert_eq!(
        o.source,
        SourceSpec::Dir {
            path: "/c/bisect/x/worktree".into(),
            git_ref: None
        }
    );
    assert_eq!(o.profile, "bisect-x");
    assert_eq!(o.iomap, kernel::IomapMode::Off);
}

#[test]
fn exit_codes_for_git() {
    assert_eq!(git_code_for_exit(0), 0);
    assert_eq!(git_code_for_exit(1), 1);
    assert_eq!(git_code_for_exit(2), 128);
    assert_eq!(git_code_for_exit(3), 125);
    assert_eq!(git_code_for_exit(plumbing::error::EXIT_NOTHING_PASSED), 125);
    let s = script_text();
    for want in [
        "125 skip",
        "--bisect-exit-codes",
        "git bisect run ",
        "3 and 4 -> 125",
        "cargo xtask bisect",
    ] {
        assert!(s.contains(want), "{want}: {s}");
    }
}

/// The log lines this module reads are the ones git writes.
#[test]
fn real_git_bisect_log_has_the_first_bad_line() {
    let d = tempfile::tempdir().unwrap();
    let g = |args: &[&str]| git::out(d.path(), args).unwrap();
    g(&["init", "-q"]);
    let mut shas = vec![];
    for i in 0..4 {
        std::fs::write(d.path().join("f"), format!("{i}\n")).unwrap();
        shas.push(test_support::git::GitRepo::open(d.path()).commit_all(&format!("commit {i}")));
    }
    g(&["bisect", "start", &shas[3], &shas[0], "--"]);
    assert_eq!(
        git::parse_log(&git::bisect_log(d.path()).unwrap()),
        git::LogOutcome::Open
    );
    // Bad from commit 2 on: `f` holds 2 or 3.
    let st = Command::new("git")
        .arg("-C")
        .arg(d.path())
        .args(["bisect", "run", "sh", "-c", "test $(cat f) -lt 2"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        git::parse_log(&git::bisect_log(d.path()).unwrap()),
        git::LogOutcome::FirstBad {
            sha: shas[2].clone(),
            subject: "commit 2".into()
        }
    );
    // All skipped: git names the candidates.
    g(&["bisect", "reset"]);
    g(&["bisect", "start", &shas[3], &shas[0], "--"]);
    let st = Command::new("git")
        .arg("-C")
        .arg(d.path())
        .args(["bisect", "run", "sh", "-c", "exit 125"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
    match git::parse_log(&git::bisect_log(d.path()).unwrap()) {
        git::LogOutcome::Ambiguous(c) => assert!(c.len() >= 2, "{c:?}"),
        other => panic!("{other:?}"),
    }
}
