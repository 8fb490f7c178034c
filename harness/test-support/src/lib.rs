//! Support shared by the workspace's tests.
//!
//! [`needs`] is the one rule for a test whose precondition is missing (root, a tool, a
//! device): under CI (`CI` set, as CI runs) the test fails and names what is missing, so a
//! green CI never hides a test that checked nothing; elsewhere it prints one
//! `SKIP: <test>: <reason>` line and the test returns early. Tests that need something CI
//! can never have are `#[ignore = "needs ..."]` instead, so reports say ignored.
//!
//! The host test targets: the same test body runs against kernel ext4 on a loop device
//! (the control) and against iomapfs mounted through the host kernel's FUSE. A body is
//! `fn(&dyn Target) -> anyhow::Result<()>`; [`target_tests!`] turns a list of bodies into
//! `ext4::NAME` and `iomapfs::NAME` test functions, and [`TestFs`] is a fresh image mounted
//! on a target, checked at the end by e2fsck and an independent reader ([`oracle`]).
//!
//! Also: mount helpers ([`mount`]), syscall helpers and aligned buffers ([`sys`]), git
//! fixtures ([`git`]), and the binary builder ([`bins`]).

pub mod bins;
pub mod cmd;
pub mod e2fs;
pub mod git;
pub mod mount;
pub mod needs;
pub mod oracle;
pub mod sparse;
pub mod sys;
pub mod target;
pub mod testfs;

pub use needs::{in_ci, needs, needs_all};
pub use oracle::{Expect, Expected};
pub use sparse::SparseData;
pub use target::{Fuse2fs, Iomapfs, KernelExt4, MountOptions, Mounted, Target};
pub use testfs::{FsSpec, TestFs};

/// Runs one test body on `target`. If the machine cannot run that target (no root, no
/// /dev/fuse, missing tools), [`needs`] decides: a failure under CI, a SKIP line elsewhere.
pub fn run(target: &dyn Target, body: fn(&dyn Target) -> anyhow::Result<()>) {
    let missing = target
        .missing_prerequisite()
        .map(|reason| format!("{}: {reason}", target.name()));
    if !needs(missing) {
        return;
    }
    // Creation modes in the tests assume the usual umask, whatever the caller's is.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
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
            $( #[test] fn $name() { $crate::run(&$crate::Iomapfs::default(), super::$name) } )*
        }
    };
}
