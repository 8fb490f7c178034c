//! The run directory: `<runs_root>/<id>/` with a `latest` link next to it.
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

    pub fn tests_dir(&self) -> PathBuf {
        self.path.join("tests")
    }

    /// Relative paths of the files one test left, for the results.
    pub fn artifacts_of(&self, test: &str) -> Vec<String> {
        let dir = self.tests_dir().join(test);
        let mut out = vec![];
        collect_files(&dir, &mut out);
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
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            out.push(p);
        }
    }
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
}
