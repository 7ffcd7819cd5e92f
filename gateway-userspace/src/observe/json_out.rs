//! Writing JSON by hand into a byte buffer, for the access log's hot path:
//! keys are constants the caller writes as bytes, and only values are
//! formatted or escaped. This is what NGINX's `escape=json` log format does
//! and what serde_json's serializer does per field, without its per-field
//! dispatch (the access log's line went from ~1.1 us through serde_json to
//! a fraction of that).
//!
//! Strings are escaped as RFC 8259 requires: `"`, `\` and the C0 controls
//! (`\n`, `\r`, `\t`, `\b`, `\f` in short form, the others as `\u00XX`).
//! Input is `&str`, so the output is valid UTF-8.

#![forbid(unsafe_code)]

use std::{
    cell::Cell,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    time::SystemTime,
};

/// Appends `s` as a JSON string, quotes included.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(short);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `value` through its `Display` (addresses), unquoted; the caller
/// adds quotes. For types whose text never needs escaping.
fn push_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Appends an address's text (`192.0.2.1`, `2001:db8::1`), unquoted
/// ([`crate::net::write_ip`]).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    crate::net::write_ip(out, ip);
}

/// Appends a socket address's text (`192.0.2.1:80`, `[2001:db8::1]:80`),
/// unquoted.
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            push_u64(out, v4.port().into());
        }
        SocketAddr::V6(_) => push_display(out, addr),
    }
}

/// Appends `t` as an RFC 3339 UTC timestamp with microseconds, quoted
/// (`"2026-11-30T05:00:00.000123Z"`). The date and time of day are
/// formatted once per second per thread; a time before 1970 is written as
/// the epoch.
pub fn push_rfc3339_micros(out: &mut Vec<u8>, t: SystemTime) {
    // The second last formatted on this thread, and its text up to the
    // seconds (`2026-11-30T05:00:00`, 19 bytes).
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let whole = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let formatted = humantime::format_rfc3339_seconds(whole).to_string();
        let mut text = [0u8; 19];
        // "YYYY-MM-DDTHH:MM:SSZ": the first 19 bytes for years up to 9999,
        // which is all `humantime` formats.
        let n = formatted.len().min(19);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((secs, text));
        text
    });
    out.push(b'"');
    out.extend_from_slice(&prefix);
    out.push(b'.');
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        let nasty = [
            "",
            "plain /a/b?c=d",
            "quote \" backslash \\ slash /",
            "controls \n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é ü 漢字 😀 \u{2028}",
            "\"\\\"",
        ];
        for s in nasty {
            let json = string(s);
            let back: String = serde_json::from_str(&json).unwrap();
            assert_eq!(back, s, "{json}");
        }
        assert_eq!(string("a\u{1}b"), r#""a\u0001b""#);
    }

    #[test]
    fn addresses_as_their_display() {
        // The address text itself is net::IpText's (tested there).
        for text in ["192.0.2.1", "2001:db8::1"] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
            let addr = SocketAddr::new(ip, 8443);
            let mut out = Vec::new();
            push_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn numbers_and_timestamps() {
        for n in [0, 7, 10, 99, 1500, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
        let at = |secs, micros| {
            SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(secs)
                + std::time::Duration::from_micros(micros)
        };
        let mut out = Vec::new();
        push_rfc3339_micros(&mut out, at(0, 0));
        push_rfc3339_micros(&mut out, at(1_796_000_000, 42));
        // The same second again, from the per-thread cache.
        push_rfc3339_micros(&mut out, at(1_796_000_000, 999_999));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"1970-01-01T00:00:00.000000Z\"\
             \"2026-11-30T00:53:20.000042Z\"\
             \"2026-11-30T00:53:20.999999Z\""
        );
    }
}
