//! JWT bearer authentication as a route runs it
//! (`auth::Authenticator::authenticate` with `jwt` and `any` policies):
//! bearer extraction, header decoding (`alg`, `kid`, `crit`), issuer choice
//! by `iss`, key choice by (issuer, `kid`), the claim checks, scopes and the
//! identity headers made from claims. Inputs are raw tokens, or header and
//! claims the target signs with the issuers' real HMAC keys so the claim
//! checks are reached. Checked beyond "no panic": an accepted token
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
use libfuzzer_sys::{arbitrary::Arbitrary, fuzz_target};
use serde_json::{Map, Value, json};
use sha2::{Sha256, Sha384, Sha512};

/// (issuer name, `iss`, audiences, kid → secret); `corp` takes HS256/HS384,
/// `partner` HS512 and requires a `tenant` claim.
const CORP_KEYS: [(&str, &[u8]); 2] = [("k1", b"corp-secret-one-0123456789abcdef"), ("k2", b"corp-secret-two-0123456789abcdef")];
const PARTNER_KEY: &[u8] = b"partner-secret-0123456789abcdef!";

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
const ALGS: [&str; 6] = ["HS256", "HS384", "HS512", "RS256", "none", "hs256"];
const KIDS: [&str; 3] = ["k1", "k2", "nope"];
const ISSUERS: [&str; 3] = ["https://id.example.com/", "partner", "https://evil.example/"];

#[derive(Arbitrary, Debug)]
enum Token {
    /// The token text as a client sends it.
    Raw(String),
    /// Header and claims JSON text, signed with key `key`.
    SignedText { header: String, claims: String, key: u8 },
    /// Structured header and claims, signed with key `key`.
    Signed { header: Header, claims: Vec<(Claim, Val)>, key: u8 },
}

#[derive(Arbitrary, Debug)]
struct Header {
    alg: u8,
    kid: Option<u8>,
    crit: bool,
    extra: Vec<(String, Val)>,
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Iss,
    Aud,
    Sub,
    Exp,
    Nbf,
    Iat,
    Scope,
    Roles,
    Tenant,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Val {
    /// Seconds from now.
    Time(i32),
    Issuer(u8),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Strs(Vec<String>),
    Object(Vec<(String, String)>),
}

impl Val {
    fn json(&self, now: i64) -> Value {
        match self {
            Val::Time(s) => json!(now + *s as i64),
            Val::Issuer(i) => json!(ISSUERS[*i as usize % ISSUERS.len()]),
            Val::Str(s) => json!(s),
            Val::Int(i) => json!(i),
            Val::Float(f) => json!(f),
            Val::Bool(b) => json!(b),
            Val::Null => Value::Null,
            Val::Strs(v) => json!(v),
            Val::Object(kv) => Value::Object(kv.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    policy: u8,
    token: Token,
}

/// Signs `header.claims` (already base64url) with the `key`-th secret, in
/// the header's algorithm when it is an HMAC one (else HS256).
fn sign(header_json: &[u8], claims_json: &[u8], key: u8) -> String {
    let secrets = [CORP_KEYS[0].1, CORP_KEYS[1].1, PARTNER_KEY];
    let secret = secrets[key as usize % secrets.len()];
    let alg = serde_json::from_slice::<Value>(header_json)
        .ok()
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned));
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header_json), URL_SAFE_NO_PAD.encode(claims_json));
    let mac = match alg.as_deref() {
        Some("HS384") => Hmac::<Sha384>::new_from_slice(secret).unwrap().chain_update(&input).finalize().into_bytes().to_vec(),
        Some("HS512") => Hmac::<Sha512>::new_from_slice(secret).unwrap().chain_update(&input).finalize().into_bytes().to_vec(),
        _ => Hmac::<Sha256>::new_from_slice(secret).unwrap().chain_update(&input).finalize().into_bytes().to_vec(),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

fuzz_target!(|input: Input| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = match &input.token {
        Token::Raw(t) => t.clone(),
        Token::SignedText { header, claims, key } => sign(header.as_bytes(), claims.as_bytes(), *key),
        Token::Signed { header, claims, key } => {
            let mut h = Map::new();
            h.insert("alg".into(), json!(ALGS[header.alg as usize % ALGS.len()]));
            if let Some(k) = header.kid {
                h.insert("kid".into(), json!(KIDS[k as usize % KIDS.len()]));
            }
            if header.crit {
                h.insert("crit".into(), json!(["exp"]));
            }
            for (k, v) in &header.extra {
                h.entry(k.clone()).or_insert_with(|| v.json(now));
            }
            let c: Map<String, Value> = claims
                .iter()
                .map(|(k, v)| {
                    let name = match k {
                        Claim::Iss => "iss",
                        Claim::Aud => "aud",
                        Claim::Sub => "sub",
                        Claim::Exp => "exp",
                        Claim::Nbf => "nbf",
                        Claim::Iat => "iat",
                        Claim::Scope => "scope",
                        Claim::Roles => "roles",
                        Claim::Tenant => "tenant",
                        Claim::Other(s) => s,
                    };
                    (name.to_owned(), v.json(now))
                })
                .collect();
            sign(&serde_json::to_vec(&h).unwrap(), &serde_json::to_vec(&c).unwrap(), *key)
        }
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
    let policy = POLICIES[input.policy as usize % POLICIES.len()];
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
                    v.as_bytes().iter().all(|b| *b == b' ' || b.is_ascii_graphic()),
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
    let part = |i: usize| -> Map<String, Value> {
        let b64 = token.split('.').nth(i).expect("three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).expect("base64url")).expect("JSON object")
    };
    let (header, claims) = (part(0), part(1));
    let AuthMethod::Jwt { issuer } = &identity.method else {
        panic!("a jwt policy accepted a non-JWT identity: {identity:?}");
    };
    let (iss, auds, algs, kids): (&str, &[&str], &[&str], &[Option<&str>]) = match issuer.as_str() {
        "corp" => ("https://id.example.com/", &["api", "admin"], &["HS256", "HS384"], &[Some("k1"), Some("k2"), None]),
        "partner" => ("partner", &["api"], &["HS512"], &[None, Some("k1"), Some("k2"), Some("nope")]),
        other => panic!("unknown issuer {other}"),
    };
    let alg = header.get("alg").and_then(Value::as_str);
    assert!(alg.is_some_and(|a| algs.contains(&a)), "alg {alg:?} accepted for {issuer}");
    assert!(!header.contains_key("crit"), "crit accepted");
    if issuer == "corp" {
        let kid = header.get("kid").map(|k| k.as_str().expect("kid is a string"));
        assert!(kids.contains(&kid), "kid {kid:?} accepted");
    }
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(iss), "iss");
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => auds.contains(&a.as_str()),
        Some(Value::Array(a)) => a.iter().any(|a| a.as_str().is_some_and(|a| auds.contains(&a))),
        _ => false,
    };
    assert!(aud_ok, "aud {:?} accepted", claims.get("aud"));
    let time = |name: &str| claims.get(name).map(|v| v.as_f64().unwrap_or_else(|| panic!("{name} not a number: {v}")));
    // 30 s leeway, plus slack for the time this input took.
    let exp = time("exp").expect("exp is required");
    assert!(exp >= (now - 30 - 5) as f64, "expired token accepted: exp {exp}, now {now}");
    if let Some(nbf) = time("nbf") {
        assert!(nbf <= (now + 30 + 5) as f64, "token not yet valid accepted: nbf {nbf}");
    }
    if let Some(iat) = time("iat") {
        assert!(iat <= (now + 30 + 5) as f64, "token issued in the future accepted: iat {iat}");
    }
    assert_eq!(claims.get("sub").and_then(Value::as_str), Some(identity.subject.as_str()), "sub");
    if issuer == "partner" {
        assert!(claims.contains_key("tenant"), "required claim tenant missing");
    }
    let needed: &[&str] = if identity.policy == "admins" { &["read", "write"] } else { &["read"] };
    assert!(needed.iter().all(|s| identity.scopes.iter().any(|h| h == s)), "scopes {:?}", identity.scopes);
}
