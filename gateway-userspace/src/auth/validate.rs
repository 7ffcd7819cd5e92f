//! The checks run on `[auth]` while it is parsed: value ranges, provider
//! settings, and every reference between policies and providers. An error
//! becomes a `file:line:column` message pointing at the `[auth]` table and
//! naming the offending sub-table.

#![forbid(unsafe_code)]

use http::HeaderName;

use super::{
    AuthMethodKind,
    basic::HashFormatError,
    config::{AuthSection, PolicyConfig, RawAuthSection},
    identity::SubjectError,
    introspection::IntrospectionConfigError,
    jwt::JwtConfigError,
};

/// An `[auth]` section that cannot work: the config's to fix. The text
/// names the offending table (and becomes a `file:line:column` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthSectionError {
    /// `realm` is empty or not printable ASCII without quotes.
    #[error("[auth] realm must be printable ASCII without '\"' or '\\'")]
    Realm,
    /// `max_credential_bytes` outside 256..=65536.
    #[error("[auth] max_credential_bytes must be 256-65536")]
    MaxCredentialBytes,
    /// Brute-force protection on with a zero limit.
    #[error("[auth.brute_force] max_failures, window and max_sources must be above 0")]
    BruteForce,
    /// A JWT issuer's settings.
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    /// An introspection provider with both or neither secret settings.
    #[error("[auth.introspection.{0}] set exactly one of client_secret or client_secret_file")]
    IntrospectionSecret(String),
    /// An introspection provider with `cache_size = 0`.
    #[error("[auth.introspection.{0}] cache_size must be above 0")]
    IntrospectionCacheSize(String),
    /// An introspection provider's other settings.
    #[error("[auth.introspection.{name}] {problem}")]
    Introspection {
        /// The provider's table name.
        name: String,
        /// What is wrong.
        problem: IntrospectionConfigError,
    },
    /// An API-key provider without keys.
    #[error("[auth.api_keys.{0}] has no keys and no keys_file")]
    NoApiKeys(String),
    /// An API-key provider whose `query` is not a parameter name.
    #[error("[auth.api_keys.{0}] query is not a parameter name")]
    ApiKeyQuery(String),
    /// An API key whose name is not a usable identity.
    #[error("[auth.api_keys.{provider}] key name {key:?}: {problem}")]
    ApiKeyName {
        /// The provider's table name.
        provider: String,
        /// The key's name as written.
        key: String,
        /// Why it is not an identity.
        problem: SubjectError,
    },
    /// A Basic user whose name is not a usable identity.
    #[error("[auth.basic.{provider}] user {user:?}: {problem}")]
    BasicUserName {
        /// The provider's table name.
        provider: String,
        /// The user name as written.
        user: String,
        /// Why it is not an identity.
        problem: SubjectError,
    },
    /// A Basic provider without users.
    #[error("[auth.basic.{0}] has no users and no htpasswd_file")]
    NoBasicUsers(String),
    /// A Basic user's hash the gateway cannot verify.
    #[error("[auth.basic.{provider}] user '{user}': {problem}")]
    BasicHash {
        /// The provider's table name.
        provider: String,
        /// The user name.
        user: String,
        /// What is wrong with the hash.
        problem: HashFormatError,
    },
    /// A policy that cannot work.
    #[error("[auth.policies.{name}] {problem}")]
    Policy {
        /// The policy's name.
        name: String,
        /// What is wrong.
        problem: PolicyError,
    },
}

/// What is wrong with an `[auth.policies.NAME]` entry ([`AuthSectionError::Policy`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A provider-backed policy without `providers`.
    #[error("needs providers = [...] naming [auth.{0}.NAME] entries")]
    NoProviders(&'static str),
    /// A provider that is not defined in its table.
    #[error("provider '{provider}' is not defined in [auth.{table}]")]
    UnknownProvider {
        /// The provider table (`jwt`, `basic`, ...).
        table: &'static str,
        /// The name written.
        provider: String,
    },
    /// `of` on a policy that is not `any`.
    #[error("`of` is only for type = \"any\"")]
    OfWithoutAny,
    /// `type = "any"` without `of`.
    #[error("type = \"any\" needs of = [\"policy\", ...]")]
    AnyWithoutOf,
    /// `of` names a policy that does not exist.
    #[error("policy '{0}' in `of` is not defined")]
    UnknownOf(String),
    /// `of` names an `any` or `none` policy.
    #[error("policy '{0}' in `of` is of type any or none; list concrete policies")]
    AbstractOf(String),
    /// `type = "any"` with its own providers, scopes, headers or stripping.
    #[error(
        "type = \"any\" takes only `of`; scopes, headers and strip_credential come from the listed policies"
    )]
    AnyWithSettings,
    /// `type = "none"` with providers, `of` or scopes.
    #[error("type = \"none\" takes no providers, of or scopes")]
    NoneWithSettings,
    /// A scope that is not an RFC 6749 scope token.
    #[error("scope '{0}' is not a valid scope token (RFC 6749 §3.3)")]
    Scope(String),
    /// `scope_claim` on a policy without claims.
    #[error("scope_claim is only for jwt and introspection policies")]
    ScopeClaim,
    /// An identity header name that is not a header name.
    #[error("'{0}' is not a valid header name")]
    HeaderName(String),
    /// An identity header that would replace a protected one.
    #[error("'{0}' cannot be set from an identity")]
    ProtectedHeader(String),
    /// An identity header mapped to an empty claim.
    #[error("header '{0}' maps to an empty claim name")]
    EmptyClaim(String),
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
    type Error = AuthSectionError;

    fn try_from(raw: RawAuthSection) -> Result<Self, AuthSectionError> {
        if raw.realm.is_empty()
            || !raw
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(AuthSectionError::Realm);
        }
        if !(256..=65_536).contains(&raw.max_credential_bytes) {
            return Err(AuthSectionError::MaxCredentialBytes);
        }
        let bf = &raw.brute_force;
        if bf.enabled && (bf.max_failures == 0 || bf.window.is_zero() || bf.max_sources == 0) {
            return Err(AuthSectionError::BruteForce);
        }
        for (name, iss) in &raw.jwt {
            super::jwt::validate_issuer_config(name, iss)?;
        }
        for (name, i) in &raw.introspection {
            if i.client_secret.is_some() == i.client_secret_file.is_some() {
                return Err(AuthSectionError::IntrospectionSecret(name.clone()));
            }
            if i.cache_size == 0 {
                return Err(AuthSectionError::IntrospectionCacheSize(name.clone()));
            }
            super::introspection::validate_config(i).map_err(|problem| {
                AuthSectionError::Introspection {
                    name: name.clone(),
                    problem,
                }
            })?;
        }
        for (name, k) in &raw.api_keys {
            if k.keys.is_empty() && k.keys_file.is_none() {
                return Err(AuthSectionError::NoApiKeys(name.clone()));
            }
            if k.query
                .as_deref()
                .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#']))
            {
                return Err(AuthSectionError::ApiKeyQuery(name.clone()));
            }
        }
        for (name, k) in &raw.api_keys {
            for key in &k.keys {
                super::identity::check_subject(&key.name).map_err(|problem| {
                    AuthSectionError::ApiKeyName {
                        provider: name.clone(),
                        key: key.name.clone(),
                        problem,
                    }
                })?;
            }
        }
        for (name, b) in &raw.basic {
            for u in &b.users {
                super::identity::check_subject(&u.name).map_err(|problem| {
                    AuthSectionError::BasicUserName {
                        provider: name.clone(),
                        user: u.name.clone(),
                        problem,
                    }
                })?;
            }
            if b.users.is_empty() && b.htpasswd_file.is_none() {
                return Err(AuthSectionError::NoBasicUsers(name.clone()));
            }
            for u in &b.users {
                super::basic::check_hash_format(&u.hash.0).map_err(|problem| {
                    AuthSectionError::BasicHash {
                        provider: name.clone(),
                        user: u.name.clone(),
                        problem,
                    }
                })?;
            }
        }
        for (name, p) in &raw.policies {
            validate_policy(&raw, p).map_err(|problem| AuthSectionError::Policy {
                name: name.clone(),
                problem,
            })?;
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

fn validate_policy(raw: &RawAuthSection, p: &PolicyConfig) -> Result<(), PolicyError> {
    let table: Option<(&'static str, Vec<&String>)> = match p.kind {
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
                return Err(PolicyError::NoProviders(table));
            }
            if let Some(missing) = p.providers.iter().find(|n| !names.contains(n)) {
                return Err(PolicyError::UnknownProvider {
                    table,
                    provider: missing.clone(),
                });
            }
            if !p.of.is_empty() {
                return Err(PolicyError::OfWithoutAny);
            }
        }
        (None, AuthMethodKind::Any) => {
            if p.of.is_empty() {
                return Err(PolicyError::AnyWithoutOf);
            }
            for sub in &p.of {
                match raw.policies.get(sub) {
                    None => return Err(PolicyError::UnknownOf(sub.clone())),
                    Some(s) if matches!(s.kind, AuthMethodKind::Any | AuthMethodKind::None) => {
                        return Err(PolicyError::AbstractOf(sub.clone()));
                    }
                    Some(_) => {}
                }
            }
            if !p.providers.is_empty()
                || !p.scopes.is_empty()
                || !p.headers.is_empty()
                || p.strip_credential
            {
                return Err(PolicyError::AnyWithSettings);
            }
        }
        (None, _) => {
            if !p.providers.is_empty() || !p.of.is_empty() || !p.scopes.is_empty() {
                return Err(PolicyError::NoneWithSettings);
            }
        }
    }
    if let Some(bad) = p.scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    }) {
        return Err(PolicyError::Scope(bad.clone()));
    }
    if p.scope_claim.is_some()
        && !matches!(p.kind, AuthMethodKind::Jwt | AuthMethodKind::Introspection)
    {
        return Err(PolicyError::ScopeClaim);
    }
    for (header, claim) in &p.headers {
        let h = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| PolicyError::HeaderName(header.clone()))?;
        if PROTECTED_HEADERS.contains(&h.as_str()) {
            return Err(PolicyError::ProtectedHeader(header.clone()));
        }
        if claim.is_empty() {
            return Err(PolicyError::EmptyClaim(header.clone()));
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
                "[auth.api_keys.k]\nkeys = [{ name = \" \", sha256 = \"c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c\" }]\n",
                "gw.toml:",
                "key name \" \": the subject is blank",
            ),
            (
                "[auth.basic.b]\nusers = [{ name = \"\", hash = \"$2y$05$abcdefghijklmnopqrstuu5Mr0dQXbaYyRCUTcvnl2m3mIKTd0Fz6\" }]\n",
                "gw.toml:",
                "user \"\": the subject is empty",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\naudiences = [\"\"]\n",
                "gw.toml:",
                "[auth.introspection.i] audiences must not contain an empty",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\nmax_answer_bytes = 10\n",
                "gw.toml:",
                "max_answer_bytes must be",
            ),
            (
                "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\nmax_answer_byte = 10\n",
                "gw.toml:",
                "unknown field `max_answer_byte`",
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
            c.auth.jwt["corp"].leeway.get(),
            std::time::Duration::from_secs(30)
        );
    }
}
