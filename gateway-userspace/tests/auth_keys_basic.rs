//! API keys (header, query, keys file, `gateway hash-key`) and Basic users
//! (bcrypt and argon2, htpasswd file, verification cache), plus `any`.

mod auth_support;

use std::io::Write as _;

use argon2::{PasswordHasher as _, password_hash::SaltString};
use auth_support::*;
use base64::Engine as _;
use gateway::auth::{AuthMethod, Authenticator, hash_key};

const KEY: &str = "k-live-0123456789abcdef";

fn config(dir: &TempDir) -> String {
    let bcrypt_hash = bcrypt::hash("bcrypt-pw", 4).unwrap();
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(
            b"argon-pw",
            &SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap(),
        )
        .unwrap()
        .to_string();
    let htpasswd = dir.write(
        "htpasswd",
        format!(
            "# users\ncarol:{}\n",
            bcrypt_hash.replacen("$2b$", "$2y$", 1)
        )
        .as_bytes(),
    );
    let keys_file = dir.write(
        "keys.toml",
        format!(
            "[[keys]]\nname = \"from-file\"\nsha256 = \"{}\"\n",
            hash_key(b"file-key")
        )
        .as_bytes(),
    );
    format!(
        r#"
[auth.api_keys.partners]
query = "api_key"
keys = [{{ name = "partner-a", sha256 = "{key_hash}", scopes = ["orders"], rate_limit = 50 }}]
keys_file = "{keys_file}"

[auth.basic.staff]
users = [
  {{ name = "alice", hash = "{bcrypt_hash}", scopes = ["admin"] }},
  {{ name = "bob", hash = "{argon}" }},
]
htpasswd_file = "{htpasswd}"

[auth.policies.keys]
type = "api_key"
providers = ["partners"]
headers = {{ "x-client" = "sub" }}
strip_credential = true

[auth.policies.orders]
type = "api_key"
providers = ["partners"]
scopes = ["orders"]

[auth.policies.staff]
type = "basic"
providers = ["staff"]
headers = {{ "x-user" = "sub" }}

[auth.policies.either]
type = "any"
of = ["keys", "staff"]
"#,
        key_hash = hash_key(KEY.as_bytes()),
        keys_file = keys_file.display(),
        htpasswd = htpasswd.display(),
    )
}

fn basic(user: &str, pw: &str) -> http::request::Parts {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    request("/", &[("authorization", &format!("Basic {v}"))])
}

fn setup() -> (TempDir, Authenticator) {
    let dir = TempDir::new();
    let a = authenticator(&config(&dir));
    (dir, a)
}

#[tokio::test]
async fn api_key_in_header_and_query() {
    let (_d, a) = setup();
    let mut req = request("/o", &[("x-api-key", KEY), ("x-client", "forged")]);
    let id = a.authenticate("keys", &req, CLIENT).await.unwrap();
    assert_eq!(id.subject, "partner-a");
    assert_eq!(
        id.method,
        AuthMethod::ApiKey {
            provider: "partners".into()
        }
    );
    assert_eq!(id.rate_limit, Some(50));
    a.apply_identity(&id, &mut req);
    assert_eq!(
        req.headers.get_all("x-client").iter().collect::<Vec<_>>(),
        ["partner-a"]
    );
    assert!(req.headers.get("x-api-key").is_none(), "stripped");

    let mut req = request(&format!("/o?a=1&api_key={KEY}&b=2"), &[]);
    let id = a.authenticate("keys", &req, CLIENT).await.unwrap();
    a.apply_identity(&id, &mut req);
    assert_eq!(req.uri, "/o?a=1&b=2");

    let from_file = request("/", &[("x-api-key", "file-key")]);
    assert_eq!(
        a.authenticate("keys", &from_file, CLIENT)
            .await
            .unwrap()
            .subject,
        "from-file"
    );
    // Scope check: the file key has no "orders" scope.
    let f = a
        .authenticate("orders", &from_file, CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 403);
    assert!(
        f.www_authenticate().is_none(),
        "insufficient_scope challenge is Bearer-only"
    );
}

#[tokio::test]
async fn wrong_or_missing_api_key_is_401() {
    let (_d, a) = setup();
    let wrong = "k-live-0123456789abcdeX";
    let f = a
        .authenticate("keys", &request("/", &[("x-api-key", wrong)]), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 401);
    assert_eq!(f.reason(), "invalid_credentials");
    assert_eq!(f.www_authenticate().unwrap(), "ApiKey realm=\"gateway\"");
    assert_problem_without(&f, wrong);
    let f = a
        .authenticate("keys", &request("/", &[]), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.reason(), "missing_credentials");
    let two = request("/", &[("x-api-key", KEY), ("x-api-key", KEY)]);
    assert_eq!(
        a.authenticate("keys", &two, CLIENT)
            .await
            .unwrap_err()
            .status(),
        400
    );
}

#[tokio::test]
async fn basic_bcrypt_argon2_htpasswd_and_cache() {
    let (_d, a) = setup();
    let mut req = basic("alice", "bcrypt-pw");
    let id = a.authenticate("staff", &req, CLIENT).await.unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.scopes, ["admin"]);
    a.apply_identity(&id, &mut req);
    assert_eq!(req.headers["x-user"], "alice");
    assert!(
        req.headers.get("authorization").is_some(),
        "kept unless strip_credential"
    );
    assert_eq!(
        a.authenticate("staff", &basic("bob", "argon-pw"), CLIENT)
            .await
            .unwrap()
            .subject,
        "bob"
    );
    assert_eq!(
        a.authenticate("staff", &basic("carol", "bcrypt-pw"), CLIENT)
            .await
            .unwrap()
            .subject,
        "carol"
    );
    assert_eq!(a.basic_verifications("staff"), 3);

    // Cache hits do not verify again.
    for _ in 0..5 {
        a.authenticate("staff", &basic("alice", "bcrypt-pw"), CLIENT)
            .await
            .unwrap();
        a.authenticate("staff", &basic("bob", "argon-pw"), CLIENT)
            .await
            .unwrap();
    }
    assert_eq!(a.basic_verifications("staff"), 3);

    // Wrong passwords are verified every time (never cached), unknown users too.
    for _ in 0..2 {
        let f = a
            .authenticate("staff", &basic("alice", "nope"), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 401);
        assert_eq!(
            f.www_authenticate().unwrap(),
            "Basic realm=\"gateway\", charset=\"UTF-8\""
        );
        assert_problem_without(&f, "nope");
    }
    assert_eq!(a.basic_verifications("staff"), 5);
    assert_eq!(
        a.authenticate("staff", &basic("mallory", "x"), CLIENT)
            .await
            .unwrap_err()
            .status(),
        401
    );
    assert_eq!(a.basic_verifications("staff"), 6);
    // The right password for another user does not unlock a cached entry.
    assert!(
        a.authenticate("staff", &basic("bob", "bcrypt-pw"), CLIENT)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn any_of_policies() {
    let (_d, a) = setup();
    let id = a
        .authenticate("either", &request("/", &[("x-api-key", KEY)]), CLIENT)
        .await
        .unwrap();
    assert_eq!(id.policy, "keys");
    let id = a
        .authenticate("either", &basic("alice", "bcrypt-pw"), CLIENT)
        .await
        .unwrap();
    assert_eq!(id.policy, "staff");
    let f = a
        .authenticate("either", &request("/", &[]), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(
        f.www_authenticate().unwrap(),
        "ApiKey realm=\"gateway\", Basic realm=\"gateway\", charset=\"UTF-8\""
    );
    let f = a
        .authenticate("either", &basic("alice", "bad"), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.reason(), "invalid_credentials");
}

#[test]
fn hash_key_command_reads_stdin() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{KEY}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hash_key(KEY.as_bytes())
    );
}

#[test]
fn bad_hashes_and_keys_are_config_errors() {
    let e = gateway::config::Config::parse(
        "[auth.basic.s]\nusers = [{ name = \"a\", hash = \"$apr1$xyz$abc\" }]\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsupported hash"), "{e}");
    assert!(!e.contains("$apr1$xyz$abc"), "the hash is not echoed: {e}");
    let e = gateway::config::Config::parse(
        "[auth.api_keys.p]\nkeys = [{ name = \"a\", sha256 = \"abc\" }]\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("gw.toml:2:") && e.contains("64 hex digits"),
        "{e}"
    );
}

#[tokio::test]
async fn over_the_failure_limit_no_hash_is_computed() {
    let dir = TempDir::new();
    let toml = config(&dir) + "\n[auth.brute_force]\nmax_failures = 2\nwindow = \"1m\"\n";
    let a = authenticator(&toml);
    for _ in 0..2 {
        let f = a
            .authenticate("staff", &basic("alice", "guess"), CLIENT)
            .await
            .unwrap_err();
        assert_eq!(f.status(), 401);
    }
    let before = a.basic_verifications("staff");
    let f = a
        .authenticate("staff", &basic("alice", "bcrypt-pw"), CLIENT)
        .await
        .unwrap_err();
    assert_eq!(f.status(), 429);
    assert!(f.retry_after().is_some());
    assert_problem_without(&f, "bcrypt-pw");
    assert_eq!(
        a.basic_verifications("staff"),
        before,
        "no bcrypt work for a blocked source"
    );
    // Wrong API keys count too, from their own source.
    let src = "203.0.113.5".parse().unwrap();
    for _ in 0..2 {
        let r = request("/", &[("x-api-key", "wrong")]);
        assert_eq!(
            a.authenticate("keys", &r, src).await.unwrap_err().status(),
            401
        );
    }
    let r = request("/", &[("x-api-key", KEY)]);
    assert_eq!(
        a.authenticate("keys", &r, src).await.unwrap_err().status(),
        429
    );
}
