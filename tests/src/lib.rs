//! Support for the end-to-end tests: the same test bodies run against kernel ext4 on a loop
//! device (the control) and against iomapfs mounted through the host kernel's FUSE.
//!
//! A test body is `fn(&dyn Target) -> anyhow::Result<()>`; `target_tests!` turns a list of
//! bodies into `ext4::NAME` and `iomapfs::NAME` test functions.

pub mod bins;
pub mod cmd;
pub mod model;
pub mod oracle;
pub mod sparse;
pub mod sys;
pub mod target;
pub mod testfs;

pub use oracle::{Expect, Expected};
pub use sparse::SparseData;
pub use target::{Iomapfs, KernelExt4, MountOptions, Target};
pub use testfs::{FsSpec, TestFs};

/// Runs one test body on `target`. If the machine cannot run that target (no root, no
/// /dev/fuse, missing tools), `test_support::needs` decides: a failure under CI, a SKIP line
/// elsewhere.
pub fn run(target: &dyn Target, body: fn(&dyn Target) -> anyhow::Result<()>) {
    let missing = target
        .missing_prerequisite()
        .map(|reason| format!("{}: {reason}", target.name()));
    if !test_support::needs(missing) {
        return;
    }
    // Creation modes in the tests assume the usual umask, whatever the caller's is.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    if let Err(e) = body(target) {
        panic!("{} failed: {e:#}", target.name());
    }
}

/// `target_tests!(a, b)` defines `ext4::a`, `ext4::b` (kernel ext4, the control) and
/// `iomapfs::a`, `iomapfs::b`, each calling the body `a`/`b` of the enclosing module.
#[macro_export]
macro_rules! target_tests {
    ($($name:ident),* $(,)?) => {
        mod ext4 {
            $( #[test] fn $name() { $crate::run(&$crate::KernelExt4, super::$name) } )*
        }
        mod iomapfs {
            $( #[test] fn $name() { $crate::run(&$crate::Iomapfs, super::$name) } )*
        }
    };
}
