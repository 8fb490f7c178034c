//! The guest agent. The host boots the kernel with a tiny read-only 9p root
//! (`root=/dev/root rootfstype=9p init=/agent`) holding this binary. It then:
//! 1. mounts the root image and the run-directory share (virtio-fs when the kernel command
//!    line says `harness.share=virtiofs`, else 9p), and switches root;
//! 2. mounts the usual pseudo filesystems;
//! 3. reads the plan from the share, installs the FUSE server, formats the test disk;
//! 4. runs each test as a child process with a timeout, streaming events;
//! 5. syncs and resets the machine (QEMU runs with `-no-reboot`, so it exits).
//!
//! It never panics on bad input: whatever goes wrong is reported as an event
//! (or on the console if the event port is missing) and the machine is reset.

mod emit;
mod init;
mod kmsg;
mod runner;
mod setup;
mod sys;

use std::path::Path;

use events::{EventBody, Plan, TestStatus};

fn main() {
    let agent_start_ms = sys::boottime_ms();
    let pid1 = std::process::id() == 1;
    if pid1 {
        if let Err(e) = init::switch_to_image() {
            sys::console(&format!("harness agent: cannot set up the root: {e}"));
            init::power_off();
        }
    }
    if let Err(e) = init::mount_basics() {
        sys::console(&format!("harness agent: cannot mount basics: {e}"));
    }
    let code = run(agent_start_ms, pid1);
    if pid1 {
        init::power_off();
    }
    std::process::exit(code);
}

fn run(agent_start_ms: u64, pid1: bool) -> i32 {
    let mut out = emit::Emitter::open();
    let plan_path = Path::new(events::SHARE_MOUNT).join(events::PLAN_FILE);
    let plan = match std::fs::read_to_string(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|t| Plan::from_json(&t).map_err(|e| e.to_string()))
    {
        Ok(p) if p.v == events::SCHEMA_VERSION => p,
        Ok(p) => {
            out.log(&format!(
                "plan schema v{} but agent speaks v{}",
                p.v,
                events::SCHEMA_VERSION
            ));
            return 2;
        }
        Err(e) => {
            out.log(&format!("cannot read plan {}: {e}", plan_path.display()));
            return 2;
        }
    };
    sys::set_console_loglevel(plan.console_loglevel);
    // Behind by the boot time at most, which beats 1970 for make, tar and fstests.
    if pid1 {
        sys::set_clock(plan.host_time_unix);
    }
    setup::link_disks_by_serial();

    if plan.shell {
        let server = plan
            .server
            .as_ref()
            .map(|s| setup::prepare_server(s, &mut out));
        if let Some(Err(e)) = &server {
            sys::console(&format!("harness agent: server setup failed: {e}"));
        }
        setup::interactive_shell(&plan);
        return 0;
    }

    let ready_ms = sys::boottime_ms();
    let server = plan.server.as_ref().map(|s| {
        let info = setup::prepare_server(s, &mut out).unwrap_or_else(|e| setup::ServerInfo {
            error: Some(e),
            ..Default::default()
        });
        events::ServerFacts {
            name: "iomapfs".into(),
            version: info.version,
            mode: info.mode,
            error: info.error,
        }
    });
    out.emit(EventBody::RunStarted {
        kernel: sys::kernel_release(),
        e2fsprogs_version: setup::e2fsprogs_version(),
        server,
        agent_start_ms,
        boot_to_ready_ms: ready_ms,
        setup_ms: sys::boottime_ms().saturating_sub(ready_ms),
        tests: plan.tests.len(),
    });

    let (mut passed, mut failed) = (0, 0);
    for test in &plan.tests {
        let status = runner::run_test(&plan, test, &mut out);
        if status == TestStatus::Passed {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    sys::sync();
    out.emit(EventBody::RunFinished { passed, failed });
    sys::sync();
    i32::from(failed > 0)
}
