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
use crate::{
    guard::{Link, PinDir, sh},
    netns::in_netns,
};

const PORT: u16 = 19090;
/// Per-source limit in the rate-limit cases, packets per second.
const LIMIT_PPS: u32 = 1000;

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
    let name = crate::unique_name("gwb");
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
    let mut rows: Vec<(Case, Value, f64)> = Vec::new();
    for case in cases {
        progress.step(&format!("flood: {} ({secs}s)", case.name()));
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
                let name = crate::unique_name("gwb");
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
        let ns_per_packet = o.cpu1_ns as f64 / o.sent.max(1) as f64;
        rows.push((
            case,
            json!({
                "case": case.name(),
                "sent": o.sent,
                "sent_pps": (o.sent as f64 / o.secs) as u64,
                "dropped": dropped,
                "reached_socket": o.received,
                "receive_cpu_ms": o.cpu1_ns / 1_000_000,
                "receive_cpu_ns_per_packet": (ns_per_packet * 10.0).round() / 10.0,
            }),
            ns_per_packet,
        ));
    }
    let by_case: Vec<(Case, f64)> = rows.iter().map(|(c, _, ns)| (*c, *ns)).collect();
    let out: Vec<Value> = rows
        .into_iter()
        .map(|(case, mut v, ns)| {
            if let Some(peer) = case.peer()
                && let Some((_, peer_ns)) = by_case.iter().find(|(c, _)| *c == peer)
            {
                v["peer"] = json!(peer.name());
                v["cpu_ratio_vs_peer"] = json!(((ns / peer_ns) * 100.0).round() / 100.0);
            }
            v
        })
        .collect();
    json!({ "seconds_per_case": secs, "limit_pps": LIMIT_PPS, "rows": out })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Flood absorption (UDP flood over veth, {}s per case, sender on CPU 0, receive work on CPU 1)\n\n| case | sent pps | dropped | reached socket | receive kernel CPU ns/packet | CPU vs nftables |\n|---|---|---|---|---|---|\n",
        v["seconds_per_case"]
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["case"].as_str().unwrap_or(""),
            r["sent_pps"],
            r["dropped"],
            r["reached_socket"],
            r["receive_cpu_ns_per_packet"],
            super::ratio_cell(r, "cpu_ratio_vs_peer")
        ));
    }
    out
}
