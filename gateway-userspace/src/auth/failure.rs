//! Why a request was not authenticated, and how that is answered: status,
//! `WWW-Authenticate` challenge (RFC 6750 for Bearer, RFC 7617 for Basic),
//! an `application/problem+json` body (RFC 9457) and a metric label. Nothing
//! here ever holds the credential, so no answer or log line can echo it.

#![forbid(unsafe_code)]

use std::time::Duration;

use http::{HeaderValue, StatusCode};

/// The credential scheme a challenge is issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (JWT and introspection).
    Bearer,
    /// `Authorization: Basic`.
    Basic,
    /// An API key header or query parameter (`ApiKey realm=...`, not a
    /// registered scheme, but RFC 9110 requires a challenge on every 401).
    ApiKey,
}

/// What was wrong with a token, for logs and tests (never sent to clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than `max_credential_bytes`.
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// `alg` not in the issuer's pinned list (includes `none`).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// A `crit` header parameter (we understand none).
    #[error("unsupported critical header")]
    UnsupportedCrit,
    /// No configured issuer matches the token's `iss`.
    #[error("unknown or missing issuer")]
    UnknownIssuer,
    /// No key of the issuer matches the `kid` and algorithm.
    #[error("no matching key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond leeway).
    #[error("issued in the future")]
    IssuedInFuture,
    /// `iss` does not match.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain a configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent or has the wrong type.
    #[error("missing or invalid claim")]
    MissingClaim,
    /// The introspection endpoint says the token is not active.
    #[error("inactive")]
    Inactive,
    /// The token names no usable identity: its subject is empty, blank,
    /// or has control characters (see `auth::identity`).
    #[error("unusable subject")]
    InvalidSubject,
    /// The introspection answer's `token_type`, `iss` or `aud` is not one
    /// the provider is configured to accept.
    #[error("token not meant for this gateway")]
    NotAccepted,
}

/// A request that did not get an identity.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AuthFailure {
    /// No credential of any accepted kind was sent: 401 with bare challenges.
    #[error("no credentials")]
    Missing {
        /// The `realm` of the challenges (`[auth] realm`).
        realm: String,
        /// One `WWW-Authenticate` challenge per scheme the policy accepts.
        schemes: Vec<Scheme>,
    },
    /// A bearer token was sent but is not acceptable: 401 `invalid_token`.
    #[error("invalid token: {cause}")]
    InvalidToken {
        /// The `realm` of the challenge.
        realm: String,
        /// Why the token was refused (logged; the client gets `invalid_token` only).
        cause: TokenError,
    },
    /// A Basic password or API key was wrong or unknown: 401.
    #[error("invalid credentials")]
    InvalidCredentials {
        /// The `realm` of the challenge.
        realm: String,
        /// The scheme whose credential was wrong.
        scheme: Scheme,
    },
    /// The credential is malformed (bad base64), repeated (two
    /// Authorization or key headers, a key parameter twice) or ambiguous
    /// (two credentials that disagree): 400 `invalid_request`.
    #[error("malformed credentials")]
    InvalidRequest {
        /// The `realm` of the challenge.
        realm: String,
        /// The scheme whose credential was malformed.
        scheme: Scheme,
    },
    /// A valid identity lacks the required scopes: 403 `insufficient_scope`.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The `realm` of the challenge.
        realm: String,
        /// The scheme whose identity lacked the scopes.
        scheme: Scheme,
        /// The scopes the policy requires (space-separated).
        required: String,
    },
    /// The key set or introspection endpoint cannot be reached, and nothing
    /// cached decides: 503. Never treated as success.
    #[error("authentication provider unavailable")]
    ProviderUnavailable,
    /// The source sent too many bad credentials recently: 429.
    #[error("too many failed authentications")]
    TooManyFailures {
        /// Until the source's failure window ends; sent as `Retry-After` in whole seconds.
        retry_after: Duration,
    },
    /// The route names a policy that does not exist: 500 (a config bug).
    #[error("unknown auth policy")]
    UnknownPolicy,
}

impl AuthFailure {
    /// The response status: 401, 400, 403, 503, 429 or 500 as each variant says (RFC 6750 §3.1 for
    /// bearer tokens).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing { .. } | Self::InvalidToken { .. } | Self::InvalidCredentials { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnknownPolicy => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing_credentials",
            Self::InvalidToken { .. } => "invalid_token",
            Self::InvalidCredentials { .. } => "invalid_credentials",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::TooManyFailures { .. } => "too_many_failures",
            Self::UnknownPolicy => "unknown_policy",
        }
    }

    /// Whether this failure counts towards the brute-force limit: a wrong
    /// credential, not a missing one or a lack of scope.
    pub(crate) fn is_bad_credential(&self) -> bool {
        matches!(
            self,
            Self::InvalidToken { .. }
                | Self::InvalidCredentials { .. }
                | Self::InvalidRequest { .. }
        )
    }

    /// Seconds for `Retry-After` (429 only).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyFailures { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` value for 401, 400 and 403 Bearer answers.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let text = match self {
            Self::Missing { realm, schemes } => schemes
                .iter()
                .map(|s| challenge(*s, realm))
                .collect::<Vec<_>>()
                .join(", "),
            Self::InvalidToken { realm, .. } => {
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"the access token is not valid\""
                )
            }
            Self::InvalidCredentials { realm, scheme } => challenge(*scheme, realm),
            Self::InvalidRequest { realm, scheme } => match scheme {
                Scheme::Bearer => format!("Bearer realm=\"{realm}\", error=\"invalid_request\""),
                other => challenge(*other, realm),
            },
            Self::InsufficientScope {
                realm,
                scheme: Scheme::Bearer,
                required,
            } => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{required}\""
            ),
            _ => return None,
        };
        // Realm and scopes are validated printable ASCII without quotes.
        HeaderValue::from_str(&text).ok()
    }

    /// The RFC 9457 body. It names the kind of problem only: never the
    /// credential, nor which part of it was wrong.
    pub fn problem_json(&self) -> Vec<u8> {
        let status = self.status();
        let detail = match self {
            Self::Missing { .. } => "This resource requires authentication.",
            Self::InvalidToken { .. } => "The access token is not valid.",
            Self::InvalidCredentials { .. } => "The credentials are not valid.",
            Self::InvalidRequest { .. } => {
                "The credentials are malformed, repeated, or more than one was sent."
            }
            Self::InsufficientScope { .. } => {
                "The credentials do not grant access to this resource."
            }
            Self::ProviderUnavailable => {
                "Authentication is temporarily unavailable; try again later."
            }
            Self::TooManyFailures { .. } => {
                "Too many failed authentication attempts; try again later."
            }
            Self::UnknownPolicy => "The gateway is misconfigured.",
        };
        serde_json::to_vec(&serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        }))
        .expect("a JSON object of strings serializes")
    }
}

fn challenge(scheme: Scheme, realm: &str) -> String {
    match scheme {
        Scheme::Bearer => format!("Bearer realm=\"{realm}\""),
        Scheme::Basic => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
        Scheme::ApiKey => format!("ApiKey realm=\"{realm}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn www(f: &AuthFailure) -> String {
        f.www_authenticate().unwrap().to_str().unwrap().to_owned()
    }

    #[test]
    fn challenges_follow_the_rfcs() {
        let realm = "api".to_owned();
        let missing = AuthFailure::Missing {
            realm: realm.clone(),
            schemes: vec![Scheme::Bearer, Scheme::Basic],
        };
        assert_eq!(missing.status(), 401);
        assert_eq!(
            www(&missing),
            "Bearer realm=\"api\", Basic realm=\"api\", charset=\"UTF-8\""
        );
        let invalid = AuthFailure::InvalidToken {
            realm: realm.clone(),
            cause: TokenError::Expired,
        };
        assert!(www(&invalid).starts_with("Bearer realm=\"api\", error=\"invalid_token\""));
        let scope = AuthFailure::InsufficientScope {
            realm,
            scheme: Scheme::Bearer,
            required: "read write".into(),
        };
        assert_eq!(scope.status(), 403);
        assert_eq!(
            www(&scope),
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read write\""
        );
        assert_eq!(AuthFailure::ProviderUnavailable.status(), 503);
        assert!(
            AuthFailure::ProviderUnavailable
                .www_authenticate()
                .is_none()
        );
    }

    #[test]
    fn problem_body_is_rfc9457() {
        let f = AuthFailure::TooManyFailures {
            retry_after: Duration::from_secs(5),
        };
        let v: serde_json::Value = serde_json::from_slice(&f.problem_json()).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(f.reason(), "too_many_failures");
    }
}
