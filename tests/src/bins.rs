//! Locating the iomapfs binaries: built once per test process with cargo, whose own lock
//! makes concurrent test processes (nextest runs one per test) safe.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct IomapfsBins {
    /// The server, `iomapfs`.
    pub server: PathBuf,
    /// What /sbin/mount.fuse.iomapfs should point to: a `mount.fuse.iomapfs` binary if the
    /// package builds one, else the server itself, which acts as the helper when invoked
    /// under that name.
    pub helper: PathBuf,
}

/// Builds `cargo build -p iomapfs --bins --features fault-injection` (debug profile, the
/// configured target dir; the same build kmodel's tests use, so the two never replace each
/// other's binary) on first use and returns the executables cargo reports.
pub fn iomapfs_bins() -> Result<&'static IomapfsBins> {
    static BINS: OnceLock<Result<IomapfsBins, String>> = OnceLock::new();
    BINS.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build() -> Result<IomapfsBins> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_dir()).args([
        "build",
        "-p",
        "iomapfs",
        "--bins",
        "--features",
        "fault-injection",
        "--message-format=json-render-diagnostics",
    ]);
    let out = cmd.output().context("cannot run cargo to build iomapfs")?;
    if !out.status.success() {
        bail!(
            "`cargo build -p iomapfs --bins --features fault-injection` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut server, mut helper) = (None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        match name {
            "iomapfs" => server = Some(PathBuf::from(exe)),
            "mount.fuse.iomapfs" => helper = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    let server = server.context("cargo built no `iomapfs` binary")?;
    let helper = helper.unwrap_or_else(|| server.clone());
    Ok(IomapfsBins { server, helper })
}
