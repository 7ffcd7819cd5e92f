//! API keys, presented in a header or (if enabled) a query parameter. Only
//! the SHA-256 of each key is stored; a presented key is hashed and compared
//! with every stored hash in constant time (`subtle`), with no early exit,
//! so timing tells nothing about which stored hash came close.

#![forbid(unsafe_code)]

use std::path::Path;

use http::HeaderName;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::{
    AuthConfigError, CredentialFileError,
    config::{ApiKeyEntry, ApiKeysConfig},
};

/// The identity a key maps to.
#[derive(Clone, Debug)]
pub struct KeyIdentity {
    pub name: String,
    pub scopes: Vec<String>,
    pub rate_limit: Option<u32>,
    pub plan: Option<String>,
}

pub struct ApiKeys {
    pub header: HeaderName,
    pub query: Option<String>,
    hashes: Vec<[u8; 32]>,
    identities: Vec<KeyIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<ApiKeyEntry>,
}

impl ApiKeys {
    pub fn from_config(name: &str, c: &ApiKeysConfig) -> Result<Self, AuthConfigError> {
        let mut entries = c.keys.clone();
        if let Some(path) = &c.keys_file {
            entries.extend(load_keys_file(path).map_err(|e| AuthConfigError::Provider {
                provider: format!("api_keys.{name}"),
                message: e.to_string(),
            })?);
        }
        Ok(Self {
            header: c.header.0.clone(),
            query: c.query.clone(),
            hashes: entries.iter().map(|e| e.sha256.0).collect(),
            identities: entries
                .into_iter()
                .map(|e| KeyIdentity {
                    name: e.name,
                    scopes: e.scopes,
                    rate_limit: e.rate_limit,
                    plan: e.plan,
                })
                .collect(),
        })
    }

    /// The identity of `key`, if it is one of ours.
    pub fn lookup(&self, key: &[u8]) -> Option<&KeyIdentity> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, h) in self.hashes.iter().enumerate() {
            let eq = h.ct_eq(&digest);
            index.conditional_assign(&(i as u64), eq);
            found |= eq;
        }
        bool::from(found).then(|| &self.identities[index as usize])
    }
}

fn load_keys_file(path: &Path) -> Result<Vec<ApiKeyEntry>, CredentialFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| CredentialFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let file: KeysFile = toml::from_str(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset + 1, |i| offset - i);
        CredentialFileError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })?;
    for k in &file.keys {
        super::identity::check_subject(&k.name).map_err(|problem| {
            CredentialFileError::KeyName {
                path: path.to_owned(),
                name: k.name.clone(),
                problem,
            }
        })?;
    }
    Ok(file.keys)
}

/// Lowercase hex SHA-256 of a key, as stored in the config.
pub fn hash_key(key: &[u8]) -> String {
    Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of query parameter `name` (see [`same_param`]), percent-decoded
/// once; the first one if it is repeated (authentication refuses repeats
/// before this is asked).
pub fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query_params(query, name).into_iter().next()
}

/// Every value of query parameter `name` (see [`same_param`]), in order,
/// percent-decoded once (`+` is a space).
pub fn query_params(query: &str, name: &str) -> Vec<Vec<u8>> {
    crate::query::segments(query)
        .filter(|(_, pair)| same_param(param_name(pair), name))
        .map(|(_, pair)| percent_decode(pair.split_once('=').map_or("", |(_, v)| v)))
        .collect()
}

/// `query` without any parameter that [`same_param`] calls `name` (None if
/// nothing is left). The other parameters keep their bytes and the
/// separator in front of them.
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let mut out = String::with_capacity(query.len());
    for (sep, pair) in crate::query::segments(query) {
        if same_param(param_name(pair), name) {
            continue;
        }
        if !out.is_empty()
            && let Some(sep) = sep
        {
            out.push(sep);
        }
        out.push_str(pair);
    }
    (!out.is_empty()).then_some(out)
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// Whether the raw (still encoded) parameter name `raw` is the configured
/// `name` for some framework an upstream may run: compared after
/// percent-decoding once (`api%5Fkey`), ASCII case-insensitively (ASP.NET
/// Core's query collection), with an array suffix removed (`api_key[]`,
/// `api_key[0]` for PHP, Rack, Express `qs`) and with `.`, space and an
/// unmatched `[` read as `_` (PHP's name mangling: `api.key` is `api_key`).
pub fn same_param(raw: &str, name: &str) -> bool {
    let decoded = String::from_utf8_lossy(&percent_decode(raw)).into_owned();
    normalize(&decoded) == normalize(name)
}

fn normalize(name: &str) -> String {
    let base = match name.find('[') {
        Some(i) if name.ends_with(']') && i > 0 => &name[..i],
        _ => name,
    };
    base.chars()
        .map(|c| match c {
            '.' | ' ' | '[' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        assert_eq!(
            query_param("a=1&api_key=k%2By&b", "api_key").unwrap(),
            b"k+y"
        );
        assert_eq!(query_param("a=1", "api_key"), None);
        assert_eq!(
            strip_query_param("a=1&api_key=x&b=2", "api_key").unwrap(),
            "a=1&b=2"
        );
        assert_eq!(strip_query_param("api_key=x", "api_key"), None);
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(percent_decode("%41%"), b"A%");
        assert_eq!(percent_decode("%41"), b"A");
    }

    #[test]
    fn every_spelling_of_the_name_is_the_parameter() {
        for q in [
            "api_key=k",
            "api%5Fkey=k",
            "API_KEY=k",
            "api%5fKey=k",
            "api_key[]=k",
            "api_key[0]=k",
            "api.key=k",
            "api+key=k",
            "api%20key=k",
            "api[key=k",
        ] {
            assert_eq!(query_params(q, "api_key"), [b"k".to_vec()], "{q}");
            assert_eq!(strip_query_param(q, "api_key"), None, "{q}");
        }
        // Not the same parameter: double encoding is decoded once only,
        // as the upstream does.
        for q in [
            "api%255Fkey=k",
            "xapi_key=k",
            "api_keys=k",
            "[]=k",
            "api_key%00=k",
        ] {
            assert!(query_params(q, "api_key").is_empty(), "{q}");
        }
    }

    #[test]
    fn semicolons_separate_and_repeats_are_all_found() {
        assert_eq!(
            query_params("x=1;api_key=a&api_key=b", "api_key"),
            [b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            strip_query_param("x=1;api_key=a&y=2;api%5Fkey=b;z", "api_key").unwrap(),
            "x=1&y=2;z"
        );
        assert_eq!(
            strip_query_param("api_key=a;x=1", "api_key").unwrap(),
            "x=1"
        );
        assert_eq!(
            strip_query_param("a=1&&b=2", "api_key").unwrap(),
            "a=1&&b=2"
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
