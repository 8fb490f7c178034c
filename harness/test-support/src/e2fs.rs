//! e2fsprogs as an independent oracle for tests that poke at images.

use std::path::Path;
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
