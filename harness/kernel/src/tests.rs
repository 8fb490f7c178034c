//! Unit tests: option resolution, iomap fragment selection, cache keys.

use super::*;
use plumbing::error::{exit_code, EXIT_USAGE};
use profile::HarnessConfig;

fn cfg(text: &str) -> HarnessConfig {
    HarnessConfig::parse(
        text,
        Path::new("harness.toml"),
        &plumbing::paths::workspace_root(),
    )
    .unwrap()
}

const PROFILES: &str = r#"
[profiles.default.kernel]
debian-package = "linux-source-6.12"
[profiles.git.kernel]
git = "https://example.org/linux.git"
ref = "main"
series = "patches/s.mbox"
debug = true
iomap = "required"
"#;

fn resolve(profile: &str, args: &KernelArgs) -> Result<KernelOptions> {
    let c = cfg(PROFILES);
    KernelOptions::from_profile(c.profile(Some(profile))?, args)
}

#[test]
fn profile_fields_resolve() {
    let root = plumbing::paths::workspace_root();
    let o = resolve("default", &KernelArgs::default()).unwrap();
    assert_eq!(
        o.source,
        SourceSpec::DebianPackage("linux-source-6.12".into())
    );
    assert_eq!(o.series, None);
    assert_eq!(o.iomap, IomapMode::Auto);
    let names: Vec<&str> = o.fragments.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["base", "fuse-iomap"]);
    assert_eq!(o.fragments[0].path, root.join("kernel-config/base.config"));
    assert!(o.jobs >= 2);

    let o = resolve("git", &KernelArgs::default()).unwrap();
    assert_eq!(
        o.source,
        SourceSpec::Git {
            url: "https://example.org/linux.git".into(),
            git_ref: "main".into()
        }
    );
    assert_eq!(
        o.series,
        Some(SeriesSpec::Path(root.join("patches/s.mbox")))
    );
    assert_eq!(o.iomap, IomapMode::Required);
    assert_eq!(o.fragments.last().unwrap().name, "debug");
}

#[test]
fn flags_override_profile() {
    let cwd = std::env::current_dir().unwrap();
    let args = KernelArgs {
        source_dir: Some("linux".into()),
        git_ref: Some("v6.12".into()),
        b4: Some("20260223.1@example".into()),
        fragments: vec!["extra/my.config".into()],
        debug: true,
        iomap: Some(IomapMode::Off),
        make_jobs: Some(7),
        ..Default::default()
    };
    let o = resolve("default", &args).unwrap();
    assert_eq!(
        o.source,
        SourceSpec::Dir {
            path: cwd.join("linux"),
            git_ref: Some("v6.12".into())
        }
    );
    assert_eq!(o.series, Some(SeriesSpec::B4("20260223.1@example".into())));
    assert_eq!(o.iomap, IomapMode::Off);
    assert_eq!(o.jobs, 7);
    let names: Vec<&str> = o.fragments.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["base", "fuse-iomap", "debug", "my"]);
    assert_eq!(o.fragments[3].path, cwd.join("extra/my.config"));

    // A lone --ref retargets the profile's git source.
    let o = resolve(
        "git",
        &KernelArgs {
            git_ref: Some("other".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        o.source,
        SourceSpec::Git {
            url: "https://example.org/linux.git".into(),
            git_ref: "other".into()
        }
    );
    // --series replaces the profile's series; --debug does not duplicate it.
    let o = resolve(
        "git",
        &KernelArgs {
            series: Some("/p".into()),
            debug: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(o.series, Some(SeriesSpec::Path("/p".into())));
    assert_eq!(o.fragments.iter().filter(|f| f.name == "debug").count(), 1);
}

#[test]
fn bad_flag_combinations_are_usage_errors() {
    let err = resolve(
        "default",
        &KernelArgs {
            git_ref: Some("x".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    assert!(
        err.to_string().contains("--ref x needs a git source"),
        "{err}"
    );
    let err = resolve(
        "default",
        &KernelArgs {
            make_jobs: Some(0),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    let err = resolve("nope", &KernelArgs::default()).unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
}

#[test]
fn clap_rejects_two_sources() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        k: KernelArgs,
    }
    assert!(T::try_parse_from(["t", "--source-dir", "a", "--git", "u"]).is_err());
    assert!(T::try_parse_from(["t", "--tarball", "a", "--debian-package", "p"]).is_err());
    assert!(T::try_parse_from(["t", "--series", "a", "--b4", "m"]).is_err());
    let t = T::try_parse_from([
        "t",
        "--git",
        "u",
        "--ref",
        "r",
        "--fragment",
        "a",
        "--fragment",
        "b",
        "--make-jobs",
        "3",
        "--iomap",
        "off",
    ])
    .unwrap();
    assert_eq!(t.k.fragments.len(), 2);
    assert_eq!(t.k.iomap, Some(IomapMode::Off));
}

/// A fake tree with or without the FUSE iomap Kconfig symbol.
fn fake_tree(with_iomap: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("fs/fuse")).unwrap();
    let mut k = String::from("config FUSE_FS\n\ttristate \"FUSE\"\n");
    if with_iomap {
        k.push_str("config FUSE_IOMAP\n\tbool \"FUSE file IO over iomap\"\n\tdefault y\n");
    }
    std::fs::write(d.path().join("fs/fuse/Kconfig"), k).unwrap();
    d
}

fn opts(iomap: IomapMode) -> KernelOptions {
    let mut o = resolve("default", &KernelArgs::default()).unwrap();
    o.iomap = iomap;
    o
}

fn names(f: &[Fragment]) -> Vec<&str> {
    f.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn iomap_modes_choose_fragments() {
    let ui = Ui::plain();
    let (without, with) = (fake_tree(false), fake_tree(true));
    assert!(!tree_has_iomap(without.path()));
    assert!(tree_has_iomap(with.path()));

    let f = select_fragments(&opts(IomapMode::Auto), without.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base"]);
    let f = select_fragments(&opts(IomapMode::Auto), with.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base", "fuse-iomap"]);
    assert!(f[1].mentions("CONFIG_FUSE_IOMAP"));

    let f = select_fragments(&opts(IomapMode::Off), without.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base"]);
    // Off on a tree that has it: disabled explicitly (it defaults to y).
    let f = select_fragments(&opts(IomapMode::Off), with.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base", "iomap-off"]);
    assert_eq!(f[1].requests[0].symbol, IOMAP_SYMBOL);
    assert_eq!(f[1].requests[0].value, kconfig::NOT_SET);

    let f = select_fragments(&opts(IomapMode::Required), with.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base", "fuse-iomap"]);
    // Required adds the fragment even when the profile did not list it.
    let mut o = opts(IomapMode::Required);
    o.fragments.retain(|f| f.name != IOMAP_FRAGMENT);
    let f = select_fragments(&o, with.path(), "t", &ui).unwrap();
    assert_eq!(names(&f), vec!["base", "fuse-iomap"]);
}

#[test]
fn iomap_required_without_series_is_a_usage_error() {
    let without = fake_tree(false);
    let err = select_fragments(
        &opts(IomapMode::Required),
        without.path(),
        "my tree",
        &Ui::plain(),
    )
    .unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    let msg = err.to_string();
    assert!(msg.contains("FUSE iomap series is not applied"), "{msg}");
    assert!(
        msg.contains("--series") && msg.contains("--profile fuse-iomap"),
        "{msg}"
    );
}

fn key_with(f: impl FnOnce(&mut KeyInputs)) -> String {
    let mut k = KeyInputs {
        source_identity: "debian:linux-source-6.12=6.12.117-1~deb12u1",
        series_sha256: None,
        fragments: vec![
            ("base", "CONFIG_A=y\n"),
            ("fuse-iomap", "CONFIG_FUSE_IOMAP=y\n"),
        ],
        cc: "ccache gcc",
        compiler: "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
    };
    f(&mut k);
    cache_key(&k)
}

#[test]
fn cache_key_depends_on_every_input() {
    let base = key_with(|_| {});
    assert_eq!(base.len(), 16);
    assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(base, key_with(|_| {}), "deterministic");
    let variants = [
        key_with(|k| k.source_identity = "debian:linux-source-6.12=6.12.118-1"),
        key_with(|k| k.series_sha256 = Some("abc")),
        key_with(|k| k.fragments[0].1 = "CONFIG_A=n\n"),
        key_with(|k| k.fragments[0].0 = "other"),
        key_with(|k| k.fragments.reverse()),
        key_with(|k| k.fragments.pop().map(|_| ()).unwrap_or(())),
        key_with(|k| k.cc = "gcc"),
        key_with(|k| k.compiler = "gcc (Debian 12.2.0-15) 12.2.0"),
    ];
    for (i, v) in variants.iter().enumerate() {
        assert_ne!(v, &base, "variant {i} must change the key");
    }
    let unique: std::collections::HashSet<&String> = variants.iter().collect();
    assert_eq!(unique.len(), variants.len());
}

#[test]
fn build_info_round_trips() {
    let info = BuildInfo {
        profile: "default".into(),
        source: "Debian package linux-source-6.12 6.12.117-1~deb12u1".into(),
        source_identity: "debian:linux-source-6.12=6.12.117-1~deb12u1".into(),
        revision: Some("6.12.117-1~deb12u1".into()),
        kernel_release: "6.12.117".into(),
        series: None,
        fragments: vec!["base".into()],
        config_hash: "00".into(),
        cache_key: "0123456789abcdef".into(),
        compiler: "gcc".into(),
        ccache: true,
        iomap_mode: IomapMode::Auto,
        iomap_present: false,
        started: "2026-01-01T00:00:00Z".into(),
        finished: "2026-01-01T00:10:00Z".into(),
        durations: Durations {
            source_s: 1.0,
            config_s: 2.0,
            build_s: 3.0,
            total_s: 6.0,
            build_cpu_s: 5.0,
        },
        bzimage_bytes: 3_000_000,
    };
    let json = serde_json::to_string(&info).unwrap();
    assert!(json.contains("\"iomap_mode\":\"auto\""));
    let back: BuildInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, info);

    // A build dir missing an artifact does not load.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("build-info.json"), &json).unwrap();
    assert!(BuiltKernel::load(d.path()).is_err());
    for f in ["bzImage", "vmlinux", "config", "System.map"] {
        std::fs::write(d.path().join(f), b"x").unwrap();
    }
    let k = BuiltKernel::load(d.path()).unwrap();
    assert_eq!(k.info, info);
    assert_eq!(k.bzimage, d.path().join("bzImage"));
}

/// One set of fragments builds many kernels: an undefined symbol stops the build only when
/// the harness needs it at run time, or when it is FUSE_IOMAP and iomap is required.
#[test]
fn undefined_symbols_matter_only_when_the_harness_needs_them() {
    assert!(!undefined_symbol_matters(
        "CONFIG_PROC_SYSCTL",
        IomapMode::Auto
    ));
    assert!(undefined_symbol_matters(
        "CONFIG_VIRTIO_BLK",
        IomapMode::Auto
    ));
    assert!(undefined_symbol_matters("CONFIG_FUSE_FS", IomapMode::Off));
    assert!(undefined_symbol_matters(
        "CONFIG_FUSE_IOMAP",
        IomapMode::Required
    ));
    assert!(undefined_symbol_matters(
        "CONFIG_FUSE_IOMAP_DEBUG",
        IomapMode::Required
    ));
    assert!(!undefined_symbol_matters(
        "CONFIG_FUSE_IOMAP",
        IomapMode::Auto
    ));
    // Every runtime symbol is requested by the default fragments.
    let base = std::fs::read_to_string(
        plumbing::paths::workspace_root().join("kernel-config/base.config"),
    )
    .unwrap();
    for s in RUNTIME_SYMBOLS {
        assert!(
            base.contains(&format!("CONFIG_{s}=y")),
            "base.config lacks CONFIG_{s}"
        );
    }
}
