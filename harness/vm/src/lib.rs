//! Host side of `vm-test`: boots QEMU with the kernel, the image and the agent,
//! follows the event stream and the console, enforces timeouts, and turns what
//! happened into a [`report::RunResult`]. QEMU supervision only: which tests run is the
//! caller's plan (the suite catalogue is the `suites` crate).
pub mod accel;
pub mod console;
pub mod framing;
pub mod qemu;
pub mod qemu_probe;
pub mod qmp;
pub mod run;
pub mod rundir;

pub use accel::{AccelChoice, AccelDecision};
pub use qemu::{Accel, Machine};
pub use run::{
    resume_tests_with_steps, run_shell, run_tests, run_tests_with_steps, Limits, NoSteps, Progress,
    RunShare, Steps, VmError, VmSpec,
};
pub use rundir::RunDir;
