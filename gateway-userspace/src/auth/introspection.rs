//! OAuth2 token introspection (RFC 7662): the token is POSTed to the
//! configured endpoint with the gateway's client credentials (HTTP Basic).
//! `active`, `exp` and `scope` are honoured. Active answers are cached until
//! the token's `exp` (at most `cache_ttl`), inactive ones for
//! `negative_cache_ttl`, keyed by the SHA-256 of the token so the cache never
//! holds a token. An unreachable or broken endpoint is an error (503), never
//! an open door.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hyper::body::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{AuthConfigError, cache::TtlCache, config::IntrospectionConfig, https::HttpsClient};

/// The endpoint's verdict on a token.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Active, with the answer's members (used as claims).
    Active(Map<String, Value>),
    /// Not active (expired, revoked, unknown).
    Inactive,
}

pub struct Introspector {
    endpoint: http::Uri,
    /// `Basic base64(urlencode(id):urlencode(secret))`, never logged.
    authorization: http::HeaderValue,
    client: HttpsClient,
    cache: TtlCache<[u8; 32], Verdict>,
    cache_ttl: Duration,
    negative_ttl: Duration,
}

impl Introspector {
    pub fn from_config(name: &str, c: &IntrospectionConfig) -> Result<Self, AuthConfigError> {
        let err = |message: String| AuthConfigError::Provider {
            provider: format!("introspection.{name}"),
            message,
        };
        let secret = match (&c.client_secret, &c.client_secret_file) {
            (Some(s), _) => s.0.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => return Err(err("no client secret".into())),
        };
        let pair = format!("{}:{}", form_encode(&c.client_id), form_encode(&secret));
        let mut authorization = http::HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
        .map_err(|_| err("client credentials do not fit in a header".into()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            endpoint: c.endpoint.0.clone(),
            authorization,
            client: HttpsClient::new(c.ca_file.as_deref(), c.timeout).map_err(err)?,
            cache: TtlCache::new(c.cache_size),
            cache_ttl: c.cache_ttl,
            negative_ttl: c.negative_cache_ttl,
        })
    }

    /// The verdict for `token`, from the cache or the endpoint. `Err` means
    /// the endpoint could not be asked or answered nonsense.
    pub async fn introspect(&self, token: &str) -> Result<Verdict, String> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(v) = self.cache.get(&key, now) {
            return Ok(v);
        }
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let req = http::Request::post(self.endpoint.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::from(body))
            .map_err(|e| e.to_string())?;
        let answer = self.client.send(req).await.map_err(|e| e.to_string())?;
        let answer: Map<String, Value> = serde_json::from_slice(&answer)
            .map_err(|_| "answer is not a JSON object".to_owned())?;
        let active = answer
            .get("active")
            .and_then(Value::as_bool)
            .ok_or("answer has no boolean `active`")?;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = match answer.get("exp") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or("`exp` is not a number")?),
        };
        let verdict = if active && exp.is_none_or(|e| e > now_unix) {
            Verdict::Active(answer)
        } else {
            Verdict::Inactive
        };
        let ttl = match (&verdict, exp) {
            (Verdict::Active(_), Some(e)) => self.cache_ttl.min(Duration::from_secs(e - now_unix)),
            (Verdict::Active(_), None) => self.cache_ttl,
            (Verdict::Inactive, _) => self.negative_ttl,
        };
        if !ttl.is_zero() {
            self.cache.insert(key, verdict.clone(), now + ttl, now);
        }
        Ok(verdict)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encoding() {
        assert_eq!(super::form_encode("a b+c/=é"), "a+b%2Bc%2F%3D%C3%A9");
    }
}
