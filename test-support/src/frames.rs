//! Builders for synthetic Ethernet frames fed to BPF_PROG_TEST_RUN.
//! Checksums are left zero: the XDP program does not read them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The TCP SYN flag bit.
pub const TCP_SYN: u8 = 0x02;
/// The TCP ACK flag bit.
pub const TCP_ACK: u8 = 0x10;

/// Transport header to append.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    /// TCP to `dst_port` with the flag bits `flags`.
    Tcp {
        /// The destination port.
        dst_port: u16,
        /// The flag bits ([`TCP_SYN`], [`TCP_ACK`], ...).
        flags: u8,
    },
    /// UDP to `dst_port`.
    Udp {
        /// The destination port.
        dst_port: u16,
    },
    /// ICMP echo (no ports).
    Icmp,
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (its family picks IPv4 or IPv6).
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// IPv4 options bytes (multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// IPv6 extension headers to insert before the transport header
    /// (next-header values 0, 43, 60 as 8-byte headers, 44 as fragment).
    pub ipv6_ext: Vec<u8>,
    /// The transport header.
    pub l4: L4,
    /// Payload bytes after the transport header (zeros).
    pub payload: usize,
    /// Makes the frame an IP fragment: the IPv4 flags and offset, or, for
    /// IPv6, the contents of every fragment header in `ipv6_ext`.
    pub frag: Option<Fragment>,
    /// Keep only the first n bytes of the transport header (a tiny first
    /// fragment, or a truncated segment whose IP length says so).
    pub l4_len: Option<usize>,
    /// IPv4 identification / IPv6 fragment identification.
    pub id: u32,
}

/// Fragment fields: offset in 8-byte units and the More Fragments flag.
#[derive(Clone, Copy, Debug)]
pub struct Fragment {
    /// The fragment offset in 8-byte units.
    pub offset: u16,
    /// The More Fragments flag.
    pub more: bool,
}

impl Frame {
    /// A TCP segment from `src` (IPv4 or IPv6 text) to 10.0.0.1 or 2001:db8::1.
    pub fn tcp(src: &str, dst_port: u16, flags: u8) -> Self {
        let src: IpAddr = src.parse().expect("test address");
        let dst = if src.is_ipv4() {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        } else {
            IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().expect("static"))
        };
        Self {
            vlans: vec![],
            src,
            dst,
            ipv4_options: 0,
            ipv6_ext: vec![],
            l4: L4::Tcp { dst_port, flags },
            payload: 0,
            frag: None,
            l4_len: None,
            id: 1,
        }
    }

    /// A UDP datagram from `src`, otherwise as [`Frame::tcp`].
    pub fn udp(src: &str, dst_port: u16) -> Self {
        Self {
            l4: L4::Udp { dst_port },
            ..Self::tcp(src, 0, 0)
        }
    }

    /// Adds a VLAN tag (inside the ones added before).
    pub fn vlan(mut self, tpid: u16, id: u16) -> Self {
        self.vlans.push((tpid, id));
        self
    }

    /// IPv4 options of `bytes` bytes (a multiple of 4, at most 40).
    pub fn options(mut self, bytes: usize) -> Self {
        assert!(bytes.is_multiple_of(4) && bytes <= 40);
        self.ipv4_options = bytes;
        self
    }

    /// Adds an IPv6 extension header of type `next_header`.
    pub fn ext(mut self, next_header: u8) -> Self {
        self.ipv6_ext.push(next_header);
        self
    }

    /// `n` payload bytes.
    pub fn payload(mut self, n: usize) -> Self {
        self.payload = n;
        self
    }

    /// An IP fragment at `offset` (8-byte units) with More Fragments set or
    /// not. A fragment with an offset carries no transport header: only
    /// `payload` bytes. For IPv6 it needs a fragment header (`ext(44)`).
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.frag = Some(Fragment { offset, more });
        self
    }

    /// Keep only the first `n` bytes of the transport header.
    pub fn l4_len(mut self, n: usize) -> Self {
        self.l4_len = Some(n);
        self
    }

    /// The IPv4 identification or IPv6 fragment identification.
    pub fn id(mut self, id: u32) -> Self {
        self.id = id;
        self
    }

    /// The IP packet alone (no Ethernet header), for raw sockets.
    pub fn ip_packet(&self) -> Vec<u8> {
        assert!(self.vlans.is_empty());
        self.build()[14..].to_vec()
    }

    /// Offsets where each header starts, for truncation tests.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // src MAC
        for (tpid, id) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let mut l4 = self.l4_bytes();
        if let Some(n) = self.l4_len {
            l4.truncate(n);
        }
        if self.frag.is_some_and(|f| f.offset > 0) {
            l4.clear();
        }
        let (frag_field, more) = match self.frag {
            Some(f) => (f.offset, f.more),
            None => (0, false),
        };
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let ihl = 20 + self.ipv4_options;
                let total = (ihl + l4.len() + self.payload) as u16;
                f.push(0x40 | (ihl / 4) as u8);
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&(self.id as u16).to_be_bytes());
                let flags_off: u16 = if self.frag.is_some() {
                    (if more { 0x2000 } else { 0 }) | (frag_field & 0x1fff)
                } else {
                    0x4000 // DF
                };
                f.extend_from_slice(&flags_off.to_be_bytes());
                f.push(64);
                f.push(self.proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                // NOP options then EOL.
                f.extend(std::iter::repeat_n(1u8, self.ipv4_options));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                let ext_len = self.ipv6_ext.len() * 8;
                let plen = (ext_len + l4.len() + self.payload) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.push(self.ipv6_ext.first().copied().unwrap_or(self.proto()));
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                for (i, &this) in self.ipv6_ext.iter().enumerate() {
                    let next = self.ipv6_ext.get(i + 1).copied().unwrap_or(self.proto());
                    if this == 44 {
                        // Fragment header: offset and M flag from `frag`
                        // (offset 0, M clear without: an atomic fragment).
                        let field = (frag_field << 3) | u16::from(more);
                        f.extend_from_slice(&[next, 0]);
                        f.extend_from_slice(&field.to_be_bytes());
                        f.extend_from_slice(&self.id.to_be_bytes());
                    } else {
                        // 8-byte header: next, len 0 (=8 bytes), padding.
                        f.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                    }
                }
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&l4);
        f.extend(std::iter::repeat_n(0xabu8, self.payload));
        f
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp => {
                if self.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        match self.l4 {
            L4::Tcp { dst_port, flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&dst_port.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                t
            }
            L4::Udp { dst_port } => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&40000u16.to_be_bytes());
                u[2..4].copy_from_slice(&dst_port.to_be_bytes());
                u[4..6].copy_from_slice(&8u16.to_be_bytes());
                u
            }
            L4::Icmp => vec![8, 0, 0, 0, 0, 1, 0, 1],
        }
    }
}

/// An ARP request frame (not IP: must pass untouched).
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 2]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
    f
}
