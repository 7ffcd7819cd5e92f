//! Hardening II (issue 14), classes 1, 2, 3 and 6, through the real proxy
//! in front of recording origins, with the access log written to a file:
//! every case asserts what the upstream received (request line and
//! headers, or nothing) and what the access log says.
//!
//! 1. The client address behind a trusted proxy (`X-Forwarded-For`,
//!    `Forwarded`), and who brute-force limits and escalation then hit.
//! 2. Credentials never reach the upstream, and one request carries one
//!    credential, once.
//! 3. Secrets never reach the access log (`;`, nested and double encoding).
//! 6. On CORS routes the gateway owns every `Access-Control-*` field.

mod proxy_common;

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use gateway::{
    config::Config,
    escalate::Escalator,
    observe::{AccessLog, Metrics, Observe},
    phases::build_engines,
    proxy::Proxy,
};
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use proxy_common::*;
use serde_json::Value;
use test_support::temp::TempDir;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";
/// SHA-256 of `other-key`.
const PARTNER_HASH: &str = "580843d03d2216ff1a275d0991bad66e4d1af871171d929e9de604b7959f9bca";
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// The proxy with auth, escalation and an access log file.
struct Gw {
    _proxy: Proxy,
    addr: SocketAddr,
    esc: Arc<Escalator>,
    log: PathBuf,
    access_log: Arc<AccessLog>,
    _dir: TempDir,
}

impl Gw {
    /// Access log lines so far, parsed.
    fn lines(&self) -> Vec<Value> {
        self.access_log.flush();
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The last access log line (written before the response is sent).
    fn last(&self) -> Value {
        self.lines().pop().expect("an access log line")
    }

    fn raw_log(&self) -> String {
        self.access_log.flush();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `top` goes before the first section (top-level keys), `extra` after.
/// `exempt_proxies`: trusted proxies are never escalated (as `gateway run`
/// sets it up); off, a test can show no offence is recorded at all.
async fn start(
    origin: SocketAddr,
    cors_origin: SocketAddr,
    top: &str,
    extra: &str,
    exempt_proxies: bool,
) -> Gw {
    let dir = TempDir::tagged("hardening-identity");
    let log = dir.0.join("access.log");
    let secret = dir.0.join("hmac.key");
    std::fs::write(&secret, HMAC_SECRET).unwrap();
    let toml = format!(
        r#"trusted_proxies = ["127.0.0.1/32"]
{top}
{PLAIN}
[log]
access_log = "{log}"

{o}
{r}
[[routes]]
id = "raw"
path_prefix = "/raw/"
upstream = "o"
auth = "keys"

[[routes]]
id = "either"
path_prefix = "/any/"
upstream = "o"
auth = "either"

[[routes]]
id = "open"
path_prefix = "/open/"
upstream = "o"

[[routes]]
id = "cors"
path_prefix = "/cors/"
upstream = "r"
[routes.cors]
allowed_origins = ["https://app.example"]
allow_credentials = true
expose_headers = ["x-request-id"]

[auth.api_keys.k]
query = "api_key"
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

[auth.api_keys.partner]
header = "x-partner-key"
keys = [{{ name = "partner-1", sha256 = "{PARTNER_HASH}" }}]

[auth.jwt.corp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["HS256"]
hmac_secret_files = [{{ path = "{secret}" }}]

[auth.policies.keys]
type = "api_key"
providers = ["k"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[auth.policies.partners]
type = "api_key"
providers = ["partner"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[auth.policies.users]
type = "jwt"
providers = ["corp"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[auth.policies.either]
type = "any"
of = ["keys", "partners", "users"]

{extra}

[xdp]
enabled = false
"#,
        log = log.display(),
        secret = secret.display(),
        o = upstream("o", &[origin], ""),
        r = upstream("r", &[cors_origin], ""),
    );
    let config = Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let never = if exempt_proxies {
        config.trusted_proxies.clone()
    } else {
        Vec::new()
    };
    let esc = Arc::new(Escalator::new(config.escalation.clone(), never, None));
    let mut engines = build_engines(&config, std::path::Path::new("."), Some(esc.clone()), None)
        .expect("engines");
    let access_log = Arc::new(AccessLog::open(&config.log, &["api_key".to_owned()]).unwrap());
    engines.observe = Observe {
        metrics: Arc::new(Metrics::new()),
        access_log: access_log.clone(),
    };
    let proxy = Proxy::start(&config, engines).await.expect("proxy starts");
    let addr = proxy.local_addr("main").expect("listener");
    Gw {
        _proxy: proxy,
        addr,
        esc,
        log,
        access_log,
        _dir: dir,
    }
}

/// An origin that answers every request with CORS fields of its own: it
/// reflects any `Origin` and allows credentials (a common misconfiguration).
struct Reflector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn reflector() -> Reflector {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let origin = req
                            .headers()
                            .get("origin")
                            .cloned()
                            .unwrap_or(http::HeaderValue::from_static("*"));
                        s.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            version: req.version(),
                            headers: req.headers().clone(),
                            body: Vec::new(),
                        });
                        let r = Response::builder()
                            .header("access-control-allow-origin", origin)
                            .header("access-control-allow-credentials", "true")
                            .header("access-control-expose-headers", "x-internal-secret")
                            .header("access-control-allow-methods", "DELETE, PUT")
                            .header("access-control-max-age", "86400")
                            .header("Access-Control-Allow-Headers", "*")
                            .body(Full::new(Bytes::from_static(b"reflected")))
                            .unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Reflector { addr, seen }
}

async fn setup(top: &str, extra: &str) -> (Gw, Origin, Reflector) {
    let origin = Origin::start("o").await;
    let r = reflector().await;
    let gw = start(origin.addr, r.addr, top, extra, true).await;
    (gw, origin, r)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn token(sub: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "iss": "https://issuer.test", "aud": "api", "sub": sub,
            "exp": now + 300, "iat": now,
        }),
        &jsonwebtoken::EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap()
}

// ---- Class 1: client IP behind trusted proxies ----

#[tokio::test]
async fn forwarded_for_names_the_client_in_every_spelling() {
    let (gw, origin, _r) = setup("", "").await;
    let cases = [
        // The issue's examples.
        ("garbage, 198.51.100.7", "198.51.100.7"),
        ("198.51.100.7:51234", "198.51.100.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        // Variants.
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("[::ffff:198.51.100.7]:8080", "198.51.100.7"),
        ("2001:db8::7", "2001:db8::7"),
        ("  198.51.100.7 ,, ", "198.51.100.7"),
        ("198.51.100.7, 127.0.0.1", "198.51.100.7"),
        ("unknown, 198.51.100.7", "198.51.100.7"),
    ];
    for (i, (xff, client)) in cases.iter().enumerate() {
        let r = get(gw.addr, "/open/x", &format!("X-Forwarded-For: {xff}\r\n")).await;
        assert_eq!(r.status, 200, "{xff}: {}", r.body);
        let line = gw.last();
        assert_eq!(line["client.ip"], *client, "{xff}");
        assert_eq!(line["source.ip"], "127.0.0.1", "{xff}");
        let seen = &origin.requests()[i];
        assert_eq!(seen.uri, "/open/x");
        // The chain goes on with the proxy appended, as NGINX's
        // $proxy_add_x_forwarded_for does.
        assert_eq!(
            seen.headers["x-forwarded-for"],
            format!("{}, 127.0.0.1", xff.trim()).as_str(),
            "{xff}"
        );
    }
    // Several header lines are one list: the last line's last entry first.
    let r = get(
        gw.addr,
        "/open/y",
        "X-Forwarded-For: 203.0.113.1\r\nX-Forwarded-For: 198.51.100.8\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.last()["client.ip"], "198.51.100.8");
    // No header: the trusted proxy itself is the client.
    assert_eq!(get(gw.addr, "/open/z", "").await.status, 200);
    assert_eq!(gw.last()["client.ip"], "127.0.0.1");
    // Forwarded is not read while client_ip_header is x-forwarded-for.
    let r = get(gw.addr, "/open/f", "Forwarded: for=203.0.113.9\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.last()["client.ip"], "127.0.0.1");
}

#[tokio::test]
async fn an_unparseable_stopping_point_is_400_and_nobody_is_blamed() {
    // Escalation on a hair trigger, trusted proxies NOT exempted: a 400 for
    // the chain must not count against anybody.
    let origin = Origin::start("o").await;
    let r = reflector().await;
    let gw = start(
        origin.addr,
        r.addr,
        "",
        "[escalation]\nthreshold = 5\nttl_ladder = [\"1h\"]\n",
        false,
    )
    .await;
    for xff in [
        "198.51.100.7, garbage",
        "garbage",
        "unknown",
        "_hidden",
        "010.1.1.1",
        "198.51.100.7:99999",
        "198.51.100.7:",
        "fe80::1%eth0",
        "[2001:db8::7",
        "proxy.example",
        "\"198.51.100.7\"",
        "198.51.100.7 198.51.100.8",
    ] {
        let r = get(gw.addr, "/open/x", &format!("X-Forwarded-For: {xff}\r\n")).await;
        assert_eq!(r.status, 400, "{xff}: {}", r.body);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert!(r.body.contains("bad_client_ip"), "{xff}: {}", r.body);
        assert!(
            !r.body.contains(xff),
            "the header is not echoed: {}",
            r.body
        );
        let line = gw.last();
        assert_eq!(line["gateway.reason"], "bad_client_ip", "{xff}");
        assert_eq!(line["client.ip"], "127.0.0.1", "{xff}");
        assert_eq!(line["http.response.status_code"], 400);
    }
    // A good line followed by a bad one: the bad one is reached first.
    let r = get(
        gw.addr,
        "/open/x",
        "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-For: junk\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(origin.requests().is_empty(), "nothing reached the upstream");
    // 13 x 400 and the proxy is neither escalated nor blocked...
    assert!(gw.esc.l7_blocked(ip("127.0.0.1")).is_none());
    // ...and its clients still get through.
    let r = get(gw.addr, "/open/ok", "X-Forwarded-For: 198.51.100.7\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn forwarded_header_follows_the_same_rules_when_configured() {
    let (gw, origin, _r) = setup("client_ip_header = \"forwarded\"", "").await;
    let cases = [
        ("for=garbage, for=198.51.100.7", "198.51.100.7"),
        ("for=\"198.51.100.7:51234\"", "198.51.100.7"),
        ("for=\"[2001:db8::7]:443\";proto=https", "2001:db8::7"),
        ("For=\"[::ffff:198.51.100.7]\"", "198.51.100.7"),
        ("for=198.51.100.7;by=_gw, for=127.0.0.1", "198.51.100.7"),
    ];
    for (fwd, client) in cases {
        let r = get(gw.addr, "/open/x", &format!("Forwarded: {fwd}\r\n")).await;
        assert_eq!(r.status, 200, "{fwd}: {}", r.body);
        assert_eq!(gw.last()["client.ip"], client, "{fwd}");
    }
    // X-Forwarded-For is ignored now (never combined).
    let r = get(gw.addr, "/open/x", "X-Forwarded-For: 203.0.113.5\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.last()["client.ip"], "127.0.0.1");
    let forwarded = origin.requests().len();
    for fwd in [
        "for=198.51.100.7, for=garbage",
        "for=unknown",
        "for=_hidden",
        "for=\"198.51.100.7",
        "proto=https",
        "for=198.51.100.7;for=198.51.100.8",
    ] {
        let r = get(gw.addr, "/open/x", &format!("Forwarded: {fwd}\r\n")).await;
        assert_eq!(r.status, 400, "{fwd}: {}", r.body);
        let line = gw.last();
        assert_eq!(line["gateway.reason"], "bad_client_ip", "{fwd}");
        assert_eq!(line["client.ip"], "127.0.0.1");
    }
    assert_eq!(origin.requests().len(), forwarded, "no 400 was forwarded");
}

#[tokio::test]
async fn brute_force_and_escalation_hit_the_client_behind_the_proxy() {
    // 25 failures x 10 points = the threshold: the attacker is escalated on
    // its 25th bad key (20 x 401, then 5 x 429 from the brute-force limit).
    let (gw, origin, _r) =
        setup("", "[escalation]\nthreshold = 250\nttl_ladder = [\"1h\"]\n").await;
    let attacker = "X-Forwarded-For: x, 198.51.100.9\r\n";
    let mut statuses = Vec::new();
    for i in 0..25 {
        let r = get(
            gw.addr,
            "/raw/a",
            &format!("{attacker}X-Api-Key: wrong-{i}\r\n"),
        )
        .await;
        statuses.push(r.status);
        assert_eq!(gw.last()["client.ip"], "198.51.100.9");
    }
    assert_eq!(statuses[..20], [401; 20]);
    assert_eq!(statuses[20..], [429; 5]);
    assert!(
        gw.esc.l7_blocked(ip("198.51.100.9")).is_some(),
        "the attacker is escalated"
    );
    assert!(gw.esc.l7_blocked(ip("127.0.0.1")).is_none());
    assert!(origin.requests().is_empty());
    // The attacker is now turned away even with a valid key...
    let r = get(
        gw.addr,
        "/raw/a",
        &format!("{attacker}X-Api-Key: demo-key\r\n"),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(gw.last()["gateway.reason"], "escalated");
    // ...while another client behind the same proxy, and the proxy itself,
    // are not affected.
    let r = get(
        gw.addr,
        "/raw/b",
        "X-Forwarded-For: 198.51.100.10\r\nX-Api-Key: demo-key\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.last()["client.ip"], "198.51.100.10");
    let r = get(gw.addr, "/raw/c", "X-Api-Key: demo-key\r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gw.last()["client.ip"], "127.0.0.1");
    let seen = origin.requests();
    assert_eq!(
        seen.iter().map(|s| s.uri.as_str()).collect::<Vec<_>>(),
        ["/raw/b", "/raw/c"]
    );
}

// ---- Class 2: credentials reaching the upstream ----

#[tokio::test]
async fn the_query_credential_is_stripped_from_the_upstream_target() {
    let (gw, origin, _r) = setup("", "").await;
    let cases = [
        ("/raw/x?api_key=demo-key", "/raw/x"),
        ("/raw/x?a=1&api_key=demo-key&b=2", "/raw/x?a=1&b=2"),
        ("/raw/x?api%5Fkey=demo-key", "/raw/x"),
        ("/raw/x?x=1;api_key=demo-key", "/raw/x?x=1"),
        ("/raw/x?API_KEY=demo-key&z", "/raw/x?z"),
        ("/raw/x?api_key[]=demo-key", "/raw/x"),
        ("/raw/x?api.key=demo-key", "/raw/x"),
    ];
    for (i, (uri, upstream_uri)) in cases.iter().enumerate() {
        let r = get(gw.addr, uri, "").await;
        assert_eq!(r.status, 200, "{uri}: {}", r.body);
        let seen = &origin.requests()[i];
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.uri, *upstream_uri, "{uri}");
        assert_eq!(seen.headers["x-user-id"], "client-1");
        let line = gw.last();
        assert_eq!(line["user.name"], "client-1");
        assert!(!gw.raw_log().contains("demo-key"), "{uri}: key in the log");
    }
    // The same key in the header and the query agrees: both are stripped.
    let r = get(
        gw.addr,
        "/raw/y?api_key=demo-key&q=1",
        "X-Api-Key: demo-key\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.requests().pop().unwrap();
    assert_eq!(seen.uri, "/raw/y?q=1");
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(gw.last()["url.query"], "q=1");
}

#[tokio::test]
async fn disagreeing_or_repeated_credentials_are_400_and_never_forwarded() {
    let (gw, origin, _r) = setup("", "").await;
    let cases: &[(&str, &str)] = &[
        // The issue's examples.
        ("/raw/x?api_key=other", "X-Api-Key: demo-key\r\n"),
        ("/raw/x?api_key=a&api_key=b", ""),
        ("/raw/x?api%5Fkey=other", "X-Api-Key: demo-key\r\n"),
        // Variants.
        ("/raw/x?api_key=demo-key&api_key=demo-key", ""),
        ("/raw/x?api_key=demo-key&api%5Fkey=other", ""),
        ("/raw/x?x=1;api_key=other", "X-Api-Key: demo-key\r\n"),
        ("/raw/x?API_KEY=other", "X-Api-Key: demo-key\r\n"),
        ("/raw/x?api_key[]=other", "X-Api-Key: demo-key\r\n"),
        ("/raw/x", "X-Api-Key: demo-key\r\nX-Api-Key: demo-key\r\n"),
        ("/raw/x?api_key=", "X-Api-Key: demo-key\r\n"),
    ];
    for (uri, headers) in cases {
        let r = get(gw.addr, uri, headers).await;
        assert_eq!(r.status, 400, "{uri} {headers:?}: {}", r.body);
        assert!(!r.body.contains("demo-key") && !r.body.contains("other"));
        let line = gw.last();
        assert_eq!(line["gateway.reason"], "auth_invalid_request", "{uri}");
        assert!(
            line.get("url.query").is_none() || !line["url.query"].as_str().unwrap().contains("api")
        );
    }
    assert!(origin.requests().is_empty(), "nothing was forwarded");
    assert!(!gw.raw_log().contains("demo-key"));
    // Each counts as a bad credential: a valid key cannot carry guesses
    // past the brute-force limit (20 per minute; 10 spent above).
    let mut statuses = Vec::new();
    for i in 0..12 {
        let uri = format!("/raw/x?api_key=guess-{i}");
        statuses.push(get(gw.addr, &uri, "X-Api-Key: demo-key\r\n").await.status);
    }
    assert_eq!(statuses[..10], [400; 10]);
    assert_eq!(statuses[10..], [429; 2]);
    assert_eq!(gw.last()["gateway.reason"], "too_many_auth_failures");
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn an_underscore_spelling_of_the_key_header_is_the_same_carrier() {
    // Only reachable with underscore_headers = "allow" (the default drops
    // such names): CGI-style upstreams read x_api_key as X-Api-Key.
    let (gw, origin, _r) = setup("", "[limits]\nunderscore_headers = \"allow\"\n").await;
    for headers in [
        "X-Api-Key: demo-key\r\nX_Api_Key: other\r\n",
        "X-Api-Key: demo-key\r\nx_api-key: demo-key\r\n",
    ] {
        let r = get(gw.addr, "/raw/u", headers).await;
        assert_eq!(r.status, 400, "{headers}: {}", r.body);
        assert_eq!(gw.last()["gateway.reason"], "auth_invalid_request");
    }
    assert!(origin.requests().is_empty());
    let r = get(
        gw.addr,
        "/raw/u",
        "X-Api-Key: demo-key\r\nX_Other: kept\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.requests().pop().unwrap();
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(
        seen.headers["x_other"], "kept",
        "underscores are allowed here"
    );
}

#[tokio::test]
async fn an_any_policy_takes_one_credential_and_strips_every_carrier() {
    let (gw, origin, _r) = setup("", "").await;
    let bearer = format!("Authorization: Bearer {}\r\n", token("user-7"));
    // Two credentials (the issue's examples: another key header, or a
    // bearer token next to a key): 400, nothing forwarded.
    for headers in [
        "X-Api-Key: demo-key\r\nX-Partner-Key: other-key\r\n".to_owned(),
        format!("X-Api-Key: demo-key\r\n{bearer}"),
        format!("X-Partner-Key: other-key\r\n{bearer}"),
        "X-Api-Key: demo-key\r\nX-Partner-Key: wrong\r\n".to_owned(),
        "X-Partner-Key: other-key\r\nAuthorization: Basic eDp5\r\n".to_owned(),
    ] {
        let r = get(gw.addr, "/any/x", &headers).await;
        assert_eq!(r.status, 400, "{headers}: {}", r.body);
        assert_eq!(gw.last()["gateway.reason"], "auth_invalid_request");
    }
    let r = get(
        gw.addr,
        "/any/x?api_key=demo-key",
        "X-Partner-Key: other-key\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(origin.requests().is_empty());

    // One credential: accepted, and no carrier of the policy is forwarded.
    for (headers, user) in [
        ("X-Partner-Key: other-key\r\n".to_owned(), "partner-1"),
        ("X-Api-Key: demo-key\r\n".to_owned(), "client-1"),
        (bearer.clone(), "user-7"),
    ] {
        let r = get(gw.addr, "/any/y?q=1", &headers).await;
        assert_eq!(r.status, 200, "{headers}: {}", r.body);
        let seen = origin.requests().pop().unwrap();
        assert_eq!(seen.uri, "/any/y?q=1");
        for h in ["authorization", "x-api-key", "x-partner-key"] {
            assert!(seen.headers.get(h).is_none(), "{h} forwarded for {user}");
        }
        assert_eq!(seen.headers["x-user-id"], user);
        assert_eq!(gw.last()["user.name"], user);
    }
    let r = get(gw.addr, "/any/z?api_key=demo-key", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests().pop().unwrap().uri, "/any/z");
    // A credential the route's policy does not know is the upstream's.
    let r = get(
        gw.addr,
        "/raw/own",
        &format!("X-Api-Key: demo-key\r\nX-Partner-Key: upstream-own\r\n{bearer}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.requests().pop().unwrap();
    assert!(seen.headers.get("x-api-key").is_none());
    assert_eq!(seen.headers["x-partner-key"], "upstream-own");
    assert!(seen.headers.get("authorization").is_some());
}

// ---- Class 3: secrets in the access log ----

#[tokio::test]
async fn secrets_never_reach_the_access_log() {
    let (gw, origin, _r) = setup("", "").await;
    let cases = [
        // The issue's examples.
        ("/open/a?x=1;api_key=SECRET1", Some("x=1")),
        ("/open/a?next=%2Fcb%3Fapi_key%3DSECRET2", None),
        // Variants.
        (
            "/open/a?next=%252Fcb%253Fapi_key%253DSECRET3&p=2",
            Some("p=2"),
        ),
        ("/open/a?api%255Fkey=SECRET4&p=3", Some("p=3")),
        ("/open/a?p=4;access_token=SECRET5", Some("p=4")),
        ("/open/a?API.KEY=SECRET6", None),
        (
            "/open/a?redirect=https%3A%2F%2Fx%2F%3Ftoken%3DSECRET7&p=5",
            Some("p=5"),
        ),
        ("/open/a?q=Bearer%20SECRET8", None),
        ("/open/a?page=2;sort=name", Some("page=2;sort=name")),
    ];
    for (i, (uri, logged)) in cases.iter().enumerate() {
        let r = get(gw.addr, uri, "").await;
        assert_eq!(r.status, 200, "{uri}");
        // An open route: the upstream gets the request as sent.
        assert_eq!(origin.requests()[i].uri, *uri);
        let line = gw.last();
        assert_eq!(line["url.path"], "/open/a");
        assert_eq!(
            line.get("url.query").and_then(Value::as_str),
            *logged,
            "{uri}"
        );
        assert!(!gw.raw_log().contains("SECRET"), "{uri}: {line}");
    }
    // Matrix parameters in the path (Tomcat's ;jsessionid=): refused by
    // default (`path_parameters = "reject"`, security.md section 3), and
    // the refused request's log line still carries no secret.
    let r = get(gw.addr, "/open/b;jsessionid=SECRET9/c;v=1", "").await;
    assert_eq!(r.status, 400);
    let line = gw.last();
    assert!(
        !line["url.path"].as_str().unwrap().contains("SECRET"),
        "{line}"
    );
    assert!(!gw.raw_log().contains("SECRET"));
}

// ---- Class 6: CORS ----

#[tokio::test]
async fn on_cors_routes_the_gateway_owns_every_access_control_field() {
    let (gw, _origin, r) = setup("", "").await;
    // A refused origin: none of the upstream's CORS fields survive.
    let resp = get(gw.addr, "/cors/x", "Origin: https://evil.example\r\n").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "reflected");
    let lower = resp.head.to_ascii_lowercase();
    assert!(!lower.contains("access-control-"), "{}", resp.head);
    assert!(!lower.contains("evil.example"), "{}", resp.head);
    let first = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.uri == "/cors/x")
        .cloned();
    assert_eq!(first.unwrap().headers["origin"], "https://evil.example");
    assert_eq!(gw.last()["http.response.status_code"], 200);
    assert_eq!(gw.last()["gateway.route"], "cors");
    // No Origin at all: the same.
    let resp = get(gw.addr, "/cors/x", "").await;
    assert!(!resp.head.to_ascii_lowercase().contains("access-control-"));
    // An allowed origin: exactly the gateway's decision.
    let resp = get(gw.addr, "/cors/x", "Origin: https://app.example\r\n").await;
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        resp.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        resp.header("access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    for gone in [
        "access-control-allow-methods",
        "access-control-max-age",
        "access-control-allow-headers",
    ] {
        assert!(resp.header(gone).is_none(), "{gone}: {}", resp.head);
    }
    assert_eq!(
        resp.head
            .to_ascii_lowercase()
            .matches("access-control-allow-origin")
            .count(),
        1,
        "{}",
        resp.head
    );
    let seen = r.seen.lock().unwrap();
    assert_eq!(seen.iter().filter(|s| s.uri == "/cors/x").count(), 3);
}
