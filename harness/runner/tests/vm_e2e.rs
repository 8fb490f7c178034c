//! End-to-end tests of vm-test (`runner::vm_test::run`): real QEMU (TCG here), the default
//! kernel profile and the default image. The first run builds the kernel and
//! the image (cached afterwards); each test then takes well under two minutes.
//!
//! `HARNESS_KERNEL_IMAGE=/path/bzImage` uses that kernel instead of building one. The
//! command-line checks are in xtask/tests/vm_e2e.rs.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use plumbing::ui::Ui;
use report::{FindingKind, Verdict};
use runner::vm_test::{run, VmTestArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: VmTestArgs,
}

/// None (after `needs`: a failure under CI, a SKIP line elsewhere) if this machine has no QEMU.
fn vm_args(extra: &[&str]) -> Option<VmTestArgs> {
    if !test_support::needs(test_support::needs::tool_from(
        "qemu-system-x86_64",
        "qemu-system-x86",
    )) {
        return None;
    }
    let mut argv = vec!["vm-test".to_string()];
    if let Ok(k) = std::env::var("HARNESS_KERNEL_IMAGE") {
        argv.extend(["--kernel-image".into(), k]);
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Some(Cli::try_parse_from(argv).expect("valid arguments").args)
}

/// Each test's name and verdict, in order.
fn verdicts(result: &report::RunResult) -> Vec<(&str, Verdict)> {
    result
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.verdict))
        .collect()
}

fn qemu_running(run_id: &str) -> bool {
    // QEMU runs with `-name harness-<id>,process=harness-<id>`.
    let out = Command::new("pgrep")
        .args(["-f", "--", &format!("harness-{run_id},process=")])
        .output()
        .expect("pgrep runs");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("pgrep failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn smoke_suite_passes_under_iomapfs() {
    let Some(args) = vm_args(&["--suite", "smoke"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        result.verdict,
        Verdict::Passed,
        "{}",
        std::fs::read_to_string(dir.join("summary.md")).unwrap()
    );
    assert_eq!(result.tests.len(), 5);
    assert!(result.tests.iter().all(|t| t.verdict == Verdict::Passed));
    let server = result.server.as_ref().expect("server facts reported");
    let mode = server.mode.clone().expect("server mode reported");
    // Each test that mounted iomapfs reports what its server negotiated (smoke/fsck only
    // checks the unmounted disk).
    for t in result.tests.iter().filter(|t| t.name != "smoke/fsck") {
        assert_eq!(
            server.modes_of(&t.name),
            std::slice::from_ref(&mode),
            "{}",
            t.name
        );
    }
    let ready = result.boot_to_ready_ms.expect("boot-to-ready measured");
    eprintln!(
        "boot-to-agent-ready {ready} ms; VM run {:.1} s",
        result.duration_ms as f64 / 1000.0
    );
    // The target is 120 s for a cached smoke run under TCG on an idle machine;
    // CI runs other tests beside this one on two cores, so allow twice that.
    assert!(
        result.duration_ms < 240_000,
        "smoke took {} ms",
        result.duration_ms
    );
    for f in [
        "results.json",
        "junit.xml",
        "summary.md",
        "console.log",
        "events.jsonl",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    for t in &result.tests {
        assert!(
            dir.join("tests").join(&t.name).join("dmesg.log").is_file(),
            "{} dmesg",
            t.name
        );
    }
    let back = report::read_json(&dir.join("results.json")).unwrap();
    assert_eq!(back.verdict, Verdict::Passed);
    // Passing tests keep no recorded sessions (the servers recorded them).
    for t in &result.tests {
        let rec = dir.join("tests").join(&t.name).join("recordings");
        assert!(!rec.exists(), "{} kept {}", t.name, rec.display());
        assert!(t.artifacts.iter().all(|a| !a.contains("/recordings/")));
    }
    assert!(!qemu_running(&result.id));
}

/// A failing test that wrote through iomapfs leaves its server's session and the snapshot
/// of the filesystem it started from; replayed on the host, the session matches.
#[test]
fn a_failing_test_leaves_a_recording_that_replays_without_differences() {
    let cmd = "mount -t fuse.iomapfs -o threads=1 $TEST_DEV $TEST_DIR && \
               echo hello > $TEST_DIR/f && mkdir $TEST_DIR/d && \
               dd if=/dev/urandom of=$TEST_DIR/d/g bs=64k count=16 status=none && \
               rm $TEST_DIR/f && umount $TEST_DIR && false";
    let Some(args) = vm_args(&["--run", cmd, "--timeout", "120"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(result.tests[0].verdict, Verdict::Failed);
    let name = result.tests[0].name.clone();
    let sessions = runner::recordings::sessions(&dir, &name).expect("a recorded session");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let rel = |p: &Path| p.strip_prefix(&dir).unwrap().display().to_string();
    for f in [&sessions[0].recording, &sessions[0].snapshot] {
        assert!(
            result.tests[0].artifacts.contains(&rel(f)),
            "{} is not an artifact",
            rel(f)
        );
    }
    let report = iomapfs::replay::replay(&iomapfs::replay::Config {
        recording: sessions[0].recording.clone(),
        image: sessions[0].snapshot.clone(),
        options: vec![],
        workdir: None,
    })
    .expect("the session replays");
    eprintln!("{report}");
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(iomapfs::replay::Ending::Complete));
    assert!(report.requests > 10, "{report}");
}

/// iomapfs on the host as QEMU's vhost-user-fs backend: the guest mounts `-t virtiofs`,
/// the smoke checks, the dio workload and a dd round trip run there, and the host checks
/// the image after. The dio workload runs after smoke dropped the guest's caches: run
/// straight from the virtio-fs run-directory share, its code was then stale under TCG.
#[test]
fn smoke_suite_passes_over_virtiofs() {
    // 64 MiB written and read back through virtio-fs, across a remount (DESTROY, then a
    // new INIT on the same backend); dd's own summaries go to the test's output.
    let dd = "set -e; mount -t virtiofs test /mnt/test; \
        dd if=/dev/urandom of=/tmp/src bs=1M count=64 status=none; \
        dd if=/tmp/src of=/mnt/test/dd bs=1M conv=fsync; \
        umount /mnt/test; mount -t virtiofs test /mnt/test; \
        echo 3 > /proc/sys/vm/drop_caches; \
        dd if=/mnt/test/dd of=/tmp/back bs=1M; \
        cmp /tmp/src /tmp/back; umount /mnt/test";
    let Some(args) = vm_args(&[
        "--virtiofs",
        "--suite",
        "smoke",
        "--suite",
        "dio",
        "--run",
        dd,
    ]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        result.verdict,
        Verdict::Passed,
        "{}",
        std::fs::read_to_string(dir.join("summary.md")).unwrap()
    );
    let names: Vec<&str> = result.tests.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"smoke/fileops"), "{names:?}");
    assert!(names.contains(&"dio/workload"), "{names:?}");
    assert!(names.contains(&"host/e2fsck"), "{names:?}");
    let cmdline = std::fs::read_to_string(dir.join("qemu.cmdline")).unwrap();
    assert!(cmdline.contains("tag=test"), "{cmdline}");
    // Every mount in the guest reached the host's backend, in classic mode: the smoke
    // tests mount 7 times, the dio workload at least twice, the dd test twice.
    let modes = std::fs::read_to_string(dir.join("virtiofs-test.modes")).unwrap();
    assert!(modes.lines().count() >= 11, "{modes}");
    assert!(modes.lines().all(|m| m == "classic"), "{modes}");
    let server = result.server.as_ref().expect("the backend's facts");
    assert_eq!(server.mode.as_deref(), Some("classic"), "{server:?}");
    assert!(!qemu_running(&result.id));
}

/// A guest that panics with data written and synced through virtio-fs: the host's backend
/// closes the filesystem when QEMU goes, the next boot gets its own backend, and every
/// boot's image is clean on the host with the synced file in it.
#[test]
fn a_guest_crash_over_virtiofs_leaves_the_hosts_image_clean() {
    let Some(args) = vm_args(&[
        "--virtiofs",
        "--run",
        "mount -t virtiofs test /mnt/test && echo kept > /mnt/test/f && sync && echo c > /proc/sysrq-trigger",
        "--run",
        "mount -t virtiofs test /mnt/test && touch /mnt/test/g && umount /mnt/test",
    ]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        verdicts(&result),
        [
            ("run/1", Verdict::Crashed),
            ("run/2", Verdict::Passed),
            ("host/e2fsck", Verdict::Passed)
        ]
    );
    assert_eq!(result.boots, 2);
    let log = std::fs::read_to_string(dir.join("virtiofs-test.log")).unwrap();
    assert_eq!(
        log.matches("vhost-user frontend connected").count(),
        2,
        "{log}"
    );
    // The crashed boot's image (kept as test-boot1.img) holds what the guest synced.
    let out = Command::new("debugfs")
        .args(["-R", "cat /f"])
        .arg(dir.join("disks").join("test-boot1.img"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    assert!(!qemu_running(&result.id));
}

/// The host's virtio-fs backend records each boot's session, every mount in turn, as the
/// guest's servers do; a failing run keeps it, and it replays on the host without
/// differences. What the guest's O_DIRECT does over virtio-fs shows in it: the opens carry
/// O_DIRECT, and each 64 KiB block dd reads or writes reaches the backend as one READ or
/// WRITE of its own (the file's O_DIRECT in its flags), past the guest's page cache.
#[test]
fn a_failing_virtiofs_run_keeps_the_backends_recording_which_replays_exactly() {
    // One vCPU: one request queue, so the recording's order is the order served.
    let cmd = "set -e; mount -t virtiofs test /mnt/test; echo hello > /mnt/test/f; \
        mkdir /mnt/test/d; dd if=/dev/urandom of=/mnt/test/d/g bs=64k count=16 status=none; \
        dd if=/dev/urandom of=/mnt/test/direct bs=64k count=4 oflag=direct status=none; \
        umount /mnt/test; mount -t virtiofs test /mnt/test; rm /mnt/test/f; \
        dd if=/mnt/test/direct of=/dev/null bs=64k iflag=direct status=none; \
        umount /mnt/test; false";
    let Some(args) = vm_args(&[
        "--virtiofs",
        "--cpus",
        "1",
        "--run",
        cmd,
        "--timeout",
        "120",
    ]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        verdicts(&result),
        [("run/1", Verdict::Failed), ("host/e2fsck", Verdict::Passed)]
    );
    let (recording, snapshot) = iomapfs::record::harness::session_files(
        &vm::run::virtiofs_recordings(&dir, vm::run::VIRTIOFS_TEST_TAG),
        1,
    );
    let mut reader = iomapfs::record::Reader::open(&recording).expect("the backend recorded");
    assert_eq!(reader.meta().get("transport"), Some("vhost-user"));
    let (mut inits, mut direct_opens, mut direct_writes, mut direct_reads) = (0, 0, 0, 0);
    while let Some(f) = reader.next_frame().unwrap() {
        if f.kind != iomapfs::record::Kind::Request {
            continue;
        }
        use fuse_wire::request::Op;
        let o_direct = |flags: u32| u32::from(flags & nix::libc::O_DIRECT as u32 != 0);
        match fuse_wire::parse(&f.data).map(|r| r.op) {
            Ok(Op::Init(_)) => inits += 1,
            Ok(Op::Open(arg)) => direct_opens += o_direct(arg.flags),
            Ok(Op::Create { arg, .. }) => direct_opens += o_direct(arg.flags),
            Ok(Op::Write { arg, .. }) if arg.size == 64 << 10 => {
                direct_writes += o_direct(arg.flags)
            }
            Ok(Op::Read(arg)) if arg.size == 64 << 10 => direct_reads += o_direct(arg.flags),
            _ => {}
        }
    }
    // dd oflag=direct creates the file, iflag=direct opens it after the remount.
    assert_eq!(direct_opens, 2, "opens with O_DIRECT");
    assert_eq!(direct_writes, 4, "64 KiB direct WRITEs, one per dd block");
    assert_eq!(direct_reads, 4, "64 KiB direct READs, one per dd block");
    assert_eq!(inits, 2, "two mounts in one recording");
    let report = iomapfs::replay::replay(&iomapfs::replay::Config {
        recording,
        image: snapshot,
        options: vec![],
        workdir: None,
    })
    .expect("the session replays");
    eprintln!("{report}");
    assert_eq!(report.finding, None, "{report}");
    assert_eq!(report.ending, Some(iomapfs::replay::Ending::Complete));
    assert!(!qemu_running(&result.id));
}

/// The same checks on the kernel's own ext4: keeps the smoke scripts honest
/// (a check that passes on iomapfs but fails on ext4 is a wrong check or a
/// difference worth knowing).
#[test]
fn smoke_suite_passes_on_kernel_ext4_as_a_control() {
    let Some(args) = vm_args(&["--suite", "smoke", "--env", "SMOKE_FSTYPE=ext4"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        result.verdict,
        Verdict::Passed,
        "{}",
        std::fs::read_to_string(dir.join("summary.md")).unwrap()
    );
}

#[test]
fn guest_panic_is_classified_as_crashed_and_the_run_goes_on() {
    let Some(args) = vm_args(&[
        "--run",
        "echo c > /proc/sysrq-trigger",
        "--run",
        "true",
        "--no-server",
    ]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(result.verdict, Verdict::Crashed);
    let t = &result.tests[0];
    assert_eq!(t.name, "run/1");
    assert_eq!(t.verdict, Verdict::Crashed);
    let panic = t
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::Panic)
        .expect("a panic finding");
    assert!(
        panic.title.contains("sysrq triggered crash"),
        "{}",
        panic.title
    );
    assert!(!panic.excerpt.is_empty());
    // The run went on in a second boot with the test after the crash.
    assert_eq!(result.boots, 2);
    assert_eq!(
        result.tests[1].verdict,
        Verdict::Passed,
        "{:?}",
        result.tests[1]
    );
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("sysrq triggered crash"), "{junit}");
    assert!(!qemu_running(&result.id));
}

#[test]
fn a_sleeping_test_is_hung_within_its_deadline_and_no_qemu_is_left() {
    let Some(args) = vm_args(&["--run", "sleep 600", "--timeout", "20", "--no-server"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(
        result.tests[0].verdict,
        Verdict::Hung,
        "{:?}",
        result.tests[0]
    );
    assert_eq!(result.verdict, Verdict::Hung);
    // The VM part (boot, 20 s timeout, shutdown), far from the 600 s the command asked for.
    let vm_time = Duration::from_millis(result.duration_ms);
    assert!(vm_time < Duration::from_secs(120), "took {vm_time:?}");
    let d = result.tests[0].duration_ms;
    assert!((20_000..40_000).contains(&d), "killed at {d} ms");
    assert!(dir.join("tests/run/1/dmesg.log").is_file());
    let pid: i32 =
        std::fs::read_to_string(dir.join("qemu.pid")).map_or(0, |s| s.trim().parse().unwrap_or(0));
    assert!(
        pid == 0 || !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} still running"
    );
    assert!(!qemu_running(&result.id));
}

/// The host-side path for a guest that stops answering: with a stall limit
/// shorter than the heartbeat interval the host takes the guest for stuck,
/// asks it for a task dump through sysrq on the serial line (QMP break + key),
/// records it, and stops QEMU.
#[test]
fn an_unresponsive_guest_gets_a_sysrq_task_dump_and_is_stopped() {
    let Some(args) = vm_args(&["--run", "sleep 60", "--stall-timeout", "1", "--no-server"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    eprint!("{}", report::summary_text(&result));
    assert_eq!(result.verdict, Verdict::Hung);
    let t = &result.tests[0];
    assert_eq!(t.verdict, Verdict::Hung);
    assert!(
        t.findings.iter().any(|f| f.kind == FindingKind::TaskDump),
        "{:?}",
        t.findings
    );
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(
        console.contains("sysrq: Show Blocked State"),
        "no sysrq output in the console"
    );
    assert!(
        console.contains("task:agent"),
        "no task dump in the console"
    );
    assert!(
        result.duration_ms < 60_000,
        "stopped after {} ms",
        result.duration_ms
    );
    assert!(!qemu_running(&result.id));
}

/// `--expect-mode iomap` on a kernel built without FUSE iomap fails every test before
/// booting, saying why (exit 1); the run records the mode it expected.
#[test]
fn expecting_iomap_on_a_kernel_without_it_fails_before_booting() {
    if std::env::var_os("HARNESS_KERNEL_IMAGE").is_some() {
        // A given kernel's config is unknown: this is about the default profile's.
        return;
    }
    let Some(args) = vm_args(&["--suite", "smoke", "--expect-mode", "iomap"]) else {
        return;
    };
    let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
    assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
    assert_eq!(result.verdict.exit_code(), 1);
    assert_eq!(result.boots, 0, "nothing booted");
    assert_eq!(
        result.server.and_then(|s| s.expected_mode).as_deref(),
        Some("iomap")
    );
    for t in &result.tests {
        let why = t.reason.as_deref().unwrap_or("");
        assert!(
            why.contains("expected iomap: the kernel did not offer FUSE_IOMAP")
                && why.contains("without CONFIG_FUSE_IOMAP"),
            "{}: {why}",
            t.name
        );
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("expected iomap (--expect-mode)"), "{md}");
}

/// The harness reads a crashed guest's artifacts: what the guest wrote to the run directory
/// just before it died (no sync) must be on the host, over either share. Over virtio-fs
/// the guest also cannot leave a device node there (virtiofsd runs without CAP_MKNOD).
#[test]
fn writes_just_before_a_guest_crash_reach_the_host_over_9p_and_virtiofs() {
    let script = "head -c 1048576 /dev/urandom > /tmp/data; \
        sum=$(md5sum < /tmp/data | cut -d' ' -f1); \
        dd if=/tmp/data of=/harness/written bs=64k status=none; \
        for i in $(seq 50); do echo line $i >> /harness/appended; done; \
        mknod /harness/mem c 1 1 2>/dev/null && nod=made || nod=refused; \
        opts=$(awk '$2 == \"/harness\" { print $4 }' /proc/mounts); \
        echo \"SHARETEST md5=$sum mknod=$nod opts=$opts\" > /dev/kmsg; \
        echo c > /proc/sysrq-trigger";
    // virtiofsd needs root (vm-test installs it when missing).
    if !test_support::needs(test_support::needs::root()) {
        return;
    }
    for share in ["9p", "virtiofs"] {
        let Some(args) = vm_args(&[
            "--share",
            share,
            "--no-server",
            "--max-reboots",
            "0",
            "--run",
            script,
        ]) else {
            return;
        };
        let (result, dir) = run(&args, &Ui::plain()).expect("vm-test runs");
        eprint!("{}", report::summary_text(&result));
        assert_eq!(verdicts(&result), [("run/1", Verdict::Crashed)], "{share}");
        let cmdline = std::fs::read_to_string(dir.join("qemu.cmdline")).unwrap();
        let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
        let line = console
            .lines()
            .find_map(|l| l.split("SHARETEST ").nth(1))
            .unwrap_or_else(|| panic!("{share}: no SHARETEST line in the console"));
        let want = line.split_whitespace().next().unwrap();
        let data = std::fs::read(dir.join("written")).unwrap();
        let got = Command::new("md5sum")
            .arg(dir.join("written"))
            .output()
            .expect("md5sum runs");
        let got = String::from_utf8_lossy(&got.stdout);
        assert_eq!(data.len(), 1 << 20, "{share}");
        assert_eq!(
            Some(want),
            got.split_whitespace()
                .next()
                .map(|s| format!("md5={s}"))
                .as_deref(),
            "{share}"
        );
        let appended = std::fs::read_to_string(dir.join("appended")).unwrap();
        assert_eq!(appended.lines().last(), Some("line 50"), "{share}");
        if share == "virtiofs" {
            assert!(cmdline.contains("tag=harness"), "{cmdline}");
            assert!(line.contains("mknod=refused"), "{line}");
            // Code is never run from it (see the agent's init: stale under TCG).
            assert!(line.contains("noexec"), "{line}");
            assert!(dir.join("virtiofsd.log").is_file());
        } else {
            assert!(
                cmdline.contains("fsdev=share,mount_tag=harness"),
                "{cmdline}"
            );
            assert!(!dir.join("virtiofsd.log").exists());
        }
        assert!(!qemu_running(&result.id));
    }
}
