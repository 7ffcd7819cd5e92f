//! Upstream targets given by DNS name and SRV, against a DNS responder the
//! test runs on loopback (`[dns] nameservers` points at it): an answer that
//! changes moves traffic without a reload; a server that stops answering
//! (or answers SERVFAIL) leaves traffic on the last good addresses and
//! moves the failure counter; SRV weights split traffic; passive ejection
//! survives a membership change; bad targets are config errors.

mod proxy_common;
mod upstream_support;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway::{config::Config, proxy::Proxy};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, SRV},
    },
};
use proxy_common::*;
use tokio::net::{TcpListener, UdpSocket};

/// How the responder treats queries.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Answer,
    /// Drops every query (a server that is down or unreachable).
    Silent,
    ServFail,
}

/// The records the responder serves (names lowercase with the final dot).
struct Zone {
    mode: Mode,
    a: HashMap<String, Vec<Ipv4Addr>>,
    /// name → (priority, weight, port, target)
    srv: HashMap<String, Vec<(u16, u16, u16, String)>>,
}

/// A minimal authoritative DNS responder over UDP on 127.0.0.1 (A and SRV;
/// NOERROR with no answer for other types of known names, NXDOMAIN for
/// unknown ones). TTL 1 second.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl Dns {
    async fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            mode: Mode::Answer,
            a: HashMap::new(),
            srv: HashMap::new(),
        }));
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&query, &mut z.lock().unwrap());
                if let Some(reply) = reply {
                    let _ = sock.send_to(&reply.to_vec().unwrap(), peer).await;
                }
            }
        });
        Dns { addr, zone }
    }

    fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone
            .lock()
            .unwrap()
            .a
            .insert(name.into(), ips.to_vec());
    }

    fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let r = records
            .iter()
            .map(|(p, w, port, t)| (*p, *w, *port, t.to_string()))
            .collect();
        self.zone.lock().unwrap().srv.insert(name.into(), r);
    }

    fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = mode;
    }

    /// `[dns]` pointing at this responder, with short TTL bounds.
    fn section(&self) -> String {
        format!(
            "[dns]\nnameservers = [\"{}\"]\nmin_ttl = \"1s\"\nmax_ttl = \"2s\"\ntimeout = \"2s\"\n",
            self.addr
        )
    }
}

fn answer(query: &Message, zone: &mut Zone) -> Option<Message> {
    let q = query.queries.first()?;
    let mut reply = match zone.mode {
        Mode::Silent => return None,
        Mode::ServFail => Message::error_msg(
            query.metadata.id,
            query.metadata.op_code,
            ResponseCode::ServFail,
        ),
        Mode::Answer => Message::response(query.metadata.id, query.metadata.op_code),
    };
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    if zone.mode != Mode::Answer {
        return Some(reply);
    }
    reply.metadata.authoritative = true;
    let name = q.name().to_ascii().to_ascii_lowercase();
    let known = zone.a.contains_key(&name) || zone.srv.contains_key(&name);
    match q.query_type() {
        RecordType::A => {
            for ip in zone.a.get(&name).into_iter().flatten() {
                reply.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(*ip))));
            }
        }
        RecordType::SRV => {
            for (p, w, port, target) in zone.srv.get(&name).into_iter().flatten() {
                let target = Name::from_ascii(target).unwrap();
                reply.add_answer(Record::from_rdata(
                    q.name().clone(),
                    1,
                    RData::SRV(SRV::new(*p, *w, *port, target)),
                ));
            }
        }
        _ => {}
    }
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    Some(reply)
}

/// Two origins on one port of 127.0.0.2 and 127.0.0.3 (a `name:port`
/// target has one port for all its addresses).
async fn origin_pair() -> (Origin, Origin, u16) {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await {
            return (
                Origin::serve("a", Behaviour::default(), first),
                Origin::serve("b", Behaviour::default(), second),
                port,
            );
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

const A_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn config(dns: &Dns, targets: &str, extra: &str) -> String {
    format!(
        "{PLAIN}{}[[upstreams]]\nname = \"u\"\ntargets = [{targets}]\n{extra}\n\
         [[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n",
        dns.section()
    )
}

/// The upstream pool `u` of the running generation.
fn pool(p: &Proxy) -> Arc<gateway::proxy::upstream::pool::Pool> {
    p.watch().load().pools.get("u").unwrap().clone()
}

/// The proxy's `/metrics` text (the collector the admin listener uses).
fn metrics(p: &Proxy) -> String {
    let m = gateway::observe::metrics::Metrics::new();
    m.register_collector(Box::new(gateway::admin_http::collect::ProxyCollector {
        state: p.watch(),
    }));
    m.encode()
}

/// The value of the sample that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn failures(p: &Proxy) -> u64 {
    pool(p).dns.failures().iter().map(|(_, n)| n).sum()
}

/// Sends GETs (one at a time, at most `max`) until `done` holds; panics
/// with `what` if it never does. Every answer must be 200.
async fn until(addr: SocketAddr, max: usize, what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..max {
        if done() {
            return;
        }
        let r = get(addr, "/", "").await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done(), "{what}: not after {max} requests");
}

#[tokio::test]
async fn changed_answer_moves_traffic_without_reload() {
    let dns = Dns::start().await;
    let (a, b, port) = origin_pair().await;
    dns.set_a("api.test.", &[A_IP]);
    let (p, addr) = proxy(&config(&dns, &format!("\"api.test:{port}\""), "")).await;
    // The first lookup happened before the proxy served.
    for _ in 0..3 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert_eq!(a.requests().len(), 3);
    assert!(b.requests().is_empty());
    let t = pool(&p).targets();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].addr, SocketAddr::from((A_IP, port)));
    assert_eq!(t[0].host.as_deref(), Some("api.test"));

    dns.set_a("api.test.", &[B_IP]);
    until(addr, 200, "traffic moves to the new address", || {
        !b.requests().is_empty()
    })
    .await;
    let before = a.requests().len();
    for _ in 0..5 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert_eq!(a.requests().len(), before, "the old address gets nothing");
    assert!(b.requests().len() >= 5);
    assert_eq!(pool(&p).membership_changes(), (2, 1));
    assert_eq!(failures(&p), 0);
    let m = metrics(&p);
    let changes = "gateway_upstream_membership_changes_total{upstream=\"u\",change=";
    assert_eq!(sample(&m, &format!("{changes}\"added\"}}")), 2.0, "{m}");
    assert_eq!(sample(&m, &format!("{changes}\"removed\"}}")), 1.0, "{m}");
    assert_eq!(sample(&m, "gateway_upstream_targets{upstream=\"u\"}"), 1.0);
}

#[tokio::test]
async fn failed_lookups_keep_the_last_good_addresses() {
    let dns = Dns::start().await;
    let (a, b, port) = origin_pair().await;
    dns.set_a("api.test.", &[A_IP]);
    let (p, addr) = proxy(&config(&dns, &format!("\"api.test:{port}\""), "")).await;
    assert_eq!(get(addr, "/", "").await.status, 200);
    assert_eq!(a.requests().len(), 1);

    for mode in [Mode::Silent, Mode::ServFail] {
        dns.set_mode(mode);
        let seen = failures(&p);
        until(addr, 300, &format!("{mode:?} counted as a failure"), || {
            failures(&p) > seen
        })
        .await;
        let before = a.requests().len();
        for _ in 0..5 {
            assert_eq!(get(addr, "/", "").await.status, 200, "{mode:?}");
        }
        assert_eq!(
            a.requests().len(),
            before + 5,
            "{mode:?}: still served by a"
        );
        assert_eq!(pool(&p).targets().len(), 1);
    }
    // NXDOMAIN (the name is gone) is a failure too: the set stays.
    dns.set_mode(Mode::Answer);
    dns.zone.lock().unwrap().a.clear();
    let seen = failures(&p);
    until(addr, 300, "NXDOMAIN counted as a failure", || {
        failures(&p) > seen
    })
    .await;
    assert_eq!(get(addr, "/", "").await.status, 200);
    assert!(b.requests().is_empty());
    assert_eq!(pool(&p).membership_changes(), (1, 0));
    let m = metrics(&p);
    let series = format!(
        "gateway_upstream_dns_lookup_failures_total{{upstream=\"u\",target=\"api.test:{port}\"}}"
    );
    assert!(sample(&m, &series) >= 3.0, "{m}");
    assert_eq!(sample(&m, "gateway_upstream_targets{upstream=\"u\"}"), 1.0);

    // Answers again: the loop kept going.
    dns.set_a("api.test.", &[B_IP]);
    until(addr, 200, "recovers after failures", || {
        !b.requests().is_empty()
    })
    .await;
}

#[tokio::test]
async fn srv_weights_split_traffic_and_priority_keeps_a_backup_idle() {
    let dns = Dns::start().await;
    let (heavy, light, backup) = (
        Origin::start("heavy").await,
        Origin::start("light").await,
        Origin::start("backup").await,
    );
    dns.set_srv(
        "_http._tcp.api.test.",
        &[
            (10, 3, heavy.addr.port(), "heavy.test."),
            (10, 1, light.addr.port(), "light.test."),
            (20, 5, backup.addr.port(), "backup.test."),
        ],
    );
    for n in ["heavy.test.", "light.test.", "backup.test."] {
        dns.set_a(n, &[Ipv4Addr::LOCALHOST]);
    }
    let (p, addr) = proxy(&config(&dns, "\"srv:_http._tcp.api.test\"", "")).await;
    let t = pool(&p).targets();
    assert_eq!(t.len(), 3, "{t:?}");
    for _ in 0..40 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    let (h, l) = (heavy.requests().len(), light.requests().len());
    assert_eq!(h + l, 40);
    // 3:1 over 40 requests is 30:10; allow a little slack.
    assert!((27..=33).contains(&h), "heavy {h}, light {l}");
    assert!(backup.requests().is_empty(), "priority 20 is a backup");
    let host = |addr| t.iter().find(|x| x.addr == addr).unwrap().host.clone();
    assert_eq!(host(heavy.addr).as_deref(), Some("heavy.test"));
    assert_eq!(host(backup.addr).as_deref(), Some("backup.test"));

    // One SRV target's own name stops resolving: it keeps its last good
    // address (counted as a failure) while the rest of the answer applies.
    dns.zone.lock().unwrap().a.remove("light.test.");
    let seen = failures(&p);
    until(addr, 300, "the SRV target's failure is counted", || {
        failures(&p) > seen
    })
    .await;
    assert_eq!(pool(&p).targets().len(), 3);
    let l = light.requests().len();
    for _ in 0..8 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert_eq!(light.requests().len(), l + 2, "still gets its share");
}

#[tokio::test]
async fn passive_ejection_survives_a_membership_change() {
    let dns = Dns::start().await;
    let (a, b, port) = origin_pair().await;
    // 127.0.0.4:<port> has nothing listening.
    let dead = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 4), port));
    dns.set_a("api.test.", &[Ipv4Addr::new(127, 0, 0, 4), A_IP]);
    let extra =
        "retries = 1\n[upstreams.passive]\nconsecutive_failures = 1\nejection_time = \"10m\"\n";
    let (p, addr) = proxy(&config(&dns, &format!("\"api.test:{port}\""), extra)).await;
    // Round robin reaches the dead address within two requests: it is
    // ejected and the request retried on a.
    for _ in 0..2 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    let find = |addr| {
        pool(&p)
            .targets()
            .iter()
            .find(|t| t.addr == addr)
            .cloned()
            .unwrap()
    };
    let ejected = find(dead);
    assert_eq!(ejected.ejections(), 1);
    assert!(!ejected.available());
    let kept_a = find(SocketAddr::from((A_IP, port)));

    dns.set_a("api.test.", &[Ipv4Addr::new(127, 0, 0, 4), A_IP, B_IP]);
    until(addr, 200, "b joins", || !b.requests().is_empty()).await;
    let still = find(dead);
    assert!(Arc::ptr_eq(&still, &ejected), "same target object");
    assert!(!still.available(), "still ejected after the update");
    assert_eq!(still.ejections(), 1, "never tried again");
    assert!(Arc::ptr_eq(&find(SocketAddr::from((A_IP, port))), &kept_a));
    assert!(!a.requests().is_empty());
    assert_eq!(pool(&p).membership_changes(), (3, 0));
}

/// Health checks seen by an origin.
fn checks(o: &Origin) -> usize {
    o.seen().iter().filter(|s| s.uri == "/healthz").count()
}

/// Waits (bounded, polling) until `done` holds.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within the bound");
}

#[tokio::test]
async fn active_health_checks_follow_membership() {
    let dns = Dns::start().await;
    let (a, b, port) = origin_pair().await;
    dns.set_a("api.test.", &[A_IP]);
    let extra = "[upstreams.health_check]\nenabled = true\ninterval = \"100ms\"\n";
    let (_p, _addr) = proxy(&config(&dns, &format!("\"api.test:{port}\""), extra)).await;
    wait_for("a is checked", || checks(&a) >= 2).await;
    assert_eq!(checks(&b), 0);
    dns.set_a("api.test.", &[B_IP]);
    wait_for("b joins and is checked", || checks(&b) >= 1).await;
    let a_then = checks(&a);
    // Three more checks of b: a's task had time to run if it still did.
    let b_then = checks(&b);
    wait_for("b keeps being checked", || checks(&b) >= b_then + 3).await;
    assert!(
        checks(&a) <= a_then + 1,
        "a removed, its checks stopped ({a_then} then {})",
        checks(&a)
    );
}

#[tokio::test]
async fn reload_keeps_resolved_addresses_while_dns_is_down() {
    let dns = Dns::start().await;
    let (a, _b, port) = origin_pair().await;
    dns.set_a("api.test.", &[A_IP]);
    let toml = config(&dns, &format!("\"api.test:{port}\""), "");
    let (p, addr) = proxy(&toml).await;
    assert_eq!(get(addr, "/", "").await.status, 200);
    dns.set_mode(Mode::Silent);
    // The new generation cannot resolve; it starts from the old answer.
    let full = format!("{toml}\n[xdp]\nenabled = false\n");
    let config = Config::parse(&full, "test.toml").unwrap();
    p.reload(&config, gateway::proxy::Engines::default())
        .unwrap();
    let before = a.requests().len();
    for _ in 0..5 {
        assert_eq!(get(addr, "/", "").await.status, 200);
    }
    assert_eq!(a.requests().len(), before + 5);
    let t = pool(&p).targets();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].addr, SocketAddr::from((A_IP, port)));
    assert_eq!(
        pool(&p).membership_changes(),
        (0, 0),
        "taken over, not counted"
    );
    // It is the new generation, and its own lookups fail.
    until(addr, 300, "the new generation's lookup fails", || {
        failures(&p) > 0
    })
    .await;
    assert_eq!(pool(&p).targets().len(), 1);
}

#[test]
fn bad_targets_are_config_errors_with_line_and_column() {
    for (target, expected) in [
        ("api.test", "missing port: write api.test:<port>"),
        ("api..test:80", "empty label"),
        (
            "srv:_http._tcp.api.test:80",
            "takes its ports from the SRV records",
        ),
        ("srv:api.test", "_service._proto.name"),
        ("10.0.0.300:80", "not a valid IP address or DNS name"),
    ] {
        let toml =
            format!("[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:1\", \"{target}\"]\n");
        let e = Config::parse(&toml, "gw.toml").unwrap_err().to_string();
        assert!(e.starts_with("gw.toml:3:27:"), "{target}: {e}");
        assert!(e.contains(expected), "{target}: {e}");
    }
    // A list over several lines: the line and column of the entry.
    let toml = "[[upstreams]]\nname = \"u\"\ntargets = [\n  \"api.test:80\",\n  \"api.test\",\n]\n";
    let e = Config::parse(toml, "gw.toml").unwrap_err().to_string();
    assert!(
        e.starts_with("gw.toml:5:3: target 'api.test': missing port"),
        "{e}"
    );
    let e = Config::parse("[dns]\nnameservers = [\"ns1.test\"]\n", "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("gw.toml:2:"), "{e}");
}

/// A name-resolved HTTPS target: the certificate is checked against the
/// DNS name (no `server_name` configured) and `host_header = "target"`
/// sends `name:port`; a certificate for another name is refused.
#[tokio::test]
async fn https_target_by_name_is_verified_against_the_name() {
    use upstream_support::{Backend, Ca, Dir, Speaks, server_tls};
    let dns = Dns::start().await;
    let ca = Ca::new("dns test CA");
    let dir = Dir::tagged("upstream-dns-tls");
    let ca_file = dir.write("ca.pem", &ca.pem());
    let backend = Backend::on(
        "127.0.0.2:0",
        Some(server_tls(&ca, &["api.test"], &[b"http/1.1"], None)),
        Speaks::Http1,
    )
    .await;
    let port = backend.addr.port();
    dns.set_a("api.test.", &[A_IP]);
    dns.set_a("other.test.", &[A_IP]);
    let tls = format!("tls = {{ ca_file = \"{}\" }}", ca_file.display());
    let (_p, addr) = proxy(&config(
        &dns,
        &format!("\"api.test:{port}\""),
        &format!("host_header = \"target\"\nretries = 0\n{tls}"),
    ))
    .await;
    let r = get(addr, "/by-name", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = backend.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["host"], format!("api.test:{port}").as_str());

    // The same address under a name the certificate does not carry.
    let (_p2, addr2) = proxy(&config(
        &dns,
        &format!("\"other.test:{port}\""),
        &format!("retries = 0\n{tls}"),
    ))
    .await;
    assert_eq!(get(addr2, "/wrong-name", "").await.status, 502);
    assert_eq!(backend.got().len(), 1, "nothing reached the backend");
}
