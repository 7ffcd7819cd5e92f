//! Per-CPU counters per reason, and the per-source drop counter.

use aya_ebpf::programs::XdpContext;
use gateway_common::{
    ratelimit::SourceKey,
    stats::{Reason, SourceDrops},
};

use crate::{
    clock::Clock,
    maps::{COUNTERS, DROP_SRC},
};

const BPF_NOEXIST: u64 = 1;

#[inline(always)]
pub fn count(ctx: &XdpContext, reason: Reason) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot; this CPU is the only writer while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
}

#[inline(always)]
pub fn count_source_drop(src: &[u8; 16], reason: Reason, clock: &mut Clock) {
    let now = clock.now();
    let key = SourceKey { addr: *src };
    match DROP_SRC.get_ptr_mut(key) {
        // SAFETY: per-CPU LRU slot; this CPU is the only writer while we run.
        Some(d) => unsafe {
            (*d).packets += 1;
            (*d).last_ns = now;
            (*d).last_reason = reason as u32;
        },
        None => {
            let first = SourceDrops {
                packets: 1,
                last_ns: now,
                last_reason: reason as u32,
                _pad: 0,
            };
            DROP_SRC.insert(key, first, BPF_NOEXIST).ok();
        }
    }
}
