//! Guest images: `images/<name>/` recipes (a package list and a customize
//! hook) built with mmdebstrap into a directory, then into an ext4 image with
//! `mke2fs -d`, cached by a hash of everything that goes into them.
//!
//! Runs never write the cached image: QEMU opens it with `snapshot=on`.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use plumbing::error::usage;
use plumbing::ui::Ui;

/// Bump when the way images are built changes (invalidates every cached image).
const BUILD_FORMAT: &str = "image-v1";

/// A recipe under `images/<name>/`.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub dir: PathBuf,
    pub packages: Vec<String>,
    pub hook: Option<PathBuf>,
    /// Debian suite (the host's release by default, so host-built binaries run).
    pub suite: String,
    /// An apt sources file or a mirror URL, passed to mmdebstrap.
    pub mirror: String,
}

impl Recipe {
    pub fn load(images_dir: &Path, name: &str) -> Result<Recipe> {
        let dir = images_dir.join(name);
        let list = dir.join("packages");
        if !list.is_file() {
            let known = known_recipes(images_dir).join(", ");
            return Err(usage(format!(
                "unknown image `{name}`: no {} (known: {known})",
                list.display()
            )));
        }
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("reading {}", list.display()))?;
        let packages = parse_packages(&text);
        let hook = Some(dir.join("customize.sh")).filter(|h| h.is_file());
        Ok(Recipe {
            name: name.into(),
            dir,
            packages,
            hook,
            suite: host_suite(),
            mirror: host_mirror(),
        })
    }

    /// Hash of the recipe and of the tools and sources that build it.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            BUILD_FORMAT,
            &self.suite,
            &self.mirror,
            &self.packages.join(","),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        if let Some(hook) = &self.hook {
            h.update(std::fs::read(hook).unwrap_or_default());
        }
        // The sources file's content (not just its name) decides what we get.
        h.update(std::fs::read(&self.mirror).unwrap_or_default());
        h.update(tool_version("mmdebstrap", "--version").as_bytes());
        plumbing::util::short(&plumbing::util::hex(&h.finalize())).to_string()
    }

    pub fn image_path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join("images")
            .join(format!("{}-{}.ext4", self.name, self.key()))
    }
}

pub fn parse_packages(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn known_recipes(images_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(images_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("packages").is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn host_suite() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    os.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

fn host_mirror() -> String {
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.starts_with("deb ") || l.starts_with("Types:"))
        {
            return f.into();
        }
    }
    "http://deb.debian.org/debian".into()
}

fn tool_version(tool: &str, flag: &str) -> String {
    let Ok(sh) = xshell::Shell::new() else {
        return String::new();
    };
    xshell::cmd!(sh, "{tool} {flag}")
        .quiet()
        .ignore_status()
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The image for `name`, built if it is not cached. Returns its path.
pub fn ensure_image(images_dir: &Path, name: &str, cache_dir: &Path, ui: &Ui) -> Result<PathBuf> {
    let recipe = Recipe::load(images_dir, name)?;
    let path = recipe.image_path(cache_dir);
    if path.is_file() {
        return Ok(path);
    }
    // Parallel test processes must not build the same image twice.
    let _lock = plumbing::util::Lock::acquire(
        &cache_dir.join("images").join(format!("{name}.lock")),
        || ui.note(format!("image `{name}`: waiting for another build of it")),
    )?;
    if path.is_file() {
        return Ok(path); // built by another process while we waited
    }
    build(&recipe, &path, ui)?;
    Ok(path)
}

/// A recipe's root filesystem as a directory, for chroot work rather than booting (the
/// fstests build root), cached like images: `<cache>/rootfs/<name>-<key>/`.
pub fn ensure_rootfs(
    images_dir: &Path,
    name: &str,
    cache_dir: &Path,
    ui: &Ui,
) -> Result<(PathBuf, String)> {
    let recipe = Recipe::load(images_dir, name)?;
    let key = recipe.key();
    let root = cache_dir.join("rootfs").join(format!("{name}-{key}"));
    let done = root.with_extension("complete");
    if done.is_file() {
        return Ok((root, key));
    }
    let _lock = plumbing::util::Lock::acquire(
        &cache_dir.join("rootfs").join(format!("{name}.lock")),
        || ui.note(format!("root `{name}`: waiting for another build of it")),
    )?;
    if done.is_file() {
        return Ok((root, key));
    }
    ui.step(format!(
        "building root `{name}` (Debian {}, {} packages)",
        recipe.suite,
        recipe.packages.len()
    ));
    check_build_tools(ui)?;
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing stale {}", root.display()))?;
    }
    let log = root.with_extension("log");
    debootstrap(&recipe, &root, &log, ui)?;
    std::fs::write(&done, "")?;
    Ok((root, key))
}

fn check_build_tools(ui: &Ui) -> Result<()> {
    if nix::unistd::geteuid().as_raw() != 0 {
        bail!("building the guest image needs root (mmdebstrap --mode=root and mke2fs -d keep file ownership)");
    }
    hostsetup::ensure(&[hostsetup::Job::Image], ui)
}

fn build(recipe: &Recipe, out: &Path, ui: &Ui) -> Result<()> {
    ui.step(format!(
        "building image `{}` (Debian {}, {} packages) -> {}",
        recipe.name,
        recipe.suite,
        recipe.packages.len(),
        out.display()
    ));
    check_build_tools(ui)?;
    let parent = out.parent().context("image path has no parent")?;
    // Under the lock, so no other process uses this directory.
    let work = parent.join(format!(".build-{}", recipe.name));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("removing stale {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let root = work.join("root");
    debootstrap(recipe, &root, &work.join("mmdebstrap.log"), ui)?;
    let size_mb = dir_to_ext4(
        &root,
        &work.join("image.ext4"),
        "harness-root",
        &work.join("mke2fs.log"),
    )?;
    let tmp_img = work.join("image.ext4");
    // The package manifest next to the image, printed in runs for reproducibility.
    let manifest = std::fs::read_to_string(root.join("etc/harness-packages")).unwrap_or_default();
    std::fs::write(out.with_extension("packages"), manifest)?;
    std::fs::rename(&tmp_img, out)
        .with_context(|| format!("moving the image to {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    ui.note(format!(
        "image ready: {} ({size_mb} MiB, sparse)",
        out.display()
    ));
    Ok(())
}

/// An ext4 image holding `dir` (`mke2fs -d`), half again its size plus room; returns MiB.
pub fn dir_to_ext4(dir: &Path, img: &Path, label: &str, log: &Path) -> Result<u64> {
    let size_mb = dir_size(dir) / (1024 * 1024) * 3 / 2 + 256;
    let mk = duct::cmd!(
        "mke2fs",
        "-q",
        "-t",
        "ext4",
        "-L",
        label,
        "-d",
        dir,
        img,
        format!("{size_mb}M")
    );
    run_streaming(mk, log, |_| {}).context("mke2fs -d failed")?;
    Ok(size_mb)
}

fn debootstrap(recipe: &Recipe, root: &Path, log: &Path, ui: &Ui) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--variant=minbase".into(),
        "--mode=root".into(),
        "--verbose".into(),
        format!("--include={}", recipe.packages.join(",")).into(),
        "--dpkgopt=path-exclude=/usr/share/man/*".into(),
        "--dpkgopt=path-exclude=/usr/share/doc/*".into(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".into(),
        "--dpkgopt=path-exclude=/usr/share/info/*".into(),
    ];
    if let Some(hook) = &recipe.hook {
        args.push(format!("--customize-hook=sh {} \"$1\"", hook.display()).into());
    }
    args.extend([(&recipe.suite).into(), root.into(), (&recipe.mirror).into()]);
    let cmd = duct::cmd("mmdebstrap", args);
    let mut activity = ui.activity("mmdebstrap");
    run_streaming(cmd, log, |line| {
        if line.starts_with("I: ") {
            activity.update(line.trim_start_matches("I: "));
        }
    })
    .with_context(|| format!("mmdebstrap failed (log: {})", log.display()))?;
    activity.finish("root filesystem ready");
    Ok(())
}

/// Run a long-lived child (mmdebstrap, mke2fs, a build), saving its output to `log` and
/// passing each line to `each`. stdout and stderr come through one pipe, so the log keeps
/// the order in which the tool wrote them.
pub fn run_streaming(cmd: duct::Expression, log: &Path, mut each: impl FnMut(&str)) -> Result<()> {
    use std::io::Write;
    let mut logf = std::fs::File::create(log)?;
    let reader = cmd
        .stdin_null()
        .stderr_to_stdout()
        .unchecked()
        .reader()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut lines = BufReader::new(&reader);
    let mut line = Vec::new();
    while lines.read_until(b'\n', &mut line)? > 0 {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n');
        let _ = writeln!(logf, "{text}");
        each(text);
        line.clear();
    }
    // At EOF the child has been waited for.
    let status = reader
        .try_wait()?
        .map(|o| o.status)
        .context("the child closed its output but did not exit")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{status}:\n{}", tail.join("\n"));
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_ignores_comments_and_blanks() {
        let p = parse_packages("# c\nfio\n\n  e2fsprogs  # the tools\n#x\n");
        assert_eq!(p, vec!["fio", "e2fsprogs"]);
    }

    #[test]
    fn key_changes_with_the_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x");
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(img.join("packages"), "fio\n").unwrap();
        let a = Recipe::load(dir.path(), "x").unwrap();
        assert_eq!(a.key(), Recipe::load(dir.path(), "x").unwrap().key());
        std::fs::write(img.join("packages"), "fio\nstrace\n").unwrap();
        let b = Recipe::load(dir.path(), "x").unwrap();
        assert_ne!(a.key(), b.key());
        std::fs::write(img.join("customize.sh"), "true\n").unwrap();
        assert_ne!(b.key(), Recipe::load(dir.path(), "x").unwrap().key());
        assert!(a.image_path(Path::new("/c")).starts_with("/c/images"));
    }

    #[test]
    fn unknown_recipe_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Recipe::load(dir.path(), "nope").unwrap_err();
        assert_eq!(plumbing::error::exit_code(&e), plumbing::error::EXIT_USAGE);
    }

    #[test]
    fn the_default_recipe_exists() {
        let r = Recipe::load(&plumbing::paths::workspace_root().join("images"), "default").unwrap();
        for p in ["e2fsprogs", "libext2fs2", "fio", "xfsprogs", "util-linux"] {
            assert!(r.packages.iter().any(|x| x == p), "{p} missing");
        }
        assert!(r.hook.is_some());
    }
}

/// `cargo xtask image`: build (or show) the cached guest image.
#[derive(clap::Args, Clone, Debug)]
pub struct ImageArgs {
    /// Recipe under images/.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub name: String,
    /// Rebuild even if the cached image is current.
    #[arg(long)]
    pub rebuild: bool,
}

pub fn main(args: &ImageArgs, ui: &Ui) -> Result<()> {
    let images = plumbing::paths::workspace_root().join("images");
    let cache = plumbing::paths::cache_dir();
    if args.rebuild {
        let recipe = Recipe::load(&images, &args.name)?;
        let _ = std::fs::remove_file(recipe.image_path(&cache));
    }
    let t0 = std::time::Instant::now();
    let path = ensure_image(&images, &args.name, &cache, ui)?;
    ui.note(format!(
        "image `{}`: {} ({})",
        args.name,
        path.display(),
        plumbing::ui::fmt_duration(t0.elapsed())
    ));
    println!("{}", path.display());
    Ok(())
}
