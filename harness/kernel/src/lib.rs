//! `cargo xtask kernel`: build the kernel under test from any source, with a
//! verified config, cached and incremental.
//!
//! The library entry points, also used by vm-test and bisect:
//! - [`KernelOptions::resolve`]: harness.toml profile + [`KernelArgs`] flags;
//! - [`ensure_kernel`]: source, series, config, verify, build (or reuse);
//! - [`configure_kernel`]: the same up to a verified .config, no build.
//!
//! Cache layout (under [`plumbing::paths::cache_dir`]):
//! ```text
//! sources/debian/<pkg>_<version>/    unpacked Debian linux-source tarball
//! sources/tarball/<sha16>/           unpacked tarballs
//! sources/git/<sha16(url)>.git       bare shallow mirrors of git URLs
//! sources/checkouts/<sha16>/         worktrees / --shared clones (ref, series)
//! sources/patched/<sha16>/           patched copies of plain trees
//! series/b4-<sha16(msgid)>/          b4 downloads
//! downloads/                         downloaded tarballs
//! kernel/<key>/build/                the O= build directory (incremental)
//! kernel/<key>/{bzImage,vmlinux,config,System.map,build-info.json}
//! kernel/<key>/{build.log,config.log,tinyconfig.config,config.stamp,.lock}
//! kernel/<profile>-latest -> <key>   the last kernel built for a profile
//! ```

pub mod kconfig;
mod make;
pub mod series;
pub mod source;

pub use series::{SeriesInfo, SeriesSpec};
pub use source::SourceSpec;

use anyhow::{Context, Result};
use kconfig::{Change, Config, Fragment};
use plumbing::error::usage;
use plumbing::ui::{fmt_duration, Ui};
use plumbing::util::{sanitize, sha256_file, sha256_hex, short, which, write_atomic, Lock};
use profile::{HarnessConfig, Profile};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// The only architecture built for now.
pub const ARCH: &str = "x86_64";
/// Name of the fragment that `--iomap` controls.
pub const IOMAP_FRAGMENT: &str = "fuse-iomap";
/// Name of the fragment `--debug` adds.
pub const DEBUG_FRAGMENT: &str = "debug";
/// The Kconfig symbol the FUSE iomap series adds.
pub const IOMAP_SYMBOL: &str = "CONFIG_FUSE_IOMAP";
/// Bump when the build procedure changes, to invalidate cached builds.
const KEY_VERSION: &str = "kernel-build-v1";

/// Re-exported: harness.toml profiles name the mode too, so the type lives in `profile`.
pub use profile::IomapMode;

/// Kernel source and config flags. vm-test and bisect flatten this into
/// their own commands (`#[command(flatten)]`); flags override the profile.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KernelArgs {
    /// Local kernel tree (git checkout or plain); never modified.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["git", "tarball", "debian_package"])]
    pub source_dir: Option<PathBuf>,
    /// Kernel git repository URL (fetched shallow into the cache).
    #[arg(long, value_name = "URL", conflicts_with_all = ["tarball", "debian_package"])]
    pub git: Option<String>,
    /// Branch, tag or commit for --git (or of --source-dir's repository).
    #[arg(long = "ref", value_name = "REF", conflicts_with_all = ["tarball", "debian_package"])]
    pub git_ref: Option<String>,
    /// Kernel source tarball, a path or an http(s) URL.
    #[arg(long, value_name = "PATH|URL", conflicts_with = "debian_package")]
    pub tarball: Option<String>,
    /// Debian kernel source package, e.g. linux-source-6.12 (apt-get installs it).
    #[arg(long, value_name = "PKG")]
    pub debian_package: Option<String>,
    /// Patch series to apply: an mbox file or a directory of patches.
    #[arg(long, value_name = "PATH", conflicts_with = "b4")]
    pub series: Option<PathBuf>,
    /// Fetch the series from lore by message-id with b4.
    #[arg(long, value_name = "MSGID")]
    pub b4: Option<String>,
    /// Extra config fragment merged after the profile's (repeatable).
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// Add the debug fragment (KASAN, lockdep, kmemleak, debug info).
    #[arg(long)]
    pub debug: bool,
    /// FUSE iomap support: required, auto or off (default: the profile's).
    #[arg(long, value_enum)]
    pub iomap: Option<IomapMode>,
    /// Parallel make jobs for the kernel build (default: CPUs + 1).
    #[arg(long = "make-jobs", value_name = "N")]
    pub make_jobs: Option<usize>,
}

/// A fragment to merge: its short name and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentRef {
    pub name: String,
    pub path: PathBuf,
}

/// Everything needed to build one kernel: a profile resolved with flags.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    pub profile: String,
    pub source: SourceSpec,
    pub series: Option<SeriesSpec>,
    /// In merge order (base, fuse-iomap, debug, then --fragment files).
    pub fragments: Vec<FragmentRef>,
    pub iomap: IomapMode,
    pub jobs: usize,
    /// The harness cache (see the module docs for its layout).
    pub cache_dir: PathBuf,
}

/// A built (or reused) kernel.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    /// `<cache>/kernel/<key>`, holding the files below.
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub config: PathBuf,
    pub system_map: PathBuf,
    pub build_info_path: PathBuf,
    pub build_log: PathBuf,
    pub info: BuildInfo,
    /// True when nothing was rebuilt (cached build reused).
    pub reused: bool,
}

/// build-info.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildInfo {
    pub profile: String,
    /// Human description of the source.
    pub source: String,
    /// Stable source identity used in the cache key.
    pub source_identity: String,
    /// git commit (`-dirty` suffix for a modified local tree) or package version.
    pub revision: Option<String>,
    /// `uname -r` of the built kernel.
    pub kernel_release: String,
    pub series: Option<SeriesInfo>,
    /// Fragment names in merge order.
    pub fragments: Vec<String>,
    /// SHA-256 of the final .config.
    pub config_hash: String,
    pub cache_key: String,
    /// First line of `gcc --version`.
    pub compiler: String,
    pub ccache: bool,
    pub iomap_mode: IomapMode,
    /// CONFIG_FUSE_IOMAP=y in the final .config.
    pub iomap_present: bool,
    /// RFC 3339 UTC timestamps of the last build.
    pub started: String,
    pub finished: String,
    pub durations: Durations,
    pub bzimage_bytes: u64,
}

/// Seconds spent in each phase of the last build.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Durations {
    pub source_s: f64,
    pub config_s: f64,
    pub build_s: f64,
    pub total_s: f64,
    /// CPU seconds (user + system) the build used: comparable across
    /// machines and loads, unlike wall time.
    #[serde(default)]
    pub build_cpu_s: f64,
}

/// Result of [`configure_kernel`].
#[derive(Debug, Clone)]
pub struct ConfigReport {
    pub dir: PathBuf,
    /// The verified final .config (in the build directory).
    pub config_path: PathBuf,
    pub fragments: Vec<Fragment>,
    /// Every symbol that differs from plain tinyconfig.
    pub changes: Vec<Change>,
    /// How many effective requests were verified.
    pub verified: usize,
    pub iomap_known: bool,
    pub iomap_present: bool,
    pub cache_key: String,
}

impl KernelOptions {
    /// Load harness.toml and resolve `profile` (default: "default") with flags.
    pub fn resolve(profile: Option<&str>, args: &KernelArgs) -> Result<KernelOptions> {
        let cfg = HarnessConfig::load_default()?;
        Self::from_profile(cfg.profile(profile)?, args)
    }

    /// A profile with command-line overrides applied.
    pub fn from_profile(profile: &Profile, args: &KernelArgs) -> Result<KernelOptions> {
        let k = &profile.kernel;
        let cwd = std::env::current_dir().context("current directory")?;
        let cli_path = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            }
        };
        let cli_source = if let Some(d) = &args.source_dir {
            Some(SourceSpec::Dir {
                path: cli_path(d),
                git_ref: args.git_ref.clone(),
            })
        } else if let Some(url) = &args.git {
            Some(SourceSpec::Git {
                url: url.clone(),
                git_ref: args.git_ref.clone().unwrap_or_else(|| "HEAD".into()),
            })
        } else if let Some(t) = &args.tarball {
            let t = if t.contains("://") {
                t.clone()
            } else {
                cli_path(Path::new(t)).display().to_string()
            };
            Some(SourceSpec::Tarball(t))
        } else {
            args.debian_package.clone().map(SourceSpec::DebianPackage)
        };
        let source = match cli_source {
            Some(s) => s,
            None => {
                let mut s = profile_source(profile)?;
                // A lone --ref retargets the profile's git or local source.
                if let Some(r) = &args.git_ref {
                    match &mut s {
                        SourceSpec::Git { git_ref, .. } => *git_ref = r.clone(),
                        SourceSpec::Dir { git_ref, .. } => *git_ref = Some(r.clone()),
                        _ => {
                            return Err(usage(format!(
                                "--ref {r} needs a git source (--git or --source-dir)"
                            )))
                        }
                    }
                }
                s
            }
        };
        let series = match (&args.series, &args.b4) {
            (Some(p), _) => Some(SeriesSpec::Path(cli_path(p))),
            (None, Some(m)) => Some(SeriesSpec::B4(m.clone())),
            (None, None) => match (&k.series, &k.b4) {
                (Some(p), _) => Some(SeriesSpec::Path(profile.resolve_path(p))),
                (None, Some(m)) => Some(SeriesSpec::B4(m.clone())),
                (None, None) => None,
            },
        };
        let mut fragments: Vec<FragmentRef> = k
            .fragments
            .iter()
            .map(|f| fragment_ref(profile, f))
            .collect();
        if (args.debug || k.debug) && !fragments.iter().any(|f| f.name == DEBUG_FRAGMENT) {
            fragments.push(fragment_ref(profile, DEBUG_FRAGMENT));
        }
        for f in &args.fragments {
            let path = cli_path(f);
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            fragments.push(FragmentRef { name, path });
        }
        let jobs = match args.make_jobs {
            Some(0) => return Err(usage("--make-jobs must be at least 1")),
            Some(n) => n,
            None => {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    + 1
            }
        };
        Ok(KernelOptions {
            profile: profile.name.clone(),
            source,
            series,
            fragments,
            iomap: args.iomap.unwrap_or(k.iomap),
            jobs,
            cache_dir: plumbing::paths::cache_dir(),
        })
    }
}

fn profile_source(profile: &Profile) -> Result<SourceSpec> {
    let k = &profile.kernel;
    if let Some(d) = &k.source_dir {
        Ok(SourceSpec::Dir {
            path: profile.resolve_path(d),
            git_ref: k.git_ref.clone(),
        })
    } else if let Some(url) = &k.git {
        Ok(SourceSpec::Git {
            url: url.clone(),
            git_ref: k.git_ref.clone().unwrap_or_else(|| "HEAD".into()),
        })
    } else if let Some(t) = &k.tarball {
        let t = if t.contains("://") {
            t.clone()
        } else {
            profile.resolve_path(Path::new(t)).display().to_string()
        };
        Ok(SourceSpec::Tarball(t))
    } else if let Some(p) = &k.debian_package {
        Ok(SourceSpec::DebianPackage(p.clone()))
    } else {
        Err(usage(format!(
            "profile `{}` has no kernel source",
            profile.name
        )))
    }
}

/// `base` -> kernel-config/base.config; anything with a `/` or `.config` is a path.
fn fragment_ref(profile: &Profile, f: &str) -> FragmentRef {
    if f.contains('/') || f.ends_with(".config") {
        let path = profile.resolve_path(Path::new(f));
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.to_string());
        FragmentRef { name, path }
    } else {
        FragmentRef {
            name: f.to_string(),
            path: profile
                .base_dir
                .join("kernel-config")
                .join(format!("{f}.config")),
        }
    }
}

/// Whether a tree carries the FUSE iomap series (its Kconfig symbol).
pub fn tree_has_iomap(tree: &Path) -> bool {
    std::fs::read_to_string(tree.join("fs/fuse/Kconfig"))
        .map(|t| kconfig::symbols_defined_in(&t).any(|s| s == IOMAP_SYMBOL))
        .unwrap_or(false)
}

/// The error for `--iomap required` on a tree without the series.
fn iomap_missing(tree: &Path, source: &str) -> anyhow::Error {
    usage(format!(
        "--iomap required, but the FUSE iomap series is not applied to this kernel tree\n  \
         ({source}: {}/fs/fuse/Kconfig has no `config FUSE_IOMAP`).\n  \
         Provide it with --series PATH (mbox or patch directory) or --b4 MSGID, \
         or build the FUSE iomap development tree: --profile fuse-iomap \
         (or --git https://git.kernel.org/pub/scm/linux/kernel/git/djwong/xfs-linux.git --ref fuse-iomap-cache).",
        tree.display()
    ))
}

/// Load the fragments to merge, applying the iomap mode. `required` on a
/// tree without the series fails here, before anything is compiled.
fn select_fragments(
    opts: &KernelOptions,
    tree: &Path,
    source: &str,
    ui: &Ui,
) -> Result<Vec<Fragment>> {
    let known = tree_has_iomap(tree);
    let mut refs = opts.fragments.clone();
    match opts.iomap {
        IomapMode::Required => {
            if !known {
                return Err(iomap_missing(tree, source));
            }
            if !refs.iter().any(|f| f.name == IOMAP_FRAGMENT) {
                let at = usize::from(refs.first().is_some_and(|f| f.name == "base"));
                let dir = plumbing::paths::workspace_root().join("kernel-config");
                refs.insert(
                    at,
                    FragmentRef {
                        name: IOMAP_FRAGMENT.into(),
                        path: dir.join("fuse-iomap.config"),
                    },
                );
            }
        }
        IomapMode::Auto => {
            if !known && refs.iter().any(|f| f.name == IOMAP_FRAGMENT) {
                ui.note("this tree has no CONFIG_FUSE_IOMAP (FUSE iomap series not applied): building without iomap");
                refs.retain(|f| f.name != IOMAP_FRAGMENT);
            }
        }
        IomapMode::Off => refs.retain(|f| f.name != IOMAP_FRAGMENT),
    }
    let mut out = Vec::new();
    for r in &refs {
        out.push(Fragment::load(&r.name, &r.path)?);
    }
    if opts.iomap == IomapMode::Off && known {
        // FUSE_IOMAP defaults to y once FUSE_FS is on: switch it off explicitly.
        let text = format!("# --iomap off\n# {IOMAP_SYMBOL} is not set\n");
        let requests = kconfig::parse_fragment(&text).map_err(|(_, m)| anyhow::anyhow!(m))?;
        out.push(Fragment {
            name: "iomap-off".into(),
            path: PathBuf::new(),
            text,
            requests,
        });
    }
    Ok(out)
}

/// Inputs of the cache key, hashed in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInputs<'a> {
    pub source_identity: &'a str,
    pub series_sha256: Option<&'a str>,
    /// (name, contents) of every fragment, in merge order.
    pub fragments: Vec<(&'a str, &'a str)>,
    pub cc: &'a str,
    pub compiler: &'a str,
}

/// The cache key: 16 hex digits of SHA-256 over the inputs.
pub fn cache_key(k: &KeyInputs) -> String {
    let mut s = format!(
        "{KEY_VERSION}\narch={ARCH}\nsource={}\nseries={}\ncc={}\ncompiler={}\n",
        k.source_identity,
        k.series_sha256.unwrap_or("-"),
        k.cc,
        k.compiler
    );
    for (name, text) in &k.fragments {
        s.push_str(&format!(
            "fragment={name}:{}\n",
            sha256_hex(text.as_bytes())
        ));
    }
    short(&sha256_hex(s.as_bytes())).to_string()
}

/// Source prepared, fragments chosen, key computed, build dir locked.
struct Plan {
    src: source::PreparedSource,
    fragments: Vec<Fragment>,
    iomap_known: bool,
    iomap: IomapMode,
    key: String,
    dir: PathBuf,
    make: make::Make,
    compiler: String,
    ccache: bool,
    source_s: f64,
    _lock: Lock,
}

fn compiler_version() -> Result<String> {
    let sh = xshell::Shell::new()?;
    let out = xshell::cmd!(sh, "gcc --version")
        .quiet()
        .read()
        .context("running gcc --version")?;
    Ok(out.lines().next().unwrap_or("").trim().to_string())
}

fn plan(opts: &KernelOptions, ui: &Ui) -> Result<Plan> {
    let t0 = Instant::now();
    let cache = &opts.cache_dir;
    ui.step(format!("kernel for profile `{}`", opts.profile));
    hostsetup::ensure(&[hostsetup::Job::KernelBuild], ui)?;
    let series = opts
        .series
        .as_ref()
        .map(|s| series::load(s, cache, ui))
        .transpose()?;
    let src = {
        let _l = Lock::acquire(&cache.join("sources/.lock"), || {
            ui.note("waiting for another xtask preparing sources")
        })?;
        source::prepare(&opts.source, series.as_ref(), cache, ui)?
    };
    ui.note(format!(
        "source: {} ({})",
        src.description,
        src.tree.display()
    ));
    let fragments = select_fragments(opts, &src.tree, &src.description, ui)?;
    let iomap_known = tree_has_iomap(&src.tree);
    let compiler = compiler_version()?;
    let ccache = which("ccache").is_some();
    let cc = if ccache { "ccache gcc" } else { "gcc" };
    let key = cache_key(&KeyInputs {
        source_identity: &src.identity,
        series_sha256: src.series.as_ref().map(|s| s.sha256.as_str()),
        fragments: fragments
            .iter()
            .map(|f| (f.name.as_str(), f.text.as_str()))
            .collect(),
        cc,
        compiler: &compiler,
    });
    let dir = cache.join("kernel").join(&key);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = Lock::acquire(&dir.join(".lock"), || {
        ui.note("waiting for another xtask building this kernel")
    })?;
    // Synthetic fragments get a file for merge_config.sh.
    let mut fragments = fragments;
    for f in fragments
        .iter_mut()
        .filter(|f| f.path.as_os_str().is_empty())
    {
        f.path = dir.join(format!("{}.config", f.name));
        std::fs::write(&f.path, &f.text)?;
    }
    let make = make::Make {
        tree: src.tree.clone(),
        objdir: dir.join("build"),
        cc: cc.to_string(),
        jobs: opts.jobs,
        ccache_base: ccache.then(|| cache.clone()),
    };
    Ok(Plan {
        src,
        fragments,
        iomap_known,
        iomap: opts.iomap,
        key,
        dir,
        make,
        compiler,
        ccache,
        source_s: t0.elapsed().as_secs_f64(),
        _lock: lock,
    })
}

/// Configure unless the build dir already holds this key's config.
/// Returns whether the config steps ran.
fn ensure_config(p: &Plan, ui: &Ui) -> Result<bool> {
    let stamp = p.dir.join("config.stamp");
    let current = std::fs::read_to_string(&stamp).ok();
    if current.as_deref() == Some(p.key.as_str()) && p.make.objdir.join(".config").is_file() {
        return Ok(false);
    }
    let act = ui.activity("configuring (tinyconfig + fragments + olddefconfig)");
    p.make.configure(
        &p.fragments,
        &p.dir.join("tinyconfig.config"),
        &p.dir.join("config.log"),
    )?;
    act.finish(format!(
        "merged {}",
        p.fragments
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    std::fs::write(&stamp, &p.key)?;
    Ok(true)
}

/// Symbols the harness needs at run time: the guest's console, disks, share, event port,
/// and the filesystems it mounts. Requesting one that the tree does not define is an error;
/// any other symbol a tree does not define (a newer or older kernel dropped or renamed it) is
/// reported and skipped, so one set of fragments builds many kernels.
pub const RUNTIME_SYMBOLS: &[&str] = &[
    "BLOCK",
    "SERIAL_8250_CONSOLE",
    "VIRTIO_MMIO",
    "VIRTIO_BLK",
    "VIRTIO_CONSOLE",
    "NET_9P_VIRTIO",
    "9P_FS",
    "FUSE_FS",
    "EXT4_FS",
    "DEVTMPFS",
    "PROC_FS",
    "SYSFS",
    "TMPFS",
    "BINFMT_ELF",
];

/// Whether a requested symbol (`CONFIG_X`) the tree does not define stops the build.
fn undefined_symbol_matters(symbol: &str, iomap: IomapMode) -> bool {
    let name = symbol.strip_prefix("CONFIG_").unwrap_or(symbol);
    RUNTIME_SYMBOLS.contains(&name)
        || (symbol.starts_with(IOMAP_SYMBOL) && iomap == IomapMode::Required)
}

/// Verify every requested symbol in the build dir's .config. Symbols the tree does not
/// define and the harness does not need are reported (`ui`), not errors.
fn verify(p: &Plan, ui: &Ui) -> Result<(Config, usize)> {
    let path = p.make.objdir.join(".config");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = kconfig::parse_config(&text);
    let mut mismatches = kconfig::verify(&p.fragments, &config);
    let mut verified = kconfig::effective_requests(&p.fragments).len();
    if mismatches.is_empty() {
        return Ok((config, verified));
    }
    // Say why each symbol is missing: unknown to the tree, or its dependencies.
    let known = kconfig::kconfig_symbols(&p.src.tree);
    mismatches.retain(|m| {
        let skip = !known.contains(&m.symbol) && !undefined_symbol_matters(&m.symbol, p.iomap);
        if skip {
            ui.note(format!(
                "skipped {}: requested by {}:{}, but this tree has no such symbol",
                m.symbol, m.fragment, m.line
            ));
            verified -= 1;
        }
        !skip
    });
    if mismatches.is_empty() {
        return Ok((config, verified));
    }
    let mut msg = format!(
        "{} requested config symbol(s) are not in the final .config:\n",
        mismatches.len()
    );
    for m in &mismatches {
        let why = if !known.contains(&m.symbol) {
            "this tree has no such symbol"
        } else if m.got.is_none() {
            "its dependencies are not met"
        } else {
            "kconfig chose another value (dependencies or select)"
        };
        msg.push_str(&format!(
            "  {}: requested {} by {}:{}, got {} ({why})\n",
            m.symbol,
            kconfig::show(Some(&m.wanted)),
            m.fragment,
            m.line,
            kconfig::show(m.got.as_deref()),
        ));
    }
    if mismatches
        .iter()
        .any(|m| m.symbol.starts_with(IOMAP_SYMBOL))
        && !p.iomap_known
    {
        msg.push_str("  The FUSE iomap series is not applied to this tree; use --series/--b4 or --profile fuse-iomap.\n");
    }
    msg.push_str(&format!("  final config: {}", path.display()));
    Err(usage(msg))
}

/// Resolve and verify the config without building (`--config-only`).
pub fn configure_kernel(opts: &KernelOptions, ui: &Ui) -> Result<ConfigReport> {
    let p = plan(opts, ui)?;
    ensure_config(&p, ui)?;
    let (config, verified) = verify(&p, ui)?;
    let base_text = std::fs::read_to_string(p.dir.join("tinyconfig.config")).unwrap_or_default();
    let changes = kconfig::diff(&kconfig::parse_config(&base_text), &config);
    Ok(ConfigReport {
        config_path: p.make.objdir.join(".config"),
        dir: p.dir.clone(),
        changes,
        verified,
        iomap_known: p.iomap_known,
        iomap_present: config.get(IOMAP_SYMBOL).is_some_and(|v| v == "y"),
        cache_key: p.key.clone(),
        fragments: p.fragments,
    })
}

/// Build the kernel `opts` describes, or reuse the cached build. Errors carry
/// their kind: usage (bad source/config, exit 2) or infrastructure (exit 3).
pub fn ensure_kernel(opts: &KernelOptions, ui: &Ui) -> Result<BuiltKernel> {
    let t0 = Instant::now();
    let started = SystemTime::now();
    let p = plan(opts, ui)?;
    if !p.src.in_place {
        if let Ok(k) = BuiltKernel::load(&p.dir) {
            if k.info.cache_key == p.key {
                ui.note(format!("cached build {} is up to date", p.key));
                update_latest(&opts.cache_dir, &opts.profile, &p.key)?;
                return Ok(BuiltKernel { reused: true, ..k });
            }
        }
    }
    let tc = Instant::now();
    ensure_config(&p, ui)?;
    verify(&p, ui)?;
    let config_s = tc.elapsed().as_secs_f64();
    let tb = Instant::now();
    ui.step(format!(
        "building {} with -j{} ({})",
        p.src.description, p.make.jobs, p.make.cc
    ));
    let _ = std::fs::remove_file(p.dir.join("build-info.json"));
    let stats = p.make.build(&p.dir.join("build.log"), ui)?;
    let build_s = tb.elapsed().as_secs_f64();
    // make re-syncs .config when Kconfig files changed: verify what was built.
    let (config, _) = verify(&p, ui)?;
    let k = collect(
        &p,
        opts,
        &config,
        started,
        Durations {
            source_s: p.source_s,
            config_s,
            build_s,
            total_s: t0.elapsed().as_secs_f64(),
            build_cpu_s: stats.cpu_s,
        },
    )?;
    update_latest(&opts.cache_dir, &opts.profile, &p.key)?;
    ui.note(format!(
        "kernel {} ready in {}: {} ({} bytes)",
        k.info.kernel_release,
        fmt_duration(t0.elapsed()),
        k.bzimage.display(),
        k.info.bzimage_bytes
    ));
    Ok(k)
}

/// Copy the artifacts next to the build dir and write build-info.json.
fn collect(
    p: &Plan,
    opts: &KernelOptions,
    config: &Config,
    started: SystemTime,
    durations: Durations,
) -> Result<BuiltKernel> {
    let obj = &p.make.objdir;
    let copies = [
        (obj.join("arch/x86/boot/bzImage"), "bzImage"),
        (obj.join("vmlinux"), "vmlinux"),
        (obj.join(".config"), "config"),
        (obj.join("System.map"), "System.map"),
    ];
    for (from, to) in &copies {
        let dst = p.dir.join(to);
        let tmp = p.dir.join(format!("{to}.tmp"));
        std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
        std::fs::rename(&tmp, &dst)?;
    }
    let release =
        std::fs::read_to_string(obj.join("include/config/kernel.release")).unwrap_or_default();
    let info = BuildInfo {
        profile: opts.profile.clone(),
        source: p.src.description.clone(),
        source_identity: p.src.identity.clone(),
        revision: p.src.revision.clone(),
        kernel_release: release.trim().to_string(),
        series: p.src.series.clone(),
        fragments: p.fragments.iter().map(|f| f.name.clone()).collect(),
        config_hash: sha256_file(&p.dir.join("config"))?,
        cache_key: p.key.clone(),
        compiler: p.compiler.clone(),
        ccache: p.ccache,
        iomap_mode: opts.iomap,
        iomap_present: config.get(IOMAP_SYMBOL).is_some_and(|v| v == "y"),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        finished: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        durations,
        bzimage_bytes: std::fs::metadata(p.dir.join("bzImage"))?.len(),
    };
    let json = serde_json::to_vec_pretty(&info)?;
    write_atomic(&p.dir.join("build-info.json"), &json)?;
    BuiltKernel::load(&p.dir)
}

/// Point `kernel/<profile>-latest` at this build.
fn update_latest(cache: &Path, profile: &str, key: &str) -> Result<()> {
    let link = cache
        .join("kernel")
        .join(format!("{}-latest", sanitize(profile)));
    let tmp = link.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(key, &tmp).context("creating latest symlink")?;
    std::fs::rename(&tmp, &link).context("updating latest symlink")?;
    Ok(())
}

/// `<cache>/kernel/<profile>-latest`: the last kernel built for a profile.
pub fn latest_dir(profile: &str) -> PathBuf {
    plumbing::paths::cache_dir()
        .join("kernel")
        .join(format!("{}-latest", sanitize(profile)))
}

impl BuiltKernel {
    /// Open a finished build directory (one holding build-info.json), e.g.
    /// [`latest_dir`]`("default")`.
    pub fn load(dir: &Path) -> Result<BuiltKernel> {
        let info_path = dir.join("build-info.json");
        let text = std::fs::read(&info_path)
            .with_context(|| format!("reading {}", info_path.display()))?;
        let info: BuildInfo = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {}", info_path.display()))?;
        let k = BuiltKernel {
            dir: dir.to_path_buf(),
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            system_map: dir.join("System.map"),
            build_info_path: info_path,
            build_log: dir.join("build.log"),
            info,
            reused: false,
        };
        for f in [&k.bzimage, &k.vmlinux, &k.config, &k.system_map] {
            anyhow::ensure!(f.is_file(), "{} is missing", f.display());
        }
        Ok(k)
    }
}

#[cfg(test)]
mod tests;
