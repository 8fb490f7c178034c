//! End-to-end tests of `cargo xtask kernel` on this machine's real tools.
//!
//! `default_profile_builds_reuses_and_boots` builds the default profile
//! (Debian's linux-source-6.12) through the library API: about 15 minutes the
//! first time on a 2-core machine, then served from the shared cache
//! (`$FUSE_IOMAP_HARNESS_CACHE` or ~/.cache/fuse-iomap-harness).

use kernel::{ensure_kernel, kconfig, KernelArgs, KernelOptions};
use plumbing::ui::Ui;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn xtask(args: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr, t.elapsed())
}

#[test]
fn iomap_required_on_the_debian_tree_fails_fast() {
    let (code, stderr, took) = xtask(&["kernel", "--iomap", "required"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the FUSE iomap series is not applied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--series") && stderr.contains("--profile fuse-iomap"),
        "{stderr}"
    );
    // Nothing was configured or compiled.
    assert!(
        !stderr.contains("make bzImage") && !stderr.contains("configuring"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, stderr, _) = xtask(&["kernel", "--profile", "no-such-profile"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown profile `no-such-profile`"),
        "{stderr}"
    );
    let (code, stderr, _) = xtask(&[
        "kernel",
        "--fragment",
        "/nonexistent/x.config",
        "--config-only",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/x.config"), "{stderr}");
    let (code, _, _) = xtask(&["kernel", "--git", "u", "--source-dir", "d"]);
    assert_eq!(code, 2);
}

/// A requested symbol the tree cannot provide is named, with the fragment
/// that asked, and exits 2 (real merge and olddefconfig, no compile).
#[test]
fn missing_requested_symbol_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("wants.config");
    // A symbol this tree does not define (skipped, said), one whose dependencies are unmet
    // (an error), one that is satisfied.
    std::fs::write(
        &frag,
        "CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE=y\nCONFIG_USB_STORAGE=y\nCONFIG_FUSE_FS=y\n",
    )
    .unwrap();
    let (code, stderr, _) = xtask(&[
        "kernel",
        "--config-only",
        "--fragment",
        frag.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CONFIG_USB_STORAGE: requested y by wants:2, got (absent) (its dependencies are not met)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE: requested by wants:1, but this tree has no such symbol"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CONFIG_NO_SUCH_SYMBOL_IN_ANY_TREE: requested y"),
        "an undefined symbol the harness does not need is not an error: {stderr}"
    );
    assert!(
        !stderr.contains("CONFIG_FUSE_FS:"),
        "FUSE_FS is satisfied: {stderr}"
    );
}

/// A git source that cannot be reached (offline machines, a typo in the host) fails with a
/// clear message (exit 3), through a real fetch: `.invalid` never resolves (RFC 6761), on
/// any machine.
#[test]
fn unreachable_git_source_is_explained() {
    let (code, stderr, took) = xtask(&[
        "kernel",
        "--git",
        "https://git.kernel.invalid/pub/scm/linux/kernel/git/torvalds/linux.git",
        "--ref",
        "master",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("git.kernel.invalid cannot be reached"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(60));
}

#[test]
fn default_profile_builds_reuses_and_boots() {
    let ui = Ui::plain();
    let opts = KernelOptions::resolve(None, &KernelArgs::default()).unwrap();
    let k = ensure_kernel(&opts, &ui).expect("default kernel builds");

    // Artifacts and build-info.
    for f in [
        &k.bzimage,
        &k.vmlinux,
        &k.config,
        &k.system_map,
        &k.build_info_path,
    ] {
        assert!(f.is_file(), "{}", f.display());
    }
    let info = &k.info;
    assert!(
        info.kernel_release.starts_with("6.12"),
        "{}",
        info.kernel_release
    );
    assert!(!info.iomap_present, "Debian's tree has no FUSE iomap");
    assert_eq!(info.fragments, vec!["base"]);
    assert_eq!(
        info.bzimage_bytes,
        std::fs::metadata(&k.bzimage).unwrap().len()
    );
    assert!(
        info.bzimage_bytes > 1_000_000 && info.bzimage_bytes < 16_000_000,
        "{}",
        info.bzimage_bytes
    );
    assert_eq!(
        info.config_hash,
        plumbing::util::sha256_file(&k.config).unwrap()
    );
    assert!(info
        .source_identity
        .starts_with("debian:linux-source-6.12="));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&k.build_info_path).unwrap()).unwrap();
    for key in [
        "source",
        "revision",
        "series",
        "config_hash",
        "cache_key",
        "compiler",
        "iomap_present",
        "started",
        "finished",
        "durations",
        "bzimage_bytes",
    ] {
        assert!(json.get(key).is_some(), "build-info.json lacks {key}");
    }

    // Every symbol of base.config is in the built kernel's config.
    let base = kconfig::Fragment::load(
        "base",
        &plumbing::paths::workspace_root().join("kernel-config/base.config"),
    )
    .unwrap();
    let cfg = kconfig::parse_config(&std::fs::read_to_string(&k.config).unwrap());
    assert_eq!(kconfig::verify(&[base], &cfg), vec![]);

    // A second call is a no-op served from the cache.
    let t = Instant::now();
    let again = ensure_kernel(&opts, &ui).unwrap();
    assert!(again.reused);
    assert_eq!(again.info.cache_key, info.cache_key);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "no-op took {:?}",
        t.elapsed()
    );
    let latest = kernel::latest_dir("default");
    assert_eq!(
        latest.canonicalize().unwrap(),
        k.dir.canonicalize().unwrap()
    );

    boot_to_init(&k.bzimage);
}

/// Boot the kernel on an empty ext4 root disk with a missing init: reaching
/// "Run ... as init process" proves virtio-mmio, virtio-blk, ext4 and the
/// console; the panic must end QEMU by itself (built-in reboot=t, panic=-1).
fn boot_to_init(bzimage: &Path) {
    if !test_support::needs(test_support::needs::tool_from(
        "qemu-system-x86_64",
        "qemu-system-x86",
    )) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("root.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm,acpi=off",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(bzimage)
        .arg("-drive")
        .arg(format!(
            "file={},if=none,format=raw,id=root",
            disk.display()
        ))
        .args(["-device", "virtio-blk-device,drive=root"])
        .args([
            "-append",
            "console=ttyS0 root=/dev/vda init=/bin/does-not-exist",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // QEMU must exit on its own; kill it after a deadline so no VM leaks.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut console = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut console)
        .unwrap();
    let wall = t.elapsed();
    assert!(
        status.is_some(),
        "QEMU did not exit after the panic:\n{console}"
    );
    let run_line = console
        .lines()
        .find(|l| l.contains("Run /bin/does-not-exist as init process"));
    assert!(run_line.is_some(), "kernel did not reach init:\n{console}");
    assert!(
        console.contains("smp: Brought up 1 node, 2 CPUs"),
        "{console}"
    );
    assert!(
        console.contains("EXT4-fs (vda): mounted filesystem"),
        "{console}"
    );
    eprintln!(
        "boot to init: {} (guest), {wall:?} wall",
        run_line.unwrap().trim()
    );
}

/// `vm-test --dry-run` prints the VM's command line without building or booting: the
/// fuse-iomap profile (iomap required) boots with FUSE iomap enabled in the fuse module; a
/// kernel built without iomap does not get the parameters.
#[test]
fn dry_run_shows_iomap_enabled_on_iomap_kernels() {
    let dry = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["vm-test", "--dry-run"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with("qemu-system-x86_64 ") && stdout.contains(" -append "),
            "{stdout}"
        );
        stdout
    };
    let want = ["fuse.enable_iomap=1", "fuse.debug_iomap=1"];
    let iomap = dry(&["--profile", "fuse-iomap"]);
    assert!(want.iter().all(|w| iomap.contains(w)), "{iomap}");
    let off = dry(&["--iomap", "off", "--profile", "fuse-iomap"]);
    assert!(!off.contains("fuse.enable_iomap"), "{off}");
    let user = dry(&["--profile", "fuse-iomap", "--append", "fuse.debug_iomap=0"]);
    assert!(
        user.trim_end()
            .contains("fuse.debug_iomap=1 fuse.debug_iomap=0'"),
        "the user's words come last: {user}"
    );
}
