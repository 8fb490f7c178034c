//! Events streamed by the guest agent, one JSON object per line.
use serde::{Deserialize, Serialize};

/// One line of the event stream: `{"v":2,"t_ms":123,"type":"test_started",...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`crate::SCHEMA_VERSION`]).
    pub v: u32,
    /// Milliseconds since the guest booted (CLOCK_BOOTTIME), for ordering and timing.
    pub t_ms: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// Outcome of one test as seen by the agent. The host may still override it
/// (a kernel oops on the console turns a pass into `crashed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Passed,
    Failed,
    /// The test made no progress past its timeout and was killed.
    Hung,
    /// The test could not be run (setup failed, binary missing).
    InfraError,
}

/// What the agent found out about the FUSE server it set up, before the first test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFacts {
    /// The server's name (`iomapfs`).
    pub name: String,
    /// Its `--version`, if it answered.
    pub version: Option<String>,
    /// The mode its check mount negotiated, in the server's words (iomapfs: "iomap" or
    /// "classic").
    pub mode: Option<String>,
    /// Why the server check failed, if it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The agent is up and the guest is ready to run tests.
    RunStarted {
        kernel: String,
        e2fsprogs_version: Option<String>,
        /// The FUSE server under test, when the plan set one up (what it is is the
        /// server's business: the harness only carries its facts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<ServerFacts>,
        /// Guest uptime when the kernel started the agent (kernel boot time).
        #[serde(default)]
        agent_start_ms: u64,
        /// Guest uptime when the agent had mounted everything and read the
        /// plan: boot-to-agent-ready.
        boot_to_ready_ms: u64,
        /// Time spent installing the server, formatting the test disk and
        /// checking a mount (after boot_to_ready_ms, before the first test).
        #[serde(default)]
        setup_ms: u64,
        tests: usize,
    },
    TestStarted {
        name: String,
        timeout_s: u64,
    },
    TestFinished {
        name: String,
        status: TestStatus,
        duration_ms: u64,
        /// Exit code of the test command, if it exited.
        exit_code: Option<i32>,
        /// Signal that ended it, if any.
        signal: Option<i32>,
        /// Kept running past its timeout because it was still making progress.
        slow: bool,
        /// Human-readable reason for a non-pass.
        reason: Option<String>,
        /// The mode every FUSE server mounted during the test reported (its own word, e.g.
        /// iomapfs' "iomap" or "classic"), each once, in the order first seen.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        server_modes: Vec<String>,
    },
    /// Liveness: sent every few seconds while a test runs or the agent waits.
    Heartbeat {
        test: Option<String>,
        /// Growing counter of the running test's activity (CPU ticks + I/O bytes +
        /// output bytes); unchanged between two heartbeats means no progress.
        progress: u64,
    },
    /// A message from the agent worth showing to the user (setup steps, warnings).
    Log {
        message: String,
    },
    RunFinished {
        passed: usize,
        failed: usize,
    },
}

impl Event {
    pub fn new(t_ms: u64, body: EventBody) -> Self {
        Event {
            v: crate::SCHEMA_VERSION,
            t_ms,
            body,
        }
    }

    /// Serialise as one line (without the trailing newline).
    pub fn to_line(&self) -> String {
        // Serialising these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse one line of the stream.
    pub fn from_line(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_tagged() {
        let ev = Event::new(
            42,
            EventBody::TestFinished {
                name: "smoke/mount".into(),
                status: TestStatus::Hung,
                duration_ms: 7,
                exit_code: None,
                signal: Some(9),
                slow: false,
                reason: Some("no progress".into()),
                server_modes: vec!["iomap".into()],
            },
        );
        let line = ev.to_line();
        assert!(line.contains(r#""type":"test_finished""#), "{line}");
        assert!(line.contains(r#""v":2"#), "{line}");
        assert!(line.contains(r#""status":"hung""#), "{line}");
        assert_eq!(Event::from_line(&line).unwrap(), ev);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Event::from_line("{\"v\":2,\"t_ms\":0,\"type\":\"nope\"}").is_err());
        assert!(Event::from_line("not json").is_err());
    }
}
