//! Host packages the kernel build needs, installed with apt-get when missing
//! (we may be on a fresh machine; see docs/environment.md).

use crate::error::usage;
use crate::ui::Ui;
use crate::util::which;
use anyhow::{Context, Result};
use std::path::Path;

/// (how to detect it, Debian package). Programs are looked up on PATH,
/// absolute paths are files (headers).
const BUILD_DEPS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("bc", "bc"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("perl", "perl"),
    ("cpio", "cpio"),
    ("lz4", "lz4"),
    ("xz", "xz-utils"),
    ("patch", "patch"),
    ("git", "git"),
    ("/usr/include/gelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
];

fn present(probe: &str) -> bool {
    if probe.starts_with('/') {
        Path::new(probe).exists()
    } else {
        which(probe).is_some()
    }
}

/// Make sure the kernel build dependencies are installed.
pub fn ensure_build_deps(ui: &Ui) -> Result<()> {
    let missing: Vec<&str> = BUILD_DEPS
        .iter()
        .filter(|(probe, _)| !present(probe))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing, ui)
}

/// Whether a Debian package is installed, and its version.
pub fn dpkg_version(pkg: &str) -> Result<Option<String>> {
    if which("dpkg-query").is_none() {
        return Ok(None);
    }
    let out = duct::cmd!(
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev}|${Version}",
        pkg
    )
    .stdout_capture()
    .stderr_null()
    .unchecked()
    .run()
    .context("running dpkg-query")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_once('|') {
        Some((status, version)) if out.status.success() && status.starts_with("ii") => {
            Ok(Some(version.trim().to_string()))
        }
        _ => Ok(None),
    }
}

/// Files a Debian package installed.
pub fn dpkg_files(pkg: &str) -> Result<Vec<String>> {
    let out = duct::cmd!("dpkg", "-L", pkg)
        .read()
        .with_context(|| format!("listing files of {pkg}"))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// `apt-get install` as root; otherwise tell the user what to run.
pub fn apt_install(pkgs: &[&str], ui: &Ui) -> Result<()> {
    let list = pkgs.join(" ");
    let root = nix::unistd::geteuid().is_root();
    if !root || which("apt-get").is_none() {
        return Err(usage(format!(
            "missing packages for the kernel build: {list}\n  install them with: sudo apt-get install {list}"
        )));
    }
    ui.step(format!("installing {list} with apt-get"));
    let install = || {
        duct::cmd(
            "apt-get",
            ["install", "-y", "--no-install-recommends"]
                .iter()
                .copied()
                .chain(pkgs.iter().copied()),
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
    };
    let mut out = install().context("running apt-get install")?;
    if !out.status.success() {
        // A fresh machine may have stale package lists.
        ui.note("apt-get install failed; running apt-get update and retrying");
        let _ = duct::cmd!("apt-get", "update")
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run();
        out = install().context("running apt-get install")?;
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Unable to locate package") || err.contains("has no installation candidate")
        {
            return Err(usage(format!(
                "apt-get cannot find {list}:\n{}",
                err.trim()
            )));
        }
        anyhow::bail!("apt-get install {list} failed:\n{}", err.trim());
    }
    Ok(())
}
