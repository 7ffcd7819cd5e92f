//! Scenario 6: memory. Resident set size of each proxy (whole process tree:
//! NGINX's master and worker) idle and with N open keep-alive connections
//! (each has completed one request), then a second gateway with XDP attached
//! (skb mode, on a veth whose other end is in a fresh namespace) before and
//! after filling its blocklist map with M exact IPv4 entries: RSS and BPF
//! map memory (the `memlock` lines of the gateway's map fds in
//! /proc/<pid>/fdinfo).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use gateway::{net::Net, xdp::Loader};
use gateway_common::acl::{BlockEntry, BlockSource};
use serde_json::{Value, json};

use super::{
    Opts, Progress, gwconf,
    servers::{Ports, Proxy, SUT_CPU, SpareGateway, Stack, spawn_pinned_env, wait_port},
};
use test_support::guard::{Netns, PinDir, Veth};

/// TLS connections opened on top of the plain ones: what HAProxy's
/// `maxconn 10500` (bench/haproxy.cfg) leaves beside 10,000 plain ones.
const TLS_CONNECTIONS: usize = 400;

/// Number of progress steps `run` reports.
pub const STEPS: usize = 2;

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // Fields after the ")" of the command: state ppid …
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// RSS of a process and its direct children, KiB.
pub fn tree_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
        + children(pid)
            .into_iter()
            .map(|c| status_kb(c, "VmRSS:"))
            .sum::<u64>()
}

/// (number of BPF map fds, sum of their `memlock` bytes) held by `pid`.
pub fn map_memlock(pid: u32) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_map = std::fs::read_link(e.path())
            .map(|l| l.to_string_lossy().contains("bpf-map"))
            .unwrap_or(false);
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(m) = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            n += 1;
            bytes += m;
        }
    }
    (n, bytes)
}

/// Opens `n` connections to `port`, each completing one keep-alive request
/// (`GET /nothing-here`, answered by the proxy itself), over TLS when `tls`
/// is given (the client's TLS state is dropped after the answer; the
/// server keeps its own for the open connection). Returns the open streams
/// and how many failed.
fn open_conns(
    port: u16,
    n: usize,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        if Instant::now() > deadline {
            failed += 1;
            continue;
        }
        let r = (|| -> std::io::Result<TcpStream> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let req = b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let got = match tls {
                None => {
                    s.write_all(req)?;
                    s.read(&mut buf)?
                }
                Some(cfg) => {
                    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                    let mut conn = rustls::ClientConnection::new(cfg.clone(), name)
                        .map_err(std::io::Error::other)?;
                    let mut t = rustls::Stream::new(&mut conn, &mut s);
                    t.write_all(req)?;
                    // Session tickets may come before the answer.
                    let mut got = 0;
                    while got < 12 || !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        let k = t.read(&mut buf[got..])?;
                        if k == 0 || got + k == buf.len() {
                            got += k;
                            break;
                        }
                        got += k;
                    }
                    got
                }
            };
            if got == 0 || !buf.starts_with(b"HTTP/1.1 404") {
                return Err(std::io::Error::other("no 404 answer"));
            }
            Ok(s)
        })();
        match r {
            Ok(s) => open.push(s),
            Err(_) => failed += 1,
        }
    }
    (open, failed)
}

fn blocklist(opts: Opts, stack: &Stack) -> Value {
    let entries: u32 = if opts.quick { 100_000 } else { 1_000_000 };
    let ns = Netns::new();
    let veth = Veth::new(&ns);
    test_support::guard::sh(&["ip", "link", "set", &veth.host, "up"]);
    let pin = PinDir::new();
    let base = Ports::new();
    let ports = Ports {
        gw_http: base.gw_http + 7,
        gw_https: base.gw_https + 7,
        ..base
    };
    let dir = stack.dir.0.join("xdp-gw");
    std::fs::create_dir_all(&dir).unwrap();
    let xdp = format!(
        "[xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"skb\"\npin_dir = \"{}\"\n",
        veth.host,
        pin.path.display()
    );
    let conf = dir.join("gateway.toml");
    std::fs::write(&conf, gwconf::config_text(&dir, &ports, &stack.certs, &xdp)).unwrap();
    let log = dir.join("gateway.out");
    let gw = spawn_pinned_env(
        SUT_CPU,
        &test_support::gateway::bin(),
        &["run", "--config", conf.to_str().unwrap()],
        &log,
        &[("GATEWAY_LOG", "warn")],
    );
    wait_port(ports.gw_http, "gateway with XDP", &log);
    std::thread::sleep(Duration::from_millis(300));
    let pid = gw.pid();
    let rss_before = tree_rss_kb(pid);
    let (maps, memlock_before) = map_memlock(pid);

    // Same pinned maps, opened from this process (the loader reuses pins).
    let (_loaded, mut m) = Loader::new(&pin.path).load().expect("open pinned maps");
    let start = Instant::now();
    let mut inserted = 0u32;
    for i in 0..entries {
        let ip = Ipv4Addr::from(0x0A00_0000u32 + i);
        let e = BlockEntry {
            expires_ns: 0,
            created_unix: 0,
            source: BlockSource::Operator as u32,
            offences: 1,
            reason: [0; 48],
        };
        let net: Net = ip.to_string().parse().unwrap();
        if m.block_add(&net, e).is_ok() {
            inserted += 1;
        }
    }
    let insert_secs = start.elapsed().as_secs_f64();
    // Check the last one is there (through the same maps the gateway uses).
    let last: Net = Ipv4Addr::from(0x0A00_0000u32 + entries - 1)
        .to_string()
        .parse()
        .unwrap();
    let present = m.block_get(&last).ok().flatten().is_some();
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = tree_rss_kb(pid);
    let (_, memlock_after) = map_memlock(pid);
    drop(gw);
    json!({
        "entries": entries,
        "inserted": inserted,
        "last_entry_present": present,
        "insert_per_sec": (inserted as f64 / insert_secs).round() as u64,
        "map_fds": maps,
        "gateway_rss_kb_empty": rss_before,
        "gateway_rss_kb_full": rss_after,
        "map_memlock_kb_empty": memlock_before / 1024,
        "map_memlock_kb_full": memlock_after / 1024,
    })
}

/// One proxy's memory row: RSS before and with `open` connections (KiB),
/// how many failed, and the bytes per open connection.
fn conn_row(proxy: &str, before: u64, after: u64, open: usize, failed: usize) -> Value {
    let per = if open > 0 {
        (after.saturating_sub(before) * 1024) / open as u64
    } else {
        0
    };
    json!({
        "proxy": proxy,
        "rss_kb_idle": before,
        "connections_open": open,
        "connections_failed": failed,
        "rss_kb_with_connections": after,
        "bytes_per_connection": per,
    })
}

/// The markdown lines of [`conn_row`]s.
fn conn_rows_markdown(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "| {} | {} | {} | {} / {} | {} | {} |\n",
                r["proxy"].as_str().unwrap_or(""),
                r["rss_kb_idle"],
                r["rss_kb_with_connections"],
                r["connections_open"],
                r["connections_failed"],
                r["bytes_per_connection"],
                super::ratio_cell(r, "gateway_ratio")
            )
        })
        .collect()
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    // The client sockets live in this process: stay under its fd limit.
    let want: u64 = if opts.quick { 1000 } else { 10_000 };
    // The peers' TLS connections are opened while their plain ones stay
    // open (the gateway's in a process of its own, see below); the
    // peers' limits (HAProxy maxconn 10,500, under the container's file
    // limit) leave room for a few hundred more.
    let tls_conns = TLS_CONNECTIONS;
    let conns = want.min(opts.nofile.saturating_sub(1000 + tls_conns as u64)) as usize;
    if (conns as u64) < want {
        eprintln!(
            "memory: open-file limit {} allows only {conns} connections",
            opts.nofile
        );
    }
    progress.step(&format!(
        "memory: RSS idle and with {conns} keep-alive connections (gateway, nginx, haproxy)"
    ));
    let tls_cfg = super::features::tls_client(&stack.certs.cert_der, false);
    let mut rows = Vec::new();
    let mut tls_rows = Vec::new();
    for p in [Proxy::Gateway, Proxy::Nginx, Proxy::Haproxy] {
        let pid = stack.pid(p);
        let idle = tree_rss_kb(pid);
        let (open, failed) = open_conns(stack.port(p, false), conns, None);
        std::thread::sleep(Duration::from_millis(300));
        let loaded = tree_rss_kb(pid);
        rows.push(conn_row(p.name(), idle, loaded, open.len(), failed));
        // TLS: NGINX and HAProxy keep a connection's buffers while it is
        // idle, so their TLS connections are measured here, opened while
        // the plain ones stay open. The gateway parks an idle connection
        // (frees its buffers, which the allocator keeps), so TLS
        // connections opened in the same process would reuse the plain
        // ones' freed memory and read as almost free: its TLS row is a
        // gateway process of its own that nothing ran in before.
        let tls_row = if matches!(p, Proxy::Gateway) {
            let fresh = SpareGateway::start(stack, "memory-tls", |text, _| text);
            let before = tree_rss_kb(fresh.pid);
            let (tls_open, tls_failed) = open_conns(fresh.https, tls_conns, Some(&tls_cfg));
            std::thread::sleep(Duration::from_millis(300));
            let after = tree_rss_kb(fresh.pid);
            conn_row(p.name(), before, after, tls_open.len(), tls_failed)
        } else {
            let (tls_open, tls_failed) = open_conns(stack.port(p, true), tls_conns, Some(&tls_cfg));
            std::thread::sleep(Duration::from_millis(300));
            let tls_loaded = tree_rss_kb(pid);
            conn_row(p.name(), loaded, tls_loaded, tls_open.len(), tls_failed)
        };
        tls_rows.push(tls_row);
        drop(open);
        // Let the closes settle before the next proxy.
        std::thread::sleep(Duration::from_millis(500));
    }
    // Plain: RSS with the connections, as before. TLS: per connection (RSS
    // with minus RSS before), so the TLS rows are not skewed by what the
    // plain connections left allocated.
    for (rows, field) in [
        (&mut rows, "rss_kb_with_connections"),
        (&mut tls_rows, "bytes_per_connection"),
    ] {
        let gw = rows[0][field].as_f64().unwrap_or(0.0);
        for r in rows.iter_mut().skip(1) {
            let peer = r[field].as_f64().unwrap_or(0.0);
            if peer > 0.0 {
                r["gateway_ratio"] = json!(((gw / peer) * 100.0).round() / 100.0);
            }
        }
    }
    progress.step("memory: gateway with XDP, blocklist map empty and full");
    let bl = blocklist(opts, stack);
    json!({ "connections": conns, "tls_connections": tls_conns, "nofile_limit": opts.nofile, "rows": rows, "tls_rows": tls_rows, "blocklist": bl })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### Memory (RSS of the process tree, KiB; {} keep-alive connections, each after one request)\n\n| proxy | RSS idle | RSS with connections | connections open / failed | bytes per connection | gateway / this (with connections) |\n|---|---|---|---|---|---|\n",
        v["connections"]
    );
    out.push_str(&conn_rows_markdown(v["rows"].as_array().map_or(&[], |v| v)));
    if let Some(tls) = v["tls_rows"].as_array() {
        out.push_str(&format!(
            "\nOver TLS ({} connections, each after one request over TLS 1.3; as many as HAProxy's maxconn leaves). NGINX and HAProxy: opened while the plain ones above stay open, so RSS before is the plain row's RSS with connections. The gateway: in a gateway process of its own that served nothing before, because it frees an idle connection's buffers and TLS connections opened in the same process as the plain ones would reuse that memory unseen:\n\n\
| proxy | RSS before | RSS with TLS connections | connections open / failed | bytes per TLS connection | gateway / this (per connection) |\n|---|---|---|---|---|---|\n",
            v["tls_connections"]
        ));
        out.push_str(&conn_rows_markdown(tls));
    }
    let b = &v["blocklist"];
    out.push_str(&format!(
        "\nGateway with XDP (skb mode on a veth): {} blocklist entries inserted ({} / s from a second process through the pinned map; last entry present: {}). \
RSS {} KiB empty → {} KiB full; BPF map memory (memlock of its {} map fds, from /proc/<pid>/fdinfo) {} KiB empty → {} KiB full{}.\n",
        b["inserted"], b["insert_per_sec"], b["last_entry_present"],
        b["gateway_rss_kb_empty"], b["gateway_rss_kb_full"], b["map_fds"],
        b["map_memlock_kb_empty"], b["map_memlock_kb_full"],
        if b["map_memlock_kb_empty"] == b["map_memlock_kb_full"] {
            " (unchanged: the maps are sized at creation, so this memory is paid at start)"
        } else {
            ""
        },
    ));
    out
}
