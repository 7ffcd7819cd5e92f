//! HTTP Basic (RFC 7617) against users with bcrypt (htpasswd `$2y$`, `$2b$`,
//! `$2a$`) or argon2 (PHC string) hashes. Hashing is slow on purpose, so it
//! runs on the blocking pool, at most one verification per core at a time,
//! and a success is remembered for `cache_ttl` under an HMAC-SHA256 of
//! `user:password` with a random per-process key (the cache never holds a
//! password, and its keys are useless outside this process). Failures are
//! never cached. Unknown users are checked against a real hash too, so
//! timing does not reveal which user names exist.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use argon2::{PasswordHash, PasswordVerifier as _};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::{AuthConfigError, CredentialFileError, cache::TtlCache, config::BasicConfig};

/// A password hash the gateway cannot verify: the config's or the
/// htpasswd file's to fix (the hash itself is never quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HashFormatError {
    /// `$2a$`, `$2b$` or `$2y$` but not a whole bcrypt hash.
    #[error("malformed bcrypt hash")]
    Bcrypt,
    /// `$argon2` but not a PHC string.
    #[error("malformed argon2 PHC hash")]
    Argon2,
    /// Neither bcrypt nor argon2 (plain text, MD5 or SHA crypt).
    #[error("unsupported hash: use bcrypt ($2y$, htpasswd -B) or argon2 ($argon2id$)")]
    Unsupported,
}

/// Checks that `hash` is a bcrypt or argon2 hash we can verify.
pub fn check_hash_format(hash: &str) -> Result<(), HashFormatError> {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return hash
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|_| HashFormatError::Bcrypt);
    }
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash)
            .map(|_| ())
            .map_err(|_| HashFormatError::Argon2);
    }
    Err(HashFormatError::Unsupported)
}

struct User {
    hash: String,
    scopes: Vec<String>,
}

pub struct BasicUsers {
    users: HashMap<String, Arc<User>>,
    /// Checked for unknown users so they cost as much as known ones.
    decoy: Option<Arc<User>>,
    cache: TtlCache<[u8; 32], String>,
    cache_ttl: Duration,
    hmac_key: [u8; 32],
    limit: Arc<Semaphore>,
    verifications: AtomicU64,
}

impl BasicUsers {
    pub fn from_config(name: &str, c: &BasicConfig) -> Result<Self, AuthConfigError> {
        let err = |message: String| AuthConfigError::Provider {
            provider: format!("basic.{name}"),
            message,
        };
        let mut users = HashMap::new();
        for u in &c.users {
            users.insert(
                u.name.clone(),
                Arc::new(User {
                    hash: u.hash.0.clone(),
                    scopes: u.scopes.clone(),
                }),
            );
        }
        if let Some(path) = &c.htpasswd_file {
            for (user, hash) in load_htpasswd(path).map_err(|e| err(e.to_string()))? {
                users.insert(
                    user,
                    Arc::new(User {
                        hash,
                        scopes: Vec::new(),
                    }),
                );
            }
        }
        let mut hmac_key = [0u8; 32];
        getrandom::fill(&mut hmac_key)
            .map_err(|e| err(format!("no randomness for the cache key: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            decoy: users.values().next().cloned(),
            users,
            cache: TtlCache::new(c.cache_size),
            cache_ttl: c.cache_ttl.get(),
            hmac_key,
            limit: Arc::new(Semaphore::new(cores)),
            verifications: AtomicU64::new(0),
        })
    }

    /// The user's name and scopes if `password` is right.
    pub async fn verify(&self, user: &str, password: &[u8]) -> Option<(String, Vec<String>)> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("any key size");
        mac.update(user.as_bytes());
        mac.update(b":");
        mac.update(password);
        let cache_key: [u8; 32] = mac.finalize().into_bytes().into();
        let now = Instant::now();
        let known = self.users.get(user);
        if let (Some(u), Some(_)) = (known, self.cache.get(&cache_key, now)) {
            return Some((user.to_owned(), u.scopes.clone()));
        }
        let target = known.or(self.decoy.as_ref())?.clone();
        let ok = {
            let _permit = self.limit.acquire().await.ok()?;
            self.verifications.fetch_add(1, Ordering::Relaxed);
            let password = password.to_vec();
            let hash = target.hash.clone();
            tokio::task::spawn_blocking(move || verify_hash(&hash, &password))
                .await
                .unwrap_or(false)
        };
        if !ok || known.is_none() {
            return None;
        }
        if !self.cache_ttl.is_zero() {
            self.cache
                .insert(cache_key, user.to_owned(), now + self.cache_ttl, now);
        }
        Some((user.to_owned(), target.scopes.clone()))
    }

    /// Password hash verifications run so far (cache hits do not count).
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

fn verify_hash(hash: &str, password: &[u8]) -> bool {
    if hash.starts_with("$2") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else {
        PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password, &h)
                .is_ok()
        })
    }
}

fn load_htpasswd(path: &Path) -> Result<Vec<(String, String)>, CredentialFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| CredentialFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| CredentialFileError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                column: 1,
                message: "expected user:hash".into(),
            })?;
        super::identity::check_subject(user).map_err(|problem| CredentialFileError::UserName {
            path: path.to_owned(),
            line: i + 1,
            user: user.to_owned(),
            problem,
        })?;
        check_hash_format(hash).map_err(|problem| CredentialFileError::Hash {
            path: path.to_owned(),
            line: i + 1,
            user: user.to_owned(),
            problem,
        })?;
        out.push((user.to_owned(), hash.to_owned()));
    }
    Ok(out)
}
