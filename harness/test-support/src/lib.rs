//! Support shared by the workspace's tests.
//!
//! [`needs`] is the one rule for a test whose precondition is missing (root, a tool, a
//! device): under CI (`CI` set, as CI runs) the test fails and names what is missing, so a
//! green CI never hides a test that checked nothing; elsewhere it prints one
//! `SKIP: <test>: <reason>` line and the test returns early. Tests that need something CI
//! can never have are `#[ignore = "needs ..."]` instead, so reports say ignored.

pub mod e2fs;
pub mod needs;

pub use needs::{in_ci, needs, needs_all};
