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
    let mut clock = clock::Clock::new();
    let (action, reason, source) = decide(&ctx, &mut clock);
    stats::count(&ctx, reason);
    if reason.is_drop()
        && let Some(source) = source
    {
        stats::count_source_drop(&source, reason, &mut clock);
    }
    action
}

/// An empty program (never attached): BPF_PROG_TEST_RUN measures it beside
/// `gateway_xdp` so benchmarks can subtract the test harness's own cost.
#[xdp]
pub fn gateway_xdp_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The decision order: parse, allowlist, blocklist, evasive fragments,
/// rate limits.
#[inline(always)]
fn decide(ctx: &XdpContext, clock: &mut clock::Clock) -> (u32, Reason, Option<[u8; 16]>) {
    let Some(pkt) = parse::parse(ctx) else {
        return (xdp_action::XDP_PASS, Reason::ParsePass, None);
    };
    // Userspace writes the config before attaching; without it, do nothing.
    let Some(cfg) = maps::CONFIG.get(0) else {
        return (xdp_action::XDP_PASS, Reason::Passed, None);
    };
    if acl::allowlisted(&pkt, cfg.present) {
        return (xdp_action::XDP_PASS, Reason::Allowlisted, None);
    }
    if acl::blocked(&pkt, cfg, clock) {
        return (
            xdp_action::XDP_DROP,
            Reason::DroppedBlocklist,
            Some(pkt.src),
        );
    }
    if pkt.frag == parse::Frag::Evasive {
        return (xdp_action::XDP_DROP, Reason::DroppedFragment, Some(pkt.src));
    }
    if let Some(reason) = ratelimit::over_limit(&pkt, cfg, clock) {
        return (xdp_action::XDP_DROP, reason, Some(pkt.src));
    }
    (xdp_action::XDP_PASS, Reason::Passed, None)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
