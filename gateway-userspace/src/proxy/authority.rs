//! The request authority (`Host`, `:authority`, the authority of an
//! absolute-form target): parsed once, strictly, and normalized, so that
//! routing, `X-Forwarded-Host`/`Forwarded`, the `Host` sent upstream and the
//! HTTPS redirect all use one value.
//!
//! Grammar (RFC 9110 §7.2, RFC 3986 §3.2.2–3.2.3): `host [":" port]` where
//! host is an IP-literal (`[` IPv6 `]`), a dotted-quad IPv4 address or a
//! reg-name. Stricter than RFC 3986 where the looser forms only serve to
//! confuse a router or a backend:
//! - no userinfo (`user@host`), no path, query or fragment;
//! - a reg-name is made of unreserved characters only (letters, digits,
//!   `-`, `.`, `_`, `~`): no percent-encoding and no sub-delimiters such as
//!   `,` or `;`; no empty label (`a..b`, `.a`); at most 253 bytes;
//! - a name whose last label is numeric must be a canonical dotted quad
//!   (`0177.0.0.1`, `1.2.3`, `0x7f.1` are refused: resolvers read them as
//!   addresses, routers as names);
//! - IPv6 without zone id; `IPvFuture` is refused;
//! - a port is 1 to 5 digits, 1–65535; `host:` (empty port) is refused.
//!
//! Normalized form: host lowercased, one trailing dot removed
//! (`Example.COM.` → `example.com`), IPv6 in its canonical text form kept in
//! brackets (`[0:0::1]` → `[::1]`), port as a number (`:080` → `:80`).

#![forbid(unsafe_code)]

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

/// Longest host name accepted (RFC 1035 §2.3.4, without the root dot).
const MAX_HOST: usize = 253;

/// A validated, normalized authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    /// The host: lowercase, no trailing dot; IPv6 in brackets (`[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when one was sent.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Authority {
    /// `host` or `host:port`, as sent upstream in `Host`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl Authority {
    /// The authority as a field value (`Host`, `X-Forwarded-Host`): `sent`
    /// itself (shared, not copied) when the client spelled it exactly so,
    /// else formatted. `None` only if it cannot be a field value.
    pub fn field_value(&self, sent: Option<&http::HeaderValue>) -> Option<http::HeaderValue> {
        if let Some(v) = sent
            && self.spelled_as(v.as_bytes())
        {
            return Some(v.clone());
        }
        // Rare (the client spelled it otherwise): formatted on the heap.
        http::HeaderValue::from_str(&self.to_string()).ok()
    }

    /// Whether `raw` is this authority's `Display` text, byte for byte.
    fn spelled_as(&self, raw: &[u8]) -> bool {
        let Some(rest) = raw.strip_prefix(self.host.as_bytes()) else {
            return false;
        };
        let Some(port) = self.port else {
            return rest.is_empty();
        };
        let Some(digits) = rest.strip_prefix(b":") else {
            return false;
        };
        // Canonical decimal, as `Display` writes it (no leading zeros).
        let mut buf = [0u8; 5];
        let mut at = buf.len();
        let mut p = port;
        loop {
            at -= 1;
            buf[at] = b'0' + (p % 10) as u8;
            p /= 10;
            if p == 0 {
                break;
            }
        }
        digits == &buf[at..]
    }
}

/// Why an authority is refused (each answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// Nothing before the port, or an empty value.
    #[error("the host is empty")]
    Empty,
    /// `user@host`: userinfo is not allowed in a request authority.
    #[error("the authority must not contain userinfo ('@')")]
    Userinfo,
    /// A byte outside the reg-name alphabet (`,`, `/`, space, `%`, ...).
    #[error("invalid character in the host")]
    BadChar,
    /// An empty label (`a..b`, `.a`) or a name longer than 253 bytes.
    #[error("malformed host name")]
    BadName,
    /// A numeric-looking name that is not a canonical dotted quad.
    #[error("malformed IPv4 address")]
    BadIpv4,
    /// A bracketed literal that is not an IPv6 address, or is unclosed.
    #[error("malformed IPv6 literal")]
    BadIpv6,
    /// The port is empty, not a number, 0 or above 65535.
    #[error("malformed port")]
    BadPort,
}

/// Parses and normalizes a request authority (`host[:port]`).
///
/// # Errors
/// An [`AuthorityError`] saying what is wrong; the caller answers 400.
pub fn parse(raw: &str) -> Result<Authority, AuthorityError> {
    if raw.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if raw.contains('@') {
        return Err(AuthorityError::Userinfo);
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(AuthorityError::BadIpv6)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(AuthorityError::BadPort)?),
        };
        (ipv6(literal)?, port)
    } else {
        let (name, port) = match raw.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (raw, None),
        };
        (reg_name_or_ipv4(name)?, port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok(Authority { host, port })
}

fn parse_port(p: &str) -> Result<u16, AuthorityError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(AuthorityError::BadPort),
        Ok(n) => Ok(n),
    }
}

fn ipv6(literal: &str) -> Result<String, AuthorityError> {
    // A zone id (`%25eth0`) or IPvFuture (`v1.x`) fails here too.
    let addr: Ipv6Addr = literal.parse().map_err(|_| AuthorityError::BadIpv6)?;
    Ok(format!("[{addr}]"))
}

fn reg_name_or_ipv4(name: &str) -> Result<String, AuthorityError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(AuthorityError::Empty);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(AuthorityError::BadChar);
    }
    if name.len() > MAX_HOST || name.split('.').any(str::is_empty) {
        return Err(AuthorityError::BadName);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2 && last[..2].eq_ignore_ascii_case("0x"));
    if numeric {
        // Ipv4Addr's parser takes exactly four decimal octets without
        // leading zeros: the only form every resolver agrees on.
        let _: Ipv4Addr = name.parse().map_err(|_| AuthorityError::BadIpv4)?;
        // Four decimal octets without leading zeros are already the
        // address's canonical text: no need to format it again.
        return Ok(name.to_owned());
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{AuthorityError as E, parse};

    fn ok(raw: &str) -> String {
        parse(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .to_string()
    }

    #[test]
    fn normalizes() {
        assert_eq!(ok("Example.COM"), "example.com");
        assert_eq!(ok("example.com."), "example.com");
        assert_eq!(ok("example.com.:8080"), "example.com:8080");
        assert_eq!(ok("a-b_c~d.example:080"), "a-b_c~d.example:80");
        assert_eq!(ok("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(ok("[::1]:8443"), "[::1]:8443");
        assert_eq!(ok("[0:0:0::1]"), "[::1]");
        assert_eq!(ok("[::FFFF:1.2.3.4]"), "[::ffff:1.2.3.4]");
        assert_eq!(ok("localhost"), "localhost");
        assert_eq!(ok("a.b1"), "a.b1");
        let a = parse("Gw:81").unwrap();
        assert_eq!((a.host(), a.port()), ("gw", Some(81)));
    }

    #[test]
    fn refuses_the_issue_examples_and_variants() {
        for (raw, want) in [
            ("admin.example.com@evil", E::Userinfo),
            ("evil@admin.example.com", E::Userinfo),
            ("user:pass@admin.example.com", E::Userinfo),
            ("admin.example.com,public", E::BadChar),
            ("admin.example.com;x", E::BadChar),
            ("admin.example.com/x", E::BadChar),
            ("admin.example.com?x", E::BadChar),
            ("admin.example.com#x", E::BadChar),
            ("admin%2eexample.com", E::BadChar),
            ("a b", E::BadChar),
            ("a\tb", E::BadChar),
            ("exämple.com", E::BadChar),
            ("[::1", E::BadIpv6),
            ("[::1]x", E::BadPort),
            ("[::1]:", E::BadPort),
            ("[fe80::1%25eth0]", E::BadIpv6),
            ("[v1.x]", E::BadIpv6),
            ("[1.2.3.4]", E::BadIpv6),
            ("", E::Empty),
            (":80", E::Empty),
            (".", E::Empty),
            ("a..b", E::BadName),
            (".a", E::BadName),
            ("a.example:", E::BadPort),
            ("a.example:0", E::BadPort),
            ("a.example:65536", E::BadPort),
            ("a.example:+80", E::BadPort),
            ("a.example:80:80", E::BadPort),
            ("a.example: 80", E::BadPort),
            ("0177.0.0.1", E::BadIpv4),
            ("1.2.3", E::BadIpv4),
            ("0x7f.1", E::BadIpv4),
            ("2130706433", E::BadIpv4),
            ("256.1.1.1", E::BadIpv4),
        ] {
            assert_eq!(parse(raw), Err(want), "{raw:?}");
        }
        assert_eq!(parse(&"a".repeat(254)), Err(E::BadName));
        assert!(parse(&"a".repeat(253)).is_ok());
    }
}
