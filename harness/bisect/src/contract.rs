//! The exit-code contract with `git bisect run`, for plain
//! `git bisect run ... vm-test --bisect-exit-codes` and `bisect --script`.

use plumbing::error::{exit_code, EXIT_TEST_FAILURES, EXIT_USAGE};
use plumbing::ui::Ui;
use runner::vm_test::VmTestArgs;

/// `cargo xtask vm-test --bisect-exit-codes`: vm-test's exit codes turned
/// into `git bisect run`'s (0 good, 1 bad, 125 skip, 128 stop).
pub fn vm_test_for_git_bisect(args: &VmTestArgs, ui: &Ui) -> i32 {
    match runner::vm_test::main(args, ui) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            git_code_for_exit(exit_code(&e))
        }
    }
}

/// The git bisect code for an xtask exit code.
pub fn git_code_for_exit(code: i32) -> i32 {
    match code {
        0 => 0,
        EXIT_TEST_FAILURES => 1,
        // A wrong command line fails at every commit: stop rather than skip them all.
        EXIT_USAGE => 128,
        // Build, boot or other infrastructure failure, or nothing passed (every test
        // skipped): this commit cannot be judged.
        _ => 125,
    }
}

/// `--script`: the exit-code contract and lines ready to paste.
pub fn script_text() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "target/debug/xtask".into());
    format!(
        r#"git bisect run reads the command's exit code: 0 good, 125 skip (cannot test),
1-127 otherwise bad, 128 or more stops the bisect.

cargo xtask vm-test exits 0 pass, 1 test failures (failed, crashed, hung, flaky), 2 usage
or config error, 3 infrastructure failure (kernel build, boot), 4 nothing passed (every
test skipped). A plain `git bisect run ... vm-test` would call a build failure bad, so add
--bisect-exit-codes: 0 -> 0 (good), 1 -> 1 (bad), 3 and 4 -> 125 (skip), 2 -> 128 (stop:
the command is wrong).

Ready to paste, from your kernel tree (the xtask binary itself: `cargo xtask` only works
inside the harness checkout; build it once with `cargo build -p xtask`):

  git bisect start BAD GOOD
  git bisect run {exe} vm-test --bisect-exit-codes --source-dir . --suite smoke
  git bisect reset

With a kernel you build yourself at each step:

  git bisect run sh -c 'make -j"$(nproc)" O=/tmp/kbuild bzImage || exit 125
    exec {exe} vm-test --bisect-exit-codes --kernel-image /tmp/kbuild/arch/x86/boot/bzImage --suite smoke'

Or let the harness drive it: a clone in the cache (your checkout is never touched),
endpoints checked first, a failing commit retried (--retries, default 1), state kept
so an interrupted bisect resumes, and a report naming the first bad commit:

  cargo xtask bisect --source-dir /path/to/linux --good GOOD --bad BAD -- --suite smoke
"#
    )
}
