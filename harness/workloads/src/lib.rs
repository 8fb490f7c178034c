//! Data-integrity workloads for any mounted directory: direct I/O of self-describing blocks
//! (`dio`), concurrent O_APPEND records with crash acknowledgements (`append`), files
//! created, rewritten and deleted with acknowledgements for power cuts (`churn`), and fio
//! throughput jobs (`fio`). Every run is seeded and bounded; every mismatch becomes a
//! [`Finding`] naming the file, the offset, and the expected and found bytes.

pub mod align;
pub mod append;
pub mod block;
pub mod churn;
pub mod dio;
pub mod error;
pub mod fill;
pub mod finding;
pub mod fio;
pub mod record;
pub mod summary;

pub use error::{Error, Result};
pub use finding::{Finding, Findings, Kind};
pub use summary::{PhaseSummary, Summary};

/// What a workload calls between "everything is synced and closed" and "verify it all
/// again": typically unmount and mount the filesystem under test. Errors end the run.
pub type RemountHook<'a> = &'a mut dyn FnMut() -> std::result::Result<(), BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
