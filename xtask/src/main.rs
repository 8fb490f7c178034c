//! `cargo xtask`: the developer entry point. Parses the command line and
//! dispatches to the library; maps errors to the exit codes of DESIGN.md.

use clap::{Parser, Subcommand};
use plumbing::error::exit_code;
use plumbing::ui::Ui;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fuse-iomap-harness developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel under test from a profile or flags, with a verified config.
    Kernel(xtask::kernel_cmd::KernelCommand),
    /// Benchmarks: `bench server` compares iomapfs, fuse2fs and kernel ext4.
    Bench(bench::BenchCommand),
    /// Regenerate harness/ext2fs/src/sys.rs with the bindgen CLI.
    Bindgen(xtask::bindgen::BindgenCommand),
    /// Boot the kernel in QEMU with iomapfs and run test suites; writes results under target/harness/runs/.
    VmTest(Box<runner::vm_test::VmTestArgs>),
    /// Replay the FUSE sessions a vm-test recorded for a failing test (exit 0: no
    /// difference, 1: a difference, 2: nothing could be replayed).
    Replay(runner::recordings::ReplayArgs),
    /// Boot the vm-test VM with an interactive shell on this terminal.
    VmShell(runner::shell::VmShellArgs),
    /// Build (or show) the cached guest image.
    Image(guest_image::ImageArgs),
    /// Power cuts under load: kill the VM mid-workload, preen, verify every acknowledged write.
    Powercut(runner::powercut::PowercutArgs),
    /// Install the Debian packages the harness and its tests need (QEMU included), or
    /// print the commands when not root.
    Setup(hostsetup::SetupArgs),
    /// Find the kernel commit that broke a vm-test selection (git bisect, driven for you).
    Bisect(Box<bisect::BisectArgs>),
    /// One bisect step, run by `git bisect run` (internal).
    #[command(hide = true)]
    BisectStep(bisect::StepArgs),
}

fn main() {
    // clap exits with 2 on usage errors by itself.
    let cli = Cli::parse();
    let ui = Ui::detect();
    let result = match &cli.command {
        Command::Kernel(cmd) => xtask::kernel_cmd::run(cmd, &ui),
        Command::Bindgen(cmd) => xtask::bindgen::run(cmd, &ui),
        Command::Bench(cmd) => bench::run(cmd, &ui),
        // These two answer `git bisect run` with its exit codes.
        Command::VmTest(args) if args.bisect_exit_codes => {
            std::process::exit(bisect::vm_test_for_git_bisect(args, &ui))
        }
        Command::BisectStep(args) => std::process::exit(bisect::step::main(args, &ui)),
        Command::Replay(args) => std::process::exit(runner::recordings::replay_main(args)),
        Command::VmTest(args) => runner::vm_test::main(args, &ui),
        Command::VmShell(args) => runner::shell::main(args, &ui),
        Command::Image(args) => guest_image::main(args, &ui),
        Command::Setup(args) => hostsetup::setup(args, &ui),
        Command::Powercut(args) => runner::powercut::main(args, &ui),
        Command::Bisect(args) => bisect::main(args, &ui),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
