//! Hardening II, classes 4, 5, 7 and 8, through the real proxy with a
//! recording origin: empty identities, strict introspection answers, exact
//! number comparison, and validation of what the upstream will act on
//! (HEAD, normalized paths, decoded parameters, integers beyond i64). Every
//! refusal asserts that the origin received nothing.

mod auth_support;
mod proxy_common;

use std::{net::SocketAddr, path::Path, sync::Arc};

use auth_support::{Handler, MockServer, now, rs256, rsa_key, sign};
use gateway::{config::Config, phases::build_engines, proxy::Proxy};
use proxy_common::*;
use serde_json::{Value, json};

async fn start(toml: &str, base_dir: &Path) -> (Proxy, SocketAddr) {
    let full = format!("{toml}\n[xdp]\nenabled = false\n");
    let config = Config::parse(&full, "test.toml").unwrap_or_else(|e| panic!("{e}\n{full}"));
    let engines = build_engines(&config, base_dir, None, None).expect("engines");
    let proxy = Proxy::start(&config, engines).await.expect("proxy starts");
    let addr = proxy.local_addr("main").expect("listener");
    (proxy, addr)
}

async fn send(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> RawResponse {
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}{length}Connection: close\r\n\r\n{body}"
    );
    raw(addr, req.as_bytes()).await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

// ---- Class 4: an identity is never empty ----------------------------------

fn jwt_config(origin: &Origin) -> String {
    format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "by-identity"
path_prefix = "/id/"
upstream = "o"
auth = "users"
rate_limits = ["per-identity"]

[[routes]]
id = "by-sub"
path_prefix = "/sub/"
upstream = "o"
auth = "users"
rate_limits = ["per-sub"]

[auth.jwt.test]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["RS256"]
public_key_files = [{{ path = "{key}" }}]

[auth.policies.users]
type = "jwt"
providers = ["test"]
headers = {{ "x-user-id" = "sub" }}

[[rate_limit.limits]]
name = "per-identity"
rate = "1r/m"
burst = 2
key = "identity"

[[rate_limit.limits]]
name = "per-sub"
rate = "1r/m"
burst = 2
key = "claim:sub"
"#,
        upstream = upstream("o", &[origin.addr], ""),
        key = auth_support::data("rsa_public.pem").display(),
    )
}

fn token_for(sub: Value) -> String {
    let mut claims = auth_support::claims();
    claims["sub"] = sub;
    sign(rs256(None), &claims, &rsa_key())
}

#[tokio::test]
async fn empty_subject_is_invalid_token_and_never_reaches_the_upstream() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&jwt_config(&origin), Path::new(".")).await;

    // The issue's case: eight requests with `"sub": ""`, on both limit keys.
    let empty = token_for(json!(""));
    for (i, path) in ["/id/a", "/sub/a"].iter().cycle().take(8).enumerate() {
        let r = get(addr, path, &bearer(&empty)).await;
        assert_eq!(r.status, 401, "request {i}: {}", r.body);
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.contains("error=\"invalid_token\"")),
            "{}",
            r.head
        );
    }
    assert!(
        origin.requests().is_empty(),
        "an empty identity was forwarded"
    );

    // Other spellings of "nobody".
    for sub in [
        " ",
        "\t",
        "\u{200b}",
        " alice",
        "alice\r\n",
        "\u{0}",
        "\u{3000}",
    ] {
        let r = get(addr, "/id/a", &bearer(&token_for(json!(sub)))).await;
        assert_eq!(r.status, 401, "sub {sub:?}");
    }
    // Not a string at all.
    let r = get(addr, "/id/a", &bearer(&token_for(json!(42)))).await;
    assert_eq!(r.status, 401);
    assert!(
        origin.requests().is_empty(),
        "a blank identity was forwarded"
    );
}

#[tokio::test]
async fn a_real_subject_is_forwarded_and_limited() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&jwt_config(&origin), Path::new(".")).await;
    let token = token_for(json!("user-42"));
    for path in ["/id/a", "/sub/a"] {
        // 1r/m with burst 2: three pass, the fourth is 429.
        for i in 0..3 {
            let r = get(addr, path, &bearer(&token)).await;
            assert_eq!(r.status, 200, "{path} request {i}: {}", r.body);
        }
        let r = get(addr, path, &bearer(&token)).await;
        assert_eq!(r.status, 429, "{path}");
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|s| s.headers["x-user-id"] == "user-42"));
}

#[tokio::test]
async fn jwt_time_claims_are_numeric_dates_with_fractions() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&jwt_config(&origin), Path::new(".")).await;
    let n = now() as f64;
    let with = |claim: &str, value: Value| {
        let mut claims = auth_support::claims();
        claims[claim] = value;
        sign(rs256(None), &claims, &rsa_key())
    };
    for (claim, value, status) in [
        ("exp", json!(n + 600.5), 200),
        ("nbf", json!(n - 1.25), 200),
        ("iat", json!(n - 0.5), 200),
        ("exp", json!(n - 100.5), 401),
        ("nbf", json!(n + 3600.5), 401),
        ("iat", json!(n + 3600.5), 401),
        ("exp", json!((n + 600.0).to_string()), 401),
        ("nbf", json!(null), 401),
    ] {
        let r = get(addr, "/id/a", &bearer(&with(claim, value.clone()))).await;
        assert_eq!(r.status, status, "{claim} = {value}: {}", r.body);
    }
    assert_eq!(origin.requests().len(), 3);
}

// ---- Class 5: introspection answers ---------------------------------------

/// Answers by token name (`token=NAME&` in the form body).
fn idp() -> Handler {
    Arc::new(|body: &[u8]| {
        let body = String::from_utf8_lossy(body);
        let token = body
            .strip_prefix("token=")
            .and_then(|b| b.split('&').next())
            .unwrap_or("")
            .to_owned();
        let n = now();
        let base = r#""iss":"https://idp.test","aud":["other","api"],"token_type":"Bearer""#;
        let answer = match token.as_str() {
            "good" => format!(r#"{{"active":true,"sub":"alice",{base},"exp":{}}}"#, n + 600),
            "dup-active" => r#"{"active":false,"active":true,"sub":"a"}"#.to_owned(),
            "dup-nested" => format!(
                r#"{{"active":true,"sub":"a",{base},"ext":{{"role":"user","role":"admin"}}}}"#
            ),
            "dup-escaped" => format!(r#"{{"active":true,"sub":"a",{base},"\u0073ub":"b"}}"#),
            "nbf-future" => {
                format!(r#"{{"active":true,"sub":"a",{base},"nbf":{}}}"#, n + 3600)
            }
            "nbf-fraction" => format!(
                r#"{{"active":true,"sub":"a",{base},"nbf":{}.5,"iat":{}.25}}"#,
                n - 5,
                n - 5
            ),
            "exp-fraction" => {
                format!(r#"{{"active":true,"sub":"a",{base},"exp":{}.5}}"#, n + 600)
            }
            "exp-past-fraction" => {
                format!(r#"{{"active":true,"sub":"a",{base},"exp":{}.5}}"#, n - 100)
            }
            "iat-future" => {
                format!(r#"{{"active":true,"sub":"a",{base},"iat":{}}}"#, n + 3600)
            }
            "wrong-iss" => {
                r#"{"active":true,"sub":"a","iss":"https://evil.test","aud":"api","token_type":"Bearer"}"#
                    .to_owned()
            }
            "no-iss" => r#"{"active":true,"sub":"a","aud":"api","token_type":"Bearer"}"#.to_owned(),
            "wrong-aud" => r#"{"active":true,"sub":"a","iss":"https://idp.test","aud":["x","y"],"token_type":"Bearer"}"#.to_owned(),
            "aud-string" => r#"{"active":true,"sub":"a","iss":"https://idp.test","aud":"api","token_type":"bearer"}"#.to_owned(),
            "wrong-type" => r#"{"active":true,"sub":"a","iss":"https://idp.test","aud":"api","token_type":"refresh_token"}"#.to_owned(),
            "no-type" => r#"{"active":true,"sub":"a","iss":"https://idp.test","aud":"api"}"#.to_owned(),
            "empty-sub" => format!(r#"{{"active":true,"sub":"",{base},"username":"bob"}}"#),
            "blank-username" => format!(r#"{{"active":true,"username":"  ",{base}}}"#),
            "huge" => format!(
                r#"{{"active":true,"sub":"a",{base},"pad":"{}"}}"#,
                "x".repeat(70 * 1024)
            ),
            _ => r#"{"active":false}"#.to_owned(),
        };
        (200, answer)
    })
}

fn introspection_config(origin: &Origin, server: &MockServer) -> String {
    format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "o"
auth = "api"

[auth.brute_force]
enabled = false

[auth.introspection.idp]
endpoint = "{url}"
client_id = "gateway"
client_secret = "s3cr3t"
ca_file = "{ca}"
timeout = "2s"
issuer = "https://idp.test"
audiences = ["api"]
token_types = ["bearer"]

[auth.policies.api]
type = "introspection"
providers = ["idp"]
headers = {{ "x-user-id" = "sub" }}
"#,
        upstream = upstream("o", &[origin.addr], ""),
        url = server.url("/introspect"),
        ca = server.ca_file.display(),
    )
}

#[tokio::test]
async fn introspection_answers_are_read_strictly() {
    let origin = Origin::start("o").await;
    let server = MockServer::start(idp()).await;
    let (_proxy, addr) = start(&introspection_config(&origin, &server), Path::new(".")).await;

    // Refusals: (token, status). Broken answers fail closed (503), answers
    // that are well-formed but do not allow this token are 401.
    let refused = [
        ("dup-active", 503),
        ("dup-nested", 503),
        ("dup-escaped", 503),
        ("huge", 503),
        ("nbf-future", 401),
        ("iat-future", 401),
        ("exp-past-fraction", 401),
        ("wrong-iss", 401),
        ("no-iss", 401),
        ("wrong-aud", 401),
        ("wrong-type", 401),
        ("no-type", 401),
        ("empty-sub", 401),
        ("blank-username", 401),
        ("unknown", 401),
    ];
    for (token, status) in refused {
        let r = get(addr, "/api/x", &bearer(token)).await;
        assert_eq!(r.status, status, "{token}: {}", r.body);
        assert!(!r.body.contains(token), "{token} echoed");
        if status == 401 {
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.contains("invalid_token")),
                "{token}: {}",
                r.head
            );
        }
    }
    assert!(
        origin.requests().is_empty(),
        "a refused token was forwarded"
    );

    // Accepted: fractional NumericDates, aud as string or array, token_type
    // in any case.
    for token in ["good", "exp-fraction", "nbf-fraction", "aud-string"] {
        let r = get(addr, "/api/x", &bearer(token)).await;
        assert_eq!(r.status, 200, "{token}: {}", r.body);
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].headers["x-user-id"], "alice");
    assert!(seen[1..].iter().all(|s| s.headers["x-user-id"] == "a"));
}

#[tokio::test]
async fn introspection_without_expectations_still_refuses_duplicates_and_future_nbf() {
    let origin = Origin::start("o").await;
    let server = MockServer::start(idp()).await;
    let toml = introspection_config(&origin, &server)
        .replace("issuer = \"https://idp.test\"\n", "")
        .replace("audiences = [\"api\"]\n", "")
        .replace("token_types = [\"bearer\"]\n", "");
    let (_proxy, addr) = start(&toml, Path::new(".")).await;
    for (token, status) in [
        ("dup-active", 503),
        ("nbf-future", 401),
        ("wrong-iss", 200),
        ("no-type", 200),
    ] {
        let r = get(addr, "/api/x", &bearer(token)).await;
        assert_eq!(r.status, status, "{token}: {}", r.body);
    }
    assert_eq!(origin.requests().len(), 2);
}

#[test]
fn introspection_config_errors_point_at_the_file() {
    let base = "[auth.introspection.i]\nendpoint = \"https://i.test/\"\nclient_id = \"g\"\nclient_secret = \"s\"\n";
    for (extra, text) in [
        ("issuer = \"\"\n", "issuer must not be empty"),
        ("audiences = [\"\"]\n", "audiences must not contain"),
        ("token_types = [\"a b\"]\n", "token_types must be"),
        ("max_answer_bytes = 100\n", "max_answer_bytes must be"),
        ("leeway = \"1h\"\n", "leeway above 5m"),
        ("audience = [\"a\"]\n", "unknown field `audience`"),
    ] {
        let e = Config::parse(&format!("{base}{extra}"), "gw.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("gw.toml:") && e.contains(text),
            "{extra} => {e}"
        );
        let loc: Vec<&str> = e.splitn(4, ':').collect();
        assert!(
            loc[1].parse::<usize>().is_ok() && loc[2].parse::<usize>().is_ok(),
            "{e}"
        );
    }
}

// ---- Classes 7 and 8: what validation sees --------------------------------

fn validation_config(origin: &Origin) -> String {
    format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "o"

[[routes]]
id = "v1"
path_prefix = "/v1/"
rewrite_prefix = "/"
upstream = "o"

[[routes]]
id = "orders"
path = "/orders"
upstream = "o"

[[validation.rules]]
route = "public"
method = "GET"
path_template = "/public/users/{{id}}"
additional_query = false
[validation.rules.path.id]
type = "integer"
minimum = 1
[validation.rules.query.limit]
type = "integer"
maximum = 100
[validation.rules.query.price]
type = "number"
maximum = 100

[[validation.rules]]
route = "v1"
path_template = "/items/{{name}}"
[validation.rules.path.name]
pattern = "[a-z ]+"

[[validation.rules]]
route = "orders"
method = "POST"
body_schema = {{ type = "object", required = ["qty"], properties = {{ qty = {{ type = "integer", maximum = 100 }}, price = {{ type = "number", maximum = 100 }}, ref = {{ type = "integer", minimum = 0 }} }} }}
"#,
        upstream = upstream("o", &[origin.addr], ""),
    )
}

#[tokio::test]
async fn head_gets_the_get_rules() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&validation_config(&origin), Path::new(".")).await;
    for path in [
        "/public/users/abc?limit=1000",
        "/public/users/abc",
        "/public/users/1?limit=1000",
        "/public/users/1?other=1",
    ] {
        let r = send(addr, "HEAD", path, "", "").await;
        assert_eq!(r.status, 400, "HEAD {path}");
    }
    assert!(
        origin.requests().is_empty(),
        "an invalid HEAD was forwarded"
    );
    let r = send(addr, "HEAD", "/public/users/1?limit=10", "", "").await;
    assert_eq!(r.status, 200);
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("HEAD", "/public/users/1?limit=10")
    );
}

#[tokio::test]
async fn path_parameters_come_from_the_normalized_forwarded_path() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&validation_config(&origin), Path::new(".")).await;
    // Refused: a template never matches part of a longer path, and a value
    // is decoded once before its type is checked.
    for path in [
        "/public/users/1%20OR%201=1/public/users/1",
        "/public/users/1%20OR%201=1",
        "/public/users/abc/public/users/1",
        "/public/x/public/users/1",
        "/public/users/1/extra",
        "/public/users/%2531",
        "/public/users/0",
        "/public/users/-1",
    ] {
        let r = get(addr, path, "").await;
        assert_eq!(r.status, 400, "GET {path}: {}", r.body);
    }
    assert!(
        origin.requests().is_empty(),
        "an invalid path was forwarded"
    );

    // Accepted, and forwarded as the normalized path that was validated.
    for (path, forwarded) in [
        ("/public/users/%31", "/public/users/1"),
        ("/public/users//1", "/public/users/1"),
        ("/public//users/./1", "/public/users/1"),
        ("/public/users/1/", "/public/users/1/"),
        (
            "/public/users/99999999999999999999",
            "/public/users/99999999999999999999",
        ),
    ] {
        let r = get(addr, path, "").await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert_eq!(origin.requests().last().unwrap().uri, forwarded, "{path}");
    }

    // With rewrite_prefix the template describes the upstream's path.
    let r = get(addr, "/v1/items/ab%20c", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(origin.requests().last().unwrap().uri, "/items/ab%20c");
    let before = origin.requests().len();
    for path in [
        "/v1/items/AB",
        "/v1/items/a%2Fb",
        "/v1/x/items/ab",
        "/v1/items/%FF",
    ] {
        let r = get(addr, path, "").await;
        assert_eq!(r.status, 400, "GET {path}: {}", r.body);
    }
    assert_eq!(origin.requests().len(), before);
}

#[tokio::test]
async fn query_numbers_are_compared_exactly() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&validation_config(&origin), Path::new(".")).await;
    for q in [
        "limit=101",
        "limit=99999999999999999999",
        "limit=100.0",
        "price=100.00000000000000001",
        "price=1E400",
        "price=1e3",
    ] {
        let r = get(addr, &format!("/public/users/1?{q}"), "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    assert!(origin.requests().is_empty());
    for q in [
        "limit=100",
        "limit=-99999999999999999999",
        "price=100",
        "price=100.0",
        "price=1e2",
        "price=99.99999999999999999",
        "price=-0",
    ] {
        let r = get(addr, &format!("/public/users/1?{q}"), "").await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
    }
    assert_eq!(origin.requests().len(), 7);
}

#[tokio::test]
async fn body_numbers_are_compared_exactly_and_forwarded_byte_for_byte() {
    let origin = Origin::start("o").await;
    let (_proxy, addr) = start(&validation_config(&origin), Path::new(".")).await;
    let ct = "Content-Type: application/json\r\n";
    let refused = [
        r#"{"qty":100.00000000000000001}"#,
        r#"{"qty":99.99999999999999999}"#,
        r#"{"qty":1E400}"#,
        r#"{"qty":101}"#,
        r#"{"qty":99999999999999999999}"#,
        r#"{"qty":1,"price":100.00000000000000001}"#,
        r#"{"qty":1,"price":1E400}"#,
        r#"{"qty":1,"ref":-99999999999999999999}"#,
        // Looks like a number to serde_json's Value; an object to the backend.
        r#"{"qty":{"$serde_json::private::Number":"1"}}"#,
    ];
    for body in refused {
        let r = send(addr, "POST", "/orders", ct, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    assert!(
        origin.requests().is_empty(),
        "an invalid body was forwarded"
    );
    let accepted = [
        r#"{"qty":100}"#,
        r#"{"qty":100.0}"#,
        r#"{"qty":1e2}"#,
        r#"{"qty":-0}"#,
        r#"{"qty":1,"price":99.99999999999999999}"#,
        r#"{"qty":1,"ref":99999999999999999999}"#,
        r#"{"qty":1,"ref":123456789012345678901234567890}"#,
    ];
    for body in accepted {
        let r = send(addr, "POST", "/orders", ct, body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        assert_eq!(
            origin.requests().last().unwrap().body,
            body.as_bytes(),
            "not forwarded byte for byte"
        );
    }
}

#[tokio::test]
async fn openapi_head_uses_the_get_operation() {
    let origin = Origin::start("o").await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let toml = format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "users.getUser"
path_prefix = "/users/"
upstream = "o"

[[routes]]
id = "users.listUsers"
path = "/users"
upstream = "o"

[[validation.openapi]]
file = "openapi-3.0.json"
route_prefix = "users."
"#,
        upstream = upstream("o", &[origin.addr], ""),
    );
    let (_proxy, addr) = start(&toml, &fixtures).await;
    let id = "6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10";
    for path in [
        "/users/not-a-uuid".to_owned(),
        "/users?limit=1000".to_owned(),
        format!("/users/{id}/x/users/{id}"),
    ] {
        let r = send(addr, "HEAD", &path, "", "").await;
        assert_eq!(r.status, 400, "HEAD {path}");
    }
    assert!(origin.requests().is_empty());
    for path in [format!("/users/{id}"), "/users?limit=5".to_owned()] {
        let r = send(addr, "HEAD", &path, "", "").await;
        assert_eq!(r.status, 200, "HEAD {path}");
    }
    assert_eq!(origin.requests().len(), 2);
}
