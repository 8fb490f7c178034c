//! The `cargo xtask kernel` subcommand: flags in, paths and reports out.

use anyhow::Result;
use kernel::{configure_kernel, ensure_kernel, kconfig, ConfigReport, KernelArgs, KernelOptions};
use plumbing::ui::Ui;
use std::collections::BTreeSet;

/// Build the kernel under test (or only resolve and verify its config).
#[derive(clap::Args, Debug)]
pub struct KernelCommand {
    /// Profile from harness.toml (default: "default").
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Resolve, merge and verify the config, print what the fragments
    /// changed, and stop before compiling.
    #[arg(long)]
    pub config_only: bool,
}

pub fn run(cmd: &KernelCommand, ui: &Ui) -> Result<()> {
    let opts = KernelOptions::resolve(cmd.profile.as_deref(), &cmd.kernel)?;
    if cmd.config_only {
        let report = configure_kernel(&opts, ui)?;
        print!("{}", render_report(&report));
        return Ok(());
    }
    let k = ensure_kernel(&opts, ui)?;
    println!("bzImage     {}", k.bzimage.display());
    println!("vmlinux     {}", k.vmlinux.display());
    println!("config      {}", k.config.display());
    println!("System.map  {}", k.system_map.display());
    println!("build-info  {}", k.build_info_path.display());
    println!(
        "release {}  iomap {}  bzImage {} bytes  key {}{}",
        k.info.kernel_release,
        if k.info.iomap_present {
            "present"
        } else {
            "absent"
        },
        k.info.bzimage_bytes,
        k.info.cache_key,
        if k.reused { "  (cached)" } else { "" }
    );
    Ok(())
}

/// The `--config-only` summary: verification result, then what changed
/// relative to plain tinyconfig, requested symbols first.
pub fn render_report(r: &ConfigReport) -> String {
    let eff = kconfig::effective_requests(&r.fragments);
    let requested: BTreeSet<&str> = eff.keys().map(String::as_str).collect();
    let mut out = format!(
        "config verified: all {} requested symbols present ({})\n",
        r.verified,
        r.fragments
            .iter()
            .map(|f| format!("{} {}", f.name, f.requests.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&format!(
        "FUSE iomap: {} (tree {} CONFIG_FUSE_IOMAP)\n",
        if r.iomap_present {
            "enabled"
        } else {
            "not enabled"
        },
        if r.iomap_known { "has" } else { "has no" }
    ));
    for (sym, from, to) in kconfig::overrides(&r.fragments) {
        out.push_str(&format!("override: {sym}: {from} replaced by {to}\n"));
    }
    let (req, implied): (Vec<_>, Vec<_>) = r
        .changes
        .iter()
        .partition(|c| requested.contains(c.symbol.as_str()));
    out.push_str(&format!(
        "\n{} symbols differ from tinyconfig: {} requested by fragments, {} implied (dependencies, selects, defaults)\n",
        r.changes.len(),
        req.len(),
        implied.len()
    ));
    let line = |c: &kconfig::Change| {
        format!(
            "  {:<44} {} -> {}\n",
            c.symbol,
            kconfig::show(c.before.as_deref()),
            kconfig::show(c.after.as_deref())
        )
    };
    for f in &r.fragments {
        let mine: Vec<&&kconfig::Change> = req
            .iter()
            .filter(|c| eff.get(&c.symbol).is_some_and(|(_, w, _)| w.name == f.name))
            .collect();
        if !mine.is_empty() {
            out.push_str(&format!("[{}] {}\n", f.name, f.path.display()));
            for c in mine {
                out.push_str(&line(c));
            }
        }
    }
    out.push_str("[implied]\n");
    for c in &implied {
        out.push_str(&line(c));
    }
    out.push_str(&format!(
        "\nfinal .config: {}\ncache key: {}\n",
        r.config_path.display(),
        r.cache_key
    ));
    out
}
