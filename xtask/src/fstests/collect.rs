//! After the run: fstests' own results (each attempt's xunit result.xml) decide the verdict
//! of every test the guest finished; crashes and hangs stay as the harness saw them.
use std::collections::BTreeMap;
use std::path::Path;

use ::fstests::{Outcome, Status};
use report::{RunResult, TestResult, Verdict};

/// One attempt of one test, as fstests reported it.
fn attempt_outcome(test_dir: &Path, attempt: u32, section: &str, id: &str) -> Option<Result<Outcome, String>> {
    let dir = test_dir.join(format!("attempt-{attempt}"));
    if !dir.is_dir() {
        return None;
    }
    let xml = dir.join(section).join("result.xml");
    let text = match std::fs::read_to_string(&xml) {
        Ok(t) => t,
        Err(_) => {
            let out = std::fs::read_to_string(dir.join("check.out")).unwrap_or_default();
            let tail: Vec<&str> = out.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Some(Err(format!("check wrote no result.xml: {}", tail.join(" / "))));
        }
    };
    Some(match ::fstests::parse_xunit(&text) {
        Ok(v) => v.into_iter().find(|o| o.test == id).ok_or_else(|| format!("{} has no entry for {id}", xml.display())),
        Err(e) => Err(format!("{}: {e:#}", xml.display())),
    })
}

/// Turn the agent's pass/fail of each fstests test into fstests' own verdict, with
/// reasons and artifacts. Returns how many tests it rewrote.
pub fn apply(run: &mut RunResult, run_dir: &Path) -> usize {
    let mut rewritten = 0;
    for t in run.tests.iter_mut() {
        let Some((section, id)) = t.name.strip_prefix("fstests/").and_then(|r| r.split_once('/')) else {
            continue;
        };
        let (section, id) = (section.to_string(), id.to_string());
        let test_dir = run_dir.join("tests").join(&t.name);
        let mut outcomes = vec![];
        let mut attempt = 0;
        while let Some(o) = attempt_outcome(&test_dir, attempt, &section, &id) {
            outcomes.push(o);
            attempt += 1;
        }
        // Artifacts of every attempt, relative to the run directory.
        for a in 0..attempt {
            let rd = test_dir.join(format!("attempt-{a}")).join(&section);
            for p in ::fstests::artifacts(&rd, &id) {
                if let Ok(rel) = p.strip_prefix(run_dir) {
                    t.artifacts.push(rel.display().to_string());
                }
            }
        }
        // A crash or a hang is the harness's finding, whatever the partial results say.
        if matches!(t.verdict, Verdict::Crashed | Verdict::Hung | Verdict::NotRun) {
            continue;
        }
        let Some(first) = outcomes.first() else { continue };
        rewritten += 1;
        match first {
            Err(why) => {
                t.verdict = Verdict::InfraError;
                t.reason = Some(why.clone());
            }
            Ok(o) => match o.status {
                Status::Pass => {
                    t.verdict = Verdict::Passed;
                    t.reason = None;
                }
                Status::NotRun => {
                    t.verdict = Verdict::Skipped;
                    t.reason = o.message.clone();
                }
                Status::Fail => {
                    let later_pass = outcomes[1..].iter().any(|o| matches!(o, Ok(o) if o.status == Status::Pass));
                    let runs = outcomes.len();
                    let passes = outcomes.iter().filter(|o| matches!(o, Ok(o) if o.status == Status::Pass)).count();
                    let diff = o.diff.as_deref().map(first_diff_lines).unwrap_or_default();
                    let msg = o.message.clone().unwrap_or_else(|| "failed".into());
                    if later_pass {
                        t.verdict = Verdict::Flaky;
                        t.reason = Some(format!("failed then passed: {passes} of {runs} runs passed; first failure: {msg}{diff}"));
                    } else {
                        t.verdict = Verdict::Failed;
                        let reruns = if runs > 1 { format!(" (failed all {runs} runs)") } else { String::new() };
                        t.reason = Some(format!("{msg}{reruns}{diff}"));
                    }
                }
            },
        }
    }
    rewritten
}

/// The first changed lines of a .out.bad diff, for the one-line reason.
fn first_diff_lines(diff: &str) -> String {
    let lines: Vec<&str> = diff
        .lines()
        .filter(|l| (l.starts_with('+') || l.starts_with('-')) && !l.starts_with("+++") && !l.starts_with("---"))
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
    let mut v: Vec<&TestResult> = run.tests.iter().filter(|t| t.name.starts_with("fstests/") && t.duration_ms > 0).collect();
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
        md.push_str(&format!("| {} | {:.1} s |\n", t.name, t.duration_ms as f64 / 1000.0));
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
        }
    }

    #[test]
    fn diff_lines_skip_the_headers() {
        let d = "--- a\n+++ b\n@@ -1 +1 @@\n-QA output created by 001\n+oops\n";
        assert_eq!(first_diff_lines(d), "; diff: -QA output created by 001 | +oops");
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
            let d = run_dir.path().join(format!("tests/fstests/ext4_4k/{test}/attempt-{attempt}"));
            std::fs::create_dir_all(d.join("ext4_4k/generic")).unwrap();
            std::fs::write(d.join("check.out"), "common/rc: could not mount /dev/vdb on /mnt/test\n").unwrap();
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
        let names = ["generic/001", "generic/002", "generic/005", "generic/010", "generic/020", "generic/013"];
        let mut run = RunResult {
            tests: names
                .iter()
                .map(|n| result(&format!("fstests/ext4_4k/{n}"), if *n == "generic/001" { Verdict::Passed } else { Verdict::Failed }))
                .collect(),
            ..empty_run()
        };
        run.tests[5].verdict = Verdict::Crashed;
        assert_eq!(apply(&mut run, run_dir.path()), 5);
        let v: Vec<Verdict> = run.tests.iter().map(|t| t.verdict).collect();
        use Verdict::*;
        assert_eq!(v, [Passed, Flaky, Failed, Skipped, InfraError, Crashed]);
        let reason = |i: usize| run.tests[i].reason.clone().unwrap_or_default();
        assert!(reason(1).contains("1 of 2 runs passed") && reason(1).contains("output mismatch"), "{}", reason(1));
        assert!(reason(1).contains("diff: "), "{}", reason(1));
        assert!(reason(2).contains("_check_dmesg") && reason(2).contains("failed all 2 runs"), "{}", reason(2));
        assert!(reason(3).contains("dbtest not built"), "{}", reason(3));
        assert!(reason(4).contains("no result.xml") && reason(4).contains("could not mount"), "{}", reason(4));
        let arts = &run.tests[1].artifacts;
        assert!(arts.iter().any(|a| a.ends_with("attempt-0/ext4_4k/generic/002.out.bad")), "{arts:?}");
        assert!(run.tests[2].artifacts.iter().any(|a| a.ends_with("005.dmesg")));
        // Baseline: 005 failing before, 002 newly flaky is not a failure.
        let md = summary_markdown(&run, None);
        assert!(md.contains("| flaky | 1 |") && md.contains("| skipped | 1 |"), "{md}");
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
