//! Per-source token buckets for packets and new TCP connections, applied only
//! to packets bound for a protected port (and to later IP fragments, whose
//! port cannot be seen). IPv6 sources share a bucket per
//! configured prefix (default /64). A per-source override (LPM) replaces the
//! default limits; a rate of 0 there means unlimited.

use aya_ebpf::maps::lpm_trie::Key;
use gateway_common::{
    config::{FLAG_RATE_LIMIT, PRESENT_LIMIT_V4, PRESENT_LIMIT_V6, XdpConfig},
    ratelimit::{Buckets, LimitOverride, SourceKey, gcra},
    stats::Reason,
};

use crate::{
    clock::Clock,
    maps::*,
    parse::{Frag, Packet},
};

const BPF_NOEXIST: u64 = 1;

/// Returns the drop reason if the packet is over its source's budget.
#[inline(always)]
pub fn over_limit(pkt: &Packet, cfg: &XdpConfig, clock: &mut Clock) -> Option<Reason> {
    if cfg.flags & FLAG_RATE_LIMIT == 0 {
        return None;
    }
    let syn = match &pkt.l4 {
        Some(l4) => {
            if !protected(l4.dst_port) {
                return None;
            }
            l4.syn
        }
        // A later fragment shows no port: it counts against its source's
        // packet budget whatever port its first fragment named, so a
        // limited source cannot flood a protected port with fragments.
        None if pkt.frag == Frag::Later => false,
        None => return None,
    };
    let limits = overrides(pkt, cfg.present).unwrap_or(LimitOverride {
        pps: cfg.pps,
        syn: cfg.syn,
    });
    if limits.pps.rate == 0 && (limits.syn.rate == 0 || !syn) {
        return None;
    }
    let key = group(pkt, cfg.v6_prefix_len);
    let bucket = match BUCKETS.get_ptr_mut(key) {
        Some(b) => b,
        None => {
            BUCKETS.insert(key, Buckets::default(), BPF_NOEXIST).ok();
            BUCKETS.get_ptr_mut(key)?
        }
    };
    // SAFETY: a pointer from a successful lookup in an LRU hash. Concurrent
    // updates from another CPU can lose one update; the bucket stays valid.
    let b = unsafe { &mut *bucket };
    let now = clock.now();
    match gcra(b.pps_tat, now, limits.pps) {
        Some(tat) => b.pps_tat = tat,
        None => return Some(Reason::DroppedPps),
    }
    if syn {
        match gcra(b.syn_tat, now, limits.syn) {
            Some(tat) => b.syn_tat = tat,
            None => return Some(Reason::DroppedSyn),
        }
    }
    None
}

/// Whether `port` is in the protected-port bitmap.
#[inline(always)]
fn protected(port: u16) -> bool {
    PORTS
        .get(u32::from(port >> 6))
        .is_some_and(|w| w & (1u64 << (port & 63)) != 0)
}

#[inline(always)]
fn overrides(pkt: &Packet, present: u32) -> Option<LimitOverride> {
    let bit = if pkt.is_v4 {
        PRESENT_LIMIT_V4
    } else {
        PRESENT_LIMIT_V6
    };
    if present & bit == 0 {
        return None;
    }
    if pkt.is_v4 {
        LIMIT_V4.get(Key::new(32, pkt.src.v4())).copied()
    } else {
        LIMIT_V6.get(Key::new(128, pkt.src.0)).copied()
    }
}

/// The bucket key: the address itself for IPv4, the configured prefix of it
/// for IPv6.
#[inline(always)]
fn group(pkt: &Packet, v6_prefix_len: u32) -> SourceKey {
    if pkt.is_v4 {
        return SourceKey { addr: pkt.src.0 };
    }
    let (hi, lo) = pkt.src.halves();
    let hi = hi & mask64(v6_prefix_len);
    let lo = lo & mask64(v6_prefix_len.saturating_sub(64));
    // SAFETY: two u64 are 16 bytes; any bit pattern is a valid byte array.
    let addr = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([hi.to_be(), lo.to_be()]) };
    SourceKey { addr }
}

/// A mask of the top `bits` bits of a u64 (`bits` >= 64 gives all ones).
#[inline(always)]
fn mask64(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else if bits >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - bits)
    }
}
