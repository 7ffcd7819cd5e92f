//! Scenario 4: proxy throughput and latency. wrk (one thread, pinned to the
//! load core, same connection count for every row) against our gateway,
//! NGINX and HAProxy, all pinned to the SUT core and forwarding to the same
//! NGINX origin: small GET and 1 KiB JSON POST over HTTP/1.1 keep-alive, in
//! clear and over TLS; then with authentication (our JWT, and the API-key
//! check every proxy can do). A direct-to-origin run shows what the load
//! generator and origin alone reach. Rows are run back to back in one run.

use serde_json::{Value, json};

use super::{
    Opts, Progress,
    servers::{
        API_KEY, LOAD_CPU, Load, Ports, Proxy, SUT_CPU, Stack, WrkRun, spawn_pinned,
        spawn_pinned_env, wait_port, which, wrk,
    },
};
use crate::guard::ChildGuard;

const PROXIES: [Proxy; 3] = [Proxy::Gateway, Proxy::Nginx, Proxy::Haproxy];

/// Number of progress steps `run` reports.
pub const STEPS: usize = 9;

fn body_1k() -> String {
    // A JSON object of exactly 1024 bytes.
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < 1024 - 40 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"id\":{i},\"ok\":true}}"));
        i += 1;
    }
    s.push_str("],\"pad\":\"");
    while s.len() < 1024 - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    assert_eq!(s.len(), 1024);
    s
}

struct Case {
    name: &'static str,
    tls: bool,
    post: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "GET small, HTTP/1.1 keep-alive",
        tls: false,
        post: false,
    },
    Case {
        name: "POST 1 KiB JSON, HTTP/1.1 keep-alive",
        tls: false,
        post: true,
    },
    Case {
        name: "GET small, TLS keep-alive",
        tls: true,
        post: false,
    },
    Case {
        name: "POST 1 KiB JSON, TLS keep-alive",
        tls: true,
        post: true,
    },
];

fn url(port: u16, tls: bool, path: &str) -> String {
    // Without SNI every server presents its only (the shared) certificate.
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}{path}")
}

fn row(case: &str, proxy: &str, run: &WrkRun, peer: Option<&WrkRun>) -> Value {
    let mut v = json!({ "case": case, "proxy": proxy });
    v.as_object_mut()
        .unwrap()
        .extend(run.json().as_object().unwrap().clone());
    if let Some(p) = peer {
        v["rps_ratio_vs_peer"] = json!(ratio(run.rps, p.rps));
        v["p99_ratio_vs_peer"] = json!(ratio(run.p99_us as f64, p.p99_us as f64));
    }
    v
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        return 0.0;
    }
    ((a / b) * 100.0).round() / 100.0
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 1.0 } else { 6.0 };
    let conns = if opts.quick { 16 } else { 64 };
    let body = stack.dir.0.join("body.json");
    std::fs::write(&body, body_1k()).unwrap();
    let load = |url: String, post: bool, headers: Vec<String>| {
        let l = Load {
            url,
            connections: conns,
            secs,
            post_body: post.then_some(body.as_path()),
            headers,
        };
        if !opts.quick {
            // Warm-up: connections, pools, caches.
            wrk(&Load {
                secs: 1.0,
                ..l.clone_shallow()
            });
        }
        wrk(&l)
    };

    progress.step("proxy: direct to origin (load generator + origin alone)");
    let direct_get = load(
        url(stack.ports.origin, false, "/public/hello"),
        false,
        vec![],
    );
    let direct_post = load(
        url(stack.ports.origin, false, "/public/hello"),
        true,
        vec![],
    );

    let mut get_runs: Vec<WrkRun> = Vec::new();
    let mut rows = vec![
        row(
            "GET small, HTTP/1.1 keep-alive",
            "direct to origin (no proxy)",
            &direct_get,
            None,
        ),
        row(
            "POST 1 KiB JSON, HTTP/1.1 keep-alive",
            "direct to origin (no proxy)",
            &direct_post,
            None,
        ),
    ];
    for case in &CASES {
        progress.step(&format!(
            "proxy: {} (gateway, nginx, haproxy; {secs}s each)",
            case.name
        ));
        let runs: Vec<WrkRun> = PROXIES
            .iter()
            .map(|p| {
                load(
                    url(stack.port(*p, case.tls), case.tls, "/public/hello"),
                    case.post,
                    vec![],
                )
            })
            .collect();
        for (i, p) in PROXIES.iter().enumerate() {
            rows.push(row(case.name, p.name(), &runs[i], None));
        }
        let gw = rows.len() - 3;
        for (k, peer) in [(1, "nginx"), (2, "haproxy")] {
            rows[gw][format!("rps_ratio_vs_{peer}")] = json!(ratio(runs[0].rps, runs[k].rps));
            rows[gw][format!("p99_ratio_vs_{peer}")] =
                json!(ratio(runs[0].p99_us as f64, runs[k].p99_us as f64));
        }
        if !case.tls && !case.post {
            get_runs = runs;
        }
    }

    // Cluster mode: the GET row through a second gateway whose per-IP
    // limit is shared through Redis. NGINX (limit_req) and HAProxy (stick
    // table) apply the same per-IP limit, locally only: neither can enforce
    // one limit across nodes, so they are the nearest equivalent.
    progress.step("proxy: per-IP limit shared through Redis (gateway in cluster mode)");
    let shared = {
        let cluster = ClusterGateway::start(stack);
        load(url(cluster.http, false, "/public/hello"), false, vec![])
    };
    let shared_case = "GET small, HTTP/1.1, per-IP limit shared through Redis";
    let mut v = row(shared_case, "gateway (cluster mode)", &shared, None);
    for (k, peer) in [(1, "nginx"), (2, "haproxy")] {
        v[format!("rps_ratio_vs_{peer}")] = json!(ratio(shared.rps, get_runs[k].rps));
        v[format!("p99_ratio_vs_{peer}")] =
            json!(ratio(shared.p99_us as f64, get_runs[k].p99_us as f64));
    }
    let shared_vs_local = ratio(shared.rps, get_runs[0].rps);
    rows.push(v);

    progress.step("proxy: authentication (JWT ES256: gateway, haproxy; API key: all three)");
    let key_header = format!("X-Api-Key: {API_KEY}");
    let jwt_header = format!("Authorization: Bearer {}", stack.jwt_token);
    // NGINX OSS cannot verify a JWT: only ours and HAProxy's `jwt_verify`.
    let jwt_runs: Vec<WrkRun> = [Proxy::Gateway, Proxy::Haproxy]
        .iter()
        .map(|p| {
            load(
                url(stack.port(*p, false), false, "/jwt/hello"),
                false,
                vec![jwt_header.clone()],
            )
        })
        .collect();
    let key_runs: Vec<WrkRun> = PROXIES
        .iter()
        .map(|p| {
            load(
                url(stack.port(*p, false), false, "/key/hello"),
                false,
                vec![key_header.clone()],
            )
        })
        .collect();
    let auth_case = "GET small, HTTP/1.1, auth";
    let jwt_case = format!("{auth_case}: JWT ES256");
    let mut gw_jwt = row(&jwt_case, "gateway", &jwt_runs[0], Some(&key_runs[1]));
    gw_jwt["peer"] = json!("nginx API-key map (NGINX OSS has no JWT verification)");
    gw_jwt["rps_ratio_vs_haproxy"] = json!(ratio(jwt_runs[0].rps, jwt_runs[1].rps));
    gw_jwt["p99_ratio_vs_haproxy"] =
        json!(ratio(jwt_runs[0].p99_us as f64, jwt_runs[1].p99_us as f64));
    rows.push(gw_jwt);
    rows.push(row(&jwt_case, "haproxy", &jwt_runs[1], None));
    for (i, p) in PROXIES.iter().enumerate() {
        rows.push(row(
            &format!("{auth_case}: API key"),
            p.name(),
            &key_runs[i],
            None,
        ));
    }
    let gw = rows.len() - 3;
    for (k, peer) in [(1, "nginx"), (2, "haproxy")] {
        rows[gw][format!("rps_ratio_vs_{peer}")] = json!(ratio(key_runs[0].rps, key_runs[k].rps));
        rows[gw][format!("p99_ratio_vs_{peer}")] =
            json!(ratio(key_runs[0].p99_us as f64, key_runs[k].p99_us as f64));
    }
    // JSON Schema validation: the same 1 KiB POST through the gateway with a
    // body schema, compared with the gateway without one and with the peers
    // (which do not validate: NGINX and HAProxy have no JSON Schema check).
    progress.step("proxy: JSON Schema validation (gateway, 1 KiB POST)");
    let validated = load(
        url(stack.port(Proxy::Gateway, false), false, "/validated/hello"),
        true,
        vec![],
    );
    let plain_post = rows
        .iter()
        .find(|r| r["case"] == "POST 1 KiB JSON, HTTP/1.1 keep-alive" && r["proxy"] == "gateway")
        .and_then(|r| r["rps"].as_f64());
    let mut v = row(
        "POST 1 KiB JSON, HTTP/1.1, JSON Schema validated",
        "gateway",
        &validated,
        None,
    );
    if let Some(base) = plain_post {
        v["peer"] = json!("the gateway's own unvalidated POST row");
        v["peer_short"] = json!("vs unvalidated");
        v["rps_ratio_vs_peer"] = json!(ratio(validated.rps, base));
    }
    rows.push(v);
    json!({
        "seconds_per_row": secs,
        "connections": conns,
        "load_generator": "wrk 4.1 (1 thread) with bench/wrk.lua",
        "json_schema_validation": "the validated row runs the schema in tests/src/bench/gwconf.rs on every body; NGINX and HAProxy have no JSON Schema validation to compare with",
        "shared_limit": format!(
            "the cluster-mode row is the GET row through a second gateway whose per-IP limit (1,000,000 r/s) is one bucket in Redis (redis-server on CPU {LOAD_CPU}, loopback), taken in leases of rate x 50 ms; NGINX and HAProxy apply the same limit locally (neither has a cluster-wide limit); requests/s {shared_vs_local}x of the gateway's local-limit GET row"
        ),
        "rows": rows,
    })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Proxy throughput and latency ({} connections, {}s per row, wrk on CPU {}, proxies on CPU {}, NGINX origin on CPU {})\n\n\
Ratios are ours / peer: above 1 is better for requests/s, below 1 is better for p99.\n\n\
| case | proxy | requests/s | p50 µs | p99 µs | p99.9 µs | errors | rps vs nginx | rps vs haproxy | p99 vs nginx | p99 vs haproxy |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        v["connections"],
        v["seconds_per_row"],
        super::servers::LOAD_CPU,
        super::servers::SUT_CPU,
        super::servers::LOAD_CPU,
    );
    let f = super::ratio_cell;
    for r in v["rows"].as_array().into_iter().flatten() {
        let (mut rn, rh, mut pn, ph) = (
            f(r, "rps_ratio_vs_nginx"),
            f(r, "rps_ratio_vs_haproxy"),
            f(r, "p99_ratio_vs_nginx"),
            f(r, "p99_ratio_vs_haproxy"),
        );
        if r.get("rps_ratio_vs_peer").is_some() {
            let label = r["peer_short"].as_str().unwrap_or("vs API key");
            rn = format!("{} ({label})", f(r, "rps_ratio_vs_peer"));
            pn = format!("{} ({label})", f(r, "p99_ratio_vs_peer"));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {rn} | {rh} | {pn} | {ph} |\n",
            r["case"].as_str().unwrap_or(""),
            r["proxy"].as_str().unwrap_or(""),
            r["rps"],
            r["p50_us"],
            r["p99_us"],
            r["p999_us"],
            r["errors"],
        ));
    }
    if let Some(note) = v["shared_limit"].as_str() {
        out.push_str(&format!("\nCluster mode: {note}.\n"));
    }
    out.push_str(&format!(
        "\nJSON Schema validation: {}. NGINX OSS cannot verify JWTs; the gateway's JWT row is compared with NGINX's API-key `map` check, the nearest equivalent, and with HAProxy's `jwt_verify` (same ES256 key and claims).\n",
        v["json_schema_validation"].as_str().unwrap_or("")
    ));
    out
}

/// Redis (on the load core, as a Redis host would be off the proxy's) and
/// a gateway in cluster mode with the benchmark config, its per-IP limit
/// shared. Both stop on drop.
struct ClusterGateway {
    http: u16,
    _redis: ChildGuard,
    _gateway: ChildGuard,
}

impl ClusterGateway {
    fn start(stack: &Stack) -> Self {
        // Ports::new leaves base+7..=base+9 unused.
        let base = stack.ports.origin;
        let (http, https, redis_port) = (base + 7, base + 8, base + 9);
        let dir = stack.dir.0.join("cluster");
        std::fs::create_dir_all(&dir).unwrap();
        let redis_log = dir.join("redis.out");
        let redis = spawn_pinned(
            LOAD_CPU,
            &which("redis-server"),
            &[
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ],
            &redis_log,
        );
        wait_port(redis_port, "redis-server", &redis_log);
        let ports = Ports {
            gw_http: http,
            gw_https: https,
            ..Ports::new()
        };
        let text = super::gwconf::config_text(&dir, &ports, &stack.certs, "[xdp]\nenabled = false");
        let limit = "key = \"ip\"\n";
        assert!(
            text.contains(limit),
            "the bench config's per-IP limit changed"
        );
        let text = format!(
            "{}\n[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}/0\"\nnode_id = \"bench\"\n",
            text.replacen(limit, "key = \"ip\"\nshared = true\n", 1)
        );
        let conf = dir.join("gateway.toml");
        std::fs::write(&conf, text).unwrap();
        let log = dir.join("gateway.out");
        let gateway = spawn_pinned_env(
            SUT_CPU,
            &crate::gateway::bin(),
            &["run", "--config", conf.to_str().unwrap()],
            &log,
            &[("GATEWAY_LOG", "warn")],
        );
        wait_port(http, "gateway (cluster mode)", &log);
        // Measured only once the node holds its Redis link.
        let socket = dir.join("admin.sock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = crate::gateway::cli(&socket, &["cluster", "status", "--json"]);
            let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if status["connected"] == true {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster-mode gateway did not reach Redis: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self {
            http,
            _redis: redis,
            _gateway: gateway,
        }
    }
}
