//! Watches the serial console for kernel reports (oops, BUG, WARNING, panic,
//! KASAN, lockdep, hung tasks, lockups, RCU stalls) and attributes each to the
//! test that was running, using the agent's markers in the kernel log.
use std::collections::HashMap;

use report::{Finding, FindingKind};

use crate::framing::{Framer, Line};

/// Longest excerpt kept per report, in lines.
const MAX_EXCERPT_LINES: usize = 120;

/// Reports kept per test (a kernel can WARN in a loop); console.log has them all.
pub const MAX_FINDINGS_PER_TEST: usize = 50;

/// The kernel log line fstests' `check` writes when it starts a test: "run fstests
/// generic/001 at 2026-01-01 00:00:00". In a `check` run of several tests it says which
/// one a report belongs to.
const FSTESTS_MARKER: &str = "run fstests ";

/// Console line prefixes and what they mean. Order matters: the first match wins
/// (so "BUG: KASAN:" is KASAN, not a generic BUG).
const PATTERNS: &[(&str, FindingKind)] = &[
    ("Kernel panic - not syncing", FindingKind::Panic),
    ("BUG: KASAN:", FindingKind::Kasan),
    ("BUG: KFENCE:", FindingKind::Kasan),
    ("BUG: soft lockup", FindingKind::SoftLockup),
    ("watchdog: BUG: soft lockup", FindingKind::SoftLockup),
    (
        "watchdog: Watchdog detected hard LOCKUP",
        FindingKind::SoftLockup,
    ),
    ("BUG: workqueue lockup", FindingKind::SoftLockup),
    (
        "BUG: sleeping function called from invalid context",
        FindingKind::Warning,
    ),
    ("BUG: scheduling while atomic", FindingKind::Bug),
    ("BUG: ", FindingKind::Bug),
    ("kernel BUG at ", FindingKind::Bug),
    (
        "Oops: general protection fault",
        FindingKind::GeneralProtection,
    ),
    ("general protection fault", FindingKind::GeneralProtection),
    ("Oops: ", FindingKind::Oops),
    ("UBSAN: ", FindingKind::Ubsan),
    (
        "WARNING: possible circular locking dependency detected",
        FindingKind::Lockdep,
    ),
    (
        "WARNING: possible recursive locking detected",
        FindingKind::Lockdep,
    ),
    ("WARNING: inconsistent lock state", FindingKind::Lockdep),
    ("WARNING: bad unlock balance detected", FindingKind::Lockdep),
    ("WARNING: suspicious RCU usage", FindingKind::Lockdep),
    (
        "WARNING: possible irq lock inversion dependency detected",
        FindingKind::Lockdep,
    ),
    (
        "WARNING: lock held when returning to user space",
        FindingKind::Lockdep,
    ),
    ("WARNING: ", FindingKind::Warning),
    ("INFO: possible circular locking", FindingKind::Lockdep),
    ("INFO: task ", FindingKind::HungTask),
    ("INFO: rcu_", FindingKind::RcuStall),
    ("rcu: INFO: ", FindingKind::RcuStall),
    ("sysrq: Show Blocked State", FindingKind::TaskDump),
    ("sysrq: Show State", FindingKind::TaskDump),
];

use events::CONSOLE_EVENT_PREFIX as EVENT_PREFIX;

/// Lines that end a kernel report.
fn ends_report(line: &str) -> bool {
    line.starts_with("---[ end trace") || line.starts_with("---[ end Kernel panic")
}

/// Strip the printk prefixes: "[   12.345678] " and an optional "[    T1] " caller id.
pub fn strip_prefix(line: &str) -> &str {
    let mut rest = line.trim_end_matches('\r');
    for _ in 0..2 {
        let trimmed = rest.trim_start();
        if let Some(inner) = trimmed.strip_prefix('[') {
            if let Some(end) = inner.find(']') {
                let tag = &inner[..end];
                if tag
                    .trim()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == 'T' || c == 'C')
                {
                    rest = inner[end + 1..]
                        .strip_prefix(' ')
                        .unwrap_or(&inner[end + 1..]);
                    continue;
                }
            }
        }
        break;
    }
    rest
}

pub fn classify(text: &str) -> Option<FindingKind> {
    // Hung-task reports read "INFO: task NAME:PID blocked for more than N seconds."
    if text.starts_with("INFO: task ") && !text.contains("blocked for more than") {
        return None;
    }
    PATTERNS
        .iter()
        .find(|(p, _)| text.starts_with(p))
        .map(|(_, k)| *k)
}

/// What the watcher learned from one line.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// The agent marked the start of a test.
    TestStarted(String),
    TestFinished(String),
    /// A step of the running test (`test`, as the console knows it) started: fstests'
    /// `run fstests ID at ...` kernel log line (one `check` over a list announces each).
    Step {
        test: Option<String>,
        step: String,
    },
    /// An event the agent had to send on the console (no event port): the line's bytes
    /// after the prefix, for the event reader to check like any other event line.
    Event(Line),
}

#[derive(Default)]
pub struct Watcher {
    framer: Framer,
    current_test: Option<String>,
    /// The agent's markers were seen on this console: they, not the event stream, say
    /// which test runs (the console may lag behind the events).
    markers_seen: bool,
    subtest: Option<String>,
    open: Option<Finding>,
    open_lines: usize,
    findings: Vec<Finding>,
    /// Reports started per test, and those not kept past the cap.
    per_test: HashMap<Option<String>, usize>,
    dropped: usize,
    tail: std::collections::VecDeque<String>,
}

impl Watcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The test the host believes is running (from the event stream). Once the
    /// agent's markers showed up on the console, they decide instead: they are in the
    /// kernel log's own order, which the event stream is not.
    pub fn set_current_test(&mut self, test: Option<String>) {
        if !self.markers_seen {
            self.current_test = test;
            self.subtest = None;
        }
    }

    /// Feed raw console bytes; returns markers and fallback events seen.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Seen> {
        let lines = self.framer.push(bytes);
        lines.into_iter().filter_map(|l| self.line(l)).collect()
    }

    /// Flush a partial last line and any report in progress.
    pub fn finish(&mut self) -> Vec<Finding> {
        if let Some(l) = self.framer.finish() {
            self.line(l);
        }
        self.close();
        std::mem::take(&mut self.findings)
    }

    /// Kernel reports not kept because a test had more than [`MAX_FINDINGS_PER_TEST`].
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Findings completed so far (taken).
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// The last console lines, for boot failures.
    pub fn tail(&self) -> String {
        self.tail.iter().map(|l| format!("{l}\n")).collect()
    }

    fn line(&mut self, raw: Line) -> Option<Seen> {
        let line = raw.text();
        let text = strip_prefix(&line).to_string();
        self.tail.push_back(line.clone());
        if self.tail.len() > 40 {
            self.tail.pop_front();
        }
        if text.starts_with(EVENT_PREFIX) {
            // The event's own bytes, not the lossy text: the reader checks them.
            let at = raw
                .bytes
                .windows(EVENT_PREFIX.len())
                .position(|w| w == EVENT_PREFIX.as_bytes())
                .unwrap_or(0);
            return Some(Seen::Event(Line {
                bytes: raw.bytes[at + EVENT_PREFIX.len()..].to_vec(),
                truncated: raw.truncated,
            }));
        }
        if let Some(rest) = text.strip_prefix(events::KMSG_MARKER) {
            let mut words = rest.split_whitespace();
            return match (words.next(), words.next()) {
                (Some("test_started"), Some(name)) => {
                    self.close();
                    self.markers_seen = true;
                    self.current_test = Some(name.to_string());
                    self.subtest = None;
                    Some(Seen::TestStarted(name.to_string()))
                }
                (Some("test_finished"), Some(name)) => {
                    self.close();
                    self.markers_seen = true;
                    self.current_test = None;
                    self.subtest = None;
                    Some(Seen::TestFinished(name.to_string()))
                }
                _ => None,
            };
        }
        if let Some(rest) = text.strip_prefix(FSTESTS_MARKER) {
            if let Some(id) = rest.split_whitespace().next() {
                self.close();
                self.subtest = Some(id.to_string());
                return Some(Seen::Step {
                    test: self.current_test.clone(),
                    step: id.to_string(),
                });
            }
        }
        let kind = classify(&text);
        match (&mut self.open, kind) {
            // Another report starts: close this one. The "Oops:" header that
            // follows a "BUG: ..." line belongs to the same report, though.
            (Some(f), Some(k))
                if !(text.starts_with("Oops: ")
                    && self.open_lines < 10
                    && f.kind != FindingKind::Panic) =>
            {
                let _ = f;
                self.close();
                self.start(k, &text);
            }
            (Some(f), _) => {
                f.excerpt.push_str(&text);
                f.excerpt.push('\n');
                self.open_lines += 1;
                if ends_report(&text) || self.open_lines >= MAX_EXCERPT_LINES {
                    self.close();
                }
            }
            (None, Some(k)) => self.start(k, &text),
            (None, None) => {}
        }
        None
    }

    fn start(&mut self, kind: FindingKind, text: &str) {
        let n = self.per_test.entry(self.current_test.clone()).or_default();
        *n += 1;
        if *n > MAX_FINDINGS_PER_TEST {
            self.dropped += 1;
            return;
        }
        self.open = Some(Finding {
            kind,
            title: text.to_string(),
            test: self.current_test.clone(),
            subtest: self.subtest.clone(),
            excerpt: format!("{text}\n"),
        });
        self.open_lines = 1;
    }

    fn close(&mut self) {
        if let Some(f) = self.open.take() {
            self.findings.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(text: &str) -> (Vec<Seen>, Vec<Finding>) {
        let mut w = Watcher::new();
        let seen = w.feed(text.as_bytes());
        (seen, w.finish())
    }

    #[test]
    fn strips_printk_prefixes() {
        assert_eq!(strip_prefix("[   12.345678] BUG: x"), "BUG: x");
        assert_eq!(
            strip_prefix("[    1.000000][    T1] WARNING: y\r"),
            "WARNING: y"
        );
        assert_eq!(strip_prefix("[bracketed] text"), "[bracketed] text");
        assert_eq!(strip_prefix("plain"), "plain");
    }

    #[test]
    fn null_deref_oops_is_one_crash_finding_for_the_running_test() {
        let console = "\
[    5.000000] harness-agent: test_started smoke/dio
[    5.100000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    5.100001] #PF: supervisor read access in kernel mode
[    5.100002] #PF: error_code(0x0000) - not-present page
[    5.100003] Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI
[    5.100004] CPU: 0 UID: 0 PID: 77 Comm: dd Not tainted 6.12.57 #1
[    5.100005] RIP: 0010:fuse_file_read_iter+0x12/0x80
[    5.100006] Call Trace:
[    5.100007]  <TASK>
[    5.100008]  vfs_read+0x1d4/0x300
[    5.100009]  </TASK>
[    5.100010] ---[ end trace 0000000000000000 ]---
[    5.100011] Kernel panic - not syncing: Fatal exception
[    5.100012] ---[ end Kernel panic - not syncing: Fatal exception ]---
";
        let (seen, f) = watch(console);
        assert_eq!(seen, vec![Seen::TestStarted("smoke/dio".into())]);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert_eq!(f[0].kind, FindingKind::Bug);
        assert_eq!(f[0].test.as_deref(), Some("smoke/dio"));
        assert!(f[0]
            .title
            .starts_with("BUG: kernel NULL pointer dereference"));
        assert!(f[0].excerpt.contains("RIP: 0010:fuse_file_read_iter"));
        assert!(f[0].excerpt.contains("---[ end trace"));
        assert_eq!(f[1].kind, FindingKind::Panic);
        assert_eq!(f[1].test.as_deref(), Some("smoke/dio"));
    }

    #[test]
    fn sysrq_crash_is_a_panic() {
        let (_, f) = watch(
            "[   3.1] sysrq: Trigger a crash\n[   3.1] Kernel panic - not syncing: sysrq triggered crash\n\
             [   3.1] CPU: 1 PID: 90 Comm: bash\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Panic);
        assert!(f[0].excerpt.contains("Comm: bash"));
    }

    #[test]
    fn warn_and_lockdep_and_hung_task() {
        let console = "\
[    9.0] harness-agent: test_started t/a
[    9.1] ------------[ cut here ]------------
[    9.2] WARNING: CPU: 1 PID: 120 at fs/fuse/file.c:1234 fuse_write_end+0x2a/0x40
[    9.3] Modules linked in:
[    9.4] ---[ end trace 1234abcd ]---
[    9.5] harness-agent: test_finished t/a
[    9.6] harness-agent: test_started t/b
[   10.0] ======================================================
[   10.0] WARNING: possible circular locking dependency detected
[   10.0] 6.12.57 #1 Not tainted
[   10.0] ------------------------------------------------------
[   40.0] INFO: task kworker/0:1:12 blocked for more than 30 seconds.
[   40.1]       Not tainted 6.12.57 #1
[   40.2] \"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.
";
        let (_, f) = watch(console);
        let kinds: Vec<_> = f.iter().map(|f| (f.kind, f.test.as_deref())).collect();
        // A lockdep report has no end marker; the next report closes it.
        assert_eq!(
            kinds,
            vec![
                (FindingKind::Warning, Some("t/a")),
                (FindingKind::Lockdep, Some("t/b")),
                (FindingKind::HungTask, Some("t/b")),
            ]
        );
        assert_eq!(
            f[0].title,
            "WARNING: CPU: 1 PID: 120 at fs/fuse/file.c:1234 fuse_write_end+0x2a/0x40"
        );
        assert_eq!(f[0].kind.severity(), report::Severity::Warning);
        assert!(f[1].excerpt.contains("Not tainted"));
    }

    #[test]
    fn hung_task_report_alone() {
        let (_, f) = watch("[ 40.0] INFO: task dd:123 blocked for more than 30 seconds.\n");
        assert_eq!(f[0].kind, FindingKind::HungTask);
        // Other "INFO: task" lines are not hung-task reports.
        let (_, f) = watch("[ 40.0] INFO: task list follows\n");
        assert!(f.is_empty());
    }

    #[test]
    fn kasan_soft_lockup_gpf_ubsan() {
        for (line, kind) in [
            ("BUG: KASAN: slab-use-after-free in fuse_iomap_end+0x1/0x2", FindingKind::Kasan),
            ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [fsx:321]", FindingKind::SoftLockup),
            ("Oops: general protection fault, probably for non-canonical address 0xdead: 0000 [#1]", FindingKind::GeneralProtection),
            ("general protection fault: 0000 [#1] SMP", FindingKind::GeneralProtection),
            ("UBSAN: shift-out-of-bounds in fs/ext4/super.c:1234:5", FindingKind::Ubsan),
            ("kernel BUG at fs/fuse/dev.c:321!", FindingKind::Bug),
            ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", FindingKind::RcuStall),
        ] {
            let (_, f) = watch(&format!("[    1.0] {line}\n"));
            assert_eq!(f.len(), 1, "{line}");
            assert_eq!(f[0].kind, kind, "{line}");
            assert_eq!(f[0].test, None);
        }
    }

    #[test]
    fn ordinary_lines_and_split_chunks() {
        let mut w = Watcher::new();
        w.feed(b"[ 1.0] EXT4-fs (vdb): mounted filesystem\n[ 1.1] WARN");
        w.feed(b"ING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n");
        let f = w.finish();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Warning);
    }

    #[test]
    fn console_fallback_events_are_passed_on_byte_for_byte() {
        let (seen, _) =
            watch("HARNESS-EVENT {\"v\":1}\n[    2.0] HARNESS-EVENT {\"m\":\"\u{e9}\"}\n");
        let bytes: Vec<Vec<u8>> = seen
            .into_iter()
            .map(|s| match s {
                Seen::Event(l) => l.bytes,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            bytes,
            [
                b"{\"v\":1}".to_vec(),
                "{\"m\":\"\u{e9}\"}".as_bytes().to_vec()
            ]
        );
        // Invalid UTF-8 reaches the event reader as it was sent (it rejects it there).
        let mut w = Watcher::new();
        let seen = w.feed(b"HARNESS-EVENT {\"x\":\"\xff\"}\n");
        assert_eq!(
            seen,
            vec![Seen::Event(Line {
                bytes: b"{\"x\":\"\xff\"}".to_vec(),
                truncated: false
            })]
        );
    }

    /// In a `check` run of several tests, fstests' own kernel log line says which test a
    /// report belongs to.
    #[test]
    fn fstests_marker_names_the_subtest() {
        let console = "\
[    9.0] harness-agent: test_started fstests/iomapfs-4k/batch-001
[    9.1] EXT4-fs (vdb): mounted filesystem
[   10.0] run fstests generic/001 at 2026-01-01 00:00:00
[   11.0] run fstests generic/002 at 2026-01-01 00:00:05
[   40.0] INFO: task fsstress:321 blocked for more than 30 seconds.
[   40.1]       Not tainted 6.12.57 #1
[   50.0] run fstests generic/003 at 2026-01-01 00:01:00
[   50.5] WARNING: CPU: 1 PID: 9 at fs/fuse/file.c:1 f+0x0/0x1
[   51.0] harness-agent: test_finished fstests/iomapfs-4k/batch-001
[   52.0] WARNING: CPU: 1 PID: 9 at fs/fuse/file.c:1 f+0x0/0x1
";
        let (seen, f) = watch(console);
        // Each announced test is a step the supervisor can put a deadline on.
        let steps: Vec<_> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Step { test, step } => Some((test.as_deref(), step.as_str())),
                _ => None,
            })
            .collect();
        let batch = Some("fstests/iomapfs-4k/batch-001");
        assert_eq!(
            steps,
            [
                (batch, "generic/001"),
                (batch, "generic/002"),
                (batch, "generic/003")
            ]
        );
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.kind, f.test.as_deref(), f.subtest.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    FindingKind::HungTask,
                    Some("fstests/iomapfs-4k/batch-001"),
                    Some("generic/002")
                ),
                (
                    FindingKind::Warning,
                    Some("fstests/iomapfs-4k/batch-001"),
                    Some("generic/003")
                ),
                (FindingKind::Warning, None, None),
            ]
        );
    }

    /// The event stream may run ahead of the console: once the agent's markers are on the
    /// console, a test_finished event does not detach a report the console has not shown yet.
    #[test]
    fn console_markers_outrank_the_event_stream() {
        let mut w = Watcher::new();
        w.feed(b"[ 1.0] harness-agent: test_started run/1\n");
        w.set_current_test(None); // the test_finished event arrived first
        w.feed(b"[ 2.0] INFO: task dd:12 blocked for more than 120 seconds.\n[ 2.1] harness-agent: test_finished run/1\n");
        let f = w.finish();
        assert_eq!(f[0].test.as_deref(), Some("run/1"));
        // Without markers, the events decide.
        let mut w = Watcher::new();
        w.set_current_test(Some("run/2".into()));
        w.feed(b"WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n");
        assert_eq!(w.finish()[0].test.as_deref(), Some("run/2"));
    }

    #[test]
    fn a_flood_of_reports_is_capped_per_test() {
        let mut w = Watcher::new();
        w.feed(b"harness-agent: test_started t/a\n");
        for _ in 0..(MAX_FINDINGS_PER_TEST + 30) {
            w.feed(b"WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n---[ end trace 0 ]---\n");
        }
        w.feed(b"harness-agent: test_finished t/a\nharness-agent: test_started t/b\nWARNING: CPU: 0 PID: 1 at y.c:1\n");
        let f = w.finish();
        assert_eq!(
            f.iter()
                .filter(|f| f.test.as_deref() == Some("t/a"))
                .count(),
            MAX_FINDINGS_PER_TEST
        );
        assert_eq!(
            f.iter()
                .filter(|f| f.test.as_deref() == Some("t/b"))
                .count(),
            1,
            "the next test still gets its own"
        );
        assert_eq!(w.dropped(), 30);
    }
}
