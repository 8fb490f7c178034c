//! Small wrappers over system calls the agent needs.
use std::io::Write;

use nix::mount::MsFlags;
use nix::time::{clock_gettime, clock_settime, ClockId};

/// Milliseconds since boot (CLOCK_BOOTTIME), the guest's own clock.
pub fn boottime_ms() -> u64 {
    // CLOCK_BOOTTIME always exists on Linux; 0 if it somehow failed.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000
}

/// mount(2); an empty `fstype` or `data` is passed as NULL.
pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: &str,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let fstype_opt = (!fstype.is_empty()).then_some(fstype);
    let data_opt = (!data.is_empty()).then_some(data);
    nix::mount::mount(Some(src), target, fstype_opt, flags, data_opt)
        .map_err(|e| format!("mount {src} on {target} ({fstype}): {e}"))
}

/// umount2(MNT_DETACH); true if something was unmounted.
pub fn detach(target: &str) -> bool {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_ok()
}

/// Write a line straight to the console (for failures before the event port works).
pub fn console(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(f, "{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// Write a line into the kernel log, so it shows up on the console in order
/// with the kernel's own messages.
pub fn kmsg(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("<5>{msg}\n").as_bytes());
    }
}

pub fn set_console_loglevel(level: u8) {
    let _ = std::fs::write("/proc/sys/kernel/printk", format!("{level}\n"));
}

pub fn sysrq(key: char) {
    let _ = std::fs::write("/proc/sys/kernel/sysrq", "1\n");
    let _ = std::fs::write("/proc/sysrq-trigger", key.to_string());
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn sync() {
    nix::unistd::sync();
}

/// Set the wall clock (the guest may have no RTC). Best effort.
pub fn set_clock(unix_secs: u64) {
    if unix_secs == 0 {
        return;
    }
    let ts = nix::sys::time::TimeSpec::new(unix_secs as _, 0);
    let _ = clock_settime(ClockId::CLOCK_REALTIME, ts);
}
