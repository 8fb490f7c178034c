//! `-o preen`: `e2fsck -p` before a read-write open, as a boot-time fsck does for ext2 (the
//! server keeps no journal). The server runs it on its source, a replay on its copy.

use anyhow::{Context, Result};

/// `e2fsck -p`: quick on a clean filesystem, and the automatic repairs of an unclean one
/// (this server writes metadata without a journal, like ext2). Exit codes 0-2 mean the
/// filesystem is usable now.
pub fn preen(source: &std::path::Path) -> Result<()> {
    // mount(8) runs helpers with a PATH that may lack the sbin directories.
    let e2fsck = ["/usr/sbin/e2fsck", "/sbin/e2fsck"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("e2fsck");
    let out = std::process::Command::new(e2fsck)
        .arg("-p")
        .arg(source)
        .output()
        .context("cannot run e2fsck for -o preen (apt-get install e2fsprogs)")?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1 | 2) => {
            // Info, not a warning: a mount helper's stderr is the caller's output.
            tracing::info!(
                "e2fsck -p repaired {}: {}",
                source.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
            Ok(())
        }
        _ => anyhow::bail!(
            "e2fsck -p {} could not repair it ({}): {}{}; run `e2fsck -f` by hand",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}
