//! The plan: what the host asks the guest agent to do.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Schema version ([`crate::SCHEMA_VERSION`]).
    pub v: u32,
    /// Drop into an interactive shell on the console instead of running tests.
    #[serde(default)]
    pub shell: bool,
    /// Install and check the FUSE server before the tests.
    pub server: Option<ServerSetup>,
    pub tests: Vec<PlanTest>,
    /// Seconds between heartbeats.
    pub heartbeat_s: u64,
    /// A test past its timeout that is still making progress may run until
    /// `timeout_s * slow_factor` before it is killed.
    pub slow_factor: u64,
    /// Console log level the agent sets once booted (7 shows everything).
    pub console_loglevel: u8,
    /// Host wall clock (seconds since the epoch) when the plan was written; the
    /// guest has no RTC on microvm, so the agent sets its clock from this.
    #[serde(default)]
    pub host_time_unix: u64,
    /// Extra environment for every test.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// How the agent installs the server and prepares the disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSetup {
    /// Directory under the share holding `iomapfs` and `mount.fuse.iomapfs`.
    pub bin_dir: String,
    /// Block device for tests (formatted with mkfs.ext4 before the first test).
    pub test_dev: String,
    /// Scratch block device (left unformatted; tests format it themselves).
    pub scratch_dev: Option<String>,
    /// Format the test device in the guest (false when the host already did,
    /// which is much faster under TCG).
    #[serde(default = "yes")]
    pub format: bool,
    /// Extra `mkfs.ext4` options for the test device.
    pub mkfs_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTest {
    /// Unique name, `suite/test`; also the artifact directory name (with '/' kept), so it
    /// must pass [`check_test_name`].
    pub name: String,
    /// Shell command run with `bash -c` (with `set -e -o pipefail` not implied).
    pub command: String,
    pub timeout_s: u64,
}

fn yes() -> bool {
    true
}

/// Longest test name, in bytes.
pub const MAX_TEST_NAME: usize = 200;

/// A test name becomes a path under the run directory (`tests/<name>/`) and a word in the
/// kernel log markers, so it must be a plain relative path: 1 to [`MAX_TEST_NAME`] bytes
/// of ASCII letters, digits and `._-+@=,:`, in `/`-separated parts that are neither
/// empty, `.` nor `..`.
pub fn check_test_name(name: &str) -> Result<(), String> {
    let shown = || {
        let mut s: String = name
            .chars()
            .take(80)
            .collect::<String>()
            .escape_debug()
            .to_string();
        if name.chars().count() > 80 {
            s.push_str("...");
        }
        s
    };
    if name.is_empty() || name.len() > MAX_TEST_NAME {
        return Err(format!(
            "test name \"{}\" is not 1 to {MAX_TEST_NAME} bytes long ({} bytes)",
            shown(),
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+@=,:/".contains(*c)))
    {
        return Err(format!(
            "test name \"{}\" has the character {:?}",
            shown(),
            c
        ));
    }
    if name
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!(
            "test name \"{}\" is not a relative path of plain parts",
            shown()
        ));
    }
    Ok(())
}

impl Plan {
    /// Every test name is valid ([`check_test_name`]) and unique.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.tests {
            check_test_name(&t.name)?;
            if !seen.insert(t.name.as_str()) {
                return Err(format!("test name {} appears twice in the plan", t.name));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_plain_relative_paths() {
        for ok in [
            "smoke/mount",
            "run/1",
            "fstests/iomapfs-4k/generic/001",
            "fstests/iomapfs-4k/batch-001",
            "a+b@c=d,e:f",
        ] {
            assert_eq!(check_test_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(MAX_TEST_NAME + 1);
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "a/",
            "./a",
            "a b",
            "a\0b",
            "a\nb",
            "caf\u{e9}",
            "a\\b",
            &long,
        ] {
            let e = check_test_name(bad).unwrap_err();
            assert!(e.starts_with("test name"), "{bad:?}: {e}");
        }
        assert!(check_test_name(&"a".repeat(MAX_TEST_NAME)).is_ok());
        // The message shows the name escaped and short.
        let e = check_test_name(&format!("{}\0", "x".repeat(300))).unwrap_err();
        assert!(e.contains("...") && e.len() < 200, "{e}");
    }

    #[test]
    fn a_plan_needs_unique_valid_names() {
        let t = |n: &str| PlanTest {
            name: n.into(),
            command: "true".into(),
            timeout_s: 1,
        };
        let mut plan = Plan {
            v: crate::SCHEMA_VERSION,
            shell: false,
            server: None,
            tests: vec![t("a/1"), t("a/2")],
            heartbeat_s: 2,
            slow_factor: 3,
            console_loglevel: 7,
            host_time_unix: 0,
            env: vec![],
        };
        assert_eq!(plan.check(), Ok(()));
        plan.tests.push(t("a/1"));
        assert!(plan.check().unwrap_err().contains("twice"));
        plan.tests[2] = t("../x");
        assert!(plan.check().is_err());
    }
}
