//! QEMU on the host: which packages give a working one, and the probe after installing.
//!
//! On bookworm the harness installs the matched QEMU 10 pair from bookworm-backports,
//! through its own sources entry; ARCHITECTURE.md ("Decisions") says why.

use super::apt::{self, Install, Package};
use anyhow::{bail, Context, Result};
use plumbing::ui::Ui;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The binary vm-test runs unless `--qemu` says otherwise.
pub const BINARY: &str = "qemu-system-x86_64";

/// The backports suite QEMU comes from on each release that needs one.
const BACKPORTS: &[(&str, &str)] = &[("bookworm", "bookworm-backports")];

/// Packages that must come from the same suite as qemu-system-x86: its versioned
/// dependencies (`qemu-system-common (=)`, `qemu-system-data (>>)`, `seabios (>>)`) and
/// qemu-utils, whose backports build Breaks bookworm's qemu-system-common.
const PAIR: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "qemu-utils",
];

pub fn default_binary() -> PathBuf {
    plumbing::util::which(BINARY).unwrap_or_else(|| PathBuf::from(BINARY))
}

/// What to install for a working QEMU, or `None` when one is on PATH.
pub fn plan() -> Result<Option<Install>> {
    if plumbing::util::which(BINARY).is_some() {
        return Ok(None);
    }
    Ok(Some(install_for(apt::codename().as_deref())))
}

/// The install for a release (by codename): the pair from its backports suite where the
/// harness uses one, else the release's own QEMU.
pub fn install_for(codename: Option<&str>) -> Install {
    let purpose = "QEMU".to_owned();
    match BACKPORTS.iter().find(|(c, _)| Some(*c) == codename) {
        Some((_, suite)) => Install {
            purpose,
            packages: PAIR.iter().map(|p| Package::from_suite(p, suite)).collect(),
            sources: vec![apt::debian_suite(suite)],
        },
        None => Install {
            purpose,
            packages: vec![Package::new("qemu-system-x86"), Package::new("qemu-utils")],
            sources: vec![],
        },
    }
}

/// Version check and a microvm boot under TCG, once per QEMU binary (the verdict is
/// cached by path, size and mtime). Fails with what to do.
pub fn probe(qemu: &Path, ui: &Ui) -> Result<()> {
    let key =
        identity(qemu).with_context(|| format!("QEMU ({}) is not installed", qemu.display()))?;
    let stamp = plumbing::paths::cache_dir().join("qemu-probe.ok");
    if std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(());
    }
    let fix = format!(
        "reinstall a matched QEMU: as root, `cargo xtask setup`; or by hand:\n{}",
        install_for(apt::codename().as_deref()).commands()
    );
    let version = vm::qemu_probe::version(qemu).map_err(|e| anyhow::anyhow!("{e}\n  {fix}"))?;
    let took = match vm::qemu_probe::microvm_boot(qemu, Duration::from_secs(60)) {
        Ok(t) => t,
        Err(e) => bail!("{} failed the boot probe: {e}\n  {fix}", version.line),
    };
    ui.note(format!(
        "{}: microvm boot probe passed in {took:.1?}",
        version.line
    ));
    if let Some(dir) = stamp.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&stamp, key);
    Ok(())
}

fn identity(qemu: &Path) -> Result<String> {
    let path = if qemu.components().count() > 1 {
        qemu.to_path_buf()
    } else {
        plumbing::util::which(&qemu.to_string_lossy()).context("not on PATH")?
    };
    let meta = std::fs::metadata(&path).with_context(|| path.display().to_string())?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}|{}|{mtime}", path.display(), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookworm_gets_the_backports_pair_with_its_own_source() {
        let i = install_for(Some("bookworm"));
        let args: Vec<String> = i.packages.iter().map(Package::arg).collect();
        assert!(args.contains(&"qemu-system-x86/bookworm-backports".to_string()));
        assert!(args.contains(&"qemu-utils/bookworm-backports".to_string()));
        assert!(args.contains(&"seabios/bookworm-backports".to_string()));
        assert_eq!(i.sources.len(), 1);
        assert!(i.sources[0].contents.contains("Suites: bookworm-backports"));
        assert!(i.commands().contains("sudo apt-get update"));
    }

    #[test]
    fn other_releases_use_their_own_qemu() {
        let i = install_for(Some("trixie"));
        assert!(i.sources.is_empty());
        assert_eq!(
            i.packages,
            vec![Package::new("qemu-system-x86"), Package::new("qemu-utils")]
        );
    }
}
