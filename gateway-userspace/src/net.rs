//! IP networks as operators write them: `10.0.0.1`, `10.0.0.0/8`,
//! `2001:db8::/32`. A bare address is a /32 or /128. A prefix longer than the
//! family allows, or host bits set below the prefix, is an error that says
//! what was meant, rather than a silently different range.

#![forbid(unsafe_code)]

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text or an (address, prefix) pair is not a network: the writer's
/// (a config value, a CLI argument, an admin request). The texts say what
/// was meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    Address(String),
    /// The part after `/` is not a number.
    #[error("'/{0}' is not a prefix length (a number 0-128)")]
    PrefixNotNumber(String),
    /// The prefix is longer than the family allows.
    #[error("prefix length /{prefix_len} is out of range for {family} (0-{max})")]
    PrefixOutOfRange {
        /// The prefix length written.
        prefix_len: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
    /// Bits are set below the prefix.
    #[error("{addr}/{prefix_len} has host bits set; did you mean {meant}?")]
    HostBits {
        /// The address written.
        addr: IpAddr,
        /// The prefix length written.
        prefix_len: u8,
        /// The network with the host bits cleared.
        meant: IpNet,
    },
}

/// A validated network (address with prefix length, no host bits set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net(IpNet);

impl Net {
    /// `addr/prefix_len`; an error when the prefix is longer than the family allows (32, 128) or
    /// `addr` has bits set below it (the message suggests the network meant).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, NetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let out_of_range = NetError::PrefixOutOfRange {
            prefix_len,
            family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
            max,
        };
        if prefix_len > max {
            return Err(out_of_range);
        }
        let net = IpNet::new(addr, prefix_len).map_err(|_| out_of_range)?;
        if net.trunc() != net {
            return Err(NetError::HostBits {
                addr,
                prefix_len,
                meant: net.trunc(),
            });
        }
        Ok(Self(net))
    }

    /// The network address (host bits are zero).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length, 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.addr().is_ipv4()
    }

    /// Whether this is a single address (/32 or /128).
    pub fn is_host(&self) -> bool {
        self.prefix_len() == self.0.max_prefix_len()
    }

    /// Whether `addr` lies in this network (an address of the other family never does; IPv4-mapped
    /// IPv6 is not unmapped).
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.0.contains(addr)
    }

    /// The single-address network of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self(IpNet::from(addr))
    }
}

impl FromStr for Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| NetError::Address(addr.to_owned()))?;
        let prefix_len = match prefix {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| NetError::PrefixNotNumber(p.to_owned()))?,
        };
        Net::new(addr, prefix_len)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The IPv6 address masked to `prefix_len`; IPv4 unchanged.
pub fn group_ip(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6);
            let mask = if prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix_len.min(128)))
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_cidrs() {
        assert_eq!("10.0.0.1".parse::<Net>().unwrap().to_string(), "10.0.0.1");
        assert_eq!("10.0.0.0/8".parse::<Net>().unwrap().prefix_len(), 8);
        assert!(
            "2001:db8::/32"
                .parse::<Net>()
                .unwrap()
                .contains(&"2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let e = "10.0.0.0/33".parse::<Net>().unwrap_err().to_string();
        assert!(e.contains("out of range for IPv4"), "{e}");
        let e = "10.0.0.1/8".parse::<Net>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        let e = "10.0.0.300".parse::<Net>().unwrap_err().to_string();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
        assert!("::/129".parse::<Net>().is_err());
    }
}

/// An address as text, the same as `Display` writes it (`192.0.2.1`,
/// `2001:db8::1`): IPv4 digit by digit into a stack buffer (std's
/// `Display` goes through the padding-aware formatter, which showed in
/// profiles of the request path: rate-limit keys, `X-Forwarded-For`, the
/// access log), IPv6 by std (RFC 5952 form).
pub struct IpText(pub IpAddr);

impl IpText {
    /// IPv4's dotted text: the buffer and how many bytes of it are used.
    fn v4(a: std::net::Ipv4Addr) -> ([u8; 15], usize) {
        let mut buf = [0u8; 15];
        let mut n = 0;
        for (i, octet) in a.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + octet % 10;
            n += 1;
        }
        (buf, n)
    }
}

impl fmt::Display for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let IpAddr::V4(a) = self.0 else {
            return write!(f, "{}", self.0);
        };
        let (buf, n) = Self::v4(a);
        // Only ASCII digits and dots were written.
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Appends an address's text ([`IpText`]) to a byte buffer.
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let (buf, n) = IpText::v4(a);
            out.extend_from_slice(&buf[..n]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// An address's text ([`IpText`]) as a `String`.
pub fn ip_string(ip: IpAddr) -> String {
    let mut out = Vec::with_capacity(15);
    write_ip(&mut out, ip);
    // Digits, dots, hex and colons only.
    String::from_utf8(out).unwrap_or_else(|_| ip.to_string())
}

#[cfg(test)]
mod ip_text_tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "10.0.100.255",
            "192.0.2.1",
            "192.168.0.10",
            "255.255.255.255",
            "::",
            "::1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
            assert_eq!(IpText(ip).to_string(), ip.to_string());
        }
    }
}
