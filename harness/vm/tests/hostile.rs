//! The supervisor against a hostile guest: a fake QEMU (Python) that plays a script of
//! raw bytes on the event port and the console, and plants links in the shared run
//! directory. Every case asserts a verdict, that the supervisor did not panic (it
//! returns), and that nothing outside the run directory was written.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use events::{Event, EventBody, Plan, PlanTest, TestStatus};
use report::{FindingKind, RunResult, Verdict};
use serde_json::{json, Value};
use vm::{Limits, RunDir, VmSpec};

mod common;

/// Plays `<script>[boot]`: a list of steps, one key each. Bytes are hex, so anything
/// (invalid UTF-8, NUL, no newline) can be sent.
/// After `common::fake_vm`'s argument parsing.
const FAKE_QEMU: &str = r#"
counter = script + ".boots"
boot = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, "w").write(str(boot))
steps = json.load(open(script)).get(str(boot), [])
srv = socket.socket(socket.AF_UNIX)
srv.bind(con)
srv.listen(1)
c, _ = srv.accept()
out = open(ev, "ab", buffering=0)
for step in steps:
    (k, v), = step.items()
    if k == "ev":
        out.write(bytes.fromhex(v))
    elif k == "con":
        c.sendall(bytes.fromhex(v))
    elif k == "sleep":
        time.sleep(v)
    elif k == "link":
        target, rel = v
        p = os.path.join(share, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)
        os.symlink(target, p)
    elif k == "exit":
        sys.exit(v)
"#;

struct Fixture {
    tmp: tempfile::TempDir,
    spec: VmSpec,
    /// A directory outside the run directory that the guest points links at; its
    /// contents must not change.
    outside: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let (tmp, mut spec) = common::fake_vm(FAKE_QEMU)?;
    let p = |n: &str| tmp.path().join(n);
    let outside = p("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("precious"), "host file\n").unwrap();
    std::fs::write(outside.join("dir/file"), "another\n").unwrap();
    spec.extra_cmdline = vec![format!("fake_script={}", p("script.json").display())];
    Some(Fixture { tmp, spec, outside })
}

fn plan(names: &[&str]) -> Plan {
    Plan {
        v: events::SCHEMA_VERSION,
        shell: false,
        server: None,
        tests: names
            .iter()
            .map(|n| PlanTest {
                name: n.to_string(),
                command: "true".into(),
                timeout_s: 5,
            })
            .collect(),
        heartbeat_s: 1,
        slow_factor: 1,
        console_loglevel: 7,
        host_time_unix: 0,
        env: vec![],
    }
}

fn quick() -> Limits {
    Limits {
        boot: Duration::from_secs(5),
        run: Duration::from_secs(60),
        stall: Duration::from_secs(3),
        shutdown: Duration::from_secs(3),
        dump_wait: Duration::from_secs(1),
        reboots: 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Script steps.
fn ev(body: EventBody) -> Value {
    raw_ev(format!("{}\n", Event::new(1, body).to_line()).as_bytes())
}
fn raw_ev(bytes: &[u8]) -> Value {
    json!({ "ev": hex(bytes) })
}
fn con(bytes: &[u8]) -> Value {
    json!({ "con": hex(bytes) })
}
fn sleep(s: f64) -> Value {
    json!({ "sleep": s })
}
fn link(target: &Path, rel: &str) -> Value {
    json!({ "link": [target.display().to_string(), rel] })
}

fn started(tests: usize) -> EventBody {
    EventBody::RunStarted {
        kernel: "6.12.0-fake".into(),
        e2fsprogs_version: None,
        server: None,
        agent_start_ms: 900,
        boot_to_ready_ms: 1000,
        setup_ms: 0,
        tests,
    }
}
fn test_started(name: &str, timeout_s: u64) -> EventBody {
    EventBody::TestStarted {
        name: name.into(),
        timeout_s,
    }
}
fn test_finished(name: &str, status: TestStatus) -> EventBody {
    EventBody::TestFinished {
        name: name.into(),
        status,
        duration_ms: 5,
        exit_code: Some(if status == TestStatus::Passed { 0 } else { 1 }),
        signal: None,
        slow: false,
        reason: None,
        server_modes: vec![],
    }
}
fn finished() -> EventBody {
    EventBody::RunFinished {
        passed: 0,
        failed: 0,
    }
}

/// A well-behaved run of `names` (all pass), with the agent's kmsg markers.
fn good_run(names: &[&str]) -> Vec<Value> {
    let mut s = vec![ev(started(names.len()))];
    for n in names {
        s.push(ev(test_started(n, 5)));
        s.push(con(
            format!("[    1.0] harness-agent: test_started {n}\n").as_bytes()
        ));
        s.push(con(
            format!("[    1.1] harness-agent: test_finished {n}\n").as_bytes()
        ));
        s.push(ev(test_finished(n, TestStatus::Passed)));
    }
    s.push(ev(finished()));
    s
}

/// Every file under `dir` with its contents (links as their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_symlink() {
                out.insert(
                    e.path(),
                    std::fs::read_link(e.path())
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Run the script; the supervisor must return (no panic), leave `outside` and everything
/// else in the fixture outside the run directory as it was.
fn run(f: &Fixture, plan: &Plan, limits: Limits, boots: &[Vec<Value>]) -> (RunResult, PathBuf) {
    let script: serde_json::Map<String, Value> = boots
        .iter()
        .enumerate()
        .map(|(i, steps)| ((i + 1).to_string(), Value::Array(steps.clone())))
        .collect();
    std::fs::write(
        f.tmp.path().join("script.json"),
        serde_json::to_string(&script).unwrap(),
    )
    .unwrap();
    let _ = std::fs::remove_file(f.tmp.path().join("script.json.boots"));
    let before = snapshot(&f.outside);
    let runs = f.tmp.path().join("runs");
    let dir = RunDir::create(&runs).unwrap();
    let r = vm::run_tests(
        &f.spec,
        plan,
        &limits,
        &dir,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        snapshot(&f.outside),
        before,
        "a file outside the run directory changed"
    );
    // Nothing new beside the run directory either (the `latest` link, the runs and the
    // host's own state directory only).
    let beside: Vec<String> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        beside
            .iter()
            .all(|n| n == "latest" || n == ".host" || n.starts_with(char::is_numeric)),
        "{beside:?}"
    );
    (r, dir.path)
}

fn verdicts(r: &RunResult) -> Vec<(&str, Verdict)> {
    r.tests
        .iter()
        .map(|t| (t.name.as_str(), t.verdict))
        .collect()
}

fn protocol_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(vm::run::PROTOCOL_ERRORS_FILE)).unwrap_or_default()
}

/// The baseline: the script harness itself gives a clean pass.
#[test]
fn a_well_behaved_guest_passes() {
    let Some(f) = fixture() else { return };
    let (r, dir) = run(
        &f,
        &plan(&["t/1", "t/2"]),
        quick(),
        &[good_run(&["t/1", "t/2"])],
    );
    assert_eq!(r.verdict, Verdict::Passed, "{r:#?}");
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Passed), ("t/2", Verdict::Passed)]
    );
    assert!(!dir.join(vm::run::PROTOCOL_ERRORS_FILE).exists());
}

/// Garbage on the event port of an otherwise passing run: random bytes, invalid UTF-8, a
/// NUL, a line far past the cap with no newline for a long while, and an event of another
/// schema version. Each is a protocol error kept with its line; the run is exit 3.
#[test]
fn garbage_events_make_a_passing_run_an_infra_error() {
    let Some(f) = fixture() else { return };
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let random: Vec<u8> = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut s = vec![ev(started(1)), raw_ev(&random), raw_ev(b"\n")];
    s.push(raw_ev(
        b"{\"v\":2,\"t_ms\":1,\"type\":\"log\",\"message\":\"caf\xc3\"}\n",
    ));
    s.push(raw_ev(b"\0\n"));
    // 3 MiB without a newline, in pieces, then the end of that line.
    for _ in 0..48 {
        s.push(raw_ev(&[b'{'; 64 * 1024]));
    }
    s.push(raw_ev(b"}\n"));
    s.push(raw_ev(
        b"{\"v\":3,\"t_ms\":1,\"type\":\"log\",\"message\":\"from the future\"}\n",
    ));
    s.extend(good_run(&["t/1"]).into_iter().skip(1));
    let (r, dir) = run(&f, &plan(&["t/1"]), quick(), &[s]);
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Passed)],
        "the test itself passed: {:?} {}",
        r.reason,
        protocol_log(&dir)
    );
    assert_eq!(r.verdict, Verdict::InfraError, "{r:#?}");
    assert_eq!(r.verdict.exit_code(), 3);
    let why = r.reason.clone().unwrap_or_default();
    assert!(
        why.contains("event protocol errors") && why.contains("protocol-errors.log"),
        "{why}"
    );
    assert!(r.harness_error.is_some());
    let log = protocol_log(&dir);
    assert!(log.contains("event line is not UTF-8"), "{log}");
    assert!(
        log.contains("caf\\xc3"),
        "the offending bytes are kept exactly: {log}"
    );
    assert!(log.contains("\\x00"), "{log}");
    assert!(log.contains("event line longer than 65536 bytes"), "{log}");
    assert!(log.contains("event of schema v3 (host speaks v2)"), "{log}");
    assert!(log.contains("from the future"), "{log}");
}

/// Events for tests that are not running: unplanned and path-like names, a test finishing
/// that never started, a second start, a heartbeat for another test, a timeout that is
/// not the plan's. None of them creates a result, a directory or a file.
#[test]
fn events_for_tests_that_are_not_running() {
    let Some(f) = fixture() else { return };
    let evil = "../../../outside/dir";
    let mut s = vec![
        ev(test_started("t/1", 5)), // before run_started
        ev(started(2)),
        ev(test_finished(evil, TestStatus::Passed)),
        ev(test_started(evil, 5)),
        ev(test_started("/etc/passwd", 5)),
        ev(test_started("t/9", 5)),
        ev(test_started("t/1", u64::MAX)),
        ev(test_finished("t/2", TestStatus::Passed)),
        ev(test_started("t/1", 5)),
        ev(EventBody::Heartbeat {
            test: Some("t/2".into()),
            progress: 1,
        }),
        ev(test_started("t/2", 5)),
        ev(test_finished("t/1", TestStatus::Passed)),
        ev(test_started("t/1", 5)),
        ev(test_started("t/2", 5)),
        ev(test_finished("t/2", TestStatus::Passed)),
        ev(finished()),
        ev(EventBody::Log {
            message: "after the end".into(),
        }),
    ];
    s.push(link(&f.outside, "tests/t/2/escape"));
    let (r, dir) = run(&f, &plan(&["t/1", "t/2"]), quick(), &[s]);
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Passed), ("t/2", Verdict::Passed)]
    );
    assert_eq!(r.verdict, Verdict::InfraError, "{r:#?}");
    let log = protocol_log(&dir);
    for want in [
        "event before run_started",
        "test_finished for `../../../outside/dir`, which is not running",
        "test_started for `../../../outside/dir`, which is not in the plan",
        "test_started for `/etc/passwd`, which is not in the plan",
        "test_started for `t/9`, which is not in the plan",
        "test_started for `t/1` with timeout 18446744073709551615s, the plan says 5s",
        "test_finished for `t/2`, which is not running",
        "heartbeat for `t/2`, which is not running",
        "test_started for `t/2` while `t/1` is running",
        "test_started for `t/1` a second time",
        "event after run_finished",
    ] {
        assert!(log.contains(want), "{want}: {log}");
    }
    // No artifact from the link; no directory for a name outside the plan.
    assert!(
        r.tests
            .iter()
            .all(|t| t.artifacts.iter().all(|a| !a.contains("escape"))),
        "{:?}",
        r.tests
    );
    assert!(!dir.join("tests/t/9").exists());
}

/// Absurd numbers from the plan and the guest: the largest timeout and slow factor, and
/// the largest durations, exit codes and boot times. Nothing overflows; the test passes.
#[test]
fn absurd_numbers_do_not_overflow() {
    let Some(f) = fixture() else { return };
    let mut p = plan(&["t/1"]);
    p.tests[0].timeout_s = u64::MAX;
    p.slow_factor = u64::MAX;
    p.heartbeat_s = u64::MAX;
    let s = vec![
        ev(EventBody::RunStarted {
            kernel: "6.12.0-fake\u{1b}[2J".into(),
            e2fsprogs_version: None,
            server: None,
            agent_start_ms: u64::MAX,
            boot_to_ready_ms: u64::MAX,
            setup_ms: u64::MAX,
            tests: usize::MAX,
        }),
        ev(test_started("t/1", u64::MAX)),
        ev(EventBody::Heartbeat {
            test: Some("t/1".into()),
            progress: u64::MAX,
        }),
        ev(EventBody::TestFinished {
            name: "t/1".into(),
            status: TestStatus::Passed,
            duration_ms: u64::MAX,
            exit_code: Some(i32::MIN),
            signal: Some(i32::MAX),
            slow: true,
            reason: Some("x".repeat(60_000)),
            // Modes the host does not know, repeats and a flood: only the known ones stay.
            server_modes: ["bogus", "iomap", "iomap", "../x"]
                .iter()
                .map(|s| s.to_string())
                .chain(std::iter::repeat_n("classic".to_string(), 200))
                .collect(),
        }),
        ev(finished()),
    ];
    let limits = Limits {
        run: Duration::MAX,
        stall: Duration::MAX,
        ..quick()
    };
    let (r, dir) = run(&f, &p, limits, &[s]);
    assert_eq!(r.verdict, Verdict::Passed, "{:?} {:?}", r.reason, r.tests);
    assert_eq!(r.tests[0].duration_ms, u64::MAX);
    assert!(
        r.tests[0].reason.as_deref().unwrap().len() < 10_000,
        "a guest's reason is cut short"
    );
    let server = r
        .server
        .as_ref()
        .expect("the modes are kept in the server section");
    assert_eq!(server.modes_of("t/1"), ["iomap", "classic"]);
    let back = report::read_json(&dir.join("results.json")).unwrap();
    assert_eq!(back.boot_to_ready_ms, Some(u64::MAX));
}

/// A test that never finishes although the guest claims an endless timeout: the host
/// holds it to the plan's timeout and calls it hung.
#[test]
fn the_plan_not_the_guest_sets_the_deadline() {
    let Some(f) = fixture() else { return };
    let mut p = plan(&["t/1"]);
    p.tests[0].timeout_s = 1;
    let mut s = vec![ev(started(1)), ev(test_started("t/1", 1))];
    for _ in 0..40 {
        s.push(ev(EventBody::Heartbeat {
            test: Some("t/1".into()),
            progress: 1,
        }));
        s.push(sleep(0.5));
    }
    let t0 = Instant::now();
    let (r, _) = run(&f, &p, quick(), &[s]);
    assert_eq!(verdicts(&r), [("t/1", Verdict::Hung)], "{r:#?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// The guest plants links in the shared run directory where the host writes (results,
/// the boot root, the disks, a test's artifacts), then dies in a test; the host boots
/// again and writes its results. Nothing outside the run directory is written, the links
/// are removed, and the run is an infrastructure error besides the crash.
#[test]
fn links_planted_in_the_share_are_never_followed() {
    let Some(f) = fixture() else { return };
    let precious = f.outside.join("precious");
    let boot1 = vec![
        ev(started(2)),
        ev(test_started("t/1", 5)),
        con(b"[    1.0] harness-agent: test_started t/1\n"),
        link(&precious, "results.json"),
        link(&precious, "summary.md"),
        link(&precious, "junit.xml"),
        link(&precious, "plan.json"),
        link(&precious, "qemu.cmdline"),
        link(&precious, "protocol-errors.log"),
        link(&precious, "boot/HARNESS_BOOT"),
        link(&f.outside, "disks"),
        link(&f.outside.join("dir"), "tests/t/1"),
        con(b"[    1.2] Kernel panic - not syncing: Fatal exception\n"),
        json!({ "exit": 0 }),
    ];
    let boot2 = {
        let mut s = vec![ev(started(1))];
        s.extend(good_run(&["t/2"]).into_iter().skip(1));
        s.push(link(&precious, "results.json"));
        s
    };
    let limits = Limits {
        reboots: 1,
        ..quick()
    };
    let (r, dir) = run(&f, &plan(&["t/1", "t/2"]), limits, &[boot1, boot2]);
    assert_eq!(r.boots, 2, "{r:#?}");
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Crashed), ("t/2", Verdict::Passed)]
    );
    assert_eq!(r.verdict, Verdict::Crashed);
    assert!(
        r.tests[0].artifacts.is_empty(),
        "a linked test directory is not listed: {:?}",
        r.tests[0].artifacts
    );
    let log = protocol_log(&dir);
    assert!(
        log.contains("boot/HARNESS_BOOT") && log.contains("disks") && log.contains("results.json"),
        "{log}"
    );
    assert!(
        r.reason
            .as_deref()
            .unwrap_or_default()
            .contains("links or special files"),
        "{:?}",
        r.reason
    );
    let meta = std::fs::symlink_metadata(dir.join("results.json")).unwrap();
    assert!(meta.is_file(), "results.json is the host's own file");
    assert_eq!(
        report::read_json(&dir.join("results.json")).unwrap().id,
        r.id
    );
    assert!(std::fs::symlink_metadata(dir.join("disks"))
        .unwrap()
        .is_dir());
}

/// Random bytes on the console (invalid UTF-8, NULs, a huge line with no newline) do not
/// disturb a run; a hung-task report between the agent's markers fails the test although
/// it passed, even when the test_finished event arrives before the console shows it.
#[test]
fn console_noise_and_a_late_hung_task_report() {
    let Some(f) = fixture() else { return };
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // No newline: kernel report patterns cannot start a line by chance.
            match (x >> 24) as u8 {
                b'\n' => 0xff,
                b => b,
            }
        })
        .collect();
    let s = vec![
        ev(started(2)),
        con(&noise),
        con(&vec![b'W'; 300_000]),
        con(b"\n"),
        ev(test_started("run/1", 5)),
        con(b"[    1.0] harness-agent: test_started run/1\n"),
        ev(test_finished("run/1", TestStatus::Passed)),
        ev(test_started("run/2", 5)),
        sleep(0.5),
        // The console catches up: the report is inside run/1's markers.
        con("[    2.0] INFO: task dd:123 blocked for more than 120 seconds.\n[    2.1]       Not tainted 6.12.0 #1\n[    2.2] \u{1f980}\n".as_bytes()),
        con(b"[    2.3] harness-agent: test_finished run/1\n[    2.4] harness-agent: test_started run/2\n"),
        con(b"[    2.5] harness-agent: test_finished run/2\n"),
        ev(test_finished("run/2", TestStatus::Passed)),
        ev(finished()),
    ];
    let (r, _) = run(&f, &plan(&["run/1", "run/2"]), quick(), &[s]);
    assert_eq!(
        verdicts(&r),
        [("run/1", Verdict::Failed), ("run/2", Verdict::Passed)],
        "{r:#?}"
    );
    assert_eq!(r.verdict, Verdict::Failed);
    assert_eq!(r.verdict.exit_code(), 1);
    let f0 = &r.tests[0].findings[0];
    assert_eq!(f0.kind, FindingKind::HungTask);
    assert!(
        f0.excerpt.contains("Not tainted") && f0.excerpt.contains('\u{1f980}'),
        "{f0:?}"
    );
    assert!(r.tests[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("blocked for more than"));
}

/// A plan with no tests runs and verifies nothing: its own verdict, exit 4.
#[test]
fn an_empty_run_is_not_passed() {
    let Some(f) = fixture() else { return };
    let (r, _) = run(
        &f,
        &plan(&[]),
        quick(),
        &[vec![ev(started(0)), ev(finished())]],
    );
    assert_eq!(r.verdict, Verdict::NothingPassed, "{r:#?}");
    assert_eq!(r.verdict.exit_code(), 4);
    assert_eq!(
        r.reason.as_deref(),
        Some("no tests ran: nothing was verified")
    );
}

/// A plan whose test names are not plain relative paths is refused before any boot.
#[test]
fn a_plan_with_a_path_like_name_is_refused() {
    let Some(f) = fixture() else { return };
    let runs = f.tmp.path().join("runs");
    let dir = RunDir::create(&runs).unwrap();
    let e = vm::run_tests(
        &f.spec,
        &plan(&["../../x"]),
        &quick(),
        &dir,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("bad plan"), "{e}");
    assert!(!dir.path.join("plan.json").exists(), "nothing was prepared");
}
