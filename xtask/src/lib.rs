//! fuse-iomap-harness developer tasks, as a library so subcommands (vm-test,
//! bisect, ...) reuse each other's pieces. `main.rs` only parses and dispatches.

pub mod bench;
pub mod bindgen;
pub mod bisect;
pub mod boot_params;
pub mod error;
pub mod fstests;
pub mod host;
pub mod image;
pub mod kernel;
pub mod paths;
pub mod powercut;
pub mod profile;
pub mod ui;
pub mod util;
pub mod vm_dry_run;
pub mod vm_shell;
pub mod vm_test;
