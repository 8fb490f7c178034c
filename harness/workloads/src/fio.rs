//! Throughput with fio: the job files in `harness/workloads/fio/` (built into the binary),
//! run one at a time in the target directory; bandwidth, IOPS and completion-latency
//! percentiles taken from fio's JSON output.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;

/// The job files, by name: sequential and random O_DIRECT, buffered and direct appends.
pub const JOBS: [(&str, &str); 6] = [
    ("seq-write", include_str!("../fio/seq-write.fio")),
    ("seq-read", include_str!("../fio/seq-read.fio")),
    ("rand-write", include_str!("../fio/rand-write.fio")),
    ("rand-read", include_str!("../fio/rand-read.fio")),
    ("append", include_str!("../fio/append.fio")),
    ("append-direct", include_str!("../fio/append-direct.fio")),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FioResult {
    pub job: String,
    /// "read" or "write": the side that moved data.
    pub op: String,
    /// Summed over the job's processes.
    pub mb_s: f64,
    pub iops: f64,
    /// Completion latency percentiles in microseconds (mean of the job's processes).
    pub clat_p50_us: f64,
    pub clat_p99_us: f64,
    pub clat_p99_9_us: f64,
    pub runtime_s: f64,
}

#[derive(Clone, Debug)]
pub struct FioOptions {
    /// Seconds per time-based job.
    pub runtime: u32,
    /// File size per job, in fio's syntax ("64m").
    pub size: String,
    /// Jobs to run (names from [`JOBS`]); empty means all, in order.
    pub jobs: Vec<String>,
}

impl Default for FioOptions {
    fn default() -> Self {
        Self {
            runtime: 5,
            size: "256m".into(),
            jobs: Vec::new(),
        }
    }
}

/// Runs the selected jobs in `dir` and returns one result per job.
pub fn run(dir: &Path, opts: &FioOptions) -> Result<Vec<FioResult>> {
    for j in &opts.jobs {
        if !JOBS.iter().any(|(n, _)| n == j) {
            let names: Vec<_> = JOBS.iter().map(|(n, _)| *n).collect();
            return Err(Error::Config(format!(
                "unknown fio job {j:?}; jobs: {}",
                names.join(", ")
            )));
        }
    }
    let work = dir.join("wl-fio");
    std::fs::create_dir_all(&work).map_err(|e| Error::at("mkdir", &work, e))?;
    let mut out = Vec::new();
    for (name, text) in JOBS
        .iter()
        .filter(|(n, _)| opts.jobs.is_empty() || opts.jobs.iter().any(|j| j == n))
    {
        let job = work.join(format!("{name}.fio"));
        std::fs::write(&job, text).map_err(|e| Error::at("write", &job, e))?;
        eprintln!("fio: {name} ({}s, {})", opts.runtime, opts.size);
        let o = Command::new("fio")
            .arg("--output-format=json")
            .arg(&job)
            .env("WL_DIR", &work)
            .env("WL_SIZE", &opts.size)
            .env("WL_RUNTIME", opts.runtime.to_string())
            .output()
            .map_err(|e| Error::Fio(format!("cannot run fio (apt-get install fio): {e}")))?;
        let stdout = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            return Err(Error::Fio(format!(
                "{name} failed ({}): {}{}",
                o.status,
                stdout,
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        out.push(parse(name, &stdout)?);
        let _ = std::fs::remove_file(&job);
    }
    // The data files are large; the job files are ours.
    let _ = std::fs::remove_dir_all(&work);
    Ok(out)
}

/// Reads fio's JSON report of one job file (possibly several processes).
pub fn parse(name: &str, text: &str) -> Result<FioResult> {
    let bad = |detail: String| Error::Parse {
        what: format!("fio output of {name}"),
        detail,
    };
    // fio may print warnings before the JSON.
    let start = text.find('{').ok_or_else(|| bad("no JSON object".into()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text[start..]).map_err(|e| bad(e.to_string()))?;
    let jobs = v["jobs"]
        .as_array()
        .filter(|j| !j.is_empty())
        .ok_or_else(|| bad("no jobs".into()))?;
    let moved = |side: &str| {
        jobs.iter()
            .map(|j| j[side]["io_bytes"].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    let op = if moved("write") >= moved("read") {
        "write"
    } else {
        "read"
    };
    let sum = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| {
        jobs.iter().filter_map(|j| f(&j[op])).sum::<f64>()
    };
    let pct = |p: &str| {
        let vals: Vec<f64> = jobs
            .iter()
            .filter_map(|j| j[op]["clat_ns"]["percentile"][p].as_f64())
            .collect();
        if vals.is_empty() {
            0.0
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64 / 1000.0
        }
    };
    let runtime_ms = jobs
        .iter()
        .filter_map(|j| j[op]["runtime"].as_f64())
        .fold(0.0, f64::max);
    Ok(FioResult {
        job: name.to_string(),
        op: op.to_string(),
        mb_s: sum(&|s| s["bw_bytes"].as_f64()) / 1e6,
        iops: sum(&|s| s["iops"].as_f64()),
        clat_p50_us: pct("50.000000"),
        clat_p99_us: pct("99.000000"),
        clat_p99_9_us: pct("99.900000"),
        runtime_s: runtime_ms / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_json_with_a_warning_first() {
        let text = r#"fio: something odd
{"fio version":"fio-3.33","jobs":[
 {"jobname":"a","read":{"io_bytes":0,"bw_bytes":0,"iops":0.0,"runtime":0},
  "write":{"io_bytes":4096000,"bw_bytes":2000000,"iops":488.0,"runtime":2048,
   "clat_ns":{"percentile":{"50.000000":1000,"99.000000":5000,"99.900000":9000}}}},
 {"jobname":"a","read":{"io_bytes":0},
  "write":{"io_bytes":4096000,"bw_bytes":3000000,"iops":500.0,"runtime":2000,
   "clat_ns":{"percentile":{"50.000000":3000,"99.000000":7000,"99.900000":11000}}}}]}"#;
        let r = parse("append", text).unwrap();
        assert_eq!(r.op, "write");
        assert_eq!((r.mb_s, r.iops), (5.0, 988.0));
        assert_eq!(
            (r.clat_p50_us, r.clat_p99_us, r.clat_p99_9_us),
            (2.0, 6.0, 10.0)
        );
        assert_eq!(r.runtime_s, 2.048);
        assert!(parse("x", "no json").is_err());
        assert!(parse("x", r#"{"jobs":[]}"#).is_err());
    }

    #[test]
    fn job_files_use_the_environment_and_direct_io() {
        for (name, text) in JOBS {
            assert!(text.contains("directory=${WL_DIR}"), "{name}");
            assert!(text.contains("${WL_SIZE}"), "{name}");
            if name != "append" {
                assert!(text.contains("direct=1"), "{name}");
            }
        }
    }
}
