//! Guest preparation: disk names, the FUSE server, the interactive shell.
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use events::{Plan, ServerSetup};

use crate::emit::Emitter;

pub const TEST_DIR: &str = "/mnt/test";
pub const SCRATCH_MNT: &str = "/mnt/scratch";
const SERVER_DEST: &str = "/usr/local/sbin";
const MODE_FILE: &str = "/run/iomapfs.mode";

#[derive(Debug, Default)]
pub struct ServerInfo {
    pub version: Option<String>,
    pub mode: Option<String>,
    pub error: Option<String>,
}

/// What udev would do: `/dev/disk/by-id/virtio-SERIAL` → `/dev/vdX`.
pub fn link_disks_by_serial() {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return;
    };
    let _ = std::fs::create_dir_all("/dev/disk/by-id");
    for entry in dir.flatten() {
        let dev = entry.file_name().to_string_lossy().to_string();
        if let Ok(serial) = std::fs::read_to_string(entry.path().join("serial")) {
            let serial = serial.trim();
            if !serial.is_empty() {
                let link = format!("/dev/disk/by-id/virtio-{serial}");
                let _ = std::os::unix::fs::symlink(format!("../../{dev}"), link);
            }
        }
    }
}

/// Environment every test and the shell get.
pub fn test_env(plan: &Plan) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "linux".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TEST_DIR".into(), TEST_DIR.into()),
        ("SCRATCH_MNT".into(), SCRATCH_MNT.into()),
        ("HARNESS_SHARE".into(), events::SHARE_MOUNT.into()),
    ];
    if let Some(s) = &plan.server {
        env.push(("TEST_DEV".into(), s.test_dev.clone()));
        if let Some(d) = &s.scratch_dev {
            env.push(("SCRATCH_DEV".into(), d.clone()));
        }
    }
    env.extend(plan.env.iter().cloned());
    env
}

/// Install the server binaries from the share, format the test disk, and do
/// one mount/unmount through the mount helper to learn the server's mode.
pub fn prepare_server(s: &ServerSetup, out: &mut Emitter) -> Result<ServerInfo, String> {
    let src = Path::new(events::SHARE_MOUNT).join(&s.bin_dir);
    let mut info = ServerInfo::default();
    let t0 = crate::sys::boottime_ms();
    for name in ["iomapfs", "mount.fuse.iomapfs", "workloads"] {
        let from = src.join(name);
        if !from.exists() {
            continue;
        }
        let to = Path::new(SERVER_DEST).join(name);
        let _ = std::fs::create_dir_all(SERVER_DEST);
        std::fs::copy(&from, &to).map_err(|e| format!("copy {}: {e}", from.display()))?;
        let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755));
    }
    let server = Path::new(SERVER_DEST).join("iomapfs");
    if !server.exists() {
        return Err(format!("no iomapfs binary in {}", src.display()));
    }
    let helper = Path::new(SERVER_DEST).join("mount.fuse.iomapfs");
    let helper = if helper.exists() {
        helper
    } else {
        server.clone()
    };
    let link = Path::new("/sbin/mount.fuse.iomapfs");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&helper, link)
        .map_err(|e| format!("link {}: {e}", link.display()))?;

    info.version = run(&[server.to_str().unwrap_or("iomapfs"), "--version"], 10)
        .ok()
        // "iomapfs 0.1.0" -> "0.1.0"
        .and_then(|o| o.split_whitespace().last().map(str::to_string));

    let _ = std::fs::create_dir_all(TEST_DIR);
    let _ = std::fs::create_dir_all(SCRATCH_MNT);
    let t_installed = crate::sys::boottime_ms();
    if s.format {
        let mut mkfs = vec!["mkfs.ext4", "-F", "-q"];
        mkfs.extend(s.mkfs_options.iter().map(String::as_str));
        mkfs.push(&s.test_dev);
        run(&mkfs, 120)?;
    }

    let t_mkfs = crate::sys::boottime_ms();
    let opt = format!("mode_file={MODE_FILE}");
    let mounted = run(
        &[
            "mount",
            "-t",
            "fuse.iomapfs",
            "-o",
            &opt,
            &s.test_dev,
            TEST_DIR,
        ],
        60,
    );
    match mounted {
        Ok(_) => {
            info.mode = std::fs::read_to_string(MODE_FILE)
                .ok()
                .map(|m| m.trim().to_string());
            if info.mode.is_none() {
                info.error = Some(format!("server mounted but wrote no {MODE_FILE}"));
            }
        }
        Err(e) => {
            // Maybe the server does not know mode_file yet: try a plain mount.
            run(&["mount", "-t", "fuse.iomapfs", &s.test_dev, TEST_DIR], 60)
                .map_err(|e2| format!("mount through iomapfs failed: {e2}"))?;
            info.error = Some(format!("mode_file option rejected: {e}"));
        }
    }
    run(&["umount", TEST_DIR], 60)?;
    crate::runner::reap_orphans();
    let t_end = crate::sys::boottime_ms();
    out.log(&format!(
        "server setup: install {} ms, mkfs.ext4 {} ms, mount check {} ms",
        t_installed - t0,
        t_mkfs - t_installed,
        t_end - t_mkfs
    ));
    Ok(info)
}

pub fn e2fsprogs_version() -> Option<String> {
    // `mke2fs -V` prints "mke2fs 1.47.0 (5-Feb-2023)" first.
    let out = run(&["mke2fs", "-V"], 10).ok()?;
    out.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

/// Run a short command, returning stdout+stderr, or an error with its output.
pub fn run(argv: &[&str], timeout_s: u64) -> Result<String, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(prog)
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{}: timed out after {timeout_s}s", argv.join(" ")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{}: {e}", argv.join(" "))),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            text.trim()
        ))
    }
}

/// An interactive login shell on the serial console, with job control.
pub fn interactive_shell(plan: &Plan) {
    let tty = std::env::var("HARNESS_TTY").unwrap_or_else(|_| "/dev/ttyS0".into());
    let Ok(tty_file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
    else {
        crate::sys::console(&format!("harness agent: cannot open {tty}"));
        return;
    };
    let (Ok(i), Ok(o), Ok(e)) = (
        tty_file.try_clone(),
        tty_file.try_clone(),
        tty_file.try_clone(),
    ) else {
        return;
    };
    crate::sys::console("harness agent: interactive shell; `exit` or Ctrl-D powers off");
    let mut cmd = Command::new("/bin/bash");
    cmd.arg("-l")
        .env_clear()
        .envs(test_env(plan))
        .env("PS1", "[vm \\w]# ");
    cmd.stdin(i).stdout(o).stderr(e).current_dir("/root");
    // TIOCSCTTY takes an int by value; nix has the constant only through libc.
    nix::ioctl_write_int_bad!(tiocsctty, nix::libc::TIOCSCTTY);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            // SAFETY: fd 0 is the console we just set as stdin; 1 = steal it if needed.
            let _ = tiocsctty(0, 1);
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(mut child) => {
            let _ = child.wait();
        }
        Err(err) => crate::sys::console(&format!("harness agent: cannot start bash: {err}")),
    }
}
