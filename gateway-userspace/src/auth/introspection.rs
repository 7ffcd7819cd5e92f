//! OAuth2 token introspection (RFC 7662): the token is POSTed to the
//! configured endpoint with the gateway's client credentials (HTTP Basic).
//! The answer is read strictly: at most `max_answer_bytes`, a JSON object
//! with no repeated key at any depth (the request-body parser's rule: the
//! endpoint's JSON library may keep the first of two `active` keys while
//! serde_json keeps the last), a boolean `active`, and NumericDate (fractions
//! allowed) `exp`, `nbf` and `iat`. An active answer is accepted only if
//! `exp` is in the future, `nbf` and `iat` are not (beyond `leeway`), and the
//! configured `issuer`, `audiences` and `token_types` match. Verdicts are
//! cached until the token's `exp` (at most `cache_ttl`), refusals for
//! `negative_cache_ttl`, keyed by the SHA-256 of the token so the cache never
//! holds a token. An unreachable endpoint or an answer that breaks these
//! rules is an error (503), never an open door.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{
    AuthConfigError,
    cache::TtlCache,
    config::IntrospectionConfig,
    failure::TokenError,
    https::{FetchError, HttpsClient},
    numeric_date::{self, TimeError},
};

/// Nesting accepted in an answer (claims are flat; 32 leaves room for
/// nested custom claims).
const MAX_ANSWER_DEPTH: usize = 32;

/// The endpoint's verdict on a token.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Active and acceptable, with the answer's members (used as claims).
    Active(Map<String, Value>),
    /// Not active (expired, revoked, unknown).
    Inactive,
    /// Active, but not acceptable here: not yet valid, issued in the
    /// future, or another issuer, audience or token type.
    Refused(TokenError),
}

/// What is wrong with an `[auth.introspection.NAME]` provider's settings:
/// the config's to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionConfigError {
    /// `issuer = ""`.
    #[error("issuer must not be empty (leave it out to accept any)")]
    EmptyIssuer,
    /// An empty audience.
    #[error("audiences must not contain an empty audience")]
    EmptyAudience,
    /// A token type that is empty or not printable ASCII.
    #[error("token_types must be non-empty printable ASCII names")]
    TokenTypes,
    /// `leeway` above 5 minutes.
    #[error("leeway above 5m is not accepted")]
    Leeway,
    /// `max_answer_bytes` outside 1 KiB..=1 MiB.
    #[error("max_answer_bytes must be 1024-1048576")]
    MaxAnswerBytes,
}

/// Checks a provider's settings while the config is parsed.
pub fn validate_config(c: &IntrospectionConfig) -> Result<(), IntrospectionConfigError> {
    if c.issuer.as_deref().is_some_and(str::is_empty) {
        return Err(IntrospectionConfigError::EmptyIssuer);
    }
    if c.audiences.iter().any(String::is_empty) {
        return Err(IntrospectionConfigError::EmptyAudience);
    }
    if c.token_types.iter().any(|t| {
        t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(IntrospectionConfigError::TokenTypes);
    }
    if c.leeway.get() > Duration::from_secs(300) {
        return Err(IntrospectionConfigError::Leeway);
    }
    if !(1024..=1 << 20).contains(&c.max_answer_bytes) {
        return Err(IntrospectionConfigError::MaxAnswerBytes);
    }
    Ok(())
}

/// What an active answer must also say.
struct Expect {
    issuer: Option<String>,
    audiences: Vec<String>,
    token_types: Vec<String>,
    leeway: f64,
}

pub struct Introspector {
    endpoint: http::Uri,
    /// `Basic base64(urlencode(id):urlencode(secret))`, never logged.
    authorization: http::HeaderValue,
    client: HttpsClient,
    cache: TtlCache<[u8; 32], Verdict>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    max_answer_bytes: usize,
    expect: Expect,
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
            client: HttpsClient::new(c.ca_file.as_deref(), c.timeout.get())
                .map_err(|e| err(e.to_string()))?
                .with_max_body(c.max_answer_bytes),
            cache: TtlCache::new(c.cache_size),
            cache_ttl: c.cache_ttl.get(),
            negative_ttl: c.negative_cache_ttl.get(),
            max_answer_bytes: c.max_answer_bytes,
            expect: Expect {
                issuer: c.issuer.clone(),
                audiences: c.audiences.clone(),
                token_types: c.token_types.clone(),
                leeway: c.leeway.as_secs_f64(),
            },
        })
    }

    /// The verdict for `token`, from the cache or the endpoint. `Err` means
    /// the endpoint could not be asked or answered nonsense (the message
    /// never contains the token or the answer).
    pub async fn introspect(&self, token: &str) -> Result<Verdict, IntrospectionError> {
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
            .map_err(IntrospectionError::Request)?;
        let answer = self.client.send(req).await?;
        if answer.len() > self.max_answer_bytes {
            return Err(IntrospectionError::Answer(format!(
                "answer larger than {} bytes",
                self.max_answer_bytes
            )));
        }
        let (verdict, exp) = judge(&answer, &self.expect, numeric_date::now())?;
        let ttl = match (&verdict, exp) {
            (Verdict::Active(_), Some(exp)) => {
                let left = (exp - numeric_date::now()).max(0.0);
                self.cache_ttl.min(Duration::from_secs_f64(left.min(1e9)))
            }
            (Verdict::Active(_), None) => self.cache_ttl,
            // Not yet valid: it may become valid before a negative entry expires.
            (Verdict::Refused(TokenError::NotYetValid), _) => Duration::ZERO,
            (Verdict::Inactive | Verdict::Refused(_), _) => self.negative_ttl,
        };
        if !ttl.is_zero() {
            self.cache.insert(key, verdict.clone(), now + ttl, now);
        }
        Ok(verdict)
    }
}

/// Why the endpoint gave no verdict (for the log: never the token or the
/// answer). The request then fails as `provider_unavailable` (503).
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    /// The request could not be built (the gateway's side: an endpoint or
    /// credential the `http` crate refuses).
    #[error("{0}")]
    Request(http::Error),
    /// The endpoint could not be reached, timed out or answered with an
    /// error status (the endpoint's or the network's side).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The endpoint answered something that is not an RFC 7662 answer:
    /// too large, not strict JSON, no boolean `active`, a time claim that
    /// is not a NumericDate (the endpoint's side).
    #[error("{0}")]
    Answer(String),
}

/// Reads one answer at time `now` (a NumericDate): the verdict and, for an
/// active answer, its `exp`. `Err` for an answer that is not a strict JSON
/// object with a boolean `active` and numeric time claims.
fn judge(
    answer: &[u8],
    expect: &Expect,
    now: f64,
) -> Result<(Verdict, Option<f64>), IntrospectionError> {
    let bad = |m: String| IntrospectionError::Answer(m);
    let value = crate::validate::parse_strict(answer, MAX_ANSWER_DEPTH)
        .map_err(|r| bad(format!("answer is not strict JSON ({})", r.reason())))?;
    let Value::Object(answer) = value else {
        return Err(bad("answer is not a JSON object".into()));
    };
    let active = answer
        .get("active")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("answer has no boolean `active`".into()))?;
    if !active {
        return Ok((Verdict::Inactive, None));
    }
    let exp = match numeric_date::check(&answer, now, 0.0, expect.leeway) {
        Ok(exp) => exp,
        Err(TimeError::Malformed(claim)) => {
            return Err(bad(format!("`{claim}` is not a NumericDate")));
        }
        Err(TimeError::Expired) => return Ok((Verdict::Inactive, None)),
        Err(TimeError::NotYetValid) => {
            return Ok((Verdict::Refused(TokenError::NotYetValid), None));
        }
        Err(TimeError::IssuedInFuture) => {
            return Ok((Verdict::Refused(TokenError::IssuedInFuture), None));
        }
    };
    if let Some(issuer) = &expect.issuer
        && answer.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Ok((Verdict::Refused(TokenError::WrongIssuer), None));
    }
    if !expect.audiences.is_empty() {
        let matches = |a: &Value| {
            a.as_str()
                .is_some_and(|a| expect.audiences.iter().any(|e| e == a))
        };
        let ok = match answer.get("aud") {
            Some(Value::String(_)) => matches(&answer["aud"]),
            Some(Value::Array(list)) => list.iter().any(matches),
            _ => false,
        };
        if !ok {
            return Ok((Verdict::Refused(TokenError::WrongAudience), None));
        }
    }
    if !expect.token_types.is_empty() {
        let ok = answer
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| expect.token_types.iter().any(|e| e.eq_ignore_ascii_case(t)));
        if !ok {
            return Ok((Verdict::Refused(TokenError::NotAccepted), None));
        }
    }
    Ok((Verdict::Active(answer), exp))
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
    use super::*;

    #[test]
    fn form_encoding() {
        assert_eq!(super::form_encode("a b+c/=é"), "a+b%2Bc%2F%3D%C3%A9");
    }

    fn expect() -> Expect {
        Expect {
            issuer: Some("https://idp.test".into()),
            audiences: vec!["api".into()],
            token_types: vec!["Bearer".into()],
            leeway: 30.0,
        }
    }

    fn verdict(answer: &str) -> Result<&'static str, IntrospectionError> {
        let now = 1_000_000.0;
        let judged = judge(answer.as_bytes(), &expect(), now);
        judged.map(|(v, _)| match v {
            Verdict::Active(_) => "active",
            Verdict::Inactive => "inactive",
            Verdict::Refused(TokenError::NotYetValid) => "not_yet_valid",
            Verdict::Refused(TokenError::IssuedInFuture) => "issued_in_future",
            Verdict::Refused(TokenError::WrongIssuer) => "wrong_issuer",
            Verdict::Refused(TokenError::WrongAudience) => "wrong_audience",
            Verdict::Refused(TokenError::NotAccepted) => "wrong_type",
            Verdict::Refused(_) => "other",
        })
    }

    const OK: &str = r#""iss":"https://idp.test","aud":"api","token_type":"bearer","sub":"a""#;

    #[test]
    fn answers() {
        let a = |extra: &str| format!(r#"{{"active":true,{OK}{extra}}}"#);
        assert_eq!(verdict(&a("")).ok(), Some("active"));
        assert_eq!(
            verdict(&a(r#","exp":1000600.5,"nbf":999999.5,"iat":1000010"#)).ok(),
            Some("active")
        );
        assert_eq!(verdict(&a(r#","exp":999999.9"#)).ok(), Some("inactive"));
        assert_eq!(verdict(&a(r#","nbf":1000031"#)).ok(), Some("not_yet_valid"));
        assert_eq!(verdict(&a(r#","nbf":1000029.5"#)).ok(), Some("active"));
        assert_eq!(
            verdict(&a(r#","iat":1000100"#)).ok(),
            Some("issued_in_future")
        );
        assert_eq!(verdict(r#"{"active":false}"#).ok(), Some("inactive"));
        // Duplicates at any depth, in any order, escaped or not.
        for dup in [
            r#"{"active":false,"active":true,"sub":"a"}"#,
            r#"{"active":true,"active":false}"#,
            r#"{"active":true,"sub":"a","\u0073ub":"b"}"#,
            r#"{"active":true,"ext":{"role":"user","role":"admin"}}"#,
        ] {
            assert!(
                verdict(dup)
                    .unwrap_err()
                    .to_string()
                    .contains("duplicate_key"),
                "{dup}"
            );
        }
        for broken in [
            r#"[]"#,
            r#"{"active":"true"}"#,
            r#"{"sub":"a"}"#,
            r#"{"active":true,"exp":"1000600"}"#,
            r#"{"active":true,"exp":1e400}"#,
            r#"{"active":true} trailing"#,
        ] {
            assert!(verdict(broken).is_err(), "{broken}");
        }
        let wrong = |m: &str, to: &str| a("").replace(m, to);
        assert_eq!(
            verdict(&wrong("https://idp.test", "https://evil.test")).ok(),
            Some("wrong_issuer")
        );
        assert_eq!(
            verdict(&wrong(r#""iss":"https://idp.test","#, "")).ok(),
            Some("wrong_issuer")
        );
        assert_eq!(
            verdict(&wrong(r#""aud":"api""#, r#""aud":["x","api"]"#)).ok(),
            Some("active")
        );
        assert_eq!(
            verdict(&wrong(r#""aud":"api""#, r#""aud":["x"]"#)).ok(),
            Some("wrong_audience")
        );
        assert_eq!(
            verdict(&wrong(r#""aud":"api""#, r#""aud":"apix""#)).ok(),
            Some("wrong_audience")
        );
        assert_eq!(
            verdict(&wrong(r#""aud":"api","#, "")).ok(),
            Some("wrong_audience")
        );
        assert_eq!(
            verdict(&wrong("bearer", "refresh_token")).ok(),
            Some("wrong_type")
        );
        assert_eq!(
            verdict(&wrong(r#""token_type":"bearer","#, "")).ok(),
            Some("wrong_type")
        );
    }
}
