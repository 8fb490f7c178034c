//! `vm-test --jobs N`: N VMs at once, each with its own run directory (`<run>/vm-K/`: its
//! own disks, console, events and share) and a slice of the fstests list, merged into one
//! result afterwards. With one job the run directory is the run's own.
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use events::Plan;
use report::RunResult;
use vm::{Limits, Progress, RunDir, VmSpec};

use plumbing::error::usage;

/// One VM of a run: where it writes, what it runs, and its fstests plan (its steps).
pub struct Job {
    pub dir: RunDir,
    pub plan: Plan,
    pub fstests: Option<fstests::plan::FstestsPlan>,
}

/// The number of VMs `--jobs` asks for, checked against the other flags.
pub fn jobs(jobs: u32, fstests: bool, shard: bool) -> Result<u32> {
    match jobs {
        0 => Err(usage("--jobs must be at least 1")),
        1 => Ok(1),
        _ if !fstests => Err(usage(
            "--jobs splits an fstests list over VMs; it needs --fstests",
        )),
        _ if shard => Err(usage(
            "--jobs shards the list itself; it cannot be combined with --fstests-shard",
        )),
        n => Ok(n),
    }
}

/// The run directory of job `k` (0-based) of `n`.
pub fn job_dir(run: &RunDir, k: u32, n: u32) -> std::io::Result<RunDir> {
    if n == 1 {
        Ok(run.clone())
    } else {
        run.child(&format!("vm-{}", k + 1))
    }
}

/// Run every job (at once when there are several) and return each one's result, in job
/// order. `resume`: go on from each job's checkpoint. `progress` hears every VM (with
/// its 0-based number when there are several).
pub fn run_jobs(
    spec: &VmSpec,
    jobs: &mut [Job],
    limits: &Limits,
    resume: bool,
    progress: &(dyn Fn(Option<usize>, Progress) + Sync),
    cancel: &AtomicBool,
) -> Vec<Result<RunResult, vm::VmError>> {
    let many = jobs.len() > 1;
    let run_one = |k: usize, job: &mut Job| {
        let mut no_steps = vm::NoSteps;
        let steps: &mut dyn vm::Steps = match &mut job.fstests {
            Some(f) => f,
            None => &mut no_steps,
        };
        let mut report = |p: Progress| progress(many.then_some(k), p);
        let go = if resume {
            vm::resume_tests_with_steps
        } else {
            vm::run_tests_with_steps
        };
        go(
            spec,
            &job.plan,
            limits,
            &job.dir,
            steps,
            &mut report,
            cancel,
        )
    };
    if !many {
        return jobs
            .iter_mut()
            .enumerate()
            .map(|(k, j)| run_one(k, j))
            .collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter_mut()
            .enumerate()
            .map(|(k, j)| s.spawn(move || run_one(k, j)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(vm::VmError::Plan(
                        "a VM's supervisor thread panicked".into(),
                    ))
                })
            })
            .collect()
    })
}

/// The jobs' results as one run's: tests in job order (artifact paths made relative to
/// the run directory), kernel reports and notes of all, boots added up, the longest wall
/// time. The verdict is decided afterwards (`report::conclude`).
pub fn merge(run: &RunDir, mut results: Vec<(String, RunResult)>) -> RunResult {
    if results.len() == 1 {
        return results.remove(0).1;
    }
    let mut out = results[0].1.clone();
    out.id = run.id.clone();
    out.started_at = run.started_at.clone();
    out.tests.clear();
    out.findings.clear();
    out.boots = 0;
    out.duration_ms = 0;
    let (mut reasons, mut errors) = (vec![], vec![]);
    for (name, r) in results {
        out.boots += r.boots;
        out.duration_ms = out.duration_ms.max(r.duration_ms);
        out.findings.extend(r.findings);
        if let Some(why) = r.reason {
            reasons.push(format!("{name}: {why}"));
        }
        if let Some(e) = r.harness_error {
            errors.push(format!("{name}: {e}"));
        }
        if out.console_excerpt.is_none() {
            out.console_excerpt = r.console_excerpt;
        }
        if let (Some(all), Some(mine)) = (out.server.as_mut(), r.server) {
            for (test, modes) in mine.test_modes {
                all.set_modes(&test, modes);
            }
        }
        for mut t in r.tests {
            for a in &mut t.artifacts {
                *a = format!("{name}/{a}");
            }
            out.tests.push(t);
        }
    }
    out.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    out.harness_error = (!errors.is_empty()).then(|| errors.join("; "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::{TestResult, Verdict};

    #[test]
    fn jobs_need_fstests_and_no_shard() {
        assert_eq!(jobs(1, false, false).unwrap(), 1);
        assert_eq!(jobs(2, true, false).unwrap(), 2);
        for (n, f, s) in [(0, true, false), (2, false, false), (2, true, true)] {
            let e = jobs(n, f, s).unwrap_err();
            assert_eq!(
                plumbing::error::exit_code(&e),
                plumbing::error::EXIT_USAGE,
                "{n} {f} {s}"
            );
        }
    }

    #[test]
    fn merged_results_keep_every_test_with_its_artifacts() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path()).unwrap();
        let result = |names: &[&str], boots, ms, reason: Option<&str>| {
            let mut r = RunResult::empty("job");
            r.boots = boots;
            r.duration_ms = ms;
            r.reason = reason.map(String::from);
            r.server = Some(Default::default());
            for n in names {
                let mut t = TestResult::new(*n, Verdict::Passed);
                t.artifacts = vec![format!("tests/{n}/out")];
                r.tests.push(t);
                r.server
                    .as_mut()
                    .unwrap()
                    .set_modes(n, vec!["classic".into()]);
            }
            r
        };
        let m = merge(
            &run,
            vec![
                ("vm-1".into(), result(&["a", "b"], 1, 500, None)),
                ("vm-2".into(), result(&["c"], 2, 900, Some("c crashed"))),
            ],
        );
        assert_eq!(m.id, run.id);
        let names: Vec<&str> = m.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m.tests[2].artifacts, ["vm-2/tests/c/out"]);
        assert_eq!((m.boots, m.duration_ms), (3, 900));
        assert_eq!(m.reason.as_deref(), Some("vm-2: c crashed"));
        assert_eq!(m.server.unwrap().modes_of("c"), ["classic"]);
        let dir = job_dir(&run, 1, 2).unwrap();
        assert_eq!(dir.path, run.path.join("vm-2"));
        assert_eq!(job_dir(&run, 0, 1).unwrap().path, run.path);
    }
}
