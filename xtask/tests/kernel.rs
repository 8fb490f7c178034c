//! End-to-end tests of `cargo xtask kernel` on this machine's real tools. The build of
//! the default profile through the library is in harness/kernel/tests/build_and_boot.rs.

use std::process::Command;
use std::time::{Duration, Instant};

fn xtask(args: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr, t.elapsed())
}

#[test]
fn iomap_required_on_the_debian_tree_fails_fast() {
    let (code, stderr, took) = xtask(&["kernel", "--iomap", "required"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the FUSE iomap series is not applied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--series") && stderr.contains("--profile fuse-iomap"),
        "{stderr}"
    );
    // Nothing was configured or compiled.
    assert!(
        !stderr.contains("make bzImage") && !stderr.contains("configuring"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, stderr, _) = xtask(&["kernel", "--profile", "no-such-profile"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown profile `no-such-profile`"),
        "{stderr}"
    );
    let (code, stderr, _) = xtask(&[
        "kernel",
        "--fragment",
        "/nonexistent/x.config",
        "--config-only",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/x.config"), "{stderr}");
    let (code, _, _) = xtask(&["kernel", "--git", "u", "--source-dir", "d"]);
    assert_eq!(code, 2);
}

/// A requested symbol the tree cannot provide is named, with the fragment
/// that asked, and exits 2 (real merge and olddefconfig, no compile).
#[test]
fn missing_requested_symbol_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("wants.config");
    // A symbol this tree does not define (skipped, said), one whose dependencies are unmet
    // (an error), one that is satisfied.
    std::fs::write(
        &frag,
        "CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE=y\nCONFIG_USB_STORAGE=y\nCONFIG_FUSE_FS=y\n",
    )
    .unwrap();
    let (code, stderr, _) = xtask(&[
        "kernel",
        "--config-only",
        "--fragment",
        frag.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CONFIG_USB_STORAGE: requested y by wants:2, got (absent) (its dependencies are not met)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE: requested by wants:1, but this tree has no such symbol"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE: requested y"),
        "an undefined symbol the harness does not need is not an error: {stderr}"
    );
    assert!(
        !stderr.contains("CONFIG_FUSE_FS:"),
        "FUSE_FS is satisfied: {stderr}"
    );
}

/// A git source that cannot be reached (offline machines, a typo in the host) fails with a
/// clear message (exit 3), through a real fetch: `.invalid` never resolves (RFC 6761), on
/// any machine.
#[test]
fn unreachable_git_source_is_explained() {
    let (code, stderr, took) = xtask(&[
        "kernel",
        "--git",
        "https://git.kernel.invalid/pub/scm/linux/kernel/git/torvalds/linux.git",
        "--ref",
        "master",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("git.kernel.invalid cannot be reached"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60));
}

/// `vm-test --dry-run` prints the VM's command line without building or booting: the
/// fuse-iomap profile (iomap required) boots with FUSE iomap enabled in the fuse module; a
/// kernel built without iomap does not get the parameters.
#[test]
fn dry_run_shows_iomap_enabled_on_iomap_kernels() {
    let dry = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["vm-test", "--dry-run"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("qemu-system-x86_64 ") && stdout.contains(" -append "),
            "{stdout}"
        );
        stdout
    };
    let want = ["fuse.enable_iomap=1", "fuse.debug_iomap=1"];
    let iomap = dry(&["--profile", "fuse-iomap"]);
    assert!(want.iter().all(|w| iomap.contains(w)), "{iomap}");
    let off = dry(&["--iomap", "off", "--profile", "fuse-iomap"]);
    assert!(!off.contains("fuse.enable_iomap"), "{off}");
    let user = dry(&["--profile", "fuse-iomap", "--append", "fuse.debug_iomap=0"]);
    assert!(
        user.trim_end()
            .contains("fuse.debug_iomap=1 fuse.debug_iomap=0'"),
        "the user's words come last: {user}"
    );
}
