//! The verdict policy, in one place: how kernel reports change a test's verdict, which test
//! verdicts fail a run, what a run that verified nothing is, and what a baseline may
//! forgive. `vm`, the fstests collector and `vm-test` all decide through here; the README's
//! verdict table says the same in words.
//!
//! The rule behind every choice: missing evidence is never a pass.
use serde::{Deserialize, Serialize};

use crate::{FindingKind, RunResult, Severity, TestResult, Verdict};

/// Kernel reports seen on the console while a test ran override what the test itself
/// said: a crash-class report (oops, BUG, panic, KASAN) makes it `crashed`; any other
/// report (WARN, lockdep, hung task, soft lockup, RCU stall, UBSAN) makes a `passed`,
/// `skipped` or `flaky` test `failed`. A task dump the harness asked for is no finding.
pub fn apply_findings(t: &mut TestResult) {
    let worst = t
        .findings
        .iter()
        .filter(|f| f.kind != FindingKind::TaskDump)
        .max_by_key(|f| f.kind.severity());
    let Some(f) = worst else { return };
    let why = match &t.reason {
        Some(r) => format!("kernel {:?}: {} (the test said: {r})", f.kind, f.title),
        None => format!("kernel {:?}: {}", f.kind, f.title),
    };
    match f.kind.severity() {
        Severity::Crash if t.verdict != Verdict::Crashed => {
            t.verdict = Verdict::Crashed;
            t.reason = Some(why);
        }
        Severity::Warning
            if matches!(
                t.verdict,
                Verdict::Passed | Verdict::Skipped | Verdict::Flaky
            ) =>
        {
            t.verdict = Verdict::Failed;
            t.reason = Some(why);
        }
        _ => {}
    }
}

/// Does this test fail the run? Failed, hung and crashed tests do; so does a flaky one
/// (failed, then passed on a rerun) unless it was accepted by name.
pub fn fails_run(t: &TestResult) -> bool {
    match t.verdict {
        Verdict::Failed | Verdict::Hung | Verdict::Crashed => true,
        Verdict::Flaky => t.accepted.is_none(),
        _ => false,
    }
}

/// Does this test count as evidence that the kernel was exercised and behaved? A pass,
/// or an accepted flake (it passed in the end, and someone said why that is fine).
pub fn counts_as_pass(t: &TestResult) -> bool {
    match t.verdict {
        Verdict::Passed => true,
        Verdict::Flaky => t.accepted.is_some(),
        _ => false,
    }
}

/// How bad a failing test verdict is, for the run's verdict: the worst one wins.
fn badness(v: Verdict) -> u8 {
    match v {
        Verdict::Crashed => 4,
        Verdict::Hung => 3,
        Verdict::Failed => 2,
        Verdict::Flaky => 1,
        _ => 0,
    }
}

/// The run's verdict from its tests. `harness_failed` says the harness itself broke
/// (the guest never got ready, an event protocol error, Ctrl-C, QEMU died outside a test).
///
/// 1. The worst test that fails the run decides: crashed, hung, failed, flaky.
/// 2. Otherwise a broken harness, a test the harness could not run (`infra_error`) or a
///    test that never started (`not_run`) make it `infra_error`.
/// 3. Otherwise a run without a single pass (all skipped or expunged, or no tests at all)
///    is `nothing_passed`: it verified nothing.
/// 4. Otherwise `passed`.
pub fn run_verdict(tests: &[TestResult], harness_failed: bool) -> Verdict {
    if let Some(worst) = tests
        .iter()
        .filter(|t| fails_run(t))
        .map(|t| t.verdict)
        .max_by_key(|v| badness(*v))
    {
        return worst;
    }
    if harness_failed
        || tests
            .iter()
            .any(|t| matches!(t.verdict, Verdict::InfraError | Verdict::NotRun))
    {
        return Verdict::InfraError;
    }
    if !tests.iter().any(counts_as_pass) {
        return Verdict::NothingPassed;
    }
    Verdict::Passed
}

/// Set the run's verdict from its tests and its harness error ([`run_verdict`]), and say
/// why when it is `nothing_passed` (unless the run already has a reason).
pub fn conclude(run: &mut RunResult) {
    run.verdict = run_verdict(&run.tests, run.harness_error.is_some());
    if run.verdict == Verdict::NothingPassed && run.reason.is_none() {
        run.reason = Some(nothing_passed_reason(&run.tests));
    }
}

/// The FUSE server mode a run requires (`vm-test --expect-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectMode {
    Iomap,
    Classic,
    /// Either mode passes (the mode is still reported per test).
    Any,
}

impl ExpectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectMode::Iomap => "iomap",
            ExpectMode::Classic => "classic",
            ExpectMode::Any => "any",
        }
    }
}

/// A test that ran its server in another mode than the run expects fails, whatever it
/// said; so does a passing test with no evidence of the mode at all (it mounted nothing and
/// the run's own server check reported none). A test's evidence is the modes its mounts
/// reported, or else the mode of the server the agent set up for the run (`run_mode`).
/// `why` explains a wrong mode (e.g. "the kernel was built without CONFIG_FUSE_IOMAP").
pub fn apply_expected_mode(
    t: &mut TestResult,
    expect: ExpectMode,
    test_modes: &[String],
    run_mode: Option<&str>,
    why: &str,
) {
    if expect == ExpectMode::Any
        || !matches!(
            t.verdict,
            Verdict::Passed | Verdict::Flaky | Verdict::Skipped
        )
    {
        return;
    }
    let want = expect.as_str();
    let seen: Vec<&str> = if test_modes.is_empty() {
        run_mode.into_iter().collect()
    } else {
        test_modes.iter().map(String::as_str).collect()
    };
    let reason = match seen.iter().find(|m| **m != want) {
        Some(other) => format!("server ran {other}; expected {want}: {why}"),
        None if seen.is_empty() => format!("no server mode was reported; expected {want}"),
        None => return,
    };
    t.verdict = Verdict::Failed;
    t.reason = Some(match &t.reason {
        Some(r) => format!("{reason} (the test said: {r})"),
        None => reason,
    });
}

/// Records the expected mode in the run's server section and applies
/// [`apply_expected_mode`] to every test, with the modes the server section holds.
pub fn mark_expected_mode(run: &mut RunResult, expect: ExpectMode, why: &str) {
    let expected = (expect != ExpectMode::Any).then(|| expect.as_str().to_string());
    if expected.is_none() && run.server.is_none() {
        return;
    }
    let server = run.server.get_or_insert_with(Default::default);
    server.expected_mode = expected;
    for t in &mut run.tests {
        apply_expected_mode(
            t,
            expect,
            server.modes_of(&t.name),
            server.mode.as_deref(),
            why,
        );
    }
}

/// [`mark_expected_mode`], then the run's verdict again.
pub fn enforce_mode(run: &mut RunResult, expect: ExpectMode, why: &str) {
    mark_expected_mode(run, expect, why);
    conclude(run);
}

/// Why a run verified nothing: its tests' verdicts counted.
pub fn nothing_passed_reason(tests: &[TestResult]) -> String {
    if tests.is_empty() {
        return "no tests ran: nothing was verified".into();
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in tests {
        *counts.entry(t.verdict.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    format!(
        "no test passed ({}): nothing was verified",
        parts.join(", ")
    )
}

/// A run compared with an earlier one (`vm-test --baseline`), as recorded in results.json.
/// Test names are the run's (`fstests/<section>/<test>`); every list is sorted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The baseline's results.json.
    pub path: String,
    /// Fail now; passed, not run or absent in the baseline.
    pub new_failures: Vec<String>,
    /// Fail in both.
    pub still_failing: Vec<String>,
    /// Failed in the baseline, pass now.
    pub fixed: Vec<String>,
    /// Passed in the baseline, not run now (skipped, expunged, or never started).
    pub newly_not_run: Vec<String>,
    /// Passed in the baseline, absent from this run (not selected any more).
    pub missing: Vec<String>,
    /// Lost coverage (`newly_not_run`, `missing`) was accepted (`--accept-coverage-loss`):
    /// it does not fail the run, but the run cannot become the next baseline either.
    pub coverage_loss_accepted: bool,
    /// Whether this run may replace the baseline: it passed and lost no coverage. The
    /// nightly workflow reads this before saving the next baseline.
    pub may_replace: bool,
}

impl Baseline {
    /// Tests that passed in the baseline and did not run now: coverage lost.
    pub fn lost_coverage(&self) -> impl Iterator<Item = &String> {
        self.newly_not_run.iter().chain(&self.missing)
    }
}

/// Judge a run against its baseline and record the comparison in it:
/// - a new failure fails the run (`failed`, if it was `passed`);
/// - lost coverage fails it too, unless `coverage_loss_accepted`;
/// - a run whose every failing test already failed in the baseline passes;
/// - only a passing run that lost no coverage may replace the baseline.
///
/// Harness failures (`infra_error`) and `nothing_passed` stay what they are.
pub fn judge_against_baseline(run: &mut RunResult, mut b: Baseline) {
    let lost = b.lost_coverage().count();
    let mut reasons = vec![];
    if !b.new_failures.is_empty() {
        reasons.push(format!(
            "{} new failures against {}",
            b.new_failures.len(),
            b.path
        ));
        if run.verdict == Verdict::Passed {
            run.verdict = Verdict::Failed;
        }
    } else if matches!(
        run.verdict,
        Verdict::Failed | Verdict::Crashed | Verdict::Hung
    ) {
        // Forgive only failures the baseline already had, and only when nothing else
        // (an unaccepted flake, a harness failure) fails the run.
        let known: std::collections::BTreeSet<&String> = b.still_failing.iter().collect();
        let failing: Vec<&TestResult> = run.tests.iter().filter(|t| fails_run(t)).collect();
        if failing.iter().all(|t| known.contains(&t.name)) {
            let rest: Vec<TestResult> = run
                .tests
                .iter()
                .filter(|t| !fails_run(t))
                .cloned()
                .collect();
            run.verdict = match run_verdict(&rest, false) {
                // The known failures ran: the run verified what it could.
                Verdict::NothingPassed => Verdict::Passed,
                v => v,
            };
            reasons.push(format!(
                "{} tests fail, all of them already in the baseline {}: no new failures",
                failing.len(),
                b.path
            ));
        }
    }
    if lost > 0 {
        let what = format!(
            "{lost} tests that passed in the baseline did not run now ({} not run, {} missing)",
            b.newly_not_run.len(),
            b.missing.len()
        );
        if b.coverage_loss_accepted {
            reasons.push(format!(
                "{what}; accepted, so this run cannot become the baseline"
            ));
        } else {
            reasons.push(format!(
                "{what}: coverage lost (--accept-coverage-loss accepts it)"
            ));
            if run.verdict == Verdict::Passed {
                run.verdict = Verdict::Failed;
            }
        }
    }
    b.may_replace = run.verdict == Verdict::Passed && lost == 0;
    if !reasons.is_empty() {
        let joined = reasons.join("; ");
        run.reason = Some(match run.reason.take() {
            Some(r) if !r.is_empty() => format!("{r}; {joined}"),
            _ => joined,
        });
    }
    run.baseline = Some(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Finding;

    #[test]
    fn a_test_in_the_wrong_mode_fails_and_says_why() {
        let mut t = TestResult::new("smoke/mount", Verdict::Passed);
        apply_expected_mode(
            &mut t,
            ExpectMode::Iomap,
            &["classic".into()],
            Some("iomap"),
            "the kernel did not offer FUSE_IOMAP",
        );
        assert_eq!(t.verdict, Verdict::Failed);
        assert_eq!(
            t.reason.as_deref(),
            Some("server ran classic; expected iomap: the kernel did not offer FUSE_IOMAP")
        );

        // The run's server stands in for a test that mounted nothing itself.
        let mut t = TestResult::new("run/1", Verdict::Passed);
        apply_expected_mode(&mut t, ExpectMode::Iomap, &[], Some("classic"), "why");
        assert_eq!(t.verdict, Verdict::Failed);
        // No evidence at all is not a pass.
        let mut t = TestResult::new("run/1", Verdict::Passed);
        apply_expected_mode(&mut t, ExpectMode::Classic, &[], None, "why");
        assert_eq!(t.verdict, Verdict::Failed);
        assert!(t.reason.unwrap().contains("no server mode was reported"));
        // Mixed modes fail too.
        let mut t = TestResult::new("fstests/x", Verdict::Passed);
        let modes = ["iomap".into(), "classic".into()];
        apply_expected_mode(&mut t, ExpectMode::Iomap, &modes, None, "why");
        assert_eq!(t.verdict, Verdict::Failed);
    }

    #[test]
    fn the_right_mode_or_any_mode_keeps_the_verdict() {
        for (expect, modes) in [
            (ExpectMode::Iomap, vec!["iomap"]),
            (ExpectMode::Classic, vec!["classic"]),
            (ExpectMode::Any, vec!["classic"]),
            (ExpectMode::Any, vec![]),
        ] {
            let mut t = TestResult::new("t", Verdict::Passed);
            let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
            apply_expected_mode(&mut t, expect, &modes, None, "why");
            assert_eq!(t.verdict, Verdict::Passed, "{expect:?} {modes:?}");
        }
        // A failing test keeps its own verdict and reason.
        let mut t = TestResult::new("t", Verdict::Crashed);
        apply_expected_mode(&mut t, ExpectMode::Iomap, &["classic".into()], None, "why");
        assert_eq!(t.verdict, Verdict::Crashed);
    }

    #[test]
    fn enforcing_the_mode_decides_the_run_again() {
        let mut run = RunResult::empty("r");
        run.server = Some(crate::ServerFacts {
            mode: Some("classic".into()),
            ..Default::default()
        });
        run.tests = vec![TestResult::new("a", Verdict::Passed)];
        enforce_mode(&mut run, ExpectMode::Iomap, "why");
        assert_eq!(run.verdict, Verdict::Failed);
        assert_eq!(
            run.server.and_then(|s| s.expected_mode).as_deref(),
            Some("iomap")
        );
    }
    fn t(name: &str, v: Verdict) -> TestResult {
        TestResult::new(name, v)
    }

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            kind,
            title: format!("{kind:?} line"),
            test: Some("a".into()),
            subtest: None,
            excerpt: String::new(),
        }
    }

    #[test]
    fn findings_override_what_the_test_said() {
        use FindingKind::*;
        let with = |v: Verdict, kinds: &[FindingKind]| {
            let mut x = t("a", v);
            x.findings = kinds.iter().map(|k| finding(*k)).collect();
            apply_findings(&mut x);
            x
        };
        let x = with(Verdict::Passed, &[Warning]);
        assert_eq!(x.verdict, Verdict::Failed);
        assert!(x.reason.unwrap().contains("Warning line"));
        // A hung task, an RCU stall, a lockup during a test fstests passed, skipped or
        // called flaky: failed.
        for kind in [HungTask, RcuStall, SoftLockup, Lockdep] {
            for v in [Verdict::Passed, Verdict::Skipped, Verdict::Flaky] {
                assert_eq!(with(v, &[kind]).verdict, Verdict::Failed, "{kind:?} {v:?}");
            }
        }
        assert_eq!(
            with(Verdict::Failed, &[Warning, Oops]).verdict,
            Verdict::Crashed
        );
        assert_eq!(with(Verdict::Passed, &[Kasan]).verdict, Verdict::Crashed);
        // A task dump the harness asked for is not a kernel bug.
        assert_eq!(with(Verdict::Hung, &[TaskDump]).verdict, Verdict::Hung);
        assert_eq!(with(Verdict::Passed, &[TaskDump]).verdict, Verdict::Passed);
        // A hung test stays hung when the kernel also reported the hung task.
        assert_eq!(with(Verdict::Hung, &[HungTask]).verdict, Verdict::Hung);
        assert_eq!(with(Verdict::Passed, &[]).verdict, Verdict::Passed);
        // The test's own reason is kept behind the kernel's.
        let mut x = t("a", Verdict::Skipped);
        x.reason = Some("needs dm-error".into());
        x.findings = vec![finding(HungTask)];
        apply_findings(&mut x);
        assert!(
            x.reason
                .as_deref()
                .unwrap()
                .ends_with("(the test said: needs dm-error)"),
            "{:?}",
            x.reason
        );
    }

    #[test]
    fn run_verdict_is_the_worst_test() {
        use Verdict::*;
        let v = |vs: &[Verdict], broken: bool| {
            run_verdict(&vs.iter().map(|v| t("x", *v)).collect::<Vec<_>>(), broken)
        };
        assert_eq!(v(&[Passed, Passed], false), Passed);
        assert_eq!(v(&[Passed, Failed], false), Failed);
        assert_eq!(v(&[Failed, Crashed, Hung], false), Crashed);
        assert_eq!(v(&[Failed, Hung], false), Hung);
        assert_eq!(v(&[Flaky, Failed], false), Failed);
        // A real failure outranks a later infra error or a broken harness.
        assert_eq!(v(&[Failed, InfraError], false), Failed);
        assert_eq!(v(&[Failed], true), Failed);
        // A crash stops the run; the tests after it did not run.
        assert_eq!(v(&[Passed, Crashed, NotRun], false), Crashed);
        // The harness failed, not the kernel.
        assert_eq!(v(&[Passed, InfraError], false), InfraError);
        assert_eq!(v(&[NotRun], false), InfraError);
        assert_eq!(v(&[Passed], true), InfraError);
        assert_eq!(v(&[], true), InfraError);
    }

    #[test]
    fn a_flake_fails_the_run_unless_accepted() {
        let mut flaky = t("fstests/s/generic/002", Verdict::Flaky);
        let pass = t("fstests/s/generic/001", Verdict::Passed);
        assert_eq!(
            run_verdict(&[pass.clone(), flaky.clone()], false),
            Verdict::Flaky
        );
        assert_eq!(Verdict::Flaky.exit_code(), 1);
        flaky.accepted = Some("--accept-flaky".into());
        assert!(!fails_run(&flaky));
        assert_eq!(run_verdict(&[pass, flaky.clone()], false), Verdict::Passed);
        // An accepted flake passed in the end: it counts as a pass.
        assert_eq!(run_verdict(&[flaky], false), Verdict::Passed);
    }

    #[test]
    fn a_run_without_a_pass_verified_nothing() {
        use Verdict::*;
        let tests = vec![t("a", Skipped), t("b", Expunged), t("c", Skipped)];
        assert_eq!(run_verdict(&tests, false), NothingPassed);
        assert_eq!(run_verdict(&[], false), NothingPassed);
        assert_eq!(NothingPassed.exit_code(), 4);
        assert_eq!(
            nothing_passed_reason(&tests),
            "no test passed (1 expunged, 2 skipped): nothing was verified"
        );
        assert_eq!(
            nothing_passed_reason(&[]),
            "no tests ran: nothing was verified"
        );
        // One pass is enough; a broken harness is still the harness's failure.
        assert_eq!(
            run_verdict(&[t("a", Skipped), t("b", Passed)], false),
            Passed
        );
        assert_eq!(run_verdict(&tests, true), InfraError);
    }

    #[test]
    fn conclude_uses_the_harness_error_and_explains_an_empty_run() {
        let mut r = RunResult::empty("t");
        r.tests = vec![t("a", Verdict::Passed)];
        conclude(&mut r);
        assert_eq!((r.verdict, r.reason.clone()), (Verdict::Passed, None));
        r.harness_error = Some("2 event protocol errors".into());
        conclude(&mut r);
        assert_eq!(r.verdict, Verdict::InfraError);
        let mut r = RunResult::empty("t");
        r.tests = vec![t("a", Verdict::Skipped)];
        conclude(&mut r);
        assert_eq!(r.verdict, Verdict::NothingPassed);
        assert_eq!(
            r.reason.as_deref(),
            Some("no test passed (1 skipped): nothing was verified")
        );
    }

    fn run_of(tests: Vec<TestResult>) -> RunResult {
        let mut r = RunResult::empty("t");
        r.verdict = run_verdict(&tests, false);
        r.tests = tests;
        r
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn baseline_new_failures_fail_and_known_ones_are_forgiven() {
        let mut r = run_of(vec![t("a", Verdict::Passed), t("b", Verdict::Failed)]);
        judge_against_baseline(
            &mut r,
            Baseline {
                path: "base.json".into(),
                new_failures: names(&["b"]),
                ..Default::default()
            },
        );
        assert_eq!(r.verdict, Verdict::Failed);
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .contains("1 new failures against base.json"),
            "{:?}",
            r.reason
        );
        assert!(!r.baseline.as_ref().unwrap().may_replace);

        let mut r = run_of(vec![t("a", Verdict::Passed), t("b", Verdict::Failed)]);
        judge_against_baseline(
            &mut r,
            Baseline {
                path: "base.json".into(),
                still_failing: names(&["b"]),
                ..Default::default()
            },
        );
        assert_eq!(r.verdict, Verdict::Passed, "{:?}", r.reason);
        assert!(r.baseline.as_ref().unwrap().may_replace);

        // A known failure does not hide an unaccepted flake next to it.
        let mut r = run_of(vec![t("a", Verdict::Flaky), t("b", Verdict::Failed)]);
        judge_against_baseline(
            &mut r,
            Baseline {
                path: "base.json".into(),
                still_failing: names(&["b"]),
                ..Default::default()
            },
        );
        assert_eq!(r.verdict, Verdict::Failed);
    }

    #[test]
    fn lost_coverage_fails_unless_accepted_and_then_never_replaces_the_baseline() {
        let lost = || Baseline {
            path: "base.json".into(),
            newly_not_run: names(&["b"]),
            missing: names(&["c"]),
            ..Default::default()
        };
        let mut r = run_of(vec![t("a", Verdict::Passed), t("b", Verdict::Skipped)]);
        judge_against_baseline(&mut r, lost());
        assert_eq!(r.verdict, Verdict::Failed);
        let why = r.reason.clone().unwrap();
        assert!(
            why.contains(
                "2 tests that passed in the baseline did not run now (1 not run, 1 missing)"
            ),
            "{why}"
        );
        assert!(!r.baseline.as_ref().unwrap().may_replace);

        let mut r = run_of(vec![t("a", Verdict::Passed), t("b", Verdict::Skipped)]);
        judge_against_baseline(
            &mut r,
            Baseline {
                coverage_loss_accepted: true,
                ..lost()
            },
        );
        assert_eq!(r.verdict, Verdict::Passed);
        let b = r.baseline.as_ref().unwrap();
        assert!(
            !b.may_replace,
            "an accepted loss must not become the new normal"
        );
        assert!(r
            .reason
            .as_deref()
            .unwrap()
            .contains("cannot become the baseline"));

        // A run that verified nothing stays so against a baseline.
        let mut r = run_of(vec![t("b", Verdict::Skipped)]);
        judge_against_baseline(
            &mut r,
            Baseline {
                coverage_loss_accepted: true,
                ..lost()
            },
        );
        assert_eq!(r.verdict, Verdict::NothingPassed);
    }
}
