//! The repository to bisect and the clone of it that git bisect moves.

use super::git;
use super::state::Rev;
use super::BisectArgs;
use anyhow::{Context, Result};
use kernel::{KernelOptions, SourceSpec};
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::{sanitize, sha256_hex};
use std::path::{Path, PathBuf};

/// Where the repository to bisect comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local git work tree or bare repository (canonical path).
    Local(PathBuf),
    /// A git URL, cloned without blobs (they come at checkout).
    Url(String),
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::Local(p) => p.display().to_string(),
            Origin::Url(u) => u.clone(),
        }
    }

    /// A readable, stable default name: `<basename>-<hash8>`.
    pub fn default_name(&self) -> String {
        let s = self.describe();
        let base = s
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("kernel")
            .trim_end_matches(".git");
        format!("{}-{}", sanitize(base), &sha256_hex(s.as_bytes())[..8])
    }
}

/// The repository to bisect: --source-dir/--git, else the profile's source.
pub fn origin(args: &BisectArgs) -> Result<Origin> {
    let k = &args.kernel;
    if k.git_ref.is_some() {
        return Err(usage(
            "bisect tests the commits between --good and --bad: leave out --ref",
        ));
    }
    if k.series.is_some() || k.b4.is_some() {
        return Err(usage(
            "bisect builds each commit as it is: --series and --b4 are not supported",
        ));
    }
    let opts = KernelOptions::resolve(args.profile.as_deref(), k)?;
    if opts.series.is_some() {
        return Err(usage(format!(
            "profile `{}` applies a patch series; bisect builds each commit as it is \
             (use --source-dir with a tree that has the series committed)",
            opts.profile
        )));
    }
    match opts.source {
        SourceSpec::Dir { path, .. } => {
            let dir = path
                .canonicalize()
                .map_err(|e| usage(format!("kernel source {}: {e}", path.display())))?;
            if !git::is_repository(&dir) {
                return Err(usage(format!(
                    "{} is not a git repository: bisect needs the kernel's history",
                    dir.display()
                )));
            }
            Ok(Origin::Local(dir))
        }
        SourceSpec::Git { url, .. } => Ok(Origin::Url(url)),
        other => Err(usage(format!(
            "bisect needs a git source: --source-dir DIR (a git tree), --git URL, or a profile \
             with source-dir or git (profile `{}` has {other:?})",
            opts.profile
        ))),
    }
}

/// Clone the repository into the cache once. `--shared` borrows the local
/// repository's objects: fast, and that repository is never written.
pub fn ensure_clone(origin: &Origin, wt: &Path, ui: &Ui) -> Result<()> {
    if wt.join(".git").exists() {
        if let Origin::Url(_) = origin {
            let _ = git::run(wt, &["fetch", "-q", "--tags", "origin"]);
        }
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(wt);
    std::fs::create_dir_all(wt.parent().unwrap_or(wt))?;
    let act = ui.activity(&format!(
        "cloning {} into {}",
        origin.describe(),
        wt.display()
    ));
    // A clone of a kernel from a URL takes minutes: a supervised child (duct), not a
    // short shell step.
    let (how, from) = match origin {
        Origin::Local(p) => ("--shared", p.as_os_str().to_owned()),
        Origin::Url(u) => ("--filter=blob:none", u.into()),
    };
    let out = duct::cmd!("git", "clone", "-q", "--no-checkout", how, from, wt)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running git clone")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(wt);
        anyhow::bail!(
            "cloning {}: {}",
            origin.describe(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    act.finish("cloned");
    Ok(())
}

/// A revision as the user means it: in their repository for a local one
/// (their branches, HEAD~3), in the clone for a URL (tags, origin/BRANCH).
pub fn resolve(origin: &Origin, wt: &Path, rev: &str) -> Result<Rev> {
    let (repo, sha) = match origin {
        Origin::Local(p) => (p.as_path(), git::commit_of(p, rev)),
        Origin::Url(_) => (
            wt,
            git::commit_of(wt, rev).or_else(|| git::commit_of(wt, &format!("origin/{rev}"))),
        ),
    };
    let sha =
        sha.ok_or_else(|| usage(format!("`{rev}` is not a commit in {}", origin.describe())))?;
    Ok(Rev {
        arg: rev.to_string(),
        subject: git::subject(repo, &sha),
        sha,
    })
}
