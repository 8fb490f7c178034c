//! `cargo xtask bindgen`: regenerate harness/ext2fs/src/sys.rs with the
//! bindgen CLI, using exactly the command documented in
//! harness/ext2fs/src/lib.rs ("Regenerating the bindings"; a test keeps the
//! two in step). `--check` regenerates into a temp file and compares.

use anyhow::{Context, Result};
use plumbing::error::{usage, TestFailures};
use plumbing::ui::Ui;
use plumbing::util::which;

/// Output file, relative to the workspace root.
pub const OUTPUT: &str = "harness/ext2fs/src/sys.rs";

/// bindgen's arguments before `-o OUTPUT`, relative to the workspace root.
#[rustfmt::skip]
pub const ARGS: &[&str] = &[
    "harness/ext2fs/wrapper.h",
    "--use-core",
    "--no-layout-tests",
    "--with-derive-default",
    "--merge-extern-blocks",
    "--allowlist-function", "ext2fs_.*",
    "--allowlist-function", "io_channel_.*",
    "--allowlist-function", "error_message",
    "--allowlist-function", "initialize_ext2_error_table",
    "--allowlist-var", "unix_io_manager",
    "--allowlist-var", "EXT[234]_.*",
    "--allowlist-var", "BMAP_.*",
    "--allowlist-var", "BLOCK_.*",
    "--allowlist-var", "DIRENT_.*",
    "--allowlist-var", "LINUX_S_.*",
    "--allowlist-var", "XATTR_.*",
    "--allowlist-type", "ext2_.*",
    "--allowlist-type", "ext3_.*",
];

/// Regenerate the ext2fs bindings.
#[derive(clap::Args, Debug)]
pub struct BindgenCommand {
    /// Do not write: fail (exit 1) if the committed file differs from
    /// freshly generated bindings.
    #[arg(long)]
    pub check: bool,
}

pub fn run(cmd: &BindgenCommand, ui: &Ui) -> Result<()> {
    if which("bindgen").is_none() {
        return Err(usage(
            "bindgen is not installed; install it with `cargo install bindgen-cli`",
        ));
    }
    let root = plumbing::paths::workspace_root();
    let tmp = tempfile_path(&root)?;
    let out = if cmd.check {
        tmp.clone()
    } else {
        root.join(OUTPUT)
    };
    ui.step(format!("bindgen {} -> {}", ARGS[0], out.display()));
    let argv: Vec<String> = ARGS
        .iter()
        .map(|s| s.to_string())
        .chain(["-o".to_string(), out.display().to_string()])
        .collect();
    let res = duct::cmd("bindgen", &argv)
        .dir(&root)
        .stderr_capture()
        .unchecked()
        .run()
        .context("running bindgen")?;
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!(
            "bindgen failed:\n{}",
            String::from_utf8_lossy(&res.stderr).trim()
        );
    }
    if cmd.check {
        let fresh = std::fs::read(&tmp).context("reading generated bindings")?;
        let _ = std::fs::remove_file(&tmp);
        let committed =
            std::fs::read(root.join(OUTPUT)).with_context(|| format!("reading {OUTPUT}"))?;
        if fresh != committed {
            return Err(anyhow::Error::new(TestFailures(format!(
                "{OUTPUT} is out of date: run `cargo xtask bindgen` and commit the result"
            ))));
        }
        ui.note(format!("{OUTPUT} is up to date"));
    } else {
        ui.note(format!("wrote {OUTPUT}"));
    }
    Ok(())
}

fn tempfile_path(root: &std::path::Path) -> Result<std::path::PathBuf> {
    let dir = root.join("target");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!("bindgen-check-{}.rs", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command in ext2fs's crate docs, as words (quotes removed).
    fn documented_command() -> Vec<String> {
        let lib = std::fs::read_to_string(
            plumbing::paths::workspace_root().join("harness/ext2fs/src/lib.rs"),
        )
        .unwrap();
        let start = lib
            .find("Regenerating the bindings")
            .expect("ext2fs docs describe regeneration");
        let block: Vec<&str> = lib[start..]
            .lines()
            .map(|l| l.trim_start_matches("//!").trim())
            .skip_while(|l| !l.starts_with("```"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        block
            .join(" ")
            .replace('\\', " ")
            .split_whitespace()
            .map(|w| w.trim_matches('\'').to_string())
            .collect()
    }

    #[test]
    fn args_match_the_ext2fs_docs() {
        let doc = documented_command();
        let mut ours: Vec<String> = std::iter::once("bindgen")
            .chain(ARGS.iter().copied())
            .map(String::from)
            .collect();
        ours.extend(["-o".to_string(), OUTPUT.to_string()]);
        assert_eq!(doc, ours, "update ARGS to match harness/ext2fs/src/lib.rs");
    }
}
