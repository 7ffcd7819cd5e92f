//! The check phase: limits that hyper does not enforce the way a proxy
//! should (414 for a long request target, 431 for header bytes, 413 for a
//! declared body), the method (length, case, TRACE/CONNECT), header names
//! with underscores, the Host, the request form and path normalization. A
//! request that fails here never reaches a route.

#![forbid(unsafe_code)]

use http::{HeaderMap, HeaderValue, Method, Request, Version, header};

use super::{
    authority::{self, Authority},
    config::Limits,
    headers,
    path::{self, PathRules},
    reject::{Reason, Rejection},
    router::Router,
};

/// What the check phase learned about a request.
#[derive(Debug)]
pub struct Checked {
    /// The validated, normalized authority (absolute-form target,
    /// `:authority` or `Host`): routed on, sent upstream as `Host` and in
    /// `X-Forwarded-Host`/`Forwarded`. `None` only for HTTP/1.0 without Host.
    pub authority: Option<Authority>,
    /// Normalized path: the one routed and forwarded (`*` for `OPTIONS *`).
    pub path: NormalPath,
    /// `OPTIONS *` (RFC 9110 §9.3.7): answered by the gateway itself.
    pub asterisk: bool,
}

/// A normalized request path. Most paths arrive normal: those are the
/// request's own bytes, shared (a reference count), not copied.
#[derive(Debug, Clone)]
pub enum NormalPath {
    /// The request's path as sent, already in normal form.
    AsSent(http::uri::PathAndQuery),
    /// The path after normalization changed it.
    Normalized(String),
    /// `*` of `OPTIONS *`.
    Asterisk,
}

impl std::ops::Deref for NormalPath {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Self::AsSent(pq) => pq.path(),
            Self::Normalized(p) => p,
            Self::Asterisk => "*",
        }
    }
}

impl Checked {
    /// Lowercase host without port, for routing.
    pub fn host(&self) -> Option<&str> {
        self.authority.as_ref().map(Authority::host)
    }
}

/// Methods of RFC 9110 §9 and PATCH (RFC 5789): a request whose method
/// equals one of these (or one a route lists) ignoring case, but is not
/// spelled exactly so, is refused: methods are case-sensitive, so `post`
/// would match no `methods = ["POST"]` rule while a backend may treat it as
/// POST.
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The methods the gateway proxies, for `Allow` on 405 and `OPTIONS *`.
pub fn allow_header(limits: &Limits) -> HeaderValue {
    HeaderValue::from_static(if limits.allow_trace {
        "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"
    } else {
        "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
    })
}

/// Whether the request announces a body.
pub fn may_have_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The method rules: at most `max_method_length` bytes (501), never a
/// case variant of a known method (400), `TRACE` only with `allow_trace`
/// and never `CONNECT` (405). hyper and `http` already refuse a method that
/// is not a token (400 before the service runs).
pub fn check_method(method: &Method, limits: &Limits, router: &Router) -> Result<(), Rejection> {
    let m = method.as_str();
    if m.len() > limits.max_method_length {
        return Err(Rejection::new(
            Reason::MethodNotImplemented,
            format!(
                "the request method is longer than {} bytes",
                limits.max_method_length
            ),
        ));
    }
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        let upper = m.to_ascii_uppercase();
        if STANDARD_METHODS.contains(&upper.as_str()) || router.lists_method(&upper) {
            return Err(Rejection::new(
                Reason::BadRequest,
                format!("methods are case-sensitive: send '{upper}'"),
            ));
        }
    }
    let refused = match *method {
        Method::TRACE => !limits.allow_trace,
        Method::CONNECT => true,
        _ => false,
    };
    if refused {
        return Err(Rejection::new(
            Reason::MethodNotAllowed,
            format!("the gateway does not forward {m} requests"),
        )
        .with_header(header::ALLOW, allow_header(limits)));
    }
    Ok(())
}

/// The request's authority, validated (RFC 9110 §7.2, RFC 9112 §3.2,
/// RFC 9113 §8.3.1):
/// - more than one `Host` field: 400;
/// - HTTP/1.1 without `Host`: 400 (HTTP/1.0 may omit it: `Ok(None)`);
/// - absolute-form (`GET http://a/ HTTP/1.1`): the target's authority
///   replaces `Host` (which must still be present and well-formed);
/// - a scheme (absolute-form, `:scheme`) other than `http` or `https`: 400;
/// - HTTP/2: `:authority`, or `host` when there is none; both present and
///   different (after normalization) is malformed: 400;
/// - any value that [`authority::parse`] refuses: 400.
pub fn request_authority<B>(req: &Request<B>) -> Result<Option<Authority>, Rejection> {
    let bad = |detail: String| Rejection::new(Reason::BadHost, detail);
    let parse = |raw: &str, what: &str| {
        authority::parse(raw).map_err(|e| bad(format!("invalid {what}: {e}")))
    };
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(bad("more than one Host header".into())),
        (Some(v), None) => {
            let v = v
                .to_str()
                .map_err(|_| bad("invalid Host: not visible ASCII".into()))?;
            Some(parse(v, "Host")?)
        }
        (None, _) => None,
    };
    let uri = req.uri();
    let target = match uri.authority() {
        Some(a) => {
            // The gateway proxies http and https only (also for `:scheme`).
            // Schemes are case-insensitive (RFC 3986 §3.1): `HTTPS` is https.
            if !uri
                .scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
            {
                return Err(bad("the target scheme must be http or https".into()));
            }
            Some(parse(a.as_str(), "request-target authority")?)
        }
        None => None,
    };
    if req.version() == Version::HTTP_11 && host.is_none() {
        return Err(bad("a Host header is required".into()));
    }
    if req.version() < Version::HTTP_2 {
        return Ok(target.or(host));
    }
    match (target, host) {
        (Some(t), Some(h)) if t != h => Err(bad(
            "the host header differs from :authority (RFC 9113 §8.3.1)".into(),
        )),
        (Some(a), _) | (None, Some(a)) => Ok(Some(a)),
        (None, None) => Err(bad("an :authority is required".into())),
    }
}

/// Runs the checks in order: method, request-target length, header limits,
/// underscores, Content-Length, authority, request form and path.
pub fn check<B>(
    req: &mut Request<B>,
    limits: &Limits,
    router: &Router,
) -> Result<Checked, Rejection> {
    check_method(req.method(), limits, router)?;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_request_line {
        return Err(Rejection::new(
            Reason::UriTooLong,
            format!(
                "the request target is longer than {} bytes",
                limits.max_request_line
            ),
        ));
    }
    let h = req.headers_mut();
    let bytes: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if h.len() > limits.max_headers || bytes > limits.max_header_bytes {
        return Err(Rejection::new(
            Reason::HeadersTooLarge,
            format!(
                "at most {} header fields and {} bytes of headers are allowed",
                limits.max_headers, limits.max_header_bytes
            ),
        ));
    }
    if let Some(name) = headers::underscores(h, limits.underscore_headers) {
        return Err(Rejection::new(
            Reason::UnderscoreHeader,
            format!("header name '{name}' contains an underscore"),
        ));
    }
    let cl: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    if !cl.is_empty() {
        let parsed: Option<Vec<u64>> = cl
            .iter()
            .map(|v| v.to_str().ok()?.trim().parse().ok())
            .collect();
        match parsed.as_deref() {
            Some([n, rest @ ..]) if rest.iter().all(|m| m == n) => {
                if *n > limits.max_body_bytes {
                    return Err(Rejection::new(
                        Reason::BodyTooLarge,
                        format!(
                            "the request body is larger than {} bytes",
                            limits.max_body_bytes
                        ),
                    ));
                }
            }
            _ => return Err(Rejection::new(Reason::BadRequest, "invalid Content-Length")),
        }
    }
    let authority = request_authority(req)?;
    let uri = req.uri();
    // hyper gives `*` as the path of an asterisk-form target (and `http`
    // keeps it for `:path: *` in HTTP/2, where the URI always carries
    // :authority). An absolute-form target with an empty path
    // (`OPTIONS http://host HTTP/1.1`) is the server-wide OPTIONS too
    // (RFC 9112 §3.2.4), never `OPTIONS /`; `http` turns the empty path
    // into `/`, so `h1_scan` finds it in the raw request line and the
    // pipeline answers it like this one.
    let asterisk = uri.path() == "*"
        && uri.query().is_none()
        && (uri.authority().is_none() || req.version() == Version::HTTP_2);
    if asterisk {
        if req.method() != Method::OPTIONS {
            return Err(Rejection::new(
                Reason::BadPath,
                "the asterisk-form target is only for OPTIONS",
            ));
        }
        return Ok(Checked {
            authority,
            path: NormalPath::Asterisk,
            asterisk: true,
        });
    }
    let rules = PathRules {
        escaped_slashes: limits.escaped_slashes,
        escaped_controls: limits.escaped_controls,
        path_parameters: limits.path_parameters,
    };
    let path = match uri.path_and_query() {
        // `uri.path()`, not `pq.path()`: without a path at all (HTTP/2 with
        // no `:path`) the first is empty, the second `/`; an empty path
        // is refused by `normalize_with` below (400), never taken as `/`.
        Some(pq) if !uri.path().is_empty() && path::is_normal(uri.path()) => {
            NormalPath::AsSent(pq.clone())
        }
        _ => NormalPath::Normalized(
            path::normalize_with(uri.path(), rules)
                .map_err(|e| Rejection::new(Reason::BadPath, format!("bad request path: {e}")))?,
        ),
    };
    Ok(Checked {
        authority,
        path,
        asterisk: false,
    })
}
