//! `cargo xtask bisect`: find the kernel commit that broke a vm-test
//! selection. The user's repository is never touched: a `--shared` clone in
//! the cache is checked out by `git bisect`, and `git bisect run` calls our
//! own `bisect-step` for each commit (build in one build directory for all
//! steps, so only changed files rebuild; boot; run the tests).
//!
//! Layout of `<cache>/bisect/<name>/`: `worktree/` (the clone),
//! `state.json` (command, every step, the answer), `report.md`,
//! `git-bisect.log`, `.lock`.

pub mod contract;
pub mod git;
pub mod origin;
pub mod state;
pub mod step;

pub use contract::{git_code_for_exit, script_text, vm_test_for_git_bisect};
pub use state::{Role, State, StepRecord, StepVerdict};
pub use step::StepArgs;

use anyhow::{Context, Result};
use clap::Parser;
use kernel::{KernelArgs, KernelOptions, SourceSpec};
use origin::{ensure_clone, origin, resolve};
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::{sanitize, Lock};
use runner::vm_test::VmTestArgs;
use state::Rev;
use std::path::Path;
use std::time::SystemTime;

/// Find the first bad commit between a good and a bad one.
#[derive(clap::Args, Debug, Clone)]
pub struct BisectArgs {
    /// A commit where the selected tests pass.
    #[arg(long, value_name = "REV", required_unless_present = "script")]
    pub good: Option<String>,
    /// A commit where they fail.
    #[arg(long, value_name = "REV", required_unless_present = "script")]
    pub bad: Option<String>,
    /// Profile (harness.toml) for the kernel source, config fragments and iomap mode.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Kernel source (--source-dir DIR: a git work tree or bare repository;
    /// or --git URL) and config; the profile's source when left out.
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Run a failing commit's tests this many more times; it counts as bad
    /// only if every attempt fails (flake protection).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub retries: u32,
    /// Name of the bisect: its state is in <cache>/bisect/NAME (default: from the source).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Forget an earlier or unfinished bisect of this name and start over.
    #[arg(long)]
    pub reset: bool,
    /// Print the exit-code contract and a ready-to-paste `git bisect run` line, then exit.
    #[arg(long)]
    pub script: bool,
    /// After `--`: the vm-test selection (--suite, --run, --timeout, --env, VM flags).
    #[arg(last = true, value_name = "VM-TEST ARGS")]
    pub vm_test: Vec<String>,
}

impl BisectArgs {
    /// The command line each step replays; paths made absolute so running
    /// the same command from elsewhere still resumes.
    fn to_argv(&self) -> Vec<String> {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut v: Vec<String> = vec![];
        let mut opt = |flag: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push(flag.into());
                v.push(val);
            }
        };
        let k = &self.kernel;
        opt("--good", self.good.clone());
        opt("--bad", self.bad.clone());
        opt("--profile", self.profile.clone());
        opt(
            "--source-dir",
            k.source_dir
                .as_deref()
                .map(|p| abs(p).display().to_string()),
        );
        opt("--git", k.git.clone());
        opt("--ref", k.git_ref.clone());
        opt("--tarball", k.tarball.clone());
        opt("--debian-package", k.debian_package.clone());
        opt(
            "--series",
            k.series.as_deref().map(|p| abs(p).display().to_string()),
        );
        opt("--b4", k.b4.clone());
        for f in &k.fragments {
            opt("--fragment", Some(abs(f).display().to_string()));
        }
        opt("--debug", k.debug.then(String::new));
        opt(
            "--iomap",
            k.iomap
                .and_then(|m| clap::ValueEnum::to_possible_value(&m))
                .map(|p| p.get_name().to_string()),
        );
        opt("--make-jobs", k.make_jobs.map(|j| j.to_string()));
        opt("--retries", Some(self.retries.to_string()));
        opt("--name", self.name.clone());
        // `--debug` takes no value.
        v.retain(|a| !a.is_empty());
        v.push("--".into());
        v.extend(self.vm_test.iter().cloned());
        v
    }
}

/// The kernel to build at each step: the profile and flags, with the
/// bisect's work tree as the source. One build directory for every commit
/// (the key is the work tree's path), so steps are incremental builds.
pub fn kernel_options(args: &BisectArgs, worktree: &Path, name: &str) -> Result<KernelOptions> {
    let mut opts = KernelOptions::resolve(args.profile.as_deref(), &args.kernel)?;
    opts.source = SourceSpec::Dir {
        path: worktree.to_path_buf(),
        git_ref: None,
    };
    opts.series = None;
    // Its own `kernel/<profile>-latest` link: leave the profile's alone.
    opts.profile = format!("bisect-{name}");
    Ok(opts)
}

#[derive(Parser)]
#[command(name = "vm-test")]
struct VmTestCli {
    #[command(flatten)]
    args: VmTestArgs,
}

/// Parse the vm-test selection after `--`. Kernel choices belong to bisect.
pub fn vm_test_args(argv: &[String]) -> Result<VmTestArgs> {
    let a = VmTestCli::try_parse_from(
        std::iter::once("vm-test".to_string()).chain(argv.iter().cloned()),
    )
    .map_err(|e| usage(format!("vm-test arguments after `--`: {e}")))?
    .args;
    let k = &a.vm.kernel;
    let kernel_flag = a.vm.kernel_image.is_some()
        || a.vm.profile.is_some()
        || k.source_dir.is_some()
        || k.git.is_some()
        || k.git_ref.is_some()
        || k.tarball.is_some()
        || k.debian_package.is_some()
        || k.series.is_some()
        || k.b4.is_some()
        || !k.fragments.is_empty()
        || k.debug
        || k.iomap.is_some()
        || k.make_jobs.is_some();
    if kernel_flag {
        return Err(usage(
            "kernel options (--profile, --source-dir, --fragment, --kernel-image, ...) go before `--`; \
             after it only the vm-test selection",
        ));
    }
    Ok(a)
}

/// `cargo xtask bisect`.
pub fn main(args: &BisectArgs, ui: &Ui) -> Result<()> {
    if args.script {
        print!("{}", script_text());
        return Ok(());
    }
    let (Some(good_arg), Some(bad_arg)) = (&args.good, &args.bad) else {
        return Err(usage("--good and --bad are required"));
    };
    let origin = origin(args)?;
    let vm = vm_test_args(&args.vm_test)?;
    runner::vm_test::build_plan(&vm, runner::vm_test::needs_server(&vm))?;
    let name = args.name.clone().unwrap_or_else(|| origin.default_name());
    if name.is_empty() || sanitize(&name) != name {
        return Err(usage(format!(
            "--name `{name}`: use letters, digits, `.`, `-`, `_`, `+`"
        )));
    }
    let dir = plumbing::paths::cache_dir().join("bisect").join(&name);
    let _lock = Lock::acquire(&dir.join(".lock"), || {
        ui.note(format!(
            "waiting for another bisect using {}",
            dir.display()
        ))
    })?;
    let wt = dir.join("worktree");
    if args.reset {
        reset(&dir, &wt, ui)?;
    }
    ensure_clone(&origin, &wt, ui)?;
    let good = resolve(&origin, &wt, good_arg)?;
    let bad = resolve(&origin, &wt, bad_arg)?;
    if good.sha == bad.sha {
        return Err(usage(format!(
            "--good and --bad are the same commit {}",
            good.sha
        )));
    }
    let argv = args.to_argv();
    let mut state = match State::load(&dir)? {
        Some(s) if s.argv == argv && s.good.sha == good.sha && s.bad.sha == bad.sha => {
            ui.step(format!(
                "resuming bisect `{name}` ({} steps recorded); --reset starts over",
                s.steps.len()
            ));
            s
        }
        Some(s) => {
            return Err(usage(format!(
                "{} holds another bisect (good {}, bad {}, started {}, {} steps):\n  \
                 run that command again to resume it, or add --reset to start this one",
                dir.display(),
                s.good.arg,
                s.bad.arg,
                s.started,
                s.steps.len()
            )))
        }
        None => {
            // A work tree left bisecting by a deleted state starts clean.
            let _ = git::run(&wt, &["bisect", "reset"]);
            let s = State {
                version: state::STATE_VERSION,
                name: name.clone(),
                source: origin.describe(),
                worktree: wt.clone(),
                cwd: std::env::current_dir().context("current directory")?,
                argv,
                good,
                bad,
                retries: args.retries,
                started: now(),
                steps: vec![],
                first_bad: None,
                candidates: vec![],
                finished: None,
            };
            s.save(&dir)?;
            s
        }
    };
    if state.finished.is_none() {
        ui.step(format!(
            "bisect `{name}`: good {} ({}), bad {} ({}); state in {}",
            state.good.arg,
            &state.good.sha[..12],
            state.bad.arg,
            &state.bad.sha[..12],
            dir.display()
        ));
        check_endpoints(&dir, &wt, ui)?;
        state = bisect_run(&dir, &wt, ui)?;
    }
    let report = state::render_report(&state, &dir);
    std::fs::write(dir.join(state::REPORT_FILE), &report)?;
    print!("{report}");
    if state.first_bad.is_none() {
        anyhow::bail!(
            "no single first bad commit: {} untestable candidates (see {})",
            state.candidates.len(),
            dir.join(state::REPORT_FILE).display()
        );
    }
    Ok(())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `--reset`: end git's bisect and drop the state; the clone and its build
/// directory stay, so the next bisect builds incrementally.
fn reset(dir: &Path, wt: &Path, ui: &Ui) -> Result<()> {
    if wt.join(".git").exists() {
        let _ = git::run(wt, &["bisect", "reset"]);
    }
    for f in [state::STATE_FILE, state::REPORT_FILE, "git-bisect.log"] {
        match std::fs::remove_file(dir.join(f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(f).display()))
            }
            _ => {}
        }
    }
    ui.note("earlier bisect state removed (the work tree and its build directory are kept)");
    Ok(())
}

/// This binary, for the steps. A rebuild while bisecting replaces the file
/// (Linux then names ours `... (deleted)`): the new one at the same path is
/// what the next step should run.
fn xtask_exe() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    Ok(
        match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(live) => live.into(),
            None => exe,
        },
    )
}

/// Run one step in a child process, as `git bisect run` does; its record
/// lands in state.json. Returns the exit code.
fn run_step(dir: &Path, wt: &Path, role: Role) -> Result<i32> {
    let exe = xtask_exe()?;
    let role = clap::ValueEnum::to_possible_value(&role)
        .map(|p| p.get_name().to_string())
        .unwrap_or_default();
    // A step builds a kernel and boots VMs: a supervised child (duct).
    let out = duct::cmd!(exe, "bisect-step", "--role", &role, "--state", dir)
        .dir(wt)
        .unchecked()
        .run()
        .context("running bisect-step")?;
    Ok(out.status.code().unwrap_or(step::GIT_ABORT))
}

/// Good must pass and bad must fail before bisecting means anything.
fn check_endpoints(dir: &Path, wt: &Path, ui: &Ui) -> Result<()> {
    for role in [Role::GoodEndpoint, Role::BadEndpoint] {
        let state = State::load(dir)?.context("bisect state vanished")?;
        let rev = if role == Role::GoodEndpoint {
            &state.good
        } else {
            &state.bad
        };
        if state.endpoint_done(role) {
            ui.note(format!(
                "{} {} already checked",
                role.label(),
                &rev.sha[..12]
            ));
            continue;
        }
        if git::bisect_log(wt).is_some() {
            // Bisecting already (the state was kept from an older run): git knows the endpoints.
            continue;
        }
        ui.step(format!(
            "checking the {}: {} {}",
            role.label(),
            &rev.sha[..12],
            rev.subject
        ));
        git::run(wt, &["checkout", "-q", "--force", "--detach", &rev.sha])?;
        let code = run_step(dir, wt, role)?;
        let state = State::load(dir)?.context("bisect state vanished")?;
        let why = state
            .steps
            .last()
            .and_then(|s| s.reason.clone())
            .unwrap_or_default();
        match (role, code) {
            (Role::GoodEndpoint, 0) | (Role::BadEndpoint, 1) => {}
            (Role::GoodEndpoint, 1) => {
                return Err(usage(format!(
                    "the good commit {} ({}) fails the selected tests ({why}): name an older good commit",
                    rev.arg, &rev.sha[..12]
                )))
            }
            (Role::BadEndpoint, 0) => {
                return Err(usage(format!(
                    "the bad commit {} ({}) passes the selected tests: they do not see the regression there",
                    rev.arg,
                    &rev.sha[..12]
                )))
            }
            (_, 125) => anyhow::bail!(
                "cannot test the {} {} ({}): {why}",
                role.label(),
                rev.arg,
                &rev.sha[..12]
            ),
            (_, c) => anyhow::bail!(
                "the {} check stopped (exit {c}); run the same command to resume",
                role.label()
            ),
        }
    }
    Ok(())
}

/// `git bisect start` (once) and `git bisect run bisect-step`, then read
/// the answer from `git bisect log`.
fn bisect_run(dir: &Path, wt: &Path, ui: &Ui) -> Result<State> {
    let state = State::load(dir)?.context("bisect state vanished")?;
    if git::bisect_log(wt).is_none() {
        git::run(
            wt,
            &["bisect", "start", &state.bad.sha, &state.good.sha, "--"],
        )?;
    }
    let mut log = git::bisect_log(wt).unwrap_or_default();
    let mut stopped = None;
    if git::parse_log(&log) == git::LogOutcome::Open {
        let exe = xtask_exe()?;
        ui.step(format!(
            "git bisect run {} bisect-step --state {}",
            exe.display(),
            dir.display()
        ));
        // git's own chatter goes to stderr with ours; stdout is for the report.
        let status = duct::cmd!(
            "git",
            "-C",
            wt,
            "bisect",
            "run",
            &exe,
            "bisect-step",
            "--state",
            dir
        )
        .stdout_to_stderr()
        .unchecked()
        .run()
        .context("running git bisect run")?
        .status;
        log = git::bisect_log(wt).unwrap_or_default();
        stopped = (!status.success()).then(|| status.to_string());
    }
    std::fs::write(dir.join("git-bisect.log"), &log)?;
    let mut state = State::load(dir)?.context("bisect state vanished")?;
    match git::parse_log(&log) {
        git::LogOutcome::FirstBad { sha, subject } => {
            state.first_bad = Some(Rev {
                arg: "first bad".into(),
                sha,
                subject,
            })
        }
        git::LogOutcome::Ambiguous(c) => {
            state.candidates = c
                .into_iter()
                .map(|(sha, subject)| Rev {
                    arg: "candidate".into(),
                    sha,
                    subject,
                })
                .collect()
        }
        git::LogOutcome::Open => {
            state.save(dir)?;
            std::fs::write(
                dir.join(state::REPORT_FILE),
                state::render_report(&state, dir),
            )?;
            anyhow::bail!(
                "git bisect run stopped before finding the first bad commit ({}); \
                 run the same command to resume",
                stopped.unwrap_or_else(|| "no answer in git bisect log".into())
            );
        }
    }
    state.finished = Some(now());
    state.save(dir)?;
    Ok(state)
}

#[cfg(test)]
mod tests;
