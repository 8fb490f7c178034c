//! Expunge lists: tests the project does not run, each with a reason, a link, and optional
//! predicates (kernel release range, iomapfs mode, fstests sections).
//!
//! Files are `images/<image>/expunge/*.toml`; the format is documented in
//! `harness/fstests/EXPUNGE.md`:
//!
//! ```toml
//! [[expunge]]
//! tests = ["generic/475", "generic/6??"]   # ids or globs
//! reason = "needs dm-error, not in the guest kernel config"
//! link = "https://git.kernel.org/..."      # http(s) URL, required
//! kernel = ">=6.12, <6.16"                 # optional: every comparison must hold
//! mode = "classic"                         # optional: iomap | classic
//! sections = ["iomapfs_1k"]                # optional: only these sections
//! kind = "flaky"                           # optional: run it, accept a flaky result
//! ```
//!
//! Kernel ranges compare major.minor.patch of `uname -r`; anything after the numbers
//! ("+deb13-amd64", "-rc3-g1234") is ignored, so 6.18.0-rc3 counts as 6.18.0.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::glob;

/// How iomapfs served file data in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The kernel does file I/O through FUSE iomap mappings.
    Iomap,
    /// Classic FUSE: the server moves the bytes.
    Classic,
}

impl FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Mode> {
        match s {
            "iomap" => Ok(Mode::Iomap),
            "classic" => Ok(Mode::Classic),
            other => bail!("unknown mode {other:?} (expected iomap or classic)"),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Iomap => "iomap",
            Mode::Classic => "classic",
        })
    }
}

/// What an entry does with the tests it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The test is not run (reported `expunged`).
    #[default]
    Skip,
    /// The test runs; a `flaky` result (failed, then passed on a rerun) is accepted and
    /// does not fail the run. A test that fails every time still fails it.
    Flaky,
}

/// What an expunge entry's predicates are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `uname -r` of the kernel under test: "6.12.48+deb13-amd64", "6.18.0-rc3-g1234".
    pub kernel_release: &'a str,
    pub mode: Mode,
    /// The fstests section being run.
    pub section: &'a str,
}

/// One `[[expunge]]` table.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Test ids or globs.
    pub tests: Vec<String>,
    pub kind: Kind,
    pub reason: String,
    pub link: String,
    /// Range like ">=6.12, <6.15".
    pub kernel: Option<String>,
    pub mode: Option<Mode>,
    /// Empty means every section.
    pub sections: Vec<String>,
    /// The file the entry came from.
    pub file: PathBuf,
}

impl Entry {
    /// Do the entry's predicates hold in `ctx`? A kernel range never holds for a release
    /// without a version number, so an unknown kernel runs the test rather than hiding it.
    pub fn applies(&self, ctx: &Context) -> bool {
        let kernel_ok = match &self.kernel {
            None => true,
            Some(range) => match (
                KernelRange::parse(range),
                Version::from_release(ctx.kernel_release),
            ) {
                (Ok(range), Some(version)) => range.contains(version),
                _ => false,
            },
        };
        let mode_ok = self.mode.is_none_or(|m| m == ctx.mode);
        let section_ok = self.sections.is_empty() || self.sections.iter().any(|s| s == ctx.section);
        kernel_ok && mode_ok && section_ok
    }

    /// Does one of the entry's ids or globs name `test`?
    pub fn matches_test(&self, test: &str) -> bool {
        self.tests
            .iter()
            .any(|p| p == test || glob::matches(p, test))
    }
}

/// Every entry of an image's expunge files, in file-name then file order.
#[derive(Debug, Clone, Default)]
pub struct ExpungeList {
    pub entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    expunge: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    tests: Vec<String>,
    #[serde(default)]
    kind: Kind,
    reason: String,
    link: String,
    kernel: Option<String>,
    mode: Option<Mode>,
    #[serde(default)]
    sections: Vec<String>,
}

impl ExpungeList {
    /// Loads every `*.toml` in `dir`, sorted by name. A missing directory is an empty list.
    pub fn load_dir(dir: &Path) -> anyhow::Result<ExpungeList> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ExpungeList::default()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading expunge dir {}", dir.display()))
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("reading expunge dir {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut list = ExpungeList::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading expunge file {}", file.display()))?;
            list.entries
                .extend(ExpungeList::parse(&text, &file)?.entries);
        }
        Ok(list)
    }

    /// Parses one expunge file's text; `file` names it in errors and in each entry.
    pub fn parse(text: &str, file: &Path) -> anyhow::Result<ExpungeList> {
        let raw: RawFile = toml::from_str(text)
            .with_context(|| format!("expunge file {}: invalid", file.display()))?;
        let mut entries = Vec::new();
        for (i, raw) in raw.expunge.into_iter().enumerate() {
            let entry = validate(raw, file).with_context(|| {
                format!(
                    "expunge file {}: entry {} ([[expunge]] #{})",
                    file.display(),
                    i + 1,
                    i + 1
                )
            })?;
            entries.push(entry);
        }
        Ok(ExpungeList { entries })
    }

    /// The first entry of this kind that applies in `ctx` and names `test`.
    pub fn lookup(&self, test: &str, ctx: &Context, kind: Kind) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.kind == kind && e.matches_test(test) && e.applies(ctx))
    }
}

fn validate(raw: RawEntry, file: &Path) -> anyhow::Result<Entry> {
    let what = raw
        .tests
        .first()
        .map(String::as_str)
        .unwrap_or("(no tests)");
    if raw.tests.is_empty() {
        bail!("`tests` is empty");
    }
    for test in &raw.tests {
        let valid = test
            .split_once('/')
            .is_some_and(|(d, n)| !d.is_empty() && !n.is_empty() && !n.contains('/'));
        if !valid {
            bail!("test {test:?} is not a test id or glob like \"generic/001\"");
        }
    }
    if raw.reason.trim().is_empty() {
        bail!("{what}: `reason` is empty; say why the test is expunged");
    }
    let link = raw.link.trim();
    let has_host = |rest: &str| rest.split('/').next().is_some_and(|h| !h.is_empty());
    let link_ok = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"))
        .is_some_and(has_host);
    if !link_ok || link.contains(char::is_whitespace) {
        bail!("{what}: `link` {:?} is not an http(s) URL", raw.link);
    }
    if let Some(range) = &raw.kernel {
        KernelRange::parse(range)
            .with_context(|| format!("{what}: bad `kernel` range {range:?}"))?;
    }
    if raw.sections.iter().any(|s| s.trim().is_empty()) {
        bail!("{what}: `sections` has an empty name");
    }
    Ok(Entry {
        tests: raw.tests,
        kind: raw.kind,
        reason: raw.reason,
        link: raw.link,
        kernel: raw.kernel,
        mode: raw.mode,
        sections: raw.sections,
        file: file.to_path_buf(),
    })
}

/// major.minor.patch of a kernel release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u32, u32, u32);

impl Version {
    /// "6.12.48+deb13-amd64" -> 6.12.48, "6.18.0-rc3-g1234" -> 6.18.0, "6.18-rc3" -> 6.18.0.
    /// Needs at least major.minor.
    fn from_release(release: &str) -> Option<Version> {
        let numeric_end = release
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(release.len());
        let mut parts = release[..numeric_end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            None | Some("") => 0,
            Some(p) => p.parse().ok()?,
        };
        Some(Version(major, minor, patch))
    }

    /// A version as written in a range: "6", "6.12", "6.12.3"; missing parts are 0.
    fn from_range(text: &str) -> anyhow::Result<Version> {
        let mut nums = [0u32; 3];
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 3 {
            bail!("{text:?} has more than major.minor.patch");
        }
        for (slot, part) in nums.iter_mut().zip(&parts) {
            *slot = part
                .parse()
                .with_context(|| format!("{text:?} is not a version like 6.12 or 6.12.3"))?;
        }
        Ok(Version(nums[0], nums[1], nums[2]))
    }
}

/// Comma-separated comparisons that must all hold: ">=6.12, <6.16", "=6.12.48".
struct KernelRange(Vec<(Op, Version)>);

#[derive(Clone, Copy)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl KernelRange {
    fn parse(text: &str) -> anyhow::Result<KernelRange> {
        let mut comparisons = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (op, rest) = [
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("==", Op::Eq),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("=", Op::Eq),
            ]
            .iter()
            .find_map(|(sym, op)| part.strip_prefix(sym).map(|rest| (*op, rest)))
            .with_context(|| format!("{part:?} does not start with <, <=, >, >= or ="))?;
            comparisons.push((op, Version::from_range(rest.trim())?));
        }
        Ok(KernelRange(comparisons))
    }

    fn contains(&self, v: Version) -> bool {
        self.0.iter().all(|&(op, bound)| {
            let ord = v.cmp(&bound);
            match op {
                Op::Lt => ord == Ordering::Less,
                Op::Le => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                Op::Ge => ord != Ordering::Less,
                Op::Eq => ord == Ordering::Equal,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[expunge]]
tests = ["generic/475"]
reason = "needs dm-error, not in the guest kernel config"
link = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/tree/drivers/md/dm-flakey.c"
kernel = ">=6.12, <6.16"

[[expunge]]
tests = ["generic/6??", "generic/1*"]
reason = "classic mode only"
link = "http://example.org/bug/1"
mode = "classic"

[[expunge]]
tests = ["generic/013"]
reason = "1k sections only"
link = "https://example.org/bug/2"
sections = ["iomapfs_1k", "iomapfs-2k"]
"#;

    fn list() -> ExpungeList {
        ExpungeList::parse(FILE, Path::new("images/default/expunge/known.toml")).unwrap()
    }

    fn ctx(kernel_release: &str, mode: Mode, section: &str) -> Context<'static> {
        let kernel_release = Box::leak(kernel_release.to_string().into_boxed_str());
        let section = Box::leak(section.to_string().into_boxed_str());
        Context {
            kernel_release,
            mode,
            section,
        }
    }

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            ExpungeList::parse(text, Path::new("x/bad.toml")).unwrap_err()
        )
    }

    #[test]
    fn kernel_range_edges() {
        let e = &list().entries[0];
        let applies = |release| e.applies(&ctx(release, Mode::Iomap, "s"));
        assert!(applies("6.12.48+deb13-amd64"));
        assert!(applies("6.12.0"));
        assert!(applies("6.12"));
        assert!(applies("6.15.99-foo"));
        assert!(!applies("6.11.12"));
        assert!(!applies("6.16.0"));
        assert!(!applies("6.16.0-rc1")); // an rc counts as its release
        assert!(!applies("6.18.0-rc3-g1234"));
        assert!(!applies("7.0.0"));
        assert!(!applies("garbage")); // unknown kernel: run the test
        assert!(!applies(""));
    }

    #[test]
    fn single_comparisons() {
        let entry = |range: &str| Entry {
            tests: vec!["generic/001".into()],
            kind: Kind::Skip,
            reason: "r".into(),
            link: "https://x".into(),
            kernel: Some(range.into()),
            mode: None,
            sections: vec![],
            file: PathBuf::from("f"),
        };
        let holds = |range, release| entry(range).applies(&ctx(release, Mode::Classic, "s"));
        assert!(holds("=6.12.48", "6.12.48+deb13-amd64"));
        assert!(holds("==6.12.48", "6.12.48+deb13-amd64"));
        assert!(!holds("=6.12", "6.12.48+deb13-amd64"));
        assert!(holds(">6.12", "6.12.1"));
        assert!(!holds(">6.12", "6.12.0"));
        assert!(holds("<=6.18", "6.18.0-rc3-g1234"));
        assert!(holds(">=6.18", "6.18.0-rc3-g1234"));
        assert!(!holds("<6.18", "6.18.0-rc3-g1234"));
        assert!(holds("<6.18", "6.17.13"));
        assert!(holds(">=6", "6.0.0"));
        assert!(holds(" >= 6.1 ,< 6.2 ", "6.1.7"));
    }

    #[test]
    fn mode_and_sections_predicates() {
        let l = list();
        let (by_mode, by_section) = (&l.entries[1], &l.entries[2]);
        assert!(by_mode.applies(&ctx("6.1.0", Mode::Classic, "any")));
        assert!(!by_mode.applies(&ctx("6.1.0", Mode::Iomap, "any")));
        assert!(by_section.applies(&ctx("6.1.0", Mode::Iomap, "iomapfs_1k")));
        assert!(by_section.applies(&ctx("6.1.0", Mode::Iomap, "iomapfs-2k")));
        assert!(!by_section.applies(&ctx("6.1.0", Mode::Iomap, "iomapfs_4k")));
    }

    #[test]
    fn globs_and_lookup_order() {
        let l = list();
        assert!(l.entries[1].matches_test("generic/600"));
        assert!(l.entries[1].matches_test("generic/123"));
        assert!(!l.entries[1].matches_test("generic/6000"));
        assert!(!l.entries[1].matches_test("xfs/600"));
        let classic = ctx("6.14.2", Mode::Classic, "iomapfs_4k");
        assert_eq!(
            l.lookup("generic/475", &classic, Kind::Skip)
                .unwrap()
                .reason,
            l.entries[0].reason
        );
        assert_eq!(
            l.lookup("generic/613", &classic, Kind::Skip).unwrap().link,
            "http://example.org/bug/1"
        );
        assert!(l
            .lookup("generic/613", &ctx("6.14.2", Mode::Iomap, "x"), Kind::Skip)
            .is_none());
        assert!(l
            .lookup("generic/475", &ctx("6.16.1", Mode::Iomap, "x"), Kind::Skip)
            .is_none());
        assert!(l.lookup("generic/013", &classic, Kind::Skip).is_none());
        assert!(l
            .lookup(
                "generic/013",
                &ctx("6.1.0", Mode::Iomap, "iomapfs_1k"),
                Kind::Skip
            )
            .is_some());
        assert_eq!(
            l.entries[2].file,
            Path::new("images/default/expunge/known.toml")
        );
    }

    #[test]
    fn errors_name_file_entry_and_problem() {
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nlink = \"https://x.org\"\n");
        assert!(
            e.contains("x/bad.toml") && e.contains("missing field `reason`"),
            "{e}"
        );
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://x.org\"\n\n[[expunge]]\ntests = [\"generic/002\"]\nreason = \" \"\nlink = \"https://x.org\"\n");
        assert!(
            e.contains("[[expunge]] #2") && e.contains("`reason` is empty"),
            "{e}"
        );
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"\"\n");
        assert!(e.contains("is not an http(s) URL"), "{e}");
        let e =
            err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"ftp://x.org\"\n");
        assert!(e.contains("is not an http(s) URL"), "{e}");
        let e =
            err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://\"\n");
        assert!(e.contains("is not an http(s) URL"), "{e}");
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\n");
        assert!(e.contains("missing field `link`"), "{e}");
        for range in ["6.12", ">=6.x", ">=6.12.1.2", ">=", "~6.12", ">=6.12,"] {
            let e = err(&format!("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://x.org\"\nkernel = \"{range}\"\n"));
            assert!(e.contains("bad `kernel` range"), "{range}: {e}");
        }
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://x.org\"\nmode = \"fast\"\n");
        assert!(e.contains("unknown variant `fast`"), "{e}");
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://x.org\"\nkernels = \">=6.1\"\n");
        assert!(e.contains("unknown field `kernels`"), "{e}");
        let e = err("[other]\nx = 1\n");
        assert!(e.contains("unknown field `other`"), "{e}");
        let e = err("[[expunge]]\ntests = []\nreason = \"r\"\nlink = \"https://x.org\"\n");
        assert!(e.contains("`tests` is empty"), "{e}");
        let e = err("[[expunge]]\ntests = [\"001\"]\nreason = \"r\"\nlink = \"https://x.org\"\n");
        assert!(e.contains("not a test id"), "{e}");
        let e = err("[[expunge]\n");
        assert!(e.contains("x/bad.toml: invalid"), "{e}");
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ExpungeList::load_dir(&dir.path().join("missing"))
            .unwrap()
            .entries
            .is_empty());
        let entry = |t: &str| {
            format!("[[expunge]]\ntests = [\"{t}\"]\nreason = \"r\"\nlink = \"https://x.org\"\n")
        };
        std::fs::write(dir.path().join("b.toml"), entry("generic/002")).unwrap();
        std::fs::write(dir.path().join("a.toml"), entry("generic/001")).unwrap();
        std::fs::write(dir.path().join("notes.md"), "not toml").unwrap();
        std::fs::write(dir.path().join("empty.toml"), "").unwrap();
        let l = ExpungeList::load_dir(dir.path()).unwrap();
        let tests: Vec<&str> = l.entries.iter().map(|e| e.tests[0].as_str()).collect();
        assert_eq!(tests, ["generic/001", "generic/002"]);
        assert_eq!(l.entries[1].file, dir.path().join("b.toml"));
        std::fs::write(
            dir.path().join("c.toml"),
            "[[expunge]]\ntests = [\"generic/003\"]\n",
        )
        .unwrap();
        let e = format!("{:#}", ExpungeList::load_dir(dir.path()).unwrap_err());
        assert!(e.contains("c.toml"), "{e}");
    }

    #[test]
    fn flaky_entries_are_looked_up_apart_from_skips() {
        let text = "[[expunge]]\ntests = [\"generic/002\"]\nreason = \"races with writeback\"\nlink = \"https://example.org/bug/3\"\nkind = \"flaky\"\n\n[[expunge]]\ntests = [\"generic/00?\"]\nreason = \"r\"\nlink = \"https://x.org\"\nkind = \"skip\"\nsections = [\"other\"]\n";
        let l = ExpungeList::parse(text, Path::new("f.toml")).unwrap();
        let c = ctx("6.12.0", Mode::Iomap, "s");
        assert_eq!(l.entries[0].kind, Kind::Flaky);
        // A flaky entry does not keep the test from running ...
        assert!(l.lookup("generic/002", &c, Kind::Skip).is_none());
        // ... it accepts its flaky result, with the reason and link.
        let e = l.lookup("generic/002", &c, Kind::Flaky).unwrap();
        assert_eq!(e.link, "https://example.org/bug/3");
        assert!(l.lookup("generic/003", &c, Kind::Flaky).is_none());
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://x.org\"\nkind = \"sometimes\"\n");
        assert!(e.contains("unknown variant `sometimes`"), "{e}");
        // Flaky entries need a reason and a link like any other.
        let e = err("[[expunge]]\ntests = [\"generic/001\"]\nreason = \"\"\nlink = \"https://x.org\"\nkind = \"flaky\"\n");
        assert!(e.contains("`reason` is empty"), "{e}");
    }

    #[test]
    fn mode_parses_and_displays() {
        assert_eq!("iomap".parse::<Mode>().unwrap(), Mode::Iomap);
        assert_eq!(Mode::Classic.to_string(), "classic");
        assert!("IOMAP".parse::<Mode>().is_err());
    }
}
