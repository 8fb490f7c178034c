//! `cargo xtask vm-test`: kernel + image + agent + server -> QEMU -> verdict.
//!
//! Orchestration only: the VM, the channels and the verdicts live in the `vm`
//! crate, the result files in `report`, the guest side in `agent`.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use events::Plan;
use report::policy::ExpectMode;
use report::{RunResult, Verdict};
use vm::{AccelChoice, Limits, Machine, Progress, RunDir, VmSpec};

use kernel::{ensure_kernel, KernelArgs, KernelOptions};
use plumbing::error::{usage, NothingPassed, TestFailures};
use plumbing::ui::Ui;

use crate::parallel;

/// VM flags shared by vm-test and vm-shell.
#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Harness profile (harness.toml) that names the kernel to build.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Boot this kernel image (bzImage or vmlinux) instead of building one.
    #[arg(long, value_name = "PATH")]
    pub kernel_image: Option<PathBuf>,
    /// Guest image recipe under images/.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub image: String,
    /// Accelerator: auto probes KVM with a short boot and falls back to TCG.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// QEMU machine type.
    #[arg(long, value_enum, default_value = "microvm")]
    pub machine: MachineArg,
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Size of the fresh sparse test disk in MiB (0: none).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub test_disk: u64,
    /// Size of the fresh sparse scratch disk in MiB (0: none).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub scratch_disk: u64,
    /// Extra kernel command-line arguments (repeatable).
    #[arg(long = "append", value_name = "ARG")]
    pub append: Vec<String>,
    /// Do not build and install iomapfs in the guest.
    #[arg(long)]
    pub no_server: bool,
    /// QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// How the run directory (plan, binaries, artifacts) reaches the guest: virtiofs
    /// (virtiofsd, a sandboxed process per boot; needs root), 9p (QEMU's own server), or
    /// auto: virtiofs when running as root on a kernel the harness built, else 9p.
    #[arg(long, value_enum, default_value = "auto")]
    pub share: ShareArg,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareArg {
    Auto,
    #[value(name = "9p")]
    NineP,
    Virtiofs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectModeArg {
    Iomap,
    Classic,
    Any,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MachineArg {
    Microvm,
    Pc,
}

#[derive(clap::Args, Clone, Debug)]
pub struct VmTestArgs {
    /// Test suite to run (repeatable): smoke. Default: smoke, unless --run is given.
    #[arg(long = "suite", value_name = "NAME")]
    pub suites: Vec<String>,
    /// Run a guest shell command as one test (repeatable), like `vng -- CMD`.
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Per-test timeout in seconds (overrides the suites' own and each fstests test's
    /// deadline; default for --run: 300). Scaled by the slow factor under TCG.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Timeout of the whole run, in seconds. Default: 3600, or with --fstests the sum of
    /// the tests' own deadlines (each test already has one, so a long list is not cut
    /// short). A run stopped by it can go on with --resume.
    #[arg(long, value_name = "SECS")]
    pub run_timeout: Option<u64>,
    /// Exit with `git bisect run`'s codes: 0 pass, 1 test failures, 125 (skip)
    /// for build or infrastructure failures, 128 (stop) for usage errors.
    #[arg(long)]
    pub bisect_exit_codes: bool,
    /// Print the QEMU command line the run would use (kernel command line included) and
    /// exit, building and booting nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The FUSE server mode every test must run in; a test in another mode fails, saying
    /// why. Default: iomap for profiles with `iomap = "required"`, else any.
    #[arg(long, value_enum, value_name = "MODE")]
    pub expect_mode: Option<ExpectModeArg>,
    /// The guest counts as stuck after this many seconds without any event
    /// (the agent sends a heartbeat every 2 s); the harness then captures a
    /// task dump through sysrq and stops QEMU.
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pub stall_timeout: u64,
    /// When a test crashes or hangs the guest, boot again (at most this many
    /// times) to run the tests after it; 0 stops at the first crash.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_reboots: u32,
    /// Do not record the server's sessions (by default every test's iomapfs records,
    /// with a snapshot of its filesystem, and a failing test keeps them for
    /// `cargo xtask replay`; under TCG this costs seconds per mount).
    #[arg(long)]
    pub no_record: bool,
    /// Environment for every test (repeatable), e.g. SMOKE_FSTYPE=ext4.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Serve the test filesystem from the host over virtio-fs: iomapfs runs on the host as
    /// QEMU's vhost-user-fs backend for the test disk, the guest mounts
    /// `-t virtiofs test` (TEST_DEV=test, SMOKE_FSTYPE=virtiofs), and e2fsck checks the
    /// image on the host after the run (`host/e2fsck`). Classic FUSE only.
    #[arg(long, conflicts_with = "no_server")]
    pub virtiofs: bool,
    /// Run the fstests list on N VMs at once, each with its own disks and a slice of the
    /// list, merged into one report (the run directory gets one `vm-K/` per VM).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: u32,
    /// Go on with a run the host stopped (Ctrl-C, a kill, a reboot), with the flags it was
    /// started with: finished tests keep their verdicts, the rest run. RUN: a run id, a
    /// run directory, or `latest`.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    #[command(flatten)]
    pub fstests: fstests::plan::FstestsArgs,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Everything resolved before QEMU starts.
pub struct Prepared {
    pub spec: VmSpec,
    pub kernel_release: Option<String>,
    /// Whether the built kernel has FUSE iomap (unknown with --kernel-image).
    pub kernel_iomap: Option<bool>,
    pub image: PathBuf,
}

/// Where run directories go: `<target>/harness/runs`.
pub fn runs_root() -> PathBuf {
    target_dir().join("harness").join("runs")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                plumbing::paths::workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| plumbing::paths::workspace_root().join("target"))
}

/// Build the plan from the flags; usage errors for unknown suites or bad values.
pub fn build_plan(args: &VmTestArgs, with_server: bool) -> Result<Plan> {
    let default_smoke = args.suites.is_empty() && args.run.is_empty() && !args.fstests.enabled();
    let suites: Vec<String> = if default_smoke {
        vec!["smoke".into()]
    } else {
        args.suites.clone()
    };
    let mut tests = vec![];
    for name in &suites {
        let suite = suites::find(name).ok_or_else(|| {
            usage(format!(
                "unknown suite `{name}` (known: {})",
                suites::names().join(", ")
            ))
        })?;
        tests.extend(suite.plan_tests(args.timeout));
    }
    if args.timeout == Some(0) {
        return Err(usage("--timeout must be at least 1 second"));
    }
    tests.extend(suites::run_commands(&args.run, args.timeout.unwrap_or(300)));
    let mut env = vec![];
    if args.virtiofs {
        if matches!(
            args.expect_mode,
            Some(ExpectModeArg::Iomap | ExpectModeArg::Classic)
        ) {
            return Err(usage(
                "--virtiofs runs classic FUSE (the guest kernel does iomap I/O only on a fuseblk \
                 mount's block device), and its modes are the host backend's, not per test: \
                 see virtiofs-test.modes and the run's server facts; leave out --expect-mode",
            ));
        }
        if args.jobs > 1 {
            return Err(usage("--virtiofs runs one VM: leave out --jobs"));
        }
        // The guest has no device to check: the host checks the image after the run
        // (`host/e2fsck`); the workload suites leave their e2fsck out over virtio-fs.
        tests.retain(|t| t.name != "smoke/fsck");
        for (k, v) in [
            ("SMOKE_FSTYPE", "virtiofs"),
            ("WORKLOADS_FSTYPE", "virtiofs"),
            ("TEST_DEV", vm::run::VIRTIOFS_TEST_TAG),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
    }
    if !args.virtiofs && args.fstests.scheme == "virtiofs" {
        return Err(usage(
            "--fstests-scheme virtiofs needs --virtiofs (the host serves the tags)",
        ));
    }
    if args.no_record {
        env.push(("IOMAPFS_RECORD_DIR".to_string(), String::new()));
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--env expects KEY=VALUE, got `{kv}`")))?;
        env.push((k.to_string(), v.to_string()));
    }
    Ok(Plan {
        v: events::SCHEMA_VERSION,
        shell: false,
        // Over virtio-fs the server runs on the host: nothing to install in the guest.
        server: (with_server && !args.virtiofs).then(server_setup),
        tests,
        heartbeat_s: 2,
        slow_factor: 3,
        console_loglevel: 7,
        host_time_unix: 0,
        env,
    })
}

pub fn server_setup() -> events::ServerSetup {
    events::ServerSetup {
        bin_dir: "bin".into(),
        test_dev: "/dev/disk/by-id/virtio-test".into(),
        scratch_dev: Some("/dev/disk/by-id/virtio-scratch".into()),
        format: false,
        mkfs_options: vec![],
    }
}

/// Whether the selected tests need iomapfs in the guest.
pub fn needs_server(args: &VmTestArgs) -> bool {
    if args.vm.no_server {
        return false;
    }
    if (args.suites.is_empty() && args.run.is_empty()) || args.fstests.enabled() {
        return true;
    }
    args.suites
        .iter()
        .any(|s| suites::find(s).is_some_and(|s| s.needs_server))
        || !args.run.is_empty()
}

/// Resolve the kernel, image, agent and server; decide the accelerator.
pub fn prepare(vm: &VmArgs, with_server: bool, ui: &Ui) -> Result<Prepared> {
    let images = plumbing::paths::workspace_root().join("images");
    // Check the recipe name and QEMU before spending minutes on a kernel.
    guest_image::Recipe::load(&images, &vm.image)?;
    // QEMU (installed when missing and we are root) and the packages the guest binaries
    // build with, before spending minutes on a kernel.
    let mut jobs = vec![];
    if vm.qemu == std::path::Path::new(hostsetup::qemu::BINARY) {
        jobs.push(hostsetup::Job::Vm);
    }
    if with_server {
        jobs.push(hostsetup::Job::GuestBinaries);
    }
    hostsetup::ensure(&jobs, ui)?;
    if vm.qemu != std::path::Path::new(hostsetup::qemu::BINARY) {
        hostsetup::qemu::probe(&vm.qemu, ui)?;
    }
    let share = run_share(vm.share, vm.kernel_image.is_some(), ui)?;
    let (kernel, kernel_release, kernel_iomap) = match &vm.kernel_image {
        Some(p) => {
            let k = &vm.kernel;
            if k.source_dir.is_some()
                || k.git.is_some()
                || k.tarball.is_some()
                || k.debian_package.is_some()
            {
                return Err(usage(
                    "--kernel-image cannot be combined with a kernel source flag",
                ));
            }
            if !p.is_file() {
                return Err(usage(format!(
                    "kernel image {} does not exist",
                    p.display()
                )));
            }
            (std::fs::canonicalize(p)?, None, None)
        }
        None => {
            let opts = KernelOptions::resolve(vm.profile.as_deref(), &vm.kernel)?;
            ui.step(format!("kernel: profile `{}`", opts.profile));
            let built = ensure_kernel(&opts, ui)?;
            // The uncompressed vmlinux boots through its PVH entry point, with
            // no decompression (slow under TCG); the bzImage works everywhere.
            let image = if built.vmlinux.is_file() {
                built.vmlinux.clone()
            } else {
                built.bzimage.clone()
            };
            (
                image,
                Some(built.info.kernel_release.clone()),
                Some(built.info.iomap_present),
            )
        }
    };
    let cache = plumbing::paths::cache_dir();
    ui.step(format!("image: `{}`", vm.image));
    let image = guest_image::ensure_image(&images, &vm.image, &cache, ui)?;
    ui.step("guest agent (static)");
    let agent = build_agent()?;
    let server_bins = if with_server {
        ui.step("iomapfs (release build)");
        build_server()?
    } else {
        vec![]
    };
    let choice = match vm.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    };
    let decision = vm::accel::choose(choice, &vm.qemu, &kernel, &cache, Duration::from_secs(5))
        .map_err(anyhow::Error::msg)?;
    if decision.accel == vm::Accel::Tcg && choice == AccelChoice::Auto {
        ui.warn(&decision.note);
    }
    let spec = VmSpec {
        agent,
        server_bins,
        accel_note: Some(decision.note),
        format_test_disk: with_server.then(Vec::new),
        share,
        ..spec_from_flags(vm, kernel, kernel_iomap, image.clone(), decision.accel)?
    };
    Ok(Prepared {
        spec,
        kernel_release,
        kernel_iomap,
        image,
    })
}

/// How the run directory reaches the guest (`--share`). virtiofsd needs root: it creates
/// the guest's files as the guest's users (unprivileged, it could not), so `auto` is 9p
/// for other users, and virtio-fs (virtiofsd installed when missing) for root. A kernel
/// the harness did not build (`own_kernel`) may lack CONFIG_VIRTIO_FS, but it boots from
/// 9p, so `auto` gives it 9p.
fn run_share(arg: ShareArg, own_kernel: bool, ui: &Ui) -> Result<vm::RunShare> {
    let root = nix::unistd::geteuid().is_root();
    match arg {
        ShareArg::NineP => Ok(vm::RunShare::NineP),
        ShareArg::Auto if own_kernel => {
            ui.note("run directory over 9p: --kernel-image may lack CONFIG_VIRTIO_FS (--share)");
            Ok(vm::RunShare::NineP)
        }
        ShareArg::Virtiofs if !root => Err(usage(
            "--share virtiofs needs root (virtiofsd creates the guest's files as the guest's \
             users); --share 9p works for any user",
        )),
        ShareArg::Auto if !root => {
            ui.note("run directory over 9p: virtiofsd needs root (--share)");
            Ok(vm::RunShare::NineP)
        }
        ShareArg::Auto | ShareArg::Virtiofs => {
            let bin = hostsetup::ensure_virtiofsd(ui)
                .context("virtiofsd for the run directory (--share 9p does without)")?;
            Ok(vm::RunShare::Virtiofsd(bin))
        }
    }
}

/// The VM the flags describe, with no agent, server or disk formatting yet: the machine,
/// CPUs, memory, disks and the kernel command line (`boot_params`).
pub fn spec_from_flags(
    vm: &VmArgs,
    kernel: PathBuf,
    kernel_iomap: Option<bool>,
    image: PathBuf,
    accel: vm::Accel,
) -> Result<VmSpec> {
    Ok(VmSpec {
        qemu: vm.qemu.clone(),
        kernel,
        image,
        agent: PathBuf::new(),
        server_bins: vec![],
        machine: match vm.machine {
            MachineArg::Microvm => Machine::Microvm,
            MachineArg::Pc => Machine::Pc,
        },
        accel,
        accel_note: None,
        cpus: vm.cpus.max(1),
        memory_mb: vm.memory.max(128),
        test_disk_mb: vm.test_disk,
        scratch_disk_mb: vm.scratch_disk,
        extra_cmdline: crate::boot_params::extra_cmdline(
            &crate::boot_params::vm_profile(vm.profile.as_deref())?,
            kernel_iomap,
            &vm.append,
        ),
        format_test_disk: None,
        extra_disks: vec![],
        virtiofs_server: None,
        share: vm::RunShare::NineP,
    })
}

/// `cargo ARGS` in the workspace: a release build takes minutes, a supervised child (duct).
fn cargo(args: &[&str]) -> duct::Expression {
    duct::cmd(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        args,
    )
    .dir(plumbing::paths::workspace_root())
}

fn run_cargo(cmd: duct::Expression, what: &str) -> Result<()> {
    let out = cmd
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running cargo for {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("building {what} failed:\n{}", tail.join("\n"));
    }
    Ok(())
}

/// The static guest agent (glibc, crt-static; no musl needed).
pub fn build_agent() -> Result<PathBuf> {
    const TRIPLE: &str = "x86_64-unknown-linux-gnu";
    let c = cargo(&[
        "build",
        "--quiet",
        "--release",
        "--package",
        "agent",
        "--target",
        TRIPLE,
    ])
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static -C strip=debuginfo",
    );
    run_cargo(c, "the guest agent")?;
    let bin = target_dir().join(TRIPLE).join("release").join("agent");
    anyhow::ensure!(bin.is_file(), "agent binary missing at {}", bin.display());
    Ok(bin)
}

/// iomapfs and its mount helper, built on the host (same Debian as the image).
pub fn build_server() -> Result<Vec<PathBuf>> {
    // The workloads binary rides along: the dio and append suites run it in the guest.
    let c = cargo(&[
        "build",
        "--quiet",
        "--release",
        "--package",
        "iomapfs",
        "--package",
        "workloads",
        "--bins",
    ]);
    run_cargo(c, "iomapfs")?;
    let dir = target_dir().join("release");
    let bins: Vec<PathBuf> = ["iomapfs", "mount.fuse.iomapfs", "workloads"]
        .iter()
        .map(|b| dir.join(b))
        .filter(|p| p.is_file())
        .collect();
    anyhow::ensure!(!bins.is_empty(), "no iomapfs binaries in {}", dir.display());
    Ok(bins)
}

/// Prints progress: a spinner for the running test on a terminal, plain lines otherwise.
struct Printer {
    bar: Option<indicatif::ProgressBar>,
    /// Each VM's running test (one VM unless `--jobs`).
    vms: Vec<Running>,
    /// The VM the progress at hand comes from (`--jobs`), 0-based.
    job: Option<usize>,
}

/// What a VM is running, for the status line.
struct Running {
    test_start: Instant,
    /// Half-minutes of the running test already reported (plain output).
    quiet_lines: u64,
    /// The step the running test announced last (fstests: the test its `check` runs).
    step: Option<String>,
}

impl Running {
    fn start(&mut self, step: Option<String>) {
        self.test_start = Instant::now();
        self.quiet_lines = 0;
        self.step = step;
    }
}

impl Printer {
    fn new(ui: &Ui) -> Self {
        let bar = ui.is_fancy().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Printer {
            bar,
            vms: vec![],
            job: None,
        }
    }

    /// The running test of the VM the progress at hand comes from.
    fn vm(&mut self) -> &mut Running {
        let k = self.job.unwrap_or(0);
        while self.vms.len() <= k {
            self.vms.push(Running {
                test_start: Instant::now(),
                quiet_lines: 0,
                step: None,
            });
        }
        &mut self.vms[k]
    }

    fn line(&self, s: String) {
        let s = match self.job {
            Some(k) => format!("vm{} {s}", k + 1),
            None => s,
        };
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    /// A line only plain output gets (a terminal has the spinner).
    fn plain(&self, s: String) {
        if self.bar.is_none() {
            self.line(s);
        }
    }

    fn status(&self, s: String) {
        if let Some(b) = &self.bar {
            b.set_message(s);
        }
    }

    fn on(&mut self, job: Option<usize>, p: Progress) {
        self.job = job;
        match p {
            Progress::Booting { .. } => {
                self.plain("    booting".into());
                self.status("booting".into());
            }
            Progress::Ready {
                boot_to_ready_ms,
                kernel_boot_ms,
                setup_ms,
                kernel,
                server,
            } => {
                let server = match server.map(|s| (s, &s.mode, &s.error)) {
                    Some((s, Some(m), None)) => format!("; {} in {m} mode", s.name),
                    Some((s, m, Some(e))) => format!(
                        "; {} mode {}: {e}",
                        s.name,
                        m.as_deref().unwrap_or("unknown")
                    ),
                    _ => String::new(),
                };
                let s = |ms: u64| ms as f64 / 1000.0;
                self.line(format!(
                    "    guest ready: boot-to-agent-ready {:.2} s (kernel {:.2} s), server setup {:.2} s; kernel {kernel}{server}",
                    s(boot_to_ready_ms),
                    s(kernel_boot_ms),
                    s(setup_ms)
                ));
            }
            Progress::TestStarted { name, index, total } => {
                self.vm().start(None);
                self.plain(format!("[{index}/{total}] {name} ..."));
                self.status(format!("[{index}/{total}] {name}"));
            }
            Progress::TestFinished { result } => {
                let mut s = format!(
                    "    {:<24} {:<8} {:>6.1} s",
                    result.name,
                    result.verdict.as_str(),
                    result.duration_ms as f64 / 1000.0
                );
                if let Some(r) = &result.reason {
                    s.push_str(&format!("  ({r})"));
                }
                self.line(s);
            }
            Progress::Heartbeat { test } => {
                if let Some(t) = test {
                    let vm = self.vm();
                    let t = match &vm.step {
                        Some(step) => format!("{t}: {step}"),
                        None => t.to_string(),
                    };
                    let secs = vm.test_start.elapsed().as_secs();
                    // Plain output: a sign of life every half minute.
                    let report = secs / 30 > vm.quiet_lines;
                    if report {
                        vm.quiet_lines = secs / 30;
                    }
                    self.status(format!("{t} ({secs} s)"));
                    if report {
                        self.plain(format!("    ... {t} still running ({secs} s)"));
                    }
                }
            }
            Progress::Step { test, step } => {
                self.vm().start(Some(step.to_string()));
                self.plain(format!("    {test}: {step}"));
                self.status(format!("{test}: {step}"));
            }
            Progress::Log { message } => self.line(format!("    guest: {message}")),
            Progress::Finding { finding } => self.line(format!(
                "    KERNEL {:?} during {}: {}",
                finding.kind,
                finding.test.as_deref().unwrap_or("(no test)"),
                finding.title
            )),
            Progress::Hang { test, why } => self.line(format!(
                "    HANG during {}: {why}; capturing a task dump (sysrq) and stopping QEMU",
                test.unwrap_or("(no test)")
            )),
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A flag set on SIGINT/SIGTERM (installed once per process).
fn cancel_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let f = Arc::new(AtomicBool::new(false));
        let g = f.clone();
        // Failure (a handler already installed by an embedding program) only
        // means Ctrl-C will kill us directly; QEMU still dies with us (PDEATHSIG).
        let _ = ctrlc::set_handler(move || g.store(true, Ordering::SeqCst));
        f
    })
    .clone()
}

/// fstests for this run: the build, and one plan per VM (`--jobs`).
struct FstestsRun {
    built: fstests::plan::Built,
    /// Taken by the jobs when they are made.
    plans: Vec<fstests::plan::FstestsPlan>,
}

/// Build fstests (cached), expand the selection (one shard per job), attach its disk.
fn prepare_fstests(
    args: &VmTestArgs,
    jobs: u32,
    prepared: &mut Prepared,
    ui: &Ui,
) -> Result<FstestsRun> {
    use fstests::plan as f;
    let config = profile::HarnessConfig::load_default()?;
    let profile: f::FstestsProfile = config
        .profile(args.vm.profile.as_deref())?
        .section("fstests")?
        .unwrap_or_default();
    let source = args.fstests.source(&profile)?;
    // Check the selection's syntax before a build.
    args.fstests.selection()?;
    let cache = plumbing::paths::cache_dir();
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let built = fstests::build::ensure_built(&source, &cache, cpus, ui)?;
    // fstests mounts in one mode (iomap=on or off), the one the expunges are chosen for;
    // virtio-fs is classic FUSE.
    let mode = match fstests_mode(expected_mode(args)?, prepared.kernel_iomap) {
        ExpectMode::Iomap if !args.virtiofs => ::fstests::Mode::Iomap,
        _ => ::fstests::Mode::Classic,
    };
    let expunge_dir = plumbing::paths::workspace_root()
        .join("images")
        .join(&args.vm.image)
        .join("expunge");
    let mut durations = f::load_durations(&cache);
    // A fresh machine knows no durations: the baseline's set the deadlines of its slow
    // tests (generic/069 takes an hour under TCG) instead of the unknown test's.
    if let Some(p) = &args.fstests.baseline {
        let base =
            report::read_json(p).map_err(|e| plumbing::error::usage(format!("--baseline: {e}")))?;
        f::add_durations(&mut durations, &base.tests);
    }
    // Over virtio-fs the devices are the host's tags: upstream FSTYP=virtiofs.
    let scheme = match args.virtiofs {
        true => ::fstests::Scheme::Virtiofs.to_string(),
        false => args.fstests.scheme.clone(),
    };
    let mut plans = vec![];
    for k in 1..=jobs {
        let mut job_args = args.fstests.clone();
        job_args.scheme = scheme.clone();
        if jobs > 1 {
            job_args.shard = Some(format!("{k}/{jobs}"));
        }
        plans.push(f::plan(
            &job_args,
            &built.tree,
            &expunge_dir,
            prepared.kernel_release.as_deref().unwrap_or(""),
            mode,
            &durations,
            args.timeout,
        )?);
    }
    let count = |f: fn(&f::FstestsPlan) -> usize| plans.iter().map(f).sum::<usize>();
    ui.step(format!(
        "fstests {}: {} tests to run in {} ({} expunged){}; scheme {}",
        built.revision,
        count(|p| p.batches.iter().map(|b| b.ids.len()).sum()),
        plans[0].sections.join(", "),
        count(|p| p.expunged.len()),
        if jobs > 1 {
            format!(" on {jobs} VMs")
        } else {
            String::new()
        },
        scheme
    ));
    prepared.spec.extra_disks.push(vm::qemu::Disk {
        path: built.image.clone(),
        serial: "fstests".into(),
        snapshot: true,
    });
    Ok(FstestsRun { built, plans })
}

/// Fold fstests' own results into each job's result (`collect`), merge the jobs, compare
/// with a baseline, rewrite the reports. The verdicts follow `report::policy`.
fn finish_fstests(
    args: &VmTestArgs,
    spec: &VmSpec,
    f: &FstestsRun,
    jobs: &[parallel::Job],
    results: Vec<(String, RunResult)>,
    mode: &ModeCheck,
    run: &RunDir,
) -> Result<RunResult> {
    use fstests::collect;
    let mut split = collect::TimeSplit::default();
    let mut rewritten = 0;
    let mut collected = vec![];
    for ((name, mut r), job) in results.into_iter().zip(jobs) {
        let Some(plan) = &job.fstests else { continue };
        let s = collect::time_split(&r, &job.dir.path, &plan.batches);
        split.add(&s);
        rewritten += collect::apply(&mut r, &job.dir.path, &plan.batches, &plan.flaky_ok);
        collected.push((name, r));
    }
    let mut result = parallel::merge(run, collected);
    mode.apply(&mut result);
    for job in jobs {
        if let Some(plan) = &job.fstests {
            result.tests.extend(plan.expunged.iter().cloned());
        }
    }
    // With one job, the tests of the user's other --fstests-shard slices.
    let other_shards = match jobs {
        [only] => only
            .fstests
            .as_ref()
            .map(|p| p.other_shards.clone())
            .unwrap_or_default(),
        _ => Default::default(),
    };
    if result.verdict == Verdict::NothingPassed {
        // Said of the guest's tests alone; decided again below with the expunged ones.
        result.reason = None;
    }
    if args.virtiofs {
        host_checks(spec, &jobs[0].dir.path, &mut result);
    }
    report::conclude(&mut result);
    let diff = match &args.fstests.baseline {
        Some(p) => {
            let base = report::read_json(p)
                .map_err(|e| plumbing::error::usage(format!("--baseline: {e}")))?;
            let mut d = ::fstests::compare(&collect::statuses(&base), &collect::statuses(&result));
            // The baseline covers every shard: the other shards' tests are not missing.
            d.missing.retain(|t| !other_shards.contains(t));
            d.failures_not_run.retain(|t| !other_shards.contains(t));
            report::policy::judge_against_baseline(
                &mut result,
                report::Baseline {
                    path: p.display().to_string(),
                    new_failures: d.new_failures.clone(),
                    still_failing: d.still_failing.clone(),
                    fixed: d.fixed.clone(),
                    newly_not_run: d.newly_not_run.clone(),
                    missing: d.missing.clone(),
                    coverage_loss_accepted: args.fstests.accept_coverage_loss,
                    may_replace: false,
                },
            );
            Some(d)
        }
        None => None,
    };
    let dir = &run.path;
    report::write_all(&result, dir)?;
    let mut md = std::fs::read_to_string(dir.join("summary.md")).unwrap_or_default();
    md.push_str(&format!(
        "\nfstests: {} ({} results read)\n",
        f.built.revision, rewritten
    ));
    md.push_str(&collect::summary_markdown(&result, diff.as_ref()));
    md.push_str(&collect::time_markdown(&result, &split));
    report::write_file(&dir.join("summary.md"), &md)?;
    fstests::plan::save_durations(&plumbing::paths::cache_dir(), &result.tests)?;
    Ok(result)
}

/// The server mode a run expects: `--expect-mode`, else iomap for a profile whose kernel
/// must have iomap (`iomap = "required"`), else any.
pub fn expected_mode(args: &VmTestArgs) -> Result<ExpectMode> {
    if args.virtiofs {
        // No per-test modes: the host's backend reports its own (`virtiofs_server_facts`).
        return Ok(ExpectMode::Any);
    }
    Ok(match args.expect_mode {
        Some(ExpectModeArg::Iomap) => ExpectMode::Iomap,
        Some(ExpectModeArg::Classic) => ExpectMode::Classic,
        Some(ExpectModeArg::Any) => ExpectMode::Any,
        None => {
            let opts = KernelOptions::resolve(args.vm.profile.as_deref(), &args.vm.kernel)?;
            match opts.iomap {
                kernel::IomapMode::Required => ExpectMode::Iomap,
                _ => ExpectMode::Any,
            }
        }
    })
}

/// The mode fstests mounts in: the expected one, or with `any` the one the kernel allows
/// (iomap when it has FUSE iomap, which the VM boots enabled).
fn fstests_mode(expect: ExpectMode, kernel_iomap: Option<bool>) -> ExpectMode {
    match (expect, kernel_iomap) {
        (ExpectMode::Any, Some(true)) => ExpectMode::Iomap,
        (ExpectMode::Any, _) => ExpectMode::Classic,
        (e, _) => e,
    }
}

/// The expected mode of a run and why a server would run in the other one.
pub struct ModeCheck {
    pub expect: ExpectMode,
    why: String,
}

impl ModeCheck {
    fn new(expect: ExpectMode, prepared: &Prepared) -> ModeCheck {
        let release = prepared.kernel_release.as_deref().unwrap_or("under test");
        let why = match (expect, prepared.kernel_iomap) {
            (ExpectMode::Iomap, Some(false)) => format!(
                "the kernel did not offer FUSE_IOMAP: kernel {release} was built without CONFIG_FUSE_IOMAP"
            ),
            (ExpectMode::Iomap, _) => "the kernel did not offer FUSE_IOMAP (fuse.enable_iomap off, an INIT minor below the iomap minor, or a source that is not a block device)".into(),
            _ => "the kernel offered FUSE_IOMAP and the server took it (mount with -o iomap=off for classic)".into(),
        };
        ModeCheck { expect, why }
    }

    /// Why no test can run in the expected mode, known before booting: an iomap run on a
    /// kernel built without FUSE iomap.
    fn impossible(&self, prepared: &Prepared) -> Option<String> {
        (self.expect == ExpectMode::Iomap && prepared.kernel_iomap == Some(false))
            .then(|| self.why.clone())
    }

    /// Fails every test that ran in another mode (report's policy).
    pub fn apply(&self, result: &mut RunResult) {
        report::policy::mark_expected_mode(result, self.expect, &self.why);
    }
}

/// The result of a run that cannot meet its expected mode, without booting: every planned
/// test failed with the reason (exit 1), written like any run's.
fn refuse_without_booting(
    plan: &Plan,
    prepared: &Prepared,
    dir: &RunDir,
    mode: &ModeCheck,
    why: &str,
) -> Result<RunResult> {
    let expect = mode.expect.as_str();
    let mut result = RunResult::empty(&dir.id);
    result.started_at = dir.started_at.clone();
    result.kernel_image = prepared.spec.kernel.display().to_string();
    result.kernel_release = prepared.kernel_release.clone();
    result.image = prepared.image.display().to_string();
    result.server = Some(report::ServerFacts {
        expected_mode: Some(expect.to_string()),
        ..Default::default()
    });
    for t in &plan.tests {
        let mut r = report::TestResult::new(&t.name, Verdict::Failed);
        r.reason = Some(format!(
            "server would run classic; expected {expect}: {why} (not booted)"
        ));
        result.tests.push(r);
    }
    report::conclude(&mut result);
    result.reason = Some(format!("expected {expect}: {why}"));
    report::write_all(&result, &dir.path)?;
    Ok(result)
}

/// Run the tests and return the result (and its run directory).
pub fn run(args: &VmTestArgs, ui: &Ui) -> Result<(RunResult, PathBuf)> {
    run_in(args, None, ui)
}

/// [`run`] into a new run directory, or into `resumed` (`--resume`: the run goes on from
/// its checkpoints).
fn run_in(args: &VmTestArgs, resumed: Option<RunDir>, ui: &Ui) -> Result<(RunResult, PathBuf)> {
    let with_server = needs_server(args);
    let jobs = parallel::jobs(
        args.jobs,
        args.fstests.enabled(),
        args.fstests.shard.is_some(),
    )?;
    let plan = build_plan(args, with_server)?;
    let mut prepared = prepare(&args.vm, with_server, ui)?;
    if args.virtiofs {
        let server = prepared
            .spec
            .server_bins
            .iter()
            .find(|b| b.file_name().is_some_and(|n| n == "iomapfs"))
            .cloned()
            .context("--virtiofs needs the iomapfs binary")?;
        prepared.spec.virtiofs_server = Some(server);
    }
    let mut fstests = if args.fstests.enabled() {
        Some(prepare_fstests(args, jobs, &mut prepared, ui)?)
    } else {
        None
    };
    // Test names become paths in the run directory.
    plan.check().map_err(usage)?;
    let mode = ModeCheck::new(expected_mode(args)?, &prepared);
    let spec = &prepared.spec;
    let resume = resumed.is_some();
    let dir = match resumed {
        Some(d) => d,
        None => {
            let d = RunDir::create(&runs_root()).context("creating the run directory")?;
            if let Some(inv) = crate::resume::Invocation::of_this_process() {
                inv.save(&d)?;
            }
            d
        }
    };
    // One fstests plan per VM (none without fstests), each handed to its job.
    let mut fresh_plans = fstests
        .as_mut()
        .map(|f| std::mem::take(&mut f.plans))
        .unwrap_or_default()
        .into_iter();
    let mut jobs: Vec<parallel::Job> = (0..jobs)
        .map(|k| -> Result<parallel::Job> {
            let dir = parallel::job_dir(&dir, k, jobs).context("creating a VM's run directory")?;
            let mut plan = plan.clone();
            let fstests = match fresh_plans.next() {
                Some(fresh) => {
                    plan.tests.extend(fresh.tests.iter().cloned());
                    // A resumed run goes on with the batches as its crashes left them.
                    let saved = if resume {
                        fstests::plan::FstestsPlan::load(&dir)?
                    } else {
                        None
                    };
                    let p = match saved {
                        Some(p) => p,
                        None => {
                            fresh.save(&dir)?;
                            fresh
                        }
                    };
                    let d = dir.path.join("fstests");
                    std::fs::create_dir_all(&d)?;
                    std::fs::write(d.join("local.config"), &p.local_config)?;
                    Some(p)
                }
                None => None,
            };
            Ok(parallel::Job { dir, plan, fstests })
        })
        .collect::<Result<_>>()?;
    if let Some(why) = mode.impossible(&prepared) {
        let all = Plan {
            tests: jobs.iter().flat_map(|j| j.plan.tests.clone()).collect(),
            ..plan.clone()
        };
        return Ok((
            refuse_without_booting(&all, &prepared, &dir, &mode, &why)?,
            dir.path,
        ));
    }
    ui.step(format!(
        "vm-test{}: {} tests; kernel {}; image {}; {}; {} with {} CPUs and {} MiB{}",
        if resume { " (resumed)" } else { "" },
        jobs.iter().map(|j| j.plan.tests.len()).sum::<usize>(),
        prepared
            .kernel_release
            .as_deref()
            .unwrap_or(&spec.kernel.display().to_string()),
        prepared
            .image
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
        spec.accel.as_str().to_uppercase(),
        spec.machine.as_str(),
        spec.cpus,
        spec.memory_mb,
        if jobs.len() > 1 {
            format!("; {} VMs", jobs.len())
        } else {
            String::new()
        }
    ));
    ui.note(format!("run directory: {}", dir.path.display()));
    let limits = Limits {
        run: run_limit(args.run_timeout, &jobs),
        stall: Duration::from_secs(args.stall_timeout.max(1)),
        reboots: args.max_reboots,
        ..Limits::default()
    };
    let cancel = cancel_flag();
    let printer = std::sync::Mutex::new(Printer::new(ui));
    // A poisoned printer only loses progress lines, never the run.
    let progress = |job: Option<usize>, p: Progress| {
        if let Ok(mut pr) = printer.lock() {
            pr.on(job, p);
        }
    };
    let outcomes = parallel::run_jobs(spec, &mut jobs, &limits, resume, &progress, &cancel);
    drop(printer);
    let mut results = vec![];
    for (k, o) in outcomes.into_iter().enumerate() {
        results.push((format!("vm-{}", k + 1), o?));
    }
    let mut result = match &fstests {
        Some(f) => finish_fstests(args, spec, f, &jobs, results, &mode, &dir)?,
        None => {
            let mut r = parallel::merge(&dir, results);
            if args.virtiofs {
                // One VM. Its backends have exited (each boot waits for its own), so the
                // images are complete.
                let run = &jobs[0].dir.path;
                host_checks(spec, run, &mut r);
                report::conclude(&mut r);
                report::write_all(&r, run)?;
            }
            if mode.expect != ExpectMode::Any {
                mode.apply(&mut r);
                report::conclude(&mut r);
                report::write_all(&r, &dir.path)?;
            }
            r
        }
    };
    // The server's recorded sessions: kept for failing tests only.
    crate::recordings::settle(&dir.path, &mut result).context("settling the recordings")?;
    // Keep the disks of a failed run for inspection, and the host's virtio-fs recordings
    // for a replay; drop them otherwise.
    if result.verdict == Verdict::Passed {
        for j in &jobs {
            let _ = std::fs::remove_dir_all(j.dir.path.join("disks"));
            for tag in [vm::run::VIRTIOFS_TEST_TAG, vm::run::VIRTIOFS_SCRATCH_TAG] {
                let _ = std::fs::remove_dir_all(vm::run::virtiofs_recordings(&j.dir.path, tag));
            }
        }
    }
    result.id = dir.id.clone();
    Ok((result, dir.path))
}

/// Over virtio-fs, what the host adds to a run's result: `host/e2fsck` of the images and
/// the backends' facts.
fn host_checks(spec: &VmSpec, run: &std::path::Path, result: &mut RunResult) {
    result.tests.push(host_fsck(&run.join("disks")));
    result.server = Some(virtiofs_server_facts(spec, run));
}

/// What the host's virtio-fs backend was: its version, and the mode its mounts negotiated
/// (every guest mount appends one line to `virtiofs-test.modes`).
fn virtiofs_server_facts(spec: &VmSpec, run: &std::path::Path) -> report::ServerFacts {
    let version = spec.virtiofs_server.as_ref().and_then(|bin| {
        let out = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .ok()?;
        // "iomapfs 0.1.0" -> "0.1.0"
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().last().map(str::to_string)
    });
    let modes = std::fs::read_to_string(run.join("virtiofs-test.modes")).unwrap_or_default();
    let mut seen: Vec<&str> = modes.lines().collect();
    seen.dedup();
    let (mode, error) = match seen.as_slice() {
        [] => (
            None,
            Some("no guest mount reached the host's virtio-fs backend".into()),
        ),
        [one] => (Some(one.to_string()), None),
        more => (
            None,
            Some(format!(
                "the backend's mounts negotiated {}",
                more.join(", ")
            )),
        ),
    };
    report::ServerFacts {
        name: "iomapfs (host, virtio-fs)".into(),
        version,
        mode,
        error,
        ..Default::default()
    }
}

/// `e2fsck -fn` on the host of every test and scratch image a virtio-fs run used (one per
/// boot: after a crash the next boot gets a fresh one, `test-bootN.img` keeps the old), as the test
/// `host/e2fsck`. A crashed guest must not leave the host's filesystem inconsistent either:
/// the backend closes it when QEMU goes.
fn host_fsck(disks: &std::path::Path) -> report::TestResult {
    let started = Instant::now();
    let mut images: Vec<PathBuf> = std::fs::read_dir(disks)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        (n.starts_with("test") || n.starts_with("scratch")) && n.ends_with(".img")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    images.sort();
    let mut problems = vec![];
    if images.is_empty() {
        problems.push(format!("no test image in {}", disks.display()));
    }
    for image in &images {
        match std::process::Command::new("e2fsck")
            .arg("-fn")
            .arg(image)
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => problems.push(format!(
                "e2fsck -fn {} ({}): {}",
                image.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout).trim()
            )),
            Err(e) => problems.push(format!("cannot run e2fsck: {e}")),
        }
    }
    let verdict = if problems.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Failed
    };
    report::TestResult {
        duration_ms: started.elapsed().as_millis() as u64,
        reason: (!problems.is_empty()).then(|| problems.join("; ")),
        ..report::TestResult::new("host/e2fsck", verdict)
    }
}

/// The `vm-test` subcommand: run, print the summary, map the verdict to an error kind.
pub fn main(args: &VmTestArgs, ui: &Ui) -> Result<()> {
    if args.dry_run {
        return crate::dry_run::main(args, ui);
    }
    let (result, dir) = match &args.resume {
        Some(run_name) => {
            if let Some(inv) = crate::resume::Invocation::of_this_process() {
                crate::resume::check_alone(&inv.argv)?;
            }
            let dir = crate::resume::find_run(&runs_root(), run_name)?;
            let args = crate::resume::Invocation::load(&dir)?.args()?;
            ui.step(format!("resuming run {}", dir.id));
            run_in(&args, Some(dir), ui)?
        }
        None => run(args, ui)?,
    };
    eprint!("{}", report::summary_text(&result));
    eprintln!("results: {}", dir.join("summary.md").display());
    verdict_to_result(&result)
}

pub fn verdict_to_result(result: &RunResult) -> Result<()> {
    match result.verdict.exit_code() {
        0 => Ok(()),
        1 => Err(TestFailures(format!(
            "vm-test {}: {}",
            result.id,
            result.verdict.as_str()
        ))
        .into()),
        4 => Err(NothingPassed(format!(
            "vm-test {}: nothing passed: {}",
            result.id,
            result.reason.as_deref().unwrap_or("no test passed")
        ))
        .into()),
        _ => bail!(
            "vm-test {}: infrastructure failure: {}",
            result.id,
            result.reason.as_deref().unwrap_or("see console.log")
        ),
    }
}

/// Paths a test can look at after a run (used by the end-to-end tests).
pub fn latest_run() -> PathBuf {
    runs_root().join("latest")
}

/// The whole run's time limit: `--run-timeout`, else an hour, or for fstests every VM's
/// tests' deadlines added up (scaled like the deadlines themselves), so only a run whose
/// every test ran to its deadline reaches it.
fn run_limit(asked: Option<u64>, jobs: &[parallel::Job]) -> Duration {
    const DEFAULT_SECS: u64 = 3600;
    let secs = asked.unwrap_or_else(|| {
        jobs.iter()
            .filter(|j| j.fstests.is_some())
            .map(|j| {
                let slow = j.plan.slow_factor.max(1);
                j.plan
                    .tests
                    .iter()
                    .map(|t| t.timeout_s.saturating_mul(slow))
                    .fold(0u64, u64::saturating_add)
            })
            .max()
            .map_or(DEFAULT_SECS, |sum| sum.max(DEFAULT_SECS))
    });
    Duration::from_secs(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: VmTestArgs,
    }

    fn parse(argv: &[&str]) -> VmTestArgs {
        Cli::try_parse_from(std::iter::once("vm-test").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn default_is_smoke_with_server() {
        let a = parse(&[]);
        assert!(needs_server(&a));
        let plan = build_plan(&a, true).unwrap();
        assert_eq!(plan.tests[0].name, "smoke/mount");
        assert!(plan.server.is_some());
    }

    #[test]
    fn virtiofs_mounts_the_tag_and_checks_on_the_host() {
        let a = parse(&["--virtiofs"]);
        assert!(needs_server(&a), "iomapfs is still built, for the host");
        let plan = build_plan(&a, true).unwrap();
        assert!(plan.server.is_none(), "nothing installed in the guest");
        assert!(plan.tests.iter().all(|t| t.name != "smoke/fsck"));
        assert!(plan.tests.iter().any(|t| t.name == "smoke/fileops"));
        assert!(plan
            .env
            .contains(&("SMOKE_FSTYPE".to_string(), "virtiofs".to_string())));
        assert!(plan
            .env
            .contains(&("TEST_DEV".to_string(), "test".to_string())));
        for mode in ["iomap", "classic"] {
            let e = build_plan(&parse(&["--virtiofs", "--expect-mode", mode]), true).unwrap_err();
            assert!(format!("{e}").contains("classic FUSE"), "{e}");
        }
        assert!(build_plan(&parse(&["--virtiofs", "--expect-mode", "any"]), true).is_ok());
        // The workload suites mount the tag too, and leave the device check to the host.
        let plan = build_plan(
            &parse(&["--virtiofs", "--suite", "dio", "--suite", "append"]),
            true,
        )
        .unwrap();
        let names: Vec<&str> = plan.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["dio/workload", "append/buffered", "append/direct"]);
        assert!(plan
            .env
            .contains(&("WORKLOADS_FSTYPE".to_string(), "virtiofs".to_string())));
        assert!(Cli::try_parse_from(["vm-test", "--virtiofs", "--no-server"]).is_err());
        // fstests over the tags (FSTYP=virtiofs), on one VM.
        assert!(build_plan(&parse(&["--virtiofs", "--fstests", "generic/001"]), true).is_ok());
        let e = build_plan(&parse(&["--virtiofs", "--jobs", "2"]), true).unwrap_err();
        assert!(format!("{e}").contains("one VM"), "{e}");
        let e = build_plan(&parse(&["--fstests-scheme", "virtiofs"]), true).unwrap_err();
        assert!(format!("{e}").contains("needs --virtiofs"), "{e}");
    }

    #[test]
    fn host_fsck_checks_every_boots_test_image() {
        let dir = tempfile::tempdir().unwrap();
        let t = host_fsck(dir.path());
        assert_eq!(t.verdict, Verdict::Failed, "no image is no evidence");
        let image = |name: &str| {
            let p = dir.path().join(name);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(16 << 20)
                .unwrap();
            let ok = std::process::Command::new("mkfs.ext4")
                .args(["-F", "-q"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(ok.success());
            p
        };
        image("test.img");
        let old = image("test-boot1.img");
        image("scratch.img");
        assert_eq!(host_fsck(dir.path()).verdict, Verdict::Passed);
        // Break the first boot's image: its superblock's magic.
        let f = std::fs::OpenOptions::new().write(true).open(&old).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0, 0], 1024 + 56).unwrap();
        let t = host_fsck(dir.path());
        assert_eq!(t.verdict, Verdict::Failed);
        assert!(t.reason.unwrap().contains("test-boot1.img"));
    }

    #[test]
    fn run_commands_and_timeouts() {
        let a = parse(&["--run", "echo hi", "--timeout", "20", "--env", "A=b=c"]);
        let plan = build_plan(&a, false).unwrap();
        assert_eq!(plan.tests.len(), 1);
        assert_eq!(plan.tests[0].timeout_s, 20);
        assert_eq!(plan.env, vec![("A".to_string(), "b=c".to_string())]);
        // --no-record empties the variable the agent points every server's recordings at.
        let a = parse(&["--run", "true", "--no-record"]);
        let plan = build_plan(&a, false).unwrap();
        assert_eq!(
            plan.env,
            vec![("IOMAPFS_RECORD_DIR".to_string(), String::new())]
        );
        assert!(plan.server.is_none());
    }

    /// Each run verdict leaves vm-test with its exit code (README: Verdicts).
    #[test]
    fn every_run_verdict_has_its_exit_code() {
        use plumbing::error::exit_code;
        let code = |v: Verdict| {
            let mut r = RunResult::empty("t");
            r.verdict = v;
            verdict_to_result(&r).map_or_else(|e| exit_code(&e), |()| 0)
        };
        assert_eq!(code(Verdict::Passed), 0);
        for v in [
            Verdict::Failed,
            Verdict::Crashed,
            Verdict::Hung,
            Verdict::Flaky,
        ] {
            assert_eq!(code(v), 1, "{v:?}");
        }
        assert_eq!(code(Verdict::InfraError), 3);
        assert_eq!(code(Verdict::NothingPassed), 4);
    }

    #[test]
    fn flaky_and_coverage_acceptance_flags() {
        let a = parse(&["--fstests", "-g quick"]);
        assert_eq!(a.fstests.accepts_flaky("generic/002"), None);
        let a = parse(&["--accept-flaky", "--fstests", "-g quick"]);
        assert_eq!(
            a.fstests.accepts_flaky("generic/002").as_deref(),
            Some("--accept-flaky")
        );
        let a = parse(&["--accept-flaky=generic/00?", "--accept-flaky=xfs/1*"]);
        assert_eq!(
            a.fstests.accepts_flaky("generic/002").as_deref(),
            Some("--accept-flaky=generic/00?")
        );
        assert_eq!(a.fstests.accepts_flaky("generic/010"), None);
        assert!(a.fstests.accepts_flaky("xfs/123").is_some());
        // Accepting lost coverage only means something against a baseline.
        let no_base = Cli::try_parse_from(["vm-test", "--accept-coverage-loss"]);
        assert!(no_base.is_err());
        let a = parse(&["--baseline", "b.json", "--accept-coverage-loss"]);
        assert!(a.fstests.accept_coverage_loss);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        use plumbing::error::{exit_code, EXIT_USAGE};
        let e = build_plan(&parse(&["--suite", "nope"]), false).unwrap_err();
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert!(format!("{e}").contains("unknown suite `nope`"));
        let e = build_plan(&parse(&["--run", "x", "--env", "novalue"]), false).unwrap_err();
        assert_eq!(exit_code(&e), EXIT_USAGE);
        let e = prepare(
            &parse(&["--kernel-image", "/nonexistent/bzImage"]).vm,
            false,
            &Ui::plain(),
        )
        .err()
        .unwrap();
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert!(format!("{e}").contains("/nonexistent/bzImage"));
    }
}
