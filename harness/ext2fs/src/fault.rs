//! Failure injection for tests (cargo feature `fault-injection`): every change this crate
//! makes is a numbered *step*, and a plan makes one step (or every step from it on) fail
//! with a chosen errno before it changes anything. Tests sweep the step number across a
//! multi-step operation to see what a failure at each point leaves behind.
//!
//! Without the feature `Fs::step` is an empty inline function and no plan can be set.

use crate::error::{Error, Result};
use crate::fs::Fs;

/// Which step fails, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailPlan {
    /// 1-based number of the first step that fails, counted from when the plan is set.
    pub step: u64,
    /// The errno the failing step returns (e.g. `ENOSPC`, `EIO`).
    pub errno: i32,
    /// Every step from `step` on fails (a device that died), not just that one.
    pub sticky: bool,
}

/// The step counter and the plan (inside `Fs`).
#[derive(Default)]
pub(crate) struct Faults {
    #[cfg(feature = "fault-injection")]
    taken: std::cell::Cell<u64>,
    #[cfg(feature = "fault-injection")]
    plan: Option<FailPlan>,
}

impl Fs {
    /// Arms `plan`; steps are counted from here.
    #[cfg(feature = "fault-injection")]
    pub fn inject_failure(&mut self, plan: FailPlan) {
        self.faults.taken.set(0);
        self.faults.plan = Some(plan);
    }

    /// Steps taken since the plan was armed (or since open).
    #[cfg(feature = "fault-injection")]
    pub fn steps_taken(&self) -> u64 {
        self.faults.taken.get()
    }

    /// One step of a change, named `what`: fails here when the plan says so.
    #[inline]
    pub(crate) fn step(&self, what: &'static str) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        {
            let n = self.faults.taken.get() + 1;
            self.faults.taken.set(n);
            if let Some(p) = self.faults.plan {
                if n == p.step || (p.sticky && n > p.step) {
                    return Err(Error::from_errno(
                        p.errno,
                        format!("injected failure at step {n} ({what})"),
                    ));
                }
            }
        }
        let _ = what;
        Ok::<(), Error>(())
    }
}
