//! The dashboard on the admin listener, against the real `gateway` binary
//! with known state (XDP off; the privileged `tests/tests/dashboard_browser.rs`
//! drives the page in a browser with XDP on): the JSON of
//! `/dashboard/api/state` reports the traffic, auth failures per policy,
//! 429s per limit, the escalation timeline, unhealthy targets and the
//! cluster link, never a secret; the page's security headers; who may read
//! and who may act.

mod observe_support;

use std::time::{Duration, Instant};

use observe_support::*;

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";
const TOKEN: &str = "dash-token-0123456789abcdef";
const REDIS_PASSWORD: &str = "dash-redis-secret-42";

fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
    r.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn state(gw: &Gateway) -> serde_json::Value {
    let r = request(gw.admin, "GET", "/dashboard/api/state", &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// A gateway with an API-key route limited to 2 requests per minute,
/// escalation after 3 bad keys, an upstream with one live and one dead
/// target, a cluster link to a Redis that is not there, and the
/// dashboard with write actions and a token.
fn gateway(token_dir: &TempDir, origin: &Origin, write: bool) -> Gateway {
    let token_file = token_dir.0.join("dashboard.token");
    std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    Gateway::start(&format!(
        r#"
[observability.dashboard]
write = {write}
token_file = "{token}"
refresh_interval = "500ms"

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

[[upstreams]]
name = "o"
targets = ["{origin}", "{dead}"]
[upstreams.health_check]
enabled = true
path = "/healthz"
interval = "100ms"
unhealthy_threshold = 1
healthy_threshold = 1

[auth.api_keys.k]
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[[rate_limit.limits]]
name = "tight"
rate = "1r/m"
burst = 2
key = "identity"

[escalation]
threshold = 30
ttl_ladder = ["1h"]

[cluster]
redis_url = "redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0"
node_id = "node-a"
"#,
        token = token_file.display(),
        origin = origin.addr,
        redis_port = free_port(),
    ))
}

/// Polls the state until `done` holds (bounded: 10 s).
fn wait_state(
    gw: &Gateway,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(gw);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find<'a>(rows: &'a serde_json::Value, key: &str, val: &str) -> Option<&'a serde_json::Value> {
    rows.as_array()?.iter().find(|r| r[key] == val)
}

#[test]
fn state_reports_known_state_and_never_a_secret() {
    let origin = Origin::start_blocking("origin");
    let dir = TempDir::tagged("dash-token");
    let gw = gateway(&dir, &origin, true);

    // Known traffic: good requests until the limit answers 429, then 3
    // bad keys escalate 127.0.0.1 (at L7: XDP is off) — which also ends
    // what it may send, so it comes last.
    let mut ok = 0;
    loop {
        match get(gw.proxy, "/api/x", &[("x-api-key", "demo-key")]).status {
            200 => ok += 1,
            429 => break,
            other => panic!("{other}"),
        }
        assert!(ok <= 5, "the limit never answered 429");
    }
    assert_eq!(get(gw.proxy, "/pub/x", &[]).status, 200);
    for bad in ["wrong-key-1", "wrong-key-2", "wrong-key-3"] {
        assert_eq!(get(gw.proxy, "/api/x", &[("x-api-key", bad)]).status, 401);
    }

    let s = wait_state(&gw, "the dead target as unhealthy", |s| {
        s["upstreams"][0]["healthy_targets"] == 1
    });
    let t = &s["traffic"];
    let api = |status: &str| {
        t["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "api" && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!(api("2xx"), Some(ok), "{t:#}");
    assert_eq!(api("4xx"), Some(4), "one 429 and three 401: {t:#}");
    let lim = find(&t["rate_limit_rejections"], "limit", "tight").expect("429s of 'tight'");
    assert_eq!(
        (lim["route"].as_str(), lim["count"].as_u64()),
        (Some("api"), Some(1))
    );
    let auth = find(&t["auth_failures"], "policy", "key").expect("failures of policy 'key'");
    assert_eq!(auth["count"], 3, "{t:#}");
    let lat = find(&t["latency"], "route", "api").unwrap();
    assert_eq!(lat["count"], ok + 4);
    assert!(lat["p50_seconds"].as_f64().unwrap() > 0.0);
    assert!(lat["p99_seconds"].as_f64().unwrap() >= lat["p50_seconds"].as_f64().unwrap());

    // The same numbers in /metrics, under the two new families.
    let metrics = get(gw.admin, "/metrics", &[]).body;
    for line in [
        r#"gateway_rate_limit_rejections_total{route="api",limit="tight"} 1"#,
        r#"gateway_auth_policy_failures_total{policy="key",reason="invalid_credentials"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    // The escalation timeline.
    let recent = s["escalations"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{s:#}");
    let e = &recent[0];
    assert_eq!(e["source"], "127.0.0.1");
    assert_eq!(e["kind"], "auth_failure");
    assert_eq!(e["points"], 31, "1 for the 429, 30 for three bad keys: {e}");
    assert_eq!(
        (e["ttl_secs"].as_u64(), e["in_kernel"].as_bool()),
        (Some(3600), Some(false))
    );
    assert_eq!(s["escalations"]["active"], 1);

    // Upstream health: the live target and the dead one.
    let pool = &s["upstreams"][0];
    assert_eq!(pool["name"], "o");
    assert_eq!(pool["active_checks"], true);
    let live = find(&pool["targets"], "address", &origin.addr.to_string()).unwrap();
    assert_eq!(
        (
            live["available"].as_bool(),
            live["active_healthy"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let dead = pool["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] != origin.addr.to_string())
        .unwrap();
    assert_eq!(
        (
            dead["available"].as_bool(),
            dead["active_healthy"].as_bool()
        ),
        (Some(false), Some(false))
    );

    // XDP off, the cluster link configured but down.
    assert_eq!(s["xdp"]["enabled"], false);
    assert_eq!(s["blocks"], serde_json::json!([]));
    let c = &s["cluster"];
    assert_eq!(
        (c["configured"].as_bool(), c["connected"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(c["node_id"], "node-a");
    assert!(c["redis"].as_str().unwrap().contains("***"), "{c}");
    assert_eq!(s["write_enabled"], true);
    assert_eq!(s["refresh_ms"], 500);

    // Never a secret: the token, the Redis password, API keys (good or
    // bad) or their hashes, in the state or on the page.
    let mut everything = request(gw.admin, "GET", "/dashboard/api/state", &[], "").body;
    for page in ["/dashboard/", "/dashboard/dashboard.js"] {
        everything.push_str(&request(gw.admin, "GET", page, &[], "").body);
    }
    for secret in [TOKEN, REDIS_PASSWORD, "demo-key", KEY_HASH, "wrong-key-1"] {
        assert!(
            !everything.contains(secret),
            "{secret} shown by the dashboard"
        );
    }
    // ...nor in the log, with the token sent right and wrong.
    request(
        gw.admin,
        "GET",
        "/dashboard/api/state",
        &[("x-gateway-token", TOKEN)],
        "",
    );
    request(
        gw.admin,
        "POST",
        "/dashboard/api/block",
        &[("x-gateway-token", "wrong-token-0123456789")],
        "{}",
    );
    assert!(!gw.log().contains(TOKEN) && !gw.log().contains("wrong-token-0123456789"));
}

#[test]
fn page_and_assets_carry_a_strict_csp_and_security_headers() {
    let origin = Origin::start_blocking("origin");
    let dir = TempDir::tagged("dash-token");
    let gw = gateway(&dir, &origin, false);
    let root = request(gw.admin, "GET", "/", &[], "");
    assert_eq!(
        (root.status, header(&root, "location")),
        (302, Some("/dashboard/"))
    );
    let page = request(gw.admin, "GET", "/dashboard/", &[], "");
    assert_eq!(page.status, 200);
    assert!(
        header(&page, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("<script src=\"dashboard.js\""));
    // No inline script or style in the page itself.
    assert!(!page.body.contains("<script>") && !page.body.contains("style="));
    for (path, ctype) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
        ("/dashboard/vendor/uPlot.iife.min.js", "text/javascript"),
        ("/dashboard/vendor/uPlot.min.css", "text/css"),
        ("/dashboard/vendor/uPlot.LICENSE", "text/plain"),
        ("/dashboard/api/state", "application/json"),
    ] {
        let r = request(gw.admin, "GET", path, &[], "");
        assert_eq!(r.status, 200, "{path}");
        assert!(
            header(&r, "content-type").unwrap().starts_with(ctype),
            "{path}: {}",
            r.head
        );
        let csp = header(&r, "content-security-policy").unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(
            header(&r, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&r, "x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"), "{path}");
        assert_eq!(header(&r, "cache-control"), Some("no-store"), "{path}");
        // Never an invitation to other origins, never a cookie.
        assert!(
            header(&r, "access-control-allow-origin").is_none(),
            "{path}"
        );
        assert!(header(&r, "set-cookie").is_none(), "{path}");
    }
    assert_eq!(
        request(gw.admin, "GET", "/dashboard/nope.js", &[], "").status,
        404
    );
    assert_eq!(
        request(gw.admin, "GET", "/dashboard/../metrics", &[], "").status,
        404
    );
    assert_eq!(
        request(gw.admin, "POST", "/dashboard/", &[], "").status,
        405
    );
    let r = request(gw.admin, "DELETE", "/dashboard/api/state", &[], "");
    assert_eq!((r.status, header(&r, "allow")), (405, Some("GET, HEAD")));
    // /metrics is where it was.
    assert_eq!(request(gw.admin, "GET", "/metrics", &[], "").status, 200);
}

#[test]
fn reads_without_a_token_answer_a_loopback_host_only() {
    let origin = Origin::start_blocking("origin");
    let dir = TempDir::tagged("dash-token");
    let gw = gateway(&dir, &origin, false);
    let read = |headers: &[(&str, &str)]| {
        request(gw.admin, "GET", "/dashboard/api/state", headers, "").status
    };
    for host in ["localhost:9901", "127.0.0.1", "[::1]:9901"] {
        assert_eq!(read(&[("host", host)]), 200, "{host}");
    }
    // DNS rebinding: a page of evil.example whose name now points at
    // 127.0.0.1 reads same-origin, but its Host header says evil.example.
    for host in [
        "evil.example:9901",
        "localhost.evil.example",
        "10.1.2.3:9901",
    ] {
        assert_eq!(read(&[("host", host)]), 403, "{host}");
    }
    assert_eq!(
        read(&[("host", "evil.example"), ("x-gateway-token", TOKEN)]),
        200
    );
    // A token that is sent is checked, also on loopback.
    for wrong in [
        "x",
        "dash-token-0123456789abcdeF",
        "dash-token-0123456789abcde",
    ] {
        assert_eq!(read(&[("x-gateway-token", wrong)]), 401, "{wrong}");
    }
}

#[test]
fn write_actions_need_write_post_json_the_token_and_the_same_origin() {
    let origin = Origin::start_blocking("origin");
    let dir = TempDir::tagged("dash-token");
    let gw = gateway(&dir, &origin, true);
    let block = r#"{"net":"192.0.2.7","ttl_secs":60}"#;
    let json = ("content-type", "application/json");
    let tok = ("x-gateway-token", TOKEN);
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        request(gw.admin, "POST", path, headers, body)
    };
    // No token, a wrong one, one sent as a cookie or a query: 401.
    for headers in [
        vec![json],
        vec![json, ("x-gateway-token", "dash-token-0123456789abcdeX")],
        vec![json, ("x-gateway-token", "")],
        vec![
            json,
            ("cookie", "x-gateway-token=dash-token-0123456789abcdef"),
        ],
        vec![
            json,
            ("authorization", "Bearer dash-token-0123456789abcdef"),
        ],
    ] {
        let r = post("/dashboard/api/block", &headers, block);
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert!(header(&r, "www-authenticate").is_some());
    }
    let r = post(
        &format!("/dashboard/api/block?token={TOKEN}"),
        &[json],
        block,
    );
    assert_eq!(r.status, 401);
    // GET has no side effects.
    let r = request(
        gw.admin,
        "GET",
        "/dashboard/api/block?net=192.0.2.7&ttl_secs=60",
        &[tok],
        "",
    );
    assert_eq!((r.status, header(&r, "allow")), (405, Some("POST")));
    // Cross-site, even with the token (a form post or fetch from another origin).
    for site in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        assert_eq!(
            post("/dashboard/api/block", &[json, tok, site], block).status,
            403,
            "{site:?}"
        );
    }
    // A form's content types are refused (a CORS-simple request).
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let r = post("/dashboard/api/block", &[("content-type", ct), tok], block);
        assert_eq!(r.status, 415, "{ct}");
    }
    // Bad bodies: 400 with what is wrong.
    for bad in [
        r#"{"net":"192.0.2.7"}"#,
        r#"{"net":"192.0.2.7","ttl_secs":0}"#,
        "{",
    ] {
        assert_eq!(
            post("/dashboard/api/block", &[json, tok], bad).status,
            400,
            "{bad}"
        );
    }
    // Everything right, same origin: it reaches the blocklist, which is
    // off here (XDP off): 409 saying so. The privileged browser test
    // blocks for real.
    let origin_h = format!("http://{}", gw.admin);
    let r = post(
        "/dashboard/api/block",
        &[
            json,
            tok,
            ("origin", &origin_h),
            ("sec-fetch-site", "same-origin"),
        ],
        block,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("XDP fast path is disabled"), "{}", r.body);
    let log = gw.log();
    assert!(log.contains("dashboard action refused"), "{log}");
    assert!(!log.contains(TOKEN));
}

#[test]
fn read_only_dashboard_refuses_actions_even_with_the_token() {
    let origin = Origin::start_blocking("origin");
    let dir = TempDir::tagged("dash-token");
    let gw = gateway(&dir, &origin, false);
    let r = request(
        gw.admin,
        "POST",
        "/dashboard/api/unblock",
        &[
            ("content-type", "application/json"),
            ("x-gateway-token", TOKEN),
        ],
        r#"{"net":"192.0.2.7"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("read-only"));
}

/// A config whose dashboard reads `token_file`.
fn token_file_config(dir: &TempDir, token_file: &std::path::Path) -> std::path::PathBuf {
    let config = dir.0.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[xdp]\nenabled = false\n[admin]\nsocket = \"{}\"\n[observability]\nenabled = true\n\
             listen = \"127.0.0.1:{}\"\n[observability.dashboard]\ntoken_file = \"{}\"\n\
             [[listeners]]\nname = \"m\"\naddress = \"127.0.0.1:{}\"\n",
            dir.0.join("admin.sock").display(),
            free_port(),
            token_file.display(),
            free_port()
        ),
    )
    .unwrap();
    config
}

/// `gateway run` and `gateway check-config` both refuse a short or
/// missing token file, naming the file and never echoing its content;
/// `check-config` passes a good one without printing it either.
#[test]
fn short_or_missing_token_file_stops_the_start_naming_the_file() {
    let dir = TempDir::tagged("dash-bad-token");
    let short = dir.0.join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    for (file, expect) in [
        (short.clone(), "at least 16"),
        (dir.0.join("missing.token"), "missing.token"),
    ] {
        let config = token_file_config(&dir, &file);
        for command in ["run", "check-config"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
                .args([command, "--config"])
                .arg(&config)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command}: {err}");
            assert!(
                err.contains("token_file") && err.contains(expect),
                "{command}: {err}"
            );
            assert!(
                !err.contains("abc"),
                "{command}: the short token is not echoed: {err}"
            );
        }
    }
    let good = dir.0.join("good.token");
    std::fs::write(&good, format!("{TOKEN}\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check-config", "--config"])
        .arg(token_file_config(&dir, &good))
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(TOKEN), "the token is not printed: {all}");
}
