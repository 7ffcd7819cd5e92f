//! JWK Sets fetched over HTTPS from a loopback server whose CA is trusted
//! through `ca_file`: key rotation on an unknown `kid`, refetches
//! rate-limited (counted on the server), the last good set kept when the
//! server fails, and 503 when no set was ever loaded.

mod auth_support;

use std::time::Duration;

use auth_support::*;
use gateway::auth::{AuthFailure, Authenticator, TokenError};

fn config(server: &MockServer, min_refetch: &str) -> String {
    format!(
        r#"
[auth.jwt.idp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256"]
jwks_url = "{url}"
ca_file = "{ca}"
min_refetch_interval = "{min_refetch}"
fetch_timeout = "2s"

[auth.policies.users]
type = "jwt"
providers = ["idp"]
"#,
        url = server.url("/jwks.json"),
        ca = server.ca_file.display(),
    )
}

async fn ok(a: &Authenticator, token: &str) -> bool {
    a.authenticate("users", &bearer(token), CLIENT)
        .await
        .is_ok()
}

#[tokio::test]
async fn rotation_via_unknown_kid_and_rate_limited_refetch() {
    let server = MockServer::start(fixed(200, jwks(&[("k1", &rsa_key())]))).await;
    let a = authenticator(&config(&server, "1s"));
    assert!(
        a.refresh_keys().await,
        "initial fetch over HTTPS with the test CA"
    );
    assert_eq!(server.hits(), 1);
    let t1 = sign(rs256(Some("k1")), &claims(), &rsa_key());
    assert!(ok(&a, &t1).await);
    assert_eq!(server.hits(), 1, "known kid: no fetch");

    // The issuer rotates to k2. Right after the last fetch, an unknown kid
    // cannot trigger another one (rate limit), so the token is rejected.
    server.set(fixed(200, jwks(&[("k1", &rsa_key()), ("k2", &rsa2_key())])));
    let t2 = sign(rs256(Some("k2")), &claims(), &rsa2_key());
    let f = a
        .authenticate("users", &bearer(&t2), CLIENT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            f,
            AuthFailure::InvalidToken {
                cause: TokenError::UnknownKey,
                ..
            }
        ),
        "{f:?}"
    );
    assert_eq!(
        server.hits(),
        1,
        "rate-limited: no refetch within min_refetch_interval"
    );

    // After the interval, the unknown kid triggers one fetch and verifies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(ok(&a, &t2).await);
    assert_eq!(server.hits(), 2);
    assert!(ok(&a, &t1).await && ok(&a, &t2).await);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn unknown_kid_flood_fetches_at_most_once_per_interval() {
    let server = MockServer::start(fixed(200, jwks(&[("k1", &rsa_key())]))).await;
    let a = authenticator(&config(&server, "30s"));
    assert!(a.refresh_keys().await);
    for i in 0..20 {
        let t = sign(rs256(Some(&format!("random-{i}"))), &claims(), &rsa2_key());
        assert_eq!(
            a.authenticate("users", &bearer(&t), CLIENT)
                .await
                .unwrap_err()
                .status(),
            401
        );
    }
    assert_eq!(
        server.hits(),
        1,
        "20 unknown kids, no extra fetch within 30 s"
    );
    assert_eq!(a.jwks_fetches("idp"), 1);
}

#[tokio::test]
async fn last_good_keys_kept_when_server_fails() {
    let server = MockServer::start(fixed(200, jwks(&[("k1", &rsa_key())]))).await;
    let a = authenticator(&config(&server, "1s"));
    assert!(a.refresh_keys().await);
    server.set(fixed(500, "oops"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!a.refresh_keys().await, "fetch fails");
    assert_eq!(server.hits(), 2);
    let t1 = sign(rs256(Some("k1")), &claims(), &rsa_key());
    assert!(ok(&a, &t1).await, "old key still verifies");
    // Garbage instead of a JWK Set is a failed fetch too.
    server.set(fixed(200, "{\"keys\": []}"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!a.refresh_keys().await);
    assert!(ok(&a, &t1).await);
}

#[tokio::test]
async fn never_loaded_is_503_not_an_open_door() {
    let server = MockServer::start(fixed(503, "down")).await;
    let a = authenticator(&config(&server, "30s"));
    let t1 = sign(rs256(Some("k1")), &claims(), &rsa_key());
    for _ in 0..3 {
        let f = a
            .authenticate("users", &bearer(&t1), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 503, "{f:?}");
        assert_eq!(f.reason(), "provider_unavailable");
        assert_problem_without(&f, &t1);
    }
    assert_eq!(server.hits(), 1, "the failing server is not hammered");
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let server = MockServer::start(fixed(200, jwks(&[("k1", &rsa_key())]))).await;
    let other = MockServer::start(fixed(200, "{}")).await;
    // Trust the other server's CA only: the handshake must fail.
    let toml = config(&server, "30s").replace(
        &server.ca_file.display().to_string(),
        &other.ca_file.display().to_string(),
    );
    let a = authenticator(&toml);
    assert!(!a.refresh_keys().await);
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn plain_http_jwks_url_is_a_config_error() {
    let e = gateway::config::Config::parse(
        "[auth.jwt.x]\nissuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_url = \"http://idp.test/jwks\"\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("gw.toml:5:") && e.contains("must be an https:// URL"),
        "{e}"
    );
}

#[tokio::test]
async fn stale_set_is_refreshed_in_the_background() {
    let server = MockServer::start(fixed(200, jwks(&[("k1", &rsa_key())]))).await;
    let toml = config(&server, "1s").replace(
        "fetch_timeout = \"2s\"",
        "fetch_timeout = \"2s\"\nrefresh_interval = \"1s\"",
    );
    let a = authenticator(&toml);
    assert!(a.refresh_keys().await);
    server.set(fixed(200, jwks(&[("k2", &rsa2_key())])));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The stale set still answers this request and triggers a refresh.
    let t1 = sign(rs256(Some("k1")), &claims(), &rsa_key());
    assert!(ok(&a, &t1).await);
    let t2 = sign(rs256(Some("k2")), &claims(), &rsa2_key());
    let mut rotated = false;
    for _ in 0..60 {
        if ok(&a, &t2).await {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the rotated key is in use");
    assert_eq!(server.hits(), 2, "one background fetch");
    assert!(!ok(&a, &t1).await, "the retired key is gone");
}

#[tokio::test]
async fn jwks_file_keys_and_no_symmetric_keys_from_a_set() {
    let dir = TempDir::new();
    let set = dir.write("jwks.json", jwks(&[("k1", &rsa_key())]).as_bytes());
    let toml = format!(
        r#"
[auth.jwt.idp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256"]
jwks_file = "{}"
[auth.policies.users]
type = "jwt"
providers = ["idp"]
"#,
        set.display()
    );
    let a = authenticator(&toml);
    assert!(ok(&a, &sign(rs256(Some("k1")), &claims(), &rsa_key())).await);

    // A set holding only an HMAC (oct) key gives an RS256 issuer nothing.
    let oct = r#"{"keys":[{"kty":"oct","kid":"k1","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#;
    std::fs::write(&set, oct).unwrap();
    let e = Authenticator::from_config(&parse_auth(&toml))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no signature key usable"), "{e}");
    // Even listing HS256 as allowed does not let a JWK Set supply a secret.
    let e = gateway::config::Config::parse(&toml.replace(r#"["RS256"]"#, r#"["HS256"]"#), "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hmac_secret_files only"), "{e}");
}
