//! Kernel sources: a local tree, a git URL + ref, a tarball, or a Debian
//! linux-source package. The user's own tree is never modified: series are
//! applied in a clone or copy inside the cache.

use super::series::{self, Series, SeriesInfo};
use anyhow::{Context, Result};
use hostsetup::apt as deps;
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::{sanitize, sha256_file, sha256_hex, short};
use std::path::{Path, PathBuf};

/// Where the kernel source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A local tree (git checkout or plain). With a ref, that commit is
    /// checked out into the cache; without, the tree is built in place (O=).
    Dir {
        path: PathBuf,
        git_ref: Option<String>,
    },
    /// A git URL and ref, fetched (shallow) into the cache.
    Git { url: String, git_ref: String },
    /// A tarball path or http(s) URL.
    Tarball(String),
    /// A Debian `linux-source-X` package, installed when missing.
    DebianPackage(String),
}

/// A tree ready for `make`.
#[derive(Debug, Clone)]
pub struct PreparedSource {
    /// Where `make -C` runs.
    pub tree: PathBuf,
    /// Stable identity for the cache key (revision, package version, hash).
    pub identity: String,
    /// For people: "Debian package linux-source-6.12 6.12.117-1~deb12u1".
    pub description: String,
    /// git commit (with `-dirty` for a modified local tree) or package version.
    pub revision: Option<String>,
    pub series: Option<SeriesInfo>,
    /// The user's own tree, built in place with O=: it may change between
    /// runs, so make always runs (it is incremental).
    pub in_place: bool,
}

/// Resolve a source into a tree, applying `series` if given.
pub fn prepare(
    spec: &SourceSpec,
    series: Option<&Series>,
    cache: &Path,
    ui: &Ui,
) -> Result<PreparedSource> {
    match spec {
        SourceSpec::DebianPackage(pkg) => {
            let (tree, version) = debian_tree(pkg, cache, ui)?;
            let base = PreparedSource {
                tree,
                identity: format!("debian:{pkg}={version}"),
                description: format!("Debian package {pkg} {version}"),
                revision: Some(version),
                series: None,
                in_place: false,
            };
            with_plain_series(base, series, cache, ui)
        }
        SourceSpec::Tarball(t) => {
            let (tree, sha) = tarball_tree(t, cache, ui)?;
            let base = PreparedSource {
                tree,
                identity: format!("tarball:sha256:{sha}"),
                description: format!("tarball {t}"),
                revision: None,
                series: None,
                in_place: false,
            };
            with_plain_series(base, series, cache, ui)
        }
        SourceSpec::Git { url, git_ref } => git_url_tree(url, git_ref, series, cache, ui),
        SourceSpec::Dir { path, git_ref } => {
            local_tree(path, git_ref.as_deref(), series, cache, ui)
        }
    }
}

/// Marker written next to a finished tree in the cache (outside the tree, so
/// it never shows in `git status`).
fn ready_marker(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".ready");
    PathBuf::from(s)
}

fn is_ready(dir: &Path) -> bool {
    ready_marker(dir).is_file() && dir.join("Makefile").is_file()
}

fn mark_ready(dir: &Path) -> Result<()> {
    std::fs::write(ready_marker(dir), b"ok\n")
        .with_context(|| format!("marking {} ready", dir.display()))
}

fn check_kernel_tree(dir: &Path) -> Result<()> {
    if dir.join("Makefile").is_file()
        && dir.join("Kconfig").is_file()
        && dir.join("scripts/kconfig").is_dir()
    {
        Ok(())
    } else {
        Err(usage(format!(
            "{} is not a Linux kernel source tree (no Makefile/Kconfig/scripts/kconfig)",
            dir.display()
        )))
    }
}

/// `pkg` or `pkg/suite` (apt's syntax): a suite the machine's sources lack (a newer
/// release's backports, say) is added in the harness's own sources entry.
fn debian_tree(spec: &str, cache: &Path, ui: &Ui) -> Result<(PathBuf, String)> {
    let (pkg, suite) = match spec.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (spec, None),
    };
    let valid = |s: &str, extra: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if !valid(pkg, "+-.") || suite.is_some_and(|s| !valid(s, "-")) {
        return Err(usage(format!(
            "`{spec}` is not a Debian package name (or name/suite)"
        )));
    }
    let version = match deps::dpkg_version(pkg)? {
        Some(v) => v,
        None => {
            deps::install(
                &deps::Install {
                    purpose: format!("the kernel source ({spec})"),
                    packages: vec![match suite {
                        Some(s) => deps::Package::from_suite(pkg, s),
                        None => deps::Package::new(pkg),
                    }],
                    sources: suite.map(deps::debian_suite).into_iter().collect(),
                },
                ui,
            )?;
            deps::dpkg_version(pkg)?
                .with_context(|| format!("{pkg} is still not installed after apt-get"))?
        }
    };
    let tarball = deps::dpkg_files(pkg)?
        .into_iter()
        .find(|f| {
            f.starts_with("/usr/src/")
                && [".tar.xz", ".tar.bz2", ".tar.gz"]
                    .iter()
                    .any(|s| f.ends_with(s))
        })
        .ok_or_else(|| {
            usage(format!(
                "package {pkg} ships no /usr/src/*.tar.* kernel source"
            ))
        })?;
    let dst = cache
        .join("sources/debian")
        .join(format!("{pkg}_{}", sanitize(&version)));
    unpack_once(Path::new(&tarball), &dst, ui)?;
    Ok((dst, version))
}

fn tarball_tree(t: &str, cache: &Path, ui: &Ui) -> Result<(PathBuf, String)> {
    let file = if t.starts_with("http://") || t.starts_with("https://") {
        download(t, cache, ui)?
    } else {
        let p = PathBuf::from(t);
        if !p.is_file() {
            return Err(usage(format!("tarball {t} does not exist")));
        }
        p
    };
    let sha = sha256_file(&file)?;
    let dst = cache.join("sources/tarball").join(short(&sha));
    unpack_once(&file, &dst, ui)?;
    Ok((dst, sha))
}

fn download(url: &str, cache: &Path, ui: &Ui) -> Result<PathBuf> {
    let base = url
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or("download");
    let dst = cache.join("downloads").join(format!(
        "{}-{}",
        short(&sha256_hex(url.as_bytes())),
        sanitize(base)
    ));
    if dst.is_file() {
        return Ok(dst);
    }
    std::fs::create_dir_all(dst.parent().unwrap_or(cache))?;
    ui.step(format!("downloading {url}"));
    let tmp = dst.with_extension("part");
    let out = duct::cmd!(
        "curl",
        "-fL",
        "--retry",
        "2",
        "--connect-timeout",
        "20",
        "-sS",
        "-o",
        &tmp,
        url
    )
    .stderr_capture()
    .unchecked()
    .run()
    .context("running curl")?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "cannot download {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::rename(&tmp, &dst)?;
    Ok(dst)
}

/// Unpack a kernel tarball into `dst` once (atomically: temp dir + rename).
fn unpack_once(archive: &Path, dst: &Path, ui: &Ui) -> Result<()> {
    if is_ready(dst) {
        return Ok(());
    }
    let tmp = dst.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let act = ui.activity(&format!("unpacking {}", archive.display()));
    duct::cmd!("tar", "-xf", archive, "-C", &tmp, "--strip-components=1")
        .run()
        .with_context(|| format!("unpacking {}", archive.display()))?;
    act.finish(format!("into {}", dst.display()));
    check_kernel_tree(&tmp)?;
    std::fs::rename(&tmp, dst)?;
    mark_ready(dst)
}

/// A packaged tree plus a series: a patched copy in the cache.
fn with_plain_series(
    base: PreparedSource,
    series: Option<&Series>,
    cache: &Path,
    ui: &Ui,
) -> Result<PreparedSource> {
    let Some(series) = series else {
        return Ok(base);
    };
    let id = sha256_hex(format!("{}\n{}", base.identity, series.sha256).as_bytes());
    let dst = cache.join("sources/patched").join(short(&id));
    if !is_ready(&dst) {
        let tmp = dst.with_extension("copying");
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(dst.parent().unwrap_or(cache))?;
        let act = ui.activity("copying the tree for the series");
        duct::cmd!("cp", "-a", "--reflink=auto", &base.tree, &tmp)
            .run()
            .with_context(|| format!("copying {} to {}", base.tree.display(), tmp.display()))?;
        act.finish("copied");
        if let Err(e) = series::apply_plain(series, &tmp, ui) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dst)?;
        mark_ready(&dst)?;
    }
    Ok(PreparedSource {
        tree: dst,
        series: Some(series.info()),
        ..base
    })
}

fn git_out(dir: &Path, args: &[&str]) -> Result<String> {
    let stdout = plumbing::util::git(dir, args)?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}

fn run_git(dir: &Path, args: &[&str]) -> Result<()> {
    git_out(dir, args).map(|_| ())
}

fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Explain a failed fetch; unreachable hosts are common on offline machines.
fn fetch_error(url: &str, git_ref: &str, stderr: &str) -> anyhow::Error {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url);
    let unreachable = [
        "Could not resolve host",
        "Failed to connect",
        "unable to access",
        "Connection timed out",
        "Network is unreachable",
    ]
    .iter()
    .any(|s| stderr.contains(s));
    if unreachable {
        anyhow::anyhow!(
            "{host} cannot be reached from this machine, so {url} ({git_ref}) cannot be fetched.\n  \
             git said: {}\n  Use a local kernel tree instead (--source-dir DIR, optionally with --series or --ref).",
            stderr.trim()
        )
    } else {
        anyhow::anyhow!("cannot fetch {git_ref} from {url}: {}", stderr.trim())
    }
}

fn git_url_tree(
    url: &str,
    git_ref: &str,
    series: Option<&Series>,
    cache: &Path,
    ui: &Ui,
) -> Result<PreparedSource> {
    let mirror = cache
        .join("sources/git")
        .join(format!("{}.git", short(&sha256_hex(url.as_bytes()))));
    if !mirror.join("HEAD").is_file() {
        std::fs::create_dir_all(&mirror)?;
        run_git(&mirror, &["init", "-q", "--bare"])?;
    }
    let have = |r: &str| {
        git_out(
            &mirror,
            &["rev-parse", "--verify", "-q", &format!("{r}^{{commit}}")],
        )
        .ok()
    };
    let rev = match is_full_sha(git_ref).then(|| have(git_ref)).flatten() {
        Some(rev) => rev,
        None => {
            let local = format!("refs/harness/{}", sanitize(git_ref));
            let act = ui.activity(&format!("fetching {git_ref} from {url}"));
            let out = duct::cmd!(
                "git",
                "-C",
                &mirror,
                "fetch",
                "--depth",
                "1",
                "--no-tags",
                url,
                format!("+{git_ref}:{local}")
            )
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()
            .context("running git fetch")?;
            if !out.status.success() {
                return Err(fetch_error(
                    url,
                    git_ref,
                    &String::from_utf8_lossy(&out.stderr),
                ));
            }
            act.finish("fetched");
            have(&local).with_context(|| format!("fetched {git_ref} but cannot resolve it"))?
        }
    };
    let id = sha256_hex(
        format!(
            "{url}\n{rev}\n{}",
            series.map(|s| s.sha256.as_str()).unwrap_or("")
        )
        .as_bytes(),
    );
    let dst = cache.join("sources/checkouts").join(short(&id));
    if !is_ready(&dst) {
        let _ = std::fs::remove_dir_all(&dst);
        let _ = std::fs::remove_file(ready_marker(&dst));
        run_git(&mirror, &["worktree", "prune"])?;
        std::fs::create_dir_all(dst.parent().unwrap_or(cache))?;
        let dst_s = dst.to_string_lossy().into_owned();
        let act = ui.activity(&format!("checking out {} into the cache", &rev[..12]));
        run_git(
            &mirror,
            &["worktree", "add", "-f", "--detach", &dst_s, &rev],
        )?;
        act.finish("checked out");
        if let Some(s) = series {
            run_git(
                &dst,
                &[
                    "checkout",
                    "-q",
                    "-B",
                    &format!("harness-series-{}", short(&id)),
                ],
            )?;
            if let Err(e) = series::apply_git(s, &dst, ui) {
                let _ = run_git(&mirror, &["worktree", "remove", "--force", &dst_s]);
                return Err(e);
            }
        }
        check_kernel_tree(&dst)?;
        mark_ready(&dst)?;
    }
    let head = git_out(&dst, &["rev-parse", "HEAD"])?;
    Ok(PreparedSource {
        tree: dst,
        identity: format!("git:{url}@{rev}"),
        description: format!("git {url} {git_ref}"),
        revision: Some(head),
        series: series.map(Series::info),
        in_place: false,
    })
}

fn local_tree(
    path: &Path,
    git_ref: Option<&str>,
    series: Option<&Series>,
    cache: &Path,
    ui: &Ui,
) -> Result<PreparedSource> {
    let dir = path
        .canonicalize()
        .map_err(|e| usage(format!("kernel source {}: {e}", path.display())))?;
    check_kernel_tree(&dir)?;
    let toplevel = git_out(&dir, &["rev-parse", "--show-toplevel"])
        .ok()
        .map(PathBuf::from);
    let is_git = toplevel.as_deref() == Some(dir.as_path());
    if !is_git {
        if let Some(r) = git_ref {
            return Err(usage(format!(
                "--ref {r} needs a git checkout, and {} is not one",
                dir.display()
            )));
        }
        let base = PreparedSource {
            tree: dir.clone(),
            identity: format!("dir:{}", dir.display()),
            description: format!("local tree {}", dir.display()),
            revision: None,
            series: None,
            in_place: true,
        };
        if series.is_some() {
            ui.note(format!(
                "{} is not a git checkout: the series is applied to a snapshot copy in the cache \
                 (delete {}/sources/patched to refresh it after editing the tree)",
                dir.display(),
                cache.display()
            ));
            return Ok(PreparedSource {
                in_place: false,
                ..with_plain_series(base, series, cache, ui)?
            });
        }
        return Ok(base);
    }

    let want = git_ref.unwrap_or("HEAD");
    let rev = git_out(
        &dir,
        &["rev-parse", "--verify", "-q", &format!("{want}^{{commit}}")],
    )
    .map_err(|_| usage(format!("{want} is not a commit in {}", dir.display())))?;
    let dirty = !git_out(&dir, &["status", "--porcelain", "--untracked-files=no"])?.is_empty();

    if series.is_none() && git_ref.is_none() {
        // Build the user's tree as it is, out of tree.
        return Ok(PreparedSource {
            tree: dir.clone(),
            identity: format!("dir:{}", dir.display()),
            description: format!("local tree {}", dir.display()),
            revision: Some(if dirty { format!("{rev}-dirty") } else { rev }),
            series: None,
            in_place: true,
        });
    }
    if dirty {
        ui.warn(format!(
            "uncommitted changes in {} are not part of this build (it uses commit {})",
            dir.display(),
            &rev[..12]
        ));
    }
    let id = sha256_hex(
        format!(
            "{}\n{rev}\n{}",
            dir.display(),
            series.map(|s| s.sha256.as_str()).unwrap_or("")
        )
        .as_bytes(),
    );
    let dst = cache.join("sources/checkouts").join(short(&id));
    if !is_ready(&dst) {
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(dst.parent().unwrap_or(cache))?;
        let act = ui.activity(&format!(
            "cloning {} at {} into the cache",
            dir.display(),
            &rev[..12]
        ));
        // --shared borrows the objects: fast, and the user's repository is untouched.
        duct::cmd!(
            "git",
            "clone",
            "-q",
            "--shared",
            "--no-checkout",
            &dir,
            &dst
        )
        .run()
        .with_context(|| format!("cloning {}", dir.display()))?;
        run_git(&dst, &["checkout", "-q", "--detach", &rev])?;
        act.finish("cloned");
        if let Some(s) = series {
            run_git(&dst, &["checkout", "-q", "-b", "harness-series"])?;
            if let Err(e) = series::apply_git(s, &dst, ui) {
                let _ = std::fs::remove_dir_all(&dst);
                return Err(e);
            }
        }
        mark_ready(&dst)?;
    }
    let head = git_out(&dst, &["rev-parse", "HEAD"])?;
    Ok(PreparedSource {
        tree: dst,
        identity: format!("git:{}@{rev}", dir.display()),
        description: format!("local git tree {} at {want}", dir.display()),
        revision: Some(head),
        series: series.map(Series::info),
        in_place: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{split_mbox, Series};
    use plumbing::error::{exit_code, EXIT_USAGE};

    fn git(dir: &Path, args: &[&str]) {
        test_support::git::GitRepo::open(dir).git(args);
    }

    /// A tiny tree that passes the kernel-tree check.
    fn fake_tree(dir: &Path, as_git: bool) {
        std::fs::create_dir_all(dir.join("scripts/kconfig")).unwrap();
        std::fs::create_dir_all(dir.join("fs/fuse")).unwrap();
        std::fs::write(dir.join("Makefile"), "all:\n").unwrap();
        std::fs::write(dir.join("scripts/kconfig/merge_config.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.join("Kconfig"), "source \"fs/fuse/Kconfig\"\n").unwrap();
        std::fs::write(
            dir.join("fs/fuse/Kconfig"),
            "config FUSE_FS\n\ttristate \"FUSE\"\n",
        )
        .unwrap();
        if as_git {
            test_support::git::GitRepo::init(dir).commit_all("base");
        }
    }

    /// A one-patch series adding FUSE_IOMAP to fs/fuse/Kconfig.
    fn iomap_series() -> Series {
        let text = "From 0 Mon Sep 17 00:00:00 2001\nFrom: T <t@t>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH] fuse: add iomap\n\n---\ndiff --git a/fs/fuse/Kconfig b/fs/fuse/Kconfig\n--- a/fs/fuse/Kconfig\n+++ b/fs/fuse/Kconfig\n@@ -1,2 +1,4 @@\n config FUSE_FS\n \ttristate \"FUSE\"\n+config FUSE_IOMAP\n+\tbool \"FUSE file IO over iomap\"\n-- \n2.39\n\n";
        Series {
            origin: "test".into(),
            patches: split_mbox(text.as_bytes(), "t"),
            sha256: sha256_hex(text.as_bytes()),
        }
    }

    fn has_git() -> bool {
        use test_support::needs::tool;
        test_support::needs_all([tool("git"), tool("patch")])
    }

    #[test]
    fn local_git_tree_in_place_and_with_series() {
        if !has_git() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (tree, cache) = (d.path().join("linux"), d.path().join("cache"));
        fake_tree(&tree, true);
        let ui = Ui::plain();
        let spec = SourceSpec::Dir {
            path: tree.clone(),
            git_ref: None,
        };

        let p = prepare(&spec, None, &cache, &ui).unwrap();
        assert!(p.in_place);
        assert_eq!(p.tree, tree.canonicalize().unwrap());
        let rev = p.revision.clone().unwrap();
        assert_eq!(rev.len(), 40);
        // An edit shows as -dirty.
        std::fs::write(tree.join("Makefile"), "all:\n\ttrue\n").unwrap();
        let p = prepare(&spec, None, &cache, &ui).unwrap();
        assert_eq!(p.revision.unwrap(), format!("{rev}-dirty"));
        git(&tree, &["checkout", "-q", "Makefile"]);

        let s = iomap_series();
        let p = prepare(&spec, Some(&s), &cache, &ui).unwrap();
        assert!(!p.in_place);
        assert!(p.tree.starts_with(&cache));
        assert!(
            crate::tree_has_iomap(&p.tree),
            "series applied in the cache copy"
        );
        assert!(!crate::tree_has_iomap(&tree), "user's tree untouched");
        assert_eq!(
            p.identity,
            format!("git:{}@{rev}", tree.canonicalize().unwrap().display())
        );
        assert_eq!(
            p.series.as_ref().unwrap().patches,
            vec!["[PATCH] fuse: add iomap"]
        );
        // The user's repository got no new branches or worktrees.
        let branches = test_support::git::GitRepo::open(&tree).git(&["branch", "--list"]);
        assert_eq!(branches.lines().count(), 1);
        // Reused on the second call.
        let again = prepare(&spec, Some(&s), &cache, &ui).unwrap();
        assert_eq!(again.tree, p.tree);
    }

    /// A git URL source (file:// stands in for a server): shallow fetch into
    /// a bare mirror, a worktree per commit, the series on a scratch branch.
    #[test]
    fn git_url_source_fetches_and_applies_series() {
        if !has_git() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (upstream, cache) = (d.path().join("upstream"), d.path().join("cache"));
        fake_tree(&upstream, true);
        git(&upstream, &["branch", "-q", "-M", "fuse-iomap-test"]);
        let url = format!("file://{}", upstream.display());
        let spec = SourceSpec::Git {
            url: url.clone(),
            git_ref: "fuse-iomap-test".into(),
        };
        let ui = Ui::plain();

        let plain = prepare(&spec, None, &cache, &ui).unwrap();
        assert!(!plain.in_place);
        assert!(plain.tree.starts_with(cache.join("sources/checkouts")));
        assert!(!crate::tree_has_iomap(&plain.tree));
        let rev = plain.revision.clone().unwrap();
        assert_eq!(plain.identity, format!("git:{url}@{rev}"));

        let patched = prepare(&spec, Some(&iomap_series()), &cache, &ui).unwrap();
        assert_ne!(patched.tree, plain.tree);
        assert!(crate::tree_has_iomap(&patched.tree));
        assert_ne!(patched.revision.unwrap(), rev, "the series adds a commit");
        // The identity (and so the cache key) names the fetched commit.
        assert_eq!(patched.identity, plain.identity);

        // A ref the remote lacks is an error naming it.
        let bad = SourceSpec::Git {
            url,
            git_ref: "no-such-branch".into(),
        };
        let err = prepare(&bad, None, &cache, &ui).unwrap_err();
        assert!(err.to_string().contains("no-such-branch"), "{err:#}");
    }

    #[test]
    fn plain_tree_series_goes_to_a_copy() {
        if !has_git() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (tree, cache) = (d.path().join("plain"), d.path().join("cache"));
        fake_tree(&tree, false);
        let ui = Ui::plain();
        let spec = SourceSpec::Dir {
            path: tree.clone(),
            git_ref: None,
        };
        let p = prepare(&spec, Some(&iomap_series()), &cache, &ui).unwrap();
        assert!(p.tree.starts_with(cache.join("sources/patched")));
        assert!(crate::tree_has_iomap(&p.tree));
        assert!(!crate::tree_has_iomap(&tree));

        let err = prepare(
            &SourceSpec::Dir {
                path: tree.clone(),
                git_ref: Some("v1".into()),
            },
            None,
            &cache,
            &ui,
        )
        .unwrap_err();
        assert_eq!(exit_code(&err), EXIT_USAGE);
    }

    #[test]
    fn bad_sources_are_usage_errors() {
        let d = tempfile::tempdir().unwrap();
        let ui = Ui::plain();
        let cache = d.path().join("cache");
        for spec in [
            SourceSpec::Dir {
                path: d.path().join("missing"),
                git_ref: None,
            },
            SourceSpec::Dir {
                path: d.path().to_path_buf(),
                git_ref: None,
            }, // not a kernel tree
            SourceSpec::Tarball(d.path().join("nope.tar.xz").display().to_string()),
            SourceSpec::DebianPackage("bad name!".into()),
        ] {
            let err = prepare(&spec, None, &cache, &ui).unwrap_err();
            assert_eq!(exit_code(&err), EXIT_USAGE, "{spec:?}: {err:#}");
        }
    }

    #[test]
    fn unreachable_host_is_explained() {
        let e = fetch_error(
            "https://git.kernel.org/pub/scm/linux/kernel/git/djwong/xfs-linux.git",
            "fuse-iomap-cache",
            "fatal: unable to access '...': Could not resolve host: git.kernel.org",
        );
        let msg = e.to_string();
        assert!(msg.contains("git.kernel.org cannot be reached"), "{msg}");
        assert!(msg.contains("--source-dir"), "{msg}");
        assert_eq!(exit_code(&e), plumbing::error::EXIT_INFRA);
    }
}
