//! Scenario 3: legitimate traffic under attack. A well-behaved client (a
//! fixed request rate over keep-alive connections, well under the L7 limit)
//! and a flooder share one namespace behind a veth pair, with different
//! source addresses (the flooder reaches the gateway's second address
//! through a route with `src` set). The flooder sends HTTP requests as fast
//! as it can over several connections (far over the per-IP limit) plus a UDP
//! packet flood to the listener port. Cases: no flood (baseline); only the
//! L7 rate limiter (the flood gets 429); the flooder blocked by our XDP
//! blocklist; the flooder blocked by the nftables equivalent (netdev
//! ingress drop). The client's latency is measured from each request's
//! scheduled send time (no coordinated omission). The gateway and the
//! receive work run on the SUT core; client and flooder on the load core,
//! the flooder at nice 19 so it does not starve the client's own timing.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Opts, Progress,
    cpu::pin_current_thread,
    flood::{nft_ingress, receive_on_cpu1},
    servers::{LOAD_CPU, SUT_CPU, Stack, spawn_pinned_env, wait_addr},
};
use test_support::{
    guard::{Netns, PinDir, Veth, sh},
    netns::enter,
};

/// Number of progress steps `run` reports.
pub const STEPS: usize = 5;

const PORT: u16 = 18080;
/// The client's request rate, requests per second (all connections).
const CLIENT_RPS: u32 = 200;
const CLIENT_CONNS: u32 = 4;
/// The gateway's per-IP L7 limit (and burst): 1.5x the client's rate, far
/// below what the flooder sends.
const LIMIT_RPS: u32 = 300;
const FLOOD_THREADS: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Baseline,
    L7Only,
    Xdp,
    XdpNative,
    Nft,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Baseline => "no flood (baseline)",
            Case::L7Only => "flood, L7 rate limiter only (429)",
            Case::Xdp => "flood, source in gateway XDP blocklist (skb mode)",
            Case::XdpNative => "flood, source in gateway XDP blocklist (native mode on veth)",
            Case::Nft => "flood, source dropped by nftables netdev ingress",
        }
    }
}

struct Topo {
    ns: Netns,
    veth: Veth,
    host_ip: String,
    host_b: String,
    client_ip: String,
    flood_ip: String,
}

fn topo() -> Topo {
    let ns = Netns::new();
    let veth = Veth::new(&ns);
    let sub = (std::process::id() % 200) as u8 + 20;
    let host_ip = format!("198.18.{sub}.1");
    let host_b = format!("198.18.{sub}.11");
    let client_ip = format!("198.18.{sub}.2");
    let flood_ip = format!("198.18.{sub}.3");
    for ip in [&host_ip, &host_b] {
        sh(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.host]);
    }
    sh(&["ip", "link", "set", &veth.host, "up"]);
    for ip in [&client_ip, &flood_ip] {
        ns.sh(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.peer]);
    }
    ns.sh(&["ip", "link", "set", &veth.peer, "up"]);
    ns.sh(&["ip", "link", "set", "lo", "up"]);
    // The flooder's traffic to the second host address leaves from its own source.
    ns.sh(&[
        "ip",
        "route",
        "add",
        &format!("{host_b}/32"),
        "dev",
        &veth.peer,
        "src",
        &flood_ip,
    ]);
    ns.sh(&["ping", "-c", "1", "-W", "1", &host_ip]);
    Topo {
        ns,
        veth,
        host_ip,
        host_b,
        client_ip,
        flood_ip,
    }
}

fn gateway_config(
    dir: &std::path::Path,
    t: &Topo,
    case: Case,
    pin: &PinDir,
    origin: u16,
) -> String {
    let xdp = if matches!(case, Case::Xdp | Case::XdpNative) {
        format!(
            "[xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"{}\"\npin_dir = \"{}\"\nblock = [\"{}\"]\n\n[xdp.rate_limit]\nenabled = false\n",
            t.veth.host,
            if case == Case::Xdp { "skb" } else { "native" },
            pin.path.display(),
            t.flood_ip
        )
    } else {
        "[xdp]\nenabled = false\n".to_owned()
    };
    format!(
        r#"# Written by gw-bench (bench/src/attack.rs).
{xdp}
[admin]
socket = "{dir}/attack-admin.sock"

[[listeners]]
name = "a"
address = "{host}:{PORT}"

[[listeners]]
name = "b"
address = "{host_b}:{PORT}"

[[upstreams]]
name = "origin"
targets = ["127.0.0.1:{origin}"]

[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "origin"

[limits]
max_connections_per_ip = 1000

[rate_limit]
global = ["per-ip"]

[[rate_limit.limits]]
name = "per-ip"
rate = "{LIMIT_RPS}r/s"
burst = {LIMIT_RPS}
key = "ip"

[escalation]
enabled = false
"#,
        dir = dir.display(),
        host = t.host_ip,
        host_b = t.host_b,
    )
}

/// Reads one HTTP/1.1 response; returns its status code.
pub(super) fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match len {
            Some(l) => body.len() >= l,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            return Ok(status);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct ClientResult {
    latencies_us: Vec<u64>,
    ok: u64,
    failed: u64,
}

/// The well-behaved client: `CLIENT_CONNS` keep-alive connections, each
/// sending at `CLIENT_RPS / CLIENT_CONNS` per second for `secs`.
fn client(ns: &str, target: SocketAddr, secs: f64) -> ClientResult {
    let threads: Vec<_> = (0..CLIENT_CONNS)
        .map(|i| {
            let ns = ns.to_owned();
            std::thread::spawn(move || {
                enter(&ns);
                pin_current_thread(LOAD_CPU);
                let interval = Duration::from_secs_f64(CLIENT_CONNS as f64 / CLIENT_RPS as f64);
                // Stagger the connections over one interval.
                let start = Instant::now() + interval.mul_f64(i as f64 / CLIENT_CONNS as f64);
                let n = (secs * CLIENT_RPS as f64 / CLIENT_CONNS as f64) as u32;
                let mut r = ClientResult {
                    latencies_us: Vec::with_capacity(n as usize),
                    ok: 0,
                    failed: 0,
                };
                let mut conn: Option<TcpStream> = None;
                let mut buf = Vec::with_capacity(4096);
                for k in 0..n {
                    let due = start + interval * k;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let res = (|| -> std::io::Result<u16> {
                        if conn.is_none() {
                            let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                            s.set_nodelay(true)?;
                            s.set_read_timeout(Some(Duration::from_secs(2)))?;
                            conn = Some(s);
                        }
                        let s = conn.as_mut().unwrap();
                        s.write_all(b"GET /public/hello HTTP/1.1\r\nHost: bench\r\n\r\n")?;
                        read_response(s, &mut buf)
                    })();
                    match res {
                        Ok(status) if (200..300).contains(&status) => {
                            r.ok += 1;
                            r.latencies_us.push(due.elapsed().as_micros() as u64);
                        }
                        Ok(_) => r.failed += 1,
                        Err(_) => {
                            r.failed += 1;
                            conn = None;
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut all = ClientResult {
        latencies_us: Vec::new(),
        ok: 0,
        failed: 0,
    };
    for t in threads {
        let r = t.join().expect("client thread");
        all.latencies_us.extend(r.latencies_us);
        all.ok += r.ok;
        all.failed += r.failed;
    }
    all
}

#[derive(Default)]
struct FloodCounts {
    requests: AtomicU64,
    limited: AtomicU64,
    connect_failures: AtomicU64,
    udp_packets: AtomicU64,
}

fn lower_priority() {
    // SAFETY: setpriority on the calling thread (tid 0 = caller).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Starts the flooder threads; they stop at `stop` or after `secs` + 5 s.
fn flooder(
    ns: &str,
    target: SocketAddr,
    secs: f64,
    stop: Arc<AtomicBool>,
    counts: Arc<FloodCounts>,
) -> Vec<std::thread::JoinHandle<()>> {
    let hard_deadline = Instant::now() + Duration::from_secs_f64(secs + 5.0);
    let mut threads = Vec::new();
    for _ in 0..FLOOD_THREADS {
        let (ns, stop, counts) = (ns.to_owned(), stop.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            enter(&ns);
            pin_current_thread(LOAD_CPU);
            lower_priority();
            let mut buf = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
                let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(100))
                else {
                    counts.connect_failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                s.set_read_timeout(Some(Duration::from_secs(1))).ok();
                while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
                    if s.write_all(b"GET /public/flood HTTP/1.1\r\nHost: bench\r\n\r\n")
                        .is_err()
                    {
                        break;
                    }
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    match read_response(&mut s, &mut buf) {
                        Ok(429) => {
                            counts.limited.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    let (ns, stop, counts) = (ns.to_owned(), stop.clone(), counts.clone());
    threads.push(std::thread::spawn(move || {
        enter(&ns);
        pin_current_thread(LOAD_CPU);
        lower_priority();
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind UDP");
        s.connect(target).expect("connect UDP");
        let payload = [0u8; 64];
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline && sent < 50_000_000 {
            for _ in 0..64 {
                if s.send(&payload).is_ok() {
                    sent += 1;
                }
            }
        }
        counts.udp_packets.fetch_add(sent, Ordering::Relaxed);
    }));
    threads
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run_case(case: Case, secs: f64, stack: &Stack) -> Value {
    let t = topo();
    let pin = PinDir::new();
    let dir = stack
        .dir
        .0
        .join(format!("attack-{}", test_support::unique_name("c")));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("gateway.toml");
    std::fs::write(
        &conf,
        gateway_config(&dir, &t, case, &pin, stack.ports.origin),
    )
    .unwrap();
    let log = dir.join("gateway.out");
    let _gw = spawn_pinned_env(
        SUT_CPU,
        &test_support::gateway::bin(),
        &["run", "--config", conf.to_str().unwrap()],
        &log,
        &[("GATEWAY_LOG", "warn")],
    );
    wait_addr(&format!("{}:{PORT}", t.host_ip), "gateway (attack)", &log);
    let _nft = (case == Case::Nft).then(|| {
        nft_ingress(
            &t.veth.host,
            &format!("ip saddr {} counter drop", t.flood_ip),
        )
    });
    receive_on_cpu1(&t.veth.host, case == Case::XdpNative);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let flood_target: SocketAddr = format!("{}:{PORT}", t.host_b).parse().unwrap();
    let flood = if case == Case::Baseline {
        Vec::new()
    } else {
        let f = flooder(&t.ns.name, flood_target, secs, stop.clone(), counts.clone());
        // Let the flood ramp up before measuring.
        std::thread::sleep(Duration::from_millis(300));
        f
    };
    let target: SocketAddr = format!("{}:{PORT}", t.host_ip).parse().unwrap();
    let mut r = client(&t.ns.name, target, secs);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().ok();
    }
    r.latencies_us.sort_unstable();
    let total = r.ok + r.failed;
    let _ = &t.client_ip;
    json!({
        "case": case.name(),
        "requests": total,
        "ok": r.ok,
        "success_rate": if total > 0 { ((r.ok as f64 / total as f64) * 10000.0).round() / 10000.0 } else { 0.0 },
        "p50_us": percentile(&r.latencies_us, 50.0),
        "p99_us": percentile(&r.latencies_us, 99.0),
        "p999_us": percentile(&r.latencies_us, 99.9),
        "flood_requests": counts.requests.load(Ordering::Relaxed),
        "flood_429": counts.limited.load(Ordering::Relaxed),
        "flood_connect_failures": counts.connect_failures.load(Ordering::Relaxed),
        "flood_udp_packets": counts.udp_packets.load(Ordering::Relaxed),
    })
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 2.0 } else { 8.0 };
    let mut rows = Vec::new();
    for case in [
        Case::Baseline,
        Case::L7Only,
        Case::Xdp,
        Case::Nft,
        Case::XdpNative,
    ] {
        progress.step(&format!("under attack: {} ({secs}s)", case.name()));
        rows.push(run_case(case, secs, stack));
    }
    let base_p99 = rows[0]["p99_us"].as_f64().unwrap_or(0.0);
    for r in rows.iter_mut() {
        if base_p99 > 0.0 {
            r["p99_vs_baseline"] =
                json!(((r["p99_us"].as_f64().unwrap_or(0.0) / base_p99) * 100.0).round() / 100.0);
        }
    }
    json!({
        "seconds_per_case": secs,
        "client_rps": CLIENT_RPS,
        "client_connections": CLIENT_CONNS,
        "l7_limit_rps": LIMIT_RPS,
        "flood_http_threads": FLOOD_THREADS,
        "rows": rows,
    })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Legitimate traffic under attack ({}s per case; client: {} req/s over {} keep-alive connections, per-IP L7 limit {} r/s; flooder: {} HTTP connections as fast as they go + a UDP flood to the listener port, from another address of the same namespace)\n\n\
| case | client requests | success rate | p50 µs | p99 µs | p99.9 µs | p99 vs baseline | flood requests (429) | flood connect failures | flood UDP packets |\n|---|---|---|---|---|---|---|---|---|---|\n",
        v["seconds_per_case"],
        v["client_rps"],
        v["client_connections"],
        v["l7_limit_rps"],
        v["flood_http_threads"],
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |\n",
            r["case"].as_str().unwrap_or(""),
            r["requests"],
            r["success_rate"],
            r["p50_us"],
            r["p99_us"],
            r["p999_us"],
            super::ratio_cell(r, "p99_vs_baseline"),
            r["flood_requests"],
            r["flood_429"],
            r["flood_connect_failures"],
            r["flood_udp_packets"],
        ));
    }
    out.push_str("\nLatency is measured from each request's scheduled send time. In the blocked cases the flooder's SYNs are dropped, so its HTTP load becomes connection attempts (100 ms timeout each) and only the UDP flood keeps the pressure on. \
The skb-mode XDP row is the like-for-like peer of nftables on a veth (both run in the same receive path); \
native XDP on a veth moves all receive work into the veth's NAPI ring, which the flood and the client share \
(our reading of a slow native row: it says more about veth than about a NIC with several queues).\n");
    out
}
