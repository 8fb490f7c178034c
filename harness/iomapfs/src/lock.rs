//! One server per source: an exclusive flock(2) on the source (image file or block device
//! node), taken before the filesystem is opened and held until the process exits.
//!
//! With the `fuse` flavor umount returns before the server has flushed, so whatever comes
//! next (a remount, `flock DEV e2fsck -fn DEV`) waits on this lock for the old server to
//! finish. The lock belongs to the open file description, so the daemonized child keeps it
//! after the parent exits.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How often a waiting server retries the lock.
const RETRY: Duration = Duration::from_millis(20);

/// Takes `LOCK_EX` on `source`, waiting up to `timeout`. Keep the returned lock for as
/// long as the source is served (dropping it unlocks).
pub fn lock_source(source: &Path, timeout: Duration) -> Result<Flock<File>> {
    // Read-only: closing a block device opened for writing makes udev re-probe it.
    let mut file = File::open(source)
        .with_context(|| format!("cannot open {} to lock it", source.display()))?;
    let start = Instant::now();
    let mut said_waiting = false;
    loop {
        file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((file, Errno::EWOULDBLOCK)) => file,
            Err((_, e)) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("flock {}", source.display()))
            }
        };
        if start.elapsed() >= timeout {
            bail!(
                "{} is locked by {}; gave up after lock_timeout={}s (another iomapfs may \
                 still serve it, or be flushing it after umount)",
                source.display(),
                describe(&holders(&file)),
                timeout.as_secs()
            );
        }
        if !said_waiting {
            tracing::info!(
                "{} is locked by {}; waiting up to {}s",
                source.display(),
                describe(&holders(&file)),
                timeout.as_secs()
            );
            said_waiting = true;
        }
        std::thread::sleep(RETRY.min(timeout.saturating_sub(start.elapsed())));
    }
}

/// A process holding a flock on the same file.
#[derive(Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "another process".into();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.comm))
        .collect();
    list.join(", ")
}

/// Other processes with a flock on the file `ours` refers to: /proc/PID/fdinfo/FD lists
/// the locks held through that descriptor (best effort; unreadable entries are skipped).
pub fn holders(ours: &File) -> Vec<Holder> {
    let Ok(meta) = ours.metadata() else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let locked = fds.flatten().any(|fd| {
            let same = std::fs::metadata(fd.path())
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
            let info = entry.path().join("fdinfo").join(fd.file_name());
            same && std::fs::read_to_string(info).is_ok_and(|s| has_flock(&s))
        });
        if locked {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(Holder {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }
    found
}

/// True when an fdinfo text lists a flock held through that descriptor.
fn has_flock(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .any(|l| l.starts_with("lock:") && l.split_whitespace().any(|w| w == "FLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lock_lines() {
        let locked = "pos:\t0\nflags:\t0100000\nmnt_id:\t30\nino:\t12\n\
                      lock:\t1: FLOCK  ADVISORY  WRITE 4242 00:1c:12 0 EOF\n";
        assert!(has_flock(locked));
        assert!(!has_flock("pos:\t0\nflags:\t02\n"));
        assert!(!has_flock(
            "lock:\t1: POSIX  ADVISORY  WRITE 4242 00:1c:12 0 EOF\n"
        ));
    }

    fn scratch_file() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        std::fs::write(&path, b"x").unwrap();
        (dir, path)
    }

    #[test]
    fn a_second_open_waits_then_fails() {
        let (_dir, path) = scratch_file();
        let first = lock_source(&path, Duration::ZERO).unwrap();
        let start = Instant::now();
        let err = format!(
            "{:#}",
            lock_source(&path, Duration::from_millis(200)).unwrap_err()
        );
        assert!(start.elapsed() >= Duration::from_millis(200), "it waited");
        // The only holder is this process, which the scan leaves out.
        assert!(err.contains("locked by another process"), "{err}");
        assert!(err.contains("lock_timeout"), "{err}");
        drop(first);
        lock_source(&path, Duration::ZERO).expect("free once the first file is closed");
    }

    #[test]
    fn the_error_names_another_holder() {
        let (_dir, path) = scratch_file();
        // flock(1) holds the lock while `cat` waits for its stdin (-o: cat does not get
        // the locked descriptor, so closing stdin releases the lock).
        let spawned = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .arg("cat")
            .stdin(std::process::Stdio::piped())
            .spawn();
        if !test_support::needs(test_support::needs::tool_from("flock", "util-linux")) {
            return;
        }
        let mut child = spawned.expect("flock(1) starts");
        let probe = File::open(&path).unwrap();
        let start = Instant::now();
        while holders(&probe).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = lock_source(&path, Duration::from_millis(100));
        drop(child.stdin.take());
        let _ = child.wait();
        let err = format!("{:#}", got.unwrap_err());
        assert!(
            err.contains(&format!("pid {} (flock)", child.id())),
            "{err}"
        );
        lock_source(&path, Duration::from_secs(5)).expect("free once flock(1) exited");
    }
}
