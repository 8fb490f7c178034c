//! The default profile built and booted on this machine's real tools.
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
