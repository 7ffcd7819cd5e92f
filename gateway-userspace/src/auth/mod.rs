//! The authenticate phase: turns a request into an [`Identity`] under a
//! named policy, or into an [`AuthFailure`] that says how to answer. Built
//! once per config load ([`Authenticator::from_config`]) and shared.
//!
//! Order for one request: unknown policy → 500; `none` → anonymous; source
//! over the brute-force limit → 429 (credentials not even checked); the
//! policy's method(s) → identity or failure; required scopes → 403. Wrong
//! credentials count towards the brute-force limit, missing ones do not.
//! [`Authenticator::apply_identity`] then prepares the upstream request.
//! See `docs/auth.md` for the config and the choices made.

#![forbid(unsafe_code)]

mod api_key;
mod basic;
mod bruteforce;
mod cache;
mod carriers;
pub mod config;
mod extract;
mod failure;
mod https;
pub mod identity;
mod introspection;
mod jwks;
mod jwt;
mod numeric_date;
mod policy;
mod validate;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Instant};

use http::{HeaderName, HeaderValue};

use self::{
    api_key::ApiKeys, basic::BasicUsers, bruteforce::BruteForce, introspection::Introspector,
    jwt::JwtVerifier, policy::Policy,
};
pub use self::{
    api_key::hash_key,
    basic::HashFormatError,
    bruteforce::{AbuseHook, AbuseReport},
    config::{AuthMethodKind, AuthSection, AuthValueError},
    failure::{AuthFailure, Scheme, TokenError},
    introspection::IntrospectionConfigError,
    jwt::{JwtConfigError, JwtConfigProblem},
    validate::{AuthSectionError, PolicyError},
};

/// How an identity was established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Policy `none`: nobody in particular.
    Anonymous,
    /// A JWT from the named issuer (`[auth.jwt.NAME]`).
    Jwt {
        /// The `[auth.jwt.NAME]` name of the issuer.
        issuer: String,
    },
    /// A token the named introspection endpoint called active.
    Introspection {
        /// The `[auth.introspection.NAME]` name.
        provider: String,
    },
    /// An API key from the named key set.
    ApiKey {
        /// The `[auth.api_keys.NAME]` name.
        provider: String,
    },
    /// A Basic user from the named user set.
    Basic {
        /// The `[auth.basic.NAME]` name.
        provider: String,
    },
}

/// Where a credential travels, so it can be checked for repeats and
/// stripped before forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Credential {
    Authorization,
    Header(HeaderName),
    Query(String),
}

/// A successfully authenticated caller. Holds no secret.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `sub` (JWT, introspection; `username` or `client_id` as fallbacks
    /// for introspection), the key's name, or the Basic user name. Never
    /// empty or blank (`identity::check_subject`), except for `none`
    /// policies, where it is `""`.
    pub subject: String,
    /// Which method and provider established it.
    pub method: AuthMethod,
    /// Scopes granted (the token's scope claim, or the key's or user's `scopes`), as checked
    /// against the policy's `scopes`.
    pub scopes: Vec<String>,
    /// Headers to send upstream, from the policy's `headers` mapping.
    pub claims_headers: Vec<(HeaderName, HeaderValue)>,
    /// The API key's own rate limit (requests/s), if it has one.
    pub rate_limit: Option<u32>,
    /// The consumer's plan (`[[rate_limit.plans]]`): the API key's `plan`,
    /// or the policy's `plan_claim` of the token.
    pub plan: Option<String>,
    /// The concrete policy that matched (for `any`, the listed one).
    pub policy: String,
    /// Every carrier of the route's policy when the winning policy has
    /// `strip_credential`; empty otherwise.
    strip: Vec<Credential>,
}

/// A credentials file (`keys_file`, `htpasswd_file`) that cannot be used:
/// the file's (or its permissions') to fix. The texts point at the file,
/// line and column and never quote a key or a hash.
#[derive(Debug, thiserror::Error)]
pub enum CredentialFileError {
    /// The file cannot be read.
    #[error("{}: {error}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
    /// A line or value does not parse (TOML's message, or what an
    /// htpasswd line should look like).
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Syntax {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An API key's name is not a usable identity.
    #[error("{}: key name {name:?}: {problem}", .path.display())]
    KeyName {
        /// The file.
        path: std::path::PathBuf,
        /// The key's name.
        name: String,
        /// Why it is not an identity.
        problem: identity::SubjectError,
    },
    /// An htpasswd user name is not a usable identity.
    #[error("{}:{line}:1: user {user:?}: {problem}", .path.display())]
    UserName {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: usize,
        /// The user name.
        user: String,
        /// Why it is not an identity.
        problem: identity::SubjectError,
    },
    /// An htpasswd hash the gateway cannot verify.
    #[error("{}:{line}:1: user '{user}': {problem}", .path.display())]
    Hash {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: usize,
        /// The user name.
        user: String,
        /// What is wrong with the hash.
        problem: basic::HashFormatError,
    },
}

/// A provider named in the config could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key, secret, user or key file is unreadable or invalid, or a TLS
    /// client could not be built.
    #[error("[auth.{provider}] {message}")]
    Provider {
        /// The provider as `KIND.NAME` (`jwt.corp`, `basic.staff`).
        provider: String,
        /// What is wrong with it (with the file path, for a file).
        message: String,
    },
}

/// Built once per config load; cheap to share behind an `Arc`.
pub struct Authenticator {
    realm: String,
    max_credential_bytes: usize,
    policies: BTreeMap<String, Policy>,
    jwt: JwtVerifier,
    introspection: BTreeMap<String, Introspector>,
    api_keys: BTreeMap<String, ApiKeys>,
    basic: BTreeMap<String, BasicUsers>,
    brute_force: BruteForce,
    abuse_hook: Option<AbuseHook>,
    /// Every header any policy sets: removed from every forwarded request.
    identity_headers: Vec<HeaderName>,
    /// Policy name → where its credentials travel (for `any`, the union of
    /// its listed policies').
    carriers: BTreeMap<String, Vec<carriers::Carrier>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads every key, secret and user file and builds the providers. Call
    /// it before swapping in a new config: an error leaves the old one.
    pub fn from_config(section: &AuthSection) -> Result<Self, AuthConfigError> {
        let mut introspection = BTreeMap::new();
        for (name, c) in &section.introspection {
            introspection.insert(name.clone(), Introspector::from_config(name, c)?);
        }
        let mut api_keys = BTreeMap::new();
        for (name, c) in &section.api_keys {
            api_keys.insert(name.clone(), ApiKeys::from_config(name, c)?);
        }
        let mut basic = BTreeMap::new();
        for (name, c) in &section.basic {
            basic.insert(name.clone(), BasicUsers::from_config(name, c)?);
        }
        let policies: BTreeMap<String, Policy> = section
            .policies
            .iter()
            .map(|(name, c)| (name.clone(), Policy::from_config(name, c)))
            .collect();
        let mut identity_headers: Vec<HeaderName> = Vec::new();
        for (h, _) in policies.values().flat_map(|p| p.headers.iter()) {
            if !identity_headers.contains(h) {
                identity_headers.push(h.clone());
            }
        }
        let key_sets = |p: &Policy| {
            p.providers
                .iter()
                .filter_map(|n| api_keys.get(n))
                .map(|k: &ApiKeys| (k.header.clone(), k.query.clone()))
                .collect::<Vec<_>>()
        };
        let mut carriers: BTreeMap<String, Vec<carriers::Carrier>> = policies
            .iter()
            .map(|(name, p)| {
                let sets = key_sets(p);
                (name.clone(), carriers::of_kind(p.kind, sets.into_iter()))
            })
            .collect();
        for (name, p) in policies
            .iter()
            .filter(|(_, p)| p.kind == AuthMethodKind::Any)
        {
            let mut union = Vec::new();
            for sub in &p.of {
                for c in carriers.get(sub).into_iter().flatten() {
                    carriers::add(&mut union, c.clone());
                }
            }
            carriers.insert(name.clone(), union);
        }
        Ok(Self {
            realm: section.realm.clone(),
            max_credential_bytes: section.max_credential_bytes,
            policies,
            jwt: JwtVerifier::from_config(&section.jwt)?,
            introspection,
            api_keys,
            basic,
            brute_force: BruteForce::new(&section.brute_force),
            abuse_hook: None,
            identity_headers,
            carriers,
        })
    }

    /// Sets the callback told when a source exceeds the auth failure
    /// threshold (once per source and window). It must not block.
    pub fn with_abuse_hook(mut self, hook: AbuseHook) -> Self {
        self.abuse_hook = Some(hook);
        self
    }

    /// Whether a policy of this name exists (for validating routes).
    pub fn has_policy(&self, name: &str) -> bool {
        self.policies.contains_key(name)
    }

    /// Fetches every remote JWK Set now (rate limits still apply). Call it
    /// at start-up so the first requests do not wait; returns false if any
    /// fetch failed (requests then retry, rate-limited).
    pub async fn refresh_keys(&self) -> bool {
        let mut ok = true;
        for issuer in self.jwt.issuers() {
            ok &= issuer.keys().refresh().await;
        }
        ok
    }

    /// JWK Set fetch attempts for an issuer (for metrics and tests).
    pub fn jwks_fetches(&self, issuer: &str) -> u64 {
        self.jwt.issuer(issuer).map_or(0, |i| i.keys().fetches())
    }

    /// JWK Set fetch attempts of every issuer, by issuer name.
    pub fn jwks_fetch_counts(&self) -> Vec<(String, u64)> {
        self.jwt
            .issuers()
            .map(|i| (i.name.clone(), i.keys().fetches()))
            .collect()
    }

    /// Password hash verifications for a Basic user set (cache hits excluded).
    pub fn basic_verifications(&self, provider: &str) -> u64 {
        self.basic.get(provider).map_or(0, |b| b.verifications())
    }

    /// Authenticates a request under the route's policy.
    pub async fn authenticate(
        &self,
        policy: &str,
        req: &http::request::Parts,
        client_ip: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let policy = self
            .policies
            .get(policy)
            .ok_or(AuthFailure::UnknownPolicy)?;
        if policy.kind == AuthMethodKind::None {
            return Ok(Identity {
                subject: String::new(),
                method: AuthMethod::Anonymous,
                scopes: Vec::new(),
                claims_headers: Vec::new(),
                rate_limit: None,
                plan: None,
                policy: policy.name.clone(),
                strip: Vec::new(),
            });
        }
        let now = Instant::now();
        if let Some(retry_after) = self.brute_force.check(client_ip, now) {
            return Err(AuthFailure::TooManyFailures { retry_after });
        }
        let carriers = self
            .carriers
            .get(&policy.name)
            .map_or(&[][..], Vec::as_slice);
        let result = match carriers::single_credential(carriers, req, &self.realm) {
            Err(ambiguous) => Err(ambiguous),
            Ok(()) if policy.kind == AuthMethodKind::Any => self.any_of(policy, req).await,
            Ok(()) => self.run_policy(policy, req).await,
        };
        // The winner strips: then every carrier of the route's policy goes.
        let result = result.map(|mut id| {
            if !id.strip.is_empty() {
                for c in carriers {
                    if !id.strip.contains(&c.credential) {
                        id.strip.push(c.credential.clone());
                    }
                }
            }
            id
        });
        if let Err(failure) = &result {
            tracing::debug!(policy = %policy.name, %client_ip, reason = failure.reason(), cause = %failure, "authentication failed");
            if failure.is_bad_credential() {
                self.brute_force
                    .record_failure(client_ip, now, self.abuse_hook.as_ref());
            }
        }
        result
    }

    async fn any_of(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Identity, AuthFailure> {
        let mut first_failure = None;
        let mut schemes = Vec::new();
        for name in &policy.of {
            let Some(sub) = self.policies.get(name) else {
                continue; // validated at parse time
            };
            match self.run_policy(sub, req).await {
                Ok(identity) => return Ok(identity),
                Err(AuthFailure::Missing { schemes: s, .. }) => {
                    for scheme in s {
                        if !schemes.contains(&scheme) {
                            schemes.push(scheme);
                        }
                    }
                }
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        Err(first_failure.unwrap_or(AuthFailure::Missing {
            realm: self.realm.clone(),
            schemes,
        }))
    }

    /// Removes client-sent copies of every identity header, for requests
    /// on routes without an auth policy. Every spelling with `_` for `-`
    /// goes too (`X_User_Id` is `X-User-Id` to CGI, WSGI and PHP backends).
    pub fn strip_identity_headers(&self, headers: &mut http::HeaderMap) {
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                self.identity_headers
                    .iter()
                    .any(|want| crate::proxy::header_name::same_name(k.as_str(), want.as_str()))
            })
            .cloned()
            .collect();
        for name in forged {
            headers.remove(name);
        }
    }

    /// Removes every client-sent copy of any configured identity header,
    /// adds this identity's headers and, if the winning policy says so,
    /// strips every credential carrier of the route's policy
    /// (`Authorization`, each key header, each key query parameter in every
    /// spelling `api_key::same_param` accepts). Call it for every request
    /// that authenticated, `none` policies included, so a client can never
    /// forge an identity header.
    pub fn apply_identity(&self, identity: &Identity, req: &mut http::request::Parts) {
        self.strip_identity_headers(&mut req.headers);
        for (name, value) in &identity.claims_headers {
            req.headers.append(name.clone(), value.clone());
        }
        for credential in &identity.strip {
            match credential {
                Credential::Authorization => {
                    req.headers.remove(http::header::AUTHORIZATION);
                }
                Credential::Header(name) => {
                    for spelled in carriers::header_spellings(&req.headers, name) {
                        req.headers.remove(spelled);
                    }
                }
                Credential::Query(param) => strip_query(&mut req.uri, param),
            }
        }
    }
}

/// Removes query parameter `param` (every spelling) from `uri`.
fn strip_query(uri: &mut http::Uri, param: &str) {
    let mut parts = uri.clone().into_parts();
    let Some(pq) = &parts.path_and_query else {
        return;
    };
    let Some(query) = pq.query() else {
        return;
    };
    let rebuilt = match api_key::strip_query_param(query, param) {
        Some(q) => format!("{}?{q}", pq.path()),
        None => pq.path().to_owned(),
    };
    if let Ok(pq) = rebuilt.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = http::Uri::from_parts(parts) {
            *uri = new;
        }
    }
}

/// The authenticator as shared between connections and reloads.
pub type SharedAuthenticator = Arc<Authenticator>;
