//! Debian's package tools: what is installed, installing what is missing with apt-get as
//! root, and the exact commands to run when we are not root.

use anyhow::{Context, Result};
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::which;
use std::path::Path;

/// A package to install, optionally from a named suite (`qemu-system-x86/bookworm-backports`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub suite: Option<String>,
}

impl Package {
    pub fn new(name: &str) -> Package {
        Package {
            name: name.to_owned(),
            suite: None,
        }
    }
    pub fn from_suite(name: &str, suite: &str) -> Package {
        Package {
            name: name.to_owned(),
            suite: Some(suite.to_owned()),
        }
    }
    /// The word apt-get takes for it.
    pub fn arg(&self) -> String {
        match &self.suite {
            Some(s) => format!("{}/{s}", self.name),
            None => self.name.clone(),
        }
    }
}

/// An extra apt source the harness adds in its own file (never editing the machine's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraSource {
    /// `/etc/apt/sources.list.d/<file>`.
    pub file: String,
    pub contents: String,
}

impl ExtraSource {
    fn path(&self) -> std::path::PathBuf {
        Path::new("/etc/apt/sources.list.d").join(&self.file)
    }
}

/// The harness's own sources entry for a suite of Debian's archive
/// (`/etc/apt/sources.list.d/fuse-iomap-harness-SUITE.sources`).
pub fn debian_suite(suite: &str) -> ExtraSource {
    ExtraSource {
        file: format!("fuse-iomap-harness-{suite}.sources"),
        contents: format!(
            "# Added by fuse-iomap-harness: packages it selects by name from {suite}.\n\
             Types: deb\n\
             URIs: http://deb.debian.org/debian\n\
             Suites: {suite}\n\
             Components: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    }
}

/// What to install: packages, and the sources they need.
#[derive(Clone, Debug, Default)]
pub struct Install {
    /// Why, for messages: "the kernel build", "QEMU", ...
    pub purpose: String,
    pub packages: Vec<Package>,
    pub sources: Vec<ExtraSource>,
}

impl Install {
    /// The commands a user runs as root to do the same (printed when we are not root).
    pub fn commands(&self) -> String {
        let mut lines = Vec::new();
        for s in &self.sources {
            lines.push(format!(
                "printf '%s\\n' {} | sudo tee {} >/dev/null",
                s.contents
                    .lines()
                    .map(|l| shlex::try_quote(l).map_or_else(|_| "''".into(), |q| q.into_owned()))
                    .collect::<Vec<_>>()
                    .join(" "),
                s.path().display()
            ));
        }
        if !self.sources.is_empty() {
            lines.push("sudo apt-get update".into());
        }
        lines.push(format!(
            "sudo apt-get install -y --no-install-recommends {}",
            self.args().join(" ")
        ));
        lines.join("\n")
    }

    fn args(&self) -> Vec<String> {
        self.packages.iter().map(Package::arg).collect()
    }
}

/// Whether a Debian package is installed, and its version.
pub fn dpkg_version(pkg: &str) -> Result<Option<String>> {
    if which("dpkg-query").is_none() {
        return Ok(None);
    }
    let sh = xshell::Shell::new().context("running dpkg-query")?;
    let format = "${db:Status-Abbrev}|${Version}";
    let out = xshell::cmd!(sh, "dpkg-query -W -f {format} {pkg}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()
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
    let sh = xshell::Shell::new()?;
    let out = xshell::cmd!(sh, "dpkg -L {pkg}")
        .quiet()
        .read()
        .with_context(|| format!("listing files of {pkg}"))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The Debian release's codename (`bookworm`), from /etc/os-release.
pub fn codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Install as root; otherwise fail (usage, exit 2) with the exact commands to run.
pub fn install(what: &Install, ui: &Ui) -> Result<()> {
    if what.packages.is_empty() {
        return Ok(());
    }
    let root = nix::unistd::geteuid().is_root();
    if !root || which("apt-get").is_none() {
        return Err(usage(format!(
            "Debian packages for {} are not installed: {}\n  install them as root with:\n{}",
            what.purpose,
            what.packages
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            indent(&what.commands())
        )));
    }
    let mut new_source = false;
    for s in &what.sources {
        let path = s.path();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(s.contents.as_str()) {
            ui.note(format!("adding apt source {}", path.display()));
            std::fs::write(&path, &s.contents)
                .with_context(|| format!("writing {}", path.display()))?;
            new_source = true;
        }
    }
    let args = what.args();
    ui.step(format!(
        "installing {} for {} (apt-get)",
        args.join(" "),
        what.purpose
    ));
    if new_source {
        apt_update(ui)?;
    }
    let install = || {
        duct::cmd(
            "apt-get",
            ["install", "-y", "--no-install-recommends"]
                .map(String::from)
                .into_iter()
                .chain(args.iter().cloned()),
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
    };
    let mut out = install().context("running apt-get install")?;
    if !out.status.success() && !new_source {
        // A fresh machine may have stale package lists.
        ui.note("apt-get install failed; running apt-get update and retrying");
        apt_update(ui)?;
        out = install().context("running apt-get install")?;
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = format!(
            "apt-get install {} failed:\n{}",
            args.join(" "),
            indent(err.trim())
        );
        if err.contains("Unable to locate package") || err.contains("has no installation candidate")
        {
            return Err(usage(msg));
        }
        anyhow::bail!(msg);
    }
    Ok(())
}

fn apt_update(ui: &Ui) -> Result<()> {
    let out = duct::cmd!("apt-get", "update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running apt-get update")?;
    if !out.status.success() {
        ui.warn(format!(
            "apt-get update failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_commands_add_the_source_then_install_from_it() {
        let what = Install {
            purpose: "QEMU".into(),
            packages: vec![
                Package::from_suite("qemu-system-x86", "bookworm-backports"),
                Package::new("fio"),
            ],
            sources: vec![ExtraSource {
                file: "x.sources".into(),
                contents: "Types: deb\nSuites: bookworm-backports\n".into(),
            }],
        };
        let c = what.commands();
        assert_eq!(
            c,
            "printf '%s\\n' 'Types: deb' 'Suites: bookworm-backports' | sudo tee /etc/apt/sources.list.d/x.sources >/dev/null\n\
             sudo apt-get update\n\
             sudo apt-get install -y --no-install-recommends qemu-system-x86/bookworm-backports fio"
        );
    }

    /// The printed source line, run by a shell, writes exactly the contents (quotes included).
    #[test]
    fn printed_source_command_writes_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let contents = "# it's the harness's\nTypes: deb\nSuites: a b\n";
        let what = Install {
            purpose: "x".into(),
            packages: vec![Package::new("p")],
            sources: vec![ExtraSource {
                file: "f".into(),
                contents: contents.into(),
            }],
        };
        let line = what.commands().lines().next().unwrap().to_owned();
        let target = dir.path().join("out");
        let line = line
            .replace("sudo ", "")
            .replace("/etc/apt/sources.list.d/f", target.to_str().unwrap());
        let st = std::process::Command::new("sh")
            .args(["-c", &line])
            .status()
            .unwrap();
        assert!(st.success(), "{line}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), contents);
    }
}
