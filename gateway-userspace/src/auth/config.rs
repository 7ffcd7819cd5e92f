//! The `[auth]` section of the config: named providers (`[auth.jwt.NAME]`,
//! `[auth.introspection.NAME]`, `[auth.api_keys.NAME]`, `[auth.basic.NAME]`)
//! and named policies (`[auth.policies.NAME]`) that routes refer to. Every
//! value, and every reference between policies and providers, is checked
//! while parsing, so a mistake is reported at its file:line:column. Files the
//! section points to (keys, htpasswd) are read later, by
//! `Authenticator::from_config`. See `docs/auth.md`.

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use http::HeaderName;
use serde::Deserialize;

use jsonwebtoken::Algorithm;

use super::AuthMethodKind;

/// Authentication providers and policies. Empty by default: no policy exists
/// until one is configured.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawAuthSection")]
pub struct AuthSection {
    /// `realm` in `WWW-Authenticate` challenges.
    pub realm: String,
    /// Longest accepted bearer token, API key or Basic credential, in bytes.
    pub max_credential_bytes: usize,
    pub brute_force: BruteForceSection,
    pub jwt: BTreeMap<String, JwtIssuerConfig>,
    pub introspection: BTreeMap<String, IntrospectionConfig>,
    pub api_keys: BTreeMap<String, ApiKeysConfig>,
    pub basic: BTreeMap<String, BasicConfig>,
    pub policies: BTreeMap<String, PolicyConfig>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuthSection {
    realm: String,
    max_credential_bytes: usize,
    brute_force: BruteForceSection,
    jwt: BTreeMap<String, JwtIssuerConfig>,
    introspection: BTreeMap<String, IntrospectionConfig>,
    api_keys: BTreeMap<String, ApiKeysConfig>,
    basic: BTreeMap<String, BasicConfig>,
    policies: BTreeMap<String, PolicyConfig>,
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
    pub enabled: bool,
    /// Failures (bad token, key or password) allowed per source per window.
    pub max_failures: u32,
    /// Length of the fixed counting window; also the longest Retry-After.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub window: Duration,
    /// Sources tracked at once (memory bound); IPv6 is counted per /64.
    pub max_sources: usize,
}

impl Default for BruteForceSection {
    fn default() -> Self {
        Self {
            enabled: true,
            // 20 failures per minute per source.
            max_failures: 20,
            window: Duration::from_secs(60),
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
    #[serde(
        default = "d_refresh",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub refresh_interval: Duration,
    /// Minimum time between two fetches of `jwks_url` (unknown `kid`s, failures).
    #[serde(
        default = "d_refetch",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub min_refetch_interval: Duration,
    /// Timeout for one fetch of `jwks_url`.
    #[serde(
        default = "d_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub fetch_timeout: Duration,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    #[serde(
        default = "d_leeway",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub leeway: Duration,
    /// Claims that must be present besides `exp`, `iss`, `aud` and `sub`.
    #[serde(default)]
    pub required_claims: Vec<String>,
}

fn d_refresh() -> Duration {
    Duration::from_secs(600) // 10 minutes
}
fn d_refetch() -> Duration {
    Duration::from_secs(30) // at most one fetch per 30 s per issuer
}
fn d_timeout() -> Duration {
    Duration::from_secs(5) // one HTTPS fetch
}
fn d_leeway() -> Duration {
    Duration::from_secs(30) // clock skew
}

/// A key file, optionally with the `kid` tokens name it by.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PemKeyFile {
    pub path: PathBuf,
    #[serde(default)]
    pub kid: Option<String>,
}

/// An `https://` URL (plain HTTP is refused: keys and token verdicts must
/// not be open to tampering).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "String")]
pub struct HttpsUrl(pub http::Uri);

impl TryFrom<String> for HttpsUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("'{s}' is not a URL ({e})"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("'{s}' must be an https:// URL"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("'{s}' has no host"));
        }
        Ok(Self(uri))
    }
}

/// An OAuth2 token introspection endpoint (RFC 7662).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub endpoint: HttpsUrl,
    /// Client credentials sent with HTTP Basic.
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(
        default = "d_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Longest an active answer is cached (never past the token's `exp`).
    #[serde(
        default = "d_pos_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub cache_ttl: Duration,
    /// How long an inactive answer is cached.
    #[serde(
        default = "d_neg_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub negative_cache_ttl: Duration,
    /// Cached answers at most (keyed by SHA-256 of the token).
    #[serde(default = "d_cache_size")]
    pub cache_size: usize,
}

fn d_pos_ttl() -> Duration {
    Duration::from_secs(300) // 5 minutes
}
fn d_neg_ttl() -> Duration {
    Duration::from_secs(10) // 10 seconds
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
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Requests per second for this key (applied by the rate limiter).
    #[serde(default)]
    pub rate_limit: Option<u32>,
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
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || "sha256 must be 64 hex digits (run `gateway hash-key`)".to_owned();
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
    #[serde(default)]
    pub users: Vec<BasicUser>,
    /// An htpasswd file (`user:hash` lines, bcrypt or argon2 hashes only).
    #[serde(default)]
    pub htpasswd_file: Option<PathBuf>,
    /// How long a successful check is remembered (0 disables the cache).
    #[serde(
        default = "d_basic_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub cache_ttl: Duration,
    /// Remembered successful checks at most.
    #[serde(default = "d_cache_size")]
    pub cache_size: usize,
}

fn d_basic_ttl() -> Duration {
    Duration::from_secs(60)
}

/// One Basic user: a bcrypt (`$2y$`, `$2b$`, `$2a$`) or argon2 PHC hash.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    pub name: String,
    pub hash: Secret,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A header name, validated while parsing.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct HeaderNameConf(pub HeaderName);

impl TryFrom<String> for HeaderNameConf {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HeaderName::from_bytes(s.as_bytes())
            .map(Self)
            .map_err(|_| format!("'{s}' is not a valid header name"))
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
}

/// Headers an identity header may never replace.
const PROTECTED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "content-type",
    "forwarded",
    "x-forwarded-for",
];

impl TryFrom<RawAuthSection> for AuthSection {
    type Error = String;

    fn try_from(raw: RawAuthSection) -> Result<Self, String> {
        if raw.realm.is_empty()
            || !raw
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err("[auth] realm must be printable ASCII without '\"' or '\\'".into());
        }
        if !(256..=65_536).contains(&raw.max_credential_bytes) {
            return Err("[auth] max_credential_bytes must be 256-65536".into());
        }
        let bf = &raw.brute_force;
        if bf.enabled && (bf.max_failures == 0 || bf.window.is_zero() || bf.max_sources == 0) {
            return Err(
                "[auth.brute_force] max_failures, window and max_sources must be above 0".into(),
            );
        }
        for (name, iss) in &raw.jwt {
            super::jwt::validate_issuer_config(name, iss)?;
        }
        for (name, i) in &raw.introspection {
            if i.client_secret.is_some() == i.client_secret_file.is_some() {
                return Err(format!(
                    "[auth.introspection.{name}] set exactly one of client_secret or client_secret_file"
                ));
            }
            if i.cache_size == 0 {
                return Err(format!(
                    "[auth.introspection.{name}] cache_size must be above 0"
                ));
            }
        }
        for (name, k) in &raw.api_keys {
            if k.keys.is_empty() && k.keys_file.is_none() {
                return Err(format!(
                    "[auth.api_keys.{name}] has no keys and no keys_file"
                ));
            }
            if k.query
                .as_deref()
                .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#']))
            {
                return Err(format!(
                    "[auth.api_keys.{name}] query is not a parameter name"
                ));
            }
        }
        for (name, b) in &raw.basic {
            if b.users.is_empty() && b.htpasswd_file.is_none() {
                return Err(format!(
                    "[auth.basic.{name}] has no users and no htpasswd_file"
                ));
            }
            for u in &b.users {
                super::basic::check_hash_format(&u.hash.0)
                    .map_err(|e| format!("[auth.basic.{name}] user '{}': {e}", u.name))?;
            }
        }
        for (name, p) in &raw.policies {
            validate_policy(&raw, p).map_err(|e| format!("[auth.policies.{name}] {e}"))?;
        }
        Ok(Self {
            realm: raw.realm,
            max_credential_bytes: raw.max_credential_bytes,
            brute_force: raw.brute_force,
            jwt: raw.jwt,
            introspection: raw.introspection,
            api_keys: raw.api_keys,
            basic: raw.basic,
            policies: raw.policies,
        })
    }
}

fn validate_policy(raw: &RawAuthSection, p: &PolicyConfig) -> Result<(), String> {
    let table: Option<(&str, Vec<&String>)> = match p.kind {
        AuthMethodKind::None | AuthMethodKind::Any => None,
        AuthMethodKind::Jwt => Some(("jwt", raw.jwt.keys().collect())),
        AuthMethodKind::Introspection => {
            Some(("introspection", raw.introspection.keys().collect()))
        }
        AuthMethodKind::ApiKey => Some(("api_keys", raw.api_keys.keys().collect())),
        AuthMethodKind::Basic => Some(("basic", raw.basic.keys().collect())),
    };
    match (table, p.kind) {
        (Some((table, names)), _) => {
            if p.providers.is_empty() {
                return Err(format!(
                    "needs providers = [...] naming [auth.{table}.NAME] entries"
                ));
            }
            if let Some(missing) = p.providers.iter().find(|n| !names.contains(n)) {
                return Err(format!(
                    "provider '{missing}' is not defined in [auth.{table}]"
                ));
            }
            if !p.of.is_empty() {
                return Err("`of` is only for type = \"any\"".into());
            }
        }
        (None, AuthMethodKind::Any) => {
            if p.of.is_empty() {
                return Err("type = \"any\" needs of = [\"policy\", ...]".into());
            }
            for sub in &p.of {
                match raw.policies.get(sub) {
                    None => return Err(format!("policy '{sub}' in `of` is not defined")),
                    Some(s) if matches!(s.kind, AuthMethodKind::Any | AuthMethodKind::None) => {
                        return Err(format!(
                            "policy '{sub}' in `of` is of type any or none; list concrete policies"
                        ));
                    }
                    Some(_) => {}
                }
            }
            if !p.providers.is_empty()
                || !p.scopes.is_empty()
                || !p.headers.is_empty()
                || p.strip_credential
            {
                return Err(
                    "type = \"any\" takes only `of`; scopes, headers and strip_credential come from the listed policies"
                        .into(),
                );
            }
        }
        (None, _) => {
            if !p.providers.is_empty() || !p.of.is_empty() || !p.scopes.is_empty() {
                return Err("type = \"none\" takes no providers, of or scopes".into());
            }
        }
    }
    if let Some(bad) = p.scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    }) {
        return Err(format!(
            "scope '{bad}' is not a valid scope token (RFC 6749 §3.3)"
        ));
    }
    if p.scope_claim.is_some()
        && !matches!(p.kind, AuthMethodKind::Jwt | AuthMethodKind::Introspection)
    {
        return Err("scope_claim is only for jwt and introspection policies".into());
    }
    for (header, claim) in &p.headers {
        let h = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("'{header}' is not a valid header name"))?;
        if PROTECTED_HEADERS.contains(&h.as_str()) {
            return Err(format!("'{header}' cannot be set from an identity"));
        }
        if claim.is_empty() {
            return Err(format!("header '{header}' maps to an empty claim name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, "gw.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_point_at_file_line_and_column() {
        let cases = [
            // (toml, expected prefix, expected text)
            (
                "[auth.policies.p]\ntype = \"jwt\"\nproviders = [\"nope\"]\n",
                "gw.toml:",
                "provider 'nope' is not defined in [auth.jwt]",
            ),
            (
                "[auth.policies.p]\ntype = \"magic\"\n",
                "gw.toml:2:",
                "unknown variant `magic`",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"none\"]\npublic_key_files = [{ path = \"k\" }]\n",
                "gw.toml:4:",
                "unknown variant `none`",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = []\nalgorithms = [\"RS256\"]\npublic_key_files = [{ path = \"k\" }]\n",
                "gw.toml:",
                "audiences must list",
            ),
            (
                "[auth.jwt.i]\nissuer = \"x\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\nhmac_secret_files = [{ path = \"k\" }]\n",
                "gw.toml:",
                "never accept a shared secret",
            ),
            (
                "[auth.policies.a]\ntype = \"any\"\nof = [\"a\"]\n",
                "gw.toml:",
                "of type any or none",
            ),
            (
                "[auth.policies.p]\ntype = \"none\"\nheaders = { \"host\" = \"sub\" }\n",
                "gw.toml:",
                "'host' cannot be set",
            ),
            (
                "[auth.policies.p]\ntype = \"none\"\nscopes = [\"a\\\"b\"]\n",
                "gw.toml:",
                "type = \"none\" takes no",
            ),
            (
                "[auth]\nrealm = \"a\\\"b\"\n",
                "gw.toml:",
                "realm must be printable ASCII",
            ),
            (
                "[auth.brute_force]\nwindow = \"soon\"\n",
                "gw.toml:2:",
                "is not a duration",
            ),
            (
                "[auth.api_keys.k]\nheader = \"bad header\"\nkeys = []\n",
                "gw.toml:2:",
                "not a valid header name",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\n",
                "gw.toml:",
                "exactly one of client_secret",
            ),
        ];
        for (toml, prefix, text) in cases {
            let e = err(toml);
            assert!(e.starts_with(prefix) && e.contains(text), "{toml}\n=> {e}");
            let loc = e.strip_prefix("gw.toml:").unwrap();
            assert!(
                loc.split(':').take(2).all(|n| n.parse::<usize>().is_ok()),
                "no line:col in {e}"
            );
        }
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
[auth]
realm = "api"
[auth.jwt.corp]
issuer = "https://id.example.com/"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
jwks_url = "https://id.example.com/.well-known/jwks.json"
[auth.policies.users]
type = "jwt"
providers = ["corp"]
scopes = ["read"]
headers = { "x-user-id" = "sub" }
"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.auth.realm, "api");
        assert_eq!(
            c.auth.jwt["corp"].leeway,
            std::time::Duration::from_secs(30)
        );
    }
}
