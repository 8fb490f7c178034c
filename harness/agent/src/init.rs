//! PID 1 duties: switch from the boot root to the root image, mount the
//! pseudo filesystems, and end the VM.
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::sys::mount;

const NEWROOT: &str = "/newroot";
/// File present only in the boot root the host prepares.
const BOOT_MARKER: &str = "/HARNESS_BOOT";

/// Options the host passes on the kernel command line (`harness.KEY=VALUE`).
fn cmdline_opt(cmdline: &str, key: &str) -> Option<String> {
    cmdline.split_whitespace().find_map(|w| {
        w.strip_prefix(&format!("harness.{key}="))
            .map(str::to_string)
    })
}

/// The kernel mounted a small boot root (the host's boot directory over 9p,
/// holding this binary and empty mount points). Mount the root image and the
/// run-directory share, then make the image our root, as `switch_root` does.
pub fn switch_to_image() -> Result<(), String> {
    // Already running from the image (booted some other way).
    if !Path::new(BOOT_MARKER).exists() {
        return Ok(());
    }
    if !Path::new("/dev/null").exists() {
        mount("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), "")?;
    }
    mount("proc", "/proc", "proc", MsFlags::empty(), "")?;
    mount("sysfs", "/sys", "sysfs", MsFlags::empty(), "")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let root = cmdline_opt(&cmdline, "root").unwrap_or_else(|| "serial:root".into());
    let fstype = cmdline_opt(&cmdline, "rootfstype").unwrap_or_else(|| "ext4".into());

    // virtio-blk probes before init runs, but don't bet the run on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let root = loop {
        if let Some(dev) = resolve_device(&root) {
            break dev;
        }
        if Instant::now() > deadline {
            return Err(format!("root device {root} did not appear"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    mount(&root, NEWROOT, &fstype, MsFlags::empty(), "")?;
    // The run directory: virtio-fs when the host says so (it runs virtiofsd), else 9p.
    let share = format!("{NEWROOT}{}", events::SHARE_MOUNT);
    if cmdline_opt(&cmdline, "share").as_deref() == Some("virtiofs") {
        // noexec: under TCG, QEMU does not see virtiofsd's writes into guest memory, so
        // code run straight from the share's page cache can be a recycled page's stale
        // translation (it crashes at random); binaries are copied out of it to run.
        mount(
            events::SHARE_TAG,
            &share,
            "virtiofs",
            MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "",
        )?;
    } else {
        mount(
            events::SHARE_TAG,
            &share,
            "9p",
            MsFlags::empty(),
            "trans=virtio,version=9p2000.L,msize=524288,cache=none",
        )?;
    }
    mount("/dev", &format!("{NEWROOT}/dev"), "", MsFlags::MS_MOVE, "")?;
    crate::sys::detach("/proc");
    crate::sys::detach("/sys");
    std::env::set_current_dir(NEWROOT).map_err(|e| format!("chdir {NEWROOT}: {e}"))?;
    mount(".", "/", "", MsFlags::MS_MOVE, "")?;
    // chroot(".") after moving the new root onto "/".
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// `serial:NAME` → the virtio disk whose serial is NAME (device order differs
/// between machine types); anything else is a device path.
fn resolve_device(spec: &str) -> Option<String> {
    let Some(serial) = spec.strip_prefix("serial:") else {
        return Path::new(spec).exists().then(|| spec.to_string());
    };
    let sys = std::fs::read_dir("/sys/block").ok()?;
    sys.flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim() == serial)
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .filter(|dev| Path::new(dev).exists())
}

/// Mount proc, sys and friends (only as PID 1; a no-op elsewhere).
pub fn mount_basics() -> Result<(), String> {
    if std::process::id() != 1 {
        return Ok(());
    }
    mount("proc", "/proc", "proc", MsFlags::empty(), "")?;
    mount("sysfs", "/sys", "sysfs", MsFlags::empty(), "")?;
    if !Path::new("/dev/null").exists() {
        mount("devtmpfs", "/dev", "devtmpfs", MsFlags::empty(), "")?;
    }
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::empty(),
        "gid=5,mode=620,ptmxmode=666",
    )?;
    mount("tmpfs", "/dev/shm", "tmpfs", MsFlags::empty(), "mode=1777")?;
    mount("tmpfs", "/tmp", "tmpfs", MsFlags::empty(), "mode=1777")?;
    mount("tmpfs", "/run", "tmpfs", MsFlags::empty(), "mode=755")?;
    // Best effort: not every kernel has these.
    let _ = mount(
        "debugfs",
        "/sys/kernel/debug",
        "debugfs",
        MsFlags::empty(),
        "",
    );
    let _ = mount(
        "fusectl",
        "/sys/fs/fuse/connections",
        "fusectl",
        MsFlags::empty(),
        "",
    );
    let _ = std::fs::write("/proc/sys/kernel/hostname", "harness\n");
    // /dev/fd and friends, which bash process substitution needs.
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        let _ = std::os::unix::fs::symlink(format!("/proc/self/fd/{i}"), format!("/dev/{name}"));
    }
    Ok(())
}

/// End the VM. QEMU runs with `-no-reboot`, so a reset makes it exit at once,
/// on every machine type, with or without ACPI.
pub fn power_off() -> ! {
    crate::sys::sync();
    // Does not return on success.
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // If even that failed there is nothing left to do but wait to be killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::cmdline_opt;

    #[test]
    fn finds_harness_options() {
        let c = "console=ttyS0 harness.root=/dev/vdz quiet harness.rootfstype=ext2";
        assert_eq!(cmdline_opt(c, "root").as_deref(), Some("/dev/vdz"));
        assert_eq!(cmdline_opt(c, "rootfstype").as_deref(), Some("ext2"));
        assert_eq!(cmdline_opt(c, "nope"), None);
    }
}
