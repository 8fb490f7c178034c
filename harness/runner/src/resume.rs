//! `vm-test --resume RUN`: go on with a run the host stopped (Ctrl-C, a kill, a reboot, the
//! end of a working session), with the flags it was started with.
//!
//! A run saves its command line when it starts (`invocation.json`), and the VM supervisor
//! saves a checkpoint after every boot (`vm::resume_tests_with_steps`), both in the run's
//! host state directory, which no guest can write. A resume reads them back, finds what
//! has a verdict, and runs the rest into the same run directory.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use plumbing::error::usage;
use serde::{Deserialize, Serialize};
use vm::RunDir;

use crate::vm_test::VmTestArgs;

const FILE: &str = "invocation.json";
const VERSION: u32 = 1;

/// How a run was started: the vm-test flags, as given.
#[derive(Debug, Serialize, Deserialize)]
pub struct Invocation {
    pub v: u32,
    pub argv: Vec<String>,
}

#[derive(Parser)]
#[command(name = "vm-test")]
struct Cli {
    #[command(flatten)]
    args: VmTestArgs,
}

impl Invocation {
    /// This process's vm-test flags (what follows the `vm-test` word), if it was started
    /// as `vm-test`.
    pub fn of_this_process() -> Option<Invocation> {
        let mut args = std::env::args().skip_while(|a| a != "vm-test");
        args.next()?;
        Some(Invocation {
            v: VERSION,
            argv: args.collect(),
        })
    }

    pub fn save(&self, dir: &RunDir) -> Result<()> {
        let state = dir.host_state_dir();
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        std::fs::write(state.join(FILE), serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("saving the invocation in {}", state.display()))
    }

    pub fn load(dir: &RunDir) -> Result<Invocation> {
        let path = dir.host_state_dir().join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            usage(format!(
                "run {} cannot be resumed: {} ({e}); only runs started by `cargo xtask vm-test` save how they were started",
                dir.id,
                path.display()
            ))
        })?;
        let inv: Invocation =
            serde_json::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
        if inv.v != VERSION {
            return Err(usage(format!(
                "{}: invocation version {} (this harness reads {VERSION})",
                path.display(),
                inv.v
            )));
        }
        Ok(inv)
    }

    /// The flags, parsed again as vm-test parses them.
    pub fn args(&self) -> Result<VmTestArgs> {
        let cli =
            Cli::try_parse_from(std::iter::once("vm-test".to_string()).chain(self.argv.clone()))
                .map_err(|e| usage(format!("the saved vm-test flags no longer parse: {e}")))?;
        if cli.args.resume.is_some() {
            return Err(usage("the saved vm-test flags are themselves a --resume"));
        }
        Ok(cli.args)
    }
}

/// The run directory `run` names: a run id under `runs_root`, `latest`, or a path.
pub fn find_run(runs_root: &Path, run: &str) -> Result<RunDir> {
    let by_id = runs_root.join(run);
    let path: PathBuf = if !run.contains('/') && by_id.exists() {
        by_id
    } else {
        PathBuf::from(run)
    };
    RunDir::open(&path).map_err(|e| {
        usage(format!(
            "--resume {run}: no such run ({}: {e}); runs are in {}",
            path.display(),
            runs_root.display()
        ))
    })
}

/// A resume takes no other flags: it reuses the run's own.
pub fn check_alone(argv: &[String]) -> Result<()> {
    let alone = match argv {
        [flag] => flag.starts_with("--resume="),
        [flag, _] => flag == "--resume",
        _ => false,
    };
    if alone {
        Ok(())
    } else {
        Err(usage(
            "--resume takes no other flags: the run goes on with the flags it was started with",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_round_trip_and_refuse_nested_resumes() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::create(root.path()).unwrap();
        let inv = Invocation {
            v: VERSION,
            argv: vec![
                "--fstests".into(),
                "-g quick".into(),
                "--jobs".into(),
                "2".into(),
            ],
        };
        inv.save(&dir).unwrap();
        // Outside the directory the guest shares.
        assert!(!dir.host_state_dir().starts_with(&dir.path));
        let args = Invocation::load(&dir).unwrap().args().unwrap();
        assert_eq!(args.jobs, 2);
        assert_eq!(args.fstests.selection.as_deref(), Some("-g quick"));
        let nested = Invocation {
            v: VERSION,
            argv: vec!["--resume".into(), "x".into()],
        };
        assert!(nested.args().is_err());
        let other = RunDir::create(root.path()).unwrap();
        let e = Invocation::load(&other).unwrap_err();
        assert!(format!("{e}").contains("cannot be resumed"), "{e}");
    }

    #[test]
    fn runs_are_found_by_id_latest_or_path_and_resume_stands_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::create(root.path()).unwrap();
        assert_eq!(find_run(root.path(), &dir.id).unwrap().path, dir.path);
        assert_eq!(find_run(root.path(), "latest").unwrap().id, dir.id);
        let by_path = dir.path.display().to_string();
        assert_eq!(find_run(root.path(), &by_path).unwrap().id, dir.id);
        assert!(find_run(root.path(), "nope").is_err());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_alone(&s(&["--resume", "latest"])).is_ok());
        assert!(check_alone(&s(&["--resume=latest"])).is_ok());
        assert!(check_alone(&s(&["--resume", "latest", "--jobs", "2"])).is_err());
    }
}
