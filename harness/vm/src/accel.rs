//! Choosing the accelerator: KVM only if a guest really boots with it.
//!
//! A /dev/kvm that exists is not enough (nested setups hang right after the
//! firmware, or abort on `-cpu host`), so we boot the kernel with KVM and wait
//! a few seconds for its banner on the serial line. The verdict is cached for
//! an hour per host kernel and QEMU binary, so runs don't pay for the probe.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::qemu::Accel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s {
            "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            _ => None,
        }
    }
}

/// The accelerator and why.
#[derive(Debug, Clone)]
pub struct AccelDecision {
    pub accel: Accel,
    pub note: String,
}

const CACHE_TTL: Duration = Duration::from_secs(3600);

/// Decide. `Err` only when KVM was demanded and does not work.
pub fn choose(
    choice: AccelChoice,
    qemu: &Path,
    kernel: &Path,
    cache_dir: &Path,
    deadline: Duration,
) -> Result<AccelDecision, String> {
    let tcg = |note: String| AccelDecision {
        accel: Accel::Tcg,
        note,
    };
    if choice == AccelChoice::Tcg {
        return Ok(tcg("TCG requested".into()));
    }
    let kvm_problem = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Err(e) => Some(format!("cannot open /dev/kvm: {e}")),
        Ok(_) => {
            let key = cache_key(qemu);
            match read_cache(cache_dir, &key) {
                Some(v) => v,
                None => {
                    let v = probe(qemu, kernel, deadline);
                    write_cache(cache_dir, &key, &v);
                    v
                }
            }
        }
    };
    match (kvm_problem, choice) {
        (None, _) => Ok(AccelDecision {
            accel: Accel::Kvm,
            note: "KVM boot probe passed".into(),
        }),
        (Some(p), AccelChoice::Kvm) => Err(format!("KVM was requested but does not work: {p}")),
        (Some(p), _) => Ok(tcg(format!(
            "KVM unusable ({p}); using TCG, expect slow runs"
        ))),
    }
}

/// Boot the kernel under KVM; `None` if its banner showed up in time.
fn probe(qemu: &Path, kernel: &Path, deadline: Duration) -> Option<String> {
    let child = Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-machine", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "256M",
        ])
        .arg("-kernel")
        .arg(kernel)
        .args([
            "-append",
            "console=ttyS0 loglevel=8 panic=-1",
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot start {}: {e}", qemu.display())),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = child.stdout.take();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(Ok(n)) = out.as_mut().map(|o| o.read(&mut buf)) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("Linux version") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let start = Instant::now();
    let verdict = loop {
        if rx.try_recv().is_ok() {
            break None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let first = err
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            break Some(format!(
                "QEMU with KVM exited ({status}) before the kernel printed: {first}"
            ));
        }
        if start.elapsed() > deadline {
            break Some(format!(
                "no kernel output within {}s under KVM",
                deadline.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}

fn cache_key(qemu: &Path) -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu_mtime = which(qemu)
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("{}|{}|{qemu_mtime}", release.trim(), qemu.display())
}

fn which(p: &Path) -> Option<std::path::PathBuf> {
    if p.components().count() > 1 {
        return Some(p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(p))
        .find(|c| c.is_file())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cached {
    key: String,
    at: u64,
    problem: Option<String>,
}

fn cache_file(dir: &Path) -> std::path::PathBuf {
    dir.join("kvm-probe.json")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `Some(verdict)` if a fresh verdict for this key is cached.
fn read_cache(dir: &Path, key: &str) -> Option<Option<String>> {
    let c: Cached = serde_json::from_str(&std::fs::read_to_string(cache_file(dir)).ok()?).ok()?;
    (c.key == key && now_secs().saturating_sub(c.at) < CACHE_TTL.as_secs()).then_some(c.problem)
}

fn write_cache(dir: &Path, key: &str, problem: &Option<String>) {
    let c = Cached {
        key: key.into(),
        at: now_secs(),
        problem: problem.clone(),
    };
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(
        cache_file(dir),
        serde_json::to_string(&c).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_when_asked_without_probing() {
        let d = choose(
            AccelChoice::Tcg,
            Path::new("/nonexistent/qemu"),
            Path::new("/k"),
            Path::new("/tmp"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(d.accel, Accel::Tcg);
    }

    #[test]
    fn cache_round_trip_respects_key() {
        let dir = tempfile::tempdir().unwrap();
        write_cache(dir.path(), "k1", &Some("hangs".into()));
        assert_eq!(read_cache(dir.path(), "k1"), Some(Some("hangs".into())));
        assert_eq!(read_cache(dir.path(), "k2"), None);
        write_cache(dir.path(), "k1", &None);
        assert_eq!(read_cache(dir.path(), "k1"), Some(None));
    }

    #[test]
    fn a_broken_qemu_is_reported_not_hung() {
        let v = probe(
            Path::new("/bin/false"),
            Path::new("/k"),
            Duration::from_secs(5),
        );
        assert!(v.unwrap().contains("exited"));
    }
}
