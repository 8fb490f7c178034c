//! The host's Debian packages: what each job of the harness needs, installing what is
//! missing (as root) or printing the exact commands (otherwise), and `cargo xtask setup`.
//! The package lists live here and nowhere else: `.ci/run` and the GitHub workflows run
//! `cargo xtask setup`.

pub mod apt;
pub mod qemu;
pub mod tools;

use anyhow::Result;
use apt::{Install, Package};
use plumbing::ui::Ui;

/// A job of the harness, by what it needs from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Building a kernel (`make`, its tools and headers, ccache).
    KernelBuild,
    /// Building the guest image (mmdebstrap, mke2fs).
    Image,
    /// Building iomapfs and the agent for the guest (libext2fs).
    GuestBinaries,
    /// Booting VMs (QEMU, see [`qemu`]).
    Vm,
    /// The project's tests: host mounts, peers, workloads, lint tools.
    Tests,
    /// Building virtiofsd, the run directory's virtio-fs server ([`ensure_virtiofsd`]).
    RunShare,
}

/// How to tell a need is met.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// A program on PATH (or in the sbin directories).
    Program(&'static str),
    /// The package itself is installed (libraries, headers).
    Installed,
}

/// (job, probe, Debian package).
const NEEDS: &[(Job, Probe, &str)] = {
    use Job::*;
    use Probe::*;
    &[
        (KernelBuild, Program("make"), "make"),
        (KernelBuild, Program("gcc"), "gcc"),
        (KernelBuild, Program("bc"), "bc"),
        (KernelBuild, Program("bison"), "bison"),
        (KernelBuild, Program("flex"), "flex"),
        (KernelBuild, Program("perl"), "perl"),
        (KernelBuild, Program("cpio"), "cpio"),
        (KernelBuild, Program("lz4"), "lz4"),
        (KernelBuild, Program("xz"), "xz-utils"),
        (KernelBuild, Program("patch"), "patch"),
        (KernelBuild, Program("git"), "git"),
        // Part of the build's cache key: installed from the first build on, so a later
        // install never invalidates a cached kernel.
        (KernelBuild, Program("ccache"), "ccache"),
        (KernelBuild, Installed, "libelf-dev"),
        (KernelBuild, Installed, "libssl-dev"),
        (Image, Program("mmdebstrap"), "mmdebstrap"),
        (Image, Program("mke2fs"), "e2fsprogs"),
        (GuestBinaries, Program("gcc"), "gcc"),
        (GuestBinaries, Program("pkg-config"), "pkg-config"),
        (GuestBinaries, Installed, "libext2fs-dev"),
        (Tests, Program("e2fsck"), "e2fsprogs"),
        (Tests, Program("fusermount3"), "fuse3"),
        (Tests, Program("fuse2fs"), "fuse2fs"),
        (Tests, Program("losetup"), "util-linux"),
        (Tests, Program("modprobe"), "kmod"),
        (Tests, Program("setfacl"), "acl"),
        (Tests, Program("setfattr"), "attr"),
        (Tests, Program("fio"), "fio"),
        (Tests, Program("flock"), "util-linux"),
        (Tests, Program("python3"), "python3"),
        (Tests, Program("shellcheck"), "shellcheck"),
        // The nightly's baseline step, run by xtask/tests/workflows.rs.
        (Tests, Program("jq"), "jq"),
        // bindgen (the bindings check) loads libclang.
        (Tests, Installed, "libclang-dev"),
        // check-jsonschema (the workflow check) lives in a venv in the cache.
        (Tests, Installed, "python3-venv"),
        (RunShare, Installed, "libseccomp-dev"),
        (RunShare, Installed, "libcap-ng-dev"),
    ]
};

/// The packages the jobs need that are missing, each once, QEMU's included.
pub fn plan(jobs: &[Job]) -> Result<Install> {
    let mut install = Install {
        purpose: describe(jobs),
        ..Install::default()
    };
    for (job, probe, package) in NEEDS {
        if !jobs.contains(job) || install.packages.iter().any(|p| p.name == *package) {
            continue;
        }
        let present = match probe {
            Probe::Program(p) => plumbing::util::which(p).is_some() || in_sbin(p),
            Probe::Installed => apt::dpkg_version(package)?.is_some(),
        };
        if !present {
            install.packages.push(Package::new(package));
        }
    }
    if jobs.contains(&Job::Vm) {
        if let Some(q) = qemu::plan()? {
            install.packages.extend(q.packages);
            install.sources.extend(q.sources);
        }
    }
    Ok(install)
}

/// Installs what the jobs need (as root) or fails with the commands to run; then probes
/// QEMU when a VM job is among them.
pub fn ensure(jobs: &[Job], ui: &Ui) -> Result<()> {
    let install = plan(jobs)?;
    apt::install(&install, ui)?;
    if jobs.contains(&Job::Vm) {
        qemu::probe(&qemu::default_binary(), ui)?;
    }
    Ok(())
}

/// virtiofsd at the pinned version (vm-test's run-directory share): its build's Debian
/// packages and `cargo install` when it is missing and we are root; otherwise an error
/// with the exact commands.
pub fn ensure_virtiofsd(ui: &Ui) -> Result<std::path::PathBuf> {
    let tool = &tools::VIRTIOFSD;
    if tool.installed().as_deref() != Some(tool.version) {
        if !nix::unistd::geteuid().is_root() {
            let install = plan(&[Job::RunShare])?;
            let mut commands = vec![];
            if !install.packages.is_empty() {
                commands.push(install.commands());
            }
            commands.push(tool.install_command());
            return Err(plumbing::error::usage(format!(
                "virtiofsd {} is not installed; install it as root with:\n{}",
                tool.version,
                commands.join("\n")
            )));
        }
        ensure(&[Job::RunShare], ui)?;
        tool.ensure(ui)?;
    }
    tool.path()
        .ok_or_else(|| anyhow::anyhow!("virtiofsd is not found after installing it"))
}

fn in_sbin(program: &str) -> bool {
    ["/usr/sbin", "/sbin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(program).is_file())
}

fn describe(jobs: &[Job]) -> String {
    let names: Vec<&str> = jobs
        .iter()
        .map(|j| match j {
            Job::KernelBuild => "the kernel build",
            Job::Image => "the guest image",
            Job::GuestBinaries => "the guest binaries",
            Job::Vm => "QEMU",
            Job::Tests => "the tests",
            Job::RunShare => "virtiofsd's build",
        })
        .collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => "nothing".into(),
    }
}

/// `cargo xtask setup`: everything the README's two quick-start commands need: Debian's
/// packages (QEMU included, probed), the default kernel source, and the pinned test tools.
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// Only report what is missing (exit 2 if anything is); install nothing.
    #[arg(long)]
    pub check: bool,
}

pub const ALL_JOBS: &[Job] = &[
    Job::KernelBuild,
    Job::Image,
    Job::GuestBinaries,
    Job::Vm,
    Job::Tests,
    Job::RunShare,
];

pub fn setup(args: &SetupArgs, ui: &Ui) -> Result<()> {
    let mut install = plan(ALL_JOBS)?;
    let kernel_source = profile::HarnessConfig::load_default()?
        .profile(None)?
        .kernel
        .debian_package
        .clone();
    if let Some(pkg) = kernel_source {
        if apt::dpkg_version(&pkg)?.is_none() {
            install.packages.push(Package::new(&pkg));
        }
    }
    if args.check {
        let tools: Vec<String> = [
            &tools::NEXTEST,
            &tools::BINDGEN,
            &tools::MACHETE,
            &tools::VIRTIOFSD,
        ]
        .iter()
        .filter(|t| t.installed().as_deref() != Some(t.version))
        .map(|t| format!("{}@{}", t.krate, t.version))
        .collect();
        if install.packages.is_empty() && tools.is_empty() {
            ui.step("every package and pinned tool the harness needs is installed");
            return Ok(());
        }
        return Err(plumbing::error::usage(format!(
            "missing packages: {}
missing pinned tools: {}
  install them with `cargo xtask setup` as root, or by hand:
{}",
            install
                .packages
                .iter()
                .map(Package::arg)
                .collect::<Vec<_>>()
                .join(" "),
            tools.join(" "),
            install.commands()
        )));
    }
    apt::install(&install, ui)?;
    qemu::probe(&qemu::default_binary(), ui)?;
    tools::NEXTEST.ensure(ui)?;
    tools::BINDGEN.ensure(ui)?;
    tools::MACHETE.ensure(ui)?;
    tools::VIRTIOFSD.ensure(ui)?;
    tools::ensure_check_jsonschema(ui)?;
    ui.step("the host has everything the harness and its tests need");
    Ok(())
}
