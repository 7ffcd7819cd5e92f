//! Header rewriting at the proxy boundary: hop-by-hop headers removed both
//! ways (including those named in `Connection`; on requests before the
//! gateway adds any header of its own), client claims about the client IP,
//! scheme, prefix, original URL or method removed, `X-Real-IP`,
//! `X-Forwarded-*`, `Forwarded` and `X-Request-Id` set on the way in, and
//! `Server`, `X-Powered-By` removed and security headers added on the way
//! out.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::net::IpText;

pub use super::header_name::same_name;
use super::{
    config::{SecurityHeaders, UnderscoreHeaders},
    header_name::starts_with_name,
};

// Names the request path sets, validated once at compile time (a
// `from_static` call at run time checks the name on every request).
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1,
/// plus the non-standard ones proxies traditionally strip).
///
/// As `HeaderName`s (not `&str`): removing by `&str` parses and
/// case-folds the name on every call. A `static`, not a `const`: a const
/// array is built and dropped again at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers backends trust for the client IP, scheme, port, prefix or host
/// that only a proxy may set: removed from untrusted peers, kept from
/// trusted proxies (Traefik CVE-2024-52003 and CVE-2026-35051 are the
/// public cases). `X-Forwarded-For/-Proto/-Host` and `Forwarded` are
/// replaced by [`set_forwarding`], `X-Real-IP` by [`strip_client_claims`].
const PROXY_CLAIMS: &[&str] = &[
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-by",
    "x-forwarded",
    "forwarded-for",
    "x-original-forwarded-for",
    "x-url-scheme",
    "front-end-https",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-host",
    "x-original-host",
];

/// Headers that make a backend use another method or URL than the one the
/// gateway routed (and validated): removed from every peer, trusted or not,
/// since no proxy in front of the gateway needs them.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// Name prefixes of the proxy family: every field starting with one of
/// these is a proxy's (or an authenticating proxy's, or a TLS terminator's)
/// statement about the client, removed from untrusted peers.
/// - `x-forwarded-`: `-For/-Proto/-Host` are rebuilt by [`set_forwarding`];
///   the rest (`-Prefix`, `-Port`, `-Client-Cert` (Envoy XFCC), `-Method`
///   (Traefik forward auth), `-User`/`-Email`/`-Groups`/`-Access-Token`
///   (oauth2-proxy), ...) would be the client's word.
/// - `x-envoy-`: Envoy's internal headers, which Envoy itself removes from
///   external clients (`x-envoy-original-path`, `x-envoy-internal`, ...).
/// - `x-ssl-`, `ssl-client-`, `x-client-cert`, `x-client-ssl-`,
///   `x-client-verify`: client-certificate results a TLS terminator passes
///   on (`X-SSL-Client-Verify`, `X-SSL-Client-DN`, `SSL-Client-Cert`).
/// - `x-auth-request-`, `x-webauth-`: authenticated user from oauth2-proxy
///   and Grafana-style auth proxies.
const PROXY_CLAIM_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-envoy-",
    "x-ssl-",
    "ssl-client-",
    "x-client-cert",
    "x-client-ssl-",
    "x-client-verify",
    "x-auth-request-",
    "x-webauth-",
];

/// Exact names of the proxy family's authenticated-user fields (Apache
/// `REMOTE_USER` through CGI, auth proxies), removed from untrusted peers.
const REMOTE_USER: &[&str] = &["x-remote-user", "remote-user"];

/// Headers the gateway itself sets from what it knows: any client-sent
/// copy in underscore spelling is removed (the dash spelling is replaced).
const SET_BY_GATEWAY: &[&str] = &[
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

/// Which claim family a header name belongs to, `_` read as `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// [`OVERRIDES`]: removed from every peer.
    Override,
    /// The proxy family: removed from untrusted peers.
    Proxy,
    /// Set by the gateway ([`SET_BY_GATEWAY`]).
    Gateway,
}

fn claim(name: &str) -> Option<Claim> {
    if OVERRIDES.iter().any(|w| same_name(name, w)) {
        Some(Claim::Override)
    } else if SET_BY_GATEWAY.iter().any(|w| same_name(name, w)) {
        Some(Claim::Gateway)
    } else if PROXY_CLAIMS
        .iter()
        .chain(REMOTE_USER)
        .any(|w| same_name(name, w))
        || PROXY_CLAIM_PREFIXES
            .iter()
            .any(|p| starts_with_name(name, p))
    {
        Some(Claim::Proxy)
    } else {
        None
    }
}

/// Removes client claims, each family matched with `_` read as `-`
/// (`X_Original_URL` is `X-Original-URL` to a CGI backend):
/// [`OVERRIDES`] from every peer; the proxy family ([`PROXY_CLAIMS`],
/// [`PROXY_CLAIM_PREFIXES`], [`REMOTE_USER`]) from untrusted peers; from
/// every peer, any underscore spelling of a proxy-family field or of one the
/// gateway sets (a proxy never sends those). Then sets `X-Real-IP` to the
/// client IP (as NGINX setups do with `proxy_set_header X-Real-IP
/// $remote_addr`). The forwarding fields the gateway rebuilds
/// (`X-Forwarded-For/-Proto/-Host`, `Forwarded`) are left to
/// [`set_forwarding`].
pub fn strip_client_claims(
    headers: &mut HeaderMap,
    peer_trusted: bool,
    client_ip: Option<HeaderValue>,
) {
    let remove: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let name = n.as_str();
            let underscore = name.contains('_');
            match claim(name) {
                Some(Claim::Override) => true,
                Some(Claim::Gateway) => underscore,
                Some(Claim::Proxy) => underscore || !peer_trusted,
                None => false,
            }
        })
        .cloned()
        .collect();
    for name in remove {
        headers.remove(name);
    }
    set(headers, X_REAL_IP, client_ip);
}

/// An address as a field value (`X-Real-IP`, `X-Forwarded-For`): IPv4
/// dotted, IPv6 as std writes it.
pub fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    format_value(format_args!("{}", IpText(ip)))
}

/// End-to-end fields that describe the request itself, never one
/// connection: a `Connection` token naming one of them is ignored. `Host`
/// routes the request; `Content-Length` frames it (removing it would hide the
/// declared length from the 413 check and re-frame the body as chunked);
/// `Content-Type` and `Content-Encoding` say how the body is validated and
/// read. `Transfer-Encoding` is hop-by-hop itself and re-framed by the
/// gateway.
const NOT_CONNECTION_SPECIFIC: &[HeaderName] = &[
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
];

/// Removes hop-by-hop headers and every header named in `Connection`
/// (except the end-to-end fields in `NOT_CONNECTION_SPECIFIC`).
///
/// On requests this must run before the gateway adds any header
/// (`X-Request-Id`, identity headers, `X-Forwarded-*`, `X-Real-IP`):
/// `Connection` may only remove what the client itself sent (Traefik
/// CVE-2024-45410).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONNECTION).iter();
    match (values.next(), values.next()) {
        (None, _) => {}
        // The usual case, one `Connection` field: its value is shared with
        // the request (cloning it is a reference count) and each token is
        // removed by name as it is read, with nothing collected.
        (Some(v), None) => {
            let v = v.clone();
            for token in v.to_str().unwrap_or_default().split(',') {
                remove_connection_option(headers, token.trim());
            }
        }
        (Some(_), Some(_)) => {
            let named: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for v in &named {
                for token in v.to_str().unwrap_or_default().split(',') {
                    remove_connection_option(headers, token.trim());
                }
            }
        }
    }
    // Usually none is left (a keep-alive upstream sends none): one pass
    // over the names present instead of nine hashed removals.
    if headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// Removes the field a `Connection` option names, unless it is one of the
/// request's routing and framing fields (`Connection: host` or
/// `Connection: content-length` cannot remove those). Looked up by `&str`:
/// nothing is allocated, and a token that is not a field name matches none.
fn remove_connection_option(headers: &mut HeaderMap, token: &str) {
    if token.is_empty()
        || NOT_CONNECTION_SPECIFIC
            .iter()
            .any(|n| n.as_str().eq_ignore_ascii_case(token))
    {
        return;
    }
    headers.remove(token);
}

/// Joins several `Cookie` fields into one with `; ` (RFC 9113 §8.2.3: an
/// HTTP/2 client may split the cookie header, and they must be joined
/// before forwarding to HTTP/1.1, where a server may read only the first or
/// last line). Values that are not visible ASCII are left as they are.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Option<Vec<&str>> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    if let Some(joined) = joined.map(|v| v.join("; ")) {
        insert(headers, header::COOKIE, &joined);
    }
}

/// Whether a request asks for a WebSocket upgrade (HTTP/1.1 only).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Applies `underscore_headers`: returns the first offending name when the
/// policy is `Reject`, removes them for `Drop`.
pub fn underscores(headers: &mut HeaderMap, policy: UnderscoreHeaders) -> Option<String> {
    if policy == UnderscoreHeaders::Allow {
        return None;
    }
    let bad: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    match (policy, bad.first()) {
        (UnderscoreHeaders::Reject, Some(first)) => Some(first.to_string()),
        _ => {
            for n in bad {
                headers.remove(n);
            }
            None
        }
    }
}

/// What the gateway knows about the client, for the forwarding headers.
pub struct Forwarding<'a> {
    /// The socket peer (or the PROXY protocol source).
    pub peer: IpAddr,
    /// `peer` as a field value when the caller has it made already (the
    /// connection keeps one); formatted here otherwise.
    pub peer_value: Option<&'a HeaderValue>,
    /// Whether `peer` is a trusted proxy whose forwarding headers we extend.
    pub peer_trusted: bool,
    /// `http` or `https`, as the client reached us.
    pub proto: &'static str,
    /// The Host the client asked for (the validated authority), as a field value.
    pub host: Option<&'a HeaderValue>,
    /// The header whose chain the client IP was read from
    /// (`client_ip_header`): only that chain is extended from a trusted
    /// proxy. The other one was never validated, so it is replaced as if
    /// the peer were untrusted: a client cannot pass a forged `Forwarded`
    /// through a load balancer that only sets `X-Forwarded-For`.
    pub chain: super::client_ip::ClientIpHeader,
}

/// Sets `X-Forwarded-For`/`-Proto`/`-Host` and `Forwarded`. From a trusted
/// proxy the chain the gateway read (`Forwarding::chain`) is extended; the
/// other chain, and both from anyone else, are replaced.
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let (xff, xfp, xfh) = (X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST);
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let vals: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    };
    use super::client_ip::ClientIpHeader;
    let extend_xff = f.peer_trusted && f.chain == ClientIpHeader::XForwardedFor;
    let extend_fwd = f.peer_trusted && f.chain == ClientIpHeader::Forwarded;
    let peer = f.peer;
    let xff_value = match extend_xff.then(|| joined(headers, &xff)).flatten() {
        Some(prev) => format_value(format_args!("{prev}, {}", IpText(peer))),
        None => match f.peer_value {
            Some(v) => Some(v.clone()),
            None => ip_value(peer),
        },
    };
    let fwd_prev = if extend_fwd {
        joined(headers, &header::FORWARDED)
    } else {
        None
    };
    let keep_proto = f.peer_trusted && headers.contains_key(&xfp);
    let keep_host = f.peer_trusted && headers.contains_key(&xfh);
    set(headers, xff, xff_value);
    if !keep_proto {
        headers.insert(xfp, HeaderValue::from_static(f.proto));
    }
    if !keep_host {
        match f.host {
            Some(h) => {
                headers.insert(xfh, h.clone());
            }
            None => {
                headers.remove(xfh);
            }
        }
    }
    // RFC 7239 §6: an IPv6 node is quoted and bracketed.
    let node = ForwardedNode(f.peer);
    let host = f
        .host
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
    let host_param = HostParam(host);
    let proto = f.proto;
    let forwarded = match fwd_prev {
        Some(prev) => format_value(format_args!("{prev}, for={node};proto={proto}{host_param}")),
        None => format_value(format_args!("for={node};proto={proto}{host_param}")),
    };
    set(headers, header::FORWARDED, forwarded);
}

/// `for=` of a `Forwarded` element: IPv4 bare, IPv6 as `"[addr]"`.
struct ForwardedNode(IpAddr);

impl std::fmt::Display for ForwardedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(_) => IpText(self.0).fmt(f),
            IpAddr::V6(a) => write!(f, "\"[{a}]\""),
        }
    }
}

/// `;host="..."` of a `Forwarded` element, or nothing.
struct HostParam<'a>(Option<&'a str>);

impl std::fmt::Display for HostParam<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(h) => write!(f, ";host=\"{h}\""),
            None => Ok(()),
        }
    }
}

/// Sets `name` to `value`, or removes it when the value could not be made.
fn set(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// A header value formatted on the stack: one allocation, for the value
/// itself (values over 256 bytes are formatted on the heap first). `None`
/// when the text is not a valid field value.
pub fn format_value(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    let mut buf = StackText::<256>::default();
    if std::fmt::Write::write_fmt(&mut buf, args).is_ok() {
        HeaderValue::from_bytes(buf.as_bytes()).ok()
    } else {
        HeaderValue::from_str(&std::fmt::format(args)).ok()
    }
}

/// A fixed-capacity text buffer; writing past `N` bytes fails.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for StackText<N> {
    fn default() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> StackText<N> {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> std::fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// `X-Request-Id`, made once (a custom name built from a `&str` per use
/// would be copied each time).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Keeps an incoming `X-Request-Id` from a trusted peer when it is short
/// and printable; otherwise generates one. Returns the id in use: a field
/// value of visible ASCII, shared with the request's (cloning it is a
/// reference count).
pub fn request_id(headers: &mut HeaderMap, peer_trusted: bool) -> HeaderValue {
    if peer_trusted
        && let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return v.clone();
    }
    let id = generate_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 128 random bits as 32 hex digits (not a secret; unique enough to
/// correlate logs), from the thread-local generator the trace ids use.
fn generate_id() -> HeaderValue {
    let bits = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    let text = crate::observe::trace::Hex::<32>::new(bits);
    HeaderValue::from_str(text.as_str()).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Response headers from an upstream: hop-by-hop and identifying headers removed.
pub fn clean_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::SERVER);
    headers.remove(X_POWERED_BY);
}

/// Adds the configured security headers where the response has none, and
/// HSTS on TLS. `problem` marks the gateway's own problem+json answers.
pub fn add_security(headers: &mut HeaderMap, cfg: &SecurityHeaders, tls: bool, problem: bool) {
    if !cfg.enabled {
        return;
    }
    let [nosniff, frame, referrer, csp, problem_csp, hsts] = cfg.values();
    let mut set = |name: HeaderName, value: &Option<HeaderValue>, overwrite: bool| {
        let Some(value) = value else { return };
        if overwrite || !headers.contains_key(&name) {
            headers.insert(name, value.clone());
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, nosniff, false);
    set(header::X_FRAME_OPTIONS, frame, false);
    set(header::REFERRER_POLICY, referrer, false);
    if problem {
        set(header::CONTENT_SECURITY_POLICY, problem_csp, true);
    } else {
        set(header::CONTENT_SECURITY_POLICY, csp, false);
    }
    if tls {
        set(header::STRICT_TRANSPORT_SECURITY, hsts, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_32_lowercase_hex_digits_and_differ() {
        let (a, b) = (generate_id(), generate_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id:?}");
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)),
                "{id:?}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarding_replaced_for_untrusted_and_extended_for_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        let f = Forwarding {
            peer: "10.0.0.1".parse().unwrap(),
            peer_value: None,
            peer_trusted: false,
            proto: "http",
            host: Some(&HeaderValue::from_static("a.example")),
            chain: super::super::client_ip::ClientIpHeader::XForwardedFor,
        };
        set_forwarding(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http;host=\"a.example\"");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        set_forwarding(
            &mut h,
            &Forwarding {
                peer_trusted: true,
                ..f
            },
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
    }

    #[test]
    fn only_the_chain_the_gateway_read_is_extended_from_a_trusted_proxy() {
        use super::super::client_ip::ClientIpHeader;
        let forged = || {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
            h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
            h
        };
        let f = |chain| Forwarding {
            peer: "10.0.0.1".parse().unwrap(),
            peer_value: None,
            peer_trusted: true,
            proto: "http",
            host: None,
            chain,
        };
        // Reading X-Forwarded-For: the client's Forwarded is not passed on.
        let mut h = forged();
        set_forwarding(&mut h, &f(ClientIpHeader::XForwardedFor));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http");
        // Reading Forwarded: the client's X-Forwarded-For is not passed on.
        let mut h = forged();
        set_forwarding(&mut h, &f(ClientIpHeader::Forwarded));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["forwarded"], "for=6.6.6.6, for=10.0.0.1;proto=http");
    }

    #[test]
    fn client_claims_removed_from_untrusted_and_overrides_from_all() {
        let forged = [
            "x-real-ip",
            "x-forwarded-prefix",
            "true-client-ip",
            "x-http-method-override",
            "x-original-url",
        ];
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for n in forged {
                h.insert(n, HeaderValue::from_static("6.6.6.6"));
            }
            strip_client_claims(&mut h, trusted, ip_value("10.0.0.1".parse().unwrap()));
            assert_eq!(h["x-real-ip"], "10.0.0.1");
            assert!(!h.contains_key("x-http-method-override"));
            assert!(!h.contains_key("x-original-url"));
            assert_eq!(h.contains_key("x-forwarded-prefix"), trusted);
            assert_eq!(h.contains_key("true-client-ip"), trusted);
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generate_id(), generate_id());
        assert_eq!(generate_id().len(), 32);
    }
}
