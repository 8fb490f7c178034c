//! iomapfs server library.
