//! JWT bearer authentication as a route runs it
//! (`auth::Authenticator::authenticate` with `jwt` and `any` policies):
//! bearer extraction, header decoding (`alg`, `kid`, `crit`), issuer choice
//! by `iss`, key choice by (issuer, `kid`), the claim checks, scopes and the
//! identity headers made from claims. Inputs are raw tokens, or header and
//! claims JSON that the target signs with the issuers' real HMAC keys so
//! the claim checks are reached (`$NOW+600` in them becomes a timestamp). Checked beyond "no panic": an accepted token
//! satisfies every rule in docs/auth.md (pinned algorithm, no `crit`,
//! known `iss` and `kid`, `aud`, `exp`/`nbf`/`iat` with the 30 s leeway, a
//! string `sub`, the issuer's required claims, the policy's scopes), the
//! identity headers are visible ASCII, and a refusal's problem+json is JSON.

#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::LazyLock,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use gateway::{
    auth::{AuthMethod, Authenticator},
    config::Config,
};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sha2::{Sha256, Sha384, Sha512};

/// The issuers' HMAC secrets (64 bytes: the gateway wants at least 48 for
/// HS384 and 64 for HS512). `corp` takes HS256/HS384 with keys `k1` and
/// `k2`; `partner` takes HS512 and requires a `tenant` claim.
const CORP_KEYS: [(&str, &[u8]); 2] = [
    (
        "k1",
        b"corp-secret-one-0123456789abcdef-corp-secret-one-0123456789abcde",
    ),
    (
        "k2",
        b"corp-secret-two-0123456789abcdef-corp-secret-two-0123456789abcde",
    ),
];
const PARTNER_KEY: &[u8] = b"partner-secret-0123456789abcdef!partner-secret-0123456789abcdef!";

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("gateway-fuzz-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, secret: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, secret).unwrap();
        p.display().to_string()
    };
    let toml = format!(
        r#"
[auth.brute_force]
enabled = false
[auth.jwt.corp]
issuer = "https://id.example.com/"
audiences = ["api", "admin"]
algorithms = ["HS256", "HS384"]
hmac_secret_files = [{{ path = "{}", kid = "k1" }}, {{ path = "{}", kid = "k2" }}]
[auth.jwt.partner]
issuer = "partner"
audiences = ["api"]
algorithms = ["HS512"]
hmac_secret_files = [{{ path = "{}" }}]
required_claims = ["tenant"]
[auth.policies.users]
type = "jwt"
providers = ["corp", "partner"]
scopes = ["read"]
headers = {{ "x-user-id" = "sub", "x-tenant" = "tenant", "x-roles" = "roles" }}
[auth.policies.admins]
type = "jwt"
providers = ["corp"]
scopes = ["read", "write"]
scope_claim = "roles"
strip_credential = true
[auth.policies.either]
type = "any"
of = ["admins", "users"]
"#,
        file("k1", CORP_KEYS[0].1),
        file("k2", CORP_KEYS[1].1),
        file("partner", PARTNER_KEY),
    );
    let c = Config::parse(&toml, "fuzz-auth.toml").expect("the fuzz auth config parses");
    Authenticator::from_config(&c.auth).expect("the fuzz authenticator builds")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
});

const POLICIES: [&str; 3] = ["users", "admins", "either"];

/// Signs `header.claims` with the `key`-th secret, in the header's
/// algorithm when it is an HMAC one (else HS256).
fn sign(header_json: &[u8], claims_json: &[u8], key: u8) -> String {
    let secrets = [CORP_KEYS[0].1, CORP_KEYS[1].1, PARTNER_KEY];
    let secret = secrets[key as usize % secrets.len()];
    let alg = serde_json::from_slice::<Value>(header_json)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned));
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let mac = match alg.as_deref() {
        Some("HS384") => mac::<Hmac<Sha384>>(secret, &input),
        Some("HS512") => mac::<Hmac<Sha512>>(secret, &input),
        _ => mac::<Hmac<Sha256>>(secret, &input),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &str) -> Vec<u8> {
    <M as Mac>::new_from_slice(secret)
        .expect("HMAC takes any key")
        .chain_update(input)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Replaces `$NOW`, `$NOW+N` and `$NOW-N` with Unix seconds, so seeds can
/// hold tokens that are valid whenever the fuzzer runs.
fn expand_now(text: &str, now: i64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("$NOW") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 4..];
        let sign_len = usize::from(rest.starts_with(['+', '-']));
        let digits = rest[sign_len..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count()
            .min(9);
        let offset: i64 = if digits > 0 {
            rest[..sign_len + digits].parse().unwrap_or(0)
        } else {
            0
        };
        out.push_str(&(now + offset).to_string());
        rest = &rest[if digits > 0 { sign_len + digits } else { 0 }..];
    }
    out.push_str(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    // Byte 0: policy (low bits) and whether the rest is signed here (0x80);
    // byte 1: which secret signs. Signed: `HEADER_JSON\nCLAIMS_JSON`.
    let [mode, key, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = if mode & 0x80 != 0 {
        let text = expand_now(text, now);
        let (header, claims) = text.split_once('\n').unwrap_or((&text, "{}"));
        sign(header.as_bytes(), claims.as_bytes(), *key)
    } else {
        text.to_owned()
    };
    let Ok(auth) = http::HeaderValue::try_from(format!("Bearer {token}")) else {
        return;
    };
    let (mut parts, ()) = http::Request::builder()
        .uri("/")
        .header("authorization", auth)
        .header("x-user-id", "forged")
        .body(())
        .unwrap()
        .into_parts();
    let policy = POLICIES[(mode & 0x7f) as usize % POLICIES.len()];
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    match RUNTIME.block_on(AUTH.authenticate(policy, &parts, client)) {
        Ok(identity) => {
            check_accepted(&token, &identity, now);
            AUTH.apply_identity(&identity, &mut parts);
            let ours: Vec<_> = identity
                .claims_headers
                .iter()
                .filter(|(n, _)| n == "x-user-id")
                .map(|(_, v)| v)
                .collect();
            let sent: Vec<_> = parts.headers.get_all("x-user-id").iter().collect();
            assert_eq!(sent, ours, "a client-sent identity header survived");
            for (name, v) in &identity.claims_headers {
                assert!(
                    v.as_bytes()
                        .iter()
                        .all(|b| *b == b' ' || b.is_ascii_graphic()),
                    "{name}: {v:?}"
                );
            }
        }
        Err(failure) => {
            serde_json::from_slice::<Value>(&failure.problem_json()).expect("problem+json is JSON");
            let _ = failure.www_authenticate();
        }
    }
});

/// What docs/auth.md promises about every token the gateway accepts,
/// checked on the decoded token independently of the gateway's code.
fn check_accepted(token: &str, identity: &gateway::auth::Identity, now: i64) {
    // An identity is never empty (docs/security.md section 14).
    assert!(!identity.subject.trim().is_empty(), "empty subject accepted");
    let part = |i: usize| -> Map<String, Value> {
        let b64 = token.split('.').nth(i).expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).expect("base64url"))
            .expect("JSON object")
    };
    let (header, claims) = (part(0), part(1));
    let AuthMethod::Jwt { issuer } = &identity.method else {
        panic!("a jwt policy accepted a non-JWT identity: {identity:?}");
    };
    let (iss, auds, algs, kids): (&str, &[&str], &[&str], &[Option<&str>]) = match issuer.as_str() {
        "corp" => (
            "https://id.example.com/",
            &["api", "admin"],
            &["HS256", "HS384"],
            &[Some("k1"), Some("k2"), None],
        ),
        "partner" => (
            "partner",
            &["api"],
            &["HS512"],
            &[None, Some("k1"), Some("k2"), Some("nope")],
        ),
        other => panic!("unknown issuer {other}"),
    };
    let alg = header.get("alg").and_then(Value::as_str);
    assert!(
        alg.is_some_and(|a| algs.contains(&a)),
        "alg {alg:?} accepted for {issuer}"
    );
    assert!(!header.contains_key("crit"), "crit accepted");
    if issuer == "corp" {
        let kid = header
            .get("kid")
            .map(|k| k.as_str().expect("kid is a string"));
        assert!(kids.contains(&kid), "kid {kid:?} accepted");
    }
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(iss), "iss");
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => auds.contains(&a.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .any(|a| a.as_str().is_some_and(|a| auds.contains(&a))),
        _ => false,
    };
    assert!(aud_ok, "aud {:?} accepted", claims.get("aud"));
    let time = |name: &str| {
        claims.get(name).map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{name} not a number: {v}"))
        })
    };
    // 30 s leeway, plus slack for the time this input took.
    let exp = time("exp").expect("exp is required");
    assert!(
        exp >= (now - 30 - 5) as f64,
        "expired token accepted: exp {exp}, now {now}"
    );
    if let Some(nbf) = time("nbf") {
        assert!(
            nbf <= (now + 30 + 5) as f64,
            "token not yet valid accepted: nbf {nbf}"
        );
    }
    if let Some(iat) = time("iat") {
        assert!(
            iat <= (now + 30 + 5) as f64,
            "token issued in the future accepted: iat {iat}"
        );
    }
    assert_eq!(
        claims.get("sub").and_then(Value::as_str),
        Some(identity.subject.as_str()),
        "sub"
    );
    if issuer == "partner" {
        assert!(
            claims.contains_key("tenant"),
            "required claim tenant missing"
        );
    }
    let needed: &[&str] = if identity.policy == "admins" {
        &["read", "write"]
    } else {
        &["read"]
    };
    assert!(
        needed
            .iter()
            .all(|s| identity.scopes.iter().any(|h| h == s)),
        "scopes {:?}",
        identity.scopes
    );
}
