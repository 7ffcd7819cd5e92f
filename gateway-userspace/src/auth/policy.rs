//! One concrete policy run against a request: extract the credential its
//! method takes, ask the named providers in order, then check the required
//! scopes and build the upstream headers from the claims.

#![forbid(unsafe_code)]

use http::HeaderName;
use serde_json::{Map, Value};

use super::{
    AuthMethod, AuthMethodKind, Authenticator, Credential, Identity,
    config::{PolicyConfig, ScopeMatch},
    extract,
    failure::{AuthFailure, Scheme, TokenError},
    identity,
    introspection::Verdict,
    jwt::JwtError,
};

pub struct Policy {
    pub name: String,
    pub kind: AuthMethodKind,
    pub providers: Vec<String>,
    pub of: Vec<String>,
    scopes: Vec<String>,
    scope_match: ScopeMatch,
    scope_claim: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
    strip_credential: bool,
    plan_claim: Option<String>,
}

impl Policy {
    /// From a config entry already validated while parsing.
    pub fn from_config(name: &str, c: &PolicyConfig) -> Self {
        Self {
            name: name.to_owned(),
            kind: c.kind,
            providers: c.providers.clone(),
            of: c.of.clone(),
            scopes: c.scopes.clone(),
            scope_match: c.scope_match,
            scope_claim: c.scope_claim.clone(),
            headers: c
                .headers
                .iter()
                .filter_map(|(h, claim)| {
                    Some((HeaderName::from_bytes(h.as_bytes()).ok()?, claim.clone()))
                })
                .collect(),
            strip_credential: c.strip_credential,
            plan_claim: c.plan_claim.clone(),
        }
    }

    fn scopes_ok(&self, have: &[String]) -> bool {
        let has = |s: &String| have.contains(s);
        match self.scope_match {
            ScopeMatch::All => self.scopes.iter().all(has),
            ScopeMatch::Any => self.scopes.is_empty() || self.scopes.iter().any(has),
        }
    }
}

/// What a method established before scopes and headers are applied.
struct Established {
    method: AuthMethod,
    claims: Map<String, Value>,
    subject: String,
    rate_limit: Option<u32>,
    plan: Option<String>,
    credential: Credential,
    scheme: Scheme,
}

impl Authenticator {
    /// Runs one concrete (not `any`, not `none`) policy.
    pub(super) async fn run_policy(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Identity, AuthFailure> {
        let est = match policy.kind {
            AuthMethodKind::Jwt => self.by_jwt(policy, req).await?,
            AuthMethodKind::Introspection => self.by_introspection(policy, req).await?,
            AuthMethodKind::ApiKey => self.by_api_key(policy, req)?,
            AuthMethodKind::Basic => self.by_basic(policy, req).await?,
            AuthMethodKind::None | AuthMethodKind::Any => return Err(AuthFailure::UnknownPolicy),
        };
        // An identity is never empty or blank, whatever method made it.
        if let Err(problem) = identity::check_subject(&est.subject) {
            tracing::debug!(policy = %policy.name, %problem, "identity refused");
            return Err(match est.scheme {
                Scheme::Bearer => self.invalid_token(TokenError::InvalidSubject),
                scheme => AuthFailure::InvalidCredentials {
                    realm: self.realm.clone(),
                    scheme,
                },
            });
        }
        let scopes = extract::scopes(&est.claims, policy.scope_claim.as_deref());
        if !policy.scopes_ok(&scopes) {
            return Err(AuthFailure::InsufficientScope {
                realm: self.realm.clone(),
                scheme: est.scheme,
                required: policy.scopes.join(" "),
            });
        }
        let mut claims_headers = Vec::new();
        for (header, claim) in &policy.headers {
            match extract::claim_header_value(&est.claims, claim) {
                Some(v) => claims_headers.push((header.clone(), v)),
                None => {
                    tracing::debug!(%header, claim, "claim absent or not a header value; header not set")
                }
            }
        }
        let plan = est.plan.or_else(|| {
            let claim = policy.plan_claim.as_deref()?;
            est.claims
                .get(claim)
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(Identity {
            subject: est.subject,
            method: est.method,
            scopes,
            claims_headers,
            rate_limit: est.rate_limit,
            plan,
            policy: policy.name.clone(),
            strip: policy
                .strip_credential
                .then_some(est.credential)
                .into_iter()
                .collect(),
        })
    }

    fn invalid_token(&self, cause: TokenError) -> AuthFailure {
        AuthFailure::InvalidToken {
            realm: self.realm.clone(),
            cause,
        }
    }

    async fn by_jwt(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Established, AuthFailure> {
        let token = extract::bearer(&req.headers, &self.realm, self.max_credential_bytes)?;
        let (issuer, claims) =
            self.jwt
                .verify(token, &policy.providers)
                .await
                .map_err(|e| match e {
                    JwtError::Invalid(cause) => self.invalid_token(cause),
                    JwtError::Unavailable => AuthFailure::ProviderUnavailable,
                })?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Established {
            method: AuthMethod::Jwt { issuer },
            claims,
            subject,
            rate_limit: None,
            plan: None,
            credential: Credential::Authorization,
            scheme: Scheme::Bearer,
        })
    }

    async fn by_introspection(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Established, AuthFailure> {
        let token = extract::bearer(&req.headers, &self.realm, self.max_credential_bytes)?;
        let mut unavailable = false;
        let mut refused = None;
        for name in &policy.providers {
            let Some(provider) = self.introspection.get(name) else {
                continue;
            };
            match provider.introspect(token).await {
                Ok(Verdict::Active(claims)) => {
                    // The first of these that is present is the identity
                    // (a present but empty `sub` is not skipped: it is refused).
                    let subject = ["sub", "username", "client_id"]
                        .iter()
                        .find_map(|c| claims.get(*c))
                        .and_then(Value::as_str)
                        .ok_or_else(|| self.invalid_token(TokenError::MissingClaim))?
                        .to_owned();
                    return Ok(Established {
                        method: AuthMethod::Introspection {
                            provider: name.clone(),
                        },
                        claims,
                        subject,
                        rate_limit: None,
                        plan: None,
                        credential: Credential::Authorization,
                        scheme: Scheme::Bearer,
                    });
                }
                Ok(Verdict::Inactive) => {}
                // Maybe meant for the next provider; else this is the answer.
                Ok(Verdict::Refused(cause)) => {
                    refused.get_or_insert(cause);
                }
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, "token introspection failed");
                    unavailable = true;
                }
            }
        }
        Err(if unavailable {
            AuthFailure::ProviderUnavailable
        } else {
            self.invalid_token(refused.unwrap_or(TokenError::Inactive))
        })
    }

    fn by_api_key(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Established, AuthFailure> {
        let mut presented = false;
        for name in &policy.providers {
            let Some(keys) = self.api_keys.get(name) else {
                continue;
            };
            let (key, credential) =
                match extract::single_header(&req.headers, &keys.header, &self.realm)? {
                    Some(v) => (v.to_vec(), Credential::Header(keys.header.clone())),
                    None => match keys.query.as_deref().and_then(|q| {
                        Some((
                            super::api_key::query_param(req.uri.query()?, q)?,
                            Credential::Query(q.to_owned()),
                        ))
                    }) {
                        Some(found) => found,
                        None => continue,
                    },
                };
            presented = true;
            if key.is_empty() || key.len() > self.max_credential_bytes {
                continue;
            }
            if let Some(id) = keys.lookup(&key) {
                let mut claims = Map::new();
                claims.insert("sub".into(), Value::String(id.name.clone()));
                claims.insert("scope".into(), Value::String(id.scopes.join(" ")));
                return Ok(Established {
                    method: AuthMethod::ApiKey {
                        provider: name.clone(),
                    },
                    claims,
                    subject: id.name.clone(),
                    rate_limit: id.rate_limit,
                    plan: id.plan.clone(),
                    credential,
                    scheme: Scheme::ApiKey,
                });
            }
        }
        Err(if presented {
            AuthFailure::InvalidCredentials {
                realm: self.realm.clone(),
                scheme: Scheme::ApiKey,
            }
        } else {
            AuthFailure::Missing {
                realm: self.realm.clone(),
                schemes: vec![Scheme::ApiKey],
            }
        })
    }

    async fn by_basic(
        &self,
        policy: &Policy,
        req: &http::request::Parts,
    ) -> Result<Established, AuthFailure> {
        let (user, password) =
            extract::basic(&req.headers, &self.realm, self.max_credential_bytes)?;
        for name in &policy.providers {
            let Some(users) = self.basic.get(name) else {
                continue;
            };
            if let Some((subject, scopes)) = users.verify(&user, &password).await {
                let mut claims = Map::new();
                claims.insert("sub".into(), Value::String(subject.clone()));
                claims.insert("scope".into(), Value::String(scopes.join(" ")));
                return Ok(Established {
                    method: AuthMethod::Basic {
                        provider: name.clone(),
                    },
                    claims,
                    subject,
                    rate_limit: None,
                    plan: None,
                    credential: Credential::Authorization,
                    scheme: Scheme::Basic,
                });
            }
        }
        Err(AuthFailure::InvalidCredentials {
            realm: self.realm.clone(),
            scheme: Scheme::Basic,
        })
    }
}
