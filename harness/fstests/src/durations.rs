//! How long one fstests test may run before the harness calls it hung.
//!
//! The expected time is the test's own, remembered from earlier runs on this machine. The
//! bound is 3x that plus a minute for mkfs, mount and fsck around the test, never under
//! two minutes, and capped at three hours so a truly hung test still ends the run in
//! bounded time. The supervisor scales it by the plan's slow factor (TCG), as every test's
//! timeout; it is not scaled here.

use std::time::Duration;

/// Deadline for a test we have no timing for (fstests' "quick" tests mostly take seconds;
/// scaled by TCG's slow factor this still covers a slow one).
pub const UNKNOWN_SECS: u64 = 300;
/// Never less than this: boot-time noise and fsck dominate short tests.
pub const MIN_SECS: u64 = 120;
/// Never more than this.
pub const MAX_SECS: u64 = 3 * 60 * 60;

/// Unknown: 300 s. Known: max(120, expected * 3 + 60) s, at most 3 h.
pub fn deadline(expected_secs: Option<u64>) -> Duration {
    let secs = match expected_secs {
        None => UNKNOWN_SECS,
        Some(expected) => expected
            .saturating_mul(3)
            .saturating_add(60)
            .clamp(MIN_SECS, MAX_SECS),
    };
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_short_scaled_and_capped() {
        assert_eq!(deadline(None), Duration::from_secs(300));
        assert_eq!(deadline(Some(0)), Duration::from_secs(120));
        assert_eq!(deadline(Some(5)), Duration::from_secs(120)); // 75 -> floor
        assert_eq!(deadline(Some(100)), Duration::from_secs(360));
        assert_eq!(deadline(Some(4000)), Duration::from_secs(3 * 3600)); // 12060 -> cap
        assert_eq!(deadline(Some(u64::MAX)), Duration::from_secs(3 * 3600));
    }
}
