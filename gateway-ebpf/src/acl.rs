//! Allowlist and blocklist lookups. The allowlist is CIDR-only (an exact
//! address is a /32 or /128); the blocklist has an exact hash map (cheap for
//! millions of single addresses) and, for ranges, an LPM trie plus the same
//! entries in a hash map keyed by (prefix length, network), which is the
//! cheaper lookup while the ranges use few distinct prefix lengths.

use aya_ebpf::maps::lpm_trie::Key;
use gateway_common::{
    acl::{BlockEntry, HASHED_PREFIX_LENS_MAX, NetKeyV4, NetKeyV6},
    config::*,
};

use crate::{clock::Clock, maps::*, parse::Packet};

#[inline(always)]
pub fn allowlisted(pkt: &Packet, present: u32) -> bool {
    if pkt.is_v4 {
        present & PRESENT_ALLOW_V4 != 0 && ALLOW_V4.get(Key::new(32, pkt.src.v4())).is_some()
    } else {
        present & PRESENT_ALLOW_V6 != 0 && ALLOW_V6.get(Key::new(128, pkt.src.0)).is_some()
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

/// Whether `pkt`'s source is in the blocklist: the exact map first (one
/// hash lookup), then the CIDR blocks, either one hash lookup per prefix
/// length in use (while a family has at most `HASHED_PREFIX_LENS_MAX`
/// lengths) or the LPM trie.
#[inline(always)]
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "the address is passed by reference on purpose: by value it is copied byte by byte"
)]
pub fn blocked(pkt: &Packet, cfg: &XdpConfig, clock: &mut Clock) -> bool {
    let present = cfg.present;
    if pkt.is_v4 {
        let a = pkt.src.v4();
        if present & PRESENT_BLOCK_V4 != 0 && active(BLOCK_V4.get_ptr(a), clock) {
            return true;
        }
        if present & PRESENT_BLOCK_CIDR_V4 == 0 {
            return false;
        }
        let lens = &cfg.block_prefix_lens[0];
        if lens.count == 0 {
            return active(
                BLOCK_CIDR_V4.get(Key::new(32, a)).map(|e| e as *const _),
                clock,
            );
        }
        let addr = u32::from_be_bytes(a);
        for i in 0..HASHED_PREFIX_LENS_MAX {
            if i >= usize::from(lens.count) {
                break;
            }
            let len = u32::from(lens.lens[i]).min(32);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let key = NetKeyV4 {
                prefix_len: len,
                addr: (addr & mask).to_be_bytes(),
            };
            if active(BLOCK_NET_V4.get_ptr(key), clock) {
                return true;
            }
        }
        false
    } else {
        if present & PRESENT_BLOCK_V6 != 0 && active(BLOCK_V6.get_ptr(&pkt.src.0), clock) {
            return true;
        }
        if present & PRESENT_BLOCK_CIDR_V6 == 0 {
            return false;
        }
        let lens = &cfg.block_prefix_lens[1];
        if lens.count == 0 {
            return active(
                BLOCK_CIDR_V6
                    .get(Key::new(128, pkt.src.0))
                    .map(|e| e as *const _),
                clock,
            );
        }
        let (hi, lo) = pkt.src.halves();
        for i in 0..HASHED_PREFIX_LENS_MAX {
            if i >= usize::from(lens.count) {
                break;
            }
            let len = u32::from(lens.lens[i]).min(128);
            let hi_mask = u64::MAX.checked_shl(64 - len.min(64)).unwrap_or(0);
            let lo_mask = u64::MAX
                .checked_shl(64 - len.saturating_sub(64))
                .unwrap_or(0);
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&(hi & hi_mask).to_be_bytes());
            addr[8..].copy_from_slice(&(lo & lo_mask).to_be_bytes());
            let key = NetKeyV6 {
                prefix_len: len,
                addr,
            };
            if active(BLOCK_NET_V6.get_ptr(key), clock) {
                return true;
            }
        }
        false
    }
}
