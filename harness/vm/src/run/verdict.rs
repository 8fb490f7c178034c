//! Verdict assembly: what one boot produced ([`Session`]), and the run's result from all
//! its boots (findings attached to tests, tests that never ran, the verdict policy).
use std::collections::HashMap;
use std::time::Instant;

use events::{EventBody, Plan};
use report::{Finding, RunResult, Severity, TestResult, Verdict};

use crate::console::Watcher;
use crate::rundir::RunDir;

use super::poll::Stop;
use super::protocol::State;
use super::Limits;

/// What one boot of the VM produced.
pub(super) struct Session {
    pub(super) stop: Stop,
    pub(super) ready: bool,
    /// Boot facts (first session's are kept), reason and console excerpt.
    pub(super) result: RunResult,
    pub(super) tests: Vec<TestResult>,
    pub(super) findings: Vec<Finding>,
    pub(super) notes: Vec<String>,
    /// Event protocol errors (summarised; the lines are in protocol-errors.log).
    pub(super) protocol: Vec<String>,
    /// The test that was running when the guest died or hung.
    pub(super) interrupted_test: Option<String>,
    /// The step of that test the console announced last.
    pub(super) interrupted_step: Option<String>,
    /// The server modes each finished test reported.
    pub(super) test_modes: Vec<(String, Vec<String>)>,
}

/// A session that never got going (QEMU could not be started or attached to).
pub(super) fn failed_start(result: RunResult) -> Session {
    Session {
        stop: Stop::BootTimeout,
        ready: false,
        result,
        tests: vec![],
        findings: vec![],
        notes: vec![],
        protocol: vec![],
        interrupted_test: None,
        interrupted_step: None,
        test_modes: vec![],
    }
}

/// What one boot produced, from the supervisor's state when it stopped: the boot facts,
/// the finished tests, the one that was running (hung, crashed or interrupted), protocol
/// errors and notes.
#[allow(clippy::too_many_arguments)]
pub(super) fn session_result(
    mut result: RunResult,
    mut st: State,
    stop: Stop,
    run_reason: Option<String>,
    watcher: &Watcher,
    findings: Vec<Finding>,
    dir: &RunDir,
    boot_no: u32,
    started: Instant,
    limits: &Limits,
) -> Session {
    if let Some(EventBody::RunStarted {
        kernel,
        e2fsprogs_version,
        server,
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
        result.e2fsprogs_version = e2fsprogs_version;
        result.server = server.map(|s| report::ServerFacts {
            name: s.name,
            version: s.version,
            mode: s.mode,
            error: s.error,
            ..Default::default()
        });
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
            Stop::RunLimit => (
                Verdict::InfraError,
                "stopped by the run's time limit (--run-timeout)".to_string(),
            ),
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
        // Its servers' modes, from the share: it never reported them itself.
        let modes = interrupted_modes(dir, &name);
        if !modes.is_empty() {
            st.test_modes.push((name.clone(), modes));
        }
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
    Session {
        stop,
        ready: st.ready_info.is_some(),
        result,
        tests,
        findings,
        notes,
        protocol,
        interrupted_test,
        interrupted_step,
        test_modes: std::mem::take(&mut st.test_modes),
    }
}

/// A run that never got going, or that the user stopped, is the harness's failure
/// whatever the tests say; so is a guest that died outside a test.
pub(super) fn overrule(out: &mut RunResult, last_stop: &Stop, last_ready: bool, boots: u32) {
    let never_ready = boots == 1 && !last_ready && !matches!(last_stop, Stop::None);
    let forced = matches!(last_stop, Stop::Interrupted | Stop::RunLimit)
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
}

/// Attach findings to tests, apply them to verdicts, add the tests that never
/// ran, and compute the run's verdict.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_with(
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

/// The server modes a test that never finished left in its directory in the share, read
/// like any guest file (no links, a small cap) and reduced to the modes the harness knows.
pub(super) fn interrupted_modes(dir: &RunDir, test: &str) -> Vec<String> {
    let path = dir
        .path
        .join("tests")
        .join(test)
        .join(events::SERVER_MODES_FILE);
    let Ok(bytes) = crate::rundir::read_guest_file(&dir.path, &path, 4096) else {
        return vec![];
    };
    super::protocol::known_modes(events::parse_server_modes(&String::from_utf8_lossy(&bytes)))
}
