//! Aggregation routes against real upstreams on loopback: parallel calls
//! merged into one JSON answer, a dependent call, optional calls that time
//! out or answer garbage (partial answer, named), required calls that fail
//! (502/504 naming the call), size limits, templated values that must never
//! change the path's structure, what each call carries (identity, trace,
//! request id; no credentials), auth and rate limits on the client request,
//! metrics and the access log.

mod proxy_common;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use gateway::{
    config::Config,
    observe::{Observe, access_log::AccessLog},
    phases::build_engines,
    proxy::{Engines, Proxy},
};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use proxy_common::{PLAIN, RawResponse, get, upstream};
use serde_json::{Value, json};
use test_support::temp::TempDir;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// One request a backend received.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: http::HeaderMap,
}

/// A backend answering with `handler(uri)`, recording what it received.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (seen, handler) = (seen2.clone(), handler.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, handler) = (seen.clone(), handler.clone());
                        async move {
                            seen.lock().unwrap().push(Seen {
                                uri: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            Ok::<_, Infallible>(handler(req.uri().to_string()).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Backend { addr, seen }
    }

    /// A backend answering every request with this JSON.
    async fn json(v: Value) -> Backend {
        Self::start(move |_| {
            let v = v.clone();
            async move { reply(200, "application/json", v.to_string()) }
        })
        .await
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn reply(status: u16, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

/// A chunked JSON body of `total` bytes (no Content-Length).
fn chunked(total: usize) -> Response<Body> {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let n = total / chunk.len() + 1;
    let frames = futures_util::stream::iter(
        std::iter::once(Bytes::from_static(b"["))
            .chain(std::iter::repeat_n(chunk, n))
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(StreamBody::new(frames).boxed())
        .unwrap()
}

/// The gateway with the given routes and upstreams, engines built from the
/// config (auth, rate limits), metrics and an access log we can read.
struct Gateway {
    _proxy: Proxy,
    addr: SocketAddr,
    observe: Observe,
    _dir: TempDir,
}

impl Gateway {
    async fn start(body: &str) -> Gateway {
        let dir = TempDir::tagged("aggregate");
        let log = dir.0.join("access.log");
        let toml = format!(
            "{PLAIN}\n{body}\n[log]\naccess_log = \"{}\"\n[xdp]\nenabled = false\n",
            log.display()
        );
        let config = Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let mut engines: Engines =
            build_engines(&config, std::path::Path::new("."), None, None).expect("engines");
        engines.observe = Observe {
            metrics: engines.observe.metrics.clone(),
            access_log: Arc::new(AccessLog::open(&config.log, &[]).unwrap()),
        };
        let observe = engines.observe.clone();
        let proxy = Proxy::start(&config, engines).await.unwrap();
        let addr = proxy.local_addr("main").unwrap();
        Gateway {
            _proxy: proxy,
            addr,
            observe,
            _dir: dir,
        }
    }

    fn access_lines(&self) -> Vec<Value> {
        self.observe.access_log.flush();
        let path = self._dir.0.join("access.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn body(r: &RawResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

fn ups(list: &[(&str, &Backend)]) -> String {
    list.iter()
        .map(|(n, b)| upstream(n, &[b.addr], ""))
        .collect()
}

/// Three backends: users, orders, prefs.
async fn three() -> (Backend, Backend, Backend) {
    let users = Backend::start(|uri| async move {
        reply(
            200,
            "application/json",
            json!({"uri": uri, "name": "Ada", "account_id": "acc-1"}).to_string(),
        )
    })
    .await;
    let orders = Backend::start(|uri| async move {
        reply(
            200,
            "application/json; charset=utf-8",
            json!([{"uri": uri}]).to_string(),
        )
    })
    .await;
    let prefs = Backend::json(json!({"theme": "dark"})).await;
    (users, orders, prefs)
}

const PROFILE: &str = r#"
[[routes]]
id = "profile"
path = "/profile/{id}"
methods = ["GET"]
aggregate = [
  { name = "user", upstream = "users", path = "/users/{id}" },
  { name = "orders", upstream = "orders", path = "/users/{id}/orders?limit={query.limit}", required = false },
  { name = "prefs", upstream = "prefs", path = "/prefs/{id}", headers = ["accept-language"] },
]
"#;

#[tokio::test]
async fn all_calls_succeed_and_are_merged_under_their_names() {
    let (users, orders, prefs) = three().await;
    let gw = Gateway::start(&format!(
        "{}{PROFILE}",
        ups(&[("users", &users), ("orders", &orders), ("prefs", &prefs)])
    ))
    .await;
    let r = get(
        gw.addr,
        "/profile/42?limit=5",
        "Authorization: Bearer SECRET-TOKEN\r\nCookie: session=SECRET\r\nAccept-Language: de\r\n\
         traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(r.header("gateway-partial").is_none());
    let b = body(&r);
    assert_eq!(b["user"]["name"], "Ada");
    assert_eq!(b["user"]["uri"], "/users/42");
    assert_eq!(b["orders"][0]["uri"], "/users/42/orders?limit=5");
    assert_eq!(b["prefs"]["theme"], "dark");
    assert!(b.get("_errors").is_none(), "{b}");

    let request_id = r.header("x-request-id").unwrap();
    let mut spans = Vec::new();
    for (backend, lang) in [(&users, false), (&orders, false), (&prefs, true)] {
        let seen = backend.seen();
        assert_eq!(seen.len(), 1);
        let h = &seen[0].headers;
        assert_eq!(h["x-request-id"], request_id.as_str());
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(!tp.contains("b7ad6b7169203331"), "a fresh child span: {tp}");
        spans.push(tp.to_owned());
        assert!(h.get("authorization").is_none(), "credential forwarded");
        assert!(h.get("cookie").is_none(), "cookie forwarded");
        assert_eq!(
            h.get("accept-language").is_some(),
            lang,
            "only where listed"
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    }
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), 3, "each call its own span: {spans:?}");

    // The access log names every call, its upstream, status and duration.
    let lines = gw.access_lines();
    let calls = lines.last().unwrap()["gateway.aggregate.calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for c in &calls {
        assert_eq!(c["status"], 200);
        assert_eq!(c["outcome"], "ok");
        assert!(c["duration_ms"].is_number());
    }
    let text = std::fs::read_to_string(gw._dir.0.join("access.log")).unwrap();
    assert!(!text.contains("SECRET"), "{text}");
    // Metrics: one series per call.
    let m = gw.observe.metrics.encode();
    for (call, up) in [("user", "users"), ("orders", "orders"), ("prefs", "prefs")] {
        let series = format!(
            "gateway_aggregate_call_duration_seconds_count{{route=\"profile\",call=\"{call}\",upstream=\"{up}\",outcome=\"ok\"}} 1"
        );
        assert!(m.contains(&series), "{series} missing in\n{m}");
        let pool =
            format!("gateway_upstream_request_duration_seconds_count{{upstream=\"{up}\"}} 1");
        assert!(m.contains(&pool), "{pool} missing in\n{m}");
    }
}

#[tokio::test]
async fn independent_calls_run_in_parallel() {
    // `a` answers only once `b` has received its request: run one after
    // the other, `a` would time out and the required call fail.
    let gate = Arc::new(tokio::sync::Notify::new());
    let g1 = gate.clone();
    let a = Backend::start(move |_| {
        let g = g1.clone();
        async move {
            g.notified().await;
            reply(200, "application/json", "{\"a\":1}")
        }
    })
    .await;
    let g2 = gate.clone();
    let b = Backend::start(move |_| {
        let g = g2.clone();
        async move {
            g.notify_one();
            reply(200, "application/json", "{\"b\":2}")
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}[[routes]]\nid = \"both\"\npath = \"/both\"\nmerge = \"keys\"\naggregate = [\n\
         {{ name = \"a\", upstream = \"a\", path = \"/a\", timeout = \"5s\" }},\n\
         {{ name = \"b\", upstream = \"b\", path = \"/b\" }},\n]\n",
        ups(&[("a", &a), ("b", &b)])
    ))
    .await;
    let r = get(gw.addr, "/both", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(body(&r), json!({"a": 1, "b": 2}));
}

#[tokio::test]
async fn optional_call_past_its_timeout_is_left_out_and_named() {
    let (users, _, prefs) = three().await;
    // Never answers within the test: the answer can only come from the
    // call's timeout.
    let slow = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        reply(200, "application/json", "[]")
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &users), ("orders", &slow), ("prefs", &prefs)]),
        PROFILE.replace(
            "required = false }",
            "required = false, timeout = \"300ms\" }"
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/7?limit=1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("gateway-partial").as_deref(), Some("orders"));
    let b = body(&r);
    assert_eq!(b["user"]["name"], "Ada");
    assert!(b.get("orders").is_none(), "{b}");
    assert_eq!(b["_errors"]["orders"]["error"], "timeout");
    assert_eq!(slow.seen().len(), 1, "the call was sent");
}

#[tokio::test]
async fn required_call_failing_is_502_naming_it_and_timing_out_is_504() {
    let (_, orders, prefs) = three().await;
    let broken = Backend::start(|_| async { reply(500, "application/json", "{}") }).await;
    let gw = Gateway::start(&format!(
        "{}{PROFILE}",
        ups(&[("users", &broken), ("orders", &orders), ("prefs", &prefs)])
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let detail = body(&r)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("'user'") && detail.contains("500"),
        "{detail}"
    );

    let slow = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        reply(200, "application/json", "{}")
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &slow), ("orders", &orders), ("prefs", &prefs)]),
        PROFILE.replace(
            "path = \"/users/{id}\" }",
            "path = \"/users/{id}\", timeout = \"200ms\" }"
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        body(&r)["detail"].as_str().unwrap().contains("'user'"),
        "{r:?}"
    );

    // The whole-request deadline counts too.
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &slow), ("orders", &orders), ("prefs", &prefs)]),
        PROFILE.replace(
            "methods = [\"GET\"]",
            "methods = [\"GET\"]\naggregate_deadline = \"200ms\""
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        body(&r)["detail"].as_str().unwrap().contains("deadline"),
        "{r:?}"
    );
}

const DEPENDENT: &str = r#"
[[routes]]
id = "account"
path = "/me/{id}"
aggregate = [
  { name = "user", upstream = "users", path = "/users/{id}" },
  { name = "account", upstream = "accounts", path = "/accounts/{user.account_id}", after = "user", required = false },
]
"#;

#[tokio::test]
async fn a_dependent_call_uses_a_field_of_the_earlier_answer() {
    let accounts = Backend::json(json!({"balance": 10})).await;
    let users = Backend::start(|uri| async move {
        let id = match uri.as_str() {
            "/users/1" => json!("acc-1"),
            "/users/2" => json!("../../admin?x=1#f"),
            "/users/3" => json!(".."),
            "/users/4" => json!(12),
            _ => Value::Null,
        };
        reply(
            200,
            "application/json",
            json!({"account_id": id}).to_string(),
        )
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}{DEPENDENT}",
        ups(&[("users", &users), ("accounts", &accounts)])
    ))
    .await;
    let r = get(gw.addr, "/me/1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(body(&r)["account"]["balance"], 10);
    let r = get(gw.addr, "/me/4", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    // An upstream's `/`, `..`, `?`, `#` are data, never path structure.
    let r = get(gw.addr, "/me/2", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let uris: Vec<String> = accounts.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        [
            "/accounts/acc-1",
            "/accounts/12",
            "/accounts/..%2F..%2Fadmin%3Fx%3D1%23f"
        ]
    );
    // `..` as a whole segment, or a missing field: that call fails, not sent.
    for id in [3, 5] {
        let r = get(gw.addr, &format!("/me/{id}"), "").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("gateway-partial").as_deref(), Some("account"));
        assert_eq!(body(&r)["_errors"]["account"]["error"], "failed", "{r:?}");
    }
    assert_eq!(accounts.seen().len(), 3, "nothing sent for the bad fields");

    // The dependency failed: the dependent call is not sent and is named.
    let broken = Backend::start(|_| async { reply(503, "application/json", "{}") }).await;
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &broken), ("accounts", &accounts)]),
        DEPENDENT.replace(
            "path = \"/users/{id}\" }",
            "path = \"/users/{id}\", required = false }"
        )
    ))
    .await;
    let r = get(gw.addr, "/me/1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("gateway-partial").as_deref(),
        Some("user, account")
    );
    assert_eq!(body(&r)["_errors"]["account"]["error"], "dependency_failed");
    assert_eq!(accounts.seen().len(), 3);
}

#[tokio::test]
async fn client_values_never_change_the_path_structure() {
    let (users, orders, prefs) = three().await;
    let gw = Gateway::start(&format!(
        "{}{PROFILE}[[routes]]\nid = \"q\"\npath = \"/q\"\naggregate = [ {{ name = \"u\", upstream = \"users\", path = \"/users/{{query.id}}/x?h={{header.x-tag}}\" }} ]\n",
        ups(&[("users", &users), ("orders", &orders), ("prefs", &prefs)])
    ))
    .await;
    let r = get(gw.addr, "/profile/a%20b?limit=1%26admin%3Dtrue", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(gw.addr, "/q?id=..%2F..%2Fadmin", "X-Tag: a&b=c\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    let uris: Vec<String> = users.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        ["/users/a%20b", "/users/..%2F..%2Fadmin/x?h=a%26b%3Dc"]
    );
    assert_eq!(
        orders.seen()[0].uri,
        "/users/a%20b/orders?limit=1%26admin%3Dtrue"
    );
    // A whole `..` or `.` segment, or a missing value: 400, nothing sent.
    for q in ["/q?id=..", "/q?id=%2e%2E", "/q?id=.", "/q?id=", "/q"] {
        let r = get(gw.addr, q, "X-Tag: t\r\n").await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
    }
    let r = get(gw.addr, "/q?id=1", "").await;
    assert_eq!(r.status, 400, "missing header: {r:?}");
    assert_eq!(users.seen().len(), 2, "nothing more sent");
    // `{id}` is one segment: more segments do not match the route.
    let r = get(gw.addr, "/profile/1/2", "").await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn invalid_or_non_json_answers_are_that_calls_failure() {
    let (users, _, _) = three().await;
    let invalid = Backend::start(|_| async { reply(200, "application/json", "{\"a\": ") }).await;
    let html = Backend::start(|_| async { reply(200, "text/html", "<p>hi</p>") }).await;
    let gw = Gateway::start(&format!(
        "{}{PROFILE}",
        ups(&[("users", &users), ("orders", &invalid), ("prefs", &html)])
    ))
    .await;
    // prefs (required) answers HTML: 502 naming it.
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        body(&r)["detail"].as_str().unwrap().contains("'prefs'"),
        "{r:?}"
    );
    // With prefs optional too: both named, the answer still 200.
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &users), ("orders", &invalid), ("prefs", &html)]),
        PROFILE.replace(
            "headers = [\"accept-language\"] }",
            "headers = [\"accept-language\"], required = false }"
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("gateway-partial").as_deref(),
        Some("orders, prefs")
    );
    let b = body(&r);
    assert!(
        b["_errors"]["orders"]["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{b}"
    );
    assert!(
        b["_errors"]["prefs"]["detail"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{b}"
    );
    assert_eq!(b["user"]["name"], "Ada");
}

#[tokio::test]
async fn a_call_answering_5_mb_over_its_limit_fails() {
    let (users, _, prefs) = three().await;
    let limit = 1 << 20;
    // With Content-Length, and chunked (counted while reading).
    let big = Backend::start(move |_| async move {
        let mut b = vec![b' '; limit + 5_000_000];
        b[0] = b'[';
        reply(200, "application/json", b)
    })
    .await;
    let streamed = Backend::start(move |_| async move { chunked(limit + 5_000_000) }).await;
    for backend in [&big, &streamed] {
        let gw = Gateway::start(&format!(
            "{}{}",
            ups(&[("users", &users), ("orders", backend), ("prefs", &prefs)]),
            PROFILE.replace("required = false }", "required = true }")
        ))
        .await;
        let r = get(gw.addr, "/profile/1?limit=1", "").await;
        assert_eq!(r.status, 502, "{r:?}");
        let detail = body(&r)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("'orders'") && detail.contains("larger than 1048576"),
            "{detail}"
        );
    }
    // The total over all calls.
    let gw = Gateway::start(&format!(
        "{}{}",
        ups(&[("users", &users), ("orders", &users), ("prefs", &prefs)]),
        PROFILE.replace(
            "methods = [\"GET\"]",
            "methods = [\"GET\"]\naggregate_max_bytes = 100"
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        body(&r)["detail"]
            .as_str()
            .unwrap()
            .contains("together are larger than 100"),
        "{r:?}"
    );
}

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

#[tokio::test]
async fn auth_and_rate_limits_apply_and_identity_reaches_each_call() {
    let (users, orders, prefs) = three().await;
    let gw = Gateway::start(&format!(
        r#"{}{}
auth = "key"
rate_limits = ["tight"]

[auth.api_keys.k]
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]
headers = {{ "x-user-id" = "sub" }}

[[rate_limit.limits]]
name = "tight"
rate = "1r/m"
burst = 1
key = "identity"
"#,
        ups(&[("users", &users), ("orders", &orders), ("prefs", &prefs)]),
        PROFILE.replace(
            "headers = [\"accept-language\"] }",
            "headers = [\"accept-language\", \"x-api-key\"] }"
        )
    ))
    .await;
    let r = get(gw.addr, "/profile/1?limit=1", "X-User-Id: forged\r\n").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(users.seen().is_empty() && orders.seen().is_empty() && prefs.seen().is_empty());

    let r = get(
        gw.addr,
        "/profile/1?limit=1",
        "X-Api-Key: demo-key\r\nX-User-Id: forged\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    for (b, key) in [(&users, false), (&orders, false), (&prefs, true)] {
        let h = &b.seen()[0].headers;
        let ids: Vec<_> = h.get_all("x-user-id").iter().collect();
        assert_eq!(ids, ["client-1"], "verified identity only");
        // The key goes only where the call lists it.
        assert_eq!(h.get("x-api-key").is_some(), key);
    }
    // The route's limit (1r/m, burst 1) runs out within a few requests.
    let mut ok = 1;
    let mut last = 200;
    for _ in 0..5 {
        last = get(gw.addr, "/profile/1?limit=1", "X-Api-Key: demo-key\r\n")
            .await
            .status;
        if last != 200 {
            break;
        }
        ok += 1;
    }
    assert_eq!(last, 429);
    assert_eq!(users.seen().len(), ok, "a refused request makes no call");
}

#[tokio::test]
async fn merge_modes_and_request_bodies() {
    let a = Backend::json(json!({"x": 1, "o": {"p": 1}, "_errors": "fake"})).await;
    let b = Backend::json(json!({"y": 2, "o": {"q": 2}})).await;
    let route = |merge: &str| {
        format!(
            "[[routes]]\nid = \"{merge}\"\npath = \"/{merge}\"\nmerge = \"{merge}\"\naggregate = [\n\
             {{ name = \"a\", upstream = \"a\", path = \"/a\" }},\n{{ name = \"b\", upstream = \"b\", path = \"/b\" }},\n]\n"
        )
    };
    let gw = Gateway::start(&format!(
        "{}{}{}",
        ups(&[("a", &a), ("b", &b)]),
        route("keys"),
        route("deep")
    ))
    .await;
    let r = get(gw.addr, "/keys", "").await;
    assert_eq!(body(&r), json!({"x": 1, "y": 2, "o": {"q": 2}}));
    let r = get(gw.addr, "/deep", "").await;
    assert_eq!(body(&r), json!({"x": 1, "y": 2, "o": {"p": 1, "q": 2}}));
    // An aggregate route takes no request body (it is not forwarded).
    let r = proxy_common::raw(
        gw.addr,
        b"POST /keys HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
}

#[test]
fn config_errors_say_where_and_what() {
    let up = "[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\"]\n";
    let cases = [
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\n",
            "exactly one of `upstream` and `aggregate`",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\nupstream = \"u\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\" } ]\n",
            "exactly one of `upstream` and `aggregate`",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [ { name = \"a\", upstream = \"nope\", path = \"/\" } ]\n",
            "upstream 'nope'",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/u/{id}\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/x/{ident}\" } ]\n",
            "not a path parameter",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\", after = \"b\" }, { name = \"b\", upstream = \"u\", path = \"/\" } ]\n",
            "earlier call",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/{b.x}\" }, { name = \"b\", upstream = \"u\", path = \"/\" } ]\n",
            "named by `after`",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\nupstream = \"u\"\nmerge = \"deep\"\n",
            "need `aggregate`",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/u/x{id}\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\" } ]\n",
            "whole segment",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\", headers = [\"Content-Length\"] } ]\n",
            "cannot be copied",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/../{query.x}\" } ]\n",
            "'..' segment",
        ),
        (
            "[[routes]]\nid = \"r\"\npath = \"/u/{id}\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\" } ]\n\
             [[routes]]\nid = \"s\"\npath = \"/u/{user}\"\naggregate = [ { name = \"a\", upstream = \"u\", path = \"/\" } ]\n",
            "match the same requests",
        ),
    ];
    for (route, want) in cases {
        let toml = format!("{up}{route}");
        let e = Config::parse(&toml, "test.toml").unwrap_err().to_string();
        assert!(e.contains("test.toml:") && e.contains(want), "{want}: {e}");
    }
    let calls: Vec<String> = (0..17)
        .map(|i| format!("{{ name = \"c{i}\", upstream = \"u\", path = \"/\" }}"))
        .collect();
    let toml = format!(
        "{up}[[routes]]\nid = \"r\"\npath = \"/\"\naggregate = [{}]\n",
        calls.join(", ")
    );
    let e = Config::parse(&toml, "test.toml").unwrap_err().to_string();
    assert!(e.contains("at most 16"), "{e}");
}
