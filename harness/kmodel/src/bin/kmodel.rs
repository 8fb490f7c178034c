//! `kmodel --server PATH [--seed N] [--ops N] [--threads N]`: run one random sequence (or N
//! at once, concurrent mode) against a fresh image, for manual use and replaying a seed.
//! `kmodel --fuzz N [--seed S]`: serve N mutated images (the image fuzzer).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kmodel",
    about = "Drive iomapfs over its kernel socket the way the kernel's FUSE iomap client would, and check every byte."
)]
struct Cli {
    /// The iomapfs binary (default: next to this one).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Random seed (default: time-derived; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of random operations.
    #[arg(long, default_value_t = 5000)]
    ops: u64,
    /// File system block size (mkfs.ext4 -b); default: 1024 for seeds divisible by 3,
    /// else 4096 (as the tests do).
    #[arg(long)]
    block_size: Option<u32>,
    /// Remount every N operations.
    #[arg(long, default_value_t = 400)]
    remount_every: u64,
    /// Server -o options (e.g. fault=map_off_by_one_block).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Keep the image, socket and logs here instead of a temporary directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print every operation.
    #[arg(short, long)]
    verbose: bool,
    /// Debug aid: SYNCFS and e2fsck -fn the live image after every operation.
    #[arg(long)]
    fsck_each_op: bool,
    /// Concurrent mode: N kernel threads, each running its own sequence of --ops
    /// operations on its own files, on one connection (no remounts).
    #[arg(long)]
    threads: Option<usize>,
    /// Image fuzzing: serve N mutated images (seeds --seed, --seed + 1, ...), two at a time.
    #[arg(long, value_name = "N")]
    fuzz: Option<u64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let server = match cli.server {
        Some(s) => s,
        None => std::env::current_exe()?.with_file_name("iomapfs"),
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if let Some(count) = cli.fuzz {
        let workdir = match cli.workdir {
            Some(dir) => dir,
            None => std::env::temp_dir().join(format!("kmodel-fuzz-{seed}")),
        };
        println!(
            "fuzzing {count} images from seed {seed} in {}",
            workdir.display()
        );
        let cfg = kmodel::fuzz::FuzzConfig {
            server,
            seed,
            count,
            jobs: 2,
            reply_timeout: std::time::Duration::from_secs(10),
            workdir,
        };
        let report = kmodel::fuzz::fuzz(&cfg).map_err(anyhow::Error::msg)?;
        println!("{report}");
        if !report.findings.is_empty() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let mut cfg = kmodel::RunConfig::new(server, seed, cli.ops);
    if let Some(bs) = cli.block_size {
        cfg.block_size = bs;
    }
    cfg.remount_every = cli.remount_every.max(1);
    cfg.server_options = cli.options;
    cfg.verbose = cli.verbose;
    cfg.fsck_each_op = cli.fsck_each_op;
    if let Some(dir) = cli.workdir {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        cfg.workdir = Some(dir);
    }
    let result = match cli.threads {
        Some(n) => kmodel::run_concurrent(&cfg, n).map(|r| r.to_string()),
        None => kmodel::run(&cfg).map(|r| r.to_string()),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(1);
        }
    }
}
