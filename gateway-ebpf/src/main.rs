//! The gateway's XDP program: per source address, pass allowlisted sources,
//! drop blocklisted ones, drop fragments that hide the transport header, and
//! drop sources over their packet or new-connection budget on the protected
//! ports. Every decision reads maps that userspace
//! owns; the program writes only its counters and token buckets.
#![no_std]
#![no_main]
#![allow(
    missing_docs,
    reason = "aya's #[xdp] emits each program's exported entry point without its docstring; a BPF object has no Rust API"
)]

mod acl;
mod clock;
mod maps;
mod parse;
mod ratelimit;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use gateway_common::stats::Reason;

#[xdp]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    let Some(pkt) = parse::parse(&ctx) else {
        stats::count(&ctx, Reason::ParsePass);
        return xdp_action::XDP_PASS;
    };
    let mut clock = clock::Clock::new();
    let reason = decide(&pkt, &mut clock);
    stats::count(&ctx, reason);
    if reason.is_drop() {
        stats::count_source_drop(&pkt.src, reason, &mut clock);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// An empty program (never attached): BPF_PROG_TEST_RUN measures it beside
/// `gateway_xdp` so benchmarks can subtract the test harness's own cost.
#[xdp]
pub fn gateway_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The decision order: allowlist, blocklist, evasive fragments, rate
/// limits. The verdict follows from the reason (`Reason::is_drop`); the
/// packet's address is passed by reference all the way to the map lookups.
#[inline(always)]
fn decide(pkt: &parse::Packet, clock: &mut clock::Clock) -> Reason {
    // Userspace writes the config before attaching; without it, do nothing.
    let Some(cfg) = maps::CONFIG.get(0) else {
        return Reason::Passed;
    };
    if acl::allowlisted(pkt, cfg.present) {
        return Reason::Allowlisted;
    }
    if acl::blocked(pkt, cfg, clock) {
        return Reason::DroppedBlocklist;
    }
    if pkt.frag == parse::Frag::Evasive {
        return Reason::DroppedFragment;
    }
    if let Some(reason) = ratelimit::over_limit(pkt, cfg, clock) {
        return reason;
    }
    Reason::Passed
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
