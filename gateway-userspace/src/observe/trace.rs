//! W3C Trace Context (`traceparent`): a valid incoming header keeps its
//! trace id and flags and gets a new parent (span) id for our hop; a
//! missing or invalid one is replaced by a new trace. The gateway records
//! no spans itself: it only makes sure the trace id exists, reaches the
//! upstream and appears in the access log. `tracestate` is forwarded only
//! with a valid incoming `traceparent` (the spec ties them together).

#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The trace context of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// Our span id (16 hex digits), sent upstream as the parent id.
    pub span_id: String,
    /// Trace flags as sent (two hex digits); `00` for a new trace.
    pub flags: String,
    /// Whether the client sent a valid `traceparent`.
    pub propagated: bool,
}

impl TraceContext {
    /// From the request headers: continue a valid trace or start one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parsed = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        match parsed {
            Some((trace_id, flags)) => Self {
                trace_id,
                span_id: random_hex::<8>(),
                flags,
                propagated: true,
            },
            None => Self {
                trace_id: nonzero_hex::<16>(),
                span_id: random_hex::<8>(),
                // We do not record spans, so we do not claim the trace is sampled.
                flags: "00".into(),
                propagated: false,
            },
        }
    }

    /// The header value for the upstream.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// Sets `traceparent` (and drops `tracestate` of a broken trace) in
    /// the headers forwarded upstream.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if !self.propagated {
            headers.remove(TRACESTATE);
        }
        if let Ok(v) = HeaderValue::from_str(&self.header()) {
            headers.insert(TRACEPARENT, v);
        }
    }
}

/// `version-traceid-parentid-flags`, lowercase hex. Version `ff` is
/// invalid; an all-zero trace or parent id is invalid; a future version
/// may append fields after the flags (`-...`), version 00 may not.
fn parse(v: &str) -> Option<(String, String)> {
    let v = v.trim();
    let b = v.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return None;
    }
    if version == b"00" && b.len() != 55 {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    Some((v[3..35].to_owned(), v[53..55].to_owned()))
}

fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back on hashing a counter with a random
        // seed (ids only need to be unique, not secret).
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        for chunk in bytes.chunks_mut(8) {
            h.write_u8(1);
            let x = h.finish().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nonzero_hex<const N: usize>() -> String {
    loop {
        let h = random_hex::<N>();
        if h.bytes().any(|c| c != b'0') {
            return h;
        }
    }
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
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, "01");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.header().len(), 55);
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
            assert_eq!(t.trace_id.len(), 32);
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
        let t = TraceContext::from_headers(&HeaderMap::new());
        assert!(!t.propagated);
        assert_eq!(t.flags, "00");
    }

    #[test]
    fn apply_drops_tracestate_of_a_broken_trace() {
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("a=b"));
        let t = TraceContext::from_headers(&h);
        t.apply(&mut h);
        assert!(h.get(TRACESTATE).is_none());
        assert_eq!(h.get(TRACEPARENT).unwrap().to_str().unwrap(), t.header());
    }
}
