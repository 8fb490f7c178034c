//! The shipped binary has no fault injection (issue 17, item 6): `cargo build --release -p
//! iomapfs`, what vm-test installs as the guest's mount helper, refuses `-o fault=` with a
//! clear message and does not even contain the fault names.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo build --release -p iomapfs --bins` (no features) and the server it built.
fn release_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "iomapfs",
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .expect("run cargo build --release");
    assert!(
        out.status.success(),
        "cargo build --release -p iomapfs:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter(|l| l.contains("\"executable\"") && l.contains("\"name\":\"iomapfs\""))
        .find_map(|l| {
            let exe = l.split("\"executable\":\"").nth(1)?.split('"').next()?;
            Some(PathBuf::from(exe))
        })
        .expect("cargo reported the iomapfs executable")
}

#[test]
fn the_release_binary_refuses_fault_injection() {
    let server = release_server();
    let bytes = std::fs::read(&server).unwrap();
    for name in [
        "map_off_by_one_block",
        "skip_unwritten_conversion",
        "lose_append_size",
        "late_dev_inval",
        "panic_in_mkdir",
        "fail_step",
        "fail_sync",
    ] {
        assert!(
            !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{} contains the fault name {name}",
            server.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&server)
            .arg(dir.path().join("no-image"))
            .arg(dir.path())
            .arg("-o")
            .arg(format!("fault={name}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "fault={name}: {stderr}");
        assert!(
            stderr.contains("built without fault injection"),
            "fault={name}: {stderr}"
        );
    }
}
