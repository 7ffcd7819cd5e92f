//! The packet's clock, read at most once per packet and only by the paths
//! that need time: a block with an expiry, a token bucket, the per-source
//! drop counter. An exact block without expiry and the packets that meet no
//! budget never call `bpf_ktime_get_ns`.

use aya_ebpf::helpers::bpf_ktime_get_ns;

/// `CLOCK_MONOTONIC` nanoseconds, read on first use.
pub struct Clock {
    now: u64,
}

impl Clock {
    #[inline(always)]
    pub const fn new() -> Self {
        Self { now: 0 }
    }

    /// The time of this packet (the same value on every call).
    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.now == 0 {
            // SAFETY: a helper without arguments or side effects.
            self.now = unsafe { bpf_ktime_get_ns() };
        }
        self.now
    }
}
