//! One VM run, boot by boot. [`run_tests`] boots the guest; one boot (`run_session`) is:
//!
//! 1. session start (`start.rs`): lay out the run directory, start QEMU, attach to it;
//! 2. the poll loop (`poll.rs`): read the console and the events (`channels.rs`), each event
//!    line checked by the protocol (`protocol.rs`), until the guest finishes, dies or hangs,
//!    or a deadline passes; then wind the boot down (task dump, kill);
//! 3. verdict assembly (`verdict.rs`): what the boot produced, a `Session`.
//!
//! When a test took the guest down, [`run_tests`] boots again for the tests after it; at
//! the end it assembles the run's result from every boot (`verdict::finish_with`) and
//! writes results.json, junit.xml and summary.md.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use events::{Plan, PlanTest};
use report::{Finding, RunResult, TestResult};

use crate::console::Watcher;
use crate::qemu::{Accel, Console, Disk, Machine};
use crate::rundir::RunDir;

mod channels;
mod checkpoint;
mod poll;
mod protocol;
mod start;
mod verdict;

pub use start::{planned_command, virtiofs_recordings};

use checkpoint::Checkpoint;
use poll::Stop;
use protocol::State;
use start::{prep, prepare, qemu_config, spawn_qemu};
use verdict::{finish_with, Session};

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub image: PathBuf,
    /// The static agent binary (becomes the guest's init).
    pub agent: PathBuf,
    /// Files copied into `<run>/bin/` (the FUSE server and its mount helper).
    pub server_bins: Vec<PathBuf>,
    pub machine: Machine,
    pub accel: Accel,
    pub accel_note: Option<String>,
    pub cpus: u32,
    pub memory_mb: u32,
    pub test_disk_mb: u64,
    pub scratch_disk_mb: u64,
    /// Appended to the harness's kernel command line.
    pub extra_cmdline: Vec<String>,
    /// Format the test disk with mkfs.ext4 on the host, with these options
    /// (native speed; the guest's e2fsprogs is the same release).
    pub format_test_disk: Option<Vec<String>>,
    /// More read-only inputs as virtio disks (e.g. the built fstests tree), booted as
    /// snapshots so the cached files are never written; the guest finds each by serial.
    pub extra_disks: Vec<Disk>,
    /// Serve the test and scratch disks over virtio-fs (tags [`VIRTIOFS_TEST_TAG`] and
    /// [`VIRTIOFS_SCRATCH_TAG`]) with this iomapfs binary on the host
    /// (`--vhost-user-socket`, one backend per disk and boot) instead of as virtio-blk
    /// disks. Both are formatted on the host (`format_test_disk`'s options).
    pub virtiofs_server: Option<PathBuf>,
    /// How the run directory reaches the guest.
    pub share: RunShare,
}

/// How the run directory (plan, binaries, artifacts) is shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunShare {
    /// QEMU's own 9p server (`security_model=none`): nothing more to run, works unprivileged.
    NineP,
    /// virtio-fs, served by this virtiofsd: one sandboxed process per boot, its log in
    /// `virtiofsd.log` (needs root: it creates the guest's files as the guest's users).
    Virtiofsd(PathBuf),
}

/// The virtio-fs tag of the test disk when `VmSpec::virtiofs_server` is set.
pub const VIRTIOFS_TEST_TAG: &str = "test";
/// The virtio-fs tag of the scratch disk when `VmSpec::virtiofs_server` is set.
pub const VIRTIOFS_SCRATCH_TAG: &str = "scratch";

/// Host-side deadlines. The agent enforces per-test timeouts itself; these
/// catch a guest that stopped answering at all.
#[derive(Debug, Clone)]
pub struct Limits {
    /// From QEMU start to the agent's `run_started`.
    pub boot: Duration,
    /// The whole run.
    pub run: Duration,
    /// No event at all (heartbeats stopped) for this long: the guest is stuck.
    pub stall: Duration,
    /// From `run_finished` to QEMU's exit.
    pub shutdown: Duration,
    /// How long to collect the console after asking for a task dump.
    pub dump_wait: Duration,
    /// After a test crashed or hung the guest, boot again (at most this many
    /// times in a run) to run the tests after it; 0 stops at the first crash.
    pub reboots: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            boot: Duration::from_secs(120),
            run: Duration::from_secs(3600),
            stall: Duration::from_secs(45),
            shutdown: Duration::from_secs(30),
            dump_wait: Duration::from_secs(8),
            reboots: 3,
        }
    }
}

/// Live progress for the caller's display.
#[derive(Debug)]
pub enum Progress<'a> {
    Booting {
        qemu_args: &'a [String],
    },
    Ready {
        boot_to_ready_ms: u64,
        kernel_boot_ms: u64,
        setup_ms: u64,
        kernel: &'a str,
        /// The server's facts, made fit for the terminal.
        server: Option<&'a events::ServerFacts>,
    },
    TestStarted {
        name: &'a str,
        index: usize,
        total: usize,
    },
    TestFinished {
        result: &'a TestResult,
    },
    Heartbeat {
        test: Option<&'a str>,
    },
    Log {
        message: &'a str,
    },
    Finding {
        finding: &'a Finding,
    },
    /// The running test announced a step (fstests: the next test of its `check` list).
    Step {
        test: &'a str,
        step: &'a str,
    },
    /// The guest stopped responding; the harness is capturing a task dump.
    Hang {
        test: Option<&'a str>,
        why: &'a str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot prepare the run directory {path}: {source}")]
    Prepare {
        path: String,
        source: std::io::Error,
    },
    #[error("bad plan: {0}")]
    Plan(String),
}

/// File in the run directory that keeps every event protocol error with its line.
pub const PROTOCOL_ERRORS_FILE: &str = "protocol-errors.log";

/// Run the plan's tests in a VM and return the result. Never fails after the
/// VM has been started: every problem becomes part of the verdict. When a test
/// crashes or hangs the guest, the VM is booted again (up to `limits.reboots`
/// times) for the tests after it.
pub fn run_tests(
    spec: &VmSpec,
    plan: &Plan,
    limits: &Limits,
    dir: &RunDir,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RunResult, VmError> {
    run_tests_with_steps(spec, plan, limits, dir, &mut NoSteps, progress, cancel)
}

/// A test that runs many steps in one go (fstests: one `check` for a whole list, each
/// test announced on the console) tells the supervisor how long each step may take, and
/// what to run after a step took the guest down.
pub trait Steps {
    /// How long `step` of `test` may run before the guest counts as hung; `None` leaves
    /// only the test's own timeout.
    fn deadline(&self, test: &str, step: &str) -> Option<Duration>;
    /// Plan tests to run, after a reboot, for what `test` did not get to when it crashed
    /// or hung the guest (`step`: the step it was in, if one was announced).
    fn continue_after(&mut self, test: &str, step: Option<&str>, dir: &RunDir) -> Vec<PlanTest>;
    /// `vm-test --resume`: the host stopped the run while `test` ran. `None` runs it again
    /// whole; `Some(tests)` keeps what it finished and runs `tests` for its rest.
    fn resume(&mut self, _test: &str, _dir: &RunDir) -> Option<Vec<PlanTest>> {
        None
    }
}

/// Tests without steps.
pub struct NoSteps;

impl Steps for NoSteps {
    fn deadline(&self, _: &str, _: &str) -> Option<Duration> {
        None
    }
    fn continue_after(&mut self, _: &str, _: Option<&str>, _: &RunDir) -> Vec<PlanTest> {
        vec![]
    }
}

/// [`run_tests`] for tests with steps: a step past its deadline is a hang, and after a
/// crash or hang the tests `steps` names for the rest of the interrupted test run next.
pub fn run_tests_with_steps(
    spec: &VmSpec,
    plan: &Plan,
    limits: &Limits,
    dir: &RunDir,
    steps: &mut dyn Steps,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RunResult, VmError> {
    plan.check().map_err(VmError::Plan)?;
    run_from(
        spec,
        Checkpoint::new(plan),
        limits,
        dir,
        steps,
        progress,
        cancel,
    )
}

/// Go on with a run the host stopped (`vm-test --resume`), from its checkpoint: the tests
/// with a verdict keep it; a test the host stopped runs again, or, when `steps` can tell
/// what it finished ([`Steps::resume`]), keeps that and continues with the rest. Without
/// a checkpoint (no boot ever started) the whole `plan` runs.
pub fn resume_tests_with_steps(
    spec: &VmSpec,
    plan: &Plan,
    limits: &Limits,
    dir: &RunDir,
    steps: &mut dyn Steps,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RunResult, VmError> {
    plan.check().map_err(VmError::Plan)?;
    let Some(mut ck) = Checkpoint::load(dir).map_err(VmError::Plan)? else {
        return run_tests_with_steps(spec, plan, limits, dir, steps, progress, cancel);
    };
    ck.plan.check().map_err(VmError::Plan)?;
    // The test the host stopped has no verdict of its own.
    if let Some(name) = ck.stopped.take() {
        ck.tests.retain(|t| t.name != name);
    }
    let done: HashSet<String> = ck.tests.iter().map(|t| t.name.clone()).collect();
    // Tests that started but have no verdict: the host stopped while they ran.
    let started: Vec<String> = ck
        .plan
        .tests
        .iter()
        .filter(|t| !done.contains(&t.name) && dir.tests_dir().join(&t.name).is_dir())
        .map(|t| t.name.clone())
        .collect();
    for name in started {
        let Some(more) = steps.resume(&name, dir) else {
            continue;
        };
        let mut kept = TestResult::new(name.clone(), report::Verdict::InfraError);
        kept.reason = Some("the host stopped the run during this test (resumed)".into());
        ck.tests.push(kept);
        // Its server modes, as a crashed test's: from the file its mounts wrote.
        let modes = verdict::interrupted_modes(dir, &name);
        if !modes.is_empty() {
            ck.test_modes.push((name.clone(), modes));
        }
        continue_plan(&mut ck.plan, &name, more, &mut ck.notes, progress);
    }
    let msg = format!(
        "resuming after boot {}: {} of {} tests have a verdict",
        ck.boots,
        ck.tests.len(),
        ck.plan.tests.len()
    );
    progress(Progress::Log { message: &msg });
    run_from(spec, ck, limits, dir, steps, progress, cancel)
}

/// Boot until the plan is done, from what `ck` says is done; the checkpoint is saved as
/// each boot starts and ends.
fn run_from(
    spec: &VmSpec,
    mut ck: Checkpoint,
    limits: &Limits,
    dir: &RunDir,
    steps: &mut dyn Steps,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<RunResult, VmError> {
    let save = |ck: &Checkpoint, notes: &mut Vec<String>| {
        if let Err(e) = ck.save(dir) {
            notes.push(format!("cannot save the checkpoint (no --resume): {e}"));
        }
    };
    let t0 = Instant::now();
    let deadline = t0
        .checked_add(limits.run)
        .unwrap_or(t0 + Duration::from_secs(365 * 24 * 3600));
    let mut boots_here = 0u32;
    let mut last = None;
    loop {
        let done: HashSet<&str> = ck.tests.iter().map(|t| t.name.as_str()).collect();
        let remaining: Vec<PlanTest> = ck
            .plan
            .tests
            .iter()
            .filter(|t| !done.contains(t.name.as_str()))
            .cloned()
            .collect();
        // An empty plan still boots once (the run's facts and verdict come from a boot).
        if remaining.is_empty() && ck.base.is_some() {
            break;
        }
        boots_here += 1;
        ck.boots += 1;
        let mut notes = vec![];
        save(&ck, &mut notes);
        let session_plan = Plan {
            tests: remaining,
            ..ck.plan.clone()
        };
        let s = run_session(
            spec,
            &session_plan,
            limits,
            dir,
            ck.boots,
            deadline,
            &*steps,
            progress,
            cancel,
        )?;
        match &mut ck.base {
            None => ck.base = Some(s.result),
            Some(r) => {
                r.reason = s.result.reason;
                r.console_excerpt = s.result.console_excerpt;
            }
        }
        ck.tests.extend(s.tests);
        ck.findings.extend(s.findings);
        ck.notes.extend(notes);
        ck.notes.extend(s.notes);
        ck.protocol.extend(s.protocol);
        ck.test_modes.extend(s.test_modes);
        ck.boots_done = ck.boots;
        let resumable = s.ready
            && s.interrupted_test.is_some()
            && matches!(s.stop, Stop::QemuDied(_) | Stop::Hung(_));
        if let (true, Some(test)) = (resumable, &s.interrupted_test) {
            let more = steps.continue_after(test, s.interrupted_step.as_deref(), dir);
            continue_plan(&mut ck.plan, test, more, &mut ck.notes, progress);
        }
        if matches!(s.stop, Stop::Interrupted | Stop::RunLimit) {
            ck.stopped = s.interrupted_test.clone();
        }
        let mut notes = vec![];
        save(&ck, &mut notes);
        ck.notes.extend(notes);
        last = Some((s.stop, s.ready));
        if !resumable || boots_here > limits.reboots || Instant::now() >= deadline {
            break;
        }
        let left = ck.plan.tests.len().saturating_sub(ck.tests.len());
        if left > 0 {
            let msg = format!(
                "{} took the guest down; booting again for the {left} remaining tests",
                s.interrupted_test.as_deref().unwrap_or("a test"),
            );
            progress(Progress::Log { message: &msg });
        }
    }
    let Some(mut result) = ck.base.clone() else {
        return Err(VmError::Plan("no boot ran".into()));
    };
    result.boots = ck.boots;
    for (name, modes) in std::mem::take(&mut ck.test_modes) {
        let server = result.server.get_or_insert_with(Default::default);
        server.set_modes(&name, modes);
    }
    // What the last guest left where the host writes the results.
    let planted = dir.reclaim();
    if !planted.is_empty() {
        ck.protocol.push(format!(
            "the guest left links or special files in the run directory (removed): {}",
            planted.join(", ")
        ));
    }
    let mut out = finish_with(
        result,
        dir,
        t0,
        ck.tests,
        ck.findings,
        &ck.plan,
        ck.notes,
        ck.protocol,
    );
    if let Some((stop, ready)) = &last {
        verdict::overrule(&mut out, stop, *ready, ck.boots);
    }
    let _ = report::write_all(&out, &dir.path);
    Ok(out)
}

/// Put the tests that continue `test` right after it in the plan; names must be valid and
/// new (a note says why not).
fn continue_plan(
    plan: &mut Plan,
    test: &str,
    more: Vec<PlanTest>,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) {
    if more.is_empty() {
        return;
    }
    let names: Vec<&str> = more.iter().map(|t| t.name.as_str()).collect();
    let taken = more
        .iter()
        .any(|t| plan.tests.iter().any(|p| p.name == t.name));
    if let Err(e) = more
        .iter()
        .try_for_each(|t| events::check_test_name(&t.name))
    {
        notes.push(format!("{test}: continuation ignored: {e}"));
        return;
    }
    if taken {
        notes.push(format!(
            "{test}: continuation {} ignored (a test of that name exists)",
            names.join(", ")
        ));
        return;
    }
    let msg = format!("{test}: its rest continues as {}", names.join(", "));
    progress(Progress::Log { message: &msg });
    let at = plan
        .tests
        .iter()
        .position(|t| t.name == test)
        .map_or(plan.tests.len(), |i| i + 1);
    plan.tests.splice(at..at, more);
}

/// One boot: start, poll until it stops, wind down, and what it produced. Never fails
/// once QEMU is started: every problem becomes part of the session.
#[allow(clippy::too_many_arguments)]
fn run_session(
    spec: &VmSpec,
    plan: &Plan,
    limits: &Limits,
    dir: &RunDir,
    boot_no: u32,
    deadline: Instant,
    steps: &dyn Steps,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Session, VmError> {
    // An earlier boot's guest may have left links where the host is about to write.
    let planted = if boot_no > 1 { dir.reclaim() } else { vec![] };
    let mut live = match start::start(spec, plan, dir, boot_no, progress)? {
        Ok(live) => live,
        Err(result) => return Ok(verdict::failed_start(result)),
    };
    let mut watcher = Watcher::new();
    let mut findings: Vec<Finding> = vec![];
    let mut st = State::new(plan);
    if !planted.is_empty() {
        let what = format!(
            "the guest left links or special files in the run directory (removed): {}",
            planted.join(", ")
        );
        st.protocol.push(what, None);
    }
    let started = Instant::now();
    let stop = poll::poll(
        &mut live,
        &mut st,
        &mut watcher,
        &mut findings,
        limits,
        plan,
        steps,
        deadline,
        started,
        progress,
        cancel,
    );
    let run_reason = poll::wind_down(
        &mut live,
        &stop,
        &st,
        &mut watcher,
        &mut findings,
        limits,
        progress,
    );
    Ok(verdict::session_result(
        live.result,
        st,
        stop,
        run_reason,
        &watcher,
        findings,
        dir,
        boot_no,
        started,
        limits,
    ))
}

/// Boot the same VM with an interactive shell on this terminal.
pub fn run_shell(
    spec: &VmSpec,
    plan: &Plan,
    dir: &RunDir,
) -> Result<std::process::ExitStatus, VmError> {
    let (boot, disks) = prepare(dir, spec, plan, 1)?;
    let sockets = prep(
        Path::new("/tmp"),
        tempfile::Builder::new().prefix("harness-").tempdir(),
    )?;
    let cfg = qemu_config(dir, spec, boot, disks, Console::Stdio, sockets.path());
    let _share = match (&spec.share, &cfg.share_socket) {
        (RunShare::Virtiofsd(bin), Some(socket)) => Some(prep(
            &dir.path,
            start::Backend::virtiofsd(bin, &dir.path, socket),
        )?),
        _ => None,
    };
    let mut child = prep(&dir.path, spawn_qemu(&cfg, &dir.path, true))?;
    prep(&dir.path, child.wait())
}
