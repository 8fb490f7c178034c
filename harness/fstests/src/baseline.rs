//! A run against a baseline run: what newly fails, what got fixed, what coverage was lost.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::Status;

/// Test ids by how they changed from the baseline; every list is sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Fail now; passed, not run or absent in the baseline.
    pub new_failures: Vec<String>,
    /// Failed in the baseline, pass now.
    pub fixed: Vec<String>,
    /// Fail in both.
    pub still_failing: Vec<String>,
    /// Absent from the baseline and not failing now (new failures are in `new_failures`).
    pub new_tests: Vec<String>,
    /// Passed in the baseline, absent now: coverage lost.
    pub missing: Vec<String>,
    /// Passed in the baseline, not run now (skipped, expunged, never started): coverage lost.
    pub newly_not_run: Vec<String>,
    /// Failed in the baseline, not run or absent now: a known failure no longer checked
    /// (expunging a failing test with a reason and a link is how one is accepted).
    pub failures_not_run: Vec<String>,
}

/// Compares two runs' statuses by test id.
pub fn compare(baseline: &BTreeMap<String, Status>, current: &BTreeMap<String, Status>) -> Diff {
    let mut diff = Diff::default();
    for (test, &now) in current {
        let before = baseline.get(test).copied();
        let list = match (before, now) {
            (Some(Status::Fail), Status::Fail) => &mut diff.still_failing,
            (_, Status::Fail) => &mut diff.new_failures,
            (None, _) => &mut diff.new_tests,
            (Some(Status::Fail), Status::Pass) => &mut diff.fixed,
            (Some(Status::Pass), Status::NotRun) => &mut diff.newly_not_run,
            (Some(Status::Fail), Status::NotRun) => &mut diff.failures_not_run,
            _ => continue,
        };
        list.push(test.clone());
    }
    for (test, before) in baseline {
        if current.contains_key(test) {
            continue;
        }
        match before {
            Status::Pass => diff.missing.push(test.clone()),
            Status::Fail => diff.failures_not_run.push(test.clone()),
            Status::NotRun => {}
        }
    }
    diff.failures_not_run.sort();
    diff
}

impl Diff {
    /// A regression is any new failure.
    pub fn is_regression(&self) -> bool {
        !self.new_failures.is_empty()
    }

    /// Tests that passed in the baseline and did not run now.
    pub fn lost_coverage(&self) -> impl Iterator<Item = &String> {
        self.newly_not_run.iter().chain(&self.missing)
    }

    /// A Markdown section for summary.md: one list per non-empty category.
    pub fn render_markdown(&self) -> String {
        let mut out = String::from("## Compared with the baseline\n\n");
        let lists = [
            ("New failures", &self.new_failures),
            ("Fixed", &self.fixed),
            ("Still failing", &self.still_failing),
            ("Not run now (passed in the baseline)", &self.newly_not_run),
            (
                "Missing (passed in the baseline, not in this run)",
                &self.missing,
            ),
            ("Known failures not run now", &self.failures_not_run),
            ("New tests", &self.new_tests),
        ];
        if lists.iter().all(|(_, l)| l.is_empty()) {
            out.push_str("No changes.\n");
            return out;
        }
        for (title, tests) in lists {
            if tests.is_empty() {
                continue;
            }
            let _ = writeln!(out, "### {title} ({})\n", tests.len());
            for test in tests {
                let _ = writeln!(out, "- `{test}`");
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    fn runs(items: &[(&str, Status)]) -> BTreeMap<String, Status> {
        items.iter().map(|(t, s)| (t.to_string(), *s)).collect()
    }

    #[test]
    fn every_transition_lands_in_one_list() {
        let base = runs(&[
            ("generic/001", Pass),
            ("generic/002", NotRun),
            ("generic/003", Fail),
            ("generic/004", Fail),
            ("generic/005", Pass),
            ("generic/006", Pass),
            ("generic/007", Fail),
            ("generic/008", NotRun),
            ("generic/011", Fail),
            ("generic/012", NotRun),
        ]);
        let now = runs(&[
            ("generic/001", Fail),
            ("generic/002", Fail),
            ("generic/003", Pass),
            ("generic/004", Fail),
            ("generic/006", NotRun),
            ("generic/007", NotRun),
            ("generic/008", Pass),
            ("generic/009", Pass),
            ("generic/010", Fail),
        ]);
        let d = compare(&base, &now);
        assert_eq!(
            d.new_failures,
            ["generic/001", "generic/002", "generic/010"]
        );
        assert_eq!(d.fixed, ["generic/003"]);
        assert_eq!(d.still_failing, ["generic/004"]);
        assert_eq!(d.missing, ["generic/005"]);
        assert_eq!(d.newly_not_run, ["generic/006"]);
        // A known failure that stopped running (or vanished) is listed, not lost coverage.
        assert_eq!(d.failures_not_run, ["generic/007", "generic/011"]);
        assert_eq!(d.new_tests, ["generic/009"]);
        assert!(d.is_regression());
        let lost: Vec<&String> = d.lost_coverage().collect();
        assert_eq!(lost, ["generic/006", "generic/005"]);
    }

    #[test]
    fn identical_runs_are_no_regression_and_render_no_changes() {
        let base = runs(&[("generic/001", Pass), ("generic/002", Fail)]);
        let d = compare(&base, &base);
        assert!(!d.is_regression());
        assert_eq!(d.still_failing, ["generic/002"]);
        let md = compare(
            &runs(&[("generic/001", Pass)]),
            &runs(&[("generic/001", Pass)]),
        )
        .render_markdown();
        assert!(md.contains("No changes."), "{md}");
    }

    #[test]
    fn markdown_lists_only_non_empty_categories() {
        let d = compare(
            &runs(&[("generic/003", Fail)]),
            &runs(&[("generic/001", Fail), ("generic/003", Pass)]),
        );
        let md = d.render_markdown();
        assert!(
            md.contains("### New failures (1)\n\n- `generic/001`\n"),
            "{md}"
        );
        assert!(md.contains("### Fixed (1)\n\n- `generic/003`\n"), "{md}");
        assert!(!md.contains("Still failing"), "{md}");
        assert!(!md.contains("No changes"), "{md}");
    }
}
