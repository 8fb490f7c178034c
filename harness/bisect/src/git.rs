//! The git commands bisect needs, and reading `git bisect log`.

use anyhow::Result;
use std::path::Path;

/// Run git in `dir` and return its trimmed stdout; the error carries stderr.
pub fn out(dir: &Path, args: &[&str]) -> Result<String> {
    let stdout = plumbing::util::git(dir, args)?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}

pub fn run(dir: &Path, args: &[&str]) -> Result<()> {
    out(dir, args).map(|_| ())
}

/// The full hash of `rev` as a commit, if it names one.
pub fn commit_of(dir: &Path, rev: &str) -> Option<String> {
    out(
        dir,
        &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
    )
    .ok()
}

/// First line of a commit's message.
pub fn subject(dir: &Path, rev: &str) -> String {
    out(dir, &["log", "-1", "--format=%s", rev]).unwrap_or_default()
}

/// Whether `dir` is a git repository (a work tree or a bare repository).
pub fn is_repository(dir: &Path) -> bool {
    out(dir, &["rev-parse", "--git-dir"]).is_ok()
}

/// The outcome recorded in `git bisect log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutcome {
    /// Still bisecting (or stopped early).
    Open,
    /// `# first bad commit: [sha] subject`.
    FirstBad { sha: String, subject: String },
    /// Only skipped commits are left: one of these is the first bad one.
    Ambiguous(Vec<(String, String)>),
}

/// Read the outcome from the text of `git bisect log`.
pub fn parse_log(log: &str) -> LogOutcome {
    // "# first bad commit: [<sha>] <subject>"
    let entry = |line: &str, prefix: &str| -> Option<(String, String)> {
        let rest = line.strip_prefix(prefix)?.strip_prefix('[')?;
        let (sha, subject) = rest.split_once(']')?;
        Some((sha.to_string(), subject.trim().to_string()))
    };
    if let Some((sha, subject)) = log.lines().find_map(|l| entry(l, "# first bad commit: ")) {
        return LogOutcome::FirstBad { sha, subject };
    }
    let possible: Vec<_> = log
        .lines()
        .filter_map(|l| entry(l, "# possible first bad commit: "))
        .collect();
    if possible.is_empty() {
        LogOutcome::Open
    } else {
        LogOutcome::Ambiguous(possible)
    }
}

/// `git bisect log` of the work tree, or None when no bisect is in progress.
pub fn bisect_log(wt: &Path) -> Option<String> {
    out(wt, &["bisect", "log"]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_outcomes() {
        let open = "git bisect start\n# status: waiting for both good and bad commits\n# bad: [c3] doc\ngit bisect bad c3\n";
        assert_eq!(parse_log(open), LogOutcome::Open);
        let done = format!("{open}# first bad commit: [abc123] fuse: require rootmode (x]y)\n");
        assert_eq!(
            parse_log(&done),
            LogOutcome::FirstBad {
                sha: "abc123".into(),
                subject: "fuse: require rootmode (x]y)".into()
            }
        );
        let skipped = "# only skipped commits left to test\n# possible first bad commit: [aa] one\n# possible first bad commit: [bb] two\n";
        assert_eq!(
            parse_log(skipped),
            LogOutcome::Ambiguous(vec![
                ("aa".into(), "one".into()),
                ("bb".into(), "two".into())
            ])
        );
    }
}
