//! What a run has done so far, saved after every boot, so that a run the host stopped
//! (Ctrl-C, a kill, a reboot, the end of a session) can go on later without redoing what
//! finished (`vm-test --resume`).
//!
//! The file lives in the run's host state directory ([`RunDir::host_state_dir`]), outside
//! the directory the guest shares: a guest must not be able to write the verdicts a
//! resumed run starts from.
use std::path::PathBuf;

use events::Plan;
use report::{Finding, RunResult, TestResult};
use serde::{Deserialize, Serialize};

use crate::rundir::RunDir;

const VERSION: u32 = 1;
const FILE: &str = "checkpoint.json";

/// The run's state after its last finished boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub v: u32,
    /// Boots started so far; the next boot is numbered after them.
    pub boots: u32,
    /// Boots that ended (the first ones of [`Self::boots`]).
    pub boots_done: u32,
    /// The plan as it stands: continuation tests included.
    pub plan: Plan,
    /// The first boot's facts (kernel, server, boot times).
    pub base: Option<RunResult>,
    /// Tests that have their verdict.
    pub tests: Vec<TestResult>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    pub protocol: Vec<String>,
    pub test_modes: Vec<(String, Vec<String>)>,
    /// The test the host stopped (Ctrl-C): its verdict says so, and a resume runs it again.
    pub stopped: Option<String>,
}

impl Checkpoint {
    pub fn new(plan: &Plan) -> Checkpoint {
        Checkpoint {
            v: VERSION,
            boots: 0,
            boots_done: 0,
            plan: plan.clone(),
            base: None,
            tests: vec![],
            findings: vec![],
            notes: vec![],
            protocol: vec![],
            test_modes: vec![],
            stopped: None,
        }
    }

    fn path(dir: &RunDir) -> PathBuf {
        dir.host_state_dir().join(FILE)
    }

    /// Saved atomically: a host that dies while saving leaves the previous checkpoint.
    pub fn save(&self, dir: &RunDir) -> std::io::Result<()> {
        let path = Self::path(dir);
        let parent = path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(parent)?;
        let tmp = tempfile::NamedTempFile::new_in(parent)?;
        serde_json::to_writer(&tmp, self)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The checkpoint of `dir`, if a boot of it ever started; an unreadable one is an
    /// error that names the file.
    pub fn load(dir: &RunDir) -> Result<Option<Checkpoint>, String> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let c: Checkpoint =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if c.v != VERSION {
            return Err(format!(
                "{}: checkpoint version {} (this harness reads {VERSION})",
                path.display(),
                c.v
            ));
        }
        Ok(Some(c))
    }
}
