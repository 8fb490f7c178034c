//! Tools the harness and its tests run that Debian does not package at the version we
//! need, pinned and installed from their authors' registries: cargo-nextest, bindgen-cli,
//! cargo-machete and virtiofsd from crates.io (into ~/.cargo/bin), check-jsonschema from
//! PyPI (into a venv in the harness cache).

use anyhow::{bail, Context, Result};
use plumbing::ui::Ui;
use std::path::PathBuf;

/// A tool installed with `cargo install --locked`.
pub struct CargoTool {
    pub krate: &'static str,
    pub version: &'static str,
    /// The executable, and what `EXE --version` prints first (up to the version).
    pub exe: &'static str,
    pub version_args: &'static [&'static str],
    pub version_prefix: &'static str,
}

/// The test runner of the README's test command.
pub const NEXTEST: CargoTool = CargoTool {
    krate: "cargo-nextest",
    version: "0.9.143",
    exe: "cargo-nextest",
    version_args: &["nextest", "--version"],
    version_prefix: "cargo-nextest ",
};

/// Regenerates harness/ext2fs/src/sys.rs; the committed file names this version.
pub const BINDGEN: CargoTool = CargoTool {
    krate: "bindgen-cli",
    version: "0.73.2",
    exe: "bindgen",
    version_args: &["--version"],
    version_prefix: "bindgen ",
};

/// Finds dependencies a crate declares but does not use (.ci/run's lint step).
pub const MACHETE: CargoTool = CargoTool {
    krate: "cargo-machete",
    version: "0.9.2",
    exe: "cargo-machete",
    version_args: &["--version"],
    version_prefix: "",
};

/// Serves the run directory to the guest over virtio-fs (vm-test `--share`); Debian 12 does
/// not package it. Its build needs libseccomp and libcap-ng (`Job::RunShare`).
pub const VIRTIOFSD: CargoTool = CargoTool {
    krate: "virtiofsd",
    version: "1.14.0",
    exe: "virtiofsd",
    version_args: &["--version"],
    version_prefix: "virtiofsd ",
};

/// Validates the GitHub workflows against GitHub's schema (actionlint, the usual tool,
/// is published only on GitHub, which these machines cannot reach; ci.yml runs it there).
pub const CHECK_JSONSCHEMA: (&str, &str) = ("check-jsonschema", "0.39.0");

impl CargoTool {
    /// The executable: on PATH, else where `cargo install` puts it.
    pub fn path(&self) -> Option<PathBuf> {
        plumbing::util::which(self.exe).or_else(|| {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
            let exe = home.join("bin").join(self.exe);
            exe.is_file().then_some(exe)
        })
    }

    /// The exact command that installs the pinned version.
    pub fn install_command(&self) -> String {
        format!(
            "cargo install --locked --force --version {} {}",
            self.version, self.krate
        )
    }

    /// The installed version, if any.
    pub fn installed(&self) -> Option<String> {
        let exe = self.path()?;
        let out = duct::cmd(exe, self.version_args)
            .stdout_capture()
            .stderr_null()
            .unchecked()
            .run()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rest = text.lines().next()?.strip_prefix(self.version_prefix)?;
        rest.split_whitespace().next().map(str::to_owned)
    }

    pub fn ensure(&self, ui: &Ui) -> Result<()> {
        match self.installed() {
            Some(v) if v == self.version => return Ok(()),
            Some(v) => ui.note(format!(
                "{} {v} is installed; the harness pins {}",
                self.exe, self.version
            )),
            None => {}
        }
        ui.step(format!(
            "installing {} {} (cargo install --locked)",
            self.krate, self.version
        ));
        let activity = ui.activity(&format!("cargo install {}", self.krate));
        let out = duct::cmd!(
            "cargo",
            "install",
            "--locked",
            "--force",
            "--version",
            self.version,
            self.krate
        )
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running cargo install")?;
        activity.finish("done");
        if !out.status.success() {
            bail!(
                "cargo install {}@{} failed:\n{}",
                self.krate,
                self.version,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// The venv the Python tools live in.
fn venv() -> PathBuf {
    plumbing::paths::cache_dir().join("tools").join("venv")
}

/// check-jsonschema's executable (installed or not).
pub fn check_jsonschema() -> PathBuf {
    venv().join("bin").join(CHECK_JSONSCHEMA.0)
}

/// Installs check-jsonschema at its pinned version into the venv when it is not there.
pub fn ensure_check_jsonschema(ui: &Ui) -> Result<()> {
    let (name, version) = CHECK_JSONSCHEMA;
    let exe = check_jsonschema();
    if let Ok(out) = duct::cmd!(&exe, "--version")
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
    {
        if String::from_utf8_lossy(&out.stdout).contains(version) {
            return Ok(());
        }
    }
    ui.step(format!(
        "installing {name} {version} (pip, into {})",
        venv().display()
    ));
    let python = plumbing::util::which("python3").context("python3 is not installed")?;
    duct::cmd!(python, "-m", "venv", "--clear", venv())
        .stdout_null()
        .run()
        .context("creating the tools venv")?;
    let pip = venv().join("bin").join("pip");
    let out = duct::cmd!(
        pip,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        format!("{name}=={version}")
    )
    .stdout_null()
    .stderr_capture()
    .unchecked()
    .run()
    .context("running pip")?;
    if !out.status.success() {
        bail!(
            "pip install {name}=={version} failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
