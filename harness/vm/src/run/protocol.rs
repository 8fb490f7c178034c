//! The event protocol: what the supervisor knows of the guest's run ([`State`]), and each
//! event line checked against the protocol before it changes anything. A line the protocol
//! does not allow is kept as a protocol error (the run becomes an infrastructure error).
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use events::{Event, EventBody, TestStatus};
use report::{TestResult, Verdict};

use crate::console::Watcher;
use crate::framing::Line;

use super::channels::append_file;
use super::{Progress, PROTOCOL_ERRORS_FILE};

/// Protocol errors kept per boot (a guest sending garbage sends a lot of it).
const MAX_PROTOCOL_ERRORS: usize = 100;

/// What the supervisor knows about the run so far.
pub(super) struct State {
    /// The session plan's tests and their timeouts: only these may start.
    pub(super) planned: HashMap<String, u64>,
    pub(super) ready_info: Option<EventBody>,
    pub(super) ready_at: Option<Instant>,
    pub(super) current: Option<(String, Instant, u64)>,
    /// The step of a running test the console announced last: (test, step, since).
    pub(super) step: Option<(String, String, Instant)>,
    pub(super) started: Vec<String>,
    pub(super) finished: Vec<TestResult>,
    pub(super) run_finished: bool,
    pub(super) last_event: Instant,
    pub(super) protocol: ProtocolErrors,
    /// The server modes each finished test reported (known ones only).
    pub(super) test_modes: Vec<(String, Vec<String>)>,
}

impl State {
    /// Nothing known yet about a boot that runs `plan`'s tests.
    pub(super) fn new(plan: &events::Plan) -> Self {
        State {
            planned: plan
                .tests
                .iter()
                .map(|t| (t.name.clone(), t.timeout_s))
                .collect(),
            ready_info: None,
            ready_at: None,
            current: None,
            step: None,
            started: vec![],
            finished: vec![],
            run_finished: false,
            last_event: Instant::now(),
            protocol: ProtocolErrors::default(),
            test_modes: vec![],
        }
    }
}

/// Event protocol errors of one boot: what was wrong, and the offending line.
#[derive(Default)]
pub(super) struct ProtocolErrors {
    kept: Vec<(String, Option<Line>)>,
    count: usize,
}

impl ProtocolErrors {
    pub(super) fn push(&mut self, what: String, line: Option<&Line>) {
        self.count += 1;
        if self.kept.len() < MAX_PROTOCOL_ERRORS {
            self.kept.push((what, line.cloned()));
        }
    }

    /// Append them to the run directory's protocol-errors.log; returns a summary for the
    /// run's reason, if there were any.
    pub(super) fn save(&self, run_dir: &Path, boot_no: u32) -> Option<String> {
        let (first, _) = self.kept.first()?;
        let mut text = String::new();
        for (what, line) in &self.kept {
            text.push_str(&format!("boot {boot_no}: {what}\n"));
            if let Some(l) = line {
                let cut = if l.truncated { " (truncated)" } else { "" };
                text.push_str(&format!("  line{cut}: {}\n", l.escaped()));
            }
        }
        if self.count > self.kept.len() {
            text.push_str(&format!(
                "boot {boot_no}: {} more not kept\n",
                self.count - self.kept.len()
            ));
        }
        let _ = append_file(&run_dir.join(PROTOCOL_ERRORS_FILE), text.as_bytes());
        Some(format!("{} event protocol errors in boot {boot_no} (see {PROTOCOL_ERRORS_FILE}); the first: {first}", self.count))
    }
}

/// The server modes a guest reported, reduced to the two the harness knows (each once):
/// anything else is the guest's noise and is dropped.
pub(super) fn known_modes(reported: Vec<String>) -> Vec<String> {
    let mut modes: Vec<String> = vec![];
    for m in reported.iter().take(64) {
        if matches!(m.as_str(), "iomap" | "classic") && !modes.contains(m) {
            modes.push(m.clone());
        }
    }
    modes
}

/// A guest string fit for the terminal and the reason: control characters escaped, at
/// most `max` characters.
pub(super) fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

/// Check one line of the event stream and apply it. Anything the protocol does not allow
/// (a line that is not UTF-8, too long, not an event, another schema version, an event
/// out of order or for a test that is not running) is a protocol error, kept with its
/// line, and changes nothing else.
pub(super) fn handle_line(
    line: &Line,
    st: &mut State,
    watcher: &mut Watcher,
    progress: &mut dyn FnMut(Progress),
) {
    if line.truncated {
        st.protocol.push(
            format!("event line longer than {} bytes", crate::framing::MAX_LINE),
            Some(line),
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(&line.bytes) else {
        st.protocol
            .push("event line is not UTF-8".into(), Some(line));
        return;
    };
    if text.trim().is_empty() {
        return;
    }
    let ev = match Event::from_line(text) {
        Ok(ev) if ev.v == events::SCHEMA_VERSION => ev,
        Ok(ev) => {
            st.protocol.push(
                format!(
                    "event of schema v{} (host speaks v{})",
                    ev.v,
                    events::SCHEMA_VERSION
                ),
                Some(line),
            );
            return;
        }
        Err(e) => {
            st.protocol
                .push(format!("unreadable event line ({e})"), Some(line));
            return;
        }
    };
    if let Err(why) = check_event(&ev.body, st) {
        st.protocol.push(why, Some(line));
        return;
    }
    st.last_event = Instant::now();
    match ev.body {
        EventBody::RunStarted { .. } => {
            if let EventBody::RunStarted {
                kernel,
                server,
                boot_to_ready_ms,
                agent_start_ms,
                setup_ms,
                ..
            } = &ev.body
            {
                let kernel = printable(kernel, 200);
                let server = server.as_ref().map(|s| events::ServerFacts {
                    name: printable(&s.name, 100),
                    version: s.version.as_deref().map(|v| printable(v, 200)),
                    mode: s.mode.as_deref().map(|m| printable(m, 200)),
                    error: s.error.as_deref().map(|e| printable(e, 1000)),
                });
                progress(Progress::Ready {
                    boot_to_ready_ms: *boot_to_ready_ms,
                    kernel_boot_ms: *agent_start_ms,
                    setup_ms: *setup_ms,
                    kernel: &kernel,
                    server: server.as_ref(),
                });
            }
            st.ready_info = Some(ev.body);
            st.ready_at = Some(Instant::now());
        }
        EventBody::TestStarted { name, .. } => {
            // The plan's timeout, not the guest's word for it.
            let timeout_s = st.planned.get(&name).copied().unwrap_or(0);
            st.started.push(name.clone());
            progress(Progress::TestStarted {
                name: &name,
                index: st.started.len(),
                total: st.planned.len(),
            });
            watcher.set_current_test(Some(name.clone()));
            st.current = Some((name, Instant::now(), timeout_s));
        }
        EventBody::TestFinished {
            name,
            status,
            duration_ms,
            exit_code,
            signal,
            slow,
            reason,
            server_modes,
        } => {
            st.current = None;
            watcher.set_current_test(None);
            let mut result = TestResult::new(
                name,
                match status {
                    TestStatus::Passed => Verdict::Passed,
                    TestStatus::Failed => Verdict::Failed,
                    TestStatus::Hung => Verdict::Hung,
                    TestStatus::InfraError => Verdict::InfraError,
                },
            );
            result.duration_ms = duration_ms;
            result.exit_code = exit_code;
            result.signal = signal;
            result.slow = slow;
            result.reason = reason.map(|r| printable(&r, 2000));
            let modes = known_modes(server_modes);
            if !modes.is_empty() {
                st.test_modes.push((result.name.clone(), modes));
            }
            progress(Progress::TestFinished { result: &result });
            st.finished.push(result);
        }
        EventBody::Heartbeat { test, .. } => progress(Progress::Heartbeat {
            test: test.as_deref(),
        }),
        EventBody::Log { message } => {
            progress(Progress::Log {
                message: &printable(&message, 2000),
            });
        }
        EventBody::RunFinished { .. } => st.run_finished = true,
    }
}

/// Is this event allowed now? Tests start one at a time, only if planned and not run
/// yet, after run_started; only the running test finishes; nothing follows run_finished.
fn check_event(body: &EventBody, st: &State) -> Result<(), String> {
    let running = st.current.as_ref().map(|c| c.0.as_str());
    let shown = |n: &str| printable(n, 100);
    if st.run_finished {
        return Err("event after run_finished".into());
    }
    match body {
        EventBody::RunStarted { .. } if st.ready_info.is_some() => Err("run_started twice".into()),
        EventBody::RunStarted { .. } | EventBody::Log { .. } => Ok(()),
        _ if st.ready_info.is_none() => Err("event before run_started".into()),
        EventBody::TestStarted { name, timeout_s } => match st.planned.get(name) {
            None => Err(format!(
                "test_started for `{}`, which is not in the plan",
                shown(name)
            )),
            Some(_) if st.started.contains(name) => {
                Err(format!("test_started for `{}` a second time", shown(name)))
            }
            Some(_) if running.is_some() => Err(format!(
                "test_started for `{}` while `{}` is running",
                shown(name),
                running.unwrap_or_default()
            )),
            Some(planned) if planned != timeout_s => Err(format!(
                "test_started for `{}` with timeout {timeout_s}s, the plan says {planned}s",
                shown(name)
            )),
            Some(_) => Ok(()),
        },
        EventBody::TestFinished { name, .. } if running != Some(name.as_str()) => Err(format!(
            "test_finished for `{}`, which is not running",
            shown(name)
        )),
        EventBody::Heartbeat {
            test: Some(name), ..
        } if running != Some(name.as_str()) => Err(format!(
            "heartbeat for `{}`, which is not running",
            shown(name)
        )),
        EventBody::RunFinished { .. } if running.is_some() => Err(format!(
            "run_finished while `{}` is running",
            running.unwrap_or_default()
        )),
        _ => Ok(()),
    }
}
