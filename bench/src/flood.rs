//! Scenario 2: flood absorption. A client namespace floods the protected
//! port through a veth pair (UDP, 64-byte payloads, fixed duration and
//! count). The sender runs on CPU 0; the receive work is moved to CPU 1, so
//! CPU 1's busy time over the flood is the cost of absorbing it. Compared:
//! our XDP blocklist and rate limit, the nftables equivalents (netdev
//! ingress rule; per-source meter), an iptables hashlimit rule in the raw
//! table, and no filtering (packets reach a userspace socket).
//!
//! Two inputs. The main rows are **frame-sourced** ([`super::framegen`]):
//! raw frames arrive in the host end's NAPI ring as `xdp_frame`s, as a NIC
//! hands them to its driver, so native XDP runs before any skb exists and
//! the other filters see the skb veth builds from the frame; NAPI is on for
//! every case (GRO, which veth needs to accept redirected frames) and
//! threaded, pinned to CPU 1. The **skb-sourced (socket)** rows are the
//! earlier input, kept for the blocklist pair: UDP `send()` from a socket,
//! so the packet is an skb before it reaches the host end and native XDP on
//! veth first copies it into a page-pool page (RPS moves the skb paths to
//! CPU 1, threaded NAPI pinned to CPU 1 the native XDP one).

use std::{
    net::UdpSocket,
    num::NonZeroU16,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use gateway::{
    config::{LimitSpec, XdpMode, XdpSection},
    net::Net,
    xdp::{Loader, apply::apply},
};
use gateway_common::acl::{BlockEntry, BlockSource};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    cpu::{busy_ns, napi_threads, pin_current_thread, pin_tid, thread_cpu_ns},
    framegen::{DropAll, Generator, host_mac, ns_device, rx_counters, set_gro, udp_frame},
    median,
};
use test_support::{
    guard::{Link, PinDir, sh},
    netns::in_netns,
};

const PORT: u16 = 19090;
/// Per-source limit in the rate-limit cases, packets per second.
const LIMIT_PPS: u32 = 1000;
/// Runs of each case in full mode (the cases interleaved); the tables show
/// the median with the min-max and the ratio of each run to its peer's.
pub const REPEATS: usize = 5;
/// Progress steps in full mode.
pub const STEPS: usize = CASES.len() * REPEATS;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    /// `return XDP_DROP` and nothing else: the floor of the frame path.
    DropAll,
    XdpBlock,
    NftBlock,
    XdpRateLimit,
    NftRateLimit,
    IptHashlimit,
    Unfiltered,
}

/// How the flood reaches the host end of the veth.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Input {
    /// Raw frames redirected into the host end's NAPI ring (NIC-like).
    Frames,
    /// UDP `send()` from a socket: skbs before they reach the host end.
    Socket,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Case {
    filter: Filter,
    input: Input,
}

const fn case(filter: Filter, input: Input) -> Case {
    Case { filter, input }
}

/// Every case, in the order of a round; the frame-sourced ones are the
/// NIC-like comparison, the socket pair the earlier input.
const CASES: [Case; 9] = [
    case(Filter::DropAll, Input::Frames),
    case(Filter::XdpBlock, Input::Frames),
    case(Filter::NftBlock, Input::Frames),
    case(Filter::XdpRateLimit, Input::Frames),
    case(Filter::NftRateLimit, Input::Frames),
    case(Filter::IptHashlimit, Input::Frames),
    case(Filter::Unfiltered, Input::Frames),
    case(Filter::XdpBlock, Input::Socket),
    case(Filter::NftBlock, Input::Socket),
];

impl Filter {
    fn name(self) -> &'static str {
        match self {
            Filter::DropAll => "floor: a bare XDP_DROP program (native)",
            Filter::XdpBlock => "gateway XDP blocklist (native)",
            Filter::NftBlock => "nftables netdev ingress drop",
            Filter::XdpRateLimit => "gateway XDP rate limit (native)",
            Filter::NftRateLimit => "nftables per-source meter limit",
            Filter::IptHashlimit => "iptables raw hashlimit",
            Filter::Unfiltered => "no filtering (userspace socket)",
        }
    }

    fn is_xdp(self) -> bool {
        matches!(
            self,
            Filter::DropAll | Filter::XdpBlock | Filter::XdpRateLimit
        )
    }
}

impl Input {
    fn name(self) -> &'static str {
        match self {
            Input::Frames => "frames (NIC-like)",
            Input::Socket => "skb-sourced (socket) flood",
        }
    }
}

impl Case {
    fn name(self) -> String {
        match self.input {
            Input::Frames => self.filter.name().to_owned(),
            Input::Socket => format!("{}, skb-sourced (socket) flood", self.filter.name()),
        }
    }

    /// The case each of ours is compared with: the nftables equivalent on
    /// the same input.
    fn peer(self) -> Option<Case> {
        let filter = match self.filter {
            Filter::XdpBlock => Filter::NftBlock,
            Filter::XdpRateLimit | Filter::IptHashlimit => Filter::NftRateLimit,
            _ => return None,
        };
        Some(case(filter, self.input))
    }
}

struct Topo {
    link: Link,
    host_ip: String,
    sender_ip: String,
}

fn topo() -> Topo {
    let sub = (std::process::id() % 200) as u8 + 20;
    let link = Link::new(&format!("198.19.{sub}"), 1);
    let (host_ip, sender_ip) = (link.host_ip.clone(), link.client_ips[0].clone());
    // Resolve ARP before measuring.
    link.ns.sh(&["ping", "-c", "1", "-W", "1", &host_ip]);
    Topo {
        link,
        host_ip,
        sender_ip,
    }
}

/// An nftables table, deleted on drop.
pub struct NftTable(String);

impl Drop for NftTable {
    fn drop(&mut self) {
        Command::new("nft")
            .args(["delete", "table", "netdev", &self.0])
            .status()
            .ok();
    }
}

/// An iptables raw-table rule, deleted on drop.
struct IptRule(Vec<String>);

impl Drop for IptRule {
    fn drop(&mut self) {
        let mut args = vec!["-t".to_owned(), "raw".to_owned(), "-D".to_owned()];
        args.extend(self.0.iter().cloned());
        Command::new("iptables").args(&args).status().ok();
    }
}

fn nft_table(t: &Topo, rule: &str) -> NftTable {
    nft_ingress(&t.link.veth.host, rule)
}

/// A netdev table with one ingress chain on `dev` holding `rule`.
pub fn nft_ingress(dev: &str, rule: &str) -> NftTable {
    let name = test_support::unique_name("gwb");
    let script = format!(
        "table netdev {name} {{\n chain in {{\n  type filter hook ingress device \"{dev}\" priority -500;\n  {rule}\n }}\n}}\n"
    );
    let path = std::env::temp_dir().join(format!("{name}.nft"));
    std::fs::write(&path, script).unwrap();
    sh(&["nft", "-f", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    NftTable(name)
}

fn nft_counter(table: &NftTable) -> u64 {
    let out = sh(&["nft", "list", "table", "netdev", &table.0]);
    // "counter packets N bytes M"
    out.split("counter packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn set_receive_cpu(t: &Topo, native_xdp: bool) {
    receive_on_cpu1(&t.link.veth.host, native_xdp);
}

/// Moves `dev`'s receive work to CPU 1: RPS for the skb paths, threaded
/// NAPI pinned to CPU 1 for native XDP.
pub fn receive_on_cpu1(dev: &str, native_xdp: bool) {
    if native_xdp {
        napi_on_cpu1(dev);
    } else {
        std::fs::write(format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus"), "2").ok();
    }
}

/// Makes `dev`'s NAPI threaded and pins its threads (one per receive
/// queue) to CPU 1; returns their thread ids.
pub fn napi_on_cpu1(dev: &str) -> Vec<i32> {
    std::fs::write(format!("/sys/class/net/{dev}/threaded"), "1").ok();
    let tids = napi_threads(dev);
    for &tid in &tids {
        pin_tid(tid, 1);
    }
    tids
}

struct Outcome {
    /// Packets into the host end: sent by the socket, or frames that found
    /// room in the host end's ring.
    sent: u64,
    /// Frames the generator handed to the redirect (frame input only).
    generated: u64,
    /// Frames veth dropped on a full ring, before any hook (frame input).
    ring_full: u64,
    received: u64,
    cpu1_ns: u64,
    /// CPU time of the host end's NAPI threads (frame input).
    napi_ns: u64,
    secs: f64,
}

/// A UDP socket on CPU 1 that counts what reaches it until stopped.
fn receiver(t: &Topo, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let received = Arc::new(AtomicU64::new(0));
    let sock = UdpSocket::bind((t.host_ip.as_str(), PORT)).expect("bind receiver");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let count = received.clone();
    let reader = std::thread::spawn(move || {
        pin_current_thread(1);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if sock.recv(&mut buf).is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (received, reader)
}

/// Floods for `secs` (at most `max` frames) with frames redirected into
/// the host end from CPU 0 (so into receive queue 0), while a socket on
/// CPU 1 counts what arrives.
fn flood_frames(t: &Topo, napi: &[i32], secs: f64, max: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let (received, reader) = receiver(t, stop.clone());
    let (ifindex, peer_mac) = ns_device(&t.link.ns, &t.link.veth.peer);
    let frame = udp_frame(
        host_mac(&t.link.veth.host),
        peer_mac,
        t.sender_ip.parse().unwrap(),
        t.host_ip.parse().unwrap(),
        40000,
        PORT,
        64,
    );
    let napi_time = || napi.iter().map(|&tid| thread_cpu_ns(tid)).sum::<u64>();
    let (rx0, drop0) = rx_counters(&t.link.veth.host);
    let napi0 = napi_time();
    let before = busy_ns(1);
    let generator = Generator {
        ns: t.link.ns.name.clone(),
        ifindex,
        frame,
        cpu: 0,
        nice: 0,
    };
    let sent = generator
        .spawn(secs, max, Arc::new(AtomicBool::new(false)))
        .join()
        .expect("frame generator");
    std::thread::sleep(Duration::from_millis(200));
    let cpu1_ns = busy_ns(1) - before;
    let napi_ns = napi_time() - napi0;
    let (rx1, drop1) = rx_counters(&t.link.veth.host);
    stop.store(true, Ordering::Relaxed);
    reader.join().ok();
    Outcome {
        // veth counts a frame in rx_packets when its NAPI poll takes it
        // from the ring (XDP_DROP included); a full ring, in rx_dropped.
        sent: rx1 - rx0,
        generated: sent.frames,
        ring_full: drop1 - drop0,
        received: received.load(Ordering::Relaxed),
        cpu1_ns,
        napi_ns,
        secs: sent.secs,
    }
}

/// Floods for `secs` (at most `max` packets) from a UDP socket in the
/// namespace, pinned to CPU 0, while a socket on CPU 1 counts what arrives.
fn flood_socket(t: &Topo, secs: f64, max: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let (received, reader) = receiver(t, stop.clone());
    let (host, src, ns) = (
        t.host_ip.clone(),
        t.sender_ip.clone(),
        t.link.ns.name.clone(),
    );
    let before = busy_ns(1);
    let start = Instant::now();
    let sent = in_netns(&ns, move || {
        pin_current_thread(0);
        let s = UdpSocket::bind((src.as_str(), 0)).unwrap();
        s.connect((host.as_str(), PORT)).unwrap();
        let payload = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        while sent < max && Instant::now() < deadline {
            for _ in 0..64 {
                if s.send(&payload).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let cpu1_ns = busy_ns(1) - before;
    stop.store(true, Ordering::Relaxed);
    reader.join().ok();
    Outcome {
        sent,
        generated: 0,
        ring_full: 0,
        received: received.load(Ordering::Relaxed),
        cpu1_ns,
        napi_ns: 0,
        secs: elapsed,
    }
}

pub fn run(opts: Opts, progress: &mut Progress) -> Value {
    let secs = if opts.quick { 2.0 } else { 5.0 };
    let max = 20_000_000;
    let cases = CASES;
    // Every case `reps` times, the cases interleaved (A B C ... A B C), so
    // a slow phase of the machine hits every case alike; medians with
    // min-max, and per run the ratio to the peer's run of the same round.
    let reps = if opts.quick { 1 } else { REPEATS };
    let mut samples: Vec<Vec<Sample>> = cases.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for (i, case) in cases.iter().enumerate() {
            progress.step(&format!(
                "flood: {}, {} ({secs}s, run {} of {reps})",
                case.filter.name(),
                case.input.name(),
                rep + 1
            ));
            samples[i].push(run_case(*case, secs, max));
        }
    }
    let ns = |s: &Sample| s.cpu1_ns as f64 / s.sent.max(1) as f64;
    let napi_ns = |s: &Sample| s.napi_ns as f64 / s.sent.max(1) as f64;
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let rows: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let runs = &samples[i];
            let per: Vec<f64> = runs.iter().map(ns).collect();
            let mid = median(per.clone());
            let pick = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
            let mut v = json!({
                "case": case.name(),
                "filter": case.filter.name(),
                "input": case.input.name(),
                "runs": runs.len(),
                "sent_pps": pick(|s| s.sent as f64 / s.secs) as u64,
                "dropped": pick(|s| s.dropped as f64) as u64,
                "reached_socket": pick(|s| s.received as f64) as u64,
                "receive_cpu_ns_per_packet": round1(mid),
                "receive_cpu_ns_min": round1(per.iter().copied().fold(f64::INFINITY, f64::min)),
                "receive_cpu_ns_max": round1(per.iter().copied().fold(0.0, f64::max)),
                "receive_cpu_ns_per_run": per.iter().map(|x| round1(*x)).collect::<Vec<_>>(),
            });
            if case.input == Input::Frames {
                v["generated_pps"] = json!(pick(|s| s.generated as f64 / s.secs) as u64);
                v["ring_full"] = json!(pick(|s| s.ring_full as f64) as u64);
                v["napi_thread_ns_per_packet"] =
                    json!(round1(median(runs.iter().map(napi_ns).collect())));
            }
            // Over the floor: each run minus the bare XDP_DROP run of the
            // same round (the frame path every filter pays on veth).
            let floor = cases
                .iter()
                .position(|c| c.filter == Filter::DropAll && c.input == Input::Frames)
                .map(|f| &samples[f]);
            let over = |runs: &[Sample]| -> Option<Vec<f64>> {
                let floor = floor?;
                Some(runs.iter().zip(floor).map(|(a, f)| ns(a) - ns(f)).collect())
            };
            if case.input == Input::Frames
                && case.filter != Filter::DropAll
                && let Some(o) = over(runs)
            {
                v["over_floor_ns_per_packet"] = json!(round1(median(o)));
            }
            if let Some(peer) = case.peer()
                && let Some(j) = cases.iter().position(|c| *c == peer)
            {
                if case.input == Input::Frames
                    && let (Some(a), Some(b)) = (over(runs), over(&samples[j]))
                {
                    let per: Vec<f64> = a
                        .iter()
                        .zip(&b)
                        .map(|(x, y)| ((x / y.max(1e-9)) * 100.0).round() / 100.0)
                        .collect();
                    v["over_floor_ratio_vs_peer"] = json!(median(per.clone()));
                    v["over_floor_ratio_per_run"] = json!(per);
                }
                let peer_runs = &samples[j];
                let peer_mid = median(peer_runs.iter().map(ns).collect());
                let per_run: Vec<f64> = runs
                    .iter()
                    .zip(peer_runs)
                    .map(|(a, b)| ((ns(a) / ns(b).max(1e-9)) * 100.0).round() / 100.0)
                    .collect();
                v["peer"] = json!(peer.name());
                v["cpu_ratio_vs_peer"] =
                    json!(((mid / peer_mid.max(1e-9)) * 100.0).round() / 100.0);
                v["cpu_ratio_per_run"] = json!(per_run);
            }
            v
        })
        .collect();
    json!({ "seconds_per_case": secs, "repeats": reps, "limit_pps": LIMIT_PPS, "rows": rows })
}

/// One run of one case: the flood and what the receiving core spent.
struct Sample {
    sent: u64,
    generated: u64,
    ring_full: u64,
    secs: f64,
    dropped: u64,
    received: u64,
    cpu1_ns: u64,
    napi_ns: u64,
}

fn run_case(case: Case, secs: f64, max: u64) -> Sample {
    let t = topo();
    let pin = PinDir::new();
    let mut xdp = None;
    let mut nft = None;
    let mut ipt = None;
    let mut drop_all = None;
    if case.input == Input::Frames {
        // NAPI on the host end in every frame-sourced case, filter or not:
        // veth takes redirected frames only into a NAPI ring.
        set_gro(&t.link.veth.host, true).expect("GRO on the host end (SIOCETHTOOL)");
    }
    match case.filter {
        Filter::DropAll => {
            drop_all = Some(
                DropAll::attach(&t.link.veth.host).expect("attach the XDP_DROP floor program"),
            );
        }
        Filter::XdpBlock | Filter::XdpRateLimit => {
            let (loaded, mut maps) = Loader::new(&pin.path).load().expect("load XDP");
            let mut s = XdpSection {
                protected_ports: vec![NonZeroU16::new(PORT).unwrap()],
                ..XdpSection::default()
            };
            s.rate_limit.pps = LimitSpec::new(LIMIT_PPS, LIMIT_PPS).unwrap();
            apply(&mut maps, &s).unwrap();
            if case.filter == Filter::XdpBlock {
                let e = BlockEntry {
                    expires_ns: 0,
                    created_unix: 0,
                    source: BlockSource::Operator as u32,
                    offences: 1,
                    reason: [0; 48],
                };
                maps.block_add(&t.sender_ip.parse::<Net>().unwrap(), e)
                    .unwrap();
            }
            let mut attached = loaded
                .attach(&t.link.veth.host, XdpMode::Native, &pin.path)
                .expect("attach native XDP");
            // Detached when the case ends, as before the pinned links.
            attached.detach_on_exit = true;
            xdp = Some((attached, maps));
        }
        Filter::NftBlock => {
            nft = Some(nft_table(
                &t,
                &format!("ip saddr {} counter drop", t.sender_ip),
            ))
        }
        Filter::NftRateLimit => {
            nft = Some(nft_table(
                &t,
                &format!(
                    "udp dport {PORT} meter m {{ ip saddr limit rate over {LIMIT_PPS}/second burst {LIMIT_PPS} packets }} counter drop"
                ),
            ))
        }
        Filter::IptHashlimit => {
            let name = test_support::unique_name("gwb");
            let rule: Vec<String> = [
                "PREROUTING",
                "-i",
                &t.link.veth.host,
                "-p",
                "udp",
                "--dport",
                &PORT.to_string(),
                "-m",
                "hashlimit",
                "--hashlimit-above",
                &format!("{LIMIT_PPS}/sec"),
                "--hashlimit-burst",
                &LIMIT_PPS.to_string(),
                "--hashlimit-mode",
                "srcip",
                "--hashlimit-name",
                &name,
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = vec!["iptables", "-t", "raw", "-A"];
            args.extend(rule.iter().map(String::as_str));
            sh(&args);
            ipt = Some(IptRule(rule));
        }
        Filter::Unfiltered => {}
    }
    let o = match case.input {
        Input::Frames => {
            let napi = napi_on_cpu1(&t.link.veth.host);
            assert!(
                !napi.is_empty(),
                "no NAPI thread found for {}",
                t.link.veth.host
            );
            flood_frames(&t, &napi, secs, max)
        }
        Input::Socket => {
            set_receive_cpu(&t, case.filter.is_xdp());
            flood_socket(&t, secs, max)
        }
    };
    let dropped = match case.filter {
        Filter::XdpBlock | Filter::XdpRateLimit => {
            let (_, maps) = xdp.as_ref().unwrap();
            maps.counters()
                .unwrap()
                .iter()
                .filter(|(r, _)| r.is_drop())
                .map(|(_, c)| c.packets)
                .sum::<u64>()
        }
        Filter::NftBlock | Filter::NftRateLimit => nft_counter(nft.as_ref().unwrap()),
        _ => o.sent.saturating_sub(o.received),
    };
    drop((xdp, nft, ipt, drop_all));
    Sample {
        sent: o.sent,
        generated: o.generated,
        ring_full: o.ring_full,
        secs: o.secs,
        dropped,
        received: o.received,
        cpu1_ns: o.cpu1_ns,
        napi_ns: o.napi_ns,
    }
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Flood absorption (UDP flood over veth, {} runs of {}s per case with the cases interleaved, sender on CPU 0, receive work on CPU 1)\n\n\
Medians of the runs; the receive CPU per packet also as min–max, and the ratio to the peer (the nftables rule on the same input) per run, pairing the runs of the same round. \
**frames (NIC-like)**: the flood arrives as raw frames, as from a NIC: an XDP program in the client namespace redirects BPF_PROG_TEST_RUN live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`, what xdp-tools' `xdp-trafficgen` does) into the veth, which queues them as `xdp_frame`s in the host end's NAPI ring; native XDP then runs on the raw frame before any skb exists, and without an XDP program veth builds the skb that nftables, iptables and the socket see. NAPI (GRO on) is on and threaded, pinned to CPU 1, in every frame case, so all filters get the same frames through the same ring. \
These are the rows that compare the filters as on a NIC. \
**skb-sourced (socket) flood**: the earlier input, kept for the blocklist pair: UDP `send()` from a socket, so each packet is an skb before it reaches the host end, and native XDP on veth first copies it into a page-pool page (`skb_pp_cow_data`, `memcpy`), a cost nftables' hook on the same skb does not pay (the skb paths use RPS to CPU 1). \
Into the host end: frames that found room in the ring (or socket sends); lost on a full ring: frames veth dropped before any hook because the receiving core fell behind. Receive kernel CPU: CPU 1's system + irq + softirq time over the flood per packet into the host end; NAPI thread: the CPU time of the host end's NAPI thread alone (less exposed to other work on CPU 1). \
**Floor**: a bare `XDP_DROP` program on the same frames: what every frame costs the receiving core on veth whatever the filter, mostly returning the frame's page to the generator's page pool on the other core (page-pool ring lock, contended by the generator recycling the frames that found the ring full; a NIC recycles into its own pool on the receiving core). Over floor: each run minus the floor run of its round, and that difference against the peer's.\n\n\
| case | input | into host end pps | lost on full ring | dropped by filter | reached socket | receive kernel CPU ns/packet | NAPI thread ns/packet | CPU vs peer (median) | CPU vs peer per run | over floor ns/packet | over floor vs peer (median) | over floor vs peer per run |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        v["repeats"], v["seconds_per_case"]
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        let per_run = crate::ratios_cell(r, "cpu_ratio_per_run");
        let or_dash = |k: &str| {
            r.get(k)
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into())
        };
        let over_per_run = crate::ratios_cell(r, "over_floor_ratio_per_run");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}–{}) | {} | {} | {per_run} | {} | {} | {over_per_run} |\n",
            r["filter"].as_str().unwrap_or(""),
            r["input"].as_str().unwrap_or(""),
            r["sent_pps"],
            or_dash("ring_full"),
            r["dropped"],
            r["reached_socket"],
            r["receive_cpu_ns_per_packet"],
            r["receive_cpu_ns_min"],
            r["receive_cpu_ns_max"],
            or_dash("napi_thread_ns_per_packet"),
            super::ratio_cell(r, "cpu_ratio_vs_peer"),
            or_dash("over_floor_ns_per_packet"),
            super::ratio_cell(r, "over_floor_ratio_vs_peer"),
        ));
    }
    out
}
