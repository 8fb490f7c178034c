//! e2fsprogs for tests: making images, and the independent oracle (e2fsck, debugfs) for
//! tests that check or poke at them.

use crate::cmd::{run, run_cmd};
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where debugfs says inode `ino` of `image` lives: `(block, byte offset in that block)`,
/// parsed from `imap`'s "located at block B, offset 0xO". Panics (the test fails) when
/// debugfs cannot say.
pub fn inode_location(image: &Path, ino: u64) -> (u64, u64) {
    let out = Command::new("debugfs")
        .args(["-R", &format!("imap <{ino}>")])
        .arg(image)
        .output()
        .expect("debugfs runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let parse = || -> Option<(u64, u64)> {
        let at = text.split("located at block ").nth(1)?;
        let block = at.split(',').next()?.trim().parse().ok()?;
        let hex: String = at
            .split("offset 0x")
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        Some((block, u64::from_str_radix(&hex, 16).ok()?))
    };
    parse().unwrap_or_else(|| panic!("debugfs imap <{ino}> said: {text}"))
}

/// [`inode_location`] as a byte offset in the image, for a filesystem of `block_size`.
pub fn inode_offset(image: &Path, ino: u64, block_size: u64) -> u64 {
    let (block, offset) = inode_location(image, ino);
    block * block_size + offset
}

/// `e2fsck -fn IMAGE`: fails with e2fsck's report unless the filesystem is clean.
pub fn e2fsck_clean(image: &Path) -> Result<()> {
    run("e2fsck", &[OsStr::new("-fn"), image.as_os_str()]).with_context(|| {
        format!(
            "e2fsck -fn {} reports a damaged filesystem",
            image.display()
        )
    })?;
    Ok(())
}

/// `mkfs.ext4` with the options every test shares. inline_data stays off: the server does
/// not support it. 256-byte inodes give nanosecond timestamps, btime and in-inode xattrs.
pub fn mkfs_ext4(image: &Path, block_size: u32, extra: &[String]) -> Result<()> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-F", "-q", "-O", "^inline_data", "-I", "256", "-b"])
        .arg(block_size.to_string())
        .args(extra)
        .arg(image);
    run_cmd(&mut cmd)?;
    Ok(())
}

/// A fresh `size_mib` MiB ext4 image (4 KiB blocks) at `dir/fs.img`: the server tests' disk.
pub fn new_ext4_image(dir: &Path, size_mib: u64) -> Result<PathBuf> {
    let image = dir.join("fs.img");
    std::fs::File::create(&image)?.set_len(size_mib << 20)?;
    mkfs_ext4(&image, 4096, &[])?;
    Ok(image)
}

/// The physical block (of `block_size` bytes) holding logical block `n` of `path` (absolute
/// in the filesystem), from `debugfs -R "bmap PATH N"` on the unmounted image.
pub fn physical_block(image: &Path, path: &str, n: u64) -> Result<u64> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("bmap {path} {n}"))
        .arg(image)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
    {
        Some(b) if out.status.success() && b != 0 => Ok(b),
        _ => bail!(
            "debugfs bmap {path} {n} said: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `e2fsck -fy IMAGE`: repairs; returns its exit code and report. Fails if e2fsck could
/// not fix everything (exit 4 or more).
pub fn e2fsck_repair(image: &Path) -> Result<(i32, String)> {
    let out = Command::new("e2fsck")
        .arg("-fy")
        .arg(image)
        .output()
        .context("run e2fsck")?;
    let code = out.status.code().unwrap_or(-1);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !(0..4).contains(&code) {
        bail!(
            "e2fsck -fy {} left errors (exit {code}):\n{text}",
            image.display()
        );
    }
    Ok((code, text))
}

/// The lines of an e2fsck report that describe problems it fixed (not its pass banners).
pub fn fsck_fixes(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty()
                && !l.starts_with("Pass ")
                && !l.starts_with("e2fsck ")
                && !l.contains("files (")
                && !l.contains("***** FILE SYSTEM WAS MODIFIED")
        })
        .map(String::from)
        .collect()
}
