//! The run directory: `<runs_root>/<id>/` with a `latest` link next to it.
//!
//! The guest shares this directory read-write (virtio-fs or 9p), so whatever it holds after a boot may
//! have been planted by the guest: a symlink or a device node where the host will write,
//! a symlinked directory the host would walk. The host therefore never follows a link in
//! it: [`RunDir::reclaim`] removes what the guest must not leave where the host writes,
//! [`RunDir::artifacts_of`] lists only regular files, and [`read_guest_file`] reads only a
//! regular file reached through real directories, up to a size cap.
use nix::fcntl::OFlag;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

/// Most files listed as one test's artifacts.
pub const MAX_ARTIFACTS: usize = 500;

/// Directories the host writes into (besides the run directory itself).
const HOST_DIRS: &[&str] = &["boot", "bin", "disks"];

#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
}

impl RunDir {
    /// Make a fresh run directory and point `latest` at it.
    pub fn create(runs_root: &Path) -> io::Result<RunDir> {
        std::fs::create_dir_all(runs_root)?;
        let now = SystemTime::now();
        let started_at = humantime::format_rfc3339_seconds(now).to_string();
        // "2026-01-02T03:04:05Z" -> "20260102-030405", plus the pid for uniqueness.
        let stamp: String = started_at
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        let stamp = stamp.replace('T', "-");
        let mut n = 0;
        let (id, path) = loop {
            let id = format!(
                "{stamp}-{}{}",
                std::process::id(),
                if n == 0 {
                    String::new()
                } else {
                    format!("-{n}")
                }
            );
            let path = runs_root.join(&id);
            match std::fs::create_dir(&path) {
                Ok(()) => break (id, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e),
            }
        };
        // Atomic update of the `latest` link.
        let tmp = runs_root.join(format!(".latest-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&id, &tmp)?;
        std::fs::rename(&tmp, runs_root.join("latest"))?;
        Ok(RunDir {
            id,
            path,
            started_at,
        })
    }

    /// An existing run directory (to resume it), by its path.
    pub fn open(path: &Path) -> io::Result<RunDir> {
        let path = std::fs::canonicalize(path)?;
        if !std::fs::symlink_metadata(&path)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a run directory", path.display()),
            ));
        }
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let started_at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        Ok(RunDir {
            id,
            path,
            started_at,
        })
    }

    /// The run directory of one of several VMs of this run (`vm-test --jobs`): `<run>/NAME`,
    /// a run directory of its own that only that VM's guest shares.
    pub fn child(&self, name: &str) -> io::Result<RunDir> {
        let path = self.path.join(name);
        std::fs::create_dir_all(&path)?;
        Ok(RunDir {
            id: format!("{}-{name}", self.id),
            path,
            started_at: self.started_at.clone(),
        })
    }

    /// Where the host keeps what no guest may touch (the invocation and checkpoints used by
    /// `--resume`): next to the run directory, never inside the directory a guest shares.
    pub fn host_state_dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        parent.join(".host").join(&self.id)
    }

    pub fn tests_dir(&self) -> PathBuf {
        self.path.join("tests")
    }

    /// Relative paths of the regular files one test left, for the results (at most
    /// [`MAX_ARTIFACTS`]). `test` must be a checked plan name; links are not followed.
    pub fn artifacts_of(&self, test: &str) -> Vec<String> {
        if events::check_test_name(test).is_err() {
            return vec![];
        }
        let rel = Path::new("tests").join(test);
        if !real_dirs(&self.path, &rel) {
            return vec![];
        }
        let mut out = vec![];
        collect_files(&self.path.join(&rel), &mut out, 0);
        let mut rel: Vec<String> = out
            .iter()
            .filter_map(|p| {
                p.strip_prefix(&self.path)
                    .ok()
                    .map(|r| r.display().to_string())
            })
            .collect();
        rel.sort();
        rel
    }

    /// Make the directory safe for the host to write into again after a boot: remove
    /// every symlink, device node, FIFO or socket the guest left at the top level or in
    /// the host's directories (`boot`, `bin`, `disks`), and those directories themselves
    /// if they are not real directories. Returns what was removed (relative paths), each
    /// a sign of a misbehaving guest. Call it only while QEMU is not running.
    pub fn reclaim(&self) -> Vec<String> {
        let mut removed = vec![];
        let mut sweep = |dir: &Path, rel: &Path| {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_file() || ft.is_dir() {
                    continue;
                }
                if std::fs::remove_file(e.path()).is_ok() {
                    removed.push(rel.join(e.file_name()).display().to_string());
                }
            }
        };
        sweep(&self.path, Path::new(""));
        for d in HOST_DIRS {
            let p = self.path.join(d);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                sweep(&p, Path::new(d));
            }
        }
        removed.sort();
        removed
    }
}

/// Every component of `rel` under `root` is a real directory (or absent): no links.
pub fn real_dirs(root: &Path, rel: &Path) -> bool {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            return false;
        };
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    true
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if out.len() >= MAX_ARTIFACTS {
            return;
        }
        // DirEntry::file_type does not follow links: a link is neither file nor dir here.
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() && depth < 8 {
            collect_files(&e.path(), out, depth + 1);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// Read a file the guest wrote under the run directory: `path` must be inside `run_dir`,
/// reached through real directories, and a regular file itself (never a link, FIFO or
/// device); at most `cap` bytes are read, and a longer file is an error.
pub fn read_guest_file(run_dir: &Path, path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let rel = path
        .strip_prefix(run_dir)
        .map_err(|_| refuse("not in the run directory"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    if !real_dirs(run_dir, parent) {
        return Err(refuse("reached through a link"));
    }
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let mut bytes = vec![];
    f.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(refuse(&format!("larger than {cap} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_unique_dirs_and_latest_link() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::create(root.path()).unwrap();
        let b = RunDir::create(root.path()).unwrap();
        assert_ne!(a.path, b.path);
        assert!(a.path.is_dir() && b.path.is_dir());
        let latest = std::fs::read_link(root.path().join("latest")).unwrap();
        assert_eq!(latest, PathBuf::from(&b.id));
        assert!(a.started_at.ends_with('Z'));
        std::fs::create_dir_all(b.tests_dir().join("smoke/mount")).unwrap();
        std::fs::write(b.tests_dir().join("smoke/mount/stdout.log"), "x").unwrap();
        assert_eq!(
            b.artifacts_of("smoke/mount"),
            vec!["tests/smoke/mount/stdout.log".to_string()]
        );
    }

    /// What a hostile guest can leave in the shared directory.
    #[test]
    fn guest_links_are_never_followed() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host file").unwrap();
        std::fs::create_dir_all(outside.path().join("deep/dir")).unwrap();
        std::fs::write(outside.path().join("deep/dir/f"), "x").unwrap();
        let d = RunDir::create(root.path()).unwrap();
        let t = d.tests_dir().join("t/a");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("stdout.log"), "ok").unwrap();
        symlink(outside.path(), t.join("escape")).unwrap();
        symlink(outside.path().join("secret"), t.join("secret.log")).unwrap();
        // Artifacts: only the regular file; the links are not walked or listed.
        assert_eq!(d.artifacts_of("t/a"), ["tests/t/a/stdout.log"]);
        // A name that is not a plan name lists nothing, even when it points somewhere.
        assert!(d.artifacts_of("../../..").is_empty());
        // A symlinked test directory is not walked.
        symlink(outside.path(), d.tests_dir().join("t/b")).unwrap();
        assert!(d.artifacts_of("t/b").is_empty());

        // Reading: a link, a file behind a linked directory, a FIFO, a file too large.
        assert!(read_guest_file(&d.path, &t.join("secret.log"), 100).is_err());
        assert!(read_guest_file(&d.path, &t.join("escape/secret"), 100).is_err());
        assert!(read_guest_file(&d.path, &outside.path().join("secret"), 100).is_err());
        assert_eq!(
            read_guest_file(&d.path, &t.join("stdout.log"), 100).unwrap(),
            b"ok"
        );
        assert!(read_guest_file(&d.path, &t.join("stdout.log"), 1).is_err());
        nix::unistd::mkfifo(
            &t.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(
            read_guest_file(&d.path, &t.join("fifo"), 100).is_err(),
            "a FIFO would block the host"
        );

        // Reclaim: links where the host writes are removed, regular files kept.
        symlink(outside.path().join("secret"), d.path.join("results.json")).unwrap();
        std::fs::create_dir_all(d.path.join("boot")).unwrap();
        symlink(
            outside.path().join("secret"),
            d.path.join("boot/HARNESS_BOOT"),
        )
        .unwrap();
        symlink(outside.path(), d.path.join("disks")).unwrap();
        std::fs::write(d.path.join("console.log"), "c").unwrap();
        nix::unistd::mkfifo(
            &d.path.join("qemu.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(
            d.reclaim(),
            ["boot/HARNESS_BOOT", "disks", "qemu.log", "results.json"]
        );
        assert!(d.path.join("console.log").is_file());
        assert!(d.reclaim().is_empty());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).unwrap(),
            "host file"
        );
        assert!(outside.path().join("deep/dir/f").is_file());
    }
}
