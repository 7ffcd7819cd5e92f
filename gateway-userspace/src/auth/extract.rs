//! Reading credentials out of a request (Authorization Bearer or Basic, an
//! API key header or query parameter) and scopes and header values out of
//! claims. Malformed input is a failure, never a guess: two Authorization
//! headers, non-ASCII bytes or bad base64 end the request with 400.

#![forbid(unsafe_code)]

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, header::AUTHORIZATION};
use serde_json::{Map, Value};

use super::failure::{AuthFailure, Scheme, TokenError};

/// The single Authorization header, if any.
fn authorization<'a>(
    headers: &'a HeaderMap,
    realm: &str,
    scheme: Scheme,
) -> Result<Option<&'a str>, AuthFailure> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    let bad = || AuthFailure::InvalidRequest {
        realm: realm.to_owned(),
        scheme,
    };
    if all.next().is_some() {
        return Err(bad());
    }
    first.to_str().map(Some).map_err(|_| bad())
}

/// `(scheme, rest)` of an Authorization value, scheme case-insensitive.
fn split_scheme<'a>(value: &'a str, want: &str) -> Option<&'a str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case(want).then(|| rest.trim())
}

/// The bearer token. No Authorization, or another scheme, is `Missing`.
pub fn bearer<'a>(headers: &'a HeaderMap, realm: &str, max: usize) -> Result<&'a str, AuthFailure> {
    let missing = || AuthFailure::Missing {
        realm: realm.to_owned(),
        schemes: vec![Scheme::Bearer],
    };
    let value = authorization(headers, realm, Scheme::Bearer)?.ok_or_else(missing)?;
    let token = split_scheme(value, "Bearer").ok_or_else(missing)?;
    if token.is_empty() || token.contains(' ') {
        return Err(AuthFailure::InvalidRequest {
            realm: realm.to_owned(),
            scheme: Scheme::Bearer,
        });
    }
    if token.len() > max {
        return Err(AuthFailure::InvalidToken {
            realm: realm.to_owned(),
            cause: TokenError::TooLarge,
        });
    }
    Ok(token)
}

/// `(user, password)` from `Authorization: Basic`.
pub fn basic(
    headers: &HeaderMap,
    realm: &str,
    max: usize,
) -> Result<(String, Vec<u8>), AuthFailure> {
    let missing = || AuthFailure::Missing {
        realm: realm.to_owned(),
        schemes: vec![Scheme::Basic],
    };
    let bad = || AuthFailure::InvalidRequest {
        realm: realm.to_owned(),
        scheme: Scheme::Basic,
    };
    let value = authorization(headers, realm, Scheme::Basic)?.ok_or_else(missing)?;
    let encoded = split_scheme(value, "Basic").ok_or_else(missing)?;
    if encoded.len() > max {
        return Err(AuthFailure::InvalidCredentials {
            realm: realm.to_owned(),
            scheme: Scheme::Basic,
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let user = String::from_utf8(decoded[..colon].to_vec()).map_err(|_| bad())?;
    Ok((user, decoded[colon + 1..].to_vec()))
}

/// The single value of header `name`, if present.
pub fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    realm: &str,
) -> Result<Option<&'a [u8]>, AuthFailure> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(AuthFailure::InvalidRequest {
            realm: realm.to_owned(),
            scheme: Scheme::ApiKey,
        });
    }
    Ok(Some(first.as_bytes()))
}

/// Scopes from `claim` (space-separated string or array of strings), or by
/// default from `scope`, then `scp`.
pub fn scopes(claims: &Map<String, Value>, claim: Option<&str>) -> Vec<String> {
    let value = match claim {
        Some(c) => claims.get(c),
        None => claims.get("scope").or_else(|| claims.get("scp")),
    };
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim as a header value: strings as they are, numbers and booleans
/// printed, arrays of strings joined with spaces. `None` if absent or not
/// representable (control characters, objects).
pub fn claim_header_value(claims: &Map<String, Value>, claim: &str) -> Option<HeaderValue> {
    let text = match claims.get(claim)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?
            .join(" "),
        _ => return None,
    };
    // Only visible ASCII and spaces: no CR/LF smuggling, no obs-text.
    if text.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        HeaderValue::from_str(&text).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_extraction() {
        let h = headers(&[("authorization", "bearer abc.def.ghi")]);
        assert_eq!(bearer(&h, "r", 100).unwrap(), "abc.def.ghi");
        let h = headers(&[("authorization", "Basic eDp5")]);
        assert_eq!(
            bearer(&h, "r", 100).unwrap_err().reason(),
            "missing_credentials"
        );
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(bearer(&h, "r", 100).unwrap_err().status(), 400);
        let h = headers(&[("authorization", "Bearer aaaaaaaaaa")]);
        assert_eq!(bearer(&h, "r", 5).unwrap_err().reason(), "invalid_token");
    }

    #[test]
    fn basic_extraction() {
        // "alice:pa:ss"
        let h = headers(&[("authorization", "Basic YWxpY2U6cGE6c3M=")]);
        assert_eq!(
            basic(&h, "r", 100).unwrap(),
            ("alice".into(), b"pa:ss".to_vec())
        );
        let h = headers(&[("authorization", "Basic !!!")]);
        assert_eq!(basic(&h, "r", 100).unwrap_err().status(), 400);
    }

    #[test]
    fn scopes_and_claim_values() {
        let c: Map<String, Value> = serde_json::from_str(
            r#"{"scope":"a b","scp":["x"],"roles":["admin"],"n":5,"evil":"x\r\ny"}"#,
        )
        .unwrap();
        assert_eq!(scopes(&c, None), ["a", "b"]);
        assert_eq!(scopes(&c, Some("roles")), ["admin"]);
        assert_eq!(claim_header_value(&c, "n").unwrap(), "5");
        assert_eq!(claim_header_value(&c, "evil"), None);
    }
}
