//! One VM run: prepare the run directory, start QEMU, follow the event stream
//! and the console, enforce the deadlines, and build the verdict.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use events::{Event, EventBody, Plan, PlanTest, TestStatus};
use report::{Finding, RunResult, Severity, TestResult, Verdict, RESULTS_SCHEMA};

use crate::console::{Seen, Watcher};
use crate::framing::{Framer, Line};
use crate::qemu::{Accel, Console, Disk, Machine, QemuConfig};
use crate::qmp::Qmp;
use crate::rundir::RunDir;

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
}

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
        server_mode: Option<&'a str>,
        server_error: Option<&'a str>,
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

/// Protocol errors kept per boot (a guest sending garbage sends a lot of it).
const MAX_PROTOCOL_ERRORS: usize = 100;

/// Most bytes of the event file read per poll, so a flood cannot stall the loop.
const MAX_EVENT_READ: u64 = 1 << 20;

fn prep<T>(path: &Path, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|source| VmError::Prepare {
        path: path.display().to_string(),
        source,
    })
}

/// Lay out the run directory: plan, boot root with the agent, server binaries,
/// fresh sparse disks.
fn prepare(
    dir: &RunDir,
    spec: &VmSpec,
    plan: &Plan,
    boot_no: u32,
) -> Result<(PathBuf, Vec<Disk>), VmError> {
    let p = &dir.path;
    let mut plan = plan.clone();
    plan.host_time_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    prep(p, std::fs::write(p.join(events::PLAN_FILE), plan.to_json()))?;
    let boot = p.join("boot");
    for d in ["dev", "proc", "sys", "newroot"] {
        prep(&boot, std::fs::create_dir_all(boot.join(d)))?;
    }
    prep(
        &boot,
        std::fs::write(boot.join("HARNESS_BOOT"), "vm-test boot root\n"),
    )?;
    // A hard link is instant; copy across filesystems.
    let agent_dst = boot.join("agent");
    if !agent_dst.exists() && std::fs::hard_link(&spec.agent, &agent_dst).is_err() {
        prep(&spec.agent, std::fs::copy(&spec.agent, &agent_dst))?;
    }
    if !spec.server_bins.is_empty() {
        let bin = p.join("bin");
        prep(&bin, std::fs::create_dir_all(&bin))?;
        for b in &spec.server_bins {
            let dst = bin.join(b.file_name().unwrap_or_default());
            // Without debug info the binary is a fraction of the size to copy
            // into the guest over 9p; symbols stay for backtraces.
            let stripped = Command::new("objcopy")
                .arg("--strip-debug")
                .arg(b)
                .arg(&dst)
                .status();
            if !stripped.is_ok_and(|s| s.success()) {
                prep(b, std::fs::copy(b, &dst))?;
            }
        }
    }
    prep(&dir.tests_dir(), std::fs::create_dir_all(dir.tests_dir()))?;
    let disks_dir = p.join("disks");
    prep(&disks_dir, std::fs::create_dir_all(&disks_dir))?;
    let mut disks = vec![root_disk(spec)];
    for (name, mb) in fresh_disks(spec) {
        let path = disks_dir.join(format!("{name}.img"));
        if boot_no > 1 && path.exists() {
            // Keep the disk the previous boot crashed with, for inspection.
            let old = disks_dir.join(format!("{name}-boot{}.img", boot_no - 1));
            prep(&path, std::fs::rename(&path, old))?;
        }
        let f = prep(&path, std::fs::File::create(&path))?;
        prep(&path, f.set_len(mb * 1024 * 1024))?;
        if let (Some(opts), "test") = (&spec.format_test_disk, name) {
            let out = prep(
                &path,
                Command::new("mkfs.ext4")
                    .args(["-F", "-q"])
                    .args(opts)
                    .arg(&path)
                    .output(),
            )?;
            if !out.status.success() {
                let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                return Err(VmError::Prepare {
                    path: path.display().to_string(),
                    source: std::io::Error::other(msg),
                });
            }
        }
        disks.push(Disk {
            path,
            serial: name.into(),
            snapshot: false,
        });
    }
    disks.extend(spec.extra_disks.iter().cloned());
    Ok((boot, disks))
}

/// Build the QEMU configuration for a run directory.
fn qemu_config(
    dir: &RunDir,
    spec: &VmSpec,
    boot: PathBuf,
    disks: Vec<Disk>,
    console: Console,
    sockets: &Path,
) -> QemuConfig {
    let mut cmdline = QemuConfig::base_cmdline(spec.machine);
    for extra in &spec.extra_cmdline {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    QemuConfig {
        binary: spec.qemu.clone(),
        name: format!("harness-{}", dir.id),
        machine: spec.machine,
        accel: spec.accel,
        cpus: spec.cpus,
        memory_mb: spec.memory_mb,
        kernel: spec.kernel.clone(),
        cmdline,
        disks,
        boot_dir: boot,
        share_dir: dir.path.clone(),
        events_file: dir.path.join("events.jsonl"),
        console,
        qmp_socket: Some(sockets.join("qmp.sock")),
        pid_file: Some(dir.path.join("qemu.pid")),
    }
}

/// The server modes a guest reported, reduced to the two the harness knows (each once):
/// anything else is the guest's noise and is dropped.
fn known_modes(reported: Vec<String>) -> Vec<String> {
    let mut modes: Vec<String> = vec![];
    for m in reported.iter().take(64) {
        if matches!(m.as_str(), "iomap" | "classic") && !modes.contains(m) {
            modes.push(m.clone());
        }
    }
    modes
}

/// The guest's root: the cached image, booted as a snapshot so it is never written.
fn root_disk(spec: &VmSpec) -> Disk {
    Disk {
        path: spec.image.clone(),
        serial: "root".into(),
        snapshot: true,
    }
}

/// The fresh sparse disks a run attaches after the root (name = serial, size in MiB).
fn fresh_disks(spec: &VmSpec) -> impl Iterator<Item = (&'static str, u64)> {
    [
        ("test", spec.test_disk_mb),
        ("scratch", spec.scratch_disk_mb),
    ]
    .into_iter()
    .filter(|(_, mb)| *mb > 0)
}

/// The QEMU command line a run of `spec` would use, its run directory shown as `<run>`
/// (`vm-test --dry-run`: nothing is created or started).
pub fn planned_command(spec: &VmSpec) -> Vec<String> {
    let dir = RunDir {
        id: "dry-run".into(),
        path: PathBuf::from("<run>"),
        started_at: String::new(),
    };
    let mut disks = vec![root_disk(spec)];
    for (name, _) in fresh_disks(spec) {
        disks.push(Disk {
            path: dir.path.join("disks").join(format!("{name}.img")),
            serial: name.into(),
            snapshot: false,
        });
    }
    disks.extend(spec.extra_disks.iter().cloned());
    let console = Console::Socket(dir.path.join("console.sock"));
    let cfg = qemu_config(&dir, spec, dir.path.join("boot"), disks, console, &dir.path);
    std::iter::once(cfg.binary.display().to_string())
        .chain(cfg.args())
        .collect()
}

/// QEMU in its own process group (Ctrl-C on the terminal reaches only us),
/// killed by the kernel if we die (PR_SET_PDEATHSIG).
fn spawn_qemu(cfg: &QemuConfig, dir: &Path, interactive: bool) -> std::io::Result<Child> {
    let mut cmd = Command::new(&cfg.binary);
    cmd.args(cfg.args()).current_dir(dir);
    // Appended: a run may boot several times.
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
    };
    if interactive {
        cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        cmd.stderr(log("qemu.log")?);
    } else {
        cmd.stdin(Stdio::null());
        cmd.stdout(log("qemu.log")?);
        cmd.stderr(log("qemu.stderr.log")?);
        cmd.process_group(0);
    }
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills QEMU (and anything in its process group) when dropped.
struct QemuGuard {
    child: Child,
    done: bool,
}

impl QemuGuard {
    fn kill(&mut self) {
        if !self.done {
            // SAFETY: signalling the process group we created.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.done = true;
                Some(s)
            }
            _ => None,
        }
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Tails a file that another process appends to, as framed lines.
struct Tail {
    path: PathBuf,
    file: Option<std::fs::File>,
    framer: Framer,
}

impl Tail {
    /// Skip what earlier boots of the run wrote.
    fn from_end(path: PathBuf) -> Self {
        use std::io::Seek;
        let file = std::fs::File::open(&path)
            .ok()
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)).ok().map(|_| f));
        Tail {
            path,
            file,
            framer: Framer::default(),
        }
    }

    /// The lines completed since the last call (at most [`MAX_EVENT_READ`] bytes read).
    fn lines(&mut self) -> Vec<Line> {
        self.read().0
    }

    /// Lines from one read, and whether the read was cut at [`MAX_EVENT_READ`].
    fn read(&mut self) -> (Vec<Line>, bool) {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return (vec![], false);
        };
        let mut bytes = vec![];
        let _ = f.take(MAX_EVENT_READ).read_to_end(&mut bytes);
        (
            self.framer.push(&bytes),
            bytes.len() as u64 == MAX_EVENT_READ,
        )
    }

    /// The unterminated last line, at the end of the stream.
    fn rest(&mut self) -> Option<Line> {
        self.framer.finish()
    }
}

/// Connect to the console socket QEMU is waiting on; a thread copies the
/// console to console.log and to the returned channel.
fn attach_console(
    sock: &Path,
    log: &Path,
    qemu: &mut QemuGuard,
    boot_no: u32,
) -> Result<(UnixStream, Receiver<Vec<u8>>), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) => {
                if let Some(status) = qemu.exited() {
                    return Err(format!("QEMU exited at start ({status})"));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "cannot connect to the console socket {}: {e}",
                        sock.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    if boot_no > 1 {
        let _ = writeln!(file, "===== vm-test: boot {boot_no} =====");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = file.write_all(&buf[..n]);
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    Ok((stream, rx))
}

/// What the supervisor knows about the run so far.
struct State {
    /// The session plan's tests and their timeouts: only these may start.
    planned: HashMap<String, u64>,
    ready_info: Option<EventBody>,
    ready_at: Option<Instant>,
    current: Option<(String, Instant, u64)>,
    /// The step of a running test the console announced last: (test, step, since).
    step: Option<(String, String, Instant)>,
    started: Vec<String>,
    finished: Vec<TestResult>,
    run_finished: bool,
    last_event: Instant,
    protocol: ProtocolErrors,
}

/// Event protocol errors of one boot: what was wrong, and the offending line.
#[derive(Default)]
struct ProtocolErrors {
    kept: Vec<(String, Option<Line>)>,
    count: usize,
}

impl ProtocolErrors {
    fn push(&mut self, what: String, line: Option<&Line>) {
        self.count += 1;
        if self.kept.len() < MAX_PROTOCOL_ERRORS {
            self.kept.push((what, line.cloned()));
        }
    }

    /// Append them to the run directory's protocol-errors.log; returns a summary for the
    /// run's reason, if there were any.
    fn save(&self, run_dir: &Path, boot_no: u32) -> Option<String> {
        let (first, _) = self.kept.first()?;
        let mut text = String::new();
        for (what, line) in &self.kept {
            text.push_str(&format!("boot {boot_no}: {what}\n"));
            if let Some(l) = line {
                let cut = if l.truncated { " (truncated)" } else { "" };
                text.push_str(&format!("  line{cut}: {}\n", l.escaped()));
            }
        }
        if self.count > self.kept.len() {
            text.push_str(&format!(
                "boot {boot_no}: {} more not kept\n",
                self.count - self.kept.len()
            ));
        }
        let _ = append_file(&run_dir.join(PROTOCOL_ERRORS_FILE), text.as_bytes());
        Some(format!("{} event protocol errors in boot {boot_no} (see {PROTOCOL_ERRORS_FILE}); the first: {first}", self.count))
    }
}

/// Append to a file of the run directory without following a link the guest left there.
fn append_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    f.write_all(bytes)
}

/// Why the supervisor stopped the guest early.
enum Stop {
    None,
    Hung(String),
    BootTimeout,
    Interrupted,
    QemuDied(std::process::ExitStatus),
    ShutdownStuck,
}

/// Run the plan's tests in a VM and return the result. Never fails after the
/// VM has been started: every problem becomes part of the verdict.
/// What one boot of the VM produced.
struct Session {
    stop: Stop,
    ready: bool,
    /// Boot facts (first session's are kept), reason and console excerpt.
    result: RunResult,
    tests: Vec<TestResult>,
    findings: Vec<Finding>,
    notes: Vec<String>,
    /// Event protocol errors (summarised; the lines are in protocol-errors.log).
    protocol: Vec<String>,
    /// The test that was running when the guest died or hung.
    interrupted_test: Option<String>,
    /// The step of that test the console last announced.
    interrupted_step: Option<String>,
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
    // The plan grows when an interrupted test's rest is continued.
    let mut plan = plan.clone();
    let t0 = Instant::now();
    let deadline = t0
        .checked_add(limits.run)
        .unwrap_or(t0 + Duration::from_secs(365 * 24 * 3600));
    let mut remaining = plan.tests.clone();
    let (mut tests, mut findings, mut notes, mut protocol) = (vec![], vec![], vec![], vec![]);
    let mut result: Option<RunResult> = None;
    let mut boots = 0u32;
    let (last_stop, last_ready) = loop {
        boots += 1;
        let session_plan = Plan {
            tests: remaining.clone(),
            ..plan.clone()
        };
        let s = run_session(
            spec,
            &session_plan,
            limits,
            dir,
            boots,
            deadline,
            &*steps,
            progress,
            cancel,
        )?;
        match &mut result {
            None => result = Some(s.result),
            Some(r) => {
                r.reason = s.result.reason;
                r.console_excerpt = s.result.console_excerpt;
            }
        }
        tests.extend(s.tests);
        findings.extend(s.findings);
        notes.extend(s.notes);
        protocol.extend(s.protocol);
        let resumable = s.ready
            && s.interrupted_test.is_some()
            && matches!(s.stop, Stop::QemuDied(_) | Stop::Hung(_));
        if let (true, Some(test)) = (resumable, &s.interrupted_test) {
            let more = steps.continue_after(test, s.interrupted_step.as_deref(), dir);
            let names: Vec<&str> = more.iter().map(|t| t.name.as_str()).collect();
            let fresh = more
                .iter()
                .all(|t| !plan.tests.iter().any(|p| p.name == t.name));
            match more
                .iter()
                .try_for_each(|t| events::check_test_name(&t.name))
            {
                Ok(()) if fresh && !more.is_empty() => {
                    let at = plan
                        .tests
                        .iter()
                        .position(|t| &t.name == test)
                        .map_or(plan.tests.len(), |i| i + 1);
                    let msg = format!("{test}: its rest continues as {}", names.join(", "));
                    progress(Progress::Log { message: &msg });
                    plan.tests.splice(at..at, more);
                }
                Ok(()) if more.is_empty() => {}
                Ok(()) => notes.push(format!(
                    "{test}: continuation {} ignored (a test of that name exists)",
                    names.join(", ")
                )),
                Err(e) => notes.push(format!("{test}: continuation ignored: {e}")),
            }
        }
        let done: std::collections::HashSet<&str> =
            tests.iter().map(|t: &TestResult| t.name.as_str()).collect();
        remaining = plan
            .tests
            .iter()
            .filter(|t| !done.contains(t.name.as_str()))
            .cloned()
            .collect();
        if !resumable
            || remaining.is_empty()
            || boots > limits.reboots
            || Instant::now() >= deadline
        {
            break (s.stop, s.ready);
        }
        let msg = format!(
            "{} took the guest down; booting again for the {} remaining tests",
            s.interrupted_test.as_deref().unwrap_or("a test"),
            remaining.len()
        );
        progress(Progress::Log { message: &msg });
    };
    let Some(mut result) = result else {
        return Err(VmError::Plan("no boot ran".into()));
    };
    result.boots = boots;
    // What the last guest left where the host writes the results.
    let planted = dir.reclaim();
    if !planted.is_empty() {
        protocol.push(format!(
            "the guest left links or special files in the run directory (removed): {}",
            planted.join(", ")
        ));
    }
    let mut out = finish_with(result, dir, t0, tests, findings, &plan, notes, protocol);
    // A run that never got going, or that the user stopped, is the harness's
    // failure whatever the tests say; so is a guest that died outside a test.
    let never_ready = boots == 1 && !last_ready && !matches!(last_stop, Stop::None);
    let forced = matches!(last_stop, Stop::Interrupted)
        || never_ready
        || matches!(last_stop, Stop::BootTimeout) && boots == 1;
    if forced
        || !matches!(last_stop, Stop::None | Stop::ShutdownStuck)
            && matches!(out.verdict, Verdict::Passed | Verdict::NothingPassed)
    {
        out.verdict = Verdict::InfraError;
        if out.harness_error.is_none() {
            out.harness_error = Some(
                out.reason
                    .clone()
                    .unwrap_or_else(|| "the run did not finish".into()),
            );
        }
    }
    let _ = report::write_all(&out, &dir.path);
    Ok(out)
}

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
    let (boot, disks) = prepare(dir, spec, plan, boot_no)?;
    // Unix socket paths are limited to 108 bytes: keep them in a short temp dir.
    let sockets = prep(
        Path::new("/tmp"),
        tempfile::Builder::new().prefix("harness-").tempdir(),
    )?;
    let console_sock = sockets.path().join("console.sock");
    let cfg = qemu_config(
        dir,
        spec,
        boot,
        disks,
        Console::Socket(console_sock.clone()),
        sockets.path(),
    );
    let args = cfg.args();
    prep(
        &dir.path,
        std::fs::write(
            dir.path.join("qemu.cmdline"),
            shell_words(&cfg.binary, &args),
        ),
    )?;
    progress(Progress::Booting { qemu_args: &args });

    let mut result = base_result(spec, dir, &cfg);
    let failed = |result: RunResult| Session {
        stop: Stop::BootTimeout,
        ready: false,
        result,
        tests: vec![],
        findings: vec![],
        notes: vec![],
        protocol: vec![],
        interrupted_test: None,
        interrupted_step: None,
    };
    // From the end of what earlier boots wrote (QEMU appends), taken before QEMU starts:
    // a fast guest may send its first events before the console is even attached.
    let mut events = Tail::from_end(dir.path.join("events.jsonl"));
    let mut qemu = match spawn_qemu(&cfg, &dir.path, false) {
        Ok(child) => QemuGuard { child, done: false },
        Err(e) => {
            result.reason = Some(format!("cannot start {}: {e}", cfg.binary.display()));
            return Ok(failed(result));
        }
    };
    let (mut console_in, console_rx) = match attach_console(
        &console_sock,
        &dir.path.join("console.log"),
        &mut qemu,
        boot_no,
    ) {
        Ok(c) => c,
        Err(e) => {
            let stderr =
                std::fs::read_to_string(dir.path.join("qemu.stderr.log")).unwrap_or_default();
            result.reason = Some(format!(
                "{e}: {}",
                stderr.trim().lines().last().unwrap_or("")
            ));
            return Ok(failed(result));
        }
    };

    let mut watcher = Watcher::new();
    let mut findings: Vec<Finding> = vec![];
    let mut st = State {
        planned: plan
            .tests
            .iter()
            .map(|t| (t.name.clone(), t.timeout_s))
            .collect(),
        ready_info: None,
        ready_at: None,
        current: None,
        step: None,
        started: vec![],
        finished: vec![],
        run_finished: false,
        last_event: Instant::now(),
        protocol: ProtocolErrors::default(),
    };
    if !planted.is_empty() {
        let what = format!(
            "the guest left links or special files in the run directory (removed): {}",
            planted.join(", ")
        );
        st.protocol.push(what, None);
    }
    let started = Instant::now();
    let mut run_finished_at: Option<Instant> = None;
    let stop = loop {
        // Console first, so findings are attributed before test_finished moves on.
        while let Ok(chunk) = console_rx.try_recv() {
            for seen in watcher.feed(&chunk) {
                match seen {
                    Seen::Event(line) => handle_line(&line, &mut st, &mut watcher, progress),
                    // The console's own idea of the test: its events may not be read yet.
                    Seen::Step {
                        test: Some(test),
                        step,
                    } => {
                        progress(Progress::Step {
                            test: &test,
                            step: &step,
                        });
                        st.step = Some((test, step, Instant::now()));
                    }
                    _ => {}
                }
            }
        }
        for f in watcher.take_findings() {
            progress(Progress::Finding { finding: &f });
            findings.push(f);
        }
        for line in events.lines() {
            handle_line(&line, &mut st, &mut watcher, progress);
        }
        if st.run_finished && run_finished_at.is_none() {
            run_finished_at = Some(Instant::now());
        }
        if let Some(status) = qemu.exited() {
            // Read what is left of both channels.
            std::thread::sleep(Duration::from_millis(100));
            while let Ok(chunk) = console_rx.try_recv() {
                for seen in watcher.feed(&chunk) {
                    if let Seen::Event(line) = seen {
                        handle_line(&line, &mut st, &mut watcher, progress);
                    }
                }
            }
            loop {
                let (lines, more) = events.read();
                for line in lines {
                    handle_line(&line, &mut st, &mut watcher, progress);
                }
                if !more {
                    break;
                }
            }
            if let Some(line) = events.rest() {
                handle_line(&line, &mut st, &mut watcher, progress);
            }
            break if st.run_finished {
                Stop::None
            } else {
                Stop::QemuDied(status)
            };
        }
        if cancel.load(Ordering::SeqCst) {
            break Stop::Interrupted;
        }
        let now = Instant::now();
        if st.ready_info.is_none() && now - started > limits.boot {
            break Stop::BootTimeout;
        }
        if let Some(at) = run_finished_at {
            if now - at > limits.shutdown {
                break Stop::ShutdownStuck;
            }
        } else if st.ready_info.is_some() && now - st.last_event > limits.stall {
            break Stop::Hung(format!(
                "no event from the guest for {}s (heartbeats stopped)",
                limits.stall.as_secs()
            ));
        } else if let Some((name, at, timeout_s)) = &st.current {
            // The agent kills a test at timeout * slow_factor; past that plus
            // a margin, the agent itself is stuck. (The timeout is the plan's.)
            let limit = Duration::from_secs(timeout_s.saturating_mul(plan.slow_factor.max(1)))
                .saturating_add(limits.stall);
            if now - *at > limit {
                break Stop::Hung(format!(
                    "{name} not finished {}s after it started",
                    limit.as_secs()
                ));
            }
            if let Some((test, step, at)) = &st.step {
                let limit = (test == name)
                    .then(|| steps.deadline(test, step))
                    .flatten()
                    .map(|d| {
                        d.saturating_mul(plan.slow_factor.clamp(1, u64::from(u32::MAX)) as u32)
                            .saturating_add(limits.stall)
                    });
                if let Some(limit) = limit.filter(|l| now - *at > *l) {
                    break Stop::Hung(format!(
                        "{step} (in {name}) not finished {}s after it started",
                        limit.as_secs()
                    ));
                }
            }
        }
        if now > deadline {
            break Stop::Hung(format!("the whole run exceeded {}s", limits.run.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let mut run_reason = None;
    match &stop {
        Stop::Hung(why) => {
            let test = st.current.as_ref().map(|c| c.0.clone());
            progress(Progress::Hang {
                test: test.as_deref(),
                why,
            });
            capture_task_dump(
                sockets.path(),
                &mut console_in,
                &console_rx,
                &mut watcher,
                limits.dump_wait,
            );
            run_reason = Some(format!("guest hung: {why}"));
        }
        Stop::BootTimeout => {
            run_reason = Some(format!(
                "the guest agent did not report ready within {}s",
                limits.boot.as_secs()
            ));
        }
        Stop::Interrupted => run_reason = Some("interrupted (Ctrl-C); partial results".into()),
        Stop::QemuDied(status) => {
            run_reason = Some(if st.ready_info.is_none() {
                format!("the guest died during boot (QEMU {status})")
            } else {
                format!("the guest died (QEMU {status}) before the run finished")
            });
        }
        Stop::ShutdownStuck | Stop::None => {}
    }
    qemu.kill();
    // Console thread ends on EOF; take the last bytes.
    while let Ok(chunk) = console_rx.recv_timeout(Duration::from_millis(200)) {
        watcher.feed(&chunk);
    }
    findings.extend(watcher.finish());

    // Build the results.
    if let Some(EventBody::RunStarted {
        kernel,
        iomapfs_version,
        e2fsprogs_version,
        server_mode,
        server_error,
        agent_start_ms,
        boot_to_ready_ms,
        setup_ms,
        ..
    }) = st.ready_info.clone()
    {
        result.kernel_boot_ms = Some(agent_start_ms);
        result.setup_ms = Some(setup_ms);
        result.host_ready_ms = st.ready_at.map(|t| (t - started).as_millis() as u64);
        result.kernel_release = Some(kernel);
        result.iomapfs_version = iomapfs_version;
        result.e2fsprogs_version = e2fsprogs_version;
        result.server_mode = server_mode;
        result.server_error = server_error;
        result.boot_to_ready_ms = Some(boot_to_ready_ms);
    }
    let mut tests: Vec<TestResult> = st.finished.drain(..).collect();
    // Names are the plan's: only planned tests get this far.
    for t in &mut tests {
        t.artifacts = dir.artifacts_of(&t.name);
    }
    // The test that was running when the guest died or hung.
    let interrupted_test = st.current.as_ref().map(|c| c.0.clone());
    let interrupted_step = st
        .step
        .as_ref()
        .filter(|(test, ..)| Some(test) == interrupted_test.as_ref())
        .map(|(_, step, _)| step.clone());
    if let Some((name, at, _)) = st.current.take() {
        let (verdict, reason) = match &stop {
            Stop::Hung(why) => (Verdict::Hung, why.clone()),
            Stop::Interrupted => (Verdict::InfraError, "interrupted".to_string()),
            Stop::QemuDied(status) => {
                let crash = findings
                    .iter()
                    .find(|f| f.kind.severity() == Severity::Crash);
                let why = crash.map_or_else(
                    || format!("the guest died (QEMU {status})"),
                    |f| f.title.clone(),
                );
                (Verdict::Crashed, why)
            }
            _ => (Verdict::InfraError, "unfinished".to_string()),
        };
        let mut t = TestResult::new(name, verdict);
        t.artifacts = dir.artifacts_of(&t.name);
        t.duration_ms = at.elapsed().as_millis() as u64;
        t.reason = Some(reason);
        tests.push(t);
    }
    result.reason = run_reason;
    // Agent log lines stay in events.jsonl; only problems go into the reason.
    let protocol = st.protocol.save(&dir.path, boot_no).into_iter().collect();
    let mut notes = vec![];
    let dropped = watcher.dropped();
    if dropped > 0 {
        notes.push(format!(
            "{dropped} more kernel reports than kept per test (console.log has them)"
        ));
    }
    if matches!(stop, Stop::ShutdownStuck) {
        notes.push(format!(
            "QEMU did not exit within {}s of run_finished; killed",
            limits.shutdown.as_secs()
        ));
    }
    if st.ready_info.is_none() {
        result.console_excerpt = Some(watcher.tail());
    }
    Ok(Session {
        stop,
        ready: st.ready_info.is_some(),
        result,
        tests,
        findings,
        notes,
        protocol,
        interrupted_test,
        interrupted_step,
    })
}

/// A guest string fit for the terminal and the reason: control characters escaped, at
/// most `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

/// Check one line of the event stream and apply it. Anything the protocol does not allow
/// (a line that is not UTF-8, too long, not an event, another schema version, an event
/// out of order or for a test that is not running) is a protocol error, kept with its
/// line, and changes nothing else.
fn handle_line(
    line: &Line,
    st: &mut State,
    watcher: &mut Watcher,
    progress: &mut dyn FnMut(Progress),
) {
    if line.truncated {
        st.protocol.push(
            format!("event line longer than {} bytes", crate::framing::MAX_LINE),
            Some(line),
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(&line.bytes) else {
        st.protocol
            .push("event line is not UTF-8".into(), Some(line));
        return;
    };
    if text.trim().is_empty() {
        return;
    }
    let ev = match Event::from_line(text) {
        Ok(ev) if ev.v == events::SCHEMA_VERSION => ev,
        Ok(ev) => {
            st.protocol.push(
                format!(
                    "event of schema v{} (host speaks v{})",
                    ev.v,
                    events::SCHEMA_VERSION
                ),
                Some(line),
            );
            return;
        }
        Err(e) => {
            st.protocol
                .push(format!("unreadable event line ({e})"), Some(line));
            return;
        }
    };
    if let Err(why) = check_event(&ev.body, st) {
        st.protocol.push(why, Some(line));
        return;
    }
    st.last_event = Instant::now();
    match ev.body {
        EventBody::RunStarted { .. } => {
            if let EventBody::RunStarted {
                kernel,
                server_mode,
                server_error,
                boot_to_ready_ms,
                agent_start_ms,
                setup_ms,
                ..
            } = &ev.body
            {
                let (kernel, mode, error) = (
                    printable(kernel, 200),
                    server_mode.as_deref().map(|m| printable(m, 200)),
                    server_error.as_deref().map(|e| printable(e, 1000)),
                );
                progress(Progress::Ready {
                    boot_to_ready_ms: *boot_to_ready_ms,
                    kernel_boot_ms: *agent_start_ms,
                    setup_ms: *setup_ms,
                    kernel: &kernel,
                    server_mode: mode.as_deref(),
                    server_error: error.as_deref(),
                });
            }
            st.ready_info = Some(ev.body);
            st.ready_at = Some(Instant::now());
        }
        EventBody::TestStarted { name, .. } => {
            // The plan's timeout, not the guest's word for it.
            let timeout_s = st.planned.get(&name).copied().unwrap_or(0);
            st.started.push(name.clone());
            progress(Progress::TestStarted {
                name: &name,
                index: st.started.len(),
                total: st.planned.len(),
            });
            watcher.set_current_test(Some(name.clone()));
            st.current = Some((name, Instant::now(), timeout_s));
        }
        EventBody::TestFinished {
            name,
            status,
            duration_ms,
            exit_code,
            signal,
            slow,
            reason,
            server_modes,
        } => {
            st.current = None;
            watcher.set_current_test(None);
            let mut result = TestResult::new(
                name,
                match status {
                    TestStatus::Passed => Verdict::Passed,
                    TestStatus::Failed => Verdict::Failed,
                    TestStatus::Hung => Verdict::Hung,
                    TestStatus::InfraError => Verdict::InfraError,
                },
            );
            result.duration_ms = duration_ms;
            result.exit_code = exit_code;
            result.signal = signal;
            result.slow = slow;
            result.reason = reason.map(|r| printable(&r, 2000));
            result.server_modes = known_modes(server_modes);
            progress(Progress::TestFinished { result: &result });
            st.finished.push(result);
        }
        EventBody::Heartbeat { test, .. } => progress(Progress::Heartbeat {
            test: test.as_deref(),
        }),
        EventBody::Log { message } => {
            progress(Progress::Log {
                message: &printable(&message, 2000),
            });
        }
        EventBody::RunFinished { .. } => st.run_finished = true,
    }
}

/// Is this event allowed now? Tests start one at a time, only if planned and not run
/// yet, after run_started; only the running test finishes; nothing follows run_finished.
fn check_event(body: &EventBody, st: &State) -> Result<(), String> {
    let running = st.current.as_ref().map(|c| c.0.as_str());
    let shown = |n: &str| printable(n, 100);
    if st.run_finished {
        return Err("event after run_finished".into());
    }
    match body {
        EventBody::RunStarted { .. } if st.ready_info.is_some() => Err("run_started twice".into()),
        EventBody::RunStarted { .. } | EventBody::Log { .. } => Ok(()),
        _ if st.ready_info.is_none() => Err("event before run_started".into()),
        EventBody::TestStarted { name, timeout_s } => match st.planned.get(name) {
            None => Err(format!(
                "test_started for `{}`, which is not in the plan",
                shown(name)
            )),
            Some(_) if st.started.contains(name) => {
                Err(format!("test_started for `{}` a second time", shown(name)))
            }
            Some(_) if running.is_some() => Err(format!(
                "test_started for `{}` while `{}` is running",
                shown(name),
                running.unwrap_or_default()
            )),
            Some(planned) if planned != timeout_s => Err(format!(
                "test_started for `{}` with timeout {timeout_s}s, the plan says {planned}s",
                shown(name)
            )),
            Some(_) => Ok(()),
        },
        EventBody::TestFinished { name, .. } if running != Some(name.as_str()) => Err(format!(
            "test_finished for `{}`, which is not running",
            shown(name)
        )),
        EventBody::Heartbeat {
            test: Some(name), ..
        } if running != Some(name.as_str()) => Err(format!(
            "heartbeat for `{}`, which is not running",
            shown(name)
        )),
        EventBody::RunFinished { .. } if running.is_some() => Err(format!(
            "run_finished while `{}` is running",
            running.unwrap_or_default()
        )),
        _ => Ok(()),
    }
}

/// Ask the stuck kernel for its blocked tasks and all task states through
/// sysrq on the serial line (a break, then the key), and collect the console.
fn capture_task_dump(
    sockets: &Path,
    console: &mut UnixStream,
    rx: &Receiver<Vec<u8>>,
    watcher: &mut Watcher,
    wait: Duration,
) {
    if let Ok(mut qmp) = Qmp::connect(&sockets.join("qmp.sock")) {
        // '9': console log level 9 so the dumps reach the console; 'w': blocked
        // tasks; 't': every task.
        for key in ["9", "w", "t"] {
            if qmp.send_break("con").is_ok() {
                let _ = console.write_all(key.as_bytes());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Collect until the console is quiet for a second, at most `wait`.
    let end = Instant::now() + wait;
    let mut last = Instant::now();
    while Instant::now() < end && last.elapsed() < Duration::from_secs(1) {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            watcher.feed(&chunk);
            last = Instant::now();
        }
    }
}

fn base_result(spec: &VmSpec, dir: &RunDir, cfg: &QemuConfig) -> RunResult {
    RunResult {
        schema: RESULTS_SCHEMA,
        started_at: dir.started_at.clone(),
        accel: spec.accel.as_str().into(),
        accel_note: spec.accel_note.clone(),
        machine: cfg.machine.as_str().into(),
        kernel_image: spec.kernel.display().to_string(),
        image: spec.image.display().to_string(),
        boots: 1,
        ..RunResult::empty(dir.id.clone())
    }
}

/// Attach findings to tests, apply them to verdicts, add the tests that never
/// ran, and compute the run's verdict.
#[allow(clippy::too_many_arguments)]
fn finish_with(
    mut result: RunResult,
    _dir: &RunDir,
    t0: Instant,
    mut tests: Vec<TestResult>,
    findings: Vec<Finding>,
    plan: &Plan,
    notes: Vec<String>,
    protocol: Vec<String>,
) -> RunResult {
    let index: HashMap<String, usize> = tests
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    for f in findings {
        match f.test.as_ref().and_then(|n| index.get(n)) {
            Some(&i) => tests[i].findings.push(f),
            None => result.findings.push(f),
        }
    }
    for t in &mut tests {
        report::apply_findings(t);
    }
    let ran: std::collections::HashSet<String> = tests.iter().map(|t| t.name.clone()).collect();
    let why_not = result
        .reason
        .clone()
        .unwrap_or_else(|| "the run ended early".into());
    for p in &plan.tests {
        if !ran.contains(&p.name) {
            let mut t = TestResult::new(p.name.clone(), Verdict::NotRun);
            t.reason = Some(format!("not run: {why_not}"));
            tests.push(t);
        }
    }
    // The run broke outside a test (boot, hang between tests, QEMU died), or the guest
    // broke the event protocol: the harness cannot vouch for what it saw, an
    // infrastructure error even when every test passed. (A crash in a test explains a
    // dead guest.)
    let run_problem = result
        .reason
        .clone()
        .filter(|_| tests.iter().all(|t| t.verdict != Verdict::Crashed));
    result.harness_error = match (run_problem, protocol.is_empty()) {
        (None, true) => None,
        (p, _) => Some(
            p.into_iter()
                .chain(protocol.iter().cloned())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    result.tests = tests;
    report::conclude(&mut result);
    let mut problems = protocol;
    if result.verdict != Verdict::Passed {
        problems.extend(notes);
    }
    if !problems.is_empty() {
        let joined = problems.join("; ");
        result.reason = Some(match result.reason.take() {
            Some(r) => format!("{r} ({joined})"),
            None => joined,
        });
    }
    result.duration_ms = t0.elapsed().as_millis() as u64;
    result
}

fn shell_words(bin: &Path, args: &[String]) -> String {
    let quote = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let mut out = quote(&bin.display().to_string());
    for a in args {
        out.push(' ');
        out.push_str(&quote(a));
    }
    out.push('\n');
    out
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
    let mut child = prep(&dir.path, spawn_qemu(&cfg, &dir.path, true))?;
    prep(&dir.path, child.wait())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let mut tail = Tail::from_end(p.clone());
        assert!(tail.lines().is_empty());
        std::fs::write(&p, b"one\ntw\xc3").unwrap();
        let text = |lines: Vec<Line>| lines.iter().map(Line::text).collect::<Vec<_>>();
        assert_eq!(text(tail.lines()), ["one"]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        // The second byte of "\u{e9}" arrives in the next read: the line is whole.
        f.write_all(b"\xa9\n\nthree\n").unwrap();
        assert_eq!(text(tail.lines()), ["tw\u{e9}", "", "three"]);
    }
}
