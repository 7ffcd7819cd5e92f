//! Quotas per consumer (issue 19, part 2) through the real proxy in front of
//! a recording origin, with time driven by a clock the test controls: a key
//! on a 5/day plan gets 5 × 200 then 429 with `Retry-After` to midnight UTC;
//! over-quota is no escalation offence; counts survive a restart (from the
//! file the background task wrote); a plan change on reload applies to
//! every key on the plan; a token's plan claim and a route quota count too;
//! `gateway quota get|reset` and `/metrics` see the counts.

mod proxy_common;

use std::{sync::Arc, time::Duration};

use gateway::{
    admin::{protocol::Request, server::AdminState},
    admin_http::collect::QuotaCollector,
    config::Config,
    escalate::Escalator,
    observe::Metrics,
    phases::build_engines_with_quotas,
    proxy::Proxy,
    ratelimit::quota_store::{ManualClock, QuotaStore},
};
use proxy_common::*;
use test_support::temp::TempDir;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";
/// SHA-256 of `other-key`.
const OTHER_HASH: &str = "580843d03d2216ff1a275d0991bad66e4d1af871171d929e9de604b7959f9bca";
const HMAC_SECRET: &[u8] = b"quota-e2e-hmac-secret-0123456789abcdef";

/// 2026-11-30T20:00:00Z: four hours before midnight UTC.
const EVENING: i64 = 1_796_068_800;
/// 2026-12-01T00:00:00Z.
const MIDNIGHT: i64 = 1_796_083_200;

/// A config with two keys on plan `free` (`free` below), a JWT policy whose
/// `plan` claim names the plan, and `extra` appended.
fn config(origin: &Origin, dir: &TempDir, free: &str, extra: &str) -> Config {
    let secret = dir.0.join("hmac.key");
    std::fs::write(&secret, HMAC_SECRET).unwrap();
    let toml = format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "api"
path_prefix = "/api/"
upstream = "o"
auth = "key"

[[routes]]
id = "tok"
path_prefix = "/tok/"
upstream = "o"
auth = "users"

[auth.api_keys.k]
keys = [
  {{ name = "client-1", sha256 = "{KEY_HASH}", plan = "free" }},
  {{ name = "client-2", sha256 = "{OTHER_HASH}", plan = "free" }},
]

[auth.jwt.corp]
issuer = "https://issuer.test"
audiences = ["api"]
algorithms = ["HS256"]
hmac_secret_files = [{{ path = "{secret}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[auth.policies.users]
type = "jwt"
providers = ["corp"]
plan_claim = "plan"

[rate_limit]
quota_state = "{state}"

[[rate_limit.plans]]
name = "free"
{free}

[[rate_limit.plans]]
name = "gold"
quota = "3/hour"

[escalation]
threshold = 5
ttl_ladder = ["1h"]
{extra}

[xdp]
enabled = false
"#,
        upstream = upstream("o", &[origin.addr], ""),
        secret = secret.display(),
        state = dir.0.join("quota.json").display(),
    );
    Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

struct Gw {
    proxy: Proxy,
    addr: std::net::SocketAddr,
    esc: Arc<Escalator>,
    quotas: Arc<QuotaStore>,
}

async fn start(config: &Config, quotas: Arc<QuotaStore>) -> Gw {
    let esc = Arc::new(Escalator::new(config.escalation.clone(), vec![], None));
    let engines = build_engines_with_quotas(
        config,
        std::path::Path::new("."),
        Some(esc.clone()),
        None,
        quotas.clone(),
    )
    .expect("engines");
    let proxy = Proxy::start(config, engines).await.expect("proxy starts");
    let addr = proxy.local_addr("main").expect("listener");
    Gw {
        proxy,
        addr,
        esc,
        quotas,
    }
}

fn store(dir: &TempDir, clock: &ManualClock) -> Arc<QuotaStore> {
    Arc::new(QuotaStore::open(
        dir.0.join("quota.json"),
        clock.clock(),
        1000,
    ))
}

const KEY1: &str = "X-Api-Key: demo-key\r\n";
const KEY2: &str = "X-Api-Key: other-key\r\n";

#[tokio::test]
async fn key_on_a_5_per_day_plan_gets_5_then_429_until_midnight_utc() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let clock = ManualClock::at(EVENING);
    let cfg = config(&origin, &dir, "quota = \"5/day\"", "");
    let gw = start(&cfg, store(&dir, &clock)).await;
    for i in 1..=5u64 {
        let r = get(gw.addr, "/api/a", KEY1).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some("\"plan:free\";q=5;w=86400"),
            "{}",
            r.head
        );
        assert_eq!(
            r.header("ratelimit").unwrap_or_default(),
            format!("\"plan:free\";r={};t=14400", 5 - i)
        );
    }
    // The sixth, and every one after it until midnight: 429, unforwarded,
    // Retry-After to midnight UTC (4 h), and never an escalation offence
    // (threshold 5: five refusals would have escalated a rate limit).
    for _ in 0..8 {
        let r = get(gw.addr, "/api/a", KEY1).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(r.header("retry-after").as_deref(), Some("14400"));
        assert_eq!(
            r.header("ratelimit").as_deref(),
            Some("\"plan:free\";r=0;t=14400")
        );
        assert!(r.body.contains("quota_exceeded"), "{}", r.body);
    }
    assert_eq!(
        origin.seen().len(),
        5,
        "an over-quota request reached the origin"
    );
    assert_eq!(gw.esc.tracked(), 0, "over-quota was counted as an offence");
    assert!(gw.esc.l7_blocked("127.0.0.1".parse().unwrap()).is_none());
    // The other key on the plan has its own count.
    assert_eq!(get(gw.addr, "/api/a", KEY2).await.status, 200);
    // One second before midnight: still refused, Retry-After 1.
    clock.set(MIDNIGHT - 1);
    let r = get(gw.addr, "/api/a", KEY1).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Midnight UTC: a new window, the quota is whole again.
    clock.set(MIDNIGHT);
    let r = get(gw.addr, "/api/a", KEY1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("ratelimit").as_deref(),
        Some("\"plan:free\";r=4;t=86400")
    );
    assert_eq!(origin.seen().len(), 7);
    assert!(
        origin
            .seen()
            .iter()
            .all(|s| s.headers.get("x-api-key").is_none()),
        "credential forwarded"
    );
}

#[tokio::test]
async fn quota_counts_survive_a_gateway_restart() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let clock = ManualClock::at(EVENING);
    let cfg = config(&origin, &dir, "quota = \"5/day\"", "");
    let gw = start(&cfg, store(&dir, &clock)).await;
    // The background writer, as `gateway run` starts it.
    let persister = tokio::spawn(gw.quotas.clone().run_persister(Duration::from_millis(20)));
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/api/a", KEY1).await.status, 200);
    }
    // Wait (bounded) until the writer has put all three on disk.
    let path = dir.0.join("quota.json");
    let mut written = false;
    for _ in 0..250 {
        if std::fs::read_to_string(&path).is_ok_and(|s| s.contains("\"used\":3")) {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written, "the background task never wrote the state file");
    // A hard stop: no shutdown save, only what the writer wrote.
    persister.abort();
    gw.proxy.shutdown(Duration::from_millis(100)).await;
    drop(gw.quotas);

    let gw = start(&cfg, store(&dir, &clock)).await;
    for i in 0..2 {
        assert_eq!(
            get(gw.addr, "/api/a", KEY1).await.status,
            200,
            "request {i}"
        );
    }
    let r = get(gw.addr, "/api/a", KEY1).await;
    assert_eq!(r.status, 429, "the restart forgot the count");
    assert_eq!(origin.seen().len(), 5);

    // The shutdown save covers what the writer had not written yet.
    assert_eq!(get(gw.addr, "/api/a", KEY2).await.status, 200);
    gw.quotas.save_if_changed().unwrap();
    gw.proxy.shutdown(Duration::from_millis(100)).await;
    let restored = store(&dir, &clock);
    assert_eq!(restored.get("client-2")[0].1.used, 1);
    assert_eq!(restored.get("client-1")[0].1.used, 5);
    // Counts of a window that ended are not restored.
    clock.set(MIDNIGHT);
    assert!(store(&dir, &clock).get("client-1").is_empty());
}

#[tokio::test]
async fn a_plan_change_on_reload_applies_to_every_key_on_the_plan() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let clock = ManualClock::at(EVENING);
    let quotas = store(&dir, &clock);
    let cfg = config(&origin, &dir, "quota = \"5/day\"", "");
    let gw = start(&cfg, quotas.clone()).await;
    for key in [KEY1, KEY2] {
        for _ in 0..2 {
            assert_eq!(get(gw.addr, "/api/a", key).await.status, 200);
        }
    }
    // One line changes: free becomes 3/day. Both keys keep what they used
    // (2) and get exactly one more.
    let cfg2 = config(&origin, &dir, "quota = \"3/day\"", "");
    let engines = build_engines_with_quotas(
        &cfg2,
        std::path::Path::new("."),
        Some(gw.esc.clone()),
        None,
        quotas.clone(),
    )
    .unwrap();
    gw.proxy.reload(&cfg2, engines).unwrap();
    for key in [KEY1, KEY2] {
        let r = get(gw.addr, "/api/a", key).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some("\"plan:free\";q=3;w=86400")
        );
        assert_eq!(get(gw.addr, "/api/a", key).await.status, 429);
    }
    assert_eq!(origin.seen().len(), 6);
    // And a plan's rate applies to every key on it too: 1r/m, no burst.
    let cfg3 = config(&origin, &dir, "rate = \"1r/m\"", "");
    let engines = build_engines_with_quotas(
        &cfg3,
        std::path::Path::new("."),
        Some(gw.esc.clone()),
        None,
        quotas.clone(),
    )
    .unwrap();
    gw.proxy.reload(&cfg3, engines).unwrap();
    for key in [KEY1, KEY2] {
        assert_eq!(get(gw.addr, "/api/a", key).await.status, 200);
        let r = get(gw.addr, "/api/a", key).await;
        assert_eq!(r.status, 429);
        assert!(r.body.contains("rate_limited"), "{}", r.body);
    }
    assert_eq!(origin.seen().len(), 8);
}

fn token(sub: &str, plan: Option<&str>) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "iss": "https://issuer.test", "aud": "api", "sub": sub,
        "exp": now + 300, "iat": now,
    });
    if let Some(p) = plan {
        claims["plan"] = p.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_plan_claim_and_a_route_quota_both_count() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    // 20:30 UTC: the hour window ends in 30 minutes.
    let clock = ManualClock::at(EVENING + 1800);
    // A route quota on top (keyed by identity): both apply, the tighter
    // one refuses first.
    let extra = r#"
[[rate_limit.limits]]
name = "daily"
quota = "4/day"
key = "identity"
"#;
    let mut cfg = config(&origin, &dir, "quota = \"100/day\"", extra);
    cfg.routes
        .iter_mut()
        .find(|r| r.id.get_ref() == "tok")
        .unwrap()
        .rate_limits = vec!["daily".into()];
    let gw = start(&cfg, store(&dir, &clock)).await;
    let gold = format!("Authorization: Bearer {}\r\n", token("alice", Some("gold")));
    for _ in 0..3 {
        let r = get(gw.addr, "/tok/x", &gold).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let policy = r.header("ratelimit-policy").unwrap();
        assert!(policy.contains("\"limit:daily\";q=4;w=86400"), "{policy}");
        assert!(policy.contains("\"plan:gold\";q=3;w=3600"), "{policy}");
    }
    // gold is 3/hour: refused, Retry-After to the end of the hour.
    let r = get(gw.addr, "/tok/x", &gold).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1800"));
    // A token without a plan claim: only the route quota (4/day), which
    // alice has used 4 times now (the refused request counted there, as
    // the route quota came first and allowed it).
    let plain = format!("Authorization: Bearer {}\r\n", token("alice", None));
    let r = get(gw.addr, "/tok/x", &plain).await;
    assert_eq!(r.status, 429, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("12600"));
    // Another subject with a plan the config lacks: no plan limits, only
    // the route quota.
    let bob = format!(
        "Authorization: Bearer {}\r\n",
        token("bob", Some("platinum"))
    );
    let r = get(gw.addr, "/tok/x", &bob).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"limit:daily\";q=4;w=86400")
    );
    assert_eq!(origin.seen().len(), 4);
}

#[tokio::test]
async fn quota_get_and_reset_on_the_admin_socket_and_metrics_per_plan() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let clock = ManualClock::at(EVENING);
    let cfg = config(&origin, &dir, "quota = \"2/day\"", "");
    let gw = start(&cfg, store(&dir, &clock)).await;
    for _ in 0..3 {
        get(gw.addr, "/api/a", KEY1).await;
    }
    let (reload, _rx) = tokio::sync::mpsc::channel(1);
    let (upgrade, _up) = tokio::sync::mpsc::channel(1);
    let state = AdminState {
        maps: None,
        readers: None,
        interface: "-".into(),
        mode: "off".into(),
        cluster: None,
        quotas: Some(gw.quotas.clone()),
        escalation: None,
        reload,
        upgrade,
    };
    let got = gateway::admin::quota::handle(
        &state,
        Request::QuotaGet {
            consumer: "client-1".into(),
        },
    )
    .await;
    assert!(got.ok, "{got:?}");
    let row = &got.data["quotas"][0];
    assert_eq!(row["quota"], "plan:free");
    assert_eq!(
        (row["used"].as_u64(), row["limit"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(row["resets_in_secs"], 14_400);

    let metrics = Metrics::new();
    metrics.register_collector(Box::new(QuotaCollector {
        store: gw.quotas.clone(),
    }));
    let text = metrics.encode();
    for line in [
        "gateway_quota_used{kind=\"plan\",name=\"free\"} 2",
        "gateway_quota_consumers{kind=\"plan\",name=\"free\"} 1",
        "gateway_quota_requests_total{kind=\"plan\",name=\"free\",outcome=\"allowed\"} 2",
        "gateway_quota_requests_total{kind=\"plan\",name=\"free\",outcome=\"rejected\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        !text.contains("client-1"),
        "a consumer leaked into /metrics"
    );

    // A reset of an unknown quota is an error; of the consumer, works.
    let bad = gateway::admin::quota::handle(
        &state,
        Request::QuotaReset {
            consumer: "client-1".into(),
            quota: Some("plan:nope".into()),
        },
    )
    .await;
    assert!(!bad.ok);
    assert_eq!(get(gw.addr, "/api/a", KEY1).await.status, 429);
    let reset = gateway::admin::quota::handle(
        &state,
        Request::QuotaReset {
            consumer: "client-1".into(),
            quota: Some("plan:free".into()),
        },
    )
    .await;
    assert!(reset.ok, "{reset:?}");
    assert_eq!(reset.data["removed"], 1);
    assert_eq!(get(gw.addr, "/api/a", KEY1).await.status, 200);
    assert_eq!(origin.seen().len(), 3);
}

#[tokio::test]
async fn an_api_key_naming_an_unknown_plan_is_a_config_error() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let cfg = config(&origin, &dir, "quota = \"5/day\"", "");
    let text = format!(
        "{PLAIN}\n{}\n[auth.api_keys.k]\nkeys = [{{ name = \"c\", sha256 = \"{KEY_HASH}\", plan = \"silver\" }}]\n[xdp]\nenabled = false\n",
        upstream("o", &[origin.addr], "")
    );
    let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
    assert!(e.contains("plan 'silver'"), "{e}");
    drop(cfg);
}

#[tokio::test]
async fn consumers_without_a_known_plan_get_the_default_plan() {
    let origin = Origin::start("o").await;
    let dir = TempDir::tagged("quota-e2e");
    let clock = ManualClock::at(EVENING);
    let mut cfg = config(&origin, &dir, "quota = \"2/day\"", "");
    cfg.rate_limit.default_plan = Some("free".into());
    cfg.rate_limit.validate().unwrap();
    let gw = start(&cfg, store(&dir, &clock)).await;
    // No plan claim, and a plan the config lacks: both are on `free`,
    // each counted apart.
    for (sub, plan) in [("bob", None), ("carol", Some("platinum"))] {
        let auth = format!("Authorization: Bearer {}\r\n", token(sub, plan));
        for _ in 0..2 {
            let r = get(gw.addr, "/tok/x", &auth).await;
            assert_eq!(r.status, 200, "{sub}: {}", r.body);
            assert_eq!(
                r.header("ratelimit-policy").as_deref(),
                Some("\"plan:free\";q=2;w=86400")
            );
        }
        let r = get(gw.addr, "/tok/x", &auth).await;
        assert_eq!(r.status, 429, "{sub}: no default plan applied");
        assert_eq!(r.header("retry-after").as_deref(), Some("14400"));
    }
    // A consumer naming a known plan keeps it (gold: 3/hour).
    let gold = format!("Authorization: Bearer {}\r\n", token("dave", Some("gold")));
    let r = get(gw.addr, "/tok/x", &gold).await;
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"plan:gold\";q=3;w=3600")
    );
    assert_eq!(origin.seen().len(), 5);
    // A default plan the config lacks is a config error.
    cfg.rate_limit.default_plan = Some("nope".into());
    assert!(
        cfg.rate_limit
            .validate()
            .unwrap_err()
            .to_string()
            .contains("default_plan 'nope'")
    );
}
