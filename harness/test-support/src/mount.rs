//! Mount helpers every host test shares: unmount with retries, lazy cleanup, what
//! mountinfo says is mounted, waiting for a server to exit, the tail of its log.

use crate::cmd;
use anyhow::Result;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

const BUSY_RETRY: Duration = Duration::from_secs(3);

/// `umount MNT`, retried for a while if the mount is busy: under `cargo test` the tests
/// are threads of one process, and a child another test forks (as_user, or any Command
/// between fork and exec) briefly holds copies of every open descriptor.
pub fn umount(mnt: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match cmd::run("umount", &[mnt]) {
            Err(e) if format!("{e:#}").contains("busy") && start.elapsed() < BUSY_RETRY => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r.map(drop),
        }
    }
}

/// `umount`, and `umount -l` if that fails (a test that panicked may leave files open).
pub fn lazy_unmount(mnt: &Path) {
    if cmd::run("umount", &[mnt]).is_err() {
        let _ = cmd::run("umount", &[Path::new("-l"), mnt]);
    }
}

/// The filesystem type /proc/self/mountinfo gives for the mount on `mnt`, if any.
pub fn mount_fstype(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_str()?;
    // Fields: id parent major:minor root mountpoint opts [optional...] - fstype source sbopts
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&want) {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 1).map(|s| s.to_string())
    })
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if start.elapsed() > timeout {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn read_log(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // Keep failure messages readable: the tail is what explains a failure.
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    format!(
        "--- server log {} (last {} lines) ---\n{}",
        log.display(),
        tail.len(),
        tail.join("\n")
    )
}
