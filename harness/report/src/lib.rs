//! The result of a vm-test run, and the files it is written to.
//!
//! The host builds a [`RunResult`] from the agent's events and the console
//! watcher's findings, then writes `results.json` ([`write_json`]),
//! `junit.xml` ([`write_junit`]) and `summary.md` ([`summary_markdown`]). How verdicts are
//! decided is [`policy`].

mod junit;
mod model;
pub mod policy;
mod summary;

pub use junit::junit_xml;
pub use model::{
    Finding, FindingKind, RunResult, ServerFacts, Severity, TestResult, Verdict, RESULTS_SCHEMA,
};
pub use policy::{apply_findings, conclude, counts_as_pass, fails_run, run_verdict, Baseline};
pub use summary::{summary_markdown, summary_text};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bad results file {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "{path}: results schema v{found} is not one this harness reads (v1, v{RESULTS_SCHEMA})"
    )]
    Schema { path: String, found: u64 },
    #[error("cannot build JUnit XML: {0}")]
    Junit(String),
}

/// Write a file by replacing it: a temporary file next to it, renamed over it. The run
/// directory is shared with the guest, which may have left a symlink where a result file
/// goes; a rename replaces the link itself, so nothing outside the directory is written.
pub fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    // Readable like a file written with fs::write (tempfile makes them 0600).
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    tmp.as_file().set_permissions(mode).map_err(err)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    write_file(path, text)
}

pub fn write_json(run: &RunResult, path: &Path) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(run).unwrap_or_default();
    write(path, &text)
}

pub fn read_json(path: &Path) -> Result<RunResult, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let parse_err = |source| ReportError::Parse {
        path: path.display().to_string(),
        source,
    };
    // The version first: another layout is named as such, not as a missing field.
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(parse_err)?;
    let found = value.get("schema").and_then(serde_json::Value::as_u64);
    match found {
        Some(2) => {}
        // Baselines kept from before v2 (nightly CI's) still read.
        Some(1) => upgrade_v1(&mut value),
        _ => {
            return Err(ReportError::Schema {
                path: path.display().to_string(),
                found: found.unwrap_or(0),
            })
        }
    }
    serde_json::from_value(value).map_err(parse_err)
}

/// results.json v1 → v2: iomapfs' fields of the run (`iomapfs_version`, `server_mode`,
/// `server_error`, `expected_mode`) and of each test (`server_modes`) move into the one
/// `server` section. v1 was written by iomapfs runs only, hence the name.
fn upgrade_v1(v: &mut serde_json::Value) {
    use serde_json::{json, Map, Value};
    let Some(run) = v.as_object_mut() else {
        return;
    };
    let mut take = |k: &str| run.remove(k).filter(|x| !x.is_null());
    let (version, mode, error, expected) = (
        take("iomapfs_version"),
        take("server_mode"),
        take("server_error"),
        take("expected_mode"),
    );
    let mut test_modes = Map::new();
    if let Some(Value::Array(tests)) = run.get_mut("tests") {
        for t in tests.iter_mut().filter_map(Value::as_object_mut) {
            let modes = t.remove("server_modes");
            if let (Some(Value::String(name)), Some(m)) = (t.get("name"), modes) {
                if m.as_array().is_some_and(|a| !a.is_empty()) {
                    test_modes.insert(name.clone(), m);
                }
            }
        }
    }
    let any = version.is_some() || mode.is_some() || error.is_some() || expected.is_some();
    if any || !test_modes.is_empty() {
        run.insert(
            "server".into(),
            json!({
                "name": "iomapfs",
                "version": version,
                "mode": mode,
                "error": error,
                "expected_mode": expected,
                "test_modes": test_modes,
            }),
        );
    }
    run.insert("schema".into(), json!(RESULTS_SCHEMA));
}

pub fn write_junit(run: &RunResult, path: &Path) -> Result<(), ReportError> {
    write(path, &junit_xml(run)?)
}

pub fn write_summary(run: &RunResult, path: &Path) -> Result<(), ReportError> {
    write(path, &summary_markdown(run))
}

/// Write all three result files into `dir`.
pub fn write_all(run: &RunResult, dir: &Path) -> Result<(), ReportError> {
    write_json(run, &dir.join("results.json"))?;
    write_junit(run, &dir.join("junit.xml"))?;
    write_summary(run, &dir.join("summary.md"))
}
