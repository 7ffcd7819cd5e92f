//! Per-source token buckets and per-source limit overrides.
//!
//! Each bucket is kept as a GCRA "theoretical arrival time" (TAT), which is an
//! exact token bucket in one `u64`: with emission interval `T = 1s / rate`, a
//! packet at time `now` is allowed when `max(tat, now) + T <= now + burst * T`,
//! and then `tat` becomes `max(tat, now) + T`. Setting `tat` to 0 refills the
//! bucket completely.

/// Sources tracked at once (least recently seen evicted first).
pub const BUCKETS_MAX: u32 = 1 << 18;
/// Override entries per family.
pub const LIMIT_MAX: u32 = 1 << 14;

/// Key of the bucket map: the source address as IPv6 (IPv4-mapped for v4),
/// masked to the configured IPv6 prefix for v6 sources. Aligned to 8 bytes
/// (its size stays 16, so the map layout is unchanged) so the XDP program
/// builds and copies it as two 8-byte words instead of 16 single bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// Network byte order; IPv4 as `::ffff:a.b.c.d`, IPv6 masked to the bucket prefix.
    pub addr: [u8; 16],
}

/// Value of the bucket map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    /// TAT of the packets-per-second bucket, monotonic ns.
    pub pps_tat: u64,
    /// TAT of the SYN-per-second bucket, monotonic ns.
    pub syn_tat: u64,
}

/// A per-source (IP or CIDR) override of the default limits. A `rate` of 0
/// in a [`crate::config::Limit`] means unlimited for that source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitOverride {
    /// Packets-per-second budget for sources under this prefix.
    pub pps: crate::config::Limit,
    /// New-connection (SYN) budget for sources under this prefix.
    pub syn: crate::config::Limit,
}

/// The verdict of one GCRA step: the new TAT if allowed, `None` if over.
#[inline(always)]
pub fn gcra(tat: u64, now: u64, limit: crate::config::Limit) -> Option<u64> {
    if limit.rate == 0 {
        return Some(tat);
    }
    let interval = 1_000_000_000u64 / limit.rate as u64;
    let burst = if limit.burst == 0 {
        1
    } else {
        limit.burst as u64
    };
    let start = if tat > now { tat } else { now };
    let next = start + interval;
    if next > now + burst * interval {
        None
    } else {
        Some(next)
    }
}

crate::pod!(SourceKey, Buckets, LimitOverride);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limit;

    #[test]
    fn burst_then_refill() {
        let l = Limit { rate: 10, burst: 3 };
        let now = 1_000_000_000_000;
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra(tat, now, l).expect("within burst");
        }
        assert_eq!(gcra(tat, now, l), None, "fourth packet at once is over");
        // 100 ms later one token has come back.
        assert!(gcra(tat, now + 100_000_000, l).is_some());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let l = Limit { rate: 0, burst: 0 };
        assert_eq!(gcra(5, 1, l), Some(5));
    }
}
