//! `cargo xtask vm-shell`: the vm-test VM with an interactive shell on the console.
use anyhow::{Context, Result};
use events::Plan;
use vm::RunDir;

use crate::vm_test::{prepare, runs_root, server_setup, VmArgs};
use plumbing::ui::Ui;

#[derive(clap::Args, Clone, Debug)]
pub struct VmShellArgs {
    #[command(flatten)]
    pub vm: VmArgs,
}

pub fn main(args: &VmShellArgs, ui: &Ui) -> Result<()> {
    let with_server = !args.vm.no_server;
    let prepared = prepare(&args.vm, with_server, ui)?;
    let plan = Plan {
        v: events::SCHEMA_VERSION,
        shell: true,
        server: with_server.then(server_setup),
        tests: vec![],
        heartbeat_s: 2,
        slow_factor: 3,
        console_loglevel: 7,
        host_time_unix: 0,
        env: vec![],
    };
    let dir = RunDir::create(&runs_root()).context("creating the run directory")?;
    ui.step(format!(
        "vm-shell: {} on {}; run directory {} (shared as /harness)",
        prepared.spec.accel.as_str().to_uppercase(),
        prepared.spec.machine.as_str(),
        dir.path.display()
    ));
    ui.note("the test disk is $TEST_DEV, mounted nowhere; `exit` powers off; Ctrl-A X kills QEMU");
    let status = vm::run_shell(&prepared.spec, &plan, &dir)?;
    ui.note(format!("QEMU exited: {status}"));
    Ok(())
}
