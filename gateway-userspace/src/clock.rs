//! `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`: block expiries and
//! bucket timestamps in the XDP maps are in this time base, and the L7 code
//! (escalation, rate limits, cluster) uses it so its deadlines compare with
//! theirs. Also the wall clock in Unix seconds, for display.

#![forbid(unsafe_code)]

use std::time::Duration;

/// Nanoseconds of `CLOCK_MONOTONIC` now.
pub fn monotonic_ns() -> u64 {
    // clock_gettime(2) through rustix: std's Instant hides the raw
    // CLOCK_MONOTONIC value the maps store.
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
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
