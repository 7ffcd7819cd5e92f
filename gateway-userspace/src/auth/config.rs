//! The `[auth]` section of the config: named providers (`[auth.jwt.NAME]`,
//! `[auth.introspection.NAME]`, `[auth.api_keys.NAME]`, `[auth.basic.NAME]`)
//! and named policies (`[auth.policies.NAME]`) that routes refer to. Every
//! value, and every reference between policies and providers, is checked
//! while parsing, so a mistake is reported at its file:line:column. Files the
//! section points to (keys, htpasswd) are read later, by
//! `Authenticator::from_config`. See `docs/auth.md`.

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt, path::PathBuf};

use http::HeaderName;
use serde::Deserialize;

use jsonwebtoken::Algorithm;

use crate::duration::Span;

/// The kind of a policy, as written in `type = "..."`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethodKind {
    /// No credential needed: every request gets an anonymous identity.
    None,
    /// A JWT bearer token (RFC 6750, RFC 7519) from one of the policy's `providers`.
    Jwt,
    /// An opaque bearer token checked by RFC 7662 introspection.
    Introspection,
    /// An API key in a header or query parameter.
    ApiKey,
    /// HTTP Basic (RFC 7617) against configured users.
    Basic,
    /// The policies listed in `of`, tried in order: the first that accepts wins; otherwise the
    /// first failure of a presented credential, or 401 naming every scheme.
    Any,
}

/// Authentication providers and policies. Empty by default: no policy exists
/// until one is configured.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawAuthSection")]
pub struct AuthSection {
    /// `realm` in `WWW-Authenticate` challenges.
    pub realm: String,
    /// Longest accepted bearer token, API key or Basic credential, in bytes.
    pub max_credential_bytes: usize,
    /// Per-source limit on failed authentications (`[auth.brute_force]`).
    pub brute_force: BruteForceSection,
    /// JWT issuers by provider name (`[auth.jwt.NAME]`).
    pub jwt: BTreeMap<String, JwtIssuerConfig>,
    /// RFC 7662 introspection endpoints by provider name (`[auth.introspection.NAME]`).
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    /// API key sets by provider name (`[auth.api_keys.NAME]`).
    pub api_keys: BTreeMap<String, ApiKeysConfig>,
    /// HTTP Basic user sets by provider name (`[auth.basic.NAME]`).
    pub basic: BTreeMap<String, BasicConfig>,
    /// Policies by name (`[auth.policies.NAME]`), referred to by routes' `auth`.
    pub policies: BTreeMap<String, PolicyConfig>,
}

/// The section as written, before the checks in `validate.rs`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuthSection {
    /// As [`AuthSection::realm`].
    pub realm: String,
    /// As [`AuthSection::max_credential_bytes`].
    pub max_credential_bytes: usize,
    /// As [`AuthSection::brute_force`].
    pub brute_force: BruteForceSection,
    /// As [`AuthSection::jwt`].
    pub jwt: BTreeMap<String, JwtIssuerConfig>,
    /// As [`AuthSection::introspection`].
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    /// As [`AuthSection::api_keys`].
    pub api_keys: BTreeMap<String, ApiKeysConfig>,
    /// As [`AuthSection::basic`].
    pub basic: BTreeMap<String, BasicConfig>,
    /// As [`AuthSection::policies`].
    pub policies: BTreeMap<String, PolicyConfig>,
}

impl Default for RawAuthSection {
    fn default() -> Self {
        let d = AuthSection::defaults();
        Self {
            realm: d.realm,
            max_credential_bytes: d.max_credential_bytes,
            brute_force: d.brute_force,
            jwt: d.jwt,
            introspection: d.introspection,
            api_keys: d.api_keys,
            basic: d.basic,
            policies: d.policies,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self::defaults()
    }
}

impl AuthSection {
    fn defaults() -> Self {
        Self {
            // Shown to clients in WWW-Authenticate.
            realm: "gateway".to_owned(),
            // 8 KiB: far above real tokens (1-2 KiB), small enough to parse cheaply.
            max_credential_bytes: 8192,
            brute_force: BruteForceSection::default(),
            jwt: BTreeMap::new(),
            introspection: BTreeMap::new(),
            api_keys: BTreeMap::new(),
            basic: BTreeMap::new(),
            policies: BTreeMap::new(),
        }
    }
}

/// Failed authentications per client address before it gets 429.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceSection {
    /// Off: failures are not counted and never answered with 429 (default on).
    pub enabled: bool,
    /// Failures (bad token, key or password) allowed per source per window.
    pub max_failures: u32,
    /// Length of the fixed counting window; also the longest Retry-After.
    pub window: Span,
    /// Sources tracked at once (memory bound); IPv6 is counted per /64.
    pub max_sources: usize,
}

impl Default for BruteForceSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // 20 failures per minute per source.
            max_failures: 20,
            window: Span::from_secs(60),
            // 100k sources, ~50 bytes each.
            max_sources: 100_000,
        }
    }
}

/// A secret written inline in the config. Its Debug output is redacted.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One JWT issuer: its `iss`, audiences, pinned algorithms and keys.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Exact `iss` value; always required in tokens.
    pub issuer: String,
    /// Accepted `aud` values (one must match); `aud` is always required.
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer. HMAC (HS*) and public-key
    /// algorithms cannot be mixed in one issuer.
    pub algorithms: Vec<Algorithm>,
    /// Public keys as PEM files (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY`).
    #[serde(default)]
    pub public_key_files: Vec<PemKeyFile>,
    /// A JWK Set file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWK Set fetched over HTTPS.
    #[serde(default)]
    pub jwks_url: Option<HttpsUrl>,
    /// HMAC secrets (raw bytes of the file, trailing newline removed), HS* only.
    #[serde(default)]
    pub hmac_secret_files: Vec<PemKeyFile>,
    /// PEM CA bundle trusted for `jwks_url` instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often `jwks_url` is fetched again.
    #[serde(default = "d_refresh")]
    pub refresh_interval: Span,
    /// Minimum time between two fetches of `jwks_url` (unknown `kid`s, failures).
    #[serde(default = "d_refetch")]
    pub min_refetch_interval: Span,
    /// Timeout for one fetch of `jwks_url`.
    #[serde(default = "d_timeout")]
    pub fetch_timeout: Span,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    #[serde(default = "d_leeway")]
    pub leeway: Span,
    /// Claims that must be present besides `exp`, `iss`, `aud` and `sub`.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Verified tokens remembered (by the token's SHA-256, never the token),
    /// so a client that repeats its token skips the signature check (Envoy
    /// `jwt_cache_config`); 0 turns the cache off.
    #[serde(default = "d_jwt_cache_size")]
    pub cache_size: usize,
    /// Longest time a verified token is remembered; never past its `exp`
    /// (plus `leeway`), nor past the key that verified it leaving the JWK
    /// Set.
    #[serde(default = "d_jwt_cache_ttl")]
    pub cache_ttl: Span,
}

fn d_jwt_cache_size() -> usize {
    4096 // tokens per issuer
}
fn d_jwt_cache_ttl() -> Span {
    Span::from_secs(300) // 5 minutes
}
fn d_refresh() -> Span {
    Span::from_secs(600) // 10 minutes
}
fn d_refetch() -> Span {
    Span::from_secs(30) // at most one fetch per 30 s per issuer
}
fn d_timeout() -> Span {
    Span::from_secs(5) // one HTTPS fetch
}
fn d_leeway() -> Span {
    Span::from_secs(30) // clock skew
}

/// A key file, optionally with the `kid` tokens name it by.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PemKeyFile {
    /// The key file: a PEM public key (`public_key_files`) or raw HMAC secret bytes
    /// (`hmac_secret_files`), read at load and reload.
    pub path: PathBuf,
    /// The `kid` a token's header names this key by. A token with a `kid` needs a key with that
    /// `kid`; a token without one is accepted only when a single key of its algorithm family fits.
    #[serde(default)]
    pub kid: Option<String>,
}

/// An `https://` URL (plain HTTP is refused: keys and token verdicts must
/// not be open to tampering).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "String")]
pub struct HttpsUrl(pub http::Uri);

/// A value of `[auth]` that does not parse: the config's to fix. The text
/// quotes URLs and header names, never a secret or its digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthValueError {
    /// Not a URL (as written, with http's reason).
    #[error("'{url}' is not a URL ({reason})")]
    NotUrl {
        /// The text written.
        url: String,
        /// http's reason.
        reason: String,
    },
    /// A URL that is not `https://`.
    #[error("'{0}' must be an https:// URL")]
    NotHttps(String),
    /// A URL without a host.
    #[error("'{0}' has no host")]
    NoHost(String),
    /// A `sha256` that is not 64 hex digits.
    #[error("sha256 must be 64 hex digits (run `gateway hash-key`)")]
    Sha256,
    /// Not a header name (as written).
    #[error("'{0}' is not a valid header name")]
    HeaderName(String),
}

impl TryFrom<String> for HttpsUrl {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        let uri: http::Uri =
            s.parse()
                .map_err(|e: http::uri::InvalidUri| AuthValueError::NotUrl {
                    url: s.clone(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("https") {
            return Err(AuthValueError::NotHttps(s));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(AuthValueError::NoHost(s));
        }
        Ok(Self(uri))
    }
}

/// An OAuth2 token introspection endpoint (RFC 7662).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint, `https://` only; the token is POSTed as `token=...` (RFC 7662
    /// §2.1).
    pub endpoint: HttpsUrl,
    /// Client credentials sent with HTTP Basic.
    pub client_id: String,
    /// The client secret inline; exactly one of this and `client_secret_file` is required.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A file holding the client secret (trailing newline ignored), read at load and reload.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// PEM CA certificates trusted for the endpoint instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest one introspection call may take (default 5 s); past it the request gets 503.
    #[serde(default = "d_timeout")]
    pub timeout: Span,
    /// Longest an active answer is cached (never past the token's `exp`).
    #[serde(default = "d_pos_ttl")]
    pub cache_ttl: Span,
    /// How long an inactive answer is cached.
    #[serde(default = "d_neg_ttl")]
    pub negative_cache_ttl: Span,
    /// Cached answers at most (keyed by SHA-256 of the token).
    #[serde(default = "d_cache_size")]
    pub cache_size: usize,
    /// When set, an active answer must carry exactly this `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When not empty, an active answer's `aud` (a string or an array of
    /// strings) must contain one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// When not empty, an active answer's `token_type` must be one of these
    /// (compared ignoring ASCII case, as RFC 6749 §5.1 token types are).
    #[serde(default)]
    pub token_types: Vec<String>,
    /// Clock skew allowed for `nbf` and `iat` (as `[auth.jwt.NAME] leeway`;
    /// `exp` gets none: a cached answer never outlives it).
    #[serde(default = "d_leeway")]
    pub leeway: Span,
    /// Largest accepted answer, in bytes; a longer one is a provider
    /// failure (503), never a verdict.
    #[serde(default = "d_max_answer")]
    pub max_answer_bytes: usize,
}

fn d_max_answer() -> usize {
    64 * 1024 // 64 KiB: real answers are well under 4 KiB
}

fn d_pos_ttl() -> Span {
    Span::from_secs(300) // 5 minutes
}
fn d_neg_ttl() -> Span {
    Span::from_secs(10) // 10 seconds
}
fn d_cache_size() -> usize {
    10_000
}

/// API keys, presented in a header or a query parameter.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default = "d_key_header")]
    pub header: HeaderNameConf,
    /// Query parameter carrying the key (off unless set: URLs end up in logs).
    #[serde(default)]
    pub query: Option<String>,
    /// Keys written inline (`[[auth.api_keys.NAME.keys]]`).
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    /// A TOML file with more `[[keys]]` entries of the same shape.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
}

fn d_key_header() -> HeaderNameConf {
    HeaderNameConf(HeaderName::from_static("x-api-key"))
}

/// One API key: only the SHA-256 of the key is stored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The identity requests with this key get (`sub`).
    pub name: String,
    /// Lowercase hex SHA-256 of the key (`gateway hash-key`).
    pub sha256: Sha256Hex,
    /// Scopes the identity holds, checked against a policy's `scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Requests per second for this key (applied by the rate limiter).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The `[[rate_limit.plans]]` entry whose rate and quota this key gets.
    #[serde(default)]
    pub plan: Option<String>,
}

/// 32 bytes written as 64 hex digits.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(try_from = "String")]
pub struct Sha256Hex(pub [u8; 32]);

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Hex(<redacted>)")
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        let bad = || AuthValueError::Sha256;
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// Users checked with HTTP Basic.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// Users written inline (`[[auth.basic.NAME.users]]`).
    #[serde(default)]
    pub users: Vec<BasicUser>,
    /// An htpasswd file (`user:hash` lines, bcrypt or argon2 hashes only).
    #[serde(default)]
    pub htpasswd_file: Option<PathBuf>,
    /// How long a successful check is remembered (0 disables the cache).
    #[serde(default = "d_basic_ttl")]
    pub cache_ttl: Span,
    /// Remembered successful checks at most.
    #[serde(default = "d_cache_size")]
    pub cache_size: usize,
}

fn d_basic_ttl() -> Span {
    Span::from_secs(60)
}

/// One Basic user: a bcrypt (`$2y$`, `$2b$`, `$2a$`) or argon2 PHC hash.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// The user name, compared exactly; also the identity's `sub`.
    pub name: String,
    /// The password hash (bcrypt or argon2 PHC string); plain text is refused.
    pub hash: Secret,
    /// Scopes the identity holds, checked against a policy's `scopes`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A header name, validated while parsing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct HeaderNameConf(pub HeaderName);

impl TryFrom<String> for HeaderNameConf {
    type Error = AuthValueError;
    fn try_from(s: String) -> Result<Self, AuthValueError> {
        HeaderName::from_bytes(s.as_bytes())
            .map(Self)
            .map_err(|_| AuthValueError::HeaderName(s))
    }
}

/// How required scopes combine.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScopeMatch {
    /// Every listed scope is required.
    #[default]
    All,
    /// One of the listed scopes is enough.
    Any,
}

/// A named policy that routes refer to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `none`, `jwt`, `introspection`, `api_key`, `basic` or `any`.
    #[serde(rename = "type")]
    pub kind: AuthMethodKind,
    /// Provider names in the table of this type (`[auth.jwt.NAME]`...).
    #[serde(default)]
    pub providers: Vec<String>,
    /// For `any`: the policies tried in order (none of them `any`).
    #[serde(default)]
    pub of: Vec<String>,
    /// Scopes (or roles, with `scope_claim`) the identity must hold.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether every listed scope (`all`, the default) or one (`any`) is required.
    #[serde(default)]
    pub scope_match: ScopeMatch,
    /// Claim holding scopes: default `scope` (space-separated), then `scp`.
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// Upstream request headers set from claims: `{ "x-user-id" = "sub" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Remove the credential (Authorization, key header or query) upstream.
    #[serde(default)]
    pub strip_credential: bool,
    /// Claim naming the consumer's `[[rate_limit.plans]]` entry (a string
    /// claim such as `plan`); an API key's own `plan` wins.
    #[serde(default)]
    pub plan_claim: Option<String>,
}
