//! Small wrappers over system calls the agent needs.
use std::ffi::CString;
use std::io::Write;

/// Milliseconds since boot (CLOCK_BOOTTIME), the guest's own clock.
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (src_c, target_c, fstype_c, data_c) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                fstype_c.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data_c.as_ptr().cast()
            },
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {src} on {target} ({fstype}): {}",
            std::io::Error::last_os_error()
        ))
    }
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
    // SAFETY: sync has no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Set the wall clock (the guest may have no RTC). Best effort.
pub fn set_clock(unix_secs: u64) {
    if unix_secs == 0 {
        return;
    }
    let ts = libc::timespec {
        tv_sec: unix_secs as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: clock_settime reads the timespec we own.
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
}
