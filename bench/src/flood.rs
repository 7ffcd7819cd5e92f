//! Scenario 2: flood absorption. A client namespace floods the protected
//! port through a veth pair (UDP, 64-byte payloads, fixed duration and
//! count). The sender runs on CPU 0; the receive work is moved to CPU 1
//! (RPS for the skb paths, threaded NAPI pinned to CPU 1 for native XDP), so
//! CPU 1's busy time over the flood is the cost of absorbing it. Compared:
//! our XDP blocklist and rate limit, the nftables equivalents (netdev
//! ingress rule; per-source meter), an iptables hashlimit rule in the raw
//! table, and no filtering (packets reach a userspace socket).

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
    cpu::{busy_ns, pin_current_thread, pin_tid, threads_named},
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
pub const STEPS: usize = 6 * REPEATS;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    XdpBlock,
    NftBlock,
    XdpRateLimit,
    NftRateLimit,
    IptHashlimit,
    NoFilter,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::XdpBlock => "gateway XDP blocklist (native)",
            Case::NftBlock => "nftables netdev ingress drop",
            Case::XdpRateLimit => "gateway XDP rate limit (native)",
            Case::NftRateLimit => "nftables per-source meter limit",
            Case::IptHashlimit => "iptables raw hashlimit",
            Case::NoFilter => "no filtering (userspace socket)",
        }
    }

    /// The nftables case each of ours is compared with.
    fn peer(self) -> Option<Case> {
        match self {
            Case::XdpBlock => Some(Case::NftBlock),
            Case::XdpRateLimit | Case::IptHashlimit => Some(Case::NftRateLimit),
            _ => None,
        }
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
        std::fs::write(format!("/sys/class/net/{dev}/threaded"), "1").ok();
        for tid in threads_named(&format!("napi/{dev}")) {
            pin_tid(tid, 1);
        }
    } else {
        std::fs::write(format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus"), "2").ok();
    }
}

struct Outcome {
    sent: u64,
    received: u64,
    cpu1_ns: u64,
    secs: f64,
}

/// Floods for `secs` (at most `max` packets) from the namespace, pinned to
/// CPU 0, while a socket on CPU 1 counts what arrives.
fn flood(t: &Topo, secs: f64, max: u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let sock = UdpSocket::bind((t.host_ip.as_str(), PORT)).expect("bind receiver");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let reader = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            pin_current_thread(1);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
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
        received: received.load(Ordering::Relaxed),
        cpu1_ns,
        secs: elapsed,
    }
}

pub fn run(opts: Opts, progress: &mut Progress) -> Value {
    let secs = if opts.quick { 2.0 } else { 5.0 };
    let max = 20_000_000;
    let cases = [
        Case::XdpBlock,
        Case::NftBlock,
        Case::XdpRateLimit,
        Case::NftRateLimit,
        Case::IptHashlimit,
        Case::NoFilter,
    ];
    // Every case `reps` times, the cases interleaved (A B C ... A B C), so
    // a slow phase of the machine hits every case alike; medians with
    // min-max, and per run the ratio to the peer's run of the same round.
    let reps = if opts.quick { 1 } else { REPEATS };
    let mut samples: Vec<Vec<Sample>> = cases.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps {
        for (i, case) in cases.iter().enumerate() {
            progress.step(&format!(
                "flood: {} ({secs}s, run {} of {reps})",
                case.name(),
                rep + 1
            ));
            samples[i].push(run_case(*case, secs, max));
        }
    }
    let ns = |s: &Sample| s.cpu1_ns as f64 / s.sent.max(1) as f64;
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
                "runs": runs.len(),
                "sent_pps": pick(|s| s.sent as f64 / s.secs) as u64,
                "dropped": pick(|s| s.dropped as f64) as u64,
                "reached_socket": pick(|s| s.received as f64) as u64,
                "receive_cpu_ns_per_packet": (mid * 10.0).round() / 10.0,
                "receive_cpu_ns_min": (per.iter().copied().fold(f64::INFINITY, f64::min) * 10.0).round() / 10.0,
                "receive_cpu_ns_max": (per.iter().copied().fold(0.0, f64::max) * 10.0).round() / 10.0,
            });
            if let Some(peer) = case.peer()
                && let Some(j) = cases.iter().position(|c| *c == peer)
            {
                let peer_runs = &samples[j];
                let peer_mid = median(peer_runs.iter().map(ns).collect());
                let per_run: Vec<f64> = runs
                    .iter()
                    .zip(peer_runs)
                    .map(|(a, b)| ((ns(a) / ns(b).max(1e-9)) * 100.0).round() / 100.0)
                    .collect();
                v["peer"] = json!(peer.name());
                v["cpu_ratio_vs_peer"] = json!(((mid / peer_mid.max(1e-9)) * 100.0).round() / 100.0);
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
    secs: f64,
    dropped: u64,
    received: u64,
    cpu1_ns: u64,
}

fn run_case(case: Case, secs: f64, max: u64) -> Sample {
    let t = topo();
    let native = matches!(case, Case::XdpBlock | Case::XdpRateLimit);
    let pin = PinDir::new();
    let mut xdp = None;
    let mut nft = None;
    let mut ipt = None;
    match case {
        Case::XdpBlock | Case::XdpRateLimit => {
            let (loaded, mut maps) = Loader::new(&pin.path).load().expect("load XDP");
            let mut s = XdpSection {
                protected_ports: vec![NonZeroU16::new(PORT).unwrap()],
                ..XdpSection::default()
            };
            s.rate_limit.pps = LimitSpec::new(LIMIT_PPS, LIMIT_PPS).unwrap();
            apply(&mut maps, &s).unwrap();
            if case == Case::XdpBlock {
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
        Case::NftBlock => {
            nft = Some(nft_table(
                &t,
                &format!("ip saddr {} counter drop", t.sender_ip),
            ))
        }
        Case::NftRateLimit => {
            nft = Some(nft_table(
                &t,
                &format!(
                    "udp dport {PORT} meter m {{ ip saddr limit rate over {LIMIT_PPS}/second burst {LIMIT_PPS} packets }} counter drop"
                ),
            ))
        }
        Case::IptHashlimit => {
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
        Case::NoFilter => {}
    }
    set_receive_cpu(&t, native);
    let o = flood(&t, secs, max);
    let dropped = match case {
        Case::XdpBlock | Case::XdpRateLimit => {
            let (_, maps) = xdp.as_ref().unwrap();
            maps.counters()
                .unwrap()
                .iter()
                .filter(|(r, _)| r.is_drop())
                .map(|(_, c)| c.packets)
                .sum::<u64>()
        }
        Case::NftBlock | Case::NftRateLimit => nft_counter(nft.as_ref().unwrap()),
        _ => o.sent.saturating_sub(o.received),
    };
    drop((xdp, nft, ipt));
    Sample {
        sent: o.sent,
        secs: o.secs,
        dropped,
        received: o.received,
        cpu1_ns: o.cpu1_ns,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Flood absorption (UDP flood over veth, {} runs of {}s per case with the cases interleaved, sender on CPU 0, receive work on CPU 1)\n\n\
Medians of the runs; the receive CPU per packet also as min–max, and the ratio to the peer (nftables, or iptables for the hashlimit row) per run, pairing the runs of the same round. On a veth the packet arrives as an skb that the sender already built, and native XDP on veth first copies it into a page-pool buffer for the program (`skb_pp_cow_data`, `skb_copy_header`, `memcpy`; a `perf record -C 1` of the blocklist case puts the gateway's program at about 3% of the receive CPU), a cost nftables' netdev hook on the same skb does not pay; on a NIC's driver hook the drop happens before any skb exists.\n\n\
| case | sent pps | dropped | reached socket | receive kernel CPU ns/packet | CPU vs peer (median) | CPU vs peer per run |\n|---|---|---|---|---|---|---|\n",
        v["repeats"], v["seconds_per_case"]
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        let per_run = r["cpu_ratio_per_run"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| format!("{x}x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} ({}–{}) | {} | {per_run} |\n",
            r["case"].as_str().unwrap_or(""),
            r["sent_pps"],
            r["dropped"],
            r["reached_socket"],
            r["receive_cpu_ns_per_packet"],
            r["receive_cpu_ns_min"],
            r["receive_cpu_ns_max"],
            super::ratio_cell(r, "cpu_ratio_vs_peer")
        ));
    }
    out
}
