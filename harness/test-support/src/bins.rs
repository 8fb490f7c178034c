//! The binary builder: tests that run the workspace's programs build them with cargo, once
//! per test process; cargo's own lock makes concurrent test processes (nextest runs one per
//! test) safe.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
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
/// configured target dir; one build for every test package, so they never replace each
/// other's binary) on first use and returns the executables cargo reports.
pub fn iomapfs_bins() -> Result<&'static IomapfsBins> {
    static BINS: OnceLock<Result<IomapfsBins, String>> = OnceLock::new();
    BINS.get_or_init(|| {
        let mut bins = cargo_bins("iomapfs", &["fault-injection"]).map_err(|e| format!("{e:#}"))?;
        let server = bins
            .remove("iomapfs")
            .ok_or("cargo built no `iomapfs` binary")?;
        let helper = bins
            .remove("mount.fuse.iomapfs")
            .unwrap_or_else(|| server.clone());
        Ok(IomapfsBins { server, helper })
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// The workspace root (where `cargo build -p ...` is run).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo build -p PACKAGE --bins --features FEATURES` (debug profile); returns every
/// executable cargo reports, by target name.
pub fn cargo_bins(package: &str, features: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_dir())
        .args(["build", "-p", package, "--bins"])
        .args(["--message-format=json-render-diagnostics"]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let line = crate::cmd::describe(&cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut bins = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            bins.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(bins)
}
