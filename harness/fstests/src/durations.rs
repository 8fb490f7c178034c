//! How long one fstests test may run before the harness calls it hung.
//!
//! Under QEMU TCG (no KVM, as in CI) guest code runs roughly ten times slower than under
//! KVM, and check.time figures usually come from faster machines; `slow_factor` carries
//! that ratio. The bound is generous (3x the scaled time plus a minute for mkfs, mount and
//! fsck around the test), never under two minutes, and capped at three hours so a truly
//! hung test still ends the run in bounded time.

use std::time::Duration;

/// Deadline for a test we have no timing for (fstests' "quick" tests mostly take seconds;
/// this still covers a slow one under TCG).
pub const UNKNOWN_SECS: u64 = 900;
/// Never less than this: boot-time noise and fsck dominate short tests.
pub const MIN_SECS: u64 = 120;
/// Never more than this.
pub const MAX_SECS: u64 = 3 * 60 * 60;

/// Unknown: 900 s. Known: max(120, expected * slow_factor * 3 + 60) s, at most 3 h.
/// A `slow_factor` of 0 counts as 1.
pub fn deadline(expected_secs: Option<u64>, slow_factor: u32) -> Duration {
    let secs = match expected_secs {
        None => UNKNOWN_SECS,
        Some(expected) => expected
            .saturating_mul(u64::from(slow_factor.max(1)))
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
        assert_eq!(deadline(None, 10), Duration::from_secs(900));
        assert_eq!(deadline(Some(0), 10), Duration::from_secs(120));
        assert_eq!(deadline(Some(1), 10), Duration::from_secs(120)); // 90 -> floor
        assert_eq!(deadline(Some(5), 10), Duration::from_secs(210));
        assert_eq!(deadline(Some(5), 1), Duration::from_secs(120));
        assert_eq!(deadline(Some(100), 1), Duration::from_secs(360));
        assert_eq!(deadline(Some(100), 0), Duration::from_secs(360));
        assert_eq!(deadline(Some(600), 10), Duration::from_secs(3 * 3600)); // 18060 -> cap
        assert_eq!(
            deadline(Some(u64::MAX), u32::MAX),
            Duration::from_secs(3 * 3600)
        );
    }
}
