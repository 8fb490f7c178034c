//! `cargo xtask`: the developer entry point. Parses the command line and
//! dispatches to the library; maps errors to the exit codes of DESIGN.md.

use clap::{Parser, Subcommand};
use xtask::error::exit_code;
use xtask::ui::Ui;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fuse-iomap-harness developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel under test from a profile or flags, with a verified config.
    Kernel(xtask::kernel::KernelCommand),
    /// Benchmarks: `bench server` compares iomapfs, fuse2fs and kernel ext4.
    Bench(xtask::bench::BenchCommand),
    /// Regenerate harness/ext2fs/src/sys.rs with the bindgen CLI.
    Bindgen(xtask::bindgen::BindgenCommand),
}

fn main() {
    // clap exits with 2 on usage errors by itself.
    let cli = Cli::parse();
    let ui = Ui::detect();
    let result = match &cli.command {
        Command::Kernel(cmd) => xtask::kernel::cli::run(cmd, &ui),
        Command::Bindgen(cmd) => xtask::bindgen::run(cmd, &ui),
        Command::Bench(cmd) => xtask::bench::run(cmd, &ui),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(exit_code(&err));
    }
}
