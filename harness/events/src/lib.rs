//! The contract between the host (`vm` crate) and the guest agent.
//!
//! Two documents cross the VM boundary:
//! - the [`Plan`], written by the host as JSON into the shared run directory;
//! - the [`Event`] stream, one JSON object per line, written by the agent to the
//!   virtio-serial port `harness.events` and appended by QEMU to `events.jsonl`.
//!
//! Both carry a schema version; the agent refuses a plan of another major version,
//! the host reports an event of another version as an infrastructure error.

mod event;
mod plan;

pub use event::{Event, EventBody, ServerFacts, TestStatus};
pub use plan::{check_test_name, Plan, PlanTest, ServerSetup, MAX_TEST_NAME};

/// Version of the plan and event schema. Bump on any incompatible change.
/// v2: the server's facts (name, version, mode, error) are one optional `server` section
/// of `run_started`, no longer top-level fields named after iomapfs.
pub const SCHEMA_VERSION: u32 = 2;

/// Name of the virtio-serial port the agent writes events to
/// (appears in the guest as `/dev/virtio-ports/<name>`).
pub const EVENT_PORT: &str = "harness.events";

/// Mount tag of the run directory share (virtio-fs or 9p, vm-test `--share`).
pub const SHARE_TAG: &str = "harness";

/// Where the agent mounts the share inside the guest.
pub const SHARE_MOUNT: &str = "/harness";

/// File name of the plan inside the run directory.
pub const PLAN_FILE: &str = "plan.json";

/// Prefix of event lines the agent writes to the console when it has no event port.
pub const CONSOLE_EVENT_PREFIX: &str = "HARNESS-EVENT ";

/// Prefix of the marker lines the agent writes to /dev/kmsg so that console
/// messages can be attributed to the test that was running.
pub const KMSG_MARKER: &str = "harness-agent:";

/// In a test's output directory in the share: every FUSE server the test mounted appends
/// the mode it negotiated, one line each (the server is pointed at it by
/// `IOMAPFS_MODE_LOG`). In the share, so the host still has it after a crash.
pub const SERVER_MODES_FILE: &str = "server-modes.log";

/// In a test's output directory in the share: the sessions of every FUSE server the test
/// started, each a recording and the snapshot of the filesystem it started from (the
/// server is pointed at it by `IOMAPFS_RECORD_DIR`). The host keeps it only for tests
/// that fail.
pub const RECORDINGS_DIR: &str = "recordings";
/// The bound on each recording (`IOMAPFS_RECORD_MAX`, uncompressed bytes).
pub const RECORD_MAX: &str = "64M";

/// The modes in a [`SERVER_MODES_FILE`]: each non-empty line once, at most 8.
pub fn parse_server_modes(text: &str) -> Vec<String> {
    let mut modes: Vec<String> = vec![];
    for line in text.lines().map(str::trim) {
        if !line.is_empty() && !modes.iter().any(|m| m == line) && modes.len() < 8 {
            modes.push(line.to_string());
        }
    }
    modes
}
