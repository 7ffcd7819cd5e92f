//! Fuzzing the XDP packet parser in the kernel: the real compiled program
//! is run through BPF_PROG_TEST_RUN on random frames (well-formed frames
//! from `test_support::frames`, then truncated and with random header bytes
//! changed), and each verdict and counter is compared with an independent
//! reference parser written here from the rules in `gateway-ebpf/src/parse.rs`
//! (Ethernet, up to two VLAN tags, IPv4 with any IHL, IPv6 with up to eight
//! extension headers, and the fragment rules: tiny first fragments, TCP
//! fragments at offset 1-2, IPv6 first fragments without the whole chain
//! and longer chains are `dropped_fragment`; later fragments carry no ports
//! and count against their source's packet budget).
//!
//! The map state makes every parse result visible: one source per family
//! is blocked (its verdict shows the source address was read right), one
//! has its packet bucket exhausted and one its SYN bucket (so the verdict
//! on the protected port shows the port and SYN flag were read right), and
//! the `parse_pass` counter shows whether the frame parsed at all. Only the
//! per-reason counters (exact) are compared, not the per-source drop
//! counters (batched per CPU).
//!
//! The PRNG is seeded (`XDP_FUZZ_SEED`, default fixed) and the count bounded
//! (`XDP_FUZZ_FRAMES`, default 50 000); a mismatch prints the seed, the
//! iteration and the frame in hex. libFuzzer cannot drive this: the code
//! under test is the verified BPF object, not host code.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU16,
};

use gateway::{
    config::{LimitSpec, XdpSection},
    net::Net,
    xdp::{Loader, XdpMaps, apply::apply, loader::LoadedXdp, maps::source_key},
};
use gateway_common::{
    acl::{BlockEntry, BlockSource},
    ratelimit::Buckets,
    stats::Reason,
};
use test_support::{
    frames::{Frame, L4},
    guard::PinDir,
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PORT: u16 = 8080;

const BLOCKED_V4: &str = "192.0.2.66";
const BLOCKED_V6: &str = "2001:db8::66";
const PPS_SPENT_V4: &str = "192.0.2.77";
/// IPv6 sources share a bucket per /64 (the default `v6_prefix_len`).
const PPS_SPENT_V6: &str = "2001:db8:77::1";
const SYN_SPENT_V4: &str = "192.0.2.88";
const SYN_SPENT_V6: &str = "2001:db8:88::1";
const SOURCES: [&str; 8] = [
    "192.0.2.1",
    "2001:db8:1::1",
    BLOCKED_V4,
    BLOCKED_V6,
    PPS_SPENT_V4,
    PPS_SPENT_V6,
    SYN_SPENT_V4,
    SYN_SPENT_V6,
];

/// What the reference parser finds in a frame.
#[derive(Debug, PartialEq)]
struct Parsed {
    src: IpAddr,
    /// (destination port, SYN without ACK) of a parsable TCP/UDP header.
    l4: Option<(u16, bool)>,
    frag: RefFrag,
}

/// Fragment state, as the filter's rules classify it.
#[derive(Debug, PartialEq, Clone, Copy)]
enum RefFrag {
    /// Unfragmented, atomic, or a first fragment with the whole transport
    /// header.
    Whole,
    /// A later fragment: no ports, counts against the packet budget.
    Later,
    /// Hides the transport header: dropped as `dropped_fragment`.
    Evasive,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const FRAGMENT: u8 = 44;
/// Extension headers the program walks before calling the chain evasive.
const V6_EXT_MAX: usize = 8;

fn be16(f: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]))
}

/// The parser's rules, written independently of `gateway-ebpf`:
/// RFC 1858 (a first fragment holds the whole TCP or UDP header by its IP
/// length and in the frame), RFC 3128 (no TCP fragment at offset 1 or 2),
/// RFC 7112 (an IPv6 first fragment holds the whole header chain) and at
/// most eight IPv6 extension headers.
fn reference_parse(f: &[u8]) -> Option<Parsed> {
    let mut proto = be16(f, 12)?;
    let mut off = 14;
    for _ in 0..2 {
        if proto == 0x8100 || proto == 0x88a8 {
            proto = be16(f, off + 2)?;
            off += 4;
        }
    }
    match proto {
        0x0800 => {
            let h = f.get(off..off + 20)?;
            if h[0] >> 4 != 4 {
                return None;
            }
            let ihl = (h[0] & 0x0f) as usize * 4;
            if ihl < 20 || f.len() < off + ihl {
                return None;
            }
            let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
            let more = h[6] & 0x20 != 0;
            let fragment_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            let (l4, frag) = if !more && fragment_offset == 0 {
                (reference_l4(f, off + ihl, h[9]), RefFrag::Whole)
            } else if fragment_offset == 0 {
                reference_first(f, off + ihl, h[9], total.saturating_sub(ihl))
            } else {
                (None, reference_later(h[9], fragment_offset))
            };
            Some(Parsed { src, l4, frag })
        }
        0x86dd => {
            let h = f.get(off..off + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&h[8..24]).unwrap()));
            let is_ext = |n: u8| matches!(n, 0 | 43 | 44 | 51 | 60);
            let mut next = h[6];
            let mut at = off + 40;
            let mut first = false;
            for _ in 0..V6_EXT_MAX {
                if !is_ext(next) {
                    break;
                }
                let Some(e) = f.get(at..at + 8) else {
                    // Cut inside the chain: evasive only in a first fragment.
                    let frag = if first {
                        RefFrag::Evasive
                    } else {
                        RefFrag::Whole
                    };
                    return Some(Parsed {
                        src,
                        l4: None,
                        frag,
                    });
                };
                match next {
                    FRAGMENT => {
                        let field = u16::from_be_bytes([e[2], e[3]]);
                        if field >> 3 != 0 {
                            return Some(Parsed {
                                src,
                                l4: None,
                                frag: reference_later(e[0], field >> 3),
                            });
                        }
                        // M set at offset 0: a first fragment (sticky).
                        first |= field & 1 != 0;
                        at += 8;
                    }
                    // AH (RFC 4302): (len + 2) * 4.
                    51 => at += (e[1] as usize + 2) * 4,
                    // Hop-by-hop, routing, destination options: (len + 1) * 8.
                    _ => at += (e[1] as usize + 1) * 8,
                }
                next = e[0];
            }
            if is_ext(next) {
                return Some(Parsed {
                    src,
                    l4: None,
                    frag: RefFrag::Evasive,
                });
            }
            let (l4, frag) = if first {
                let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
                reference_first(f, at, next, payload.saturating_sub(at - (off + 40)))
            } else {
                (reference_l4(f, at, next), RefFrag::Whole)
            };
            Some(Parsed { src, l4, frag })
        }
        _ => None,
    }
}

/// A first fragment with `payload` bytes after the IP header(s) by the IP
/// length: TCP needs 20 of them and UDP 8, both in the length and the frame.
fn reference_first(
    f: &[u8],
    off: usize,
    proto: u8,
    payload: usize,
) -> (Option<(u16, bool)>, RefFrag) {
    let need = match proto {
        TCP => 20,
        UDP => 8,
        _ => return (None, RefFrag::Whole),
    };
    if payload < need {
        return (None, RefFrag::Evasive);
    }
    match reference_l4(f, off, proto) {
        Some(l4) => (Some(l4), RefFrag::Whole),
        None => (None, RefFrag::Evasive),
    }
}

/// A later fragment; a TCP one at offset 1 or 2 (8-byte units) overlaps the
/// TCP header.
fn reference_later(proto: u8, offset: u16) -> RefFrag {
    if proto == TCP && offset < 3 {
        RefFrag::Evasive
    } else {
        RefFrag::Later
    }
}

fn reference_l4(f: &[u8], off: usize, proto: u8) -> Option<(u16, bool)> {
    match proto {
        TCP => {
            let t = f.get(off..off + 20)?;
            Some((u16::from_be_bytes([t[2], t[3]]), t[13] & 0x12 == 0x02))
        }
        UDP => {
            let u = f.get(off..off + 8)?;
            Some((u16::from_be_bytes([u[2], u[3]]), false))
        }
        _ => None,
    }
}

/// The verdict and counter the program must produce for a frame: parse,
/// blocklist, evasive fragments, then the buckets (a later fragment counts
/// against its source's packet budget, never the SYN one).
fn expected(f: &[u8]) -> (u32, Reason) {
    let Some(p) = reference_parse(f) else {
        return (XDP_PASS, Reason::ParsePass);
    };
    let is = |a: &str| p.src == a.parse::<IpAddr>().unwrap();
    let same_64 = |a: &str| match (p.src, a.parse::<IpAddr>().unwrap()) {
        (IpAddr::V6(s), IpAddr::V6(b)) => s.octets()[..8] == b.octets()[..8],
        _ => false,
    };
    if is(BLOCKED_V4) || is(BLOCKED_V6) {
        return (XDP_DROP, Reason::DroppedBlocklist);
    }
    if p.frag == RefFrag::Evasive {
        return (XDP_DROP, Reason::DroppedFragment);
    }
    let syn = match (p.l4, p.frag) {
        (Some((PORT, syn)), _) => syn,
        (None, RefFrag::Later) => false,
        _ => return (XDP_PASS, Reason::Passed),
    };
    if is(PPS_SPENT_V4) || same_64(PPS_SPENT_V6) {
        (XDP_DROP, Reason::DroppedPps)
    } else if syn && (is(SYN_SPENT_V4) || same_64(SYN_SPENT_V6)) {
        (XDP_DROP, Reason::DroppedSyn)
    } else {
        (XDP_PASS, Reason::Passed)
    }
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A well-formed frame with random layers, then damaged at random.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let src = rng.pick(&SOURCES);
    let port = if rng.below(3) == 0 {
        rng.next() as u16
    } else {
        PORT
    };
    let any = rng.next() as u8;
    let flags = rng.pick(&[0x02, 0x12, 0x10, 0x18, 0x03, any]);
    let mut frame = match rng.below(3) {
        0 => Frame::tcp(src, port, flags),
        1 => Frame::udp(src, port),
        _ => {
            let mut f = Frame::tcp(src, port, flags);
            f.l4 = L4::Icmp;
            f
        }
    };
    for _ in 0..rng.below(4) {
        frame = frame.vlan(
            rng.pick(&[0x8100, 0x88a8, 0x8100]),
            rng.next() as u16 & 0x0fff,
        );
    }
    let v4 = src.contains('.');
    if v4 {
        frame = frame.options(rng.below(11) as usize * 4);
    }
    let ip = 14 + 4 * frame.vlans.len();
    let mut bytes = frame.payload(rng.below(64) as usize).build();
    if v4 {
        // Flags and fragment offset: DF, a first fragment (MF), later
        // fragments, or random.
        let any = rng.next() as u16;
        let frag = rng.pick(&[
            0x4000, 0x2000, 0x0000, 0x2001, 0x0001, 0x2002, 0x0003, 0x1fff, any,
        ]);
        bytes[ip + 6..ip + 8].copy_from_slice(&frag.to_be_bytes());
        if rng.below(4) == 0 {
            // A total length that ends inside the transport header (a tiny
            // first fragment when MF is set).
            let ihl = (bytes[ip] & 0x0f) as u16 * 4;
            let total = ihl + rng.below(28) as u16;
            bytes[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        }
    } else {
        insert_ipv6_extensions(rng, &mut bytes, ip);
    }
    // Damage: change header bytes (lengths, versions, next-header values,
    // fragment fields all live in the first ~160 bytes), then maybe cut.
    for _ in 0..rng.below(5) {
        let at = rng.below(bytes.len().min(160) as u64) as usize;
        bytes[at] = match rng.below(3) {
            0 => rng.next() as u8,
            1 => bytes[at] ^ (1 << rng.below(8)),
            _ => rng.pick(&[0, 1, 0x45, 0x4f, 0x60, 0x81, 0x86, 0xdd, 0xff, 6, 17, 44]),
        };
    }
    if rng.below(4) == 0 {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        let keep = 14 + rng.below(bytes.len() as u64 - 13) as usize;
        bytes.truncate(keep);
    }
    bytes
}

/// Inserts up to five IPv6 extension headers (sometimes eight to ten, past
/// the program's limit) after the fixed header at `ip`, each of a random
/// length in its own unit (AH: 4 bytes, the others 8), fragment headers
/// with random offset and M flag, chained through their next-header fields
/// to the original transport protocol; sometimes the payload length then
/// ends inside the chain or the transport header.
fn insert_ipv6_extensions(rng: &mut Rng, bytes: &mut Vec<u8>, ip: usize) {
    let count = if rng.below(8) == 0 {
        8 + rng.below(3)
    } else {
        rng.below(6)
    };
    if count == 0 {
        return;
    }
    let kinds: Vec<u8> = (0..count)
        .map(|_| rng.pick(&[0, 43, 60, 44, 51, 59]))
        .collect();
    let transport = bytes[ip + 6];
    let mut chain = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(transport);
        let len = rng.below(3) as u8;
        let size = match kind {
            44 => 8,
            51 => (len as usize + 2) * 4,
            _ => (len as usize + 1) * 8,
        };
        let mut h = vec![0u8; size];
        h[0] = next;
        h[1] = if kind == 44 { 0 } else { len };
        if kind == 44 {
            let any = rng.next() as u16;
            let frag = rng.pick(&[0x0000, 0x0001, 0x0001, 0x0008, 0x0009, 0x0011, any]);
            h[2..4].copy_from_slice(&frag.to_be_bytes());
        }
        chain.extend_from_slice(&h);
    }
    bytes[ip + 6] = kinds[0];
    let mut payload_len = u16::from_be_bytes([bytes[ip + 4], bytes[ip + 5]]) as usize + chain.len();
    if rng.below(4) == 0 {
        payload_len = chain.len().saturating_sub(8) + rng.below(36) as usize;
    }
    bytes[ip + 4..ip + 6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    bytes.splice(ip + 40..ip + 40, chain);
}

fn block(maps: &mut XdpMaps, addr: &str) {
    let entry = BlockEntry {
        expires_ns: 0,
        created_unix: 0,
        source: BlockSource::Operator as u32,
        offences: 1,
        reason: [0; 48],
    };
    maps.block_add(&addr.parse::<Net>().unwrap(), entry)
        .unwrap();
}

/// Puts a bucket's theoretical arrival time far in the future: every packet
/// it limits is over budget, whatever the clock says.
fn spend(maps: &mut XdpMaps, addr: &str, pps: bool) {
    let ip: IpAddr = addr.parse().unwrap();
    let mut key = source_key(ip);
    if ip.is_ipv6() {
        key.addr[8..].fill(0);
    }
    let far = u64::MAX / 2;
    let b = if pps {
        Buckets {
            pps_tat: far,
            syn_tat: 0,
        }
    } else {
        Buckets {
            pps_tat: 0,
            syn_tat: far,
        }
    };
    maps.set_bucket(&key, b).unwrap();
}

fn counters(maps: &XdpMaps) -> Vec<(Reason, u64)> {
    maps.counters()
        .unwrap()
        .into_iter()
        .map(|(r, c)| (r, c.packets))
        .collect()
}

#[test]
fn random_frames_match_the_reference_parser() {
    if !require_root("random_frames_match_the_reference_parser") {
        return;
    }
    let seed: u64 = std::env::var("XDP_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("XDP_FUZZ_SEED is a number"))
        .unwrap_or(0x5eed_f00d_cafe_0001);
    let frames: u64 = std::env::var("XDP_FUZZ_FRAMES")
        .ok()
        .map(|s| s.parse().expect("XDP_FUZZ_FRAMES is a number"))
        .unwrap_or(50_000);
    let pin = PinDir::new();
    let (prog, mut maps): (LoadedXdp, XdpMaps) = Loader::new(&pin.path)
        .load()
        .expect("program loads and passes the verifier");
    let mut section = XdpSection {
        protected_ports: vec![NonZeroU16::new(PORT).unwrap()],
        ..XdpSection::default()
    };
    section.rate_limit.pps = LimitSpec::new(1_000_000, 1_000_000).unwrap();
    section.rate_limit.syn = LimitSpec::new(1_000_000, 1_000_000).unwrap();
    apply(&mut maps, &section).expect("config written to maps");
    block(&mut maps, BLOCKED_V4);
    block(&mut maps, BLOCKED_V6);
    spend(&mut maps, PPS_SPENT_V4, true);
    spend(&mut maps, PPS_SPENT_V6, true);
    spend(&mut maps, SYN_SPENT_V4, false);
    spend(&mut maps, SYN_SPENT_V6, false);

    // Any seed, 0 included, gives a non-zero xorshift state.
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut before = counters(&maps);
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..frames {
        let frame = random_frame(&mut rng);
        let (want_action, want_reason) = expected(&frame);
        let (action, _) = prog.test_run(&frame, 1).expect("BPF_PROG_TEST_RUN");
        let after = counters(&maps);
        let moved: Vec<Reason> = after
            .iter()
            .zip(&before)
            .filter(|((_, a), (_, b))| a != b)
            .map(|((r, _), _)| *r)
            .collect();
        let context = || {
            format!(
                "seed {seed}, frame {i}: {}\nreference: {:?}",
                frame.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                reference_parse(&frame)
            )
        };
        assert_eq!(action, want_action, "verdict differs; {}", context());
        assert_eq!(moved, [want_reason], "counter differs; {}", context());
        *seen.entry(format!("{want_reason:?}")).or_default() += 1;
        before = after;
    }
    println!("{frames} frames, seed {seed}: {seen:?}");
    // The frames must reach every outcome, or the comparison proves little.
    for reason in [
        "ParsePass",
        "Passed",
        "DroppedBlocklist",
        "DroppedPps",
        "DroppedSyn",
        "DroppedFragment",
    ] {
        assert!(
            seen.get(reason).copied().unwrap_or(0) * 500 >= frames,
            "too few frames ended as {reason}: {seen:?}"
        );
    }
}
