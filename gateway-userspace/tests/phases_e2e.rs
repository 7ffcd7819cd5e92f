//! The auth, rate-limit and escalation phases through the real proxy, with
//! a recording origin: what the client gets back, and what the origin saw
//! (or never saw). XDP is off here, so escalation blocks at L7; the
//! privileged test `tests/tests/escalation_xdp.rs` covers the kernel path.

mod proxy_common;

use std::sync::Arc;

use gateway::{config::Config, escalate::Escalator, phases::build_engines, proxy::Proxy};
use proxy_common::*;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";
/// SHA-256 of `other-key`.
const OTHER_HASH: &str = "580843d03d2216ff1a275d0991bad66e4d1af871171d929e9de604b7959f9bca";

fn config(origin: &Origin, extra: &str) -> Config {
    let toml = format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "o"
auth = "key"
rate_limits = ["tight"]

[[routes]]
id = "public"
path_prefix = "/pub/"
upstream = "o"

[auth.api_keys.k]
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}, {{ name = "client-2", sha256 = "{OTHER_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[[rate_limit.limits]]
name = "tight"
rate = "1r/m"
burst = 2
key = "identity"

[escalation]
threshold = 30
ttl_ladder = ["1h"]
{extra}

[xdp]
enabled = false
"#,
        upstream = upstream("o", &[origin.addr], ""),
    );
    Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

async fn start(config: &Config) -> (Proxy, std::net::SocketAddr, Arc<Escalator>) {
    let esc = Arc::new(Escalator::new(config.escalation.clone(), vec![], None));
    let engines =
        build_engines(config, std::path::Path::new("."), Some(esc.clone()), None).expect("engines");
    let proxy = Proxy::start(config, engines).await.expect("proxy starts");
    let addr = proxy.local_addr("main").expect("listener");
    (proxy, addr, esc)
}

#[tokio::test]
async fn auth_policy_protects_the_route_and_forwards_the_identity() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, _) = start(&config(&origin, "")).await;

    let r = get(addr, "/api/orders", "").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("ApiKey realm=\"gateway\"")
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let r = get(addr, "/api/orders", "X-Api-Key: not-the-key-4711\r\n").await;
    assert_eq!(r.status, 401);
    assert!(
        !r.body.contains("not-the-key-4711"),
        "credential echoed: {}",
        r.body
    );
    assert!(
        origin.seen().is_empty(),
        "an unauthenticated request reached the origin"
    );

    let r = get(
        addr,
        "/api/orders",
        "X-Api-Key: demo-key\r\nX-User-Id: admin\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(
        h.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["client-1"],
        "forged copy removed"
    );
    assert!(
        h.get("x-api-key").is_none(),
        "credential stripped before forwarding"
    );

    // A public route: no auth, but a forged identity header never passes.
    let r = get(addr, "/pub/x", "X-User-Id: admin\r\n").await;
    assert_eq!(r.status, 200);
    assert!(origin.seen()[1].headers.get("x-user-id").is_none());
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_never_forwards() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, _) = start(&config(&origin, "")).await;
    let key = "X-Api-Key: demo-key\r\n";
    // 1r/m with burst 2: three at once (NGINX semantics), then 429.
    for i in 0..3 {
        let r = get(addr, "/api/a", key).await;
        assert_eq!(r.status, 200, "request {i}");
        assert!(
            r.header("ratelimit-policy")
                .is_some_and(|v| v.contains("\"tight\";q=3;w=60")),
            "{}",
            r.head
        );
    }
    let r = get(addr, "/api/a", key).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        r.header("ratelimit").is_some_and(|v| v.contains("r=0")),
        "{}",
        r.head
    );
    assert_eq!(
        origin.seen().len(),
        3,
        "the rejected request reached the origin"
    );
}

#[tokio::test]
async fn identities_from_one_address_are_limited_separately() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, _) = start(&config(&origin, "")).await;
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/api/a", "X-Api-Key: demo-key\r\n").await.status,
            200
        );
    }
    assert_eq!(
        get(addr, "/api/a", "X-Api-Key: demo-key\r\n").await.status,
        429,
        "client-1 is out of budget"
    );
    // Same IP, another identity: its own bucket.
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/api/a", "X-Api-Key: other-key\r\n").await.status,
            200
        );
    }
    let ids: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| s.headers["x-user-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.iter().filter(|i| *i == "client-2").count(), 3);
}

#[tokio::test]
async fn escalated_source_is_turned_away_before_any_work() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, esc) = start(&config(&origin, "")).await;
    // Wrong keys weigh 10 points each; the third crosses the threshold 30.
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/api/a", "X-Api-Key: wrong\r\n").await.status,
            401
        );
    }
    assert!(esc.l7_blocked("127.0.0.1".parse().unwrap()).is_some());
    // Now even a valid request from that source is refused, unforwarded.
    let r = get(addr, "/api/a", "X-Api-Key: demo-key\r\n").await;
    assert_eq!(r.status, 429);
    assert!(r.body.contains("escalated"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(origin.seen().is_empty());
    assert_eq!(
        esc.escalations_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn missing_credentials_are_not_an_offence() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, esc) = start(&config(&origin, "")).await;
    for _ in 0..10 {
        assert_eq!(get(addr, "/api/a", "").await.status, 401);
    }
    assert!(esc.l7_blocked("127.0.0.1".parse().unwrap()).is_none());
}

#[test]
fn unknown_policy_or_limit_on_a_route_is_a_config_error() {
    let toml = format!(
        "{PLAIN}\n{}\n[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\nauth = \"nope\"\n[xdp]\nenabled = false\n",
        upstream("o", &["127.0.0.1:1".parse().unwrap()], "")
    );
    let e = Config::parse(&toml, "t.toml").unwrap_err().to_string();
    assert!(
        e.contains("auth policy 'nope'") && e.starts_with("t.toml:"),
        "{e}"
    );
    let toml = toml.replace("auth = \"nope\"", "rate_limits = [\"nope\"]");
    let e = Config::parse(&toml, "t.toml").unwrap_err().to_string();
    assert!(e.contains("rate limit 'nope'"), "{e}");
}

fn validated(origin: &Origin, threshold: u32) -> Config {
    let toml = format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "users"
path_prefix = "/users/"
upstream = "o"

[[routes]]
id = "web"
path_prefix = "/web/"
upstream = "o"
cors = {{ allowed_origins = ["https://app.example.com"], allowed_methods = ["GET", "PUT"], allowed_headers = ["content-type", "x-token"] }}
security_headers = {{ frame_options = "SAMEORIGIN" }}

[[validation.rules]]
route = "users"
method = "POST"
path_template = "/users/{{id}}"
body_schema = {{ type = "object", required = ["name", "email"], properties = {{ name = {{ type = "string", minLength = 1 }}, email = {{ type = "string", format = "email" }}, phone = {{ type = "string", format = "phone" }} }} }}
[validation.rules.path.id]
type = "integer"
minimum = 1

[escalation]
threshold = {threshold}

[xdp]
enabled = false
"#,
        upstream = upstream("o", &[origin.addr], ""),
    );
    Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

async fn post(addr: std::net::SocketAddr, path: &str, ct: &str, body: &str) -> RawResponse {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn validation_rejects_bad_input_before_the_upstream() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, _) = start(&validated(&origin, 1000)).await;
    let json = "application/json";
    let cases = [
        ("/users/1", json, r#"{"name":"a"}"#, 400, "/email"),
        (
            "/users/1",
            json,
            r#"{"name":"a","email":"not-an-email"}"#,
            400,
            "/email",
        ),
        (
            "/users/1",
            json,
            r#"{"name":"a","email":"a@example.com","phone":"+١٢٣٤٥٦٧"}"#,
            400,
            "/phone",
        ),
        (
            "/users/1",
            json,
            r#"{"name":"a","name":"b","email":"a@example.com"}"#,
            400,
            "repeated key",
        ),
        ("/users/1", json, r#"{"name":"a","#, 400, ""),
        (
            "/users/1",
            "text/plain",
            r#"{"name":"a","email":"a@example.com"}"#,
            415,
            "",
        ),
        (
            "/users/0",
            json,
            r#"{"name":"a","email":"a@example.com"}"#,
            400,
            "id",
        ),
        (
            "/users/abc",
            json,
            r#"{"name":"a","email":"a@example.com"}"#,
            400,
            "id",
        ),
    ];
    for (path, ct, body, status, needle) in cases {
        let r = post(addr, path, ct, body).await;
        assert_eq!(r.status, status, "{path} {ct} {body}: {}", r.body);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(r.body.contains(needle), "{body}: {}", r.body);
    }
    assert!(
        origin.seen().is_empty(),
        "a rejected request reached the origin"
    );

    let good = r#"{"name":"Ada","email":"ada@example.com","phone":"+4915112345678"}"#;
    let r = post(addr, "/users/7", json, good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        origin.seen()[0].body,
        good.as_bytes(),
        "the validated bytes are forwarded as sent"
    );
}

#[tokio::test]
async fn validation_failures_escalate() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, esc) = start(&validated(&origin, 15)).await;
    // 5 points each, threshold 15.
    for _ in 0..3 {
        assert_eq!(
            post(addr, "/users/1", "application/json", "{}")
                .await
                .status,
            400
        );
    }
    assert!(esc.l7_blocked("127.0.0.1".parse().unwrap()).is_some());
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway_and_headers_are_per_route() {
    let origin = Origin::start("o").await;
    let (_proxy, addr, _) = start(&validated(&origin, 1000)).await;
    let pre = "OPTIONS /web/x HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-Token\r\nConnection: close\r\n\r\n";
    let r = raw(addr, pre.as_bytes()).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert!(
        r.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("PUT"))
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    // A preflight from another origin gets no CORS headers.
    let evil = pre.replace("https://app.example.com", "https://evil.example");
    let r = raw(addr, evil.as_bytes()).await;
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(origin.seen().is_empty(), "preflights are never forwarded");

    let r = get(addr, "/web/x", "Origin: https://app.example.com\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("x-frame-options").as_deref(),
        Some("SAMEORIGIN"),
        "route override"
    );
    assert!(r.header("content-security-policy").is_some());
    let r = get(addr, "/users/x", "").await;
    assert_eq!(
        r.header("x-frame-options").as_deref(),
        Some("DENY"),
        "global default elsewhere"
    );
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn slowloris_is_an_offence() {
    use tokio::io::AsyncWriteExt as _;
    let origin = Origin::start("o").await;
    let mut config = config(&origin, "");
    config.limits.header_read_timeout = gateway::duration::NonZeroSpan::from_millis(500);
    config.escalation.threshold = 20;
    let (_proxy, addr, esc) = start(&config).await;
    // Half a request head, then nothing: 408 on the raw connection.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /pub/x HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let r = read_all(&mut s).await;
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(
        esc.l7_blocked("127.0.0.1".parse().unwrap()).is_some(),
        "slowloris not scored"
    );
}
