//! Where the fstests tree comes from (a user's directory or a git URL) and how it is built:
//! in a chroot of the `fstests-build` root (same Debian release as the guest image), cached
//! by source revision, then packed into an ext4 disk the guest mounts.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use guest_image::{dir_to_ext4, ensure_rootfs, run_streaming};
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::git;

/// Bump when the way fstests is built changes (invalidates every cached build).
const BUILD_FORMAT: &str = "fstests-build-v1";
/// Where the built tree lives in the guest (fstests' own default install path).
pub const GUEST_DIR: &str = "/var/lib/xfstests";

/// A fstests source the user named.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Dir(PathBuf),
    Git { url: String, git_ref: String },
}

/// A built tree, ready to attach.
#[derive(Debug, Clone)]
pub struct Built {
    /// ext4 image of the built tree.
    pub image: PathBuf,
    /// The built tree on the host (for group lists).
    pub tree: PathBuf,
    /// Human description: "git 63a29724 (dirty)" or "directory /src/xfstests".
    pub revision: String,
}

/// A source checked out on the host, with what identifies its content.
struct Checkout {
    dir: PathBuf,
    /// Files to copy, relative to `dir` (None: the whole directory).
    files: Option<Vec<u8>>,
    revision: String,
    key_material: Vec<u8>,
}

fn is_git_tree(dir: &Path) -> bool {
    git(dir, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|o| o.starts_with(b"true"))
}

/// Identify a user's directory: a git tree by HEAD plus its uncommitted changes; any
/// other directory by every file's path, size and modification time.
fn checkout_dir(dir: &Path) -> Result<Checkout> {
    if !dir.join("check").is_file() || !dir.join("common/rc").is_file() {
        return Err(usage(format!(
            "--fstests-src {}: not an fstests tree (no `check` and `common/rc`)",
            dir.display()
        )));
    }
    let dir = std::fs::canonicalize(dir)?;
    if is_git_tree(&dir) {
        let head = String::from_utf8_lossy(&git(&dir, &["rev-parse", "HEAD"])?)
            .trim()
            .to_string();
        let status = git(&dir, &["status", "--porcelain", "--untracked-files=all"])?;
        let mut key = head.clone().into_bytes();
        key.extend(git(&dir, &["diff", "HEAD", "--binary"])?);
        // Untracked files count by content.
        let files = git(
            &dir,
            &[
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
        )?;
        for line in status
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"??"))
        {
            let rel = String::from_utf8_lossy(&line[3..]).to_string();
            key.extend(rel.as_bytes());
            key.extend(std::fs::read(dir.join(&rel)).unwrap_or_default());
        }
        let dirty = if status.is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        };
        return Ok(Checkout {
            revision: format!("git {}{dirty}", &head[..head.len().min(12)]),
            dir,
            files: Some(files),
            key_material: key,
        });
    }
    let mut key = vec![];
    walk(&dir, &dir, &mut key)?;
    Ok(Checkout {
        revision: format!("directory {}", dir.display()),
        dir,
        files: None,
        key_material: key,
    })
}

fn walk(base: &Path, dir: &Path, key: &mut Vec<u8>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let m = p.symlink_metadata()?;
        if m.is_dir() {
            if e.file_name() != "results" && e.file_name() != ".git" {
                walk(base, &p, key)?;
            }
            continue;
        }
        use std::os::unix::fs::MetadataExt;
        let rel = p.strip_prefix(base).unwrap_or(&p);
        key.extend(format!("{}\0{}\0{}\n", rel.display(), m.len(), m.mtime()).as_bytes());
    }
    Ok(())
}

/// Fetch `git_ref` of `url` (shallow) into a cached repository and check it out there.
fn checkout_git(url: &str, git_ref: &str, cache: &Path, ui: &Ui) -> Result<Checkout> {
    let name = plumbing::util::sha256_hex(url.as_bytes());
    let repo = cache
        .join("fstests")
        .join("git")
        .join(plumbing::util::short(&name));
    std::fs::create_dir_all(&repo)?;
    if !repo.join(".git").exists() {
        git(&repo, &["init", "-q"])?;
    }
    ui.step(format!("fstests: fetching {git_ref} from {url}"));
    git(&repo, &["fetch", "-q", "--depth", "1", url, git_ref]).with_context(|| {
        format!("cannot fetch fstests from {url}; use --fstests-src DIR for a local tree")
    })?;
    git(
        &repo,
        &["checkout", "-q", "--force", "--detach", "FETCH_HEAD"],
    )?;
    git(&repo, &["clean", "-qfdx"])?;
    checkout_dir(&repo)
}

impl Source {
    /// Describe the source for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.display().to_string(),
            Source::Git { url, git_ref } => format!("{url} {git_ref}"),
        }
    }
}

/// The built tree and its disk image for `source`, building it if it is not cached.
pub fn ensure_built(source: &Source, cache: &Path, jobs: usize, ui: &Ui) -> Result<Built> {
    let checkout = match source {
        Source::Dir(d) => checkout_dir(d)?,
        Source::Git { url, git_ref } => checkout_git(url, git_ref, cache, ui)?,
    };
    let images = plumbing::paths::workspace_root().join("images");
    let (root, root_key) = ensure_rootfs(&images, "fstests-build", cache, ui)?;
    let mut h = Sha256::new();
    for part in [
        BUILD_FORMAT.as_bytes(),
        root_key.as_bytes(),
        &checkout.key_material,
    ] {
        h.update(part);
        h.update([0]);
    }
    let digest = plumbing::util::hex(&h.finalize());
    let key = plumbing::util::short(&digest);
    let out = cache.join("fstests").join("builds").join(key);
    let built = Built {
        image: out.join("fstests.ext4"),
        tree: out.join("tree"),
        revision: checkout.revision.clone(),
    };
    if built.image.is_file() {
        ui.note(format!(
            "fstests: {} (cached build {key})",
            checkout.revision
        ));
        return Ok(built);
    }
    let _lock = plumbing::util::Lock::acquire(&cache.join("fstests").join("build.lock"), || {
        ui.note("fstests: waiting for another build of fstests")
    })?;
    if built.image.is_file() {
        return Ok(built);
    }
    ui.step(format!(
        "fstests: building {} in a chroot of {}",
        checkout.revision,
        root.display()
    ));
    let t0 = std::time::Instant::now();
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let src_in_root = root.join("build/src");
    if src_in_root.exists() {
        std::fs::remove_dir_all(&src_in_root)?;
    }
    std::fs::create_dir_all(&src_in_root)?;
    copy_tree(&checkout, &src_in_root)?;
    let log = out.join("build.log");
    // A private mount namespace: /proc and /dev for the build vanish with it.
    let script = format!(
        "set -e; mount -t proc proc {root}/proc; mount --rbind /dev {root}/dev; \
         exec chroot {root} /bin/sh -c 'cd /build/src && make -j{jobs}'",
        root = shell_quote(&root.to_string_lossy())
    );
    let cmd = duct::cmd!(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script
    );
    let mut activity = ui.activity("make");
    run_streaming(cmd, &log, |line| {
        let l = line.trim();
        if l.starts_with('[') || l.starts_with("Building") {
            activity.update(l);
        }
    })
    .with_context(|| format!("building fstests failed (log: {})", log.display()))?;
    activity.finish("fstests built");
    if !src_in_root.join("tests/generic/group.list").is_file() {
        bail!(
            "the fstests build made no tests/generic/group.list (log: {})",
            log.display()
        );
    }
    std::fs::rename(&src_in_root, &built.tree)?;
    let tmp = out.join("fstests.ext4.tmp");
    dir_to_ext4(&built.tree, &tmp, "fstests", &out.join("mke2fs.log"))?;
    std::fs::rename(&tmp, &built.image)?;
    std::fs::write(out.join("revision"), &checkout.revision)?;
    ui.note(format!(
        "fstests: built in {}",
        plumbing::ui::fmt_duration(t0.elapsed())
    ));
    Ok(built)
}

/// Copy the source (tracked and untracked-but-not-ignored files of a git tree, or the
/// whole directory without results/) with tar, keeping modes.
fn copy_tree(c: &Checkout, dst: &Path) -> Result<()> {
    let mut pack: Vec<std::ffi::OsString> =
        vec!["-C".into(), c.dir.clone().into(), "-cf".into(), "-".into()];
    let list = match &c.files {
        Some(files) => {
            pack.extend(["--null".into(), "-T".into(), "-".into()]);
            files.clone()
        }
        None => {
            pack.extend([
                "--exclude=./results".into(),
                "--exclude=./.git".into(),
                ".".into(),
            ]);
            Vec::new()
        }
    };
    // A pipeline over a whole source tree: supervised children (duct).
    let ok = duct::cmd("tar", pack)
        .stdin_bytes(list)
        .pipe(duct::cmd!("tar", "-C", dst, "-xf", "-"))
        .unchecked()
        .run()
        .context("running tar")?
        .status
        .success();
    if !ok {
        bail!("copying {} to {} failed", c.dir.display(), dst.display());
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::git::GitRepo;

    #[test]
    fn a_directory_without_check_is_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        let e = checkout_dir(d.path()).err().unwrap();
        assert_eq!(plumbing::error::exit_code(&e), plumbing::error::EXIT_USAGE);
        assert!(format!("{e}").contains("not an fstests tree"));
    }

    #[test]
    fn a_plain_directory_is_keyed_by_its_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("common")).unwrap();
        std::fs::write(d.path().join("check"), "#!/bin/bash\n").unwrap();
        std::fs::write(d.path().join("common/rc"), "x\n").unwrap();
        let a = checkout_dir(d.path()).unwrap();
        assert!(a.revision.starts_with("directory "));
        // Results of earlier runs do not change the key; sources do.
        std::fs::create_dir_all(d.path().join("results")).unwrap();
        std::fs::write(d.path().join("results/check.log"), "x").unwrap();
        assert_eq!(checkout_dir(d.path()).unwrap().key_material, a.key_material);
        std::fs::write(d.path().join("common/rc"), "xy\n").unwrap();
        assert_ne!(checkout_dir(d.path()).unwrap().key_material, a.key_material);
    }

    /// --fstests-git: a shallow fetch of one ref into the cache (a local URL here).
    #[test]
    fn a_git_source_is_fetched_at_its_ref() {
        let upstream = tempfile::tempdir().unwrap();
        let p = upstream.path();
        std::fs::create_dir_all(p.join("common")).unwrap();
        std::fs::write(p.join("check"), "#!/bin/bash\n").unwrap();
        std::fs::write(p.join("common/rc"), "one\n").unwrap();
        let repo = GitRepo::init(p);
        let first = repo.commit_all("one");
        std::fs::write(p.join("common/rc"), "two\n").unwrap();
        repo.commit_all("two");
        let cache = tempfile::tempdir().unwrap();
        let url = p.to_str().unwrap();
        let c = checkout_git(url, &first, cache.path(), &Ui::plain()).unwrap();
        assert_eq!(
            std::fs::read_to_string(c.dir.join("common/rc")).unwrap(),
            "one\n"
        );
        assert_eq!(c.revision, format!("git {}", &first[..12]));
        let head = checkout_git(url, "HEAD", cache.path(), &Ui::plain()).unwrap();
        assert_eq!(
            std::fs::read_to_string(head.dir.join("common/rc")).unwrap(),
            "two\n"
        );
        assert_ne!(head.key_material, c.key_material);
        assert!(checkout_git(url, "no-such-ref", cache.path(), &Ui::plain()).is_err());
    }

    #[test]
    fn a_git_tree_is_keyed_by_head_and_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("common")).unwrap();
        std::fs::write(p.join("check"), "#!/bin/bash\n").unwrap();
        std::fs::write(p.join("common/rc"), "x\n").unwrap();
        GitRepo::init(p).commit_all("base");
        let clean = checkout_dir(p).unwrap();
        assert!(clean.revision.starts_with("git ") && !clean.revision.contains("uncommitted"));
        std::fs::write(p.join("common/rc"), "changed\n").unwrap();
        let dirty = checkout_dir(p).unwrap();
        assert!(dirty.revision.contains("uncommitted"), "{}", dirty.revision);
        assert_ne!(dirty.key_material, clean.key_material);
        // The copy takes tracked and new files, not ignored ones.
        std::fs::write(p.join(".gitignore"), "*.o\n").unwrap();
        std::fs::write(p.join("new.sh"), "n\n").unwrap();
        std::fs::write(p.join("junk.o"), "o\n").unwrap();
        let c = checkout_dir(p).unwrap();
        let dst = tempfile::tempdir().unwrap();
        copy_tree(&c, dst.path()).unwrap();
        assert!(dst.path().join("new.sh").is_file() && dst.path().join("common/rc").is_file());
        assert!(!dst.path().join("junk.o").exists());
    }
}
