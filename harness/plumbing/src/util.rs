//! Small helpers shared by the subcommands: hashing, PATH lookup, locks.

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's contents, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of some bytes (a digest).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 hex digits of a hash: short enough for directory names.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// A string made safe for a single path component.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The full path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// An exclusive advisory lock on a file, held until dropped. Serialises
/// xtask processes that share the cache (parallel runs, CI jobs).
pub struct Lock {
    _flock: Flock<File>,
}

impl Lock {
    /// Take the lock at `path`, calling `on_wait` once if someone holds it.
    pub fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file =
            File::create(path).with_context(|| format!("creating lock {}", path.display()))?;
        let flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((file, _)) => {
                on_wait();
                Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .with_context(|| format!("locking {}", path.display()))?
            }
        };
        Ok(Lock { _flock: flock })
    }
}

/// Run `git -C dir ARGS` and return its raw stdout; a failure carries git's stderr.
pub fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let sh = xshell::Shell::new().context("running git")?;
    let o = xshell::cmd!(sh, "git -C {dir} {args...}")
        .quiet()
        .ignore_status()
        .output()
        .context("running git")?;
    if !o.status.success() {
        anyhow::bail!(
            "git {} (in {}): {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(o.stdout)
}

/// Write a file atomically (temp file + rename) so readers never see half of it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
        assert_eq!(short(&sha256_hex(b"abc")), "ba7816bf8f01cfea");
    }

    #[test]
    fn sanitize_and_which() {
        assert_eq!(sanitize("6.12.117-1~deb12u1"), "6.12.117-1_deb12u1");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert!(which("sh").is_some());
        assert!(which("definitely-not-a-program-xyz").is_none());
    }

    #[test]
    fn lock_excludes_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let first = Lock::acquire(&p, || panic!("first lock must not wait")).unwrap();
        // A second non-blocking attempt on a new descriptor must fail while held.
        let f = File::create(&p).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err());
        drop(first);
        let f = File::create(&p).unwrap();
        assert!(Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
