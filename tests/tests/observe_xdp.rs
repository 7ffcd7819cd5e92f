//! `/metrics` reads the XDP counters from the maps at scrape time: a client
//! in a network namespace is blocked, its SYNs are dropped by the XDP
//! program on the host end of the veth, and the `dropped_blocklist` packet
//! counter and the dropped-sources gauge move on the next scrape.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use test_support::{
    gateway::{Gateway, http_get},
    guard::{Link, PinDir},
    netns::in_netns,
    require_root,
    temp::TempDir,
};

const PORT: u16 = 18095;

/// The value of `name{labels}` in Prometheus text, 0 if absent.
fn metric(text: &str, name_and_labels: &str) -> f64 {
    test_support::metrics::metric(text, name_and_labels).unwrap_or(0.0)
}

#[test]
fn metrics_show_xdp_drops_of_a_blocked_netns_client() {
    if !require_root("metrics_show_xdp_drops_of_a_blocked_netns_client") {
        return;
    }
    let link = Link::new(
        &format!("198.19.{}", (std::process::id() % 200) as u8 + 20),
        1,
    );
    let (ns, veth) = (&link.ns, &link.veth);
    let (host_ip, client_ip) = (link.host_ip.clone(), link.client_ips[0].clone());

    // A greeter on the host end.
    let listener = TcpListener::bind((host_ip.as_str(), PORT)).expect("bind greeter");
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let greeter = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    c.write_all(b"hello\n").ok();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let dst: SocketAddr = format!("{host_ip}:{PORT}").parse().unwrap();
    let connect = move || {
        in_netns(&ns.name.clone(), move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(1500))
                .and_then(|mut c| {
                    let mut b = String::new();
                    c.set_read_timeout(Some(Duration::from_secs(2)))?;
                    c.read_to_string(&mut b).map(|_| b)
                })
                .map_err(|e| e.to_string())
        })
    };

    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let socket = tmp.0.join("admin.sock");
    let admin_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let config = tmp.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[xdp]\ninterface = \"{}\"\nmode = \"native\"\npin_dir = \"{}\"\nprotected_ports = [{PORT}]\n\
             [admin]\nsocket = \"{}\"\n[log]\naccess_log = \"off\"\n\
             [observability]\nenabled = true\nlisten = \"{admin}\"\n",
            veth.host,
            pin.path.display(),
            socket.display()
        ),
    )
    .unwrap();
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));

    let (status, before) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "{}", gw.log_text());
    let drops = |t: &str| {
        metric(
            t,
            r#"gateway_xdp_packets_total{reason="dropped_blocklist"}"#,
        )
    };
    assert!(
        before.contains(r#"gateway_xdp_packets_total{reason="passed"}"#),
        "XDP counters missing:\n{before}"
    );
    let (status, ready) = http_get(admin, "/readyz");
    // No upstreams configured: not ready, but XDP is reported attached.
    assert_eq!(status, 503, "{ready}");
    assert!(ready.contains(r#""xdp":"attached""#), "{ready}");

    assert_eq!(
        connect().as_deref(),
        Ok("hello\n"),
        "reachable before the block"
    );
    gw.ok(&["block", "add", &client_ip, "--reason", "observe"]);
    assert!(connect().is_err(), "blocked client still connected");

    let (_, after) = http_get(admin, "/metrics");
    assert!(
        drops(&after) > drops(&before),
        "dropped_blocklist did not move: before {} after {}\n{after}",
        drops(&before),
        drops(&after)
    );
    assert!(
        drops(&after) as u64 >= gw.counter("dropped_blocklist").saturating_sub(10),
        "/metrics and `gateway stats` disagree"
    );
    assert!(
        metric(&after, "gateway_xdp_dropped_sources") >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            r#"gateway_xdp_bytes_total{reason="dropped_blocklist"}"#
        ) > 0.0,
        "{after}"
    );

    stop.store(true, Ordering::Relaxed);
    greeter.join().ok();
}
