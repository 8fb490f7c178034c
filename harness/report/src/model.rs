//! The result model (serialised as results.json).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the results.json layout. v2: the FUSE server's facts (name, version, modes,
/// the expected mode) are one optional `server` section ([`ServerFacts`]), no longer fields
/// of the run and its tests named after iomapfs.
pub const RESULTS_SCHEMA: u32 = 2;

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
    /// Failed, then passed when rerun. Fails the run unless accepted by name
    /// ([`TestResult::accepted`]).
    Flaky,
    /// A run's verdict only: no test passed (all skipped or expunged, or no tests at all),
    /// so the run verified nothing.
    NothingPassed,
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
            Verdict::NothingPassed => "nothing_passed",
        }
    }

    /// Process exit code for a run with this verdict (the policy is in [`crate::policy`]):
    /// 0 passed, 1 test failures (failed, hung, crashed, an unaccepted flake), 3
    /// infrastructure failure, 4 nothing passed. 2 is for usage errors, decided before a
    /// run. `not_run`, `skipped` and `expunged` are test verdicts only, never a run's.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed | Verdict::NotRun | Verdict::Skipped | Verdict::Expunged => 0,
            Verdict::Failed | Verdict::Crashed | Verdict::Hung | Verdict::Flaky => 1,
            Verdict::InfraError => 3,
            Verdict::NothingPassed => 4,
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
    /// The part of that test that was running, when the console said (fstests' own
    /// "run fstests generic/001" kernel log line, in a `check` run of several tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtest: Option<String>,
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
    /// Why this test's `flaky` verdict does not fail the run: an expunge entry of kind
    /// `flaky` (its reason and link) or `--accept-flaky`. None: it fails the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
}

impl TestResult {
    /// A result with nothing but a name and a verdict.
    pub fn new(name: impl Into<String>, verdict: Verdict) -> Self {
        TestResult {
            name: name.into(),
            verdict,
            duration_ms: 0,
            exit_code: None,
            signal: None,
            slow: false,
            reason: None,
            findings: vec![],
            artifacts: vec![],
            details: None,
            accepted: None,
        }
    }
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
    /// Why the harness itself failed (the guest never got ready, an event protocol
    /// error, an interrupt), if it did: the run is then `infra_error` unless a test
    /// failure outranks it (see [`crate::policy::run_verdict`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_error: Option<String>,
    /// "kvm" or "tcg".
    pub accel: String,
    /// Why this accelerator (e.g. "KVM probe timed out after 5s").
    pub accel_note: Option<String>,
    pub machine: String,
    pub kernel_image: String,
    pub kernel_release: Option<String>,
    pub image: String,
    pub e2fsprogs_version: Option<String>,
    /// The FUSE server under test, when the run set one up or expected a mode of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFacts>,
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
    /// The comparison with `--baseline`, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::policy::Baseline>,
}

/// Everything the run knows about the FUSE server under test, in one place: the rest of
/// the result is the same for any filesystem. Modes are the server's own words (iomapfs:
/// "iomap" or "classic").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFacts {
    /// The server's name (`iomapfs`); empty when none was set up.
    pub name: String,
    pub version: Option<String>,
    /// The mode the guest's check mount negotiated.
    pub mode: Option<String>,
    /// Why the guest's server check failed, if it did.
    pub error: Option<String>,
    /// The mode this run required (`--expect-mode`); none when any mode was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_mode: Option<String>,
    /// Per test, the modes the servers it mounted negotiated, each once, in the order
    /// the guest reported them; a test that mounted none is absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub test_modes: BTreeMap<String, Vec<String>>,
}

impl ServerFacts {
    /// The modes `test` reported (empty when it mounted no server).
    pub fn modes_of(&self, test: &str) -> &[String] {
        self.test_modes.get(test).map_or(&[], Vec::as_slice)
    }

    /// Records `modes` for `test` (nothing when empty).
    pub fn set_modes(&mut self, test: &str, modes: Vec<String>) {
        if modes.is_empty() {
            self.test_modes.remove(test);
        } else {
            self.test_modes.insert(test.to_owned(), modes);
        }
    }

    /// The modes of `from` (a batch that ran several tests in one go) become those of
    /// each of `to`.
    pub fn share_modes(&mut self, from: &str, to: impl IntoIterator<Item = String>) {
        let modes = self.test_modes.remove(from).unwrap_or_default();
        for name in to {
            self.set_modes(&name, modes.clone());
        }
    }
}

impl RunResult {
    /// A result with no tests and no facts yet (verdict `infra_error` until decided).
    pub fn empty(id: impl Into<String>) -> Self {
        RunResult {
            schema: RESULTS_SCHEMA,
            id: id.into(),
            started_at: String::new(),
            duration_ms: 0,
            verdict: Verdict::InfraError,
            reason: None,
            harness_error: None,
            accel: String::new(),
            accel_note: None,
            machine: String::new(),
            kernel_image: String::new(),
            kernel_release: None,
            image: String::new(),
            e2fsprogs_version: None,
            server: None,
            boot_to_ready_ms: None,
            kernel_boot_ms: None,
            host_ready_ms: None,
            setup_ms: None,
            boots: 0,
            tests: vec![],
            findings: vec![],
            console_excerpt: None,
            baseline: None,
        }
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.tests.iter().filter(|t| t.verdict == v).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Verdict::Passed.exit_code(), 0);
        assert_eq!(Verdict::Failed.exit_code(), 1);
        assert_eq!(Verdict::Crashed.exit_code(), 1);
        assert_eq!(Verdict::Hung.exit_code(), 1);
        assert_eq!(Verdict::Flaky.exit_code(), 1);
        assert_eq!(Verdict::InfraError.exit_code(), 3);
        assert_eq!(Verdict::NothingPassed.exit_code(), 4);
    }

    #[test]
    fn old_results_files_still_read() {
        // results.json written before `accepted`, `subtest` and `baseline` existed.
        let t: TestResult = serde_json::from_str(
            r#"{"name":"a","verdict":"flaky","duration_ms":1,"exit_code":null,"signal":null,"reason":null}"#,
        )
        .unwrap();
        assert_eq!(t.accepted, None);
        let back = serde_json::to_string(&TestResult::new("a", Verdict::Passed)).unwrap();
        assert!(!back.contains("accepted"), "{back}");

        // A v1 results.json (a kept baseline) reads as v2, iomapfs' fields in `server`;
        // another version is refused by name.
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = serde_json::to_value(RunResult::empty("old")).unwrap();
        let run = v1.as_object_mut().unwrap();
        run.remove("server");
        run.insert("schema".into(), 1.into());
        run.insert("server_mode".into(), "iomap".into());
        run.insert("iomapfs_version".into(), "0.1.0".into());
        let mut t = serde_json::to_value(TestResult::new("a", Verdict::Passed)).unwrap();
        t["server_modes"] = serde_json::json!(["iomap"]);
        run.insert("tests".into(), serde_json::json!([t]));
        let path = dir.path().join("results.json");
        std::fs::write(&path, v1.to_string()).unwrap();
        let read = crate::read_json(&path).unwrap();
        let server = read.server.unwrap();
        assert_eq!(server.mode.as_deref(), Some("iomap"));
        assert_eq!(server.version.as_deref(), Some("0.1.0"));
        assert_eq!(server.modes_of("a"), ["iomap"]);
        v1["schema"] = 99.into();
        std::fs::write(&path, v1.to_string()).unwrap();
        let e = crate::read_json(&path).unwrap_err().to_string();
        assert!(
            e.contains("results schema v99 is not one this harness reads"),
            "{e}"
        );
    }
}
