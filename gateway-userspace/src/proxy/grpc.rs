//! gRPC at the edge (gRPC over HTTP/2, `PROTOCOL-HTTP2.md` of grpc/grpc):
//! recognising a call, its deadline (`grpc-timeout`), and the gateway's own
//! refusals as trailers-only responses, so a gRPC client sees a status code
//! it understands (`UNAUTHENTICATED`, `RESOURCE_EXHAUSTED`, ...) instead of
//! an HTTP error it reports as `UNKNOWN` or `INTERNAL`.
//!
//! A call otherwise goes through every phase as any request does (auth,
//! metadata validation, rate limits, escalation), and stays HTTP/2 to an
//! upstream with `protocol = "h2c" | "h2" | "auto"`, trailers and both
//! directions streamed (request buffering is skipped for gRPC).

#![forbid(unsafe_code)]

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::{
    body::{self, ProxyBody},
    reject::Rejection,
};

/// Whether a request is a gRPC call: a `POST` (every gRPC call is one)
/// whose `content-type` is `application/grpc`, `application/grpc+<codec>`
/// or `application/grpc;<params>`, or gRPC-Web's `application/grpc-web`,
/// `application/grpc-web-text`, each with the same `+`/`;` suffixes.
/// Anything else (`application/grpc-foo`, a GET) is an ordinary request:
/// request buffering, HTTP error statuses.
pub fn is_grpc(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_grpc_type(v.as_bytes()))
}

fn is_grpc_type(v: &[u8]) -> bool {
    const TYPES: [&[u8]; 3] = [
        b"application/grpc-web-text",
        b"application/grpc-web",
        b"application/grpc",
    ];
    TYPES.iter().any(|t| {
        v.len() >= t.len()
            && v[..t.len()].eq_ignore_ascii_case(t)
            && matches!(v.get(t.len()), None | Some(b'+' | b';'))
    })
}

/// The call's deadline from `grpc-timeout` (1 to 8 digits and a unit:
/// `H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos); `None`
/// when absent or malformed (then the route's timeout applies alone).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status code for an HTTP status the gateway answers with: the
/// mapping of grpc/grpc `http-grpc-status-mapping.md`, made more precise
/// where the gateway knows the cause (429 and 413 are limits, 504 a
/// deadline, 400 a bad argument).
pub fn status_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 | 415 => 3,             // INVALID_ARGUMENT
        401 => 16,                  // UNAUTHENTICATED
        403 => 7,                   // PERMISSION_DENIED
        404 | 405 | 501 => 12,      // UNIMPLEMENTED
        408 | 504 => 4,             // DEADLINE_EXCEEDED
        413 | 414 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,            // UNAVAILABLE
        500 => 13,                  // INTERNAL
        _ => 2,                     // UNKNOWN
    }
}

/// A trailers-only gRPC response for a refusal: HTTP 200, the call's own
/// `content-type` (`application/grpc+proto`, `application/grpc-web`, ...),
/// `grpc-status` and a percent-encoded `grpc-message`
/// (the problem detail) in the header block, no body (gRPC-Web keeps a
/// trailers-only status in the headers too). The rejection's own
/// headers (`WWW-Authenticate`, `Retry-After`, `RateLimit`) are kept; the
/// request id goes in `x-request-id` as on every answer.
pub fn refusal(rejection: &Rejection, content_type: &HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    let h = resp.headers_mut();
    for (name, value) in &rejection.headers {
        h.append(name.clone(), value.clone());
    }
    h.insert(header::CONTENT_TYPE, content_type.clone());
    // A refusal is HTTP 200 to gRPC: no cache may keep it for the URL.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(status_code(rejection.reason.status()))),
    );
    if let Ok(v) = HeaderValue::try_from(percent_encode(&rejection.detail)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-message` encoding: bytes outside `0x20..=0x7E`, and `%`, as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_grpc_content_types_only() {
        let h = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            h
        };
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc;charset=utf-8",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text+proto",
        ] {
            assert!(is_grpc(&Method::POST, &h(ct)), "{ct}");
            assert!(!is_grpc(&Method::GET, &h(ct)), "GET {ct}");
        }
        for ct in [
            "application/grpcx",
            "application/grpc-foo",
            "application/grpc-webx",
            "application/json",
            "text/grpc",
        ] {
            assert!(!is_grpc(&Method::POST, &h(ct)), "{ct}");
        }
    }

    #[test]
    fn grpc_timeout_units_and_garbage() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            timeout(&h)
        };
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("123456789m"), None, "more than 8 digits");
        assert_eq!(t("m"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(percent_encode("50% off\n"), "50%25 off%0A");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}
