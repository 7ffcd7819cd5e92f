//! Listener changes on reload reach the kernel (issue 18, item 3): with
//! `[xdp] protected_ports` left empty the protected ports are the listener
//! ports, so a reload that adds a listener puts its port under the XDP rate
//! limits, and one that removes it takes the port out again. The real
//! `gateway` binary attaches XDP to the host end of a veth; a client in a
//! network namespace sends UDP to the port, and `gateway stats` counts what
//! the per-source packet limit dropped.

use std::{net::UdpSocket, path::Path, process::Command, time::Duration};

use test_support::{
    gateway::Gateway,
    guard::{Link, PinDir},
    netns::in_netns,
    require_root,
    temp::TempDir,
};

const MAIN: u16 = 18091;
const EXTRA: u16 = 18092;

fn write_config(path: &Path, iface: &str, pin: &Path, socket: &Path, host: &str, extra: bool) {
    let extra = if extra {
        format!("[[listeners]]\nname = \"extra\"\naddress = \"{host}:{EXTRA}\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        path,
        format!(
            r#"[xdp]
interface = "{iface}"
mode = "native"
pin_dir = "{pin}"
[xdp.rate_limit]
enabled = true
pps = {{ rate = 10, burst = 10 }}

[admin]
socket = "{socket}"

[[listeners]]
name = "main"
address = "{host}:{MAIN}"
{extra}
"#,
            pin = pin.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
}

/// Sends `n` datagrams from `src` (in namespace `ns`) to `dst:port`.
fn send_udp(ns: &str, src: &str, dst: &str, port: u16, n: u32) {
    let (src, dst) = (src.to_owned(), dst.to_owned());
    in_netns(ns, move || {
        let sock = UdpSocket::bind((src.as_str(), 0)).unwrap();
        for _ in 0..n {
            let _ = sock.send_to(&[0u8; 32], (dst.as_str(), port));
        }
    });
    // Let the last packets through the XDP program before counting.
    std::thread::sleep(Duration::from_millis(200));
}

fn reload(gw: &Gateway) {
    gw.ok(&["reload"]);
}

#[test]
fn protected_ports_follow_listener_changes_on_reload() {
    if !require_root("protected_ports_follow_listener_changes_on_reload") {
        return;
    }
    let link = Link::new(
        &format!("198.19.{}", (std::process::id() % 200) as u8 + 20),
        1,
    );
    let (host, client) = (link.host_ip.clone(), link.client_ips[0].clone());
    let (tmp, pin) = (TempDir::new(), PinDir::new());
    let (socket, config) = (tmp.0.join("admin.sock"), tmp.0.join("gateway.toml"));
    write_config(&config, &link.veth.host, &pin.path, &socket, &host, false);
    let gw = Gateway::start(&config, &socket, &tmp.0.join("gw.log"));

    // Not a listener port: the packet limit does not apply.
    let before = gw.counter("dropped_pps");
    send_udp(&link.ns.name, &client, &host, EXTRA, 200);
    assert_eq!(
        gw.counter("dropped_pps"),
        before,
        "an unprotected port was limited"
    );

    // A reload adds a listener on it: now it is protected.
    write_config(&config, &link.veth.host, &pin.path, &socket, &host, true);
    reload(&gw);
    let status = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{EXTRA}")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("{host}:{EXTRA}")),
        "the added listener is not listening"
    );
    let before = gw.counter("dropped_pps");
    send_udp(&link.ns.name, &client, &host, EXTRA, 200);
    let dropped = gw.counter("dropped_pps") - before;
    assert!(
        dropped >= 100,
        "200 packets to the new listener's port, limit 10/s burst 10: only {dropped} dropped"
    );

    // A reload removes it: unprotected again.
    write_config(&config, &link.veth.host, &pin.path, &socket, &host, false);
    reload(&gw);
    // The client's bucket refills before the next round either way.
    std::thread::sleep(Duration::from_millis(1200));
    let before = gw.counter("dropped_pps");
    send_udp(&link.ns.name, &client, &host, EXTRA, 200);
    assert_eq!(
        gw.counter("dropped_pps"),
        before,
        "the removed listener's port is still limited:\n{}",
        gw.log_text()
    );
}
