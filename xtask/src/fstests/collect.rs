//! After the run: fstests' own results (each attempt's xunit result.xml) decide the verdict
//! of every test the guest finished; crashes and hangs stay as the harness saw them.
use std::collections::BTreeMap;
use std::path::Path;

use ::fstests::{Outcome, Status};

use super::Batch;
use report::{RunResult, TestResult, Verdict};

/// What fstests reported in one attempt of a batch: its outcomes, or why there are none.
fn read_attempt(
    batch_dir: &Path,
    attempt: u32,
    section: &str,
) -> Option<Result<Vec<Outcome>, String>> {
    let dir = batch_dir.join(format!("attempt-{attempt}"));
    if !dir.is_dir() {
        return None;
    }
    let xml = dir.join(section).join("result.xml");
    let Ok(text) = std::fs::read_to_string(&xml) else {
        let out = std::fs::read_to_string(dir.join("check.out")).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Some(Err(format!(
            "check wrote no result.xml: {}",
            tail.join(" / ")
        )));
    };
    // A report cut short by a crash may not parse; its finished tests are then lost too.
    Some(::fstests::parse_xunit(&text).map_err(|e| format!("{}: {e:#}", xml.display())))
}

fn test_result(
    name: String,
    verdict: Verdict,
    duration_ms: u64,
    reason: Option<String>,
) -> TestResult {
    TestResult {
        name,
        verdict,
        duration_ms,
        exit_code: None,
        signal: None,
        slow: false,
        reason,
        findings: vec![],
        artifacts: vec![],
        details: None,
    }
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
/// the ones after it did not run. Returns how many fstests tests got a report.
pub fn apply(run: &mut RunResult, run_dir: &Path, batches: &[Batch]) -> usize {
    let mut reported = 0;
    let mut out = Vec::with_capacity(run.tests.len());
    for t in std::mem::take(&mut run.tests) {
        let Some(b) = batches.iter().find(|b| b.name == t.name) else {
            out.push(t);
            continue;
        };
        let batch_dir = run_dir.join("tests").join(&b.name);
        let mut attempts = vec![];
        while let Some(a) = read_attempt(&batch_dir, attempts.len() as u32, &b.section) {
            attempts.push(a);
        }
        let mut used_ms = 0;
        let mut blamed = false;
        let mut results = vec![];
        for id in &b.ids {
            let name = super::test_name(&b.section, id);
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
                let ms = outcomes[0].seconds.map_or(0, |s| (s * 1000.0) as u64);
                used_ms += ms;
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
                let mut r = test_result(name, verdict, 0, why);
                r.findings = t.findings.clone();
                r
            } else {
                test_result(
                    name,
                    Verdict::NotRun,
                    0,
                    Some(format!("not run: the batch {} stopped before it", b.name)),
                )
            };
            // Artifacts of every attempt, relative to the run directory.
            for a in 0..attempts.len() {
                let rd = batch_dir.join(format!("attempt-{a}")).join(&b.section);
                for p in ::fstests::artifacts(&rd, id) {
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
        out.extend(results);
    }
    run.tests = out;
    reported
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
pub fn summary_markdown(run: &RunResult, diff: Option<&::fstests::Diff>) -> String {
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
        TestResult {
            name: name.into(),
            verdict,
            duration_ms: 1000,
            exit_code: Some(0),
            signal: None,
            slow: false,
            reason: None,
            findings: vec![],
            artifacts: vec![],
            details: None,
        }
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
            ..crate::fstests::collect::tests::empty_run()
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
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/fstests/tests/fixtures");
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
        assert_eq!(apply(&mut run, run_dir.path(), &batches), 4);
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
        // Baseline: 005 failing before, 002 newly flaky is not a failure.
        let md = summary_markdown(&run, None);
        assert!(
            md.contains("| flaky | 1 |") && md.contains("| skipped | 1 |"),
            "{md}"
        );
    }

    /// A batch the guest crashed in: the report written so far (a real interrupted
    /// fstests report) gives the finished tests; the next one crashed, the rest did not run.
    #[test]
    fn a_crash_in_a_batch_blames_the_first_unreported_test() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/fstests/tests/fixtures");
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
        let ids = ["generic/001", "generic/003", "generic/011"]
            .map(String::from)
            .to_vec();
        let batch = Batch {
            name: "fstests/ext4_4k/batch-001".into(),
            section: "ext4_4k".into(),
            ids,
        };
        assert_eq!(apply(&mut run, run_dir.path(), &[batch]), 1);
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
        let ids = vec!["generic/020".to_string(), "generic/021".to_string()];
        let batch = Batch {
            name: "fstests/ext4_4k/batch-002".into(),
            section: "ext4_4k".into(),
            ids,
        };
        assert_eq!(apply(&mut run, run_dir.path(), &[batch]), 0);
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
        let ids = ["generic/001", "generic/003", "generic/011"]
            .map(String::from)
            .to_vec();
        let batch = Batch {
            name: "fstests/ext4_4k/batch-001".into(),
            section: "ext4_4k".into(),
            ids,
        };
        apply(&mut run, run_dir.path(), &[batch]);
        assert_eq!(run.tests[1].verdict, Verdict::InfraError);
        assert_eq!(run.tests[1].reason.as_deref(), Some("interrupted (Ctrl-C)"));
        assert_eq!(run.tests[2].verdict, Verdict::NotRun);
    }

    pub(super) fn empty_run() -> RunResult {
        RunResult {
            schema: report::RESULTS_SCHEMA,
            id: "t".into(),
            started_at: String::new(),
            duration_ms: 0,
            verdict: Verdict::Passed,
            reason: None,
            accel: "tcg".into(),
            accel_note: None,
            machine: "microvm".into(),
            kernel_image: String::new(),
            kernel_release: None,
            image: String::new(),
            iomapfs_version: None,
            e2fsprogs_version: None,
            server_mode: None,
            server_error: None,
            boot_to_ready_ms: None,
            kernel_boot_ms: None,
            host_ready_ms: None,
            setup_ms: None,
            boots: 1,
            tests: vec![],
            findings: vec![],
            console_excerpt: None,
        }
    }
}
