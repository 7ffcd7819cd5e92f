//! Bounds-checked parsing: Ethernet, up to two VLAN tags, IPv4 (any IHL) or
//! IPv6 (with up to four extension headers), then the TCP/UDP destination
//! port. Each step checks `data_end` before reading; anything truncated or
//! unknown ends parsing with `None` (the caller passes the frame).

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the decisions need to know of a packet.
pub struct Packet {
    /// Source address; IPv4 as IPv4-mapped IPv6.
    pub src: [u8; 16],
    pub is_v4: bool,
    /// Transport facts, when the packet has a parsable TCP/UDP header.
    pub l4: Option<L4>,
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
    let mut src = [0u8; 16];
    src[10] = 0xff;
    src[11] = 0xff;
    // SAFETY: bytes 12..16 of the header are inside the checked 20.
    unsafe {
        src[12] = *p.add(12);
        src[13] = *p.add(13);
        src[14] = *p.add(14);
        src[15] = *p.add(15);
    }
    // Fragment offset != 0: no transport header in this fragment.
    let frag_off = (((frag_hi & 0x1f) as u16) << 8) | frag_lo as u16;
    let l4 = if frag_off == 0 {
        parse_l4(ctx, off + ihl, l4_proto)
    } else {
        None
    };
    Some(Packet {
        src,
        is_v4: true,
        l4,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, off: usize) -> Option<Packet> {
    let p = bytes(ctx, off, 40)?;
    // SAFETY: the 40-byte fixed header is inside the frame.
    if unsafe { *p } >> 4 != 6 {
        return None;
    }
    let mut src = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        // SAFETY: source address bytes 8..24 are inside the checked 40.
        src[i] = unsafe { *p.add(8 + i) };
        i += 1;
    }
    // SAFETY: as above.
    let mut next = unsafe { *p.add(6) };
    let mut l4_off = off + 40;
    let mut transport = true;
    // Skip up to four extension headers (hop-by-hop, routing, fragment,
    // destination options, AH). Anything deeper: no transport info.
    let mut n = 0;
    while n < 4 {
        // Every extension header starts with (next header, length); read
        // both through one checked pointer so the verifier sees the bound.
        let Some(h) = bytes(ctx, l4_off, 8) else {
            return Some(Packet {
                src,
                is_v4: false,
                l4: None,
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
        match next {
            0 | 43 | 60 => {
                next = h_next;
                l4_off += (h_len + 1) * 8;
            }
            44 => {
                next = h_next;
                l4_off += 8;
                if h_frag & 0xfff8 != 0 {
                    transport = false;
                    break;
                }
            }
            51 => {
                next = h_next;
                l4_off += (h_len + 2) * 4;
            }
            _ => break,
        }
        n += 1;
    }
    let l4 = if transport {
        parse_l4(ctx, l4_off, next)
    } else {
        None
    };
    Some(Packet {
        src,
        is_v4: false,
        l4,
    })
}

#[inline(always)]
fn parse_l4(ctx: &XdpContext, off: usize, proto: u8) -> Option<L4> {
    match proto {
        IPPROTO_TCP => {
            let p = bytes(ctx, off, 20)?;
            // SAFETY: the 20-byte TCP header is inside the frame.
            let (dst_port, flags) =
                unsafe { (u16::from_be_bytes([*p.add(2), *p.add(3)]), *p.add(13)) };
            Some(L4 {
                dst_port,
                syn: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
            })
        }
        IPPROTO_UDP => {
            let p = bytes(ctx, off, 8)?;
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
