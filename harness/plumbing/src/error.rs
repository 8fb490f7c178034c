//! Error kinds and the exit codes of the whole xtask (see DESIGN.md):
//! 0 pass, 1 test failures, 2 usage or configuration error, 3 infrastructure
//! failure (build, boot, image), 4 nothing passed (every test skipped or expunged). Errors are `anyhow::Error`s; the kind is a
//! marker type somewhere in the chain, found with `downcast_ref`.

use std::fmt;

/// Exit code: every test passed (or only expected failures).
pub const EXIT_PASS: i32 = 0;
/// Exit code: at least one test failed.
pub const EXIT_TEST_FAILURES: i32 = 1;
/// Exit code: the user asked for something wrong (flags, profile, config).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the machinery failed (build, boot, image, network, tools).
pub const EXIT_INFRA: i32 = 3;
/// Exit code: the run verified nothing: no test passed (all skipped or expunged, or no
/// tests at all). Not a pass, not a kernel failure.
pub const EXIT_NOTHING_PASSED: i32 = 4;

/// A usage or configuration error: bad flags, unknown profile, a requested
/// kernel config symbol the tree cannot provide. Maps to exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Tests ran and some failed. Maps to exit code 1.
#[derive(Debug)]
pub struct TestFailures(pub String);

impl fmt::Display for TestFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TestFailures {}

/// A run in which no test passed. Maps to exit code 4.
#[derive(Debug)]
pub struct NothingPassed(pub String);

impl fmt::Display for NothingPassed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NothingPassed {}

/// Shorthand: an `anyhow::Error` carrying a [`UsageError`].
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code for an error. Anything not marked otherwise is an
/// infrastructure failure (3).
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else if err.downcast_ref::<TestFailures>().is_some() {
        EXIT_TEST_FAILURES
    } else if err.downcast_ref::<NothingPassed>().is_some() {
        EXIT_NOTHING_PASSED
    } else {
        EXIT_INFRA
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_survive_context() {
        let e: anyhow::Result<()> = Err(usage("bad profile"));
        let e = e.context("resolving profile").unwrap_err();
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert!(format!("{e:#}").contains("bad profile"));

        let e = anyhow::Error::new(TestFailures("2 failed".into())).context("vm-test");
        assert_eq!(exit_code(&e), EXIT_TEST_FAILURES);

        let e = anyhow::anyhow!("make failed");
        assert_eq!(exit_code(&e), EXIT_INFRA);

        let e = anyhow::Error::new(NothingPassed("3 skipped".into()));
        assert_eq!(exit_code(&e), EXIT_NOTHING_PASSED);
    }
}
