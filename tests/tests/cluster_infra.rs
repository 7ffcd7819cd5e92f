//! The pieces the cluster tests stand on, checked on their own: the
//! two-node network topology and the private Redis guard.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    time::Duration,
};

use test_support::{
    netns::{connect_from, in_netns},
    redis::{RedisAddr, RedisServer},
    require_root,
    topology::TwoNodeLink,
};

/// The topology the netns test runs on, checked alone: one client address
/// on nsC's `lo` reaches a listener in nsA and one in nsB, and the
/// namespaces and veths are gone after the drop.
#[test]
fn two_node_link_reaches_both_nodes_from_one_client_address() {
    if !require_root("two_node_link_reaches_both_nodes_from_one_client_address") {
        return;
    }
    let link = TwoNodeLink::new();
    let port = test_support::test_port();
    for (node, ip) in [(&link.a, &link.ga_ip), (&link.b, &link.gb_ip)] {
        let bind_ip = ip.clone();
        let listener = in_netns(&node.name, move || {
            TcpListener::bind((bind_ip.as_str(), port)).expect("bind in node namespace")
        });
        for src in [&link.client_ip, &link.other_ip] {
            let (s, d): (Ipv4Addr, Ipv4Addr) = (src.parse().unwrap(), ip.parse().unwrap());
            let mut c = in_netns(&link.client.name, move || {
                connect_from(s, SocketAddrV4::new(d, port), Duration::from_secs(2))
            })
            .unwrap_or_else(|e| panic!("{src} -> {ip}:{port}: {e}"));
            let (mut server_side, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip().to_string(), *src, "source address kept");
            server_side.write_all(b"hi").unwrap();
            drop(server_side);
            let mut got = String::new();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, "hi");
        }
    }
    let names = [
        link.client.name.clone(),
        link.a.name.clone(),
        link.b.name.clone(),
    ];
    let ifaces = [
        link.ca.clone(),
        link.cb.clone(),
        link.ga.clone(),
        link.gb.clone(),
    ];
    drop(link);
    let netns = test_support::guard::sh(&["ip", "netns", "list"]);
    for n in &names {
        assert!(!netns.contains(n.as_str()), "{n} left behind: {netns}");
    }
    let links = test_support::guard::sh(&["ip", "-o", "link", "show"]);
    for i in &ifaces {
        assert!(
            !links.contains(i.as_str()),
            "{i} left in the host namespace"
        );
    }
}

/// The private Redis the cluster tests lean on: up on TCP and on a Unix
/// socket, gone after `kill`, back at the same address (and empty) after
/// `restart`, and it enforces its password.
#[test]
fn private_redis_kills_and_restarts_at_the_same_address() {
    if !test_support::redis::require_redis("private_redis_kills_and_restarts_at_the_same_address") {
        return;
    }
    let port = test_support::test_port();
    let mut tcp = RedisServer::start_tcp(port);
    let mut unix = RedisServer::start_unix();
    assert_eq!(tcp.url(), format!("redis://127.0.0.1:{port}/0"));
    assert!(unix.url().starts_with("redis+unix:///"), "{}", unix.url());
    for r in [&mut tcp, &mut unix] {
        let set = r.cli(&["set", "k", "v"]);
        assert!(
            String::from_utf8_lossy(&set.stdout).contains("OK"),
            "{set:?}"
        );
        r.kill();
        assert!(!r.ping(), "answers after kill");
        r.restart();
        assert!(r.ping());
        let get = r.cli(&["get", "k"]);
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "", "kept data");
    }
    let secret_port = test_support::test_port();
    let secret = RedisServer::start(RedisAddr::Tcp(secret_port), Some("s3cret"));
    assert!(secret.ping(), "authenticated PING");
    let anon = std::process::Command::new("redis-cli")
        .args(["-p", &secret_port.to_string(), "set", "k", "v"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&anon.stdout).contains("NOAUTH"),
        "{anon:?}"
    );
}
