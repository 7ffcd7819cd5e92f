//! The verification keys of one JWT issuer: static keys (PEM files, a JWK
//! Set file, HMAC secrets) and an optional JWK Set fetched over HTTPS. The
//! remote set is fetched again when it is older than `refresh_interval`
//! (in the background) or when a token names an unknown `kid` (inline), but
//! never more than once per `min_refetch_interval`; a failed fetch keeps the
//! last good set. Every key is typed by algorithm family, so a key is only
//! ever used with algorithms of its own family: an RSA public key can never
//! act as an HMAC secret, and a JWK Set can never supply an HMAC secret.

#![forbid(unsafe_code)]

use std::{
    path::Path,
    str::FromStr as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper::body::Bytes;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, jwk::Jwk};

use super::https::{FetchError, HttpsClient};

/// A key a token may be verified with.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub family: AlgorithmFamily,
    /// The JWK's `alg`, if it pins one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

/// Why no key was found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No key matches the `kid` and algorithm.
    NotFound,
    /// The remote set never loaded and no static key matched.
    Unavailable,
}

pub struct KeyStore {
    static_keys: Vec<Arc<VerifyKey>>,
    remote: Option<Arc<RemoteJwks>>,
}

impl KeyStore {
    pub fn new(static_keys: Vec<VerifyKey>, remote: Option<RemoteJwks>) -> Self {
        Self {
            static_keys: static_keys.into_iter().map(Arc::new).collect(),
            remote: remote.map(Arc::new),
        }
    }

    /// The key for `(kid, alg)`. Without a `kid` the issuer must have
    /// exactly one key of the algorithm's family.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, Lookup> {
        if let Some(remote) = &self.remote
            && remote.is_stale()
            && remote.fetch_due()
        {
            let remote = remote.clone();
            tokio::spawn(async move { remote.refetch().await });
        }
        if let Some(k) = self.pick(kid, alg) {
            return Ok(k);
        }
        let Some(remote) = &self.remote else {
            return Err(Lookup::NotFound);
        };
        // An unknown kid may mean the issuer rotated its keys.
        if kid.is_some() || !remote.loaded() {
            remote.refetch().await;
            if let Some(k) = self.pick(kid, alg) {
                return Ok(k);
            }
        }
        if remote.loaded() {
            Err(Lookup::NotFound)
        } else {
            Err(Lookup::Unavailable)
        }
    }

    fn pick(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        let remote = self.remote.as_ref().map(|r| r.keys.load_full());
        let all = self
            .static_keys
            .iter()
            .chain(remote.iter().flat_map(|r| r.iter()));
        let mut matching = all.filter(|k| {
            k.family == alg.family()
                && k.alg.is_none_or(|a| a == alg)
                && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
        });
        let first = matching.next()?;
        if kid.is_none() && matching.next().is_some() {
            return None; // ambiguous: a token must name its key
        }
        Some(first.clone())
    }

    /// Fetches the remote set now unless one was fetched within the
    /// minimum interval. For start-up and tests.
    pub async fn refresh(&self) -> bool {
        match &self.remote {
            Some(r) => r.refetch().await,
            None => true,
        }
    }

    /// Fetch attempts of the remote set so far.
    pub fn fetches(&self) -> u64 {
        self.remote
            .as_ref()
            .map_or(0, |r| r.fetches.load(Ordering::Relaxed))
    }
}

pub struct RemoteJwks {
    url: http::Uri,
    client: HttpsClient,
    allowed: Vec<Algorithm>,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    keys: ArcSwap<Vec<Arc<VerifyKey>>>,
    /// Serializes fetches; holds the time of the last attempt.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    last_success: Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl RemoteJwks {
    pub fn new(
        url: http::Uri,
        client: HttpsClient,
        allowed: Vec<Algorithm>,
        refresh_interval: Duration,
        min_refetch_interval: Duration,
    ) -> Self {
        Self {
            url,
            client,
            allowed,
            refresh_interval,
            min_refetch_interval,
            keys: ArcSwap::from_pointee(Vec::new()),
            last_attempt: tokio::sync::Mutex::new(None),
            last_success: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    fn loaded(&self) -> bool {
        self.last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn is_stale(&self) -> bool {
        self.last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() >= self.refresh_interval)
    }

    /// Whether a fetch would run now (none running, none too recent), so a
    /// stale set whose fetches keep failing does not spawn a task per request.
    fn fetch_due(&self) -> bool {
        self.last_attempt
            .try_lock()
            .is_ok_and(|last| last.is_none_or(|t| t.elapsed() >= self.min_refetch_interval))
    }

    /// Fetches the set unless rate-limited; true if a fetch succeeded.
    async fn refetch(&self) -> bool {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let req = http::Request::get(self.url.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .body(Bytes::new())
            .expect("a GET with a valid URI builds");
        let result = match self.client.send(req).await {
            Ok(body) => parse_jwks(&body, &self.allowed),
            Err(e) => Err(JwksError::Fetch(e)),
        };
        match result {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys
                    .store(Arc::new(keys.into_iter().map(Arc::new).collect()));
                *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the last good key set");
                false
            }
        }
    }
}

/// Why a JWK Set gave no keys (the issuer's document, or fetching it).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The document is not JSON with a `keys` array.
    #[error("not a JWK Set: {0}")]
    NotASet(serde_json::Error),
    /// No key of the set is a signature key for the allowed algorithms.
    #[error("the JWK Set has no signature key usable with the allowed algorithms")]
    NoUsableKey,
    /// The `jwks_url` could not be fetched (the issuer's or the network's
    /// side).
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Why a key file of `[auth.jwt.NAME]` is not usable (the config's or the
/// file's to fix). The text starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("{}: {error}", .path.display())]
    Read {
        /// The key file.
        path: std::path::PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
    /// The PEM is not a public key of an allowed algorithm's family.
    #[error("{}: not a public key for the allowed algorithms", .0.display())]
    NotAPublicKey(std::path::PathBuf),
    /// The HMAC secret is shorter than the largest allowed hash (RFC 7518 §3.2).
    #[error("{}: HMAC secret is shorter than {min} bytes", .path.display())]
    ShortSecret {
        /// The secret file.
        path: std::path::PathBuf,
        /// The least length, in bytes.
        min: usize,
    },
    /// The secret file holds a PEM key.
    #[error("{}: looks like a PEM key, not an HMAC secret", .0.display())]
    PemAsSecret(std::path::PathBuf),
}

/// Parses a JWK Set, keeping the signature keys usable with `allowed`.
/// Symmetric (`oct`) keys are never taken from a JWK Set. Keys that do not
/// parse are skipped; a document without usable keys is an error.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<VerifyKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(JwksError::NotASet)?;
    let mut out = Vec::new();
    for raw in set.keys {
        if raw.get("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let alg = match raw.get("alg").and_then(|a| a.as_str()) {
            Some(a) => match Algorithm::from_str(a) {
                Ok(alg) if allowed.contains(&alg) => Some(alg),
                _ => continue,
            },
            None => None,
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        let family = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            _ => continue, // oct (HMAC) and unknown key types
        };
        if !allowed.iter().any(|a| a.family() == family) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            family,
            alg,
            key,
        });
    }
    if out.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(out)
}

/// Reads a public key PEM, typed by the first allowed family it parses as.
pub fn public_key_from_pem(
    path: &Path,
    kid: Option<String>,
    allowed: &[Algorithm],
) -> Result<VerifyKey, KeyFileError> {
    let pem = std::fs::read(path).map_err(|error| KeyFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let mut families: Vec<AlgorithmFamily> = allowed.iter().map(|a| a.family()).collect();
    families.dedup();
    for family in families {
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => continue,
        };
        if let Ok(key) = key {
            return Ok(VerifyKey {
                kid,
                family,
                alg: None,
                key,
            });
        }
    }
    Err(KeyFileError::NotAPublicKey(path.to_owned()))
}

/// Reads an HMAC secret file (trailing newline removed) and checks it is at
/// least as long as the largest allowed hash (RFC 7518 §3.2).
pub fn hmac_key_from_file(
    path: &Path,
    kid: Option<String>,
    allowed: &[Algorithm],
) -> Result<VerifyKey, KeyFileError> {
    let mut secret = std::fs::read(path).map_err(|error| KeyFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    let min = allowed
        .iter()
        .map(|a| match a {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        })
        .max()
        .unwrap_or(32);
    if secret.len() < min {
        return Err(KeyFileError::ShortSecret {
            path: path.to_owned(),
            min,
        });
    }
    if secret.starts_with(b"-----BEGIN") {
        return Err(KeyFileError::PemAsSecret(path.to_owned()));
    }
    Ok(VerifyKey {
        kid,
        family: AlgorithmFamily::Hmac,
        alg: None,
        key: DecodingKey::from_secret(&secret),
    })
}
