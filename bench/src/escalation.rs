//! Scenario 5: the headline, L7-to-XDP escalation against many sources.
//! [`SOURCES`] abusive sources, each its own address in the client
//! namespace, start at the same instant sending requests with a wrong API
//! key (one request per connection), while a legitimate client keeps
//! sending [`LEGIT_RPS`] requests/s over keep-alive. Run with escalation
//! on (a source's bad keys put it in the XDP blocklist, so its next SYN is
//! dropped in the kernel) and with it off (the L7 layer answers 401/429
//! forever), [`REPEATS`] times each, the two interleaved, so a slow phase
//! of the machine hits both alike; reported as medians with min-max.
//! Per run: the time from each source's first request to its first
//! dropped SYN; the legitimate client's p99 against its own baseline (the
//! seconds before the attack), over the whole attack and over the part of
//! it after every source was dropped, and per one-second window (shown
//! for the first run); the gateway's CPU and the receiving core's kernel
//! CPU per second; and the CPU per refused attempt, a kernel drop against
//! an L7 refusal. Every loop is bounded by [`ATTACK_SECS`].

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    sync::{Arc, Barrier, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Opts, Progress,
    attack::read_response,
    cpu::{busy_ns, pin_current_thread},
    flood::receive_on_cpu1,
    median, median_range_cell,
    servers::{API_KEY, LOAD_CPU, SUT_CPU, Stack, spawn_pinned_env, tree_cpu_ns, wait_addr},
};
use test_support::{
    guard::{Netns, PinDir, Veth, sh},
    netns::enter,
};

/// How many times each mode runs (full mode; once in quick mode).
pub const REPEATS: usize = 5;
/// Number of progress steps `run` reports.
pub const STEPS: usize = 2 * REPEATS;
/// Abusive sources, each with its own address.
pub const SOURCES: usize = 200;
/// The legitimate client's request rate.
const LEGIT_RPS: u32 = 100;
/// Legitimate traffic alone before the attack (its baseline: 300
/// requests, so its p99 is not one stray sample).
const BASELINE_SECS: f64 = 3.0;
/// How long the abusive sources run.
const ATTACK_SECS: f64 = 4.0;
/// An abusive connect that gets no answer in this time counts as dropped.
const SYN_TIMEOUT: Duration = Duration::from_millis(150);
const PORT: u16 = 18081;

struct Topo {
    ns: Netns,
    veth: Veth,
    host_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
    sources: Vec<Ipv4Addr>,
}

fn topo() -> Topo {
    let ns = Netns::new();
    let veth = Veth::new(&ns);
    let sub = (std::process::id() % 200) as u8 + 20;
    let host_ip = Ipv4Addr::new(198, 19, sub, 1);
    let client_ip = Ipv4Addr::new(198, 19, sub, 2);
    let sources: Vec<Ipv4Addr> = (0..SOURCES)
        .map(|i| Ipv4Addr::new(198, 19, sub, 10 + i as u8))
        .collect();
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/24"),
        "dev",
        &veth.host,
    ]);
    sh(&["ip", "link", "set", &veth.host, "up"]);
    for ip in std::iter::once(&client_ip).chain(&sources) {
        ns.sh(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.peer]);
    }
    ns.sh(&["ip", "link", "set", &veth.peer, "up"]);
    ns.sh(&["ip", "link", "set", "lo", "up"]);
    ns.sh(&["ping", "-c", "1", "-W", "1", &host_ip.to_string()]);
    Topo {
        ns,
        veth,
        host_ip,
        client_ip,
        sources,
    }
}

fn gateway_config(dir: &std::path::Path, t: &Topo, pin: &PinDir, origin: u16, on: bool) -> String {
    let key_hash = {
        use sha2::Digest as _;
        sha2::Sha256::digest(API_KEY.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        r#"# Written by gw-bench (bench/src/escalation.rs).
[xdp]
enabled = true
interface = "{dev}"
mode = "native"
pin_dir = "{pin}"

[xdp.rate_limit]
enabled = false

[admin]
socket = "{dir}/escalation-admin.sock"

[[listeners]]
name = "a"
address = "{host}:{PORT}"

[[upstreams]]
name = "origin"
targets = ["127.0.0.1:{origin}"]

[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "origin"

[[routes]]
id = "key"
path_prefix = "/key/"
upstream = "origin"
auth = "key"

[auth.api_keys.k]
keys = [{{ name = "bench", sha256 = "{key_hash}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[limits]
max_connections_per_ip = 1000

[escalation]
enabled = {on}
"#,
        dev = t.veth.host,
        pin = pin.path.display(),
        dir = dir.display(),
        host = t.host_ip,
    )
}

/// One legitimate request: when it was due (from the run's start) and its
/// latency, or `None` when it failed.
type Sample = (Duration, Option<u64>);

/// The legitimate client: one keep-alive connection at `LEGIT_RPS` for
/// `secs`; latency from each request's scheduled time.
fn legit(ns: String, target: SocketAddr, start: Instant, secs: f64) -> Vec<Sample> {
    enter(&ns);
    pin_current_thread(LOAD_CPU);
    let interval = Duration::from_secs_f64(1.0 / LEGIT_RPS as f64);
    let n = (secs * LEGIT_RPS as f64) as u32;
    let mut out = Vec::with_capacity(n as usize);
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    for k in 0..n {
        let due = start + interval * k;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let res = (|| -> std::io::Result<()> {
            if conn.is_none() {
                let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                conn = Some(s);
            }
            let s = conn.as_mut().unwrap();
            s.write_all(b"GET /public/hello HTTP/1.1\r\nHost: bench\r\n\r\n")?;
            read_response(s, &mut buf).map(|_| ())
        })();
        let offset = due - start;
        match res {
            Ok(()) => out.push((offset, Some(due.elapsed().as_micros() as u64))),
            Err(_) => {
                conn = None;
                out.push((offset, None));
            }
        }
    }
    out
}

/// What one abusive source saw.
#[derive(Default, Clone)]
struct Source {
    /// From its first request to the start of the connect whose SYN was
    /// dropped.
    first_drop: Option<Duration>,
    /// Answers (401/429) and dropped connects, with when they happened
    /// (from the run's start).
    refused_l7: Vec<Duration>,
    dropped: Vec<Duration>,
}

/// One abusive source: a new connection per request with a wrong key,
/// until `until`.
fn abuser(
    ns: String,
    src: Ipv4Addr,
    target: SocketAddr,
    go: Arc<Barrier>,
    run_start: Instant,
    until: Instant,
) -> Source {
    enter(&ns);
    pin_current_thread(LOAD_CPU);
    let mut s = Source::default();
    let request =
        b"GET /key/x HTTP/1.1\r\nHost: bench\r\nX-Api-Key: wrong-key\r\nConnection: close\r\n\r\n";
    let mut buf = Vec::with_capacity(2048);
    go.wait();
    let first = Instant::now();
    while Instant::now() < until {
        let attempt = Instant::now();
        let socket = match socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        {
            Ok(x) => x,
            Err(_) => break,
        };
        if socket.bind(&SocketAddrV4::new(src, 0).into()).is_err() {
            break;
        }
        match socket.connect_timeout(&target.into(), SYN_TIMEOUT) {
            Ok(()) => {
                let mut stream: TcpStream = socket.into();
                stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
                if stream.write_all(request).is_ok() && read_response(&mut stream, &mut buf).is_ok()
                {
                    s.refused_l7.push(attempt - run_start);
                }
            }
            Err(_) => {
                s.first_drop.get_or_insert(attempt - first);
                s.dropped.push(attempt - run_start);
            }
        }
    }
    s
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run_mode(stack: &Stack, on: bool) -> Value {
    let t = topo();
    let pin = PinDir::new();
    let dir = stack
        .dir
        .0
        .join(format!("escalation-{}", test_support::unique_name("e")));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        gateway_config(&dir, &t, &pin, stack.ports.origin, on),
    )
    .unwrap();
    let log = dir.join("gateway.out");
    let gw = spawn_pinned_env(
        SUT_CPU,
        &test_support::gateway::bin(),
        &["run", "--config", conf.to_str().unwrap()],
        &log,
        &[("GATEWAY_LOG", "warn")],
    );
    wait_addr(
        &format!("{}:{PORT}", t.host_ip),
        "gateway (escalation)",
        &log,
    );
    receive_on_cpu1(&t.veth.host, true);
    let target = SocketAddr::from((t.host_ip, PORT));
    let total = BASELINE_SECS + ATTACK_SECS + 0.5;
    let start = Instant::now() + Duration::from_millis(200);
    let legit_thread = {
        let ns = t.ns.name.clone();
        std::thread::spawn(move || legit(ns, target, start, total))
    };
    // CPU per second: the gateway's (all threads) and the receiving core's
    // kernel time (softirq: where XDP and the TCP stack run).
    let windows = (total.ceil()) as usize;
    let cpu: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sampler = {
        let cpu = cpu.clone();
        let pid = gw.pid();
        std::thread::spawn(move || {
            let mut last = (tree_cpu_ns(pid), busy_ns(SUT_CPU));
            for w in 1..=windows {
                let at = start + Duration::from_secs(w as u64);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let now = (tree_cpu_ns(pid), busy_ns(SUT_CPU));
                cpu.lock()
                    .unwrap()
                    .push((now.0 - last.0, now.1.saturating_sub(last.1)));
                last = now;
            }
        })
    };
    let attack_start = start + Duration::from_secs_f64(BASELINE_SECS);
    let until = attack_start + Duration::from_secs_f64(ATTACK_SECS);
    let go = Arc::new(Barrier::new(t.sources.len() + 1));
    let abusers: Vec<_> = t
        .sources
        .iter()
        .map(|src| {
            let (ns, go, src) = (t.ns.name.clone(), go.clone(), *src);
            std::thread::spawn(move || abuser(ns, src, target, go, start, until))
        })
        .collect();
    if let Some(wait) = attack_start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    go.wait();
    let sources: Vec<Source> = abusers
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let samples = legit_thread.join().expect("legitimate client");
    sampler.join().ok();
    let cpu = cpu.lock().unwrap().clone();
    drop(gw);

    // Time to first dropped SYN.
    let mut to_drop: Vec<u64> = sources
        .iter()
        .filter_map(|s| s.first_drop.map(|d| d.as_millis() as u64))
        .collect();
    to_drop.sort_unstable();
    let dropped_sources = to_drop.len();
    // Legitimate p99 per one-second window.
    let mut per_window: Vec<Vec<u64>> = vec![Vec::new(); windows];
    let mut failed = 0;
    for (due, lat) in &samples {
        let w = (due.as_secs_f64() as usize).min(windows - 1);
        match lat {
            Some(l) => per_window[w].push(*l),
            None => failed += 1,
        }
    }
    let mut baseline: Vec<u64> = samples
        .iter()
        .filter(|(due, _)| due.as_secs_f64() < BASELINE_SECS)
        .filter_map(|(_, l)| *l)
        .collect();
    baseline.sort_unstable();
    let base_p99 = percentile(&baseline, 99.0).max(1);
    // The legitimate p99 over a span of the attack (offsets from the run's
    // start), against the baseline.
    let p99_between = |from: f64, to: f64| -> Option<(u64, f64)> {
        let mut lats: Vec<u64> = samples
            .iter()
            .filter(|(due, _)| (from..to).contains(&due.as_secs_f64()))
            .filter_map(|(_, l)| *l)
            .collect();
        // Under 100 samples a p99 is the maximum: not comparable with the
        // baseline's (300 samples).
        if lats.len() < 100 {
            return None;
        }
        lats.sort_unstable();
        let p99 = percentile(&lats, 99.0);
        Some((
            p99,
            ((p99 as f64 / base_p99 as f64) * 100.0).round() / 100.0,
        ))
    };
    let attack_end = BASELINE_SECS + ATTACK_SECS;
    let during_attack = p99_between(BASELINE_SECS, attack_end);
    // Once every source was dropped (escalation on; with it off, a
    // dropped SYN is a lost one, not a block): from the last source's
    // first dropped SYN, on the run's clock (the sources' own clocks start
    // when each thread got past the barrier).
    let all_dropped_at = (on && dropped_sources == t.sources.len())
        .then(|| {
            sources
                .iter()
                .filter_map(|s| s.dropped.first())
                .max()
                .copied()
        })
        .flatten();
    let after_drop = all_dropped_at.and_then(|at| p99_between(at.as_secs_f64(), attack_end));
    let window_rows: Vec<Value> = per_window
        .iter_mut()
        .enumerate()
        .map(|(w, lats)| {
            lats.sort_unstable();
            let p99 = percentile(lats, 99.0);
            let at = |v: &Vec<Duration>| {
                v.iter()
                    .filter(|d| d.as_secs() as usize == w)
                    .count()
            };
            let l7: usize = sources.iter().map(|s| at(&s.refused_l7)).sum();
            let drops: usize = sources.iter().map(|s| at(&s.dropped)).sum();
            let (gw_ns, kernel_ns) = cpu.get(w).copied().unwrap_or_default();
            json!({
                "second": w,
                "attack": (w as f64) + 1.0 > BASELINE_SECS && (w as f64) < BASELINE_SECS + ATTACK_SECS,
                "legit_requests": lats.len(),
                "legit_p99_us": p99,
                "p99_vs_baseline": ((p99 as f64 / base_p99 as f64) * 100.0).round() / 100.0,
                "l7_refusals": l7,
                "dropped_syns": drops,
                "gateway_cpu_ms": gw_ns / 1_000_000,
                "receive_kernel_cpu_ms": kernel_ns / 1_000_000,
            })
        })
        .collect();
    // CPU per refused attempt over the whole attack.
    let l7_total: usize = sources.iter().map(|s| s.refused_l7.len()).sum();
    let drop_total: usize = sources.iter().map(|s| s.dropped.len()).sum();
    let attack_windows = |pick: fn(&(u64, u64)) -> u64| -> u64 {
        cpu.iter()
            .enumerate()
            .filter(|(w, _)| {
                (*w as f64) + 1.0 > BASELINE_SECS && (*w as f64) < BASELINE_SECS + ATTACK_SECS
            })
            .map(|(_, c)| pick(c))
            .sum()
    };
    let (gw_attack_ns, kernel_attack_ns) = (attack_windows(|c| c.0), attack_windows(|c| c.1));
    json!({
        "escalation": on,
        "sources": SOURCES,
        "sources_dropped": dropped_sources,
        "first_drop_ms_p50": percentile(&to_drop, 50.0),
        "first_drop_ms_p99": percentile(&to_drop, 99.0),
        "first_drop_ms_max": to_drop.last().copied(),
        "l7_refusals": l7_total,
        "dropped_syns": drop_total,
        "legit_baseline_p99_us": base_p99,
        "legit_attack_p99_us": during_attack.map(|x| x.0),
        "legit_attack_p99_vs_baseline": during_attack.map(|x| x.1),
        "all_dropped_after_attack_start_ms": all_dropped_at
            .map(|at| ((at.as_secs_f64() - BASELINE_SECS) * 1000.0).round() as u64),
        "legit_after_drop_p99_us": after_drop.map(|x| x.0),
        "legit_after_drop_p99_vs_baseline": after_drop.map(|x| x.1),
        "legit_failed": failed,
        "attack_gateway_cpu_ms": gw_attack_ns / 1_000_000,
        // Gateway plus receive-core kernel CPU over the attack seconds, per
        // L7 refusal (meaningful with escalation off, where refusals are
        // nearly all the work; the CPU figures have 10 ms resolution).
        "cpu_us_per_l7_refusal": if l7_total > 0 {
            (((gw_attack_ns + kernel_attack_ns) as f64 / 1000.0 / l7_total as f64) * 10.0).round() / 10.0
        } else {
            0.0
        },
        "attack_receive_kernel_cpu_ms": kernel_attack_ns / 1_000_000,
        "windows": window_rows,
        "client_ip": t.client_ip.to_string(),
    })
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let reps = if opts.quick { 1 } else { REPEATS };
    let mut runs: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..reps {
        // On-off, then off-on: neither mode always runs first.
        let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let on = i == 0;
            progress.step(&format!(
                "escalation {}: {SOURCES} sources with wrong API keys + a {LEGIT_RPS} req/s client (run {} of {reps})",
                if on { "on" } else { "off" },
                rep + 1
            ));
            runs[i].push(run_mode(stack, on));
        }
    }
    let modes: Vec<Value> = [true, false]
        .into_iter()
        .zip(runs)
        .map(|(on, runs)| {
            let pick =
                |key: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[key].as_f64()).collect() };
            let mut medians = serde_json::Map::new();
            for key in MEDIAN_KEYS {
                let v = pick(key);
                if !v.is_empty() {
                    medians.insert((*key).to_owned(), json!(median(v)));
                }
            }
            json!({ "escalation": on, "median": medians, "runs": runs })
        })
        .collect();
    json!({
        "sources": SOURCES,
        "legit_rps": LEGIT_RPS,
        "baseline_secs": BASELINE_SECS,
        "attack_secs": ATTACK_SECS,
        "syn_timeout_ms": SYN_TIMEOUT.as_millis() as u64,
        "repeats": reps,
        "modes": modes,
    })
}

/// The per-run figures reported as medians (with min-max).
const MEDIAN_KEYS: &[&str] = &[
    "sources_dropped",
    "first_drop_ms_p50",
    "first_drop_ms_p99",
    "first_drop_ms_max",
    "l7_refusals",
    "dropped_syns",
    "attack_gateway_cpu_ms",
    "attack_receive_kernel_cpu_ms",
    "cpu_us_per_l7_refusal",
    "legit_baseline_p99_us",
    "all_dropped_after_attack_start_ms",
    "legit_attack_p99_vs_baseline",
    "legit_after_drop_p99_vs_baseline",
    "legit_failed",
];

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Escalation under a many-source attack ({} sources, each its own address, start at once with wrong API keys, one request per connection; a legitimate client sends {} req/s over keep-alive; {}s of legitimate traffic alone as its baseline, then {}s of attack; XDP native on veth; a connect unanswered for {} ms counts as a dropped SYN; each mode {} times, interleaved: median (min-max))\n\n\
With escalation on, a dropped SYN is the kernel filter at work (the source was put in the XDP blocklist by its bad keys); with it off, the gateway never blocks, and a connect that times out is a SYN lost to the overloaded accept path. CPU per L7 refusal is the gateway's plus the receiving core's kernel CPU over the attack, divided by the 401/429 answers; the flood table above gives the receive CPU of a packet dropped by the XDP blocklist for comparison. The legitimate p99 is against its own baseline p99, over the whole attack and over the attack after every source was dropped (escalation on).\n\n\
| escalation | sources dropped | first drop p50 ms | p99 ms | max ms | L7 refusals | dropped SYNs | gateway CPU ms (attack) | receive kernel CPU ms (attack) | CPU µs per L7 refusal | legit p99 baseline µs | legit p99 vs baseline, attack | legit p99 vs baseline, all dropped | legit failed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        v["sources"],
        v["legit_rps"],
        v["baseline_secs"],
        v["attack_secs"],
        v["syn_timeout_ms"],
        v["repeats"]
    );
    for m in v["modes"].as_array().into_iter().flatten() {
        let runs = m["runs"].as_array().cloned().unwrap_or_default();
        let cell = |key: &str, decimals: usize, suffix: &str| -> String {
            let vals: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
            match median_range_cell(&vals, decimals).as_str() {
                "-" => "-".into(),
                c => format!("{c}{suffix}"),
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            if m["escalation"] == true { "on" } else { "off" },
            cell("sources_dropped", 0, ""),
            cell("first_drop_ms_p50", 0, ""),
            cell("first_drop_ms_p99", 0, ""),
            cell("first_drop_ms_max", 0, ""),
            cell("l7_refusals", 0, ""),
            cell("dropped_syns", 0, ""),
            cell("attack_gateway_cpu_ms", 0, ""),
            cell("attack_receive_kernel_cpu_ms", 0, ""),
            cell("cpu_us_per_l7_refusal", 1, ""),
            cell("legit_baseline_p99_us", 0, ""),
            cell("legit_attack_p99_vs_baseline", 2, "x"),
            cell("legit_after_drop_p99_vs_baseline", 2, "x"),
            cell("legit_failed", 0, ""),
        ));
    }
    out.push_str("\nPer run (escalation on): the slowest source's time to its first dropped SYN, when the last source's first SYN was dropped (from the attack's start, on the run's clock), and the legitimate p99 against its baseline from then on (`-`: not every source was dropped, or under 100 requests to judge).\n\n| run | first drop max ms | all dropped after ms | legit p99 vs baseline, all dropped | legit p99 vs baseline, attack |\n|---|---|---|---|---|\n");
    for m in v["modes"].as_array().into_iter().flatten() {
        if m["escalation"] != true {
            continue;
        }
        for (i, r) in m["runs"].as_array().into_iter().flatten().enumerate() {
            let x = |key: &str| r[key].as_f64().map_or("-".into(), |x| format!("{x}x"));
            let n = |key: &str| r[key].as_u64().map_or("-".into(), |x| x.to_string());
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                i + 1,
                n("first_drop_ms_max"),
                n("all_dropped_after_attack_start_ms"),
                x("legit_after_drop_p99_vs_baseline"),
                x("legit_attack_p99_vs_baseline"),
            ));
        }
    }
    out.push_str("\nPer second of the first run (attack seconds marked *): legitimate p99 against its baseline, refusals, and CPU.\n\n| escalation | second | legit p99 µs | vs baseline | L7 refusals | dropped SYNs | gateway CPU ms | receive kernel CPU ms |\n|---|---|---|---|---|---|---|---|\n");
    for m in v["modes"].as_array().into_iter().flatten() {
        let first = &m["runs"][0];
        for w in first["windows"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "| {} | {}{} | {} | {}x | {} | {} | {} | {} |\n",
                if m["escalation"] == true { "on" } else { "off" },
                w["second"],
                if w["attack"] == true { "*" } else { "" },
                w["legit_p99_us"],
                w["p99_vs_baseline"],
                w["l7_refusals"],
                w["dropped_syns"],
                w["gateway_cpu_ms"],
                w["receive_kernel_cpu_ms"],
            ));
        }
    }
    out
}
