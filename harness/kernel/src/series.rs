//! Patch series: an mbox file, a directory of patches, or a lore message-id
//! fetched with b4; applied with `git am` on a scratch branch or with
//! `patch -p1` on a plain tree. A patch that does not apply is named.

use anyhow::{Context, Result};
use plumbing::error::usage;
use plumbing::ui::Ui;
use plumbing::util::{sha256_hex, short, which};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a series comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesSpec {
    /// An mbox file (git format-patch / b4 output) or a directory of patches.
    Path(PathBuf),
    /// A lore message-id, fetched with `b4 am`.
    B4(String),
}

/// A loaded series, in application order.
#[derive(Debug, Clone)]
pub struct Series {
    pub origin: String,
    pub patches: Vec<Patch>,
    /// SHA-256 over every patch's bytes, in order.
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Patch {
    /// The subject line, or the file name when there is none.
    pub name: String,
    pub text: Vec<u8>,
}

/// What build-info.json records about the series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesInfo {
    pub origin: String,
    pub sha256: String,
    pub patches: Vec<String>,
}

impl Series {
    pub fn info(&self) -> SeriesInfo {
        SeriesInfo {
            origin: self.origin.clone(),
            sha256: self.sha256.clone(),
            patches: self.patches.iter().map(|p| p.name.clone()).collect(),
        }
    }
}

/// Read a series (running b4 for a message-id; its download is cached).
pub fn load(spec: &SeriesSpec, cache: &Path, ui: &Ui) -> Result<Series> {
    let (origin, patches) = match spec {
        SeriesSpec::Path(p) => (p.display().to_string(), read_path(p)?),
        SeriesSpec::B4(msgid) => {
            let mbox = b4_fetch(msgid, cache, ui)?;
            (format!("b4:{msgid}"), read_path(&mbox)?)
        }
    };
    if patches.is_empty() {
        return Err(usage(format!("series {origin} contains no patches")));
    }
    let mut all = Vec::new();
    for p in &patches {
        all.extend_from_slice(&p.text);
    }
    Ok(Series {
        origin,
        patches,
        sha256: sha256_hex(&all),
    })
}

fn read_path(p: &Path) -> Result<Vec<Patch>> {
    let meta = std::fs::metadata(p).map_err(|e| usage(format!("series {}: {e}", p.display())))?;
    if meta.is_dir() {
        read_dir(p)
    } else {
        let text = std::fs::read(p).map_err(|e| usage(format!("series {}: {e}", p.display())))?;
        let fallback = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(split_mbox(&text, &fallback))
    }
}

/// A directory: the order of a quilt `series` file if there is one, else
/// every *.patch / *.diff / *.mbx / *.eml file in name order.
fn read_dir(dir: &Path) -> Result<Vec<Patch>> {
    let names: Vec<String> = match std::fs::read_to_string(dir.join("series")) {
        Ok(list) => list
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            // quilt lines may carry options after the name (e.g. -p1)
            .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
            .collect(),
        Err(_) => {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    [".patch", ".diff", ".mbx", ".eml"]
                        .iter()
                        .any(|s| n.ends_with(s))
                })
                .collect();
            v.sort();
            v
        }
    };
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read(&path)
            .map_err(|e| usage(format!("series patch {}: {e}", path.display())))?;
        out.extend(split_mbox(&text, &name));
    }
    Ok(out)
}

/// Split an mbox into messages at `From ` separator lines (at the start or
/// after a blank line, and followed by a header line); text without any is
/// one patch named `fallback`.
pub fn split_mbox(text: &[u8], fallback: &str) -> Vec<Patch> {
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let mut starts = Vec::new();
    let mut pos = 0;
    for (i, line) in lines.iter().enumerate() {
        let after_blank = i == 0 || lines[i - 1].iter().all(|b| b.is_ascii_whitespace());
        let header_next = lines.get(i + 1).is_some_and(|n| is_header(n));
        if after_blank && header_next && line.starts_with(b"From ") {
            starts.push(pos);
        }
        pos += line.len();
    }
    if starts.first() != Some(&0) {
        // Leading text (or no mbox separators at all) stays with the first patch.
        starts.insert(0, 0);
    }
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(text.len());
        let chunk = &text[s..e];
        if chunk.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let name = subject(chunk).unwrap_or_else(|| {
            if starts.len() > 1 {
                format!("{fallback} #{}", i + 1)
            } else {
                fallback.to_string()
            }
        });
        out.push(Patch {
            name,
            text: chunk.to_vec(),
        });
    }
    out
}

/// `Name: value` with a header-like name.
fn is_header(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(n) if n > 0 => line[..n]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        _ => false,
    }
}

/// The Subject header of a message, with folded continuation lines joined.
fn subject(msg: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.is_empty() {
            return None; // end of headers
        }
        if let Some(s) = l.strip_prefix("Subject:") {
            let mut subj = s.trim().to_string();
            for cont in lines.by_ref() {
                if cont.starts_with([' ', '\t']) {
                    subj.push(' ');
                    subj.push_str(cont.trim());
                } else {
                    break;
                }
            }
            return Some(subj);
        }
    }
    None
}

/// Fetch a series from lore with `b4 am`, cached by message-id.
fn b4_fetch(msgid: &str, cache: &Path, ui: &Ui) -> Result<PathBuf> {
    let dir = cache
        .join("series")
        .join(format!("b4-{}", short(&sha256_hex(msgid.as_bytes()))));
    let mbox = dir.join("series.mbx");
    if mbox.is_file() {
        ui.note(format!(
            "series {msgid}: using cached b4 download {}",
            mbox.display()
        ));
        return Ok(mbox);
    }
    if which("b4").is_none() {
        return Err(usage(format!(
            "--b4 {msgid}: b4 is not installed; install it with `pip install b4` (or `pipx install b4`), \
             or download the series yourself and pass --series FILE"
        )));
    }
    ui.step(format!("fetching series {msgid} from lore with b4"));
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let out = duct::cmd!("b4", "am", "--no-cover", "-n", "series", "-o", &tmp, msgid)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running b4")?;
    let log = String::from_utf8_lossy(&out.stdout);
    let got = tmp.join("series.mbx");
    if !out.status.success() || !got.is_file() {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        anyhow::bail!(
            "b4 could not fetch {msgid} (is lore.kernel.org reachable from here?)\n{}",
            tail.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    Ok(mbox)
}

/// Apply with `git am` on the current branch of `tree` (a scratch branch the
/// caller created). On failure the am is aborted and the patch named.
pub fn apply_git(series: &Series, tree: &Path, ui: &Ui) -> Result<()> {
    ui.step(format!(
        "applying {} patches with git am",
        series.patches.len()
    ));
    for (i, p) in series.patches.iter().enumerate() {
        let out = duct::cmd!(
            "git",
            "-C",
            tree,
            "-c",
            "user.name=fuse-iomap-harness",
            "-c",
            "user.email=harness@localhost",
            "am",
            "--3way",
            "--keep-non-patch"
        )
        .stdin_bytes(p.text.clone())
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running git am")?;
        if !out.status.success() {
            let _ = duct::cmd!("git", "-C", tree, "am", "--abort")
                .stdout_null()
                .stderr_null()
                .unchecked()
                .run();
            return Err(not_applied(i, p, &out.stdout));
        }
    }
    Ok(())
}

/// Apply with `patch -p1` to a plain tree (a copy the caller owns).
pub fn apply_plain(series: &Series, tree: &Path, ui: &Ui) -> Result<()> {
    ui.step(format!(
        "applying {} patches with patch -p1",
        series.patches.len()
    ));
    for (i, p) in series.patches.iter().enumerate() {
        let out = duct::cmd!("patch", "-p1", "--forward", "--batch", "-d", tree)
            .stdin_bytes(p.text.clone())
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running patch")?;
        if !out.status.success() {
            return Err(not_applied(i, p, &out.stdout));
        }
    }
    Ok(())
}

fn not_applied(i: usize, p: &Patch, output: &[u8]) -> anyhow::Error {
    let log = String::from_utf8_lossy(output);
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    usage(format!(
        "the patch series does not apply: patch {} \"{}\" failed\n{}",
        i + 1,
        p.name,
        tail.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBOX: &str = "From 1111 Mon Sep 17 00:00:00 2001\nFrom: A <a@x>\nSubject: [PATCH 1/2] fuse: first\n\nbody\n---\ndiff\n\nFrom 2222 Mon Sep 17 00:00:00 2001\nFrom: A <a@x>\nSubject: [PATCH 2/2] fuse: a long\n subject\n\nFrom the body, not a separator\n";

    #[test]
    fn splits_mbox_and_reads_subjects() {
        let p = split_mbox(MBOX.as_bytes(), "x.mbox");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "[PATCH 1/2] fuse: first");
        assert_eq!(p[1].name, "[PATCH 2/2] fuse: a long subject");
        // "From the body" follows a non-blank line, so it is not a separator.
        assert!(String::from_utf8_lossy(&p[1].text).contains("From the body"));
        let joined: Vec<u8> = p.iter().flat_map(|p| p.text.clone()).collect();
        assert_eq!(joined, MBOX.as_bytes());
    }

    #[test]
    fn plain_diff_is_one_patch() {
        let p = split_mbox(b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", "fix.diff");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "fix.diff");
    }

    #[test]
    fn directory_order_and_quilt_series() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0002-b.patch"), "Subject: b\n\n").unwrap();
        std::fs::write(dir.path().join("0001-a.patch"), "Subject: a\n\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let names = |d: &Path| {
            read_dir(d)
                .unwrap()
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(dir.path()), vec!["a", "b"]);
        std::fs::write(
            dir.path().join("series"),
            "# quilt\n0002-b.patch -p1\n0001-a.patch\n",
        )
        .unwrap();
        assert_eq!(names(dir.path()), vec!["b", "a"]);
    }

    #[test]
    fn empty_or_missing_series_is_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let ui = Ui::plain();
        let err = load(&SeriesSpec::Path(dir.path().to_path_buf()), dir.path(), &ui).unwrap_err();
        assert_eq!(plumbing::error::exit_code(&err), 2);
        let err = load(
            &SeriesSpec::Path(dir.path().join("nope.mbox")),
            dir.path(),
            &ui,
        )
        .unwrap_err();
        assert_eq!(plumbing::error::exit_code(&err), 2);
    }

    /// Real git am / patch on a tiny tree: a good patch applies in both
    /// modes, a bad one is named.
    #[test]
    fn applies_and_names_failing_patch() {
        use test_support::needs::tool;
        if !test_support::needs_all([tool("git"), tool("patch")]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("f.txt"), "one\ntwo\n").unwrap();
        test_support::git::GitRepo::init(&repo).commit_all("init");
        let good = "From 0 Mon Sep 17 00:00:00 2001\nFrom: T <t@t>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: [PATCH] change two\n\n---\n f.txt | 2 +-\n\ndiff --git a/f.txt b/f.txt\n--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n-- \n2.39\n\n";
        let bad = good
            .replace("change two", "bad one")
            .replace("-two\n+TWO", "-zzz\n+TWO");
        let ui = Ui::plain();
        let mk = |text: &str| Series {
            origin: "t".into(),
            patches: split_mbox(text.as_bytes(), "t"),
            sha256: String::new(),
        };
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("f.txt"), "one\ntwo\n").unwrap();
        apply_plain(&mk(good), &plain, &ui).unwrap();
        assert_eq!(
            std::fs::read_to_string(plain.join("f.txt")).unwrap(),
            "one\nTWO\n"
        );

        apply_git(&mk(good), &repo, &ui).unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.join("f.txt")).unwrap(),
            "one\nTWO\n"
        );
        let err = apply_git(&mk(&bad), &repo, &ui).unwrap_err();
        assert_eq!(plumbing::error::exit_code(&err), 2);
        assert!(
            err.to_string()
                .contains("patch 1 \"[PATCH] bad one\" failed"),
            "{err}"
        );

        // Two patches, the second does not apply: it is the one named.
        let plain2 = dir.path().join("plain2");
        std::fs::create_dir(&plain2).unwrap();
        std::fs::write(plain2.join("f.txt"), "one\ntwo\n").unwrap();
        let err = apply_plain(&mk(&format!("{good}{bad}")), &plain2, &ui).unwrap_err();
        assert!(
            err.to_string()
                .contains("patch 2 \"[PATCH] bad one\" failed"),
            "{err}"
        );
        // git am was aborted: no am in progress, tree unchanged by the failure.
        assert!(!repo.join(".git/rebase-apply").exists());
    }
}
