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
    /// Unique name, `suite/test`; also the artifact directory name (with '/' kept).
    pub name: String,
    /// Shell command run with `bash -c` (with `set -e -o pipefail` not implied).
    pub command: String,
    pub timeout_s: u64,
}

fn yes() -> bool {
    true
}

impl Plan {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
