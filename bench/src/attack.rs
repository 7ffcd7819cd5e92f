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
//!
//! The multi-queue cases judge native XDP on something closer to a NIC: a
//! veth pair with [`QUEUES`] queues per direction, the flood on one
//! receive queue and the client on another, each queue with its own NAPI
//! thread (both pinned to the SUT core). The flood there is frame-sourced
//! ([`super::framegen`]: raw UDP frames from the blocked source, redirected
//! into the host end from the load core, so into receive queue 0, as a
//! NIC's RSS would put one flow on one queue); the namespace's sockets (the
//! client) are steered to queue 1 by XPS. Compared: no flood (the
//! multi-queue baseline), our native XDP blocklist, and nftables' netdev
//! ingress drop with NAPI on the same queues (GRO on, which veth needs for
//! redirected frames). Every case runs [`REPEATS`] times in full mode, the
//! cases interleaved; the rows show medians with min-max, and each run's
//! p99 is compared with the baseline of its own round.

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
    cpu::{CpuSplit, pin_current_thread},
    flood::{napi_on_cpu1, nft_ingress, receive_on_cpu1},
    framegen::{Generator, host_mac, ns_device, rx_counters, set_gro, set_tso, udp_frame},
    median,
    servers::{LOAD_CPU, SUT_CPU, Stack, spawn_pinned_env, wait_addr},
};
use test_support::{
    guard::{Netns, PinDir, Veth, sh},
    netns::{enter, in_netns},
};

/// Runs of each case in full mode (the cases interleaved).
pub const REPEATS: usize = 5;
/// Number of progress steps `run` reports in full mode.
pub const STEPS: usize = CASES.len() * REPEATS;
/// Queues per direction of the multi-queue cases' veth pair.
pub const QUEUES: usize = 2;
/// Upper bound on the frames of one multi-queue flood.
const MAX_FLOOD_FRAMES: u64 = 100_000_000;

const PORT: u16 = 18080;
/// The client's request rate, requests per second (all connections).
const CLIENT_RPS: u32 = 200;
const CLIENT_CONNS: u32 = 4;
/// The gateway's per-IP L7 limit (and burst): 1.5x the client's rate, far
/// below what the flooder sends.
const LIMIT_RPS: u32 = 300;
const FLOOD_THREADS: usize = 6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Baseline,
    L7Only,
    Xdp,
    XdpNative,
    Nft,
    MqBaseline,
    MqXdpNative,
    MqNft,
}

/// One round, in order: each baseline before the cases compared with it.
const CASES: [Case; 8] = [
    Case::Baseline,
    Case::L7Only,
    Case::Xdp,
    Case::Nft,
    Case::XdpNative,
    Case::MqBaseline,
    Case::MqXdpNative,
    Case::MqNft,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Baseline => "no flood (baseline)",
            Case::L7Only => "flood, L7 rate limiter only (429)",
            Case::Xdp => "flood, source in gateway XDP blocklist (skb mode)",
            Case::XdpNative => "flood, source in gateway XDP blocklist (native mode on veth)",
            Case::Nft => "flood, source dropped by nftables netdev ingress",
            Case::MqBaseline => "2 queues: no flood (baseline)",
            Case::MqXdpNative => {
                "2 queues: frame flood on queue 0, source in gateway XDP blocklist (native)"
            }
            Case::MqNft => {
                "2 queues: frame flood on queue 0, source dropped by nftables netdev ingress"
            }
        }
    }

    fn multi_queue(self) -> bool {
        matches!(self, Case::MqBaseline | Case::MqXdpNative | Case::MqNft)
    }

    /// The no-flood case of the same topology, each run's reference.
    fn baseline(self) -> Case {
        if self.multi_queue() {
            Case::MqBaseline
        } else {
            Case::Baseline
        }
    }

    fn xdp_mode(self) -> Option<&'static str> {
        match self {
            Case::Xdp => Some("skb"),
            Case::XdpNative | Case::MqXdpNative => Some("native"),
            _ => None,
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

/// A veth pair with `queues` transmit and receive queues on each end,
/// `peer` moved into `ns`; deleted on drop ([`Veth`]'s guard).
fn veth_with_queues(ns: &Netns, queues: usize) -> Veth {
    let host = test_support::unique_name("gwh");
    let peer = test_support::unique_name("gwp");
    let q = queues.to_string();
    sh(&[
        "ip",
        "link",
        "add",
        &host,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ]);
    let v = Veth { host, peer };
    sh(&["ip", "link", "set", &v.peer, "netns", &ns.name]);
    v
}

fn topo(queues: usize) -> Topo {
    let ns = Netns::new();
    let veth = if queues > 1 {
        veth_with_queues(&ns, queues)
    } else {
        Veth::new(&ns)
    };
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
    let xdp = if let Some(mode) = case.xdp_mode() {
        format!(
            "[xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"{mode}\"\npin_dir = \"{}\"\nblock = [\"{}\"]\n\n[xdp.rate_limit]\nenabled = false\n",
            t.veth.host,
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

/// One run of one case.
struct Sample {
    requests: u64,
    ok: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    flood_requests: u64,
    flood_429: u64,
    flood_connect_failures: u64,
    /// UDP packets sent by the socket flood, or frames that found room in
    /// the host end's rings (multi-queue cases).
    flood_udp_packets: u64,
    /// Frames veth dropped on a full ring (multi-queue cases).
    ring_full: u64,
    /// The SUT core's time over the client's run, per second of it.
    cpu1: CpuSplit,
    secs: f64,
}

/// Steers every socket of the namespace to transmit queue 1 of `dev` (so
/// to receive queue 1 of its peer): XPS maps all CPUs to that queue.
fn steer_sockets_to_queue_1(ns: &Netns, dev: &str) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(63);
    let mask = format!("{:x}", (1u64 << cpus) - 1);
    ns.sh(&[
        "sh",
        "-c",
        &format!("echo {mask} > /sys/class/net/{dev}/queues/tx-1/xps_cpus"),
    ]);
}

fn run_case(case: Case, secs: f64, stack: &Stack) -> Sample {
    let t = topo(if case.multi_queue() { QUEUES } else { 1 });
    if case.multi_queue() {
        // NAPI on every receive queue in every multi-queue case (veth
        // takes redirected frames only into a NAPI ring), the client's TCP
        // through the ring too (no TSO on the sending end, which an XDP
        // program on the host end would force anyway), and the client on
        // queue 1, the flood (sent from the load core) on queue 0.
        set_gro(&t.veth.host, true).expect("GRO on the host end (SIOCETHTOOL)");
        let peer = t.veth.peer.clone();
        in_netns(&t.ns.name, move || set_tso(&peer, false))
            .expect("TSO off on the namespace end (SIOCETHTOOL)");
        steer_sockets_to_queue_1(&t.ns, &t.veth.peer);
    }
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
    let _nft = matches!(case, Case::Nft | Case::MqNft).then(|| {
        nft_ingress(
            &t.veth.host,
            &format!("ip saddr {} counter drop", t.flood_ip),
        )
    });
    if case.multi_queue() {
        let napi = napi_on_cpu1(&t.veth.host);
        assert!(
            napi.len() >= QUEUES,
            "{} NAPI threads for {} (want one per queue, {QUEUES})",
            napi.len(),
            t.veth.host
        );
    } else {
        receive_on_cpu1(&t.veth.host, case == Case::XdpNative);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let flood_target: SocketAddr = format!("{}:{PORT}", t.host_b).parse().unwrap();
    let (rx0, drop0) = rx_counters(&t.veth.host);
    let mut frame_flood = None;
    let flood = match case {
        Case::Baseline | Case::MqBaseline => Vec::new(),
        Case::MqXdpNative | Case::MqNft => {
            let (ifindex, peer_mac) = ns_device(&t.ns, &t.veth.peer);
            let frame = udp_frame(
                host_mac(&t.veth.host),
                peer_mac,
                t.flood_ip.parse().unwrap(),
                t.host_b.parse().unwrap(),
                40000,
                PORT,
                64,
            );
            let generator = Generator {
                ns: t.ns.name.clone(),
                ifindex,
                frame,
                cpu: LOAD_CPU,
                nice: 19,
            };
            frame_flood = Some(generator.spawn(secs + 5.0, MAX_FLOOD_FRAMES, stop.clone()));
            std::thread::sleep(Duration::from_millis(300));
            Vec::new()
        }
        _ => {
            let f = flooder(&t.ns.name, flood_target, secs, stop.clone(), counts.clone());
            // Let the flood ramp up before measuring.
            std::thread::sleep(Duration::from_millis(300));
            f
        }
    };
    let target: SocketAddr = format!("{}:{PORT}", t.host_ip).parse().unwrap();
    let cpu_before = CpuSplit::now(SUT_CPU);
    let started = Instant::now();
    let mut r = client(&t.ns.name, target, secs);
    let client_secs = started.elapsed().as_secs_f64();
    let cpu1 = CpuSplit::now(SUT_CPU).since(cpu_before);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().ok();
    }
    let (mut udp, mut ring_full) = (counts.udp_packets.load(Ordering::Relaxed), 0);
    if let Some(f) = frame_flood {
        f.join().expect("frame generator");
        let (rx1, drop1) = rx_counters(&t.veth.host);
        udp = rx1 - rx0;
        ring_full = drop1 - drop0;
    }
    r.latencies_us.sort_unstable();
    let _ = &t.client_ip;
    Sample {
        requests: r.ok + r.failed,
        ok: r.ok,
        p50_us: percentile(&r.latencies_us, 50.0),
        p99_us: percentile(&r.latencies_us, 99.0),
        p999_us: percentile(&r.latencies_us, 99.9),
        flood_requests: counts.requests.load(Ordering::Relaxed),
        flood_429: counts.limited.load(Ordering::Relaxed),
        flood_connect_failures: counts.connect_failures.load(Ordering::Relaxed),
        flood_udp_packets: udp,
        ring_full,
        cpu1,
        secs: client_secs,
    }
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 2.0 } else { 8.0 };
    let reps = if opts.quick { 1 } else { REPEATS };
    // Every case `reps` times, the cases interleaved (each round runs its
    // baselines first), so a slow phase of the machine hits every case
    // alike; each run's p99 is compared with its own round's baseline.
    let mut samples: Vec<Vec<Sample>> = CASES.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for (i, case) in CASES.iter().enumerate() {
            progress.step(&format!(
                "under attack: {} ({secs}s, run {} of {reps})",
                case.name(),
                rep + 1
            ));
            samples[i].push(run_case(*case, secs, stack));
        }
    }
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    let rows: Vec<Value> = CASES
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let runs = &samples[i];
            let base = &samples[CASES.iter().position(|c| *c == case.baseline()).unwrap()];
            let pick = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(f).collect());
            let p99: Vec<f64> = runs.iter().map(|s| s.p99_us as f64).collect();
            let ratios: Vec<f64> = runs
                .iter()
                .zip(base)
                .map(|(a, b)| r2(a.p99_us as f64 / (b.p99_us as f64).max(1.0)))
                .collect();
            let per_s = |f: &dyn Fn(&CpuSplit) -> u64| {
                pick(&|s: &Sample| f(&s.cpu1) as f64 / 1e6 / s.secs.max(1e-9)).round()
            };
            let total: u64 = runs.iter().map(|s| s.requests).sum();
            let ok: u64 = runs.iter().map(|s| s.ok).sum();
            json!({
                "case": case.name(),
                "queues": if case.multi_queue() { QUEUES } else { 1 },
                "runs": runs.len(),
                "requests": pick(&|s| s.requests as f64) as u64,
                "success_rate": if total > 0 { ((ok as f64 / total as f64) * 10000.0).round() / 10000.0 } else { 0.0 },
                "p50_us": pick(&|s| s.p50_us as f64) as u64,
                "p99_us": median(p99.clone()) as u64,
                "p99_us_min": p99.iter().copied().fold(f64::INFINITY, f64::min) as u64,
                "p99_us_max": p99.iter().copied().fold(0.0, f64::max) as u64,
                "p99_us_per_run": p99.iter().map(|x| *x as u64).collect::<Vec<_>>(),
                "p999_us": pick(&|s| s.p999_us as f64) as u64,
                "baseline": case.baseline().name(),
                "p99_vs_baseline": r2(median(ratios.clone())),
                "p99_vs_baseline_per_run": ratios,
                "flood_requests": pick(&|s| s.flood_requests as f64) as u64,
                "flood_429": pick(&|s| s.flood_429 as f64) as u64,
                "flood_connect_failures": pick(&|s| s.flood_connect_failures as f64) as u64,
                "flood_udp_packets": pick(&|s| s.flood_udp_packets as f64) as u64,
                "flood_ring_full": pick(&|s| s.ring_full as f64) as u64,
                "sut_cpu_user_ms_per_s": per_s(&|c| c.user_ns),
                "sut_cpu_system_ms_per_s": per_s(&|c| c.system_ns),
                "sut_cpu_softirq_ms_per_s": per_s(&|c| c.softirq_ns),
            })
        })
        .collect();
    json!({
        "seconds_per_case": secs,
        "repeats": reps,
        "queues": QUEUES,
        "client_rps": CLIENT_RPS,
        "client_connections": CLIENT_CONNS,
        "l7_limit_rps": LIMIT_RPS,
        "flood_http_threads": FLOOD_THREADS,
        "rows": rows,
    })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Legitimate traffic under attack ({} runs of {}s per case with the cases interleaved; client: {} req/s over {} keep-alive connections, per-IP L7 limit {} r/s; flooder: {} HTTP connections as fast as they go + a UDP flood to the listener port, from another address of the same namespace; the {}-queue cases: a frame-sourced UDP flood instead, see below)\n\n\
Medians of the runs; the p99 also as min–max, and its ratio to the baseline of the same round (the single-queue or the {}-queue one) as the median and per run. SUT core CPU: the core running the gateway and the receive work, over the client's run, user / system / irq+softirq ms per second.\n\n\
| case | client requests | success rate | p50 µs | p99 µs | p99.9 µs | p99 vs baseline | p99 vs baseline per run | SUT CPU ms/s user / sys / softirq | flood requests (429) | flood connect failures | flood UDP packets (lost on full ring) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        v["repeats"],
        v["seconds_per_case"],
        v["client_rps"],
        v["client_connections"],
        v["l7_limit_rps"],
        v["flood_http_threads"],
        v["queues"],
        v["queues"],
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        let per_run = crate::ratios_cell(r, "p99_vs_baseline_per_run");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} ({}–{}) | {} | {} | {per_run} | {} / {} / {} | {} ({}) | {} | {} ({}) |\n",
            r["case"].as_str().unwrap_or(""),
            r["requests"],
            r["success_rate"],
            r["p50_us"],
            r["p99_us"],
            r["p99_us_min"],
            r["p99_us_max"],
            r["p999_us"],
            super::ratio_cell(r, "p99_vs_baseline"),
            r["sut_cpu_user_ms_per_s"],
            r["sut_cpu_system_ms_per_s"],
            r["sut_cpu_softirq_ms_per_s"],
            r["flood_requests"],
            r["flood_429"],
            r["flood_connect_failures"],
            r["flood_udp_packets"],
            r["flood_ring_full"],
        ));
    }
    out.push_str("\nLatency is measured from each request's scheduled send time. In the blocked cases the flooder's SYNs are dropped, so its HTTP load becomes connection attempts (100 ms timeout each) and only the UDP flood keeps the pressure on. \
The skb-mode XDP row is the like-for-like peer of nftables on a veth (both run in the same receive path); \
native XDP on a single-queue veth moves all receive work into the veth's one NAPI ring, which the flood and the client share. \
The multi-queue rows are the NIC-like comparison: a veth pair with several queues, the flood as raw frames (an XDP program in the namespace redirects BPF_PROG_TEST_RUN live frames into the veth, from the load core, at nice 19) into receive queue 0, the client's sockets steered to queue 1 by XPS, one NAPI thread per queue pinned to the SUT core, GRO on (NAPI for nftables too) and TSO off on the sending end (so the client's TCP goes through its ring in every case). No HTTP flood there: the blocked source's whole flood is frames, on its own queue, as a NIC's RSS would put it. The flood UDP packets column counts, for these rows, the frames that found room in the rings.\n");
    out
}
