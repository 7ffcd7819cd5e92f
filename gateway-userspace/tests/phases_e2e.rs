//! The auth, rate-limit and escalation phases through the real proxy, with
//! a recording origin: what the client gets back, and what the origin saw
//! (or never saw). XDP is off here, so escalation blocks at L7; the
//! privileged test `tests/tests/escalation_xdp.rs` covers the kernel path.

mod proxy_common;

use std::sync::Arc;

use gateway::{config::Config, escalate::Escalator, phases::build_hooks, proxy::Proxy};
use proxy_common::*;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

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
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

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
    let hooks = build_hooks(config, Some(esc.clone())).expect("hooks");
    let proxy = Proxy::start(config, hooks).await.expect("proxy starts");
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
