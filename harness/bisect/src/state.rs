//! What a bisect remembers between runs (state.json in its directory) and
//! the report made from it (report.md, also printed).

use anyhow::{Context, Result};
use plumbing::ui::fmt_duration;
use plumbing::util::write_atomic;
use report::Verdict;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bump when the layout changes incompatibly.
pub const STATE_VERSION: u32 = 1;
pub const STATE_FILE: &str = "state.json";
pub const REPORT_FILE: &str = "report.md";

/// A commit as the user named it and as git resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rev {
    /// What was given on the command line (`v6.11`, a branch, a hash).
    pub arg: String,
    pub sha: String,
    pub subject: String,
}

/// The state of one bisect: the command, every step, the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub name: String,
    /// The repository bisected (path or URL); never modified.
    pub source: String,
    /// The clone whose HEAD git bisect moves.
    pub worktree: PathBuf,
    /// Directory the command was started in (relative paths in `argv`).
    pub cwd: PathBuf,
    /// The bisect command line (after `bisect`), replayed by each step.
    pub argv: Vec<String>,
    pub good: Rev,
    pub bad: Rev,
    pub retries: u32,
    pub started: String,
    pub steps: Vec<StepRecord>,
    pub first_bad: Option<Rev>,
    /// When only skipped commits were left: the candidates.
    #[serde(default)]
    pub candidates: Vec<Rev>,
    pub finished: Option<String>,
}

/// Why a commit was tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The --good commit, checked before bisecting: must pass.
    GoodEndpoint,
    /// The --bad commit, checked before bisecting: must fail.
    BadEndpoint,
    /// A commit git bisect chose.
    Bisect,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::GoodEndpoint => "good endpoint",
            Role::BadEndpoint => "bad endpoint",
            Role::Bisect => "bisect",
        }
    }
}

/// What a step tells git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    /// Some attempt passed (exit 0).
    Good,
    /// Every attempt failed, crashed or hung (exit 1).
    Bad,
    /// The commit could not be tested: build or infrastructure failure (exit 125).
    Skip,
}

impl StepVerdict {
    /// The `git bisect run` exit code.
    pub fn git_code(self) -> i32 {
        match self {
            StepVerdict::Good => 0,
            StepVerdict::Bad => 1,
            StepVerdict::Skip => 125,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepVerdict::Good => "good",
            StepVerdict::Bad => "bad",
            StepVerdict::Skip => "skip",
        }
    }

    /// Combine the attempts of one commit: good if any passed (a failure
    /// that does not repeat is a flake), bad only if every attempt failed,
    /// otherwise untestable.
    pub fn from_attempts(attempts: &[Attempt]) -> StepVerdict {
        if attempts.iter().any(|a| a.verdict.exit_code() == 0) {
            StepVerdict::Good
        } else if !attempts.is_empty() && attempts.iter().all(|a| a.verdict.exit_code() == 1) {
            StepVerdict::Bad
        } else {
            StepVerdict::Skip
        }
    }
}

/// One boot-and-test of a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub verdict: Verdict,
    pub reason: Option<String>,
    /// The vm-test run directory (results.json, console.log, ...).
    pub run_dir: Option<PathBuf>,
    /// Host wall time from starting QEMU to the guest agent's ready event.
    pub boot_s: f64,
    /// Sum of the tests' own durations.
    pub test_s: f64,
    /// The whole attempt (image and binaries check, VM run).
    pub total_s: f64,
}

/// One tested commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub role: Role,
    pub commit: String,
    pub subject: String,
    pub verdict: StepVerdict,
    /// Why it is not good (build error, failed tests, infrastructure).
    pub reason: Option<String>,
    pub attempts: Vec<Attempt>,
    pub kernel_release: Option<String>,
    pub build_s: f64,
    pub boot_s: f64,
    pub test_s: f64,
    pub total_s: f64,
    pub started: String,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// None when the directory holds no state.
    pub fn load(dir: &Path) -> Result<Option<State>> {
        let path = Self::path(dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: State = serde_json::from_slice(&text)
            .with_context(|| format!("parsing {} (--reset starts over)", path.display()))?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "{} has layout version {}, this xtask writes {STATE_VERSION} (--reset starts over)",
            path.display(),
            state.version
        );
        Ok(Some(state))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(&Self::path(dir), &serde_json::to_vec_pretty(self)?)
    }

    /// The latest record of an endpoint, if it came out as expected.
    pub fn endpoint_done(&self, role: Role) -> bool {
        let want = match role {
            Role::GoodEndpoint => StepVerdict::Good,
            Role::BadEndpoint => StepVerdict::Bad,
            Role::Bisect => return false,
        };
        self.steps
            .iter()
            .rev()
            .find(|s| s.role == role)
            .is_some_and(|s| s.verdict == want)
    }
}

fn secs(s: f64) -> String {
    fmt_duration(Duration::from_secs_f64(s.max(0.0)))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// report.md: the answer first, then every step.
pub fn render_report(s: &State, dir: &Path) -> String {
    let mut out = String::new();
    match (&s.first_bad, s.candidates.is_empty()) {
        (Some(fb), _) => out.push_str(&format!(
            "# Bisect `{}`: first bad commit {} {}\n\nfirst bad commit: {} {}\n\n",
            s.name,
            short(&fb.sha),
            fb.subject,
            fb.sha,
            fb.subject
        )),
        (None, false) => {
            out.push_str(&format!(
                "# Bisect `{}`: undecided, only untestable (skipped) commits are left\n\nThe first bad commit is one of:\n",
                s.name
            ));
            for c in &s.candidates {
                out.push_str(&format!("- {} {}\n", c.sha, c.subject));
            }
            out.push('\n');
        }
        (None, true) => out.push_str(&format!(
            "# Bisect `{}`: not finished\n\nRun the same command again to resume.\n\n",
            s.name
        )),
    }
    let tests = s
        .argv
        .iter()
        .position(|a| a == "--")
        .map(|i| s.argv[i + 1..].join(" "))
        .unwrap_or_default();
    out.push_str(&format!(
        "- source: {}\n- good: {} ({}) {}\n- bad: {} ({}) {}\n- tests: `vm-test {}`\n- retries of a failing step: {}\n",
        s.source,
        s.good.arg,
        short(&s.good.sha),
        s.good.subject,
        s.bad.arg,
        short(&s.bad.sha),
        s.bad.subject,
        tests,
        s.retries,
    ));
    let total: f64 = s.steps.iter().map(|r| r.total_s).sum();
    out.push_str(&format!(
        "- steps: {}, time in steps: {}\n\n",
        s.steps.len(),
        secs(total)
    ));
    out.push_str(
        "| # | role | commit | subject | verdict | attempts | build | boot | tests | total |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in s.steps.iter().enumerate() {
        let attempts = if r.attempts.is_empty() {
            "-".to_string()
        } else {
            r.attempts
                .iter()
                .map(|a| a.verdict.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            r.role.label(),
            short(&r.commit),
            r.subject.replace('|', "\\|"),
            r.verdict.as_str(),
            attempts,
            secs(r.build_s),
            secs(r.boot_s),
            secs(r.test_s),
            secs(r.total_s)
        ));
    }
    let notes: Vec<String> = s
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.reason
                .as_ref()
                .map(|why| format!("- step {}: {why}\n", i + 1))
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("\nWhy steps were not good:\n");
        out.extend(notes);
    }
    out.push_str(&format!(
        "\nState and run directories: {}\n",
        State::path(dir).display()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(v: Verdict) -> Attempt {
        Attempt {
            verdict: v,
            reason: None,
            run_dir: None,
            boot_s: 1.0,
            test_s: 2.0,
            total_s: 4.0,
        }
    }

    #[test]
    fn attempts_combine_with_flake_protection() {
        use Verdict::*;
        let v = |xs: &[Verdict]| {
            StepVerdict::from_attempts(&xs.iter().map(|&x| attempt(x)).collect::<Vec<_>>())
        };
        assert_eq!(v(&[Passed]), StepVerdict::Good);
        assert_eq!(v(&[Failed, Passed]), StepVerdict::Good, "a flake");
        assert_eq!(v(&[Failed, Crashed]), StepVerdict::Bad);
        assert_eq!(v(&[Hung]), StepVerdict::Bad);
        assert_eq!(v(&[Failed, InfraError]), StepVerdict::Skip);
        assert_eq!(v(&[InfraError]), StepVerdict::Skip);
        assert_eq!(v(&[]), StepVerdict::Skip);
        assert_eq!(StepVerdict::Skip.git_code(), 125);
        assert_eq!(StepVerdict::Bad.git_code(), 1);
        assert_eq!(StepVerdict::Good.git_code(), 0);
    }

    fn rev(sha: &str, subject: &str) -> Rev {
        Rev {
            arg: sha.into(),
            sha: sha.into(),
            subject: subject.into(),
        }
    }

    fn step(role: Role, sha: &str, verdict: StepVerdict, attempts: &[Verdict]) -> StepRecord {
        StepRecord {
            role,
            commit: sha.into(),
            subject: format!("subject {sha}"),
            verdict,
            reason: (verdict != StepVerdict::Good).then(|| "smoke/mount failed".into()),
            attempts: attempts.iter().map(|&v| attempt(v)).collect(),
            kernel_release: None,
            build_s: 10.0,
            boot_s: 2.0,
            test_s: 4.0,
            total_s: 20.0,
            started: String::new(),
        }
    }

    #[test]
    fn state_round_trips_and_reports() {
        let d = tempfile::tempdir().unwrap();
        let mut s = State {
            version: STATE_VERSION,
            name: "t".into(),
            source: "/src/linux".into(),
            worktree: d.path().join("worktree"),
            cwd: d.path().into(),
            argv: vec![
                "--good".into(),
                "a".into(),
                "--".into(),
                "--suite".into(),
                "smoke".into(),
            ],
            good: rev("aaaaaaaaaaaaaaaa", "base"),
            bad: rev("dddddddddddddddd", "tip"),
            retries: 1,
            started: "now".into(),
            steps: vec![
                step(
                    Role::GoodEndpoint,
                    "aaaaaaaaaaaaaaaa",
                    StepVerdict::Good,
                    &[Verdict::Passed],
                ),
                step(
                    Role::BadEndpoint,
                    "dddddddddddddddd",
                    StepVerdict::Bad,
                    &[Verdict::Failed, Verdict::Failed],
                ),
                step(
                    Role::Bisect,
                    "cccccccccccccccc",
                    StepVerdict::Bad,
                    &[Verdict::Failed, Verdict::Hung],
                ),
            ],
            first_bad: None,
            candidates: vec![],
            finished: None,
        };
        assert!(State::load(d.path()).unwrap().is_none());
        assert!(s.endpoint_done(Role::GoodEndpoint));
        assert!(s.endpoint_done(Role::BadEndpoint));
        s.steps.push(step(
            Role::GoodEndpoint,
            "aaaaaaaaaaaaaaaa",
            StepVerdict::Skip,
            &[],
        ));
        assert!(
            !s.endpoint_done(Role::GoodEndpoint),
            "the latest record counts"
        );
        s.steps.pop();

        let open = render_report(&s, d.path());
        assert!(open.contains("not finished"), "{open}");
        s.first_bad = Some(rev("cccccccccccccccc", "fuse: break it"));
        s.save(d.path()).unwrap();
        let back = State::load(d.path()).unwrap().unwrap();
        assert_eq!(back.steps.len(), 3);
        assert_eq!(back.first_bad, s.first_bad);
        let r = render_report(&back, d.path());
        assert!(
            r.contains("first bad commit: cccccccccccccccc fuse: break it"),
            "{r}"
        );
        assert!(r.contains("| 3 | bisect | cccccccccccc | subject cccccccccccccccc | bad | failed, hung | 10.0s | 2.0s | 4.0s | 20.0s |"), "{r}");
        assert!(r.contains("tests: `vm-test --suite smoke`"), "{r}");
        assert!(r.contains("step 2: smoke/mount failed"), "{r}");

        std::fs::write(State::path(d.path()), "{").unwrap();
        let e = State::load(d.path()).unwrap_err();
        assert!(format!("{e:#}").contains("--reset"), "{e:#}");
    }
}
