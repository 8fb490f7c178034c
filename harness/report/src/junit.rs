//! JUnit XML (quick-junit): one <testsuite> per suite (`suite/test` names).
use std::collections::BTreeMap;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::{ReportError, RunResult, TestResult, Verdict};

pub fn junit_xml(run: &RunResult) -> Result<String, ReportError> {
    let mut report = Report::new(format!("vm-test {}", run.id));
    report.set_time(Duration::from_millis(run.duration_ms));
    let mut suites: BTreeMap<&str, Vec<&TestResult>> = BTreeMap::new();
    for t in &run.tests {
        let suite = t.name.split_once('/').map_or("vm-test", |(s, _)| s);
        suites.entry(suite).or_default().push(t);
    }
    for (name, tests) in suites {
        let mut suite = TestSuite::new(name);
        for (k, v) in [
            ("kernel", run.kernel_release.clone()),
            ("accel", Some(run.accel.clone())),
            ("server", run.server.as_ref().map(|s| s.name.clone())),
            (
                "server_mode",
                run.server.as_ref().and_then(|s| s.mode.clone()),
            ),
            (
                "server_version",
                run.server.as_ref().and_then(|s| s.version.clone()),
            ),
            ("e2fsprogs", run.e2fsprogs_version.clone()),
        ] {
            if let Some(v) = v {
                suite.add_property(Property::new(k, v));
            }
        }
        for t in tests {
            suite.add_test_case(test_case(name, t));
        }
        report.add_test_suite(suite);
    }
    report
        .to_string()
        .map_err(|e| ReportError::Junit(e.to_string()))
}

fn test_case(suite: &str, t: &TestResult) -> TestCase {
    let status = match t.verdict {
        // An accepted flake passed in the end; its note says what failed first and why
        // that is accepted. An unaccepted one is a failure below.
        Verdict::Passed => TestCaseStatus::success(),
        Verdict::Flaky if t.accepted.is_some() => TestCaseStatus::success(),
        Verdict::NotRun | Verdict::Skipped | Verdict::Expunged => {
            let mut s = TestCaseStatus::skipped();
            let why = t
                .reason
                .clone()
                .unwrap_or_else(|| t.verdict.as_str().replace('_', " "));
            s.set_message(if t.verdict == Verdict::Expunged {
                format!("expunged: {why}")
            } else {
                why
            });
            s
        }
        v => {
            let kind = if matches!(v, Verdict::Failed | Verdict::Flaky) {
                NonSuccessKind::Failure
            } else {
                NonSuccessKind::Error
            };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_type(v.as_str());
            s.set_message(t.reason.clone().unwrap_or_else(|| v.as_str().to_string()));
            let mut text = String::new();
            for f in &t.findings {
                text.push_str(&format!("{:?}: {}\n{}\n", f.kind, f.title, f.excerpt));
            }
            if !t.artifacts.is_empty() {
                text.push_str(&format!("artifacts: {}\n", t.artifacts.join(", ")));
            }
            if !text.is_empty() {
                s.set_description(text);
            }
            s
        }
    };
    let mut case = TestCase::new(t.name.clone(), status);
    case.set_classname(suite);
    case.set_time(Duration::from_millis(t.duration_ms));
    let mut out = String::new();
    if t.verdict == Verdict::Flaky {
        out = format!(
            "flaky: {}\n",
            t.reason
                .as_deref()
                .unwrap_or("failed, then passed on a rerun")
        );
        if let Some(why) = &t.accepted {
            out.push_str(&format!("accepted: {why}\n"));
        }
    }
    if let Some(d) = &t.details {
        out.push_str(d);
    }
    if !out.is_empty() {
        case.set_system_out(out);
    }
    case
}
