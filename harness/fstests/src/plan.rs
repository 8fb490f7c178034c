//! `vm-test --fstests`: fstests from the user's tree, built in a chroot, run over iomapfs
//! in the guest one `check` per test, and its own results (xunit) turned into verdicts.
//!
//! The parsing, selection, expunge and baseline rules are in the `fstests` crate; this
//! module is the orchestration around a vm-test run.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Catalog, ExpungeList, Kind, Mode, Scheme, Section, Selection};
use anyhow::{Context as _, Result};
use events::PlanTest;
use report::{TestResult, Verdict};
use serde::Deserialize;

pub use crate::build::{Built, Source};
use plumbing::error::usage;

/// Upstream fstests and the commit the harness was last checked against.
pub const DEFAULT_GIT: &str = "https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git";

/// fstests flags of vm-test.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FstestsArgs {
    /// Run fstests from this checkout (built in a chroot, cached by its revision).
    #[arg(long, value_name = "DIR", conflicts_with = "fstests_git")]
    pub fstests_src: Option<PathBuf>,
    /// Run fstests fetched from this git URL (default URL and commit: harness.toml's
    /// [profiles.NAME.fstests]).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub fstests_git: Option<String>,
    /// Branch, tag or commit for --fstests-git.
    #[arg(long, value_name = "REF")]
    pub fstests_ref: Option<String>,
    /// What to run, in `check`'s words: '-g quick', '-g auto -x dangerous',
    /// 'generic/001 generic/013', 'generic/00?'. Default: '-g quick'.
    #[arg(long = "fstests", value_name = "ARGS", allow_hyphen_values = true)]
    pub selection: Option<String>,
    /// local.config section to run (repeatable): iomapfs-4k, iomapfs-1k, `all` (both), or
    /// ext4-4k, the control: the same tests on the kernel's ext4, expunges not applied.
    #[arg(long = "fstests-section", value_name = "NAME")]
    pub sections: Vec<String>,
    /// How fstests names the filesystem: fuseblk.ext4 (default), fuse.ext4 (the FUSE
    /// iomap development trees' styles) or fuse-subtype (upstream FSTYP=fuse
    /// FUSE_SUBTYP=.iomapfs); `vm-test --virtiofs` uses virtiofs (upstream FSTYP=virtiofs
    /// on the tags `test` and `scratch`).
    #[arg(
        long = "fstests-scheme",
        value_name = "SCHEME",
        default_value = "fuseblk.ext4"
    )]
    pub scheme: String,
    /// Rerun a failing test up to N more times; a later pass labels it flaky (like check -L).
    #[arg(long = "fstests-loops", value_name = "N", default_value_t = 1)]
    pub loops: u32,
    /// Tests per `check` run: `all` (the default: one `check` for each section's whole
    /// list) or N. check's own start costs ~40 s under TCG, so `1` (every test in its own
    /// `check`) is slowest. Isolation holds either way: a test that crashes or hangs the
    /// guest gets that verdict, and after a reboot the rest of its list runs on.
    #[arg(long = "fstests-batch", value_name = "N|all", default_value = "all", value_parser = parse_batch)]
    pub batch: usize,
    /// Run only the K-th of N equal slices of the expanded test list (1-based), e.g. 2/4.
    #[arg(long = "fstests-shard", value_name = "K/N")]
    pub shard: Option<String>,
    /// Compare with an earlier results.json: the run fails on new failures and on lost
    /// coverage (tests that passed there and did not run now), not on known failures.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub baseline: Option<PathBuf>,
    /// With --baseline: tests that passed in the baseline and did not run now do not fail
    /// the run; the run then cannot become the next baseline (results.json says so).
    #[arg(long, requires = "baseline")]
    pub accept_coverage_loss: bool,
    /// Accept a flaky result (failed, then passed on a rerun) instead of failing the run:
    /// alone for every test, or with test ids or globs (repeatable), e.g.
    /// --accept-flaky=generic/002. Known flaky tests belong in an expunge file with
    /// `kind = "flaky"`, a reason and a link (harness/fstests/EXPUNGE.md).
    #[arg(long = "accept-flaky", value_name = "TEST", num_args = 0..=1, require_equals = true, default_missing_value = ALL_TESTS)]
    pub accept_flaky: Vec<String>,
}

/// `--fstests-batch`: a positive number, or `all` (0: the whole list).
fn parse_batch(s: &str) -> Result<usize, String> {
    match s {
        "all" => Ok(0),
        _ => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("expected a positive number or `all`, got `{s}`")),
        },
    }
}

/// `--accept-flaky` without a value: every test.
const ALL_TESTS: &str = "*";

/// `[profiles.NAME.fstests]` in harness.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FstestsProfile {
    pub git: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

impl FstestsArgs {
    pub fn enabled(&self) -> bool {
        self.fstests_src.is_some() || self.fstests_git.is_some() || self.selection.is_some()
    }

    /// The source to build, from the flags and the profile.
    pub fn source(&self, profile: &FstestsProfile) -> Result<Source> {
        if let Some(dir) = &self.fstests_src {
            if self.fstests_ref.is_some() {
                return Err(usage(
                    "--fstests-ref goes with --fstests-git, not --fstests-src",
                ));
            }
            return Ok(Source::Dir(dir.clone()));
        }
        let url = self
            .fstests_git
            .clone()
            .filter(|u| !u.is_empty())
            .or_else(|| profile.git.clone());
        match (self.fstests_git.is_some(), url) {
            (true, url) => Ok(Source::Git {
                url: url.unwrap_or_else(|| DEFAULT_GIT.into()),
                git_ref: self
                    .fstests_ref
                    .clone()
                    .or_else(|| profile.git_ref.clone())
                    .unwrap_or_else(|| "master".into()),
            }),
            (false, _) => Err(usage(
                "--fstests needs a tree: --fstests-src DIR (a checkout of \
                 https://git.kernel.org/pub/scm/fs/xfs/xfstests-dev.git) or --fstests-git [URL]",
            )),
        }
    }

    /// Why a flaky result of the test `id` is accepted on the command line, if it is.
    pub fn accepts_flaky(&self, id: &str) -> Option<String> {
        self.accept_flaky
            .iter()
            .find(|p| *p == ALL_TESTS || crate::names_test(p, id))
            .map(|p| {
                if p == ALL_TESTS {
                    "--accept-flaky".to_string()
                } else {
                    format!("--accept-flaky={p}")
                }
            })
    }

    pub fn selection(&self) -> Result<Selection> {
        let text = self.selection.as_deref().unwrap_or("-g quick");
        Selection::parse(text).map_err(|e| usage(format!("--fstests '{text}': {e:#}")))
    }

    pub fn scheme(&self) -> Result<Scheme> {
        self.scheme
            .parse()
            .map_err(|e: anyhow::Error| usage(format!("--fstests-scheme: {e:#}")))
    }

    /// (k, n) from "K/N", 1 <= k <= n.
    pub fn shard(&self) -> Result<Option<(usize, usize)>> {
        let Some(s) = &self.shard else {
            return Ok(None);
        };
        let bad = || {
            usage(format!(
                "--fstests-shard expects K/N with 1 <= K <= N, got `{s}`"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || k > n {
            return Err(bad());
        }
        Ok(Some((k, n)))
    }
}

/// The control section: the same tests on the kernel's own ext4, on the same disks in the
/// same VM, so a failure on iomapfs is known to be iomapfs's or the environment's.
pub const CONTROL_SECTION: &str = "ext4-4k";

/// The configurations the harness knows: iomapfs on ext4 with 4 KiB and 1 KiB blocks,
/// mounted in `mode` (`iomap=on` or `iomap=off`: a server that cannot use the mode the
/// expunges were chosen for fails the mount instead of running the other mode silently),
/// then the control, kernel ext4 with 4 KiB blocks.
pub fn known_sections(scheme: Scheme, mode: Mode) -> Vec<Section> {
    if scheme == Scheme::Virtiofs {
        // The host formats the images and serves them (classic FUSE): one configuration,
        // named by its tags, no options.
        return vec![Section {
            name: "virtiofs".into(),
            scheme,
            test_dev: "test".into(),
            test_dir: "/mnt/test".into(),
            scratch_dev: "scratch".into(),
            scratch_mnt: "/mnt/scratch".into(),
            mkfs_options: String::new(),
            mount_options: String::new(),
            extra: vec![],
        }];
    }
    let iomap = match mode {
        Mode::Iomap => "iomap=on",
        Mode::Classic => "iomap=off",
    };
    let section = |name: &str, scheme, mkfs: &str, mount_options: String| Section {
        name: name.into(),
        scheme,
        test_dev: "/dev/disk/by-id/virtio-test".into(),
        test_dir: "/mnt/test".into(),
        scratch_dev: "/dev/disk/by-id/virtio-scratch".into(),
        scratch_mnt: "/mnt/scratch".into(),
        mkfs_options: mkfs.into(),
        mount_options,
        extra: vec![],
    };
    // preen: a filesystem a crash test left unclean is repaired by e2fsck -p at the next
    // mount (iomapfs keeps no journal, like ext2) rather than refused. allow_other and
    // default_permissions: a multi-user filesystem like ext4, where fstests' fsgqa users
    // get in and the kernel checks their permissions (without them FUSE lets only the
    // mounting user in and checks nothing). Upstream FSTYP=fuse checks that the mount's
    // type reads exactly `fuse`.
    let common = format!("preen,{iomap},allow_other,default_permissions");
    let iomapfs_options = if scheme == Scheme::FuseSubtype {
        format!("-o {common},flavor=fuse,nosubtype")
    } else {
        format!("-o {common}")
    };
    vec![
        section("iomapfs-4k", scheme, "-b 4096", iomapfs_options.clone()),
        section("iomapfs-1k", scheme, "-b 1024", iomapfs_options),
        // iomapfs's mkfs wrappers turn inline_data off; so does the control. Its mount
        // options are ext4's defaults, written out: an empty value would inherit the
        // previous section's.
        section(
            CONTROL_SECTION,
            Scheme::KernelExt4,
            "-b 4096 -O ^inline_data",
            "-o acl,user_xattr".into(),
        ),
    ]
}

/// The sections the flags select (default: the first, iomapfs-4k; `all`: every iomapfs
/// section; the control only by its name).
pub fn selected_sections(args: &FstestsArgs, scheme: Scheme) -> Result<Vec<Section>> {
    let known = known_sections(scheme, Mode::Classic);
    if args.sections.is_empty() {
        return Ok(known.into_iter().take(1).collect());
    }
    if args.sections.iter().any(|s| s == "all") {
        return Ok(known
            .into_iter()
            .filter(|s| s.name != CONTROL_SECTION)
            .collect());
    }
    args.sections
        .iter()
        .map(|name| {
            known
                .iter()
                .find(|s| &s.name == name)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<_> = known.iter().map(|s| s.name.as_str()).collect();
                    usage(format!(
                        "unknown fstests section `{name}` (known: {}, all)",
                        names.join(", ")
                    ))
                })
        })
        .collect()
}

/// One plan test: a `check` run of one or more fstests tests of one section.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub name: String,
    pub section: String,
    pub ids: Vec<String>,
}

/// What the host decided before the run: the tests to run and those expunged. Saved in
/// the run's host state directory whenever its batches change, for `vm-test --resume`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FstestsPlan {
    pub tests: Vec<PlanTest>,
    pub batches: Vec<Batch>,
    pub expunged: Vec<TestResult>,
    pub local_config: String,
    pub sections: Vec<String>,
    /// Tests whose flaky result does not fail the run, and why (an expunge entry of kind
    /// `flaky`, or `--accept-flaky`), by test name.
    pub flaky_ok: BTreeMap<String, String>,
    /// Tests of the selection that other shards run (not missing from this one).
    pub other_shards: BTreeSet<String>,
    /// `--fstests-loops`, for the batches that continue an interrupted one.
    pub loops: u32,
    /// How long each test may run (test id -> deadline).
    pub deadlines: BTreeMap<String, Duration>,
}

impl FstestsPlan {
    /// Add a batch and its plan test: one `check` run of its tests, then the reruns.
    fn add_batch(&mut self, batch: Batch) {
        // Each attempt gets the sum of the tests' deadlines.
        let deadline: u64 = batch
            .ids
            .iter()
            .map(|id| self.deadlines.get(id).map_or(0, Duration::as_secs))
            .sum();
        self.tests.push(PlanTest {
            name: batch.name.clone(),
            command: format!(
                "{}\nfstests_run {} {} {}",
                suites::FSTESTS_PRELUDE,
                batch.section,
                self.loops,
                batch.ids.join(" ")
            ),
            timeout_s: deadline.saturating_mul(1 + u64::from(self.loops)),
        });
        self.batches.push(batch);
    }
}

/// The supervisor's view of a batch: each fstests test is a step with its own deadline,
/// and a crash or hang in one continues with the tests after it in a new batch.
impl vm::Steps for FstestsPlan {
    fn deadline(&self, test: &str, step: &str) -> Option<Duration> {
        let b = self.batches.iter().find(|b| b.name == test)?;
        // A batch of one has the plan test's own timeout.
        (b.ids.len() > 1 && b.ids.iter().any(|id| id == step))
            .then(|| self.deadlines.get(step).copied())
            .flatten()
    }

    fn continue_after(
        &mut self,
        test: &str,
        step: Option<&str>,
        dir: &vm::RunDir,
    ) -> Vec<PlanTest> {
        let Some(i) = self.batches.iter().position(|b| b.name == test) else {
            return vec![];
        };
        let b = &self.batches[i];
        // The test that took the guest down: the one the console announced last, else the
        // first without a result in the first attempt's report. Once reruns started, the
        // first attempt ran them all. Sets, not positions: a `check` without
        // --exact-order runs its list in its own order.
        let Some(done) = crate::collect::first_attempt_reported(&dir.path, b) else {
            return vec![];
        };
        let Some(down) = step
            .filter(|s| b.ids.iter().any(|id| id == s))
            .map(str::to_string)
            .or_else(|| b.ids.iter().find(|id| !done.contains(*id)).cloned())
        else {
            return vec![];
        };
        let (kept, rest): (Vec<String>, Vec<String>) = b
            .ids
            .iter()
            .cloned()
            .partition(|id| done.contains(id) || *id == down);
        if rest.is_empty() {
            return vec![];
        }
        // The interrupted batch keeps the tests it finished and the one that went down.
        self.split(i, kept, rest, dir)
    }

    /// The host stopped the run during batch `test`: it keeps the tests fstests reported,
    /// and the rest (the one that was running included) continue in a new batch.
    fn resume(&mut self, test: &str, dir: &vm::RunDir) -> Option<Vec<PlanTest>> {
        let i = self.batches.iter().position(|b| b.name == test)?;
        let b = &self.batches[i];
        // Once reruns started, the first attempt finished them all.
        let done = crate::collect::first_attempt_reported(&dir.path, b)
            .unwrap_or_else(|| b.ids.iter().cloned().collect());
        if done.is_empty() {
            return None;
        }
        let (kept, rest): (Vec<String>, Vec<String>) =
            b.ids.iter().cloned().partition(|id| done.contains(id));
        Some(self.split(i, kept, rest, dir))
    }
}

impl FstestsPlan {
    /// Batch `i` keeps `kept`; `rest` becomes the next part of it (batch-001 continues as
    /// batch-001.2, batch-001.2 as batch-001.3), returned as its plan test. The plan is
    /// saved for a later resume.
    fn split(
        &mut self,
        i: usize,
        kept: Vec<String>,
        rest: Vec<String>,
        dir: &vm::RunDir,
    ) -> Vec<PlanTest> {
        let b = &self.batches[i];
        let (base, mut part) = b
            .name
            .rsplit_once('.')
            .and_then(|(base, n)| Some((base.to_string(), n.parse::<u32>().ok()?)))
            .unwrap_or_else(|| (b.name.clone(), 1));
        let section = b.section.clone();
        self.batches[i].ids = kept;
        if rest.is_empty() {
            self.save_or_warn(dir);
            return vec![];
        }
        let name = loop {
            part += 1;
            let name = format!("{base}.{part}");
            if !self.batches.iter().any(|b| b.name == name) {
                break name;
            }
        };
        self.add_batch(Batch {
            name,
            section,
            ids: rest,
        });
        self.save_or_warn(dir);
        self.tests.last().cloned().into_iter().collect()
    }

    fn state_file(dir: &vm::RunDir) -> std::path::PathBuf {
        dir.host_state_dir().join("fstests-plan.json")
    }

    /// Save the plan where `--resume` finds it (outside the guest's share).
    pub fn save(&self, dir: &vm::RunDir) -> Result<()> {
        let path = Self::state_file(dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("saving the fstests plan {}", path.display()))?;
        Ok(())
    }

    fn save_or_warn(&self, dir: &vm::RunDir) {
        if let Err(e) = self.save(dir) {
            eprintln!("warning: {e:#} (a --resume of this run would plan from scratch)");
        }
    }

    /// The plan a run saved, if it saved one.
    pub fn load(dir: &vm::RunDir) -> Result<Option<FstestsPlan>> {
        let path = Self::state_file(dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .with_context(|| format!("reading the fstests plan {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Guest test name of one fstests test in one section.
pub fn test_name(section: &str, test: &str) -> String {
    format!("fstests/{section}/{test}")
}

/// Expected durations remembered from earlier runs (test id -> seconds).
pub fn load_durations(cache: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(cache.join("fstests").join("durations.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Remember the longest duration seen for each completed test, for the next deadlines.
pub fn save_durations(cache: &Path, results: &[TestResult]) -> Result<()> {
    let mut d = load_durations(cache);
    add_durations(&mut d, results);
    let dir = cache.join("fstests");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("durations.json"),
        serde_json::to_string_pretty(&d)?,
    )?;
    Ok(())
}

/// Adds the completed tests of `results` to `d`, keeping the longer of two durations.
pub fn add_durations(d: &mut BTreeMap<String, u64>, results: &[TestResult]) {
    for t in results {
        let Some(id) = t
            .name
            .strip_prefix("fstests/")
            .and_then(|r| r.split_once('/'))
            .map(|(_, id)| id)
        else {
            continue;
        };
        if matches!(
            t.verdict,
            Verdict::Passed | Verdict::Failed | Verdict::Flaky | Verdict::Skipped
        ) {
            let s = t.duration_ms.div_ceil(1000);
            let e = d.entry(id.to_string()).or_insert(0);
            *e = (*e).max(s);
        }
    }
}

/// Expand the selection against the built tree, drop expunged tests, and make one plan
/// test per (section, test).
pub fn plan(
    args: &FstestsArgs,
    tree: &Path,
    expunge_dir: &Path,
    kernel_release: &str,
    mode: Mode,
    durations: &BTreeMap<String, u64>,
    timeout: Option<u64>,
) -> Result<FstestsPlan> {
    let scheme = args.scheme()?;
    let sections = selected_sections(args, scheme)?;
    let catalog = Catalog::load(tree)
        .with_context(|| format!("reading the group lists of {}", tree.display()))?;
    let mut dirs = vec!["generic"];
    // check also runs the tests of a directory named like FSTYP, if the tree has one.
    if tree.join("tests").join(scheme.fstyp()).is_dir() {
        dirs.push(scheme.fstyp());
    }
    let mut ids = catalog
        .expand(&args.selection()?, &dirs)
        .map_err(|e| usage(format!("--fstests: {e:#}")))?;
    let mut other_shards = vec![];
    if let Some((k, n)) = args.shard()? {
        // Round robin: neighbouring tests (similar cost) spread over the shards.
        let (mine, others): (Vec<_>, Vec<_>) = ids
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % n == k - 1);
        ids = mine.into_iter().map(|(_, t)| t).collect();
        other_shards = others.into_iter().map(|(_, t)| t).collect();
    }
    let expunges = ExpungeList::load_dir(expunge_dir)?;
    let local_config = crate::try_render_local_config(&known_sections(scheme, mode))?;
    let mut plan = FstestsPlan {
        tests: vec![],
        batches: vec![],
        expunged: vec![],
        local_config,
        sections: sections.iter().map(|s| s.name.clone()).collect(),
        flaky_ok: BTreeMap::new(),
        other_shards: sections
            .iter()
            .flat_map(|s| other_shards.iter().map(|id| test_name(&s.name, id)))
            .collect(),
        loops: args.loops,
        deadlines: ids
            .iter()
            .map(|id| {
                // vm-test --timeout: every test's deadline, for a list known to be slow.
                let d = timeout.map_or_else(
                    || crate::deadline(durations.get(id).copied()),
                    Duration::from_secs,
                );
                (id.clone(), d)
            })
            .collect(),
    };
    for section in &sections {
        let ctx = crate::Context {
            kernel_release,
            mode,
            section: &section.name,
        };
        let mut to_run = vec![];
        for id in &ids {
            let name = test_name(&section.name, id);
            // The name becomes a path in the run directory: refuse odd ids from the tree.
            events::check_test_name(&name).map_err(|e| usage(format!("fstests test {id}: {e}")))?;
            // The control runs what was selected: its point is to run the tests iomapfs
            // fails, expunged ones included.
            let expunged = match section.name.as_str() {
                CONTROL_SECTION => None,
                _ => expunges.lookup(id, &ctx, Kind::Skip),
            };
            match expunged {
                Some(e) => {
                    let mut t = TestResult::new(name, Verdict::Expunged);
                    t.reason = Some(format!("{} ({}; {})", e.reason, e.link, e.file.display()));
                    plan.expunged.push(t);
                }
                None => {
                    let why = match expunges.lookup(id, &ctx, Kind::Flaky) {
                        Some(e) => Some(format!(
                            "known flaky: {} ({}; {})",
                            e.reason,
                            e.link,
                            e.file.display()
                        )),
                        None => args.accepts_flaky(id),
                    };
                    if let Some(why) = why {
                        plan.flaky_ok.insert(name, why);
                    }
                    to_run.push(id.clone());
                }
            }
        }
        // 0: the whole list in one `check`.
        let size = if args.batch == 0 {
            to_run.len().max(1)
        } else {
            args.batch
        };
        for (k, chunk) in to_run.chunks(size).enumerate() {
            let name = if size == 1 {
                test_name(&section.name, &chunk[0])
            } else {
                format!("fstests/{}/batch-{:03}", section.name, k + 1)
            };
            plan.add_batch(Batch {
                name,
                section: section.name.clone(),
                ids: chunk.to_vec(),
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree with fstests' real generic group list (633 quick tests).
    fn tree_with_generic_groups() -> tempfile::TempDir {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/group-lists");
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("tests/generic")).unwrap();
        std::fs::copy(
            fx.join("generic/group.list"),
            tree.path().join("tests/generic/group.list"),
        )
        .unwrap();
        tree
    }

    #[test]
    fn durations_come_from_completed_tests_and_keep_the_longest() {
        let result = |name: &str, verdict, secs: u64| TestResult {
            duration_ms: (secs * 1000).saturating_sub(1),
            ..TestResult::new(name, verdict)
        };
        let mut d = BTreeMap::from([("generic/001".to_string(), 500)]);
        add_durations(
            &mut d,
            &[
                result("fstests/iomapfs-4k/generic/069", Verdict::Passed, 3440),
                result("fstests/iomapfs-4k/generic/001", Verdict::Passed, 95),
                result("fstests/iomapfs-4k/generic/002", Verdict::NotRun, 0),
                result("fstests/iomapfs-4k/generic/003", Verdict::Hung, 900),
                result("smoke/mount", Verdict::Passed, 3),
            ],
        );
        let want = BTreeMap::from([
            ("generic/001".to_string(), 500),
            ("generic/069".to_string(), 3440),
        ]);
        assert_eq!(
            d, want,
            "a hung test's deadline says nothing of its duration"
        );
    }

    #[test]
    fn virtiofs_has_one_section_on_the_tags() {
        let s = known_sections(Scheme::Virtiofs, Mode::Iomap);
        assert_eq!(s.len(), 1);
        let config = crate::try_render_local_config(&s).unwrap();
        for line in [
            "[virtiofs]",
            "FSTYP=\"virtiofs\"",
            "TEST_DEV=\"test\"",
            "SCRATCH_DEV=\"scratch\"",
        ] {
            assert!(config.lines().any(|l| l == line), "{line}: {config}");
        }
        assert!(!config.contains("iomap="), "virtio-fs is classic: {config}");
    }

    #[test]
    fn shards_and_sections_are_checked() {
        let mut a = FstestsArgs {
            shard: Some("2/4".into()),
            ..Default::default()
        };
        assert_eq!(a.shard().unwrap(), Some((2, 4)));
        for bad in ["0/4", "5/4", "x", "1/0"] {
            a.shard = Some(bad.into());
            assert_eq!(
                plumbing::error::exit_code(&a.shard().unwrap_err()),
                plumbing::error::EXIT_USAGE,
                "{bad}"
            );
        }
        let s = selected_sections(&FstestsArgs::default(), Scheme::FuseblkExt4).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "iomapfs-4k");
        let all = FstestsArgs {
            sections: vec!["all".into()],
            ..Default::default()
        };
        assert_eq!(selected_sections(&all, Scheme::FuseExt4).unwrap().len(), 2);
        let bad = FstestsArgs {
            sections: vec!["xfs".into()],
            ..Default::default()
        };
        assert!(
            format!("{}", selected_sections(&bad, Scheme::FuseExt4).unwrap_err())
                .contains("iomapfs-1k")
        );
    }

    /// The control is kernel ext4, only by name, and runs expunged tests too.
    #[test]
    fn the_control_section_is_kernel_ext4_and_ignores_expunges() {
        let control = FstestsArgs {
            sections: vec![CONTROL_SECTION.into()],
            selection: Some("generic/001 generic/002".into()),
            scheme: "fuseblk.ext4".into(),
            ..Default::default()
        };
        let s = selected_sections(&control, Scheme::FuseblkExt4).unwrap();
        assert_eq!((s.len(), s[0].scheme.fstyp()), (1, "ext4"));
        let tree = tree_with_generic_groups();
        let expunge = tempfile::tempdir().unwrap();
        std::fs::write(
            expunge.path().join("x.toml"),
            "[[expunge]]\ntests = [\"generic/001\"]\nreason = \"r\"\nlink = \"https://example.org/x\"\n",
        )
        .unwrap();
        let args = |sections: &str| FstestsArgs {
            sections: vec![sections.into()],
            ..control.clone()
        };
        let p = |a: &FstestsArgs| {
            plan(
                a,
                tree.path(),
                expunge.path(),
                "6.12.117",
                Mode::Classic,
                &BTreeMap::new(),
                None,
            )
            .unwrap()
        };
        let on_ext4 = p(&args(CONTROL_SECTION));
        assert!(on_ext4.expunged.is_empty());
        assert_eq!(on_ext4.batches[0].ids, ["generic/001", "generic/002"]);
        assert!(on_ext4.local_config.contains("[ext4-4k]\nFSTYP=\"ext4\""));
        let on_iomapfs = p(&args("iomapfs-4k"));
        assert_eq!(on_iomapfs.expunged.len(), 1);
    }

    /// The real generic group list (633 quick tests), an expunge file, a shard, batches.
    #[test]
    fn the_plan_expands_expunges_shards_and_batches() {
        let tree = tree_with_generic_groups();
        let expunge = tempfile::tempdir().unwrap();
        std::fs::write(
            expunge.path().join("iomapfs.toml"),
            "[[expunge]]\ntests = [\"generic/001\", \"generic/00[2-3]\"]\nreason = \"r\"\nlink = \"https://example.org/x\"\nmode = \"classic\"\n\n[[expunge]]\ntests = [\"generic/004\"]\nkind = \"flaky\"\nreason = \"races\"\nlink = \"https://example.org/y\"\n",
        )
        .unwrap();
        let args = FstestsArgs {
            selection: Some("-g quick".into()),
            batch: 10,
            loops: 1,
            scheme: "fuseblk.ext4".into(),
            ..Default::default()
        };
        let durations = BTreeMap::from([("generic/001".to_string(), 5)]);
        let p = plan(
            &args,
            tree.path(),
            expunge.path(),
            "6.12.117",
            Mode::Classic,
            &durations,
            None,
        )
        .unwrap();
        let planned: usize = p.batches.iter().map(|b| b.ids.len()).sum();
        assert_eq!(planned + p.expunged.len(), 633);
        assert_eq!(
            p.expunged
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            [
                "fstests/iomapfs-4k/generic/001",
                "fstests/iomapfs-4k/generic/002",
                "fstests/iomapfs-4k/generic/003"
            ]
        );
        assert!(p.expunged[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("https://example.org/x"));
        assert_eq!(p.batches.len(), planned.div_ceil(10));
        assert_eq!(p.tests[0].name, "fstests/iomapfs-4k/batch-001");
        assert!(p.tests[0].command.ends_with(&format!(
            "fstests_run iomapfs-4k 1 {}",
            p.batches[0].ids.join(" ")
        )));
        assert!(
            p.local_config.contains("[iomapfs-1k]")
                && p.local_config.contains("FSTYP=\"fuseblk.ext4\"")
        );
        assert!(
            p.local_config
                .contains("MOUNT_OPTIONS=\"-o preen,iomap=off,allow_other,default_permissions\""),
            "classic mode mounts with iomap=off: {}",
            p.local_config
        );
        // In iomap mode the classic-only entry does not apply; shard 2/4 takes every 4th test.
        let sharded = FstestsArgs {
            shard: Some("2/4".into()),
            batch: 1,
            ..args.clone()
        };
        let q = plan(
            &sharded,
            tree.path(),
            expunge.path(),
            "6.12.117",
            Mode::Iomap,
            &durations,
            None,
        )
        .unwrap();
        assert!(q.expunged.is_empty());
        assert!(
            q.local_config
                .contains("MOUNT_OPTIONS=\"-o preen,iomap=on,allow_other,default_permissions\""),
            "iomap mode mounts with iomap=on, so a fallback fails the mount: {}",
            q.local_config
        );
        assert_eq!(q.tests.len(), (0..633).filter(|i| i % 4 == 1).count());
        assert_eq!(q.tests[0].name, "fstests/iomapfs-4k/generic/002");
        // The other shards' tests are known, so a baseline does not call them missing.
        assert_eq!(q.other_shards.len() + q.tests.len(), 633);
        assert!(q.other_shards.contains("fstests/iomapfs-4k/generic/001"));
        assert!(!q.other_shards.contains("fstests/iomapfs-4k/generic/002"));
        assert!(p.other_shards.is_empty());
    }

    fn parse(argv: &[&str]) -> Result<FstestsArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: FstestsArgs,
        }
        let argv = std::iter::once("vm-test").chain(argv.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.a)
    }

    /// By default one `check` runs the whole list; each test is a step with its deadline,
    /// and a crash continues with the tests after the one that went down.
    #[test]
    fn one_check_for_the_list_continues_after_a_crash() {
        use vm::Steps as _;
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let tree = tree_with_generic_groups();
        let expunge = tempfile::tempdir().unwrap();
        let args = parse(&[
            "--fstests",
            "generic/001 generic/002 generic/005 generic/006",
        ])
        .unwrap();
        let durations = BTreeMap::from([("generic/002".to_string(), 10)]);
        let mut p = plan(
            &args,
            tree.path(),
            expunge.path(),
            "6.12.0",
            Mode::Classic,
            &durations,
            None,
        )
        .unwrap();
        let names: Vec<&str> = p.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fstests/iomapfs-4k/batch-001"]);
        assert_eq!(p.batches[0].ids.len(), 4);
        // 10 s remembered: max(120, 10 * 3 + 60); unknown: 300 s (the supervisor scales both).
        let b1 = "fstests/iomapfs-4k/batch-001";
        assert_eq!(
            p.deadline(b1, "generic/002"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            p.deadline(b1, "generic/005"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(p.deadline(b1, "generic/999"), None);
        assert_eq!(
            p.tests[0].timeout_s,
            (120 + 3 * 300) * 2,
            "sum of deadlines, per attempt"
        );

        let runs = tempfile::tempdir().unwrap();
        let dir = vm::RunDir::create(runs.path()).unwrap();
        let report = dir.path.join(format!("tests/{b1}/attempt-0/iomapfs-4k"));
        std::fs::create_dir_all(&report).unwrap();
        std::fs::copy(fx.join("interrupted/result.xml"), report.join("result.xml")).unwrap();
        // No step seen: the first test without a result (generic/002) went down.
        let more = p.continue_after(b1, None, &dir);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].name, "fstests/iomapfs-4k/batch-001.2");
        assert!(more[0]
            .command
            .ends_with("fstests_run iomapfs-4k 1 generic/005 generic/006"));
        assert_eq!(p.batches[0].ids, ["generic/001", "generic/002"]);
        // The console named the step: that one went down; the continuation continues.
        let more = p.continue_after("fstests/iomapfs-4k/batch-001.2", Some("generic/005"), &dir);
        assert_eq!(more[0].name, "fstests/iomapfs-4k/batch-001.3");
        assert_eq!(p.batches[2].ids, ["generic/006"]);
        // check ran its own order (no --exact-order): 005 went down after only 001 had
        // finished, so 002 and 006 are what is left, whatever their place in the list.
        let mut q = plan(
            &args,
            tree.path(),
            expunge.path(),
            "6.12.0",
            Mode::Classic,
            &durations,
            None,
        )
        .unwrap();
        let more = q.continue_after(b1, Some("generic/005"), &dir);
        assert!(more[0]
            .command
            .ends_with("fstests_run iomapfs-4k 1 generic/002 generic/006"));
        assert_eq!(q.batches[0].ids, ["generic/001", "generic/005"]);
        // Nothing after the last test, and nothing once reruns started.
        assert!(p
            .continue_after("fstests/iomapfs-4k/batch-001.3", Some("generic/006"), &dir)
            .is_empty());
        std::fs::create_dir_all(dir.path.join(format!("tests/{b1}/attempt-1"))).unwrap();
        p.batches[0].ids = ["generic/001", "generic/002", "generic/005"]
            .map(String::from)
            .to_vec();
        assert!(p.continue_after(b1, Some("generic/002"), &dir).is_empty());
        assert!(p
            .continue_after("fstests/iomapfs-4k/no-such", None, &dir)
            .is_empty());
        // One test per `check` on request, and `all` by name.
        assert_eq!(parse(&["--fstests-batch", "1"]).unwrap().batch, 1);
        assert_eq!(parse(&["--fstests-batch", "all"]).unwrap().batch, 0);
        for bad in ["0", "-1", "some"] {
            assert!(parse(&["--fstests-batch", bad]).is_err(), "{bad}");
        }
    }

    /// A flaky entry runs its test and accepts a flaky result; --accept-flaky names others.
    #[test]
    fn flaky_entries_and_flags_accept_flakes_by_name() {
        let tree = tree_with_generic_groups();
        let expunge = tempfile::tempdir().unwrap();
        std::fs::write(
            expunge.path().join("flaky.toml"),
            "[[expunge]]\ntests = [\"generic/004\"]\nkind = \"flaky\"\nreason = \"races with writeback\"\nlink = \"https://example.org/y\"\n",
        )
        .unwrap();
        let args = FstestsArgs {
            selection: Some("generic/001 generic/004 generic/005".into()),
            batch: 1,
            loops: 1,
            scheme: "fuseblk.ext4".into(),
            accept_flaky: vec!["generic/005".into()],
            ..Default::default()
        };
        let p = plan(
            &args,
            tree.path(),
            expunge.path(),
            "6.12.0",
            Mode::Iomap,
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        assert!(p.expunged.is_empty(), "a flaky entry does not expunge");
        assert_eq!(p.tests.len(), 3);
        let ok: Vec<(&str, &str)> = p
            .flaky_ok
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(ok.len(), 2, "{ok:?}");
        assert_eq!(ok[0].0, "fstests/iomapfs-4k/generic/004");
        assert!(
            ok[0]
                .1
                .starts_with("known flaky: races with writeback (https://example.org/y; "),
            "{}",
            ok[0].1
        );
        assert_eq!(
            ok[1],
            (
                "fstests/iomapfs-4k/generic/005",
                "--accept-flaky=generic/005"
            )
        );
    }

    #[test]
    fn the_source_comes_from_flags_or_the_profile() {
        let p = FstestsProfile {
            git: Some("https://example.org/fstests.git".into()),
            git_ref: Some("abc".into()),
        };
        let a = FstestsArgs {
            fstests_git: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            a.source(&p).unwrap(),
            Source::Git {
                url: "https://example.org/fstests.git".into(),
                git_ref: "abc".into()
            }
        );
        let a = FstestsArgs {
            selection: Some("-g quick".into()),
            ..Default::default()
        };
        assert!(format!("{}", a.source(&p).unwrap_err()).contains("--fstests-src"));
        let a = FstestsArgs {
            fstests_src: Some("/x".into()),
            fstests_ref: Some("y".into()),
            ..Default::default()
        };
        assert!(a.source(&p).is_err());
    }
}
