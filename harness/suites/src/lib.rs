//! The suite catalogue: named test suites, each expanding into plan tests (shell scripts
//! the guest agent runs with `bash -c`). The scripts live in `scripts/` and are embedded at
//! build time, so the host ships them in the plan; `scripts/fstests/prelude.sh` is the
//! guest side of `vm-test --fstests`.
use events::PlanTest;

/// A suite the harness knows.
pub struct Suite {
    pub name: &'static str,
    pub about: &'static str,
    /// Whether the suite mounts through the FUSE server (it must be built and shipped).
    pub needs_server: bool,
    tests: &'static [(&'static str, &'static str, u64)],
    prelude: &'static str,
}

const SMOKE_PRELUDE: &str = include_str!("../scripts/smoke/prelude.sh");
const WORKLOADS_PRELUDE: &str = include_str!("../scripts/workloads/prelude.sh");
/// Shell functions for fstests tests (`fstests_run SECTION LOOPS TEST...`); the host makes
/// one plan test per fstests test or batch (xtask's `--fstests`).
pub const FSTESTS_PRELUDE: &str = include_str!("../scripts/fstests/prelude.sh");

pub const SUITES: &[Suite] = &[
Suite {
    name: "smoke",
    about: "mount through iomapfs, file operations, O_DIRECT and O_APPEND checks, e2fsck -fn",
    needs_server: true,
    prelude: SMOKE_PRELUDE,
    tests: &[
        ("mount", include_str!("../scripts/smoke/mount.sh"), 60),
        ("fileops", include_str!("../scripts/smoke/fileops.sh"), 120),
        ("dio", include_str!("../scripts/smoke/dio.sh"), 120),
        ("append", include_str!("../scripts/smoke/append.sh"), 120),
        ("fsck", include_str!("../scripts/smoke/fsck.sh"), 60),
    ],
},
Suite {
    name: "dio",
    about: "the dio workload: self-describing O_DIRECT blocks, sparse files, io_uring, mixed access, remount, e2fsck -fn",
    needs_server: true,
    prelude: WORKLOADS_PRELUDE,
    tests: &[("workload", include_str!("../scripts/workloads/dio.sh"), 600)],
},
Suite {
    name: "append",
    about: "the append workload: concurrent O_APPEND writers (buffered with truncates and small files, and O_DIRECT), remount, e2fsck -fn",
    needs_server: true,
    prelude: WORKLOADS_PRELUDE,
    tests: &[
        ("buffered", include_str!("../scripts/workloads/buffered.sh"), 600),
        ("direct", include_str!("../scripts/workloads/direct.sh"), 600),
    ],
},
];

pub fn find(name: &str) -> Option<&'static Suite> {
    SUITES.iter().find(|s| s.name == name)
}

pub fn names() -> Vec<&'static str> {
    SUITES.iter().map(|s| s.name).collect()
}

impl Suite {
    /// The suite's tests; `timeout_s` overrides every test's own timeout.
    pub fn plan_tests(&self, timeout_s: Option<u64>) -> Vec<PlanTest> {
        self.tests
            .iter()
            .map(|(name, script, t)| PlanTest {
                name: format!("{}/{name}", self.name),
                command: format!("{}\n{script}", self.prelude),
                timeout_s: timeout_s.unwrap_or(*t),
            })
            .collect()
    }
}

/// `--run CMD` tests: `run/1`, `run/2`, ...
pub fn run_commands(cmds: &[String], timeout_s: u64) -> Vec<PlanTest> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| PlanTest {
            name: format!("run/{}", i + 1),
            command: c.clone(),
            timeout_s,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_has_the_checks_the_issue_asks_for() {
        let s = find("smoke").unwrap();
        let tests = s.plan_tests(None);
        let names: Vec<_> = tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "smoke/mount",
                "smoke/fileops",
                "smoke/dio",
                "smoke/append",
                "smoke/fsck"
            ]
        );
        assert!(tests
            .iter()
            .all(|t| t.command.starts_with("# Shared by every smoke test")));
        assert!(tests[2].command.contains("iflag=direct"));
        assert!(tests[4].command.contains("e2fsck -fn"));
        assert_eq!(s.plan_tests(Some(7))[0].timeout_s, 7);
        assert!(find("nope").is_none());
    }

    #[test]
    fn workload_suites_run_the_workloads_binary_and_check_the_disk() {
        for (suite, cmd) in [("dio", "workloads dio"), ("append", "workloads append")] {
            let tests = find(suite).unwrap().plan_tests(None);
            assert!(!tests.is_empty());
            for t in &tests {
                assert!(t.command.contains(cmd), "{}", t.name);
                assert!(t.command.contains("--remount-cmd"), "{}", t.name);
                assert!(t.command.contains("e2fsck -fn"), "{}", t.name);
            }
        }
        assert_eq!(names(), ["smoke", "dio", "append"]);
    }

    #[test]
    fn run_commands_are_numbered() {
        let t = run_commands(&["true".into(), "false".into()], 30);
        assert_eq!(t[1].name, "run/2");
        assert_eq!(t[1].command, "false");
        assert_eq!(t[0].timeout_s, 30);
    }

    #[test]
    fn fstests_prelude_parses_with_bash() {
        let out = std::process::Command::new("bash")
            .args([
                "-n",
                "-c",
                &format!("{FSTESTS_PRELUDE}\nfstests_run iomapfs-4k 1 generic/001 generic/002"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn smoke_scripts_parse_with_bash() {
        for t in find("smoke").unwrap().plan_tests(None) {
            let out = std::process::Command::new("bash")
                .args(["-n", "-c", &t.command])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                t.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
