//! `cargo xtask bindgen`: the committed ext2fs bindings match what the
//! documented bindgen command generates, and a missing bindgen says how to
//! install it.

use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn committed_bindings_are_up_to_date() {
    if xtask::util::which("bindgen").is_none() {
        eprintln!("SKIP: bindgen is not installed (cargo install bindgen-cli)");
        return;
    }
    let out = xtask().args(["bindgen", "--check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is up to date"), "{stderr}");
}

#[test]
fn missing_bindgen_names_the_fix() {
    // A PATH with the system tools but not ~/.cargo/bin.
    let out = xtask()
        .args(["bindgen", "--check"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/usr/bin/bindgen").exists() {
        eprintln!("SKIP: a system bindgen is installed");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cargo install bindgen-cli"), "{stderr}");
}
