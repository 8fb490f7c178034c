//! Progress output: an indicatif spinner on a terminal, plain periodic lines
//! otherwise (CI, pipes, tests). Everything goes to stderr; stdout is kept for
//! results other tools may read.

use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Display;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) activity prints a heartbeat line.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Ui {
    fancy: bool,
}

impl Ui {
    /// Spinners when stderr is a terminal and `CI` is not set.
    pub fn detect() -> Ui {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        Ui {
            fancy: std::io::stderr().is_terminal() && !ci,
        }
    }

    /// Plain lines only (tests, logs).
    pub fn plain() -> Ui {
        Ui { fancy: false }
    }

    pub fn is_fancy(&self) -> bool {
        self.fancy
    }

    /// A major step: `==> msg`.
    pub fn step(&self, msg: impl Display) {
        eprintln!("==> {msg}");
    }

    /// A detail under the current step.
    pub fn note(&self, msg: impl Display) {
        eprintln!("    {msg}");
    }

    pub fn warn(&self, msg: impl Display) {
        eprintln!("warning: {msg}");
    }

    /// Start a long activity (a build, a download) with a live status.
    pub fn activity(&self, label: &str) -> Activity {
        let now = Instant::now();
        let bar = self.fancy.then(|| {
            let bar = ProgressBar::new_spinner();
            let style =
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            eprintln!("    {label}: started");
        }
        Activity {
            bar,
            label: label.to_string(),
            start: now,
            last_print: now,
            interval: PLAIN_INTERVAL,
        }
    }
}

/// A running activity; see [`Ui::activity`].
pub struct Activity {
    bar: Option<ProgressBar>,
    label: String,
    start: Instant,
    last_print: Instant,
    interval: Duration,
}

impl Activity {
    /// New status. On a terminal it replaces the spinner message; in plain
    /// mode a line is printed at most once per interval.
    pub fn update(&mut self, status: impl Display) {
        match &self.bar {
            Some(bar) => bar.set_message(status.to_string()),
            None => {
                if self.last_print.elapsed() >= self.interval {
                    self.last_print = Instant::now();
                    eprintln!(
                        "    {}: {} elapsed, {status}",
                        self.label,
                        fmt_duration(self.elapsed())
                    );
                }
            }
        }
    }

    /// Print a line without breaking the spinner.
    pub fn println(&self, line: impl Display) {
        match &self.bar {
            Some(bar) => bar.println(line.to_string()),
            None => eprintln!("{line}"),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// End the activity with a final line.
    pub fn finish(self, outcome: impl Display) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "    {}: {outcome} ({})",
            self.label,
            fmt_duration(self.elapsed())
        );
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `75s` -> `1m15s`; sub-minute values keep one decimal.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(fmt_duration(Duration::from_secs(75)), "1m15s");
        assert_eq!(fmt_duration(Duration::from_secs(3600)), "60m00s");
    }
}
