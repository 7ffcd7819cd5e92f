//! Per-CPU counters per reason (exact), and the per-source drop counter
//! (batched per CPU, see [`count_source_drop`]).

use aya_ebpf::programs::XdpContext;
use gateway_common::{
    ratelimit::SourceKey,
    stats::{Reason, SourceDrops},
};

use crate::{
    clock::Clock,
    maps::{COUNTERS, DROP_BATCH, DROP_SRC},
    parse::Addr,
};

const BPF_NOEXIST: u64 = 1;

/// Drops of one source batched on a CPU before they are written to
/// `GW_DROP_SRC`.
pub const DROP_BATCH_MAX: u32 = 32;

/// This CPU's batch: the source it last dropped and the drops not yet
/// written (the first drop of a source is written at once).
#[repr(C)]
pub struct DropBatch {
    pub src: Addr,
    pub pending: u32,
    pub reason: u32,
}

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

/// Counts a drop of `src`. The hash lookup and the clock are paid once per
/// [`DROP_BATCH_MAX`] drops of the same source on a CPU, instead of on every
/// drop: repeated drops of the source this CPU dropped last only bump a
/// per-CPU slot (an array lookup the verifier inlines). The first drop of a
/// source is written at once, so a source shows in `gateway stats` from its
/// first dropped packet; its count lags by at most `DROP_BATCH_MAX - 1` per
/// CPU until the batch fills or the CPU drops another source. The per-reason
/// totals in `GW_COUNTERS` stay exact.
#[inline(always)]
pub fn count_source_drop(src: &Addr, reason: Reason, clock: &mut Clock) {
    let Some(batch) = DROP_BATCH.get_ptr_mut(0) else {
        write_source_drop(src, 1, reason as u32, clock);
        return;
    };
    // SAFETY: per-CPU slot; this CPU is the only writer while we run.
    let b = unsafe { &mut *batch };
    if b.src == *src && b.reason == reason as u32 {
        b.pending += 1;
        if b.pending >= DROP_BATCH_MAX {
            write_source_drop(src, b.pending as u64, b.reason, clock);
            b.pending = 0;
        }
        return;
    }
    if b.pending > 0 {
        let old = b.src;
        write_source_drop(&old, b.pending as u64, b.reason, clock);
    }
    write_source_drop(src, 1, reason as u32, clock);
    b.src = *src;
    b.reason = reason as u32;
    b.pending = 0;
}

#[inline(always)]
fn write_source_drop(src: &Addr, packets: u64, reason: u32, clock: &mut Clock) {
    let now = clock.now();
    let key = SourceKey { addr: src.0 };
    match DROP_SRC.get_ptr_mut(key) {
        // SAFETY: per-CPU LRU slot; this CPU is the only writer while we run.
        Some(d) => unsafe {
            (*d).packets += packets;
            (*d).last_ns = now;
            (*d).last_reason = reason;
        },
        None => {
            let first = SourceDrops {
                packets,
                last_ns: now,
                last_reason: reason,
                _pad: 0,
            };
            DROP_SRC.insert(key, first, BPF_NOEXIST).ok();
        }
    }
}
