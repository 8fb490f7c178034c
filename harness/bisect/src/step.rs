//! One bisect step (`cargo xtask bisect-step`, run by `git bisect run`):
//! build the work tree's HEAD in the bisect's own build directory, boot it,
//! run the selected tests, and answer git with an exit code.

use super::state::{Attempt, Role, State, StepRecord, StepVerdict};
use super::{git, BisectArgs};
use anyhow::{Context, Result};
use clap::Parser;
use plumbing::error::UsageError;
use plumbing::ui::{fmt_duration, Ui};
use report::{RunResult, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Exit code that makes `git bisect run` stop (anything from 128 up):
/// interrupted, or the command itself is wrong.
pub const GIT_ABORT: i32 = 255;

/// `bisect-step`: internal, started by `git bisect run` (or by `bisect`
/// itself for the endpoints) in the bisect's work tree.
#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    /// The bisect's state directory.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[arg(long, value_enum, default_value = "bisect")]
    pub role: Role,
}

/// Run a step and return the exit code for git: 0 good, 1 bad, 125 skip,
/// 255 stop the bisect.
pub fn main(args: &StepArgs, ui: &Ui) -> i32 {
    match step(args, ui) {
        Ok(v) => v.git_code(),
        Err(e) => {
            eprintln!("error: bisect step: {e:#}");
            GIT_ABORT
        }
    }
}

#[derive(Parser)]
struct Replay {
    #[command(flatten)]
    args: BisectArgs,
}

fn step(args: &StepArgs, ui: &Ui) -> Result<StepVerdict> {
    let dir = &args.state;
    let state =
        State::load(dir)?.with_context(|| format!("no bisect state in {}", dir.display()))?;
    // Relative paths of the original command line mean what they meant there.
    std::env::set_current_dir(&state.cwd)
        .with_context(|| format!("entering {}", state.cwd.display()))?;
    let bisect =
        Replay::try_parse_from(std::iter::once("bisect".to_string()).chain(state.argv.clone()))
            .context("replaying the bisect command line")?
            .args;
    let wt = &state.worktree;
    let commit = git::out(wt, &["rev-parse", "HEAD"])?;
    let subject = git::subject(wt, "HEAD");
    let n = state.steps.len() + 1;
    ui.step(format!(
        "bisect step {n} ({}): {} {subject}",
        args.role.label(),
        &commit[..12]
    ));
    let t0 = Instant::now();
    let mut rec = StepRecord {
        role: args.role,
        commit: commit.clone(),
        subject,
        verdict: StepVerdict::Skip,
        reason: None,
        attempts: vec![],
        kernel_release: None,
        build_s: 0.0,
        boot_s: 0.0,
        test_s: 0.0,
        total_s: 0.0,
        started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };

    let opts = super::kernel_options(&bisect, wt, &state.name)?;
    let tb = Instant::now();
    let built = kernel::ensure_kernel(&opts, ui);
    rec.build_s = tb.elapsed().as_secs_f64();
    let image = match built {
        Ok(k) => {
            rec.kernel_release = Some(k.info.kernel_release.clone());
            ui.note(format!(
                "built {} in {}",
                k.info.kernel_release,
                fmt_duration(tb.elapsed())
            ));
            if k.vmlinux.is_file() {
                k.vmlinux
            } else {
                k.bzimage
            }
        }
        Err(e) => {
            // A commit that does not build (or configure) cannot be judged.
            ui.note(format!("build failed: {e:#}"));
            rec.reason = Some(format!("build failed: {}", first_line(&format!("{e:#}"))));
            return finish(dir, rec, t0, ui);
        }
    };

    let mut vm_args = super::vm_test_args(&bisect.vm_test)?;
    vm_args.vm.kernel_image = Some(image);
    let tries = 1 + bisect.retries;
    for i in 1..=tries {
        let ta = Instant::now();
        let mut interrupted = false;
        let attempt = match runner::vm_test::run(&vm_args, ui) {
            Ok((result, run_dir)) => {
                interrupted = result
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("interrupted"));
                attempt_of(&result, run_dir, ta)
            }
            Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
            Err(e) => Attempt {
                verdict: Verdict::InfraError,
                reason: Some(format!("{e:#}")),
                run_dir: None,
                boot_s: 0.0,
                test_s: 0.0,
                total_s: ta.elapsed().as_secs_f64(),
            },
        };
        ui.note(format!(
            "attempt {i}/{tries}: {}{} (boot {}, tests {}){}",
            attempt.verdict.as_str(),
            attempt
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            fmt_duration(Duration::from_secs_f64(attempt.boot_s)),
            fmt_duration(Duration::from_secs_f64(attempt.test_s)),
            attempt
                .run_dir
                .as_ref()
                .map(|d| format!(", {}", d.display()))
                .unwrap_or_default()
        ));
        let passed = attempt.verdict.exit_code() == 0;
        rec.boot_s += attempt.boot_s;
        rec.test_s += attempt.test_s;
        rec.attempts.push(attempt);
        if interrupted {
            // Ctrl-C: stop the bisect without a verdict; the next run retests this commit.
            anyhow::bail!("interrupted during {}", &commit[..12]);
        }
        if passed {
            break;
        }
    }
    rec.verdict = StepVerdict::from_attempts(&rec.attempts);
    if rec.verdict != StepVerdict::Good {
        rec.reason = rec.attempts.last().and_then(|a| a.reason.clone());
    }
    finish(dir, rec, t0, ui)
}

/// Summarise a vm-test run as one attempt.
fn attempt_of(r: &RunResult, run_dir: PathBuf, started: Instant) -> Attempt {
    let failed: Vec<String> = r
        .tests
        .iter()
        .filter(|t| t.verdict.exit_code() != 0)
        .map(|t| format!("{} {}", t.name, t.verdict.as_str()))
        .collect();
    let reason = match r.verdict {
        Verdict::Passed | Verdict::NotRun => None,
        _ if !failed.is_empty() => Some(failed.join(", ")),
        _ => Some(
            r.reason
                .clone()
                .unwrap_or_else(|| r.verdict.as_str().to_string()),
        ),
    };
    Attempt {
        verdict: r.verdict,
        reason,
        run_dir: Some(run_dir),
        boot_s: r.host_ready_ms.or(r.boot_to_ready_ms).unwrap_or(0) as f64 / 1000.0,
        test_s: r.tests.iter().map(|t| t.duration_ms).sum::<u64>() as f64 / 1000.0,
        total_s: started.elapsed().as_secs_f64(),
    }
}

fn first_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
    lines.join(" / ")
}

/// Record the step (state.json) and say what git will be told.
fn finish(dir: &Path, mut rec: StepRecord, t0: Instant, ui: &Ui) -> Result<StepVerdict> {
    rec.total_s = t0.elapsed().as_secs_f64();
    let verdict = rec.verdict;
    // Re-read: only this process writes while a step runs.
    let mut state = State::load(dir)?.context("bisect state vanished")?;
    ui.note(format!(
        "step verdict: {} (exit {} to git) after {}",
        verdict.as_str(),
        verdict.git_code(),
        fmt_duration(t0.elapsed())
    ));
    state.steps.push(rec);
    state.save(dir)?;
    Ok(verdict)
}
