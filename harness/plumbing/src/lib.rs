//! Plumbing shared by the host-side tasks (kernel, image, fstests build, vm-test, bisect,
//! bench): error kinds and the exit codes of DESIGN.md, progress output, well-known paths,
//! hashing, cache locks and short git calls.

pub mod error;
pub mod paths;
pub mod ui;
pub mod util;
