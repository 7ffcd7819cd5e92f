//! Scenario 4: proxy throughput and latency. wrk (one thread, pinned to the
//! load core, same connection count for every row) against our gateway,
//! NGINX and HAProxy, all pinned to the SUT core and forwarding to the same
//! NGINX origin: small GET and 1 KiB JSON POST over HTTP/1.1 keep-alive, in
//! clear and over TLS; then with authentication (our JWT, and the API-key
//! check every proxy can do). A direct-to-origin run shows what the load
//! generator and origin alone reach. Rows are run back to back in one run.

use serde_json::{Value, json};

use super::{
    Opts, Progress, median,
    servers::{
        API_KEY, LOAD_CPU, Load, Proxy, SpareGateway, Stack, WrkRun, connect_burst, spawn_pinned,
        tree_cpu_ns, wait_port, which, wrk,
    },
};
use test_support::process::ChildGuard;

const PROXIES: [Proxy; 3] = [Proxy::Gateway, Proxy::Nginx, Proxy::Haproxy];

/// Number of progress steps `run` reports.
pub const STEPS: usize = 12;
/// Runs of each proxy row in full mode (ours and the peers interleaved);
/// the tables show the median with the min–max.
pub const REPEATS: usize = 3;
/// Clients of the connection-burst row.
pub const BURST_CLIENTS: usize = 200;

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

/// One proxy's repeated runs of one row, with the proxy's CPU time.
struct Samples {
    runs: Vec<WrkRun>,
    /// Proxy CPU µs per request, per run (empty without a process to read).
    cpu_us: Vec<f64>,
}

impl Samples {
    fn rps(&self) -> f64 {
        median(self.runs.iter().map(|r| r.rps).collect())
    }

    fn p99(&self) -> f64 {
        median(self.runs.iter().map(|r| r.p99_us as f64).collect())
    }

    fn json(&self) -> Value {
        let rps: Vec<f64> = self.runs.iter().map(|r| r.rps).collect();
        let p99: Vec<f64> = self.runs.iter().map(|r| r.p99_us as f64).collect();
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let mut v = json!({
            "runs": self.runs.len(),
            "requests": self.runs.iter().map(|r| r.requests).sum::<u64>(),
            "errors": self.runs.iter().map(|r| r.errors).sum::<u64>(),
            "rps": self.rps().round() as u64,
            "rps_min": min(&rps).round() as u64,
            "rps_max": max(&rps).round() as u64,
            "p50_us": median(self.runs.iter().map(|r| r.p50_us as f64).collect()).round() as u64,
            "p99_us": self.p99().round() as u64,
            "p99_min_us": min(&p99).round() as u64,
            "p99_max_us": max(&p99).round() as u64,
            "p999_us": median(self.runs.iter().map(|r| r.p999_us as f64).collect()).round() as u64,
        });
        if !self.cpu_us.is_empty() {
            v["cpu_us_per_request"] = json!((median(self.cpu_us.clone()) * 10.0).round() / 10.0);
        }
        v
    }
}

fn row(case: &str, proxy: &str, s: &Samples, peer: Option<&Samples>) -> Value {
    let mut v = json!({ "case": case, "proxy": proxy });
    v.as_object_mut()
        .unwrap()
        .extend(s.json().as_object().unwrap().clone());
    if let Some(p) = peer {
        v["rps_ratio_vs_peer"] = json!(ratio(s.rps(), p.rps()));
        v["p99_ratio_vs_peer"] = json!(ratio(s.p99(), p.p99()));
    }
    v
}

/// Sets the ratios of `ours` against NGINX (`runs[1]`) and HAProxy
/// (`runs[2]`) on `row`, from the medians.
fn peer_ratios(row: &mut Value, ours: &Samples, nginx: &Samples, haproxy: &Samples) {
    for (peer, name) in [(nginx, "nginx"), (haproxy, "haproxy")] {
        row[format!("rps_ratio_vs_{name}")] = json!(ratio(ours.rps(), peer.rps()));
        row[format!("p99_ratio_vs_{name}")] = json!(ratio(ours.p99(), peer.p99()));
        if !ours.cpu_us.is_empty() && !peer.cpu_us.is_empty() {
            row[format!("cpu_ratio_vs_{name}")] = json!(ratio(
                median(ours.cpu_us.clone()),
                median(peer.cpu_us.clone())
            ));
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        return 0.0;
    }
    ((a / b) * 100.0).round() / 100.0
}

/// One load, run `reps` times per target with the targets interleaved
/// (A B C A B C ...), so a slow phase of the machine hits every target
/// alike. `targets`: a label-free list of (URL, process to measure).
fn interleaved(
    targets: &[(String, Option<u32>)],
    reps: usize,
    warm_up: bool,
    make: &dyn Fn(String) -> Load<'static>,
) -> Vec<Samples> {
    let mut out: Vec<Samples> = targets
        .iter()
        .map(|_| Samples {
            runs: Vec::new(),
            cpu_us: Vec::new(),
        })
        .collect();
    for rep in 0..reps {
        for (i, (url, pid)) in targets.iter().enumerate() {
            let load = make(url.clone());
            if warm_up && rep == 0 {
                // Warm-up: connections, pools, caches.
                wrk(&Load {
                    secs: 1.0,
                    ..load.clone_shallow()
                });
            }
            let before = pid.map(tree_cpu_ns);
            let run = wrk(&load);
            if let (Some(pid), Some(before)) = (pid, before) {
                let used = tree_cpu_ns(*pid).saturating_sub(before);
                if run.requests > 0 {
                    out[i]
                        .cpu_us
                        .push(used as f64 / 1000.0 / run.requests as f64);
                }
            }
            out[i].runs.push(run);
        }
    }
    out
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 1.0 } else { 6.0 };
    let conns = if opts.quick { 16 } else { 64 };
    let reps = if opts.quick { 1 } else { REPEATS };
    let body: &'static std::path::Path = Box::leak(stack.dir.0.join("body.json").into_boxed_path());
    std::fs::write(body, body_1k()).unwrap();
    let make = |post: bool, headers: Vec<String>| {
        move |url: String| Load {
            url,
            connections: conns,
            secs,
            post_body: post.then_some(body),
            headers: headers.clone(),
        }
    };
    let warm = !opts.quick;
    let proxies = |tls: bool, path: &str| -> Vec<(String, Option<u32>)> {
        PROXIES
            .iter()
            .map(|p| (url(stack.port(*p, tls), tls, path), Some(stack.pid(*p))))
            .collect()
    };

    progress.step("proxy: direct to origin (load generator + origin alone)");
    let origin = vec![(url(stack.ports.origin, false, "/public/hello"), None)];
    let direct_get = interleaved(&origin, reps, warm, &make(false, vec![])).remove(0);
    let direct_post = interleaved(&origin, reps, warm, &make(true, vec![])).remove(0);

    let mut get_runs: Vec<Samples> = Vec::new();
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
            "proxy: {} (gateway, nginx, haproxy interleaved; {reps} x {secs}s each)",
            case.name
        ));
        let runs = interleaved(
            &proxies(case.tls, "/public/hello"),
            reps,
            warm,
            &make(case.post, vec![]),
        );
        for (i, p) in PROXIES.iter().enumerate() {
            rows.push(row(case.name, p.name(), &runs[i], None));
        }
        let gw = rows.len() - 3;
        peer_ratios(&mut rows[gw], &runs[0], &runs[1], &runs[2]);
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
        let target = vec![(
            url(cluster.gateway.http, false, "/public/hello"),
            Some(cluster.gateway.pid),
        )];
        interleaved(&target, reps, warm, &make(false, vec![])).remove(0)
    };
    let shared_case = "GET small, HTTP/1.1, per-IP limit shared through Redis";
    let mut v = row(shared_case, "gateway (cluster mode)", &shared, None);
    peer_ratios(&mut v, &shared, &get_runs[1], &get_runs[2]);
    let shared_vs_local = ratio(shared.rps(), get_runs[0].rps());
    rows.push(v);

    progress.step("proxy: authentication (JWT ES256: gateway, haproxy; API key: all three)");
    let key_header = format!("X-Api-Key: {API_KEY}");
    let jwt_header = format!("Authorization: Bearer {}", stack.jwt_token);
    // NGINX OSS cannot verify a JWT: only ours and HAProxy's `jwt_verify`.
    let jwt_targets: Vec<(String, Option<u32>)> = [Proxy::Gateway, Proxy::Haproxy]
        .iter()
        .map(|p| {
            (
                url(stack.port(*p, false), false, "/jwt/hello"),
                Some(stack.pid(*p)),
            )
        })
        .collect();
    let jwt_runs = interleaved(&jwt_targets, reps, warm, &make(false, vec![jwt_header]));
    let key_runs = interleaved(
        &proxies(false, "/key/hello"),
        reps,
        warm,
        &make(false, vec![key_header]),
    );
    let auth_case = "GET small, HTTP/1.1, auth";
    let jwt_case = format!("{auth_case}: JWT ES256");
    let mut gw_jwt = row(&jwt_case, "gateway", &jwt_runs[0], Some(&key_runs[1]));
    gw_jwt["peer"] = json!("nginx API-key map (NGINX OSS has no JWT verification)");
    gw_jwt["rps_ratio_vs_haproxy"] = json!(ratio(jwt_runs[0].rps(), jwt_runs[1].rps()));
    gw_jwt["p99_ratio_vs_haproxy"] = json!(ratio(jwt_runs[0].p99(), jwt_runs[1].p99()));
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
    peer_ratios(&mut rows[gw], &key_runs[0], &key_runs[1], &key_runs[2]);
    // JSON Schema validation: the same 1 KiB POST through the gateway with a
    // body schema, compared with the gateway without one and with the peers
    // (which do not validate: NGINX and HAProxy have no JSON Schema check).
    progress.step("proxy: JSON Schema validation (gateway, 1 KiB POST)");
    let target = vec![(
        url(stack.port(Proxy::Gateway, false), false, "/validated/hello"),
        Some(stack.pid(Proxy::Gateway)),
    )];
    let validated = interleaved(&target, reps, warm, &make(true, vec![])).remove(0);
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
        v["rps_ratio_vs_peer"] = json!(ratio(validated.rps(), base));
    }
    rows.push(v);

    // Aggregation: one GET answered from 3 parallel calls to the origin,
    // against the gateway's own single-upstream GET row (issue: the added
    // latency over the slowest call; every call here hits the same origin,
    // so the single GET's latency stands for the slowest call's).
    progress.step("proxy: aggregation of 3 calls (gateway) vs its single-upstream GET");
    let agg_target = vec![(
        url(stack.port(Proxy::Gateway, false), false, "/agg/42"),
        Some(stack.pid(Proxy::Gateway)),
    )];
    let single_target = vec![(
        url(stack.port(Proxy::Gateway, false), false, "/public/hello"),
        Some(stack.pid(Proxy::Gateway)),
    )];
    let (agg, single) = {
        let mut both = Vec::new();
        for t in [&agg_target, &single_target] {
            both.push(interleaved(t, reps, warm, &make(false, vec![])).remove(0));
        }
        let single = both.pop().unwrap();
        (both.pop().unwrap(), single)
    };
    let p50 = |s: &Samples| median(s.runs.iter().map(|r| r.p50_us as f64).collect());
    let mut v = row(
        "GET, aggregate of 3 parallel calls merged",
        "gateway",
        &agg,
        Some(&single),
    );
    v["peer"] = json!("the gateway's single-upstream GET, same run");
    v["peer_short"] = json!("vs single GET");
    v["added_p50_us"] = json!((p50(&agg) - p50(&single)).round() as i64);
    rows.push(v);

    // The access log on: ours to a file (its buffered writer thread) and
    // NGINX's `access_log ... buffer=64k flush=1s`, interleaved; the target
    // is the gateway at >= 0.9x of itself with the log off.
    progress.step("proxy: access log on (gateway to a file, nginx buffer=64k)");
    let logged = {
        let gw = SpareGateway::start(stack, "logged", |text, dir| {
            let off = "access_log = \"off\"";
            assert!(text.contains(off), "the bench config's access log changed");
            let log = dir.join("access.log");
            text.replacen(off, &format!("access_log = \"{}\"", log.display()), 1)
        });
        let targets = vec![
            (url(gw.http, false, "/public/hello"), Some(gw.pid)),
            (
                url(stack.port(Proxy::Nginx, false), false, "/logged/hello"),
                Some(stack.pid(Proxy::Nginx)),
            ),
        ];
        interleaved(&targets, reps, warm, &make(false, vec![]))
    };
    let log_case = "GET small, HTTP/1.1 keep-alive, access log on";
    let mut v = row(log_case, "gateway", &logged[0], Some(&get_runs[0]));
    v["peer"] = json!("the gateway's own GET row with the log off");
    v["peer_short"] = json!("vs log off");
    v["rps_ratio_vs_nginx"] = json!(ratio(logged[0].rps(), logged[1].rps()));
    v["p99_ratio_vs_nginx"] = json!(ratio(logged[0].p99(), logged[1].p99()));
    rows.push(v);
    rows.push(row(log_case, "nginx", &logged[1], None));

    // Bursts of new connections: every client connects at the same instant.
    progress.step(&format!(
        "proxy: {BURST_CLIENTS} clients connecting at once (gateway, nginx, haproxy)"
    ));
    let burst: Vec<Value> = PROXIES
        .iter()
        .map(|p| {
            let (max, over) = connect_burst(stack.port(*p, false), "/public/hello", BURST_CLIENTS);
            json!({
                "proxy": p.name(),
                "clients": BURST_CLIENTS,
                "slowest_ms": max.as_millis() as u64,
                "over_1s": over,
            })
        })
        .collect();

    json!({
        "seconds_per_row": secs,
        "repeats": reps,
        "connections": conns,
        "load_generator": "wrk 4.1 (1 thread) with bench/wrk.lua",
        "json_schema_validation": "the validated row runs the schema in bench/src/gwconf.rs on every body; NGINX and HAProxy have no JSON Schema validation to compare with",
        "shared_limit": format!(
            "the cluster-mode row is the GET row through a second gateway whose per-IP limit (1,000,000 r/s) is one bucket in Redis (redis-server on CPU {LOAD_CPU}, loopback), taken in leases of rate x 50 ms; NGINX and HAProxy apply the same limit locally (neither has a cluster-wide limit); requests/s {shared_vs_local}x of the gateway's local-limit GET row"
        ),
        "rows": rows,
        "connect_burst": burst,
    })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Proxy throughput and latency ({} connections, {} runs of {}s per row with the proxies interleaved, wrk on CPU {}, proxies on CPU {}, NGINX origin on CPU {})\n\n\
Each figure is the median of the runs, with the min–max in brackets. Ratios are ours / peer, from the medians: above 1 is better for requests/s, below 1 is better for p99 and CPU. CPU µs/request is the proxy's own CPU time (all its threads and worker processes, from `/proc/<pid>/task/*/schedstat`) divided by the requests it served: the load generator shares this machine, so requests/s alone can hide a proxy that is cheap per request.\n\n\
| case | proxy | requests/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req | errors | rps vs nginx | rps vs haproxy | p99 vs nginx | p99 vs haproxy | CPU vs nginx | CPU vs haproxy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        v["connections"],
        v["repeats"],
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
        let spread = |mid: &str, lo: &str, hi: &str| {
            if r["runs"].as_u64().unwrap_or(1) > 1 {
                format!("{} ({}–{})", r[mid], r[lo], r[hi])
            } else {
                r[mid].to_string()
            }
        };
        let cpu = r
            .get("cpu_us_per_request")
            .map_or("-".to_string(), |c| c.to_string());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {cpu} | {} | {rn} | {rh} | {pn} | {ph} | {} | {} |\n",
            r["case"].as_str().unwrap_or(""),
            r["proxy"].as_str().unwrap_or(""),
            spread("rps", "rps_min", "rps_max"),
            r["p50_us"],
            spread("p99_us", "p99_min_us", "p99_max_us"),
            r["p999_us"],
            r["errors"],
            f(r, "cpu_ratio_vs_nginx"),
            f(r, "cpu_ratio_vs_haproxy"),
        ));
    }
    for r in v["rows"].as_array().into_iter().flatten() {
        if let Some(added) = r.get("added_p50_us") {
            out.push_str(&format!(
                "\nAggregation: one GET answered from 3 parallel calls to the origin, merged as JSON, costs {added} µs at p50 over the gateway's single-upstream GET (every call hits the same origin, so the single GET stands for the slowest call), at {}x its requests/s.\n",
                r["rps_ratio_vs_peer"]
            ));
        }
    }
    if let Some(note) = v["shared_limit"].as_str() {
        out.push_str(&format!("\nCluster mode: {note}.\n"));
    }
    out.push_str(&format!(
        "\nJSON Schema validation: {}. NGINX OSS cannot verify JWTs; the gateway's JWT row is compared with NGINX's API-key `map` check, the nearest equivalent, and with HAProxy's `jwt_verify` (same ES256 key and claims).\n",
        v["json_schema_validation"].as_str().unwrap_or("")
    ));
    if let Some(burst) = v["connect_burst"].as_array() {
        out.push_str("\n#### Connection bursts\n\nEvery client opens its connection at the same instant (a barrier) and sends one GET; a client that needs over 1 s waited for a SYN retransmit (its first SYN met a full accept queue).\n\n| proxy | clients | slowest connect-to-first-byte ms | clients over 1 s |\n|---|---|---|---|\n");
        for b in burst {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                b["proxy"].as_str().unwrap_or(""),
                b["clients"],
                b["slowest_ms"],
                b["over_1s"]
            ));
        }
    }
    out
}

/// Redis (on the load core, as a Redis host would be off the proxy's) and
/// a gateway in cluster mode with the benchmark config, its per-IP limit
/// shared. Both stop on drop (the gateway first: fields drop in order).
struct ClusterGateway {
    gateway: SpareGateway,
    _redis: ChildGuard,
}

impl ClusterGateway {
    fn start(stack: &Stack) -> Self {
        // Ports::new leaves base+7..=base+9 unused: the spare gateway takes
        // the first two, Redis the third.
        let redis_port = stack.ports.origin + 9;
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
        let gateway = SpareGateway::start(stack, "cluster", |text, _| {
            let limit = "key = \"ip\"\n";
            assert!(
                text.contains(limit),
                "the bench config's per-IP limit changed"
            );
            format!(
                "{}\n[cluster]\nredis_url = \"redis://127.0.0.1:{redis_port}/0\"\nnode_id = \"bench\"\n",
                text.replacen(limit, "key = \"ip\"\nshared = true\n", 1)
            )
        });
        let log = dir.join("gateway.out");
        // Measured only once the node holds its Redis link.
        let socket = dir.join("admin.sock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = test_support::gateway::cli(&socket, &["cluster", "status", "--json"]);
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
            gateway,
            _redis: redis,
        }
    }
}
