//! CORS per route: the gateway answers preflight requests itself (204, never
//! forwarded, before authentication, as browsers send no credentials on a
//! preflight) and adds `Access-Control-Allow-Origin` and friends to the
//! responses of allowed origins. Origins not on the list get no CORS
//! headers, so the browser blocks the response; the request itself is not
//! refused (CORS protects browsers, not servers).
//!
//! On a route with a CORS policy the gateway owns every `Access-Control-*`
//! response field: whatever the upstream sent (a reflected origin,
//! `Allow-Credentials: true`) is removed before the gateway's decision is
//! added, so an upstream that reflects any origin cannot widen the policy.
//! Its `Vary` values are kept and `Origin` is added.

#![forbid(unsafe_code)]

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde::Deserialize;

use super::body::{self, ProxyBody};

/// `[routes.cors]`
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// Methods allowed in a cross-origin request.
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send.
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may expose to scripts.
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (not with `"*"`).
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_age: Duration,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            // No origin allowed until listed.
            allowed_origins: Vec::new(),
            // The CORS-safelisted methods.
            allowed_methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            // What API clients send most.
            allowed_headers: vec!["content-type".into(), "authorization".into()],
            expose_headers: Vec::new(),
            allow_credentials: false,
            // 10 minutes: Chrome's cap is 2 hours, Firefox's 24 hours.
            max_age: Duration::from_secs(600),
        }
    }
}

/// What a browser would reject in a route's `cors` (a config error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    /// Credentials with the `*` origin (the Fetch standard forbids it).
    #[error(
        "cors: allow_credentials cannot be used with allowed_origins = [\"*\"]; list the origins"
    )]
    CredentialsWithAnyOrigin,
    /// An `allowed_methods` entry that is not a method token.
    #[error("cors: '{0}' is not an HTTP method")]
    NotAMethod(String),
    /// An `allowed_headers` or `expose_headers` entry that is not a header name.
    #[error("cors: '{0}' is not a header name")]
    NotAHeader(String),
    /// An origin that is neither `*` nor `scheme://host[:port]`.
    #[error("cors: origin '{0}' must be \"*\" or scheme://host[:port]")]
    BadOrigin(String),
}

impl Cors {
    /// Checks what a browser would reject anyway.
    pub fn validate(&self) -> Result<(), CorsError> {
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            return Err(CorsError::CredentialsWithAnyOrigin);
        }
        for m in &self.allowed_methods {
            Method::from_bytes(m.as_bytes()).map_err(|_| CorsError::NotAMethod(m.clone()))?;
        }
        for h in self.allowed_headers.iter().chain(&self.expose_headers) {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| CorsError::NotAHeader(h.clone()))?;
        }
        for o in &self.allowed_origins {
            if o != "*" && !(o.starts_with("https://") || o.starts_with("http://")) {
                return Err(CorsError::BadOrigin(o.clone()));
            }
        }
        Ok(())
    }

    /// The value for `Access-Control-Allow-Origin`, if `origin` is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let o = origin.to_str().ok()?;
        if self
            .allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
        {
            Some(origin.clone())
        } else if self.allowed_origins.iter().any(|a| a == "*") {
            Some(if self.allow_credentials {
                origin.clone()
            } else {
                HeaderValue::from_static("*")
            })
        } else {
            None
        }
    }
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about.
pub fn requested_method(headers: &HeaderMap) -> Option<Method> {
    headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
}

/// The gateway's answer to a preflight: 204 with the allowed methods and
/// headers when origin and method are allowed, 204 without CORS headers
/// otherwise (the browser then refuses the actual request).
pub fn preflight(cors: &Cors, headers: &HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let (Some(origin), Some(method)) = (headers.get(header::ORIGIN), requested_method(headers))
    else {
        return resp;
    };
    let Some(allow) = cors.allow_origin(origin) else {
        return resp;
    };
    if !cors
        .allowed_methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method.as_str()))
    {
        return resp;
    }
    let requested: Vec<String> = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_ascii_lowercase())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if requested.iter().any(|r| {
        !cors
            .allowed_headers
            .iter()
            .any(|a| a.eq_ignore_ascii_case(r))
    }) {
        return resp;
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if let Ok(v) = HeaderValue::from_str(&cors.allowed_methods.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if !cors.allowed_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.allowed_headers.join(", "))
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    resp
}

/// Replaces the CORS headers of an actual (non-preflight) response with
/// the gateway's decision: every `Access-Control-*` field of the upstream
/// is removed, then those of an allowed origin are added.
pub fn apply(cors: &Cors, request_origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
    remove_access_control(resp);
    resp.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allow) = request_origin.and_then(|o| cors.allow_origin(o)) else {
        return;
    };
    resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if cors.allow_credentials {
        resp.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(", "))
    {
        resp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

/// Removes every `Access-Control-*` field (names are lowercase in `http`).
fn remove_access_control(headers: &mut HeaderMap) {
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstreams_cors_fields_are_replaced() {
        let cors = Cors {
            allowed_origins: vec!["https://app.example".into()],
            allow_credentials: true,
            ..Cors::default()
        };
        let upstream = || {
            let mut h = HeaderMap::new();
            for (k, v) in [
                ("access-control-allow-origin", "https://evil.example"),
                ("access-control-allow-credentials", "true"),
                ("access-control-expose-headers", "x-secret"),
                ("access-control-allow-methods", "DELETE"),
                ("access-control-max-age", "86400"),
                ("vary", "Accept-Encoding"),
            ] {
                h.append(k, HeaderValue::from_static(v));
            }
            h
        };
        let mut refused = upstream();
        apply(
            &cors,
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut refused,
        );
        assert!(
            refused
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{refused:?}"
        );
        assert_eq!(refused.get_all(header::VARY).iter().count(), 2);

        let mut allowed = upstream();
        apply(
            &cors,
            Some(&HeaderValue::from_static("https://app.example")),
            &mut allowed,
        );
        assert_eq!(
            allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(allowed.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
        assert!(allowed.get(header::ACCESS_CONTROL_ALLOW_METHODS).is_none());
        assert!(allowed.get(header::ACCESS_CONTROL_MAX_AGE).is_none());

        let mut no_origin = upstream();
        apply(&cors, None, &mut no_origin);
        assert!(no_origin.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }
}
