//! `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`: block expiries and
//! bucket timestamps in the maps are in this time base.

#![allow(
    unsafe_code,
    reason = "clock_gettime(2) through libc: std's Instant hides the raw CLOCK_MONOTONIC value the maps store"
)]

use std::time::Duration;

/// Nanoseconds of `CLOCK_MONOTONIC` now.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The monotonic deadline `ttl` from now.
pub fn deadline_ns(ttl: Duration) -> u64 {
    monotonic_ns().saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64)
}

/// Seconds since the Unix epoch (for display only).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
