//! Parsers and the catalog against real fstests output (see fixtures/README.md for how
//! each file was made).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fstests::{
    artifacts, compare, parse_check_log, parse_check_time, parse_xunit, Catalog, Outcome,
    Selection, Status,
};

fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn fixture(rel: &str) -> String {
    std::fs::read_to_string(fixture_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn by_test(outcomes: &[Outcome]) -> BTreeMap<&str, &Outcome> {
    outcomes.iter().map(|o| (o.test.as_str(), o)).collect()
}

const DBTEST: &str = "/tmp/fstests-host/src/dbtest not built";
const FAIL_MAKE_REQUEST: &str = "/sys/kernel/debug/fail_make_request  not found. Seems that \
    CONFIG_FAIL_MAKE_REQUEST kernel config option not enabled";
const MISMATCH: &str =
    "- output mismatch (see /tmp/fstests-host/results//ext4_4k/generic/002.out.bad)";
const DMESG: &str = "_check_dmesg: something found in dmesg (see \
    /tmp/fstests-host/results//ext4_4k/generic/005.dmesg)";

/// (test, status, message) of runs 1 and 2.
fn expected() -> Vec<(&'static str, Status, Option<&'static str>)> {
    vec![
        ("generic/001", Status::Pass, None),
        ("generic/002", Status::Fail, Some(MISMATCH)),
        ("generic/005", Status::Fail, Some(DMESG)),
        ("generic/010", Status::NotRun, Some(DBTEST)),
        ("generic/019", Status::NotRun, Some(FAIL_MAKE_REQUEST)),
        (
            "generic/034",
            Status::NotRun,
            Some("This test requires dm flakey support"),
        ),
    ]
}

fn summary(outcomes: &[Outcome]) -> Vec<(&str, Status, Option<&str>)> {
    outcomes
        .iter()
        .map(|o| (o.test.as_str(), o.status, o.message.as_deref()))
        .collect()
}

#[test]
fn xunit_report_gives_statuses_messages_and_times() {
    let outcomes = parse_xunit(&fixture("xunit/result.xml")).unwrap();
    assert_eq!(summary(&outcomes), expected());
    let seconds: Vec<Option<f64>> = outcomes.iter().map(|o| o.seconds).collect();
    assert_eq!(
        seconds,
        [
            Some(14.0),
            Some(2.0),
            Some(2.0),
            Some(0.0),
            Some(0.0),
            Some(0.0)
        ]
    );
}

#[test]
fn xunit_bodies_are_the_files_fstests_left() {
    let outcomes = parse_xunit(&fixture("xunit/result.xml")).unwrap();
    let cases = by_test(&outcomes);
    let (g002, g005) = (cases["generic/002"], cases["generic/005"]);

    // system-out is the .full file, kernel-log the .dmesg file, byte for byte.
    assert_eq!(
        g002.full.as_deref(),
        Some(fixture("results/ext4_4k/generic/002.full").as_str())
    );
    assert_eq!(
        g005.full.as_deref(),
        Some("umount: /dev/loop1: not mounted.\n")
    );
    assert_eq!(
        g005.dmesg.as_deref(),
        Some(fixture("results/ext4_4k/generic/005.dmesg").as_str())
    );
    assert!(g005
        .dmesg
        .as_deref()
        .unwrap()
        .contains("] WARNING: fixture capture: injected"));
    assert_eq!(g005.diff, None, "generic/005's output matched");
    assert_eq!(g002.dmesg, None);

    // system-err is `diff -u golden out.bad`.
    let diff = g002.diff.as_deref().unwrap();
    assert!(diff.starts_with("--- tests/generic/002.out\t"), "{diff}");
    assert!(
        diff.contains("\n@@ -1,3 +1,2 @@\n QA output created by 002\n"),
        "{diff}"
    );
    assert!(diff.ends_with(
        "\n-fixture: this line was added to the golden output so that the test fails\n"
    ));

    for quiet in ["generic/001", "generic/010", "generic/019", "generic/034"] {
        let o = cases[quiet];
        assert_eq!(
            (&o.diff, &o.full, &o.dmesg),
            (&None, &None, &None),
            "{quiet}"
        );
    }
}

#[test]
fn xunit_quiet_report_has_the_same_results_without_bodies() {
    let outcomes = parse_xunit(&fixture("xunit-quiet/result.xml")).unwrap();
    assert_eq!(summary(&outcomes), expected());
    assert!(outcomes
        .iter()
        .all(|o| o.diff.is_none() && o.full.is_none() && o.dmesg.is_none()));
    assert_eq!(outcomes[0].seconds, Some(9.0));
}

#[test]
fn interrupted_run_leaves_a_partial_report() {
    let outcomes = parse_xunit(&fixture("interrupted/result.xml")).unwrap();
    assert_eq!(summary(&outcomes), [("generic/001", Status::Pass, None)]);
    assert_eq!(outcomes[0].seconds, Some(7.0));
}

#[test]
fn check_log_has_one_entry_per_run() {
    let runs = parse_check_log(&fixture("results/check.log"));
    assert_eq!(runs.len(), 3);
    let all: Vec<&str> = expected().iter().map(|e| e.0).collect();
    for run in &runs[..2] {
        assert_eq!(run.section, None);
        assert_eq!(run.ran, all);
        assert_eq!(run.not_run, ["generic/010", "generic/019", "generic/034"]);
        assert_eq!(run.failures, ["generic/002", "generic/005"]);
        assert_eq!(run.kernel.as_deref(), Some("6.18.44-fc-v657"));
        assert!(!run.interrupted);
    }
    assert_eq!(
        runs[0].date.as_deref(),
        Some("Tue Nov 24 05:16:52 UTC 2026")
    );
    assert_eq!(
        runs[1].date.as_deref(),
        Some("Tue Nov 24 05:17:16 UTC 2026")
    );
    let cut = &runs[2];
    assert_eq!(cut.ran, ["generic/001", "generic/003"]);
    assert!(cut.interrupted);
    assert!(cut.failures.is_empty() && cut.not_run.is_empty());

    let section = parse_check_log(&fixture("results/ext4_4k/check.log"));
    assert_eq!(section.len(), 1);
    assert_eq!(section[0].failures, runs[0].failures);
}

#[test]
fn check_console_summary_names_the_section() {
    // stdout prints the summary once as the section ends and again at exit.
    let runs = parse_check_log(&fixture("console/check-xunit.txt"));
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run.section.as_deref(), Some("ext4_4k"));
        assert_eq!(run.failures, ["generic/002", "generic/005"]);
        assert_eq!(run.not_run, ["generic/010", "generic/019", "generic/034"]);
        assert_eq!(run.ran.len(), 6);
    }
}

#[test]
fn check_log_agrees_with_the_xunit_report() {
    let outcomes = parse_xunit(&fixture("xunit/result.xml")).unwrap();
    let run = &parse_check_log(&fixture("results/ext4_4k/check.log"))[0];
    let with = |s: Status| -> Vec<String> {
        outcomes
            .iter()
            .filter(|o| o.status == s)
            .map(|o| o.test.clone())
            .collect()
    };
    assert_eq!(run.failures, with(Status::Fail));
    assert_eq!(run.not_run, with(Status::NotRun));
    assert_eq!(run.ran.len(), outcomes.len());
}

#[test]
fn check_time_lists_passing_tests() {
    let times = parse_check_time(&fixture("results/check.time"));
    assert_eq!(times.len(), 11);
    assert_eq!(times["generic/001"], 5);
    assert_eq!(times["generic/003"], 10);
    assert!(
        !times.contains_key("generic/010"),
        "not-run tests have no time"
    );
    let section = parse_check_time(&fixture("results/ext4_4k/check.time"));
    assert_eq!(
        section.into_iter().collect::<Vec<_>>(),
        [("generic/001".to_string(), 14)]
    );
}

#[test]
fn artifacts_are_the_files_that_exist() {
    let dir = fixture_path("results/ext4_4k");
    let names = |test: &str| -> Vec<String> {
        artifacts(&dir, test)
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect()
    };
    assert_eq!(
        names("generic/002"),
        ["generic/002.out.bad", "generic/002.full"]
    );
    assert_eq!(
        names("generic/005"),
        ["generic/005.full", "generic/005.dmesg"]
    );
    assert_eq!(
        names("generic/010"),
        ["generic/010.full", "generic/010.notrun"]
    );
    assert_eq!(names("generic/034"), ["generic/034.notrun"]);
    assert_eq!(names("generic/001"), ["generic/001.full"]);
    assert!(names("generic/999").is_empty());
    assert!(artifacts(Path::new("/nonexistent"), "generic/001").is_empty());
}

#[test]
fn artifacts_include_saved_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("generic")).unwrap();
    for f in [
        "001.out.bad",
        "001.core.0a1b",
        "001.core.ffee.zst",
        "0010.core.aa",
        "001.hints",
    ] {
        std::fs::write(dir.path().join("generic").join(f), "x").unwrap();
    }
    let got: Vec<String> = artifacts(dir.path(), "generic/001")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        got,
        [
            "001.out.bad",
            "001.hints",
            "001.core.0a1b",
            "001.core.ffee.zst"
        ]
    );
}

#[test]
fn baseline_of_real_runs() {
    let statuses = |rel: &str| -> BTreeMap<String, Status> {
        parse_xunit(&fixture(rel))
            .unwrap()
            .into_iter()
            .map(|o| (o.test, o.status))
            .collect()
    };
    let full = statuses("xunit/result.xml");
    let same = compare(&full, &statuses("xunit-quiet/result.xml"));
    assert!(!same.is_regression());
    assert_eq!(same.still_failing, ["generic/002", "generic/005"]);
    // The interrupted run reported only generic/001 (passed): the two failures it did not
    // reach are known failures not run; the three not-run tests lose nothing.
    let cut = compare(&full, &statuses("interrupted/result.xml"));
    assert!(cut.missing.is_empty(), "{cut:?}");
    assert_eq!(cut.failures_not_run, ["generic/002", "generic/005"]);
    assert!(!cut.is_regression());
    // The other way round, the full run loses nothing either; generic/001 passing in the
    // baseline and absent now would be lost coverage.
    let mut only_001 = statuses("interrupted/result.xml");
    only_001.insert("generic/999".into(), Status::Pass);
    let lost = compare(&only_001, &full);
    assert_eq!(lost.missing, ["generic/999"]);
    assert_eq!(lost.lost_coverage().count(), 1);
    let back = compare(&statuses("interrupted/result.xml"), &full);
    assert_eq!(back.new_failures, ["generic/002", "generic/005"]);
    assert!(back.render_markdown().contains("### New failures (2)"));
}

fn real_catalog() -> Catalog {
    let generic = fixture("group-lists/generic/group.list");
    let ext4 = fixture("group-lists/ext4/group.list");
    Catalog::from_group_lists(&[("generic", &generic), ("ext4", &ext4)])
}

/// The tests `./check -n -g quick` listed, in its order.
fn check_n_quick(prefixes: &[&str]) -> Vec<String> {
    fixture("console/check-n-g-quick.txt")
        .lines()
        .map(str::trim)
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

#[test]
fn quick_group_expands_exactly_as_check_n_listed_it() {
    let catalog = real_catalog();
    let quick = Selection::parse("-g quick").unwrap();
    let generic = catalog.expand(&quick, &["generic"]).unwrap();
    assert_eq!(generic.len(), 633);
    assert_eq!(generic, check_n_quick(&["generic/"]));
    let both = catalog.expand(&quick, &["generic", "ext4"]).unwrap();
    assert_eq!(both.len(), 672);
    assert_eq!(both, check_n_quick(&["generic/", "ext4/"]));
}

#[test]
fn real_group_list_selections() {
    let catalog = real_catalog();
    let groups = catalog.groups("generic/001").unwrap();
    assert!(groups.iter().any(|g| g == "quick") && groups.iter().any(|g| g == "auto"));
    let expand = |args: &str| catalog.expand(&Selection::parse(args).unwrap(), &["generic"]);
    let quick = expand("-g quick").unwrap();
    let quick_safe = expand("-g quick -x dangerous").unwrap();
    assert!(quick_safe.len() < quick.len());
    assert!(quick_safe.iter().all(|t| !catalog
        .groups(t)
        .unwrap()
        .iter()
        .any(|g| g == "dangerous")));
    assert_eq!(expand("generic/00?").unwrap().len(), 9); // 001..009 (no generic/000)
    let excluded = expand("-g quick -e generic/001,generic/002").unwrap();
    assert_eq!(excluded.len(), quick.len() - 2);
    assert!(expand("-g nosuchgroup").is_err());
}

#[test]
fn catalog_loads_a_built_tree() {
    let tree = tempfile::tempdir().unwrap();
    for dir in ["generic", "ext4"] {
        let d = tree.path().join("tests").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(
            fixture_path(&format!("group-lists/{dir}/group.list")),
            d.join("group.list"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(tree.path().join("tests/xfs")).unwrap(); // not built: no list
    let loaded = Catalog::load(tree.path()).unwrap();
    assert_eq!(loaded, real_catalog());
}
