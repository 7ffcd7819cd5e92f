//! Hand-written `[[validation.rules]]`: a config parsed from TOML, compiled,
//! and requests checked the way the proxy will check them.

use std::path::Path;

use gateway::{
    config::Config,
    validate::{Rejection, RouteValidator, Validators},
};
use http::{HeaderValue, Method, StatusCode, request::Parts};
use serde_json::Value;

const CONFIG: &str = r#"
[xdp]
enabled = false

[validation]
max_depth = 32

[[validation.rules]]
route = "users-v1"
method = "POST"
max_body_bytes = 4096
body_schema = { type = "object", required = ["name", "email"], properties = { name = { type = "string", maxLength = 40 }, age = { type = "integer" }, email = { type = "string", format = "email" }, phone = { type = "string", format = "phone" }, id = { type = "string", format = "uuid" }, born = { type = "string", format = "date-time" }, site = { type = "string", format = "uri" }, ip4 = { type = "string", format = "ipv4" }, ip6 = { type = "string", format = "ipv6" }, tags = { type = "array", items = { type = "string", maxLength = 3 } } } }

[validation.rules.headers.x-request-id]
required = true
format = "uuid"

[[validation.rules]]
route = "users-v1"
method = "GET"
additional_query = false

[validation.rules.query.limit]
type = "integer"
minimum = 1
maximum = 100

[validation.rules.query.sort]
enum = ["name", "created"]

[validation.rules.query.code]
pattern = "[A-Z]{3}-[0-9]{4}"
max_length = 12

[validation.rules.query.active]
type = "boolean"

[validation.rules.path.id]
type = "integer"
minimum = 1

[[validation.rules]]
route = "files"
body_schema_file = "user.schema.json"
body_required = false
"#;

fn validators() -> Validators {
    let config = Config::parse(CONFIG, "gw.toml").expect("config parses");
    Validators::from_config(&config.validation, &fixtures()).expect("rules compile")
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn json_ct() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

fn post(v: &RouteValidator, body: &str) -> Result<(), Rejection> {
    v.check_body(Some(&json_ct()), body.as_bytes())
}

fn problem(r: &Rejection) -> Value {
    serde_json::from_slice(&r.problem_json()).expect("problem+json is JSON")
}

fn pointers(r: &Rejection) -> Vec<String> {
    r.violations()
        .iter()
        .map(|v| v.pointer().to_owned())
        .collect()
}

#[test]
fn valid_body_passes() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    assert_eq!(v.body_limit(), Some(4096));
    let body = r#"{"name":"Ada","email":"ada@example.com","age":36,"phone":"+14155550123",
        "id":"6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10","born":"1815-12-10T08:00:00Z",
        "site":"https://example.com/ada","ip4":"192.0.2.1","ip6":"2001:db8::1","tags":["a"]}"#;
    post(v, body).unwrap();
}

#[test]
fn missing_field_and_wrong_type_have_pointers() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let r = post(v, r#"{"email":"a@example.com"}"#).unwrap_err();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.reason(), "invalid_body");
    assert_eq!(pointers(&r), ["/name"]);
    let p = problem(&r);
    assert_eq!(p["status"], 400);
    assert_eq!(p["errors"][0]["pointer"], "/name");

    let r = post(v, r#"{"name":"x","email":"a@example.com","age":"old"}"#).unwrap_err();
    assert_eq!(pointers(&r), ["/age"]);
    assert!(r.violations()[0].message().contains("integer"), "{r:?}");
}

#[test]
fn formats_are_enforced() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let with = |field: &str, value: &str| {
        let body = serde_json::json!({"name": "x", "email": "a@example.com", field: value});
        post(v, &body.to_string())
    };
    for (field, bad) in [
        ("email", "not-an-email"),
        ("email", "a@@example.com"),
        ("id", "6f1c2a1e-8d3b-4c55-9a0e"),
        ("id", "6f1c2a1e8d3b4c559a0e2b7f4c1d9e10zz"),
        ("born", "2024-13-01T00:00:00Z"),
        ("born", "yesterday"),
        ("phone", "14155550123"),
        ("phone", "+0123456"),
        ("phone", "+١٢٣٤٥٦٧"),
        ("phone", "+1234567890123456"),
        ("site", "not a uri"),
        ("ip4", "256.1.1.1"),
        ("ip6", "2001:db8:::1"),
    ] {
        let r = with(field, bad).expect_err(bad);
        assert_eq!(pointers(&r), [format!("/{field}")], "{bad}");
        assert!(
            r.violations()[0].message().starts_with("must be a valid"),
            "{r:?}"
        );
    }
    for (field, good) in [
        ("email", "first.last+tag@example.co.uk"),
        ("id", "6F1C2A1E-8D3B-4C55-9A0E-2B7F4C1D9E10"),
        ("born", "2024-02-29T23:59:59.5+02:00"),
        ("phone", "+442071838750"),
        ("phone", "+12"),
    ] {
        with(field, good).expect(good);
    }
}

#[test]
fn strict_json() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let r = post(v, r#"{"name":"a","email":"a@example.com","name":"b"}"#).unwrap_err();
    assert_eq!(
        (r.status(), r.reason()),
        (StatusCode::BAD_REQUEST, "duplicate_key")
    );
    assert_eq!(pointers(&r), ["/name"]);
    let r = post(v, r#"{"a":1,"a":2}"#).unwrap_err();
    assert_eq!(r.reason(), "duplicate_key");

    let deep = "[".repeat(1000) + &"]".repeat(1000);
    let r = post(v, &deep).unwrap_err();
    assert_eq!(
        (r.status(), r.reason()),
        (StatusCode::BAD_REQUEST, "too_deep")
    );

    let r = v
        .check_body(Some(&json_ct()), b"{\"name\":\"\xc3\x28\"}")
        .unwrap_err();
    assert_eq!(
        (r.status(), r.reason()),
        (StatusCode::BAD_REQUEST, "invalid_utf8")
    );

    let r = post(v, r#"{"name":"a","#).unwrap_err();
    assert_eq!(r.reason(), "malformed_json");
    let r = v.check_body(Some(&json_ct()), b"").unwrap_err();
    assert_eq!(r.reason(), "missing_body");
}

#[test]
fn size_limit_is_413() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let big = format!(
        r#"{{"name":"{}","email":"a@example.com"}}"#,
        "x".repeat(5000)
    );
    let r = post(v, &big).unwrap_err();
    assert_eq!(
        (r.status(), r.reason()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // Refused from the head already, before the body is read.
    let parts = head(
        "POST",
        "/users",
        &[
            ("content-length", "5000"),
            ("x-request-id", "6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10"),
        ],
    );
    let r = v.check_head(&parts, &[]).unwrap_err();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(&r)["status"], 413);
}

#[test]
fn media_type_is_415() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let body = br#"{"name":"a","email":"a@example.com"}"#;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let ct = ct.map(HeaderValue::from_static);
        let r = v.check_body(ct.as_ref(), body).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.reason(), "unsupported_media_type");
    }
    for ct in [
        "application/json; charset=utf-8",
        "application/problem+json",
    ] {
        v.check_body(Some(&HeaderValue::from_static(ct)), body)
            .expect(ct);
    }
}

#[test]
fn query_path_and_header_rules() {
    let vs = validators();
    let get = vs.for_route("users-v1", &Method::GET).unwrap();
    assert_eq!(get.body_limit(), None);
    let id = [("id".to_owned(), "7".to_owned())];
    let ok = head(
        "GET",
        "/users/7?limit=10&sort=name&code=ABC-1234&active=true",
        &[],
    );
    get.check_head(&ok, &id).unwrap();
    get.check_head(&head("GET", "/users/7", &[]), &id).unwrap();

    let fails = |uri: &str| {
        let r = get.check_head(&head("GET", uri, &[]), &id).unwrap_err();
        assert_eq!(
            (r.status(), r.reason()),
            (StatusCode::BAD_REQUEST, "invalid_params")
        );
        assert_eq!(problem(&r)["errors"][0]["in"], "query");
        r
    };
    assert_eq!(pointers(&fails("/u?limit=0")), ["/limit"]);
    assert_eq!(pointers(&fails("/u?limit=101")), ["/limit"]);
    assert_eq!(pointers(&fails("/u?limit=ten")), ["/limit"]);
    assert_eq!(pointers(&fails("/u?limit=1&limit=2")), ["/limit"]);
    assert_eq!(pointers(&fails("/u?sort=age")), ["/sort"]);
    assert_eq!(pointers(&fails("/u?code=abc-1234")), ["/code"]);
    // Anchored: a match inside a longer value is not enough.
    assert_eq!(pointers(&fails("/u?code=XABC-1234")), ["/code"]);
    // Arabic-Indic digits are not [0-9].
    assert_eq!(
        pointers(&fails("/u?code=ABC-%D9%A1%D9%A2%D9%A3%D9%A4")),
        ["/code"]
    );
    assert_eq!(pointers(&fails("/u?active=yes")), ["/active"]);
    assert_eq!(pointers(&fails("/u?other=1")), ["/other"]);

    let bad_id = [("id".to_owned(), "0".to_owned())];
    let r = get
        .check_head(&head("GET", "/users/0", &[]), &bad_id)
        .unwrap_err();
    assert_eq!(pointers(&r), ["/id"]);
    assert_eq!(problem(&r)["errors"][0]["in"], "path");

    let post = vs.for_route("users-v1", &Method::POST).unwrap();
    let r = post
        .check_head(&head("POST", "/users", &[]), &[])
        .unwrap_err();
    assert_eq!(pointers(&r), ["/x-request-id"]);
    assert_eq!(problem(&r)["errors"][0]["in"], "header");
    let r = post
        .check_head(&head("POST", "/users", &[("X-Request-Id", "nope")]), &[])
        .unwrap_err();
    assert_eq!(pointers(&r), ["/x-request-id"]);
    let good = [("x-request-id", "6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10")];
    post.check_head(&head("POST", "/users", &good), &[])
        .unwrap();
}

#[test]
fn routes_and_methods() {
    let vs = validators();
    assert!(vs.for_route("users-v1", &Method::DELETE).is_none());
    assert!(vs.for_route("nope", &Method::GET).is_none());
    // No method: every method of the route.
    let files = vs.for_route("files", &Method::PUT).unwrap();
    assert!(files.check_body(None, b"").is_ok(), "body_required = false");
    let ct = json_ct();
    let ok =
        br#"{"id":"6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10","email":"a@example.com","server":"::1"}"#;
    files.check_body(Some(&ct), ok).unwrap();
    // draft-07 schema from a file: uuid still enforced.
    let bad = br#"{"id":"123","email":"a@example.com"}"#;
    assert_eq!(
        pointers(&files.check_body(Some(&ct), bad).unwrap_err()),
        ["/id"]
    );
}

#[test]
fn problem_body_is_capped_and_never_echoes_input() {
    let vs = validators();
    let v = vs.for_route("users-v1", &Method::POST).unwrap();
    let secret = "S3CRET".repeat(100);
    let tags: Vec<&str> = (0..100).map(|_| "S3CRET").collect();
    let body = serde_json::json!({"name": secret, "email": secret, "phone": secret, "tags": tags});
    let r = post(v, &body.to_string()).unwrap_err();
    assert_eq!(r.violations().len(), 20);
    let text = String::from_utf8(r.problem_json()).unwrap();
    assert!(!text.contains("S3CRET"), "{text}");
    assert!(text.contains("more violation"), "{text}");
    assert!(text.len() < 20 * 400, "{}", text.len());

    // A long unknown key shows up only as a short pointer.
    let get = vs.for_route("users-v1", &Method::GET).unwrap();
    let uri = format!("/u?{}=1", "K".repeat(3000));
    let r = get
        .check_head(&head("GET", &uri, &[]), &[("id".into(), "1".into())])
        .unwrap_err();
    assert!(r.problem_json().len() < 600);
}

#[test]
fn invalid_schema_names_route_and_line() {
    let text = "[[validation.rules]]\nroute = \"orders\"\nmethod = \"POST\"\nbody_schema = { type = \"objekt\" }\n";
    let config = Config::parse(text, "gw.toml").unwrap();
    let e = Validators::from_config(&config.validation, Path::new("."))
        .err()
        .expect("an invalid schema is refused");
    assert_eq!(e.route(), Some("orders"));
    let msg = e.to_string();
    assert!(msg.starts_with("gw.toml:4:"), "{msg}");
    assert!(
        msg.contains("route `orders`") && msg.contains("invalid body schema"),
        "{msg}"
    );
}

#[test]
fn other_config_errors() {
    let compile = |text: &str| {
        let config = Config::parse(text, "gw.toml").expect("TOML parses");
        Validators::from_config(&config.validation, &fixtures())
            .err()
            .expect("refused")
            .to_string()
    };
    let e = compile(
        "[[validation.rules]]\nroute = \"r\"\n[validation.rules.query.n]\npattern = \"^\\\\d+$\"\n",
    );
    assert!(e.contains("gw.toml:1:") && e.contains("[0-9]"), "{e}");
    let e = compile(
        "[[validation.rules]]\nroute = \"r\"\n[validation.rules.query.n]\npattern = \"(\"\n",
    );
    assert!(e.contains("query.n"), "{e}");
    let e = compile("[[validation.rules]]\nroute = \"r\"\nbody_schema = { format = \"emial\" }\n");
    assert!(e.contains("emial"), "{e}");
    let e = compile(
        "[[validation.rules]]\nroute = \"r\"\n[validation.rules.query.n]\nformat = \"phone-ish\"\n",
    );
    assert!(e.contains("query.n"), "{e}");
    let e = compile("[[validation.rules]]\nroute = \"r\"\nbody_schema_file = \"missing.json\"\n");
    assert!(e.contains("missing.json"), "{e}");
    let e = compile("[[validation.rules]]\nroute = \"r\"\n[[validation.rules]]\nroute = \"r\"\n");
    assert!(e.contains("gw.toml:3:") && e.contains("second rule"), "{e}");
    let e = compile(
        "[[validation.rules]]\nroute = \"r\"\n[validation.rules.query.n]\ntype = \"integer\"\nminimum = 5\nmaximum = 1\n",
    );
    assert!(e.contains("minimum 5 is above maximum 1"), "{e}");
    let e = compile(
        "[[validation.rules]]\nroute = \"r\"\n[validation.rules.query.n]\ntype = \"integer\"\nenum = [\"a\"]\n",
    );
    assert!(e.contains("not of type integer"), "{e}");

    let e = Config::parse(
        "[[validation.rules]]\nroute = \"r\"\nbody_shema = {}\n",
        "gw.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("gw.toml:") && e.contains("body_shema"), "{e}");
}
