//! Understanding fstests (xfstests) from the outside: which tests a `check`-style selection
//! means, what a run reported (xunit, check.log, check.time, per-test artifacts), which
//! tests a project expunges and why, how a run compares with a baseline, the local.config
//! that describes our filesystems to fstests, and how long a test may take.
//!
//! The parsers above are pure (no VM, no processes, no I/O beyond reading files). Three
//! modules drive fstests for vm-test: [`build`] (clone and build fstests into an image),
//! [`plan`] (the selection, expunges and shards one run executes) and [`collect`] (a run
//! directory into verdicts).

pub mod baseline;
pub mod build;
pub mod collect;
pub mod config;
pub mod durations;
pub mod expunge;
mod glob;
pub mod plan;
pub mod results;
pub mod selection;

pub use baseline::{compare, Diff};
pub use config::{render_local_config, try_render_local_config, Scheme, Section};
pub use durations::deadline;
pub use expunge::{Context, Entry, ExpungeList, Kind, Mode};
pub use results::{
    artifacts, parse_check_log, parse_check_time, parse_xunit, CheckLogRun, Outcome, Status,
};
pub use selection::{Catalog, Selection};

/// Does `pattern`, a test id or a glob over ids (`generic/00?`, `*/001`), name the test
/// `id`? `*` and `?` do not cross `/`, as in check's own expansion.
pub fn names_test(pattern: &str, id: &str) -> bool {
    pattern == id || glob::matches(pattern, id)
}
