//! `[[validation.openapi]]`: the checked-in OpenAPI 3.0 and 3.1 fixtures
//! turned into rules, `$ref`s included.

use std::path::{Path, PathBuf};

use gateway::{
    config::Config,
    validate::{Rejection, RouteValidator, Validators},
};
use http::{HeaderValue, Method, StatusCode, request::Parts};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(toml: &str) -> Result<Validators, String> {
    let config = Config::parse(toml, "gw.toml").map_err(|e| e.to_string())?;
    Validators::from_config(&config.validation, &fixtures()).map_err(|e| e.to_string())
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn body(v: &RouteValidator, ct: &'static str, body: &Value) -> Result<(), Rejection> {
    v.check_body(
        Some(&HeaderValue::from_static(ct)),
        body.to_string().as_bytes(),
    )
}

fn pointers(r: &Rejection) -> Vec<String> {
    r.violations()
        .iter()
        .map(|v| v.pointer().to_owned())
        .collect()
}

const V30: &str = r#"
[[validation.openapi]]
file = "openapi-3.0.json"
route_prefix = "users."
max_body_bytes = 2048
"#;

const RID: (&str, &str) = ("x-request-id", "6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10");

#[test]
fn openapi_30_body_with_refs() {
    let vs = load(V30).unwrap();
    assert_eq!(vs.len(), 3);
    let create = vs.for_route("users.createUser", &Method::POST).unwrap();
    assert_eq!(create.body_limit(), Some(2048));
    let ct = "application/json";
    let ok = json!({"name": "Ada", "email": "ada@example.com", "nickname": null,
                    "phone": "+14155550123", "age": 3, "address": {"city": "London"}});
    body(create, ct, &ok).unwrap();

    let r = body(create, ct, &json!({"name": "Ada"})).unwrap_err();
    assert_eq!(
        (r.status(), pointers(&r)),
        (StatusCode::BAD_REQUEST, vec!["/email".to_owned()])
    );
    // $ref to a second component schema.
    let r = body(
        create,
        ct,
        &json!({"name": "A", "email": "a@example.com", "address": {}}),
    )
    .unwrap_err();
    assert_eq!(pointers(&r), ["/address/city"]);
    // Formats, additionalProperties, draft-4 boolean exclusiveMinimum.
    let r = body(
        create,
        ct,
        &json!({"name": "A", "email": "nope", "phone": "+١٢٣٤٥٦٧",
                                     "age": 0, "admin": true}),
    )
    .unwrap_err();
    let mut got = pointers(&r);
    got.sort();
    assert_eq!(got, ["/admin", "/age", "/email", "/phone"]);
    // nullable only where declared.
    let r = body(create, ct, &json!({"name": null, "email": "a@example.com"})).unwrap_err();
    assert_eq!(pointers(&r), ["/name"]);
    // Required body.
    assert_eq!(
        create.check_body(None, b"").unwrap_err().reason(),
        "missing_body"
    );
}

#[test]
fn openapi_30_parameters() {
    let vs = load(V30).unwrap();
    let create = vs.for_route("users.createUser", &Method::POST).unwrap();
    // Header parameter through $ref to components/parameters.
    let r = create
        .check_head(&head("POST", "/users", &[]), &[])
        .unwrap_err();
    assert_eq!(pointers(&r), ["/x-request-id"]);
    let r = create
        .check_head(&head("POST", "/users", &[("x-request-id", "123")]), &[])
        .unwrap_err();
    assert_eq!(pointers(&r), ["/x-request-id"]);
    create
        .check_head(&head("POST", "/users", &[RID]), &[])
        .unwrap();

    let list = vs.for_route("users.listUsers", &Method::GET).unwrap();
    list.check_head(
        &head("GET", "/users?limit=5&sort=name&active=false&x=1", &[]),
        &[],
    )
    .unwrap();
    for uri in [
        "/users?limit=0",
        "/users?limit=101",
        "/users?limit=1.5",
        "/users?sort=x",
        "/users?active=1",
    ] {
        let r = list.check_head(&head("GET", uri, &[]), &[]).unwrap_err();
        assert_eq!(r.reason(), "invalid_params", "{uri}");
        assert_eq!(r.violations().len(), 1, "{uri}: {r:?}");
    }

    // Path-item level parameter.
    let get = vs.for_route("users.getUser", &Method::GET).unwrap();
    let id = |v: &str| [("id".to_owned(), v.to_owned())];
    get.check_head(&head("GET", "/users/x", &[]), &id(RID.1))
        .unwrap();
    let r = get
        .check_head(&head("GET", "/users/x", &[]), &id("42"))
        .unwrap_err();
    assert_eq!(pointers(&r), ["/id"]);
    let r = get
        .check_head(&head("GET", "/users/x", &[]), &[])
        .unwrap_err();
    assert_eq!(pointers(&r), ["/id"]);
}

const V31: &str = r#"
[[validation.openapi]]
file = "openapi-3.1.json"
route_prefix = "orders."
additional_query = false
routes = { "/orders/{orderId}" = "order-by-id" }
"#;

#[test]
fn openapi_31() {
    let vs = load(V31).unwrap();
    let create = vs.for_route("orders.createOrder", &Method::POST).unwrap();
    let ct = "application/json";
    let ok = json!({"id": "6f1c2a1e-8d3b-4c55-9a0e-2b7f4c1d9e10", "placed_at": "2026-11-25T10:00:00Z",
                    "callback": "https://example.com/cb", "client_ip": "192.0.2.7",
                    "items": [{"sku": "ABC-1234", "quantity": 2}], "total": 9.5});
    body(create, ct, &ok).unwrap();
    let bad = json!({"id": "nope", "placed_at": "2026-11-25", "callback": "::",
                     "client_ip": "1.2.3", "items": [{"sku": "ABC-١٢٣٤", "quantity": 0}, {}],
                     "total": 0});
    let r = body(create, ct, &bad).unwrap_err();
    let mut got = pointers(&r);
    got.sort();
    assert_eq!(
        got,
        [
            "/callback",
            "/client_ip",
            "/id",
            "/items/0/quantity",
            "/items/0/sku",
            "/items/1/quantity",
            "/items/1/sku",
            "/placed_at",
            "/total"
        ]
    );

    // Route named through `routes`, merge-patch+json body, optional body.
    let patch = vs.for_route("order-by-id", &Method::PATCH).unwrap();
    assert!(patch.check_body(None, b"").is_ok());
    body(
        patch,
        "application/merge-patch+json",
        &json!({"note": null}),
    )
    .unwrap();
    let r = body(patch, "application/merge-patch+json", &json!({"note": 5})).unwrap_err();
    assert_eq!(pointers(&r), ["/note"]);
    let r = body(patch, "text/plain", &json!({})).unwrap_err();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let oid = |v: &str| [("orderId".to_owned(), v.to_owned())];
    patch
        .check_head(&head("PATCH", "/orders/3?dryRun=true", &[]), &oid("3"))
        .unwrap();
    let r = patch
        .check_head(&head("PATCH", "/orders/0", &[]), &oid("0"))
        .unwrap_err();
    assert_eq!(pointers(&r), ["/orderId"]);
    let r = patch
        .check_head(
            &head("PATCH", "/orders/3?dryRun=maybe&extra=1", &[]),
            &oid("3"),
        )
        .unwrap_err();
    assert_eq!(pointers(&r), ["/dryRun", "/extra"]);
}

#[test]
fn openapi_errors() {
    let e = load("[[validation.openapi]]\nfile = \"nope.json\"\n")
        .err()
        .unwrap();
    assert!(
        e.starts_with("gw.toml:1:") && e.contains("nope.json"),
        "{e}"
    );
    let e = load("[[validation.openapi]]\nfile = \"user.schema.json\"\n")
        .err()
        .unwrap();
    assert!(e.contains("only 3.0.x and 3.1.x"), "{e}");
    let e = load(
        "[[validation.openapi]]\nfile = \"openapi-3.1.json\"\nroutes = { \"/nope\" = \"x\" }\n",
    )
    .err()
    .unwrap();
    assert!(e.contains("/nope"), "{e}");
    // PATCH /orders/{orderId} has no operationId.
    let e = load("[[validation.openapi]]\nfile = \"openapi-3.1.json\"\n")
        .err()
        .unwrap();
    assert!(
        e.contains("PATCH /orders/{orderId}") && e.contains("operationId"),
        "{e}"
    );
    // The same route and method from a TOML rule and a document.
    let e = load(&format!(
        "{V30}\n[[validation.rules]]\nroute = \"users.getUser\"\nmethod = \"GET\"\n"
    ))
    .err()
    .unwrap();
    assert!(
        e.contains("users.getUser") && e.contains("second rule"),
        "{e}"
    );
}

#[test]
fn unsupported_parameter_is_an_error_naming_the_operation() {
    let dir = std::env::temp_dir().join(format!("gw-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {
        "/search": {"get": {"operationId": "search", "parameters": [
            {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}}
        ], "responses": {}}}}});
    std::fs::write(dir.join("api.json"), doc.to_string()).unwrap();
    let config = Config::parse("[[validation.openapi]]\nfile = \"api.json\"\n", "gw.toml").unwrap();
    let e = Validators::from_config(&config.validation, &dir)
        .err()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(e.route(), Some("search"));
    let e = e.to_string();
    assert!(
        e.contains("GET /search") && e.contains("tags") && e.contains("not supported"),
        "{e}"
    );
}
