//! `iomapfs --vhost-user-socket` as a process: what it refuses at start, and a real QEMU
//! completing the vhost-user handshake with it (the guest side, a kernel mounting
//! virtiofs and doing I/O, is `vm-test --virtiofs`: harness/runner/tests/vm_e2e.rs).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn image(dir: &Path) -> std::path::PathBuf {
    test_support::e2fs::new_ext4_image(dir, 64).unwrap()
}

fn backend(img: &Path, socket: &Path, opts: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iomapfs"))
        .arg(img)
        .arg("--vhost-user-socket")
        .arg(socket)
        .args(opts)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn iomap_on_is_refused_over_virtiofs() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let sock = dir.path().join("s.sock");
    let (status, err) = stderr_of(backend(&img, &sock, &["-o", "iomap=on"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("iomap=on cannot work over virtio-fs"), "{err}");
    assert!(!sock.exists(), "no socket for a refused start");
}

#[test]
fn a_stop_signal_before_qemu_connects_closes_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let sock = dir.path().join("s.sock");
    let child = backend(&img, &sock, &[]);
    wait_for("the socket", || sock.exists());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, err) = stderr_of(child);
    assert!(status.success(), "{err}");
    test_support::e2fs::e2fsck_clean(&img).unwrap();
}

/// `-o record=FILE` records over vhost-user too: a backend stopped before any guest came
/// leaves a complete recording that says which transport it was.
#[test]
fn a_recording_backend_finishes_its_recording_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let sock = dir.path().join("s.sock");
    let rec = dir.path().join("s.rec");
    let record = format!("record={}", rec.display());
    let child = backend(&img, &sock, &["-o", &record]);
    wait_for("the socket", || sock.exists());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, err) = stderr_of(child);
    assert!(status.success(), "{err}");
    let mut reader = iomapfs::record::Reader::open(&rec).unwrap();
    assert_eq!(reader.meta().get("transport"), Some("vhost-user"));
    let mut kinds = vec![];
    while let Some(f) = reader.next_frame().unwrap() {
        kinds.push(f.kind);
    }
    assert_eq!(kinds, [iomapfs::record::Kind::End], "no guest, no requests");
}

/// QEMU realizes a vhost-user-fs device only after the backend answered the handshake
/// (features, protocol features, queue count, memory table); it exits at once otherwise.
#[test]
fn qemu_completes_the_vhost_user_handshake_and_the_backend_exits_when_it_quits() {
    if !test_support::needs(test_support::needs::tool_from(
        "qemu-system-x86_64",
        "qemu-system-x86",
    )) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let sock = dir.path().join("s.sock");
    let be = backend(&img, &sock, &["-o", "threads=2"]);
    wait_for("the socket", || sock.exists());
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-display", "none", "-S", "-m", "128M"])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=128M,share=on",
            "-machine",
            "microvm,memory-backend=mem,acpi=off,rtc=off,x-option-roms=off",
        ])
        .arg("-chardev")
        .arg(format!("socket,id=vfs,path={}", sock.display()))
        .args([
            "-device",
            "vhost-user-fs-device,chardev=vfs,tag=t,num-request-queues=2",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    if let Some(status) = qemu.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut qemu.stderr.take().unwrap(), &mut err).unwrap();
        panic!("QEMU refused the device ({status}): {err}");
    }
    let pid = nix::unistd::Pid::from_raw(qemu.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    qemu.wait().unwrap();
    // The frontend is gone: the backend closes the filesystem and exits by itself.
    let (status, err) = stderr_of(be);
    assert!(status.success(), "{err}");
    assert!(err.contains("vhost-user frontend connected"), "{err}");
    test_support::e2fs::e2fsck_clean(&img).unwrap();
}
