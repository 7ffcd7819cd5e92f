//! JWT policies with static keys: claim validation, algorithm pinning and
//! confusion, ignored key-carrying headers, scopes, identity headers,
//! problem bodies and the brute-force limit.

mod auth_support;

use std::sync::{Arc, Mutex};

use auth_support::*;
use base64::Engine as _;
use gateway::auth::{AuthFailure, AuthMethod, Authenticator, TokenError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

fn config(extra: &str) -> String {
    format!(
        r#"
[auth.jwt.corp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256"]
public_key_files = [{{ path = "{pub_key}", kid = "k1" }}]

[auth.policies.users]
type = "jwt"
providers = ["corp"]
headers = {{ "x-user-id" = "sub", "x-user-email" = "email" }}
strip_credential = true

[auth.policies.writers]
type = "jwt"
providers = ["corp"]
scopes = ["write", "admin"]
scope_match = "any"

[auth.policies.admins]
type = "jwt"
providers = ["corp"]
scopes = ["write", "admin"]

[auth.policies.public]
type = "none"
{extra}
"#,
        pub_key = data("rsa_public.pem").display()
    )
}

fn auth() -> Authenticator {
    authenticator(&config(""))
}

async fn cause(a: &Authenticator, token: &str) -> TokenError {
    match a.authenticate("users", &bearer(token), CLIENT).await {
        Err(f @ AuthFailure::InvalidToken { cause, .. }) => {
            assert_eq!(f.status(), 401);
            let www = f.www_authenticate().unwrap();
            assert!(
                www.to_str()
                    .unwrap()
                    .starts_with("Bearer realm=\"gateway\", error=\"invalid_token\""),
                "{www:?}"
            );
            assert_problem_without(&f, token);
            cause
        }
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    if v.is_null() {
        c.as_object_mut().unwrap().remove(key);
    } else {
        c[key] = v;
    }
    c
}

#[tokio::test]
async fn valid_token_gives_identity_and_headers() {
    let a = auth();
    let token = sign(rs256(Some("k1")), &claims(), &rsa_key());
    let mut req = request(
        "/x",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "forged-admin"),
            ("x-user-email", "forged@evil.test"),
        ],
    );
    let id = a.authenticate("users", &req, CLIENT).await.unwrap();
    assert_eq!(id.subject, "user-42");
    assert_eq!(
        id.method,
        AuthMethod::Jwt {
            issuer: "corp".into()
        }
    );
    assert_eq!(id.scopes, ["read", "write"]);
    a.apply_identity(&id, &mut req);
    let ids: Vec<_> = req.headers.get_all("x-user-id").iter().collect();
    assert_eq!(ids, ["user-42"], "forged copy removed");
    assert_eq!(req.headers["x-user-email"], "u42@example.test");
    assert!(
        req.headers.get("authorization").is_none(),
        "credential stripped"
    );

    // A public route still drops forged identity headers.
    let mut req = request("/", &[("x-user-id", "forged")]);
    let id = a.authenticate("public", &req, CLIENT).await.unwrap();
    a.apply_identity(&id, &mut req);
    assert!(req.headers.get("x-user-id").is_none());
}

#[tokio::test]
async fn time_issuer_and_audience_claims_are_enforced() {
    let a = auth();
    let k = rsa_key();
    let h = || rs256(Some("k1"));
    let t = |c: Value| sign(h(), &c, &k);
    assert_eq!(
        cause(&a, &t(with(claims(), "exp", (now() - 3600).into()))).await,
        TokenError::Expired
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "exp", Value::Null))).await,
        TokenError::MissingClaim
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "nbf", (now() + 3600).into()))).await,
        TokenError::NotYetValid
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "iat", (now() + 3600).into()))).await,
        TokenError::IssuedInFuture
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "iss", "https://evil.test".into()))).await,
        TokenError::UnknownIssuer
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "iss", Value::Null))).await,
        TokenError::UnknownIssuer
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "aud", "other".into()))).await,
        TokenError::WrongAudience
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "aud", Value::Null))).await,
        TokenError::MissingClaim
    );
    assert_eq!(
        cause(&a, &t(with(claims(), "sub", Value::Null))).await,
        TokenError::MissingClaim
    );
    // Within the 30 s leeway is fine.
    let ok = t(with(claims(), "nbf", (now() + 10).into()));
    assert!(a.authenticate("users", &bearer(&ok), CLIENT).await.is_ok());
    // Audience as an array containing ours is fine.
    let ok = t(with(claims(), "aud", serde_json::json!(["x", "api"])));
    assert!(a.authenticate("users", &bearer(&ok), CLIENT).await.is_ok());
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn algorithm_attacks_are_rejected() {
    let a = auth();
    // alg: none, no signature.
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    assert_eq!(cause(&a, &none).await, TokenError::AlgorithmNotAllowed);

    // Algorithm confusion: HS256 "signed" with the RSA public key PEM as secret.
    let public_pem = std::fs::read(data("rsa_public.pem")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = sign(h, &claims(), &EncodingKey::from_secret(&public_pem));
    assert_eq!(cause(&a, &confused).await, TokenError::AlgorithmNotAllowed);

    // A correctly signed token with an algorithm not in the pinned list.
    let mut h = Header::new(Algorithm::RS512);
    h.kid = Some("k1".into());
    let rs512 = sign(h, &claims(), &rsa_key());
    assert_eq!(cause(&a, &rs512).await, TokenError::AlgorithmNotAllowed);

    // Signed by the attacker's key, with that key embedded (jwk) or linked (jku).
    let attacker = rsa2_key();
    let mut h = rs256(Some("k1"));
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap();
    h.jwk = Some(jwk);
    h.jku = Some("https://evil.test/jwks.json".into());
    h.x5u = Some("https://evil.test/cert.pem".into());
    assert_eq!(
        cause(&a, &sign(h, &claims(), &attacker)).await,
        TokenError::BadSignature
    );
    let mut h = rs256(None);
    h.jwk = Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::RS256).unwrap());
    assert_eq!(
        cause(&a, &sign(h, &claims(), &attacker)).await,
        TokenError::BadSignature
    );

    // Unknown kid, unknown crit, garbage, oversized.
    assert_eq!(
        cause(&a, &sign(rs256(Some("nope")), &claims(), &rsa_key())).await,
        TokenError::UnknownKey
    );
    let mut h = rs256(Some("k1"));
    h.crit = Some(vec!["exp-policy".into()]);
    assert_eq!(
        cause(&a, &sign(h, &claims(), &rsa_key())).await,
        TokenError::UnsupportedCrit
    );
    assert_eq!(cause(&a, "a.b.c").await, TokenError::Malformed);
    let huge = "a".repeat(9000);
    assert_eq!(cause(&a, &huge).await, TokenError::TooLarge);
}

#[tokio::test]
async fn hmac_issuer_only_takes_hmac_and_checks_secret() {
    let dir = TempDir::new();
    let secret = dir.write("hs.key", &[7u8; 32]);
    let toml = format!(
        r#"
[auth.jwt.internal]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["HS256"]
hmac_secret_files = [{{ path = "{}" }}]
[auth.policies.users]
type = "jwt"
providers = ["internal"]
"#,
        secret.display()
    );
    let a = authenticator(&toml);
    let good = sign(
        Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&[7u8; 32]),
    );
    assert!(
        a.authenticate("users", &bearer(&good), CLIENT)
            .await
            .is_ok()
    );
    let bad = sign(
        Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&[8u8; 32]),
    );
    assert_eq!(cause(&a, &bad).await, TokenError::BadSignature);
    // An RS256 token is not accepted by an HMAC issuer.
    assert_eq!(
        cause(&a, &sign(rs256(None), &claims(), &rsa_key())).await,
        TokenError::AlgorithmNotAllowed
    );

    // Mixing HS* with public keys is a config error, as is a short secret.
    let mixed = toml.replace(r#"["HS256"]"#, r#"["HS256", "RS256"]"#);
    let e = gateway::config::Config::parse(&mixed, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be mixed"), "{e}");
    let short = dir.write("short.key", b"tooshort");
    let e = Authenticator::from_config(&parse_auth(
        &toml.replace(&secret.display().to_string(), &short.display().to_string()),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("shorter than 32 bytes"), "{e}");
}

#[tokio::test]
async fn scopes_all_and_any_give_403_with_challenge() {
    let a = auth();
    let read_only = sign(
        rs256(Some("k1")),
        &with(claims(), "scope", "read".into()),
        &rsa_key(),
    );
    for policy in ["writers", "admins"] {
        let f = a
            .authenticate(policy, &bearer(&read_only), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 403);
        assert_eq!(
            f.www_authenticate().unwrap(),
            "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"write admin\""
        );
        assert_problem_without(&f, &read_only);
    }
    // "read write": any-of passes, all-of (write AND admin) does not.
    let rw = sign(rs256(Some("k1")), &claims(), &rsa_key());
    assert!(
        a.authenticate("writers", &bearer(&rw), CLIENT)
            .await
            .is_ok()
    );
    assert_eq!(
        a.authenticate("admins", &bearer(&rw), CLIENT)
            .await
            .unwrap_err()
            .status(),
        403
    );
    // scp as an array works too.
    let scp = with(
        with(claims(), "scope", Value::Null),
        "scp",
        serde_json::json!(["write", "admin"]),
    );
    let t = sign(rs256(Some("k1")), &scp, &rsa_key());
    assert!(a.authenticate("admins", &bearer(&t), CLIENT).await.is_ok());
}

#[tokio::test]
async fn missing_credentials_get_bare_challenge_and_unknown_policy_500() {
    let a = auth();
    let f = a
        .authenticate("users", &request("/", &[]), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 401);
    assert_eq!(f.www_authenticate().unwrap(), "Bearer realm=\"gateway\"");
    let f = a
        .authenticate("nope", &request("/", &[]), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 500);
    assert!(a.has_policy("users") && !a.has_policy("nope"));
}

#[tokio::test]
async fn repeated_bad_tokens_trip_the_brute_force_limit() {
    let toml = config("[auth.brute_force]\nmax_failures = 3\nwindow = \"1m\"\n");
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    let a = authenticator(&toml).with_abuse_hook(Arc::new(move |rep| r.lock().unwrap().push(rep)));
    let good = sign(rs256(Some("k1")), &claims(), &rsa_key());
    // Missing credentials do not count.
    for _ in 0..5 {
        let f = a
            .authenticate("users", &request("/", &[]), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 401);
    }
    for _ in 0..3 {
        let f = a
            .authenticate("users", &bearer("x.y.z"), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 401);
    }
    // Now even a good token from that source gets 429 with Retry-After.
    let f = a
        .authenticate("users", &bearer(&good), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 429);
    let retry = f.retry_after().unwrap().as_secs();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(reports.lock().unwrap().len(), 1);
    assert_eq!(reports.lock().unwrap()[0].source, CLIENT);
    // Another source is unaffected.
    let other = "198.51.100.1".parse().unwrap();
    assert!(a.authenticate("users", &bearer(&good), other).await.is_ok());
}

#[tokio::test]
async fn keys_are_typed_by_family_within_one_issuer() {
    let toml = format!(
        r#"
[auth.jwt.corp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
public_key_files = [{{ path = "{rsa}", kid = "r" }}, {{ path = "{ec}", kid = "e" }}]
[auth.policies.users]
type = "jwt"
providers = ["corp"]
"#,
        rsa = data("rsa_public.pem").display(),
        ec = data("ec_public.pem").display(),
    );
    let a = authenticator(&toml);
    let ec_key = EncodingKey::from_ec_pem(&std::fs::read(data("ec_private.pem")).unwrap()).unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("e".into());
    let r = a
        .authenticate("users", &bearer(&sign(h, &claims(), &ec_key)), CLIENT)
        .await;
    assert!(r.is_ok(), "{r:?}");
    // An ES256 token naming the RSA key's kid finds no EC key under it.
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("r".into());
    assert_eq!(
        cause(&a, &sign(h, &claims(), &ec_key)).await,
        TokenError::UnknownKey
    );
    // Without kid the issuer has one key per family, so the family decides.
    assert!(
        a.authenticate(
            "users",
            &bearer(&sign(rs256(None), &claims(), &rsa_key())),
            CLIENT
        )
        .await
        .is_ok()
    );
}

/// Every family accepted with a good token and refused with a bad
/// signature: PS256 (RSA-PSS) and EdDSA beside the RS256/ES256 above.
#[tokio::test]
async fn pss_and_eddsa_families_verify_and_reject_bad_signatures() {
    let dir = TempDir::new();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_pub = dir.write("ed_public.pem", ed.public_key_pem().as_bytes());
    let toml = format!(
        r#"
[auth.jwt.pss]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["PS256"]
public_key_files = [{{ path = "{rsa}", kid = "p" }}]
[auth.jwt.ed]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["EdDSA"]
public_key_files = [{{ path = "{ed}", kid = "d" }}]
[auth.policies.pss]
type = "jwt"
providers = ["pss"]
[auth.policies.ed]
type = "jwt"
providers = ["ed"]
"#,
        rsa = data("rsa_public.pem").display(),
        ed = ed_pub.display(),
    );
    let a = authenticator(&toml);
    let mut h = Header::new(Algorithm::PS256);
    h.kid = Some("p".into());
    let good = sign(h.clone(), &claims(), &rsa_key());
    assert!(a.authenticate("pss", &bearer(&good), CLIENT).await.is_ok());
    let forged = sign(h, &claims(), &rsa2_key());
    assert!(
        a.authenticate("pss", &bearer(&forged), CLIENT)
            .await
            .is_err()
    );

    let ed_key = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("d".into());
    let good = sign(h.clone(), &claims(), &ed_key);
    assert!(a.authenticate("ed", &bearer(&good), CLIENT).await.is_ok());
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let forged = sign(
        h,
        &claims(),
        &EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
    );
    assert!(
        a.authenticate("ed", &bearer(&forged), CLIENT)
            .await
            .is_err()
    );
}

/// The rest of the classic list: `none` in any spelling, a stripped
/// signature, trailing garbage, hostile `kid` values, and an ECDSA
/// signature of r = s = 0 (CVE-2022-21449 in Java).
#[tokio::test]
async fn token_tampering_is_rejected() {
    let a = auth();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": alg, "typ": "JWT"})),
            b64(&claims())
        );
        assert!(
            a.authenticate("users", &bearer(&t), CLIENT).await.is_err(),
            "alg {alg}"
        );
    }
    let good = sign(rs256(Some("k1")), &claims(), &rsa_key());
    assert!(
        a.authenticate("users", &bearer(&good), CLIENT)
            .await
            .is_ok()
    );
    let stripped = format!("{}.", good.rsplit_once('.').unwrap().0);
    assert!(
        a.authenticate("users", &bearer(&stripped), CLIENT)
            .await
            .is_err(),
        "signature stripped"
    );
    // (Trailing whitespace is not part of an HTTP field value, RFC 9110 §5.5.)
    for tail in ["x", ".x", "=="] {
        let t = format!("{good}{tail}");
        assert!(
            a.authenticate("users", &bearer(&t), CLIENT).await.is_err(),
            "trailing {tail:?}"
        );
    }
    for kid in [
        "../../../../dev/null",
        "k1' OR '1'='1",
        "k1\u{0}",
        "/etc/passwd",
    ] {
        let t = sign(rs256(Some(kid)), &claims(), &rsa_key());
        assert!(
            a.authenticate("users", &bearer(&t), CLIENT).await.is_err(),
            "kid {kid:?}"
        );
    }

    let toml = format!(
        "[auth.jwt.ec]\nissuer = \"https://issuer.test\"\naudiences = [\"api\"]\nalgorithms = [\"ES256\"]\n\
         public_key_files = [{{ path = \"{}\", kid = \"e\" }}]\n[auth.policies.ec]\ntype = \"jwt\"\nproviders = [\"ec\"]\n",
        data("ec_public.pem").display()
    );
    let ec = authenticator(&toml);
    let header = b64(&serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "e"}));
    let zero_sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64]);
    let t = format!("{header}.{}.{zero_sig}", b64(&claims()));
    assert!(
        ec.authenticate("ec", &bearer(&t), CLIENT).await.is_err(),
        "r = s = 0"
    );
}

/// The verified-token cache (on by default): a token accepted once is
/// accepted again from the cache, but never past its `exp` (leeway 0 here:
/// refused the moment it expires although it was cached), never for a
/// policy whose issuers do not include the token's, and a cached token
/// still gets the policy's scope check.
#[tokio::test]
async fn verified_token_cache_never_outlives_exp_or_crosses_policies() {
    let a = authenticator(&format!(
        r#"
[auth.jwt.corp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256"]
public_key_files = [{{ path = "{pub_key}", kid = "k1" }}]
leeway = "0s"

[auth.jwt.other]
issuer = "https://other.test"
audiences = ["api"]
algorithms = ["RS256"]
public_key_files = [{{ path = "{pub_key}", kid = "k1" }}]
leeway = "0s"

[auth.policies.users]
type = "jwt"
providers = ["corp"]

[auth.policies.others]
type = "jwt"
providers = ["other"]

[auth.policies.admins]
type = "jwt"
providers = ["corp"]
scopes = ["admin"]
"#,
        pub_key = data("rsa_public.pem").display()
    ));
    let exp = now() + 2;
    let token = sign(
        rs256(Some("k1")),
        &with(claims(), "exp", exp.into()),
        &rsa_key(),
    );
    let req = bearer(&token);
    for _ in 0..3 {
        let id = a.authenticate("users", &req, CLIENT).await.unwrap();
        assert_eq!(id.subject, "user-42");
    }
    // Cached for `corp`, but `others` only trusts `other`.
    match a.authenticate("others", &req, CLIENT).await {
        Err(AuthFailure::InvalidToken { cause, .. }) => {
            assert_eq!(cause, TokenError::UnknownIssuer)
        }
        other => panic!("a token cached for corp passed the others policy: {other:?}"),
    }
    // Cached, still without the admin scope.
    let refused = a.authenticate("admins", &req, CLIENT).await;
    assert!(
        matches!(&refused, Err(f) if f.status() == 403),
        "{refused:?}"
    );
    // Past exp: refused although it is in the cache.
    while now() < exp + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    match a.authenticate("users", &req, CLIENT).await {
        Err(AuthFailure::InvalidToken { cause, .. }) => assert_eq!(cause, TokenError::Expired),
        other => panic!("an expired token was accepted from the cache: {other:?}"),
    }
}
