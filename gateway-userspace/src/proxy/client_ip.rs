//! Who the client is. The socket peer, unless the peer is in
//! `trusted_proxies`: then the PROXY protocol source (if the listener uses
//! it) and the chain in the configured header (`client_ip_header`:
//! `X-Forwarded-For` by default, or RFC 7239 `Forwarded`) are believed.
//! Nothing a client writes is believed otherwise.
//!
//! The chain is walked from the right (the entry the nearest proxy wrote),
//! skipping trusted proxies, and the first entry that is not a trusted proxy
//! is the client (NGINX's `real_ip_recursive on`). That entry must be an IP
//! address: `1.2.3.4`, `1.2.3.4:port`, `2001:db8::7`, `[2001:db8::7]`,
//! `[2001:db8::7]:port`; `::ffff:1.2.3.4` counts as `1.2.3.4`. Anything
//! else there (a host name, `unknown`, an obfuscated `_name`, a zone id, an
//! IPv4 address with leading zeros) is a [`ClientIpError`], which the proxy
//! answers with 400: it never falls back to the trusted proxy's own address,
//! which would give every client behind the proxy one shared identity that
//! is also exempt from escalation. Entries left of the stopping point are
//! never looked at. Empty list elements are ignored (RFC 9110 §5.6.1).
//! Several header lines form one list, in order (RFC 9110 §5.3).
//!
//! Only the configured header is read; the other one is ignored for the
//! client address (never combined), as NGINX's `real_ip_header` does.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;

use crate::net::Net;

pub use super::config::client_ip::ClientIpHeader;

/// Why the client address could not be read from a trusted proxy's header.
/// Answered with 400 (`bad_client_ip`); the message is safe to show to the
/// client (it never repeats what the header said).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    /// The entry where the walk stopped is not an IP address (host name,
    /// garbage, zone id, leading zeros, bad port).
    #[error("the {header} entry {position} from the right is not an IP address")]
    NotAnAddress {
        /// The header's name (`X-Forwarded-For` or `Forwarded`).
        header: &'static str,
        /// 1 is the rightmost entry.
        position: usize,
    },
    /// The entry where the walk stopped is `unknown` or an obfuscated
    /// identifier (RFC 7239 §6): the client cannot be identified.
    #[error(
        "the {header} entry {position} from the right withholds the client address (obfuscated or not known to the proxy)"
    )]
    Hidden {
        /// The header's name (`X-Forwarded-For` or `Forwarded`).
        header: &'static str,
        /// 1 is the rightmost entry.
        position: usize,
    },
    /// The header is not a valid list: non-ASCII bytes, an unterminated
    /// quoted string, a `Forwarded` element without `for=` or with it twice.
    #[error("the {header} header is malformed")]
    Malformed {
        /// The header's name (`X-Forwarded-For` or `Forwarded`).
        header: &'static str,
    },
}

/// Why one list entry is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeError {
    /// Not an IP address (with an optional port) at all.
    NotAnAddress,
    /// `unknown` or `_obfuscated` (RFC 7239 §6).
    Hidden,
}

/// The set of trusted proxy networks and the header they write.
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    nets: Vec<Net>,
    header: ClientIpHeader,
}

impl Trusted {
    /// Trusts `nets`, reading `X-Forwarded-For` from them.
    pub fn new(nets: Vec<Net>) -> Self {
        Self {
            nets,
            header: ClientIpHeader::XForwardedFor,
        }
    }

    /// Reads the chain from `header` instead.
    pub fn with_header(mut self, header: ClientIpHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether `ip` (IPv4-mapped IPv6 as IPv4) is a trusted proxy.
    /// The header whose chain this set reads (and the proxy extends).
    pub fn header(&self) -> ClientIpHeader {
        self.header
    }

    /// Whether `ip` is a trusted proxy; an IPv4-mapped IPv6 address is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client IP for a request that arrived from `peer` (the socket
    /// peer, or the PROXY protocol source). An untrusted peer is the client,
    /// whatever the headers say. From a trusted peer, the configured header
    /// is walked from the right as the module docs describe; no header (or
    /// only empty elements) means the peer itself is the client, and a chain
    /// of trusted proxies only gives its leftmost entry. The result is
    /// always canonical (IPv4-mapped IPv6 as IPv4).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ClientIpError> {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return Ok(peer);
        }
        let label = self.header.label();
        let malformed = || ClientIpError::Malformed { header: label };
        let mut entries: Vec<String> = Vec::new();
        for line in headers.get_all(self.header.name()) {
            let text = line.to_str().map_err(|_| malformed())?;
            match self.header {
                ClientIpHeader::XForwardedFor => {
                    entries.extend(text.split(',').map(|e| e.trim().to_owned()));
                }
                ClientIpHeader::Forwarded => {
                    entries.extend(forwarded_for(text).map_err(|_| malformed())?);
                }
            }
        }
        entries.retain(|e| !e.is_empty());
        let mut client = peer;
        for (i, entry) in entries.iter().rev().enumerate() {
            let position = i + 1;
            client = parse_node(entry).map_err(|e| match e {
                NodeError::NotAnAddress => ClientIpError::NotAnAddress {
                    header: label,
                    position,
                },
                NodeError::Hidden => ClientIpError::Hidden {
                    header: label,
                    position,
                },
            })?;
            if !self.contains(client) {
                break;
            }
        }
        Ok(client)
    }
}

/// Parses one chain entry: an `X-Forwarded-For` element, or the value of a
/// `Forwarded` `for=` parameter with its quotes removed. Accepted:
/// `a.b.c.d`, `a.b.c.d:port`, a bare IPv6 address, `[v6]`, `[v6]:port`;
/// the result is canonical (`::ffff:a.b.c.d` is IPv4). IPv4 with leading
/// zeros (`010.1.1.1`, which some parsers read as octal), zone ids
/// (`fe80::1%eth0`, as NGINX and Envoy refuse them), host names and empty
/// ports are [`NodeError::NotAnAddress`]; `unknown` and `_obfuscated`
/// nodes (RFC 7239 §6) are [`NodeError::Hidden`]. Surrounding whitespace is
/// the caller's business (it is not trimmed here).
pub fn parse_node(entry: &str) -> Result<IpAddr, NodeError> {
    if entry.eq_ignore_ascii_case("unknown") || entry.starts_with('_') {
        return Err(NodeError::Hidden);
    }
    let ip = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(NodeError::NotAnAddress)?;
        if !after.is_empty() {
            port(after.strip_prefix(':').ok_or(NodeError::NotAnAddress)?)?;
        }
        IpAddr::V6(
            v6.parse::<Ipv6Addr>()
                .map_err(|_| NodeError::NotAnAddress)?,
        )
    } else if let Ok(v6) = entry.parse::<Ipv6Addr>() {
        // Bare IPv6: a trailing ":443" would already be part of the
        // address, so no port is split off.
        IpAddr::V6(v6)
    } else {
        let (v4, p) = match entry.split_once(':') {
            Some((v4, p)) => (v4, Some(p)),
            None => (entry, None),
        };
        if let Some(p) = p {
            port(p)?;
        }
        IpAddr::V4(
            v4.parse::<Ipv4Addr>()
                .map_err(|_| NodeError::NotAnAddress)?,
        )
    };
    Ok(canonical(ip))
}

/// A port: 1-5 ASCII digits up to 65535, or an obfuscated `_port` (RFC
/// 7239 §6.3), which hides the port but not the address.
fn port(p: &str) -> Result<(), NodeError> {
    if p.len() > 1
        && p.starts_with('_')
        && p[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Ok(());
    }
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NodeError::NotAnAddress);
    }
    p.parse::<u16>()
        .map(|_| ())
        .map_err(|_| NodeError::NotAnAddress)
}

/// A `Forwarded` header line that is not a list of `name=value` pairs: a
/// stray character, an unterminated quoted string, an element without
/// `for=`, or with `for=` twice (RFC 7239 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Forwarded header")]
pub struct MalformedForwarded;

/// The `for=` value of every element of one `Forwarded` header line (RFC
/// 7239 §4), quotes and quoted-pairs resolved, in order. Empty elements
/// (`, ,`) are skipped; an element with parameters but no `for`, `for`
/// twice, or broken quoting is [`MalformedForwarded`].
pub fn forwarded_for(line: &str) -> Result<Vec<String>, MalformedForwarded> {
    let e = MalformedForwarded;
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // One element: pairs separated by ';', ended by ',' or the end.
        let mut for_value: Option<String> = None;
        let mut empty = true;
        loop {
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            let mut name = String::new();
            while let Some(c) = chars.next_if(|c| !matches!(*c, '=' | ';' | ',')) {
                name.push(c);
            }
            let name = name.trim_end_matches([' ', '\t']);
            match chars.next() {
                Some('=') => {}
                // A bare name without a value, or a stray separator.
                Some(';') if name.is_empty() => continue,
                Some(',') | None if name.is_empty() => {
                    if !empty && for_value.is_none() {
                        return Err(e);
                    }
                    out.extend(for_value.take());
                    if chars.peek().is_none() {
                        return Ok(out);
                    }
                    break;
                }
                _ => return Err(e),
            }
            empty = false;
            let value = if chars.next_if_eq(&'"').is_some() {
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => v.push(chars.next().ok_or(e)?),
                        Some(c) => v.push(c),
                        None => return Err(e),
                    }
                }
                v
            } else {
                let mut v = String::new();
                while let Some(c) = chars.next_if(|c| !matches!(*c, ';' | ',' | ' ' | '\t')) {
                    v.push(c);
                }
                v
            };
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if name.eq_ignore_ascii_case("for") {
                if for_value.is_some() {
                    return Err(e);
                }
                for_value = Some(value);
            }
            match chars.next() {
                Some(';') => {}
                Some(',') => {
                    out.push(for_value.take().ok_or(e)?);
                    break;
                }
                None => {
                    out.push(for_value.take().ok_or(e)?);
                    return Ok(out);
                }
                Some(_) => return Err(e),
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                l.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> Trusted {
        Trusted::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    fn xff(lines: &[&str]) -> Result<IpAddr, ClientIpError> {
        trusted().client_ip(ip("127.0.0.1"), &headers("x-forwarded-for", lines))
    }

    fn fwd(lines: &[&str]) -> Result<IpAddr, ClientIpError> {
        trusted()
            .with_header(ClientIpHeader::Forwarded)
            .client_ip(ip("127.0.0.1"), &headers("forwarded", lines))
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted();
        let got = t.client_ip(ip("192.0.2.1"), &headers("x-forwarded-for", &["1.2.3.4"]));
        assert_eq!(got, Ok(ip("192.0.2.1")));
        let got = t.client_ip(ip("192.0.2.1"), &headers("x-forwarded-for", &["garbage"]));
        assert_eq!(
            got,
            Ok(ip("192.0.2.1")),
            "untrusted headers are not even parsed"
        );
        let got = t.client_ip(ip("::ffff:192.0.2.1"), &HeaderMap::new());
        assert_eq!(got, Ok(ip("192.0.2.1")));
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        assert_eq!(xff(&["6.6.6.6, 1.2.3.4, 10.1.1.1"]), Ok(ip("1.2.3.4")));
        // The examples: the entry right of the garbage is the client.
        assert_eq!(xff(&["garbage, 198.51.100.7"]), Ok(ip("198.51.100.7")));
        assert_eq!(xff(&["198.51.100.7:51234"]), Ok(ip("198.51.100.7")));
        assert_eq!(xff(&["[2001:db8::7]:443"]), Ok(ip("2001:db8::7")));
        assert_eq!(xff(&["::ffff:198.51.100.7"]), Ok(ip("198.51.100.7")));
        assert_eq!(xff(&["[::ffff:198.51.100.7]:80"]), Ok(ip("198.51.100.7")));
        assert_eq!(xff(&["2001:db8::7"]), Ok(ip("2001:db8::7")));
        // Several lines are one list; whitespace and empty elements ignored.
        assert_eq!(
            xff(&["6.6.6.6", " 1.2.3.4 ,\t10.0.0.2 "]),
            Ok(ip("1.2.3.4"))
        );
        assert_eq!(xff(&["1.2.3.4,, 10.0.0.2,"]), Ok(ip("1.2.3.4")));
        // All trusted: the leftmost; nothing at all: the peer.
        assert_eq!(xff(&["10.0.0.3, 10.0.0.2"]), Ok(ip("10.0.0.3")));
        assert_eq!(xff(&[]), Ok(ip("127.0.0.1")));
        assert_eq!(xff(&[" , "]), Ok(ip("127.0.0.1")));
    }

    #[test]
    fn an_unparseable_stopping_point_is_an_error_not_the_proxy() {
        let not = |position| {
            Err(ClientIpError::NotAnAddress {
                header: "X-Forwarded-For",
                position,
            })
        };
        assert_eq!(xff(&["198.51.100.7, garbage"]), not(1));
        assert_eq!(xff(&["198.51.100.7, garbage, 10.0.0.1"]), not(2));
        for bad in [
            "010.1.1.1",
            "1.2.3",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "1.2.3.4:80:80",
            "[2001:db8::7]:",
            "[2001:db8::7",
            "[1.2.3.4]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]:80",
            "proxy.example",
            "1.2.3.4 5.6.7.8",
            "\"1.2.3.4\"",
        ] {
            assert_eq!(xff(&[bad]), not(1), "{bad}");
        }
        for hidden in ["unknown", "UNKNOWN", "_hidden"] {
            assert_eq!(
                xff(&[hidden]),
                Err(ClientIpError::Hidden {
                    header: "X-Forwarded-For",
                    position: 1
                })
            );
        }
        // A garbage line after a good one is still reached first.
        assert_eq!(xff(&["1.2.3.4", "x"]), not(1));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert!(matches!(
            trusted().client_ip(ip("127.0.0.1"), &h),
            Err(ClientIpError::Malformed { .. })
        ));
    }

    #[test]
    fn forwarded_follows_the_same_rules() {
        assert_eq!(fwd(&["for=198.51.100.7"]), Ok(ip("198.51.100.7")));
        assert_eq!(
            fwd(&["for=192.0.2.1, For=\"[2001:db8:cafe::17]:4711\";proto=https"]),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            fwd(&["for=\"198.51.100.7:51234\";by=10.0.0.1;proto=http, for=10.0.0.2"]),
            Ok(ip("198.51.100.7"))
        );
        assert_eq!(fwd(&["for=\"198.51.100.7:_p1\""]), Ok(ip("198.51.100.7")));
        assert_eq!(fwd(&["for=\"\\[2001:db8::1\\]\""]), Ok(ip("2001:db8::1")));
        assert_eq!(
            fwd(&["for=x, for=1.2.3.4", "for=10.0.0.9"]),
            Ok(ip("1.2.3.4"))
        );
        assert!(matches!(
            fwd(&["for=_hidden"]),
            Err(ClientIpError::Hidden { position: 1, .. })
        ));
        assert!(matches!(
            fwd(&["for=unknown, for=10.0.0.1"]),
            Err(ClientIpError::Hidden { position: 2, .. })
        ));
        assert!(matches!(
            fwd(&["for=garbage"]),
            Err(ClientIpError::NotAnAddress { .. })
        ));
        // Unquoted values are read leniently, as long as the list is valid.
        assert_eq!(fwd(&["for=[2001:db8::1]"]), Ok(ip("2001:db8::1")));
        for malformed in [
            "for=\"1.2.3.4",
            "proto=http",
            "for=1.2.3.4;for=5.6.7.8",
            "for=1.2.3.4 x",
        ] {
            assert!(
                matches!(fwd(&[malformed]), Err(ClientIpError::Malformed { .. })),
                "{malformed}"
            );
        }
        // The other header is ignored.
        let t = trusted().with_header(ClientIpHeader::Forwarded);
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), Ok(ip("127.0.0.1")));
        let h = headers("forwarded", &["for=1.2.3.4"]);
        assert_eq!(
            trusted().client_ip(ip("127.0.0.1"), &h),
            Ok(ip("127.0.0.1"))
        );
    }

    #[test]
    fn the_header_knob_parses_and_a_bad_value_names_its_place() {
        let c = crate::config::Config::parse(
            "client_ip_header = \"forwarded\"\n[xdp]\nenabled = false\n",
            "gw.toml",
        )
        .unwrap();
        assert_eq!(c.client_ip_header, ClientIpHeader::Forwarded);
        let d = crate::config::Config::default();
        assert_eq!(d.client_ip_header, ClientIpHeader::XForwardedFor);
        let e = crate::config::Config::parse("client_ip_header = \"x-real-ip\"\n", "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gw.toml:1:"), "{e}");
        assert!(
            e.contains("x-forwarded-for") && e.contains("forwarded"),
            "{e}"
        );
    }

    #[test]
    fn node_parser() {
        assert_eq!(parse_node("1.2.3.4:0"), Ok(ip("1.2.3.4")));
        assert_eq!(parse_node("2001:db8::7:443"), Ok(ip("2001:db8::7:443")));
        assert_eq!(parse_node(""), Err(NodeError::NotAnAddress));
        assert_eq!(parse_node("1.2.3.4:_"), Err(NodeError::NotAnAddress));
        assert_eq!(parse_node("1.2.3.4:+80"), Err(NodeError::NotAnAddress));
    }
}
