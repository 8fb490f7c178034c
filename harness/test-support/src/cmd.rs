//! Running the external tools the tests rely on (losetup, mount, e2fsck, ...): the full
//! output on failure.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;

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

pub use crate::needs::find_tool;
