//! The writers produce files that say what happened (parsed back, not string-matched only).
use report::*;

fn sample() -> RunResult {
    let crash = Finding {
        kind: FindingKind::Oops,
        title: "BUG: kernel NULL pointer dereference, address: 0000000000000000".into(),
        test: Some("smoke/dio".into()),
        subtest: None,
        excerpt: "BUG: kernel NULL pointer dereference\nRIP: 0010:fuse_iomap_begin+0x1/0x2".into(),
    };
    let t = |name: &str, verdict, reason: Option<&str>, findings: Vec<Finding>| TestResult {
        name: name.into(),
        verdict,
        duration_ms: 1500,
        exit_code: Some(0),
        signal: None,
        slow: false,
        reason: reason.map(str::to_string),
        findings,
        artifacts: vec![format!("tests/{name}/stdout.log")],
        details: None,
        accepted: None,
    };
    let tests = vec![
        t("smoke/mount", Verdict::Passed, None, vec![]),
        t(
            "smoke/dio",
            Verdict::Crashed,
            Some("kernel oops"),
            vec![crash],
        ),
        t("run/cmd", Verdict::Failed, Some("exit code 3"), vec![]),
        t(
            "run/later",
            Verdict::NotRun,
            Some("not run: the guest crashed"),
            vec![],
        ),
    ];
    RunResult {
        schema: RESULTS_SCHEMA,
        id: "20260101-000000-abcd".into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        duration_ms: 42_000,
        verdict: run_verdict(&tests, false),
        reason: None,
        harness_error: None,
        accel: "tcg".into(),
        accel_note: Some("KVM probe timed out".into()),
        machine: "microvm".into(),
        kernel_image: "/cache/bzImage".into(),
        kernel_release: Some("6.12.57".into()),
        image: "/cache/default.ext4".into(),
        e2fsprogs_version: Some("1.47.0".into()),
        server: Some(ServerFacts {
            name: "iomapfs".into(),
            version: Some("0.1.0".into()),
            mode: Some("classic".into()),
            error: None,
            expected_mode: None,
            test_modes: tests
                .iter()
                .map(|t| (t.name.clone(), vec!["classic".to_string()]))
                .collect(),
        }),
        boot_to_ready_ms: Some(1800),
        kernel_boot_ms: Some(1200),
        host_ready_ms: Some(4000),
        setup_ms: Some(900),
        boots: 1,
        tests,
        findings: vec![],
        console_excerpt: None,
        baseline: None,
    }
}

#[test]
fn json_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let run = sample();
    write_all(&run, dir.path()).unwrap();
    let back = read_json(&dir.path().join("results.json")).unwrap();
    assert_eq!(back, run);
    assert_eq!(back.verdict, Verdict::Crashed);
    let raw = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    assert!(raw.contains("\"verdict\": \"crashed\""), "{raw}");
}

#[test]
fn junit_counts_failures_and_errors() {
    let xml = junit_xml(&sample()).unwrap();
    // One suite per prefix; the crash is an <error>, the exit code a <failure>.
    assert!(
        xml.contains("<testsuite name=\"smoke\" tests=\"2\""),
        "{xml}"
    );
    assert!(xml.contains("<testsuite name=\"run\" tests=\"2\""), "{xml}");
    assert_eq!(xml.matches("<skipped ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<error ").count(), 1, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(
        xml.contains("fuse_iomap_begin"),
        "excerpt in the error text: {xml}"
    );
    assert!(
        xml.contains("name=\"server_mode\" value=\"classic\""),
        "{xml}"
    );
}

#[test]
fn summary_names_every_test_and_the_crash() {
    let md = summary_markdown(&sample());
    assert!(
        md.starts_with("# vm-test 20260101-000000-abcd: CRASHED"),
        "{md}"
    );
    for name in ["smoke/mount", "smoke/dio", "run/cmd"] {
        assert!(md.contains(&format!("| {name} |")), "{md}");
    }
    assert!(md.contains("tcg (KVM probe timed out)"), "{md}");
    assert!(md.contains("### Oops during smoke/dio"), "{md}");
    // Each test's server mode, and the mode the run expected.
    assert!(md.contains("| smoke/mount | passed | classic |"), "{md}");
    let mut expecting = sample();
    expecting.server.as_mut().unwrap().expected_mode = Some("iomap".into());
    let md = summary_markdown(&expecting);
    assert!(
        md.contains("in classic mode; expected iomap (--expect-mode)"),
        "{md}"
    );
    let text = summary_text(&sample());
    assert!(
        text.contains("CRASHED (1 passed, 1 failed, 1 crashed, 1 not_run)"),
        "{text}"
    );
}

/// fstests' verdicts: skipped and expunged are JUnit skips, an accepted flake passes with
/// a note, an unaccepted one is a failure, a failure carries its diff in system-out.
#[test]
fn fstests_verdicts_in_junit_and_the_run_verdict() {
    let mut run = sample();
    let mut add = |name: &str, verdict: Verdict, reason: &str, details: Option<&str>| {
        let mut t = run.tests[0].clone();
        t.name = name.into();
        t.verdict = verdict;
        t.reason = Some(reason.into());
        t.details = details.map(str::to_string);
        let server = run.server.as_mut().unwrap();
        server.set_modes(name, server.modes_of(&run.tests[0].name).to_vec());
        run.tests.push(t);
    };
    add(
        "fstests/a",
        Verdict::Skipped,
        "this test requires a valid $SCRATCH_DEV",
        None,
    );
    add("fstests/b", Verdict::Expunged, "needs dm-error", None);
    add("fstests/c", Verdict::Flaky, "failed then passed", None);
    add(
        "fstests/d",
        Verdict::Failed,
        "- output mismatch",
        Some("--- diff ---\n-Silence is golden\n+oops"),
    );
    add("fstests/e", Verdict::Flaky, "failed then passed too", None);
    run.tests[8].accepted = Some("known race (https://example.org/bug/1)".into());
    let xml = junit_xml(&run).unwrap();
    assert!(
        xml.contains("this test requires a valid $SCRATCH_DEV"),
        "{xml}"
    );
    assert!(xml.contains("expunged: needs dm-error"), "{xml}");
    assert!(xml.contains("flaky: failed then passed too"), "{xml}");
    assert!(
        xml.contains("accepted: known race (https://example.org/bug/1)"),
        "{xml}"
    );
    assert!(xml.contains("+oops"), "the diff is in system-out: {xml}");
    assert_eq!(xml.matches("<skipped ").count(), 3, "{xml}");
    // The unaccepted flake and the real failure are failures; the crash an error.
    assert_eq!(xml.matches("<failure ").count(), 3, "{xml}");
    assert!(xml.contains("type=\"flaky\""), "{xml}");
    let accepted = vec![
        run.tests[4].clone(),
        run.tests[5].clone(),
        run.tests[8].clone(),
        run.tests[0].clone(),
    ];
    assert_eq!(run_verdict(&accepted, false), Verdict::Passed);
    let with_flake = vec![run.tests[0].clone(), run.tests[6].clone()];
    assert_eq!(run_verdict(&with_flake, false), Verdict::Flaky);
    let json = serde_json::to_string(&run).unwrap();
    let back: RunResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back.tests[7].details, run.tests[7].details);
    assert_eq!(back.tests[8].accepted, run.tests[8].accepted);
    let md = summary_markdown(&run);
    assert!(md.contains("| fstests/e | flaky | classic | 1.5 s | accepted (known race (https://example.org/bug/1)); failed then passed too |"), "{md}");
}

/// A result file is replaced, never written through a link the guest left in its place.
#[test]
fn writers_replace_a_symlink_instead_of_following_it() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("results.json")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("summary.md")).unwrap();
    write_all(&sample(), dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let meta = std::fs::symlink_metadata(dir.path().join("results.json")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        read_json(&dir.path().join("results.json")).unwrap(),
        sample()
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o644
    );
}
