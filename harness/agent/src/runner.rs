//! Runs one test: a `bash -c` child in its own process group, with stdout,
//! stderr and the kernel log captured into the share, heartbeats while it runs,
//! and a timeout that tells a hung test (no progress) from a slow one.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use events::{EventBody, Plan, PlanTest, TestStatus};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::emit::Emitter;
use crate::kmsg::KmsgSlice;
use crate::setup;
use crate::sys;

/// Directory for one test's artifacts inside the share, if the name is a plain relative
/// path ([`events::check_test_name`]); the host checked the plan, but the plan is a file
/// in a directory tests can write.
pub fn artifact_dir(name: &str) -> Result<PathBuf, String> {
    events::check_test_name(name)?;
    Ok(Path::new(events::SHARE_MOUNT).join("tests").join(name))
}

/// Longest heartbeat interval honoured (a plan's absurd value must not overflow a clock).
const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// When a test past its timeout is killed although it still makes progress:
/// `timeout * slow_factor`, saturating.
fn hard_limit(timeout: Duration, slow_factor: u64) -> Duration {
    let factor = u32::try_from(slow_factor.max(1)).unwrap_or(u32::MAX);
    timeout.checked_mul(factor).unwrap_or(Duration::MAX)
}

struct Outcome {
    status: TestStatus,
    exit_code: Option<i32>,
    signal: Option<i32>,
    slow: bool,
    reason: Option<String>,
}

pub fn run_test(plan: &Plan, test: &PlanTest, out: &mut Emitter) -> TestStatus {
    let dir = match artifact_dir(&test.name) {
        Ok(d) => d,
        Err(e) => {
            // Not started, so the host reports it not run (an infrastructure error).
            out.log(&format!("refusing a test: {e}"));
            return TestStatus::InfraError;
        }
    };
    let _ = std::fs::create_dir_all(&dir);
    sys::kmsg(&format!(
        "{} test_started {}",
        events::KMSG_MARKER,
        test.name
    ));
    let kmsg = KmsgSlice::start();
    out.emit(EventBody::TestStarted {
        name: test.name.clone(),
        timeout_s: test.timeout_s,
    });
    let started = Instant::now();
    let mode_log = dir.join(events::SERVER_MODES_FILE);
    let _ = std::fs::remove_file(&mode_log);
    let _ = std::fs::remove_dir_all(dir.join(events::RECORDINGS_DIR));

    let outcome = spawn_and_watch(plan, test, &dir, out);

    let duration_ms = started.elapsed().as_millis() as u64;
    cleanup_mounts();
    sys::kmsg(&format!(
        "{} test_finished {}",
        events::KMSG_MARKER,
        test.name
    ));
    let _ = std::fs::write(dir.join("dmesg.log"), kmsg.collect());
    sys::sync();
    out.emit(EventBody::TestFinished {
        name: test.name.clone(),
        status: outcome.status,
        duration_ms,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        slow: outcome.slow,
        reason: outcome.reason,
        server_modes: events::parse_server_modes(
            &std::fs::read_to_string(&mode_log).unwrap_or_default(),
        ),
    });
    outcome.status
}

fn spawn_and_watch(plan: &Plan, test: &PlanTest, dir: &Path, out: &mut Emitter) -> Outcome {
    let infra = |reason: String| Outcome {
        status: TestStatus::InfraError,
        exit_code: None,
        signal: None,
        slow: false,
        reason: Some(reason),
    };
    let (stdout, stderr) = match (
        std::fs::File::create(dir.join("stdout.log")),
        std::fs::File::create(dir.join("stderr.log")),
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return infra(format!(
                "cannot create output files in {}: {e}",
                dir.display()
            ))
        }
    };
    let child = Command::new("/bin/bash")
        .arg("-c")
        .arg(&test.command)
        .env_clear()
        // Every iomapfs the test mounts (fstests' included) records its session here, with
        // a snapshot of the filesystem it opened (the plan's env may switch it off).
        .env("IOMAPFS_RECORD_DIR", dir.join(events::RECORDINGS_DIR))
        .env("IOMAPFS_RECORD_MAX", events::RECORD_MAX)
        .envs(setup::test_env(plan))
        .env("HARNESS_TEST", &test.name)
        .env("HARNESS_OUT", dir)
        // ... and appends its mode here.
        .env("IOMAPFS_MODE_LOG", dir.join(events::SERVER_MODES_FILE))
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn();
    let pid = match child {
        Ok(c) => c.id() as i32, // reaped below with waitpid, as PID 1 must reap everything
        Err(e) => return infra(format!("cannot start bash: {e}")),
    };

    let heartbeat = Duration::from_secs(plan.heartbeat_s.max(1)).min(MAX_HEARTBEAT);
    let timeout = Duration::from_secs(test.timeout_s.max(1));
    let hard_limit = hard_limit(timeout, plan.slow_factor);
    let started = Instant::now();
    let mut next_beat = started + heartbeat;
    let mut samples: Vec<(Instant, u64)> = vec![(started, 0)];
    let mut slow = false;
    loop {
        if let Some(status) = reap(pid) {
            let (exit_code, signal) = decode_wait(status);
            let passed = exit_code == Some(0);
            return Outcome {
                status: if passed {
                    TestStatus::Passed
                } else {
                    TestStatus::Failed
                },
                exit_code,
                signal,
                slow,
                reason: (!passed).then(|| match (exit_code, signal) {
                    (Some(c), _) => format!("exit code {c}"),
                    (_, Some(s)) => format!("killed by signal {s}"),
                    _ => "unknown wait status".into(),
                }),
            };
        }
        let now = Instant::now();
        if now >= next_beat {
            let p = progress(pid, dir);
            samples.push((now, p));
            // Only the last few heartbeats are ever compared.
            if samples.len() > 8 {
                samples.remove(0);
            }
            out.emit(EventBody::Heartbeat {
                test: Some(test.name.clone()),
                progress: p,
            });
            next_beat = now + heartbeat;
        }
        let elapsed = now - started;
        if elapsed >= timeout {
            // Compare with a sample at least one heartbeat old: a test that
            // neither ran, nor did I/O, nor printed in that window is hung.
            let current = progress(pid, dir);
            let window_start = samples
                .iter()
                .rev()
                .find(|(t, _)| now - *t >= heartbeat)
                .map(|s| s.1);
            let stuck = window_start == Some(current);
            if stuck || elapsed >= hard_limit {
                if stuck {
                    // Blocked tasks into the kernel log (and so into dmesg.log).
                    sys::sysrq('w');
                }
                kill_group(pid);
                let status = wait_for(pid, Duration::from_secs(10));
                let (exit_code, signal) = status.map(decode_wait).unwrap_or((None, Some(9)));
                let secs = elapsed.as_secs();
                return if stuck {
                    Outcome {
                        status: TestStatus::Hung,
                        exit_code,
                        signal,
                        slow,
                        reason: Some(format!(
                            "no progress after the {}s timeout (killed at {secs}s; blocked tasks in dmesg.log)",
                            test.timeout_s
                        )),
                    }
                } else {
                    Outcome {
                        status: TestStatus::Failed,
                        exit_code,
                        signal,
                        slow: true,
                        reason: Some(format!(
                            "still making progress at {secs}s, {}x its {}s timeout: slow, killed",
                            plan.slow_factor, test.timeout_s
                        )),
                    }
                };
            }
            if !slow {
                out.log(&format!(
                    "{} passed its {}s timeout but is making progress; letting it run",
                    test.name, test.timeout_s
                ));
                slow = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reap every finished child (PID 1 inherits orphans); return `pid`'s status if it ended.
fn reap(pid: i32) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        // No child (ECHILD) or none finished: done.
        let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => status,
        };
        if status.pid() == Some(Pid::from_raw(pid)) {
            found = Some(status);
        }
    }
}

/// Reap orphans (daemonized servers that exited) outside of a test.
pub fn reap_orphans() {
    let _ = reap(0);
}

fn wait_for(pid: i32, limit: Duration) -> Option<WaitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(s) = reap(pid) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn decode_wait(status: WaitStatus) -> (Option<i32>, Option<i32>) {
    match status {
        WaitStatus::Exited(_, code) => (Some(code), None),
        WaitStatus::Signaled(_, sig, _) => (None, Some(sig as i32)),
        _ => (None, None),
    }
}

fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
}

/// A counter that grows while the test's process group does anything: CPU
/// ticks, bytes read/written, and bytes of output.
fn progress(pgid: i32, dir: &Path) -> u64 {
    // Only compared for change: wrapping sums are fine, overflow must not panic.
    let mut total = 0u64;
    for name in ["stdout.log", "stderr.log"] {
        total = total.wrapping_add(
            std::fs::metadata(dir.join(name))
                .map(|m| m.len())
                .unwrap_or(0),
        );
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(fields) = stat_fields_after_comm(&stat) else {
            continue;
        };
        // After "(comm)": state ppid pgrp ... utime is field 14, stime 15 (1-based).
        let field = |n: usize| {
            fields
                .get(n - 3)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if field(5) as i32 != pgid {
            continue;
        }
        total = total.wrapping_add(field(14)).wrapping_add(field(15));
        if let Ok(io) = std::fs::read_to_string(entry.path().join("io")) {
            for line in io.lines() {
                if let Some(v) = line
                    .strip_prefix("rchar: ")
                    .or_else(|| line.strip_prefix("wchar: "))
                {
                    total = total.wrapping_add(v.trim().parse::<u64>().unwrap_or(0));
                }
            }
        }
    }
    total
}

/// Fields of /proc/PID/stat after the command name (which may contain spaces).
fn stat_fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Leave no mount of a test behind for the next one.
fn cleanup_mounts() {
    for m in [setup::TEST_DIR, setup::SCRATCH_MNT] {
        // Until it fails: nothing (more) is mounted there.
        while sys::detach(m) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_artifact_dirs() {
        assert_eq!(
            artifact_dir("smoke/mount").unwrap(),
            Path::new("/harness/tests/smoke/mount")
        );
        for bad in ["../../etc/passwd", "/a", "a\0b", "..", "", &"x".repeat(300)] {
            assert!(artifact_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn absurd_plan_numbers_do_not_overflow() {
        let t = Duration::from_secs(u64::MAX);
        assert_eq!(hard_limit(t, u64::MAX), Duration::MAX);
        assert_eq!(
            hard_limit(Duration::from_secs(10), 0),
            Duration::from_secs(10)
        );
        assert_eq!(
            hard_limit(Duration::from_secs(10), 3),
            Duration::from_secs(30)
        );
        assert_eq!(
            hard_limit(Duration::from_secs(1 << 40), 1 << 40),
            Duration::MAX
        );
        // The heartbeat clock: now + the longest interval stays representable.
        let beat = Duration::from_secs(u64::MAX).min(MAX_HEARTBEAT);
        assert!(Instant::now().checked_add(beat).is_some());
    }

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let stat = "123 (my (odd) cmd) S 1 77 77 0 -1 4194560 1 0 0 0 11 22 0 0 20 0 1 0";
        let f = stat_fields_after_comm(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[5 - 3], "77"); // pgrp
        assert_eq!(f[14 - 3], "11"); // utime
        assert_eq!(f[15 - 3], "22"); // stime
    }
}
