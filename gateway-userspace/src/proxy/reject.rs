//! Why a request ended before (or instead of) a normal upstream response,
//! who caused it, and the RFC 9457 `application/problem+json` answer. The
//! status code, the log field and (later) the penalty score follow from the
//! [`Reason`] and its [`Fault`], never from string matching.

#![forbid(unsafe_code)]

use std::fmt;

use http::StatusCode;

/// Who caused a request to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong or too much (4xx; counts as an offence).
    Client,
    /// The upstream failed, was unreachable or too slow (502/503/504).
    Upstream,
    /// The gateway itself failed (500).
    Internal,
}

impl Fault {
    /// The name logged as `gateway.fault`: `client`, `upstream`, `internal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Internal => "internal",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was ended by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No route matches the host, path, method and headers.
    NoRoute,
    /// The path is malformed (bad percent-encoding, control characters).
    BadPath,
    /// A request that is not valid HTTP for a proxy (e.g. both
    /// Content-Length and Transfer-Encoding, a bad Content-Length).
    BadRequest,
    /// A trusted proxy's `X-Forwarded-For` / `Forwarded` chain does not
    /// name the client where the walk stops (garbage, `unknown`, a host
    /// name) (400). Not an offence: the client is unknown.
    BadClientIp,
    /// A header name contains `_` and `underscore_headers = "reject"`.
    UnderscoreHeader,
    /// The request target is longer than `max_request_line`.
    UriTooLong,
    /// Too many header fields or bytes.
    HeadersTooLarge,
    /// The body is larger than `max_body_bytes` (declared or streamed).
    BodyTooLarge,
    /// The client's body broke off (connection closed or malformed chunks).
    BodyIncomplete,
    /// The request head was not complete within `header_read_timeout`
    /// (slowloris); answered on the raw connection, which is then closed.
    HeaderTimeout,
    /// The client stopped sending its body for longer than `body_read_timeout`.
    BodyTimeout,
    /// The authenticate phase refused the request (401): wrong credentials.
    Unauthenticated,
    /// No credentials were sent to a protected route (401); not an offence.
    AuthMissing,
    /// The authenticate phase refused the identity (403).
    Forbidden,
    /// The validate phase refused the request (400).
    Invalid,
    /// The rate-limit phase refused the request (429).
    RateLimited,
    /// The consumer used up its quota for the current calendar window
    /// (429); not an offence: a paying client over its plan is no attacker.
    QuotaExceeded,
    /// The request body has a media type the route does not accept (415).
    UnsupportedMediaType,
    /// Malformed credentials (e.g. a broken Authorization header) (400).
    AuthInvalidRequest,
    /// Too many failed authentications from this source (429).
    TooManyAuthFailures,
    /// The identity provider (JWKS, introspection) is unreachable (503).
    AuthUnavailable,
    /// The source was escalated for L7 offences and is blocked for a while
    /// (429); its packets are dropped by XDP unless it came through a
    /// trusted proxy.
    Escalated,
    /// The pool has no healthy target (502).
    NoHealthyUpstream,
    /// Connecting to the upstream failed, or it broke the response (502).
    UpstreamFailed,
    /// The upstream did not answer within `request_timeout` (504).
    UpstreamTimeout,
    /// A bug or resource failure in the gateway (500).
    Internal,
    /// A missing, repeated or malformed Host / `:authority` (400).
    BadHost,
    /// A method the gateway refuses to forward, e.g. `TRACE` (405).
    MethodNotAllowed,
    /// A method longer than `max_method_length` (501).
    MethodNotImplemented,
}

impl Reason {
    /// The HTTP status this reason is answered with.
    pub fn status(self) -> StatusCode {
        use Reason::*;
        match self {
            NoRoute => StatusCode::NOT_FOUND,
            BadPath | BadRequest | BadClientIp | UnderscoreHeader | Invalid | BodyIncomplete
            | AuthInvalidRequest | BadHost => StatusCode::BAD_REQUEST,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            MethodNotImplemented => StatusCode::NOT_IMPLEMENTED,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TooManyAuthFailures | Escalated => StatusCode::TOO_MANY_REQUESTS,
            AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            UriTooLong => StatusCode::URI_TOO_LONG,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout | HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            Unauthenticated | AuthMissing => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            RateLimited | QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            NoHealthyUpstream | UpstreamFailed => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused it.
    pub fn fault(self) -> Fault {
        use Reason::*;
        match self {
            NoHealthyUpstream | UpstreamFailed | UpstreamTimeout | AuthUnavailable => {
                Fault::Upstream
            }
            Internal => Fault::Internal,
            _ => Fault::Client,
        }
    }

    /// A stable snake_case code for logs, metrics and the problem `type`.
    pub fn code(self) -> &'static str {
        use Reason::*;
        match self {
            NoRoute => "no_route",
            BadPath => "bad_path",
            BadRequest => "bad_request",
            BadClientIp => "bad_client_ip",
            UnderscoreHeader => "underscore_header",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "headers_too_large",
            BodyTooLarge => "body_too_large",
            BodyTimeout => "body_timeout",
            BodyIncomplete => "body_incomplete",
            HeaderTimeout => "header_timeout",
            Unauthenticated => "unauthenticated",
            AuthMissing => "auth_missing",
            Forbidden => "forbidden",
            Invalid => "invalid",
            RateLimited => "rate_limited",
            QuotaExceeded => "quota_exceeded",
            UnsupportedMediaType => "unsupported_media_type",
            AuthInvalidRequest => "auth_invalid_request",
            TooManyAuthFailures => "too_many_auth_failures",
            AuthUnavailable => "auth_unavailable",
            Escalated => "escalated",
            NoHealthyUpstream => "no_healthy_upstream",
            UpstreamFailed => "upstream_failed",
            UpstreamTimeout => "upstream_timeout",
            Internal => "internal",
            BadHost => "bad_host",
            MethodNotAllowed => "method_not_allowed",
            MethodNotImplemented => "method_not_implemented",
        }
    }
}

/// A request ended by a phase: the reason and a detail for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why: the status, the problem `type` and the metrics label follow from it.
    pub reason: Reason,
    /// Shown to the client in the problem `detail`; never include secrets.
    pub detail: String,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`, ...).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// A complete problem+json body written by the phase (auth and
    /// validation render their own, with their extension members).
    pub problem: Option<Vec<u8>>,
}

impl Rejection {
    /// A rejection with `reason` and a client-facing `detail`, no extra headers, and the standard
    /// problem body.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            headers: Vec::new(),
            problem: None,
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::HeaderName, value: http::HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Uses a problem+json body rendered by the phase.
    pub fn with_problem(mut self, body: Vec<u8>) -> Self {
        self.problem = Some(body);
        self
    }

    /// The RFC 9457 problem document.
    pub fn problem_json(&self, request_id: &str) -> String {
        let status = self.reason.status();
        serde_json::json!({
            "type": format!("urn:gateway:problem:{}", self.reason.code()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail,
            "request_id": request_id,
        })
        .to_string()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.reason.code(),
            self.reason.fault(),
            self.detail
        )
    }
}
