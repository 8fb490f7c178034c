//! Git fixtures: throwaway repositories for tests of code that reads or moves git trees
//! (kernel and fstests sources, bisect).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git work tree in a directory the test owns. Every call panics (the test fails) with
/// git's output when git fails: fixtures are not what a test checks.
pub struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    /// `git init -q` in `dir` (created if missing).
    pub fn init(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the repository directory");
        let repo = Self::open(dir);
        repo.git(&["init", "-q"]);
        repo
    }

    /// An existing work tree.
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `git -C DIR ARGS...`; returns stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes `text` to `rel` (creating parent directories).
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))
            .expect("create parent directories");
        std::fs::write(&path, text).expect("write a fixture file");
    }

    /// `git add -A` and a commit by a fixed test identity; returns the new HEAD.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            message,
        ]);
        self.head()
    }

    /// `git rev-parse HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }
}
