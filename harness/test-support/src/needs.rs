//! Preconditions: what a test needs from the machine, and what happens when it is missing.

use std::path::{Path, PathBuf};

/// True when running under CI: `CI` is set to anything but empty, `0` or `false`
/// (GitHub Actions and `.ci/run` set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Checks one precondition (`None` = present, `Some(reason)` = missing). Returns `true` when
/// the test can go on. When it is missing: under CI this panics (the test fails) naming it;
/// elsewhere it prints `SKIP: <test>: <reason>` and returns `false`.
///
/// ```no_run
/// use test_support::needs::{needs, tool};
/// if !needs(tool("fio")) {
///     return;
/// }
/// ```
#[track_caller]
pub fn needs(missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if in_ci() {
        panic!("{test}: missing precondition under CI: {reason}");
    }
    eprintln!("SKIP: {test}: {reason}");
    false
}

/// [`needs`] over several preconditions: the first missing one decides.
#[track_caller]
pub fn needs_all(checks: impl IntoIterator<Item = Option<String>>) -> bool {
    needs(checks.into_iter().flatten().next())
}

/// Missing unless the test runs as root.
pub fn root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "needs root".to_owned())
}

/// Missing unless `/dev/fuse` can be opened for reading and writing.
pub fn dev_fuse() -> Option<String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .err()
        .map(|e| format!("needs /dev/fuse ({e})"))
}

/// Missing unless `name` is an executable on PATH or in the sbin directories (which a
/// non-login root PATH may lack). The reason names the Debian package when it is given.
pub fn tool_from(name: &str, package: &str) -> Option<String> {
    find_tool(name)
        .is_none()
        .then(|| format!("needs `{name}` (apt-get install {package})"))
}

/// [`tool_from`] for a tool whose Debian package has the same name.
pub fn tool(name: &str) -> Option<String> {
    tool_from(name, name)
}

/// Missing unless the environment variable is set and non-empty; `what` says what it
/// should point at.
pub fn env_var(name: &str, what: &str) -> Option<String> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .is_none()
        .then(|| format!("needs {name} set to {what}"))
}

/// An executable `name` on PATH or in /usr/sbin, /sbin, /usr/bin, /bin.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_preconditions_let_the_test_run() {
        assert!(needs(None));
        assert!(needs_all([None, None]));
        assert_eq!(tool("sh"), None);
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let reason = tool_from("no-such-tool-4f2a", "some-pkg").unwrap();
        assert!(
            reason.contains("no-such-tool-4f2a") && reason.contains("apt-get install some-pkg")
        );
    }

    /// The CI rule itself, in a child process so the environment is under control.
    #[test]
    fn missing_precondition_fails_under_ci_and_skips_elsewhere() {
        if std::env::var_os("TEST_SUPPORT_CHILD").is_some() {
            needs(Some("a thing that is never there".into()));
            println!("CONTINUED");
            return;
        }
        let me = std::env::current_exe().unwrap();
        let run = |ci: &str| {
            std::process::Command::new(&me)
                .args([
                    "--exact",
                    "needs::tests::missing_precondition_fails_under_ci_and_skips_elsewhere",
                    "--nocapture",
                ])
                .env("TEST_SUPPORT_CHILD", "1")
                .env("CI", ci)
                .output()
                .unwrap()
        };
        let ci = run("true");
        let stderr = String::from_utf8_lossy(&ci.stderr);
        assert!(
            !ci.status.success(),
            "under CI a missing precondition fails"
        );
        assert!(
            stderr.contains("missing precondition under CI: a thing that is never there"),
            "{stderr}"
        );

        let local = run("");
        let stderr = String::from_utf8_lossy(&local.stderr);
        assert!(local.status.success(), "{stderr}");
        assert!(stderr.contains("SKIP: needs::tests::missing_precondition_fails_under_ci_and_skips_elsewhere: a thing that is never there"), "{stderr}");
        assert!(
            String::from_utf8_lossy(&local.stdout).contains("CONTINUED"),
            "the caller decides to return"
        );
    }
}
