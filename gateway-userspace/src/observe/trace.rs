//! W3C Trace Context (`traceparent`): a valid incoming header keeps its
//! trace id and flags and gets a new parent (span) id for our hop; a
//! missing or invalid one is replaced by a new trace. The gateway records
//! no spans itself: it only makes sure the trace id exists, reaches the
//! upstream and appears in the access log. `tracestate` is forwarded only
//! with a valid incoming `traceparent` (the spec ties them together).

#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue};

/// The W3C Trace Context header carrying version, trace id, parent id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C Trace Context header carrying vendor state; forwarded only with a valid `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The trace context of one request. Ids are kept as integers and written
/// as lowercase hex only where they are sent or logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The 128-bit trace id (never zero).
    pub trace_id: u128,
    /// Our 64-bit span id (never zero), sent upstream as the parent id.
    pub span_id: u64,
    /// Trace flags as sent; `00` for a new trace.
    pub flags: u8,
    /// Whether the client sent a valid `traceparent`.
    pub propagated: bool,
}

impl TraceContext {
    /// From the request headers: continue a valid trace or start one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parsed = headers.get(TRACEPARENT).and_then(|v| parse(v.as_bytes()));
        match parsed {
            Some((trace_id, flags)) => Self {
                trace_id,
                span_id: nonzero_u64(),
                flags,
                propagated: true,
            },
            None => Self {
                trace_id: (u128::from(fastrand::u64(..)) << 64) | u128::from(nonzero_u64()),
                span_id: nonzero_u64(),
                // We do not record spans, so we do not claim the trace is sampled.
                flags: 0,
                propagated: false,
            },
        }
    }

    /// The trace id as 32 lowercase hex digits (the access log's `trace.id`).
    pub fn trace_id_hex(&self) -> Hex<32> {
        Hex::new(self.trace_id)
    }

    /// The `traceparent` value for the upstream:
    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub fn header(&self) -> HeaderValue {
        let mut b = [0u8; 55];
        b[..3].copy_from_slice(b"00-");
        write_hex(&mut b[3..35], self.trace_id);
        b[35] = b'-';
        write_hex(&mut b[36..52], u128::from(self.span_id));
        b[52] = b'-';
        write_hex(&mut b[53..55], u128::from(self.flags));
        HeaderValue::from_bytes(&b).expect("hex digits and dashes are a valid header value")
    }

    /// The same trace with a new span id: the parent of one of several
    /// calls the gateway makes for one request (aggregation).
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// Sets `traceparent` (and drops `tracestate` of a broken trace) in
    /// the headers forwarded upstream.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !self.propagated {
            headers.remove(TRACESTATE);
        }
        headers.insert(TRACEPARENT, self.header());
    }
}

/// `N` lowercase hex digits of a number, on the stack.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    /// The low `N * 4` bits of `v` as `N` lowercase hex digits.
    pub fn new(v: u128) -> Self {
        let mut b = [0u8; N];
        write_hex(&mut b, v);
        Self(b)
    }

    /// The digits as a string slice.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// Writes the low `out.len() * 4` bits of `v` as lowercase hex.
fn write_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for d in out.iter_mut().rev() {
        *d = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// `version-traceid-parentid-flags`, lowercase hex. Version `ff` is
/// invalid; an all-zero trace or parent id is invalid; a future version
/// may append fields after the flags (`-...`), version 00 may not.
/// Surrounding spaces and tabs (optional whitespace) are ignored.
fn parse(v: &[u8]) -> Option<(u128, u8)> {
    let b = v.trim_ascii();
    if b.len() < 55 {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (
        hex_value(&b[0..2])?,
        hex_value(&b[3..35])?,
        hex_value(&b[36..52])?,
        hex_value(&b[53..55])?,
    );
    if version == 0xff {
        return None;
    }
    if version == 0 && b.len() != 55 {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    if trace == 0 || parent == 0 {
        return None;
    }
    Some((trace, flags as u8))
}

/// Lowercase hex digits (at most 32) as a number; uppercase is invalid in
/// `traceparent`.
fn hex_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u128::from(d))
    })
}

/// A random nonzero 64-bit id from the thread-local generator (ids need
/// to be unique, not secret: no system call per request).
fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(v: &str) -> TraceContext {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(v).unwrap());
        TraceContext::from_headers(&h)
    }

    #[test]
    fn valid_header_keeps_trace_and_flags_with_new_span() {
        let t = ctx("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(t.propagated);
        assert_eq!(
            t.trace_id_hex().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(t.flags, 1);
        assert_ne!(t.span_id, 0x00f0_67aa_0ba9_02b7);
        let header = t.header();
        let header = header.to_str().unwrap();
        assert_eq!(header.len(), 55);
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(header.ends_with("-01"));
        assert_eq!(&header[36..52], format!("{:016x}", t.span_id));
        // A future version with extra fields is accepted.
        assert!(ctx("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").propagated);
    }

    #[test]
    fn invalid_headers_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = ctx(bad);
            assert!(!t.propagated, "{bad}");
            assert_ne!(t.trace_id, 0);
            assert_ne!(t.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        }
        let t = TraceContext::from_headers(&HeaderMap::new());
        assert!(!t.propagated);
        assert_eq!(t.flags, 0);
        assert!(t.header().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn apply_drops_tracestate_of_a_broken_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("a=b"));
        let t = TraceContext::from_headers(&h);
        t.apply(&mut h);
        assert!(h.get(TRACESTATE).is_none());
        assert_eq!(h.get(TRACEPARENT).unwrap(), t.header());
    }

    #[test]
    fn new_ids_differ_and_are_written_with_leading_zeros() {
        let a = TraceContext::from_headers(&HeaderMap::new());
        let b = TraceContext::from_headers(&HeaderMap::new());
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
        assert_eq!(Hex::<32>::new(0xab).as_str(), format!("{:032x}", 0xab));
    }
}
