//! One `vm-test` from a resolved profile to a verdict: resolve the profile and flags, build
//! or reuse the kernel (`kernel`), the guest image (`guest-image`) and fstests (`fstests`),
//! boot and supervise the VM (`vm`), and collect the run into a verdict (`report`). Also the
//! two other ways of using that VM: power cuts under load and an interactive shell.

pub mod boot_params;
pub mod dry_run;
pub mod parallel;
pub mod powercut;
pub mod resume;
pub mod shell;
pub mod vm_test;
