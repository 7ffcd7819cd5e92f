//! JSON Web Tokens signed with the test keys in `test-support/data/` (RSA
//! pairs `rsa_*.pem` and `rsa2_*.pem`, an EC P-256 pair `ec_*.pem`), for
//! the auth tests and the benchmark's JWT row.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

/// The path of a file in `test-support/data/`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The contents of a file in `test-support/data/`.
pub fn read_data(name: &str) -> Vec<u8> {
    let p = data(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Now, in seconds since the Unix epoch (the unit of `exp`, `iat`, `nbf`).
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs `claims` with `header` and `key`.
pub fn sign(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("signing works")
}

/// The private half of the first RSA pair (`rsa_private.pem`).
pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_data("rsa_private.pem")).unwrap()
}

/// The private half of the second RSA pair (`rsa2_private.pem`).
pub fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read_data("rsa2_private.pem")).unwrap()
}

/// The private half of the EC P-256 pair (`ec_private.pem`).
pub fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read_data("ec_private.pem")).unwrap()
}

/// A header for `alg` with key id `kid`.
pub fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    h
}

/// An RS256 header with key id `kid`.
pub fn rs256(kid: Option<&str>) -> Header {
    header(Algorithm::RS256, kid)
}

/// A JWK Set document with the public halves of the given (kid, RSA key)
/// pairs.
pub fn jwks(keys: &[(&str, &EncodingKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| {
            let mut jwk = serde_json::to_value(
                jsonwebtoken::jwk::Jwk::from_encoding_key(k, Algorithm::RS256).unwrap(),
            )
            .unwrap();
            jwk["kid"] = Value::String((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}
