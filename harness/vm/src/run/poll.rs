//! The poll loop of one boot: console first (so kernel reports are attributed before a
//! test_finished moves on), then events, then QEMU's exit, the user's Ctrl-C and the
//! deadlines; and how a stopped boot is wound down (task dump of a hung guest, QEMU
//! killed, the console's last bytes).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use events::Plan;
use report::Finding;

use crate::console::{Seen, Watcher};

use super::channels::capture_task_dump;
use super::protocol::{handle_line, State};
use super::start::Started;
use super::{Limits, Progress, Steps};

/// Why the supervisor stopped the guest early.
pub(super) enum Stop {
    None,
    Hung(String),
    /// The whole run's time limit ran out: not the running test's fault.
    RunLimit,
    BootTimeout,
    Interrupted,
    QemuDied(std::process::ExitStatus),
    ShutdownStuck,
}

/// Follows one boot until it stops, and says why. `started` is when QEMU was attached.
#[allow(clippy::too_many_arguments)]
pub(super) fn poll(
    live: &mut Started,
    st: &mut State,
    watcher: &mut Watcher,
    findings: &mut Vec<Finding>,
    limits: &Limits,
    plan: &Plan,
    steps: &dyn Steps,
    deadline: Instant,
    started: Instant,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Stop {
    let mut run_finished_at: Option<Instant> = None;
    loop {
        // Console first, so findings are attributed before test_finished moves on.
        drain_console(&live.console_rx, st, watcher, progress);
        for f in watcher.take_findings() {
            progress(Progress::Finding { finding: &f });
            findings.push(f);
        }
        for line in live.events.lines() {
            handle_line(&line, st, watcher, progress);
        }
        if st.run_finished && run_finished_at.is_none() {
            run_finished_at = Some(Instant::now());
        }
        if let Some(status) = live.qemu.exited() {
            // Read what is left of both channels.
            std::thread::sleep(Duration::from_millis(100));
            drain_console(&live.console_rx, st, watcher, progress);
            loop {
                let (lines, more) = live.events.read();
                for line in lines {
                    handle_line(&line, st, watcher, progress);
                }
                if !more {
                    break;
                }
            }
            if let Some(line) = live.events.rest() {
                handle_line(&line, st, watcher, progress);
            }
            return if st.run_finished {
                Stop::None
            } else {
                Stop::QemuDied(status)
            };
        }
        if cancel.load(Ordering::SeqCst) {
            return Stop::Interrupted;
        }
        if let Some(stop) =
            past_a_deadline(st, limits, plan, steps, deadline, started, run_finished_at)
        {
            return stop;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Feeds the console received so far to the watcher; console event lines (an agent without
/// an event port) go to the protocol like the event file's.
fn drain_console(
    rx: &Receiver<Vec<u8>>,
    st: &mut State,
    watcher: &mut Watcher,
    progress: &mut dyn FnMut(Progress),
) {
    while let Ok(chunk) = rx.try_recv() {
        for seen in watcher.feed(&chunk) {
            match seen {
                Seen::Event(line) => handle_line(&line, st, watcher, progress),
                // The console's own idea of the test: its events may not be read yet.
                Seen::Step {
                    test: Some(test),
                    step,
                } => {
                    progress(Progress::Step {
                        test: &test,
                        step: &step,
                    });
                    st.step = Some((test, step, Instant::now()));
                }
                _ => {}
            }
        }
    }
}

/// The host's deadlines: boot, shutdown after run_finished, heartbeats, the running
/// test's own timeout (plus a margin) and its step's, the whole run.
fn past_a_deadline(
    st: &State,
    limits: &Limits,
    plan: &Plan,
    steps: &dyn Steps,
    deadline: Instant,
    started: Instant,
    run_finished_at: Option<Instant>,
) -> Option<Stop> {
    let now = Instant::now();
    if st.ready_info.is_none() && now - started > limits.boot {
        return Some(Stop::BootTimeout);
    }
    if let Some(at) = run_finished_at {
        if now - at > limits.shutdown {
            return Some(Stop::ShutdownStuck);
        }
    } else if st.ready_info.is_some() && now - st.last_event > limits.stall {
        return Some(Stop::Hung(format!(
            "no event from the guest for {}s (heartbeats stopped)",
            limits.stall.as_secs()
        )));
    } else if let Some((name, at, timeout_s)) = &st.current {
        // The agent kills a test at timeout * slow_factor; past that plus
        // a margin, the agent itself is stuck. (The timeout is the plan's.)
        let limit = Duration::from_secs(timeout_s.saturating_mul(plan.slow_factor.max(1)))
            .saturating_add(limits.stall);
        if now - *at > limit {
            return Some(Stop::Hung(format!(
                "{name} not finished {}s after it started",
                limit.as_secs()
            )));
        }
        if let Some(stop) = step_past_its_deadline(st, name, limits, plan, steps, now) {
            return Some(stop);
        }
    }
    if now > deadline {
        return Some(Stop::RunLimit);
    }
    None
}

/// Ends a stopped boot: a hung guest's task dump first, then QEMU killed and the console's
/// last bytes read. Returns why the run stopped early, if it did.
pub(super) fn wind_down(
    live: &mut Started,
    stop: &Stop,
    st: &State,
    watcher: &mut Watcher,
    findings: &mut Vec<Finding>,
    limits: &Limits,
    progress: &mut dyn FnMut(Progress),
) -> Option<String> {
    let run_reason = match stop {
        Stop::Hung(why) => {
            let test = st.current.as_ref().map(|c| c.0.clone());
            progress(Progress::Hang {
                test: test.as_deref(),
                why,
            });
            capture_task_dump(
                live.sockets.path(),
                &mut live.console_in,
                &live.console_rx,
                watcher,
                limits.dump_wait,
            );
            Some(format!("guest hung: {why}"))
        }
        Stop::BootTimeout => Some(format!(
            "the guest agent did not report ready within {}s",
            limits.boot.as_secs()
        )),
        Stop::Interrupted => Some("interrupted (Ctrl-C); partial results".into()),
        Stop::RunLimit => Some(format!(
            "the run's time limit of {}s (--run-timeout) ran out; partial results, \
             --resume goes on",
            limits.run.as_secs()
        )),
        Stop::QemuDied(status) => Some(if st.ready_info.is_none() {
            format!("the guest died during boot (QEMU {status})")
        } else {
            format!("the guest died (QEMU {status}) before the run finished")
        }),
        Stop::ShutdownStuck | Stop::None => None,
    };
    live.qemu.kill();
    // The backends finish what QEMU had sent them and exit: what the guest was told it
    // wrote is on the host before the verdict reads the artifacts.
    live.backends.clear();
    // Console thread ends on EOF; take the last bytes.
    while let Ok(chunk) = live.console_rx.recv_timeout(Duration::from_millis(200)) {
        watcher.feed(&chunk);
    }
    findings.extend(watcher.finish());
    run_reason
}

/// The running test's announced step past its own deadline (scaled like the test's
/// timeout, plus the stall margin): the guest is hung in that step.
fn step_past_its_deadline(
    st: &State,
    running: &str,
    limits: &Limits,
    plan: &Plan,
    steps: &dyn Steps,
    now: Instant,
) -> Option<Stop> {
    let (test, step, at) = st.step.as_ref().filter(|(test, ..)| test == running)?;
    let scale = u32::try_from(plan.slow_factor.max(1)).unwrap_or(u32::MAX);
    let limit = steps
        .deadline(test, step)?
        .saturating_mul(scale)
        .saturating_add(limits.stall);
    (now - *at > limit).then(|| {
        Stop::Hung(format!(
            "{step} (in {test}) not finished {}s after it started",
            limit.as_secs()
        ))
    })
}
