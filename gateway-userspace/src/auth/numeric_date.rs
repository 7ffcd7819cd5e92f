//! The time claims `exp`, `nbf` and `iat` as RFC 7519 §2 NumericDates:
//! seconds since the epoch as a JSON number, fractions allowed
//! (`1700000000.5`). Shared by JWT verification and introspection answers,
//! so both read the same values the same way.

#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Why the time claims do not allow the token now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeError {
    /// The named claim is present but not a finite JSON number.
    Malformed(&'static str),
    /// `exp` is at or before now (minus the leeway).
    Expired,
    /// `nbf` is after now (plus the leeway).
    NotYetValid,
    /// `iat` is after now (plus the leeway).
    IssuedInFuture,
}

/// The current time as a NumericDate (with sub-second precision).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Claim `name` as a NumericDate: `Ok(None)` if absent, an error if it is
/// not a finite number (a string, `null`, `1e400`...).
pub fn read(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, TimeError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or(TimeError::Malformed(name)),
    }
}

/// Checks `exp` (valid while `now < exp + exp_leeway`), `nbf` (valid once
/// `nbf <= now + leeway`) and `iat` (not after `now + leeway`), each when
/// present. Leeways are in seconds. Returns `exp` if present.
pub fn check(
    claims: &Map<String, Value>,
    now: f64,
    exp_leeway: f64,
    leeway: f64,
) -> Result<Option<f64>, TimeError> {
    let exp = read(claims, "exp")?;
    let nbf = read(claims, "nbf")?;
    let iat = read(claims, "iat")?;
    if exp.is_some_and(|exp| exp + exp_leeway <= now) {
        return Err(TimeError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(TimeError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(TimeError::IssuedInFuture);
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn fractions_and_bounds() {
        let now = 1_000_000.0;
        let c = claims(r#"{"exp":1000600.5,"nbf":999999.25,"iat":1000000}"#);
        assert_eq!(check(&c, now, 0.0, 0.0), Ok(Some(1_000_600.5)));
        // exp: strictly after now.
        let c = claims(r#"{"exp":1000000}"#);
        assert_eq!(check(&c, now, 0.0, 0.0), Err(TimeError::Expired));
        assert_eq!(check(&c, now, 30.0, 0.0), Ok(Some(now)));
        let c = claims(r#"{"exp":999999.999}"#);
        assert_eq!(check(&c, now, 0.0, 0.0), Err(TimeError::Expired));
        // nbf with and without leeway.
        let c = claims(r#"{"nbf":1000010.5}"#);
        assert_eq!(check(&c, now, 0.0, 10.0), Err(TimeError::NotYetValid));
        assert_eq!(check(&c, now, 0.0, 30.0), Ok(None));
        let c = claims(r#"{"iat":1000031}"#);
        assert_eq!(check(&c, now, 0.0, 30.0), Err(TimeError::IssuedInFuture));
        for bad in [
            r#"{"exp":"1000600"}"#,
            r#"{"exp":null}"#,
            r#"{"nbf":true}"#,
            r#"{"iat":[1]}"#,
            r#"{"exp":1e400}"#,
        ] {
            assert!(
                matches!(
                    check(&claims(bad), now, 0.0, 0.0),
                    Err(TimeError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
