//! The result model (serialised as results.json).
use serde::{Deserialize, Serialize};

/// Version of the results.json layout.
pub const RESULTS_SCHEMA: u32 = 1;

/// The verdict of one test or of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Never started because the guest died or hung earlier in the run.
    NotRun,
    Passed,
    Failed,
    /// No progress past the deadline.
    Hung,
    /// The kernel oopsed/panicked (or the guest died) while the test ran.
    Crashed,
    /// The harness could not run the test (boot failure, missing tools...).
    InfraError,
    /// The test decided not to run (fstests' `_notrun`), with its reason.
    Skipped,
    /// Left out on purpose by an expunge entry (reason and link in `reason`).
    Expunged,
    /// Failed, then passed when rerun: reported, but does not fail the run.
    Flaky,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotRun => "not_run",
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Crashed => "crashed",
            Verdict::Hung => "hung",
            Verdict::InfraError => "infra_error",
            Verdict::Skipped => "skipped",
            Verdict::Expunged => "expunged",
            Verdict::Flaky => "flaky",
        }
    }

    /// Process exit code for a run with this verdict: 0 pass, 1 test failures,
    /// 3 infrastructure failure (2 is for usage errors, decided before a run).
    /// Did not pass, but by design: skipped, expunged or flaky. Never fails a run.
    pub fn is_benign(self) -> bool {
        matches!(self, Verdict::Skipped | Verdict::Expunged | Verdict::Flaky)
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed
            | Verdict::NotRun
            | Verdict::Skipped
            | Verdict::Expunged
            | Verdict::Flaky => 0,
            Verdict::Failed | Verdict::Crashed | Verdict::Hung => 1,
            Verdict::InfraError => 3,
        }
    }
}

/// What a console line says about the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Panic,
    Oops,
    Bug,
    GeneralProtection,
    Kasan,
    Ubsan,
    Warning,
    Lockdep,
    HungTask,
    SoftLockup,
    RcuStall,
    /// A task dump the harness asked for (sysrq) before killing a hung guest.
    TaskDump,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational (a dump the harness requested).
    Info,
    /// The kernel complained but went on: the test fails.
    Warning,
    /// The kernel is broken: the test crashed.
    Crash,
}

impl FindingKind {
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::Panic
            | FindingKind::Oops
            | FindingKind::Bug
            | FindingKind::GeneralProtection
            | FindingKind::Kasan => Severity::Crash,
            FindingKind::TaskDump => Severity::Info,
            _ => Severity::Warning,
        }
    }
}

/// A kernel report seen on the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The line that matched.
    pub title: String,
    /// The test that was running, if any.
    pub test: Option<String>,
    /// The report's lines (from the match to its end or a bounded number of lines).
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    pub verdict: Verdict,
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Ran past its timeout while still making progress.
    #[serde(default)]
    pub slow: bool,
    pub reason: Option<String>,
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Files of this test, relative to the run directory.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Longer evidence for JUnit's system-out (an fstests failure's .out.bad diff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: u32,
    pub id: String,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub verdict: Verdict,
    /// Why the run as a whole is not a pass, if it is not.
    pub reason: Option<String>,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Why this accelerator (e.g. "KVM probe timed out after 5s").
    pub accel_note: Option<String>,
    pub machine: String,
    pub kernel_image: String,
    pub kernel_release: Option<String>,
    pub image: String,
    pub iomapfs_version: Option<String>,
    pub e2fsprogs_version: Option<String>,
    pub server_mode: Option<String>,
    pub server_error: Option<String>,
    /// Guest uptime when the agent was ready (mounts done, plan read).
    pub boot_to_ready_ms: Option<u64>,
    /// Guest uptime when the kernel started the agent.
    #[serde(default)]
    pub kernel_boot_ms: Option<u64>,
    /// Host wall time from starting QEMU to the agent's ready event (QEMU
    /// start-up, firmware and the server setup included).
    #[serde(default)]
    pub host_ready_ms: Option<u64>,
    /// Server install, mkfs and mount check in the guest, before the first test.
    #[serde(default)]
    pub setup_ms: Option<u64>,
    /// How many times the VM booted (more than 1 after a crash or hang, when
    /// the run went on with the remaining tests).
    #[serde(default)]
    pub boots: u32,
    pub tests: Vec<TestResult>,
    /// Findings outside any test (boot, shutdown).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The end of the console when the run failed outside any test (e.g. boot).
    pub console_excerpt: Option<String>,
}

impl RunResult {
    /// The run's verdict from its tests: the worst of them, an infra error
    /// if nothing ran, passed only if every test passed.
    pub fn overall(tests: &[TestResult], run_infra_error: bool) -> Verdict {
        if run_infra_error
            && tests.iter().all(|t| {
                matches!(t.verdict, Verdict::Passed | Verdict::NotRun) || t.verdict.is_benign()
            })
        {
            return Verdict::InfraError;
        }
        let worst_test = tests
            .iter()
            .map(|t| t.verdict)
            .filter(|v| !matches!(v, Verdict::InfraError | Verdict::NotRun) && !v.is_benign())
            .max();
        match worst_test {
            Some(v) if v != Verdict::Passed => v,
            _ if tests
                .iter()
                .any(|t| matches!(t.verdict, Verdict::InfraError | Verdict::NotRun))
                || tests.is_empty() =>
            {
                Verdict::InfraError
            }
            _ => Verdict::Passed,
        }
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.tests.iter().filter(|t| t.verdict == v).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Verdict) -> TestResult {
        TestResult {
            name: "x".into(),
            verdict: v,
            duration_ms: 1,
            exit_code: None,
            signal: None,
            slow: false,
            reason: None,
            findings: vec![],
            artifacts: vec![],
            details: None,
        }
    }

    #[test]
    fn overall_verdict_is_the_worst_test() {
        use Verdict::*;
        assert_eq!(RunResult::overall(&[t(Passed), t(Passed)], false), Passed);
        assert_eq!(RunResult::overall(&[t(Passed), t(Failed)], false), Failed);
        assert_eq!(
            RunResult::overall(&[t(Failed), t(Crashed), t(Hung)], false),
            Crashed
        );
        assert_eq!(RunResult::overall(&[t(Failed), t(Hung)], false), Hung);
        // Nothing ran, or only infra errors: the harness failed, not the kernel.
        assert_eq!(RunResult::overall(&[], false), InfraError);
        assert_eq!(
            RunResult::overall(&[t(Passed), t(InfraError)], false),
            InfraError
        );
        // A real failure outranks a later infra error.
        assert_eq!(
            RunResult::overall(&[t(Failed), t(InfraError)], false),
            Failed
        );
        // A crash stops the run; the tests after it did not run.
        assert_eq!(
            RunResult::overall(&[t(Passed), t(Crashed), t(NotRun)], false),
            Crashed
        );
        assert_eq!(RunResult::overall(&[t(NotRun)], false), InfraError);
        // The run broke (e.g. QEMU died at shutdown) though every test passed.
        assert_eq!(RunResult::overall(&[t(Passed)], true), InfraError);
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Verdict::Passed.exit_code(), 0);
        assert_eq!(Verdict::Failed.exit_code(), 1);
        assert_eq!(Verdict::Crashed.exit_code(), 1);
        assert_eq!(Verdict::Hung.exit_code(), 1);
        assert_eq!(Verdict::InfraError.exit_code(), 3);
    }
}
