//! Bounds-checked parsing: Ethernet, up to two VLAN tags, IPv4 (any IHL) or
//! IPv6 (with up to [`V6_EXT_MAX`] extension headers), then the TCP/UDP
//! destination port. Each step checks `data_end` before reading; anything
//! truncated or unknown ends parsing with `None` (the caller passes the
//! frame).
//!
//! Fragments (RFC 1858, RFC 3128, RFC 7112, RFC 8200 §4.5) are classified in
//! [`Frag`]: a first fragment must carry the whole fixed TCP header (20
//! bytes) or UDP header (8 bytes) within its IP length, a TCP fragment must
//! not start inside the TCP header (offset 1 or 2, in 8-byte units), and an
//! IPv6 header chain must reach the transport header within
//! [`V6_EXT_MAX`] extension headers. Unfragmented IPv4 takes one extra
//! branch on the fragment bits it already reads.

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// The fixed TCP header: ports, sequence numbers, offset and flags.
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// IPv6 extension headers walked before giving up. RFC 8200 §4.1 orders at
/// most hop-by-hop, destination options, routing, fragment, AH, ESP and
/// destination options again (each once, destination options twice), so
/// every conforming chain fits.
pub const V6_EXT_MAX: usize = 8;

/// Fragmentation state of a packet, as far as the filter cares.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment, an IPv6 atomic fragment, or a first fragment that
    /// carries the whole transport header: ports and flags are known.
    Whole,
    /// A later fragment (offset > 0): no transport header, no ports.
    Later,
    /// A fragment or header chain that hides the transport header from
    /// the filter: a first fragment too short for the TCP or UDP header
    /// (RFC 1858 tiny fragment), a TCP fragment at offset 1 or 2 that
    /// overwrites part of the TCP header on reassembly (RFC 3128), an IPv6
    /// first fragment without the whole header chain (RFC 7112), or an IPv6
    /// chain longer than [`V6_EXT_MAX`]. Dropped.
    Evasive,
}

/// A source address, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), network
/// byte order. Aligned to 8 bytes so that a copy or a compare is two 8-byte
/// moves: LLVM copies a bare `[u8; 16]` (alignment 1) byte by byte, 32
/// instructions per copy on the pass path.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// The IPv4 address of an IPv4-mapped one.
    #[inline(always)]
    pub fn v4(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }

    /// The address as two big-endian halves (network order).
    #[inline(always)]
    pub fn halves(&self) -> (u64, u64) {
        let w = self.words();
        (u64::from_be(w[0]), u64::from_be(w[1]))
    }

    /// The address as two native words, for compares.
    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        // SAFETY: 16 bytes, 8-aligned; every bit pattern is a valid u64.
        unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(self.0) }
    }
}

impl PartialEq for Addr {
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        self.words() == other.words()
    }
}

/// What the decisions need to know of a packet.
pub struct Packet {
    /// Source address; IPv4 as IPv4-mapped IPv6.
    pub src: Addr,
    pub is_v4: bool,
    /// Transport facts, when the packet has a parsable TCP/UDP header.
    pub l4: Option<L4>,
    pub frag: Frag,
}

pub struct L4 {
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// A TCP SYN without ACK: a new connection attempt.
    pub syn: bool,
}

/// Returns a pointer to `len` bytes at `off`, or `None` past the frame end.
#[inline(always)]
fn bytes(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let p = ctx.data() + off;
    if p + len > ctx.data_end() {
        return None;
    }
    Some(p as *const u8)
}

#[inline(always)]
fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    let p = bytes(ctx, off, 2)?;
    // SAFETY: `bytes` checked both bytes lie inside the frame.
    Some(unsafe { u16::from_be_bytes([*p, *p.add(1)]) })
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Packet> {
    let mut proto = be16_at(ctx, 12)?;
    let mut off = ETH_HLEN;
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner, or QinQ with 0x8100).
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16_at(ctx, off + 2)?;
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = be16_at(ctx, off + 2)?;
            off += 4;
        }
    }
    match proto {
        ETH_P_IP => parse_v4(ctx, off),
        ETH_P_IPV6 => parse_v6(ctx, off),
        _ => None,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let p = bytes(ctx, off, 20)?;
    // SAFETY: 20 bytes of the IPv4 header are inside the frame.
    let (vihl, frag_hi, frag_lo, l4_proto) = unsafe { (*p, *p.add(6), *p.add(7), *p.add(9)) };
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    // The whole header, options included, must be present.
    bytes(ctx, off, ihl)?;
    let mut src = Addr([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    // SAFETY: bytes 12..16 of the header are inside the checked 20.
    unsafe {
        src.0[12] = *p.add(12);
        src.0[13] = *p.add(13);
        src.0[14] = *p.add(14);
        src.0[15] = *p.add(15);
    }
    // MF flag or a fragment offset: the cold path. Unfragmented packets
    // pay this one test.
    let (l4, frag) = if frag_hi & 0x3f == 0 && frag_lo == 0 {
        (parse_l4(ctx, off + ihl, l4_proto), Frag::Whole)
    } else {
        // SAFETY: total length, bytes 2..4, is inside the checked 20.
        let total = unsafe { u16::from_be_bytes([*p.add(2), *p.add(3)]) } as usize;
        let frag_off = (((frag_hi & 0x1f) as u16) << 8) | frag_lo as u16;
        v4_fragment(
            ctx,
            off + ihl,
            l4_proto,
            frag_off,
            total.saturating_sub(ihl),
        )
    };
    Some(Packet {
        src,
        is_v4: true,
        l4,
        frag,
    })
}

/// An IPv4 fragment with `payload` bytes after the header (by its total
/// length, not the frame, which may carry Ethernet padding or a trailer the
/// kernel trims). `frag_off` is in 8-byte units.
#[inline(always)]
fn v4_fragment(
    ctx: &XdpContext,
    l4_off: usize,
    proto: u8,
    frag_off: u16,
    payload: usize,
) -> (Option<L4>, Frag) {
    if frag_off == 0 {
        return first_fragment(ctx, l4_off, proto, payload);
    }
    (None, later_fragment(proto, frag_off))
}

/// A first fragment must hold the whole transport header (RFC 1858 §3.1
/// for TCP; the same for UDP, whose ports the rate limits need).
#[inline(always)]
fn first_fragment(
    ctx: &XdpContext,
    l4_off: usize,
    proto: u8,
    payload: usize,
) -> (Option<L4>, Frag) {
    let need = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        // No ports the filter looks at.
        _ => return (None, Frag::Whole),
    };
    if payload < need {
        return (None, Frag::Evasive);
    }
    match parse_l4(ctx, l4_off, proto) {
        Some(l4) => (Some(l4), Frag::Whole),
        // The IP length promises the header but the frame ends first.
        None => (None, Frag::Evasive),
    }
}

/// A later TCP fragment starting at byte 8 or 16 overlaps the TCP header
/// (RFC 3128: offset 1 rewrites the flags on reassembly). No conforming
/// sender produces one, since a first fragment carries at least 24 bytes.
#[inline(always)]
fn later_fragment(proto: u8, frag_off: u16) -> Frag {
    if proto == IPPROTO_TCP && (frag_off as usize) * 8 < TCP_HLEN {
        Frag::Evasive
    } else {
        Frag::Later
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let p = bytes(ctx, off, 40)?;
    // SAFETY: the 40-byte fixed header is inside the frame.
    if unsafe { *p } >> 4 != 6 {
        return None;
    }
    let mut src = Addr([0; 16]);
    let mut i = 0;
    while i < 16 {
        // SAFETY: source address bytes 8..24 are inside the checked 40.
        src.0[i] = unsafe { *p.add(8 + i) };
        i += 1;
    }
    // SAFETY: as above.
    let mut next = unsafe { *p.add(6) };
    let mut l4_off = off + 40;
    // Skip extension headers (hop-by-hop, routing, fragment, destination
    // options, AH) up to the transport header.
    let mut is_first = false;
    let mut n = 0;
    while n < V6_EXT_MAX {
        if !is_v6_ext(next) {
            break;
        }
        // Every extension header starts with (next header, length); read
        // both through one checked pointer so the verifier sees the bound.
        let Some(h) = bytes(ctx, l4_off, 8) else {
            // Cut inside the chain: a first fragment must hold the whole
            // chain (RFC 7112); anything else is a truncated frame.
            let frag = if is_first { Frag::Evasive } else { Frag::Whole };
            return Some(Packet {
                src,
                is_v4: false,
                l4: None,
                frag,
            });
        };
        // SAFETY: 8 bytes at `h` are inside the frame.
        let (h_next, h_len, h_frag) = unsafe {
            (
                *h,
                *h.add(1) as usize,
                u16::from_be_bytes([*h.add(2), *h.add(3)]),
            )
        };
        if next == IPPROTO_FRAGMENT {
            let frag_off = h_frag >> 3;
            if frag_off != 0 {
                return Some(Packet {
                    src,
                    is_v4: false,
                    l4: None,
                    frag: later_fragment(h_next, frag_off),
                });
            }
            // Offset 0 with M set: a first fragment. With M clear it is an
            // atomic fragment (RFC 6946), a whole packet. A second fragment
            // header cannot undo the first one's M flag.
            is_first |= h_frag & 1 != 0;
            l4_off += 8;
        } else if next == IPPROTO_AH {
            l4_off += (h_len + 2) * 4;
        } else {
            l4_off += (h_len + 1) * 8;
        }
        next = h_next;
        n += 1;
    }
    if is_v6_ext(next) {
        // Longer than any conforming chain: the transport header is
        // hidden from the filter.
        return Some(Packet {
            src,
            is_v4: false,
            l4: None,
            frag: Frag::Evasive,
        });
    }
    let (l4, frag) = if is_first {
        // SAFETY: payload length, bytes 4..6, is inside the checked 40.
        let payload = unsafe { u16::from_be_bytes([*p.add(4), *p.add(5)]) } as usize;
        let chain = l4_off - (off + 40);
        first_fragment(ctx, l4_off, next, payload.saturating_sub(chain))
    } else {
        (parse_l4(ctx, l4_off, next), Frag::Whole)
    };
    Some(Packet {
        src,
        is_v4: false,
        l4,
        frag,
    })
}

/// The extension headers walked over (RFC 8200 §4; ESP ends the walk, as
/// its payload is encrypted).
#[inline(always)]
fn is_v6_ext(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, proto: u8) -> Option<L4> {
    match proto {
        IPPROTO_TCP => {
            let p = bytes(ctx, off, TCP_HLEN)?;
            // SAFETY: the 20-byte TCP header is inside the frame.
            let (dst_port, flags) =
                unsafe { (u16::from_be_bytes([*p.add(2), *p.add(3)]), *p.add(13)) };
            Some(L4 {
                dst_port,
                syn: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
            })
        }
        IPPROTO_UDP => {
            let p = bytes(ctx, off, UDP_HLEN)?;
            // SAFETY: the 8-byte UDP header is inside the frame.
            let dst_port = unsafe { u16::from_be_bytes([*p.add(2), *p.add(3)]) };
            Some(L4 {
                dst_port,
                syn: false,
            })
        }
        _ => None,
    }
}
