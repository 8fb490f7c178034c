//! End-to-end tests of the `cargo xtask vm-test` command line: bad input gives clear errors
//! and exit code 2 before anything boots. The runs themselves are in
//! harness/runner/tests/vm_e2e.rs.
use std::process::Command;

/// The xtask binary for command-line checks.
fn xtask(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_input_gives_clear_errors_and_exit_code_2() {
    let (code, err) = xtask(&[
        "vm-test",
        "--kernel-image",
        "/nonexistent/bzImage",
        "--run",
        "true",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("kernel image /nonexistent/bzImage does not exist"),
        "{err}"
    );

    let (code, err) = xtask(&["vm-test", "--suite", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown suite `nope`"), "{err}");

    let (code, err) = xtask(&["vm-test", "--profile", "no-such-profile", "--run", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-profile"), "{err}");

    let (code, err) = xtask(&["vm-test", "--image", "no-such-image", "--run", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown image `no-such-image`"), "{err}");

    let (code, err) = xtask(&["vm-test", "--machine", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'nope'"), "{err}");
}
