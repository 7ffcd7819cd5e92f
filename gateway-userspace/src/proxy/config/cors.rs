//! `[routes.cors]`: which cross-origin browser requests a route allows
//! (`proxy::cors` answers preflights and adds the headers).

#![forbid(unsafe_code)]

use http::Method;
use serde::Deserialize;

use crate::duration::Span;

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
    pub max_age: Span,
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
            max_age: Span::from_secs(600),
        }
    }
}

/// A route's `cors` settings a browser would reject: the config's to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// Credentials with the `*` origin (the Fetch standard forbids it).
    #[error(
        "cors: allow_credentials cannot be used with allowed_origins = [\"*\"]; list the origins"
    )]
    CredentialsWithAnyOrigin,
    /// An allowed method that is not a method token.
    #[error("cors: '{0}' is not an HTTP method")]
    Method(String),
    /// An allowed or exposed header that is not a header name.
    #[error("cors: '{0}' is not a header name")]
    HeaderName(String),
    /// An origin that is neither `*` nor `scheme://host[:port]`.
    #[error("cors: origin '{0}' must be \"*\" or scheme://host[:port]")]
    Origin(String),
}

impl Cors {
    /// Checks what a browser would reject anyway.
    pub fn validate(&self) -> Result<(), CorsError> {
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            return Err(CorsError::CredentialsWithAnyOrigin);
        }
        for m in &self.allowed_methods {
            Method::from_bytes(m.as_bytes()).map_err(|_| CorsError::Method(m.clone()))?;
        }
        for h in self.allowed_headers.iter().chain(&self.expose_headers) {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| CorsError::HeaderName(h.clone()))?;
        }
        for o in &self.allowed_origins {
            if o != "*" && !(o.starts_with("https://") || o.starts_with("http://")) {
                return Err(CorsError::Origin(o.clone()));
            }
        }
        Ok(())
    }
}
