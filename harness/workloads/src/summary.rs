//! The JSON summary of a run (`--json PATH`), the shape vm-test copies into results.json.

use crate::finding::{Finding, Findings};
use crate::fio::FioResult;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub name: String,
    pub ops: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub duration_s: f64,
    /// Why the phase did less than asked (time limit, a refused operation), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
}

impl PhaseSummary {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// "dio", "append", "verify-dio", "verify-append" or "fio".
    pub workload: String,
    /// Hex, so JSON readers without 64-bit integers keep it exact; replay with `--seed`.
    pub seed: String,
    pub duration_s: f64,
    pub ops: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub phases: Vec<PhaseSummary>,
    /// Findings kept in full (the first [`crate::finding::MAX_KEPT`]).
    pub findings: Vec<Finding>,
    /// All findings, including those not kept.
    pub findings_total: u64,
    /// What the target accepted or refused, and other facts worth a reader's eye.
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fio: Vec<FioResult>,
    pub passed: bool,
}

impl Summary {
    pub fn new(workload: &str, seed: Option<u64>) -> Self {
        Self {
            workload: workload.into(),
            seed: seed.map(|s| format!("{s:#x}")).unwrap_or_default(),
            passed: true,
            ..Self::default()
        }
    }

    pub fn add_phase(&mut self, p: PhaseSummary) {
        self.ops += p.ops;
        self.bytes_written += p.bytes_written;
        self.bytes_read += p.bytes_read;
        self.phases.push(p);
    }

    pub fn set_findings(&mut self, f: Findings) {
        self.findings_total = f.total;
        self.passed = f.is_empty();
        self.findings = f.list;
    }

    pub fn set_duration(&mut self, d: Duration) {
        self.duration_s = (d.as_secs_f64() * 1000.0).round() / 1000.0;
    }

    pub fn write_json(&self, path: &Path) -> crate::Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| crate::Error::io("encode summary", e))?;
        std::fs::write(path, text + "\n").map_err(|e| crate::Error::at("write", path, e))
    }

    /// The last lines a person reads: totals, then every kept finding.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: seed {}, {} ops, {:.1} MiB written, {:.1} MiB read, {} findings, {:.1} s\n",
            self.workload,
            if self.seed.is_empty() {
                "-"
            } else {
                &self.seed
            },
            self.ops,
            self.bytes_written as f64 / 1048576.0,
            self.bytes_read as f64 / 1048576.0,
            self.findings_total,
            self.duration_s
        );
        for p in &self.phases {
            s += &format!(
                "  {:<12} {:>7} ops {:>9.1} MiB w {:>9.1} MiB r {:>6.2} s{}\n",
                p.name,
                p.ops,
                p.bytes_written as f64 / 1048576.0,
                p.bytes_read as f64 / 1048576.0,
                p.duration_s,
                p.cut_short
                    .as_deref()
                    .map(|c| format!("  ({c})"))
                    .unwrap_or_default()
            );
        }
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        for f in &self.findings {
            s += &format!("  FINDING {f}\n");
        }
        if self.findings_total > self.findings.len() as u64 {
            s += &format!(
                "  ... and {} more findings\n",
                self.findings_total - self.findings.len() as u64
            );
        }
        s
    }
}
