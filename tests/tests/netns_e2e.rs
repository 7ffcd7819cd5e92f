//! End to end in network namespaces: a client namespace connected by a veth
//! pair to the host side, where the real `gateway` binary attaches XDP to the
//! host end. Checks what a user observes: connections succeed or time out,
//! counters move, blocks expire by themselves and survive a restart, a flood
//! is dropped while a well-behaved client keeps working, SYNs split into IP
//! fragments meet the SYN budget (raw sockets), and the CLI rejects bad
//! input without changing anything.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use test_support::{
    gateway::{Gateway, cli},
    guard::{Link, PinDir},
    http::{blocking::exchange_on, get_request},
    netns::{connect_from, in_netns},
    require_root,
    temp::TempDir,
};

const PORT: u16 = 18080;

/// Host side of the veth, the client namespace and addresses in 198.18.0.0/15
/// (the benchmarking range, never a real network).
struct Topology {
    link: Link,
    host_ip: String,
    client_a: String,
    client_b: String,
}

impl Topology {
    fn new(subnet: u8) -> Self {
        let link = Link::new(&format!("198.18.{subnet}"), 2);
        let (host_ip, client_a, client_b) = (
            link.host_ip.clone(),
            link.client_ips[0].clone(),
            link.client_ips[1].clone(),
        );
        Self {
            link,
            host_ip,
            client_a,
            client_b,
        }
    }

    /// Connects from `src` in the client namespace; `Ok(greeting)` or the error.
    fn connect(&self, src: &str) -> Result<String, String> {
        let src: std::net::Ipv4Addr = src.parse().unwrap();
        let dst: std::net::SocketAddrV4 = format!("{}:{PORT}", self.host_ip).parse().unwrap();
        in_netns(&self.link.ns.name, move || {
            let mut s = connect_from(src, dst, Duration::from_millis(1500))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = String::new();
            s.read_to_string(&mut buf)
                .map_err(|e| format!("read: {e}"))?;
            Ok(buf)
        })
    }
}

/// A TCP greeter and a UDP counter on the host side, stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    udp_received: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ip: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let udp_received = Arc::new(AtomicU64::new(0));
        let tcp = TcpListener::bind((ip, PORT)).expect("bind TCP");
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind((ip, PORT)).expect("bind UDP");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let s1 = stop.clone();
        let t1 = std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut c, _)) => {
                        c.write_all(b"hello\n").ok();
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let (s2, count) = (stop.clone(), udp_received.clone());
        let t2 = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::Relaxed) {
                if udp.recv(&mut buf).is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            udp_received,
            threads: vec![t1, t2],
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

fn write_config(
    dir: &Path,
    iface: &str,
    pin: &Path,
    socket: &Path,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"[xdp]
interface = "{iface}"
mode = "native"
pin_dir = "{pin}"
protected_ports = [{PORT}]
sweep_interval = "200ms"
{extra}

[admin]
socket = "{socket}"
"#,
            pin = pin.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    path
}

/// A /24 of its own for each test of this file (they run in parallel):
/// `offset` 0..8 within a block chosen by the process id, below the
/// 198.18.240.0/20 that the dashboard and cluster tests use.
fn subnet(offset: u8) -> u8 {
    assert!(offset < 8);
    (std::process::id() % 30) as u8 * 8 + offset
}

#[test]
fn block_unblock_ttl_and_restart() {
    if !require_root("block_unblock_ttl_and_restart") {
        return;
    }
    let topo = Topology::new(subnet(0));
    let _server = Server::start(&topo.host_ip);
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, "");
    let mut gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));

    assert_eq!(
        topo.connect(&topo.client_a).as_deref(),
        Ok("hello\n"),
        "reachable before any block"
    );

    // Block: the next connection attempt times out and the counter rises.
    let before = gw.counter("dropped_blocklist");
    gw.ok(&["block", "add", &topo.client_a, "--reason", "e2e"]);
    let r = topo.connect(&topo.client_a);
    assert!(r.is_err(), "blocked source still connected: {r:?}");
    assert!(
        gw.counter("dropped_blocklist") > before,
        "drop counter did not move"
    );
    assert_eq!(
        topo.connect(&topo.client_b).as_deref(),
        Ok("hello\n"),
        "other source unaffected"
    );
    let top: serde_json::Value = serde_json::from_str(&gw.ok(&["stats", "--json"])).unwrap();
    assert_eq!(top["top_dropped"][0]["source"], topo.client_a.as_str());

    // Unblock: reachable again.
    gw.ok(&["block", "del", &topo.client_a]);
    assert_eq!(
        topo.connect(&topo.client_a).as_deref(),
        Ok("hello\n"),
        "reachable after block del"
    );

    // A TTL block drops, then expires by itself and the sweeper removes it.
    gw.ok(&["block", "add", &topo.client_a, "--ttl", "2s"]);
    assert!(
        topo.connect(&topo.client_a).is_err(),
        "TTL block did not drop"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        topo.connect(&topo.client_a).as_deref(),
        Ok("hello\n"),
        "TTL block did not expire"
    );
    let list: serde_json::Value =
        serde_json::from_str(&gw.ok(&["block", "list", "--json"])).unwrap();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "sweeper left {list}"
    );

    // Blocks survive a restart through the pinned maps, and the filter
    // itself outlives the process (pinned link): no unfiltered instant.
    gw.ok(&["block", "add", "198.18.0.0/15", "--reason", "whole range"]);
    assert!(topo.connect(&topo.client_b).is_err());
    let status = gw.process.terminate().expect("gateway was running");
    assert!(
        status.success(),
        "gateway exit: {status}\n{}",
        gw.log_text()
    );
    // No gateway runs: the kernel still drops the blocked range. (Before
    // issue 18 the link was owned by the process and traffic flowed here.)
    assert!(
        topo.connect(&topo.client_b).is_err(),
        "XDP detached when the gateway exited"
    );
    let status = xdp_cli(&["status", "--config", config.to_str().unwrap()]);
    assert!(
        status.contains(&format!("{}: attached", topo.link.veth.host)),
        "{status}"
    );
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw2.log"));
    assert!(
        gw.log_text().contains("adopted the pinned link"),
        "{}",
        gw.log_text()
    );
    assert!(
        topo.connect(&topo.client_b).is_err(),
        "block lost across restart"
    );
    assert!(gw.ok(&["block", "list"]).contains("whole range"));
    gw.ok(&["block", "del", "198.18.0.0/15"]);
    assert_eq!(topo.connect(&topo.client_b).as_deref(), Ok("hello\n"));
}

/// `gateway xdp ...` with the test binary; stdout, or a panic with stderr.
fn xdp_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(test_support::gateway::bin())
        .arg("xdp")
        .args(args)
        .output()
        .expect("run gateway xdp");
    assert!(
        out.status.success(),
        "gateway xdp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 18: after `kill -9` the filter stays attached and keeps enforcing
/// a TTL block, which expires on time with no gateway (and no sweeper)
/// running; the next start adopts the link; `gateway xdp detach` after a
/// stop removes the filter; `--xdp-detach-on-exit` leaves nothing behind.
#[test]
fn filter_outlives_kill_9_and_detach_removes_it() {
    if !require_root("filter_outlives_kill_9_and_detach_removes_it") {
        return;
    }
    let topo = Topology::new(subnet(2));
    let _server = Server::start(&topo.host_ip);
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, "");
    let config_arg = config.to_str().unwrap();
    let mut gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    // Long enough for three refused connects (1.5 s each) before it ends.
    gw.ok(&["block", "add", &topo.client_a, "--ttl", "6s"]);
    gw.ok(&["block", "add", &topo.client_b]);
    let blocked_at = Instant::now();
    assert!(topo.connect(&topo.client_a).is_err());

    // kill -9: no cleanup ran, the filter is still there.
    // SAFETY: signalling the child this test started.
    unsafe {
        libc::kill(gw.process.pid() as i32, libc::SIGKILL);
    }
    let _ = gw.process.terminate();
    assert!(
        topo.connect(&topo.client_b).is_err(),
        "no filter after kill -9"
    );
    assert!(
        topo.connect(&topo.client_a).is_err(),
        "the TTL block stopped early"
    );
    // The TTL block expires on time although no gateway runs.
    let left = Duration::from_millis(6300).saturating_sub(blocked_at.elapsed());
    std::thread::sleep(left);
    assert_eq!(
        topo.connect(&topo.client_a).as_deref(),
        Ok("hello\n"),
        "the TTL block did not expire while no gateway ran"
    );
    assert!(topo.connect(&topo.client_b).is_err());

    // The next start adopts the link (one link, program replaced).
    let mut gw = Gateway::start(&config, &socket, &tmp.0.join("gw2.log"));
    assert!(
        gw.log_text().contains("adopted the pinned link"),
        "{}",
        gw.log_text()
    );
    assert!(topo.connect(&topo.client_b).is_err());
    let status = gw.process.terminate().expect("gateway was running");
    assert!(status.success(), "{}", gw.log_text());

    // Detach by hand: traffic flows with no gateway.
    let out = xdp_cli(&["detach", "--config", config_arg]);
    assert!(out.contains("detached"), "{out}");
    assert_eq!(topo.connect(&topo.client_b).as_deref(), Ok("hello\n"));
    assert!(xdp_cli(&["status", "--config", config_arg]).contains("no XDP filter"));

    // --xdp-detach-on-exit: filtering while it runs, nothing after.
    let mut cmd = std::process::Command::new(test_support::gateway::bin());
    cmd.args(["run", "--xdp-detach-on-exit", "--config", config_arg]);
    let out = std::fs::File::create(tmp.0.join("gw3.log")).unwrap();
    let child = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start gateway");
    let mut child = test_support::process::ChildGuard::new(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli(&socket, &["block", "list"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(topo.connect(&topo.client_b).is_err(), "not filtering");
    let status = child.terminate().expect("gateway was running");
    assert!(status.success());
    assert_eq!(
        topo.connect(&topo.client_b).as_deref(),
        Ok("hello\n"),
        "--xdp-detach-on-exit left the filter attached"
    );
    drop(pin);
}

#[test]
fn flood_over_pps_is_dropped_while_a_polite_client_works() {
    if !require_root("flood_over_pps_is_dropped_while_a_polite_client_works") {
        return;
    }
    let topo = Topology::new(subnet(1));
    let server = Server::start(&topo.host_ip);
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, "");
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    gw.ok(&["limit", "set", "default", "--pps", "200", "--burst", "200"]);

    // Client A floods the protected port: a fixed count of datagrams as fast
    // as it can (bounded: 20,000 packets or 10 s, whichever comes first).
    const FLOOD: u64 = 20_000;
    let (host, a) = (topo.host_ip.clone(), topo.client_a.clone());
    let flood = std::thread::spawn({
        let ns = topo.link.ns.name.clone();
        move || {
            in_netns(&ns, move || {
                let sock = UdpSocket::bind((a.as_str(), 0)).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut sent = 0u64;
                while sent < FLOOD && Instant::now() < deadline {
                    if sock.send_to(&[0u8; 64], (host.as_str(), PORT)).is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        }
    });
    // Meanwhile client B, far under its limit, connects a few times.
    let mut polite_ok = 0;
    for _ in 0..5 {
        if topo.connect(&topo.client_b).as_deref() == Ok("hello\n") {
            polite_ok += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = flood.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let received = server.udp_received.load(Ordering::Relaxed);
    let dropped = gw.counter("dropped_pps");
    eprintln!(
        "flood: sent {sent}, received {received}, dropped_pps {dropped}, polite ok {polite_ok}/5"
    );
    assert_eq!(polite_ok, 5, "the polite client was hurt by the flood");
    assert!(dropped > 0, "nothing dropped by the pps limit");
    assert!(received < sent, "every flood packet reached the socket");
    assert!(
        received + dropped >= sent / 2,
        "packets unaccounted for: sent {sent}, received {received}, dropped {dropped}"
    );
    let top: serde_json::Value = serde_json::from_str(&gw.ok(&["stats", "--json"])).unwrap();
    assert_eq!(top["top_dropped"][0]["source"], topo.client_a.as_str());
    assert_eq!(top["top_dropped"][0]["last_reason"], "dropped_pps");

    // An unlimited override lets the same client through again.
    gw.ok(&["limit", "set", &topo.client_a, "--pps", "0"]);
    let got: serde_json::Value =
        serde_json::from_str(&gw.ok(&["limit", "get", &topo.client_a, "--json"])).unwrap();
    assert_eq!(got["pps"]["unlimited"], true);
    let before = gw.counter("dropped_pps");
    assert_eq!(topo.connect(&topo.client_a).as_deref(), Ok("hello\n"));
    assert_eq!(gw.counter("dropped_pps"), before);
}

#[test]
fn cli_rejects_bad_input_and_changes_nothing() {
    if !require_root("cli_rejects_bad_input_and_changes_nothing") {
        return;
    }
    let topo = Topology::new(subnet(4));
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, "");

    // No gateway running yet.
    let out = cli(&socket, &["block", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gateway is running"));

    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    let before = gw.ok(&["block", "list", "--json"]);
    let limits_before = gw.ok(&["limit", "list", "--json"]);
    for (args, needle) in [
        (
            vec!["block", "add", "10.0.0.300"],
            "not an IPv4 or IPv6 address",
        ),
        (vec!["block", "add", "10.0.0.0/33"], "out of range for IPv4"),
        (
            vec!["block", "add", "10.1.2.3/8"],
            "did you mean 10.0.0.0/8",
        ),
        (
            vec!["block", "add", "10.0.0.1", "--ttl", "soon"],
            "not a duration",
        ),
        (vec!["limit", "set", "default", "--pps", "-5"], "--pps"),
        (
            vec!["limit", "set", "10.0.0.0/8", "--pps", "10", "--burst", "0"],
            "burst must be at least 1",
        ),
        (vec!["block", "del", "192.0.2.1"], "is not blocked"),
    ] {
        let out = gw.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            err.lines().next().is_some_and(|l| l.contains("error")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(gw.ok(&["block", "list", "--json"]), before);
    assert_eq!(gw.ok(&["limit", "list", "--json"]), limits_before);
}

#[test]
fn bad_config_reports_file_line_and_problem() {
    // Needs no privileges: the config is checked before anything else.
    let tmp = TempDir::new();
    let path = tmp.0.join("bad.toml");
    std::fs::write(
        &path,
        "[xdp]\ninterface = \"lo\"\nblock = [\"10.0.0.0/33\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(test_support::gateway::bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("out of range for IPv4"), "{err}");
}

/// Raw IPv4 packets from the client namespace (IP_HDRINCL: the kernel fills
/// in the IP checksum and keeps the fragment fields), and a raw TCP socket
/// that sees every segment arriving there, to count SYN-ACKs.
mod raw {
    use std::{net::Ipv4Addr, os::fd::AsRawFd as _, time::Duration};

    fn sum16(data: &[u8], mut acc: u32) -> u32 {
        for c in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    }

    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// A 20-byte TCP SYN with a valid checksum.
    pub fn syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&(u32::from(sport) * 7919).to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        let c = fold(sum16(&t, sum16(&pseudo, 0)));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// An IPv4 packet carrying `data` at fragment `offset` (8-byte units).
    pub fn ipv4(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        offset: u16,
        more: bool,
        data: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        let flags = if more { 0x2000 } else { 0 } | offset;
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&[64, 6, 0, 0]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(data);
        p
    }

    fn check(rc: libc::c_int, what: &str) -> libc::c_int {
        assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
        rc
    }

    pub struct Sockets {
        send: std::os::fd::OwnedFd,
        recv: std::os::fd::OwnedFd,
    }

    impl Sockets {
        /// Call on a thread inside the client namespace.
        pub fn open() -> Self {
            use std::os::fd::FromRawFd as _;
            // SAFETY: plain socket(2) calls; the fds are owned below.
            let (s, r) = unsafe {
                (
                    check(
                        libc::socket(
                            libc::AF_INET,
                            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                            libc::IPPROTO_RAW,
                        ),
                        "raw send socket",
                    ),
                    check(
                        libc::socket(
                            libc::AF_INET,
                            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                            libc::IPPROTO_TCP,
                        ),
                        "raw TCP socket",
                    ),
                )
            };
            // SAFETY: fresh fds we own.
            let sockets = unsafe {
                Self {
                    send: std::os::fd::OwnedFd::from_raw_fd(s),
                    recv: std::os::fd::OwnedFd::from_raw_fd(r),
                }
            };
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: a valid timeval of the given size.
            check(
                unsafe {
                    libc::setsockopt(
                        sockets.recv.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                    )
                },
                "SO_RCVTIMEO",
            );
            sockets
        }

        pub fn send(&self, packet: &[u8], dst: Ipv4Addr) {
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: valid buffer and sockaddr_in of the given sizes.
            let n = unsafe {
                libc::sendto(
                    self.send.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(
                n,
                packet.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }

        /// Destination ports of the SYN-ACKs from `from:port` seen within
        /// `wait` (bounded by time and by count).
        pub fn syn_acks(
            &self,
            from: Ipv4Addr,
            port: u16,
            wait: Duration,
        ) -> std::collections::BTreeSet<u16> {
            let deadline = std::time::Instant::now() + wait;
            let mut seen = std::collections::BTreeSet::new();
            let mut buf = [0u8; 2048];
            let mut reads = 0;
            while std::time::Instant::now() < deadline && reads < 100_000 {
                reads += 1;
                // SAFETY: a valid buffer of the given size.
                let n = unsafe {
                    libc::recv(self.recv.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n < 40 {
                    continue;
                }
                let p = &buf[..n as usize];
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p[12..16] != from.octets() || p.len() < ihl + 20 {
                    continue;
                }
                let t = &p[ihl..];
                if u16::from_be_bytes([t[0], t[1]]) == port && t[13] & 0x12 == 0x12 {
                    seen.insert(u16::from_be_bytes([t[2], t[3]]));
                }
            }
            seen
        }
    }
}

/// Security class 19, end to end: with a SYN budget of one for the client,
/// 50 plain SYNs get one SYN-ACK (the rest are `dropped_syn`), and 50 SYNs
/// sent as a tiny first fragment (8 or 16 bytes of TCP header) plus the
/// rest get none (`dropped_fragment`), where they used to get 50.
#[test]
fn fragmented_syns_do_not_bypass_the_syn_budget() {
    if !require_root("fragmented_syns_do_not_bypass_the_syn_budget") {
        return;
    }
    let topo = Topology::new(subnet(3));
    let _server = Server::start(&topo.host_ip);
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, "");
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    gw.ok(&[
        "limit",
        "set",
        &topo.client_a,
        "--pps",
        "0",
        "--syn-rate",
        "1",
        "--syn-burst",
        "1",
    ]);
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (
        topo.client_a.parse().unwrap(),
        topo.host_ip.parse().unwrap(),
    );
    let ns = topo.link.ns.name.clone();
    let send_50 = |tcp_bytes: Option<usize>, base_port: u16| {
        in_netns(&ns, move || {
            let s = raw::Sockets::open();
            for i in 0..50u16 {
                let sport = base_port + i;
                let seg = raw::syn(src, dst, sport, PORT);
                match tcp_bytes {
                    None => s.send(&raw::ipv4(src, dst, sport, 0, false, &seg), dst),
                    Some(n) => {
                        s.send(&raw::ipv4(src, dst, sport, 0, true, &seg[..n]), dst);
                        s.send(
                            &raw::ipv4(src, dst, sport, (n / 8) as u16, false, &seg[n..]),
                            dst,
                        );
                    }
                }
            }
            s.syn_acks(dst, PORT, Duration::from_millis(1500)).len()
        })
    };
    let (syn0, frag0) = (gw.counter("dropped_syn"), gw.counter("dropped_fragment"));
    let plain = send_50(None, 30_000);
    let dropped_syn = gw.counter("dropped_syn") - syn0;
    eprintln!("plain: {plain} SYN-ACKs, dropped_syn +{dropped_syn}");
    assert!(plain >= 1, "the budget of one lets one SYN through");
    assert!(
        plain < 50 && dropped_syn > 0,
        "the SYN budget did not apply"
    );
    for (n, base) in [(8, 31_000), (16, 32_000)] {
        let acks = send_50(Some(n), base);
        let dropped = gw.counter("dropped_fragment") - frag0;
        eprintln!("{n}-byte first fragments: {acks} SYN-ACKs, dropped_fragment {dropped}");
        assert_eq!(acks, 0, "SYNs in {n}-byte first fragments were answered");
    }
    assert_eq!(
        gw.counter("dropped_fragment") - frag0,
        200,
        "every fragment dropped"
    );
}

/// `gateway upgrade` three times while a client in the namespace makes
/// requests through the gateway (a new connection each) and a blocked
/// source sends a UDP datagram every 2 ms: no request fails, every
/// response is the demo upstream's, and no datagram of the blocked source
/// arrives (the successor adopts the pinned link and replaces the program
/// atomically: the filter never leaves).
#[test]
fn upgrades_under_load_keep_serving_and_filtering() {
    if !require_root("upgrades_under_load_keep_serving_and_filtering") {
        return;
    }
    const HTTP_PORT: u16 = 18090;
    let topo = Topology::new(subnet(5));
    let server = Server::start(&topo.host_ip);
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let demo = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        r#"
[demo]
enabled = true
address = "{demo}"

[[listeners]]
name = "http"
address = "{host}:{HTTP_PORT}"

[[upstreams]]
name = "demo"
targets = ["{demo}"]

[[routes]]
id = "all"
path_prefix = "/"
upstream = "demo"
"#,
        host = topo.host_ip
    );
    let config = write_config(&tmp.0, &topo.link.veth.host, &pin.path, &socket, &extra);
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));
    gw.ok(&["block", "add", &topo.client_b, "--reason", "upgrade test"]);
    let dropped_before = gw.counter("dropped_blocklist");

    let stop = Arc::new(AtomicBool::new(false));
    let ns = topo.link.ns.name.clone();
    // The blocked source: a datagram every 2 ms (at most 20,000 or 40 s).
    let sender = {
        let (stop, ns, src, dst) = (
            stop.clone(),
            ns.clone(),
            topo.client_b.clone(),
            topo.host_ip.clone(),
        );
        std::thread::spawn(move || {
            test_support::netns::enter(&ns);
            let udp = UdpSocket::bind((src.as_str(), 0)).expect("bind UDP");
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && sent < 20_000 && Instant::now() < deadline {
                if udp.send_to(b"probe", (dst.as_str(), PORT)).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    // The client: GET through the gateway, a new connection each (at most
    // 5,000 or 40 s).
    let client = {
        let (stop, ns) = (stop.clone(), ns.clone());
        let src: std::net::Ipv4Addr = topo.client_a.parse().unwrap();
        let dst: std::net::SocketAddrV4 = format!("{}:{HTTP_PORT}", topo.host_ip).parse().unwrap();
        std::thread::spawn(move || {
            test_support::netns::enter(&ns);
            let deadline = Instant::now() + Duration::from_secs(40);
            let (mut ok, mut failed) = (0u64, Vec::new());
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let r = connect_from(src, dst, Duration::from_secs(2)).and_then(|s| {
                    let request = get_request(&format!("/u/{i}"), "gw", "");
                    exchange_on(s, request.as_bytes(), Duration::from_secs(5))
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                });
                match r {
                    // The demo upstream echoes what it received.
                    Ok(b) if b.starts_with("HTTP/1.1 200") && b.contains(&format!("/u/{i}")) => {
                        ok += 1
                    }
                    Ok(b) => failed.push(format!("{i}: {}", b.lines().next().unwrap_or(""))),
                    Err(e) => failed.push(format!("{i}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut pid = gw.process.pid();
    let mut successors = Vec::new();
    for _ in 0..3 {
        let out = gw.ok(&["upgrade"]);
        let pids: Vec<u32> = out
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .take(2)
            .collect();
        assert_eq!(pids.first(), Some(&pid), "{out}");
        pid = pids[1];
        successors.push(test_support::guard::PidGuard::new(pid));
        std::thread::sleep(Duration::from_millis(700));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let (ok, failed) = client.join().unwrap();

    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 100, "only {ok} requests");
    assert!(sent > 500, "only {sent} probes sent");
    assert_eq!(
        server.udp_received.load(Ordering::Relaxed),
        0,
        "datagrams of the blocked source got through during the upgrades"
    );
    let dropped = gw.counter("dropped_blocklist") - dropped_before;
    assert!(dropped >= sent, "dropped {dropped} of {sent} probes");
    // One filter on the interface, attached by the last process.
    let status = xdp_cli(&["status", "--config", config.to_str().unwrap()]);
    assert!(
        status.contains(&format!("{}: attached", topo.link.veth.host)),
        "{status}"
    );
    assert!(successors.last().unwrap().alive());
    for s in &successors[..2] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.alive() {
            assert!(Instant::now() < deadline, "process {} did not exit", s.pid);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(successors);
    drop(gw);
    drop(pin);
}
