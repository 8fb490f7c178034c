//! The run supervisor against a fake QEMU (a small Python script speaking the
//! same channels: console socket, event file, pidfile), so guest deaths, stalls
//! and boot failures are checked deterministically and fast.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use events::{Plan, PlanTest};
use report::{FindingKind, Verdict};
use vm::{Limits, RunDir, VmSpec};

mod common;

/// After `common::fake_vm`'s argument parsing.
const FAKE_QEMU: &str = r#"
plan = json.load(open(os.path.join(share, "plan.json")))
srv = socket.socket(socket.AF_UNIX)
srv.bind(con)
srv.listen(1)
c, _ = srv.accept()
mode = os.environ["FAKE_MODE"]
out = open(ev, "a", buffering=1)
def emit(**body):
    body["v"] = 2
    body["t_ms"] = int(time.monotonic() * 1000)
    out.write(json.dumps(body) + "\n")
def console(line):
    c.sendall((line + "\n").encode())
console("[    0.000000] Linux version 6.12.0 (fake)")
if mode == "boot-hang":
    time.sleep(600)
emit(type="run_started", kernel="6.12.0-fake", e2fsprogs_version=None,
     server=None, agent_start_ms=900, boot_to_ready_ms=1000, setup_ms=0,
     tests=len(plan["tests"]))
for t in plan["tests"]:
    name = t["name"]
    # As the agent does: the test's directory exists before its start is announced (a
    # resume takes the directory as the sign that the test started).
    os.makedirs(os.path.join(share, "tests", name), exist_ok=True)
    emit(type="test_started", name=name, timeout_s=t["timeout_s"])
    console("[    1.100000] harness-agent: test_started " + name)
    if name == "t/1" and mode.startswith("step-"):
        # One test running steps (fstests' check over a list): s/1 passes, s/2 goes down.
        console("[    1.110000] run fstests s/1 at 2026-01-01 00:00:00")
        console("[    1.120000] run fstests s/2 at 2026-01-01 00:00:01")
        if mode == "step-crash":
            # The test's server wrote its mode into the share before the guest died.
            d = os.path.join(share, "tests", name)
            os.makedirs(d, exist_ok=True)
            open(os.path.join(d, "server-modes.log"), "w").write("classic\nnoise\nclassic\n")
            console("[    1.200000] Kernel panic - not syncing: Fatal exception")
            sys.exit(0)
        # Alive (heartbeats go on) but the step never ends.
        for _ in range(1200):
            emit(type="heartbeat", test=name, progress=1)
            time.sleep(0.5)
    if name == "t/1" and mode == "stall":
        emit(type="heartbeat", test=name, progress=1)
        time.sleep(600)
    if name == "t/1" and mode == "crash":
        console("[    1.200000] BUG: kernel NULL pointer dereference, address: 0000000000000010")
        console("[    1.200001] RIP: 0010:fuse_fake+0x1/0x2")
        console("[    1.200002] Kernel panic - not syncing: Fatal exception")
        sys.exit(0)
    if name == "t/1" and mode == "warn":
        console("[    1.200000] WARNING: CPU: 0 PID: 9 at fs/fuse/file.c:10 fuse_fake+0x1/0x2")
        console("[    1.200001] ---[ end trace 0000000000000000 ]---")
    if name == "t/2" and mode == "slow-t2":
        d = os.path.join(share, "tests", name)
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "server-modes.log"), "w").write("classic\n")
        for _ in range(20):
            emit(type="heartbeat", test=name, progress=1)
            time.sleep(0.5)
    if name == "t/1":
        emit(type="test_finished", name=name, status="passed", duration_ms=5, exit_code=0, signal=None, slow=False, reason=None)
    else:
        emit(type="test_finished", name=name, status="failed", duration_ms=5, exit_code=3, signal=None, slow=False, reason="exit code 3")
    console("[    1.300000] harness-agent: test_finished " + name)
emit(type="run_finished", passed=1, failed=1)
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    spec: VmSpec,
    runs: PathBuf,
}

fn fixture() -> Option<Fixture> {
    let (tmp, spec) = common::fake_vm(FAKE_QEMU)?;
    let runs = tmp.path().join("runs");
    Some(Fixture {
        _tmp: tmp,
        spec,
        runs,
    })
}

fn plan() -> Plan {
    let t = |n: &str| PlanTest {
        name: n.into(),
        command: "true".into(),
        timeout_s: 1,
    };
    Plan {
        v: events::SCHEMA_VERSION,
        shell: false,
        server: None,
        tests: vec![t("t/1"), t("t/2")],
        heartbeat_s: 1,
        slow_factor: 1,
        console_loglevel: 7,
        host_time_unix: 0,
        env: vec![],
    }
}

fn run(f: &Fixture, mode: &str, limits: Limits) -> (report::RunResult, PathBuf) {
    std::env::set_var("FAKE_MODE", mode);
    let dir = RunDir::create(&f.runs).unwrap();
    let cancel = AtomicBool::new(false);
    let r = vm::run_tests(&f.spec, &plan(), &limits, &dir, &mut |_| {}, &cancel).unwrap();
    (r, dir.path)
}

/// Steps of test t/1: s/1, s/2, s/3, s/4, with a deadline of 1 s each; what follows a
/// step that went down runs as t/1.2.
#[derive(Default)]
struct FourSteps {
    continued: Vec<(String, Option<String>)>,
}

impl vm::Steps for FourSteps {
    fn deadline(&self, test: &str, step: &str) -> Option<Duration> {
        (test == "t/1" && step.starts_with("s/")).then_some(Duration::from_secs(1))
    }
    fn continue_after(&mut self, test: &str, step: Option<&str>, _: &RunDir) -> Vec<PlanTest> {
        self.continued.push((test.into(), step.map(Into::into)));
        vec![PlanTest {
            name: "t/1.2".into(),
            command: "true".into(),
            timeout_s: 1,
        }]
    }
}

/// A run the host stops (as Ctrl-C does) once t/2 started.
fn stopped_in_t2(f: &Fixture) -> (report::RunResult, RunDir) {
    std::env::set_var("FAKE_MODE", "slow-t2");
    let dir = RunDir::create(&f.runs).unwrap();
    let cancel = AtomicBool::new(false);
    let r = vm::run_tests(
        &f.spec,
        &plan(),
        &quick(),
        &dir,
        &mut |p| {
            if let vm::Progress::TestStarted { name: "t/2", .. } = p {
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        },
        &cancel,
    )
    .unwrap();
    (r, dir)
}

/// Steps whose stopped test t/2 keeps what it ran and continues as t/2.2.
struct KeepsWhatRan;

impl vm::Steps for KeepsWhatRan {
    fn deadline(&self, _: &str, _: &str) -> Option<Duration> {
        None
    }
    fn continue_after(&mut self, _: &str, _: Option<&str>, _: &RunDir) -> Vec<PlanTest> {
        vec![]
    }
    fn resume(&mut self, test: &str, _: &RunDir) -> Option<Vec<PlanTest>> {
        (test == "t/2").then(|| {
            vec![PlanTest {
                name: "t/2.2".into(),
                command: "true".into(),
                timeout_s: 1,
            }]
        })
    }
}

fn run_steps(f: &Fixture, mode: &str, steps: &mut FourSteps) -> report::RunResult {
    std::env::set_var("FAKE_MODE", mode);
    let dir = RunDir::create(&f.runs).unwrap();
    let mut plan = plan();
    // Longer than a step's deadline, so the step's deadline is what ends it.
    plan.tests[0].timeout_s = 60;
    let limits = Limits {
        reboots: 2,
        ..quick()
    };
    let cancel = AtomicBool::new(false);
    vm::run_tests_with_steps(&f.spec, &plan, &limits, &dir, steps, &mut |_| {}, &cancel).unwrap()
}

/// Each test's name and verdict, in the result's order.
fn verdicts(r: &report::RunResult) -> Vec<(&str, Verdict)> {
    r.tests
        .iter()
        .map(|t| (t.name.as_str(), t.verdict))
        .collect()
}

fn fake_alive(dir: &Path) -> bool {
    let pid = std::fs::read_to_string(dir.join("qemu.pid")).unwrap_or_default();
    !pid.trim().is_empty() && Path::new(&format!("/proc/{}", pid.trim())).exists()
}

fn quick() -> Limits {
    Limits {
        boot: Duration::from_secs(3),
        run: Duration::from_secs(60),
        stall: Duration::from_secs(3),
        shutdown: Duration::from_secs(3),
        dump_wait: Duration::from_secs(1),
        reboots: 0,
    }
}

// One test function: the fake reads FAKE_MODE from the environment, which the
// test threads would otherwise share.
#[test]
fn supervisor_verdicts() {
    let Some(f) = fixture() else { return };

    // A finished run: the failed test decides, result files are written.
    let (r, dir) = run(&f, "normal", quick());
    assert_eq!(r.verdict, Verdict::Failed, "{r:#?}");
    assert_eq!(r.tests[0].verdict, Verdict::Passed);
    assert_eq!(r.tests[1].verdict, Verdict::Failed);
    assert_eq!(r.boot_to_ready_ms, Some(1000));
    assert_eq!(r.kernel_release.as_deref(), Some("6.12.0-fake"));
    for file in [
        "results.json",
        "junit.xml",
        "summary.md",
        "console.log",
        "plan.json",
        "boot/agent",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    assert!(std::fs::read_to_string(dir.join("console.log"))
        .unwrap()
        .contains("Linux version"));

    // A kernel WARNING during a passing test fails it.
    let (r, _) = run(&f, "warn", quick());
    assert_eq!(r.tests[0].verdict, Verdict::Failed, "{:#?}", r.tests[0]);
    assert_eq!(r.tests[0].findings[0].kind, FindingKind::Warning);

    // The guest dies mid-test: crashed, with the report; the next test did not run.
    let (r, dir) = run(&f, "crash", quick());
    assert_eq!(r.verdict, Verdict::Crashed, "{r:#?}");
    assert_eq!(r.tests[0].verdict, Verdict::Crashed);
    assert!(
        r.tests[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("NULL pointer"),
        "{:?}",
        r.tests[0].reason
    );
    assert!(r.tests[0]
        .findings
        .iter()
        .any(|f| f.excerpt.contains("RIP: 0010:fuse_fake")));
    assert_eq!(r.tests[1].verdict, Verdict::NotRun);
    assert!(!fake_alive(&dir));

    // With reboots allowed, the run goes on after the crash in a new boot.
    let (r, dir) = run(
        &f,
        "crash",
        Limits {
            reboots: 2,
            ..quick()
        },
    );
    assert_eq!(r.boots, 2, "{r:#?}");
    assert_eq!(r.verdict, Verdict::Crashed);
    assert_eq!(r.tests[0].verdict, Verdict::Crashed);
    assert_eq!(
        r.tests[1].verdict,
        Verdict::Failed,
        "t/2 ran in the second boot"
    );
    assert!(
        dir.join("disks/test-boot1.img").is_file(),
        "the crashed boot's disk is kept"
    );
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(console.contains("Kernel panic") && console.contains("===== vm-test: boot 2 ====="));
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_eq!(
        events.matches("run_started").count(),
        2,
        "events of both boots kept"
    );

    // The run's time limit runs out while a test is still working: the test is not hung
    // (infra_error, run again by a resume), the run is the harness's failure.
    let t0 = Instant::now();
    // t/2 works for 10 s with heartbeats; 6 s leaves t/1 time to pass on a loaded
    // machine, and the long stall limit keeps t/2's own deadline (timeout + stall) out of
    // the way.
    let limited = Limits {
        run: Duration::from_secs(6),
        stall: Duration::from_secs(30),
        ..quick()
    };
    let (r, dir) = run(&f, "slow-t2", limited);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Passed), ("t/2", Verdict::InfraError)],
        "{r:#?}"
    );
    assert_eq!(r.verdict, Verdict::InfraError, "{r:#?}");
    assert!(
        r.tests[1]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("time limit")
            && r.reason.as_deref().unwrap_or("").contains("--resume"),
        "{r:#?}"
    );
    assert!(!fake_alive(&dir), "fake QEMU left running");

    // Heartbeats stop: hung within the stall limit, and the fake is killed.
    let t0 = Instant::now();
    let (r, dir) = run(&f, "stall", quick());
    assert_eq!(r.verdict, Verdict::Hung, "{r:#?}");
    assert_eq!(r.tests[0].verdict, Verdict::Hung);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!fake_alive(&dir), "fake QEMU left running");

    // A step past its deadline while the guest is alive: the test is hung in that step,
    // long before its own timeout, and its rest runs after a reboot.
    let t0 = Instant::now();
    let mut steps = FourSteps::default();
    let r = run_steps(&f, "step-stall", &mut steps);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_eq!(
        steps.continued,
        [("t/1".to_string(), Some("s/2".to_string()))]
    );
    assert_eq!(
        verdicts(&r),
        [
            ("t/1", Verdict::Hung),
            ("t/1.2", Verdict::Failed),
            ("t/2", Verdict::Failed)
        ],
        "{r:#?}"
    );
    assert!(
        r.tests[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("s/2 (in t/1)"),
        "{:?}",
        r.tests[0].reason
    );
    assert_eq!(r.boots, 2);

    // The guest dies in a step: the continuation names that step, and runs next.
    let mut steps = FourSteps::default();
    let r = run_steps(&f, "step-crash", &mut steps);
    assert_eq!(
        steps.continued,
        [("t/1".to_string(), Some("s/2".to_string()))]
    );
    assert_eq!(
        verdicts(&r),
        [
            ("t/1", Verdict::Crashed),
            ("t/1.2", Verdict::Failed),
            ("t/2", Verdict::Failed)
        ],
        "{r:#?}"
    );
    // It never reported its server's mode; the host read it from the share.
    let server = r.server.as_ref().expect("server facts");
    assert_eq!(server.modes_of("t/1"), ["classic"]);

    // The host stops the run (Ctrl-C) while t/2 runs; a resume runs t/2 alone, in a
    // second boot of the same run directory, and t/1 keeps its verdict.
    let (r, dir) = stopped_in_t2(&f);
    assert_eq!(r.verdict, Verdict::InfraError, "{r:#?}");
    // The checkpoint is the host's: not in the directory the guest shares.
    assert!(!dir.host_state_dir().starts_with(&dir.path));
    assert!(dir.host_state_dir().join("checkpoint.json").is_file());
    std::env::set_var("FAKE_MODE", "normal");
    let again = AtomicBool::new(false);
    let mut ran = vec![];
    let r = vm::resume_tests_with_steps(
        &f.spec,
        &plan(),
        &quick(),
        &RunDir::open(&dir.path).unwrap(),
        &mut vm::NoSteps,
        &mut |p| {
            if let vm::Progress::TestStarted { name, .. } = p {
                ran.push(name.to_string());
            }
        },
        &again,
    )
    .unwrap();
    assert_eq!(ran, ["t/2"]);
    assert_eq!(
        verdicts(&r),
        [("t/1", Verdict::Passed), ("t/2", Verdict::Failed)],
        "{r:#?}"
    );
    assert_eq!(r.boots, 2);
    // A resume of a finished run boots nothing and keeps the verdicts.
    let r = vm::resume_tests_with_steps(
        &f.spec,
        &plan(),
        &quick(),
        &RunDir::open(&dir.path).unwrap(),
        &mut vm::NoSteps,
        &mut |_| {},
        &again,
    )
    .unwrap();
    assert_eq!(r.boots, 2);
    assert_eq!(r.verdict, Verdict::Failed);

    // Steps that know what a stopped test finished: it keeps that (and the server modes
    // its mounts wrote), and its rest runs as a new test.
    let (_, dir) = stopped_in_t2(&f);
    std::env::set_var("FAKE_MODE", "normal");
    let r = vm::resume_tests_with_steps(
        &f.spec,
        &plan(),
        &quick(),
        &RunDir::open(&dir.path).unwrap(),
        &mut KeepsWhatRan,
        &mut |_| {},
        &again,
    )
    .unwrap();
    assert_eq!(
        verdicts(&r),
        [
            ("t/1", Verdict::Passed),
            ("t/2", Verdict::InfraError),
            ("t/2.2", Verdict::Failed)
        ],
        "{r:#?}"
    );
    assert!(r.tests[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("host stopped"));
    assert_eq!(r.server.as_ref().unwrap().modes_of("t/2"), ["classic"]);

    // Never ready: an infrastructure error with the end of the console.
    let (r, dir) = run(&f, "boot-hang", quick());
    assert_eq!(r.verdict, Verdict::InfraError, "{r:#?}");
    assert!(r
        .reason
        .as_deref()
        .unwrap()
        .contains("did not report ready"));
    assert!(r
        .console_excerpt
        .as_deref()
        .unwrap()
        .contains("Linux version"));
    assert!(r.tests.iter().all(|t| t.verdict == Verdict::NotRun));
    assert!(!fake_alive(&dir));
}
