//! Running the external tools the tests rely on (mkfs.ext4, losetup, mount, e2fsck, ...).

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `prog args...`, returns its stdout, fails with the full output if it exits non-zero.
pub fn run<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Result<String> {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    run_cmd(&mut cmd)
}

pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Finds a tool on PATH or in the sbin directories (which a non-login root PATH may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `e2fsck -fn IMAGE`: fails with e2fsck's report unless the filesystem is clean.
pub fn e2fsck_clean(image: &Path) -> Result<()> {
    run("e2fsck", &[OsStr::new("-fn"), image.as_os_str()]).with_context(|| {
        format!(
            "e2fsck -fn {} reports a damaged filesystem",
            image.display()
        )
    })?;
    Ok(())
}

/// `mkfs.ext4` with the options every test shares. inline_data stays off: the server does
/// not support it. 256-byte inodes give nanosecond timestamps, btime and in-inode xattrs.
pub fn mkfs_ext4(image: &Path, block_size: u32, extra: &[String]) -> Result<()> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-F", "-q", "-O", "^inline_data", "-I", "256", "-b"])
        .arg(block_size.to_string())
        .args(extra)
        .arg(image);
    run_cmd(&mut cmd)?;
    Ok(())
}
