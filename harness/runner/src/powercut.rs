//! `cargo xtask powercut`: power cuts under load. Each cycle boots the VM, runs the churn
//! and append workloads (with acknowledgements on the host share) on iomapfs over the test
//! disk, and kills QEMU with SIGKILL at a seeded random moment: the guest's page cache is
//! lost, only what reached the disk image stays. The host then preens the image
//! (`e2fsck -p`, what fstests' mounts do), checks it (`e2fsck -fn`), mounts it read-only
//! with its own ext4 and verifies every acknowledged record and file.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::vm_test::{VmArgs, VmTestArgs};
use plumbing::error::TestFailures;
use plumbing::ui::Ui;

#[derive(clap::Args, Debug)]
pub struct PowercutArgs {
    /// Power cuts to make.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: u32,
    /// Seed of the cut moments and the workloads (random if omitted; printed for replay).
    #[arg(long, value_parser = workloads::dio::parse_seed)]
    pub seed: Option<u64>,
    /// Earliest cut, in seconds after the workloads started.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub min_cut: u64,
    /// Latest cut, in seconds after the workloads started.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub max_cut: u64,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// What one cycle found.
#[derive(Debug, Serialize)]
pub struct Cycle {
    pub seed: String,
    /// Seconds from the workloads' start to the cut.
    pub cut_after_s: f64,
    /// e2fsck -p's exit code (0 clean, 1 or 2 repaired, 4 and up: preen failed).
    pub preen_exit: i32,
    /// e2fsck -fn after the preen found nothing.
    pub clean_after_preen: bool,
    pub acked_records: u64,
    pub acked_churn_ops: u64,
    pub findings: u64,
    /// The verifiers' reports (findings), empty when clean.
    pub details: Vec<String>,
}

impl Cycle {
    fn ok(&self) -> bool {
        self.preen_exit < 4 && self.clean_after_preen && self.findings == 0
    }
}

pub fn main(args: &PowercutArgs, ui: &Ui) -> Result<()> {
    if args.max_cut < args.min_cut {
        return Err(plumbing::error::usage(
            "--max-cut must not be below --min-cut",
        ));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    ui.step(format!(
        "powercut: {} cycles, seed {seed:#x} (replay: --seed {seed:#x})",
        args.cycles
    ));
    let mut template = VmTestArgs::parse_from_args(&["--run", "true", "--max-reboots", "0"])?;
    template.vm = args.vm.clone();
    let mut prepared = crate::vm_test::prepare(&template.vm, true, ui)?;
    // The host formats the test disk; the guest mounts it with iomapfs.
    prepared.spec.format_test_disk = Some(vec![]);
    let workloads_bin = crate::vm_test::target_dir()
        .join("release")
        .join("workloads");
    let out_root = crate::vm_test::target_dir()
        .join("harness")
        .join("powercut");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut cycles = vec![];
    for n in 1..=args.cycles {
        let cycle_seed: u64 = rng.random();
        let cut =
            Duration::from_millis(rng.random_range(args.min_cut * 1000..=args.max_cut * 1000));
        ui.step(format!(
            "cycle {n}/{}: seed {cycle_seed:#x}, cut {:.1} s into the workloads",
            args.cycles,
            cut.as_secs_f64()
        ));
        let c = cycle(&prepared, &template, cycle_seed, cut, &workloads_bin, ui)
            .with_context(|| format!("cycle {n} (seed {cycle_seed:#x})"))?;
        ui.note(format!(
            "acknowledged {} records and {} churn operations; e2fsck -p exit {}, clean after: {}; {} findings",
            c.acked_records, c.acked_churn_ops, c.preen_exit, c.clean_after_preen, c.findings
        ));
        for d in &c.details {
            ui.note(d);
        }
        cycles.push(c);
    }
    std::fs::create_dir_all(&out_root)?;
    let report = out_root.join(format!("powercut-{seed:016x}.json"));
    std::fs::write(&report, serde_json::to_string_pretty(&cycles)?)?;
    let bad = cycles.iter().filter(|c| !c.ok()).count();
    println!("{}", table(&cycles));
    println!("report: {}", report.display());
    if bad > 0 {
        return Err(TestFailures(format!(
            "{bad} of {} power cuts lost data or left a filesystem preen could not repair",
            cycles.len()
        ))
        .into());
    }
    Ok(())
}

fn table(cycles: &[Cycle]) -> String {
    let mut s = String::from("| cycle | seed | cut after | records acked | churn ops acked | e2fsck -p | clean | findings |\n|---|---|---|---|---|---|---|---|\n");
    for (i, c) in cycles.iter().enumerate() {
        s.push_str(&format!(
            "| {} | {} | {:.1} s | {} | {} | {} | {} | {} |\n",
            i + 1,
            c.seed,
            c.cut_after_s,
            c.acked_records,
            c.acked_churn_ops,
            c.preen_exit,
            c.clean_after_preen,
            c.findings
        ));
    }
    s
}

/// The guest's side: both workloads on iomapfs until the power goes.
fn guest_command(seed: u64) -> String {
    format!(
        "set -e\n\
         mount -t fuse.iomapfs \"$TEST_DEV\" \"$TEST_DIR\"\n\
         workloads churn \"$TEST_DIR\" --seed {churn:#x} --duration 3600 --files 24 --max-units 8 \
           --crash-tolerant --ack-log \"$HARNESS_OUT/churn.acks\" >\"$HARNESS_OUT/churn.out\" 2>&1 &\n\
         workloads append \"$TEST_DIR\" --seed {append:#x} --duration 3600 --writers 2 --records 10000000 \
           --fsync-every 4 --crash-tolerant --ack-log \"$HARNESS_OUT/append.acks\" >\"$HARNESS_OUT/append.out\" 2>&1 &\n\
         wait\n",
        churn = seed,
        append = seed ^ 0x9e37_79b9_7f4a_7c15,
    )
}

fn cycle(
    prepared: &crate::vm_test::Prepared,
    template: &VmTestArgs,
    seed: u64,
    cut: Duration,
    workloads_bin: &Path,
    ui: &Ui,
) -> Result<Cycle> {
    let mut args = template.clone();
    args.run = vec![guest_command(seed)];
    args.timeout = Some(3600);
    let plan = crate::vm_test::build_plan(&args, true)?;
    let test = plan
        .tests
        .first()
        .context("the plan has the workload test")?
        .name
        .clone();
    let dir = vm::RunDir::create(&crate::vm_test::runs_root())?;
    ui.note(format!("run directory: {}", dir.path.display()));
    let limits = vm::Limits {
        reboots: 0,
        ..vm::Limits::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    // The cut: once the guest started the workloads, wait, then kill QEMU outright.
    let killer = {
        let path = dir.path.clone();
        std::thread::spawn(move || cut_power(&path, cut))
    };
    let run = vm::run_tests(&prepared.spec, &plan, &limits, &dir, &mut |_| {}, &cancel);
    let cut_after = killer
        .join()
        .map_err(|_| anyhow::anyhow!("the cut thread panicked"))??;
    match run {
        Ok(r) if r.verdict == report::Verdict::Passed => {
            bail!(
                "the workloads finished before the cut (they run until killed): {:?}",
                r.reason
            )
        }
        Ok(_) => {}
        Err(e) => bail!("the VM run failed: {e}"),
    }
    let image = dir.path.join("disks").join("test.img");
    let out = dir.path.join("tests").join(&test);
    let preen_exit = duct::cmd!("e2fsck", "-p", &image)
        .stderr_to_stdout()
        .stdout_path(dir.path.join("e2fsck-p.log"))
        .unchecked()
        .run()?
        .status
        .code()
        .unwrap_or(-1);
    let clean_after_preen = duct::cmd!("e2fsck", "-fn", &image)
        .stderr_to_stdout()
        .stdout_path(dir.path.join("e2fsck-fn.log"))
        .unchecked()
        .run()?
        .status
        .success();
    let mut c = Cycle {
        seed: format!("{seed:#x}"),
        cut_after_s: cut_after.as_secs_f64(),
        preen_exit,
        clean_after_preen,
        acked_records: acked_records(&out.join("append.acks")),
        acked_churn_ops: ack_lines(&out.join("churn.acks"), 1),
        findings: 0,
        details: vec![],
    };
    if c.acked_records == 0 || c.acked_churn_ops == 0 {
        bail!("nothing was acknowledged before the cut ({} records, {} churn operations): raise --min-cut", c.acked_records, c.acked_churn_ops);
    }
    if preen_exit >= 4 {
        return Ok(c);
    }
    let mnt = tempfile::tempdir()?;
    duct::cmd!("mount", "-t", "ext4", "-o", "ro,loop", &image, mnt.path())
        .stdout_null()
        .run()
        .context("mounting the preened image read-only with the host's ext4")?;
    let verified = [("churn", "churn.acks"), ("append", "append.acks")].map(|(what, acks)| {
        let json = dir.path.join(format!("verify-{what}.json"));
        let status = duct::cmd!(
            workloads_bin,
            "verify",
            what,
            mnt.path(),
            "--ack-log",
            out.join(acks),
            "--json",
            &json
        )
        .stderr_to_stdout()
        .stdout_path(dir.path.join(format!("verify-{what}.log")))
        .unchecked()
        .run();
        (what, status, json)
    });
    let _ = duct::cmd!("umount", mnt.path()).unchecked().run();
    for (what, status, json) in verified {
        let status = status.with_context(|| format!("running workloads verify {what}"))?;
        let summary: serde_json::Value = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .with_context(|| {
                format!(
                    "workloads verify {what} wrote no summary ({})",
                    status.status
                )
            })?;
        let n = summary["findings_total"].as_u64().unwrap_or(0);
        c.findings += n;
        if n > 0 || !status.status.success() {
            for f in summary["findings"].as_array().into_iter().flatten().take(5) {
                c.details.push(format!(
                    "{what}: {} {} @ {}: {}",
                    f["kind"], f["file"], f["offset"], f["detail"]
                ));
            }
            if n == 0 {
                c.findings += 1;
                c.details
                    .push(format!("{what}: verify exited {}", status.status));
            }
        }
    }
    Ok(c)
}

/// Waits for the workload test to start (its event), then `cut`, then SIGKILLs QEMU.
/// Returns how long after the start the power went.
fn cut_power(run_dir: &Path, cut: Duration) -> Result<Duration> {
    let events = run_dir.join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(600);
    let started = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"type\":\"test_started\"") {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "the workloads never started (no test_started in {})",
                events.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(cut);
    let pid: i32 = std::fs::read_to_string(run_dir.join("qemu.pid"))
        .context("reading qemu.pid")?
        .trim()
        .parse()
        .context("qemu.pid holds no pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("killing QEMU (pid {pid})"))?;
    Ok(started.elapsed())
}

/// Records the append workload acknowledged (each writer's highest acknowledged sequence
/// number + 1); 0 when its log is missing or unreadable.
fn acked_records(path: &Path) -> u64 {
    workloads::append::acklog::read(path)
        .map(|(_, acked)| acked.iter().map(|a| a.map_or(0, |s| s + 1)).sum())
        .unwrap_or(0)
}

/// Acknowledgement lines in a log (after `skip` header lines); 0 when there is none.
fn ack_lines(path: &PathBuf, skip: usize) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .skip(skip)
                .filter(|l| !l.trim().is_empty())
                .count() as u64
        })
        .unwrap_or(0)
}

impl VmTestArgs {
    /// vm-test's flags from words, as on its command line.
    pub fn parse_from_args(words: &[&str]) -> Result<VmTestArgs> {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: VmTestArgs,
        }
        Ok(Cli::try_parse_from(std::iter::once("vm-test").chain(words.iter().copied()))?.args)
    }
}
