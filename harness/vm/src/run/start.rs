//! Session start: lay out the run directory, build the QEMU configuration, start QEMU
//! in its own process group, and attach to its channels.
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use events::Plan;
use report::{RunResult, RESULTS_SCHEMA};

use crate::qemu::{Console, Disk, QemuConfig, VirtioFs};
use crate::rundir::RunDir;

use super::channels::{attach_console, Tail};
use super::{Progress, RunShare, VmError, VmSpec};

/// A started boot: QEMU, its channels, and the run's facts so far.
pub(super) struct Started {
    /// Declared first: dropped (QEMU killed) before the virtio-fs backends are waited for.
    pub(super) qemu: QemuGuard,
    /// The boot's virtio-fs backends (virtiofsd for the run directory, iomapfs for the
    /// disks); emptying waits for each to finish its requests and exit.
    pub(super) backends: Vec<Backend>,
    pub(super) console_in: UnixStream,
    pub(super) console_rx: Receiver<Vec<u8>>,
    pub(super) events: Tail,
    /// Where QEMU's QMP socket is (for the task dump of a hung guest); removed on drop.
    pub(super) sockets: tempfile::TempDir,
    pub(super) result: RunResult,
}

/// Prepares boot `boot_no` of the run and starts QEMU. `Ok(Err(result))`: QEMU could not
/// be started or attached to; the result says why.
pub(super) fn start(
    spec: &VmSpec,
    plan: &Plan,
    dir: &RunDir,
    boot_no: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<Started, RunResult>, VmError> {
    let (boot, mut disks) = prepare(dir, spec, plan, boot_no)?;
    // Unix socket paths are limited to 108 bytes: keep them in a short temp dir.
    let sockets = prep(
        Path::new("/tmp"),
        tempfile::Builder::new().prefix("harness-").tempdir(),
    )?;
    let console_sock = sockets.path().join("console.sock");
    let shares = virtiofs_shares(spec, &mut disks, sockets.path());
    let mut cfg = qemu_config(
        dir,
        spec,
        boot,
        disks,
        Console::Socket(console_sock.clone()),
        sockets.path(),
    );
    let mut result = base_result(spec, dir, &cfg);
    let mut backends = vec![];
    if let (RunShare::Virtiofsd(bin), Some(socket)) = (&spec.share, &cfg.share_socket) {
        match Backend::virtiofsd(bin, &dir.path, socket) {
            Ok(b) => backends.push(b),
            Err(e) => {
                result.reason = Some(format!(
                    "virtiofsd for the run directory: {e} (its log: virtiofsd.log; \
                     vm-test --share 9p does without it)"
                ));
                return Ok(Err(result));
            }
        }
    }
    for (share, image) in shares {
        let server = spec
            .virtiofs_server
            .as_deref()
            .unwrap_or(Path::new("iomapfs"));
        match Backend::start(server, &image, &share, &dir.path, records(plan)) {
            Ok(b) => backends.push(b),
            Err(e) => {
                result.reason = Some(format!("virtio-fs backend for `{}`: {e}", share.tag));
                return Ok(Err(result));
            }
        }
        cfg.virtiofs.push(share);
    }
    // Written once the backends listen and their devices are in the command line.
    let args = cfg.args();
    prep(
        &dir.path,
        std::fs::write(
            dir.path.join("qemu.cmdline"),
            shell_words(&cfg.binary, &args),
        ),
    )?;
    progress(Progress::Booting { qemu_args: &args });
    // From the end of what earlier boots wrote (QEMU appends), taken before QEMU starts:
    // a fast guest may send its first events before the console is even attached.
    let events = Tail::from_end(dir.path.join("events.jsonl"));
    let mut qemu = match spawn_qemu(&cfg, &dir.path, false) {
        Ok(child) => QemuGuard { child, done: false },
        Err(e) => {
            result.reason = Some(format!("cannot start {}: {e}", cfg.binary.display()));
            return Ok(Err(result));
        }
    };
    match attach_console(
        &console_sock,
        &dir.path.join("console.log"),
        &mut qemu,
        boot_no,
    ) {
        Ok((console_in, console_rx)) => Ok(Ok(Started {
            qemu,
            backends,
            console_in,
            console_rx,
            events,
            sockets,
            result,
        })),
        Err(e) => {
            let stderr =
                std::fs::read_to_string(dir.path.join("qemu.stderr.log")).unwrap_or_default();
            result.reason = Some(format!(
                "{e}: {}",
                stderr.trim().lines().last().unwrap_or("")
            ));
            Ok(Err(result))
        }
    }
}

pub(super) fn prep<T>(path: &Path, r: std::io::Result<T>) -> Result<T, VmError> {
    r.map_err(|source| VmError::Prepare {
        path: path.display().to_string(),
        source,
    })
}

/// Lay out the run directory: plan, boot root with the agent, server binaries,
/// fresh sparse disks.
pub(super) fn prepare(
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
            // into the guest over the share; symbols stay for backtraces.
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
        // A virtio-fs backend serves a filesystem: its scratch image is formatted too.
        let format = name == "test" || spec.virtiofs_server.is_some();
        if let (Some(opts), true) = (&spec.format_test_disk, format) {
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
pub(super) fn qemu_config(
    dir: &RunDir,
    spec: &VmSpec,
    boot: PathBuf,
    disks: Vec<Disk>,
    console: Console,
    sockets: &Path,
) -> QemuConfig {
    let mut cmdline = QemuConfig::base_cmdline(spec.machine);
    let share_socket = match spec.share {
        RunShare::NineP => None,
        RunShare::Virtiofsd(_) => {
            // The agent mounts the run directory with the type this word names.
            cmdline.push_str(" harness.share=virtiofs");
            Some(sockets.join("harness.vfs.sock"))
        }
    };
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
        virtiofs: vec![],
        boot_dir: boot,
        share_dir: dir.path.clone(),
        share_socket,
        events_file: dir.path.join("events.jsonl"),
        console,
        qmp_socket: Some(sockets.join("qmp.sock")),
        pid_file: Some(dir.path.join("qemu.pid")),
    }
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
    let shares = virtiofs_shares(spec, &mut disks, &dir.path);
    let console = Console::Socket(dir.path.join("console.sock"));
    let mut cfg = qemu_config(&dir, spec, dir.path.join("boot"), disks, console, &dir.path);
    cfg.virtiofs = shares.into_iter().map(|(share, _)| share).collect();
    std::iter::once(cfg.binary.display().to_string())
        .chain(cfg.args())
        .collect()
}

/// With `virtiofs_server`, the test and scratch disks leave the virtio-blk list and become
/// virtio-fs shares (tagged by their serials) with their sockets in `sockets`: (share,
/// image) pairs.
fn virtiofs_shares(
    spec: &VmSpec,
    disks: &mut Vec<Disk>,
    sockets: &Path,
) -> Vec<(VirtioFs, PathBuf)> {
    if spec.virtiofs_server.is_none() {
        return vec![];
    }
    let mut shares = vec![];
    for tag in [super::VIRTIOFS_TEST_TAG, super::VIRTIOFS_SCRATCH_TAG] {
        let Some(at) = disks.iter().position(|d| d.serial == tag) else {
            continue;
        };
        let disk = disks.remove(at);
        let share = VirtioFs {
            tag: tag.into(),
            socket: sockets.join(format!("{tag}.vfs.sock")),
        };
        shares.push((share, disk.path));
    }
    shares
}

/// Whether the host's virtio-fs backends record their sessions: yes, unless the plan
/// switches recording off for the guest's servers (`vm-test --no-record` empties
/// `IOMAPFS_RECORD_DIR`).
fn records(plan: &Plan) -> bool {
    !plan
        .env
        .iter()
        .any(|(k, v)| k == "IOMAPFS_RECORD_DIR" && v.is_empty())
}

/// The directory a run's virtio-fs backend for `tag` records into: each boot's backend
/// adds a `session-NNN.rec.zst` (all that boot's mounts, one after the other) and the
/// snapshot it started from, `session-NNN.img.zst`.
pub fn virtiofs_recordings(run: &Path, tag: &str) -> PathBuf {
    run.join(format!("virtiofs-{tag}.recordings"))
}

/// A vhost-user-fs backend for one boot: iomapfs (`--vhost-user-socket`) serving a disk
/// image, or virtiofsd serving the run directory. It exits by itself once QEMU has gone,
/// after finishing its requests (iomapfs: closing the filesystem); dropping the guard waits
/// for that (so the image or the artifacts are complete for the host), and kills it only
/// if it does not finish.
pub(super) struct Backend {
    child: Child,
}

impl Backend {
    /// How long a backend may take to close the filesystem after QEMU is gone.
    const CLOSE: std::time::Duration = std::time::Duration::from_secs(60);

    fn start(
        server: &Path,
        image: &Path,
        share: &VirtioFs,
        run: &Path,
        record: bool,
    ) -> std::io::Result<Self> {
        let log = run.join(format!("virtiofs-{}.log", share.tag));
        let mut cmd = Command::new(server);
        cmd.arg(image)
            .arg("--vhost-user-socket")
            .arg(&share.socket)
            // Every mount in the guest appends the mode it negotiated.
            .env(
                "IOMAPFS_MODE_LOG",
                run.join(format!("virtiofs-{}.modes", share.tag)),
            )
            // A log file, not a terminal: no colour codes.
            .env("NO_COLOR", "1");
        // Recorded as the guest's servers are (iomapfs's `record::harness`): a snapshot,
        // then the session, bounded.
        if record {
            cmd.env("IOMAPFS_RECORD_DIR", virtiofs_recordings(run, &share.tag))
                .env("IOMAPFS_RECORD_MAX", events::RECORD_MAX);
        } else {
            cmd.env_remove("IOMAPFS_RECORD_DIR");
        }
        Self::spawn(cmd, &share.socket, &log)
    }

    /// virtiofsd serving the run directory `run` on `socket` for one boot, its log in
    /// `virtiofsd.log`. Its defaults are the safe ones: its own mount, pid and network
    /// namespaces with `run` as its root, a seccomp allow-list, and no writeback cache in
    /// the guest (each write reaches the host before the guest's write returns, so a
    /// crashed guest's artifacts are on the host). `-mknod`: the guest cannot leave device
    /// nodes in the run directory.
    pub(super) fn virtiofsd(bin: &Path, run: &Path, socket: &Path) -> std::io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--shared-dir")
            .arg(run)
            .arg("--socket-path")
            .arg(socket)
            .args(["--cache=auto", "--sandbox=namespace", "--seccomp=kill"])
            .args(["--modcaps=-mknod", "--log-level=warn"]);
        Self::spawn(cmd, socket, &run.join("virtiofsd.log"))
    }

    /// Starts `cmd` (its output appended to `log`) and waits until it listens on `socket`.
    fn spawn(mut cmd: Command, socket: &Path, log: &Path) -> std::io::Result<Self> {
        let log_file = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
        };
        cmd.stdin(Stdio::null())
            .stdout(log_file()?)
            .stderr(log_file()?)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe. SIGTERM, not SIGKILL: if we die, the
        // backend still finishes its requests (iomapfs syncs and closes the filesystem).
        unsafe {
            cmd.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // QEMU connects at start: the socket must be listening first.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "{} exited ({status}): {}",
                    cmd.get_program().to_string_lossy(),
                    text.trim().lines().last().unwrap_or("")
                )));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other("no socket after 30 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Backend { child })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Self::CLOSE;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The whole process group: virtiofsd serves from a child in its own namespaces.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let pgid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU in its own process group (Ctrl-C on the terminal reaches only us),
/// killed by the kernel if we die (PR_SET_PDEATHSIG).
pub(super) fn spawn_qemu(
    cfg: &QemuConfig,
    dir: &Path,
    interactive: bool,
) -> std::io::Result<Child> {
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
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills QEMU (and anything in its process group) when dropped.
pub(super) struct QemuGuard {
    pub(super) child: Child,
    pub(super) done: bool,
}

impl QemuGuard {
    pub(super) fn kill(&mut self) {
        if !self.done {
            // The process group we created (QEMU is its leader).
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let pgid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }

    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Accel, Machine};

    fn spec(share: RunShare) -> VmSpec {
        VmSpec {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/vmlinux".into(),
            image: "/img/root.ext4".into(),
            agent: "/a/agent".into(),
            server_bins: vec![],
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            accel_note: None,
            cpus: 2,
            memory_mb: 1024,
            test_disk_mb: 16,
            scratch_disk_mb: 0,
            extra_cmdline: vec!["last=wins".into()],
            format_test_disk: None,
            extra_disks: vec![],
            virtiofs_server: None,
            share,
        }
    }

    #[test]
    fn a_virtiofsd_share_tells_the_agent_and_replaces_the_9p_device() {
        let argv = planned_command(&spec(RunShare::Virtiofsd("/bin/virtiofsd".into())));
        let cmdline = &argv[argv.iter().position(|a| a == "-append").unwrap() + 1];
        // The harness's words come before the caller's, so the caller's still win.
        assert!(
            cmdline.ends_with("harness.share=virtiofs last=wins"),
            "{cmdline}"
        );
        let all = argv.join(" ");
        assert!(
            all.contains("path=<run>/harness.vfs.sock -device vhost-user-fs-device,chardev=vfsshare,tag=harness"),
            "{all}"
        );
        assert!(!all.contains("fsdev=share"), "{all}");

        let argv = planned_command(&spec(RunShare::NineP));
        let all = argv.join(" ");
        assert!(!all.contains("harness.share"), "{all}");
        assert!(!all.contains("memory-backend"), "{all}");
        assert!(all.contains("fsdev=share,mount_tag=harness"), "{all}");
    }
}
