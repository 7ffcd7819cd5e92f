//! Route entries of the proxy config: what a request must look like (host,
//! normalized path, method, headers) to go to which upstream pool, and how
//! its path is rewritten on the way. Each value is checked while parsing.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A route value that does not parse: the config's to fix. The text
/// quotes the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteValueError {
    /// A host that is not a DNS name or `*.` wildcard (a port included).
    #[error("'{0}' is not a host like api.example.com or *.example.com (no port)")]
    Host(String),
    /// A path without its leading `/`.
    #[error("path '{0}' must start with '/'")]
    PathNotAbsolute(String),
    /// A path that normalization would change: it could never match.
    #[error("path '{path}' is not normalized; requests are matched on '{normalized}', write that")]
    PathNotNormalized {
        /// The path written.
        path: String,
        /// What requests are matched on.
        normalized: String,
    },
    /// A path that cannot be normalized at all.
    #[error("path '{path}': {reason}")]
    Path {
        /// The path written.
        path: String,
        /// Why it cannot be normalized.
        reason: crate::proxy::path::PathError,
    },
    /// A method that is not all uppercase letters.
    #[error("'{0}' is not an uppercase HTTP method like GET")]
    MethodCase(String),
    /// A method http refuses.
    #[error("'{0}' is not an HTTP method")]
    Method(String),
    /// Not a header name.
    #[error("'{0}' is not a valid header name")]
    HeaderName(String),
}

/// One route. Exactly one of `path` (exact) and `path_prefix` is set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique id, used in logs, errors and the request context.
    pub id: Spanned<String>,
    /// Host to match: exact (`api.example.com`) or wildcard
    /// (`*.example.com`, any depth of subdomain). Absent: any host.
    #[serde(default)]
    pub host: Option<HostPattern>,
    /// Exact normalized path.
    #[serde(default)]
    pub path: Option<PathPattern>,
    /// Normalized path prefix, matched on whole bytes (`/api/` does not
    /// match `/apix`, but `/api` matches `/apix`: end it with `/`).
    #[serde(default)]
    pub path_prefix: Option<PathPattern>,
    /// Methods to match (uppercase). Empty: any method.
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Headers that must be present with exactly this value, e.g.
    /// `{ "accept-version" = "2" }` to select an API version.
    #[serde(default)]
    pub headers: BTreeMap<HeaderName, String>,
    /// Name of the upstream pool. Exactly one of `upstream` and
    /// `aggregate` is set.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// Backend calls whose JSON answers are merged into the response
    /// instead of forwarding to one upstream (`docs/aggregation.md`). Then
    /// `path` may contain `{name}` segments (one path segment each).
    #[serde(default)]
    pub aggregate: Vec<super::aggregate::AggregateCall>,
    /// How an aggregate route merges the call bodies (default `named`).
    #[serde(default)]
    pub merge: Option<super::aggregate::Merge>,
    /// Whole-request deadline of an aggregate route (default 10s): calls
    /// still running then count as timed out.
    #[serde(default)]
    pub aggregate_deadline: Option<crate::duration::NonZeroSpan>,
    /// Most response bytes an aggregate route reads over all its calls
    /// (default 4 MiB); beyond it the whole answer is 502.
    #[serde(default)]
    pub aggregate_max_bytes: Option<usize>,
    /// Replace the matched `path_prefix` with this before forwarding
    /// (`"/"` strips it). Only with `path_prefix`.
    #[serde(default)]
    pub rewrite_prefix: Option<PathPattern>,
    /// Name of the auth policy (`[auth.policies.NAME]`). Absent: public,
    /// but client-sent identity headers are still removed.
    #[serde(default)]
    pub auth: Option<Spanned<String>>,
    /// Names of `[[rate_limit.limits]]` applied to this route, after the
    /// global ones.
    #[serde(default)]
    pub rate_limits: Vec<String>,
    /// CORS for browser clients; absent: no CORS headers, preflights are
    /// forwarded like any request.
    #[serde(default)]
    pub cors: Option<super::cors::Cors>,
    /// Changes to `[security_headers]` for this route.
    #[serde(default)]
    pub security_headers: super::limits::SecurityHeadersOverride,
    /// Overrides `[limits] request_buffering` for this route: `false`
    /// streams the body to the upstream as it arrives (large uploads; the
    /// body limits then apply mid-stream).
    #[serde(default)]
    pub request_buffering: Option<bool>,
}

/// A host pattern, lowercased: `example.com` or `*.example.com`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub enum HostPattern {
    /// The whole host, lowercased: `example.com`.
    Exact(String),
    /// The suffix including its leading dot: `.example.com`.
    Wildcard(String),
}

impl TryFrom<String> for HostPattern {
    type Error = RouteValueError;

    fn try_from(s: String) -> Result<Self, RouteValueError> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(RouteValueError::Host(s));
        }
        Ok(if wild {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }
}

impl HostPattern {
    /// Whether a lowercase host (no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// A path as routes write it: starts with `/`, already in normalized form.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub struct PathPattern(pub String);

impl TryFrom<String> for PathPattern {
    type Error = RouteValueError;

    fn try_from(s: String) -> Result<Self, RouteValueError> {
        if !s.starts_with('/') {
            return Err(RouteValueError::PathNotAbsolute(s));
        }
        match crate::proxy::path::normalize(&s) {
            Ok(n) if n == s => Ok(Self(s)),
            Ok(normalized) => Err(RouteValueError::PathNotNormalized {
                path: s,
                normalized,
            }),
            Err(reason) => Err(RouteValueError::Path { path: s, reason }),
        }
    }
}

/// An HTTP method token, uppercase.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "String")]
pub struct Method(pub String);

impl TryFrom<String> for Method {
    type Error = RouteValueError;

    fn try_from(s: String) -> Result<Self, RouteValueError> {
        if s.is_empty() || s.bytes().any(|b| !b.is_ascii_uppercase()) {
            return Err(RouteValueError::MethodCase(s));
        }
        http::Method::from_bytes(s.as_bytes())
            .map(|_| Method(s.clone()))
            .map_err(|_| RouteValueError::Method(s))
    }
}

/// A header name, lowercased.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(try_from = "String")]
pub struct HeaderName(pub String);

impl TryFrom<String> for HeaderName {
    type Error = RouteValueError;

    fn try_from(s: String) -> Result<Self, RouteValueError> {
        let lower = s.to_ascii_lowercase();
        http::HeaderName::from_bytes(lower.as_bytes())
            .map(|_| HeaderName(lower.clone()))
            .map_err(|_| RouteValueError::HeaderName(s))
    }
}
