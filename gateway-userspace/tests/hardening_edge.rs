//! Hardening I, the HTTP edge (docs/security.md classes 1–5 and 8): Host and
//! authority, the request line and methods, paths, client-supplied proxy and
//! override headers, hop-by-hop headers, and request forms. Every example
//! input of the issue is a case here, with variants; each test asserts on
//! what the origin received (or that it received nothing).

mod proxy_common;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use gateway::{config::Config, escalate::Escalator, phases::build_engines, proxy::Proxy};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_common::*;
use tokio::net::TcpStream;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

/// Routes: `admin.example.com` (API key, sets `x-user-id`), `/api/` (API
/// key), `/public/` (open), `PURGE /purge/` (open) and a catch-all.
/// `top` goes before the first table (top-level keys), `extra` at the end.
/// Escalation needs `threshold` points (20 per malformed request).
fn config(origin: &Origin, top: &str, threshold: u32, extra: &str) -> Config {
    let toml = format!(
        r#"{top}
{PLAIN}
[[listeners]]
name = "tls"
address = "127.0.0.1:0"
tls = true

[tls]
self_signed = true

{upstream}
[[routes]]
id = "admin"
host = "admin.example.com"
path_prefix = "/"
upstream = "o"
auth = "key"

[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "o"
auth = "key"

[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "o"

[[routes]]
id = "purge"
path_prefix = "/purge/"
methods = ["PURGE"]
upstream = "o"

[[routes]]
id = "all"
path_prefix = "/"
upstream = "o"

[auth.api_keys.k]
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[escalation]
threshold = {threshold}

[xdp]
enabled = false

{extra}
"#,
        upstream = upstream("o", &[origin.addr], ""),
    );
    Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

struct Gw {
    _proxy: Proxy,
    addr: SocketAddr,
    tls: SocketAddr,
    esc: Arc<Escalator>,
    origin: Origin,
}

/// The gateway with escalation out of reach (the tests send many bad requests).
async fn start(extra: &str) -> Gw {
    start_with(1_000_000, extra).await
}

async fn start_with(threshold: u32, extra: &str) -> Gw {
    let origin = Origin::start("o").await;
    let config = config(&origin, "", threshold, extra);
    let esc = Arc::new(Escalator::new(config.escalation.clone(), vec![], None));
    let engines = build_engines(&config, std::path::Path::new("."), Some(esc.clone()), None)
        .expect("engines");
    let proxy = Proxy::start(&config, engines).await.expect("proxy starts");
    Gw {
        addr: proxy.local_addr("main").expect("main listener"),
        tls: proxy.local_addr("tls").expect("tls listener"),
        _proxy: proxy,
        esc,
        origin,
    }
}

/// One raw request (the caller writes every header, `Connection: close`
/// is appended).
async fn send(addr: SocketAddr, head: &str) -> RawResponse {
    let req = format!("{head}Connection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

fn assert_refused(r: &RawResponse, status: u16, origin: &Origin, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(
        origin.requests().is_empty(),
        "{what}: reached the origin: {:?}",
        origin.requests()
    );
}

// ---------------------------------------------------------------- class 1

#[tokio::test]
async fn missing_or_repeated_host_is_400_and_never_forwarded() {
    let gw = start("").await;
    for head in [
        "GET /public/x HTTP/1.1\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n",
        "GET /public/x HTTP/1.1\r\nHost: admin.example.com\r\nhost: public.example\r\n",
        "GET /public/x HTTP/1.1\r\nHost:\r\n",
        "GET /public/x HTTP/1.1\r\nHost: \r\n",
    ] {
        let r = send(gw.addr, head).await;
        assert_refused(&r, 400, &gw.origin, head);
        assert!(r.body.contains("bad_host"), "{head}: {}", r.body);
    }
    // HTTP/1.0 may omit Host (RFC 9112 §3.2): routed without a host.
    let r = send(gw.addr, "GET /public/x HTTP/1.0\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests().len(), 1);
}

#[tokio::test]
async fn malformed_hosts_are_400_and_never_routed() {
    let gw = start("").await;
    for host in [
        // The issue's examples.
        "admin.example.com@evil",
        "evil@admin.example.com",
        "admin.example.com,public",
        "admin.example.com/x",
        "a b",
        "[::1",
        // Variants.
        "admin.example.com:443@evil",
        "user:pw@admin.example.com",
        "admin.example.com, admin.example.com",
        "admin.example.com;x",
        "admin.example.com?x",
        "admin.example.com#x",
        "admin.example.com\\x",
        "admin%2eexample.com",
        "admin..example.com",
        ".admin.example.com",
        "admin.example.com:",
        "admin.example.com:0",
        "admin.example.com:99999",
        "admin.example.com:8o",
        "[::1]x",
        "[fe80::1%25eth0]",
        "0177.0.0.1",
        "2130706433",
        ":80",
    ] {
        let head = format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\n");
        let r = send(gw.addr, &head).await;
        assert_refused(&r, 400, &gw.origin, host);
    }
}

#[tokio::test]
async fn host_is_normalized_once_for_routing_and_forwarding() {
    let gw = start("").await;
    // Case and a trailing dot do not escape the admin route.
    for host in [
        "ADMIN.Example.COM",
        "admin.example.com.",
        "admin.example.com:8080",
    ] {
        let head = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n");
        assert_refused(&send(gw.addr, &head).await, 401, &gw.origin, host);
    }
    let r = send(
        gw.addr,
        "GET /x HTTP/1.1\r\nHost: Admin.Example.COM.:8080\r\nX-Api-Key: demo-key\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &gw.origin.requests()[0].headers;
    assert_eq!(h["host"], "admin.example.com:8080");
    assert_eq!(h["x-forwarded-host"], "admin.example.com:8080");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;proto=http;host=\"admin.example.com:8080\""
    );
    let r = send(gw.addr, "GET /public/x HTTP/1.1\r\nHost: [0:0::1]:80\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[1].headers["host"], "[::1]:80");
}

#[tokio::test]
async fn absolute_form_authority_replaces_host() {
    let gw = start("").await;
    let r = send(
        gw.addr,
        "GET http://evil.example/public/x HTTP/1.1\r\nHost: gw\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &gw.origin.requests()[0];
    assert_eq!(seen.uri, "/public/x");
    // One value: the target's authority, for Host and X-Forwarded-Host.
    assert_eq!(seen.headers["host"], "evil.example");
    assert_eq!(seen.headers["x-forwarded-host"], "evil.example");
    // The authority is what is routed on: the admin route applies.
    let r = send(
        gw.addr,
        "GET http://ADMIN.example.com/x HTTP/1.1\r\nHost: public.example\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(gw.origin.requests().len(), 1);
    // And it is validated like a Host.
    for head in [
        "GET http://evil@admin.example.com/x HTTP/1.1\r\nHost: gw\r\n",
        "GET http://admin.example.com@evil/x HTTP/1.1\r\nHost: gw\r\n",
        "GET http://admin.example.com:0/x HTTP/1.1\r\nHost: gw\r\n",
        "GET ftp://admin.example.com/x HTTP/1.1\r\nHost: gw\r\n",
        // HTTP/1.1 still needs exactly one well-formed Host.
        "GET http://evil.example/public/x HTTP/1.1\r\n",
        "GET http://evil.example/public/x HTTP/1.1\r\nHost: a,b\r\n",
    ] {
        let r = send(gw.addr, head).await;
        assert_eq!(r.status, 400, "{head}: {r:?}");
        assert_eq!(gw.origin.requests().len(), 1, "{head}");
    }
}

#[tokio::test]
async fn redirect_listener_uses_the_validated_host() {
    let toml =
        "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\nredirect_https_port = 8443\n";
    let (_p, addr) = proxy(toml).await;
    let r = send(addr, "GET /p?q=1 HTTP/1.1\r\nHost: A.Example.:8080\r\n").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://a.example:8443/p?q=1")
    );
    for head in [
        "GET /p HTTP/1.1\r\nHost: a.example@evil.example\r\n",
        "GET /p HTTP/1.1\r\nHost: evil.example/x\r\n",
        "GET /p HTTP/1.1\r\nHost: a.example\r\nHost: evil.example\r\n",
        "GET /p HTTP/1.1\r\n",
    ] {
        let r = send(addr, head).await;
        assert_eq!(r.status, 400, "{head}: {r:?}");
        assert!(r.header("location").is_none());
    }
}

/// An HTTP/2 connection over TLS (ALPN h2) to the gateway.
async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = tls_connect(addr, "localhost", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, String) {
    let resp = send.send_request(req).await.expect("h2 response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn h2_host_that_differs_from_authority_is_400() {
    let gw = start("").await;
    let mut c = h2(gw.tls).await;
    // The issue's example, and variants (case, port, repeated host).
    for hosts in [
        &["admin.example.com"][..],
        &["LOCALHOST:8443"],
        &["localhost", "localhost"],
        &["localhost@admin.example.com"],
    ] {
        let mut req = http::Request::get("https://localhost/public/x");
        for h in hosts {
            req = req.header("host", *h);
        }
        let (status, body) = h2_send(&mut c, req.body(Full::default()).unwrap()).await;
        assert_eq!(status, 400, "{hosts:?}: {body}");
        assert!(gw.origin.requests().is_empty(), "{hosts:?}");
    }
    // A host equal to :authority after normalization is fine; the upstream
    // gets the one normalized value.
    let req = http::Request::get("https://LocalHost./public/x")
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut c, req).await.0, 200);
    assert_eq!(gw.origin.requests()[0].headers["host"], "localhost");
    // :authority alone is routed on: the admin route applies.
    let req = http::Request::get("https://admin.example.com/x")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut c, req).await.0, 401);
    assert_eq!(gw.origin.requests().len(), 1);
}

// ---------------------------------------------------------------- class 2

#[tokio::test]
async fn long_methods_are_501_and_never_forwarded() {
    let gw = start("").await;
    let long = "A".repeat(10_000);
    let r = send(
        gw.addr,
        &format!("{long} /public/x HTTP/1.1\r\nHost: t\r\n"),
    )
    .await;
    assert_refused(&r, 501, &gw.origin, "10,000-byte method");
    let r = send(
        gw.addr,
        &format!("{} /public/x HTTP/1.1\r\nHost: t\r\n", "B".repeat(33)),
    )
    .await;
    assert_refused(&r, 501, &gw.origin, "33-byte method");
    // A custom method within the limit is a token like any other.
    let m = "C".repeat(32);
    let r = send(gw.addr, &format!("{m} /public/x HTTP/1.1\r\nHost: t\r\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].method, m);
}

#[tokio::test]
async fn non_token_methods_are_400() {
    let gw = start("").await;
    for m in ["GE(T", "GET/", "G\"ET", "GÉT"] {
        let r = send(gw.addr, &format!("{m} /public/x HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, m);
    }
}

#[tokio::test]
async fn method_limit_is_configurable() {
    let gw = start("[limits]\nmax_method_length = 8\n").await;
    let r = send(gw.addr, "PROPPATCH /public/x HTTP/1.1\r\nHost: t\r\n").await;
    assert_refused(&r, 501, &gw.origin, "9-byte method, limit 8");
    assert_eq!(
        send(gw.addr, "OPTIONS /public/x HTTP/1.1\r\nHost: t\r\n")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn case_variants_of_known_methods_are_400() {
    let gw = start("").await;
    // Standard methods, and PURGE, which a route lists.
    for m in [
        "post", "get", "Get", "gEt", "delete", "Options", "patch", "purge", "Purge",
    ] {
        let r = send(gw.addr, &format!("{m} /purge/x HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, m);
    }
    // An unknown lowercase method is a method of its own (case-sensitive).
    let r = send(gw.addr, "frobnicate /public/x HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].method, "frobnicate");
    // Over HTTP/2 too.
    let mut c = h2(gw.tls).await;
    let req = http::Request::builder()
        .method(http::Method::from_bytes(b"post").unwrap())
        .uri("https://localhost/api/x")
        .body(Full::from("{}"))
        .unwrap();
    assert_eq!(h2_send(&mut c, req).await.0, 400);
    assert_eq!(gw.origin.requests().len(), 1);
}

// ---------------------------------------------------------------- class 3

#[tokio::test]
async fn escaped_slashes_are_400_by_default() {
    let gw = start("").await;
    for path in [
        "/public/..%2Fapi/echo",
        "/public/..%2fapi/echo",
        "/public/%2e%2e%2Fapi/echo",
        "/public/..%5Capi/echo",
        "/public/..%5capi/echo",
        "/public/a%2Fb",
    ] {
        let r = send(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, path);
        assert!(r.body.contains("bad_path"), "{path}: {}", r.body);
    }
    // A literal backslash is refused by hyper or by the gateway, never forwarded.
    let r = send(gw.addr, "GET /public/..\\api/echo HTTP/1.1\r\nHost: t\r\n").await;
    assert_refused(&r, 400, &gw.origin, "raw backslash");
}

#[tokio::test]
async fn escaped_slashes_keep_forwards_them_encoded() {
    let gw = start("[limits]\nescaped_slashes = \"keep\"\n").await;
    let r = send(gw.addr, "GET /public/..%2fapi/echo HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].uri, "/public/..%2Fapi/echo");
}

#[tokio::test]
async fn escaped_slashes_decode_routes_what_the_backend_sees() {
    let gw = start("[limits]\nescaped_slashes = \"decode\"\n").await;
    // Decoded before dot segments: this is /api/echo, behind auth.
    let r = send(gw.addr, "GET /public/..%2Fapi/echo HTTP/1.1\r\nHost: t\r\n").await;
    assert_refused(&r, 401, &gw.origin, "decoded traversal");
    let r = send(gw.addr, "GET /public/a%2Fb%5Cc HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].uri, "/public/a/b/c");
}

#[tokio::test]
async fn fragment_in_the_target_is_400() {
    let gw = start("").await;
    for target in [
        "/api/x#y",
        "/public/x#",
        "/public/x?a=1#frag",
        "/public/#/../api/x",
    ] {
        let r = send(gw.addr, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, target);
    }
    // On a keep-alive connection only the request with the fragment fails.
    let r = raw(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /public/b#c HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /public/d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(" 400 Bad Request"), "{}", r.body);
    let uris: Vec<String> = gw.origin.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/public/a", "/public/d"]);
}

#[tokio::test]
async fn encoded_control_characters_are_400() {
    let gw = start("").await;
    for path in [
        "/public/a%00b",
        "/public/a%0a",
        "/public/a%0D%0Ab",
        "/public/a%1f",
        "/public/a%7F",
        "/public/a%09",
    ] {
        let r = send(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, path);
    }
    let gw = start("[limits]\nescaped_controls = \"keep\"\n").await;
    let r = send(gw.addr, "GET /public/a%00b HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].uri, "/public/a%00b");
}

// ---------------------------------------------------------------- class 4

/// Every header of the family, forged by the client.
const FORGED: &[&str] = &[
    "x-real-ip",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "true-client-ip",
    "x-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Variants.
    "x-forwarded-protocol",
    "x-forwarded-uri",
    "x-original-uri",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "front-end-https",
    "x-url-scheme",
    "x-original-host",
];

fn forged_lines() -> String {
    FORGED.iter().map(|h| format!("{h}: 6.6.6.6\r\n")).collect()
}

#[tokio::test]
async fn client_proxy_and_override_headers_never_reach_the_upstream() {
    let gw = start("").await;
    let r = send(
        gw.addr,
        &format!("GET /public/x HTTP/1.1\r\nHost: t\r\n{}", forged_lines()),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &gw.origin.requests()[0].headers;
    for name in FORGED.iter().filter(|n| **n != "x-real-ip") {
        assert!(h.get(*name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(
        h.get_all("x-real-ip").iter().collect::<Vec<_>>(),
        ["127.0.0.1"]
    );
}

#[tokio::test]
async fn method_override_cannot_turn_a_get_into_a_post() {
    let gw = start("").await;
    let body = r#"{"admin":true}"#;
    let req = format!(
        "GET /public/x HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: POST\r\n\
         X-Method-Override: PUT\r\nX-HTTP-Method: DELETE\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let r = raw(gw.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = gw.origin.requests();
    assert_eq!(seen[0].method, "GET");
    for h in [
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
    ] {
        assert!(seen[0].headers.get(h).is_none(), "{h} forwarded");
    }
}

#[tokio::test]
async fn trusted_proxies_keep_the_forwarded_family_but_never_overrides() {
    let origin = Origin::start("o").await;
    let config = config(
        &origin,
        "trusted_proxies = [\"127.0.0.1/32\"]",
        1_000_000,
        "",
    );
    let proxy = Proxy::start(&config, gateway::proxy::Engines::default())
        .await
        .unwrap();
    let addr = proxy.local_addr("main").unwrap();
    let r = send(
        addr,
        &format!(
            "GET /public/x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n{}",
            forged_lines()
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &origin.requests()[0].headers;
    assert_eq!(h["x-forwarded-prefix"], "6.6.6.6");
    assert_eq!(h["true-client-ip"], "6.6.6.6");
    assert_eq!(h["x-real-ip"], "203.0.113.7", "the client the chain names");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
    ] {
        assert!(
            h.get(name).is_none(),
            "{name} forwarded from a trusted peer"
        );
    }
}

// ---------------------------------------------------------------- class 5

#[tokio::test]
async fn connection_cannot_remove_headers_the_gateway_sets() {
    let gw = start("").await;
    for connection in [
        "x-user-id",
        "close, x-request-id",
        "x-user-id, x-request-id, x-forwarded-for, x-forwarded-proto, x-forwarded-host, forwarded, x-real-ip, traceparent, host",
        "X-User-Id",
    ] {
        let r = raw(
            gw.addr,
            format!(
                "GET /api/x HTTP/1.1\r\nHost: t\r\nX-Api-Key: demo-key\r\n\
                 Connection: {connection}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{connection}: {r:?}");
        let seen = gw.origin.requests().pop().unwrap();
        let h = &seen.headers;
        assert_eq!(h["x-user-id"], "client-1", "{connection}");
        let id = r.header("x-request-id").unwrap();
        assert_eq!(h["x-request-id"], id.as_str(), "{connection}");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{connection}");
        assert_eq!(h["x-real-ip"], "127.0.0.1", "{connection}");
        assert_eq!(h["host"], "t", "{connection}");
        assert!(h.get("forwarded").is_some(), "{connection}");
        assert!(h.get("traceparent").is_some(), "{connection}");
        assert!(h.get("connection").is_none());
    }
}

#[tokio::test]
async fn connection_still_removes_what_the_client_sent() {
    let gw = start("").await;
    let r = send(
        gw.addr,
        "GET /public/x HTTP/1.1\r\nHost: t\r\nX-Hop: 1\r\nX-Kept: 1\r\nKeep-Alive: timeout=5\r\n\
         Connection: x-hop\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &gw.origin.requests()[0].headers;
    assert!(h.get("x-hop").is_none());
    assert!(h.get("keep-alive").is_none());
    assert_eq!(h["x-kept"], "1");
}

// ---------------------------------------------------------------- class 8

#[tokio::test]
async fn trace_and_connect_are_405_and_never_forwarded() {
    // Eight refusals at 20 points each would pass 100 if they were offences.
    let gw = start_with(100, "").await;
    let heads = [
        "TRACE /public/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody",
        "TRACE /public/x HTTP/1.1\r\nHost: t\r\n",
        "TRACE * HTTP/1.1\r\nHost: t\r\n",
        "CONNECT admin.example.com:443 HTTP/1.1\r\nHost: admin.example.com:443\r\n",
    ];
    for head in heads.iter().chain(&heads) {
        let req = if head.ends_with("body") {
            head.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
        } else {
            format!("{head}Connection: close\r\n\r\n")
        };
        let r = raw(gw.addr, req.as_bytes()).await;
        assert_refused(&r, 405, &gw.origin, head);
        let allow = r.header("allow").unwrap_or_default();
        assert!(allow.contains("GET") && !allow.contains("TRACE"), "{allow}");
    }
    // `trace` is a case variant: 400.
    let r = send(gw.addr, "trace /public/x HTTP/1.1\r\nHost: t\r\n").await;
    assert_refused(&r, 400, &gw.origin, "trace");
    // Not an offence.
    assert!(gw.esc.l7_blocked("127.0.0.1".parse().unwrap()).is_none());
}

#[tokio::test]
async fn trace_is_forwarded_when_allowed() {
    let gw = start("[limits]\nallow_trace = true\n").await;
    let r = send(gw.addr, "TRACE /public/x HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests()[0].method, "TRACE");
}

#[tokio::test]
async fn options_asterisk_is_answered_by_the_gateway_and_never_an_offence() {
    // The default threshold: five malformed requests escalate.
    let gw = start_with(100, "").await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    for _ in 0..10 {
        let r = send(gw.addr, "OPTIONS * HTTP/1.1\r\nHost: t\r\n").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("allow").as_deref(),
            Some("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH")
        );
        assert_eq!(r.header("content-length").as_deref(), Some("0"));
        assert!(r.body.is_empty());
    }
    assert!(gw.origin.requests().is_empty(), "OPTIONS * was forwarded");
    assert!(gw.esc.l7_blocked(client).is_none(), "OPTIONS * escalated");
    // Control: the asterisk-form with another method is malformed, and five
    // malformed requests (20 points each) do escalate.
    for _ in 0..5 {
        let r = send(gw.addr, "GET * HTTP/1.1\r\nHost: t\r\n").await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    assert!(gw.esc.l7_blocked(client).is_some());
    assert!(gw.origin.requests().is_empty());
}

#[tokio::test]
async fn h2_requests_follow_the_same_rules() {
    let gw = start("").await;
    let mut c = h2(gw.tls).await;
    let req = |method: &str, uri: &str| {
        http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
    };
    for (r, want) in [
        (req("TRACE", "https://localhost/public/x"), 405),
        (req("CONNECT", "https://localhost/public/x"), 405),
        (req(&"A".repeat(100), "https://localhost/public/x"), 501),
        (req("Get", "https://localhost/public/x"), 400),
        (req("GET", "https://localhost/public/..%2Fapi/echo"), 400),
        (req("GET", "https://localhost/public/a%00"), 400),
        (req("GET", "https://user@localhost/public/x"), 400),
        (req("GET", "https://localhost:0/public/x"), 400),
        (req("GET", "ftp://localhost/public/x"), 400),
    ] {
        let r = r.body(Full::default()).unwrap();
        let what = format!("{} {}", r.method(), r.uri());
        let (status, body) = h2_send(&mut c, r).await;
        assert_eq!(status, want, "{what}: {body}");
    }
    assert!(
        gw.origin.requests().is_empty(),
        "{:?}",
        gw.origin.requests()
    );
    // Client claims are removed over HTTP/2 too.
    let r = req("GET", "https://localhost/public/x")
        .header("x-http-method-override", "DELETE")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-prefix", "/admin")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut c, r).await.0, 200);
    let h = &gw.origin.requests()[0].headers;
    assert!(h.get("x-http-method-override").is_none());
    assert!(h.get("x-forwarded-prefix").is_none());
    assert_eq!(h["x-real-ip"], "127.0.0.1");
}

// ------------------------------------------- review: framing scanner desync

/// The URIs the origin received, in order.
fn uris(origin: &Origin) -> Vec<String> {
    origin.requests().into_iter().map(|s| s.uri).collect()
}

/// What follows a request on a keep-alive connection: a fragment, CL+TE
/// smuggling and a plain request. None of it may reach the origin unless
/// the scanner followed the connection.
const FOLLOW_UPS: &str = "GET /public#x HTTP/1.1\r\nHost: t\r\n\r\n\
    POST /public/smuggled HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\
    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX\
    GET /public/after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn upgrade_that_is_not_a_websocket_closes_the_connection() {
    let gw = start("").await;
    for upgrade in ["foo", "h2c", "websocket", "WebSocket, foo"] {
        // `Upgrade` without `Connection: upgrade` (or not a WebSocket) is
        // answered normally, then the connection is closed: nothing after
        // it is parsed as a request.
        let before = gw.origin.requests().len();
        let r = raw(
            gw.addr,
            format!("GET /public/up HTTP/1.1\r\nHost: t\r\nUpgrade: {upgrade}\r\n\r\n{FOLLOW_UPS}")
                .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{upgrade}: {r:?}");
        assert_eq!(
            r.header("connection").as_deref(),
            Some("close"),
            "{upgrade}"
        );
        assert!(
            !r.body.contains("HTTP/1.1"),
            "{upgrade}: a second answer: {}",
            r.body
        );
        let seen = gw.origin.requests();
        assert_eq!(seen.len(), before + 1, "{upgrade}: {seen:?}");
        assert_eq!(seen[before].uri, "/public/up");
        assert!(seen[before].headers.get("upgrade").is_none());
    }
    // HTTP/1.0 keep-alive with Upgrade too.
    let r = raw(
        gw.addr,
        format!("GET /public/up10 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nUpgrade: foo\r\n\r\n{FOLLOW_UPS}").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.body.contains("HTTP/1.1"), "a second answer: {}", r.body);
    assert_eq!(
        uris(&gw.origin).last().map(String::as_str),
        Some("/public/up10")
    );
    assert!(
        !uris(&gw.origin)
            .iter()
            .any(|u| u.contains("smuggled") || u.contains("after"))
    );
}

#[tokio::test]
async fn connect_closes_the_connection_after_its_405() {
    let gw = start("").await;
    for target in ["t:443", "/public/x", "http://t/public/x"] {
        let r = raw(
            gw.addr,
            format!("CONNECT {target} HTTP/1.1\r\nHost: t:443\r\n\r\n{FOLLOW_UPS}").as_bytes(),
        )
        .await;
        assert!(r.status == 405 || r.status == 400, "{target}: {r:?}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{target}");
        assert!(
            !r.body.contains("HTTP/1.1"),
            "{target}: a second answer: {}",
            r.body
        );
    }
    assert!(gw.origin.requests().is_empty(), "{:?}", uris(&gw.origin));
}

#[tokio::test]
async fn bare_lf_heads_keep_the_scanner_in_step() {
    let gw = start("").await;
    // `\n\r\n` and `\n\n` end a head for hyper (httparse); the scanner
    // ends it at the same byte, so the next requests are still checked.
    for head in [
        "GET /public/a HTTP/1.1\nHost: t\n\r\n",
        "GET /public/a HTTP/1.1\nHost: t\n\n",
        "\r\n\nGET /public/a HTTP/1.1\r\nHost: t\n\r\n",
    ] {
        let before = gw.origin.requests().len();
        let r = raw(gw.addr, format!("{head}{FOLLOW_UPS}").as_bytes()).await;
        assert_eq!(r.status, 200, "{head:?}: {r:?}");
        // The fragment is 400, the CL+TE request 400 and the connection
        // closed: only the first request reached the origin.
        assert!(r.body.contains(" 400 Bad Request"), "{head:?}: {}", r.body);
        let got: Vec<String> = uris(&gw.origin).split_off(before);
        assert_eq!(got, ["/public/a"], "{head:?}");
    }
    // Bare-LF heads with a body, then a fragment: still refused.
    let before = gw.origin.requests().len();
    let r = raw(
        gw.addr,
        b"POST /public/b HTTP/1.1\nHost: t\nContent-Length: 3\n\nabc\
          GET /public/c#x HTTP/1.1\nHost: t\n\n\
          GET /public/d HTTP/1.1\nHost: t\nConnection: close\n\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(" 400 Bad Request"), "{}", r.body);
    assert_eq!(
        uris(&gw.origin).split_off(before),
        ["/public/b", "/public/d"]
    );
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_keep_the_scanner_in_step() {
    let gw = start("").await;
    let r = raw(
        gw.addr,
        b"POST /public/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3 ;ext=\"v\"\r\nabc\r\n0;last\r\nX-Trailer: 1\r\n\r\n\
          POST /public/b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi\
          GET /public/c#x HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /public/d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(" 400 Bad Request"), "{}", r.body);
    let seen = gw.origin.requests();
    let got: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(got, ["/public/a", "/public/b", "/public/d"]);
    assert_eq!(seen[0].body, b"abc");
    assert_eq!(seen[1].body, b"hi");
}

#[tokio::test]
async fn slow_head_is_408_after_a_bare_lf_request() {
    use tokio::io::AsyncWriteExt as _;
    let gw = start("[limits]\nheader_read_timeout = \"300ms\"\n").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /public/a HTTP/1.1\nHost: t\n\r\nGET /public/b HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let r = read_all(&mut s).await;
    assert!(r.body.contains("408 Request Timeout"), "{r:?}");
    assert_eq!(uris(&gw.origin), ["/public/a"]);
}

// ------------------------------- review: Connection vs framing, claim families

#[tokio::test]
async fn connection_cannot_remove_content_length_before_the_413() {
    use tokio::io::AsyncWriteExt as _;
    for extra in ["", "[limits]\nrequest_buffering = false\n"] {
        let gw = start(extra).await;
        for connection in [
            "content-length",
            "Content-Length, close",
            "keep-alive, CONTENT-LENGTH",
        ] {
            // 1.1 MB declared (the default limit is 1 MiB); a part is sent.
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            s.write_all(
                format!(
                    "POST /public/up HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\
                     Content-Length: 1100000\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let _ = s.write_all(&[b'a'; 64 * 1024]).await;
            let r = read_all(&mut s).await;
            assert_eq!(r.status, 413, "{extra:?} {connection}: {r:?}");
            assert!(
                gw.origin.requests().is_empty(),
                "{extra:?} {connection}: streamed upstream"
            );
        }
        // A small body keeps its Content-Length (and Content-Type) upstream.
        let r = raw(
            gw.addr,
            b"POST /public/small HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
             Connection: content-length, content-type, host, close\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert_eq!(r.status, 200, "{extra:?}: {r:?}");
        let seen = gw.origin.requests().pop().unwrap();
        assert_eq!(seen.body, b"hello");
        assert_eq!(seen.headers["content-length"], "5", "{extra:?}");
        assert_eq!(seen.headers["content-type"], "text/plain", "{extra:?}");
        assert!(seen.headers.get("transfer-encoding").is_none(), "{extra:?}");
    }
}

/// Client-sent fields of the claim families, in other spellings.
const UNDERSCORE_CLAIMS: &[&str] = &[
    "X_Original_URL",
    "X_HTTP_Method_Override",
    "X_Forwarded_Prefix",
    "True_Client_IP",
    "X_Real_IP",
    "X_User_Id",
    "x_forwarded_for",
    "X-Forwarded_Host",
    "X_Request_Id",
];

#[tokio::test]
async fn underscore_spellings_of_claims_never_reach_the_upstream() {
    let gw = start("[limits]\nunderscore_headers = \"allow\"\n").await;
    let lines: String = UNDERSCORE_CLAIMS
        .iter()
        .map(|h| format!("{h}: 6.6.6.6\r\n"))
        .collect();
    for (path, key) in [("/public/x", ""), ("/api/x", "X-Api-Key: demo-key\r\n")] {
        let r = send(
            gw.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{key}{lines}X_Kept_Field: 1\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let h = gw.origin.requests().pop().unwrap().headers;
        for (name, value) in &h {
            assert!(
                !value.as_bytes().starts_with(b"6.6.6.6"),
                "{path}: {name} reached the upstream"
            );
        }
        assert_eq!(h["x_kept_field"], "1", "{path}: unrelated underscores stay");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        if key.is_empty() {
            assert!(h.get("x-user-id").is_none());
        } else {
            assert_eq!(h["x-user-id"], "client-1");
        }
    }
}

/// Fields of the proxy family (by prefix or name) an untrusted client may
/// not send: TLS terminators, Envoy, forward-auth proxies, REMOTE_USER.
const PROXY_FAMILY: &[&str] = &[
    "X-Forwarded-Client-Cert",
    "X-Forwarded-Method",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Envoy-Original-Path",
    "X-Envoy-Internal",
    "X-SSL-Client-Verify",
    "X-SSL-Client-DN",
    "SSL-Client-Cert",
    "X-Client-Cert",
    "X-Client-Verify",
    "X-Remote-User",
    "Remote-User",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-WEBAUTH-USER",
];

#[tokio::test]
async fn proxy_family_prefixes_never_reach_the_upstream_from_clients() {
    let gw = start("").await;
    let lines: String = PROXY_FAMILY
        .iter()
        .map(|h| format!("{h}: forged\r\n"))
        .collect();
    let r = send(
        gw.addr,
        &format!("GET /public/x HTTP/1.1\r\nHost: t\r\n{lines}X-Envoyish: kept\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = gw.origin.requests().pop().unwrap().headers;
    for name in PROXY_FAMILY {
        assert!(h.get(*name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(h["x-envoyish"], "kept");
}

// ------------------------------------- review: OPTIONS *, cookies, schemes

#[tokio::test]
async fn server_wide_options_over_h2_and_absolute_form_is_the_gateways() {
    let gw = start_with(100, "").await;
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut c = h2(gw.tls).await;
    for _ in 0..6 {
        let uri = http::Uri::builder()
            .scheme("https")
            .authority("localhost")
            .path_and_query("*")
            .build()
            .unwrap();
        let req = http::Request::builder()
            .method("OPTIONS")
            .uri(uri)
            .body(Full::default())
            .unwrap();
        let resp = c.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["allow"],
            "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
        );
    }
    for target in ["http://t", "http://t:80", "HTTP://t"] {
        let r = send(
            gw.addr,
            &format!("OPTIONS {target} HTTP/1.1\r\nHost: t\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert!(r.header("allow").is_some(), "{target}");
    }
    assert!(gw.origin.requests().is_empty(), "{:?}", uris(&gw.origin));
    assert!(
        gw.esc.l7_blocked(client).is_none(),
        "server-wide OPTIONS escalated"
    );
    // `OPTIONS http://t/` is a request for `/`: forwarded.
    let r = send(gw.addr, "OPTIONS http://t/public/ HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(uris(&gw.origin), ["/public/"]);
}

#[tokio::test]
async fn h2_cookies_are_joined_and_schemes_are_case_insensitive() {
    let gw = start("").await;
    let mut c = h2(gw.tls).await;
    let req = http::Request::get("https://localhost/public/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(&mut c, req).await.0, 200);
    let seen = gw.origin.requests().pop().unwrap();
    assert_eq!(
        seen.headers.get_all("cookie").iter().collect::<Vec<_>>(),
        ["a=1; b=2; c=3"]
    );
    for uri in ["HTTPS://localhost/public/s", "Https://localhost/public/s"] {
        let req = http::Request::get(uri).body(Full::default()).unwrap();
        let (status, body) = h2_send(&mut c, req).await;
        assert_eq!(status, 200, "{uri}: {body}");
    }
    let r = send(gw.addr, "GET HTTP://t/public/h1 HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.origin.requests().len(), 4);
}

// --------------------------------------------- review: ';' path parameters

#[tokio::test]
async fn path_parameters_are_400_by_default() {
    let gw = start("").await;
    for path in [
        "/api;/x",
        "/api;jsessionid=1/x",
        "/public/..;/api/x",
        "/public/%2e%2e;/api/x",
        "/public/%2E%2E;x=1/api/x",
        "/public/.;/x",
        "/public/a;b",
        "/public/x;",
    ] {
        let r = send(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, path);
    }
    // An encoded semicolon is data to Tomcat and Jetty: forwarded encoded.
    let r = send(gw.addr, "GET /public/a%3Bb%3bc HTTP/1.1\r\nHost: t\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(uris(&gw.origin), ["/public/a%3Bb%3Bc"]);
}

#[tokio::test]
async fn kept_path_parameters_never_carry_dot_segments() {
    let gw = start("[limits]\npath_parameters = \"keep\"\n").await;
    for path in [
        "/public/..;/api/x",
        "/public/..;x=1/api/x",
        "/public/%2e%2e;/api/x",
        "/public/.;/api/x",
        "/public/;x/../api/x",
        "/public//;/x",
    ] {
        let r = send(gw.addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n")).await;
        assert_refused(&r, 400, &gw.origin, path);
    }
    let r = send(
        gw.addr,
        "GET /public/cars;color=red/x HTTP/1.1\r\nHost: t\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(uris(&gw.origin), ["/public/cars;color=red/x"]);
}

/// Class 8: over HTTP/2 (h2c and TLS with ALPN h2) `Expect: 100-continue`
/// gets its `100` as soon as the gateway reads the body (as over
/// HTTP/1.1), so the client does not wait out its own expect timeout.
/// Before: hyper's HTTP/2 server never sent it.
#[tokio::test]
async fn h2_expect_100_continue_gets_its_100_before_the_body() {
    let gw = start("").await;
    let plain = TcpStream::connect(gw.addr).await.unwrap();
    expect_continue_over_h2(plain, &gw, "h2c").await;
    let tls = tls_connect(gw.tls, "localhost", &[b"h2"]).await;
    expect_continue_over_h2(tls, &gw, "TLS h2").await;
}

async fn expect_continue_over_h2<S>(io: S, gw: &Gw, what: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::{future::poll_fn, time::Duration};
    let before = gw.origin.requests().len();
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("https://t/public/upload")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (mut resp, mut body) = client.send_request(req, false).unwrap();
    let interim = tokio::time::timeout(
        Duration::from_millis(500),
        poll_fn(|cx| resp.poll_informational(cx)),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no 100 Continue within 500 ms"))
    .unwrap_or_else(|| panic!("{what}: a final response came instead of 100"))
    .unwrap();
    assert_eq!(interim.status(), 100, "{what}");
    body.send_data(Bytes::from_static(b"hello"), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200, "{what}");
    let seen = gw.origin.requests();
    assert_eq!(seen.len(), before + 1, "{what}");
    assert_eq!(seen[before].body, b"hello", "{what}");
    assert!(
        !seen[before].headers.contains_key("expect"),
        "{what}: Expect was forwarded"
    );

    // Refused before the body is read (no API key): the 401 comes without
    // a 100, and nothing reaches the origin.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post("https://t/api/upload")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .body(())
        .unwrap();
    let (mut resp, _body) = client.send_request(req, false).unwrap();
    let interim = tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| resp.poll_informational(cx)),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer to the unauthenticated upload"));
    assert!(interim.is_none(), "{what}: 100 sent before a refusal");
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 401, "{what}");
    assert_eq!(gw.origin.requests().len(), before + 1, "{what}");

    // No body to come (END_STREAM on HEADERS): no 100, as over HTTP/1.1.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("https://t/public/nobody")
        .header("expect", "100-continue")
        .body(())
        .unwrap();
    let (mut resp, _) = client.send_request(req, true).unwrap();
    let interim = tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| resp.poll_informational(cx)),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer to the bodiless request"));
    assert!(
        interim.is_none(),
        "{what}: 100 sent for a request without a body"
    );
    assert_eq!(resp.await.unwrap().status(), 200, "{what}");
}
