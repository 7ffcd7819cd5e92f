//! Allowlist and blocklist lookups. The allowlist is CIDR-only (an exact
//! address is a /32 or /128); the blocklist has an exact hash map (cheap for
//! millions of single addresses) and an LPM trie for ranges.

use aya_ebpf::maps::lpm_trie::Key;
use gateway_common::{acl::BlockEntry, config::*};

use crate::{clock::Clock, maps::*, parse::Packet};

#[inline(always)]
fn v4(src: &[u8; 16]) -> [u8; 4] {
    [src[12], src[13], src[14], src[15]]
}

#[inline(always)]
pub fn allowlisted(pkt: &Packet, present: u32) -> bool {
    if pkt.is_v4 {
        present & PRESENT_ALLOW_V4 != 0 && ALLOW_V4.get(Key::new(32, v4(&pkt.src))).is_some()
    } else {
        present & PRESENT_ALLOW_V6 != 0 && ALLOW_V6.get(Key::new(128, pkt.src)).is_some()
    }
}

#[inline(always)]
fn active(entry: Option<*const BlockEntry>, clock: &mut Clock) -> bool {
    let Some(e) = entry else {
        return false;
    };
    // SAFETY: a pointer from a successful map lookup; only its expiry is
    // read, so a concurrent update cannot mislead us beyond that one packet.
    let expires = unsafe { (*e).expires_ns };
    // A block without expiry needs no clock.
    expires == 0 || clock.now() < expires
}

#[inline(always)]
pub fn blocked(pkt: &Packet, present: u32, clock: &mut Clock) -> bool {
    if pkt.is_v4 {
        let a = v4(&pkt.src);
        if present & PRESENT_BLOCK_V4 != 0 && active(BLOCK_V4.get_ptr(a), clock) {
            return true;
        }
        present & PRESENT_BLOCK_CIDR_V4 != 0
            && active(
                BLOCK_CIDR_V4.get(Key::new(32, a)).map(|e| e as *const _),
                clock,
            )
    } else {
        if present & PRESENT_BLOCK_V6 != 0 && active(BLOCK_V6.get_ptr(pkt.src), clock) {
            return true;
        }
        present & PRESENT_BLOCK_CIDR_V6 != 0
            && active(
                BLOCK_CIDR_V6
                    .get(Key::new(128, pkt.src))
                    .map(|e| e as *const _),
                clock,
            )
    }
}
