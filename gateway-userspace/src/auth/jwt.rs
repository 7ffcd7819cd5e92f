//! JWT bearer tokens (RFC 7519) with jsonwebtoken. The issuer is chosen by
//! the token's `iss` among the policy's configured issuers; the algorithm
//! must be one pinned for that issuer (the header's `alg` only selects among
//! them, `none` never parses); the key is chosen by (issuer, `kid`) and
//! typed by family. `jku`, `x5u`, `jwk` and `x5c` are never used and any
//! `crit` is rejected. `exp`, `iss`, `aud` and `sub` are always required
//! (jsonwebtoken would accept a token without `iss`/`aud` otherwise), `nbf`
//! and `iat` are checked when present, all with the issuer's leeway; the
//! time claims are NumericDates with fractions allowed (`numeric_date`).
//! `sub` must also be a usable identity (`identity::check_subject`, applied
//! to every method by the policy).
//!
//! A verified token is remembered per issuer under its SHA-256 for at most
//! `cache_ttl` and never past `exp` + leeway (`cache_size` tokens; 0: off):
//! a hit skips parsing and the signature check and returns the claims
//! verified then, as long as the issuer still has the key that verified
//! the token (a JWK Set refresh that retires it makes the hit a miss). A token is cached only after every check passed, so a
//! refused token is verified again each time.

#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{
    AuthConfigError,
    cache::TtlCache,
    config::JwtIssuerConfig,
    failure::TokenError,
    https::HttpsClient,
    jwks::{self, KeyStore, Lookup, RemoteJwks},
    numeric_date::{self, TimeError},
};

/// An `[auth.jwt.NAME]` issuer whose settings cannot work: the config's
/// to fix. The text names the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[auth.jwt.{issuer}] {problem}")]
pub struct JwtConfigError {
    /// The issuer's table name.
    pub issuer: String,
    /// What is wrong with it.
    pub problem: JwtConfigProblem,
}

/// What is wrong with an issuer's settings ([`JwtConfigError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigProblem {
    /// `issuer = ""`.
    #[error("issuer must not be empty")]
    EmptyIssuer,
    /// No audience, or an empty one: `aud` is always checked.
    #[error("audiences must list at least one non-empty audience (aud is always checked)")]
    Audiences,
    /// No algorithm listed.
    #[error("algorithms must list the accepted algorithms")]
    NoAlgorithms,
    /// HMAC and public-key algorithms in one issuer.
    #[error(
        "HMAC (HS*) and public-key algorithms cannot be mixed in one issuer; define two issuers"
    )]
    MixedAlgorithms,
    /// HS* algorithms with public keys, or without secrets.
    #[error("HS* algorithms take hmac_secret_files only (no public keys or JWK Sets)")]
    HmacKeys,
    /// Secrets with public-key algorithms.
    #[error(
        "hmac_secret_files need HS* algorithms; public-key algorithms never accept a shared secret"
    )]
    SecretWithoutHmac,
    /// Public-key algorithms and no key source.
    #[error("needs public_key_files, jwks_file or jwks_url")]
    NoPublicKeys,
    /// `min_refetch_interval` under a second.
    #[error("min_refetch_interval must be at least 1s")]
    MinRefetchInterval,
    /// `refresh_interval` below `min_refetch_interval`.
    #[error("refresh_interval must not be shorter than min_refetch_interval")]
    RefreshInterval,
    /// `leeway` above 5 minutes.
    #[error("leeway above 5m is not accepted")]
    Leeway,
    /// `ca_file` without `jwks_url`.
    #[error("ca_file is only used with jwks_url")]
    CaFileWithoutUrl,
}

/// Checks an issuer's settings while the config is parsed.
pub fn validate_issuer_config(name: &str, c: &JwtIssuerConfig) -> Result<(), JwtConfigError> {
    check_issuer(c).map_err(|problem| JwtConfigError {
        issuer: name.to_owned(),
        problem,
    })
}

fn check_issuer(c: &JwtIssuerConfig) -> Result<(), JwtConfigProblem> {
    use JwtConfigProblem as P;
    if c.issuer.is_empty() {
        return Err(P::EmptyIssuer);
    }
    if c.audiences.is_empty() || c.audiences.iter().any(String::is_empty) {
        return Err(P::Audiences);
    }
    if c.algorithms.is_empty() {
        return Err(P::NoAlgorithms);
    }
    let hmac = c
        .algorithms
        .iter()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .count();
    let has_public =
        !c.public_key_files.is_empty() || c.jwks_file.is_some() || c.jwks_url.is_some();
    if hmac > 0 && hmac < c.algorithms.len() {
        return Err(P::MixedAlgorithms);
    }
    if hmac > 0 {
        if c.hmac_secret_files.is_empty() || has_public {
            return Err(P::HmacKeys);
        }
    } else if !c.hmac_secret_files.is_empty() {
        return Err(P::SecretWithoutHmac);
    } else if !has_public {
        return Err(P::NoPublicKeys);
    }
    if c.min_refetch_interval.get() < std::time::Duration::from_secs(1) {
        return Err(P::MinRefetchInterval);
    }
    if c.refresh_interval < c.min_refetch_interval {
        return Err(P::RefreshInterval);
    }
    if c.leeway.get() > std::time::Duration::from_secs(300) {
        return Err(P::Leeway);
    }
    if c.ca_file.is_some() && c.jwks_url.is_none() {
        return Err(P::CaFileWithoutUrl);
    }
    Ok(())
}

/// Verified tokens by the SHA-256 of the token.
type VerifiedTokens = TtlCache<[u8; 32], Arc<Verified>>;

/// What a token's verification established, and with which key: a hit
/// counts only while the issuer still has that very key for the token's
/// `kid` and `alg` (a JWK Set refresh makes new key objects, so a retired
/// or replaced key sends the token through full verification again).
struct Verified {
    claims: Map<String, Value>,
    key: Arc<jwks::VerifyKey>,
    kid: Option<String>,
    alg: Algorithm,
}

/// One configured issuer, ready to verify tokens.
pub struct Issuer {
    pub name: String,
    issuer: String,
    validation: Validation,
    required: Vec<String>,
    leeway: u64,
    keys: KeyStore,
    /// Verified tokens by SHA-256, with their claims; `None`: cache off.
    verified: Option<VerifiedTokens>,
    cache_ttl: Duration,
}

impl Issuer {
    pub fn from_config(name: &str, c: &JwtIssuerConfig) -> Result<Self, AuthConfigError> {
        let err = |message: String| AuthConfigError::Provider {
            provider: format!("jwt.{name}"),
            message,
        };
        let mut static_keys = Vec::new();
        for f in &c.public_key_files {
            static_keys.push(
                jwks::public_key_from_pem(&f.path, f.kid.clone(), &c.algorithms)
                    .map_err(|e| err(e.to_string()))?,
            );
        }
        for f in &c.hmac_secret_files {
            static_keys.push(
                jwks::hmac_key_from_file(&f.path, f.kid.clone(), &c.algorithms)
                    .map_err(|e| err(e.to_string()))?,
            );
        }
        if let Some(path) = &c.jwks_file {
            let body = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
            let keys = jwks::parse_jwks(&body, &c.algorithms)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            static_keys.extend(keys);
        }
        let remote = match &c.jwks_url {
            Some(url) => {
                let client = HttpsClient::new(c.ca_file.as_deref(), c.fetch_timeout.get())
                    .map_err(|e| err(e.to_string()))?;
                Some(RemoteJwks::new(
                    url.0.clone(),
                    client,
                    c.algorithms.clone(),
                    c.refresh_interval.get(),
                    c.min_refetch_interval.get(),
                ))
            }
            None => None,
        };
        let mut validation = Validation::new(c.algorithms[0]);
        validation.algorithms = c.algorithms.clone();
        validation.leeway = c.leeway.as_secs();
        // exp/nbf/iat are checked by `numeric_date` on the decoded claims:
        // jsonwebtoken's own parser only takes integers there, while RFC 7519
        // NumericDates may have fractions (`exp: 1700000000.5`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.set_issuer(&[&c.issuer]);
        validation.set_audience(&c.audiences);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        Ok(Self {
            name: name.to_owned(),
            issuer: c.issuer.clone(),
            validation,
            required: c.required_claims.clone(),
            leeway: c.leeway.as_secs(),
            keys: KeyStore::new(static_keys, remote),
            verified: (c.cache_size > 0).then(|| TtlCache::new(c.cache_size)),
            cache_ttl: c.cache_ttl.get(),
        })
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }
}

/// What a token verification ends in, besides success.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtError {
    /// The token is not acceptable.
    Invalid(TokenError),
    /// The key set could not be loaded.
    Unavailable,
}

/// All configured issuers by name.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: BTreeMap<String, Arc<Issuer>>,
}

impl JwtVerifier {
    pub fn from_config(cfg: &BTreeMap<String, JwtIssuerConfig>) -> Result<Self, AuthConfigError> {
        let mut issuers = BTreeMap::new();
        for (name, c) in cfg {
            issuers.insert(name.clone(), Arc::new(Issuer::from_config(name, c)?));
        }
        Ok(Self { issuers })
    }

    pub fn issuer(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.get(name)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.values()
    }

    /// Verifies `token` against the named issuers; returns (issuer name, claims).
    pub async fn verify(
        &self,
        token: &str,
        allowed: &[String],
    ) -> Result<(String, Map<String, Value>), JwtError> {
        use JwtError::Invalid;
        let digest: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::digest(token.as_bytes()).into()
        };
        let now = Instant::now();
        for issuer in allowed.iter().filter_map(|n| self.issuers.get(n)) {
            if let Some(hit) = issuer.verified.as_ref().and_then(|c| c.get(&digest, now))
                && let Ok(key) = issuer.keys.find(hit.kid.as_deref(), hit.alg).await
                && Arc::ptr_eq(&key, &hit.key)
            {
                return Ok((issuer.name.clone(), hit.claims.clone()));
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // Unknown algorithm names (including "none") fail header parsing.
            ErrorKind::Json(_) if token_alg_is_unknown(token) => {
                Invalid(TokenError::AlgorithmNotAllowed)
            }
            _ => Invalid(TokenError::Malformed),
        })?;
        if header.crit.is_some() {
            return Err(Invalid(TokenError::UnsupportedCrit));
        }
        #[derive(serde::Deserialize)]
        struct IssOnly {
            iss: Option<Value>,
        }
        let peek: IssOnly = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Invalid(TokenError::Malformed))?;
        let iss = peek.iss.as_ref().and_then(Value::as_str);
        let issuer = allowed
            .iter()
            .filter_map(|n| self.issuers.get(n))
            .find(|i| Some(i.issuer.as_str()) == iss)
            .ok_or(Invalid(TokenError::UnknownIssuer))?;
        let alg = header.alg;
        if !issuer.validation.algorithms.contains(&alg) {
            return Err(Invalid(TokenError::AlgorithmNotAllowed));
        }
        let key = issuer
            .keys
            .find(header.kid.as_deref(), alg)
            .await
            .map_err(|l| match l {
                Lookup::NotFound => Invalid(TokenError::UnknownKey),
                Lookup::Unavailable => JwtError::Unavailable,
            })?;
        // jsonwebtoken wants every listed algorithm in the key's family, so
        // validate with exactly the (already allowed) algorithm of the token.
        let mut validation = issuer.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| Invalid(map_error(e.kind())))?;
        let claims = data.claims;
        let leeway = issuer.leeway as f64;
        let checked_at = numeric_date::now();
        let exp = match numeric_date::check(&claims, checked_at, leeway, leeway) {
            Ok(Some(exp)) => exp,
            // `exp` is always required.
            Ok(None) | Err(TimeError::Malformed(_)) => {
                return Err(Invalid(TokenError::MissingClaim));
            }
            Err(TimeError::Expired) => return Err(Invalid(TokenError::Expired)),
            Err(TimeError::NotYetValid) => return Err(Invalid(TokenError::NotYetValid)),
            Err(TimeError::IssuedInFuture) => return Err(Invalid(TokenError::IssuedInFuture)),
        };
        if !claims.get("sub").is_some_and(Value::is_string)
            || issuer.required.iter().any(|c| !claims.contains_key(c))
        {
            return Err(Invalid(TokenError::MissingClaim));
        }
        if let Some(cache) = &issuer.verified {
            // Valid until exp + leeway (the check above), at most cache_ttl.
            let left = exp + leeway - checked_at;
            if left > 0.0 {
                let keep = Duration::from_secs_f64(left.min(issuer.cache_ttl.as_secs_f64()));
                let verified = Verified {
                    claims: claims.clone(),
                    key: key.clone(),
                    kid: header.kid.clone(),
                    alg,
                };
                cache.insert(digest, Arc::new(verified), now + keep, now);
            }
        }
        Ok((issuer.name.clone(), claims))
    }
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            TokenError::MissingClaim
        }
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
        // Key/algorithm family mismatch: the key cannot verify this token.
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => TokenError::BadSignature,
        _ => TokenError::Malformed,
    }
}

/// Whether the header parses as JSON but names an algorithm we do not know
/// (such as `none`).
fn token_alg_is_unknown(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    v.get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| a.parse::<Algorithm>().is_err())
}
