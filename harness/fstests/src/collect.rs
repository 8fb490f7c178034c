//! After the run: fstests' own results (each attempt's xunit result.xml) decide the verdict
//! of every test the guest finished; crashes and hangs stay as the harness saw them, and
//! kernel reports seen on the console while a test ran make it fail whatever xunit says.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{Outcome, Status};

use crate::plan::Batch;
use report::{Finding, RunResult, TestResult, Verdict};

/// Largest fstests report file the host reads from the guest's share.
const MAX_REPORT_BYTES: u64 = 32 << 20;

/// A file the guest wrote, as text: never through a link, at most [`MAX_REPORT_BYTES`].
fn read_guest(run_dir: &Path, path: &Path) -> Result<String, String> {
    vm::rundir::read_guest_file(run_dir, path, MAX_REPORT_BYTES)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| e.to_string())
}

/// What fstests reported in one attempt of a batch: its outcomes, or why there are none.
fn read_attempt(
    run_dir: &Path,
    batch_dir: &Path,
    attempt: u32,
    section: &str,
) -> Option<Result<Vec<Outcome>, String>> {
    let dir = batch_dir.join(format!("attempt-{attempt}"));
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let xml = dir.join(section).join("result.xml");
    let Ok(text) = read_guest(run_dir, &xml) else {
        let out = read_guest(run_dir, &dir.join("check.out")).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Some(Err(format!(
            "check wrote no result.xml: {}",
            tail.join(" / ")
        )));
    };
    // A report cut short by a crash may not parse; its finished tests are then lost too.
    Some(crate::parse_xunit(&text).map_err(|e| format!("{}: {e:#}", xml.display())))
}

/// The tests of `batch` with a result in its first attempt's report, or `None` once a
/// rerun attempt started (the first attempt then finished them all). An unreadable
/// report counts as no results.
pub fn first_attempt_reported(run_dir: &Path, batch: &Batch) -> Option<BTreeSet<String>> {
    let batch_dir = run_dir.join("tests").join(&batch.name);
    if read_attempt(run_dir, &batch_dir, 1, &batch.section).is_some() {
        return None;
    }
    Some(match read_attempt(run_dir, &batch_dir, 0, &batch.section) {
        Some(Ok(outcomes)) => outcomes.into_iter().map(|o| o.test).collect(),
        _ => BTreeSet::new(),
    })
}

fn test_result(
    name: String,
    verdict: Verdict,
    duration_ms: u64,
    reason: Option<String>,
) -> TestResult {
    let mut t = TestResult::new(name, verdict);
    t.duration_ms = duration_ms;
    t.reason = reason;
    t
}

/// The fstests test of a batch a console report belongs to: the one fstests' own kernel
/// log line named, else the batch's first (reports before it come from check's set-up).
fn owner<'a>(f: &Finding, ids: &'a [String]) -> Option<&'a String> {
    f.subtest
        .as_ref()
        .and_then(|s| ids.iter().find(|id| *id == s))
        .or(ids.first())
}

/// The verdict of one test from its outcomes in successive attempts (first run, reruns).
fn verdict_of(outcomes: &[&Outcome]) -> (Verdict, Option<String>) {
    let first = outcomes[0];
    match first.status {
        Status::Pass => (Verdict::Passed, None),
        Status::NotRun => (Verdict::Skipped, first.message.clone()),
        Status::Fail => {
            let runs = outcomes.len();
            let passes = outcomes.iter().filter(|o| o.status == Status::Pass).count();
            let diff = first
                .diff
                .as_deref()
                .map(first_diff_lines)
                .unwrap_or_default();
            let msg = first.message.clone().unwrap_or_else(|| "failed".into());
            if passes > 0 {
                (Verdict::Flaky, Some(format!("failed then passed: {passes} of {runs} runs passed; first failure: {msg}{diff}")))
            } else {
                let reruns = if runs > 1 {
                    format!(" (failed all {runs} runs)")
                } else {
                    String::new()
                };
                (Verdict::Failed, Some(format!("{msg}{reruns}{diff}")))
            }
        }
    }
}

/// Replace each batch's single result (the agent's pass/fail of one `check` run) by one
/// result per fstests test, from fstests' own reports, with reasons and artifacts. In a
/// batch the guest crashed or hung in, the first test without a report gets the crash;
/// the ones after it did not run. Kernel reports seen while a test ran stay with it and
/// decide over xunit ([`report::apply_findings`]); a flaky result named in `flaky_ok` is
/// accepted with its reason. Returns how many fstests tests got a report.
pub fn apply(
    run: &mut RunResult,
    run_dir: &Path,
    batches: &[Batch],
    flaky_ok: &BTreeMap<String, String>,
) -> usize {
    let mut reported = 0;
    let mut out = Vec::with_capacity(run.tests.len());
    for t in std::mem::take(&mut run.tests) {
        let Some(b) = batches.iter().find(|b| b.name == t.name) else {
            out.push(t);
            continue;
        };
        let batch_dir = run_dir.join("tests").join(&b.name);
        let mut attempts = vec![];
        while let Some(a) = read_attempt(run_dir, &batch_dir, attempts.len() as u32, &b.section) {
            attempts.push(a);
        }
        let mut used_ms = 0u64;
        let mut blamed = false;
        let mut results = vec![];
        for id in &b.ids {
            let name = crate::plan::test_name(&b.section, id);
            let outcomes: Vec<&Outcome> = attempts
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .filter_map(|v| v.iter().find(|o| &o.test == id))
                .collect();
            let stopped = matches!(t.verdict, Verdict::Crashed | Verdict::Hung);
            let mut r = if t.verdict == Verdict::NotRun {
                // The batch never started (the run stopped first): its tests did not run.
                test_result(name, Verdict::NotRun, 0, t.reason.clone())
            } else if !outcomes.is_empty() {
                reported += 1;
                let (verdict, reason) = verdict_of(&outcomes);
                // A float cast saturates; a guest's absurd figure must not overflow the sum.
                let ms = outcomes[0].seconds.map_or(0, |s| (s * 1000.0) as u64);
                used_ms = used_ms.saturating_add(ms);
                let mut r = test_result(name, verdict, ms, reason);
                // The first failure's whole diff and kernel log, for JUnit readers.
                if let Some(o) = outcomes.iter().find(|o| o.status == Status::Fail) {
                    let parts: Vec<String> = [("diff", &o.diff), ("dmesg", &o.dmesg)]
                        .iter()
                        .filter_map(|(what, text)| {
                            text.as_ref().map(|t| format!("--- {what} ---\n{t}"))
                        })
                        .collect();
                    r.details = (!parts.is_empty()).then(|| parts.join("\n"));
                }
                r
            } else if !blamed {
                // The first test without a report: the harness's crash or hang, or the
                // reason check gave no report.
                blamed = true;
                let (verdict, why) = match attempts.first() {
                    // The harness knows why (crash, hang, interrupted run).
                    _ if stopped || (t.verdict == Verdict::InfraError && t.reason.is_some()) => {
                        (t.verdict, t.reason.clone())
                    }
                    Some(Err(e)) => (Verdict::InfraError, Some(e.clone())),
                    _ => (
                        Verdict::InfraError,
                        Some(format!("check reported nothing for {id}")),
                    ),
                };
                test_result(name, verdict, 0, why)
            } else {
                test_result(
                    name,
                    Verdict::NotRun,
                    0,
                    Some(format!("not run: the batch {} stopped before it", b.name)),
                )
            };
            r.findings = t
                .findings
                .iter()
                .filter(|f| owner(f, &b.ids) == Some(id))
                .cloned()
                .collect();
            if r.verdict == Verdict::Flaky {
                r.accepted = flaky_ok.get(&r.name).cloned();
            }
            report::apply_findings(&mut r);
            // Artifacts of every attempt, relative to the run directory.
            for a in 0..attempts.len() {
                let rd = batch_dir.join(format!("attempt-{a}")).join(&b.section);
                for p in crate::artifacts(&rd, id) {
                    if let Ok(rel) = p.strip_prefix(run_dir) {
                        r.artifacts.push(rel.display().to_string());
                    }
                }
            }
            results.push(r);
        }
        // A single-test batch keeps the whole time (check's start included); in a batch the
        // test the guest stopped in gets what the others did not use.
        if let [only] = results.as_mut_slice() {
            only.duration_ms = t.duration_ms;
        } else if let Some(r) = results.iter_mut().find(|r| {
            matches!(
                r.verdict,
                Verdict::Crashed | Verdict::Hung | Verdict::InfraError
            )
        }) {
            r.duration_ms = t.duration_ms.saturating_sub(used_ms);
        }
        // The guest records modes per `check` run: a batch's tests share them.
        if let Some(server) = run.server.as_mut() {
            server.share_modes(&t.name, results.iter().map(|r| r.name.clone()));
        }
        out.extend(results);
    }
    run.tests = out;
    reported
}

/// Where the fstests part of a run's time went: the tests' own time (fstests' figures,
/// every attempt) against the `check` runs' wall time around them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimeSplit {
    /// Tests fstests reported a time for.
    pub tests: usize,
    pub own_ms: u64,
    /// `check` runs and their wall time (start, set-up, checks between tests, wrap-up).
    pub checks: usize,
    pub checks_ms: u64,
    /// The VMs' wall time (with `--jobs`, every VM's added up).
    pub vm_ms: u64,
    /// From the console's kernel timestamps (the prelude's `harness-fstests:` marks
    /// and fstests' `run fstests ID` lines): `check` runs seen from launch to end, and
    /// their start (launch to the first test: config, list, mounts, the scratch mkfs, the
    /// first TEST_DEV check).
    pub timed_checks: usize,
    pub check_start_ms: u64,
    /// Tests timed from their `run fstests` line to the next (or to the end of `check`),
    /// and that time minus their own: the report, set-up and clean-up between tests.
    pub timed_tests: usize,
    pub between_ms: u64,
    /// The VMs' time by the guests' own clocks (0: no console log). Under TCG the guest
    /// counts timer ticks (`refined-jiffies`: it cannot calibrate its TSC) and loses those
    /// its vCPU thread was not running for: on a busy host its seconds last longer than
    /// the host's, and every figure measured in the guest (fstests' own, the console's
    /// timestamps, the tests' durations) is in guest seconds.
    pub guest_ms: u64,
}

/// The `check` runs in a console log, from its kernel timestamps.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConsolePhases {
    /// `check` runs seen from launch to end.
    pub checks: usize,
    /// Their start, up to each one's first test.
    pub start_ms: u64,
    /// Each test's wall time: (section, test id, ms), from its `run fstests ID` line to
    /// the next one or to the end of `check`.
    pub tests: Vec<(String, String, u64)>,
    /// The guest's own clock over the whole run: the last timestamp of each boot, added.
    pub guest_ms: u64,
}

impl ConsolePhases {
    /// A `check` the guest went down in (a reboot restarts the clock and the agent marks
    /// its next test) counts for nothing.
    pub fn from_console(console: &str) -> ConsolePhases {
        struct Open {
            section: String,
            launch: f64,
            running: Option<(String, f64)>,
            start_ms: u64,
            tests: Vec<(String, String, u64)>,
        }
        impl Open {
            /// The running test ends (or check's start, if none ran yet) at `ts`.
            fn next(&mut self, ts: f64) {
                let ms = |from: f64| ((ts - from).max(0.0) * 1000.0) as u64;
                match self.running.take() {
                    None => self.start_ms += ms(self.launch),
                    Some((id, t)) => self.tests.push((self.section.clone(), id, ms(t))),
                }
            }
        }
        let mut p = ConsolePhases::default();
        let mut open: Option<Open> = None;
        let mut last_ts = 0.0;
        for line in console.lines() {
            let Some((ts, text)) = kernel_line(line) else {
                continue;
            };
            if ts < last_ts {
                open = None; // another boot
                p.guest_ms += (last_ts * 1000.0) as u64;
            }
            last_ts = ts;
            if let Some(rest) = text.strip_prefix(CHECK_STARTED) {
                open = Some(Open {
                    section: rest.split_whitespace().next().unwrap_or("").to_string(),
                    launch: ts,
                    running: None,
                    start_ms: 0,
                    tests: vec![],
                });
            } else if text.starts_with(events::KMSG_MARKER) {
                open = None; // the agent started or ended a test: no check runs now
            } else if let Some(o) = open.as_mut() {
                if let Some(rest) = text.strip_prefix("run fstests ") {
                    o.next(ts);
                    let id = rest.split_whitespace().next().unwrap_or("").to_string();
                    o.running = Some((id, ts));
                } else if text.starts_with(CHECK_FINISHED) {
                    o.next(ts);
                    p.checks += 1;
                    p.start_ms += o.start_ms;
                    p.tests.append(&mut o.tests);
                    open = None;
                }
            }
        }
        p.guest_ms += (last_ts * 1000.0) as u64;
        p
    }
}

/// The prelude's kernel log marks around each `check` (`fstests_mark`).
const CHECK_STARTED: &str = "harness-fstests: check_started ";
const CHECK_FINISHED: &str = "harness-fstests: check_finished ";

/// A console line's kernel timestamp (seconds) and text.
fn kernel_line(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (ts, text) = rest.split_once(']')?;
    let ts: f64 = ts.trim().parse().ok()?;
    // An optional caller id: "[    T1] ".
    let text = text.trim_start();
    let text = match text.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((id, r)) if id.trim().starts_with(['T', 'C']) => r.trim_start(),
        _ => text,
    };
    Some((ts, text.trim_end_matches('\r')))
}

impl TimeSplit {
    /// Another run's split added to this one (`vm-test --jobs`: one per VM).
    pub fn add(&mut self, other: &TimeSplit) {
        self.tests += other.tests;
        self.own_ms = self.own_ms.saturating_add(other.own_ms);
        self.checks += other.checks;
        self.checks_ms = self.checks_ms.saturating_add(other.checks_ms);
        self.vm_ms = self.vm_ms.saturating_add(other.vm_ms);
        self.timed_checks += other.timed_checks;
        self.check_start_ms = self.check_start_ms.saturating_add(other.check_start_ms);
        self.timed_tests += other.timed_tests;
        self.between_ms = self.between_ms.saturating_add(other.between_ms);
        self.guest_ms = self.guest_ms.saturating_add(other.guest_ms);
    }
}

/// The time split of the batches in `run`, read before [`apply`] replaces them.
pub fn time_split(run: &RunResult, run_dir: &Path, batches: &[Batch]) -> TimeSplit {
    let mut split = TimeSplit {
        vm_ms: run.duration_ms,
        ..TimeSplit::default()
    };
    // Each test's own times, in the order its attempts ran: (section, id) -> ms.
    let mut own: BTreeMap<(&str, &str), std::collections::VecDeque<u64>> = BTreeMap::new();
    for t in &run.tests {
        let Some(b) = batches.iter().find(|b| b.name == t.name) else {
            continue;
        };
        let batch_dir = run_dir.join("tests").join(&b.name);
        let mut attempt = 0;
        while let Some(a) = read_attempt(run_dir, &batch_dir, attempt, &b.section) {
            attempt += 1;
            split.checks += 1;
            for o in a.iter().flatten() {
                let Some(id) = b.ids.iter().find(|id| **id == o.test) else {
                    continue;
                };
                split.tests += usize::from(attempt == 1);
                // A float cast saturates; a guest's absurd figure must not overflow.
                let ms = o.seconds.map_or(0, |s| (s * 1000.0) as u64);
                split.own_ms = split.own_ms.saturating_add(ms);
                own.entry((b.section.as_str(), id.as_str()))
                    .or_default()
                    .push_back(ms);
            }
        }
        split.checks_ms = split.checks_ms.saturating_add(t.duration_ms);
    }
    // The host writes the console log; without one the phases stay unknown.
    if let Ok(console) = std::fs::read(run_dir.join("console.log")) {
        let p = ConsolePhases::from_console(&String::from_utf8_lossy(&console));
        split.timed_checks = p.checks;
        split.check_start_ms = p.start_ms;
        split.guest_ms = p.guest_ms;
        for (section, id, wall) in &p.tests {
            // A test with no report of its own (check stopped in it) is not timed.
            let Some(mine) = own
                .get_mut(&(section.as_str(), id.as_str()))
                .and_then(|q| q.pop_front())
            else {
                continue;
            };
            split.timed_tests += 1;
            split.between_ms = split.between_ms.saturating_add(wall.saturating_sub(mine));
        }
    }
    split
}

/// The harness's own overhead next to the tests' time, for summary.md.
pub fn time_markdown(run: &RunResult, split: &TimeSplit) -> String {
    let s = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let per = |ms: u64, n: usize| match n {
        0 => "-".to_string(),
        n => format!("{:.1} s", ms as f64 / 1000.0 / n as f64),
    };
    let check_ms = split.checks_ms.saturating_sub(split.own_ms);
    // One clock for every row: the guest's, which measured the rest, when the console
    // gave it; the host's VM wall time otherwise.
    let vm_ms = match split.guest_ms {
        0 => split.vm_ms,
        g => g,
    };
    let outside_ms = vm_ms.saturating_sub(split.checks_ms);
    let overhead_ms = vm_ms.saturating_sub(split.own_ms);
    let mut md = format!(
        "\n### Where the time went\n\n| part | time | per test |\n|---|---|---|\n\
         | tests' own time ({} tests, fstests' figures: the post-test fsck and dmesg checks included) | {} | {} |\n",
        split.tests,
        s(split.own_ms),
        per(split.own_ms, split.tests),
    );
    if split.timed_checks > 0 {
        // What the console's timestamps tell apart within the `check` runs.
        let rest_ms = check_ms
            .saturating_sub(split.check_start_ms)
            .saturating_sub(split.between_ms);
        md.push_str(&format!(
            "| `check` start, to its first test ({} `check` runs timed: {} each) | {} | {} |\n\
             | between tests in `check` (report, set-up, clean-up; {} tests timed: {} each) | {} | {} |\n\
             | rest of the `check` runs (end, release, reruns' starts, runs the guest died in) | {} | {} |\n",
            split.timed_checks,
            per(split.check_start_ms, split.timed_checks),
            s(split.check_start_ms),
            per(split.check_start_ms, split.tests),
            split.timed_tests,
            per(split.between_ms, split.timed_tests),
            s(split.between_ms),
            per(split.between_ms, split.tests),
            s(rest_ms),
            per(rest_ms, split.tests),
        ));
    } else {
        md.push_str(&format!(
            "| `check` around them (start, set-up, checks between tests; `check` runs: {}) | {} | {} |\n",
            split.checks,
            s(check_ms),
            per(check_ms, split.tests),
        ));
    }
    md.push_str(&format!(
        "| boots, guest set-up, other tests (boots: {}) | {} | {} |\n\
         | **harness overhead** (VM time {} minus the tests' own) | {} | **{}** |\n",
        run.boots,
        s(outside_ms),
        per(outside_ms, split.tests),
        s(vm_ms),
        s(overhead_ms),
        per(overhead_ms, split.tests),
    ));
    if split.guest_ms > 0 {
        md.push_str(&format!(
            "\nTimes by the guest's clock: {} of it in {} of the host's. A TCG guest counts \
             timer ticks and loses those its vCPU did not run for, so on a busy host its \
             seconds are longer than real ones (all of the above in guest seconds).\n",
            s(split.guest_ms),
            s(split.vm_ms),
        ));
    }
    md
}

/// The first changed lines of a .out.bad diff, for the one-line reason.
fn first_diff_lines(diff: &str) -> String {
    let lines: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .take(3)
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!("; diff: {}", lines.join(" | "))
    }
}

/// fstests status of each fstests test of a run (for baseline comparison).
pub fn statuses(run: &RunResult) -> BTreeMap<String, Status> {
    run.tests
        .iter()
        .filter(|t| t.name.starts_with("fstests/"))
        .map(|t| {
            let s = match t.verdict {
                Verdict::Passed | Verdict::Flaky => Status::Pass,
                Verdict::Failed | Verdict::Crashed | Verdict::Hung => Status::Fail,
                _ => Status::NotRun,
            };
            (t.name.clone(), s)
        })
        .collect()
}

/// The slowest finished tests, for the summary.
pub fn slowest(run: &RunResult, n: usize) -> Vec<&TestResult> {
    let mut v: Vec<&TestResult> = run
        .tests
        .iter()
        .filter(|t| t.name.starts_with("fstests/") && t.duration_ms > 0)
        .collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.duration_ms));
    v.truncate(n);
    v
}

/// The fstests part of summary.md: counts, slowest tests, baseline comparison.
pub fn summary_markdown(run: &RunResult, diff: Option<&crate::Diff>) -> String {
    let mut md = String::from("\n## fstests\n\n| verdict | tests |\n|---|---|\n");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in run.tests.iter().filter(|t| t.name.starts_with("fstests/")) {
        *counts.entry(t.verdict.as_str()).or_default() += 1;
    }
    for (v, n) in &counts {
        md.push_str(&format!("| {v} | {n} |\n"));
    }
    md.push_str("\n### Slowest tests\n\n| test | time |\n|---|---|\n");
    for t in slowest(run, 10) {
        md.push_str(&format!(
            "| {} | {:.1} s |\n",
            t.name,
            t.duration_ms as f64 / 1000.0
        ));
    }
    if let Some(d) = diff {
        md.push_str("\n### Against the baseline\n\n");
        md.push_str(&d.render_markdown());
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, verdict: Verdict) -> TestResult {
        let mut t = TestResult::new(name, verdict);
        t.duration_ms = 1000;
        t.exit_code = Some(0);
        t
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn diff_lines_skip_the_headers() {
        let d = "--- a\n+++ b\n@@ -1 +1 @@\n-QA output created by 001\n+oops\n";
        assert_eq!(
            first_diff_lines(d),
            "; diff: -QA output created by 001 | +oops"
        );
        assert_eq!(first_diff_lines("no change"), "");
    }

    #[test]
    fn crashes_count_as_failures_against_a_baseline() {
        let run = RunResult {
            tests: vec![
                result("fstests/iomapfs-4k/generic/001", Verdict::Crashed),
                result("fstests/iomapfs-4k/generic/002", Verdict::Flaky),
                result("fstests/iomapfs-4k/generic/003", Verdict::Expunged),
                result("smoke/mount", Verdict::Failed),
            ],
            ..crate::collect::tests::empty_run()
        };
        let s = statuses(&run);
        assert_eq!(s.len(), 3);
        assert_eq!(s["fstests/iomapfs-4k/generic/001"], Status::Fail);
        assert_eq!(s["fstests/iomapfs-4k/generic/002"], Status::Pass);
        assert_eq!(s["fstests/iomapfs-4k/generic/003"], Status::NotRun);
    }

    /// Real fstests output (harness/fstests/tests/fixtures) laid out as a vm-test run
    /// directory: the verdicts, reasons and artifacts come from it.
    #[test]
    fn real_results_become_verdicts() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let run_dir = tempfile::tempdir().unwrap();
        let put = |test: &str, attempt: u32, xml: Option<&str>| {
            let d = run_dir
                .path()
                .join(format!("tests/fstests/ext4_4k/{test}/attempt-{attempt}"));
            std::fs::create_dir_all(d.join("ext4_4k/generic")).unwrap();
            std::fs::write(
                d.join("check.out"),
                "common/rc: could not mount /dev/vdb on /mnt/test\n",
            )
            .unwrap();
            if let Some(xml) = xml {
                std::fs::copy(fx.join(xml), d.join("ext4_4k/result.xml")).unwrap();
            }
            let id = test.rsplit('/').next().unwrap();
            for ext in ["out.bad", "full", "dmesg"] {
                let f = fx.join(format!("results/ext4_4k/generic/{id}.{ext}"));
                if f.is_file() {
                    std::fs::copy(&f, d.join(format!("ext4_4k/generic/{id}.{ext}"))).unwrap();
                }
            }
        };
        // 002 failed (output mismatch), then passed on the rerun (a real pass from the guest).
        put("generic/002", 0, Some("xunit/result.xml"));
        put("generic/002", 1, Some("vm-guest/result.xml"));
        // 005 failed both times (dmesg warning).
        put("generic/005", 0, Some("xunit/result.xml"));
        put("generic/005", 1, Some("xunit/result.xml"));
        put("generic/001", 0, Some("xunit/result.xml"));
        put("generic/010", 0, Some("xunit/result.xml"));
        put("generic/020", 0, None);
        let names = [
            "generic/001",
            "generic/002",
            "generic/005",
            "generic/010",
            "generic/020",
            "generic/013",
        ];
        let mut run = RunResult {
            tests: names
                .iter()
                .map(|n| {
                    result(
                        &format!("fstests/ext4_4k/{n}"),
                        if *n == "generic/001" {
                            Verdict::Passed
                        } else {
                            Verdict::Failed
                        },
                    )
                })
                .collect(),
            ..empty_run()
        };
        run.tests[5].verdict = Verdict::Crashed;
        let batches: Vec<Batch> = names
            .iter()
            .map(|n| Batch {
                name: format!("fstests/ext4_4k/{n}"),
                section: "ext4_4k".into(),
                ids: vec![n.to_string()],
            })
            .collect();
        assert_eq!(apply(&mut run, run_dir.path(), &batches, &none()), 4);
        let v: Vec<Verdict> = run.tests.iter().map(|t| t.verdict).collect();
        use Verdict::*;
        assert_eq!(v, [Passed, Flaky, Failed, Skipped, InfraError, Crashed]);
        let reason = |i: usize| run.tests[i].reason.clone().unwrap_or_default();
        assert!(
            reason(1).contains("1 of 2 runs passed") && reason(1).contains("output mismatch"),
            "{}",
            reason(1)
        );
        assert!(reason(1).contains("diff: "), "{}", reason(1));
        assert!(
            reason(2).contains("_check_dmesg") && reason(2).contains("failed all 2 runs"),
            "{}",
            reason(2)
        );
        assert!(reason(3).contains("dbtest not built"), "{}", reason(3));
        assert!(
            reason(4).contains("no result.xml") && reason(4).contains("could not mount"),
            "{}",
            reason(4)
        );
        let arts = &run.tests[1].artifacts;
        assert!(
            arts.iter()
                .any(|a| a.ends_with("attempt-0/ext4_4k/generic/002.out.bad")),
            "{arts:?}"
        );
        assert!(run.tests[2]
            .artifacts
            .iter()
            .any(|a| a.ends_with("005.dmesg")));
        // The whole diff and kernel log ride along for JUnit.
        let d2 = run.tests[1].details.as_deref().unwrap_or_default();
        assert!(
            d2.starts_with("--- diff ---") && d2.contains("002.out.bad"),
            "{d2}"
        );
        let d5 = run.tests[2].details.as_deref().unwrap_or_default();
        assert!(
            d5.contains("--- dmesg ---") && d5.contains("WARNING: fixture capture"),
            "{d5}"
        );
        assert!(run.tests[0].details.is_none());
        let md = summary_markdown(&run, None);
        assert!(
            md.contains("| flaky | 1 |") && md.contains("| skipped | 1 |"),
            "{md}"
        );
    }

    /// The tests' own time (xunit) against the `check` runs' wall time and the run's.
    #[test]
    fn the_time_split_separates_the_harness_from_the_tests() {
        let run_dir = run_dir_with(&[("batch-001", 0, "xunit/result.xml")]);
        let ids = [
            "generic/001",
            "generic/002",
            "generic/005",
            "generic/010",
            "generic/019",
            "generic/034",
        ];
        let b = batch("batch-001", &ids);
        let mut t = result("fstests/ext4_4k/batch-001", Verdict::Failed);
        t.duration_ms = 400_000;
        let run = RunResult {
            tests: vec![t],
            duration_ms: 460_000,
            boots: 1,
            ..empty_run()
        };
        let split = time_split(&run, run_dir.path(), &[b]);
        let xml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xunit/result.xml"),
        )
        .unwrap();
        let own: f64 = crate::parse_xunit(&xml)
            .unwrap()
            .iter()
            .filter_map(|o| o.seconds)
            .sum();
        assert_eq!(split.tests, 6);
        assert_eq!(split.checks, 1);
        assert_eq!(split.own_ms, (own * 1000.0) as u64);
        assert_eq!(split.checks_ms, 400_000);
        let md = time_markdown(&run, &split);
        let overhead = (460_000 - split.own_ms) as f64 / 1000.0 / 6.0;
        assert!(md.contains(&format!("**{overhead:.1} s**")), "{md}");
        assert!(
            md.contains("| boots, guest set-up, other tests (boots: 1) | 60.0 s |"),
            "{md}"
        );
        // Two VMs at once (`--jobs 2`): the overhead is of the VMs' time, not the run's
        // shorter wall time.
        let mut both = split;
        both.add(&split);
        assert_eq!((both.tests, both.vm_ms), (12, 920_000));
        let md = time_markdown(&run, &both);
        assert!(md.contains(&format!("**{overhead:.1} s**")), "{md}");
        assert!(md.contains("| `check` around them"), "no console: {md}");

        // With the console's timestamps, check's start and the time between tests apart.
        // generic/001 took 14 s by fstests' figure and 20 s from its line to the next:
        // 6 s between tests; generic/002 2 s and 3 s; generic/034 the last of check.
        let console = "\
[    5.000000] harness-agent: test_started fstests/ext4_4k/batch-001
[    6.000000] harness-fstests: check_started ext4_4k 0
[   46.500000] run fstests generic/001 at 2026-01-01 00:00:00
[   66.500000] run fstests generic/002 at 2026-01-01 00:00:20
[   69.500000] run fstests generic/005 at 2026-01-01 00:00:23
[   72.000000] run fstests generic/010 at 2026-01-01 00:00:26
[   73.000000] run fstests generic/019 at 2026-01-01 00:00:27
[   74.000000] run fstests generic/034 at 2026-01-01 00:00:28
[   80.000000] harness-fstests: check_finished ext4_4k 0
[   81.000000] harness-agent: test_finished fstests/ext4_4k/batch-001
";
        std::fs::write(run_dir.path().join("console.log"), console).unwrap();
        let split = time_split(&run, run_dir.path(), &[batch("batch-001", &ids)]);
        assert_eq!((split.timed_checks, split.check_start_ms), (1, 40_500));
        // The guest's clock ran 81 s (its last timestamp) of the host's 460 s.
        assert_eq!(split.guest_ms, 81_000);
        assert_eq!(split.timed_tests, 6);
        let own_034 = split.own_ms - (14 + 2 + 2) * 1000;
        assert_eq!(
            split.between_ms,
            6_000 + 1_000 + 500 + 1_000 + 1_000 + (6_000 - own_034)
        );
        let md = time_markdown(&run, &split);
        assert!(
            md.contains(
                "| `check` start, to its first test (1 `check` runs timed: 40.5 s each) | 40.5 s |"
            ),
            "{md}"
        );
        assert!(
            md.contains(&format!(
                "| between tests in `check` (report, set-up, clean-up; 6 tests timed: {:.1} s each) |",
                split.between_ms as f64 / 6000.0
            )),
            "{md}"
        );
        assert!(
            md.contains("Times by the guest's clock: 81.0 s of it in 460.0 s of the host's."),
            "{md}"
        );
    }

    /// Only `check` runs seen from launch to end count: one the guest went down in
    /// (the clock restarts, the agent marks its next test) does not.
    #[test]
    fn console_phases_skip_a_check_the_guest_died_in() {
        let console = "\
[    6.000000] harness-fstests: check_started iomapfs-4k 0
[   46.000000] run fstests generic/001 at 2026-01-01 00:00:00
[   50.000000] BUG: kernel NULL pointer dereference
[    0.000000] Linux version 6.12.0
[    5.000000] harness-agent: test_started fstests/iomapfs-4k/batch-001.2
[    6.000000] [    T1] harness-fstests: check_started iomapfs-4k 0
[   36.000000] run fstests generic/002 at 2026-01-01 00:01:00
[   39.250000] run fstests generic/003 at 2026-01-01 00:01:03
[   41.000000] harness-fstests: check_finished iomapfs-4k 0
[   42.000000] harness-fstests: check_started iomapfs-4k 1
[   52.000000] harness-fstests: check_finished iomapfs-4k 1
";
        let p = ConsolePhases::from_console(console);
        assert_eq!(p.checks, 2);
        assert_eq!(p.start_ms, 30_000 + 10_000);
        assert_eq!(
            p.tests,
            [
                ("iomapfs-4k".to_string(), "generic/002".to_string(), 3_250),
                ("iomapfs-4k".to_string(), "generic/003".to_string(), 1_750),
            ]
        );
        // Two boots: 50 s, then 52 s by the guest's clock.
        assert_eq!(p.guest_ms, 102_000);
        assert_eq!(ConsolePhases::from_console(""), ConsolePhases::default());
    }

    /// A batch the guest crashed in: the report written so far (a real interrupted
    /// fstests report) gives the finished tests; the next one crashed, the rest did not run.
    #[test]
    fn a_crash_in_a_batch_blames_the_first_unreported_test() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let run_dir = tempfile::tempdir().unwrap();
        let d = run_dir
            .path()
            .join("tests/fstests/ext4_4k/batch-001/attempt-0/ext4_4k");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fx.join("interrupted/result.xml"), d.join("result.xml")).unwrap();
        let mut crashed = result("fstests/ext4_4k/batch-001", Verdict::Crashed);
        crashed.duration_ms = 60_000;
        crashed.reason = Some("kernel BUG".into());
        let mut run = RunResult {
            tests: vec![result("smoke/mount", Verdict::Passed), crashed],
            ..empty_run()
        };
        let b = batch("batch-001", &["generic/001", "generic/003", "generic/011"]);
        assert_eq!(apply(&mut run, run_dir.path(), &[b], &none()), 1);
        let got: Vec<(&str, Verdict)> = run
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.verdict))
            .collect();
        assert_eq!(
            got,
            [
                ("smoke/mount", Verdict::Passed),
                ("fstests/ext4_4k/generic/001", Verdict::Passed),
                ("fstests/ext4_4k/generic/003", Verdict::Crashed),
                ("fstests/ext4_4k/generic/011", Verdict::NotRun),
            ]
        );
        assert_eq!(run.tests[2].reason.as_deref(), Some("kernel BUG"));
        // The crashed test gets the batch's time the finished one did not use (7 s).
        assert_eq!(run.tests[2].duration_ms, 53_000);
        assert!(run.tests[3]
            .reason
            .as_deref()
            .unwrap()
            .contains("stopped before it"));

        // A batch the run never reached: every test is not run, for the run's reason.
        let mut never = result("fstests/ext4_4k/batch-002", Verdict::NotRun);
        never.reason = Some("interrupted".into());
        let mut run = RunResult {
            tests: vec![never],
            ..empty_run()
        };
        let b = batch("batch-002", &["generic/020", "generic/021"]);
        assert_eq!(apply(&mut run, run_dir.path(), &[b], &none()), 0);
        assert_eq!(run.tests.len(), 2);
        assert!(run
            .tests
            .iter()
            .all(|t| t.verdict == Verdict::NotRun && t.reason.as_deref() == Some("interrupted")));

        // A batch the run stopped in (Ctrl-C): the running test carries the run's reason.
        let mut stopped = result("fstests/ext4_4k/batch-001", Verdict::InfraError);
        stopped.reason = Some("interrupted (Ctrl-C)".into());
        let mut run = RunResult {
            tests: vec![stopped],
            ..empty_run()
        };
        let b = batch("batch-001", &["generic/001", "generic/003", "generic/011"]);
        apply(&mut run, run_dir.path(), &[b], &none());
        assert_eq!(run.tests[1].verdict, Verdict::InfraError);
        assert_eq!(run.tests[1].reason.as_deref(), Some("interrupted (Ctrl-C)"));
        assert_eq!(run.tests[2].verdict, Verdict::NotRun);
    }

    /// A run directory with real fstests reports: `(test, attempt, fixture xml)`.
    fn run_dir_with(reports: &[(&str, u32, &str)]) -> tempfile::TempDir {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let run_dir = tempfile::tempdir().unwrap();
        for (batch, attempt, xml) in reports {
            let d = run_dir.path().join(format!(
                "tests/fstests/ext4_4k/{batch}/attempt-{attempt}/ext4_4k"
            ));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(fx.join(xml), d.join("result.xml")).unwrap();
        }
        run_dir
    }

    fn batch(name: &str, ids: &[&str]) -> Batch {
        Batch {
            name: format!("fstests/ext4_4k/{name}"),
            section: "ext4_4k".into(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn finding(
        kind: report::FindingKind,
        test: &str,
        subtest: Option<&str>,
        excerpt: &str,
    ) -> Finding {
        Finding {
            kind,
            title: excerpt.lines().next().unwrap_or_default().to_string(),
            test: Some(test.into()),
            subtest: subtest.map(str::to_string),
            excerpt: excerpt.into(),
        }
    }

    /// fstests passed generic/001 (real xunit report), but the kernel reported a hung task
    /// on the console while it ran: the test failed, and the excerpt is in results.json
    /// and JUnit.
    #[test]
    fn a_hung_task_fails_a_test_fstests_passed() {
        let run_dir = run_dir_with(&[("generic/001", 0, "xunit/result.xml")]);
        let hung = "INFO: task fsstress:321 blocked for more than 120 seconds.\n      Not tainted 6.12.57 #1\nCall Trace:\n fuse_iomap_begin+0x1/0x2\n";
        let mut t = result("fstests/ext4_4k/generic/001", Verdict::Passed);
        // The vm crate already turned the batch's pass into a failure; xunit says passed.
        t.findings = vec![finding(
            report::FindingKind::HungTask,
            &t.name.clone(),
            None,
            hung,
        )];
        report::apply_findings(&mut t);
        let mut run = RunResult {
            tests: vec![t],
            ..empty_run()
        };
        assert_eq!(
            apply(
                &mut run,
                run_dir.path(),
                &[batch("generic/001", &["generic/001"])],
                &none()
            ),
            1
        );
        let r = &run.tests[0];
        assert_eq!(r.verdict, Verdict::Failed, "{r:#?}");
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .starts_with("kernel HungTask: INFO: task fsstress:321"),
            "{:?}",
            r.reason
        );
        assert_eq!(r.findings.len(), 1);
        report::conclude(&mut run);
        assert_eq!(run.verdict, Verdict::Failed);
        let json = serde_json::to_string(&run).unwrap();
        assert!(json.contains("fuse_iomap_begin+0x1/0x2"), "{json}");
        let xml = report::junit_xml(&run).unwrap();
        assert!(
            xml.contains("<failure ") && xml.contains("fuse_iomap_begin+0x1/0x2"),
            "{xml}"
        );

        // Without the report, the same xunit result is a pass.
        let run_dir = run_dir_with(&[("generic/001", 0, "xunit/result.xml")]);
        let mut run = RunResult {
            tests: vec![result("fstests/ext4_4k/generic/001", Verdict::Passed)],
            ..empty_run()
        };
        apply(
            &mut run,
            run_dir.path(),
            &[batch("generic/001", &["generic/001"])],
            &none(),
        );
        assert_eq!(run.tests[0].verdict, Verdict::Passed);
    }

    /// In a batch, fstests' "run fstests ID" line decides which test a report belongs to;
    /// one before any such line goes to the batch's first test. A skipped test with a
    /// kernel WARN fails too.
    #[test]
    fn reports_in_a_batch_go_to_the_test_that_ran() {
        let run_dir = run_dir_with(&[("batch-001", 0, "xunit/result.xml")]);
        let name = "fstests/ext4_4k/batch-001";
        let mut t = result(name, Verdict::Failed);
        t.findings = vec![
            finding(
                report::FindingKind::Warning,
                name,
                None,
                "WARNING: CPU: 0 PID: 1 at fs/ext4/super.c:1 x\n",
            ),
            finding(
                report::FindingKind::RcuStall,
                name,
                Some("generic/010"),
                "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
            ),
        ];
        let mut run = RunResult {
            tests: vec![t],
            ..empty_run()
        };
        apply(
            &mut run,
            run_dir.path(),
            &[batch(
                "batch-001",
                &["generic/001", "generic/010", "generic/019"],
            )],
            &none(),
        );
        let got: Vec<(&str, Verdict, usize)> = run
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.verdict, t.findings.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("fstests/ext4_4k/generic/001", Verdict::Failed, 1),
                ("fstests/ext4_4k/generic/010", Verdict::Failed, 1),
                ("fstests/ext4_4k/generic/019", Verdict::Skipped, 0),
            ]
        );
        assert!(
            run.tests[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("(the test said: "),
            "{:?}",
            run.tests[1].reason
        );
    }

    /// generic/002 failed, then passed on the rerun (real reports): flaky, which fails the
    /// run unless an expunge entry of kind flaky or --accept-flaky names it.
    #[test]
    fn a_flake_fails_the_run_unless_accepted() {
        let reports = [
            ("generic/002", 0, "xunit/result.xml"),
            ("generic/002", 1, "vm-guest/result.xml"),
        ];
        let b = [batch("generic/002", &["generic/002"])];
        let run_dir = run_dir_with(&reports);
        let mut run = RunResult {
            tests: vec![result("fstests/ext4_4k/generic/002", Verdict::Failed)],
            ..empty_run()
        };
        apply(&mut run, run_dir.path(), &b, &none());
        assert_eq!(run.tests[0].verdict, Verdict::Flaky);
        assert_eq!(run.tests[0].accepted, None);
        report::conclude(&mut run);
        assert_eq!((run.verdict, run.verdict.exit_code()), (Verdict::Flaky, 1));

        let ok = BTreeMap::from([(
            "fstests/ext4_4k/generic/002".to_string(),
            "known flaky: races (https://x.org/1; f.toml)".to_string(),
        )]);
        let mut run = RunResult {
            tests: vec![result("fstests/ext4_4k/generic/002", Verdict::Failed)],
            ..empty_run()
        };
        apply(&mut run, run_dir.path(), &b, &ok);
        assert_eq!(
            run.tests[0].accepted.as_deref(),
            Some("known flaky: races (https://x.org/1; f.toml)")
        );
        report::conclude(&mut run);
        assert_eq!(run.verdict, Verdict::Passed);

        // An accepted flake with a kernel report still fails.
        let mut t = result("fstests/ext4_4k/generic/002", Verdict::Failed);
        t.findings = vec![finding(
            report::FindingKind::Warning,
            &t.name.clone(),
            None,
            "WARNING: x\n",
        )];
        let mut run = RunResult {
            tests: vec![t],
            ..empty_run()
        };
        apply(&mut run, run_dir.path(), &b, &ok);
        assert_eq!(run.tests[0].verdict, Verdict::Failed);
    }

    /// Every fstests test skipped (real report: generic/010 needs dbtest): not PASSED.
    #[test]
    fn all_skipped_is_not_passed() {
        let run_dir = run_dir_with(&[
            ("generic/010", 0, "xunit/result.xml"),
            ("generic/019", 0, "xunit/result.xml"),
        ]);
        let mut run = RunResult {
            tests: vec![
                result("fstests/ext4_4k/generic/010", Verdict::Passed),
                result("fstests/ext4_4k/generic/019", Verdict::Passed),
            ],
            ..empty_run()
        };
        let b = [
            batch("generic/010", &["generic/010"]),
            batch("generic/019", &["generic/019"]),
        ];
        apply(&mut run, run_dir.path(), &b, &none());
        report::conclude(&mut run);
        assert_eq!(run.verdict, Verdict::NothingPassed);
        assert_eq!(run.verdict.exit_code(), 4);
        assert_eq!(
            run.reason.as_deref(),
            Some("no test passed (2 skipped): nothing was verified")
        );
        assert!(
            report::summary_text(&run).contains("NOTHING_PASSED (2 skipped)"),
            "{}",
            report::summary_text(&run)
        );
    }

    /// A guest's link in place of a report is not followed: the host reads no file of its own.
    #[test]
    fn a_linked_report_is_not_read() {
        let run_dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xunit/result.xml");
        std::fs::copy(fx, outside.path().join("result.xml")).unwrap();
        let d = run_dir
            .path()
            .join("tests/fstests/ext4_4k/generic/001/attempt-0");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("ext4_4k")).unwrap();
        let mut run = RunResult {
            tests: vec![result("fstests/ext4_4k/generic/001", Verdict::Passed)],
            ..empty_run()
        };
        assert_eq!(
            apply(
                &mut run,
                run_dir.path(),
                &[batch("generic/001", &["generic/001"])],
                &none()
            ),
            0
        );
        assert_eq!(
            run.tests[0].verdict,
            Verdict::InfraError,
            "{:?}",
            run.tests[0]
        );
    }

    pub(super) fn empty_run() -> RunResult {
        RunResult {
            verdict: Verdict::Passed,
            accel: "tcg".into(),
            machine: "microvm".into(),
            boots: 1,
            ..RunResult::empty("t")
        }
    }
}
